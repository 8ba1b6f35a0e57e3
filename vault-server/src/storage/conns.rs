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
//! A connection taken from the list after idling longer than `ping_after`
//! is pinged first (PostgreSQL: a server restart or a proxy may have dropped
//! it meanwhile); the pool is still what opens connections. At most `max`
//! leases are out at once, no more than the pool holds, so that a lease
//! waiting for the pool never waits for a connection parked in our list.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool};
use tokio::sync::{Semaphore, SemaphorePermit};

pub(super) struct Conns<DB: Database> {
    pool: Pool<DB>,
    idle: Mutex<Vec<(PoolConnection<DB>, Instant)>>,
    /// One permit per lease out; `max` in all.
    leases: Semaphore,
    ping_after: Option<Duration>,
}

impl<DB: Database> Conns<DB> {
    /// `max`: leases out at once, at most the pool's `max_connections`
    /// (less any the pool must keep for other uses).
    pub(super) fn new(pool: Pool<DB>, max: usize, ping_after: Option<Duration>) -> Self {
        Self { pool, idle: Mutex::new(Vec::with_capacity(max)), leases: Semaphore::new(max), ping_after }
    }

    pub(super) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(PoolConnection<DB>, Instant)>> {
        // Only pushes and pops under the lock: a panic cannot leave it half-done.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: the most recently used idle one, else one from the pool.
    pub(super) async fn get(&self) -> Result<Lease<'_, DB>, sqlx::Error> {
        let permit = self.leases.acquire().await.map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let last = self.idle().pop();
            let Some((mut conn, since)) = last else { break };
            if self.ping_after.is_some_and(|after| since.elapsed() > after) && conn.ping().await.is_err() {
                // Dropped: the pool's own check closes it.
                continue;
            }
            return Ok(Lease { conns: self, conn: Some(conn), clean: false, _permit: permit });
        }
        Ok(Lease { conns: self, conn: Some(self.pool.acquire().await?), clean: false, _permit: permit })
    }

    /// Hand every kept connection back to the pool (before closing it).
    pub(super) fn release_all(&self) {
        let all: Vec<_> = self.idle().drain(..).collect();
        drop(all);
    }
}

/// A connection in use. Mark it [`clean`](Self::clean) once its query
/// finished without error: only then is it kept for the next query. A lease
/// dropped otherwise (an error, a cancelled future) goes back through the
/// pool, whose check closes it if it is broken.
pub(super) struct Lease<'a, DB: Database> {
    conns: &'a Conns<DB>,
    conn: Option<PoolConnection<DB>>,
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
}

impl<DB: Database> Drop for Lease<'_, DB> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !self.clean || self.conns.pool.is_closed() {
            return;
        }
        self.conns.idle().push((conn, Instant::now()));
    }
}
