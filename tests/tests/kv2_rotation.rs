//! KV v2 rotation policies end to end (docs/kv-rotation.md), against the real
//! server: the `password` and `bytes` generators, rotate-now, status, policy
//! validation and removal; the scheduler (and exactly-once rotation across two
//! servers sharing PostgreSQL); real PostgreSQL role rotation with two
//! alternating roles and a grace period, checked by logging in to PostgreSQL;
//! crash safety (kill -9 during a blocked `ALTER ROLE`, roll forward on
//! restart); and no generated value at rest or in the logs.
//!
//! Servers run with `[rotation] interval = "1s"` so the scheduler is quick.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, PgCluster, ROTATED_GROUP, ServerProc, Store, contains};

/// Scheduler settings for every server of these tests.
/// The test PostgreSQL listens on 127.0.0.1, which the server must be told
/// it may connect to (`postgres_allowed_hosts` allows nothing by default).
const FAST: &str = "[rotation]\ninterval = \"1s\"\nlease = \"6s\"\npostgres_allowed_hosts = [\"127.0.0.1\"]\n";

/// Symbols of the `password` generator.
const SYMBOLS: &str = "!#$%&*+-.:=?@^_~";

struct Vault {
    store: Store,
    srv: ServerProc,
    rc: Client,
    keys: Vec<String>,
    root: String,
}

/// A fresh vault on `backend` with `config`, initialized, unsealed, `secret/` mounted as KV v2.
async fn vault_with(backend: Backend, config: &str, extra: &[&str]) -> Vault {
    let store = Store::new(backend);
    let srv = ServerProc::start_with_config(&store, config, extra);
    let (keys, root, rc) = srv.kv2_ready().await;
    Vault { store, srv, rc, keys, root }
}

async fn vault(backend: Backend) -> Vault {
    vault_with(backend, FAST, &[]).await
}

/// Another server on the same store (same config), unsealed, routing `secret/`.
async fn second_server(v: &Vault, config: &str, extra: &[&str]) -> (ServerProc, Client) {
    let srv = ServerProc::start_with_config(&v.store, config, extra);
    let c = srv.client();
    c.unseal(&v.keys).await;
    let rc = c.with_token(&v.root);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, body) = rc.get("secret/config").await;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "second server never routed secret/: {s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (srv, rc)
}

/// Poll `secret/data/{path}` until its latest version is at least `min`; the read's `data`.
async fn wait_version(rc: &Client, path: &str, min: u64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (s, v) = rc.get(&format!("secret/data/{path}")).await;
        if s == 200 && v["data"]["metadata"]["version"].as_u64().unwrap_or(0) >= min {
            return v["data"].clone();
        }
        if Instant::now() > deadline {
            let (_, st) = rc.get(&format!("secret/rotation/{path}")).await;
            panic!(
                "secret/{path} did not reach version {min} within {timeout:?}: last read {s} {v}; rotation status {st}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET secret/rotation/{path}` (must be 200): its `data`.
async fn status(rc: &Client, path: &str) -> Value {
    let (s, v) = rc.get(&format!("secret/rotation/{path}")).await;
    assert_eq!(s, 200, "rotation status of {path}: {v}");
    v["data"].clone()
}

/// Poll the rotation status of `path` until `pred` holds; the status.
async fn wait_status(rc: &Client, path: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (s, v) = rc.get(&format!("secret/rotation/{path}")).await;
        if s == 200 && pred(&v["data"]) {
            return v["data"].clone();
        }
        assert!(Instant::now() < deadline, "rotation status of {path} never showed {what} within {timeout:?}: {s} {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Read one version's data.
async fn read_version(rc: &Client, path: &str, version: u64) -> Value {
    let (s, v) = rc.get(&format!("secret/data/{path}?version={version}")).await;
    assert_eq!(s, 200, "read {path} v{version}: {v}");
    v["data"].clone()
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("field {field} is not a string in {v}"))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp such as
/// `2026-11-24T10:00:00.123456789Z` (or with a `+00:00` offset).
fn unix_secs(ts: &str) -> f64 {
    fn bad(ts: &str) -> ! {
        panic!("not an RFC 3339 UTC timestamp: {ts:?}")
    }
    let orig = ts;
    let ts = ts.strip_suffix('Z').or_else(|| ts.strip_suffix("+00:00")).unwrap_or_else(|| bad(orig));
    let (date, time) = ts.split_once('T').unwrap_or_else(|| bad(orig));
    let num = |p: &str| -> i64 { p.parse().unwrap_or_else(|_| bad(orig)) };
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    if d.len() != 3 || t.len() != 3 {
        bad(orig);
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac: f64 = format!("0.{frac}").parse().unwrap_or_else(|_| bad(orig));
    (days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + frac
}

/// A generated password: its length, only characters of `classes`, each class at least once.
fn check_password(p: &str, len: usize, classes: &[&str], ctx: &str) {
    assert_eq!(p.chars().count(), len, "{ctx}: length of {p:?}");
    let class_of = |c: char| {
        if c.is_ascii_lowercase() {
            "lower"
        } else if c.is_ascii_uppercase() {
            "upper"
        } else if c.is_ascii_digit() {
            "digit"
        } else if SYMBOLS.contains(c) {
            "symbol"
        } else {
            "other"
        }
    };
    for c in p.chars() {
        assert!(classes.contains(&class_of(c)), "{ctx}: {c:?} in {p:?} is not in classes {classes:?}");
    }
    for class in classes {
        assert!(p.chars().any(|c| class_of(c) == *class), "{ctx}: no {class} character in {p:?}");
    }
}

/// Every error message of an error reply, lower-cased and joined.
fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. password and bytes generators, rotate-now, status, validation, removal
// ---------------------------------------------------------------------------

async fn generators(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let mut generated: Vec<String> = Vec::new();

    // A policy on a secret with no version: the first rotation runs at once.
    let policy = json!({
        "period": "1h",
        "fields": ["password", "token"],
        "generator": {"type": "password", "length": 24, "classes": ["lower", "digit"]},
    });
    let (s, b) = rc.post("secret/rotation/app", policy).await;
    assert_eq!(s, 204, "set policy: {b}");
    let d1 = wait_version(rc, "app", 1, Duration::from_secs(15)).await;
    assert_eq!(d1["metadata"]["version"], 1, "{d1}");
    let fields1 = d1["data"].as_object().unwrap();
    assert_eq!(fields1.len(), 2, "only the rotated fields: {d1}");
    let (p1, t1) = (str_of(&d1["data"], "password").to_string(), str_of(&d1["data"], "token").to_string());
    check_password(&p1, 24, &["lower", "digit"], "v1 password");
    check_password(&t1, 24, &["lower", "digit"], "v1 token");
    assert_ne!(p1, t1, "each field gets its own value");
    generated.extend([p1.clone(), t1.clone()]);

    let st = status(rc, "app").await;
    assert_eq!(st["period"], 3600, "{st}");
    assert_eq!(st["fields"], json!(["password", "token"]), "{st}");
    assert_eq!(st["generator"]["type"], "password", "{st}");
    assert_eq!(st["rotations"], 1, "{st}");
    assert_eq!(st["last_version"], 1, "{st}");
    assert_eq!(st["pending"], false, "{st}");
    assert_eq!(st["last_error"], "", "{st}");
    assert_eq!(st["failures"], 0, "{st}");
    let created1 = unix_secs(str_of(&d1["metadata"], "created_time"));
    let next = unix_secs(str_of(&st, "next_rotation"));
    assert!((next - (created1 + 3600.0)).abs() < 10.0, "next_rotation is created_time + period: {st} vs {d1}");
    assert!((unix_secs(str_of(&st, "last_rotation")) - created1).abs() < 10.0, "last_rotation: {st}");

    // Rotate now: version 2, new values.
    let (s, w) = rc.post("secret/rotate/app", json!({})).await;
    assert_eq!(s, 200, "rotate now: {w}");
    assert_eq!(w["data"]["version"], 2, "answers like a KV v2 write: {w}");
    assert!(w["data"]["created_time"].as_str().unwrap_or_default().contains('T'), "{w}");
    let d2 = read_version(rc, "app", 2).await;
    let (p2, t2) = (str_of(&d2["data"], "password").to_string(), str_of(&d2["data"], "token").to_string());
    check_password(&p2, 24, &["lower", "digit"], "v2 password");
    check_password(&t2, 24, &["lower", "digit"], "v2 token");
    assert!(p2 != p1 && t2 != t1 && p2 != t2, "rotation makes new values: {d1} -> {d2}");
    generated.extend([p2.clone(), t2.clone()]);
    let (_, latest) = rc.get("secret/data/app").await;
    assert_eq!(latest["data"]["metadata"]["version"], 2, "{latest}");
    let st = status(rc, "app").await;
    assert_eq!((st["rotations"].as_u64(), st["last_version"].as_u64()), (Some(2), Some(2)), "{st}");
    assert_eq!(st["pending"], false, "{st}");
    let created2 = unix_secs(str_of(&d2["metadata"], "created_time"));
    assert!((unix_secs(str_of(&st, "next_rotation")) - (created2 + 3600.0)).abs() < 10.0, "{st}");

    // Fields that do not rotate are carried over; the default generator is 32
    // characters of all four classes; an existing secret waits for its period.
    let (s, b) = rc.post("secret/data/svc", json!({"data": {"host": "db.local", "password": "x"}})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rc.post("secret/rotation/svc", json!({"period": 3600, "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "policy with defaults: {b}");
    let st = status(rc, "svc").await;
    assert_eq!(st["fields"], json!(["password"]), "default fields: {st}");
    let (_, m) = rc.get("secret/metadata/svc").await;
    let c1 = unix_secs(str_of(&m["data"]["versions"]["1"], "created_time"));
    assert!(
        (unix_secs(str_of(&st, "next_rotation")) - (c1 + 3600.0)).abs() < 10.0,
        "an existing secret rotates at its latest version's time + period: {st}"
    );
    assert_eq!(m["data"]["current_version"], 1, "no rotation yet: {m}");
    let (s, w) = rc.post("secret/rotate/svc", json!({})).await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["data"]["version"], 2, "{w}");
    let d = read_version(rc, "svc", 2).await;
    assert_eq!(d["data"]["host"], "db.local", "non-rotated field carried over: {d}");
    let p = str_of(&d["data"], "password").to_string();
    assert_ne!(p, "x");
    check_password(&p, 32, &["lower", "upper", "digit", "symbol"], "default password");
    generated.push(p);

    // bytes: hex, base64 (default, padded), base64url (unpadded).
    for (path, gen_, len, charset, pad) in [
        ("b/hex", json!({"type": "bytes", "length": 16, "encoding": "hex"}), 32, "0123456789abcdefABCDEF", false),
        (
            "b/b64",
            json!({"type": "bytes", "length": 32}),
            44,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            true,
        ),
        (
            "b/url",
            json!({"type": "bytes", "length": 32, "encoding": "base64url"}),
            43,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            false,
        ),
    ] {
        let (s, b) = rc
            .post(&format!("secret/rotation/{path}"), json!({"period": "1h", "fields": ["key"], "generator": gen_}))
            .await;
        assert_eq!(s, 204, "{path}: {b}");
        let d = wait_version(rc, path, 1, Duration::from_secs(15)).await;
        let k = str_of(&d["data"], "key").to_string();
        assert_eq!(k.len(), len, "{path}: encoded length of {k:?}");
        let body = if pad { k.trim_end_matches('=') } else { k.as_str() };
        assert!(body.chars().all(|c| charset.contains(c)), "{path}: bad character in {k:?}");
        if pad {
            assert_eq!(&k[43..], "=", "{path}: 32 bytes in padded base64 end with one '=': {k:?}");
        }
        generated.push(k);
    }

    // Invalid policies: 400 with a message naming the problem; nothing stored.
    let (s, b) = rc
        .post(
            "secret/data/db/admin",
            json!({"data": {"host": "127.0.0.1", "username": "postgres", "password": "pw", "allowed_roles": "*"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for (body, words, ctx) in [
        (
            json!({"period": "1h", "generator": {"type": "nope"}}),
            &["generator", "type", "nope"][..],
            "unknown generator",
        ),
        (json!({"period": "1h", "generator": {"type": "password", "length": 2}}), &["length"], "password length 2"),
        (
            json!({"period": "1h", "generator": {"type": "password", "length": 1025}}),
            &["length"],
            "password length 1025",
        ),
        (
            json!({"period": "1h", "generator": {"type": "password", "classes": ["emoji"]}}),
            &["class", "emoji"],
            "unknown class",
        ),
        (json!({"period": "1h", "generator": {"type": "bytes", "length": 0}}), &["length"], "bytes length 0"),
        (
            json!({"period": "1h", "generator": {"type": "bytes", "encoding": "rot13"}}),
            &["encoding", "rot13"],
            "bad encoding",
        ),
        (json!({"period": 0, "generator": {"type": "password"}}), &["period"], "period 0"),
        (json!({"period": "0s", "generator": {"type": "password"}}), &["period"], "period 0s"),
        (json!({"generator": {"type": "password"}}), &["period"], "no period"),
        (json!({"period": "soon", "generator": {"type": "password"}}), &["period"], "bad duration"),
        (json!({"period": "1h"}), &["generator"], "no generator"),
        // Numbers that meet a clock are bounded (no overflow, no absurd schedules).
        (json!({"period": "400d", "generator": {"type": "password"}}), &["period"], "period over a year"),
        (json!({"period": u64::MAX, "generator": {"type": "password"}}), &["period"], "period u64::MAX"),
        (
            json!({"period": "99999999999999999999999h", "generator": {"type": "password"}}),
            &["period"],
            "period overflowing",
        ),
        (json!({"period": -5, "generator": {"type": "password"}}), &["period"], "negative period"),
        (
            json!({"period": "1h", "grace_period": u64::MAX, "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["r_one", "r_two"]}}),
            &["grace"],
            "grace period u64::MAX",
        ),
        (
            json!({"period": "1h", "generator": {"type": "password", "length": 1e30}}),
            &["length"],
            "password length 1e30",
        ),
        (
            json!({"period": "1h", "generator": {"type": "bytes", "length": u64::MAX}}),
            &["length"],
            "bytes length u64::MAX",
        ),
        (
            json!({"period": "1h", "grace_period": "10s", "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["r_one"]}}),
            &["grace"],
            "grace period with one role",
        ),
        (
            json!({"period": "1m", "grace_period": "2m", "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["r_one", "r_two"]}}),
            &["grace"],
            "grace period longer than the period",
        ),
        (
            json!({"period": "1h", "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["a", "b", "c"]}}),
            &["role"],
            "three roles",
        ),
    ] {
        let (s, b) = rc.post("secret/rotation/invalid", body.clone()).await;
        assert_eq!(s, 400, "{ctx}: {body} -> {b}");
        let msg = errors(&b).to_lowercase();
        assert!(words.iter().any(|w| msg.contains(w)), "{ctx}: message {msg:?} should name one of {words:?}");
    }
    let (s, b) = rc.get("secret/rotation/invalid").await;
    assert_eq!(s, 404, "no policy was stored: {b}");

    // Rotate without a policy: 404 (missing secret, and existing secret).
    let (s, b) = rc.post("secret/rotate/nothing", json!({})).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = rc.post("secret/rotate/db/admin", json!({})).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = rc.get("secret/rotation/db/admin").await;
    assert_eq!(s, 404, "{b}");

    // DELETE the policy: 404 afterwards, versions stay.
    let (s, b) = rc.delete("secret/rotation/app").await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = rc.get("secret/rotation/app").await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = rc.post("secret/rotate/app", json!({})).await;
    assert_eq!(s, 404, "{b}");
    let (_, m) = rc.get("secret/metadata/app").await;
    assert_eq!(m["data"]["current_version"], 2, "{m}");
    assert_eq!(read_version(rc, "app", 1).await["data"]["password"], p1.as_str());
    assert_eq!(read_version(rc, "app", 2).await["data"]["password"], p2.as_str());

    // DELETE metadata removes the policy (else a version-less secret with a
    // policy would be rotated again at once).
    let (s, b) = rc.delete("secret/metadata/b/hex").await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = rc.get("secret/rotation/b/hex").await;
    assert_eq!(s, 404, "metadata delete removes the policy: {b}");
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        let (s, b) = rc.get("secret/data/b/hex").await;
        assert_eq!(s, 404, "a deleted secret must not come back through its old policy: {b}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // No generated value at rest or in the log.
    let raw = v.store.raw_bytes();
    let logs = v.srv.log_text();
    for g in &generated {
        assert!(!contains(&raw, g.as_bytes()), "generated value {g:?} found in storage");
        assert!(!logs.contains(g.as_str()), "generated value found in the server log");
    }
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

#[tokio::test]
async fn rotation_generators_status_and_validation_sqlite() {
    generators(Backend::Sqlite).await;
}

#[tokio::test]
async fn rotation_generators_status_and_validation_postgres() {
    generators(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 2. the scheduler, and exactly-once rotation across servers
// ---------------------------------------------------------------------------

/// Versions 1..=current of `path` and their creation times (seconds).
async fn version_times(rc: &Client, path: &str) -> Vec<(u64, f64)> {
    let (s, m) = rc.get(&format!("secret/metadata/{path}")).await;
    assert_eq!(s, 200, "{m}");
    let mut out: Vec<(u64, f64)> = m["data"]["versions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), unix_secs(str_of(v, "created_time"))))
        .collect();
    out.sort_by_key(|(n, _)| *n);
    out
}

/// Status and metadata agree: every version was made by one rotation.
async fn assert_rotations_match_versions(rc: &Client, path: &str) {
    let mut last = String::new();
    for _ in 0..20 {
        let before = status(rc, path).await;
        let (_, m) = rc.get(&format!("secret/metadata/{path}")).await;
        let after = status(rc, path).await;
        if before["rotations"] != after["rotations"] || after["last_version"] != m["data"]["current_version"] {
            // A rotation ran between the reads (or the two never agree).
            last = format!("status before {before}, metadata {m}, status after {after}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let current = m["data"]["current_version"].as_u64().unwrap();
        let mut versions: Vec<u64> =
            m["data"]["versions"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
        versions.sort_unstable();
        assert_eq!(versions, (1..=current).collect::<Vec<_>>(), "every version number once: {m}");
        assert_eq!(
            after["rotations"].as_u64(),
            Some(current),
            "rotations recorded == versions created: {after} vs {m}"
        );
        assert_eq!(after["pending"], false, "{after}");
        return;
    }
    panic!("status last_version and metadata current_version of {path} never agreed: {last}");
}

/// Consecutive scheduled versions are at least about one period apart (a
/// double rotation would make two versions within milliseconds).
fn assert_spaced(times: &[(u64, f64)], period: f64, ctx: &str) {
    for w in times.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(
            gap >= period - 0.5,
            "{ctx}: versions {} and {} only {gap:.3}s apart (period {period}s): {times:?}",
            w[0].0,
            w[1].0
        );
        assert!(
            gap <= period + 6.0,
            "{ctx}: versions {} and {} {gap:.3}s apart (period {period}s): {times:?}",
            w[0].0,
            w[1].0
        );
    }
}

#[tokio::test]
async fn scheduler_rotates_every_period_sqlite() {
    let v = vault(Backend::Sqlite).await;
    let rc = &v.rc;
    let (s, b) = rc.post("secret/rotation/tick", json!({"period": "2s", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "{b}");
    let start = Instant::now();
    wait_version(rc, "tick", 1, Duration::from_secs(10)).await;
    // ~7 s: the first rotation plus at least two scheduled ones.
    wait_version(rc, "tick", 3, Duration::from_secs(12)).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(3500), "two scheduled rotations of 2s took only {elapsed:?}");
    let times = version_times(rc, "tick").await;
    assert_spaced(&times, 2.0, "sqlite scheduler");
    assert_rotations_match_versions(rc, "tick").await;
    let st = status(rc, "tick").await;
    assert_eq!(st["period"], 2, "{st}");
    assert_eq!(st["last_error"], "", "{st}");

    // Two rotate-now at once on one server: each that succeeds has its own
    // version; a concurrent one is refused with 400.
    let (a, b) = tokio::join!(rc.post("secret/rotate/tick", json!({})), rc.post("secret/rotate/tick", json!({})));
    check_concurrent_rotate_now(&a, &b);
    assert_rotations_match_versions(rc, "tick").await;
}

fn check_concurrent_rotate_now(a: &(u16, Value), b: &(u16, Value)) {
    for (s, body) in [a, b] {
        assert!(*s == 200 || *s == 400, "concurrent rotate-now: {s} {body}");
        if *s == 400 {
            assert!(!errors(body).is_empty(), "400 with a message: {body}");
        }
    }
    assert!(a.0 == 200 || b.0 == 200, "one of two concurrent rotate-now must succeed: {a:?} {b:?}");
    if a.0 == 200 && b.0 == 200 {
        assert_ne!(a.1["data"]["version"], b.1["data"]["version"], "two rotations, two versions");
    }
}

#[tokio::test]
async fn scheduler_exactly_once_across_two_servers_postgres() {
    let v = vault(Backend::Postgres).await;
    let (srv_b, rb) = second_server(&v, FAST, &[]).await;
    let ra = &v.rc;

    let (s, b) = ra
        .post("secret/rotation/shared", json!({"period": "2s", "generator": {"type": "password", "length": 16}}))
        .await;
    assert_eq!(s, 204, "{b}");
    // B sees the policy A wrote.
    let st = wait_status(&rb, "shared", Duration::from_secs(10), "the policy", |_| true).await;
    assert_eq!(st["period"], 2, "{st}");
    wait_version(ra, "shared", 1, Duration::from_secs(10)).await;
    // A window of at least four scheduled rotations with both schedulers running.
    wait_version(&rb, "shared", 5, Duration::from_secs(20)).await;
    let times = version_times(ra, "shared").await;
    eprintln!("two servers, version times: {times:?}");
    assert_spaced(&times, 2.0, "two servers");
    assert_rotations_match_versions(ra, "shared").await;
    assert_rotations_match_versions(&rb, "shared").await;

    // Rotate-now on both servers at once.
    let (a, b) = tokio::join!(ra.post("secret/rotate/shared", json!({})), rb.post("secret/rotate/shared", json!({})));
    check_concurrent_rotate_now(&a, &b);
    assert_rotations_match_versions(ra, "shared").await;

    // A second secret, a few more periods: still one version per rotation.
    let (s, b) = rb.post("secret/rotation/other", json!({"period": "2s", "generator": {"type": "bytes"}})).await;
    assert_eq!(s, 204, "{b}");
    wait_version(ra, "other", 3, Duration::from_secs(15)).await;
    assert_spaced(&version_times(ra, "other").await, 2.0, "second secret, two servers");
    assert_rotations_match_versions(&rb, "other").await;
    for l in [v.srv.log_text(), srv_b.log_text()] {
        assert!(!l.contains("panicked"), "server panicked:\n{l}");
    }
}

// ---------------------------------------------------------------------------
// 3. PostgreSQL roles, for real
// ---------------------------------------------------------------------------

/// A database and two LOGIN roles without password, members of the
/// password-checked group: (db, blue, green).
fn make_roles(pg: &PgCluster, tag: &str) -> (String, String, String) {
    let db = pg.create_database();
    let (blue, green) = (format!("app_blue_{tag}"), format!("app_green_{tag}"));
    for r in [&blue, &green] {
        pg.psql("postgres", &format!("CREATE ROLE {r} LOGIN IN ROLE {ROTATED_GROUP}"));
    }
    // Without a password neither can log in.
    assert!(pg.try_login(&db, &blue, "").is_err(), "{blue} logs in without a password: pg_hba.conf not applied");
    (db, blue, green)
}

/// The admin connection secret at `secret/{path}`.
async fn store_admin(rc: &Client, path: &str, pg: &PgCluster, db: &str, allowed: &str, port_as_number: bool) {
    let port = if port_as_number { json!(pg.port()) } else { json!(pg.port().to_string()) };
    let (s, b) = rc
        .post(
            &format!("secret/data/{path}"),
            json!({"data": {
                "host": "127.0.0.1", "port": port, "dbname": db,
                "username": "postgres", "password": "unused", "allowed_roles": allowed,
            }}),
        )
        .await;
    assert_eq!(s, 200, "admin connection secret: {b}");
}

fn other_role<'a>(user: &str, blue: &'a str, green: &'a str) -> &'a str {
    if user == blue {
        green
    } else {
        assert_eq!(user, green, "the username is one of the policy's roles");
        blue
    }
}

async fn postgresql_roles(backend: Backend, tag: &str) {
    let v = vault_with(backend, FAST, &["--log-level", "trace"]).await;
    let rc = &v.rc;
    let pg = PgCluster::shared();
    let (db, blue, green) = make_roles(&pg, tag);
    store_admin(rc, "db/admin", &pg, &db, &format!("{blue},{green}"), false).await;

    // A role outside allowed_roles is refused at policy time.
    let (s, b) = rc
        .post(
            "secret/rotation/db/bad",
            json!({"period": "1h", "generator": {"type": "postgresql", "connection": "db/admin", "roles": [blue, format!("app_red_{tag}")]}}),
        )
        .await;
    assert_eq!(s, 400, "role not in allowed_roles: {b}");
    assert!(errors(&b).contains(&format!("app_red_{tag}")) || errors(&b).contains("allowed"), "clear message: {b}");
    let (s, b) = rc.get("secret/rotation/db/bad").await;
    assert_eq!(s, 404, "{b}");

    let policy = json!({
        "period": "1h",
        "generator": {"type": "postgresql", "connection": "db/admin", "roles": [blue, green]},
        "grace_period": "3s",
    });
    let (s, b) = rc.post("secret/rotation/db/app", policy).await;
    assert_eq!(s, 204, "{b}");
    let d1 = wait_version(rc, "db/app", 1, Duration::from_secs(20)).await;
    let (u1, p1) = (str_of(&d1["data"], "username").to_string(), str_of(&d1["data"], "password").to_string());
    assert_eq!(d1["data"].as_object().unwrap().len(), 2, "username and password: {d1}");
    check_password(&p1, 32, &["lower", "upper", "digit"], "default role password");
    let u2_expected = other_role(&u1, &blue, &green).to_string();
    pg.try_login(&db, &u1, &p1).unwrap_or_else(|e| panic!("v1 credential ({u1}) must log in: {e}"));
    assert!(pg.try_login(&db, &u2_expected, &p1).is_err(), "the other role must not accept v1's password");
    assert!(pg.try_login(&db, &u1, "wrong-password").is_err(), "password checking is on");

    let st = status(rc, "db/app").await;
    assert_eq!(st["period"], 3600, "{st}");
    assert_eq!(st["grace_period"], 3, "{st}");
    assert_eq!(st["fields"], json!(["username", "password"]), "{st}");
    assert_eq!(st["generator"]["type"], "postgresql", "{st}");
    assert_eq!(st["generator"]["connection"], "db/admin", "{st}");
    assert_eq!(st["generator"]["roles"], json!([blue, green]), "{st}");
    assert_eq!(st["active_role"], u1.as_str(), "{st}");
    assert_eq!((st["rotations"].as_u64(), st["last_version"].as_u64()), (Some(1), Some(1)), "{st}");
    assert_eq!(st["pending"], false, "{st}");
    assert_eq!(st["last_error"], "", "{st}");
    let st_text = st.to_string();
    assert!(!st_text.contains(&p1) && !st_text.contains("unused"), "status shows no secret: {st}");

    // Rotate now: the other role, and both credentials work during the grace period.
    // Rotate late in a wall-clock second (x.75 s), so that an expiry instant
    // rounded down to whole seconds would show as a grace period ~0.75 s short.
    let subsec = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from((1750 - subsec) % 1000))).await;
    let t_before = Instant::now();
    let (s, w) = rc.post("secret/rotate/db/app", json!({})).await;
    let t_after = Instant::now();
    assert_eq!(s, 200, "rotate now: {w}");
    assert_eq!(w["data"]["version"], 2, "{w}");
    let d2 = read_version(rc, "db/app", 2).await;
    let (u2, p2) = (str_of(&d2["data"], "username").to_string(), str_of(&d2["data"], "password").to_string());
    assert_eq!(u2, u2_expected, "roles alternate: {d1} -> {d2}");
    assert_ne!(p2, p1);
    pg.try_login(&db, &u2, &p2).unwrap_or_else(|e| panic!("new credential ({u2}) must log in: {e}"));
    let old_checked_at = t_before.elapsed();
    let old_during_grace = pg.try_login(&db, &u1, &p1);
    assert!(
        old_checked_at < Duration::from_millis(2500),
        "test too slow to check the grace period: {old_checked_at:?} after the rotate-now (rotate-now took {:?})",
        t_after - t_before
    );
    old_during_grace.unwrap_or_else(|e| panic!("old credential ({u1}) must work during the 3s grace period: {e}"));
    let st = status(rc, "db/app").await;
    assert_eq!(st["active_role"], u2.as_str(), "{st}");
    assert_eq!((st["rotations"].as_u64(), st["last_version"].as_u64()), (Some(2), Some(2)), "{st}");

    // After the grace period PostgreSQL refuses the old credential.
    let deadline = t_after + Duration::from_secs(15);
    let refused = loop {
        match pg.try_login(&db, &u1, &p1) {
            Err(e) => break e,
            Ok(()) => {
                assert!(Instant::now() < deadline, "old credential still works 15 s after a 3 s grace period");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let refused_after = t_before.elapsed();
    eprintln!(
        "{backend:?}: rotate-now took {:?}; old credential checked at {old_checked_at:?}, refused at {refused_after:?}",
        t_after - t_before
    );
    assert!(
        refused_after >= Duration::from_millis(2800),
        "grace_period 3s: old credential refused already {refused_after:?} after the rotate-now began: {refused}"
    );
    pg.try_login(&db, &u2, &p2)
        .unwrap_or_else(|e| panic!("new credential must still work after the grace period: {e}"));

    // A third rotation goes back to the first role with a new password.
    let (s, w) = rc.post("secret/rotate/db/app", json!({})).await;
    assert_eq!(s, 200, "{w}");
    let d3 = read_version(rc, "db/app", 3).await;
    let (u3, p3) = (str_of(&d3["data"], "username").to_string(), str_of(&d3["data"], "password").to_string());
    assert_eq!(u3, u1, "roles alternate back: {d3}");
    assert!(p3 != p1 && p3 != p2);
    pg.try_login(&db, &u3, &p3).unwrap_or_else(|e| panic!("v3 credential must log in: {e}"));
    assert!(pg.try_login(&db, &u1, &p1).is_err(), "v1's password was replaced");
    pg.try_login(&db, &u2, &p2).unwrap_or_else(|e| panic!("v2 credential works during its grace period: {e}"));

    // No password at rest or in the (trace) log.
    let raw = v.store.raw_bytes();
    let logs = v.srv.log_text();
    for p in [&p1, &p2, &p3] {
        assert!(!contains(&raw, p.as_bytes()), "a role password is in storage");
        assert!(!logs.contains(p.as_str()), "a role password is in the server log");
    }
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

#[tokio::test]
async fn postgresql_role_rotation_sqlite_store() {
    postgresql_roles(Backend::Sqlite, "s3").await;
}

#[tokio::test]
async fn postgresql_role_rotation_postgres_store() {
    postgresql_roles(Backend::Postgres, "p3").await;
}

// ---------------------------------------------------------------------------
// 4. crash safety: kill -9 while the ALTER ROLE is blocked, roll forward
// ---------------------------------------------------------------------------

/// Lease 15 s: the admin connection's timeouts (a third) outlast the test's
/// steps while the ALTER ROLE is blocked.
const CRASH: &str = "[rotation]\ninterval = \"1s\"\nlease = \"15s\"\npostgres_allowed_hosts = [\"127.0.0.1\"]\n";

async fn crash_safety(backend: Backend, tag: &str) {
    let v = vault_with(backend, CRASH, &["--log-level", "trace"]).await;
    let rc = v.rc.clone();
    let pg = PgCluster::shared();
    let (db, blue, green) = make_roles(&pg, tag);
    store_admin(&rc, "db/admin", &pg, &db, &format!("{blue},{green}"), true).await;
    let (s, b) = rc
        .post(
            "secret/rotation/db/app",
            json!({"period": "1h", "generator": {"type": "postgresql", "connection": "db/admin", "roles": [blue, green]}}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let d1 = wait_version(&rc, "db/app", 1, Duration::from_secs(20)).await;
    let (u1, p1) = (str_of(&d1["data"], "username").to_string(), str_of(&d1["data"], "password").to_string());
    pg.try_login(&db, &u1, &p1).unwrap_or_else(|e| panic!("v1 credential must log in: {e}"));
    let next = other_role(&u1, &blue, &green).to_string();

    // Hold the row lock of the next role so the server's ALTER ROLE blocks.
    let app = format!("lock_holder_{tag}");
    let mut holder = pg.psql_spawn(
        "postgres",
        &app,
        &format!("BEGIN; ALTER ROLE {next} VALID UNTIL 'infinity'; SELECT pg_sleep(60);"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' AND wait_event = 'PgSleep'"
            ),
        )
        .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "the lock holder never got to pg_sleep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Rotate now from another task: it blocks in ALTER ROLE.
    let rc2 = rc.clone();
    let rotate = tokio::spawn(async move { rc2.try_call("POST", "secret/rotate/db/app", Some(json!({}))).await });
    let st = wait_status(&rc, "db/app", Duration::from_secs(10), "pending: true", |s| s["pending"] == true).await;
    assert_eq!(st["rotations"], 1, "not committed yet: {st}");
    // While pending: the policy cannot be deleted, a second rotation is refused.
    let (s, b) = rc.delete("secret/rotation/db/app").await;
    assert_eq!(s, 400, "DELETE of a policy with a pending rotation: {b}");
    let (s, b) = rc.post("secret/rotate/db/app", json!({})).await;
    assert_eq!(s, 400, "rotate-now while a rotation of the secret runs: {b}");
    assert!(!rotate.is_finished(), "the first rotate-now should still be blocked in ALTER ROLE");

    // Crash, then release the lock.
    let logs_a = v.srv.logs.clone();
    let Vault { store, srv, keys, root, .. } = v;
    srv.kill9();
    match rotate.await.unwrap() {
        Err(_) => {}
        Ok((s, b)) => assert_eq!(s, 502, "rotate-now cut short by the crash: {b}"),
    }
    assert!(pg.terminate_app(&app) >= 1, "lock holder session gone already");
    let _ = holder.kill();
    let _ = holder.wait();

    // Restart on the same storage: the pending rotation rolls forward.
    let srv = ServerProc::start_with_config(&store, CRASH, &["--log-level", "trace"]);
    let c = srv.client();
    c.unseal(&keys).await;
    let rc = c.with_token(&root);
    let restarted = Instant::now();
    let st = wait_status(&rc, "db/app", Duration::from_secs(30), "the rolled-forward rotation", |s| {
        s["pending"] == false && s["rotations"] == 2
    })
    .await;
    eprintln!("{backend:?}: rolled forward {:?} after the restart", restarted.elapsed());
    // The crashed server's claim (15 s lease) is taken over at once: its
    // holder has no session on the storage any more.
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "the repair waited for the crashed server's lease to expire ({:?})",
        restarted.elapsed()
    );
    assert_eq!(st["last_version"], 2, "{st}");
    assert_eq!(st["active_role"], next.as_str(), "{st}");
    assert_eq!(st["last_error"], "", "{st}");
    let (_, m) = rc.get("secret/metadata/db/app").await;
    assert_eq!(m["data"]["current_version"], 2, "exactly one new version: {m}");
    let d2 = read_version(&rc, "db/app", 2).await;
    let (u2, p2) = (str_of(&d2["data"], "username").to_string(), str_of(&d2["data"], "password").to_string());
    assert_eq!(u2, next, "{d2}");
    pg.try_login(&db, &u2, &p2).unwrap_or_else(|e| panic!("the rolled-forward credential must log in: {e}"));
    // Default grace period = the period: the previous credential still works.
    pg.try_login(&db, &u1, &p1).unwrap_or_else(|e| panic!("previous credential within the default grace: {e}"));

    let logs = format!("{}\n{}", logs_a.lock().unwrap().join("\n"), srv.log_text());
    let raw = store.raw_bytes();
    for p in [&p1, &p2] {
        assert!(!logs.contains(p.as_str()), "a role password is in the server log");
        assert!(!contains(&raw, p.as_bytes()), "a role password is in storage");
    }
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

#[tokio::test]
async fn crash_during_rotation_rolls_forward_postgres_store() {
    crash_safety(Backend::Postgres, "p4").await;
}

#[tokio::test]
async fn crash_during_rotation_rolls_forward_sqlite_store() {
    crash_safety(Backend::Sqlite, "s4").await;
}

// ---------------------------------------------------------------------------
// 4b. an unreachable database: 502, pending, retried by the scheduler
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unreachable_database_is_retried_until_it_works() {
    let v = vault(Backend::Sqlite).await;
    let rc = &v.rc;
    let pg = PgCluster::shared();
    let (db, blue, green) = make_roles(&pg, "u5");
    // The admin connection points at a closed port first.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin = |port: u16| {
        json!({"data": {
            "host": "127.0.0.1", "port": port.to_string(), "dbname": db, "sslmode": "disable",
            "username": "postgres", "password": "ADMIN-CANARY-5150", "allowed_roles": format!("{blue},{green}"),
        }})
    };
    let (s, b) = rc.post("secret/data/db/admin", admin(closed)).await;
    assert_eq!(s, 200, "{b}");
    let policy = json!({
        "period": "1h",
        "generator": {
            "type": "postgresql", "connection": "db/admin", "roles": [blue, green],
            "password": {"type": "password", "length": 20, "classes": ["lower", "digit"]},
        },
    });
    let (s, b) = rc.post("secret/rotation/db/app", policy).await;
    assert_eq!(s, 204, "{b}");

    // The first rotation fails: pending, an error, no version.
    let st =
        wait_status(rc, "db/app", Duration::from_secs(20), "a failure", |s| s["failures"].as_u64().unwrap_or(0) >= 1)
            .await;
    assert_eq!(st["pending"], true, "a failed rotation keeps its pending value: {st}");
    assert_ne!(st["last_error"], "", "{st}");
    assert_eq!(st["rotations"], 0, "{st}");
    assert!(!st.to_string().contains("ADMIN-CANARY-5150"), "the error shows no secret: {st}");
    let (s, b) = rc.get("secret/data/db/app").await;
    assert_eq!(s, 404, "no version before a successful rotation: {b}");
    // Rotate-now: 502 (or 400 if the scheduler happens to be retrying it right now).
    let (s, b) = rc.post("secret/rotate/db/app", json!({})).await;
    assert!(s == 502 || s == 400, "rotate-now against an unreachable database: {s} {b}");
    assert!(!b.to_string().contains("ADMIN-CANARY-5150"), "{b}");
    // Pending: the policy cannot be deleted.
    let (s, b) = rc.delete("secret/rotation/db/app").await;
    assert_eq!(s, 400, "DELETE while pending: {b}");

    // Fix the connection: the scheduler's retry (backoff 5 s, 10 s...) succeeds.
    let (s, b) = rc.post("secret/data/db/admin", admin(pg.port())).await;
    assert_eq!(s, 200, "{b}");
    let st = wait_status(rc, "db/app", Duration::from_secs(40), "a successful retry", |s| {
        s["pending"] == false && s["rotations"] == 1
    })
    .await;
    assert_eq!(st["last_error"], "", "empty after a success: {st}");
    let d = wait_version(rc, "db/app", 1, Duration::from_secs(5)).await;
    let (u, p) = (str_of(&d["data"], "username"), str_of(&d["data"], "password"));
    check_password(p, 20, &["lower", "digit"], "role password from the policy's password generator");
    assert_eq!(st["active_role"], u, "{st}");
    pg.try_login(&db, u, p).unwrap_or_else(|e| panic!("the retried rotation's credential must log in: {e}"));

    let raw = v.store.raw_bytes();
    let logs = v.srv.log_text();
    assert!(!contains(&raw, p.as_bytes()) && !contains(&raw, b"ADMIN-CANARY-5150"), "plaintext in storage");
    assert!(!logs.contains(p) && !logs.contains("ADMIN-CANARY-5150"), "secret in the log");
}

/// The vault uses an admin connection secret on the caller's behalf, so the
/// caller must be able to read it: a user who may manage the rotation of its
/// own secret cannot point it at another team's database admin secret (and
/// then read the password the vault set on that team's role).
#[tokio::test]
async fn rotation_needs_read_access_to_the_admin_connection() {
    let v = vault(Backend::Sqlite).await;
    let rc = &v.rc;
    let admin = json!({"data": {"host": "127.0.0.1", "port": 1, "username": "postgres", "password": "x",
        "allowed_roles": "teamb_app"}});
    let (s, b) = rc.post("secret/data/teamb/pgadmin", admin).await;
    assert_eq!(s, 200, "{b}");
    // `sudo`: a postgresql generator makes the vault connect to a database
    // server, which only a privileged caller may ask for (see below).
    let policy = r#"path "secret/rotation/mine" { capabilities = ["create", "update", "read", "sudo"] }
path "secret/data/mine" { capabilities = ["read"] }"#;
    let (s, b) = rc.put("sys/policies/acl/mine", json!({"policy": policy})).await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, t) = rc.post("auth/token/create", json!({"policies": ["mine"]})).await;
    assert_eq!(s, 200, "{t}");
    let user = v.srv.client().with_token(t["auth"]["client_token"].as_str().unwrap());
    let body = json!({"period": "1h", "generator": {"type": "postgresql", "connection": "teamb/pgadmin", "roles": ["teamb_app"]}});
    let (s, b) = user.post("secret/rotation/mine", body.clone()).await;
    assert_eq!(s, 403, "a rotation naming an admin secret the caller cannot read: {b}");
    let (s, _) = user.get("secret/rotation/mine").await;
    assert_eq!(s, 404, "no policy was stored");
    // With read access to the admin secret, the same request is accepted.
    let policy = format!("{policy}\npath \"secret/data/teamb/pgadmin\" {{ capabilities = [\"read\"] }}");
    let (s, b) = rc.put("sys/policies/acl/mine", json!({"policy": policy})).await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = user.post("secret/rotation/mine", body.clone()).await;
    assert_eq!(s, 204, "{b}");
    // The secret cannot be deleted from under a pending rotation either (the
    // database is unreachable here, so the first rotation stays pending).
    let _ = wait_status(rc, "mine", Duration::from_secs(15), "a failed first attempt", |s| s["failures"] != 0).await;
    let (s, b) = rc.delete("secret/metadata/mine").await;
    assert_eq!(s, 400, "DELETE metadata while a rotation is pending: {b}");
    let (s, b) = rc.post("secret/rotation/mine", json!({"period": "2h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 400, "changing the policy while a rotation is pending: {b}");
}

// ---------------------------------------------------------------------------
// 5. security review: stuck rotations, network probes, one role one policy,
//    sudo, bounds
// ---------------------------------------------------------------------------

/// At most two consecutive failures, then the policy is suspended.
const SUSPEND: &str =
    "[rotation]\ninterval = \"1s\"\nlease = \"6s\"\nmax_failures = 2\npostgres_allowed_hosts = [\"127.0.0.1\"]\n";

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The warnings of a reply, joined.
fn warnings(v: &Value) -> String {
    v["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

/// A failed PostgreSQL rotation used to stay pending for ever: retried by
/// the scheduler without end, and neither its policy nor its secret could be
/// deleted, even by root. Now it is suspended after `max_failures`
/// consecutive failures, and `DELETE rotation/{path}?force=true` discards it.
async fn stuck_rotation(backend: Backend) {
    let v = vault_with(backend, SUSPEND, &[]).await;
    let rc = &v.rc;
    let admin = json!({"data": {"host": "127.0.0.1", "port": closed_port(), "username": "postgres",
        "password": "ADMIN-CANARY-4711", "allowed_roles": "stuck_role", "sslmode": "disable"}});
    let (s, b) = rc.post("secret/data/db/admin", admin).await;
    assert_eq!(s, 200, "{b}");
    // A 2 s period caps the retry backoff at 2 s, so failures come quickly.
    let policy =
        json!({"period": "2s", "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["stuck_role"]}});
    let (s, b) = rc.post("secret/rotation/db/stuck", policy.clone()).await;
    assert_eq!(s, 204, "{b}");
    let st = wait_status(rc, "db/stuck", Duration::from_secs(30), "suspended", |s| s["suspended"] == true).await;
    assert_eq!(st["failures"], 2, "suspended after max_failures: {st}");
    assert_eq!(st["pending"], true, "{st}");
    assert_ne!(st["last_error"], "", "{st}");
    // No more automatic attempts: with a 2 s backoff, 5 s would see two more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = status(rc, "db/stuck").await;
    assert_eq!((st["failures"].as_u64(), st["suspended"].as_bool()), (Some(2), Some(true)), "{st}");
    assert!(v.srv.log_text().contains("suspended"), "the suspension is logged");

    // Plain deletes are still refused while pending, and say how to get out.
    let (s, b) = rc.delete("secret/rotation/db/stuck").await;
    assert_eq!(s, 400, "{b}");
    assert!(errors(&b).contains("force"), "the refusal names force=true: {b}");
    let (s, b) = rc.delete("secret/metadata/db/stuck").await;
    assert_eq!(s, 400, "{b}");
    // A manual rotation is allowed on a suspended policy; it fails again here.
    let (s, b) = rc.post("secret/rotate/db/stuck", json!({})).await;
    assert_eq!(s, 502, "{b}");
    let st = status(rc, "db/stuck").await;
    assert_eq!((st["failures"].as_u64(), st["suspended"].as_bool()), (Some(3), Some(true)), "{st}");

    // Force: the never-committed value is discarded, with a warning about the role.
    let (s, b) = rc.delete("secret/rotation/db/stuck?force=true").await;
    assert_eq!(s, 200, "forced delete of a pending rotation: {b}");
    let w = warnings(&b);
    assert!(w.contains("stuck_role") && w.contains("password"), "warning about the role's password: {b}");
    assert!(!b.to_string().contains("ADMIN-CANARY-4711"), "{b}");
    let (s, b) = rc.get("secret/rotation/db/stuck").await;
    assert_eq!(s, 404, "the policy is gone: {b}");
    let (s, b) = rc.delete("secret/metadata/db/stuck").await;
    assert_eq!(s, 204, "the secret can be deleted now: {b}");
    // A forced delete of a policy with nothing pending is a plain delete.
    let (s, b) = rc.post("secret/data/plain", json!({"data": {"password": "x"}})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rc.post("secret/rotation/plain", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = rc.delete("secret/rotation/plain?force=true").await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = rc.delete("secret/rotation/plain?force=maybe").await;
    assert_eq!(s, 400, "force must be a boolean: {b}");

    let logs = v.srv.log_text();
    assert!(!logs.contains("ADMIN-CANARY-4711"), "admin password in the log");
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

#[tokio::test]
async fn stuck_rotation_is_suspended_and_can_be_force_deleted_sqlite() {
    stuck_rotation(Backend::Sqlite).await;
}

#[tokio::test]
async fn stuck_rotation_is_suspended_and_can_be_force_deleted_postgres() {
    stuck_rotation(Backend::Postgres).await;
}

/// How a [`Listener`] treats a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Accept and close at once.
    Close,
    /// Answer like an HTTP server, then close.
    Garbage,
    /// Accept and say nothing (until the listener is dropped).
    Silent,
}

/// A TCP listener on 127.0.0.1 that is not PostgreSQL: it counts the
/// connections it gets, until dropped.
struct Listener {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(mode: Mode) -> Listener {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut sock, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        match mode {
                            Mode::Close => drop(sock),
                            Mode::Garbage => {
                                let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                            }
                            Mode::Silent => held.push(sock),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Listener { port, accepted, stop, thread: Some(thread) }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Only the hosts in `[rotation] postgres_allowed_hosts` can be connected
/// to, checked before any connection is attempted: when a policy is set and
/// again when a rotation runs (the connection secret may have changed).
#[tokio::test]
async fn postgres_hosts_outside_the_allowlist_are_refused_before_connecting() {
    let allowed = Listener::start(Mode::Close);
    let other = Listener::start(Mode::Close);
    let config = format!(
        "[rotation]\ninterval = \"1s\"\nlease = \"6s\"\npostgres_allowed_hosts = [\"127.0.0.1:{}\", \"db.internal\", \"10.0.0.0/8\"]\n",
        allowed.port
    );
    let v = vault_with(Backend::Sqlite, &config, &[]).await;
    let rc = &v.rc;
    let admin = |host: &str, port: u16| {
        json!({"data": {"host": host, "port": port, "username": "postgres", "password": "ADMIN-CANARY-31337",
            "allowed_roles": "app_role", "sslmode": "disable"}})
    };
    // The target has a version, so nothing is due: only rotate-now connects.
    let (s, b) = rc.post("secret/data/db/app", json!({"data": {"username": "x", "password": "y"}})).await;
    assert_eq!(s, 200, "{b}");
    let policy =
        json!({"period": "1h", "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["app_role"]}});
    // Another port of an allowed address, and other names of the loopback host.
    for (host, port) in [
        ("127.0.0.1", other.port),
        ("localhost", allowed.port),
        ("LOCALHOST", allowed.port),
        ("127.0.0.2", allowed.port),
        ("127.1", allowed.port),
        ("::1", allowed.port),
        ("::ffff:127.0.0.1", other.port),
        ("db.internal.evil", allowed.port),
    ] {
        let (s, b) = rc.post("secret/data/db/admin", admin(host, port)).await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = rc.post("secret/rotation/db/app", policy.clone()).await;
        assert_eq!(s, 400, "{host}:{port} is not allowed: {b}");
        assert!(errors(&b).contains("postgres_allowed_hosts"), "the refusal names the setting: {b}");
    }
    let (s, _) = rc.get("secret/rotation/db/app").await;
    assert_eq!(s, 404, "no policy was stored");
    // The allowed host and port: accepted (setting a policy never connects).
    let (s, b) = rc.post("secret/data/db/admin", admin("127.0.0.1", allowed.port)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rc.post("secret/rotation/db/app", policy.clone()).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(allowed.accepted(), 0, "setting a policy must not connect");
    // The connection secret now names another port: the rotation refuses before connecting.
    let (s, b) = rc.post("secret/data/db/admin", admin("127.0.0.1", other.port)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rc.post("secret/rotate/db/app", json!({})).await;
    assert_eq!(s, 400, "rotation to a host no longer allowed: {b}");
    assert!(errors(&b).contains("postgres_allowed_hosts"), "{b}");
    let st = status(rc, "db/app").await;
    assert!(str_of(&st, "last_error").contains("postgres_allowed_hosts"), "{st}");
    // Pointed back at the allowed port, a rotation does connect (and fails: not PostgreSQL).
    let (s, b) = rc.post("secret/data/db/admin", admin("127.0.0.1", allowed.port)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = rc.post("secret/rotate/db/app", json!({})).await;
    assert_eq!(s, 502, "{b}");
    assert!(allowed.accepted() >= 1, "the allowed listener was connected to");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(other.accepted(), 0, "a host outside the allowlist was connected to");
    let logs = v.srv.log_text();
    assert!(!logs.contains("ADMIN-CANARY-31337") && !logs.contains("panicked"), "{logs}");
}

/// The text of a failed connection is one fixed message, whatever the cause:
/// a closed port, an open port that is not PostgreSQL (closing, answering
/// garbage, or silent), a refused login, a missing database. The cause is in
/// the server log only.
#[tokio::test]
async fn connection_errors_do_not_tell_closed_from_open_ports() {
    const GENERIC: &str = "could not connect to the PostgreSQL server named by the connection";
    let v = vault(Backend::Sqlite).await;
    let rc = &v.rc;
    let pg = PgCluster::shared();
    let admin_role = "probe_admin_e1";
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {admin_role} LOGIN CREATEROLE PASSWORD 'right-pw' IN ROLE {ROTATED_GROUP}"),
    );
    let (close, garbage, silent) =
        (Listener::start(Mode::Close), Listener::start(Mode::Garbage), Listener::start(Mode::Silent));
    let cases = [
        ("closed port", closed_port(), "postgres", "postgres"),
        ("open port, closes", close.port, "postgres", "postgres"),
        ("open port, HTTP", garbage.port, "postgres", "postgres"),
        ("open port, silent", silent.port, "postgres", "postgres"),
        ("wrong admin password", pg.port(), admin_role, "postgres"),
        ("no such database", pg.port(), "postgres", "no_such_database_e1"),
    ];
    let mut seen = Vec::new();
    // One role per case: two of them name the same server (one policy per role).
    for (i, (what, port, user, dbname)) in cases.iter().enumerate() {
        let admin = json!({"data": {"host": "127.0.0.1", "port": port, "dbname": dbname, "username": user,
            "password": "ADMIN-CANARY-e1", "allowed_roles": "*", "sslmode": "disable"}});
        let (s, b) = rc.post(&format!("secret/data/p{i}/admin"), admin).await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = rc.post(&format!("secret/data/p{i}/app"), json!({"data": {"username": "x"}})).await;
        assert_eq!(s, 200, "{b}");
        let policy = json!({"period": "1h",
            "generator": {"type": "postgresql", "connection": format!("p{i}/admin"), "roles": [format!("probe_target_{i}")]}});
        let (s, b) = rc.post(&format!("secret/rotation/p{i}/app"), policy).await;
        assert_eq!(s, 204, "{what}: {b}");
        let (s, b) = rc.post(&format!("secret/rotate/p{i}/app"), json!({})).await;
        assert_eq!(s, 502, "{what}: {b}");
        let st = status(rc, &format!("p{i}/app")).await;
        seen.push((what, errors(&b), str_of(&st, "last_error").to_string()));
    }
    for (what, e, last) in &seen {
        assert_eq!(e, GENERIC, "{what}: the caller sees one fixed message: {seen:?}");
        assert_eq!(last, GENERIC, "{what}: so does the status: {seen:?}");
    }
    let logs = v.srv.log_text();
    assert!(logs.contains("could not connect to PostgreSQL"), "the details are logged:\n{logs}");
    assert!(!logs.contains("ADMIN-CANARY-e1"), "the admin password is in the log");
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

/// POST `body` to `path` until it answers 204 (at most 5 s). Another server
/// sees a change through its read cache, invalidated by the change feed a
/// moment later: until then a stale read can only refuse (the index rows are
/// written revision-guarded), never let two policies hold one role.
async fn post_until_accepted(rc: &Client, path: &str, body: Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, b) = rc.post(path, body.clone()).await;
        if s == 204 {
            return;
        }
        assert!(s == 400 && Instant::now() < deadline, "{path}: {s} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two rotation policies setting one PostgreSQL role's password would undo
/// each other. A role belongs to a whole cluster, so one host and port plus a
/// role name is one role, whatever the database; the check holds across
/// servers sharing the storage, and is lifted when the first policy is
/// changed, deleted, or its secret deleted.
#[tokio::test]
async fn one_role_one_policy_across_servers_postgres() {
    let v = vault(Backend::Postgres).await;
    let (_srv_b, rb) = second_server(&v, FAST, &[]).await;
    let ra = &v.rc;
    let port = closed_port();
    // Two connection secrets naming one server, with different databases and spellings.
    for (path, host, db, port) in
        [("c1", "127.0.0.1", "one", json!(port)), ("c2", "127.0.0.1", "two", json!(port.to_string()))]
    {
        let (s, b) = ra
            .post(
                &format!("secret/data/{path}"),
                json!({"data": {"host": host, "port": port, "dbname": db, "username": "postgres", "password": "pw", "allowed_roles": "*"}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // The targets have a version, so nothing is due and nothing connects.
    for p in ["a", "b"] {
        let (s, b) = ra.post(&format!("secret/data/{p}"), json!({"data": {"username": "u", "password": "p"}})).await;
        assert_eq!(s, 200, "{b}");
    }
    let pg_policy = |conn: &str, roles: &[&str]| json!({"period": "1h", "generator": {"type": "postgresql", "connection": conn, "roles": roles}});
    let (s, b) = ra.post("secret/rotation/a", pg_policy("c1", &["shared_role"])).await;
    assert_eq!(s, 204, "{b}");
    // Setting the same policy again is not a conflict with itself.
    let (s, b) = ra.post("secret/rotation/a", pg_policy("c1", &["shared_role"])).await;
    assert_eq!(s, 204, "{b}");
    // Server B: the same role through the other connection secret.
    let (s, b) = rb.post("secret/rotation/b", pg_policy("c2", &["other_role", "shared_role"])).await;
    assert_eq!(s, 400, "a second policy for shared_role: {b}");
    let e = errors(&b);
    assert!(e.contains("shared_role") && e.contains("\"a\""), "the conflict is named: {b}");
    let (s, _) = rb.get("secret/rotation/b").await;
    assert_eq!(s, 404, "nothing stored");
    let (s, b) = rb.post("secret/rotation/b", pg_policy("c2", &["other_role"])).await;
    assert_eq!(s, 204, "a different role is fine: {b}");
    let (s, b) = rb.post("secret/rotation/b", pg_policy("c2", &["other_role", "shared_role"])).await;
    assert_eq!(s, 400, "changing b to take shared_role: {b}");
    // Changing a's role frees shared_role.
    let (s, b) = ra.post("secret/rotation/a", pg_policy("c1", &["third_role"])).await;
    assert_eq!(s, 204, "{b}");
    // shared_role is free once a let go of it.
    post_until_accepted(&rb, "secret/rotation/b", pg_policy("c2", &["other_role", "shared_role"])).await;
    let (s, b) = ra.post("secret/rotation/a", pg_policy("c1", &["shared_role"])).await;
    assert_eq!(s, 400, "now a cannot take it back: {b}");
    assert!(errors(&b).contains("\"b\""), "{b}");
    // Deleting b's policy frees it.
    let (s, b) = rb.delete("secret/rotation/b").await;
    assert_eq!(s, 204, "{b}");
    post_until_accepted(ra, "secret/rotation/a", pg_policy("c1", &["shared_role"])).await;
    // Deleting a's secret (metadata) frees it too.
    let (s, b) = ra.delete("secret/metadata/a").await;
    assert_eq!(s, 204, "{b}");
    post_until_accepted(&rb, "secret/rotation/b", pg_policy("c2", &["shared_role"])).await;
}

/// A postgresql policy needs `sudo` on its rotation path: it makes the
/// vault connect to a database server and change a role there. Other
/// generators need only `create`/`update`.
#[tokio::test]
async fn postgresql_rotation_policies_need_sudo() {
    let v = vault(Backend::Sqlite).await;
    let rc = &v.rc;
    let admin = json!({"data": {"host": "127.0.0.1", "port": closed_port(), "username": "postgres", "password": "x",
        "allowed_roles": "app_role"}});
    let (s, b) = rc.post("secret/data/db/admin", admin).await;
    assert_eq!(s, 200, "{b}");
    let policy = r#"path "secret/rotation/+" { capabilities = ["create", "update", "read", "delete"] }
path "secret/data/*" { capabilities = ["read", "create", "update"] }"#;
    let (s, b) = rc.put("sys/policies/acl/nosudo", json!({"policy": policy})).await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, t) = rc.post("auth/token/create", json!({"policies": ["nosudo"]})).await;
    assert_eq!(s, 200, "{t}");
    let user = v.srv.client().with_token(t["auth"]["client_token"].as_str().unwrap());
    let (s, b) = user.post("secret/data/app", json!({"data": {"password": "x"}})).await;
    assert_eq!(s, 200, "{b}");
    let pg =
        json!({"period": "1h", "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["app_role"]}});
    let (s, b) = user.post("secret/rotation/app", pg.clone()).await;
    assert_eq!(s, 403, "postgresql generator without sudo: {b}");
    let (s, _) = rc.get("secret/rotation/app").await;
    assert_eq!(s, 404, "nothing stored");
    let (s, b) = user.post("secret/rotation/app", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "password generator without sudo: {b}");
    let (s, b) = user.delete("secret/rotation/app").await;
    assert_eq!(s, 204, "{b}");
    // The same caller with sudo on the path.
    let policy = format!(
        "{policy}\npath \"secret/rotation/app\" {{ capabilities = [\"create\", \"update\", \"read\", \"sudo\"] }}"
    );
    let (s, b) = rc.put("sys/policies/acl/nosudo", json!({"policy": policy})).await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = user.post("secret/rotation/app", pg).await;
    assert_eq!(s, 204, "with sudo: {b}");
}
