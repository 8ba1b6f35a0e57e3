//! `vaultctl operator ...` (and the short forms `status`, `init`, `unseal`,
//! ...): the vault's lifecycle. Key shares, the root token and OTPs are
//! secrets printed by design: only on stdout, held in `Zeroizing` buffers.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use serde_json::json;
use vault_client::api::{GenerateRootStatus, InitResponse, KeyStatus, RekeyComplete, RekeyStatus, SealStatus};
use vault_client::{Client, RekeyUpdate};
use zeroize::{Zeroize as _, Zeroizing};

use crate::common::{Env, Format};
use crate::input::secret_arg;
use crate::output::{EXIT_NO_DATA, Outcome, message, render, table};

/// `vaultctl operator SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCmd {
    /// Initialize a new vault: prints the key shares and the root token, once.
    Init(InitArgs),
    /// Submit one unseal key share (typed hidden, or one line of stdin, when KEY is omitted).
    Unseal(UnsealArgs),
    /// Seal the vault.
    Seal,
    /// Show the seal status (exit code 2 when sealed).
    Status,
    /// Replace the unseal key shares (needs a token with sudo on sys/rekey/*).
    Rekey(RekeyArgs),
    /// Rotate the barrier encryption key (new key term).
    Rotate,
    /// Show the active barrier key term.
    KeyStatus,
    /// Generate a new root token from a quorum of key shares.
    GenerateRoot(GenerateRootArgs),
    /// Save a consistent snapshot of the storage to FILE (0600, atomic;
    /// prints its SHA-256), or `backup verify FILE` (docs/backup.md).
    Backup(crate::backup::BackupArgs),
    /// Restore a snapshot FILE into a new, sealed (with -unseal-key: a
    /// threshold of its CURRENT shares) or unsealed (sudo token) server; the
    /// server is sealed afterwards.
    Restore(crate::backup::RestoreArgs),
}

/// `operator init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Number of key shares to split the root key into.
    #[arg(long, default_value_t = 5)]
    key_shares: u32,
    /// Number of shares required to unseal.
    #[arg(long, default_value_t = 3)]
    key_threshold: u32,
    /// Only report whether the vault is initialized (exit code 0 yes, 2 no).
    #[arg(long)]
    status: bool,
}

/// `operator unseal`.
#[derive(Debug, Args)]
pub(crate) struct UnsealArgs {
    /// The key share (hex or base64; `-` reads stdin). Prefer stdin: it stays out of shell history.
    #[arg(conflicts_with = "reset")]
    key: Option<String>,
    /// Discard the shares submitted so far instead.
    #[arg(long)]
    reset: bool,
}

/// `operator rekey`: Vault's flags (`-init`, `-status`, `-cancel`,
/// `-nonce`), or the older subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RekeyArgs {
    #[command(subcommand)]
    cmd: Option<RekeyCmd>,
    /// Start a rekey (with -key-shares and -key-threshold).
    #[arg(long, conflicts_with_all = ["status", "cancel", "key"])]
    init: bool,
    /// Show the progress of the current rekey.
    #[arg(long, conflicts_with_all = ["cancel", "key"])]
    status: bool,
    /// Cancel the current rekey.
    #[arg(long, conflicts_with = "key")]
    cancel: bool,
    /// New number of key shares (with -init).
    #[arg(long, default_value_t = 5)]
    key_shares: u32,
    /// New threshold (with -init).
    #[arg(long, default_value_t = 3)]
    key_threshold: u32,
    /// The rekey nonce (default: the current attempt's).
    #[arg(long)]
    nonce: Option<String>,
    /// A current key share (typed hidden or one line of stdin when omitted).
    key: Option<String>,
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
        /// The rekey nonce (default: the current attempt's).
        #[arg(long)]
        nonce: Option<String>,
    },
    /// Cancel the current rekey.
    Cancel,
}

/// `operator generate-root`: Vault's flags (`-init`, `-status`, `-cancel`,
/// `-nonce`, `-decode`), or the older subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct GenerateRootArgs {
    #[command(subcommand)]
    cmd: Option<GenerateRootCmd>,
    /// Start an attempt; prints the nonce and the OTP.
    #[arg(long, conflicts_with_all = ["status", "cancel", "decode", "key"])]
    init: bool,
    /// Show the progress of the current attempt.
    #[arg(long, conflicts_with_all = ["cancel", "decode", "key"])]
    status: bool,
    /// Cancel the current attempt.
    #[arg(long, conflicts_with_all = ["decode", "key"])]
    cancel: bool,
    /// Decode this encoded token with -otp (offline).
    #[arg(long, value_name = "ENCODED", requires = "otp", conflicts_with = "key")]
    decode: Option<String>,
    /// The OTP: with -init, use it instead of a server-generated one; with -decode, decode with it.
    #[arg(long)]
    otp: Option<String>,
    /// The attempt nonce (default: the current attempt's).
    #[arg(long)]
    nonce: Option<String>,
    /// A key share (typed hidden or one line of stdin when omitted).
    key: Option<String>,
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
        /// The attempt nonce (default: the current attempt's).
        #[arg(long)]
        nonce: Option<String>,
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

pub(crate) async fn run(cmd: OperatorCmd, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    // Offline: must work without a reachable server.
    if let OperatorCmd::GenerateRoot(a) = &cmd {
        if let Some(GenerateRootCmd::Decode { encoded, otp }) = &a.cmd {
            return decode_root(fmt, encoded, otp);
        }
        if let (Some(encoded), Some(otp)) = (&a.decode, &a.otp) {
            return decode_root(fmt, encoded, otp);
        }
    }
    let c = env.client()?;
    let sys = c.sys();
    let mut o = Outcome::default();
    match cmd {
        OperatorCmd::Status => {
            let s = sys.seal_status().await?;
            render(&mut o, fmt, &s, |out| seal_status_table(out, &s))?;
            if s.sealed {
                o.code = EXIT_NO_DATA;
            }
        }
        OperatorCmd::Init(a) if a.status => {
            let s = sys.init_status().await?;
            render(&mut o, fmt, &s, |out| {
                writeln!(out, "{}", if s.initialized { "Vault is initialized" } else { "Vault is not initialized" })
            })?;
            if !s.initialized {
                o.code = EXIT_NO_DATA;
            }
        }
        OperatorCmd::Init(a) => {
            let r = sys.init(a.key_shares, a.key_threshold).await?;
            let rendered = render(&mut o, fmt, &r, |out| init_text(out, &r, a.key_threshold));
            wipe_init(r);
            rendered?;
        }
        OperatorCmd::Unseal(a) => {
            let s = if a.reset {
                sys.unseal_reset().await?
            } else {
                let key = secret_arg(a.key.as_deref(), "Unseal Key")?;
                sys.unseal(&key).await?
            };
            render(&mut o, fmt, &s, |out| seal_status_table(out, &s))?;
        }
        OperatorCmd::Seal => {
            sys.seal().await?;
            message(&mut o, fmt, "Success! Vault is sealed.");
        }
        OperatorCmd::Rotate => {
            sys.rotate().await?;
            let ks = sys.key_status().await.map_err(|e| {
                anyhow::anyhow!(e).context("the key was rotated, but reading the new key status failed")
            })?;
            render(&mut o, fmt, &ks, |out| {
                writeln!(out, "Success! Rotated key\n")?;
                key_status_table(out, &ks)
            })?;
        }
        OperatorCmd::KeyStatus => {
            let ks = sys.key_status().await?;
            render(&mut o, fmt, &ks, |out| key_status_table(out, &ks))?;
        }
        OperatorCmd::Rekey(a) => rekey(&mut o, fmt, &c, a).await?,
        OperatorCmd::GenerateRoot(a) => generate_root(&mut o, fmt, &c, a).await?,
        OperatorCmd::Backup(a) => crate::backup::backup(&mut o, fmt, &c, a).await?,
        OperatorCmd::Restore(a) => crate::backup::restore(&mut o, fmt, &c, a).await?,
    }
    Ok(o)
}

/// `health`: sys/health; exit code 2 when the vault is sealed or not initialized.
pub(crate) async fn health(env: &Env) -> anyhow::Result<Outcome> {
    let c = env.client()?;
    let h = c.sys().health().await?;
    let mut o = Outcome::default();
    let v = json!({"status": h.status, "health": &h.health});
    render(&mut o, env.format, &v, |out| {
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
    if h.health.sealed || !h.health.initialized {
        o.code = EXIT_NO_DATA;
    }
    Ok(o)
}

/// The nonce to use: the one given, else the current attempt's.
fn nonce_or(given: Option<String>, current: &str, what: &str) -> anyhow::Result<String> {
    match given {
        Some(n) => Ok(n),
        None if !current.is_empty() => Ok(current.to_string()),
        None => anyhow::bail!("no {what} in progress: start one with -init"),
    }
}

async fn rekey(o: &mut Outcome, fmt: Format, c: &Client, a: RekeyArgs) -> anyhow::Result<()> {
    let sys = c.sys();
    let cmd = match a.cmd {
        Some(cmd) => cmd,
        None if a.init => RekeyCmd::Init { key_shares: a.key_shares, key_threshold: a.key_threshold },
        None if a.status => RekeyCmd::Status,
        None if a.cancel => RekeyCmd::Cancel,
        None => RekeyCmd::Update { key: a.key, nonce: a.nonce },
    };
    match cmd {
        RekeyCmd::Init { key_shares, key_threshold } => {
            let s = sys.rekey_init(key_shares, key_threshold).await?;
            render(o, fmt, &s, |out| rekey_status_table(out, &s))
        }
        RekeyCmd::Status => {
            let s = sys.rekey_status().await?;
            render(o, fmt, &s, |out| rekey_status_table(out, &s))
        }
        RekeyCmd::Update { key, nonce } => {
            let nonce = match nonce {
                Some(n) => n,
                None => nonce_or(None, &sys.rekey_status().await?.nonce, "rekey")?,
            };
            let key = secret_arg(key.as_deref(), "Key (current share)")?;
            match sys.rekey_update(&key, &nonce).await? {
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
            message(o, fmt, "Success! Canceled rekeying (if it was started)");
            Ok(())
        }
    }
}

async fn generate_root(o: &mut Outcome, fmt: Format, c: &Client, a: GenerateRootArgs) -> anyhow::Result<()> {
    let sys = c.sys();
    let cmd = match a.cmd {
        Some(cmd) => cmd,
        None if a.init => GenerateRootCmd::Init { otp: a.otp },
        None if a.status => GenerateRootCmd::Status,
        None if a.cancel => GenerateRootCmd::Cancel,
        None => GenerateRootCmd::Update { key: a.key, nonce: a.nonce },
    };
    let s = match cmd {
        GenerateRootCmd::Init { otp } => sys.generate_root_start(otp.as_deref()).await?,
        GenerateRootCmd::Status => sys.generate_root_status().await?,
        GenerateRootCmd::Update { key, nonce } => {
            let nonce = match nonce {
                Some(n) => n,
                None => nonce_or(None, &sys.generate_root_status().await?.nonce, "root generation")?,
            };
            let key = secret_arg(key.as_deref(), "Key (current share)")?;
            sys.generate_root_update(&key, &nonce).await?
        }
        GenerateRootCmd::Cancel => {
            sys.generate_root_cancel().await?;
            message(o, fmt, "Success! Root token generation canceled (if it was started)");
            return Ok(());
        }
        GenerateRootCmd::Decode { encoded, otp } => {
            *o = decode_root(fmt, &encoded, &otp)?;
            return Ok(());
        }
    };
    let r = render(o, fmt, &s, |out| generate_root_text(out, &s));
    wipe_generate_root(s);
    r
}

pub(crate) fn decode_root(fmt: Format, encoded: &str, otp: &str) -> anyhow::Result<Outcome> {
    let token =
        vault_client::api::decode_root_token(encoded.trim(), otp.trim()).map(Zeroizing::new).ok_or_else(|| {
            anyhow::anyhow!(
                "cannot decode the token: the encoded token and the OTP do not match (wrong OTP or truncated input)"
            )
        })?;
    let mut o = Outcome::default();
    match fmt {
        Format::Json | Format::Yaml => {
            let v = json!({ "token": token.as_str() });
            o.stdout.push_str(&crate::output::encode(fmt, &v)?);
        }
        Format::Human => o.line(&token),
    }
    Ok(o)
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
         unsealed with {threshold} of them after every restart (vaultctl operator unseal).",
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
        writeln!(out, "\nDecode it with: vaultctl operator generate-root -decode={} -otp=<OTP>", s.encoded_token)?;
    } else if !s.otp.is_empty() {
        writeln!(out, "\nKeep the OTP: it is needed to decode the token and is not shown again.")?;
    }
    Ok(())
}

fn wipe_init(mut r: InitResponse) {
    r.keys.iter_mut().for_each(|k| k.zeroize());
    r.keys_base64.iter_mut().for_each(|k| k.zeroize());
    r.root_token.zeroize();
}

fn wipe_rekey(mut r: RekeyComplete) {
    r.keys.iter_mut().for_each(|k| k.zeroize());
    r.keys_base64.iter_mut().for_each(|k| k.zeroize());
}

fn wipe_generate_root(mut s: GenerateRootStatus) {
    s.otp.zeroize();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn decode_offline() {
        let token = "hvs.ABCDEFGHIJKLMNOPQRSTUVWX";
        let otp = "0123456789abcdefghijABCDEFGH";
        let enc = vault_client::api::encode_root_token(token, otp).unwrap();
        let o = decode_root(Format::Human, &enc, otp).unwrap();
        assert_eq!(o.stdout.as_str(), format!("{token}\n"));
        let o = decode_root(Format::Json, &enc, otp).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap(), json!({"token": token}));
        let e = decode_root(Format::Human, &enc, "short").unwrap_err();
        assert!(e.to_string().contains("do not match"));
    }
}
