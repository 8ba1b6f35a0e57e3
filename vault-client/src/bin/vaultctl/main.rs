//! `vaultctl`: command-line administration of the vault server.
//!
//! Configured like Vault's CLI: `VAULT_ADDR` (default
//! `http://127.0.0.1:8200`), `VAULT_TOKEN`, `VAULT_CACERT`. The token is
//! only taken from the environment, never from a flag, so it stays out of
//! shell history and process listings; key shares may be given on stdin for
//! the same reason (typed without echo at a terminal, one line when piped).
//! The `rekey` and `generate-root` commands send the token too: the server
//! requires one with `sudo` on those endpoints unless configured otherwise.
//!
//! Output is human-readable by default, JSON with `--format json`. Exit
//! codes: 0 success, 1 error, 2 "no data" (`read`/`list` found nothing,
//! `status` of a sealed vault), as in Vault's CLI.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value, json};
use vault_client::api::{GenerateRootStatus, InitResponse, KeyStatus, RekeyComplete, RekeyStatus, SealStatus};
use vault_client::{Client, ClientBuilder, RekeyUpdate};
use zeroize::Zeroizing;

mod agent;
mod common;
mod exec;
mod import;
mod scan;

use common::Format;

/// Administer a vault server (HashiCorp Vault API).
#[derive(Debug, Parser)]
#[command(name = "vaultctl", version, about, long_about = None)]
#[command(after_help = "Environment: VAULT_ADDR (default http://127.0.0.1:8200), VAULT_TOKEN, VAULT_CACERT.\n\
                        Exit codes: 0 success, 1 error, 2 no data (read/list found nothing, status: sealed).")]
struct Cli {
    /// Server address; overrides VAULT_ADDR.
    #[arg(long, global = true, value_name = "URL")]
    address: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}


#[derive(Debug, Subcommand)]
enum Command {
    /// Show the seal status (exit code 2 when sealed).
    Status,
    /// Show sys/health (state and HTTP status code).
    Health,
    /// Initialize a new vault: prints the key shares and the root token, once.
    Init {
        /// Number of key shares to split the root key into.
        #[arg(long)]
        key_shares: u32,
        /// Number of shares required to unseal.
        #[arg(long)]
        key_threshold: u32,
    },
    /// Submit one unseal key share (read from stdin when KEY is omitted).
    Unseal {
        /// The key share (hex or base64). Prefer stdin: it stays out of shell history.
        #[arg(conflicts_with = "reset")]
        key: Option<String>,
        /// Discard the shares submitted so far instead.
        #[arg(long)]
        reset: bool,
    },
    /// Seal the vault.
    Seal,
    /// Rotate the barrier encryption key (new key term).
    Rotate,
    /// Show the active barrier key term.
    KeyStatus,
    /// Replace the unseal key shares (needs VAULT_TOKEN with sudo on sys/rekey/*).
    Rekey {
        #[command(subcommand)]
        cmd: RekeyCmd,
    },
    /// Generate a new root token from a quorum of key shares (needs VAULT_TOKEN
    /// with sudo on sys/generate-root/*, unless the server allows it without).
    GenerateRoot {
        #[command(subcommand)]
        cmd: GenerateRootCmd,
    },
    /// Manage secrets engine mounts.
    Mounts {
        #[command(subcommand)]
        cmd: MountsCmd,
    },
    /// Read the data at PATH (exit code 2 if there is none).
    Read {
        /// API path, e.g. secret/app.
        path: String,
    },
    /// Write key=value pairs to PATH (value `-` reads stdin, `@FILE` reads a file).
    Write {
        /// API path, e.g. secret/app.
        path: String,
        /// Data as key=value.
        #[arg(value_name = "KEY=VALUE")]
        data: Vec<String>,
    },
    /// Delete the data at PATH.
    Delete {
        /// API path.
        path: String,
    },
    /// List the keys under PATH (exit code 2 if there are none).
    List {
        /// API path, e.g. secret/ or secret/dir.
        path: String,
    },
    /// Run a command with secrets in its environment.
    Exec(exec::Args),
    /// Keep secrets rendered into files (init container or sidecar).
    Agent(agent::Args),
    /// Find hard-coded secrets in files (exit code 1 when any are found).
    Scan(scan::Args),
    /// Move the secrets of a file into KV v2 and leave references.
    Import(import::Args),
}

#[derive(Debug, Subcommand)]
enum RekeyCmd {
    /// Start a rekey.
    Init {
        /// New number of key shares.
        #[arg(long)]
        key_shares: u32,
        /// New threshold.
        #[arg(long)]
        key_threshold: u32,
    },
    /// Show the progress of the current rekey.
    Status,
    /// Submit one current key share (read from stdin when KEY is omitted).
    Update {
        /// A current key share.
        key: Option<String>,
        /// The rekey nonce (from `rekey init`).
        #[arg(long)]
        nonce: String,
    },
    /// Cancel the current rekey.
    Cancel,
}

#[derive(Debug, Subcommand)]
enum GenerateRootCmd {
    /// Start generating a root token; prints the nonce and the OTP.
    Init {
        /// Use this one-time password instead of a server-generated one.
        #[arg(long)]
        otp: Option<String>,
    },
    /// Show the progress of the current attempt.
    Status,
    /// Submit one key share (read from stdin when KEY is omitted).
    Update {
        /// A key share.
        key: Option<String>,
        /// The attempt nonce (from `generate-root init`).
        #[arg(long)]
        nonce: String,
    },
    /// Cancel the current attempt.
    Cancel,
    /// Decode the encoded token of a completed attempt with its OTP (offline).
    Decode {
        /// The encoded token.
        #[arg(long)]
        encoded: String,
        /// The OTP given by `generate-root init`.
        #[arg(long)]
        otp: String,
    },
}

#[derive(Debug, Subcommand)]
enum MountsCmd {
    /// List the mounted secrets engines.
    List,
    /// Mount a secrets engine at PATH.
    Enable {
        /// Mount path, e.g. secret.
        path: String,
        /// Engine type, e.g. kv.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// Human-friendly description.
        #[arg(long)]
        description: Option<String>,
        /// Engine option as key=value (repeatable), e.g. version=1.
        #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_pair)]
        options: Vec<(String, String)>,
    },
    /// Unmount PATH, deleting all its data.
    Disable {
        /// Mount path.
        path: String,
    },
}

/// A failure to report: one message, exit code 1.
#[derive(Debug)]
struct CliError(String);

impl From<vault_client::Error> for CliError {
    fn from(e: vault_client::Error) -> Self {
        // Include the cause chain: reqwest's top-level message omits the
        // useful part ("connection refused", certificate problems, ...).
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            // Skip causes already quoted by their parent's message.
            let text = s.to_string();
            if !msg.contains(&text) {
                let _ = write!(msg, ": {text}");
            }
            source = s.source();
        }
        CliError(msg)
    }
}

impl From<std::fmt::Error> for CliError {
    fn from(_: std::fmt::Error) -> Self {
        CliError("formatting output failed".into())
    }
}

type CliResult<T> = Result<T, CliError>;

/// What a command produced. Stdout may hold secrets (init, rekey), so it is
/// wiped from memory once written.
#[derive(Default)]
struct Outcome {
    stdout: Zeroizing<String>,
    stderr: String,
    code: u8,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome").field("code", &self.code).finish_non_exhaustive()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    // Commands with their own modules run to their own exit code.
    let Cli { address, format, command } = cli;
    let env = common::Env { address, format };
    let command = match command {
        Command::Exec(args) => return finish(rt.block_on(exec::run(args, &env))),
        Command::Agent(args) => return finish(rt.block_on(agent::run(args, &env))),
        Command::Scan(args) => return finish(rt.block_on(scan::run(args, &env))),
        Command::Import(args) => return finish(rt.block_on(import::run(args, &env))),
        other => other,
    };
    let cli = Cli { address: env.address, format, command };
    match rt.block_on(run(&cli)) {
        Ok(o) => {
            if !o.stderr.is_empty() {
                let _ = std::io::stderr().write_all(o.stderr.as_bytes());
            }
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(o.stdout.as_bytes()).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::from(o.code),
                // The reader went away (`vaultctl list x | head`): nothing to say.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(1),
                Err(e) => fail(&format!("cannot write output: {e}")),
            }
        }
        Err(CliError(msg)) => fail(&msg),
    }
}

/// The exit of a command module: its own code, or its error as one line.
fn finish(r: anyhow::Result<ExitCode>) -> ExitCode {
    r.unwrap_or_else(|e| fail(&format!("{e:#}")))
}

fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "Error: {msg}");
    ExitCode::from(1)
}

fn client(cli: &Cli) -> CliResult<Client> {
    let mut b = ClientBuilder::from_env()?;
    if let Some(addr) = &cli.address {
        b = b.address(addr.as_str());
    }
    Ok(b.build()?)
}

async fn run(cli: &Cli) -> CliResult<Outcome> {
    let fmt = cli.format;
    // Offline commands first: they must work without a reachable server.
    if let Command::GenerateRoot { cmd: GenerateRootCmd::Decode { encoded, otp } } = &cli.command {
        return decode_root(fmt, encoded, otp);
    }
    let c = client(cli)?;
    let sys = c.sys();
    let mut o = Outcome::default();
    match &cli.command {
        Command::Status => {
            let s = sys.seal_status().await?;
            render(&mut o, fmt, &s, |out| seal_status_table(out, &s))?;
            if s.sealed {
                o.code = 2;
            }
        }
        Command::Health => {
            let h = sys.health().await?;
            let v = json!({"status": h.status, "health": &h.health});
            render(&mut o, fmt, &v, |out| {
                let hh = &h.health;
                let mut rows = vec![
                    ("HTTP Status", h.status.to_string()),
                    ("Initialized", hh.initialized.to_string()),
                    ("Sealed", hh.sealed.to_string()),
                    ("Standby", hh.standby.to_string()),
                    ("Version", hh.version.clone()),
                    ("Server Time (UTC)", hh.server_time_utc.to_string()),
                ];
                if let Some(n) = &hh.cluster_name {
                    rows.push(("Cluster Name", n.clone()));
                }
                if let Some(id) = &hh.cluster_id {
                    rows.push(("Cluster ID", id.clone()));
                }
                table(out, &rows)
            })?;
        }
        Command::Init { key_shares, key_threshold } => {
            let r = sys.init(*key_shares, *key_threshold).await?;
            render(&mut o, fmt, &r, |out| init_text(out, &r, *key_threshold))?;
        }
        Command::Unseal { key, reset } => {
            let s = if *reset {
                sys.unseal_reset().await?
            } else {
                let key = secret_arg(key.as_deref(), "Unseal Key")?;
                sys.unseal(&key).await?
            };
            render(&mut o, fmt, &s, |out| seal_status_table(out, &s))?;
        }
        Command::Seal => {
            sys.seal().await?;
            message(&mut o, fmt, "Success! Vault is sealed.")?;
        }
        Command::Rotate => {
            sys.rotate().await?;
            let ks = sys.key_status().await.map_err(|e| {
                CliError(format!("the key was rotated, but reading the new key status failed: {}", CliError::from(e).0))
            })?;
            render(&mut o, fmt, &ks, |out| {
                writeln!(out, "Success! Rotated key\n")?;
                key_status_table(out, &ks)
            })?;
        }
        Command::KeyStatus => {
            let ks = sys.key_status().await?;
            render(&mut o, fmt, &ks, |out| key_status_table(out, &ks))?;
        }
        Command::Rekey { cmd } => rekey(&mut o, fmt, &c, cmd).await?,
        Command::GenerateRoot { cmd } => generate_root(&mut o, fmt, &c, cmd).await?,
        Command::Mounts { cmd } => mounts(&mut o, fmt, &c, cmd).await?,
        Command::Read { path } => match c.logical().read(path).await? {
            None => {
                o.stderr = format!("No value found at {path}\n");
                o.code = 2;
            }
            Some(v) => {
                warnings(&mut o, &v);
                render(&mut o, fmt, &v, |out| secret_table(out, &v))?;
            }
        },
        Command::Write { path, data } => {
            let body = parse_data(data)?;
            let resp = c.logical().write(path, &Value::Object(body)).await?;
            match resp {
                Some(v) if v.get("data").is_some_and(|d| !d.is_null()) => {
                    warnings(&mut o, &v);
                    render(&mut o, fmt, &v, |out| secret_table(out, &v))?;
                }
                other => {
                    if let Some(v) = &other {
                        warnings(&mut o, v);
                    }
                    message(&mut o, fmt, &format!("Success! Data written to: {path}"))?;
                }
            }
        }
        Command::Delete { path } => {
            if let Some(v) = c.logical().delete(path).await? {
                warnings(&mut o, &v);
            }
            message(&mut o, fmt, &format!("Success! Data deleted (if it existed) at: {path}"))?;
        }
        Command::List { path } => {
            let keys = c.logical().list(path).await?;
            if keys.is_empty() {
                o.stderr = format!("No value found at {}/\n", path.trim_end_matches('/'));
                o.code = 2;
            }
            render(&mut o, fmt, &keys, |out| {
                if keys.is_empty() {
                    return Ok(());
                }
                writeln!(out, "Keys\n----")?;
                for k in &keys {
                    writeln!(out, "{k}")?;
                }
                Ok(())
            })?;
        }
        // Dispatched in main() before this point.
        Command::Exec(_) | Command::Agent(_) | Command::Scan(_) | Command::Import(_) => {
            return Err(CliError("internal error: command dispatched twice".into()));
        }
    }
    Ok(o)
}

async fn rekey(o: &mut Outcome, fmt: Format, c: &Client, cmd: &RekeyCmd) -> CliResult<()> {
    let sys = c.sys();
    match cmd {
        RekeyCmd::Init { key_shares, key_threshold } => {
            let s = sys.rekey_init(*key_shares, *key_threshold).await?;
            render(o, fmt, &s, |out| rekey_status_table(out, &s))
        }
        RekeyCmd::Status => {
            let s = sys.rekey_status().await?;
            render(o, fmt, &s, |out| rekey_status_table(out, &s))
        }
        RekeyCmd::Update { key, nonce } => {
            let key = secret_arg(key.as_deref(), "Key (current share)")?;
            match sys.rekey_update(&key, nonce).await? {
                RekeyUpdate::Progress(s) => render(o, fmt, &s, |out| rekey_status_table(out, &s)),
                RekeyUpdate::Complete(done) => {
                    let r = render(o, fmt, &done, |out| rekey_complete_text(out, &done));
                    wipe_rekey(done);
                    r
                }
            }
        }
        RekeyCmd::Cancel => {
            sys.rekey_cancel().await?;
            message(o, fmt, "Success! Canceled rekeying (if it was started)")
        }
    }
}

async fn generate_root(o: &mut Outcome, fmt: Format, c: &Client, cmd: &GenerateRootCmd) -> CliResult<()> {
    let sys = c.sys();
    let s = match cmd {
        GenerateRootCmd::Init { otp } => sys.generate_root_start(otp.as_deref()).await?,
        GenerateRootCmd::Status => sys.generate_root_status().await?,
        GenerateRootCmd::Update { key, nonce } => {
            let key = secret_arg(key.as_deref(), "Key (current share)")?;
            sys.generate_root_update(&key, nonce).await?
        }
        GenerateRootCmd::Cancel => {
            sys.generate_root_cancel().await?;
            return message(o, fmt, "Success! Root token generation canceled (if it was started)");
        }
        GenerateRootCmd::Decode { encoded, otp } => {
            *o = decode_root(fmt, encoded, otp)?;
            return Ok(());
        }
    };
    let r = render(o, fmt, &s, |out| generate_root_text(out, &s));
    wipe_generate_root(s);
    r
}

async fn mounts(o: &mut Outcome, fmt: Format, c: &Client, cmd: &MountsCmd) -> CliResult<()> {
    let sys = c.sys();
    match cmd {
        MountsCmd::List => {
            let m = sys.mounts().await?;
            render(o, fmt, &m, |out| mounts_table(out, &m))
        }
        MountsCmd::Enable { path, kind, description, options } => {
            let opts: BTreeMap<String, String> = options.iter().cloned().collect();
            sys.mount(path, kind, description.as_deref(), &opts).await?;
            let p = path.trim_matches('/');
            message(o, fmt, &format!("Success! Enabled the {kind} secrets engine at: {p}/"))
        }
        MountsCmd::Disable { path } => {
            sys.unmount(path).await?;
            let p = path.trim_matches('/');
            message(o, fmt, &format!("Success! Disabled the secrets engine (if it existed) at: {p}/"))
        }
    }
}

fn decode_root(fmt: Format, encoded: &str, otp: &str) -> CliResult<Outcome> {
    let token =
        vault_client::api::decode_root_token(encoded.trim(), otp.trim()).map(Zeroizing::new).ok_or_else(|| {
            CliError(
                "cannot decode the token: the encoded token and the OTP do not match (wrong OTP or truncated input)"
                    .into(),
            )
        })?;
    let mut o = Outcome::default();
    match fmt {
        Format::Json => {
            let v = Zeroizing::new(json!({ "token": token.as_str() }).to_string());
            writeln!(o.stdout, "{}", v.as_str())?;
        }
        Format::Human => writeln!(o.stdout, "{}", token.as_str())?,
    }
    Ok(o)
}

// ---------------------------------------------------------------- input

/// A secret (key share) from the command line or, if absent, from stdin.
/// At a terminal it is typed without echo (so it is not left on the screen or
/// in the scrollback); otherwise one line is read, with no prompt, so scripts
/// can pipe it in.
fn secret_arg(given: Option<&str>, prompt: &str) -> CliResult<Zeroizing<String>> {
    if let Some(k) = given {
        return Ok(Zeroizing::new(k.trim().to_string()));
    }
    if std::io::stdin().is_terminal() {
        let typed = rpassword::prompt_password(format!("{prompt} (will be hidden): "))
            .map(Zeroizing::new)
            .map_err(|e| CliError(format!("cannot read the key from the terminal: {e}")))?;
        return non_empty_key(&typed);
    }
    read_key_line(&mut std::io::stdin().lock())
}

/// One line of `input` as the key (the non-terminal case).
fn read_key_line(input: &mut impl BufRead) -> CliResult<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    input.read_line(&mut line).map_err(|e| CliError(format!("cannot read the key from stdin: {e}")))?;
    non_empty_key(&line)
}

fn non_empty_key(text: &str) -> CliResult<Zeroizing<String>> {
    let key = Zeroizing::new(text.trim().to_string());
    if key.is_empty() {
        return Err(CliError("no key given: pass it as an argument or on one line of stdin".into()));
    }
    Ok(key)
}

/// `--option k=v` and friends.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `write` data: `k=v`, `k=-` (stdin, once), `k=@file`.
fn parse_data(pairs: &[String]) -> CliResult<Map<String, Value>> {
    parse_data_with(pairs, || {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s).map_err(|e| format!("cannot read stdin: {e}"))
    })
}

fn parse_data_with(
    pairs: &[String],
    read_stdin: impl FnOnce() -> Result<String, String>,
) -> CliResult<Map<String, Value>> {
    let mut out = Map::new();
    let mut stdin = Some(read_stdin);
    for (i, p) in pairs.iter().enumerate() {
        // Do not echo the argument back: it may be a mistyped secret.
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CliError(format!("invalid data argument #{}: expected KEY=VALUE", i + 1)))?;
        let value = if v == "-" {
            let read = stdin.take().ok_or_else(|| CliError("only one value may be read from stdin ('-')".into()))?;
            let mut s = read().map_err(CliError)?;
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            s
        } else if let Some(file) = v.strip_prefix('@') {
            std::fs::read_to_string(file).map_err(|e| CliError(format!("cannot read {file} for key {k}: {e}")))?
        } else {
            v.to_string()
        };
        out.insert(k.to_string(), Value::String(value));
    }
    Ok(out)
}

// ---------------------------------------------------------------- output

/// Render `value` as pretty JSON or, for humans, with `human`.
fn render<T: Serialize + ?Sized>(
    o: &mut Outcome,
    fmt: Format,
    value: &T,
    human: impl FnOnce(&mut String) -> std::fmt::Result,
) -> CliResult<()> {
    match fmt {
        Format::Json => {
            let text = Zeroizing::new(
                serde_json::to_string_pretty(value).map_err(|e| CliError(format!("cannot encode JSON output: {e}")))?,
            );
            writeln!(o.stdout, "{}", text.as_str())?;
        }
        Format::Human => human(&mut o.stdout)?,
    }
    Ok(())
}

/// A success message (humans only: in JSON mode the exit code says it).
fn message(o: &mut Outcome, fmt: Format, msg: &str) -> CliResult<()> {
    if fmt == Format::Human {
        writeln!(o.stdout, "{msg}")?;
    }
    Ok(())
}

/// Forward the server's warnings to stderr.
fn warnings(o: &mut Outcome, v: &Value) {
    if let Some(ws) = v.get("warnings").and_then(Value::as_array).filter(|w| !w.is_empty()) {
        o.stderr.push_str("WARNING! The following warnings were returned from the server:\n");
        for w in ws {
            let text = w.as_str().map_or_else(|| w.to_string(), str::to_string);
            o.stderr.push_str(&format!("  * {text}\n"));
        }
    }
}

/// A two-column Key/Value table.
fn table<K: AsRef<str>>(out: &mut String, rows: &[(K, String)]) -> std::fmt::Result {
    let width = rows.iter().map(|(k, _)| k.as_ref().chars().count()).max().unwrap_or(0).max(3);
    writeln!(out, "{:<width$}    Value", "Key")?;
    writeln!(out, "{:<width$}    -----", "---")?;
    for (k, v) in rows {
        writeln!(out, "{:<width$}    {v}", k.as_ref())?;
    }
    Ok(())
}

/// A table with headers and any number of columns.
fn columns(out: &mut String, headers: &[&str], rows: &[Vec<String>]) -> std::fmt::Result {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| -> std::fmt::Result {
        let mut text = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            write!(text, "{cell:<w$}    ")?;
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    line(out, &headers.iter().map(|h| "-".repeat(h.chars().count())).collect::<Vec<_>>())?;
    for r in rows {
        line(out, r)?;
    }
    Ok(())
}

/// A JSON value as a table cell: strings bare, anything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}

fn seal_status_table(out: &mut String, s: &SealStatus) -> std::fmt::Result {
    let mut rows = vec![
        ("Seal Type", s.seal_type.clone()),
        ("Initialized", s.initialized.to_string()),
        ("Sealed", s.sealed.to_string()),
        ("Total Shares", s.n.to_string()),
        ("Threshold", s.t.to_string()),
    ];
    if s.sealed {
        rows.push(("Unseal Progress", format!("{}/{}", s.progress, s.t)));
        rows.push(("Unseal Nonce", if s.nonce.is_empty() { "n/a".into() } else { s.nonce.clone() }));
    }
    rows.push(("Version", s.version.clone()));
    rows.push(("Build Date", s.build_date.clone()));
    rows.push(("Storage Type", s.storage_type.clone()));
    if let Some(n) = &s.cluster_name {
        rows.push(("Cluster Name", n.clone()));
    }
    if let Some(id) = &s.cluster_id {
        rows.push(("Cluster ID", id.clone()));
    }
    table(out, &rows)
}

fn key_status_table(out: &mut String, ks: &KeyStatus) -> std::fmt::Result {
    table(
        out,
        &[
            ("Key Term", ks.term.to_string()),
            ("Install Time", ks.install_time.clone()),
            ("Encryption Count", ks.encryptions.to_string()),
        ],
    )
}

fn init_text(out: &mut String, r: &InitResponse, threshold: u32) -> std::fmt::Result {
    for (i, k) in r.keys_base64.iter().enumerate() {
        writeln!(out, "Unseal Key {}: {k}", i + 1)?;
    }
    writeln!(out, "\nInitial Root Token: {}\n", r.root_token)?;
    writeln!(
        out,
        "Vault initialized with {} key shares and a key threshold of {threshold}. Distribute the\n\
         key shares above to trusted people: they are not shown again. The vault must be\n\
         unsealed with {threshold} of them after every restart (vaultctl unseal).",
        r.keys_base64.len()
    )
}

fn rekey_status_table(out: &mut String, s: &RekeyStatus) -> std::fmt::Result {
    table(
        out,
        &[
            ("Nonce", if s.nonce.is_empty() { "n/a".into() } else { s.nonce.clone() }),
            ("Started", s.started.to_string()),
            ("Rekey Progress", format!("{}/{}", s.progress, s.required)),
            ("New Shares", s.n.to_string()),
            ("New Threshold", s.t.to_string()),
            ("Verification Required", s.verification_required.to_string()),
        ],
    )
}

fn rekey_complete_text(out: &mut String, r: &RekeyComplete) -> std::fmt::Result {
    for (i, k) in r.keys_base64.iter().enumerate() {
        writeln!(out, "Key {}: {k}", i + 1)?;
    }
    writeln!(out, "\nOperation nonce: {}\n", r.nonce)?;
    writeln!(
        out,
        "Vault rekeyed with {} key shares. The old shares no longer unseal it; distribute\n\
         the new ones above: they are not shown again.",
        r.keys_base64.len()
    )
}

fn generate_root_text(out: &mut String, s: &GenerateRootStatus) -> std::fmt::Result {
    let mut rows = vec![
        ("Nonce", if s.nonce.is_empty() { "n/a".into() } else { s.nonce.clone() }),
        ("Started", s.started.to_string()),
        ("Progress", format!("{}/{}", s.progress, s.required)),
        ("Complete", s.complete.to_string()),
    ];
    if !s.otp.is_empty() {
        rows.push(("OTP", s.otp.clone()));
    }
    if s.otp_length > 0 {
        rows.push(("OTP Length", s.otp_length.to_string()));
    }
    if !s.encoded_token.is_empty() {
        rows.push(("Encoded Token", s.encoded_token.clone()));
    }
    table(out, &rows)?;
    if s.complete && !s.encoded_token.is_empty() {
        writeln!(out, "\nDecode it with: vaultctl generate-root decode --encoded {} --otp <OTP>", s.encoded_token)?;
    } else if !s.otp.is_empty() {
        writeln!(out, "\nKeep the OTP: it is needed to decode the token and is not shown again.")?;
    }
    Ok(())
}

fn mounts_table(out: &mut String, m: &Map<String, Value>) -> std::fmt::Result {
    let rows: Vec<Vec<String>> = m
        .iter()
        .map(|(path, e)| {
            let f = |k: &str| e.get(k).map(cell).unwrap_or_default();
            vec![path.clone(), f("type"), f("accessor"), f("description")]
        })
        .collect();
    columns(out, &["Path", "Type", "Accessor", "Description"], &rows)
}

/// A read/write answer for humans: the `data` fields (or, for answers
/// without an envelope, the top-level fields), plus the lease if any.
fn secret_table(out: &mut String, v: &Value) -> std::fmt::Result {
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(secs) = v.get("lease_duration").and_then(Value::as_u64).filter(|s| *s > 0) {
        rows.push(("lease_duration".into(), format!("{secs}s")));
        if let Some(id) = v.get("lease_id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            rows.push(("lease_id".into(), id.to_string()));
        }
    }
    let fields = match v.get("data") {
        Some(Value::Object(d)) => Some(d),
        Some(_) => None,
        None => v.as_object(),
    };
    match fields {
        Some(d) => rows.extend(d.iter().map(|(k, v)| (k.clone(), cell(v)))),
        None if rows.is_empty() => {
            return writeln!(out, "{}", cell(v));
        }
        None => {}
    }
    table(out, &rows)
}

fn wipe_rekey(mut r: RekeyComplete) {
    use zeroize::Zeroize;
    r.keys.iter_mut().for_each(Zeroize::zeroize);
    r.keys_base64.iter_mut().for_each(Zeroize::zeroize);
}

fn wipe_generate_root(mut s: GenerateRootStatus) {
    use zeroize::Zeroize as _;
    s.otp.zeroize();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vaultctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_commands() {
        let ok = [
            &["status"][..],
            &["init", "--key-shares", "5", "--key-threshold", "3", "--format", "json"],
            &["unseal"],
            &["unseal", "abcd"],
            &["unseal", "--reset"],
            &["seal"],
            &["rotate"],
            &["key-status"],
            &["rekey", "init", "--key-shares", "3", "--key-threshold", "2"],
            &["rekey", "update", "KEY", "--nonce", "N"],
            &["rekey", "cancel"],
            &["generate-root", "init"],
            &["generate-root", "update", "KEY", "--nonce", "N"],
            &["generate-root", "cancel"],
            &["generate-root", "decode", "--encoded", "X", "--otp", "Y"],
            &["mounts", "list"],
            &["mounts", "enable", "kvx", "--type", "kv", "--description", "d", "--option", "version=1"],
            &["mounts", "disable", "kvx"],
            &["read", "kvx/a"],
            &["write", "kvx/a", "foo=bar", "x=y"],
            &["delete", "kvx/a"],
            &["list", "kvx"],
            &["--format", "json", "list", "kvx"],
        ];
        for args in ok {
            assert!(parse(args).is_ok(), "{args:?}: {}", parse(args).unwrap_err());
        }
        let bad = [
            &["unseal", "--reset", "KEY"][..],
            &["init", "--key-shares", "5"],
            &["rekey", "update", "KEY"],
            &["mounts", "enable", "kvx"],
            &["mounts", "enable", "kvx", "--type", "kv", "--option", "novalue"],
            &["status", "--format", "yaml"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?}");
        }
        let cli = parse(&["mounts", "enable", "kvx", "--type", "kv", "--option", "a=b=c"]).unwrap();
        let Command::Mounts { cmd: MountsCmd::Enable { options, .. } } = cli.command else { panic!() };
        assert_eq!(options, vec![("a".to_string(), "b=c".to_string())]);
    }

    #[test]
    fn write_data_pairs() {
        let args: Vec<String> = ["foo=bar", "empty=", "eq=a=b", "pw=-"].iter().map(|s| s.to_string()).collect();
        let m = parse_data_with(&args, || Ok("s3cret\n".into())).unwrap();
        assert_eq!(Value::Object(m), json!({"foo": "bar", "empty": "", "eq": "a=b", "pw": "s3cret"}));

        let twice: Vec<String> = vec!["a=-".into(), "b=-".into()];
        assert!(parse_data_with(&twice, || Ok(String::new())).is_err());
        let e = parse_data_with(&["novalue-SECRET".to_string()], || Ok(String::new())).unwrap_err();
        assert!(e.0.contains("KEY=VALUE") && !e.0.contains("SECRET"), "{}", e.0);
        let e = parse_data_with(&["=v".to_string()], || Ok(String::new())).unwrap_err();
        assert!(e.0.contains("KEY=VALUE"));
        // Not reading stdin unless asked.
        let m = parse_data_with(&["a=b".to_string()], || panic!("stdin read")).unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn key_from_a_pipe_is_one_trimmed_line() {
        let mut input = std::io::Cursor::new(b"  abcd1234\r\nsecond line\n".to_vec());
        assert_eq!(read_key_line(&mut input).unwrap().as_str(), "abcd1234");
        let e = read_key_line(&mut std::io::Cursor::new(b"\n".to_vec())).unwrap_err();
        assert!(e.0.contains("no key given"), "{}", e.0);
        assert!(read_key_line(&mut std::io::Cursor::new(Vec::new())).is_err());
    }

    #[test]
    fn tables_align() {
        let mut s = String::new();
        table(&mut s, &[("Sealed", "false".to_string()), ("Key Term", "2".to_string())]).unwrap();
        assert_eq!(s, "Key         Value\n---         -----\nSealed      false\nKey Term    2\n");
        let mut s = String::new();
        columns(&mut s, &["Path", "Type"], &[vec!["secret/".into(), "kv".into()]]).unwrap();
        assert_eq!(s, "Path       Type\n----       ----\nsecret/    kv\n");
    }

    #[test]
    fn secret_rendering() {
        let mut s = String::new();
        secret_table(&mut s, &json!({"lease_duration": 0, "data": {"foo": "bar", "n": 3}})).unwrap();
        assert!(s.contains("foo    bar") && s.contains("n      3"), "{s}");
        let mut s = String::new();
        let m = json!({"kv/": {"type": "kv", "accessor": "kv_1", "description": ""}});
        mounts_table(&mut s, m.as_object().unwrap()).unwrap();
        assert!(s.lines().all(|l| l == l.trim_end()), "{s:?}");
        let mut s = String::new();
        secret_table(&mut s, &json!({"sealed": false})).unwrap();
        assert!(s.contains("sealed    false"), "{s}");
    }

    #[test]
    fn decode_offline() {
        let token = "hvs.ABCDEFGHIJKLMNOPQRSTUVWX";
        let otp = "0123456789abcdefghijABCDEFGH";
        let enc = vault_client::api::encode_root_token(token, otp).unwrap();
        let o = decode_root(Format::Human, &enc, otp).unwrap();
        assert_eq!(o.stdout.as_str(), format!("{token}\n"));
        let o = decode_root(Format::Json, &enc, otp).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&o.stdout).unwrap(), json!({"token": token}));
        let e = decode_root(Format::Human, &enc, "short").unwrap_err();
        assert!(e.0.contains("do not match"));
    }

    #[test]
    fn client_errors_show_their_cause() {
        let e = CliError::from(vault_client::Error::from_response(403, br#"{"errors":["permission denied"]}"#));
        assert_eq!(e.0, "server returned 403 Forbidden: permission denied");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let c = Client::new("http://127.0.0.1:1").unwrap();
        let e = CliError::from(rt.block_on(c.sys().seal_status()).unwrap_err());
        assert_eq!(e.0.matches("error sending request").count(), 1, "{}", e.0);
    }
}
