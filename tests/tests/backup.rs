//! Backup and restore end to end, through the real binaries (docs/backup.md):
//! backup -> a new empty store -> restore -> unseal -> every KV v2 secret
//! (with its versions), transit key (old ciphertext decrypts), token and
//! policy back, on SQLite and PostgreSQL and across them; corrupted snapshots
//! refused with nothing changed; who may restore and read a snapshot; the
//! verify drill; scheduled backups with retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sha2::Digest as _;
use vault_e2e::{Backend, Client, RawHttp, ServerProc, Store};

/// What a populated vault holds, to find again after a restore.
struct Fixture {
    keys: Vec<String>,
    root: String,
    ciphertext: String,
    reader_token: String,
}

const PLAIN_B64: &str = "YmFja3VwIGNhbmFyeQ=="; // "backup canary"

async fn populate(srv: &ServerProc) -> Fixture {
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    c.unseal(&keys[..2]).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await.0, 204);
    assert_eq!(rc.post("sys/mounts/transit", json!({"type": "transit"})).await.0, 204);
    for v in ["one", "two"] {
        let (s, b) = rc.post("secret/data/app", json!({"data": {"password": v}})).await;
        assert_eq!(s, 200, "{b}");
    }
    assert!(rc.post("transit/keys/k", json!({})).await.0 < 300);
    let (s, v) = rc.post("transit/encrypt/k", json!({"plaintext": PLAIN_B64})).await;
    assert_eq!(s, 200, "{v}");
    let ciphertext = v["data"]["ciphertext"].as_str().unwrap().to_string();
    let policy = r#"path "secret/data/*" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/reader", json!({"policy": policy})).await.0, 204);
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["reader"]})).await;
    assert_eq!(s, 200, "{v}");
    let reader_token = v["auth"]["client_token"].as_str().unwrap().to_string();
    Fixture { keys, root, ciphertext, reader_token }
}

/// Everything of [`populate`] is there.
async fn check(c: &Client, fx: &Fixture) {
    let rc = c.with_token(&fx.root);
    for (version, want) in [(1, "one"), (2, "two")] {
        let (s, v) = rc.get(&format!("secret/data/app?version={version}")).await;
        assert_eq!((s, v["data"]["data"]["password"].as_str()), (200, Some(want)), "{v}");
    }
    let (s, v) = rc.post("transit/decrypt/k", json!({"ciphertext": fx.ciphertext})).await;
    assert_eq!((s, v["data"]["plaintext"].as_str()), (200, Some(PLAIN_B64)), "{v}");
    let (s, v) = rc.get("sys/policies/acl/reader").await;
    assert_eq!(s, 200, "{v}");
    let reader = c.with_token(&fx.reader_token);
    let (s, v) = reader.get("auth/token/lookup-self").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["policies"].as_array().unwrap().iter().any(|p| p == "reader"), "{v}");
    assert_eq!(reader.get("secret/data/app").await.0, 200, "the token's policy works");
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `vaultctl ARGS` against `addr` with `token`.
fn vaultctl(addr: &str, token: Option<&str>, args: &[&str]) -> Out {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(vault_e2e::vaultctl_bin());
    cmd.args(args)
        .env("VAULT_ADDR", addr)
        .env("HOME", home.path())
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_FORMAT")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("VAULT_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Backup with vaultctl, verify (server keys and shares), restore into a
/// fresh store on `to`, unseal with the backup's shares, find everything.
async fn round_trip(from: Backend, to: Backend) {
    let a_store = Store::new(from);
    let a = ServerProc::start(&a_store, &[]);
    let fx = populate(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vault.snap");
    let f = file.to_str().unwrap();

    let out = vaultctl(&a.url(), Some(&fx.root), &["operator", "backup", f, "-format=json"]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(v["sha256"].as_str(), Some(sha256_hex(&bytes).as_str()), "the printed SHA-256 is the file's");
    assert_eq!(mode(&file), 0o600);
    assert!(!vault_e2e::contains(&bytes, b"backup canary"), "no plaintext in the snapshot");
    assert!(!vault_e2e::contains(&bytes, fx.root.as_bytes()), "no token in the snapshot");

    // The drill with the running server's keys, and with the shares.
    let out = vaultctl(&a.url(), Some(&fx.root), &["operator", "backup", "verify", f, "-format=json"]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (r["verified"].as_bool(), r["failed"].as_u64(), r["keys"].as_str()),
        (Some(true), Some(0), Some("server"))
    );
    assert_eq!(r["mounts"]["secret/"]["type"], "kv", "{r}");
    assert!(r["mounts"]["secret/"]["entries"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["mounts"]["transit/"]["type"], "transit", "{r}");
    assert_eq!(r["entries"], r["opened"]);
    assert_eq!(r["sha256"].as_str(), Some(sha256_hex(&bytes).as_str()), "verify names the file's SHA-256 too");
    let out = vaultctl(
        &a.url(),
        Some(&fx.root),
        &["operator", "backup", "verify", f, "-unseal-key", &fx.keys[2], "-unseal-key", &fx.keys[0], "-format=json"],
    );
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let r2: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (r2["verified"].as_bool(), r2["keys"].as_str(), r2["root_key_checked"].as_bool()),
        (Some(true), Some("shares"), Some(true))
    );
    assert_eq!(r2["mounts"], r["mounts"]);

    // Offline, without a server: `vault-server backup-verify` with a shares file.
    let shares = dir.path().join("shares.txt");
    std::fs::write(&shares, format!("{}\n{}\n", fx.keys[0], fx.keys[1])).unwrap();
    let out = Command::new(vault_e2e::server_bin())
        .args(["backup-verify", f, "--unseal-key-file", shares.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r3: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r3["verified"].as_bool(), &r3["mounts"]), (Some(true), &r["mounts"]));
    std::fs::write(&shares, &fx.keys[0]).unwrap();
    let out = Command::new(vault_e2e::server_bin())
        .args(["backup-verify", f, "--unseal-key-file", shares.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "one share of two must not open it");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&fx.keys[0]), "the share is not echoed");

    // A new, empty store: restore into the uninitialized server (no token).
    let b_store = Store::new(to);
    let b = ServerProc::start(&b_store, &[]);
    let out = vaultctl(&b.url(), None, &["operator", "restore", f]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("sealed"), "{}", out.stdout);
    let c = b.client();
    let (_, st) = c.get("sys/seal-status").await;
    assert_eq!(
        (st["initialized"].as_bool(), st["sealed"].as_bool(), st["t"].as_u64(), st["n"].as_u64()),
        (Some(true), Some(true), Some(2), Some(3)),
        "{st}"
    );
    // Unsealed by the backup's shares: its keyring is what opens it.
    let v = c.unseal(&fx.keys[1..]).await;
    assert_eq!(v["sealed"], false, "{v}");
    check(&c, &fx).await;
    // Writes go on after the restore (revisions continue).
    let (s, v) = c.with_token(&fx.root).post("secret/data/app", json!({"data": {"password": "three"}})).await;
    assert_eq!((s, v["data"]["version"].as_u64()), (200, Some(3)), "{v}");
    // The restored store holds no plaintext either.
    drop(b);
    assert!(!vault_e2e::contains(&b_store.raw_bytes(), b"backup canary"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_sqlite() {
    round_trip(Backend::Sqlite, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_postgres() {
    round_trip(Backend::Postgres, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_postgres() {
    round_trip(Backend::Sqlite, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_sqlite() {
    round_trip(Backend::Postgres, Backend::Sqlite).await;
}

/// GET the snapshot with `token`.
async fn snapshot(srv: &ServerProc, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut rb = reqwest::Client::new().get(format!("{}/v1/sys/storage/snapshot", srv.url()));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// POST `body` to a snapshot endpoint with a token and shares.
async fn post(srv: &ServerProc, path: &str, token: Option<&str>, keys: &[&str], body: Vec<u8>) -> (u16, Value) {
    let mut rb = reqwest::Client::new().post(format!("{}/v1/{path}", srv.url())).body(body);
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    for k in keys {
        rb = rb.header("X-Vault-Unseal-Key", *k);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn first_error(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_string()
}

/// The snapshot's rows (format of docs/formats.md), to damage one and
/// write the file again with a matching manifest.
struct Parsed {
    header: Vec<u8>,
    rows: Vec<(String, Vec<u8>, i64)>,
    manifest: Value,
}

fn parse(b: &[u8]) -> Parsed {
    let n = u32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
    let header = b[..12 + n].to_vec();
    let mut at = 12 + n;
    let mut rows = Vec::new();
    let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    while b[at] == b'R' {
        let pl = u32_at(at + 1);
        let path = String::from_utf8(b[at + 5..at + 5 + pl].to_vec()).unwrap();
        let vl = u32_at(at + 5 + pl);
        let v0 = at + 9 + pl;
        let value = b[v0..v0 + vl].to_vec();
        let rev = i64::from_be_bytes(b[v0 + vl..v0 + vl + 8].try_into().unwrap());
        rows.push((path, value, rev));
        at = v0 + vl + 8;
    }
    assert_eq!(b[at], b'M');
    let ml = u32_at(at + 1);
    let manifest = serde_json::from_slice(&b[at + 5..at + 5 + ml]).unwrap();
    Parsed { header, rows, manifest }
}

/// Write rows back with a manifest whose digest and counts match them.
fn encode(p: &Parsed) -> Vec<u8> {
    let mut out = p.header.clone();
    for (path, value, rev) in &p.rows {
        out.push(b'R');
        out.extend((path.len() as u32).to_be_bytes());
        out.extend(path.as_bytes());
        out.extend((value.len() as u32).to_be_bytes());
        out.extend(value);
        out.extend(rev.to_be_bytes());
    }
    let mut m = p.manifest.clone();
    m["sha256"] = json!(sha256_hex(&out));
    let json = serde_json::to_vec(&m).unwrap();
    out.push(b'M');
    out.extend((json.len() as u32).to_be_bytes());
    out.extend(json);
    out
}

/// Who may take and restore snapshots; damaged snapshots are refused with
/// a clear 400 before anything changes; the drill fails on an entry that
/// does not open.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_damage() {
    let store = Store::new(Backend::Sqlite);
    let a = ServerProc::start(&store, &[]);
    let fx = populate(&a).await;
    let c = a.client();

    // Reading a snapshot needs sudo: no token, a token without it.
    assert_eq!(snapshot(&a, None).await.0, 403);
    assert_eq!(snapshot(&a, Some(&fx.reader_token)).await.0, 403);
    let (s, good) = snapshot(&a, Some(&fx.root)).await;
    assert_eq!(s, 200);
    assert_eq!(&good[..8], b"VLTSNAP1");
    // Restoring over an unsealed vault too (checked before the body is read).
    let (s, _) = post(&a, "sys/storage/snapshot-restore", Some(&fx.reader_token), &[], good.clone()).await;
    assert_eq!(s, 403);
    let (s, _) = post(&a, "sys/storage/snapshot-restore", None, &[], good.clone()).await;
    assert_eq!(s, 403);

    // Damaged files: a flipped byte, a truncation, an edited manifest, garbage.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let truncated = good[..good.len() - 40].to_vec();
    let mut edited = parse(&good);
    let n = edited.manifest["entries"].as_u64().unwrap();
    edited.manifest["entries"] = json!(n + 1);
    // `encode` makes the digest match; the count is what is wrong.
    let edited = encode(&edited);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped", flipped, "snapshot"),
        ("truncated", truncated, "truncated"),
        ("edited", edited, "rows, the manifest says"),
        ("garbage", b"not a snapshot at all".to_vec(), "not a storage snapshot"),
    ];
    for (what, bytes, says) in &cases {
        let (s, v) = post(&a, "sys/storage/snapshot-restore", Some(&fx.root), &[], bytes.clone()).await;
        assert_eq!(s, 400, "{what}: {v}");
        assert!(first_error(&v).contains(says), "{what}: {v}");
        let (s, v) = post(&a, "sys/storage/snapshot-verify", Some(&fx.root), &[], bytes.clone()).await;
        assert_eq!(s, 400, "{what} (verify): {v}");
    }
    // Nothing changed: still unsealed, everything there.
    check(&c, &fx).await;

    // Sealed: restoring needs a threshold of the CURRENT shares.
    assert_eq!(c.with_token(&fx.root).put("sys/seal", json!({})).await.0, 204);
    let (s, v) = post(&a, "sys/storage/snapshot-restore", None, &[], good.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert!(first_error(&v).contains("unseal key shares"), "{v}");
    let (s, v) = post(&a, "sys/storage/snapshot-restore", Some(&fx.root), &[&fx.keys[0]], good.clone()).await;
    assert_eq!(s, 400, "one share of two: {v}");
    // Shares of another vault.
    let other_store = Store::new(Backend::Sqlite);
    let other = ServerProc::start(&other_store, &[]);
    let (other_keys, other_root) = other.client().init(3, 2).await;
    let (s, v) = post(&a, "sys/storage/snapshot-restore", None, &[&other_keys[0], &other_keys[1]], good.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert!(first_error(&v).contains("unseal key"), "{v}");
    // The real shares: restored (the same snapshot), sealed, unsealed, intact.
    let (s, v) = post(&a, "sys/storage/snapshot-restore", None, &[&fx.keys[0], &fx.keys[2]], good.clone()).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(true)), "{v}");
    c.unseal(&fx.keys[..2]).await;
    check(&c, &fx).await;

    // Restoring over an unsealed vault with a sudo token seals it.
    let (s, v) = post(&a, "sys/storage/snapshot", Some(&fx.root), &[], good.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.get("sys/seal-status").await.1["sealed"], true);
    c.unseal(&fx.keys[..2]).await;

    // An entry that does not open (its ciphertext changed, the manifest
    // made to match): integrity passes, the drill fails and names it.
    let mut p = parse(&good);
    let row = p.rows.iter_mut().find(|(path, _, _)| path.starts_with("logical/")).unwrap();
    let last = row.1.len() - 1;
    row.1[last] ^= 0x01;
    let broken_path = row.0.clone();
    let broken = encode(&p);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.snap");
    std::fs::write(&file, &broken).unwrap();
    let out =
        vaultctl(&a.url(), Some(&fx.root), &["operator", "backup", "verify", file.to_str().unwrap(), "-format=json"]);
    assert_eq!(out.code, 2, "{} {}", out.stdout, out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((r["verified"].as_bool(), r["failed"].as_u64()), (Some(false), Some(1)), "{r}");
    assert_eq!(r["failures"][0].as_str(), Some(broken_path.as_str()));
    let failed: u64 = r["mounts"].as_object().unwrap().values().map(|m| m["failed"].as_u64().unwrap()).sum();
    assert_eq!(failed, 1, "{r}");
    // Shares of another vault do not open this snapshot.
    let (s, v) =
        post(&a, "sys/storage/snapshot-verify", Some(&fx.root), &[&other_keys[0], &other_keys[1]], good.clone()).await;
    assert_eq!(s, 400, "{v}");
    // The verify of a snapshot of another vault with this server's keys fails clearly.
    let oc = other.client();
    oc.unseal(&other_keys[..2]).await;
    let (s, other_snap) = snapshot(&other, Some(&other_root)).await;
    assert_eq!(s, 200);
    let (s, v) = post(&a, "sys/storage/snapshot-verify", Some(&fx.root), &[], other_snap).await;
    assert_eq!(s, 400, "{v}");
    assert!(first_error(&v).contains("another vault"), "{v}");
    // The answers and the log never carry a share or a token.
    let logs = a.log_text();
    for secret in fx.keys.iter().chain([&fx.root]) {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
    }
}

/// A request to a snapshot endpoint over a raw connection: the head (shares
/// in `X-Vault-Unseal-Key`, `declared` as the `Content-Length`) and `first`
/// body bytes; the rest is up to the caller.
async fn raw_upload(srv: &ServerProc, path: &str, shares: &[&str], declared: usize, first: &[u8]) -> RawHttp {
    let mut head = RawHttp::head("POST", &format!("/v1/{path}"), None, declared);
    if !shares.is_empty() {
        let h = format!("X-Vault-Unseal-Key: {}\r\nContent-Type", shares.join(","));
        head = head.replacen("Content-Type", &h, 1);
    }
    let mut conn = RawHttp::connect(srv.addr).await;
    conn.send(head.as_bytes()).await;
    conn.send(first).await;
    conn
}

/// Red team F5: a sealed server's snapshot gate held by anyone (a junk
/// share, 268 MB declared, a byte every few seconds) made a disaster
/// recovery restore with the real shares a 503. Shares are now checked
/// before the gate and the body (a clear 400, not echoed), and a slow
/// verify, even an authorized one, holds the verify gate only.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_cannot_hold_up_a_restore() {
    let store = Store::new(Backend::Sqlite);
    let a = ServerProc::start(&store, &[]);
    let fx = populate(&a).await;
    let c = a.client();
    let (s, good) = snapshot(&a, Some(&fx.root)).await;
    assert_eq!(s, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vault.snap");
    std::fs::write(&file, &good).unwrap();
    assert_eq!(c.with_token(&fx.root).put("sys/seal", json!({})).await.0, 204);

    // Well formed, but no share of this vault (identifiers 1 and 254).
    let forged = format!("01{}", "aa".repeat(32));
    let forged2 = format!("fe{}", "bb".repeat(32));
    for path in ["sys/storage/snapshot-verify", "sys/storage/snapshot-restore"] {
        for shares in [vec!["junk"], vec![], vec![forged.as_str()], vec![forged.as_str(), forged2.as_str()]] {
            let conn = raw_upload(&a, path, &shares, 268_000_000, b"V").await;
            let started = std::time::Instant::now();
            let (s, v) = conn.response().await;
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{path} {shares:?}: waited for the body");
            assert_eq!(s, 400, "{path} {shares:?}: {v}");
            for k in &shares {
                assert!(!v.to_string().contains(k), "a share was echoed: {v}");
            }
        }
    }

    // An operator's verify with the real shares over a slow link: it holds
    // the verify gate (a second verify is a 503) but not the restore's.
    let both = [fx.keys[0].as_str(), fx.keys[2].as_str()];
    let mut slow = raw_upload(&a, "sys/storage/snapshot-verify", &both, good.len(), &good[..8]).await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (s, v) = post(&a, "sys/storage/snapshot-verify", None, &both, Vec::new()).await;
        if s == 503 {
            break;
        }
        assert_eq!(s, 400, "{v}");
        assert!(std::time::Instant::now() < until, "the slow verify never took its gate");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let keys_file = dir.path().join("shares.txt");
    std::fs::write(&keys_file, format!("{}\n{}\n", fx.keys[1], fx.keys[2])).unwrap();
    let out = vaultctl(
        &a.url(),
        None,
        &["operator", "restore", file.to_str().unwrap(), "-unseal-key-file", keys_file.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    // The slow verify finishes (it is of the same vault: its shares still open it).
    slow.send(&good[8..]).await;
    let (s, v) = slow.response().await;
    assert_eq!((s, v["verified"].as_bool()), (200, Some(true)), "{v}");
    c.unseal(&fx.keys[..2]).await;
    check(&c, &fx).await;
    let logs = a.log_text();
    for secret in fx.keys.iter().chain([&forged, &forged2]) {
        assert!(!logs.contains(secret.as_str()), "a share reached the log");
    }
}

/// `[backup]`: files appear every interval, whole and 0600, each verified;
/// retention keeps one per day (all are of today here).
#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let toml =
        format!("[backup]\ndir = \"{}\"\ninterval = \"2s\"\nkeep_daily = 3\nkeep_monthly = 2\n", backups.display());
    let srv = ServerProc::start_with_config(&store, &toml, &[]);
    let fx = populate(&srv).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = srv.log_text().matches("scheduled backup written and verified").count();
        if n >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled backups: {}", srv.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!srv.log_text().contains("scheduled backup failed"), "{}", srv.log_text());
    assert!(srv.log_text().contains("old backup pruned by retention"), "{}", srv.log_text());
    let files: Vec<_> = std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().path()).collect();
    let snaps: Vec<_> =
        files.iter().filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("vault-backup-")).collect();
    // All of today: the newest alone is kept (another may be being written).
    assert!((1..=2).contains(&snaps.len()), "{files:?}");
    assert_eq!(mode(&backups), 0o700);
    for s in &snaps {
        assert_eq!(mode(s), 0o600);
        let out = vaultctl(&srv.url(), Some(&fx.root), &["operator", "backup", "verify", s.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    }
}

/// Several servers on one PostgreSQL: a restore is refused while another
/// is connected (its queued writes would land encrypted under the old
/// keys); nothing changes; once it is stopped the restore goes through.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restore_refused_while_other_servers_run() {
    let store = Store::new(Backend::Postgres);
    let a = ServerProc::start(&store, &[]);
    let fx = populate(&a).await;
    let b = ServerProc::start(&store, &[]);
    b.client().unseal(&fx.keys[..2]).await;
    let (s, good) = snapshot(&a, Some(&fx.root)).await;
    assert_eq!(s, 200);
    let (s, v) = post(&a, "sys/storage/snapshot-restore", Some(&fx.root), &[], good.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert!(first_error(&v).contains("other servers"), "{v}");
    // Nothing changed: both still serve everything (A was sealed by the attempt).
    check(&b.client(), &fx).await;
    a.client().unseal(&fx.keys[..2]).await;
    check(&a.client(), &fx).await;
    b.terminate();
    let (s, v) = post(&a, "sys/storage/snapshot-restore", Some(&fx.root), &[], good).await;
    assert_eq!(s, 200, "{v}");
    a.client().unseal(&fx.keys[..2]).await;
    check(&a.client(), &fx).await;
}
