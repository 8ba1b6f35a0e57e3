//! `vaultctl transit ...`: keys and encryption as a service. Plaintext is
//! given as is (an argument, or `-` for stdin, binary safe) and base64
//! encoded here, as the API wants; `decrypt` prints the decoded bytes.
//! `encrypt-file` / `decrypt-file` stream files of any size
//! (`vault_client::stream`): through the server, or locally with `--local`.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use tokio::io::AsyncRead;
use vault_client::stream::{Algorithm, AtomicFile, StreamKey, StreamOptions, StreamStats};
use zeroize::Zeroizing;

use crate::common::{Env, Format};
use crate::input::{read_stdin, read_stdin_bytes};
use crate::output::{Outcome, Wiped, keys, message, print_field, render, response_table, warnings};

/// `vaultctl transit SUBCOMMAND`.
#[derive(Debug, Args)]
pub(crate) struct TransitArgs {
    /// The transit mount.
    #[arg(long, default_value = "transit", global = true)]
    mount: String,
    #[command(subcommand)]
    cmd: TransitCmd,
}

#[derive(Debug, Subcommand)]
enum TransitCmd {
    /// Manage keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Encrypt PLAINTEXT (`-`: stdin) with KEY; prints the ciphertext.
    Encrypt {
        /// Key name.
        key: String,
        /// The plaintext, or `-` to read it from stdin (binary safe).
        plaintext: String,
        /// Key derivation context (derived keys), as text.
        #[arg(long)]
        context: Option<String>,
        /// Print only this field of the answer.
        #[arg(long)]
        field: Option<String>,
    },
    /// Decrypt CIPHERTEXT (`-`: stdin) with KEY; prints the plaintext bytes.
    Decrypt {
        /// Key name.
        key: String,
        /// The ciphertext (vault:vN:...), or `-` to read it from stdin.
        ciphertext: String,
        /// Key derivation context (derived keys), as text.
        #[arg(long)]
        context: Option<String>,
        /// Print the plaintext base64-encoded instead of raw.
        #[arg(long)]
        base64: bool,
    },
    /// Re-encrypt CIPHERTEXT (`-`: stdin) with the key's latest version.
    Rewrap {
        /// Key name.
        key: String,
        /// The ciphertext, or `-`.
        ciphertext: String,
        /// Key derivation context (derived keys), as text.
        #[arg(long)]
        context: Option<String>,
    },
    /// Encrypt the file IN into OUT (streamed: any size, constant memory).
    #[command(after_help = FILE_HELP)]
    EncryptFile {
        #[command(flatten)]
        file: FileArgs,
        /// Plaintext bytes per segment, 4096 to 16777216 (default 65536).
        #[arg(long, value_name = "BYTES")]
        segment_size: Option<u32>,
        /// Segment cipher.
        #[arg(long, value_parser = ["aes256-gcm96", "chacha20-poly1305"])]
        algorithm: Option<String>,
        /// Encrypt with this (older, still allowed) version of the key.
        #[arg(long)]
        key_version: Option<u32>,
    },
    /// Decrypt the file IN (made by encrypt-file or the server's stream/encrypt) into OUT.
    #[command(after_help = FILE_HELP)]
    DecryptFile {
        #[command(flatten)]
        file: FileArgs,
    },
}

const FILE_HELP: &str = "\
OUT is written to a temporary file beside it (mode 0600) and renamed into place
only when the whole stream succeeded: after any failure (a wrong key or
associated data, a truncated or tampered stream, a refused token, an I/O error)
nothing is left behind: OUT is not created (an existing OUT is left as it was). With `-` for OUT the bytes go to stdout as they come, and
after a failure what was written is incomplete: discard it.

Without --local the bytes make a round trip through the server
(transit/stream/encrypt|decrypt/KEY: needs `update` there); with --local only
a data key comes from the server (transit/datakey/plaintext/KEY to encrypt,
transit/decrypt/KEY to decrypt) and the work is done here. Both write the same
format: either side decrypts what the other encrypted.

A progress bar is shown when stderr is a terminal; a summary line (bytes,
time, throughput) always goes to stderr. Exit codes: 0 success, 1 failure.";

/// What encrypt-file and decrypt-file share.
#[derive(Debug, Args)]
struct FileArgs {
    /// Input file, or `-` for stdin.
    #[arg(value_name = "IN")]
    input: String,
    /// Output file (created atomically, mode 0600), or `-` for stdout.
    #[arg(value_name = "OUT")]
    output: String,
    /// The transit key.
    #[arg(long, value_name = "NAME")]
    key: String,
    /// Encrypt or decrypt here, under a data key from transit, instead of
    /// sending the bytes through the server.
    #[arg(long)]
    local: bool,
    /// Associated data, as text (sent base64-encoded): authenticated, not
    /// stored; decryption must be given the same.
    #[arg(long, value_name = "TEXT")]
    associated_data: Option<String>,
    /// Key derivation context, as text (derived keys).
    #[arg(long)]
    context: Option<String>,
    /// Data subject (crypto-shredding: deleting the subject makes the file
    /// undecryptable).
    #[arg(long)]
    subject: Option<String>,
}

impl TransitArgs {
    /// Whether this is encrypt-file or decrypt-file (run by [`run_file`],
    /// with their own exit codes).
    pub(crate) fn is_file_command(&self) -> bool {
        matches!(self.cmd, TransitCmd::EncryptFile { .. } | TransitCmd::DecryptFile { .. })
    }
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create a key.
    Create {
        /// Key name.
        name: String,
        /// Key type (aes256-gcm96, chacha20-poly1305, ed25519, ...).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Derive a key per context.
        #[arg(long)]
        derived: bool,
        /// Allow exporting the key.
        #[arg(long)]
        exportable: bool,
        /// Rotate automatically this often (e.g. 720h).
        #[arg(long)]
        auto_rotate_period: Option<String>,
    },
    /// Show a key's settings and versions (exit code 2 if there is none).
    Read {
        /// Key name.
        name: String,
    },
    /// List the keys (exit code 2 if there are none).
    List,
    /// Add a new version of a key.
    Rotate {
        /// Key name.
        name: String,
    },
}

fn name_ok(n: &str) -> anyhow::Result<&str> {
    if n.is_empty() || n.contains('/') {
        anyhow::bail!("invalid key name {n:?}");
    }
    Ok(n)
}

fn context(body: &mut Map<String, Value>, ctx: Option<&str>) {
    if let Some(c) = ctx {
        body.insert("context".into(), B64.encode(c.as_bytes()).into());
    }
}

/// A ciphertext argument (or one line of stdin).
fn ciphertext(arg: &str) -> anyhow::Result<String> {
    let c = if arg == "-" { read_stdin()?.trim().to_string() } else { arg.trim().to_string() };
    if c.is_empty() {
        anyhow::bail!("empty ciphertext");
    }
    Ok(c)
}

/// `encrypt-file` / `decrypt-file`: exit 0 with a summary on stderr, or an
/// error (always exit code 1: a missing key is a failure here, not "nothing
/// there"). After an error the output file does not exist.
pub(crate) async fn run_file(a: TransitArgs, env: &Env) -> anyhow::Result<ExitCode> {
    let (encrypt, file, mut opts) = match a.cmd {
        TransitCmd::EncryptFile { file, segment_size, algorithm, key_version } => {
            let mut o = StreamOptions::new();
            if let Some(s) = segment_size {
                o = o.segment_size(s);
            }
            match algorithm.as_deref() {
                Some("chacha20-poly1305") => o = o.algorithm(Algorithm::ChaCha20Poly1305),
                Some(_) => o = o.algorithm(Algorithm::Aes256Gcm),
                None => {}
            }
            if let Some(v) = key_version {
                o = o.key_version(v);
            }
            (true, file, o)
        }
        TransitCmd::DecryptFile { file } => (false, file, StreamOptions::new()),
        _ => anyhow::bail!("internal error: not a file command"),
    };
    if file.local {
        opts = opts.local();
    }
    if let Some(ad) = file.associated_data {
        opts = opts.associated_data(ad.into_bytes());
    }
    if let Some(c) = file.context {
        opts = opts.context(c.into_bytes());
    }
    if let Some(s) = file.subject {
        opts = opts.subject(s);
    }
    let c = env.client()?;
    let transit = c.transit(a.mount.trim_matches('/'));
    let key = transit.stream(name_ok(&file.key)?);

    let bar = progress_bar(&file.input);
    if let Some(b) = &bar {
        let b = b.clone();
        opts = opts.on_progress(move |n| b.set_position(n));
    }
    let start = Instant::now();
    let result = stream_file(&key, encrypt, &file.input, &file.output, &opts).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let stats = match result {
        Ok(s) => s,
        Err(e) if file.output == "-" => {
            return Err(anyhow::Error::new(e).context("stdout holds an incomplete output: discard it"));
        }
        Err(e) => return Err(e.into()),
    };
    let secs = start.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { stats.bytes_in as f64 / 1e6 / secs } else { 0.0 };
    let verb = if encrypt { "encrypted" } else { "decrypted" };
    let mut err = std::io::stderr().lock();
    let _ =
        writeln!(err, "{verb} {} bytes into {} bytes in {secs:.2} s ({rate:.1} MB/s)", stats.bytes_in, stats.bytes_out);
    Ok(ExitCode::SUCCESS)
}

/// Run the stream between IN and OUT (`-`: stdin / stdout).
async fn stream_file(
    key: &StreamKey<'_>,
    encrypt: bool,
    input: &str,
    output: &str,
    opts: &StreamOptions,
) -> Result<StreamStats, vault_client::Error> {
    if input != "-" && output != "-" {
        let (i, o) = (Path::new(input), Path::new(output));
        return if encrypt { key.encrypt_file(i, o, opts).await } else { key.decrypt_file(i, o, opts).await };
    }
    let reader: Box<dyn AsyncRead + Unpin + Send> = if input == "-" {
        Box::new(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(input)
            .await
            .map_err(|e| vault_client::Error::Io { what: format!("cannot read {input}"), source: e })?;
        Box::new(f)
    };
    if output == "-" {
        let out = tokio::io::stdout();
        return if encrypt { key.encrypt(reader, out, opts).await } else { key.decrypt(reader, out, opts).await };
    }
    // Removed on any failure (dropped without a commit).
    let mut out = AtomicFile::create(output).await?;
    let stats =
        if encrypt { key.encrypt(reader, &mut out, opts).await? } else { key.decrypt(reader, &mut out, opts).await? };
    out.commit().await?;
    Ok(stats)
}

/// A progress bar on stderr, only when stderr is a terminal; sized by the
/// input file when there is one.
fn progress_bar(input: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = (input != "-").then(|| std::fs::metadata(input).ok()).flatten().map(|m| m.len());
    let (bar, template) = match total {
        Some(n) => (indicatif::ProgressBar::new(n), "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"),
        None => (indicatif::ProgressBar::new_spinner(), "{spinner} {bytes} {binary_bytes_per_sec}"),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    Some(bar)
}

pub(crate) async fn run(a: TransitArgs, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    let m = a.mount.trim_matches('/').to_string();
    let c = env.client()?;
    let mut o = Outcome::default();
    match a.cmd {
        TransitCmd::Keys { cmd } => match cmd {
            KeysCmd::Create { name, kind, derived, exportable, auto_rotate_period } => {
                let mut body = Map::new();
                if let Some(k) = kind {
                    body.insert("type".into(), k.into());
                }
                if derived {
                    body.insert("derived".into(), true.into());
                }
                if exportable {
                    body.insert("exportable".into(), true.into());
                }
                if let Some(p) = auto_rotate_period {
                    body.insert("auto_rotate_period".into(), p.into());
                }
                let name = name_ok(&name)?;
                if let Some(v) = c.logical().write(&format!("{m}/keys/{name}"), &Value::Object(body)).await? {
                    warnings(&mut o, &v);
                }
                message(&mut o, fmt, &format!("Success! Created key: {m}/keys/{name}"));
            }
            KeysCmd::Read { name } => {
                let path = format!("{m}/keys/{}", name_ok(&name)?);
                let Some(v) = c.logical().read(&path).await? else {
                    return Ok(Outcome::no_data(&path));
                };
                render(&mut o, fmt, &v, |out| response_table(out, &v))?;
            }
            KeysCmd::List => {
                let ks = c.logical().list(&format!("{m}/keys")).await?;
                if ks.is_empty() {
                    return Ok(Outcome::no_data(&format!("{m}/keys/")));
                }
                keys(&mut o, fmt, &ks)?;
            }
            KeysCmd::Rotate { name } => {
                let path = format!("{m}/keys/{}/rotate", name_ok(&name)?);
                let v = c.logical().write(&path, &json!({})).await?;
                match v {
                    Some(v) if fmt != Format::Human => render(&mut o, fmt, &v, |_| Ok(()))?,
                    _ => message(&mut o, fmt, &format!("Success! Rotated key: {m}/keys/{name}")),
                }
            }
        },
        TransitCmd::Encrypt { key, plaintext, context: ctx, field } => {
            let bytes: Zeroizing<Vec<u8>> =
                if plaintext == "-" { read_stdin_bytes()? } else { Zeroizing::new(plaintext.into_bytes()) };
            let encoded = Zeroizing::new(B64.encode(bytes.as_slice()));
            let mut body = Map::new();
            body.insert("plaintext".into(), encoded.as_str().into());
            context(&mut body, ctx.as_deref());
            let path = format!("{m}/encrypt/{}", name_ok(&key)?);
            let v = c.logical().write(&path, &Value::Object(body)).await?.unwrap_or(Value::Null);
            warnings(&mut o, &v);
            match field {
                Some(f) => print_field(&mut o, &v, &f)?,
                None => render(&mut o, fmt, &v, |out| {
                    let ct = v.get("data").and_then(|d| d.get("ciphertext")).and_then(Value::as_str).unwrap_or("");
                    writeln!(out, "{ct}")
                })?,
            }
        }
        TransitCmd::Decrypt { key, ciphertext: ct, context: ctx, base64 } => {
            let mut body = Map::new();
            body.insert("ciphertext".into(), ciphertext(&ct)?.into());
            context(&mut body, ctx.as_deref());
            let path = format!("{m}/decrypt/{}", name_ok(&key)?);
            let v = Wiped(c.logical().write(&path, &Value::Object(body)).await?.unwrap_or(Value::Null));
            warnings(&mut o, &v);
            if fmt != Format::Human {
                render(&mut o, fmt, &*v, |_| Ok(()))?;
                return Ok(o);
            }
            let b64 = v
                .get("data")
                .and_then(|d| d.get("plaintext"))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow::anyhow!("the server's answer holds no plaintext"))?;
            if base64 {
                o.line(b64);
            } else {
                let bytes = Zeroizing::new(
                    B64.decode(b64).map_err(|_| anyhow::anyhow!("the server's plaintext is not valid base64"))?,
                );
                o.raw = Some(bytes);
            }
        }
        TransitCmd::Rewrap { key, ciphertext: ct, context: ctx } => {
            let mut body = Map::new();
            body.insert("ciphertext".into(), ciphertext(&ct)?.into());
            context(&mut body, ctx.as_deref());
            let path = format!("{m}/rewrap/{}", name_ok(&key)?);
            let v = c.logical().write(&path, &Value::Object(body)).await?.unwrap_or(Value::Null);
            warnings(&mut o, &v);
            render(&mut o, fmt, &v, |out| {
                let ct = v.get("data").and_then(|d| d.get("ciphertext")).and_then(Value::as_str).unwrap_or("");
                writeln!(out, "{ct}")
            })?;
        }
        TransitCmd::EncryptFile { .. } | TransitCmd::DecryptFile { .. } => {
            anyhow::bail!("internal error: file commands run through run_file")
        }
    }
    Ok(o)
}
