//! Backups whose restore is proven: consistent snapshots of the storage
//! (every row as stored: values stay barrier-encrypted), restore into a new,
//! sealed or unsealed server, a restore drill that opens every entry, and
//! scheduled backups with retention (docs/backup.md).
//!
//! - `format.rs`: the file format (header, rows, SHA-256 manifest).
//! - `drill.rs`: the verify drill (restore into a throwaway SQLite store, open every entry).
//! - `schedule.rs`: `[backup]` scheduled snapshots, verify, retention, counters.
//!
//! HTTP is `http/snapshot.rs`; who may restore is `core/restore.rs`.

pub mod drill;
pub mod format;
pub mod schedule;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::barrier::now_unix;
use crate::core::{Core, CoreError};
use crate::storage::StorageError;

pub use format::{FormatError, Header, Manifest, Parsed};

/// Errors of backups. Messages name paths and counts, never values or keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The snapshot file is not one, or does not match its manifest (400).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The request cannot be served as asked (400).
    #[error("{0}")]
    Invalid(String),
    /// Another operation of the same kind (restore, or verify) is running (503).
    #[error("another snapshot operation is in progress; retry when it is done")]
    Busy,
    /// From the core (sealed, permission, seal errors).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Storage failed (500, detail logged).
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// A file could not be written or read (500 on the server, detail logged).
    #[error("{0}")]
    Io(String),
}

/// Snapshot settings the HTTP layer and the scheduler read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Largest snapshot accepted by restore and verify (held in memory while
    /// it is checked and applied).
    pub max_snapshot_bytes: u64,
    /// Scheduled backups, if configured.
    pub schedule: Option<schedule::Schedule>,
}

/// Default [`Settings::max_snapshot_bytes`]: 256 MiB (a restore holds the
/// file and its parsed rows in memory at once).
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

impl Default for Settings {
    fn default() -> Self {
        Self { max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES, schedule: None }
    }
}

/// Per-server backup state: settings, the one-at-a-time gates, and the
/// outcome counters of scheduled backups (for the metrics exporter).
#[derive(Debug)]
pub struct State {
    settings: std::sync::RwLock<Settings>,
    /// One restore at a time (it holds a snapshot in memory).
    restore_gate: tokio::sync::Semaphore,
    /// One verify at a time, apart from restores: a verify (which a caller
    /// may run without any token on an uninitialized server) never holds up
    /// a restore.
    verify_gate: tokio::sync::Semaphore,
    last_success: AtomicI64,
    last_failure: AtomicI64,
    successes: AtomicU64,
    failures: AtomicU64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            settings: Default::default(),
            restore_gate: tokio::sync::Semaphore::new(1),
            verify_gate: tokio::sync::Semaphore::new(1),
            last_success: AtomicI64::new(0),
            last_failure: AtomicI64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl State {
    /// Replace the settings (at start-up).
    pub fn configure(&self, s: Settings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The gate for one restore, or [`BackupError::Busy`]. Take it only
    /// once the caller is authorized (`Core::precheck_restore`).
    pub fn try_restore_gate(&self) -> Result<tokio::sync::SemaphorePermit<'_>, BackupError> {
        self.restore_gate.try_acquire().map_err(|_| BackupError::Busy)
    }

    /// The gate for one verify (never the restore's), or [`BackupError::Busy`].
    pub fn try_verify_gate(&self) -> Result<tokio::sync::SemaphorePermit<'_>, BackupError> {
        self.verify_gate.try_acquire().map_err(|_| BackupError::Busy)
    }

    /// Unix time of the last scheduled backup that was written and verified
    /// (0: none yet): `vault_backup_last_success_timestamp_seconds`.
    pub fn last_success_timestamp_seconds(&self) -> i64 {
        self.last_success.load(Ordering::Relaxed)
    }

    /// Unix time of the last failed scheduled backup (0: none).
    pub fn last_failure_timestamp_seconds(&self) -> i64 {
        self.last_failure.load(Ordering::Relaxed)
    }

    /// Scheduled backups that failed (write, verify or prune): `vault_backup_failures_total`.
    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Scheduled backups written and verified.
    pub fn successes_total(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, ok: bool) {
        let now = now_unix();
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
            self.last_success.store(now, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.last_failure.store(now, Ordering::Relaxed);
        }
    }
}

/// Chunks of a snapshot being written, in order; an error is the last item
/// (the consumer must then discard what it got: the file is incomplete).
pub type Chunks = mpsc::Receiver<Result<Bytes, BackupError>>;

/// Take a consistent snapshot of the storage and encode it as it streams
/// (the caller checked the right to: unsealed, `sudo`). Rows are sent as
/// read; a reader that stops ends the database read.
pub async fn take(core: &Core) -> Result<Chunks, BackupError> {
    // A sealed server serves no snapshot (the caller's token was checked
    // while unsealed; this closes the gap of a seal in between).
    core.unsealed()?;
    let storage = core.storage();
    let mut snap = storage.snapshot().await?;
    let now = now_unix();
    let header = Header {
        format: format::FORMAT.into(),
        version: format::VERSION,
        created_time: crate::logical::fields::rfc3339(now),
        created_unix: now,
        storage_type: storage.kind().name().into(),
        server_version: crate::core::VERSION.into(),
        seal_config: snap.seal_config,
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut enc = format::Encoder::default();
        if tx.send(Ok(Bytes::from(enc.header(&header)))).await.is_err() {
            return;
        }
        // Rows are sent in batches of about this many bytes.
        const CHUNK: usize = 256 * 1024;
        let mut buf = Vec::with_capacity(CHUNK);
        while let Some(row) = snap.rows.recv().await {
            match row {
                Ok(r) => buf.extend(enc.row(&r)),
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            if buf.len() >= CHUNK && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
                return;
            }
        }
        let (trailer, m) = enc.finish();
        buf.extend(trailer);
        if tx.send(Ok(Bytes::from(buf))).await.is_ok() {
            tracing::info!(entries = m.entries, sha256 = %m.sha256, "storage snapshot taken");
        }
    });
    Ok(rx)
}

/// Check a snapshot file against its manifest and restore it (the core
/// checks the caller's proof under its lock). The server is sealed after.
pub async fn restore(
    core: &Core,
    path: &str,
    bytes: &[u8],
    proof: crate::core::restore::Proof<'_>,
) -> Result<Manifest, BackupError> {
    let parsed = format::parse(bytes)?;
    let config = restorable(&parsed)?;
    core.restore_storage(path, config, &parsed.rows, proof).await?;
    Ok(parsed.manifest)
}

/// What a restore refuses in a snapshot that matches its manifest: no seal
/// configuration (an uninitialized vault), one nobody could unseal (a
/// crafted header: threshold 0, more than the shares...), no root key or
/// keyring. Restore and every verify (the drill) share this check, so a
/// snapshot is never `verified` that a restore would refuse.
pub fn restorable(parsed: &Parsed) -> Result<crate::storage::SealConfig, BackupError> {
    let Some(config) = parsed.header.seal_config else {
        return Err(BackupError::Invalid("the snapshot is of an uninitialized vault: nothing to restore".into()));
    };
    // A crafted header must not install a seal nobody can open.
    crate::seal::validate_config(i64::from(config.secret_shares), i64::from(config.secret_threshold))
        .map_err(|e| BackupError::Invalid(format!("the snapshot's seal configuration: {e}")))?;
    for needed in [crate::seal::ROOT_KEY_PATH, crate::barrier::KEYRING_PATH] {
        if parsed.rows.binary_search_by(|r| r.path.as_str().cmp(needed)).is_err() {
            return Err(BackupError::Invalid(format!("the snapshot has no {needed}: it is not of a whole vault")));
        }
    }
    Ok(config)
}

/// `vault-server backup-verify`: the drill on a file, with shares read from
/// files (one per line), without a server.
pub async fn verify_offline(
    file: &std::path::Path,
    share_files: &[std::path::PathBuf],
) -> Result<drill::Report, BackupError> {
    let mut shares = zeroize::Zeroizing::new(Vec::new());
    for f in share_files {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(f).map_err(|e| BackupError::Io(format!("cannot read {}: {e}", f.display())))?,
        );
        shares.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    let bytes = std::fs::read(file).map_err(|e| BackupError::Io(format!("cannot read {}: {e}", file.display())))?;
    let parsed = format::parse(&bytes)?;
    let sha256 = format::sha256_hex(&bytes);
    drop(bytes);
    let mut report = drill::run(&parsed, drill::Keys::Shares(&shares), None).await?;
    report.sha256 = sha256;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::storage::{Row, SealConfig};

    fn parsed(seal_config: Option<SealConfig>, paths: &[&str]) -> Parsed {
        let header = Header {
            format: format::FORMAT.into(),
            version: format::VERSION,
            created_time: "2026-12-02T00:00:00Z".into(),
            created_unix: 1_790_000_000,
            storage_type: "sqlite".into(),
            server_version: "test".into(),
            seal_config,
        };
        let mut e = format::Encoder::default();
        let mut out = e.header(&header);
        for p in paths {
            out.extend(e.row(&Row { path: (*p).into(), value: vec![1; 40], rev: 1 }));
        }
        out.extend(e.finish().0);
        format::parse(&out).unwrap()
    }

    /// The drill (every verify: HTTP, scheduled, offline) refuses what a
    /// restore refuses, before any key is used: a header with threshold 0
    /// was `verified: true` and then refused by the restore.
    #[tokio::test]
    async fn the_drill_refuses_what_a_restore_refuses() {
        let whole = ["core/keyring", "core/root-key"];
        let cfg = |n, t| Some(SealConfig { secret_shares: n, secret_threshold: t });
        let cases = [
            (cfg(3, 0), &whole[..], "threshold must be at least one"),
            (cfg(1, 0), &whole[..], "threshold must be at least one"),
            (cfg(0, 0), &whole[..], "shares must be at least one"),
            (cfg(2, 3), &whole[..], "threshold cannot be larger than shares"),
            (cfg(3, 1), &whole[..], "threshold must be greater than one"),
            (None, &whole[..], "uninitialized vault"),
            (cfg(3, 2), &["core/keyring"][..], "has no core/root-key"),
            (cfg(3, 2), &["core/root-key"][..], "has no core/keyring"),
        ];
        for (config, paths, says) in cases {
            let p = parsed(config, paths);
            let e = restorable(&p).unwrap_err();
            assert!(matches!(e, BackupError::Invalid(_)) && e.to_string().contains(says), "{config:?}: {e}");
            let e = drill::run(&p, drill::Keys::Shares(&[]), None).await.unwrap_err();
            assert!(matches!(e, BackupError::Invalid(_)) && e.to_string().contains(says), "{config:?}: {e}");
        }
        assert_eq!(restorable(&parsed(cfg(3, 2), &whole)).unwrap(), cfg(3, 2).unwrap());
        assert_eq!(restorable(&parsed(cfg(1, 1), &whole)).unwrap(), cfg(1, 1).unwrap());
    }
}
