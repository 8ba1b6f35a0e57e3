//! Snapshot restore and verify in process (the router driven without a
//! socket; docs/backup.md): shares are checked before any body byte is
//! read or a gate taken, a slow verify never holds up a restore, and verify
//! refuses what restore refuses. Over a real socket: tests/tests/backup.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;
use vault_server::backup::format::{self, Encoder};
use vault_server::core::Core;
use vault_server::http::tls::PeerAddr;
use vault_server::storage::{SealConfig, Storage};

/// A share of no vault: well formed for a 3/2 seal (identifier 1, 33 bytes).
const FORGED: &str = "01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

async fn server() -> (tempfile::TempDir, Arc<Core>, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
    let core = Core::new(storage, vault_server::catalog::builtin()).await.unwrap();
    let app = vault_server::http::router(core.clone(), 1 << 20, Duration::from_secs(5), 64 << 20, 64);
    (dir, core, app)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(format!("/v1/{path}"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let mut r = r.body(body).unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    r.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
    r
}

/// (status, body bytes)
async fn call_raw(app: &axum::Router, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> (u16, Bytes) {
    let resp = app.clone().oneshot(request(method, path, headers, body)).await.unwrap();
    let status = resp.status().as_u16();
    (status, axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap())
}

async fn call(app: &axum::Router, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> (u16, Value) {
    let (s, b) = call_raw(app, method, path, headers, body).await;
    (s, if b.is_empty() { Value::Null } else { serde_json::from_slice(&b).unwrap() })
}

fn json_body(v: Value) -> Body {
    Body::from(serde_json::to_vec(&v).unwrap())
}

/// A body that sends one byte every 200 ms for ever (the red team's
/// slow upload; the stall timeout never fires).
fn trickle() -> Body {
    let s = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
    });
    Body::from_stream(s)
}

/// Init 3/2, unseal, take a snapshot: (shares, root token, snapshot).
async fn populated(app: &axum::Router) -> (Vec<String>, String, Vec<u8>) {
    let (s, v) = call(app, "PUT", "sys/init", &[], json_body(json!({"secret_shares": 3, "secret_threshold": 2}))).await;
    assert_eq!(s, 200, "{v}");
    let keys: Vec<String> = v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    let root = v["root_token"].as_str().unwrap().to_string();
    for k in &keys[..2] {
        assert_eq!(call(app, "PUT", "sys/unseal", &[], json_body(json!({"key": k}))).await.0, 200);
    }
    let (s, snap) = call_raw(app, "GET", "sys/storage/snapshot", &[("X-Vault-Token", &root)], Body::empty()).await;
    assert_eq!(s, 200);
    (keys, root, snap.to_vec())
}

async fn seal(app: &axum::Router, root: &str) {
    assert_eq!(call(app, "PUT", "sys/seal", &[("X-Vault-Token", root)], Body::empty()).await.0, 204);
}

fn first_error(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_string()
}

/// Send a trickling verify in the background and wait until it holds the
/// verify gate (a probe with the same headers and an empty body gets the 503).
async fn hold_verify_gate(app: &axum::Router, headers: &[(&str, &str)]) -> tokio::task::JoinHandle<u16> {
    let owned: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for _ in 0..20 {
        let (a, owned) = (app.clone(), owned.clone());
        let slow = tokio::spawn(async move {
            let mut h: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            h.push(("Content-Length", "268000000"));
            call(&a, "POST", "sys/storage/snapshot-verify", &h, trickle()).await.0
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.is_finished() {
            continue;
        }
        let (s, v) = call(app, "POST", "sys/storage/snapshot-verify", headers, Body::empty()).await;
        if s == 503 {
            assert!(first_error(&v).contains("another snapshot operation"), "{v}");
            return slow;
        }
        slow.abort();
    }
    panic!("the slow verify never took its gate");
}

/// F5: while sealed, wrong or missing shares are refused at once, before
/// the gate or any body byte (the body here never ends); a slow verify,
/// even with the right shares, does not hold up a restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_restore_and_verify_check_the_shares_first_and_a_slow_verify_blocks_no_restore() {
    let (_dir, core, app) = server().await;
    let (keys, root, snap) = populated(&app).await;
    seal(&app, &root).await;

    // Identifier 254: no real share's (1..=3), so it combines with them (wrongly).
    let other = "febbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    for path in ["sys/storage/snapshot-verify", "sys/storage/snapshot-restore"] {
        let cases: [(&[&str], &str); 5] = [
            (&[], "current unseal key shares"),
            (&["junk"], "invalid key"),
            (&[FORGED], "2 needed"),
            (&[FORGED, other], "do not reconstruct the unseal key"),
            (&[&keys[0], other], "do not reconstruct the unseal key"),
        ];
        for (shares, says) in cases {
            let joined = shares.join(",");
            let mut h = vec![("Content-Length", "268000000")];
            if !shares.is_empty() {
                h.push(("X-Vault-Unseal-Key", joined.as_str()));
            }
            let started = Instant::now();
            let call = call(&app, "POST", path, &h, trickle());
            let (s, v) = tokio::time::timeout(Duration::from_secs(10), call).await.expect("answered before the body");
            assert!(started.elapsed() < Duration::from_secs(2), "{path} {shares:?}: waited for the body");
            assert_eq!(s, 400, "{path} {shares:?}: {v}");
            assert!(first_error(&v).contains(says), "{path} {shares:?}: {v}");
            for k in shares.iter().filter(|k| k.len() > 8) {
                assert!(!v.to_string().contains(*k), "a share was echoed: {v}");
            }
        }
    }
    // Nothing was held by the refused callers: a good restore goes through
    // at once, while a slow verify with the right shares holds its own gate.
    let both = format!("{},{}", keys[0], keys[2]);
    let slow = hold_verify_gate(&app, &[("X-Vault-Unseal-Key", &both)]).await;
    let (s, v) =
        call(&app, "POST", "sys/storage/snapshot-restore", &[("X-Vault-Unseal-Key", &both)], snap.into()).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(true)), "{v}");
    assert!(!slow.is_finished(), "the slow verify is still uploading");
    slow.abort();
    // The restored vault opens with its shares.
    for k in &keys[1..] {
        assert_eq!(call(&app, "PUT", "sys/unseal", &[], json_body(json!({"key": k}))).await.0, 200);
    }
    assert!(core.active().is_ok());
}

/// Uninitialized: anyone may verify (with the snapshot's shares) and
/// restore; a slow verify holds the verify gate only, never the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_verify_on_an_uninitialized_server_blocks_no_restore() {
    let (_a_dir, _a, a_app) = server().await;
    let (keys, _root, snap) = populated(&a_app).await;
    let (_dir, core, app) = server().await;
    // Without shares there is nothing to open the snapshot with: said at once.
    let (s, v) = call(&app, "POST", "sys/storage/snapshot-verify", &[("Content-Length", "268000000")], trickle()).await;
    assert_eq!(s, 400, "{v}");
    assert!(first_error(&v).contains("unseal key shares"), "{v}");
    let slow = hold_verify_gate(&app, &[("X-Vault-Unseal-Key", FORGED)]).await;
    let (s, v) = call(&app, "POST", "sys/storage/snapshot-restore", &[], snap.into()).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(true)), "{v}");
    slow.abort();
    for k in &keys[..2] {
        assert_eq!(call(&app, "PUT", "sys/unseal", &[], json_body(json!({"key": k}))).await.0, 200);
    }
    assert!(core.active().is_ok());
}

/// `snap` with its header's seal configuration replaced (rows and manifest rewritten to match).
fn with_seal_config(snap: &[u8], config: Option<SealConfig>) -> Vec<u8> {
    let mut parsed = format::parse(snap).unwrap();
    parsed.header.seal_config = config;
    let mut e = Encoder::default();
    let mut out = e.header(&parsed.header);
    for r in &parsed.rows {
        out.extend(e.row(r));
    }
    out.extend(e.finish().0);
    out
}

/// F5.4: verify said `verified: true` for a header with `secret_threshold: 0`
/// that restore refuses; now both refuse it (and other seals nobody could
/// open), with the server's keys and with shares, sealed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_a_snapshot_restore_would_refuse() {
    let (_dir, _core, app) = server().await;
    let (keys, root, snap) = populated(&app).await;
    let both = format!("{},{}", keys[0], keys[1]);
    let tok = [("X-Vault-Token", root.as_str())];
    let tok_shares = [("X-Vault-Token", root.as_str()), ("X-Vault-Unseal-Key", both.as_str())];
    let (s, v) = call(&app, "POST", "sys/storage/snapshot-verify", &tok, snap.clone().into()).await;
    assert_eq!((s, v["verified"].as_bool()), (200, Some(true)), "the untouched snapshot verifies: {v}");
    let bad = [
        (Some(SealConfig { secret_shares: 3, secret_threshold: 0 }), "threshold must be at least one"),
        (Some(SealConfig { secret_shares: 2, secret_threshold: 3 }), "threshold cannot be larger"),
        (None, "uninitialized vault"),
    ];
    for (config, says) in bad {
        let file = with_seal_config(&snap, config);
        for headers in [&tok[..], &tok_shares[..]] {
            let (s, v) = call(&app, "POST", "sys/storage/snapshot-verify", headers, file.clone().into()).await;
            assert_eq!(s, 400, "verify {config:?}: {v}");
            assert!(first_error(&v).contains(says), "verify {config:?}: {v}");
        }
        let (s, v) = call(&app, "POST", "sys/storage/snapshot-restore", &tok, file.clone().into()).await;
        assert_eq!(s, 400, "restore {config:?}: {v}");
        assert!(first_error(&v).contains(says), "restore {config:?}: {v}");
    }
    // Sealed, with the current shares: the same refusal.
    seal(&app, &root).await;
    let file = with_seal_config(&snap, Some(SealConfig { secret_shares: 3, secret_threshold: 0 }));
    let (s, v) = call(&app, "POST", "sys/storage/snapshot-verify", &[("X-Vault-Unseal-Key", &both)], file.into()).await;
    assert_eq!(s, 400, "{v}");
    assert!(first_error(&v).contains("threshold must be at least one"), "{v}");
    // And a good snapshot verifies while sealed with the current shares.
    let (s, v) = call(&app, "POST", "sys/storage/snapshot-verify", &[("X-Vault-Unseal-Key", &both)], snap.into()).await;
    assert_eq!((s, v["verified"].as_bool(), v["keys"].as_str()), (200, Some(true), Some("shares")), "{v}");
}
