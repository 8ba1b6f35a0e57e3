//! The seal lifecycle end to end, through the real binary and HTTP API, on
//! SQLite and on PostgreSQL: init -> unseal (any order) -> restart -> sealed
//! -> unseal -> data intact; wrong share; reset; rotate; rekey;
//! generate-root; seal; health codes; no plaintext at rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use vault_e2e::{Backend, ServerProc, Store, contains};

const MARKER: &str = "PLAINTEXT-CANARY-7f3a9c";

fn pick(keys: &[String], idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| keys[i].clone()).collect()
}

async fn lifecycle(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();

    // Uninitialized: health 501, seal-status says so, data paths 503.
    assert_eq!(c.get("sys/health").await.0, 501);
    let (s, st) = c.get("sys/seal-status").await;
    assert_eq!(s, 200);
    assert_eq!(st["initialized"], false);
    assert_eq!(st["sealed"], true);
    assert_eq!(c.get("sys/init").await.1["initialized"], false);
    assert_eq!(c.get("sys/mounts").await.0, 503);

    // Init 5/3: shares are 33 bytes (66 hex chars), root token hvs.*.
    let (keys, root) = c.init(5, 3).await;
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|k| k.len() == 66));
    assert!(root.starts_with("hvs."));
    let (s, v) = c.put("sys/init", json!({"secret_shares": 5, "secret_threshold": 3})).await;
    assert_eq!((s, v["errors"][0].as_str()), (400, Some("Vault is already initialized")));
    assert_eq!(c.get("sys/health").await.0, 503);
    assert_eq!(c.get("sys/health?sealedcode=299").await.0, 299);
    let rc = c.with_token(&root);
    let (s, v) = rc.get("sys/mounts").await;
    assert_eq!((s, v["errors"][0].as_str()), (503, Some("Vault is sealed")));

    // Unseal with shares out of order; progress and nonce reported.
    let (_, v) = c.put("sys/unseal", json!({"key": keys[4]})).await;
    assert_eq!(
        (v["sealed"].as_bool(), v["progress"].as_u64(), v["t"].as_u64(), v["n"].as_u64()),
        (Some(true), Some(1), Some(3), Some(5))
    );
    let nonce = v["nonce"].as_str().unwrap().to_string();
    assert!(!nonce.is_empty());
    // The same share again is ignored, not counted.
    let (s, v) = c.put("sys/unseal", json!({"key": keys[4]})).await;
    assert_eq!((s, v["progress"].as_u64()), (200, Some(1)));
    let (_, st) = c.get("sys/seal-status").await;
    assert_eq!(st["nonce"], nonce.as_str());
    let v = c.unseal(&pick(&keys, &[1, 3])).await;
    assert_eq!(v["sealed"], false, "{v}");
    assert_eq!(v["progress"], 0);
    assert!(v["cluster_name"].as_str().unwrap().starts_with("vault-cluster-"));
    assert_eq!(c.get("sys/health").await.0, 200);

    // Write data through a mount.
    let (s, v) = rc
        .post("sys/mounts/app", json!({"type": "kv", "description": null, "config": null, "options": {"version": "1"}}))
        .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rc.put("app/db", json!({"password": MARKER})).await.0, 204);
    assert_eq!(rc.get("app/db").await.1["data"]["password"], MARKER);

    // Restart: sealed again, data intact after unsealing with another subset.
    assert!(srv.terminate().success(), "SIGTERM must exit 0");
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let rc = c.with_token(&root);
    let (_, st) = c.get("sys/seal-status").await;
    assert_eq!((st["initialized"].as_bool(), st["sealed"].as_bool()), (Some(true), Some(true)));
    assert_eq!(rc.get("app/db").await.0, 503);

    // A wrong share (well-formed, an identifier not yet given, a corrupted
    // value): only the combination can tell, so the attempt fails at the
    // threshold with a 400 and resets.
    let mut bad = keys[1].clone().into_bytes();
    bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).unwrap();
    c.put("sys/unseal", json!({"key": keys[0]})).await;
    c.put("sys/unseal", json!({"key": keys[2]})).await;
    let (s, v) = c.put("sys/unseal", json!({"key": bad})).await;
    assert_eq!(s, 400, "{v}");
    let (_, st) = c.get("sys/seal-status").await;
    assert_eq!((st["sealed"].as_bool(), st["progress"].as_u64()), (Some(true), Some(0)));

    // Reset discards progress.
    c.put("sys/unseal", json!({"key": keys[0]})).await;
    let (s, v) = c.put("sys/unseal", json!({"reset": true})).await;
    assert_eq!((s, v["progress"].as_u64()), (200, Some(0)));
    // Malformed shares: clear 400s, no progress.
    for k in ["", "zz", "abcd", &"ab".repeat(40)] {
        let (s, v) = c.put("sys/unseal", json!({"key": k})).await;
        assert_eq!(s, 400, "key {k:?}: {v}");
        assert!(v["errors"][0].is_string());
    }
    assert_eq!(c.get("sys/seal-status").await.1["progress"], 0);

    let v = c.unseal(&pick(&keys, &[2, 0, 3])).await;
    assert_eq!(v["sealed"], false);
    assert_eq!(rc.get("app/db").await.1["data"]["password"], MARKER);

    // Rotate: new term, old data still readable, new data under the new term.
    let (_, ks) = rc.get("sys/key-status").await;
    assert_eq!(ks["data"]["term"], 1);
    assert_eq!(rc.put("sys/rotate", json!({})).await.0, 204);
    let (_, ks) = rc.get("sys/key-status").await;
    assert_eq!(ks["data"]["term"], 2);
    assert_eq!(ks["term"], 2, "key-status is also injected at the top level");
    assert_eq!(rc.get("app/db").await.1["data"]["password"], MARKER);
    assert_eq!(rc.put("app/new", json!({"v": "after-rotate"})).await.0, 204);
    assert_eq!(rc.get("app/new").await.1["data"]["v"], "after-rotate");

    // Rekey 5/3 -> 3/2 with old shares; old shares stop working, new ones unseal.
    // Ceremonies need a token with sudo (here the root token); without one, 403.
    assert_eq!(c.put("sys/rekey/init", json!({"secret_shares": 3, "secret_threshold": 2})).await.0, 403);
    let (s, v) = rc.put("sys/rekey/init", json!({"secret_shares": 3, "secret_threshold": 2})).await;
    assert_eq!(s, 200, "{v}");
    let rnonce = v["nonce"].as_str().unwrap().to_string();
    assert_eq!(
        (v["started"].as_bool(), v["t"].as_u64(), v["n"].as_u64(), v["required"].as_u64()),
        (Some(true), Some(2), Some(3), Some(3))
    );
    let (s, _) = rc.put("sys/rekey/update", json!({"key": keys[0], "nonce": "wrong"})).await;
    assert_eq!(s, 400);
    let (_, v) = rc.put("sys/rekey/update", json!({"key": keys[0], "nonce": rnonce})).await;
    assert_eq!(v["progress"], 1);
    assert!(v.get("complete").is_none());
    let (s, _) = rc.put("sys/rekey/update", json!({"key": keys[0], "nonce": rnonce})).await;
    assert_eq!(s, 400, "a duplicate share is an error during rekey");
    rc.put("sys/rekey/update", json!({"key": keys[1], "nonce": rnonce})).await;
    let (s, v) = rc.put("sys/rekey/update", json!({"key": keys[4], "nonce": rnonce})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["complete"], true);
    let new_keys: Vec<String> = v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    assert_eq!(new_keys.len(), 3);
    assert_eq!(v["keys_base64"].as_array().unwrap().len(), 3);
    assert_eq!(rc.get("sys/key-status").await.1["data"]["term"], 2, "rekey does not rotate");

    // Seal (needs the root token), then only the new shares unseal.
    assert_eq!(c.put("sys/seal", json!({})).await.0, 403);
    assert_eq!(rc.put("sys/seal", json!({})).await.0, 204);
    assert_eq!(c.get("sys/health").await.0, 503);
    let (_, st) = c.get("sys/seal-status").await;
    assert_eq!((st["t"].as_u64(), st["n"].as_u64()), (Some(2), Some(3)));
    c.put("sys/unseal", json!({"key": keys[0]})).await;
    let (s, _) = c.put("sys/unseal", json!({"key": keys[1]})).await;
    assert_eq!(s, 400, "old shares must no longer unseal");
    let v = c.unseal(&pick(&new_keys, &[2, 0])).await;
    assert_eq!(v["sealed"], false);
    assert_eq!(rc.get("app/db").await.1["data"]["password"], MARKER);

    // Generate a new root token with a quorum; decode it with the OTP.
    assert_eq!(c.put("sys/generate-root/attempt", json!({})).await.0, 403);
    let (s, v) = rc.put("sys/generate-root/attempt", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let otp = v["otp"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), v["otp_length"].as_u64().unwrap() as usize);
    let gnonce = v["nonce"].as_str().unwrap().to_string();
    let (_, v) = rc.put("sys/generate-root/update", json!({"key": new_keys[1], "nonce": gnonce})).await;
    assert_eq!((v["progress"].as_u64(), v["complete"].as_bool()), (Some(1), Some(false)));
    let (s, v) = rc.put("sys/generate-root/update", json!({"key": new_keys[2], "nonce": gnonce})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["complete"], true);
    let new_root = vault_api::decode_root_token(v["encoded_token"].as_str().unwrap(), &otp).unwrap();
    assert!(new_root.starts_with("hvs.") && new_root != root);
    let (s, _) = c.with_token(&new_root).get("sys/mounts").await;
    assert_eq!(s, 200);
    assert_eq!(rc.get("sys/generate-root/attempt").await.1["started"], false);

    // Mount removal deletes the engine's data.
    assert_eq!(rc.delete("sys/mounts/app").await.0, 204);
    assert_eq!(rc.get("app/db").await.0, 404);

    // Restart once more: everything above persisted.
    assert!(srv.terminate().success());
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    c.unseal(&pick(&new_keys, &[0, 1])).await;
    assert_eq!(c.with_token(&new_root).get("sys/key-status").await.1["data"]["term"], 2);
    assert!(srv.terminate().success());

    // At rest: no plaintext value, no token, no share.
    let raw = store.raw_bytes();
    assert!(!contains(&raw, MARKER.as_bytes()), "plaintext found in storage");
    assert!(!contains(&raw, b"after-rotate"));
    assert!(!contains(&raw, root.as_bytes()), "root token found in storage");
    assert!(!contains(&raw, new_root.as_bytes()));
    for k in keys.iter().chain(&new_keys) {
        assert!(!contains(&raw, k.as_bytes()));
        assert!(!contains(&raw, &hex::decode(k).unwrap()));
    }
}

#[tokio::test]
async fn lifecycle_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn lifecycle_postgres() {
    lifecycle(Backend::Postgres).await;
}

/// One share: the share is the unseal key itself (Vault's behaviour).
#[tokio::test]
async fn single_share() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, _) = c.init(1, 1).await;
    assert_eq!(keys[0].len(), 64);
    assert_eq!(c.unseal(&keys).await["sealed"], false);
}

/// Concurrent init on two servers over one PostgreSQL database: exactly one wins.
#[tokio::test]
async fn concurrent_init_one_winner() {
    let store = Store::new(Backend::Postgres);
    let a = ServerProc::start(&store, &[]);
    let b = ServerProc::start(&store, &[]);
    let body = json!({"secret_shares": 1, "secret_threshold": 1});
    let (ca, cb) = (a.client(), b.client());
    let (ra, rb) = tokio::join!(ca.put("sys/init", body.clone()), cb.put("sys/init", body));
    let mut codes = [ra.0, rb.0];
    codes.sort();
    assert_eq!(codes, [200, 400], "{ra:?} {rb:?}");
}

/// Several servers on one PostgreSQL database: each is unsealed with the
/// shares; a mount, a rotation or a rekey made on one is seen by the others.
#[tokio::test]
async fn servers_sharing_postgres_see_each_others_changes() {
    let store = Store::new(Backend::Postgres);
    let a = ServerProc::start(&store, &[]);
    let b = ServerProc::start(&store, &[]);
    let (ca, cb) = (a.client(), b.client());
    let (keys, root) = ca.init(3, 2).await;
    assert_eq!(cb.get("sys/seal-status").await.1["initialized"], true);
    ca.unseal(&keys[..2]).await;
    // Each server must be unsealed on its own.
    assert_eq!(cb.get("sys/health").await.0, 503);
    cb.unseal(&keys[1..]).await;
    let (ra, rb) = (ca.with_token(&root), cb.with_token(&root));

    // A mount made on A is routable on B (after the change notification).
    assert_eq!(ra.post("sys/mounts/shared", json!({"type": "kv"})).await.0, 204);
    assert_eq!(ra.put("shared/x", json!({"v": "from-a"})).await.0, 204);
    let mut seen = false;
    for _ in 0..50 {
        if rb.get("shared/x").await.1["data"]["v"] == "from-a" {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "B never routed the mount A created");

    // A rotation on A: B writes with the new term once notified and reads A's new values.
    assert_eq!(ra.put("sys/rotate", json!({})).await.0, 204);
    assert_eq!(ra.put("shared/y", json!({"v": "term2"})).await.0, 204);
    assert_eq!(rb.get("shared/y").await.1["data"]["v"], "term2");
    let mut term = 0;
    for _ in 0..50 {
        term = rb.get("sys/key-status").await.1["data"]["term"].as_u64().unwrap();
        if term == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(term, 2, "B did not pick up A's keyring rotation");

    // An unmount on A disappears from B.
    assert_eq!(ra.delete("sys/mounts/shared").await.0, 204);
    let mut gone = false;
    for _ in 0..50 {
        if rb.get("shared/x").await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "B still routes a mount A removed");

    // A rekey on A changes B's reported seal configuration.
    let (_, v) = ra.put("sys/rekey/init", json!({"secret_shares": 2, "secret_threshold": 2})).await;
    let nonce = v["nonce"].as_str().unwrap().to_string();
    ra.put("sys/rekey/update", json!({"key": keys[0], "nonce": nonce})).await;
    let (s, v) = ra.put("sys/rekey/update", json!({"key": keys[2], "nonce": nonce})).await;
    assert_eq!((s, v["complete"].as_bool()), (200, Some(true)), "{v}");
    let mut n = 0;
    for _ in 0..50 {
        n = cb.get("sys/seal-status").await.1["n"].as_u64().unwrap();
        if n == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(n, 2, "B did not see the rekey");
}
