//! Physical storage: untrusted, and it only ever sees ciphertext.
//!
//! The write API takes [`Ciphertext`] values, which only AEAD sealing (the
//! barrier, or the unseal key wrapping the root key) produces. Paths are
//! stored in the clear; values never are. The one unencrypted record is the
//! [`SealConfig`] (share count and threshold), which `sys/seal-status` must
//! report while sealed, and which holds no secret.
//!
//! Two backends through sqlx: SQLite (embedded default) and PostgreSQL (for
//! production and several servers). Both pass the same conformance suite
//! (`tests/storage_conformance.rs` in this crate).
//!
//! Writes are *group committed*: concurrent write batches are collected by a
//! writer task and committed in one database transaction, each batch inside
//! its own savepoint so that a failed expectation rolls back that batch only.
//! A write returns only after the transaction carrying it is durable.

mod cache;
mod conns;
mod group;
mod plan;
mod postgres;
mod snapshot;
mod sql;
mod sqlite;
mod watch;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::crypto::Ciphertext;
pub use cache::DEFAULT_BYTES as DEFAULT_CACHE_BYTES;
pub use snapshot::{Row, Snapshot};

/// What can go wrong in storage. Messages never contain values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A write's expectation (absent, or at a given revision) did not hold:
    /// someone else wrote first. The batch was not applied.
    #[error("write conflict at {0}")]
    Conflict(String),
    /// The storage URL could not be understood.
    #[error("invalid storage URL: {0}")]
    InvalidUrl(String),
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored record could not be decoded (corruption or a foreign writer).
    #[error("corrupt record at {0}")]
    Corrupt(String),
    /// A group transaction failed as a whole; none of its writes happened.
    #[error("storage transaction failed: {0}")]
    Transaction(String),
    /// The storage is shutting down.
    #[error("storage is closed")]
    Closed,
    /// A path too long or with control characters (nothing was written).
    #[error("invalid storage path starting {0:?}")]
    InvalidPath(String),
}

/// The non-secret seal parameters, readable while sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealConfig {
    /// Number of unseal key shares (Vault's `n`).
    pub secret_shares: u8,
    /// Shares needed to unseal (Vault's `t`).
    pub secret_threshold: u8,
}

/// A stored value and its revision (incremented on every write of the path,
/// used for optimistic concurrency between servers).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The ciphertext as stored.
    pub value: Ciphertext,
    /// Revision: 1 on creation, +1 per overwrite.
    pub rev: i64,
}

/// A precondition on a path, checked inside the write transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The path must not exist.
    Absent,
    /// The path must exist at exactly this revision.
    Rev(i64),
}

/// One operation of an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or overwrite `path`.
    Put {
        /// Storage path (clear).
        path: String,
        /// Sealed value.
        value: Ciphertext,
        /// Optional precondition.
        expect: Option<Expect>,
    },
    /// Remove `path` (no error if absent, unless an expectation says otherwise).
    Delete {
        /// Storage path.
        path: String,
        /// Optional precondition.
        expect: Option<Expect>,
    },
    /// Replace the seal configuration.
    SetSealConfig(SealConfig),
}

/// Operations applied atomically: all or nothing.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add an unconditional put.
    pub fn put(&mut self, path: impl Into<String>, value: Ciphertext) -> &mut Self {
        self.ops.push(Op::Put { path: path.into(), value, expect: None });
        self
    }
    /// Add a put with a precondition.
    pub fn put_expect(&mut self, path: impl Into<String>, value: Ciphertext, expect: Expect) -> &mut Self {
        self.ops.push(Op::Put { path: path.into(), value, expect: Some(expect) });
        self
    }
    /// Add a delete.
    pub fn delete(&mut self, path: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete { path: path.into(), expect: None });
        self
    }
    /// Add a delete with a precondition.
    pub fn delete_expect(&mut self, path: impl Into<String>, expect: Expect) -> &mut Self {
        self.ops.push(Op::Delete { path: path.into(), expect: Some(expect) });
        self
    }
    /// Replace the seal configuration.
    pub fn set_seal_config(&mut self, c: SealConfig) -> &mut Self {
        self.ops.push(Op::SetSealConfig(c));
        self
    }
    /// True if no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    fn paths(&self) -> impl Iterator<Item = &str> {
        self.ops.iter().map(|op| match op {
            Op::Put { path, .. } | Op::Delete { path, .. } => path.as_str(),
            Op::SetSealConfig(_) => SEAL_CONFIG_CHANGE,
        })
    }
}

/// The pseudo-path announced when the seal configuration changes.
pub const SEAL_CONFIG_CHANGE: &str = "core/seal-config";

/// The pseudo-path announced when a restore replaced every row: other
/// servers on the same database hold keys and caches of the storage that
/// was, so they seal themselves (`core::Core::on_change`) and are unsealed
/// again with the restored vault's shares.
pub const RESTORED: &str = "core/restored";

/// What a restore's [`StorageError::Conflict`] names when other servers are
/// connected to the same PostgreSQL database (nothing was changed).
pub const OTHER_SERVERS: &str = "other servers connected to this database";

/// A change made by another server on the same database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This path was written or deleted.
    Path(String),
    /// Notifications may have been lost: reload everything cached.
    Resync,
}

/// Which database is behind a [`Storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Kind {
    /// Name reported as `storage_type` by `sys/seal-status`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgresql",
        }
    }
}

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// State shared by the handle, the writer and the change listener: what
/// must be updated whenever a path changes, here or on another server.
pub(super) struct Shared {
    cache: cache::ReadCache,
    watchers: watch::Watchers,
    /// False while the PostgreSQL change feed is not listening: another
    /// server's writes would go unseen, so nothing is cached meanwhile.
    following: std::sync::atomic::AtomicBool,
    /// Latencies, group sizes and cache hits, read by the metrics scrape.
    stats: crate::metrics::StorageStats,
    /// Pause points: `get:before-fill` (a read between the database and its
    /// fill), `commit:before-cache` (a group committed, the cache not yet updated).
    #[cfg(test)]
    pub(crate) pauses: crate::testing::Pauses,
    /// Batches submitted by [`Storage::write`].
    #[cfg(test)]
    writes: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// `path` changed (a local commit, or another server's announced one):
    /// drop it from the cache *before* anyone is told, then wake its waiters.
    fn changed(&self, path: &str) {
        self.cache.invalidate(path);
        self.watchers.fire(path);
    }

    fn set_following(&self, on: bool) {
        self.following.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Notifications may have been lost: forget everything, wake everyone.
    fn resync(&self) {
        self.cache.clear();
        self.watchers.fire_all();
    }
}

/// Handle to the storage; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    backend: Arc<Backend>,
    writer: group::Writer,
    changes: tokio::sync::broadcast::Sender<Change>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.kind().name())
    }
}

impl Storage {
    /// Open (creating if needed) the storage at `url` and run migrations.
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, DEFAULT_CACHE_BYTES).await
    }

    /// [`open`](Self::open) with a read cache of `cache_bytes` (0: none).
    pub async fn open_with(url: &str, cache_bytes: u64) -> Result<Self, StorageError> {
        let backend = if url.starts_with("sqlite:") {
            Arc::new(Backend::Sqlite(sqlite::Sqlite::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(Backend::Postgres(postgres::Postgres::open(url).await?))
        } else {
            return Err(StorageError::InvalidUrl("expected a sqlite:// or postgres:// URL".into()));
        };
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let shared = Arc::new(Shared {
            cache: cache::ReadCache::new(cache_bytes),
            watchers: Default::default(),
            following: std::sync::atomic::AtomicBool::new(matches!(&*backend, Backend::Sqlite(_))),
            stats: Default::default(),
            #[cfg(test)]
            pauses: Default::default(),
            #[cfg(test)]
            writes: Default::default(),
        });
        let writer = group::Writer::start(backend.clone(), shared.clone());
        if let Backend::Postgres(pg) = &*backend {
            pg.spawn_listener(changes.clone(), shared.clone());
        }
        Ok(Self { backend, writer, changes, shared })
    }

    /// Which database this is.
    pub fn kind(&self) -> Kind {
        match &*self.backend {
            Backend::Sqlite(_) => Kind::Sqlite,
            Backend::Postgres(_) => Kind::Postgres,
        }
    }

    /// This server's identity on the storage (a random id per process start).
    pub fn instance(&self) -> &str {
        match &*self.backend {
            Backend::Sqlite(b) => b.instance(),
            Backend::Postgres(b) => b.instance(),
        }
    }

    /// Whether the server with this [`instance`](Self::instance) id is
    /// still running on this storage. PostgreSQL: it has a session open
    /// (a crashed server's sessions are closed by the database). SQLite has
    /// one server per file, so only this one is.
    pub async fn is_connected(&self, instance: &str) -> Result<bool, StorageError> {
        match &*self.backend {
            Backend::Sqlite(b) => Ok(instance == b.instance()),
            Backend::Postgres(b) => Box::pin(b.is_connected(instance)).await,
        }
    }

    /// What this storage counted (latencies, group sizes, cache hits), for metrics.
    pub fn stats(&self) -> &crate::metrics::StorageStats {
        &self.shared.stats
    }

    /// The connection pool now, for metrics.
    pub fn pool_stats(&self) -> crate::metrics::PoolStats {
        match &*self.backend {
            Backend::Sqlite(b) => b.pool_stats(),
            Backend::Postgres(b) => b.pool_stats(),
        }
    }

    /// Changes made by *other* servers sharing this database (PostgreSQL
    /// LISTEN/NOTIFY; a SQLite file has one writer process, so nothing comes).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Read one path (through the read cache).
    pub async fn get(&self, path: &str) -> Result<Option<Entry>, StorageError> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(hit) = self.shared.cache.get(path) {
            self.shared.stats.cache_hits.fetch_add(1, Relaxed);
            return Ok(hit);
        }
        // After the cache: a path that was cached was checked when written.
        check_path(path)?;
        if self.is_caching() {
            self.shared.stats.cache_misses.fetch_add(1, Relaxed);
        }
        let ticket = self.shared.cache.ticket(path);
        let started = std::time::Instant::now();
        // The database calls are boxed (here and below): inline, their large
        // futures would size every caller's future up to the request
        // pipeline's, which is copied whole when boxed (callgrind: +40%
        // instructions on a cached read before this). A box costs one
        // allocation, and only on a cache miss.
        let found = match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.get(path)).await?,
            Backend::Postgres(b) => Box::pin(b.get(path)).await?,
        };
        self.shared.stats.get.observe_duration(started.elapsed());
        #[cfg(test)]
        self.shared.pauses.at("get:before-fill").await;
        if self.shared.following.load(std::sync::atomic::Ordering::SeqCst) {
            self.shared.cache.fill(ticket, path, &found);
        }
        Ok(found)
    }

    /// Whether the read cache holds `path` (its value or its absence): a
    /// [`get`](Self::get) would then not reach the database.
    pub fn is_cached(&self, path: &str) -> bool {
        self.shared.cache.get(path).is_some()
    }

    /// Whether the read cache is in use: enabled (`cache_max_bytes` above 0)
    /// and, on PostgreSQL, following the change feed. Only then does a path
    /// this server wrote stay cached, so that "not cached" hints "never
    /// written here".
    pub fn is_caching(&self) -> bool {
        self.shared.cache.enabled() && self.shared.following.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many batches [`write`](Self::write) was given so far.
    #[cfg(test)]
    pub(crate) fn writes_submitted(&self) -> u64 {
        self.shared.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Read one path from the database itself, bypassing the read cache:
    /// for checks that must see every commit that happened before them, on
    /// this server or another (a cached entry may await its invalidation).
    pub async fn get_fresh(&self, path: &str) -> Result<Option<Entry>, StorageError> {
        check_path(path)?;
        match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.get(path)).await,
            Backend::Postgres(b) => Box::pin(b.get(path)).await,
        }
    }

    /// Every path under `prefix` (any depth), sorted.
    pub async fn scan(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        check_path(prefix)?;
        match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.scan(prefix, upper_bound(prefix).as_deref())).await,
            Backend::Postgres(b) => Box::pin(b.scan(prefix, upper_bound(prefix).as_deref())).await,
        }
    }

    /// A notifier woken whenever `path` is written or deleted, by this server
    /// or (PostgreSQL) another one. Create the `notified()` future and
    /// `enable()` it *before* checking the state you wait for, so a change
    /// between the check and the wait is not missed.
    pub fn watch(&self, path: &str) -> Arc<tokio::sync::Notify> {
        self.shared.watchers.watch(path)
    }

    /// Immediate children of `prefix` (which is empty or ends in `/`), sorted;
    /// sub-folders end in `/`, as in Vault's LIST.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        check_path(prefix)?;
        let paths = match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.scan(prefix, upper_bound(prefix).as_deref())).await?,
            Backend::Postgres(b) => Box::pin(b.scan(prefix, upper_bound(prefix).as_deref())).await?,
        };
        Ok(children(prefix, paths))
    }

    /// Apply a batch atomically; returns once it is durable.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        for p in batch.paths() {
            check_path(p)?;
        }
        #[cfg(test)]
        self.shared.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // The writer task forgets the paths in the cache and wakes their
        // watchers after the commit, before replying: even if this future is
        // dropped meanwhile (a client gone), the commit is never left unseen.
        self.writer.submit(batch).await
    }

    /// After deleting a secret that must not outlive its delete: wipe what
    /// the database files still hold of it where the database allows it.
    /// SQLite zeroes deleted content (`secure_delete`) and this resets the
    /// WAL; PostgreSQL keeps dead row versions until VACUUM reuses their
    /// space, and its WAL as long as it is retained, which no statement here
    /// can erase (docs/threat-model.md).
    pub async fn scrub(&self) -> Result<(), StorageError> {
        match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.scrub()).await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// The seal configuration, if the vault was initialized.
    pub async fn seal_config(&self) -> Result<Option<SealConfig>, StorageError> {
        let raw = match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.seal_config()).await?,
            Backend::Postgres(b) => Box::pin(b.seal_config()).await?,
        };
        raw.map(|s| serde_json::from_str(&s).map_err(|_| StorageError::Corrupt("seal config".into()))).transpose()
    }

    /// A consistent snapshot of the whole storage: the seal configuration
    /// and every row, as stored (ciphertext), read in one database snapshot
    /// (SQLite: one read transaction; PostgreSQL: `REPEATABLE READ`) and
    /// streamed: at most a few hundred rows are in memory at once.
    pub async fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let (config_tx, config_rx) = tokio::sync::oneshot::channel();
        let (rows_tx, rows) = tokio::sync::mpsc::channel(snapshot::CHANNEL_ROWS);
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let mut feed = snapshot::Feed { config: Some(config_tx), rows: rows_tx };
            let r = match &*backend {
                Backend::Sqlite(b) => b.snapshot(&mut feed).await,
                Backend::Postgres(b) => b.snapshot(&mut feed).await,
            };
            if let Err(e) = r {
                feed.fail(e).await;
            }
        });
        let raw = config_rx.await.map_err(|_| StorageError::Closed)??;
        let seal_config = raw
            .map(|s| serde_json::from_str(&s).map_err(|_| StorageError::Corrupt("seal config".into())))
            .transpose()?;
        Ok(Snapshot { seal_config, rows })
    }

    /// Replace the whole storage (every row and the seal configuration) by
    /// `rows` in one transaction: on any error nothing changed. Then every
    /// cached value is forgotten and every watcher woken, as after a lost
    /// change feed. The caller makes sure nothing holds keys of the storage
    /// that was (the core seals first).
    pub async fn replace_all(&self, seal: Option<SealConfig>, rows: &[Row]) -> Result<(), StorageError> {
        snapshot::check_rows(rows)?;
        let json = seal.map(|c| serde_json::to_string(&c).unwrap_or_default());
        let r = match &*self.backend {
            Backend::Sqlite(b) => Box::pin(b.replace_all(json.as_deref(), rows)).await,
            Backend::Postgres(b) => Box::pin(b.replace_all(json.as_deref(), rows)).await,
        };
        // Whatever the outcome (a commit whose answer was lost may have
        // happened), nothing cached before may be trusted.
        self.shared.resync();
        r
    }

    /// Stop the writer (pending writes finish) and close connections.
    ///
    /// Each step is bounded by [`CLOSE_TIMEOUT`]: closing a pool waits for
    /// every connection in use to come back, and a shutdown must not hang on
    /// one that never does (a connection still out is dropped with the process).
    pub async fn close(&self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.writer.close()).await.is_err() {
            tracing::warn!("storage writer did not stop in time; closing anyway");
        }
        let pools = async {
            match &*self.backend {
                Backend::Sqlite(b) => b.close().await,
                Backend::Postgres(b) => b.close().await,
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, pools).await.is_err() {
            tracing::warn!("a storage connection was still in use at close; not waiting for it");
        }
    }
}

/// How long each step of [`Storage::close`] may wait.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest storage path accepted (PostgreSQL's btree rows and NOTIFY payloads
/// have limits; a path over them would fail a whole group commit).
pub const MAX_PATH_BYTES: usize = 1024;

/// Refuse paths that storage or the change feed cannot carry: too long, or
/// with control characters (the feed separates paths with newlines).
fn check_path(path: &str) -> Result<(), StorageError> {
    if path.len() > MAX_PATH_BYTES || path.chars().any(char::is_control) {
        return Err(StorageError::InvalidPath(path.chars().take(64).filter(|c| !c.is_control()).collect()));
    }
    Ok(())
}

/// The smallest string greater than every string starting with `prefix`,
/// for a range scan; `None` for the empty prefix (scan everything).
fn upper_bound(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            // Only ASCII bytes are incremented, so the result stays UTF-8.
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// Reduce full paths under `prefix` to its immediate children.
fn children(prefix: &str, paths: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        let Some(rest) = p.strip_prefix(prefix) else { continue };
        if rest.is_empty() {
            continue;
        }
        let child = match rest.find('/') {
            Some(i) => &rest[..=i],
            None => rest,
        };
        if out.last().map(String::as_str) != Some(child) {
            out.push(child.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::AeadKey;

    fn ct(b: &[u8]) -> Ciphertext {
        AeadKey::new(&[7; 32]).seal(&[1], b"t", b)
    }

    async fn sqlite(dir: &tempfile::TempDir, cache_bytes: u64) -> Storage {
        Storage::open_with(&format!("sqlite://{}/v.db", dir.path().display()), cache_bytes).await.unwrap()
    }

    /// The cached revision of `path`: `Some(None)` cached absent, `None` not cached.
    fn cached(s: &Storage, path: &str) -> Option<Option<i64>> {
        s.shared.cache.get(path).map(|e| e.map(|e| e.rev))
    }

    /// Stored at revision 1 by an unconditional put, whose outcome the
    /// commit does not know: not cached afterwards.
    async fn put_rev1(s: &Storage, path: &str) {
        let mut b = WriteBatch::new();
        b.put(path, ct(b"1"));
        s.write(b).await.unwrap();
        assert_eq!(cached(s, path), None);
    }

    async fn put_rev2(s: &Storage, path: &str) {
        let mut b = WriteBatch::new();
        b.put_expect(path, ct(b"2"), Expect::Rev(1));
        s.write(b).await.unwrap();
    }

    /// A read that fetched the old revision and fills the cache only after
    /// a commit cached the new one must not put the old one back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_after_a_commits_update_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(&dir, DEFAULT_CACHE_BYTES).await;
        put_rev1(&s, "k").await;
        let pause = s.shared.pauses.arm("get:before-fill");
        let read = tokio::spawn({
            let s = s.clone();
            async move { s.get("k").await.unwrap().unwrap().rev }
        });
        pause.reached().await; // the read has revision 1, not yet cached
        put_rev2(&s, "k").await;
        assert_eq!(cached(&s, "k"), Some(Some(2)), "the commit cached its outcome");
        pause.release();
        assert_eq!(read.await.unwrap(), 1, "the racing read itself saw the older revision");
        assert_eq!(cached(&s, "k"), Some(Some(2)), "its fill did not replace the commit's update");
        assert_eq!(s.get("k").await.unwrap().unwrap().rev, 2);
        s.close().await;
    }

    /// A read of the old revision that fills the cache after the commit
    /// reached the database but before the commit updated the cache is
    /// replaced by that update, before the write is acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_before_a_commits_update_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(&dir, DEFAULT_CACHE_BYTES).await;
        put_rev1(&s, "k").await;
        let fill = s.shared.pauses.arm("get:before-fill");
        let read = tokio::spawn({
            let s = s.clone();
            async move { s.get("k").await.unwrap().unwrap().rev }
        });
        fill.reached().await; // the read has revision 1
        let update = s.shared.pauses.arm("commit:before-cache");
        let write = tokio::spawn({
            let s = s.clone();
            async move { put_rev2(&s, "k").await }
        });
        update.reached().await; // revision 2 is in the database, not in the cache
        fill.release();
        assert_eq!(read.await.unwrap(), 1);
        assert_eq!(cached(&s, "k"), Some(Some(1)), "filled: the write is not acknowledged yet");
        assert!(!write.is_finished());
        update.release();
        write.await.unwrap();
        assert_eq!(cached(&s, "k"), Some(Some(2)), "the commit's update replaced the older fill");
        assert_eq!(s.get("k").await.unwrap().unwrap().rev, 2);
        s.close().await;
    }

    /// A commit's outcome is not cached over a change that came after the
    /// commit's ticket (here another server's, announced while the commit
    /// waited to update the cache).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commits_update_does_not_replace_a_later_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(&dir, DEFAULT_CACHE_BYTES).await;
        put_rev1(&s, "k").await;
        let update = s.shared.pauses.arm("commit:before-cache");
        let write = tokio::spawn({
            let s = s.clone();
            async move { put_rev2(&s, "k").await }
        });
        update.reached().await;
        s.shared.changed("k");
        update.release();
        write.await.unwrap();
        assert_eq!(cached(&s, "k"), None, "forgotten, not cached as revision 2");
        s.close().await;
    }

    #[tokio::test]
    async fn caching_only_with_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let on = sqlite(&dir, DEFAULT_CACHE_BYTES).await;
        assert!(on.is_caching());
        on.close().await;
        let off = sqlite(&dir, 0).await;
        assert!(!off.is_caching());
        off.close().await;
    }

    async fn all_rows(s: &Storage) -> (Option<SealConfig>, Vec<Row>) {
        let mut snap = s.snapshot().await.unwrap();
        let mut rows = Vec::new();
        while let Some(r) = snap.rows.recv().await {
            rows.push(r.unwrap());
        }
        (snap.seal_config, rows)
    }

    /// A snapshot is of one instant: rows written while it streams are not
    /// in it, and it holds every row as stored (ciphertext, revision).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_are_consistent_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(&dir, DEFAULT_CACHE_BYTES).await;
        let mut b = WriteBatch::new();
        for i in 0..(snapshot::CHANNEL_ROWS * 3) {
            b.put(format!("p/{i:05}"), ct(b"v"));
        }
        b.set_seal_config(SealConfig { secret_shares: 3, secret_threshold: 2 });
        s.write(b).await.unwrap();
        put_rev2(&s, "p/00000").await;
        let mut snap = s.snapshot().await.unwrap();
        // The reader is blocked on the full channel, its transaction open.
        let first = snap.rows.recv().await.unwrap().unwrap();
        assert_eq!((first.path.as_str(), first.rev), ("p/00000", 2));
        let mut late = WriteBatch::new();
        late.put("p/99999", ct(b"late")).delete("p/00500");
        s.write(late).await.unwrap();
        let mut n = 1;
        let mut saw_500 = false;
        while let Some(r) = snap.rows.recv().await {
            let r = r.unwrap();
            assert_ne!(r.path, "p/99999", "a later write is not in the snapshot");
            saw_500 |= r.path == "p/00500";
            n += 1;
        }
        assert!(saw_500, "a later delete does not remove a row from the snapshot");
        assert_eq!(n, snapshot::CHANNEL_ROWS * 3);
        assert_eq!(snap.seal_config, Some(SealConfig { secret_shares: 3, secret_threshold: 2 }));
        s.close().await;
    }

    /// Replace-all swaps every row and the seal configuration at once,
    /// forgets the cache, and refuses bad rows with nothing changed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replace_all_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(&dir, DEFAULT_CACHE_BYTES).await;
        put_rev1(&s, "old/a").await;
        put_rev2(&s, "old/a").await;
        assert!(s.get("old/a").await.unwrap().is_some());
        let row = |p: &str, rev| Row { path: p.into(), value: ct(p.as_bytes()).as_bytes().to_vec(), rev };
        let seal = SealConfig { secret_shares: 5, secret_threshold: 3 };
        // Bad rows (unsorted, a revision of 0, a control character): refused, nothing changed.
        for bad in [vec![row("b", 1), row("a", 1)], vec![row("a", 0)], vec![row("a\n", 1)]] {
            assert!(s.replace_all(Some(seal), &bad).await.is_err());
            assert_eq!(s.get("old/a").await.unwrap().map(|e| e.rev), Some(2));
            assert_eq!(s.seal_config().await.unwrap(), None);
        }
        let rows: Vec<Row> = (0..1200).map(|i| row(&format!("new/{i:04}"), 7)).collect();
        s.replace_all(Some(seal), &rows).await.unwrap();
        assert!(s.get("old/a").await.unwrap().is_none(), "the cached row is forgotten");
        assert_eq!(s.get("new/0042").await.unwrap().map(|e| e.rev), Some(7), "revisions as in the snapshot");
        assert_eq!(s.seal_config().await.unwrap(), Some(seal));
        let (config, back) = all_rows(&s).await;
        assert_eq!((config, back), (Some(seal), rows));
        // Writes go on from the restored revisions.
        let mut b = WriteBatch::new();
        b.put_expect("new/0001", ct(b"x"), Expect::Rev(7));
        s.write(b).await.unwrap();
        assert_eq!(s.get("new/0001").await.unwrap().map(|e| e.rev), Some(8));
        s.close().await;
    }

    #[test]
    fn upper_bounds() {
        assert_eq!(upper_bound(""), None);
        assert_eq!(upper_bound("a/").as_deref(), Some("a0"));
        assert_eq!(upper_bound("ab").as_deref(), Some("ac"));
    }

    #[test]
    fn children_folds_folders() {
        let paths = ["p/a", "p/b/c", "p/b/d", "p/c/", "p/c/x"].map(String::from).to_vec();
        assert_eq!(children("p/", paths), vec!["a", "b/", "c/"]);
    }
}
