//! `vaultctl operator backup FILE`, `operator backup verify FILE` and
//! `operator restore FILE` (docs/backup.md). Snapshots hold the stored
//! ciphertext only; unseal key shares given here go to the server in a
//! sensitive header, never to the output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vault_client::Client;
use zeroize::Zeroizing;

use crate::common::Format;
use crate::output::{Outcome, render, table};

/// Exit code of a verify whose drill failed (an entry did not open).
const EXIT_DRILL_FAILED: u8 = 2;

/// `operator backup`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    cmd: Option<BackupCmd>,
    /// Where to write the snapshot (created 0600; replaced atomically).
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BackupCmd {
    /// Check FILE: integrity (digest, counts), then a restore drill into a
    /// throwaway store that opens every entry; counts per mount; exit code 2
    /// if any entry does not open.
    Verify(VerifyArgs),
}

/// Shares, given on the command line or read from files.
#[derive(Debug, Args)]
struct Shares {
    /// An unseal key share (repeat for a threshold). Prefer -unseal-key-file:
    /// a command line is visible to other local users.
    #[arg(long = "unseal-key", value_name = "KEY")]
    keys: Vec<String>,
    /// A file holding unseal key shares, one per line (repeatable).
    #[arg(long = "unseal-key-file", value_name = "PATH")]
    files: Vec<PathBuf>,
}

impl Shares {
    fn collect(&self) -> anyhow::Result<Zeroizing<Vec<String>>> {
        let mut out = Zeroizing::new(self.keys.iter().map(|k| k.trim().to_string()).collect::<Vec<_>>());
        for f in &self.files {
            let text =
                Zeroizing::new(std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?);
            out.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
        }
        Ok(out)
    }
}

/// `operator backup verify`.
#[derive(Debug, Args)]
struct VerifyArgs {
    /// The snapshot file.
    file: PathBuf,
    #[command(flatten)]
    shares: Shares,
}

/// `operator restore`.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// For a sealed server: a threshold of its CURRENT unseal key shares.
    #[command(flatten)]
    shares: Shares,
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

pub(crate) async fn backup(o: &mut Outcome, fmt: Format, c: &Client, a: BackupArgs) -> anyhow::Result<()> {
    match (a.cmd, a.file) {
        (Some(BackupCmd::Verify(v)), _) => verify(o, fmt, c, v).await,
        (None, Some(file)) => {
            let saved = c.sys().snapshot_to_file(&file).await?;
            let v = json!({"file": file.display().to_string(), "bytes": saved.bytes, "sha256": saved.sha256});
            render(o, fmt, &v, |out| {
                writeln!(out, "Snapshot saved to {} ({} bytes)", file.display(), saved.bytes)?;
                writeln!(out, "SHA-256: {}", saved.sha256)
            })
        }
        (None, None) => anyhow::bail!("usage: vaultctl operator backup FILE | operator backup verify FILE"),
    }
}

async fn verify(o: &mut Outcome, fmt: Format, c: &Client, a: VerifyArgs) -> anyhow::Result<()> {
    let keys = a.shares.collect()?;
    let r = c.sys().snapshot_verify(read(&a.file)?, &keys).await?;
    let verified = r.get("verified").and_then(Value::as_bool) == Some(true);
    render(o, fmt, &r, |out| {
        let n = |k: &str| r.get(k).map(crate::output::cell).unwrap_or_default();
        table(
            out,
            &[
                ("Verified", verified.to_string()),
                ("SHA-256 (file)", n("sha256")),
                ("Created", n("created_time")),
                ("Source storage", n("storage_type")),
                ("Opened with", n("keys")),
                ("Entries", n("entries")),
                ("Opened", n("opened")),
                ("Failed", n("failed")),
            ],
        )?;
        writeln!(out)?;
        let mut rows = Vec::new();
        if let Some(m) = r.get("mounts").and_then(Value::as_object) {
            for (name, c) in m {
                let g = |k: &str| c.get(k).map(crate::output::cell).unwrap_or_default();
                rows.push(vec![name.clone(), g("type"), g("entries"), g("failed")]);
            }
        }
        crate::output::columns(out, &["Mount", "Type", "Entries", "Failed"], &rows)?;
        if let Some(f) = r.get("failures").and_then(Value::as_array).filter(|f| !f.is_empty()) {
            writeln!(out, "\nEntries that did not open:")?;
            for p in f {
                writeln!(out, "  {}", crate::output::cell(p))?;
            }
        }
        Ok(())
    })?;
    if !verified {
        o.code = EXIT_DRILL_FAILED;
    }
    Ok(())
}

pub(crate) async fn restore(o: &mut Outcome, fmt: Format, c: &Client, a: RestoreArgs) -> anyhow::Result<()> {
    let keys = a.shares.collect()?;
    let r = c.sys().snapshot_restore(read(&a.file)?, &keys).await?;
    render(o, fmt, &r, |out| {
        let n = |k: &str| r.get(k).map(crate::output::cell).unwrap_or_default();
        writeln!(out, "Success! Restored {} entries (SHA-256 {}).", n("entries"), n("sha256"))?;
        writeln!(out, "The vault is sealed: unseal it with the unseal key shares of the restored vault.")
    })
}
