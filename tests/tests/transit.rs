//! The transit engine end to end (docs/transit.md), through the real binary
//! and HTTP API, on SQLite and PostgreSQL: tampered, truncated and misdirected
//! ciphertexts refused with a 400; key versions (min_decryption_version,
//! rewrap, trim, key_version); batches with failing items; keys across a
//! restart and a seal; two servers on one PostgreSQL (change feed,
//! concurrent rotations); policies (upsert needs `create`); no secret in the
//! logs or error messages; bad input; backup/restore and export; a
//! property test of the encrypt/decrypt round trip; and Vault's shape of key
//! reads and deletes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use vault_e2e::{Backend, Client, RawHttp, ServerProc, Store, contains};

/// The three AEAD types whose ciphertexts are tampered with.
const AEAD_TYPES: [&str; 3] = ["aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305"];

struct Vault {
    store: Store,
    srv: ServerProc,
    rc: Client,
    keys: Vec<String>,
    root: String,
}

/// A fresh server on `backend` (with a `--config` file holding `config` if
/// not empty), initialized, unsealed, `transit/` mounted.
async fn vault_with(backend: Backend, config: &str, extra: &[&str]) -> Vault {
    let store = Store::new(backend);
    let srv = if config.is_empty() {
        ServerProc::start(&store, extra)
    } else {
        ServerProc::start_with_config(&store, config, extra)
    };
    let (keys, root, rc) = srv.kv2_ready().await;
    let (s, v) = rc.post("sys/mounts/transit", json!({"type": "transit"})).await;
    assert_eq!(s, 204, "mount transit: {v}");
    Vault { store, srv, rc, keys, root }
}

async fn vault(backend: Backend) -> Vault {
    vault_with(backend, "", &[]).await
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap_or_else(|e| panic!("not base64 ({e}): {s}"))
}

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

/// The `errors` of an answer, as one string.
fn errors(v: &Value) -> String {
    v["errors"].to_string()
}

/// A 4xx in Vault's error shape: `{"errors": [...]}` with at least one
/// message, and no `data`.
fn assert_client_error(s: u16, v: &Value, what: &str) {
    assert!((400..500).contains(&s), "{what}: expected a 4xx, got {s}: {v}");
    let list = v["errors"].as_array().unwrap_or_else(|| panic!("{what}: no errors list in {s} {v}"));
    assert!(!list.is_empty() && list.iter().all(Value::is_string), "{what}: errors must be messages: {v}");
    assert!(v.get("data").is_none_or(Value::is_null), "{what}: an error with data: {v}");
}

/// A decryption that must fail: 400, Vault's error shape, no plaintext,
/// and the message does not repeat the ciphertext.
fn assert_refused(s: u16, v: &Value, ciphertext: &str, what: &str) {
    assert_eq!(s, 400, "{what}: expected 400, got {s}: {v}");
    assert_client_error(s, v, what);
    let body = ciphertext.rsplit(':').next().unwrap_or(ciphertext);
    if body.len() >= 8 {
        assert!(!errors(v).contains(body), "{what}: the error echoes the ciphertext: {v}");
    }
}

async fn create_key(rc: &Client, name: &str, body: Value) -> Value {
    let (s, v) = rc.post(&format!("transit/keys/{name}"), body).await;
    assert_eq!(s, 200, "create key {name}: {v}");
    v["data"].clone()
}

async fn read_key(rc: &Client, name: &str) -> Value {
    let (s, v) = rc.get(&format!("transit/keys/{name}")).await;
    assert_eq!(s, 200, "read key {name}: {v}");
    v["data"].clone()
}

/// Encrypt `plaintext` with `key` (`extra` fields added): (ciphertext, key_version).
async fn encrypt(rc: &Client, key: &str, plaintext: &[u8], extra: Value) -> (String, u64) {
    let mut body = json!({"plaintext": b64(plaintext)});
    if let Value::Object(m) = extra {
        body.as_object_mut().unwrap().extend(m);
    }
    let (s, v) = rc.post(&format!("transit/encrypt/{key}"), body).await;
    assert_eq!(s, 200, "encrypt with {key}: {v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap_or_else(|| panic!("no ciphertext: {v}")).to_string();
    let version = v["data"]["key_version"].as_u64().unwrap_or_else(|| panic!("no key_version: {v}"));
    assert!(ct.starts_with(&format!("vault:v{version}:")), "{ct} vs key_version {version}");
    (ct, version)
}

/// Decrypt (`extra` fields added): the reply.
async fn decrypt(rc: &Client, key: &str, ciphertext: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"ciphertext": ciphertext});
    if let Value::Object(m) = extra {
        body.as_object_mut().unwrap().extend(m);
    }
    rc.post(&format!("transit/decrypt/{key}"), body).await
}

/// Decrypt, which must succeed: the plaintext bytes.
async fn decrypt_ok(rc: &Client, key: &str, ciphertext: &str, extra: Value) -> Vec<u8> {
    let (s, v) = decrypt(rc, key, ciphertext, extra).await;
    assert_eq!(s, 200, "decrypt {ciphertext} with {key}: {v}");
    unb64(v["data"]["plaintext"].as_str().unwrap_or_else(|| panic!("no plaintext: {v}")))
}

/// The parts of `vault:vN:base64`: (N, bytes).
fn split_ciphertext(ct: &str) -> (u64, Vec<u8>) {
    let rest = ct.strip_prefix("vault:v").unwrap_or_else(|| panic!("not a vault ciphertext: {ct}"));
    let (v, body) = rest.split_once(':').unwrap();
    (v.parse().unwrap(), unb64(body))
}

fn join_ciphertext(version: u64, bytes: &[u8]) -> String {
    format!("vault:v{version}:{}", b64(bytes))
}

// ---------------------------------------------------------------------------
// 1. Tampering
// ---------------------------------------------------------------------------

async fn tampering(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let plaintext = b"tamper-me";
    for kt in AEAD_TYPES {
        let key = format!("t-{kt}");
        create_key(rc, &key, json!({"type": kt})).await;
        let (ct, version) = encrypt(rc, &key, plaintext, json!({})).await;
        assert_eq!(version, 1);
        assert_eq!(decrypt_ok(rc, &key, &ct, json!({})).await, plaintext, "{kt}: round trip");
        let (_, bytes) = split_ciphertext(&ct);

        // Every single-bit flip of the decoded bytes (nonce, body and tag).
        for i in 0..bytes.len() * 8 {
            let mut t = bytes.clone();
            t[i / 8] ^= 1 << (i % 8);
            let bad = join_ciphertext(version, &t);
            let (s, r) = decrypt(rc, &key, &bad, json!({})).await;
            assert_refused(s, &r, &bad, &format!("{kt}: bit {i} flipped"));
        }
        // Every truncation (down to nothing), and one byte too many.
        for len in 0..bytes.len() {
            let bad = join_ciphertext(version, &bytes[..len]);
            let (s, r) = decrypt(rc, &key, &bad, json!({})).await;
            assert_refused(s, &r, &bad, &format!("{kt}: truncated to {len} bytes"));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let bad = join_ciphertext(version, &longer);
        let (s, r) = decrypt(rc, &key, &bad, json!({})).await;
        assert_refused(s, &r, &bad, &format!("{kt}: one byte appended"));

        // A version that does not exist.
        let bad = join_ciphertext(9, &bytes);
        let (s, r) = decrypt(rc, &key, &bad, json!({})).await;
        assert_refused(s, &r, &bad, &format!("{kt}: vault:v9:"));

        // A ciphertext of another key of the same type.
        let other = format!("o-{kt}");
        create_key(rc, &other, json!({"type": kt})).await;
        let (s, r) = decrypt(rc, &other, &ct, json!({})).await;
        assert_refused(s, &r, &ct, &format!("{kt}: ciphertext of another key"));

        // Wrong associated data.
        let aad = json!({"associated_data": b64(b"order-42")});
        let (ct_aad, _) = encrypt(rc, &key, plaintext, aad.clone()).await;
        assert_eq!(decrypt_ok(rc, &key, &ct_aad, aad).await, plaintext, "{kt}: with the right associated data");
        for (what, extra) in [
            ("wrong associated_data", json!({"associated_data": b64(b"order-43")})),
            ("no associated_data", json!({})),
            ("empty associated_data", json!({"associated_data": ""})),
        ] {
            let (s, r) = decrypt(rc, &key, &ct_aad, extra).await;
            assert_refused(s, &r, &ct_aad, &format!("{kt}: {what}"));
        }
        let (s, r) = decrypt(rc, &key, &ct, json!({"associated_data": b64(b"order-42")})).await;
        assert_refused(s, &r, &ct, &format!("{kt}: associated_data added"));

        // Wrong context on a derived key.
        let derived = format!("d-{kt}");
        let k = create_key(rc, &derived, json!({"type": kt, "derived": true})).await;
        assert_eq!(k["derived"], true, "{k}");
        let ctx = json!({"context": b64(b"tenant-a")});
        let (ct_d, _) = encrypt(rc, &derived, plaintext, ctx.clone()).await;
        assert_eq!(decrypt_ok(rc, &derived, &ct_d, ctx).await, plaintext, "{kt}: derived round trip");
        for (what, extra) in [
            ("wrong context", json!({"context": b64(b"tenant-b")})),
            ("no context", json!({})),
            ("empty context", json!({"context": ""})),
        ] {
            let (s, r) = decrypt(rc, &derived, &ct_d, extra).await;
            assert_refused(s, &r, &ct_d, &format!("{kt}: derived key, {what}"));
        }
        // A derived key's ciphertext under the base key and the other way round.
        let (s, r) = decrypt(rc, &key, &ct_d, json!({})).await;
        assert_refused(s, &r, &ct_d, &format!("{kt}: derived ciphertext to the base key"));
    }
    // Malformed ciphertext strings.
    for bad in ["", "vault:", "vault:v1", "vault:v1:", "vault:v0:AAAA", "vault:vx:AAAA", "vault:v1:@@@@", "v1:AAAA"] {
        let (s, r) = decrypt(rc, "t-aes256-gcm96", bad, json!({})).await;
        assert_eq!(s, 400, "malformed {bad:?}: {r}");
        assert_client_error(s, &r, &format!("malformed {bad:?}"));
    }
    let logs = v.srv.log_text();
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

#[tokio::test]
async fn tampering_refused_sqlite() {
    tampering(Backend::Sqlite).await;
}

#[tokio::test]
async fn tampering_refused_postgres() {
    tampering(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 2. Versions: min_decryption_version, rewrap, trim, key_version
// ---------------------------------------------------------------------------

async fn rotate(rc: &Client, key: &str) -> Value {
    let (s, v) = rc.post(&format!("transit/keys/{key}/rotate"), json!({})).await;
    assert_eq!(s, 200, "rotate {key}: {v}");
    v["data"].clone()
}

async fn config(rc: &Client, key: &str, body: Value) -> (u16, Value) {
    rc.post(&format!("transit/keys/{key}/config"), body).await
}

async fn versions(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "ver", json!({})).await;
    let (c1, v1) = encrypt(rc, "ver", b"one", json!({})).await;
    assert_eq!(v1, 1);
    assert_eq!(rotate(rc, "ver").await["latest_version"], 2);
    let (c2, v2) = encrypt(rc, "ver", b"two", json!({})).await;
    assert_eq!(v2, 2);
    assert_eq!(rotate(rc, "ver").await["latest_version"], 3);
    let (c3, v3) = encrypt(rc, "ver", b"three", json!({})).await;
    assert_eq!(v3, 3);

    // key_version on encrypt.
    let (c1b, kv) = encrypt(rc, "ver", b"one-again", json!({"key_version": 1})).await;
    assert_eq!(kv, 1, "key_version 1 encrypts with version 1");
    assert_eq!(decrypt_ok(rc, "ver", &c1b, json!({})).await, b"one-again");
    let (_, kv) = encrypt(rc, "ver", b"x", json!({"key_version": 2})).await;
    assert_eq!(kv, 2);
    let (_, kv) = encrypt(rc, "ver", b"x", json!({"key_version": 0})).await;
    assert_eq!(kv, 3, "key_version 0 is the latest");
    let (s, r) = rc.post("transit/encrypt/ver", json!({"plaintext": b64(b"x"), "key_version": 4})).await;
    assert_eq!(s, 400, "a version above the latest: {r}");
    assert_client_error(s, &r, "key_version 4");

    // Rewrap moves an old ciphertext to the latest version.
    let (s, r) = rc.post("transit/rewrap/ver", json!({"ciphertext": c1})).await;
    assert_eq!(s, 200, "rewrap: {r}");
    let c1_rewrapped = r["data"]["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(r["data"]["key_version"], 3, "{r}");
    assert!(c1_rewrapped.starts_with("vault:v3:"), "{c1_rewrapped}");
    assert_eq!(decrypt_ok(rc, "ver", &c1_rewrapped, json!({})).await, b"one");
    // Rewrap to a given version.
    let (s, r) = rc.post("transit/rewrap/ver", json!({"ciphertext": c1, "key_version": 2})).await;
    assert_eq!((s, &r["data"]["key_version"]), (200, &json!(2)), "{r}");

    // min_decryption_version: older ciphertexts refused, newer accepted.
    let (s, r) = config(rc, "ver", json!({"min_decryption_version": 2})).await;
    assert_eq!(s, 200, "{r}");
    let k = read_key(rc, "ver").await;
    assert_eq!(k["min_decryption_version"], 2, "{k}");
    // As Vault, a read lists only the versions that may still decrypt.
    let listed: Vec<&String> = k["keys"].as_object().unwrap().keys().collect();
    assert_eq!(listed, vec!["2", "3"], "versions below min_decryption_version are not listed: {k}");
    for old in [&c1, &c1b] {
        let (s, r) = decrypt(rc, "ver", old, json!({})).await;
        assert_refused(s, &r, old, "v1 ciphertext below min_decryption_version");
        assert!(errors(&r).contains("disallowed by policy"), "{r}");
        let (s, r) = rc.post("transit/rewrap/ver", json!({"ciphertext": old})).await;
        assert_refused(s, &r, old, "rewrap of a v1 ciphertext below min_decryption_version");
    }
    assert_eq!(decrypt_ok(rc, "ver", &c2, json!({})).await, b"two");
    assert_eq!(decrypt_ok(rc, "ver", &c3, json!({})).await, b"three");
    assert_eq!(decrypt_ok(rc, "ver", &c1_rewrapped, json!({})).await, b"one");
    let (s, r) = rc.post("transit/encrypt/ver", json!({"plaintext": b64(b"x"), "key_version": 1})).await;
    assert_eq!(s, 400, "encrypting with a version nobody may decrypt: {r}");
    // Back down to 1: v1 ciphertexts decrypt again (nothing was deleted).
    let (s, r) = config(rc, "ver", json!({"min_decryption_version": 1})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(decrypt_ok(rc, "ver", &c1, json!({})).await, b"one");
    let k = read_key(rc, "ver").await;
    let listed: Vec<&String> = k["keys"].as_object().unwrap().keys().collect();
    assert_eq!(listed, vec!["1", "2", "3"], "version 1 listed again: {k}");
    let (s, r) = config(rc, "ver", json!({"min_decryption_version": 4})).await;
    assert_eq!(s, 400, "min_decryption_version above the latest: {r}");
    let (s, r) = config(rc, "ver", json!({"min_decryption_version": 2})).await;
    assert_eq!(s, 200, "{r}");

    // Trim needs min_encryption_version.
    let before = read_key(rc, "ver").await;
    let (s, r) = rc.post("transit/keys/ver/trim", json!({"min_available_version": 2})).await;
    assert_eq!(s, 400, "trim without min_encryption_version: {r}");
    assert_eq!(read_key(rc, "ver").await, before, "a refused trim changes nothing");
    assert_eq!(before["min_available_version"], 0, "{before}");
    let (s, r) = config(rc, "ver", json!({"min_encryption_version": 2})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = rc.post("transit/keys/ver/trim", json!({"min_available_version": 3})).await;
    assert_eq!(s, 400, "trim above min_decryption_version: {r}");
    let (s, r) = rc.post("transit/keys/ver/trim", json!({"min_available_version": 2})).await;
    assert_eq!(s, 200, "trim: {r}");
    let k = read_key(rc, "ver").await;
    let kept: Vec<&String> = k["keys"].as_object().unwrap().keys().collect();
    assert_eq!(kept, vec!["2", "3"], "{k}");
    assert_eq!(k["min_available_version"], 2, "{k}");
    assert_eq!(k["latest_version"], 3, "{k}");
    // Version 1 is gone for good: it cannot be brought back, its
    // ciphertexts never decrypt again.
    let (s, r) = config(rc, "ver", json!({"min_decryption_version": 1})).await;
    assert_eq!(s, 400, "min_decryption_version below min_available_version: {r}");
    for old in [&c1, &c1b] {
        let (s, r) = decrypt(rc, "ver", old, json!({})).await;
        assert_refused(s, &r, old, "v1 ciphertext after trim");
    }
    let (s, r) = rc.post("transit/keys/ver/trim", json!({"min_available_version": 1})).await;
    assert_eq!(s, 400, "trim cannot go back: {r}");
    // What is left still works.
    assert_eq!(decrypt_ok(rc, "ver", &c2, json!({})).await, b"two");
    assert_eq!(decrypt_ok(rc, "ver", &c3, json!({})).await, b"three");
    let (s, r) = rc.post("transit/rewrap/ver", json!({"ciphertext": c2})).await;
    assert_eq!((s, &r["data"]["key_version"]), (200, &json!(3)), "{r}");
    let (_, kv) = encrypt(rc, "ver", b"x", json!({"key_version": 2})).await;
    assert_eq!(kv, 2);

    // Trimmed versions stay trimmed after a restart.
    let Vault { store, srv, keys, root, .. } = v;
    assert!(srv.terminate().success());
    let srv = ServerProc::start(&store, &[]);
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    let (s, r) = decrypt(&rc, "ver", &c1, json!({})).await;
    assert_refused(s, &r, &c1, "v1 ciphertext after trim and restart");
    assert_eq!(decrypt_ok(&rc, "ver", &c2, json!({})).await, b"two");
    assert_eq!(read_key(&rc, "ver").await["min_available_version"], 2);
}

#[tokio::test]
async fn versions_rewrap_trim_sqlite() {
    versions(Backend::Sqlite).await;
}

#[tokio::test]
async fn versions_rewrap_trim_postgres() {
    versions(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 3. Batches with a failing item
// ---------------------------------------------------------------------------

fn results(v: &Value) -> &Vec<Value> {
    v["data"]["batch_results"].as_array().unwrap_or_else(|| panic!("no batch_results: {v}"))
}

async fn batches(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "b", json!({})).await;
    let items = json!([
        {"plaintext": b64(b"first"), "reference": "r1"},
        {"plaintext": "%%% not base64 %%%", "reference": "r2"},
        {"plaintext": b64(b"third"), "reference": "r3"},
    ]);

    // Encrypt: 400 with every result; the good items are encrypted.
    let (s, r) = rc.post("transit/encrypt/b", json!({"batch_input": items})).await;
    assert_eq!(s, 400, "a batch with a failed item: {r}");
    let res = results(&r);
    assert_eq!(res.len(), 3, "{r}");
    assert_eq!(res[0]["reference"], "r1");
    assert_eq!(res[1]["reference"], "r2");
    assert_eq!(res[2]["reference"], "r3");
    assert!(res[1]["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert!(res[1].get("ciphertext").is_none(), "{r}");
    let ct1 = res[0]["ciphertext"].as_str().unwrap().to_string();
    let ct3 = res[2]["ciphertext"].as_str().unwrap().to_string();
    assert!(res[0].get("error").is_none_or(|e| e.as_str() == Some("")), "{r}");
    assert_eq!(decrypt_ok(rc, "b", &ct1, json!({})).await, b"first");
    assert_eq!(decrypt_ok(rc, "b", &ct3, json!({})).await, b"third");

    // partial_failure_response_code.
    let (s, r) =
        rc.post("transit/encrypt/b", json!({"batch_input": items, "partial_failure_response_code": 207})).await;
    assert_eq!(s, 207, "partial_failure_response_code 207: {r}");
    assert_eq!(results(&r).len(), 3);
    assert!(results(&r)[0]["ciphertext"].is_string() && results(&r)[1]["error"].is_string(), "{r}");
    let (s, r) =
        rc.post("transit/encrypt/b", json!({"batch_input": items, "partial_failure_response_code": 200})).await;
    assert_eq!(s, 200, "partial_failure_response_code 200: {r}");
    // Every item failed: 400 whatever the code asked.
    let all_bad = json!([{"plaintext": "%%%"}, {"plaintext": "@@@"}]);
    let (s, r) =
        rc.post("transit/encrypt/b", json!({"batch_input": all_bad, "partial_failure_response_code": 207})).await;
    assert_eq!(s, 400, "no item succeeded: {r}");
    assert!(results(&r).iter().all(|i| i["error"].is_string()), "{r}");
    // No failed item: 200.
    let (s, r) = rc.post("transit/encrypt/b", json!({"batch_input": [{"plaintext": b64(b"ok")}]})).await;
    assert_eq!(s, 200, "{r}");

    // Decrypt: a tampered ciphertext among good ones.
    let (ver, mut bytes) = split_ciphertext(&ct3);
    bytes[0] ^= 1;
    let tampered = join_ciphertext(ver, &bytes);
    let dec_items = json!([
        {"ciphertext": ct1, "reference": "a"},
        {"ciphertext": tampered, "reference": "b"},
        {"ciphertext": ct3, "reference": "c"},
    ]);
    let (s, r) = rc.post("transit/decrypt/b", json!({"batch_input": dec_items})).await;
    assert_eq!(s, 400, "{r}");
    let res = results(&r);
    assert_eq!(unb64(res[0]["plaintext"].as_str().unwrap()), b"first", "{r}");
    assert!(res[1]["error"].is_string() && res[1].get("plaintext").is_none(), "{r}");
    assert!(!res[1]["error"].as_str().unwrap().contains(tampered.rsplit(':').next().unwrap()), "{r}");
    assert_eq!(unb64(res[2]["plaintext"].as_str().unwrap()), b"third", "{r}");
    assert_eq!(res[1]["reference"], "b");
    let (s, r) =
        rc.post("transit/decrypt/b", json!({"batch_input": dec_items, "partial_failure_response_code": 207})).await;
    assert_eq!(s, 207, "{r}");
    assert_eq!(results(&r).len(), 3);

    // Rewrap likewise.
    rotate(rc, "b").await;
    let (s, r) = rc.post("transit/rewrap/b", json!({"batch_input": dec_items})).await;
    assert_eq!(s, 400, "{r}");
    let res = results(&r);
    assert!(res[0]["ciphertext"].as_str().unwrap().starts_with("vault:v2:"), "{r}");
    assert!(res[1]["error"].is_string(), "{r}");
    assert!(res[2]["ciphertext"].as_str().unwrap().starts_with("vault:v2:"), "{r}");
    let (s, r) =
        rc.post("transit/rewrap/b", json!({"batch_input": dec_items, "partial_failure_response_code": 207})).await;
    assert_eq!(s, 207, "{r}");

    // hmac batches answer 200 with per-item errors.
    let (s, r) = rc
        .post("transit/hmac/b", json!({"batch_input": [{"input": b64(b"x")}, {"input": "%%%"}, {"input": b64(b"y")}]}))
        .await;
    assert_eq!(s, 200, "{r}");
    let res = results(&r);
    assert!(res[0]["hmac"].is_string() && res[1]["error"].is_string() && res[2]["hmac"].is_string(), "{r}");
}

#[tokio::test]
async fn batch_partial_failure_sqlite() {
    batches(Backend::Sqlite).await;
}

#[tokio::test]
async fn batch_partial_failure_postgres() {
    batches(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 4. Restart, seal and unseal
// ---------------------------------------------------------------------------

async fn persistence(backend: Backend) {
    let Vault { store, srv, rc, keys, root } = vault(backend).await;
    create_key(&rc, "p", json!({})).await;
    create_key(&rc, "pd", json!({"derived": true, "type": "xchacha20-poly1305"})).await;
    let ctx = json!({"context": b64(b"ctx")});
    let (c1, _) = encrypt(&rc, "p", b"before restart", json!({})).await;
    let (cd, _) = encrypt(&rc, "pd", b"derived before restart", ctx.clone()).await;

    assert!(srv.terminate().success());
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let rc = c.with_token(&root);
    let (s, r) = rc.post("transit/encrypt/p", json!({"plaintext": b64(b"x")})).await;
    assert_eq!(s, 503, "sealed after a restart: {r}");
    c.unseal(&keys).await;
    assert_eq!(decrypt_ok(&rc, "p", &c1, json!({})).await, b"before restart");
    assert_eq!(decrypt_ok(&rc, "pd", &cd, ctx.clone()).await, b"derived before restart");

    rotate(&rc, "p").await;
    let (c2, v2) = encrypt(&rc, "p", b"after rotate", json!({})).await;
    assert_eq!(v2, 2);

    let (s, r) = rc.put("sys/seal", json!({})).await;
    assert_eq!(s, 204, "seal: {r}");
    for (path, body) in [
        ("transit/encrypt/p", json!({"plaintext": b64(b"x")})),
        ("transit/decrypt/p", json!({"ciphertext": c1})),
        ("transit/encrypt/brand-new", json!({"plaintext": b64(b"x")})),
    ] {
        let (s, r) = rc.post(path, body).await;
        assert_eq!(s, 503, "{path} while sealed: {r}");
        assert_eq!(r["errors"][0], "Vault is sealed", "{r}");
    }
    let (s, r) = rc.get("transit/keys/p").await;
    assert_eq!(s, 503, "{r}");
    c.unseal(&keys).await;
    assert_eq!(decrypt_ok(&rc, "p", &c1, json!({})).await, b"before restart");
    assert_eq!(decrypt_ok(&rc, "p", &c2, json!({})).await, b"after rotate");
    assert_eq!(decrypt_ok(&rc, "pd", &cd, ctx).await, b"derived before restart");
    assert_eq!(read_key(&rc, "p").await["latest_version"], 2);
    let (s, _) = rc.get("transit/keys/brand-new").await;
    assert_eq!(s, 404, "nothing was created while sealed");
    let (_, v) = encrypt(&rc, "p", b"x", json!({})).await;
    assert_eq!(v, 2);

    // At rest: no plaintext.
    drop(srv);
    let raw = store.raw_bytes();
    for p in [&b"before restart"[..], b"after rotate", b"derived before restart"] {
        assert!(!contains(&raw, p), "plaintext at rest");
    }
}

#[tokio::test]
async fn keys_survive_restart_and_seal_sqlite() {
    persistence(Backend::Sqlite).await;
}

#[tokio::test]
async fn keys_survive_restart_and_seal_postgres() {
    persistence(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 5. Two servers on one PostgreSQL
// ---------------------------------------------------------------------------

/// How long another server may take to see a change. The change feed is
/// asynchronous (PostgreSQL LISTEN/NOTIFY, delivered after the commit and
/// applied by a background task: storage/postgres.rs `spawn_listener`,
/// core `follow_changes`), so the other server is polled, up to this bound.
const FEED_BOUND: Duration = Duration::from_secs(5);

/// Poll `f` until it returns `Some`, at most `bound`; (value, attempts, elapsed).
async fn eventually<T, F, Fut>(bound: Duration, what: &str, mut f: F) -> (T, usize, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match f().await {
            Ok(t) => return (t, attempts, start.elapsed()),
            Err(last) => {
                assert!(start.elapsed() < bound, "{what}: not within {bound:?} ({attempts} attempts); last: {last}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn second_server(v: &Vault) -> (ServerProc, Client) {
    let srv = ServerProc::start(&v.store, &[]);
    srv.client().unseal(&v.keys).await;
    let rc = srv.client().with_token(&v.root);
    (srv, rc)
}

#[tokio::test]
async fn two_servers_share_keys_postgres() {
    let v = vault(Backend::Postgres).await;
    let (srv_b, rb) = second_server(&v).await;
    let ra = &v.rc;

    create_key(ra, "shared", json!({})).await;
    let (ca1, _) = encrypt(ra, "shared", b"from A", json!({})).await;
    // B loads (and caches) the key.
    let (cb1, vb) = encrypt(&rb, "shared", b"from B", json!({})).await;
    assert_eq!(vb, 1);
    assert_eq!(decrypt_ok(&rb, "shared", &ca1, json!({})).await, b"from A");
    assert_eq!(decrypt_ok(ra, "shared", &cb1, json!({})).await, b"from B");

    // Rotate on A; B's cached copy must be dropped.
    assert_eq!(rotate(ra, "shared").await["latest_version"], 2);
    let (ct, attempts, took) = eventually(FEED_BOUND, "B encrypts with version 2 after A rotated", || async {
        let (s, r) = rb.post("transit/encrypt/shared", json!({"plaintext": b64(b"after rotate")})).await;
        match (s, r["data"]["key_version"].as_u64()) {
            (200, Some(2)) => Ok(r["data"]["ciphertext"].as_str().unwrap().to_string()),
            _ => Err(format!("{s} {r}")),
        }
    })
    .await;
    eprintln!("B saw version 2 after {attempts} attempt(s), {took:?}");
    assert_eq!(decrypt_ok(ra, "shared", &ct, json!({})).await, b"after rotate");
    let (ca2, va2) = encrypt(ra, "shared", b"A v2", json!({})).await;
    assert_eq!(va2, 2);
    assert_eq!(decrypt_ok(&rb, "shared", &ca2, json!({})).await, b"A v2");
    assert_eq!(read_key(&rb, "shared").await["latest_version"], 2);

    // A config change on A is seen by B (min_decryption_version).
    let (s, r) = config(ra, "shared", json!({"min_decryption_version": 2})).await;
    assert_eq!(s, 200, "{r}");
    eventually(FEED_BOUND, "B refuses v1 after A raised min_decryption_version", || async {
        match decrypt(&rb, "shared", &ca1, json!({})).await {
            (400, r) if errors(&r).contains("disallowed by policy") => Ok(()),
            (s, r) => Err(format!("{s} {r}")),
        }
    })
    .await;

    // Delete on A; B answers "encryption key not found" soon after (decrypt:
    // an encrypt would create the key again, as Vault's upsert does).
    let (s, r) = config(ra, "shared", json!({"deletion_allowed": true})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(decrypt_ok(&rb, "shared", &ca2, json!({})).await, b"A v2", "B has the key cached");
    let (s, r) = ra.delete("transit/keys/shared").await;
    assert_eq!(s, 204, "delete: {r}");
    let (_, attempts, took) = eventually(FEED_BOUND, "B forgets the key A deleted", || async {
        match decrypt(&rb, "shared", &ca2, json!({})).await {
            (400, r) if errors(&r).contains("encryption key not found") => Ok(()),
            (s, r) => Err(format!("{s} {r}")),
        }
    })
    .await;
    eprintln!("B forgot the deleted key after {attempts} attempt(s), {took:?}");
    assert_eq!(rb.get("transit/keys/shared").await.0, 404);

    // Concurrent rotations on A and B: none lost.
    create_key(ra, "race", json!({})).await;
    encrypt(&rb, "race", b"cache it on B", json!({})).await;
    let (a, b) =
        tokio::join!(ra.post("transit/keys/race/rotate", json!({})), rb.post("transit/keys/race/rotate", json!({})));
    assert_eq!(a.0, 200, "rotate on A: {a:?}");
    assert_eq!(b.0, 200, "rotate on B: {b:?}");
    let mut answered = [a.1["data"]["latest_version"].as_u64(), b.1["data"]["latest_version"].as_u64()];
    eprintln!("concurrent rotations answered latest_version {answered:?} (A, B)");
    answered.sort_unstable();
    assert_eq!(answered, [Some(2), Some(3)], "each rotation made its own version: {a:?} {b:?}");
    // Each server reads its own key record after its commit; the other's
    // commit reaches it through the feed: poll both, up to FEED_BOUND.
    for (who, c) in [("A", ra), ("B", &rb)] {
        eventually(FEED_BOUND, &format!("{who} reads latest_version 3 after two concurrent rotations"), || async {
            let k = read_key(c, "race").await;
            if k["latest_version"] == 3 { Ok(()) } else { Err(k.to_string()) }
        })
        .await;
    }
    // More rounds, several rotations per server at once.
    for round in 0..4 {
        let (a1, b1, a2, b2) = tokio::join!(
            ra.post("transit/keys/race/rotate", json!({})),
            rb.post("transit/keys/race/rotate", json!({})),
            ra.post("transit/keys/race/rotate", json!({})),
            rb.post("transit/keys/race/rotate", json!({})),
        );
        for (who, r) in [("A", a1), ("B", b1), ("A", a2), ("B", b2)] {
            assert_eq!(r.0, 200, "round {round}: rotate on {who}: {r:?}");
        }
    }
    let want = 3 + 4 * 4;
    assert_eq!(read_key(ra, "race").await["latest_version"], want, "no rotation lost");
    eventually(FEED_BOUND, "B sees every rotation", || async {
        let (s, r) = rb.post("transit/encrypt/race", json!({"plaintext": b64(b"x")})).await;
        if s == 200 && r["data"]["key_version"] == want { Ok(()) } else { Err(format!("{s} {r}")) }
    })
    .await;
    assert_eq!(read_key(&rb, "race").await["keys"].as_object().unwrap().len() as u64, want);
    for l in [v.srv.log_text(), srv_b.log_text()] {
        assert!(!l.contains("panicked"), "server panicked:\n{l}");
    }
}

// ---------------------------------------------------------------------------
// 6. Policies
// ---------------------------------------------------------------------------

async fn token_with(rc: &Client, name: &str, policy: &str) -> String {
    let (s, v) = rc.put(&format!("sys/policies/acl/{name}"), json!({"policy": policy})).await;
    assert_eq!(s, 204, "policy {name}: {v}");
    let (s, v) = rc.post("auth/token/create", json!({"policies": [name]})).await;
    assert_eq!(s, 200, "token for {name}: {v}");
    token_of(&v)
}

async fn policies(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let c = v.srv.client();
    create_key(rc, "k", json!({})).await;
    let (ck, _) = encrypt(rc, "k", b"policy", json!({})).await;

    // `update` without `create` on encrypt: no upsert.
    let enc =
        c.with_token(&token_with(rc, "enc-update", r#"path "transit/encrypt/*" { capabilities = ["update"] }"#).await);
    let (ct, _) = encrypt(&enc, "k", b"by enc-update", json!({})).await;
    assert_eq!(decrypt_ok(rc, "k", &ct, json!({})).await, b"by enc-update");
    let (s, r) = enc.post("transit/encrypt/fresh", json!({"plaintext": b64(b"x")})).await;
    assert_eq!(s, 403, "creating a key by encrypting needs create: {r}");
    assert_eq!(rc.get("transit/keys/fresh").await.0, 404, "no key was created");
    let (s, r) = enc.post("transit/encrypt/fresh", json!({"batch_input": [{"plaintext": b64(b"x")}]})).await;
    assert_eq!(s, 403, "batch upsert: {r}");
    assert_eq!(rc.get("transit/keys/fresh").await.0, 404);
    // It cannot decrypt either.
    let (s, _) = decrypt(&enc, "k", &ck, json!({})).await;
    assert_eq!(s, 403);

    // With `create`: the key is created (derived when a context is given).
    let up = c.with_token(
        &token_with(rc, "enc-create", r#"path "transit/encrypt/*" { capabilities = ["create", "update"] }"#).await,
    );
    encrypt(&up, "fresh", b"x", json!({"context": b64(b"c")})).await;
    assert_eq!(read_key(rc, "fresh").await["derived"], true);

    // Only `transit/decrypt/k`.
    let dec = c.with_token(&token_with(rc, "dec-k", r#"path "transit/decrypt/k" { capabilities = ["update"] }"#).await);
    assert_eq!(decrypt_ok(&dec, "k", &ck, json!({})).await, b"policy");
    let (s, r) = dec.post("transit/encrypt/k", json!({"plaintext": b64(b"x")})).await;
    assert_eq!(s, 403, "{r}");
    let (s, _) = dec.post("transit/rewrap/k", json!({"ciphertext": ck})).await;
    assert_eq!(s, 403);
    let (s, _) = decrypt(&dec, "fresh", &ck, json!({"context": b64(b"c")})).await;
    assert_eq!(s, 403);
    let (s, _) = dec.get("transit/keys/k").await;
    assert_eq!(s, 403);

    // DELETE on keys/k needs `delete`.
    let (s, r) = config(rc, "k", json!({"deletion_allowed": true})).await;
    assert_eq!(s, 200, "{r}");
    let rw = c.with_token(
        &token_with(rc, "keys-rw", r#"path "transit/keys/k" { capabilities = ["create", "read", "update"] }"#).await,
    );
    assert_eq!(rw.get("transit/keys/k").await.0, 200);
    let (s, r) = rw.delete("transit/keys/k").await;
    assert_eq!(s, 403, "delete without the delete capability: {r}");
    assert_eq!(rc.get("transit/keys/k").await.0, 200, "the key is still there");
    let del = c.with_token(&token_with(rc, "keys-del", r#"path "transit/keys/k" { capabilities = ["delete"] }"#).await);
    let (s, r) = del.delete("transit/keys/k").await;
    assert_eq!(s, 204, "{r}");
    assert_eq!(rc.get("transit/keys/k").await.0, 404);
}

#[tokio::test]
async fn policy_capabilities_sqlite() {
    policies(Backend::Sqlite).await;
}

#[tokio::test]
async fn policy_capabilities_postgres() {
    policies(Backend::Postgres).await;
}

/// The policy check decides "create or update" before the body is read
/// (ARCHITECTURE.md); a key deleted in between must not be created again by
/// a token that holds `update` only (Vault answers 400 "encryption key not
/// found" for an update on a missing key: only a create upserts).
async fn no_upsert_on_update(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let enc = token_with(rc, "enc-only", r#"path "transit/encrypt/*" { capabilities = ["update"] }"#).await;
    create_key(rc, "victim", json!({})).await;
    let (s, r) = config(rc, "victim", json!({"deletion_allowed": true})).await;
    assert_eq!(s, 200, "{r}");

    let body = serde_json::to_vec(&json!({"plaintext": b64(b"x")})).unwrap();
    let mut conn = RawHttp::connect(v.srv.addr).await;
    conn.send(RawHttp::head("POST", "/v1/transit/encrypt/victim", Some(&enc), body.len()).as_bytes()).await;
    // The server routes, authenticates and authorizes on the head alone (the
    // key exists: an update), then waits for the body.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, r) = rc.delete("transit/keys/victim").await;
    assert_eq!(s, 204, "{r}");
    conn.send(&body).await;
    let (s, r) = conn.response().await;
    let (exists, k) = rc.get("transit/keys/victim").await;
    assert!(
        s == 400 || s == 403,
        "an update-only token's encrypt of a key deleted meanwhile must not create it: {s} {r}; key now: {exists} {k}"
    );
    assert_eq!(exists, 404, "the key was created again by a token without create: {k}");
}

#[tokio::test]
async fn no_upsert_without_create_after_delete_sqlite() {
    no_upsert_on_update(Backend::Sqlite).await;
}

#[tokio::test]
async fn no_upsert_without_create_after_delete_postgres() {
    no_upsert_on_update(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 7. Secrets never leak
// ---------------------------------------------------------------------------

const CANARY: &str = "TRANSIT-CANARY-plaintext-5b1e9f";

async fn no_leaks(backend: Backend) {
    let v = vault_with(backend, "access_log = true\n", &["--log-level", "trace"]).await;
    let rc = &v.rc;
    let canary_b64 = b64(CANARY.as_bytes());
    let mut secrets: Vec<(String, String)> =
        vec![("plaintext canary".into(), CANARY.into()), ("canary base64".into(), canary_b64.clone())];

    create_key(rc, "leak", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let (ct, _) = encrypt(rc, "leak", CANARY.as_bytes(), json!({})).await;
    assert_eq!(decrypt_ok(rc, "leak", &ct, json!({})).await, CANARY.as_bytes());
    // Batch and derived paths too.
    let (s, r) = rc
        .post(
            "transit/encrypt/leak-derived",
            json!({"batch_input": [{"plaintext": canary_b64, "context": b64(b"ctx")}]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = rc.post("transit/rewrap/leak", json!({"ciphertext": ct})).await;
    assert_eq!(s, 200, "{r}");
    rotate(rc, "leak").await;

    // Exported keys, the backup, a data key, an HMAC key: none may be logged.
    for kind in ["encryption-key", "hmac-key"] {
        let (s, r) = rc.get(&format!("transit/export/{kind}/leak")).await;
        assert_eq!(s, 200, "export {kind}: {r}");
        let keys = r["data"]["keys"].as_object().unwrap_or_else(|| panic!("{r}"));
        assert_eq!(keys.len(), 2, "{r}");
        for (ver, k) in keys {
            let k = k.as_str().unwrap().to_string();
            assert!(k.len() >= 40, "{kind} v{ver}: {k}");
            let raw = unb64(&k);
            secrets.push((format!("{kind} v{ver} hex"), hex::encode(&raw)));
            secrets.push((format!("{kind} v{ver}"), k));
        }
    }
    let (s, r) = rc.get("transit/backup/leak").await;
    assert_eq!(s, 200, "{r}");
    secrets.push(("backup".into(), r["data"]["backup"].as_str().unwrap().to_string()));
    let (s, r) = rc.post("transit/datakey/plaintext/leak", json!({})).await;
    assert_eq!(s, 200, "{r}");
    secrets.push(("data key".into(), r["data"]["plaintext"].as_str().unwrap().to_string()));
    create_key(rc, "leak-hmac", json!({"type": "hmac", "exportable": true})).await;
    let (s, r) = rc.get("transit/export/hmac-key/leak-hmac").await;
    assert_eq!(s, 200, "{r}");
    secrets.push(("hmac key".into(), r["data"]["keys"]["1"].as_str().unwrap().to_string()));
    create_key(rc, "leak-ed", json!({"type": "ed25519", "exportable": true})).await;
    let (s, r) = rc.get("transit/export/signing-key/leak-ed").await;
    assert_eq!(s, 200, "{r}");
    secrets.push(("signing key".into(), r["data"]["keys"]["1"].as_str().unwrap().to_string()));

    // Errors about bad ciphertexts do not echo them.
    let (_, mut bytes) = split_ciphertext(&ct);
    bytes[20] ^= 0x40;
    let tampered = join_ciphertext(1, &bytes);
    let fake = format!("vault:v1:{canary_b64}");
    let not_b64 = format!("vault:v1:{CANARY}");
    let no_prefix = format!("{CANARY}:{canary_b64}");
    let bad_version = format!("vault:v{CANARY}:{canary_b64}");
    let mut echoed = Vec::new();
    for bad in [&tampered, &fake, &not_b64, &no_prefix, &bad_version] {
        for (path, body) in [
            ("transit/decrypt/leak", json!({"ciphertext": bad})),
            ("transit/rewrap/leak", json!({"ciphertext": bad})),
            ("transit/decrypt/leak", json!({"batch_input": [{"ciphertext": bad}]})),
            ("transit/decrypt/no-such-key", json!({"ciphertext": bad})),
        ] {
            let (s, r) = rc.post(path, body).await;
            assert_eq!(s, 400, "{path} {bad}: {r}");
            let text = r.to_string();
            let body_part = bad.rsplit(':').next().unwrap();
            if text.contains(body_part) || text.contains(CANARY) || text.contains(&canary_b64) {
                echoed.push(format!("{path}: {text}"));
            }
        }
    }
    assert!(echoed.is_empty(), "error messages echo the ciphertext:\n{}", echoed.join("\n"));
    // A plaintext that is not base64 is not echoed either.
    let (s, r) = rc.post("transit/encrypt/leak", json!({"plaintext": CANARY})).await;
    assert_eq!(s, 400, "{r}");
    assert!(!r.to_string().contains(CANARY), "the plaintext is echoed: {r}");

    // The log: none of it.
    let logs = v.srv.log_text();
    assert!(logs.contains("transit/encrypt/leak"), "access log missing: is the log captured?\n{logs}");
    for (what, s) in &secrets {
        assert!(!logs.contains(s.as_str()), "{what} found in the server log");
    }
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
    // Nor the store: plaintext or key material.
    let raw = v.store.raw_bytes();
    assert!(!contains(&raw, CANARY.as_bytes()), "plaintext canary at rest");
    for (what, s) in &secrets {
        assert!(!contains(&raw, s.as_bytes()), "{what} at rest");
    }
}

#[tokio::test]
async fn secrets_never_leak_sqlite() {
    no_leaks(Backend::Sqlite).await;
}

#[tokio::test]
async fn secrets_never_leak_postgres() {
    no_leaks(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 8. Bad input
// ---------------------------------------------------------------------------

async fn bad_input(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "k", json!({})).await;
    create_key(rc, "h", json!({"type": "hmac"})).await;
    let long = "a".repeat(300);
    let huge = "1".repeat(40);
    let cases: Vec<(&str, String, Value)> = vec![
        ("non-base64 plaintext", "transit/encrypt/k".into(), json!({"plaintext": "not base64 !!"})),
        ("plaintext not a string", "transit/encrypt/k".into(), json!({"plaintext": {"a": 1}})),
        ("no plaintext", "transit/encrypt/k".into(), json!({})),
        ("non-base64 context", "transit/encrypt/k".into(), json!({"plaintext": "", "context": "!!"})),
        ("batch_input a string", "transit/encrypt/k".into(), json!({"batch_input": "x"})),
        ("batch_input an object", "transit/encrypt/k".into(), json!({"batch_input": {"plaintext": "eA=="}})),
        ("batch_input a number", "transit/decrypt/k".into(), json!({"batch_input": 5})),
        ("batch_input empty", "transit/encrypt/k".into(), json!({"batch_input": []})),
        ("batch_input items not objects", "transit/encrypt/k".into(), json!({"batch_input": [1, "a"]})),
        ("batch_input item a list", "transit/decrypt/k".into(), json!({"batch_input": [["vault:v1:AAAA"]]})),
        ("batch_input item null", "transit/rewrap/k".into(), json!({"batch_input": [null]})),
        ("key name of 300 chars", format!("transit/keys/{long}"), json!({})),
        ("encrypt with a 300-char name", format!("transit/encrypt/{long}"), json!({"plaintext": "eA=="})),
        ("key name with a space", "transit/keys/a%20b".into(), json!({})),
        ("key name with a percent-encoded slash", "transit/keys/a%2Fb".into(), json!({})),
        ("key name with '/'", "transit/keys/a/b".into(), json!({})),
        ("unknown type", "transit/keys/t1".into(), json!({"type": "aes512-gcm"})),
        ("rsa type", "transit/keys/t2".into(), json!({"type": "rsa-2048"})),
        ("type not a string", "transit/keys/t3".into(), json!({"type": ["aes256-gcm96"]})),
        ("convergent without derived", "transit/keys/t4".into(), json!({"convergent_encryption": true})),
        // Vault: "key type ed25519 not supported for this operation", and no key.
        ("upsert of a signing type", "transit/encrypt/up-ed".into(), json!({"type": "ed25519", "plaintext": "eA=="})),
        ("upsert of an hmac type", "transit/encrypt/up-hmac".into(), json!({"type": "hmac", "plaintext": "eA=="})),
        ("upsert of an unknown type", "transit/encrypt/up-x".into(), json!({"type": "nope", "plaintext": "eA=="})),
        ("bits=100 on datakey", "transit/datakey/plaintext/k".into(), json!({"bits": 100})),
        ("bits=-256 on datakey", "transit/datakey/wrapped/k".into(), json!({"bits": -256})),
        ("datakey type", "transit/datakey/secret/k".into(), json!({})),
        ("random bytes=0", "transit/random".into(), json!({"bytes": 0})),
        ("random bytes=10^9", "transit/random".into(), json!({"bytes": 1_000_000_000u64})),
        ("random bytes=-1", "transit/random".into(), json!({"bytes": -1})),
        ("random/0", "transit/random/0".into(), json!({})),
        ("random/1000000000", "transit/random/1000000000".into(), json!({})),
        ("random/huge", format!("transit/random/{huge}"), json!({})),
        ("random format", "transit/random".into(), json!({"format": "base32"})),
        ("hmac key_size 16", "transit/keys/h16".into(), json!({"type": "hmac", "key_size": 16})),
        ("hmac key_size 513", "transit/keys/h513".into(), json!({"type": "hmac", "key_size": 513})),
        ("hmac key_size 2^40", "transit/keys/hbig".into(), json!({"type": "hmac", "key_size": 1u64 << 40})),
        ("key_size on aes", "transit/keys/aes-size".into(), json!({"key_size": 32})),
        ("auto_rotate_period=10s", "transit/keys/ar".into(), json!({"auto_rotate_period": "10s"})),
        ("auto_rotate_period=10s on config", "transit/keys/k/config".into(), json!({"auto_rotate_period": "10s"})),
        ("auto_rotate_period=-1h", "transit/keys/k/config".into(), json!({"auto_rotate_period": "-1h"})),
        ("huge key_version", "transit/encrypt/k".into(), json!({"plaintext": "eA==", "key_version": 1u64 << 40})),
        ("key_version 10^40", "transit/encrypt/k".into(), json!({"plaintext": "eA==", "key_version": huge})),
        ("key_version 1e30", "transit/encrypt/k".into(), json!({"plaintext": "eA==", "key_version": 1e30})),
        ("negative key_version", "transit/encrypt/k".into(), json!({"plaintext": "eA==", "key_version": -1})),
        ("u32::MAX key_version", "transit/encrypt/k".into(), json!({"plaintext": "eA==", "key_version": u32::MAX})),
        (
            "huge key_version on rewrap",
            "transit/rewrap/k".into(),
            json!({"ciphertext": "x", "key_version": 1u64 << 40}),
        ),
        ("huge key_version on hmac", "transit/hmac/k".into(), json!({"input": "eA==", "key_version": 1u64 << 40})),
        ("huge key_version on datakey", "transit/datakey/plaintext/k".into(), json!({"key_version": 1u64 << 40})),
        ("huge min_decryption_version", "transit/keys/k/config".into(), json!({"min_decryption_version": 1u64 << 40})),
        ("negative min_decryption_version", "transit/keys/k/config".into(), json!({"min_decryption_version": -1})),
        ("huge min_available_version", "transit/keys/k/trim".into(), json!({"min_available_version": 1u64 << 40})),
        ("hash algorithm", "transit/hash/md5".into(), json!({"input": "eA=="})),
        ("hmac algorithm", "transit/hmac/k/md5".into(), json!({"input": "eA=="})),
        ("sign with an AES key", "transit/sign/k".into(), json!({"input": "eA=="})),
        ("export type", "transit/export/private-key/k".into(), json!(null)),
        ("config of a missing key", "transit/keys/missing/config".into(), json!({"deletion_allowed": true})),
        ("restore not base64", "transit/restore".into(), json!({"backup": "!!"})),
        ("restore garbage", "transit/restore/x".into(), json!({"backup": b64(b"TK1 garbage")})),
        ("restore nothing", "transit/restore".into(), json!({})),
    ];
    let mut failures = Vec::new();
    for (what, path, body) in &cases {
        let (s, r) = if body.is_null() { rc.get(path).await } else { rc.post(path, body.clone()).await };
        let shape = (400..500).contains(&s)
            && r["errors"].as_array().is_some_and(|l| !l.is_empty())
            && r.get("data").is_none_or(Value::is_null);
        if !shape {
            failures.push(format!("{what}: POST {path} {body} -> {s} {r}"));
        }
    }
    // In a batch, a bad item is that item's error (Vault's batch shape).
    for path in ["transit/encrypt/k", "transit/rewrap/k"] {
        let item = json!({"plaintext": "eA==", "ciphertext": "vault:v1:AAAA", "key_version": 1u64 << 40});
        let (s, r) = rc.post(path, json!({"batch_input": [item]})).await;
        let err = r["data"]["batch_results"][0]["error"].as_str().unwrap_or("");
        if s != 400 || err.is_empty() {
            failures.push(format!("huge key_version in a batch: POST {path} -> {s} {r}"));
        }
    }
    // `..` and `.` segments, sent as they are (reqwest would resolve them).
    for path in ["/v1/transit/keys/..", "/v1/transit/keys/.", "/v1/transit/encrypt/..", "/v1/transit/keys/../keys/k"] {
        let (s, r) = RawHttp::request(v.srv.addr, "POST", path, Some(&v.root), b"{}").await;
        if !((400..500).contains(&s) && r["errors"].as_array().is_some_and(|l| !l.is_empty())) {
            failures.push(format!("{path} -> {s} {r}"));
        }
    }
    // Not JSON at all.
    let (s, r) = RawHttp::request(v.srv.addr, "POST", "/v1/transit/encrypt/k", Some(&v.root), b"{not json").await;
    if s != 400 {
        failures.push(format!("a body that is not JSON -> {s} {r}"));
    }
    assert!(failures.is_empty(), "not a 4xx in the errors shape:\n{}", failures.join("\n"));
    let k = read_key(rc, "k").await;
    assert_eq!((k["auto_rotate_period"].as_u64(), k["min_decryption_version"].as_u64()), (Some(0), Some(1)), "{k}");
    let logs = v.srv.log_text();
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
    // Nothing was created by a refused request.
    let (s, r) = rc.list("transit/keys").await;
    assert_eq!(s, 200, "{r}");
    let mut names: Vec<&str> = r["data"]["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["h", "k"], "a refused request created a key: {names:?}");
}

#[tokio::test]
async fn bad_input_is_4xx_sqlite() {
    bad_input(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_input_is_4xx_postgres() {
    bad_input(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 9. Export, backup and restore
// ---------------------------------------------------------------------------

async fn backup_restore(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "bk", json!({"exportable": true, "allow_plaintext_backup": true, "type": "chacha20-poly1305"}))
        .await;
    let (c1, _) = encrypt(rc, "bk", b"old one", json!({})).await;
    rotate(rc, "bk").await;
    let (c2, v2) = encrypt(rc, "bk", b"old two", json!({})).await;
    assert_eq!(v2, 2);
    let (s, r) = rc.get("transit/export/encryption-key/bk").await;
    assert_eq!(s, 200, "{r}");
    let exported = r["data"]["keys"].clone();
    assert_eq!(exported.as_object().unwrap().len(), 2, "{r}");
    assert_eq!(unb64(exported["1"].as_str().unwrap()).len(), 32, "{r}");
    let (s, r) = rc.get("transit/export/encryption-key/bk/1").await;
    assert_eq!((s, &r["data"]["keys"]), (200, &json!({"1": exported["1"]})), "{r}");
    let (s, r) = rc.get("transit/export/encryption-key/bk/latest").await;
    assert_eq!((s, &r["data"]["keys"]), (200, &json!({"2": exported["2"]})), "{r}");
    let (s, r) = rc.get("transit/export/encryption-key/bk/3").await;
    assert_eq!(s, 400, "a version that does not exist: {r}");

    let (s, r) = rc.get("transit/backup/bk").await;
    assert_eq!(s, 200, "backup: {r}");
    let backup = r["data"]["backup"].as_str().unwrap().to_string();

    let (s, r) = config(rc, "bk", json!({"deletion_allowed": true})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = rc.delete("transit/keys/bk").await;
    assert_eq!(s, 204, "{r}");
    let (s, r) = decrypt(rc, "bk", &c1, json!({})).await;
    assert_eq!(s, 400, "deleted: {r}");
    assert!(errors(&r).contains("encryption key not found"), "{r}");

    let (s, r) = rc.post("transit/restore", json!({"backup": backup})).await;
    assert_eq!(s, 204, "restore: {r}");
    assert_eq!(decrypt_ok(rc, "bk", &c1, json!({})).await, b"old one");
    assert_eq!(decrypt_ok(rc, "bk", &c2, json!({})).await, b"old two");
    let k = read_key(rc, "bk").await;
    assert_eq!((k["latest_version"].as_u64(), k["type"].as_str()), (Some(2), Some("chacha20-poly1305")), "{k}");
    let (_, r) = rc.get("transit/export/encryption-key/bk").await;
    assert_eq!(r["data"]["keys"], exported, "the same key material");
    let (_, v3) = encrypt(rc, "bk", b"new", json!({})).await;
    assert_eq!(v3, 2);

    // Restoring over an existing key needs force.
    let (s, r) = rc.post("transit/restore", json!({"backup": backup})).await;
    assert_eq!(s, 400, "restore over an existing key: {r}");
    rotate(rc, "bk").await;
    let (s, r) = rc.post("transit/restore/bk", json!({"backup": backup, "force": true})).await;
    assert_eq!(s, 204, "forced restore: {r}");
    assert_eq!(read_key(rc, "bk").await["latest_version"], 2, "the forced restore replaced the key");
    // Under another name.
    let (s, r) = rc.post("transit/restore/bk-copy", json!({"backup": backup})).await;
    assert_eq!(s, 204, "restore under another name: {r}");
    assert_eq!(decrypt_ok(rc, "bk-copy", &c1, json!({})).await, b"old one");
    assert_eq!(read_key(rc, "bk-copy").await["name"], "bk-copy");

    // Without the flags: no backup, no export.
    create_key(rc, "plain", json!({})).await;
    for path in ["transit/backup/plain", "transit/export/encryption-key/plain", "transit/export/hmac-key/plain"] {
        let (s, r) = rc.get(path).await;
        assert_eq!(s, 400, "{path}: {r}");
        assert_client_error(s, &r, path);
    }
    create_key(rc, "exp-only", json!({"exportable": true})).await;
    let (s, r) = rc.get("transit/backup/exp-only").await;
    assert_eq!(s, 400, "backup needs allow_plaintext_backup: {r}");
    let (s, r) = rc.get("transit/export/encryption-key/exp-only").await;
    assert_eq!(s, 200, "{r}");
    create_key(rc, "backup-only", json!({"allow_plaintext_backup": true})).await;
    let (s, r) = rc.get("transit/backup/backup-only").await;
    assert_eq!(s, 400, "backup needs exportable: {r}");
    // The flags cannot be switched off: as in Vault, `false` for a flag that
    // is on is ignored (200) and the flag stays on.
    let (s, r) = config(rc, "exp-only", json!({"exportable": false})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(read_key(rc, "exp-only").await["exportable"], true, "exportable stays on");
    assert_eq!(rc.get("transit/export/encryption-key/exp-only").await.0, 200, "still exportable");
    let (s, r) = config(rc, "bk", json!({"allow_plaintext_backup": false, "exportable": false})).await;
    assert_eq!(s, 200, "{r}");
    let k = read_key(rc, "bk").await;
    assert_eq!((&k["exportable"], &k["allow_plaintext_backup"]), (&json!(true), &json!(true)), "{k}");
    assert_eq!(rc.get("transit/backup/bk").await.0, 200, "still backed up");
    // Switched on later, they work.
    let (s, r) = config(rc, "plain", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(rc.get("transit/backup/plain").await.0, 200);
}

#[tokio::test]
async fn backup_restore_round_trip_sqlite() {
    backup_restore(Backend::Sqlite).await;
}

#[tokio::test]
async fn backup_restore_round_trip_postgres() {
    backup_restore(Backend::Postgres).await;
}

/// A backup with its settings (the JSON part of docs/formats.md's record
/// `TK2 | settings_len | settings | ...`, or the older `TK1`) changed by `f`.
fn doctor_backup(backup: &str, f: impl FnOnce(&mut Value)) -> String {
    let raw = unb64(backup);
    assert!(&raw[..3] == b"TK2" || &raw[..3] == b"TK1", "backup format");
    let len = u32::from_be_bytes(raw[3..7].try_into().unwrap()) as usize;
    let mut settings: Value = serde_json::from_slice(&raw[7..7 + len]).unwrap();
    f(&mut settings);
    let json = serde_json::to_vec(&settings).unwrap();
    let mut out = raw[..3].to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&raw[7 + len..]);
    b64(&out)
}

/// A backup is caller input: one whose settings do not fit its key material
/// (a ChaCha20 key relabelled as another type) or that names an invalid key
/// must be refused at restore with a 400, and no request on what was
/// restored may ever answer 500.
async fn restore_validates(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "src", json!({"exportable": true, "allow_plaintext_backup": true, "type": "chacha20-poly1305"}))
        .await;
    let (s, r) = rc.get("transit/backup/src").await;
    assert_eq!(s, 200, "{r}");
    let backup = r["data"]["backup"].as_str().unwrap().to_string();
    let mut failures = Vec::new();

    // Refused outright (name checks, unknown types, truncation).
    let refused = [
        ("name with '/'", doctor_backup(&backup, |s| s["name"] = json!("a/b"))),
        ("name '..'", doctor_backup(&backup, |s| s["name"] = json!(".."))),
        ("name of 300 chars", doctor_backup(&backup, |s| s["name"] = json!("n".repeat(300)))),
        ("rsa type", doctor_backup(&backup, |s| s["type"] = json!("rsa-2048"))),
        ("truncated", b64(&unb64(&backup)[..unb64(&backup).len() - 5])),
    ];
    for (what, b) in &refused {
        let (s, r) = rc.post("transit/restore", json!({"backup": b})).await;
        if s != 400 {
            failures.push(format!("restore of a backup with {what}: {s} {r}"));
        }
    }

    // Another type over the same material: ChaCha20-Poly1305 holds 32 + 32
    // bytes (key, HMAC key); an ecdsa-p384 version holds 48 + 32 and an
    // aes128-gcm96 one 16 + 32, so those two cannot fit and must be refused.
    // ecdsa-p256 and hmac have the same length (the server cannot tell):
    // accepted or not, nothing may answer 500.
    for (i, (kt, fits)) in
        [("ecdsa-p384", false), ("aes128-gcm96", false), ("ecdsa-p256", true), ("hmac", true)].into_iter().enumerate()
    {
        let name = format!("relabelled-{i}");
        let b = doctor_backup(&backup, |s| s["type"] = json!(kt));
        let (s, r) = rc.post(&format!("transit/restore/{name}"), json!({"backup": b})).await;
        if s == 400 {
            continue;
        }
        // Accepted: whatever it is, nothing on it may be an internal error.
        let mut answers = vec![(format!("restore as {kt}"), s, r)];
        for (op, path, body) in [
            ("read", format!("transit/keys/{name}"), Value::Null),
            ("export hmac-key", format!("transit/export/hmac-key/{name}"), Value::Null),
            ("export encryption-key", format!("transit/export/encryption-key/{name}"), Value::Null),
            ("export signing-key", format!("transit/export/signing-key/{name}"), Value::Null),
            ("backup", format!("transit/backup/{name}"), Value::Null),
            ("encrypt", format!("transit/encrypt/{name}"), json!({"plaintext": b64(b"x")})),
            ("hmac", format!("transit/hmac/{name}"), json!({"input": b64(b"x")})),
            ("sign", format!("transit/sign/{name}"), json!({"input": b64(b"x")})),
            ("rotate", format!("transit/keys/{name}/rotate"), json!({})),
        ] {
            let (s, r) = if body.is_null() { rc.get(&path).await } else { rc.post(&path, body).await };
            answers.push((format!("{op} of a chacha20 key restored as {kt}"), s, r));
        }
        for (what, s, r) in answers {
            if s >= 500 {
                failures.push(format!("{what}: {s} {r}"));
            }
        }
        if !fits {
            failures.push(format!("restore of a chacha20-poly1305 backup relabelled {kt} was accepted (expected 400)"));
        }
    }
    assert!(failures.is_empty(), "restore trusts the backup:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn restore_validates_backups_sqlite() {
    restore_validates(Backend::Sqlite).await;
}

#[tokio::test]
async fn restore_validates_backups_postgres() {
    restore_validates(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 10. Property test: the round trip through HTTP
// ---------------------------------------------------------------------------

fn round_trip_property(backend: Backend) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let v = rt.block_on(async {
        let v = vault(backend).await;
        for kt in AEAD_TYPES {
            create_key(&v.rc, &format!("prop-{kt}"), json!({"type": kt, "derived": true})).await;
        }
        v
    });
    let rc = v.rc.clone();
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    let strategy = (
        0..AEAD_TYPES.len(),
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(any::<u8>(), 1..80),
        proptest::collection::vec(any::<u8>(), 0..80),
    );
    runner
        .run(&strategy, |(kt, plaintext, context, aad)| {
            let key = format!("prop-{}", AEAD_TYPES[kt]);
            rt.block_on(async {
                let extra = json!({"context": b64(&context), "associated_data": b64(&aad)});
                let mut body = json!({"plaintext": b64(&plaintext)});
                body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                let (s, r) = rc.post(&format!("transit/encrypt/{key}"), body).await;
                prop_assert_eq!(s, 200, "encrypt: {}", r);
                let ct = r["data"]["ciphertext"].as_str().unwrap().to_string();
                let (s, r) = decrypt(&rc, &key, &ct, extra.clone()).await;
                prop_assert_eq!(s, 200, "decrypt: {}", r);
                prop_assert_eq!(unb64(r["data"]["plaintext"].as_str().unwrap()), plaintext.clone());
                // Another context or other associated data: refused.
                let mut other_ctx = context.clone();
                other_ctx[0] ^= 1;
                let (s, r) =
                    decrypt(&rc, &key, &ct, json!({"context": b64(&other_ctx), "associated_data": b64(&aad)})).await;
                prop_assert_eq!(s, 400, "another context: {}", r);
                let mut other_aad = aad.clone();
                other_aad.push(0);
                let (s, r) =
                    decrypt(&rc, &key, &ct, json!({"context": b64(&context), "associated_data": b64(&other_aad)}))
                        .await;
                prop_assert_eq!(s, 400, "other associated data: {}", r);
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap_or_else(|e| panic!("round trip property failed: {e}"));
    let logs = v.srv.log_text();
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
    drop(rc);
    rt.block_on(async move { drop(v) });
}

#[test]
fn round_trip_property_sqlite() {
    round_trip_property(Backend::Sqlite);
}

#[test]
fn round_trip_property_postgres() {
    round_trip_property(Backend::Postgres);
}

// ---------------------------------------------------------------------------
// 11. Vault's shape of key reads and deletes
// ---------------------------------------------------------------------------

/// What Vault (and OpenBao) answer, checked field by field: no `keys` for an
/// hmac key, `certificate_chain: ""` in asymmetric version entries,
/// `convergent_encryption_version: -1`, a derived ed25519 key's public key
/// for `?context=`, and 400 "could not delete key; not found" for the delete
/// of a missing key.
async fn key_read_shape(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;

    create_key(rc, "hm", json!({"type": "hmac", "key_size": 64})).await;
    let k = read_key(rc, "hm").await;
    assert!(k.get("keys").is_none(), "Vault lists no versions for an hmac key: {k}");
    assert_eq!((&k["key_size"], &k["latest_version"]), (&json!(64), &json!(1)), "{k}");

    for kt in ["ed25519", "ecdsa-p256", "ecdsa-p384"] {
        let k = create_key(rc, kt, json!({"type": kt})).await;
        let entry = &k["keys"]["1"];
        assert_eq!(entry["certificate_chain"], "", "{kt}: certificate_chain in the version entry: {k}");
        assert!(entry["public_key"].as_str().is_some_and(|p| !p.is_empty()), "{kt}: {k}");
    }
    let k = create_key(rc, "aes", json!({})).await;
    assert!(k["keys"]["1"].is_u64(), "a symmetric version is its Unix creation time: {k}");
    assert!(k.get("convergent_encryption_version").is_none() && k.get("kdf").is_none(), "{k}");

    let k = create_key(rc, "conv", json!({"derived": true, "convergent_encryption": true})).await;
    assert_eq!(
        (&k["convergent_encryption"], &k["convergent_encryption_version"], &k["kdf"]),
        (&json!(true), &json!(-1), &json!("hkdf_sha256")),
        "{k}"
    );
    let k = create_key(rc, "derived", json!({"derived": true})).await;
    assert!(k.get("convergent_encryption_version").is_none(), "not convergent: {k}");

    // A derived ed25519 key: no public key without a context; with one, that
    // context's key (32 bytes), the same on every read, another per context.
    let k = create_key(rc, "ed-derived", json!({"type": "ed25519", "derived": true})).await;
    assert_eq!(k["keys"]["1"]["public_key"], "", "{k}");
    let mut keys = Vec::new();
    for ctx in ["alice", "alice", "bob"] {
        let (s, r) = rc.get(&format!("transit/keys/ed-derived?context={}", b64(ctx.as_bytes()))).await;
        assert_eq!(s, 200, "{r}");
        let public = r["data"]["keys"]["1"]["public_key"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
        assert_eq!(unb64(&public).len(), 32, "{ctx}: {r}");
        keys.push(public);
    }
    assert_eq!(keys[0], keys[1], "one context, one public key");
    assert_ne!(keys[0], keys[2], "two contexts, two public keys");
    let (s, r) = rc.get("transit/keys/ed-derived?context=!!").await;
    assert_eq!(s, 400, "a context that is not base64: {r}");

    // Delete of a key that does not exist: Vault's 400.
    let (s, r) = rc.delete("transit/keys/never-existed").await;
    assert_eq!(s, 400, "{r}");
    assert_client_error(s, &r, "delete of a missing key");
    assert!(errors(&r).contains("could not delete key; not found"), "{r}");
    // Deleted once, the second delete is a delete of a missing key too.
    config(rc, "aes", json!({"deletion_allowed": true})).await;
    assert_eq!(rc.delete("transit/keys/aes").await.0, 204);
    let (s, r) = rc.delete("transit/keys/aes").await;
    assert_eq!(s, 400, "second delete: {r}");
    assert!(errors(&r).contains("could not delete key; not found"), "{r}");
}

#[tokio::test]
async fn key_read_shape_sqlite() {
    key_read_shape(Backend::Sqlite).await;
}

#[tokio::test]
async fn key_read_shape_postgres() {
    key_read_shape(Backend::Postgres).await;
}
