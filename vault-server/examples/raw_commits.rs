//! The storage baseline for durable-write figures: the raw rate of
//! single-row commits that the server's storage configuration can make, so
//! `docs/performance.md` can quote KV writes over HTTP as a ratio measured in
//! the same run (`scripts/bench-kv`).
//!
//! ```text
//! raw_commits sqlite   <dir> <seconds> <concurrency>
//! raw_commits postgres <url> <seconds> <concurrency>
//! ```
//!
//! Each commit is one transaction holding one upsert of a fresh row (a
//! ~100-byte blob under a new path) into a table shaped like the server's
//! `entries` table (`migrations/`), named `raw_commit_bench` so it never
//! touches vault data. SQLite uses the server's connection settings
//! (`storage/sqlite.rs`: WAL, `synchronous=FULL`, `busy_timeout` 10 s,
//! foreign keys on) on `<dir>/raw_commits.db`, and opens the transaction with
//! `BEGIN IMMEDIATE` as the server's writer does; PostgreSQL uses the
//! server's defaults (`synchronous_commit` as the cluster has it). Each of the
//! `<concurrency>` clients has its own connection and commits one row after
//! another; nothing is batched.
//!
//! Prints one line: `<commits/s> commits/s (<backend>, c=<n>, <count> commits in <s> s)`.

// The figure on stdout is this tool's output.
#![allow(clippy::print_stdout)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

const UPSERT: &str = "INSERT INTO raw_commit_bench (path, value, rev) VALUES ($1, $2, 1) \
     ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = raw_commit_bench.rev + 1";

/// Not measured: lets connections open, caches warm and the disk settle.
const WARMUP: Duration = Duration::from_millis(500);

fn usage() -> ! {
    eprintln!(
        "usage: raw_commits sqlite <dir> <seconds> <concurrency>\n       \
         raw_commits postgres <url> <seconds> <concurrency>"
    );
    std::process::exit(2)
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Conn {
    async fn commit_one(&mut self, path: &str, value: &[u8]) -> Result<(), sqlx::Error> {
        match self {
            Conn::Sqlite(c) => {
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await?;
                sqlx::query(UPSERT).bind(path).bind(value).execute(&mut *c).await?;
                sqlx::query("COMMIT").execute(&mut *c).await?;
            }
            Conn::Postgres(c) => {
                sqlx::query("BEGIN").execute(&mut *c).await?;
                sqlx::query(UPSERT).bind(path).bind(value).execute(&mut *c).await?;
                sqlx::query("COMMIT").execute(&mut *c).await?;
            }
        }
        Ok(())
    }
}

enum Target {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl Target {
    async fn connect(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Target::Sqlite(o) => Conn::Sqlite(SqliteConnection::connect_with(o).await?),
            Target::Postgres(o) => Conn::Postgres(PgConnection::connect_with(o).await?),
        })
    }

    /// A fresh, empty benchmark table.
    async fn prepare(&self) -> Result<(), sqlx::Error> {
        match self.connect().await? {
            Conn::Sqlite(mut c) => {
                sqlx::query("DROP TABLE IF EXISTS raw_commit_bench").execute(&mut c).await?;
                sqlx::query(
                    "CREATE TABLE raw_commit_bench (path TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, \
                     rev INTEGER NOT NULL) WITHOUT ROWID",
                )
                .execute(&mut c)
                .await?;
                c.close().await
            }
            Conn::Postgres(mut c) => {
                sqlx::query("DROP TABLE IF EXISTS raw_commit_bench").execute(&mut c).await?;
                sqlx::query(
                    "CREATE TABLE raw_commit_bench (path TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, \
                     value BYTEA NOT NULL, rev BIGINT NOT NULL)",
                )
                .execute(&mut c)
                .await?;
                c.close().await
            }
        }
    }

    async fn drop_table(&self) -> Result<(), sqlx::Error> {
        match self.connect().await? {
            Conn::Sqlite(mut c) => {
                sqlx::query("DROP TABLE IF EXISTS raw_commit_bench").execute(&mut c).await?;
                c.close().await
            }
            Conn::Postgres(mut c) => {
                sqlx::query("DROP TABLE IF EXISTS raw_commit_bench").execute(&mut c).await?;
                c.close().await
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, location, seconds, concurrency] = args.as_slice() else { usage() };
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| usage());
    let concurrency: usize = concurrency.parse().unwrap_or_else(|_| usage());
    if seconds.is_nan() || seconds <= 0.0 || concurrency == 0 {
        usage()
    }
    let target = match backend.as_str() {
        "sqlite" => {
            std::fs::create_dir_all(location)?;
            let file = std::path::Path::new(location).join("raw_commits.db");
            Target::Sqlite(
                SqliteConnectOptions::new()
                    .filename(file)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true),
            )
        }
        "postgres" => Target::Postgres(PgConnectOptions::from_str(location)?.application_name("raw_commits")),
        _ => usage(),
    };
    target.prepare().await?;

    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(target.connect().await?);
    }
    // A ~100-byte blob, the size of a small barrier ciphertext.
    let value: Arc<[u8]> = (0..100u8).collect::<Vec<_>>().into();
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(client, mut conn)| {
            let value = value.clone();
            tokio::spawn(async move {
                let mut n: u64 = 0;
                let mut counted: u64 = 0;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let path = format!("raw/{client}-{n}");
                    conn.commit_one(&path, &value).await?;
                    n += 1;
                    // Count commits that started and finished inside the window.
                    if now >= measure_from && Instant::now() <= end {
                        counted += 1;
                    }
                }
                Ok::<u64, sqlx::Error>(counted)
            })
        })
        .collect();
    let mut total: u64 = 0;
    for t in tasks {
        total += t.await??;
    }
    let _ = target.drop_table().await;
    let rate = total as f64 / seconds;
    println!("{rate:.0} commits/s ({backend}, c={concurrency}, {total} commits in {seconds} s)");
    Ok(())
}
