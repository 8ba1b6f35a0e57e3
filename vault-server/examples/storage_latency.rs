//! Where a KV v2 write's time goes inside the storage layer, without HTTP:
//! the two storage calls a new key's write makes, timed one by one through
//! the real `Storage` (its pools, its group-commit writer, the server's
//! connection settings), at concurrency 1.
//!
//! ```text
//! storage_latency sqlite   <dir> <seconds>
//! storage_latency postgres <url> <seconds>
//! ```
//!
//! Each iteration is what `engines/kv2` does for a new key: read the
//! (absent, uncached) metadata row, then commit one batch holding the version
//! row and the metadata row (`Expect::Absent`), ~100-300 byte values. Prints
//! the medians (µs) of the read, the commit and the two together, after a
//! 0.5 s warm-up. (Since the KV engine skips the read for a key whose
//! metadata is not cached, a new key's write is the commit alone.) For
//! SQLite it then times sqlx alone on one connection (see `sqlx_alone`).

// The figures on stdout are this tool's output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use vault_server::crypto::AeadKey;
use vault_server::storage::{Expect, Storage, WriteBatch};

const WARMUP: Duration = Duration::from_millis(500);

fn usage() -> ! {
    eprintln!("usage: storage_latency sqlite <dir> <seconds> | storage_latency postgres <url> <seconds>");
    std::process::exit(2)
}

fn median(v: &mut [u128]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[v.len() / 2] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        usage();
    }
    let secs: f64 = args[3].parse().unwrap_or_else(|_| usage());
    let url = match args[1].as_str() {
        "sqlite" => format!("sqlite://{}/latency.db", args[2]),
        "postgres" => args[2].clone(),
        _ => usage(),
    };
    let storage = match Storage::open(&url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("storage_latency: cannot open {url}: {e}");
            std::process::exit(1)
        }
    };
    let key = AeadKey::new(&[7; 32]);
    let meta_value = key.seal(&[1, 0, 0, 0, 1], b"meta", &[b'm'; 300]);
    let ver_value = key.seal(&[1, 0, 0, 0, 1], b"ver", &[b'v'; 80]);
    // Fresh paths per run (a new key's write, as a first KV v2 write is).
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let run = format!("{}-{}", std::process::id(), since_epoch.as_nanos());
    let start = Instant::now();
    let end = start + WARMUP + Duration::from_secs_f64(secs);
    let (mut reads, mut commits, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        n += 1;
        let meta = format!("logical/lat/meta/{run}/{n}");
        let found = storage.get(&meta).await;
        let t1 = Instant::now();
        let mut b = WriteBatch::new();
        b.put(format!("logical/lat/ver/{run}/{n}/1"), ver_value.clone());
        b.put_expect(meta, meta_value.clone(), Expect::Absent);
        let written = storage.write(b).await;
        let t2 = Instant::now();
        if let Err(e) = found.and(written) {
            eprintln!("storage_latency: {e}");
            std::process::exit(1)
        }
        if t0 >= start + WARMUP {
            reads.push((t1 - t0).as_nanos());
            commits.push((t2 - t1).as_nanos());
            both.push((t2 - t0).as_nanos());
        }
    }
    let count = both.len();
    storage.close().await;
    // SQLite: the driver alone on one connection with the server's settings,
    // for the same time: a `SELECT 1` (one hand-off to sqlx's thread and
    // back, nothing else), a one-row autocommit upsert (that plus a commit)
    // and the statement a new key's KV write commits with (two rows, guard).
    let driver = match args[1].as_str() {
        "sqlite" => sqlx_alone(&args[2], secs).await,
        _ => String::new(),
    };
    println!(
        "{:.0} writes/s read p50 {:.0} us commit p50 {:.0} us read+commit p50 {:.0} us ({} writes){driver}",
        count as f64 / secs,
        median(&mut reads),
        median(&mut commits),
        median(&mut both),
        count
    );
}

async fn sqlx_alone(dir: &str, secs: f64) -> String {
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
    let opts = SqliteConnectOptions::new()
        .filename(format!("{dir}/driver.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let run = async {
        let mut c = SqliteConnection::connect_with(&opts).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS t (path TEXT PRIMARY KEY, value BLOB NOT NULL, rev INTEGER NOT NULL) WITHOUT ROWID")
            .execute(&mut c)
            .await?;
        let half = Duration::from_secs_f64(secs / 2.0);
        let (mut selects, mut upserts) = (Vec::new(), Vec::new());
        let end = Instant::now() + half;
        while Instant::now() < end {
            let t0 = Instant::now();
            sqlx::query("SELECT 1").fetch_one(&mut c).await?;
            selects.push(t0.elapsed().as_nanos());
        }
        let end = Instant::now() + half;
        let mut n = 0u64;
        while Instant::now() < end {
            n += 1;
            let t0 = Instant::now();
            sqlx::query("INSERT INTO t (path, value, rev) VALUES ($1, $2, 1) ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = t.rev + 1")
                .bind(format!("k/{n}"))
                .bind(&[7u8; 100][..])
                .execute(&mut c)
                .await?;
            upserts.push(t0.elapsed().as_nanos());
        }
        let end = Instant::now() + half;
        let mut kv = Vec::new();
        let (meta, ver) = ([7u8; 340], [7u8; 120]);
        while Instant::now() < end {
            n += 1;
            let t0 = Instant::now();
            sqlx::query("WITH guard (ok) AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM t WHERE path = $3)) INSERT INTO t (path, value, rev) SELECT v.column1, v.column2, 1 FROM (VALUES ($1, $2), ($3, $4)) AS v, guard WHERE guard.ok ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = t.rev + 1")
                .bind(format!("logical/lat/ver/{n}/1"))
                .bind(&ver[..])
                .bind(format!("logical/lat/meta/{n}"))
                .bind(&meta[..])
                .execute(&mut c)
                .await?;
            kv.push(t0.elapsed().as_nanos());
        }
        c.close().await?;
        Ok::<_, sqlx::Error>(format!(
            "; sqlx alone: SELECT 1 p50 {:.0} us, autocommit upsert p50 {:.0} us, KV-shaped statement p50 {:.0} us",
            median(&mut selects),
            median(&mut upserts),
            median(&mut kv)
        ))
    };
    run.await.unwrap_or_else(|e| format!("; sqlx alone failed: {e}"))
}
