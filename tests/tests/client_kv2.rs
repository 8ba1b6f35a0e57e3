//! The client library's KV v2 module (`vault_client::kv2`) against the real
//! server: read/write, not-found handling, and following a secret's versions
//! with blocking reads (a write from another task, a rotation), and a
//! blocking read that ends with nothing newer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use vault_e2e::{Backend, ServerProc, Store};

/// A fresh server on SQLite, initialized, unsealed, `secret/` mounted as KV
/// v2; the harness client (root token) and a library client (root token).
async fn vault() -> (Store, ServerProc, vault_e2e::Client, vault_client::Client) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    let client = vault_client::Client::new(srv.url()).unwrap().with_token(&root);
    (store, srv, rc, client)
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// `f.next()`, failing the test if it takes longer than `limit`; also how long it took.
async fn next_within(f: &mut vault_client::Follow, limit: Duration) -> (vault_client::Secret, Duration) {
    let start = Instant::now();
    let s = tokio::time::timeout(limit, f.next()).await.expect("follow.next() timed out").unwrap();
    (s, start.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_sees_writes_and_rotations() {
    let (_store, _srv, rc, client) = vault().await;
    let kv = client.kv2("secret");

    assert!(kv.read("app").await.unwrap().is_none(), "nothing written yet");
    assert_eq!(kv.write("app", &fields(json!({"password": "v1-CANARY", "user": "app"}))).await.unwrap(), 1);

    // The first next(): the current version, at once.
    let mut f = kv.follow("app");
    let (s, took) = next_within(&mut f, Duration::from_secs(5)).await;
    assert_eq!((s.version, s.data["password"].as_str()), (1, Some("v1-CANARY")), "{s:?}");
    assert!(s.created_time.contains('T'), "{s:?}");
    assert!(took < Duration::from_secs(2), "the current version comes at once: {took:?}");
    assert!(!format!("{s:?} {f:?}").contains("CANARY"), "Debug shows no values");

    // A write from another task wakes the follower.
    let writer = client.clone();
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.kv2("secret").write("app", &fields(json!({"password": "v2-CANARY", "user": "app"}))).await
    });
    let (s, took) = next_within(&mut f, Duration::from_secs(10)).await;
    assert_eq!(write.await.unwrap().unwrap(), 2);
    assert_eq!((s.version, s.data["password"].as_str()), (2, Some("v2-CANARY")), "{s:?}");
    assert!(took >= Duration::from_millis(400), "next() blocked until the write: {took:?}");
    assert!(took < Duration::from_secs(3), "next() returned soon after the write: {took:?}");

    // A rotation (rotate now) wakes it too.
    let (st, b) = rc.post("secret/rotation/app", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(st, 204, "set rotation policy: {b}");
    let rotator = rc.clone();
    let rotate = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rotator.post("secret/rotate/app", json!({})).await
    });
    let (s, took) = next_within(&mut f, Duration::from_secs(10)).await;
    let (st, b) = rotate.await.unwrap();
    assert_eq!(st, 200, "rotate now: {b}");
    assert_eq!(b["data"]["version"], 3, "{b}");
    assert_eq!(s.version, 3, "{s:?}");
    let password = s.data["password"].as_str().unwrap();
    assert!(!password.is_empty() && password != "v2-CANARY", "the rotation made a new password");
    assert_eq!(s.data["user"], "app", "fields that do not rotate are carried over");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(f.last_version(), 3);

    // Nothing newer within a 1 s wait: None after about a second.
    let start = Instant::now();
    assert!(kv.wait_for_newer("app", 3, Duration::from_secs(1)).await.unwrap().is_none());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    // A secret that does not exist: None after the wait as well.
    let start = Instant::now();
    assert!(kv.wait_for_newer("nothing", 0, Duration::from_secs(1)).await.unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
    // A newer version already there: at once.
    let s = kv.wait_for_newer("app", 1, Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!(s.version, 3);

    // Older versions; a deleted latest version reads as None (404 with metadata).
    assert_eq!(kv.read_version("app", 1).await.unwrap().unwrap().data["password"], "v1-CANARY");
    assert!(kv.read_version("app", 9).await.unwrap().is_none());
    let (st, b) = rc.delete("secret/data/app").await;
    assert_eq!(st, 204, "delete latest: {b}");
    assert!(kv.read("app").await.unwrap().is_none(), "deleted latest version");
    assert!(kv.read_version("app", 3).await.unwrap().is_none(), "deleted version");
    assert_eq!(kv.read_version("app", 2).await.unwrap().unwrap().version, 2);

    // The follower skips the deleted version and returns the next write.
    let writer = client.clone();
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.kv2("secret").write("app", &fields(json!({"password": "v4-CANARY"}))).await
    });
    let (s, _) = next_within(&mut f, Duration::from_secs(10)).await;
    assert_eq!(write.await.unwrap().unwrap(), 4);
    assert_eq!(s.version, 4, "{s:?}");

    // Nothing mounted there: an error, not None.
    let e = client.kv2("nope").read("app").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}
