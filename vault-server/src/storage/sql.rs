//! SQL shared by both backends. SQLite (>= 3.24) and PostgreSQL accept the
//! same statements here (`$n` placeholders, `ON CONFLICT ... DO UPDATE`,
//! savepoints), so the only difference between backends is the connection type;
//! the macro below is instantiated once per backend.

pub(super) const GET: &str = "SELECT value, rev FROM entries WHERE path = $1";
pub(super) const SCAN_ALL: &str = "SELECT path FROM entries WHERE path >= $1 ORDER BY path";
pub(super) const SCAN_RANGE: &str = "SELECT path FROM entries WHERE path >= $1 AND path < $2 ORDER BY path";
pub(super) const UPSERT: &str = "INSERT INTO entries (path, value, rev) VALUES ($1, $2, 1) \
     ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = entries.rev + 1";
pub(super) const INSERT_ABSENT: &str =
    "INSERT INTO entries (path, value, rev) VALUES ($1, $2, 1) ON CONFLICT (path) DO NOTHING";
pub(super) const UPDATE_AT_REV: &str = "UPDATE entries SET value = $2, rev = rev + 1 WHERE path = $1 AND rev = $3";
pub(super) const DELETE: &str = "DELETE FROM entries WHERE path = $1";
pub(super) const DELETE_AT_REV: &str = "DELETE FROM entries WHERE path = $1 AND rev = $2";
pub(super) const EXISTS: &str = "SELECT 1 FROM entries WHERE path = $1";
pub(super) const SEAL_CONFIG_GET: &str = "SELECT config FROM seal_config WHERE id = 1";
pub(super) const SEAL_CONFIG_PUT: &str = "INSERT INTO seal_config (id, config) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET config = excluded.config";

/// Apply one [`WriteBatch`](super::WriteBatch) on `$conn` (an open transaction).
/// Evaluates to `Result<Result<(), StorageError /* Conflict */>, sqlx::Error>`:
/// the outer error aborts the whole group, the inner one only this batch.
macro_rules! apply_batch {
    ($conn:expr, $batch:expr) => {{
        use $crate::storage::{Expect, Op, StorageError};
        let mut outcome: Result<(), StorageError> = Ok(());
        for op in $batch.ops() {
            let conflict_at: Option<&str> = match op {
                Op::Put { path, value, expect } => {
                    let bytes = value.as_bytes();
                    let affected = match expect {
                        None => sqlx::query(sql::UPSERT)
                            .bind(path.as_str())
                            .bind(bytes)
                            .execute(&mut *$conn)
                            .await?
                            .rows_affected(),
                        Some(Expect::Absent) => sqlx::query(sql::INSERT_ABSENT)
                            .bind(path.as_str())
                            .bind(bytes)
                            .execute(&mut *$conn)
                            .await?
                            .rows_affected(),
                        Some(Expect::Rev(rev)) => sqlx::query(sql::UPDATE_AT_REV)
                            .bind(path.as_str())
                            .bind(bytes)
                            .bind(*rev)
                            .execute(&mut *$conn)
                            .await?
                            .rows_affected(),
                    };
                    (affected == 0).then_some(path.as_str())
                }
                Op::Delete { path, expect } => match expect {
                    None => {
                        sqlx::query(sql::DELETE).bind(path.as_str()).execute(&mut *$conn).await?;
                        None
                    }
                    Some(Expect::Rev(rev)) => {
                        let n = sqlx::query(sql::DELETE_AT_REV)
                            .bind(path.as_str())
                            .bind(*rev)
                            .execute(&mut *$conn)
                            .await?
                            .rows_affected();
                        (n == 0).then_some(path.as_str())
                    }
                    Some(Expect::Absent) => {
                        let exists =
                            sqlx::query(sql::EXISTS).bind(path.as_str()).fetch_optional(&mut *$conn).await?.is_some();
                        exists.then_some(path.as_str())
                    }
                },
                Op::SetSealConfig(c) => {
                    let json = serde_json::to_string(c).unwrap_or_default();
                    sqlx::query(sql::SEAL_CONFIG_PUT).bind(json).execute(&mut *$conn).await?;
                    None
                }
            };
            if let Some(path) = conflict_at {
                outcome = Err(StorageError::Conflict(path.to_string()));
                break;
            }
        }
        Ok::<_, sqlx::Error>(outcome)
    }};
}

/// Commit a group of batches in one transaction on `$conn`, one savepoint per
/// batch that has expectations (none when the group is a single batch: a
/// conflict then rolls back the whole transaction). `|paths| begin` gives the
/// SQL that opens the transaction, run as one simple query (PostgreSQL takes
/// its locks in the same round trip), from every path the group touches;
/// `|conn, paths| announce` runs just before COMMIT with the paths of the
/// batches that applied. Evaluates to `Result<Vec<Result<(), StorageError>>, sqlx::Error>`.
macro_rules! commit_group {
    ($conn:expr, |$p0:ident| $begin:expr, $batches:expr, |$c:ident, $p:ident| $announce:expr) => {{
        async {
            {
                let $p0: Vec<&str> = $batches.iter().flat_map(|b| b.paths()).collect();
                let begin: String = $begin;
                sqlx::raw_sql(sqlx::AssertSqlSafe(begin)).execute(&mut *$conn).await?;
            }
            let single = $batches.len() == 1;
            let mut results = Vec::with_capacity($batches.len());
            for batch in $batches {
                // A batch without expectations cannot conflict, so it needs no savepoint.
                let guarded = batch.has_expectations() && !single;
                if guarded {
                    sqlx::query("SAVEPOINT batch").execute(&mut *$conn).await?;
                }
                let r = apply_batch!($conn, batch)?;
                if guarded {
                    let end = if r.is_ok() { "RELEASE SAVEPOINT batch" } else { "ROLLBACK TO SAVEPOINT batch" };
                    sqlx::query(end).execute(&mut *$conn).await?;
                    if r.is_err() {
                        sqlx::query("RELEASE SAVEPOINT batch").execute(&mut *$conn).await?;
                    }
                }
                results.push(r);
            }
            if single && results.iter().any(Result::is_err) {
                // The only batch conflicted: nothing to keep.
                sqlx::query("ROLLBACK").execute(&mut *$conn).await?;
                return Ok::<_, sqlx::Error>(results);
            }
            let mut paths: Vec<&str> = Vec::new();
            for (batch, r) in $batches.iter().zip(&results) {
                if r.is_ok() {
                    paths.extend(batch.paths());
                }
            }
            paths.sort_unstable();
            paths.dedup();
            {
                let $c = &mut *$conn;
                let $p = paths;
                $announce?;
            }
            sqlx::query("COMMIT").execute(&mut *$conn).await?;
            Ok::<_, sqlx::Error>(results)
        }
        .await
    }};
}
