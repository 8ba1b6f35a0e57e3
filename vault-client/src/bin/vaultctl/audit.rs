//! `vaultctl audit list|enable|disable|verify`: audit devices (`sys/audit`)
//! and the check of their tamper-evident logs (the `vault-audit` format,
//! docs/audit.md). `verify` exits 0 (intact), 1 (tampered: each finding
//! at file:line), 2 (could not check: unreadable file, no key).

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{Map, Value};

use crate::common::Env;
use crate::output::{columns, message, render};

/// `vaultctl audit SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// List the enabled audit devices (with their public keys).
    List,
    /// Enable a device: `vaultctl audit enable file file_path=/var/log/vault/audit.log`.
    Enable {
        /// Device type (`file`).
        kind: String,
        /// Where to enable it (default: the type).
        #[arg(long)]
        path: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Options as KEY=VALUE (file_path, mode, hmac_accessor, fsync, checkpoint_entries, checkpoint_interval).
        options: Vec<String>,
    },
    /// Disable a device (its writer signs off the chain first).
    Disable {
        /// The device's path.
        path: String,
    },
    /// Check audit log files (in order: rotated files first) for tampering.
    Verify(VerifyArgs),
}

/// `vaultctl audit verify`.
#[derive(Debug, ClapArgs)]
pub(crate) struct VerifyArgs {
    /// The log files, oldest first (a chain continues across rotated files).
    #[arg(required = true)]
    files: Vec<String>,
    /// The device's public key (base64, from `vaultctl audit list`).
    #[arg(long, conflicts_with = "device")]
    public_key: Option<String>,
    /// Fetch the public key of this device from the server (needs a token
    /// with sudo on sys/audit), and the head of the chain it writes: the
    /// files (the live one last) must reach it, so a cut of the live file is found.
    #[arg(long)]
    device: Option<String>,
    /// The files are complete (no server writes them any more): every chain
    /// must end with its signed close or rotate checkpoint, so a cut
    /// anywhere is found.
    #[arg(long)]
    closed: bool,
}

/// Exit code: the log was changed.
const TAMPERED: u8 = 1;
/// Exit code: the log could not be checked.
const UNCHECKED: u8 = 2;

pub(crate) async fn run(cmd: AuditCmd, env: &Env) -> anyhow::Result<ExitCode> {
    let fmt = env.format;
    let mut o = crate::output::Outcome::default();
    match cmd {
        AuditCmd::Verify(a) => return Ok(verify(a, env).await),
        AuditCmd::List => {
            let v = env.client()?.logical().read("sys/audit").await?.unwrap_or(Value::Null);
            let data = v.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
            render(&mut o, fmt, &v, |out| {
                let rows: Vec<Vec<String>> = data
                    .iter()
                    .map(|(p, d)| {
                        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        let file = d.pointer("/options/file_path").and_then(Value::as_str).unwrap_or("").to_string();
                        vec![p.clone(), s("type"), file, s("public_key")]
                    })
                    .collect();
                columns(out, &["Path", "Type", "File", "Public key"], &rows)
            })?;
        }
        AuditCmd::Enable { kind, path, description, options } => {
            let mut opts = Map::new();
            for kv in &options {
                let (k, v) = kv.split_once('=').with_context(|| format!("option {kv:?} is not KEY=VALUE"))?;
                opts.insert(k.to_string(), Value::String(v.to_string()));
            }
            let path = path.unwrap_or_else(|| kind.clone());
            let path = path.trim_matches('/');
            let body =
                serde_json::json!({"type": kind, "description": description.unwrap_or_default(), "options": opts});
            env.client()?.logical().write(&format!("sys/audit/{path}"), &body).await?;
            message(&mut o, fmt, &format!("Success! Enabled the {kind} audit device at: {path}/"));
        }
        AuditCmd::Disable { path } => {
            let path = path.trim_matches('/');
            env.client()?.logical().delete(&format!("sys/audit/{path}")).await?;
            message(&mut o, fmt, &format!("Success! Disabled audit device (if it was enabled) at: {path}/"));
        }
    }
    let _ = std::io::stdout().write_all(o.stdout.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn unchecked(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "Error: {msg}");
    ExitCode::from(UNCHECKED)
}

/// The chain head a server reports for a device: (node, seq, hash).
type Head = (String, u64, [u8; 32]);

/// The device's public key, and with `--device` the head of the chain the
/// server writes (read before the files, which then reach at least that far).
async fn public_key(a: &VerifyArgs, env: &Env) -> anyhow::Result<(vault_audit::VerifyingKey, Option<Head>)> {
    let (text, head) = match (&a.public_key, &a.device) {
        (Some(k), _) => (k.clone(), None),
        (None, Some(d)) => {
            let v = env.client()?.logical().read("sys/audit").await?.unwrap_or(Value::Null);
            let path = format!("{}/", d.trim_matches('/'));
            let device = v
                .pointer(&format!("/data/{}", path.replace('~', "~0").replace('/', "~1")))
                .with_context(|| format!("no audit device at {path} on the server"))?;
            let key = device
                .get("public_key")
                .and_then(Value::as_str)
                .with_context(|| format!("the server gave no public key for {path}"))?;
            let head = device.get("chain").filter(|c| !c.is_null()).map(|c| {
                let node = c.get("node").and_then(Value::as_str);
                let seq = c.get("seq").and_then(Value::as_u64);
                let hash = c
                    .get("hash")
                    .and_then(Value::as_str)
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok());
                match (node, seq, hash) {
                    (Some(n), Some(s), Some(h)) => Ok((n.to_string(), s, h)),
                    _ => Err(anyhow::anyhow!("the server gave a malformed chain head for {path}")),
                }
            });
            (key.to_string(), head.transpose()?)
        }
        (None, None) => anyhow::bail!("give the device's key: --public-key KEY or --device PATH"),
    };
    Ok((vault_audit::decode_public_key(&text)?, head))
}

async fn verify(a: VerifyArgs, env: &Env) -> ExitCode {
    let (key, head) = match public_key(&a, env).await {
        Ok(k) => k,
        Err(e) => return unchecked(&format!("{e:#}")),
    };
    let mut v = vault_audit::Verifier::new(key);
    if let Some((node, seq, hash)) = &head {
        v.expect_head(node, *seq, *hash);
    }
    for name in &a.files {
        let f = match std::fs::File::open(name) {
            Ok(f) => f,
            Err(e) => return unchecked(&format!("cannot read {name}: {e}")),
        };
        // Line by line: a log may be larger than memory.
        let mut r = std::io::BufReader::new(f);
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    n += 1;
                    let complete = line.last() == Some(&b'\n');
                    let bytes = if complete { &line[..line.len() - 1] } else { &line[..] };
                    v.line(name, n, bytes, complete);
                }
                Err(e) => return unchecked(&format!("cannot read {name}: {e}")),
            }
        }
    }
    let (entries, checkpoints, chains) = (v.entries(), v.checkpoints(), v.chains());
    let findings = v.finish(a.closed);
    let mut err = std::io::stderr().lock();
    for f in &findings {
        let _ = writeln!(err, "{f}");
    }
    let bad = findings.iter().filter(|f| f.severity == vault_audit::Severity::Tampered).count();
    let mut out = std::io::stdout().lock();
    if bad > 0 {
        let _ = writeln!(out, "TAMPERED: {bad} problem(s) found in {entries} entries ({chains} chain(s))");
        return ExitCode::from(TAMPERED);
    }
    let _ = writeln!(out, "OK: {entries} entries, {checkpoints} valid checkpoints, {chains} chain(s)");
    ExitCode::SUCCESS
}
