//! `vaultctl transit ...`: keys and encryption as a service. Plaintext is
//! given as is (an argument, or `-` for stdin, binary safe) and base64
//! encoded here, as the API wants; `decrypt` prints the decoded bytes.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
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
    }
    Ok(o)
}
