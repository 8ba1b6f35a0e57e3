//! Transit in process (the router driven without a socket):
//! - scheduled work with the engine clock moved forward: `auto_rotate_period`
//!   rotates once per period however many ticks run (and however many run at
//!   once), old ciphertexts keep decrypting, a key without a period never
//!   rotates by itself;
//! - long batches, which are split across two threads: results stay in
//!   order, bad items fail alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;
use vault_server::core::Core;
use vault_server::http::tls::PeerAddr;
use vault_server::storage::Storage;

const ROOT: &str = "root-token";

async fn dev() -> (tempfile::TempDir, Arc<Core>, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
    let core = Core::new(storage, vault_server::catalog::builtin()).await.unwrap();
    core.dev_init(Some(ROOT)).await.unwrap();
    let app = vault_server::http::router(core.clone(), 1 << 20, Duration::from_secs(5), 64 << 20, 64);
    (dir, core, app)
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Value) -> (u16, Value) {
    call_as(app, ROOT, method, path, body).await
}

async fn latest(app: &axum::Router, key: &str) -> u64 {
    let (s, v) = call(app, "GET", &format!("transit/keys/{key}"), Value::Null).await;
    assert_eq!(s, 200, "{v}");
    v["data"]["latest_version"].as_u64().unwrap()
}

#[tokio::test]
async fn auto_rotate_period_rotates_once_per_period() {
    let (_dir, core, app) = dev().await;
    let (s, v) = call(&app, "POST", "transit/keys/timed", json!({"auto_rotate_period": "1h"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["auto_rotate_period"], 3600);
    call(&app, "POST", "transit/keys/still", json!({})).await;
    let (_, v) = call(&app, "POST", "transit/encrypt/timed", json!({"plaintext": "b2xk"})).await;
    let old = v["data"]["ciphertext"].as_str().unwrap().to_string();

    // Not due yet: nothing happens.
    core.run_periodic().await;
    assert_eq!(latest(&app, "timed").await, 1);

    // Due: of several ticks, two of them at once, exactly one rotates.
    core.clock().advance(3601);
    tokio::join!(core.run_periodic(), core.run_periodic());
    core.run_periodic().await;
    assert_eq!(latest(&app, "timed").await, 2);
    assert_eq!(latest(&app, "still").await, 1, "a key without a period never rotates by itself");

    // The next period counts from the new version.
    core.clock().advance(1800);
    core.run_periodic().await;
    assert_eq!(latest(&app, "timed").await, 2);
    core.clock().advance(1801);
    core.run_periodic().await;
    assert_eq!(latest(&app, "timed").await, 3);

    // New encryptions use the latest version; the old ciphertext still opens.
    let (_, v) = call(&app, "POST", "transit/encrypt/timed", json!({"plaintext": "bmV3"})).await;
    assert!(v["data"]["ciphertext"].as_str().unwrap().starts_with("vault:v3:"), "{v}");
    let (s, v) = call(&app, "POST", "transit/decrypt/timed", json!({"ciphertext": old})).await;
    assert_eq!((s, v["data"]["plaintext"].as_str()), (200, Some("b2xk")));

    // Turning the period off stops it.
    let (s, v) = call(&app, "POST", "transit/keys/timed/config", json!({"auto_rotate_period": 0})).await;
    assert_eq!(s, 200, "{v}");
    core.clock().advance(10 * 3600);
    core.run_periodic().await;
    assert_eq!(latest(&app, "timed").await, 3);
}

#[tokio::test]
async fn periods_under_an_hour_are_refused() {
    let (_dir, _core, app) = dev().await;
    for p in [json!("10s"), json!(59), json!("59m")] {
        let (s, v) = call(&app, "POST", "transit/keys/k", json!({"auto_rotate_period": p})).await;
        assert_eq!(s, 400, "{p}: {v}");
        assert!(v["errors"][0].as_str().unwrap().contains("hour"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_batches_keep_their_order_and_fail_per_item() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/b", json!({})).await;
    let n = 1001;
    let items: Vec<Value> = (0..n)
        .map(|i| {
            if i % 97 == 0 {
                json!({"plaintext": "not base64!", "reference": format!("r{i}")})
            } else {
                json!({"plaintext": b64(&format!("field {i}")), "reference": format!("r{i}")})
            }
        })
        .collect();
    let (s, v) = call(&app, "POST", "transit/encrypt/b", json!({"batch_input": items})).await;
    assert_eq!(s, 400, "a failed item makes the batch 400 (Vault's rule)");
    let results = v["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    let mut cts = Vec::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["reference"], format!("r{i}"), "results stay in order");
        if i % 97 == 0 {
            assert!(r["error"].as_str().unwrap().contains("base64"), "{r}");
        } else {
            cts.push((i, json!({"ciphertext": r["ciphertext"], "reference": format!("r{i}")})));
        }
    }
    let (s, v) =
        call(&app, "POST", "transit/decrypt/b", json!({"batch_input": cts.iter().map(|(_, c)| c).collect::<Vec<_>>()}))
            .await;
    assert_eq!(s, 200, "{v}");
    for ((i, _), r) in cts.iter().zip(v["data"]["batch_results"].as_array().unwrap()) {
        assert_eq!(r["reference"], format!("r{i}"));
        assert_eq!(r["plaintext"], b64(&format!("field {i}")));
    }
}

#[tokio::test]
async fn document_fields_round_trip_every_json_type_and_stay_bound_to_their_field() {
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/docs", json!({})).await;
    let doc = json!({
        "id": 7,
        "name": "Ada",
        "card": {"number": "4111 1111 1111 1111", "cvv": 123},
        "tags": ["a", {"b": null}],
        "score": -1.5e300,
        "active": true,
        "nothing": null,
        "a/b": "slash",
        "t~": "tilde"
    });
    let fields = json!(["/name", "/card", "/tags/1", "/score", "/active", "/nothing", "/a~1b", "/t~0", "/id"]);
    let (s, v) = call(
        &app,
        "POST",
        "transit/encrypt-fields/docs",
        json!({"document": doc, "fields": fields, "associated_data": "dGVuYW50LTE="}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let enc = v["data"]["document"].clone();
    for f in fields.as_array().unwrap() {
        let c = enc.pointer(f.as_str().unwrap()).unwrap();
        assert!(c.as_str().unwrap().starts_with("vault:v1:"), "{f}: {c}");
    }
    assert_eq!(enc["tags"][0], "a", "fields not named stay as they were");
    assert!(!enc.to_string().contains("4111"), "no plaintext left: {enc}");

    let (s, v) = call(
        &app,
        "POST",
        "transit/decrypt-fields/docs",
        json!({"document": enc, "fields": fields, "associated_data": "dGVuYW50LTE="}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["document"], doc, "every JSON value comes back exactly");

    // A ciphertext moved to another field does not open there.
    let mut swapped = enc.clone();
    swapped["name"] = enc["card"].clone();
    swapped["card"] = enc["name"].clone();
    let (s, v) = call(
        &app,
        "POST",
        "transit/decrypt-fields/docs",
        json!({"document": swapped, "fields": ["/name"], "associated_data": "dGVuYW50LTE="}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // Nor under other associated data.
    let (s, _) = call(&app, "POST", "transit/decrypt-fields/docs", json!({"document": enc, "fields": ["/name"]})).await;
    assert_eq!(s, 400);

    // A missing field fails its own item only.
    let (s, v) = call(
        &app,
        "POST",
        "transit/encrypt-fields/docs",
        json!({"batch_input": [
            {"document": {"a": 1}, "fields": ["/a"], "reference": "ok"},
            {"document": {"a": 1}, "fields": ["/missing"], "reference": "bad"}
        ]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let r = v["data"]["batch_results"].as_array().unwrap();
    assert!(r[0]["document"]["a"].as_str().unwrap().starts_with("vault:v1:"), "{v}");
    assert!(r[1]["error"].as_str().unwrap().contains("/missing"), "{v}");
    assert_eq!((r[0]["reference"].as_str(), r[1]["reference"].as_str()), (Some("ok"), Some("bad")));
}

#[tokio::test]
async fn blind_indexes_are_stable_across_rotations_and_match_index_fields() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/people", json!({})).await;
    let ix = |input: &str, field: &str, extra: Value| {
        let mut body = json!({"input": b64(input), "field": field});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let app = app.clone();
        async move {
            let (s, v) = call(&app, "POST", "transit/blind-index/people", body).await;
            assert_eq!(s, 200, "{v}");
            v["data"]["index"].as_str().unwrap().to_string()
        }
    };
    let before = ix("ada@example.com", "/email", json!({})).await;
    assert_eq!(before.len(), 64);
    call(&app, "POST", "transit/keys/people/rotate", Value::Null).await;
    assert_eq!(ix("ada@example.com", "/email", json!({})).await, before, "stable across rotations");
    assert_ne!(ix("ada@example.com", "/name", json!({})).await, before, "fields are separated");
    assert_eq!(
        ix(" ADA@example.com ", "/email", json!({"normalize": ["lowercase", "trim"]})).await,
        before,
        "normalized before hashing"
    );
    assert_eq!(ix("ada@example.com", "/email", json!({"bits": 16})).await, before[..4], "truncated to a prefix");

    // encrypt-fields returns the same index for the field's value.
    let (s, v) = call(
        &app,
        "POST",
        "transit/encrypt-fields/people",
        json!({"document": {"email": "ada@example.com"}, "fields": ["/email"], "index_fields": ["/email"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["indexes"]["/email"], before);
    assert!(v["data"]["document"]["email"].as_str().unwrap().starts_with("vault:v2:"));

    // Another key: unrelated indexes.
    call(&app, "POST", "transit/keys/other", json!({})).await;
    let (_, v) =
        call(&app, "POST", "transit/blind-index/other", json!({"input": b64("ada@example.com"), "field": "/email"}))
            .await;
    assert_ne!(v["data"]["index"], before);

    for bad in [
        json!({"input": b64("x")}),
        json!({"input": b64("x"), "field": "f", "bits": 0}),
        json!({"input": "!", "field": "f"}),
    ] {
        let (s, v) = call(&app, "POST", "transit/blind-index/people", bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
}

async fn call_as(app: &axum::Router, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let mut r = Request::builder()
        .method(method)
        .uri(format!("/v1/{path}"))
        .header("X-Vault-Token", token)
        .body(if body.is_null() { Body::empty() } else { Body::from(body.to_string()) })
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    r.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
    let resp = app.clone().oneshot(r).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
}

/// A backup record with its settings changed (the record is "TK2", a u32
/// settings length, the settings JSON, then the key bytes).
fn forge(backup: &str, edit: impl Fn(&mut Value)) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64.decode(backup).unwrap();
    let len = u32::from_be_bytes(raw[3..7].try_into().unwrap()) as usize;
    let mut settings: Value = serde_json::from_slice(&raw[7..7 + len]).unwrap();
    edit(&mut settings);
    let json = serde_json::to_vec(&settings).unwrap();
    let mut out = raw[..3].to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&raw[7 + len..]);
    b64.encode(out)
}

/// Red team: a token allowed only `update` on `transit/restore` replaced a
/// key it had no right to by naming it inside a forged backup. A nameless
/// restore now also needs `restore/{name}`. And a forged backup cannot
/// smuggle in settings a create or config refuses.
#[tokio::test]
async fn a_nameless_restore_needs_the_right_to_the_key_it_names() {
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/victim", json!({})).await;
    call(&app, "POST", "transit/keys/mine", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let (s, v) = call(
        &app,
        "PUT",
        "sys/policies/acl/restorer",
        json!({"policy": "path \"transit/restore\" { capabilities = [\"update\"] }\npath \"transit/restore/mine*\" { capabilities = [\"update\"] }"}),
    )
    .await;
    assert!(s == 204 || s == 200, "{v}");
    let (_, v) = call(&app, "POST", "auth/token/create", json!({"policies": ["restorer"]})).await;
    let token = v["auth"]["client_token"].as_str().unwrap().to_string();
    let (_, v) = call(&app, "GET", "transit/backup/mine", Value::Null).await;
    let backup = v["data"]["backup"].as_str().unwrap().to_string();

    let forged = forge(&backup, |s| s["name"] = json!("victim"));
    let (s, v) = call_as(&app, &token, "POST", "transit/restore", json!({"backup": forged, "force": true})).await;
    assert_eq!(s, 403, "{v}");
    let (_, v) = call(&app, "GET", "transit/keys/victim", Value::Null).await;
    assert_eq!(v["data"]["exportable"], false, "the victim's key is untouched");
    // Naming a key the token may restore works.
    let copy = forge(&backup, |s| s["name"] = json!("mine-copy"));
    let (s, v) = call_as(&app, &token, "POST", "transit/restore", json!({"backup": copy})).await;
    assert_eq!(s, 204, "{v}");

    // Settings outside what create/config allow are refused.
    for period in [json!(1), json!(u64::MAX / 2)] {
        let bad = forge(&backup, |s| s["auto_rotate_period"] = period.clone());
        let (s, v) = call(&app, "POST", "transit/restore/forged", json!({"backup": bad})).await;
        assert_eq!(s, 400, "{period}: {v}");
    }
}

/// Red team: `partial_failure_response_code: 204` sent a 204 with the batch
/// results as a body (RFC 9110 forbids one); only 2xx and 4xx statuses that
/// carry a body are taken.
#[tokio::test]
async fn partial_failure_codes_must_carry_a_body() {
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/p", json!({})).await;
    let batch = |code: u64| json!({"partial_failure_response_code": code, "batch_input": [{"plaintext": "eA=="}, {"plaintext": "!!"}]});
    for (code, want) in [(204, 400), (205, 400), (304, 400), (500, 400), (503, 400), (299, 299), (207, 207), (422, 422)]
    {
        let (s, v) = call(&app, "POST", "transit/encrypt/p", batch(code)).await;
        assert_eq!(s, want, "{code}: {v}");
        assert_eq!(v["data"]["batch_results"].as_array().unwrap().len(), 2);
    }
}

/// Every file of the SQLite database (the main file, its WAL and shm).
fn database_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("v.db"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The stored (barrier-sealed) bytes of the one subject row under `key`.
async fn subject_row(core: &Core, key: &str) -> (String, Vec<u8>) {
    let storage = core.storage();
    let paths = storage.scan("logical/").await.unwrap();
    let mut rows = paths.into_iter().filter(|p| p.contains(&format!("/subject/{key}/")));
    let path = rows.next().expect("a subject row");
    assert!(rows.next().is_none(), "one subject row");
    let entry = storage.get(&path).await.unwrap().expect("stored");
    (path, entry.value.as_bytes().to_vec())
}

#[tokio::test]
async fn a_destroyed_subject_key_leaves_no_copy_in_the_sqlite_files() {
    let (dir, core, app) = dev().await;
    call(&app, "POST", "transit/keys/pii", json!({})).await;
    let (s, v) =
        call(&app, "POST", "transit/encrypt/pii", json!({"plaintext": "c2VjcmV0", "subject": "alice@example.com"}))
            .await;
    assert_eq!(s, 200, "{v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_string();
    assert!(!ct.contains("alice"), "the subject is not in the ciphertext: {ct}");
    let (path, sealed) = subject_row(&core, "pii").await;
    assert!(!path.contains("alice"), "the subject is not in the storage path: {path}");
    // Windows of the sealed row: any one found in a file is a copy.
    let windows: Vec<&[u8]> = sealed.chunks(24).filter(|c| c.len() == 24).collect();
    assert!(windows.len() >= 3, "a sealed subject row is longer than 72 bytes");
    let found = |files: &[(String, Vec<u8>)]| {
        files.iter().any(|(_, bytes)| windows.iter().any(|w| bytes.windows(w.len()).any(|b| b == *w)))
    };
    assert!(found(&database_bytes(dir.path())), "the check can see the row while it is live");

    let (s, v) = call(&app, "DELETE", "transit/subjects/pii/alice@example.com", Value::Null).await;
    assert_eq!(s, 204, "{v}");
    let files = database_bytes(dir.path());
    for (name, bytes) in &files {
        assert!(
            !windows.iter().any(|w| bytes.windows(w.len()).any(|b| b == *w)),
            "{name} still holds part of the destroyed subject's row"
        );
    }
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": ct})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("destroyed"), "{v}");
    let (s, v) = call(&app, "GET", "transit/subjects/pii/alice@example.com", Value::Null).await;
    assert_eq!((s, &v["data"]["destroyed"]), (200, &json!(true)), "{v}");
    assert!(!v.to_string().contains("alice"), "a tombstone keeps no name: {v}");

    // A key deleted with a live subject: the subject's row is deleted (not
    // overwritten), and no copy stays in free pages either.
    call(&app, "POST", "transit/keys/other", json!({})).await;
    call(&app, "POST", "transit/keys/other/config", json!({"deletion_allowed": true})).await;
    call(&app, "POST", "transit/encrypt/other", json!({"plaintext": "c2VjcmV0", "subject": "bob"})).await;
    let (_, sealed) = subject_row(&core, "other").await;
    let windows: Vec<&[u8]> = sealed.chunks(24).filter(|c| c.len() == 24).collect();
    let (s, _) = call(&app, "DELETE", "transit/keys/other", Value::Null).await;
    assert_eq!(s, 204);
    for (name, bytes) in &database_bytes(dir.path()) {
        assert!(
            !windows.iter().any(|w| bytes.windows(w.len()).any(|b| b == *w)),
            "{name} still holds part of a deleted key's subject row"
        );
    }
}

#[tokio::test]
async fn subject_ciphertexts_are_bound_to_their_subject_generation_and_key_versions() {
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/pii", json!({})).await;
    let enc = |subject: &'static str| {
        let app = app.clone();
        async move {
            let (s, v) =
                call(&app, "POST", "transit/encrypt/pii", json!({"plaintext": "aGk=", "subject": subject})).await;
            assert_eq!(s, 200, "{v}");
            v["data"]["ciphertext"].as_str().unwrap().to_string()
        }
    };
    let a = enc("a").await;
    let b = enc("b").await;
    assert!(a.starts_with("vault:v1:s1."), "{a}");
    // The same subject has the same id; another subject another one.
    let id = |c: &str| c.split(':').nth(2).unwrap().to_string();
    assert_eq!(id(&a), id(&enc("a").await));
    assert_ne!(id(&a), id(&b));

    // A subject tag swapped onto another subject's body fails.
    let parts: Vec<&str> = a.splitn(4, ':').collect();
    let swapped = format!("vault:v1:{}:{}", id(&b), parts[3]);
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": swapped})).await;
    assert_eq!(s, 400, "{v}");
    // Stripping the tag leaves a ciphertext the named key alone cannot open.
    let stripped = format!("vault:v1:{}", parts[3]);
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": stripped})).await;
    assert_eq!(s, 400, "{v}");
    // Naming the wrong subject is refused; the right one, or none, opens it.
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": a, "subject": "b"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("different subject"), "{v}");
    for body in [json!({"ciphertext": a, "subject": "a"}), json!({"ciphertext": a})] {
        let (s, v) = call(&app, "POST", "transit/decrypt/pii", body).await;
        assert_eq!((s, v["data"]["plaintext"].as_str()), (200, Some("aGk=")), "{v}");
    }

    // Rotation: rewrap keeps the subject and moves to v2; min_decryption_version applies.
    call(&app, "POST", "transit/keys/pii/rotate", Value::Null).await;
    let (s, v) = call(&app, "POST", "transit/rewrap/pii", json!({"ciphertext": a})).await;
    assert_eq!(s, 200, "{v}");
    let a2 = v["data"]["ciphertext"].as_str().unwrap().to_string();
    let (_, v) = call(&app, "POST", "transit/rewrap/pii", json!({"ciphertext": b})).await;
    let b = v["data"]["ciphertext"].as_str().unwrap().to_string();
    assert!(a2.starts_with(&format!("vault:v2:{}:", id(&a))), "{a2}");
    let (s, _) = call(&app, "POST", "transit/keys/pii/config", json!({"min_decryption_version": 2})).await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": a})).await;
    assert_eq!(s, 400, "v1 is below min_decryption_version");
    let (s, _) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": a2})).await;
    assert_eq!(s, 200);

    // Rewrap naming a subject moves a plain ciphertext under it.
    let (_, v) = call(&app, "POST", "transit/encrypt/pii", json!({"plaintext": "cGxhaW4="})).await;
    let plain = v["data"]["ciphertext"].as_str().unwrap().to_string();
    let (s, v) = call(&app, "POST", "transit/rewrap/pii", json!({"ciphertext": plain, "subject": "c"})).await;
    assert_eq!(s, 200, "{v}");
    let moved = v["data"]["ciphertext"].as_str().unwrap().to_string();
    call(&app, "DELETE", "transit/subjects/pii/c", Value::Null).await;
    let (s, _) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": moved})).await;
    assert_eq!(s, 400, "a moved ciphertext is shredded with its subject");

    // Destroy, then use the subject again: a new generation that opens
    // none of the old ciphertexts.
    let (s, _) = call(&app, "DELETE", "transit/subjects/pii/a", Value::Null).await;
    assert_eq!(s, 204);
    let (s, _) = call(&app, "DELETE", "transit/subjects/pii/a", Value::Null).await;
    assert_eq!(s, 204, "destroying twice is fine");
    let a3 = enc("a").await;
    assert!(a3.starts_with(&format!("vault:v2:s2.{}", &id(&a)[3..])), "{a3}");
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": a2})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("destroyed"), "{v}");
    let (s, _) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": a3})).await;
    assert_eq!(s, 200);
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": b})).await;
    assert_eq!((s, v["data"]["plaintext"].as_str()), (200, Some("aGk=")), "other subjects are intact: {v}");

    // LIST shows live subjects by name.
    let (s, v) = call(&app, "LIST", "transit/subjects/pii", Value::Null).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["keys"], json!(["a", "b"]), "{v}");
}

#[tokio::test]
async fn subject_batches_fail_per_item_and_bad_subjects_are_400() {
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/pii", json!({})).await;
    call(&app, "POST", "transit/keys/sig", json!({"type": "ed25519"})).await;
    let (s, v) = call(
        &app,
        "POST",
        "transit/encrypt/pii",
        json!({"subject": "default", "batch_input": [
            {"plaintext": "MQ=="},
            {"plaintext": "Mg==", "subject": "other"},
            {"plaintext": "Mw==", "subject": "a/b"},
            {"plaintext": "NA==", "subject": 5},
        ]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let r = &v["data"]["batch_results"];
    assert!(r[0]["ciphertext"].is_string() && r[1]["ciphertext"].is_string(), "{v}");
    assert!(r[2]["error"].is_string() && r[3]["error"].is_string(), "{v}");
    // The default subject applied to the first item.
    let (_, d) =
        call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": r[0]["ciphertext"], "subject": "default"}))
            .await;
    assert_eq!(d["data"]["plaintext"], "MQ==", "{d}");

    for body in [
        json!({"plaintext": "MQ==", "subject": ""}),
        json!({"plaintext": "MQ==", "subject": "x".repeat(513)}),
        json!({"plaintext": "MQ==", "subject": "a\nb"}),
        json!({"plaintext": "MQ==", "subject": ["a"]}),
    ] {
        let (s, v) = call(&app, "POST", "transit/encrypt/pii", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["errors"].is_array(), "{v}");
    }
    let (s, v) = call(&app, "POST", "transit/encrypt/sig", json!({"plaintext": "MQ==", "subject": "a"})).await;
    assert_eq!(s, 400, "{v}");
    // Malformed subject tags: 400, never 500.
    for ct in [
        "vault:v1:s0.AAAAAAAAAAAAAAAAAAAAAA:AAAA",
        "vault:v1:s1.AAAA:AAAA",
        "vault:v1:s1.AAAAAAAAAAAAAAAAAAAAAA:",
        "vault:v1:s99999999999.AAAAAAAAAAAAAAAAAAAAAA:AAAA",
        "vault:v1:x:AAAA",
        "vault:v1:s1.AAAAAAAAAAAAAAAAAAAAAA:AAAA",
    ] {
        let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": ct})).await;
        assert_eq!(s, 400, "{ct}: {v}");
    }
}

#[tokio::test]
async fn a_backup_after_a_destroy_holds_no_key_for_it_and_restores_never_resurrect() {
    let (_dir, _core, app) = dev().await;
    call(&app, "POST", "transit/keys/pii", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let mut cts = Vec::new();
    for s in ["a", "b"] {
        let (_, v) = call(&app, "POST", "transit/encrypt/pii", json!({"plaintext": "aGk=", "subject": s})).await;
        cts.push(v["data"]["ciphertext"].as_str().unwrap().to_string());
    }
    let (_, v) = call(&app, "GET", "transit/backup/pii", Value::Null).await;
    let before = v["data"]["backup"].as_str().unwrap().to_string();
    call(&app, "DELETE", "transit/subjects/pii/a", Value::Null).await;
    let (_, v) = call(&app, "GET", "transit/backup/pii", Value::Null).await;
    let after = v["data"]["backup"].as_str().unwrap().to_string();
    assert!(after.len() < before.len(), "the destroyed subject's wrapped key is gone from new backups");

    // Restored under a new name, the later backup opens b and not a.
    let (s, v) = call(&app, "POST", "transit/restore/copy", json!({"backup": after})).await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = call(&app, "POST", "transit/decrypt/copy", json!({"ciphertext": cts[1]})).await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, "POST", "transit/decrypt/copy", json!({"ciphertext": cts[0]})).await;
    assert_eq!(s, 400);

    // The earlier backup forced over the same key: the tombstone wins.
    let (s, v) = call(&app, "POST", "transit/restore/pii", json!({"backup": before, "force": true})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": cts[0]})).await;
    assert_eq!(s, 400, "an erased subject stays erased: {v}");
    let (s, _) = call(&app, "POST", "transit/decrypt/pii", json!({"ciphertext": cts[1]})).await;
    assert_eq!(s, 200);

    // A backup whose subject records were tampered with is refused whole.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(&before).unwrap();
    let last = raw.len() - 30;
    raw[last] ^= 1;
    let (s, v) = call(&app, "POST", "transit/restore/other", json!({"backup": b64.encode(&raw)})).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = call(&app, "GET", "transit/keys/other", Value::Null).await;
    assert_eq!(s, 404, "nothing was written");

    // Deleting the key deletes its subjects' rows.
    call(&app, "POST", "transit/keys/pii/config", json!({"deletion_allowed": true})).await;
    let (s, _) = call(&app, "DELETE", "transit/keys/pii", Value::Null).await;
    assert_eq!(s, 204);
    call(&app, "POST", "transit/keys/pii", json!({})).await;
    let (s, _) = call(&app, "LIST", "transit/subjects/pii", Value::Null).await;
    assert_eq!(s, 404, "no subject survives its key");
}
