//! Whole-storage snapshots and their restore, for backups (`crate::backup`).
//!
//! A snapshot is every row exactly as stored (clear path, ciphertext value,
//! revision) plus the seal configuration, read in one consistent database
//! snapshot and streamed through a bounded channel, so a large store is never
//! held in memory at once. A restore replaces every row and the seal
//! configuration in one transaction: all or nothing.

use tokio::sync::{mpsc, oneshot};

use super::{SealConfig, StorageError};

/// Every row, in path order (`COLLATE "C"` on PostgreSQL, bytes on SQLite).
pub(super) const SELECT_ALL: &str = "SELECT path, value, rev FROM entries ORDER BY path";

/// Rows in flight between the database reader and the consumer.
pub(super) const CHANNEL_ROWS: usize = 256;

/// One stored row, as a snapshot carries it. The value is ciphertext (the
/// barrier's or the seal's), never plaintext; `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// Storage path (clear).
    pub path: String,
    /// The stored bytes (AEAD ciphertext).
    pub value: Vec<u8>,
    /// Revision as stored.
    pub rev: i64,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Row({:?}, {} bytes, rev {})", self.path, self.value.len(), self.rev)
    }
}

/// A consistent snapshot being read: the seal configuration (read inside the
/// same database snapshot as the rows), then the rows sorted by path. An
/// error mid-stream arrives as the last item; a reader that stops early ends
/// the database transaction.
#[derive(Debug)]
pub struct Snapshot {
    /// The seal configuration at the snapshot's instant (`None`: uninitialized).
    pub seal_config: Option<SealConfig>,
    /// The rows, in path order.
    pub rows: mpsc::Receiver<Result<Row, StorageError>>,
}

/// The channels a backend's snapshot task feeds.
pub(super) struct Feed {
    pub(super) config: Option<oneshot::Sender<Result<Option<String>, StorageError>>>,
    pub(super) rows: mpsc::Sender<Result<Row, StorageError>>,
}

impl Feed {
    /// Report the seal configuration (raw JSON) read in the snapshot.
    pub(super) fn config(&mut self, c: Result<Option<String>, StorageError>) {
        if let Some(tx) = self.config.take() {
            let _ = tx.send(c);
        }
    }

    /// Report a failure, wherever the snapshot was.
    pub(super) async fn fail(&mut self, e: StorageError) {
        match self.config.take() {
            Some(tx) => {
                let _ = tx.send(Err(e));
            }
            None => {
                let _ = self.rows.send(Err(e)).await;
            }
        }
    }
}

/// Check the rows of a restore before anything is written: paths storage
/// accepts, unique and sorted (a snapshot is written in path order, so a
/// duplicate or an unsorted file is not one this server wrote), revisions
/// positive.
pub(super) fn check_rows(rows: &[Row]) -> Result<(), StorageError> {
    let mut last: Option<&str> = None;
    for r in rows {
        super::check_path(&r.path)?;
        if r.rev < 1 {
            return Err(StorageError::Corrupt(format!("revision of {}", r.path)));
        }
        if last.is_some_and(|l| l >= r.path.as_str()) {
            return Err(StorageError::Corrupt(format!("row order at {}", r.path)));
        }
        last = Some(&r.path);
    }
    Ok(())
}
