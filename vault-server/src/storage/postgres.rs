//! PostgreSQL backend: production storage and the way to run several servers
//! (PostgreSQL's own replication provides HA; no consensus here). Commits are
//! durable under the server's `synchronous_commit` (on by default).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use std::sync::Arc;

use std::collections::HashMap;

use super::conns::Conns;
use super::snapshot::{Feed, Row as SnapRow};
use super::{Change, Ciphertext, Entry, Shared, StorageError, WriteBatch, plan, sql};

/// Connections of the pool: the change listener holds one, the rest serve
/// reads and group commits.
const POOL_SIZE: u32 = 24;
/// Of those, kept between queries (`conns.rs`) and out at once at most.
const LEASES: usize = 20;

/// Open the group's transaction and lock every path it will touch, in a
/// global order (sorted 64-bit hashes; a collision only serialises two
/// unrelated paths), so that concurrent group transactions, here or on other
/// servers, cannot deadlock. One simple query, so one round trip; the lock
/// keys are integers we computed, formatted as literals (nothing from a
/// request reaches this SQL text).
fn begin_and_lock(paths: &[&str]) -> String {
    let list = lock_keys(paths).iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock(k) FROM unnest(ARRAY[{list}]::bigint[]) WITH ORDINALITY AS t(k, n) \
         ORDER BY n"
    )
}

/// One attempt at a group: lock, read revisions, plan, write in bulk, announce, commit.
async fn commit_once(
    conn: &mut sqlx::PgConnection,
    instance: &str,
    batches: &[&WriteBatch],
) -> Result<Vec<Result<(), StorageError>>, sqlx::Error> {
    let all: Vec<&str> = batches.iter().flat_map(|b| b.paths()).collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(begin_and_lock(&all))).execute(&mut *conn).await?;
    let wanted = plan::paths_to_read(batches);
    let mut current = HashMap::with_capacity(wanted.len());
    for chunk in sql::chunks(&wanted, |p| p.len()) {
        let rows =
            sqlx::query("SELECT path, rev FROM entries WHERE path = ANY($1)").bind(chunk).fetch_all(&mut *conn).await?;
        for row in rows {
            current.insert(row.get::<String, _>(0), row.get::<i64, _>(1));
        }
    }
    let p = plan::plan(batches, &current);
    if p.changed.is_empty() {
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        return Ok(p.results);
    }
    for chunk in sql::chunks(&p.upserts, |(path, v, _)| path.len() + v.len()) {
        let paths: Vec<&str> = chunk.iter().map(|(p, _, _)| *p).collect();
        let values: Vec<&[u8]> = chunk.iter().map(|(_, v, _)| *v).collect();
        let revs: Vec<i64> = chunk.iter().map(|(_, _, r)| *r).collect();
        let text = format!(
            "INSERT INTO entries (path, value, rev) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[]){}",
            sql::UPSERT_TAIL
        );
        sqlx::query(sqlx::AssertSqlSafe(text)).bind(paths).bind(values).bind(revs).execute(&mut *conn).await?;
    }
    for chunk in sql::chunks(&p.deletes, |p| p.len()) {
        sqlx::query("DELETE FROM entries WHERE path = ANY($1)").bind(chunk).execute(&mut *conn).await?;
    }
    if let Some(c) = p.seal_config {
        let json = serde_json::to_string(&c).unwrap_or_default();
        sqlx::query(sql::SEAL_CONFIG_PUT).bind(json).execute(&mut *conn).await?;
    }
    notify(conn, instance, &p.changed).await?;
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(p.results)
}

/// FNV-1a, 64 bits: a stable, fast, non-cryptographic hash for lock keys.
fn path_hash(path: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Announce `paths` on [`CHANNEL`] inside the transaction (delivered on commit).
async fn notify(conn: &mut sqlx::PgConnection, instance: &str, paths: &[&str]) -> Result<(), sqlx::Error> {
    for payload in payloads(instance, paths) {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&payload).execute(&mut *conn).await?;
    }
    Ok(())
}

/// NOTIFY payloads announcing `paths`: this instance's id, then one path per
/// line, split to stay under [`MAX_PAYLOAD`] bytes.
fn payloads(instance: &str, paths: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut payload = String::from(instance);
    for path in paths {
        if payload.len() + path.len() + 1 > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut payload, String::from(instance)));
        }
        payload.push('\n');
        payload.push_str(path);
    }
    if payload.len() > instance.len() {
        out.push(payload);
    }
    out
}

/// Sorted, unique advisory lock keys of `paths` (see [`begin_and_lock`]).
fn lock_keys(paths: &[&str]) -> Vec<i64> {
    let mut keys: Vec<i64> = paths.iter().map(|p| path_hash(p)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The functions of `commit_one_shot.sql`, (re)created at every start.
const FUNCTIONS: &str = include_str!("commit_one_shot.sql");
/// Advisory lock key ("vault_fn") held while they are (re)created.
const FUNCTIONS_LOCK: i64 = 0x7661_756c_745f_666e;

/// Create or replace the functions the server calls (`commit_one_shot.sql`).
///
/// Not a numbered migration: sqlx's migrator refuses to start a server on a
/// database that has a migration the server does not know, and servers of
/// two versions share one database during a rolling upgrade or after a
/// rollback (docs/operations.md). An extra function harms no older server.
/// Concurrent `CREATE OR REPLACE FUNCTION`s of one function can fail
/// ("tuple concurrently updated"), so servers starting at once take turns
/// on an advisory lock, released with the transaction.
async fn create_functions(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FUNCTIONS_LOCK).execute(&mut *tx).await?;
    sqlx::raw_sql(FUNCTIONS).execute(&mut *tx).await?;
    tx.commit().await
}

/// Try a lone [`plan::OneShot`] batch in one round trip:
/// `vault_commit_one_shot_v1` (`commit_one_shot.sql`) locks, checks every
/// expectation, writes and announces as one statement outside a transaction
/// block, i.e. its own transaction, committed (and flushed, under
/// `synchronous_commit`) before PostgreSQL answers; sqlx reads the reply up
/// to `ReadyForQuery`, so `Ok(None)` means committed. `Ok(Some(path))`: the
/// expectation on `path` failed (the first that did, in the batch's order,
/// as [`plan::plan`] would report it) and nothing was written.
async fn one_shot(
    conn: &mut sqlx::PgConnection,
    instance: &str,
    batches: &[&WriteBatch],
    o: &plan::OneShot<'_>,
) -> Result<Option<String>, sqlx::Error> {
    let all: Vec<&str> = batches.iter().flat_map(|b| b.paths()).collect();
    let check_paths: Vec<&str> = o.checks.iter().map(|(p, _)| *p).collect();
    let check_revs: Vec<Option<i64>> = o
        .checks
        .iter()
        .map(|(_, e)| match e {
            super::Expect::Absent => None,
            super::Expect::Rev(r) => Some(*r),
        })
        .collect();
    let put_paths: Vec<&str> = o.upserts.iter().map(|(p, _)| *p).collect();
    let put_values: Vec<&[u8]> = o.upserts.iter().map(|(_, v)| *v).collect();
    let mut changed = all.clone();
    changed.sort_unstable();
    changed.dedup();
    let row = sqlx::query("SELECT vault_commit_one_shot_v1($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(lock_keys(&all))
        .bind(check_paths)
        .bind(check_revs)
        .bind(put_paths)
        .bind(put_values)
        .bind(&o.deletes)
        .bind(CHANNEL)
        .bind(payloads(instance, &changed))
        .fetch_one(&mut *conn)
        .await?;
    row.try_get(0)
}

/// Channel on which every commit announces the paths it wrote, so other
/// servers on the same database can drop what they cached (mount table,
/// keyring, seal configuration).
const CHANNEL: &str = "vault_changes";
/// PostgreSQL's NOTIFY payload limit is 8000 bytes; stay under it.
const MAX_PAYLOAD: usize = 7000;

/// Idle time after which a pooled connection is checked before use.
const IDLE_PING_AFTER: Duration = Duration::from_secs(30);

/// `application_name` of our sessions: this prefix and the instance id.
const APP_PREFIX: &str = "vault-server/";

pub(super) struct Postgres {
    pool: PgPool,
    conns: Conns<sqlx::Postgres>,
    instance: String,
    /// Groups planned exactly (`commit_once`), for tests.
    #[cfg(test)]
    exact_passes: std::sync::atomic::AtomicU64,
}

impl Postgres {
    /// The pool, for metrics.
    pub(super) fn pool_stats(&self) -> crate::metrics::PoolStats {
        self.conns.stats()
    }

    pub(super) async fn open(url: &str) -> Result<Self, StorageError> {
        let instance = crate::crypto::random::uuid();
        // The application name carries the instance id so that other servers
        // can tell whether a lease holder is still connected (`is_connected`).
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StorageError::InvalidUrl(e.to_string()))?
            .application_name(&format!("{APP_PREFIX}{instance}"));
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx's defaults, spelled out: `conns.rs` applies them to the
            // connections it keeps too, so sessions do not pile up on the server.
            .max_lifetime(Duration::from_secs(30 * 60))
            .idle_timeout(Duration::from_secs(10 * 60))
            // sqlx pings every idle connection before handing it out: a round
            // trip per query. Ping only connections idle long enough to have
            // been dropped (a server restart, a proxy timeout); a connection
            // that died sooner fails one statement and is discarded.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_PING_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts)
            .await?;
        // Several servers may start at once; sqlx's migrator takes an
        // advisory lock so only one applies each migration.
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        create_functions(&pool).await?;
        let conns = Conns::new(pool.clone(), LEASES, Some(IDLE_PING_AFTER));
        Ok(Self {
            pool,
            conns,
            instance,
            #[cfg(test)]
            exact_passes: Default::default(),
        })
    }

    /// Forward change notifications from other servers into `tx` until the
    /// pool closes. A lost connection is reported as [`Change::Resync`]
    /// (notifications may have been missed while it was down).
    pub(super) fn spawn_listener(&self, tx: tokio::sync::broadcast::Sender<Change>, shared: Arc<Shared>) {
        let pool = self.pool.clone();
        let me = self.instance.clone();
        tokio::spawn(async move {
            // Every (re)connection ends with LISTEN and then a resync: only
            // from then on are other servers' changes seen, so what was cached
            // before must go. Until then nothing is cached at all.
            loop {
                shared.set_following(false);
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut l) => match l.listen(CHANNEL).await {
                        Ok(()) => l,
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN failed; retrying");
                            if pool.is_closed() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener cannot connect; retrying");
                        if pool.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // A lost connection comes back through this loop (not sqlx's
                // own reconnect), so the resync always follows a LISTEN.
                shared.resync();
                let _ = tx.send(Change::Resync);
                shared.set_following(true);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            let mut lines = n.payload().lines();
                            if lines.next() == Some(me.as_str()) {
                                continue;
                            }
                            for path in lines {
                                shared.changed(path);
                                let _ = tx.send(Change::Path(path.to_string()));
                            }
                        }
                        Ok(None) => {
                            tracing::warn!("change listener connection lost; reconnecting");
                            break;
                        }
                        Err(_) if pool.is_closed() => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "change listener error; reconnecting");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                    }
                }
                shared.set_following(false);
                shared.resync();
                let _ = tx.send(Change::Resync);
            }
        });
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether the server `instance` has a session open on this database:
    /// PostgreSQL closes a crashed process's sessions, so a lease held by an
    /// instance with no session is abandoned.
    pub(super) async fn is_connected(&self, instance: &str) -> Result<bool, StorageError> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1)")
            .bind(format!("{APP_PREFIX}{instance}"))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub(super) async fn get(&self, path: &str) -> Result<Option<Entry>, StorageError> {
        let mut c = self.conns.get().await?;
        let r = sqlx::query(sql::GET).bind(path).fetch_optional(c.conn()).await;
        let row = c.done(r)?;
        Ok(row.map(|r| Entry { value: Ciphertext::from_storage(r.get(0)), rev: r.get(1) }))
    }

    pub(super) async fn scan(&self, from: &str, to: Option<&str>) -> Result<Vec<String>, StorageError> {
        let mut c = self.conns.get().await?;
        let r = match to {
            Some(to) => sqlx::query(sql::SCAN_RANGE).bind(from).bind(to),
            None => sqlx::query(sql::SCAN_ALL).bind(from),
        }
        .fetch_all(c.conn())
        .await;
        let rows = c.done(r)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn seal_config(&self) -> Result<Option<String>, StorageError> {
        let mut c = self.conns.get().await?;
        let r = sqlx::query(sql::SEAL_CONFIG_GET).fetch_optional(c.conn()).await;
        let row = c.done(r)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn commit_group(
        &self,
        batches: &[&WriteBatch],
    ) -> Result<Vec<Result<(), StorageError>>, StorageError> {
        let mut lease = self.conns.get().await?;
        let instance = self.instance.as_str();
        // Deadlocks are prevented by taking the group's row locks in one
        // global order (advisory locks on sorted path hashes, first thing in
        // the transaction); a deadlock or serialization failure from anything
        // else is retried, which is safe because the whole group rolled back.
        // A lone batch whose paths are all distinct (every write at c=1)
        // first tries the one-round-trip form; the seal configuration (init,
        // rekey: rare) always takes the exact path. Groups of several batches
        // keep the statement-per-step transaction: with the function they
        // measured slower under load (docs/performance.md: c=64 at 0.7x of
        // the statement-per-step form), for reasons not yet pinned down.
        // The function names the batch's conflict itself: a lone batch
        // needs no second, exact pass.
        let shot = match batches {
            [_] => plan::one_shot(batches).filter(|o| o.seal_config.is_none()),
            _ => None,
        };
        let mut attempt = 0;
        loop {
            let conn = lease.conn();
            let r = match &shot {
                Some(o) => match one_shot(conn, instance, batches, o).await {
                    Ok(None) => Ok(vec![Ok(())]),
                    Ok(Some(stale)) => Ok(vec![Err(StorageError::Conflict(stale))]),
                    Err(e) => Err(e),
                },
                None => {
                    #[cfg(test)]
                    self.exact_passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    commit_once(conn, instance, batches).await
                }
            };
            match r {
                Ok(results) => {
                    lease.clean();
                    return Ok(results);
                }
                Err(e) => {
                    lease.failed(&e);
                    if super::conns::connection_lost(&e) {
                        // Nothing to roll back on a lost connection (the
                        // server rolls back what it had); retrying the group
                        // on it would only fail again.
                        return Err(e.into());
                    }
                    let _ = sqlx::query("ROLLBACK").execute(lease.conn()).await;
                    let retryable =
                        e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01" || c == "40001");
                    attempt += 1;
                    if !retryable || attempt >= 5 {
                        return Err(e.into());
                    }
                    tracing::debug!(attempt, "storage transaction retried after a lock conflict");
                }
            }
        }
    }

    pub(super) async fn close(&self) {
        self.conns.release_all();
        self.pool.close().await;
    }

    /// Stream every row and the seal configuration from one `REPEATABLE
    /// READ` transaction: PostgreSQL's snapshot isolation, so the rows are
    /// those of one instant whatever commits meanwhile.
    pub(super) async fn snapshot(&self, feed: &mut Feed) -> Result<(), StorageError> {
        let mut lease = self.conns.get().await?;
        let r = stream_snapshot(lease.conn(), feed).await;
        lease.done(r)?;
        Ok(())
    }

    /// Replace every row and the seal configuration in one transaction.
    /// `EXCLUSIVE` on `entries` makes group commits (here and on other
    /// servers) wait for it, while reads go on; other servers are told on
    /// the change feed ([`RESTORED`](super::RESTORED)), which seals them.
    pub(super) async fn replace_all(&self, seal: Option<&str>, rows: &[SnapRow]) -> Result<(), StorageError> {
        let mut lease = self.conns.get().await?;
        let instance = self.instance.clone();
        let r = async {
            let mut tx = sqlx::Connection::begin(lease.conn()).await?;
            sqlx::query("LOCK TABLE entries IN EXCLUSIVE MODE").execute(&mut *tx).await?;
            // Another server on this database holds the old vault's keys and
            // may have writes queued behind the lock, encrypted under them:
            // they would land in the restored vault. Refuse until they are
            // stopped (docs/backup.md).
            let others: i64 = sqlx::query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name LIKE $1 AND application_name <> $2",
            )
            .bind(format!("{APP_PREFIX}%"))
            .bind(format!("{APP_PREFIX}{instance}"))
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            if others > 0 {
                return Ok(Err(StorageError::Conflict(super::OTHER_SERVERS.into())));
            }
            sqlx::query("DELETE FROM entries").execute(&mut *tx).await?;
            for chunk in sql::chunks(rows, |r| r.path.len() + r.value.len()) {
                let paths: Vec<&str> = chunk.iter().map(|r| r.path.as_str()).collect();
                let values: Vec<&[u8]> = chunk.iter().map(|r| r.value.as_slice()).collect();
                let revs: Vec<i64> = chunk.iter().map(|r| r.rev).collect();
                sqlx::query(
                    "INSERT INTO entries (path, value, rev) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[])",
                )
                .bind(paths)
                .bind(values)
                .bind(revs)
                .execute(&mut *tx)
                .await?;
            }
            match seal {
                Some(json) => sqlx::query(sql::SEAL_CONFIG_PUT).bind(json).execute(&mut *tx).await?,
                None => sqlx::query("DELETE FROM seal_config").execute(&mut *tx).await?,
            };
            notify(&mut tx, &instance, &[super::RESTORED, super::SEAL_CONFIG_CHANGE]).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(()))
        }
        .await;
        lease.done(r)?
    }
}

/// Read the seal configuration and then every row, in path order, inside
/// one `REPEATABLE READ` read-only transaction, into `feed`. Stops early
/// (rolling back) when the consumer is gone.
async fn stream_snapshot(conn: &mut sqlx::PgConnection, feed: &mut Feed) -> Result<(), sqlx::Error> {
    use futures_util::StreamExt as _;
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let config = sqlx::query(sql::SEAL_CONFIG_GET).fetch_optional(&mut *tx).await?;
    feed.config(Ok(config.map(|r| r.get::<String, _>(0))));
    {
        let mut rows = sqlx::query(super::snapshot::SELECT_ALL).fetch(&mut *tx);
        while let Some(row) = rows.next().await {
            let row = row?;
            let row = SnapRow { path: row.get(0), value: row.get(1), rev: row.get(2) };
            if feed.rows.send(Ok(row)).await.is_err() {
                break;
            }
        }
    }
    tx.rollback().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::AeadKey;
    use crate::storage::Expect;

    fn ct(b: &[u8]) -> super::super::Ciphertext {
        AeadKey::new(&[7; 32]).seal(&[1], b"t", b)
    }

    /// A fresh database in the shared throwaway cluster (see storage_conformance.rs).
    async fn database() -> (std::sync::Arc<vault_e2e::PgCluster>, String) {
        let pg = tokio::task::spawn_blocking(vault_e2e::PgCluster::shared).await.unwrap();
        let pg2 = pg.clone();
        let db = tokio::task::spawn_blocking(move || pg2.create_database()).await.unwrap();
        let url = pg.url(&db);
        (pg, url)
    }

    /// Dropping the last reference stops the cluster (blocking): off the runtime.
    async fn release(pg: std::sync::Arc<vault_e2e::PgCluster>) {
        tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
    }

    async fn rev(db: &Postgres, path: &str) -> Option<i64> {
        db.get(path).await.unwrap().map(|e| e.rev)
    }

    /// A lone batch whose expectation fails gets its conflict from the
    /// function (the first failing path, in the batch's order) and is not
    /// planned again exactly; nothing of it is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_batch_conflict_comes_from_the_function() {
        let (pg, url) = database().await;
        let db = Postgres::open(&url).await.unwrap();
        let mut a = WriteBatch::new();
        a.put("p1", ct(b"1")).put("p2", ct(b"2"));
        assert!(db.commit_group(&[&a]).await.unwrap()[0].is_ok());
        let exact = db.exact_passes.load(std::sync::atomic::Ordering::SeqCst);
        let mut b = WriteBatch::new();
        b.put_expect("p1", ct(b"x"), Expect::Rev(1));
        b.put_expect("p2", ct(b"y"), Expect::Absent);
        b.put_expect("p3", ct(b"z"), Expect::Rev(4));
        let r = db.commit_group(&[&b]).await.unwrap();
        assert!(matches!(&r[0], Err(StorageError::Conflict(p)) if p == "p2"), "{r:?}");
        assert_eq!(db.exact_passes.load(std::sync::atomic::Ordering::SeqCst), exact, "no second pass");
        assert_eq!((rev(&db, "p1").await, rev(&db, "p2").await, rev(&db, "p3").await), (Some(1), Some(1), None));
        let mut c = WriteBatch::new();
        c.put_expect("p1", ct(b"x"), Expect::Rev(1)).put_expect("p3", ct(b"z"), Expect::Absent);
        assert!(db.commit_group(&[&c]).await.unwrap()[0].is_ok());
        assert_eq!((rev(&db, "p1").await, rev(&db, "p3").await), (Some(2), Some(1)));
        db.close().await;
        release(pg).await;
    }

    /// When the database drops this server's sessions (a restart), the first
    /// query to meet a dead connection fails, and the parked ones are closed
    /// with it: the next query gets a new connection instead of failing too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_closes_the_parked_ones() {
        let (pg, url) = database().await;
        let db = Postgres::open(&url).await.unwrap();
        let mut leases = Vec::new();
        for _ in 0..6 {
            let mut l = db.conns.get().await.unwrap();
            let r = sqlx::query("SELECT 1").execute(l.conn()).await;
            l.done(r).unwrap();
            leases.push(l);
        }
        drop(leases);
        assert_eq!(db.conns.idle_count(), 6);
        let (pg2, app) = (pg.clone(), format!("{APP_PREFIX}{}", db.instance));
        let ended = tokio::task::spawn_blocking(move || pg2.terminate_app(&app)).await.unwrap();
        assert!(ended >= 6, "{ended}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(db.get("k").await.is_err(), "a dead connection fails its query");
        assert_eq!(db.conns.idle_count(), 0, "the parked ones are closed with it");
        assert!(db.get("k").await.unwrap().is_none(), "the next query gets a live connection");
        db.close().await;
        release(pg).await;
    }

    /// Older servers (every version whose migrations are 0001 only) start on
    /// a database this one has opened: the function it needs is not a
    /// numbered migration. Servers starting at once all succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn older_servers_and_concurrent_starts() {
        let (pg, url) = database().await;
        let opens = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Postgres::open(&url).await })
        });
        let mut dbs = Vec::new();
        for o in opens {
            dbs.push(o.await.unwrap().unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let init = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/postgres/0001_init.sql");
        std::fs::copy(init, dir.path().join("0001_init.sql")).unwrap();
        let older = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
        older.run(&dbs[0].pool).await.expect("an older server's migrations accept the database");
        let mut b = WriteBatch::new();
        b.put_expect("k", ct(b"k"), Expect::Absent);
        assert!(dbs[0].commit_group(&[&b]).await.unwrap()[0].is_ok());
        assert_eq!(dbs[0].exact_passes.load(std::sync::atomic::Ordering::SeqCst), 0, "through the function");
        for db in dbs {
            db.close().await;
        }
        release(pg).await;
    }
}
