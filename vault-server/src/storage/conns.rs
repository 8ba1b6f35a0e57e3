//! Pooled connections kept between uses, so a query does not pay sqlx's
//! return-to-pool check.
//!
//! sqlx's pool pings every connection it gets back (`PoolConnection`'s drop
//! spawns a task that calls `ping` before the connection is idle again):
//! for PostgreSQL one more round trip to the server per query, for SQLite one
//! more hand-off to the connection's worker thread. On the storage's hot
//! paths (a point read, a group commit) that doubled the work the database
//! side did per query and woke two more threads on a two-core machine
//! (docs/performance.md). Here a connection that finished its query cleanly
//! goes back to a small list of our own instead, and the pool only sees it
//! again when that list is full, when the query failed or was cancelled
//! (then the pool's check runs, as before), or at close.
//!
//! What the pool would otherwise do for an idle connection is done here too:
//! - Waiting is bounded: a lease waits at most the pool's acquire timeout,
//!   for a permit, a ping and the pool together, and a timeout is a
//!   [`StorageError`] like the pool's own (no SQL text, no value).
//! - A connection taken from the list after idling longer than `ping_after`
//!   is pinged first (PostgreSQL: a server restart or a proxy may have
//!   dropped it meanwhile).
//! - Connections expire: one older than the pool's `max_lifetime` (counted
//!   from when it first left the pool: sqlx does not tell its real age; the
//!   pool's own check counts from the opening when it comes back) or idle in
//!   the list longer than the pool's `idle_timeout` is closed, when met and
//!   by a sweeper task, so a quiet server does not keep sessions open on
//!   PostgreSQL forever.
//! - A query that failed because the connection was lost (I/O, protocol,
//!   PostgreSQL's "terminating connection") empties the whole list: the
//!   database probably restarted and every parked connection is dead too.
//! - At close, [`release_all`](Conns::release_all) sets a flag under the
//!   list's lock: a lease that ends afterwards goes to the pool, never back
//!   into the list, where `Pool::close` would wait for it.
//!
//! At most `max` leases are out at once, no more than the pool holds, so that
//! a lease waiting for the pool never waits for a connection parked in our list.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::StorageError;

/// Used when the pool sets no `max_lifetime` / `idle_timeout` (sqlx's defaults).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest pause of the sweeper between two looks at the list.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A connection parked between uses.
struct Parked<DB: Database> {
    conn: PoolConnection<DB>,
    /// When it first left the pool for a lease (see the module doc).
    opened: Instant,
    /// When its last lease ended.
    used: Instant,
}

/// The parked connections, most recently used last, and the closing flag,
/// under one lock so that a lease ending during close cannot slip back in.
struct Idle<DB: Database> {
    list: Vec<Parked<DB>>,
    closing: bool,
}

#[derive(Clone, Copy)]
struct Limits {
    max_lifetime: Duration,
    idle_timeout: Duration,
}

impl Limits {
    fn expired(&self, opened: Instant, used: Instant, now: Instant) -> bool {
        now.saturating_duration_since(opened) > self.max_lifetime
            || now.saturating_duration_since(used) > self.idle_timeout
    }
}

pub(super) struct Conns<DB: Database> {
    pool: Pool<DB>,
    idle: Arc<Mutex<Idle<DB>>>,
    /// One permit per lease out; `max` in all.
    leases: Semaphore,
    ping_after: Option<Duration>,
    acquire_timeout: Duration,
    limits: Limits,
}

fn lock<DB: Database>(idle: &Mutex<Idle<DB>>) -> MutexGuard<'_, Idle<DB>> {
    // Only pushes, pops and drains under the lock: a panic cannot leave it half-done.
    idle.lock().unwrap_or_else(|p| p.into_inner())
}

/// Close expired connections (outside the lock: dropping one spawns its close).
fn sweep<DB: Database>(idle: &Mutex<Idle<DB>>, limits: Limits) {
    let now = Instant::now();
    let expired: Vec<Parked<DB>> = {
        let mut g = lock(idle);
        let (old, keep) = std::mem::take(&mut g.list).into_iter().partition(|p| limits.expired(p.opened, p.used, now));
        g.list = keep;
        old
    };
    for p in expired {
        close(p.conn);
    }
}

/// Close a connection instead of returning it to the pool (the pool opens a
/// replacement if it needs one).
fn close<DB: Database>(mut conn: PoolConnection<DB>) {
    conn.close_on_drop();
    drop(conn);
}

/// Whether `e` says the connection itself is gone (not just this query).
pub(super) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: class 08 (connection exception), 57P01-57P03
        // (administrator shutdown, crash shutdown, cannot connect now).
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

impl<DB: Database> Conns<DB> {
    /// Connections open, idle (in the pool or parked in our list) and the
    /// most the pool opens, for metrics.
    pub(super) fn stats(&self) -> crate::metrics::PoolStats {
        let parked = lock(&self.idle).list.len() as u64;
        crate::metrics::PoolStats {
            open: u64::from(self.pool.size()),
            idle: (self.pool.num_idle() as u64).saturating_add(parked),
            max: u64::from(self.pool.options().get_max_connections()),
        }
    }

    /// `max`: leases out at once, at most the pool's `max_connections`
    /// (less any the pool must keep for other uses). The acquire timeout,
    /// the lifetime and the idle timeout are the pool's. Starts the sweeper
    /// (call within a Tokio runtime).
    pub(super) fn new(pool: Pool<DB>, max: usize, ping_after: Option<Duration>) -> Self {
        let o = pool.options();
        let limits = Limits {
            max_lifetime: o.get_max_lifetime().unwrap_or(MAX_LIFETIME),
            idle_timeout: o.get_idle_timeout().unwrap_or(IDLE_TIMEOUT),
        };
        let acquire_timeout = o.get_acquire_timeout();
        let idle = Arc::new(Mutex::new(Idle { list: Vec::with_capacity(max), closing: false }));
        let every = (limits.max_lifetime.min(limits.idle_timeout) / 2).clamp(Duration::from_millis(10), SWEEP_EVERY);
        tokio::spawn(sweeper(Arc::downgrade(&idle), limits, every));
        Self { pool, idle, leases: Semaphore::new(max), ping_after, acquire_timeout, limits }
    }

    pub(super) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// A connection: the most recently used idle one, else one from the
    /// pool, within the pool's acquire timeout.
    pub(super) async fn get(&self) -> Result<Lease<'_, DB>, StorageError> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let permit = match tokio::time::timeout_at(deadline, self.leases.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(StorageError::Closed),
            Err(_) => return Err(StorageError::Database(sqlx::Error::PoolTimedOut)),
        };
        loop {
            let last = lock(&self.idle).list.pop();
            let Some(Parked { mut conn, opened, used }) = last else { break };
            if self.limits.expired(opened, used, Instant::now()) {
                close(conn);
                continue;
            }
            if self.ping_after.is_some_and(|after| used.elapsed() > after) {
                match tokio::time::timeout_at(deadline, conn.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        close(conn);
                        if connection_lost(&e) {
                            self.forget_idle();
                        }
                        continue;
                    }
                    // Cut off mid-ping, its state is unknown: close it.
                    Err(_) => {
                        close(conn);
                        return Err(StorageError::Database(sqlx::Error::PoolTimedOut));
                    }
                }
            }
            return Ok(Lease { conns: self, conn: Some(conn), opened, clean: false, _permit: permit });
        }
        let conn = match tokio::time::timeout_at(deadline, self.pool.acquire()).await {
            Ok(r) => r?,
            Err(_) => return Err(StorageError::Database(sqlx::Error::PoolTimedOut)),
        };
        Ok(Lease { conns: self, conn: Some(conn), opened: Instant::now(), clean: false, _permit: permit })
    }

    /// Hand every kept connection back to the pool (before closing it); from
    /// now on a lease that ends goes to the pool too.
    pub(super) fn release_all(&self) {
        let all: Vec<_> = {
            let mut g = lock(&self.idle);
            g.closing = true;
            g.list.drain(..).collect()
        };
        drop(all);
    }

    /// The connection was lost: so probably was every parked one (the
    /// database restarted). Close them all rather than fail one query each.
    fn forget_idle(&self) {
        let all: Vec<_> = lock(&self.idle).list.drain(..).collect();
        if !all.is_empty() {
            tracing::warn!(connections = all.len(), "database connection lost; closing the idle ones too");
        }
        for p in all {
            close(p.conn);
        }
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        lock(&self.idle).list.len()
    }
}

/// Every `every`, close the expired connections of the list, until the
/// [`Conns`] is gone or closing.
async fn sweeper<DB: Database>(idle: Weak<Mutex<Idle<DB>>>, limits: Limits, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(idle) = idle.upgrade() else { return };
        if lock(&idle).closing {
            return;
        }
        sweep(&idle, limits);
    }
}

/// A connection in use. Report its query's outcome with
/// [`done`](Self::done) (or mark it [`clean`](Self::clean)): only a clean
/// one is kept for the next query. A lease dropped otherwise (an error, a
/// cancelled future) goes back through the pool, whose check closes it if
/// it is broken.
pub(super) struct Lease<'a, DB: Database> {
    conns: &'a Conns<DB>,
    conn: Option<PoolConnection<DB>>,
    opened: Instant,
    clean: bool,
    /// Released after the connection is back in the list (fields drop after `drop`).
    _permit: SemaphorePermit<'a>,
}

impl<DB: Database> Lease<'_, DB> {
    pub(super) fn conn(&mut self) -> &mut DB::Connection {
        // Some until drop.
        match self.conn.as_mut() {
            Some(c) => c,
            None => unreachable!("a lease holds its connection until dropped"),
        }
    }

    /// The last query on this connection completed: keep it for reuse.
    pub(super) fn clean(&mut self) {
        self.clean = true;
    }

    /// The outcome of the last query on this connection: on success the
    /// connection is kept for reuse; a lost connection empties the list.
    pub(super) fn done<T>(&mut self, r: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        match &r {
            Ok(_) => self.clean = true,
            Err(e) => self.failed(e),
        }
        r
    }

    /// A query on this connection failed with `e` (not kept for reuse).
    pub(super) fn failed(&mut self, e: &sqlx::Error) {
        self.clean = false;
        if connection_lost(e) {
            self.conns.forget_idle();
        }
    }
}

impl<DB: Database> Drop for Lease<'_, DB> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !self.clean {
            return;
        }
        let now = Instant::now();
        if self.conns.limits.expired(self.opened, now, now) {
            close(conn);
            return;
        }
        let mut g = lock(&self.conns.idle);
        if g.closing || self.conns.pool.is_closed() {
            // Back to the pool, which `close` is waiting for.
            drop(g);
            drop(conn);
            return;
        }
        g.list.push(Parked { conn, opened: self.opened, used: now });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    async fn pool(dir: &std::path::Path, lifetime: Duration, idle: Duration) -> Pool<sqlx::Sqlite> {
        let opts = SqliteConnectOptions::new().filename(dir.join("c.db")).create_if_missing(true);
        SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .max_lifetime(lifetime)
            .idle_timeout(idle)
            .acquire_timeout(Duration::from_millis(300))
            .connect_with(opts)
            .await
            .unwrap()
    }

    /// Mark the lease's connection (a TEMP table lives and dies with it).
    async fn mark(l: &mut Lease<'_, sqlx::Sqlite>) {
        let r = sqlx::query("CREATE TEMP TABLE marker (x)").execute(l.conn()).await;
        l.done(r).unwrap();
    }

    async fn marked(l: &mut Lease<'_, sqlx::Sqlite>) -> bool {
        let r = sqlx::query("SELECT count(*) FROM temp.marker").fetch_one(l.conn()).await;
        let ok = r.is_ok();
        l.clean();
        ok
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_lease_waits_no_longer_than_the_acquire_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let c = Conns::new(pool(dir.path(), LONG, LONG).await, 1, None);
        let _held = c.get().await.unwrap();
        let t = Instant::now();
        let r = c.get().await;
        assert!(matches!(r, Err(StorageError::Database(sqlx::Error::PoolTimedOut))), "{:?}", r.err());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_closed_by_the_sweeper() {
        let dir = tempfile::tempdir().unwrap();
        let c = Conns::new(pool(dir.path(), LONG, Duration::from_millis(100)).await, 2, None);
        let mut l = c.get().await.unwrap();
        mark(&mut l).await;
        drop(l);
        assert_eq!(c.idle_count(), 1);
        // Polled, not one fixed sleep: on a loaded machine (the whole suite
        // on two cores) the sweeper's tick came late and the test failed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.idle_count() != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.idle_count(), 0, "the sweeper closes it without any traffic");
        let mut l = c.get().await.unwrap();
        assert!(!marked(&mut l).await, "a new connection, not the idle one");
    }

    #[tokio::test]
    async fn a_connection_past_its_lifetime_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Conns::new(pool(dir.path(), Duration::from_millis(200), LONG).await, 2, None);
        let mut l = c.get().await.unwrap();
        mark(&mut l).await;
        drop(l);
        // In constant use (never idle), yet replaced once past its lifetime.
        let t = Instant::now();
        let mut replaced = false;
        while t.elapsed() < Duration::from_secs(2) {
            let mut l = c.get().await.unwrap();
            if !marked(&mut l).await {
                replaced = true;
                break;
            }
            drop(l);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(replaced);
        assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_lease_ending_during_close_does_not_hold_the_pool_open() {
        let dir = tempfile::tempdir().unwrap();
        let c = Conns::new(pool(dir.path(), LONG, LONG).await, 2, None);
        let mut l = c.get().await.unwrap();
        l.clean();
        c.release_all();
        drop(l); // ends between release_all and pool.close
        assert_eq!(c.idle_count(), 0);
        tokio::time::timeout(Duration::from_secs(2), c.pool().close()).await.expect("close did not wait for it");
    }

    #[tokio::test]
    async fn a_lost_connection_empties_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let c = Conns::new(pool(dir.path(), LONG, LONG).await, 2, None);
        let mut a = c.get().await.unwrap();
        let mut b = c.get().await.unwrap();
        a.clean();
        drop(a);
        assert_eq!(c.idle_count(), 1);
        let r: Result<(), _> = Err(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert!(b.done(r).is_err());
        assert_eq!(c.idle_count(), 0);
        drop(b);
        // An error of the query alone keeps the others.
        let mut a = c.get().await.unwrap();
        let mut b = c.get().await.unwrap();
        a.clean();
        drop(a);
        let r = sqlx::query("SELECT * FROM no_such_table").execute(b.conn()).await;
        assert!(b.done(r).is_err());
        assert_eq!(c.idle_count(), 1);
    }
}
