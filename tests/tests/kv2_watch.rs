//! KV v2 watch (blocking reads, docs/kv-rotation.md) end to end:
//! `GET {mount}/data/{path}?wait_for_version_after=N&wait=D` blocks until a
//! newer version exists (a write, a rotation, a write on another server
//! sharing PostgreSQL), answers at once when one already does, times out with
//! the current version and a warning, 404s for a secret that never appears;
//! many waiters cost no thread each; sealing wakes every waiter with 503.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use vault_e2e::{Backend, Client, ServerProc, Store};

const FAST: &str = "[rotation]\ninterval = \"1s\"\nlease = \"6s\"\n";

struct Vault {
    store: Store,
    srv: ServerProc,
    rc: Client,
    keys: Vec<String>,
    root: String,
}

async fn vault(backend: Backend) -> Vault {
    let store = Store::new(backend);
    let srv = ServerProc::start_with_config(&store, FAST, &[]);
    let (keys, root, rc) = srv.kv2_ready().await;
    Vault { store, srv, rc, keys, root }
}

/// Write `data` to `secret/data/{path}`; the new version.
async fn write(rc: &Client, path: &str, data: Value) -> u64 {
    let (s, v) = rc.post(&format!("secret/data/{path}"), json!({ "data": data })).await;
    assert_eq!(s, 200, "write {path}: {v}");
    v["data"]["version"].as_u64().unwrap()
}

fn watch_path(path: &str, after: u64, wait: &str) -> String {
    format!("secret/data/{path}?wait_for_version_after={after}&wait={wait}")
}

/// A blocking read: status, body, how long it took.
async fn watch(rc: &Client, path: &str, after: u64, wait: &str) -> (u16, Value, Duration) {
    let start = Instant::now();
    let (s, v) = rc.get(&watch_path(path, after, wait)).await;
    (s, v, start.elapsed())
}

/// A blocking read in its own task: status, body, and when it returned.
fn spawn_watch(rc: &Client, path: &str, after: u64, wait: &str) -> JoinHandle<(u16, Value, Instant)> {
    let (rc, p) = (rc.clone(), watch_path(path, after, wait));
    tokio::spawn(async move {
        let (s, v) = rc.get(&p).await;
        (s, v, Instant::now())
    })
}

/// Give spawned waiters time to reach the server and park. (Correctness does
/// not depend on it: a waiter that arrives after the write answers at once.)
async fn let_them_park() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

fn version_of(v: &Value) -> u64 {
    v["data"]["metadata"]["version"].as_u64().unwrap_or_else(|| panic!("no data.metadata.version in {v}"))
}

fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| w.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. blocking, immediate, timeout, missing
// ---------------------------------------------------------------------------

async fn blocking_read(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let writer = v.srv.client().with_token(&v.root);
    assert_eq!(write(rc, "k", json!({"n": "1"})).await, 1);

    // An older N answers at once with the latest version.
    let (s, b, took) = watch(rc, "k", 0, "10s").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_of(&b), 1);
    assert_eq!(b["data"]["data"], json!({"n": "1"}));
    assert!(took < Duration::from_secs(1), "N < current must answer at once, took {took:?}");
    assert!(warnings(&b).is_empty(), "no warning when a newer version exists: {b}");

    // N = current blocks until another client writes.
    let started = Instant::now();
    let waiter = spawn_watch(rc, "k", 1, "10s");
    let_them_park().await;
    assert!(!waiter.is_finished(), "the waiter returned before any write");
    let written = Instant::now();
    assert_eq!(write(&writer, "k", json!({"n": "2"})).await, 2);
    let (s, b, returned) = waiter.await.unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_of(&b), 2, "{b}");
    assert_eq!(b["data"]["data"], json!({"n": "2"}), "{b}");
    let after_write = returned.saturating_duration_since(written);
    eprintln!("{backend:?}: waiter returned {after_write:?} after the write");
    assert!(after_write < Duration::from_secs(2), "the waiter returned {after_write:?} after the write");
    assert!(returned - started < Duration::from_secs(8), "returned long after the write: {:?}", returned - started);
    assert!(warnings(&b).is_empty(), "{b}");

    // No write within the wait: the current version after ~1 s, with a warning.
    let (s, b, took) = watch(rc, "k", 2, "1s").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_of(&b), 2, "{b}");
    assert_eq!(b["data"]["data"], json!({"n": "2"}));
    assert!(took >= Duration::from_millis(900), "answered before the wait was over: {took:?}");
    assert!(took < Duration::from_secs(4), "wait=1s took {took:?}");
    let w = warnings(&b);
    assert!(w.iter().any(|w| w.contains("no version newer than 2 within the wait")), "warning expected: {b}");
    // Seconds as a plain number work too.
    let (s, b, took) = watch(rc, "k", 2, "1").await;
    assert_eq!((s, version_of(&b)), (200, 2), "{b}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "wait=1 took {took:?}");

    // A secret that does not exist and is not written within the wait: 404.
    let (s, b, took) = watch(rc, "missing", 0, "1s").await;
    assert_eq!(s, 404, "{b}");
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // ...and one that is created during the wait answers with version 1.
    let waiter = spawn_watch(rc, "later", 0, "10s");
    let_them_park().await;
    let written = Instant::now();
    write(&writer, "later", json!({"born": "yes"})).await;
    let (s, b, returned) = waiter.await.unwrap();
    assert_eq!(s, 200, "a waiter on a missing secret returns when it is created: {b}");
    assert_eq!(version_of(&b), 1, "{b}");
    assert_eq!(b["data"]["data"], json!({"born": "yes"}));
    assert!(returned.saturating_duration_since(written) < Duration::from_secs(2));

    // Bad parameters are a 400, not a 500.
    let (s, b) = rc.get("secret/data/k?wait_for_version_after=abc&wait=1s").await;
    assert!((400..500).contains(&s), "bad wait_for_version_after: {s} {b}");
    let (s, b) = rc.get("secret/data/k?wait_for_version_after=1&wait=soon").await;
    assert!((400..500).contains(&s), "bad wait: {s} {b}");
    assert!(!v.srv.log_text().contains("panicked"), "server panicked:\n{}", v.srv.log_text());
}

#[tokio::test]
async fn watch_blocks_until_write_sqlite() {
    blocking_read(Backend::Sqlite).await;
}

#[tokio::test]
async fn watch_blocks_until_write_postgres() {
    blocking_read(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 2. watch returns on rotation
// ---------------------------------------------------------------------------

async fn on_rotation(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let (s, b) = rc.post("secret/rotation/w", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "{b}");
    // The first rotation makes version 1: a waiter on the missing secret sees it.
    let (s, b, _) = watch(rc, "w", 0, "15s").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_of(&b), 1, "{b}");

    // Rotate-now wakes a waiter.
    let waiter = spawn_watch(rc, "w", 1, "10s");
    let_them_park().await;
    let rotated = Instant::now();
    let (s, r) = rc.post("secret/rotate/w", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let (s, b, returned) = waiter.await.unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_of(&b), 2, "{b}");
    let (_, v2) = rc.get("secret/data/w?version=2").await;
    assert_eq!(b["data"]["data"], v2["data"]["data"], "the waiter gets the rotated data");
    assert!(returned.saturating_duration_since(rotated) < Duration::from_secs(2));

    // A scheduled rotation wakes a waiter: period 2 s.
    let (s, b) = rc.post("secret/rotation/w", json!({"period": "2s", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "{b}");
    let (s, b, took) = watch(rc, "w", 2, "15s").await;
    assert_eq!(s, 200, "{b}");
    assert!(version_of(&b) >= 3, "{b}");
    assert!(warnings(&b).is_empty(), "the scheduled rotation came within the wait: {b}");
    assert!(took < Duration::from_secs(8), "a 2 s rotation took {took:?} to wake the waiter");
    // A follower loop sees consecutive versions.
    let mut seen = version_of(&b);
    for _ in 0..2 {
        let (s, b, _) = watch(rc, "w", seen, "15s").await;
        assert_eq!(s, 200, "{b}");
        let n = version_of(&b);
        assert!(n > seen, "{n} after {seen}: {b}");
        seen = n;
    }
    let (s, b) = rc.delete("secret/rotation/w").await;
    assert_eq!(s, 204, "{b}");
}

#[tokio::test]
async fn watch_returns_on_rotation_sqlite() {
    on_rotation(Backend::Sqlite).await;
}

#[tokio::test]
async fn watch_returns_on_rotation_postgres() {
    on_rotation(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 3. two servers on one PostgreSQL: the change feed wakes waiters
// ---------------------------------------------------------------------------

#[tokio::test]
async fn watch_across_servers_postgres() {
    let v = vault(Backend::Postgres).await;
    let ra = v.rc.clone();
    let srv_b = ServerProc::start_with_config(&v.store, FAST, &[]);
    let cb = srv_b.client();
    cb.unseal(&v.keys).await;
    let rb = cb.with_token(&v.root);
    assert_eq!(write(&ra, "x", json!({"from": "a1"})).await, 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, b) = rb.get("secret/data/x").await;
        if s == 200 {
            assert_eq!(version_of(&b), 1);
            break;
        }
        assert!(Instant::now() < deadline, "B never read A's secret: {s} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Waiter on B, write on A.
    let waiter = spawn_watch(&rb, "x", 1, "10s");
    let_them_park().await;
    assert!(!waiter.is_finished(), "B's waiter returned before the write");
    let written = Instant::now();
    assert_eq!(write(&ra, "x", json!({"from": "a2"})).await, 2);
    let (s, b, returned) = waiter.await.unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_of(&b), 2, "{b}");
    assert_eq!(b["data"]["data"], json!({"from": "a2"}), "B answers with A's new data");
    let lag = returned.saturating_duration_since(written);
    eprintln!("B's waiter returned {lag:?} after A's write");
    assert!(lag < Duration::from_secs(2), "B's waiter returned {lag:?} after A's write (change feed)");

    // And the other way round, on a key B has never read.
    let waiter = spawn_watch(&ra, "y", 0, "10s");
    let_them_park().await;
    let written = Instant::now();
    write(&rb, "y", json!({"from": "b"})).await;
    let (s, b, returned) = waiter.await.unwrap();
    assert_eq!((s, version_of(&b)), (200, 1), "{b}");
    assert!(returned.saturating_duration_since(written) < Duration::from_secs(2));

    // A rotation run on A wakes a waiter on B.
    let (s, b) = ra.post("secret/rotation/x", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "{b}");
    let waiter = spawn_watch(&rb, "x", 2, "10s");
    let_them_park().await;
    let rotated = Instant::now();
    let (s, r) = ra.post("secret/rotate/x", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let (s, b, returned) = waiter.await.unwrap();
    assert_eq!((s, version_of(&b)), (200, 3), "{b}");
    assert_eq!(b["data"]["data"]["from"], "a2", "non-rotated field carried over: {b}");
    assert!(returned.saturating_duration_since(rotated) < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------
// 4. many waiters, no thread each
// ---------------------------------------------------------------------------

fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|n| n.trim().parse().unwrap())
        .expect("Threads: in /proc/<pid>/status")
}

/// The most threads seen over `period`.
async fn max_threads(pid: u32, period: Duration) -> u64 {
    let end = Instant::now() + period;
    let mut max = 0;
    while Instant::now() < end {
        max = max.max(threads(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    max
}

const WAITERS: usize = 200;

async fn many_waiters(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let pid = v.srv.pid();
    assert_eq!(write(rc, "hot", json!({"gen": 1})).await, 1);

    // Warm up the server's pools with the same kind of load (many concurrent
    // reads), then measure the baseline.
    let mut warm = Vec::new();
    for _ in 0..WAITERS {
        let rc = rc.clone();
        warm.push(tokio::spawn(async move { rc.get("secret/data/hot").await.0 }));
    }
    for t in warm {
        assert_eq!(t.await.unwrap(), 200);
    }
    let baseline = max_threads(pid, Duration::from_millis(700)).await;

    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        waiters.push(spawn_watch(rc, "hot", 1, "30s"));
    }
    let_them_park().await;
    let during = max_threads(pid, Duration::from_millis(1000)).await;
    let finished = waiters.iter().filter(|w| w.is_finished()).count();
    assert_eq!(finished, 0, "{finished} waiters returned before the write");

    let written = Instant::now();
    assert_eq!(write(rc, "hot", json!({"gen": 2})).await, 2);
    let mut slowest = Duration::ZERO;
    for w in waiters {
        let (s, b, returned) = w.await.unwrap();
        assert_eq!(s, 200, "{b}");
        assert_eq!(version_of(&b), 2, "{b}");
        assert_eq!(b["data"]["data"], json!({"gen": 2}));
        slowest = slowest.max(returned.saturating_duration_since(written));
    }
    eprintln!(
        "{backend:?}: {WAITERS} waiters: threads baseline {baseline}, while waiting {during}; slowest {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(5), "the last of {WAITERS} waiters returned {slowest:?} after the write");
    assert!(
        during <= baseline + 24,
        "{WAITERS} waiters grew the server from {baseline} to {during} threads: waiting must cost no thread"
    );
    assert_eq!(rc.get("sys/health").await.0, 200);
}

#[tokio::test]
async fn many_waiters_one_write_sqlite() {
    many_waiters(Backend::Sqlite).await;
}

#[tokio::test]
async fn many_waiters_one_write_postgres() {
    many_waiters(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 5. sealing wakes waiters with 503
// ---------------------------------------------------------------------------

async fn seal_wakes(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    assert_eq!(write(rc, "s", json!({"a": "b"})).await, 1);
    let mut waiters: Vec<JoinHandle<(u16, Value, Instant)>> = (0..5).map(|_| spawn_watch(rc, "s", 1, "60s")).collect();
    waiters.push(spawn_watch(rc, "never", 0, "60s"));
    let_them_park().await;
    assert!(waiters.iter().all(|w| !w.is_finished()), "a waiter returned before the seal");
    let sealed = Instant::now();
    let (s, b) = rc.put("sys/seal", json!({})).await;
    assert_eq!(s, 204, "seal: {b}");
    for w in waiters {
        let (s, b, returned) = w.await.unwrap();
        assert_eq!(s, 503, "a waiter after the seal: {b}");
        let after = returned.saturating_duration_since(sealed);
        assert!(after < Duration::from_secs(3), "a waiter returned {after:?} after the seal");
    }
    // Unsealed again, watching works.
    v.srv.client().unseal(&v.keys).await;
    let (s, b, took) = watch(rc, "s", 0, "5s").await;
    assert_eq!((s, version_of(&b)), (200, 1), "{b}");
    assert!(took < Duration::from_secs(1));
}

#[tokio::test]
async fn seal_wakes_waiters_sqlite() {
    seal_wakes(Backend::Sqlite).await;
}

#[tokio::test]
async fn seal_wakes_waiters_postgres() {
    seal_wakes(Backend::Postgres).await;
}
