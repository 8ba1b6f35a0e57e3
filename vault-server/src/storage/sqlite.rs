//! SQLite backend: the embedded default. WAL journal with `synchronous=FULL`,
//! so a commit is on disk before it is acknowledged; one writer connection
//! (SQLite serialises writers anyway) and a small pool of readers, which WAL
//! lets run concurrently with the writer.
//!
//! Everything goes through sqlx, whose SQLite driver runs each connection on
//! a thread of its own: every query is a hand-off to that thread and back
//! (two thread wake-ups), which on a two-core machine costs more than the
//! statement itself. Hence the shapes here: a point read is one query on a
//! reader kept out of the pool's return check (`conns.rs`), a group commit
//! is one query string, a single statement when it can be.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row};
use tokio::sync::Mutex;

use std::collections::HashMap;

use super::conns::Conns;
use super::snapshot::{Feed, Row as SnapRow};
use super::{Ciphertext, Entry, Expect, SealConfig, StorageError, WriteBatch, plan, sql};

/// Reader connections (WAL readers run beside the writer).
const READERS: u32 = 4;

/// Open the transaction and read the current revisions of `paths` (absent
/// ones are missing from the map). sqlx hands every statement to SQLite's
/// worker thread separately, so `BEGIN` and the first read share one query
/// string (numbered parameters bind across its statements): one hand-off.
async fn begin_and_read(conn: &mut SqliteConnection, paths: &[&str]) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut out = HashMap::with_capacity(paths.len());
    let chunks = sql::chunks(paths, |p| p.len());
    if chunks.is_empty() {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    }
    for (i, chunk) in chunks.iter().enumerate() {
        let begin = if i == 0 { "BEGIN IMMEDIATE; " } else { "" };
        let text =
            format!("{begin}SELECT path, rev FROM entries WHERE path IN ({})", sql::placeholders(chunk.len(), 1));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for path in chunk.iter() {
            q = q.bind(*path);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.insert(row.get(0), row.get(1));
        }
    }
    Ok(out)
}

/// End a group's query string: delete `deletes` paths (bound from parameter
/// `$next` on), set the seal configuration if any, commit. Returns the seal
/// configuration's JSON, to bind after the paths.
fn push_deletes_seal_commit(
    text: &mut String,
    mut next: usize,
    deletes: usize,
    seal: Option<SealConfig>,
) -> Option<String> {
    if deletes > 0 {
        text.push_str(&format!("DELETE FROM entries WHERE path IN ({}); ", sql::placeholders_from(next, deletes, 1)));
        next += deletes;
    }
    let seal = seal.map(|c| serde_json::to_string(&c).unwrap_or_default());
    if seal.is_some() {
        text.push_str(&sql::SEAL_CONFIG_PUT.replace("$1", &format!("${next}")));
        text.push_str("; ");
    }
    text.push_str("COMMIT");
    seal
}

/// Write a plan and commit, as one query string when it fits one chunk
/// (the common case: one hand-off to SQLite's thread), else statement by statement.
async fn write_and_commit(conn: &mut SqliteConnection, p: &plan::Plan<'_>) -> Result<(), sqlx::Error> {
    let ups = sql::chunks(&p.upserts, |(path, v, _)| path.len() + v.len());
    let dels = sql::chunks(&p.deletes, |path| path.len());
    if ups.len() <= 1 && dels.len() <= 1 {
        let mut text = String::new();
        let mut next = 1;
        if !p.upserts.is_empty() {
            let ph = sql::placeholders_from(next, p.upserts.len(), 3);
            text.push_str(&format!("INSERT INTO entries (path, value, rev) VALUES {ph}{}; ", sql::UPSERT_TAIL));
            next += 3 * p.upserts.len();
        }
        let seal = push_deletes_seal_commit(&mut text, next, p.deletes.len(), p.seal_config);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for (path, value, rev) in &p.upserts {
            q = q.bind(*path).bind(*value).bind(*rev);
        }
        for path in &p.deletes {
            q = q.bind(*path);
        }
        if let Some(json) = seal {
            q = q.bind(json);
        }
        q.execute(&mut *conn).await?;
        return Ok(());
    }
    for chunk in ups {
        let text = format!(
            "INSERT INTO entries (path, value, rev) VALUES {}{}",
            sql::placeholders(chunk.len(), 3),
            sql::UPSERT_TAIL
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for (path, value, rev) in chunk {
            q = q.bind(*path).bind(*value).bind(*rev);
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in dels {
        let text = format!("DELETE FROM entries WHERE path IN ({})", sql::placeholders(chunk.len(), 1));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for path in chunk {
            q = q.bind(*path);
        }
        q.execute(&mut *conn).await?;
    }
    if let Some(c) = p.seal_config {
        let json = serde_json::to_string(&c).unwrap_or_default();
        sqlx::query(sql::SEAL_CONFIG_PUT).bind(json).execute(&mut *conn).await?;
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

/// A table of the writer connection's own (TEMP: never in the database file)
/// that refuses every row: inserting into it is how one query string aborts
/// when a condition does not hold (SQLite has no `RAISE` outside triggers).
const GUARD_TABLE: &str = "CREATE TEMP TABLE commit_guard (ok INTEGER NOT NULL CHECK (ok = 1))";

/// Try a [`plan::OneShot`] group as a single query string, one hand-off to
/// SQLite's thread instead of two: `BEGIN IMMEDIATE`, a guard that fails
/// unless every expectation holds, the writes with revisions computed by
/// SQL, `COMMIT`. `Ok(false)`: an expectation failed, the transaction was
/// rolled back and nothing was written; plan the group exactly instead.
async fn one_shot(conn: &mut SqliteConnection, o: &plan::OneShot<'_>) -> Result<bool, sqlx::Error> {
    let mut text = String::from("BEGIN IMMEDIATE; ");
    let mut next = 1;
    if !o.checks.is_empty() {
        let conds: Vec<String> = o
            .checks
            .iter()
            .map(|(_, e)| {
                let c = match e {
                    Expect::Absent => format!("NOT EXISTS (SELECT 1 FROM entries WHERE path = ${next})"),
                    Expect::Rev(_) => {
                        format!("EXISTS (SELECT 1 FROM entries WHERE path = ${next} AND rev = ${})", next + 1)
                    }
                };
                next += if matches!(e, Expect::Absent) { 1 } else { 2 };
                c
            })
            .collect();
        // Selects a row (which the table refuses) only if a condition fails.
        text.push_str(&format!("INSERT INTO temp.commit_guard (ok) SELECT 0 WHERE NOT ({}); ", conds.join(" AND ")));
    }
    if !o.upserts.is_empty() {
        let rows: Vec<String> =
            (0..o.upserts.len()).map(|i| format!("(${}, ${}, 1)", next + 2 * i, next + 2 * i + 1)).collect();
        text.push_str(&format!(
            "INSERT INTO entries (path, value, rev) VALUES {} \
             ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1; ",
            rows.join(", ")
        ));
        next += 2 * o.upserts.len();
    }
    let seal = push_deletes_seal_commit(&mut text, next, o.deletes.len(), o.seal_config);
    // sqlx binds NULL to a `$n` past the arguments given, which would quietly
    // weaken the guard (`path = NULL`): the numbering above must match the binds below.
    let binds = o.checks.iter().map(|(_, e)| if matches!(e, Expect::Absent) { 1 } else { 2 }).sum::<usize>()
        + 2 * o.upserts.len()
        + o.deletes.len()
        + usize::from(seal.is_some());
    debug_assert_eq!(binds, next - 1 + o.deletes.len() + usize::from(seal.is_some()));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
    for (path, e) in &o.checks {
        q = q.bind(*path);
        if let Expect::Rev(r) = e {
            q = q.bind(*r);
        }
    }
    for (path, value) in &o.upserts {
        q = q.bind(*path).bind(*value);
    }
    for path in &o.deletes {
        q = q.bind(*path);
    }
    if let Some(json) = seal {
        q = q.bind(json);
    }
    match q.execute(&mut *conn).await {
        Ok(_) => Ok(true),
        // Only the guard has a CHECK that can fail here (seal_config's `id = 1` always holds).
        Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::CheckViolation => {
            sqlx::query("ROLLBACK").execute(&mut *conn).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Try a [`plan::OneShot`] group that only writes rows (no delete, no seal
/// configuration: every group of KV writes that trims no version) as ONE
/// statement in autocommit mode, which SQLite runs as its own transaction
/// (taking the write lock, then the WAL fsync of `synchronous=FULL` before it
/// returns): one hand-off to SQLite's thread, one statement to step, one
/// result to send back, where the `BEGIN IMMEDIATE; guard; upsert; COMMIT`
/// string of [`one_shot`] steps four and answers four times.
///
/// The expectations are a guard computed once, before any row is written
/// (a `MATERIALIZED` CTE; SQLite also evaluates the whole `SELECT` of an
/// `INSERT ... SELECT` that reads the target table before inserting): if one
/// fails, the `SELECT` yields no row and nothing changes. Each path appears
/// once in a one-shot group, so every written row is counted once:
/// `Ok(true)` if all were written, `Ok(false)` if none (an expectation
/// failed; plan the group exactly instead).
async fn one_statement(conn: &mut SqliteConnection, o: &plan::OneShot<'_>) -> Result<bool, sqlx::Error> {
    let n = o.upserts.len();
    let rows: Vec<String> = (0..n).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
    // Path parameters are shared with the rows; only expected revisions add parameters.
    let mut next = 2 * n + 1;
    let mut conds = Vec::with_capacity(o.checks.len());
    let mut revs = Vec::new();
    for (path, e) in &o.checks {
        let Some(i) = o.upserts.iter().position(|(p, _)| p == path) else {
            // Without deletes every expectation is on a written path (`plan::one_shot`).
            return Err(sqlx::Error::Protocol(format!("expectation on {path:?} outside the group's writes")));
        };
        let p = 2 * i + 1;
        conds.push(match e {
            Expect::Absent => format!("NOT EXISTS (SELECT 1 FROM entries WHERE path = ${p})"),
            Expect::Rev(r) => {
                revs.push(*r);
                next += 1;
                format!("EXISTS (SELECT 1 FROM entries WHERE path = ${p} AND rev = ${})", next - 1)
            }
        });
    }
    let guard = if conds.is_empty() { "1".to_string() } else { conds.join(" AND ") };
    let text = format!(
        "WITH guard (ok) AS MATERIALIZED (SELECT {guard}) \
         INSERT INTO entries (path, value, rev) SELECT v.column1, v.column2, 1 FROM (VALUES {}) AS v, guard \
         WHERE guard.ok \
         ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1",
        rows.join(", ")
    );
    // sqlx binds NULL to a `$n` past the arguments given: the numbering above
    // must match the binds below (paths and values, then revisions).
    debug_assert_eq!(next - 1, 2 * n + revs.len());
    let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
    for (path, value) in &o.upserts {
        q = q.bind(*path).bind(*value);
    }
    for r in revs {
        q = q.bind(r);
    }
    let written = q.execute(&mut *conn).await?.rows_affected();
    match written {
        0 => Ok(false),
        w if w == n as u64 => Ok(true),
        // Cannot happen (one statement is atomic, the guard is one value);
        // if it ever did, say so rather than report a clean outcome.
        w => Err(sqlx::Error::Protocol(format!("one-statement commit wrote {w} of {n} rows"))),
    }
}

/// Owner-only modes: the database holds paths, user names and the token
/// graph in the clear (values are encrypted), so no other local user may read
/// or replace it.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Make the database's directory (0700) and file (0600) before SQLite opens
/// it. SQLite gives the `-wal` and `-shm` files it creates later the mode of
/// the database file (unix VFS, `findCreateFileMode`), so they are 0600 too.
///
/// A directory that already exists is not changed, only reported when other
/// users can enter it: it may be shared (the working directory, a home, a
/// `/var/lib`), and the server cannot tell whether tightening it would break
/// someone else. The files are the server's own: a looser mode left by an
/// older version is tightened.
fn prepare_files(db: &Path) -> Result<(), StorageError> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.exists() {
        let mode = std::fs::metadata(dir)
            .map_err(|e| StorageError::InvalidUrl(format!("cannot inspect {}: {e}", dir.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the database directory is open to other users: they can see the database files and, if they can \
                 write to it, replace them; keep the database in a directory only the server's user can enter \
                 (chmod 700)"
            );
        }
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| StorageError::InvalidUrl(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .open(db)
        .map_err(|e| StorageError::InvalidUrl(format!("cannot create {}: {e}", db.display())))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        tighten(Path::new(&name));
    }
    Ok(())
}

/// Set an existing file to [`FILE_MODE`] if it is looser (a missing file is fine).
fn tighten(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)) {
        Ok(()) => tracing::info!(file = %path.display(), was = format!("{mode:o}"), "database file restricted to 600"),
        Err(e) => tracing::warn!(
            file = %path.display(),
            mode = format!("{mode:o}"),
            error = %e,
            "the database file is readable by other users and could not be restricted; chmod 600 it"
        ),
    }
}

/// The writer connection, and whether it is known to be in autocommit mode.
///
/// [`one_statement`] commits by running one statement in autocommit mode: on
/// a connection left inside a transaction (a `ROLLBACK` that failed, a
/// commit cut short) that statement would only join the open transaction,
/// and a write would be acknowledged that no `COMMIT` ever made durable. So
/// a commit that fails must leave the connection in autocommit mode, proven
/// by a `ROLLBACK` (or, if there was nothing to roll back, a `BEGIN` that
/// succeeds: SQLite refuses it inside a transaction); otherwise the
/// connection is closed (which rolls back) and the next commit opens a new
/// one. A commit holds the connection out of [`Writer::conn`] while it runs,
/// so one cut short (its future dropped) takes the connection with it.
struct Writer {
    /// `None` after it was given up; reopened by the next commit.
    conn: Option<SqliteConnection>,
}

/// Open a writer connection (the database exists and is migrated) with the
/// TEMP guard table of [`one_shot`].
async fn open_writer(opts: &SqliteConnectOptions) -> Result<SqliteConnection, sqlx::Error> {
    let mut conn = SqliteConnection::connect_with(opts).await?;
    sqlx::query(GUARD_TABLE).execute(&mut conn).await?;
    Ok(conn)
}

/// End whatever transaction `conn` is in; true if it is now in autocommit
/// mode. `fail_rollback`: tests only, the `ROLLBACK` fails.
async fn back_to_autocommit(conn: &mut SqliteConnection, fail_rollback: bool) -> bool {
    if !fail_rollback && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok() {
        return true;
    }
    // Either nothing was open ("no transaction is active": fine) or the
    // rollback failed. A deferred BEGIN takes no lock and succeeds only in
    // autocommit mode.
    if sqlx::query("BEGIN").execute(&mut *conn).await.is_err() {
        return false;
    }
    sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok()
}

pub(super) struct Sqlite {
    readers: Conns<sqlx::Sqlite>,
    writer: Mutex<Writer>,
    /// To reopen the writer (boxed: the options are large).
    opts: Box<SqliteConnectOptions>,
    instance: String,
    /// Tests: make the next `ROLLBACK` after a failed commit fail.
    #[cfg(test)]
    fail_rollback: std::sync::atomic::AtomicBool,
}

impl Sqlite {
    /// The readers' pool (the one writer connection is apart), for metrics.
    pub(super) fn pool_stats(&self) -> crate::metrics::PoolStats {
        self.readers.stats()
    }

    pub(super) async fn open(url: &str) -> Result<Self, StorageError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::InvalidUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Deleted and overwritten content is zeroed in the page rather
            // than left in free space (https://sqlite.org/pragma.html#pragma_secure_delete):
            // a destroyed secret must not linger in the file.
            .pragma("secure_delete", "ON");
        // sqlx names in-memory databases itself; there is no file to protect.
        if !(url.contains(":memory:") || url.contains("mode=memory")) {
            prepare_files(opts.get_filename())?;
        }
        let mut writer = SqliteConnection::connect_with(&opts).await?;
        // `run_direct` (what `run` calls after `acquire`): through `Acquire`,
        // rustc cannot prove this future `Send` ("implementation of `Acquire`
        // is not general enough"), and the backup drill opens a store from a
        // request handler, which must be `Send`.
        sqlx::migrate!("../migrations/sqlite").run_direct(None, &mut writer, false).await?;
        sqlx::query(GUARD_TABLE).execute(&mut writer).await?;
        let writer = Writer { conn: Some(writer) };
        // No ping before each use (sqlx's default) nor after (`conns.rs`): a
        // hand-off to the connection's thread each, and a local file
        // connection does not drop.
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        Ok(Self {
            readers: Conns::new(readers, READERS as usize, None),
            writer: Mutex::new(writer),
            opts: Box::new(opts),
            instance: crate::crypto::random::uuid(),
            #[cfg(test)]
            fail_rollback: Default::default(),
        })
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    #[cfg(test)]
    fn fail_rollback(&self) -> bool {
        self.fail_rollback.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    #[cfg(not(test))]
    fn fail_rollback(&self) -> bool {
        false
    }

    pub(super) async fn get(&self, path: &str) -> Result<Option<Entry>, StorageError> {
        let mut c = self.readers.get().await?;
        let r = sqlx::query(sql::GET).bind(path).fetch_optional(c.conn()).await;
        let row = c.done(r)?;
        Ok(row.map(|r| Entry { value: Ciphertext::from_storage(r.get(0)), rev: r.get(1) }))
    }

    pub(super) async fn scan(&self, from: &str, to: Option<&str>) -> Result<Vec<String>, StorageError> {
        let mut c = self.readers.get().await?;
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
        let mut c = self.readers.get().await?;
        let r = sqlx::query(sql::SEAL_CONFIG_GET).fetch_optional(c.conn()).await;
        let row = c.done(r)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn commit_group(
        &self,
        batches: &[&WriteBatch],
    ) -> Result<Vec<Result<(), StorageError>>, StorageError> {
        let mut w = self.writer.lock().await;
        let mut conn = match w.conn.take() {
            Some(c) => c,
            None => {
                tracing::info!("reopening the SQLite writer connection");
                open_writer(&self.opts).await?
            }
        };
        // Put back below, once known to be in autocommit mode.
        // IMMEDIATE takes the write lock up front: from here on nobody else
        // changes the rows, so the plan made from the revisions read below holds.
        // One process owns a SQLite file: nobody else to notify. A group whose
        // paths are all distinct (the usual case) first tries the one-shot
        // form, one hand-off to SQLite's thread instead of two: a single
        // autocommit statement when it only writes rows, else one query string.
        let r = async {
            if let Some(o) = plan::one_shot(batches) {
                let done = if o.deletes.is_empty() && o.seal_config.is_none() && !o.upserts.is_empty() {
                    one_statement(&mut conn, &o).await?
                } else {
                    one_shot(&mut conn, &o).await?
                };
                if done {
                    return Ok(batches.iter().map(|_| Ok(())).collect());
                }
            }
            let current = begin_and_read(&mut conn, &plan::paths_to_read(batches)).await?;
            let p = plan::plan(batches, &current);
            if p.changed.is_empty() {
                sqlx::query("ROLLBACK").execute(&mut conn).await?;
                return Ok::<_, sqlx::Error>(p.results);
            }
            write_and_commit(&mut conn, &p).await?;
            Ok(p.results)
        }
        .await;
        // Every path above that returns Ok left the connection in autocommit
        // mode (COMMIT or ROLLBACK succeeded, or nothing was begun).
        if r.is_err() && !back_to_autocommit(&mut conn, self.fail_rollback()).await {
            tracing::warn!("the SQLite writer connection may be inside a transaction; closing it");
            drop(conn);
        } else {
            w.conn = Some(conn);
        }
        Ok(r?)
    }

    /// Make deleted content unreadable from the files: with `secure_delete`
    /// the deleting page images are zeroed, and a truncating checkpoint
    /// copies them into the database file and empties the WAL, whose older
    /// frames still held the page as it was before the delete. Best effort:
    /// a long reader keeps the WAL from being reset (SQLite then resets it
    /// at a later checkpoint).
    pub(super) async fn scrub(&self) -> Result<(), StorageError> {
        let mut c = self.readers.get().await?;
        let r = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_optional(c.conn()).await;
        c.done(r)?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.readers.release_all();
        self.readers.pool().close().await;
    }

    /// Stream every row and the seal configuration from one read
    /// transaction: under WAL a reader sees the database as of its first
    /// read, whatever the writer commits meanwhile.
    pub(super) async fn snapshot(&self, feed: &mut Feed) -> Result<(), StorageError> {
        let mut lease = self.readers.get().await?;
        let r = stream_snapshot(lease.conn(), "BEGIN", feed).await;
        lease.done(r)?;
        Ok(())
    }

    /// Replace every row and the seal configuration in one transaction on
    /// the writer connection (so no group commit interleaves).
    pub(super) async fn replace_all(&self, seal: Option<&str>, rows: &[SnapRow]) -> Result<(), StorageError> {
        let mut w = self.writer.lock().await;
        let mut conn = match w.conn.take() {
            Some(c) => c,
            None => open_writer(&self.opts).await?,
        };
        let r = async {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
            sqlx::query("DELETE FROM entries").execute(&mut conn).await?;
            for chunk in sql::chunks(rows, |r| r.path.len() + r.value.len()) {
                let text =
                    format!("INSERT INTO entries (path, value, rev) VALUES {}", sql::placeholders(chunk.len(), 3));
                let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
                for row in chunk {
                    q = q.bind(row.path.as_str()).bind(row.value.as_slice()).bind(row.rev);
                }
                q.execute(&mut conn).await?;
            }
            match seal {
                Some(json) => sqlx::query(sql::SEAL_CONFIG_PUT).bind(json).execute(&mut conn).await?,
                None => sqlx::query("DELETE FROM seal_config").execute(&mut conn).await?,
            };
            sqlx::query("COMMIT").execute(&mut conn).await?;
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if r.is_err() && !back_to_autocommit(&mut conn, false).await {
            tracing::warn!("the SQLite writer connection may be inside a transaction; closing it");
            drop(conn);
        } else {
            w.conn = Some(conn);
        }
        Ok(r?)
    }
}

/// Read the seal configuration and then every row, in path order, inside
/// one read transaction, into `feed`. Stops early (rolling back) when the
/// consumer is gone.
async fn stream_snapshot(conn: &mut SqliteConnection, begin: &'static str, feed: &mut Feed) -> Result<(), sqlx::Error> {
    use futures_util::StreamExt as _;
    let mut tx = sqlx::Connection::begin_with(conn, begin).await?;
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

    fn ct(b: &[u8]) -> Ciphertext {
        AeadKey::new(&[7; 32]).seal(&[1], b"t", b)
    }

    async fn rev(db: &Sqlite, path: &str) -> Option<i64> {
        db.get(path).await.unwrap().map(|e| e.rev)
    }

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Paths, user names and the token graph are in the clear in the
    /// database: the directory the server creates is 0700, the database and
    /// its WAL and shared-memory files 0600, and a looser file is tightened.
    #[tokio::test]
    async fn files_are_owner_only() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("made/by-server");
        let db = Sqlite::open(&format!("sqlite://{}/v.db", dir.display())).await.unwrap();
        let mut b = WriteBatch::new();
        b.put("k", ct(b"1"));
        assert!(db.commit_group(&[&b]).await.unwrap()[0].is_ok());
        assert_eq!(mode(&top.path().join("made")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        for f in ["v.db", "v.db-wal", "v.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        db.close().await;

        // A database left 0644 (by an older version) is restricted on open.
        let old = top.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = Sqlite::open(&format!("sqlite://{}", old.display())).await.unwrap();
        assert_eq!(mode(&old), 0o600);
        db.close().await;
    }

    /// A commit that fails inside its transaction, and whose `ROLLBACK`
    /// fails too, must not leave the writer in that transaction: the next
    /// lone write, one statement in autocommit mode, would only join it and
    /// be acknowledged without ever reaching the file.
    #[tokio::test]
    async fn a_failed_rollback_does_not_leave_the_writer_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/v.db", dir.path().display());
        let db = Sqlite::open(&url).await.unwrap();
        // The one-shot string (expectations, a delete) fails after its
        // `BEGIN IMMEDIATE` without its guard table; then the rollback fails.
        let mut w = db.writer.lock().await;
        sqlx::query("DROP TABLE temp.commit_guard").execute(w.conn.as_mut().unwrap()).await.unwrap();
        drop(w);
        db.fail_rollback.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut a = WriteBatch::new();
        a.put_expect("a", ct(b"a"), Expect::Absent).delete("gone");
        assert!(db.commit_group(&[&a]).await.is_err());
        assert!(db.writer.lock().await.conn.is_none(), "left inside a transaction: given up");

        let mut b = WriteBatch::new();
        b.put("k", ct(b"k"));
        assert!(db.commit_group(&[&b]).await.unwrap()[0].is_ok());
        assert_eq!(rev(&db, "k").await, Some(1), "committed: other connections see it");
        // The reopened writer has its guard table again.
        let mut c = WriteBatch::new();
        c.put_expect("a", ct(b"a"), Expect::Absent).delete("gone");
        assert!(db.commit_group(&[&c]).await.unwrap()[0].is_ok());
        db.close().await;
        drop(db);
        let again = Sqlite::open(&url).await.unwrap();
        assert_eq!((rev(&again, "k").await, rev(&again, "a").await), (Some(1), Some(1)), "in the file");
        again.close().await;
    }

    /// Groups are formed by timing, so the conformance suite cannot pick one;
    /// here the writer gets exact groups. One-shot groups and their fallback
    /// (a failed guard) must give what exact planning gives.
    #[tokio::test]
    async fn one_shot_groups_and_their_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let mut a = WriteBatch::new();
        a.put("k", ct(b"1")).put_expect("n", ct(b"n"), Expect::Absent);
        let r = db.commit_group(&[&a]).await.unwrap();
        assert!(r.iter().all(Result::is_ok));
        assert_eq!((rev(&db, "k").await, rev(&db, "n").await), (Some(1), Some(1)));

        // All expectations hold: revisions computed by SQL, deletes applied.
        let mut b = WriteBatch::new();
        b.put_expect("k", ct(b"2"), Expect::Rev(1));
        let mut c = WriteBatch::new();
        c.delete_expect("n", Expect::Rev(1)).put("m", ct(b"m"));
        let r = db.commit_group(&[&b, &c]).await.unwrap();
        assert!(r.iter().all(Result::is_ok));
        assert_eq!((rev(&db, "k").await, rev(&db, "n").await, rev(&db, "m").await), (Some(2), None, Some(1)));

        // One stale expectation: the guard fails, the group is planned exactly:
        // the stale batch alone gets a conflict, the others apply.
        let mut ok1 = WriteBatch::new();
        ok1.put_expect("k", ct(b"3"), Expect::Rev(2));
        let mut stale = WriteBatch::new();
        stale.put_expect("m", ct(b"late"), Expect::Rev(7)).put("x", ct(b"x"));
        let mut ok2 = WriteBatch::new();
        ok2.put_expect("y", ct(b"y"), Expect::Absent);
        let r = db.commit_group(&[&ok1, &stale, &ok2]).await.unwrap();
        assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
        assert!(matches!(&r[1], Err(StorageError::Conflict(p)) if p == "m"), "{r:?}");
        assert_eq!(rev(&db, "k").await, Some(3));
        assert_eq!(rev(&db, "m").await, Some(1), "the stale batch wrote nothing");
        assert_eq!(rev(&db, "x").await, None, "not even its unconditional put");
        assert_eq!(rev(&db, "y").await, Some(1));
        let got = db.get("k").await.unwrap().unwrap().value;
        assert_eq!(AeadKey::new(&[7; 32]).open(1, b"t", got.as_bytes()).unwrap().as_slice(), b"3");

        // One statement: expectations are checked against the state before
        // the group, not against rows the same statement just wrote.
        let mut e = WriteBatch::new();
        e.put_expect("p1", ct(b"1"), Expect::Absent).put_expect("p2", ct(b"2"), Expect::Absent);
        let mut f = WriteBatch::new();
        f.put_expect("p3", ct(b"3"), Expect::Absent);
        let r = db.commit_group(&[&e, &f]).await.unwrap();
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        let mut g = WriteBatch::new();
        g.put_expect("p1", ct(b"1b"), Expect::Rev(1)).put_expect("p2", ct(b"2b"), Expect::Rev(1)).put("p4", ct(b"4"));
        assert!(db.commit_group(&[&g]).await.unwrap()[0].is_ok());
        assert_eq!(
            (rev(&db, "p1").await, rev(&db, "p2").await, rev(&db, "p3").await, rev(&db, "p4").await),
            (Some(2), Some(2), Some(1), Some(1))
        );
        // One expectation of several fails: nothing of the statement is written.
        let mut h = WriteBatch::new();
        h.put_expect("p1", ct(b"1c"), Expect::Rev(2)).put_expect("p2", ct(b"2c"), Expect::Rev(1));
        let r = db.commit_group(&[&h]).await.unwrap();
        assert!(matches!(&r[0], Err(StorageError::Conflict(p)) if p == "p2"), "{r:?}");
        assert_eq!((rev(&db, "p1").await, rev(&db, "p2").await), (Some(2), Some(2)));

        // Nothing of the failed guard is left behind: the connection commits again.
        let mut d = WriteBatch::new();
        d.put("z", ct(b"z"));
        assert!(db.commit_group(&[&d]).await.unwrap()[0].is_ok());
        assert_eq!(rev(&db, "z").await, Some(1));
        db.close().await;
    }
}
