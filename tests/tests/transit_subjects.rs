//! Transit subject keys (crypto-shredding, beyond Vault:
//! `vault-server/src/engines/transit/subjects.rs`) end to end, through the
//! real binary and HTTP API, on SQLite and PostgreSQL: destroying one subject
//! leaves the others (single, batch, rewrap, document fields); ciphertexts
//! name no subject and cannot be moved to another; subjects and their
//! destruction survive a restart and a seal; a destroy on one server is seen
//! by another sharing its PostgreSQL; backups carry tombstones and a restore
//! never brings a destroyed subject back; bad input and tampered subject tags
//! are a 400, never a 500; subject names stay out of the logs and the store;
//! policies on `transit/subjects/...`; concurrent first uses make one key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, contains};

// ---------------------------------------------------------------------------
// Helpers (copied from transit.rs, plus subject ones)
// ---------------------------------------------------------------------------

struct Vault {
    store: Store,
    srv: ServerProc,
    rc: Client,
    keys: Vec<String>,
    root: String,
}

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

/// A decryption that must fail: 400 in Vault's error shape.
fn assert_refused(s: u16, v: &Value, what: &str) {
    assert_eq!(s, 400, "{what}: expected 400, got {s}: {v}");
    assert_client_error(s, v, what);
}

/// Refused because the subject's key was destroyed.
fn assert_destroyed(s: u16, v: &Value, what: &str) {
    assert_refused(s, v, what);
    assert!(errors(v).contains("destroyed"), "{what}: expected a 'destroyed' error: {v}");
}

async fn create_key(rc: &Client, name: &str, body: Value) -> Value {
    let (s, v) = rc.post(&format!("transit/keys/{name}"), body).await;
    assert_eq!(s, 200, "create key {name}: {v}");
    v["data"].clone()
}

async fn rotate(rc: &Client, key: &str) -> Value {
    let (s, v) = rc.post(&format!("transit/keys/{key}/rotate"), json!({})).await;
    assert_eq!(s, 200, "rotate {key}: {v}");
    v["data"].clone()
}

async fn config(rc: &Client, key: &str, body: Value) -> (u16, Value) {
    rc.post(&format!("transit/keys/{key}/config"), body).await
}

fn with_extra(mut body: Value, extra: Value) -> Value {
    if let Value::Object(m) = extra {
        body.as_object_mut().unwrap().extend(m);
    }
    body
}

/// Encrypt for `subject` (or none): (ciphertext, key_version).
async fn encrypt(rc: &Client, key: &str, plaintext: &[u8], subject: Option<&str>) -> (String, u64) {
    let extra = subject.map_or(json!({}), |s| json!({"subject": s}));
    let (s, v) =
        rc.post(&format!("transit/encrypt/{key}"), with_extra(json!({"plaintext": b64(plaintext)}), extra)).await;
    assert_eq!(s, 200, "encrypt with {key} for {subject:?}: {v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap_or_else(|| panic!("no ciphertext: {v}")).to_string();
    let version = v["data"]["key_version"].as_u64().unwrap_or_else(|| panic!("no key_version: {v}"));
    assert!(ct.starts_with(&format!("vault:v{version}:")), "{ct} vs key_version {version}");
    assert_eq!(tag_of(&ct).is_some(), subject.is_some(), "a subject tag iff a subject: {ct}");
    (ct, version)
}

async fn decrypt(rc: &Client, key: &str, ciphertext: &str, extra: Value) -> (u16, Value) {
    rc.post(&format!("transit/decrypt/{key}"), with_extra(json!({"ciphertext": ciphertext}), extra)).await
}

async fn decrypt_ok(rc: &Client, key: &str, ciphertext: &str, extra: Value) -> Vec<u8> {
    let (s, v) = decrypt(rc, key, ciphertext, extra).await;
    assert_eq!(s, 200, "decrypt {ciphertext} with {key}: {v}");
    unb64(v["data"]["plaintext"].as_str().unwrap_or_else(|| panic!("no plaintext: {v}")))
}

fn results(v: &Value) -> &Vec<Value> {
    v["data"]["batch_results"].as_array().unwrap_or_else(|| panic!("no batch_results: {v}"))
}

/// The subject tag of a ciphertext (`s{G}.{id}` of `vault:v{N}:s{G}.{id}:{base64}`).
fn tag_of(ct: &str) -> Option<String> {
    let rest = ct.strip_prefix("vault:v")?;
    let (_, body) = rest.split_once(':')?;
    body.split_once(':').map(|(t, _)| t.to_string())
}

/// The parts of a subject ciphertext: (version, generation, id (base64url), body).
fn split_subject_ct(ct: &str) -> (u64, u32, String, String) {
    let rest = ct.strip_prefix("vault:v").unwrap_or_else(|| panic!("not a vault ciphertext: {ct}"));
    let (v, rest) = rest.split_once(':').unwrap();
    let (tag, body) = rest.split_once(':').unwrap_or_else(|| panic!("no subject tag: {ct}"));
    let (g, id) = tag.strip_prefix('s').and_then(|t| t.split_once('.')).unwrap_or_else(|| panic!("bad tag: {ct}"));
    (v.parse().unwrap(), g.parse().unwrap(), id.to_string(), body.to_string())
}

/// A well-formed subject ciphertext: `vault:v{N}:s{G}.{22 base64url chars}:{base64}`.
fn assert_subject_ct(ct: &str, version: u64, generation: u32) -> String {
    let (v, g, id, body) = split_subject_ct(ct);
    assert_eq!((v, g), (version, generation), "version and generation of {ct}");
    assert_eq!(id.len(), 22, "a 16-byte id in base64url without padding: {ct}");
    assert_eq!(B64URL.decode(&id).map(|b| b.len()).ok(), Some(16), "{ct}");
    assert!(!unb64(&body).is_empty(), "{ct}");
    id
}

/// The hex id `GET subjects/...` shows for a base64url tag id.
fn hex_id(b64url_id: &str) -> String {
    hex::encode(B64URL.decode(b64url_id).unwrap())
}

/// A subject name must not show in a ciphertext, plainly or encoded.
fn assert_name_absent(ct: &str, subject: &str) {
    for enc in [subject.to_string(), b64(subject.as_bytes()), B64URL.encode(subject.as_bytes()), hex::encode(subject)] {
        assert!(!ct.contains(&enc), "the subject {subject:?} shows in the ciphertext {ct}");
    }
}

/// Percent-encode every byte but the unreserved ones, for a path segment.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn read_subject(rc: &Client, key: &str, subject: &str) -> (u16, Value) {
    rc.get(&format!("transit/subjects/{key}/{}", pct(subject))).await
}

async fn destroy(rc: &Client, key: &str, subject: &str) {
    let (s, v) = rc.delete(&format!("transit/subjects/{key}/{}", pct(subject))).await;
    assert_eq!(s, 204, "destroy {subject:?} of {key}: {v}");
    assert!(v.is_null(), "204 with a body: {v}");
}

/// The live subjects of `key` (LIST): sorted names, or empty when none (404).
async fn list_subjects(rc: &Client, key: &str) -> Vec<String> {
    let (s, v) = rc.list(&format!("transit/subjects/{key}")).await;
    if s == 404 {
        return Vec::new();
    }
    assert_eq!(s, 200, "LIST subjects of {key}: {v}");
    let names: Vec<String> = v["data"]["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    let info = v["data"]["key_info"].as_object().unwrap_or_else(|| panic!("no key_info: {v}"));
    assert_eq!(info.len(), names.len(), "{v}");
    for n in &names {
        assert_eq!(info[n]["subject"], json!(n), "{v}");
        assert_eq!(info[n]["destroyed"], false, "only live subjects are listed: {v}");
    }
    // The same through GET ?list=true.
    let (s2, v2) = rc.get(&format!("transit/subjects/{key}?list=true")).await;
    assert_eq!((s2, &v2["data"]["keys"]), (200, &v["data"]["keys"]), "GET ?list=true: {v2}");
    names
}

async fn token_with(rc: &Client, name: &str, policy: &str) -> String {
    let (s, v) = rc.put(&format!("sys/policies/acl/{name}"), json!({"policy": policy})).await;
    assert_eq!(s, 204, "policy {name}: {v}");
    let (s, v) = rc.post("auth/token/create", json!({"policies": [name]})).await;
    assert_eq!(s, 200, "token for {name}: {v}");
    token_of(&v)
}

/// How long another server may take to see a change (the change feed is
/// asynchronous, as in transit.rs).
const FEED_BOUND: Duration = Duration::from_secs(5);

/// Poll `f` until it returns `Ok`, at most `bound`: (value, attempts, elapsed).
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

fn assert_no_panic(srv: &ServerProc) {
    let logs = srv.log_text();
    assert!(!logs.contains("panicked"), "server panicked:\n{logs}");
}

// ---------------------------------------------------------------------------
// 1. Shredding one subject leaves the others
// ---------------------------------------------------------------------------

const ALICE: &str = "alice.7f3e@example.com";
const BOB: &str = "bob.41aa@example.com";
const CAROL: &str = "carol.c0de@example.com";
const DAVE: &str = "dave.d00d@example.com";
const ERIN: &str = "erin.e21e@example.com";

async fn shredding(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "pii", json!({})).await;

    // Single encrypts: a tag per subject, the same for every message of one
    // subject, no name in it.
    let (a1, _) = encrypt(rc, "pii", b"alice one", Some(ALICE)).await;
    let (a2, _) = encrypt(rc, "pii", b"alice two", Some(ALICE)).await;
    let (b1, _) = encrypt(rc, "pii", b"bob one", Some(BOB)).await;
    let (plain, _) = encrypt(rc, "pii", b"nobody's", None).await;
    let alice_id = assert_subject_ct(&a1, 1, 1);
    assert_eq!(assert_subject_ct(&a2, 1, 1), alice_id, "one subject, one id");
    let bob_id = assert_subject_ct(&b1, 1, 1);
    assert_ne!(alice_id, bob_id, "two subjects, two ids");
    assert_ne!(a1, a2, "random nonces");
    for (ct, name) in [(&a1, ALICE), (&a2, ALICE), (&b1, BOB)] {
        assert_name_absent(ct, name);
        assert_name_absent(ct, name.split('@').next().unwrap());
    }
    // Other AEAD types too.
    for kt in ["chacha20-poly1305", "xchacha20-poly1305"] {
        let name = format!("pii-{kt}");
        create_key(rc, &name, json!({"type": kt})).await;
        let (ct, _) = encrypt(rc, &name, b"other type", Some(ALICE)).await;
        let id = assert_subject_ct(&ct, 1, 1);
        assert_ne!(id, alice_id, "{kt}: ids are per named key");
        assert_eq!(decrypt_ok(rc, &name, &ct, json!({})).await, b"other type", "{kt}");
    }

    // Decrypt: the ciphertext names its subject; naming it is optional but
    // must be right.
    assert_eq!(decrypt_ok(rc, "pii", &a1, json!({})).await, b"alice one");
    assert_eq!(decrypt_ok(rc, "pii", &a1, json!({"subject": ALICE})).await, b"alice one");
    assert_eq!(decrypt_ok(rc, "pii", &b1, json!({"subject": BOB})).await, b"bob one");
    assert_eq!(decrypt_ok(rc, "pii", &plain, json!({})).await, b"nobody's");
    let (s, r) = decrypt(rc, "pii", &a1, json!({"subject": BOB})).await;
    assert_refused(s, &r, "alice's ciphertext with subject bob");
    assert!(errors(&r).contains("different subject"), "{r}");
    assert!(!r.to_string().contains(BOB) && !r.to_string().contains(ALICE), "the error names a subject: {r}");
    let (s, r) = decrypt(rc, "pii", &a1, json!({"subject": "never-used"})).await;
    assert_refused(s, &r, "alice's ciphertext with a subject never used");
    let (s, r) = decrypt(rc, "pii", &plain, json!({"subject": ALICE})).await;
    assert_refused(s, &r, "a plain ciphertext with a subject");
    // A ciphertext moved to another subject's tag (or stripped of its tag)
    // does not open: the subject key is mixed into the message key.
    let (_, _, _, a1_body) = split_subject_ct(&a1);
    for (what, moved) in [
        ("alice's body under bob's tag", format!("vault:v1:s1.{bob_id}:{a1_body}")),
        ("alice's body without a tag", format!("vault:v1:{a1_body}")),
        ("a plain body under alice's tag", format!("vault:v1:s1.{alice_id}:{}", plain.rsplit(':').next().unwrap())),
    ] {
        let (s, r) = decrypt(rc, "pii", &moved, json!({})).await;
        assert_refused(s, &r, what);
    }
    // Another named key does not open it.
    create_key(rc, "other", json!({})).await;
    let (s, r) = decrypt(rc, "other", &a1, json!({})).await;
    assert_refused(s, &r, "alice's ciphertext to another key");

    // GET and LIST.
    let (s, r) = read_subject(rc, "pii", ALICE).await;
    assert_eq!(s, 200, "{r}");
    let d = &r["data"];
    assert_eq!((&d["generation"], &d["destroyed"], &d["subject"]), (&json!(1), &json!(false), &json!(ALICE)), "{r}");
    assert_eq!(d["id"], hex_id(&alice_id), "the id GET shows is the ciphertext's: {r}");
    assert!(d["created_time"].as_str().is_some_and(|t| t.contains('T')), "{r}");
    assert!(d.get("destroyed_time").is_none(), "{r}");
    let (s, r) = read_subject(rc, "pii", "never-used").await;
    assert_eq!(s, 404, "a subject never used: {r}");
    assert_eq!(list_subjects(rc, "pii").await, [ALICE, BOB]);

    // Batch: mixed subjects, the request's `subject` as the default, a
    // failing item.
    let (s, r) = rc
        .post(
            "transit/encrypt/pii",
            json!({"subject": DAVE, "batch_input": [
                {"plaintext": b64(b"batch alice"), "subject": ALICE, "reference": "a"},
                {"plaintext": b64(b"batch carol"), "subject": CAROL, "reference": "c"},
                {"plaintext": b64(b"batch dave"), "reference": "d"},
                {"plaintext": b64(b"batch bad"), "subject": "bad/name", "reference": "x"},
                {"plaintext": b64(b"batch plain"), "subject": null, "reference": "n"},
            ]}),
        )
        .await;
    assert_eq!(s, 400, "a batch with a failed item: {r}");
    let res = results(&r);
    assert_eq!(res.len(), 5, "{r}");
    let refs: Vec<&str> = res.iter().map(|i| i["reference"].as_str().unwrap()).collect();
    assert_eq!(refs, ["a", "c", "d", "x", "n"], "{r}");
    assert!(res[3]["error"].as_str().is_some_and(|e| e.contains("invalid subject")), "{r}");
    assert!(res[3].get("ciphertext").is_none(), "{r}");
    let ct = |i: usize| res[i]["ciphertext"].as_str().unwrap_or_else(|| panic!("item {i}: {r}")).to_string();
    let (ba, bc, bd, bn) = (ct(0), ct(1), ct(2), ct(4));
    assert_eq!(assert_subject_ct(&ba, 1, 1), alice_id, "batch item for alice: {r}");
    let carol_id = assert_subject_ct(&bc, 1, 1);
    let dave_id = assert_subject_ct(&bd, 1, 1);
    assert!(carol_id != dave_id && ![&alice_id, &bob_id].contains(&&carol_id), "{r}");
    // An item with `"subject": null` is either plain or the default's (the
    // server treats an explicit null as "no subject"): never another's.
    let n_tag = tag_of(&bn);
    assert!(n_tag.is_none() || n_tag == tag_of(&bd), "null subject item: {bn}");
    assert_eq!(decrypt_ok(rc, "pii", &bn, json!({})).await, b"batch plain");
    for (ct, want) in [(&ba, &b"batch alice"[..]), (&bc, b"batch carol"), (&bd, b"batch dave")] {
        assert_eq!(decrypt_ok(rc, "pii", ct, json!({})).await, want);
    }
    assert_eq!(list_subjects(rc, "pii").await, [ALICE, BOB, CAROL, DAVE], "the batch made carol and dave");
    let (s, r) = read_subject(rc, "pii", DAVE).await;
    assert_eq!((s, &r["data"]["id"]), (200, &json!(hex_id(&dave_id))), "the default subject: {r}");

    // Document fields for a subject.
    let doc = json!({"id": 7, "email": ALICE, "profile": {"age": 41, "tags": ["x"]}});
    let (s, r) = rc
        .post(
            "transit/encrypt-fields/pii",
            json!({"document": doc, "fields": ["/email", "/profile"], "subject": ALICE}),
        )
        .await;
    assert_eq!(s, 200, "encrypt-fields: {r}");
    let enc_doc = r["data"]["document"].clone();
    assert_eq!(enc_doc["id"], 7, "{r}");
    for p in ["/email", "/profile"] {
        let f = enc_doc.pointer(p).and_then(Value::as_str).unwrap_or_else(|| panic!("{p}: {r}"));
        assert_eq!(assert_subject_ct(f, 1, 1), alice_id, "{p}: {r}");
    }
    assert!(!enc_doc.to_string().contains("alice"), "the subject shows in the encrypted document: {enc_doc}");
    let dec_fields = |doc: Value, extra: Value| {
        rc.post(
            "transit/decrypt-fields/pii",
            with_extra(json!({"document": doc, "fields": ["/email", "/profile"]}), extra),
        )
    };
    let (s, r) = dec_fields(enc_doc.clone(), json!({})).await;
    assert_eq!((s, &r["data"]["document"]), (200, &doc), "decrypt-fields: {r}");
    let (s, r) = dec_fields(enc_doc.clone(), json!({"subject": ALICE})).await;
    assert_eq!((s, &r["data"]["document"]), (200, &doc), "decrypt-fields naming the subject: {r}");
    let (s, r) = dec_fields(enc_doc.clone(), json!({"subject": BOB})).await;
    assert_refused(s, &r, "decrypt-fields naming another subject");

    // Rewrap: a subject's ciphertext stays that subject's (new version);
    // naming a subject moves a plain ciphertext under it; naming another
    // subject for a subject's ciphertext is refused.
    assert_eq!(rotate(rc, "pii").await["latest_version"], 2);
    let (s, r) = rc.post("transit/rewrap/pii", json!({"ciphertext": a1})).await;
    assert_eq!(s, 200, "rewrap alice: {r}");
    let a1_v2 = r["data"]["ciphertext"].as_str().unwrap().to_string();
    assert_eq!(assert_subject_ct(&a1_v2, 2, 1), alice_id, "rewrapped, still alice's");
    assert_eq!(decrypt_ok(rc, "pii", &a1_v2, json!({})).await, b"alice one");
    let (s, r) = rc.post("transit/rewrap/pii", json!({"ciphertext": plain, "subject": ERIN})).await;
    assert_eq!(s, 200, "rewrap a plain ciphertext under erin: {r}");
    let erin_ct = r["data"]["ciphertext"].as_str().unwrap().to_string();
    let erin_id = assert_subject_ct(&erin_ct, 2, 1);
    assert!(![&alice_id, &bob_id, &carol_id, &dave_id].contains(&&erin_id), "erin has her own id");
    assert_eq!(decrypt_ok(rc, "pii", &erin_ct, json!({"subject": ERIN})).await, b"nobody's");
    let (s, r) = rc.post("transit/rewrap/pii", json!({"ciphertext": a1, "subject": BOB})).await;
    assert_refused(s, &r, "rewrap of alice's ciphertext naming bob");
    let (s, r) = rc.post("transit/rewrap/pii", json!({"ciphertext": b1, "subject": BOB})).await;
    assert_eq!(s, 200, "rewrap of bob's ciphertext naming bob: {r}");
    assert_eq!(assert_subject_ct(r["data"]["ciphertext"].as_str().unwrap(), 2, 1), bob_id);

    // Destroy alice.
    destroy(rc, "pii", ALICE).await;
    for (what, ct) in [("a1", &a1), ("a2", &a2), ("batch", &ba), ("rewrapped", &a1_v2)] {
        let (s, r) = decrypt(rc, "pii", ct, json!({})).await;
        assert_destroyed(s, &r, &format!("alice's {what} ciphertext after the destroy"));
        let (s, r) = decrypt(rc, "pii", ct, json!({"subject": ALICE})).await;
        assert_destroyed(s, &r, &format!("alice's {what} ciphertext after the destroy, naming her"));
        let (s, r) = rc.post("transit/rewrap/pii", json!({"ciphertext": ct})).await;
        assert_destroyed(s, &r, &format!("rewrap of alice's {what} ciphertext after the destroy"));
    }
    let (s, r) = dec_fields(enc_doc.clone(), json!({})).await;
    assert_destroyed(s, &r, "decrypt-fields of alice's document after the destroy");
    // The others are untouched.
    assert_eq!(decrypt_ok(rc, "pii", &b1, json!({})).await, b"bob one");
    assert_eq!(decrypt_ok(rc, "pii", &bc, json!({})).await, b"batch carol");
    assert_eq!(decrypt_ok(rc, "pii", &bd, json!({})).await, b"batch dave");
    assert_eq!(decrypt_ok(rc, "pii", &erin_ct, json!({})).await, b"nobody's");
    assert_eq!(decrypt_ok(rc, "pii", &plain, json!({})).await, b"nobody's");
    // Batch decrypt: the destroyed item fails alone.
    let items = json!([
        {"ciphertext": b1, "reference": "b"},
        {"ciphertext": a1, "reference": "a"},
        {"ciphertext": bc, "reference": "c"},
        {"ciphertext": plain, "reference": "p"},
    ]);
    let (s, r) = rc.post("transit/decrypt/pii", json!({"batch_input": items})).await;
    assert_eq!(s, 400, "a batch with a destroyed item: {r}");
    let res = results(&r);
    assert_eq!(res.len(), 4, "{r}");
    assert_eq!(unb64(res[0]["plaintext"].as_str().unwrap()), b"bob one", "{r}");
    assert!(
        res[1]["error"].as_str().is_some_and(|e| e.contains("destroyed")) && res[1].get("plaintext").is_none(),
        "{r}"
    );
    assert_eq!(res[1]["reference"], "a", "{r}");
    assert_eq!(unb64(res[2]["plaintext"].as_str().unwrap()), b"batch carol", "{r}");
    assert_eq!(unb64(res[3]["plaintext"].as_str().unwrap()), b"nobody's", "{r}");
    let (s, r) =
        rc.post("transit/decrypt/pii", json!({"batch_input": items, "partial_failure_response_code": 207})).await;
    assert_eq!((s, results(&r).len()), (207, 4), "{r}");
    let (s, r) = rc.post("transit/decrypt/pii", json!({"batch_input": [{"ciphertext": a1}, {"ciphertext": a2}]})).await;
    assert_eq!(s, 400, "every item destroyed: {r}");
    assert!(results(&r).iter().all(|i| i["error"].as_str().is_some_and(|e| e.contains("destroyed"))), "{r}");

    // What GET and LIST say: destroyed, no name.
    let (s, r) = read_subject(rc, "pii", ALICE).await;
    assert_eq!(s, 200, "{r}");
    let d = &r["data"];
    assert_eq!(
        (&d["destroyed"], &d["generation"], &d["id"]),
        (&json!(true), &json!(1), &json!(hex_id(&alice_id))),
        "{r}"
    );
    assert!(d.get("subject").is_none(), "a destroyed subject keeps no name: {r}");
    assert!(d["destroyed_time"].as_str().is_some_and(|t| t.contains('T')), "{r}");
    assert_eq!(list_subjects(rc, "pii").await, [BOB, CAROL, DAVE, ERIN]);
    // Idempotent.
    destroy(rc, "pii", ALICE).await;
    let (s, r2) = read_subject(rc, "pii", ALICE).await;
    assert_eq!((s, &r2["data"]["generation"], &r2["data"]["destroyed"]), (200, &json!(1), &json!(true)), "{r2}");

    // Encrypting for alice again: a fresh key of the next generation, which
    // opens none of the old ciphertexts.
    let (a3, v3) = encrypt(rc, "pii", b"alice again", Some(ALICE)).await;
    assert_eq!(v3, 2);
    assert_eq!(assert_subject_ct(&a3, 2, 2), alice_id, "same id, next generation");
    assert_eq!(decrypt_ok(rc, "pii", &a3, json!({"subject": ALICE})).await, b"alice again");
    for ct in [&a1, &a2, &a1_v2] {
        let (s, r) = decrypt(rc, "pii", ct, json!({})).await;
        assert_destroyed(s, &r, "an old alice ciphertext after her new key");
    }
    // The old body under the new generation (and the other way round) fails.
    let (_, _, _, a3_body) = split_subject_ct(&a3);
    let (s, r) = decrypt(rc, "pii", &format!("vault:v1:s2.{alice_id}:{a1_body}"), json!({})).await;
    assert_refused(s, &r, "an old body relabelled with the new generation");
    let (s, r) = decrypt(rc, "pii", &format!("vault:v2:s1.{alice_id}:{a3_body}"), json!({})).await;
    assert_destroyed(s, &r, "a new body relabelled with the old generation");
    let (s, r) = read_subject(rc, "pii", ALICE).await;
    assert_eq!(
        (&r["data"]["generation"], &r["data"]["destroyed"], &r["data"]["subject"]),
        (&json!(2), &json!(false), &json!(ALICE)),
        "{s} {r}"
    );
    assert!(r["data"].get("destroyed_time").is_none(), "{r}");
    assert_eq!(list_subjects(rc, "pii").await, [ALICE, BOB, CAROL, DAVE, ERIN]);
    // Never used, destroyed: a tombstone (generation 0); the first use after it is generation 1.
    destroy(rc, "pii", "ghost").await;
    let (s, r) = read_subject(rc, "pii", "ghost").await;
    assert_eq!((s, &r["data"]["destroyed"], &r["data"]["generation"]), (200, &json!(true), &json!(0)), "{r}");
    let (g, _) = encrypt(rc, "pii", b"ghost", Some("ghost")).await;
    assert_subject_ct(&g, 2, 1);
    assert_eq!(decrypt_ok(rc, "pii", &g, json!({})).await, b"ghost");
    destroy(rc, "pii", "ghost").await;

    // A restart: subjects and the destroy are kept.
    let Vault { store, srv, keys, root, .. } = v;
    assert_no_panic(&srv);
    assert!(srv.terminate().success());
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let rc = &c.with_token(&root);
    let (s, r) = decrypt(rc, "pii", &b1, json!({})).await;
    assert_eq!(s, 503, "sealed after a restart: {r}");
    c.unseal(&keys).await;
    assert_eq!(decrypt_ok(rc, "pii", &b1, json!({"subject": BOB})).await, b"bob one");
    assert_eq!(decrypt_ok(rc, "pii", &a3, json!({})).await, b"alice again");
    assert_eq!(decrypt_ok(rc, "pii", &bd, json!({})).await, b"batch dave");
    for ct in [&a1, &a1_v2, &g] {
        let (s, r) = decrypt(rc, "pii", ct, json!({})).await;
        assert_destroyed(s, &r, "a destroyed ciphertext after a restart");
    }
    let (s, r) = read_subject(rc, "pii", ALICE).await;
    assert_eq!((s, &r["data"]["generation"]), (200, &json!(2)), "{r}");
    assert_eq!(list_subjects(rc, "pii").await, [ALICE, BOB, CAROL, DAVE, ERIN]);
    // New encryptions for a known subject after the restart use its key.
    let (b2, _) = encrypt(rc, "pii", b"bob after restart", Some(BOB)).await;
    assert_eq!(assert_subject_ct(&b2, 2, 1), bob_id);

    // A seal: nothing answers; after the unseal all is as before.
    let (s, r) = rc.put("sys/seal", json!({})).await;
    assert_eq!(s, 204, "seal: {r}");
    for (what, (s, r)) in [
        ("decrypt", decrypt(rc, "pii", &b1, json!({})).await),
        ("encrypt", rc.post("transit/encrypt/pii", json!({"plaintext": b64(b"x"), "subject": "sealed-new"})).await),
        ("read subject", read_subject(rc, "pii", BOB).await),
        ("destroy", rc.delete(&format!("transit/subjects/pii/{}", pct(BOB))).await),
    ] {
        assert_eq!(s, 503, "{what} while sealed: {r}");
    }
    c.unseal(&keys).await;
    assert_eq!(decrypt_ok(rc, "pii", &b1, json!({})).await, b"bob one");
    assert_eq!(decrypt_ok(rc, "pii", &b2, json!({})).await, b"bob after restart");
    assert_eq!(decrypt_ok(rc, "pii", &a3, json!({})).await, b"alice again");
    assert_eq!(decrypt_ok(rc, "pii", &erin_ct, json!({})).await, b"nobody's");
    let (s, r) = decrypt(rc, "pii", &a2, json!({})).await;
    assert_destroyed(s, &r, "alice's old ciphertext after a seal");
    assert_eq!(read_subject(rc, "pii", "sealed-new").await.0, 404, "nothing was made while sealed");
    assert_eq!(list_subjects(rc, "pii").await, [ALICE, BOB, CAROL, DAVE, ERIN]);
    // Destroyed after the seal (the cache was cleared and refilled).
    destroy(rc, "pii", BOB).await;
    for ct in [&b1, &b2] {
        let (s, r) = decrypt(rc, "pii", ct, json!({})).await;
        assert_destroyed(s, &r, "bob after a seal and a destroy");
    }
    assert_eq!(decrypt_ok(rc, "pii", &bc, json!({})).await, b"batch carol");

    // Deleting the named key deletes its subjects: a key made again under
    // the name has none of them.
    let (s, r) = config(rc, "pii", json!({"deletion_allowed": true})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = rc.delete("transit/keys/pii").await;
    assert_eq!(s, 204, "{r}");
    let (s, r) = read_subject(rc, "pii", CAROL).await;
    assert!(s == 400 || s == 404, "a subject of a deleted key: {s} {r}");
    create_key(rc, "pii", json!({})).await;
    assert!(list_subjects(rc, "pii").await.is_empty(), "the new key inherited subjects");
    assert_eq!(read_subject(rc, "pii", CAROL).await.0, 404, "carol's record is gone");
    let (s, r) = decrypt(rc, "pii", &bc, json!({})).await;
    assert_refused(s, &r, "carol's ciphertext under a new key of the same name");

    // At rest: no plaintext and no subject name.
    assert_no_panic(&srv);
    drop(srv);
    let raw = store.raw_bytes();
    for p in [&b"alice one"[..], b"bob one", b"batch carol", b"alice again"] {
        assert!(!contains(&raw, p), "plaintext {:?} at rest", String::from_utf8_lossy(p));
    }
    for name in [ALICE, BOB, CAROL, DAVE, ERIN] {
        assert!(!contains(&raw, name.as_bytes()), "the subject name {name:?} at rest");
    }
}

#[tokio::test]
async fn shredding_one_subject_leaves_the_others_sqlite() {
    shredding(Backend::Sqlite).await;
}

#[tokio::test]
async fn shredding_one_subject_leaves_the_others_postgres() {
    shredding(Backend::Postgres).await;
}

/// A request that fails because the subject was destroyed must not make
/// the subject a new key (and store its name again, after its erasure):
/// only a successful encrypt (or rewrap of a plain ciphertext) for it may.
async fn refused_requests_do_not_revive(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "k", json!({})).await;
    let (a1, _) = encrypt(rc, "k", b"alice", Some(ALICE)).await;
    destroy(rc, "k", ALICE).await;
    let tombstone = || async {
        let (s, r) = read_subject(rc, "k", ALICE).await;
        assert_eq!(s, 200, "{r}");
        (r["data"]["destroyed"].clone(), r["data"]["generation"].clone(), r["data"].get("subject").cloned())
    };
    let dead = (json!(true), json!(1), None);
    assert_eq!(tombstone().await, dead);

    // Decrypt naming her: refused, nothing made.
    let (s, r) = decrypt(rc, "k", &a1, json!({"subject": ALICE})).await;
    assert_destroyed(s, &r, "decrypt naming the destroyed subject");
    assert_eq!(tombstone().await, dead, "a refused decrypt revived the subject");
    let (s, r) =
        rc.post("transit/decrypt-fields/k", json!({"document": {"f": a1}, "fields": ["/f"], "subject": ALICE})).await;
    assert_refused(s, &r, "decrypt-fields naming the destroyed subject");
    assert_eq!(tombstone().await, dead, "a refused decrypt-fields revived the subject");

    let (s, r) = rc.post("transit/rewrap/k", json!({"ciphertext": a1})).await;
    assert_destroyed(s, &r, "rewrap of alice's old ciphertext");
    assert_eq!(tombstone().await, dead, "a refused rewrap revived the subject");

    // Rewrap of her old ciphertext naming her (as a rewrap job that names
    // each row's subject does): refused, and must not make her a new key
    // (storing her name again) either.
    let (s, r) = rc.post("transit/rewrap/k", json!({"ciphertext": a1, "subject": ALICE})).await;
    assert_destroyed(s, &r, "rewrap of alice's old ciphertext naming her");
    let (s, r) = read_subject(rc, "k", ALICE).await;
    assert!(
        s == 200
            && r["data"]["destroyed"] == true
            && r["data"]["generation"] == 1
            && r["data"].get("subject").is_none(),
        "POST transit/rewrap/k {{ciphertext: <alice's destroyed ciphertext>, subject: alice}} answered 400 \
         (destroyed), yet made alice a new key: GET transit/subjects/k/alice -> {s} {r}"
    );
    assert!(list_subjects(rc, "k").await.is_empty(), "a refused rewrap listed the destroyed subject again");
}

#[tokio::test]
async fn refused_requests_do_not_revive_a_destroyed_subject_sqlite() {
    refused_requests_do_not_revive(Backend::Sqlite).await;
}

#[tokio::test]
async fn refused_requests_do_not_revive_a_destroyed_subject_postgres() {
    refused_requests_do_not_revive(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 2. Two servers on one PostgreSQL
// ---------------------------------------------------------------------------

#[tokio::test]
async fn destroy_seen_by_another_server_postgres() {
    let v = vault(Backend::Postgres).await;
    let srv_b = ServerProc::start(&v.store, &[]);
    srv_b.client().unseal(&v.keys).await;
    let rb = &srv_b.client().with_token(&v.root);
    let ra = &v.rc;

    create_key(ra, "shared", json!({})).await;
    let (a1, _) = encrypt(ra, "shared", b"alice on A", Some(ALICE)).await;
    let (b1, _) = encrypt(ra, "shared", b"bob on A", Some(BOB)).await;
    // B decrypts both (its cache is warm) and encrypts for alice with the
    // same subject key.
    assert_eq!(decrypt_ok(rb, "shared", &a1, json!({})).await, b"alice on A");
    assert_eq!(decrypt_ok(rb, "shared", &b1, json!({})).await, b"bob on A");
    let (a2, _) = encrypt(rb, "shared", b"alice on B", Some(ALICE)).await;
    assert_eq!(tag_of(&a2), tag_of(&a1), "B uses the subject key A made");
    assert_eq!(decrypt_ok(ra, "shared", &a2, json!({})).await, b"alice on B");

    // Destroy on A: B refuses soon after.
    destroy(ra, "shared", ALICE).await;
    let (s, r) = decrypt(ra, "shared", &a1, json!({})).await;
    assert_destroyed(s, &r, "A, right after its destroy");
    let (_, attempts, took) = eventually(FEED_BOUND, "B refuses alice's ciphertext after A destroyed her", || async {
        match decrypt(rb, "shared", &a1, json!({})).await {
            (400, r) if errors(&r).contains("destroyed") => Ok(()),
            (s, r) => Err(format!("{s} {r}")),
        }
    })
    .await;
    eprintln!("B refused after {attempts} attempt(s), {took:?}");
    let (s, r) = decrypt(rb, "shared", &a2, json!({})).await;
    assert_destroyed(s, &r, "B, alice's ciphertext made on B");
    assert_eq!(decrypt_ok(rb, "shared", &b1, json!({})).await, b"bob on A", "B still opens bob's");
    let (s, r) = read_subject(rb, "shared", ALICE).await;
    assert_eq!((s, &r["data"]["destroyed"]), (200, &json!(true)), "{r}");
    assert!(r["data"].get("subject").is_none(), "{r}");
    // B makes alice's next key; A uses it.
    let (a3, _) = encrypt(rb, "shared", b"alice again on B", Some(ALICE)).await;
    assert_subject_ct(&a3, 1, 2);
    // A sees the new key through the change feed (its read cache may still
    // hold the tombstone for a moment).
    eventually(FEED_BOUND, "A opens alice's new key made on B", || async {
        match decrypt(ra, "shared", &a3, json!({})).await {
            (200, r) if r["data"]["plaintext"] == b64(b"alice again on B") => Ok(()),
            (s, r) => Err(format!("{s} {r}")),
        }
    })
    .await;
    let (a4, _) = encrypt(ra, "shared", b"alice again on A", Some(ALICE)).await;
    assert_eq!(tag_of(&a4), tag_of(&a3), "A uses the key B made");
    assert_eq!(decrypt_ok(rb, "shared", &a4, json!({})).await, b"alice again on A");

    // The other way round: destroy on B, A (warm) refuses.
    assert_eq!(decrypt_ok(ra, "shared", &b1, json!({})).await, b"bob on A");
    destroy(rb, "shared", BOB).await;
    eventually(FEED_BOUND, "A refuses bob's ciphertext after B destroyed him", || async {
        match decrypt(ra, "shared", &b1, json!({})).await {
            (400, r) if errors(&r).contains("destroyed") => Ok(()),
            (s, r) => Err(format!("{s} {r}")),
        }
    })
    .await;
    // A's next encryption for bob must not use the destroyed key.
    let (b2, _) = encrypt(ra, "shared", b"bob again", Some(BOB)).await;
    assert_subject_ct(&b2, 1, 2);
    eventually(FEED_BOUND, "B opens bob's new key made on A", || async {
        match decrypt(rb, "shared", &b2, json!({})).await {
            (200, r) if r["data"]["plaintext"] == b64(b"bob again") => Ok(()),
            (s, r) => Err(format!("{s} {r}")),
        }
    })
    .await;
    let (b3, _) = encrypt(rb, "shared", b"bob again on B", Some(BOB)).await;
    assert_eq!(tag_of(&b3), tag_of(&b2), "B uses the key A made, no third generation");

    // Both servers make the same new subject at once: one key.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        for c in [ra.clone(), rb.clone()] {
            set.spawn(async move {
                let body = json!({"plaintext": b64(format!("carol {i}").as_bytes()), "subject": CAROL});
                let (s, r) = c.post("transit/encrypt/shared", body).await;
                assert_eq!(s, 200, "concurrent first use on two servers: {r}");
                r["data"]["ciphertext"].as_str().unwrap().to_string()
            });
        }
    }
    let cts: Vec<String> = set.join_all().await;
    assert_eq!(cts.len(), 20);
    for ct in &cts {
        assert_eq!(tag_of(ct), tag_of(&cts[0]), "one subject key across both servers");
        assert_subject_ct(ct, 1, 1);
        decrypt_ok(ra, "shared", ct, json!({})).await;
        decrypt_ok(rb, "shared", ct, json!({})).await;
    }
    for l in [v.srv.log_text(), srv_b.log_text()] {
        assert!(!l.contains("panicked"), "server panicked:\n{l}");
    }
}

// ---------------------------------------------------------------------------
// 3. Backups and restores
// ---------------------------------------------------------------------------

/// The subject records of a backup (`"TKS1" | u32 len | key | u32 count |
/// (u32 len | record JSON)*`, docs/formats.md); empty for a bare key record.
fn backup_records(backup: &str) -> Vec<Value> {
    let raw = unb64(backup);
    let Some(rest) = raw.strip_prefix(b"TKS1") else { return Vec::new() };
    let u32_at = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
    let klen = u32_at(rest);
    let mut rest = &rest[4 + klen..];
    let count = u32_at(rest);
    rest = &rest[4..];
    let mut out = Vec::new();
    for _ in 0..count {
        let len = u32_at(rest);
        out.push(serde_json::from_slice(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "trailing bytes in the backup");
    out
}

async fn backup_of(rc: &Client, key: &str) -> String {
    let (s, r) = rc.get(&format!("transit/backup/{key}")).await;
    assert_eq!(s, 200, "backup {key}: {r}");
    r["data"]["backup"].as_str().unwrap().to_string()
}

async fn backups(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "bk", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let (a1, _) = encrypt(rc, "bk", b"alice", Some(ALICE)).await;
    let (b1, _) = encrypt(rc, "bk", b"bob", Some(BOB)).await;
    let (p1, _) = encrypt(rc, "bk", b"plain", None).await;
    let alice_hex = hex_id(&split_subject_ct(&a1).2);
    let bob_hex = hex_id(&split_subject_ct(&b1).2);

    let before = backup_of(rc, "bk").await;
    let recs = backup_records(&before);
    assert_eq!(recs.len(), 2, "two subjects in the backup: {recs:?}");
    let find = |recs: &[Value], id: &str| recs.iter().find(|r| r["id"] == id).cloned();
    let alice_rec = find(&recs, &alice_hex).unwrap_or_else(|| panic!("no record of alice: {recs:?}"));
    assert!(alice_rec["wrapped"].is_string() && alice_rec["subject"] == ALICE, "{alice_rec}");

    destroy(rc, "bk", ALICE).await;
    let after = backup_of(rc, "bk").await;
    let recs = backup_records(&after);
    let tomb = find(&recs, &alice_hex).unwrap_or_else(|| panic!("no tombstone of alice: {recs:?}"));
    assert!(tomb.get("wrapped").is_none_or(Value::is_null), "a backup after the destroy holds alice's key: {tomb}");
    assert!(tomb.get("subject").is_none_or(Value::is_null), "a backup after the destroy holds her name: {tomb}");
    assert!(tomb["destroyed_time"].is_number(), "{tomb}");
    assert!(find(&recs, &bob_hex).is_some_and(|r| r["wrapped"].is_string()), "bob is in the backup: {recs:?}");
    assert!(!contains(&unb64(&after), ALICE.as_bytes()), "alice's name in a backup taken after her destroy");
    assert!(!contains(&unb64(&after), alice_rec["wrapped"].as_str().unwrap().as_bytes()), "her wrapped key");

    // Forced restore, over the key itself, of a backup taken before the
    // destroy: the tombstone wins, bob comes back.
    destroy(rc, "bk", BOB).await;
    let (s, r) = rc.post("transit/restore/bk", json!({"backup": before, "force": true})).await;
    assert_eq!(s, 204, "forced restore: {r}");
    let (s, r) = decrypt(rc, "bk", &a1, json!({})).await;
    assert_destroyed(s, &r, "alice after a forced restore of an older backup");
    let (s, r) = decrypt(rc, "bk", &b1, json!({})).await;
    assert_destroyed(s, &r, "bob (destroyed after the backup) after a forced restore");
    assert_eq!(decrypt_ok(rc, "bk", &p1, json!({})).await, b"plain");
    let (s, r) = read_subject(rc, "bk", ALICE).await;
    assert_eq!((s, &r["data"]["destroyed"]), (200, &json!(true)), "{r}");
    assert!(list_subjects(rc, "bk").await.is_empty(), "nothing came back");

    // A backup taken after alice's destroy (bob still live in it), restored
    // under a new name: alice stays destroyed there, and so does bob, who
    // was erased in this mount after the backup (erasures are mount-wide,
    // whatever name a copy of the key is restored under).
    let (s, r) = rc.post("transit/restore/bk-after", json!({"backup": after})).await;
    assert_eq!(s, 204, "restore under a new name: {r}");
    let (s, r) = decrypt(rc, "bk-after", &a1, json!({})).await;
    assert_destroyed(s, &r, "alice in a restore of a backup taken after her destroy");
    let (s, r) = decrypt(rc, "bk-after", &b1, json!({"subject": BOB})).await;
    assert_destroyed(s, &r, "bob, erased in this mount after the backup, restored under another name");
    assert!(list_subjects(rc, "bk-after").await.is_empty(), "nothing came back under the new name");
    let (a2, _) = encrypt(rc, "bk-after", b"alice new", Some(ALICE)).await;
    assert_subject_ct(&a2, 1, 2);

    // A third subject made after a backup, then the backup restored with
    // force: the newer subject stays (a restore never overwrites what the
    // mount knows of a subject it has no record of either).
    create_key(rc, "bk2", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let (c1, _) = encrypt(rc, "bk2", b"carol", Some(CAROL)).await;
    let snap = backup_of(rc, "bk2").await;
    let (d1, _) = encrypt(rc, "bk2", b"dave", Some(DAVE)).await;
    destroy(rc, "bk2", CAROL).await;
    let (s, r) = rc.post("transit/restore/bk2", json!({"backup": snap, "force": true})).await;
    assert_eq!(s, 204, "{r}");
    let (s, r) = decrypt(rc, "bk2", &c1, json!({})).await;
    assert_destroyed(s, &r, "carol after a forced restore");
    assert_eq!(decrypt_ok(rc, "bk2", &d1, json!({})).await, b"dave", "a subject newer than the backup is kept");

    // A backup taken before the destroys, restored where this mount erased
    // alice and bob: they must stay destroyed. Checked all, then reported.
    let mut revived = Vec::new();
    // (a) Under a new name in the same mount.
    let (s, r) = rc.post("transit/restore/bk-copy", json!({"backup": before})).await;
    assert_eq!(s, 204, "restore under a new name: {r}");
    assert_eq!(decrypt_ok(rc, "bk-copy", &p1, json!({})).await, b"plain");
    for (who, ct) in [("alice", &a1), ("bob", &b1)] {
        let (s, r) = decrypt(rc, "bk-copy", ct, json!({})).await;
        if !(s == 400 && errors(&r).contains("destroyed")) {
            revived.push(format!(
                "{who}'s ciphertext, the subject's key destroyed in this mount, after POST transit/restore/bk-copy of a \
                 backup of bk taken before the destroy: POST transit/decrypt/bk-copy -> {s} {r}"
            ));
        }
    }
    // (b) Under its own name, after the key was deleted (and its subject
    // records with it).
    let (s, r) = config(rc, "bk", json!({"deletion_allowed": true})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(rc.delete("transit/keys/bk").await.0, 204);
    let (s, r) = rc.post("transit/restore/bk", json!({"backup": before})).await;
    assert_eq!(s, 204, "restore after a delete: {r}");
    assert_eq!(decrypt_ok(rc, "bk", &p1, json!({})).await, b"plain");
    for (who, ct) in [("alice", &a1), ("bob", &b1)] {
        let (s, r) = decrypt(rc, "bk", ct, json!({})).await;
        if !(s == 400 && errors(&r).contains("destroyed")) {
            revived.push(format!(
                "{who}'s ciphertext, the subject's key destroyed in this mount, after DELETE transit/keys/bk and \
                 POST transit/restore/bk of a backup taken before the destroy: POST transit/decrypt/bk -> {s} {r}"
            ));
        }
    }
    assert_no_panic(&v.srv);
    assert!(revived.is_empty(), "a restore brought destroyed subjects back:\n{}", revived.join("\n"));
}

#[tokio::test]
async fn backups_and_restores_keep_destroyed_subjects_destroyed_sqlite() {
    backups(Backend::Sqlite).await;
}

#[tokio::test]
async fn backups_and_restores_keep_destroyed_subjects_destroyed_postgres() {
    backups(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 4. Bad input and tampered subject tags
// ---------------------------------------------------------------------------

async fn bad_input(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "k", json!({})).await;
    create_key(rc, "ed", json!({"type": "ed25519"})).await;
    create_key(rc, "hm", json!({"type": "hmac"})).await;
    let mut failures: Vec<String> = Vec::new();
    // A 400 in Vault's error shape, or a failure noted.
    fn check(failures: &mut Vec<String>, what: String, s: u16, r: &Value) {
        let shape = s == 400
            && r["errors"].as_array().is_some_and(|l| !l.is_empty() && l.iter().all(Value::is_string))
            && r.get("data").is_none_or(Value::is_null);
        if !shape {
            failures.push(format!("{what} -> {s} {r}"));
        }
    }
    // A batch whose every item fails: 400 with each item's error (or the
    // whole request refused in the error shape).
    fn check_batch(failures: &mut Vec<String>, what: String, s: u16, r: &Value) {
        if r.get("errors").is_some() {
            return check(failures, what, s, r);
        }
        let items = r["data"]["batch_results"].as_array();
        let ok = s == 400
            && items.is_some_and(|l| {
                !l.is_empty()
                    && l.iter().all(|i| {
                        i["error"].as_str().is_some_and(|e| !e.is_empty())
                            && i.get("ciphertext").is_none()
                            && i.get("plaintext").is_none()
                    })
            });
        if !ok {
            failures.push(format!("{what} -> {s} {r}"));
        }
    }

    // Subject names: the limits, and what is refused.
    let ok_names = ["x".repeat(512), "é".repeat(256), "Zoë O'Brien+tag 42 ?#%&=".into(), "🙂".into()];
    for name in &ok_names {
        let (ct, _) = encrypt(rc, "k", b"fine", Some(name)).await;
        assert_eq!(decrypt_ok(rc, "k", &ct, json!({"subject": name})).await, b"fine", "{name:?}");
        let (s, r) = read_subject(rc, "k", name).await;
        assert_eq!((s, &r["data"]["subject"]), (200, &json!(name)), "GET of {name:?} through its encoded path: {r}");
    }
    let bad_names: Vec<(String, Value)> = vec![
        ("a number".into(), json!(5)),
        ("a bool".into(), json!(true)),
        ("an object".into(), json!({"name": "alice"})),
        ("a list".into(), json!(["alice"])),
        ("empty".into(), json!("")),
        ("513 bytes".into(), json!("x".repeat(513))),
        ("257 two-byte chars (514 bytes)".into(), json!("é".repeat(257))),
        ("with '/'".into(), json!("a/b")),
        ("only '/'".into(), json!("/")),
        ("with a newline".into(), json!("a\nb")),
        ("with NUL".into(), json!("a\u{0}b")),
        ("with a tab".into(), json!("\t")),
        ("with DEL".into(), json!("a\u{7f}")),
        ("with a C1 control".into(), json!("a\u{85}")),
    ];
    for (what, subject) in &bad_names {
        let (s, r) = rc.post("transit/encrypt/k", json!({"plaintext": b64(b"x"), "subject": subject})).await;
        check(&mut failures, format!("encrypt, subject {what}"), s, &r);
        let (s, r) =
            rc.post("transit/encrypt/k", json!({"batch_input": [{"plaintext": b64(b"x"), "subject": subject}]})).await;
        check_batch(&mut failures, format!("batch encrypt, subject {what}"), s, &r);
        let (s, r) = rc
            .post(
                "transit/encrypt/k",
                json!({"batch_input": [{"plaintext": b64(b"ok")}, {"plaintext": b64(b"x"), "subject": subject}]}),
            )
            .await;
        let res = r["data"]["batch_results"].as_array();
        let per_item = res.is_some_and(|l| {
            l.len() == 2
                && l[0]["ciphertext"].is_string()
                && l[1]["error"].as_str().is_some_and(|e| !e.is_empty())
                && l[1].get("ciphertext").is_none()
        });
        if s != 400 || !per_item {
            failures.push(format!("batch encrypt with one item's subject {what}: {s} {r}"));
        }
        let (s, r) = rc.post("transit/decrypt/k", json!({"ciphertext": "vault:v1:AAAA", "subject": subject})).await;
        check(&mut failures, format!("decrypt, subject {what}"), s, &r);
        let (s, r) = rc
            .post("transit/encrypt-fields/k", json!({"document": {"a": 1}, "fields": ["/a"], "subject": subject}))
            .await;
        check(&mut failures, format!("encrypt-fields, subject {what}"), s, &r);
        // A request-level default that is bad fails the items that take it.
        let (s, r) =
            rc.post("transit/encrypt/k", json!({"subject": subject, "batch_input": [{"plaintext": b64(b"x")}]})).await;
        check_batch(&mut failures, format!("batch encrypt, default subject {what}"), s, &r);
    }
    // The management paths.
    for (what, seg) in [
        ("513 bytes", "x".repeat(513)),
        ("a newline", "a%0Ab".into()),
        ("NUL", "a%00b".into()),
        ("an encoded '/'", "a%2Fb".into()),
    ] {
        for m in ["GET", "DELETE"] {
            let (s, r) = rc.call(m, &format!("transit/subjects/k/{seg}"), None).await;
            if !((400..500).contains(&s) && r["errors"].as_array().is_some_and(|l| !l.is_empty())) {
                failures.push(format!("{m} transit/subjects/k/<{what}> -> {s} {r}"));
            }
        }
    }
    for (m, path) in [
        ("GET", "transit/subjects/nokey/alice"),
        ("DELETE", "transit/subjects/nokey/alice"),
        ("LIST", "transit/subjects/nokey"),
    ] {
        let (s, r) = rc.call(m, path, None).await;
        check(&mut failures, format!("{m} {path} (no such key)"), s, &r);
    }
    assert_eq!(rc.get("transit/keys/nokey").await.0, 404, "a subject request made the key");

    // Keys that cannot encrypt.
    for key in ["ed", "hm"] {
        let (s, r) =
            rc.post(&format!("transit/encrypt/{key}"), json!({"plaintext": b64(b"x"), "subject": ALICE})).await;
        check(&mut failures, format!("encrypt with subject on {key}"), s, &r);
        let (s, r) = rc
            .post(
                &format!("transit/decrypt/{key}"),
                json!({"ciphertext": "vault:v1:s1.AAAAAAAAAAAAAAAAAAAAAA:AAAA", "subject": ALICE}),
            )
            .await;
        check(&mut failures, format!("decrypt with subject on {key}"), s, &r);
        let (s, r) =
            rc.post(&format!("transit/rewrap/{key}"), json!({"ciphertext": "vault:v1:AAAA", "subject": ALICE})).await;
        check(&mut failures, format!("rewrap with subject on {key}"), s, &r);
    }
    let (s, r) =
        rc.post("transit/encrypt/new-ed", json!({"type": "ed25519", "plaintext": b64(b"x"), "subject": ALICE})).await;
    check(&mut failures, "upsert of an ed25519 key with a subject".into(), s, &r);
    assert_eq!(rc.get("transit/keys/new-ed").await.0, 404, "the refused upsert made a key");
    // A missing key is made by an encrypt (upsert), with the subject.
    let (ct, _) = encrypt(rc, "upserted", b"up", Some(ALICE)).await;
    assert_subject_ct(&ct, 1, 1);
    assert_eq!(list_subjects(rc, "upserted").await, [ALICE]);

    // Tampered subject tags.
    let (ct, _) = encrypt(rc, "k", b"tamper", Some(ALICE)).await;
    let (bob_ct, _) = encrypt(rc, "k", b"bob's", Some(BOB)).await;
    let (plain, _) = encrypt(rc, "k", b"plain", None).await;
    let (_, _, id, body) = split_subject_ct(&ct);
    let (_, _, bob_id, _) = split_subject_ct(&bob_ct);
    let plain_body = plain.rsplit(':').next().unwrap().to_string();
    let mut tampered: Vec<(String, String)> = Vec::new();
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars().collect();
    for i in 0..id.len() {
        let mut chars: Vec<char> = id.chars().collect();
        let pos = alphabet.iter().position(|c| *c == chars[i]).unwrap();
        chars[i] = alphabet[(pos + 1) % 64];
        let flipped: String = chars.into_iter().collect();
        tampered.push((format!("id char {i} changed"), format!("vault:v1:s1.{flipped}:{body}")));
    }
    for g in ["0", "2", "9", "01", "-1", "+1", "4294967295", "4294967296", "99999999999999999999", "", " 1", "1 ", "１"]
    {
        tampered.push((format!("generation {g:?}"), format!("vault:v1:s{g}.{id}:{body}")));
    }
    for (what, tag) in [
        ("s0. and the id", format!("s0.{id}")),
        ("s0. alone", "s0.".into()),
        ("no dot", format!("s1{id}")),
        ("no 's'", format!("1.{id}")),
        ("'S'", format!("S1.{id}")),
        ("empty id", "s1.".into()),
        ("empty tag", String::new()),
        ("id one char short", format!("s1.{}", &id[..21])),
        ("id one char long", format!("s1.{id}A")),
        ("id padded", format!("s1.{id}==")),
        ("id of 15 bytes", format!("s1.{}", B64URL.encode([7u8; 15]))),
        ("id of 17 bytes", format!("s1.{}", B64URL.encode([7u8; 17]))),
        ("id in standard base64", format!("s1.{}", id.replace('-', "+").replace('_', "/") + "+/")),
        ("two dots", format!("s1.{id}.x")),
        ("tag twice", format!("s1.{id}:s1.{id}")),
        ("bob's tag", format!("s1.{bob_id}")),
        ("a random id", format!("s1.{}", B64URL.encode([0xA5u8; 16]))),
    ] {
        tampered.push((format!("tag {what}"), format!("vault:v1:{tag}:{body}")));
    }
    tampered.push(("alice's tag on a plain body".into(), format!("vault:v1:s1.{id}:{plain_body}")));
    tampered.push(("the tag removed".into(), format!("vault:v1:{body}")));
    tampered.push(("version 2".into(), format!("vault:v2:s1.{id}:{body}")));
    tampered.push(("version 0".into(), format!("vault:v0:s1.{id}:{body}")));
    tampered.push(("an extra part".into(), format!("{ct}:AAAA")));
    // Every truncation of the whole string, and of the decoded body.
    for n in 0..ct.len() {
        tampered.push((format!("truncated to {n} chars"), ct[..n].to_string()));
    }
    let raw_body = unb64(&body);
    for n in 0..raw_body.len() {
        tampered.push((format!("body truncated to {n} bytes"), format!("vault:v1:s1.{id}:{}", b64(&raw_body[..n]))));
    }
    let mut longer = raw_body.clone();
    longer.push(0);
    tampered.push(("body one byte longer".into(), format!("vault:v1:s1.{id}:{}", b64(&longer))));
    for i in 0..raw_body.len() {
        let mut t = raw_body.clone();
        t[i] ^= 0x01;
        tampered.push((format!("body byte {i} flipped"), format!("vault:v1:s1.{id}:{}", b64(&t))));
    }
    for (what, bad) in &tampered {
        assert_ne!(bad, &ct);
        let (s, r) = decrypt(rc, "k", bad, json!({})).await;
        check(&mut failures, format!("decrypt, {what}: {bad}"), s, &r);
        if r.to_string().contains(ALICE) {
            failures.push(format!("{what}: the error names the subject: {r}"));
        }
    }
    // The same through decrypt naming alice, rewrap and batches (a sample:
    // every tag case, a few truncations).
    for (what, bad) in tampered.iter().filter(|(w, _)| !w.contains("truncated") && !w.contains("flipped")) {
        let (s, r) = decrypt(rc, "k", bad, json!({"subject": ALICE})).await;
        check(&mut failures, format!("decrypt naming alice, {what}"), s, &r);
        let (s, r) = rc.post("transit/rewrap/k", json!({"ciphertext": bad})).await;
        check(&mut failures, format!("rewrap, {what}"), s, &r);
        let (s, r) =
            rc.post("transit/decrypt/k", json!({"batch_input": [{"ciphertext": ct}, {"ciphertext": bad}]})).await;
        let res = r["data"]["batch_results"].as_array();
        let per_item = res.is_some_and(|l| {
            l.len() == 2
                && l[0]["plaintext"].as_str() == Some(&b64(b"tamper"))
                && l[1]["error"].as_str().is_some_and(|e| !e.is_empty())
                && l[1].get("plaintext").is_none()
        });
        if s != 400 || !per_item {
            failures.push(format!("batch decrypt with a good item and one with {what}: {s} {r}"));
        }
        let (s, r) = rc.post("transit/decrypt-fields/k", json!({"document": {"f": bad}, "fields": ["/f"]})).await;
        check(&mut failures, format!("decrypt-fields, {what}"), s, &r);
    }
    assert!(failures.is_empty(), "not a 400 in Vault's error shape:\n{}", failures.join("\n"));
    // The genuine ciphertext still decrypts, and nothing was made.
    assert_eq!(decrypt_ok(rc, "k", &ct, json!({})).await, b"tamper");
    let mut live = list_subjects(rc, "k").await;
    live.retain(|n| !ok_names.contains(n));
    assert_eq!(live, [ALICE, BOB], "a refused request made a subject");
    assert_no_panic(&v.srv);
}

#[tokio::test]
async fn bad_input_and_tampered_tags_are_400_sqlite() {
    bad_input(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_input_and_tampered_tags_are_400_postgres() {
    bad_input(Backend::Postgres).await;
}

/// No subject name in the server's log, at trace level with the access log
/// on (as transit.rs checks secrets), nor in error messages.
async fn names_not_logged(backend: Backend) {
    let v = vault_with(backend, "access_log = true\n", &["--log-level", "trace"]).await;
    let rc = &v.rc;
    let names = ["SUBJECT-CANARY-1c9e@example.com", "SUBJECT-CANARY-2b7f@example.com", "SUBJECT-CANARY-3a5d"];
    let [n1, n2, n3] = names;
    create_key(rc, "log", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let (c1, _) = encrypt(rc, "log", b"x", Some(n1)).await;
    let (s, r) = rc
        .post(
            "transit/encrypt/log",
            json!({"subject": n2, "batch_input": [{"plaintext": b64(b"y")}, {"plaintext": b64(b"z"), "subject": n3}]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let c2 = results(&r)[0]["ciphertext"].as_str().unwrap().to_string();
    decrypt_ok(rc, "log", &c1, json!({"subject": n1})).await;
    let (s, r) = decrypt(rc, "log", &c1, json!({"subject": n2})).await;
    assert_refused(s, &r, "wrong subject");
    let (s, r) = rc.post("transit/rewrap/log", json!({"ciphertext": c2, "subject": n1})).await;
    assert_refused(s, &r, "rewrap to another subject");
    let (s, r) =
        rc.post("transit/encrypt-fields/log", json!({"document": {"e": n1}, "fields": ["/e"], "subject": n1})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = rc.post("transit/encrypt/log", json!({"plaintext": b64(b"x"), "subject": format!("{n1}/x")})).await;
    assert_refused(s, &r, "a name with '/'");
    assert!(!r.to_string().contains(n1), "the error echoes the subject: {r}");
    backup_of(rc, "log").await;
    // Requests refused before they are routed (red team): no token, a
    // token without the right, a method the path does not serve, a
    // malformed path. Their access-log lines must not name the subject.
    let anon = v.rc.with_token("not-a-token");
    let (s, _) = anon.call("DELETE", &format!("transit/subjects/log/{}", pct(n3)), None).await;
    assert_eq!(s, 403);
    let weak = token_with(rc, "weak", r#"path "transit/encrypt/log" { capabilities = ["update"] }"#).await;
    let weak = v.rc.with_token(&weak);
    for (method, path) in [
        ("DELETE", format!("transit/subjects/log/{}", pct(n3))),
        ("GET", format!("transit/subjects/log/{}", pct(n3))),
        ("LIST", format!("transit/subjects/log/{}", pct(n3))),
        ("POST", format!("transit/subjects/log/{}", pct(n3))),
        ("GET", format!("transit//subjects/log/{}", pct(n3))),
        ("GET", format!("transit/subjects/log/{}%0A", pct(n3))),
    ] {
        let (s, r) = weak.call(method, &path, None).await;
        assert!((400..500).contains(&s), "{method} {path}: {s} {r}");
        let (s, r) = rc.call(method, &path, if method == "POST" { Some(json!({})) } else { None }).await;
        assert!(s < 500, "{method} {path} as root: {s} {r}");
    }
    destroy(rc, "log", n1).await;
    let (s, r) = decrypt(rc, "log", &c1, json!({})).await;
    assert_destroyed(s, &r, "after the destroy");
    list_subjects(rc, "log").await;
    read_subject(rc, "log", n2).await;
    read_subject(rc, "log", n1).await;
    destroy(rc, "log", n2).await;

    let logs = v.srv.log_text();
    assert!(logs.contains("subject key destroyed"), "the destroy is logged (is the log captured?):\n{logs}");
    let (access, other): (Vec<&str>, Vec<&str>) = logs.lines().partition(|l| l.contains("vault::access"));
    assert!(!access.is_empty(), "no access log lines");
    for n in names {
        let leaked: Vec<&&str> = other.iter().filter(|l| l.contains(n)).collect();
        assert!(leaked.is_empty(), "the subject name {n:?} in the server log:\n{leaked:?}");
        let prefix = n.split('@').next().unwrap();
        assert!(!other.iter().any(|l| l.contains(prefix)), "part of the subject name {n:?} in the server log");
    }
    assert_no_panic(&v.srv);
    // The access log names each request's path, and the management API puts
    // the subject in the path: a destroyed subject's name must not outlive
    // its erasure in the log either.
    for n in names {
        let leaked: Vec<&&str> = access.iter().filter(|l| l.contains(n) || l.contains(&pct(n))).collect();
        assert!(leaked.is_empty(), "the subject name {n:?} in the access log:\n{leaked:#?}");
    }
}

#[tokio::test]
async fn subject_names_not_logged_sqlite() {
    names_not_logged(Backend::Sqlite).await;
}

#[tokio::test]
async fn subject_names_not_logged_postgres() {
    names_not_logged(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 5. Policies
// ---------------------------------------------------------------------------

async fn policies(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    let c = v.srv.client();
    create_key(rc, "k", json!({})).await;
    create_key(rc, "other", json!({})).await;
    let app = c.with_token(
        &token_with(
            rc,
            "app",
            r#"path "transit/encrypt/k" { capabilities = ["update"] }
               path "transit/decrypt/k" { capabilities = ["update"] }"#,
        )
        .await,
    );
    let (a1, _) = encrypt(&app, "k", b"alice", Some(ALICE)).await;
    let (b1, _) = encrypt(&app, "k", b"bob", Some(BOB)).await;
    let (o1, _) = encrypt(rc, "other", b"alice elsewhere", Some(ALICE)).await;
    assert_eq!(decrypt_ok(&app, "k", &a1, json!({"subject": ALICE})).await, b"alice");

    // The app cannot destroy, read or list subjects.
    let alice_path = format!("transit/subjects/k/{}", pct(ALICE));
    for (m, path) in [("DELETE", alice_path.as_str()), ("GET", alice_path.as_str()), ("LIST", "transit/subjects/k")] {
        let (s, r) = app.call(m, path, None).await;
        assert_eq!(s, 403, "{m} {path} by a token without transit/subjects: {r}");
        assert_client_error(s, &r, path);
    }
    assert_eq!(decrypt_ok(&app, "k", &a1, json!({})).await, b"alice", "the refused destroy changed nothing");

    // `delete` on transit/subjects/k/*: destroys, and nothing more.
    let shredder =
        c.with_token(&token_with(rc, "shredder", r#"path "transit/subjects/k/*" { capabilities = ["delete"] }"#).await);
    let (s, r) = shredder.get(&alice_path).await;
    assert_eq!(s, 403, "read without read: {r}");
    let (s, r) = shredder.delete(&format!("transit/subjects/other/{}", pct(ALICE))).await;
    assert_eq!(s, 403, "destroy under another key: {r}");
    let (s, r) = shredder.post("transit/decrypt/k", json!({"ciphertext": b1})).await;
    assert_eq!(s, 403, "decrypt: {r}");
    let (s, r) = shredder.delete(&alice_path).await;
    assert_eq!(s, 204, "destroy with delete on transit/subjects/k/*: {r}");
    let (s, r) = decrypt(&app, "k", &a1, json!({})).await;
    assert_destroyed(s, &r, "the app after the shredder destroyed alice");
    assert_eq!(decrypt_ok(&app, "k", &b1, json!({})).await, b"bob");
    assert_eq!(
        decrypt_ok(rc, "other", &o1, json!({})).await,
        b"alice elsewhere",
        "alice under another key is another subject"
    );
    let (s, r) = read_subject(rc, "k", ALICE).await;
    assert_eq!((s, &r["data"]["destroyed"]), (200, &json!(true)), "{r}");

    // A reader: GET and LIST, no destroy.
    let reader = c.with_token(
        &token_with(
            rc,
            "reader",
            r#"path "transit/subjects/k/*" { capabilities = ["read"] }
               path "transit/subjects/k" { capabilities = ["list"] }"#,
        )
        .await,
    );
    let (s, r) = reader.get(&format!("transit/subjects/k/{}", pct(BOB))).await;
    assert_eq!((s, &r["data"]["subject"]), (200, &json!(BOB)), "{r}");
    let (s, r) = reader.list("transit/subjects/k").await;
    assert_eq!((s, &r["data"]["keys"]), (200, &json!([BOB])), "{r}");
    let (s, r) = reader.delete(&format!("transit/subjects/k/{}", pct(BOB))).await;
    assert_eq!(s, 403, "destroy by a reader: {r}");
    assert_eq!(decrypt_ok(&app, "k", &b1, json!({})).await, b"bob");
    assert_no_panic(&v.srv);
}

#[tokio::test]
async fn policies_on_subjects_sqlite() {
    policies(Backend::Sqlite).await;
}

#[tokio::test]
async fn policies_on_subjects_postgres() {
    policies(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// 6. Concurrent first uses
// ---------------------------------------------------------------------------

async fn concurrent_first_use(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "k", json!({})).await;

    async fn burst(rc: &Client, key: &str, subject: &str, n: usize) -> Vec<String> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let c = rc.clone();
            let (key, subject) = (key.to_string(), subject.to_string());
            set.spawn(async move {
                let body = json!({"plaintext": b64(format!("msg {i}").as_bytes()), "subject": subject});
                let (s, r) = c.post(&format!("transit/encrypt/{key}"), body).await;
                assert_eq!(s, 200, "concurrent encrypt {i} for a new subject: {r}");
                (i, r["data"]["ciphertext"].as_str().unwrap().to_string())
            });
        }
        let mut out = set.join_all().await;
        out.sort();
        out.into_iter().map(|(_, ct)| ct).collect()
    }

    async fn check_all(rc: &Client, key: &str, subject: &str, cts: &[String]) {
        for ct in cts {
            assert_eq!(tag_of(ct), tag_of(&cts[0]), "one subject key for every concurrent first use: {cts:#?}");
            assert_subject_ct(ct, 1, 1);
        }
        let items: Vec<Value> = cts.iter().map(|c| json!({"ciphertext": c})).collect();
        let (s, r) = rc.post(&format!("transit/decrypt/{key}"), json!({"batch_input": items})).await;
        assert_eq!(s, 200, "every ciphertext decrypts: {r}");
        for (i, item) in results(&r).iter().enumerate() {
            assert_eq!(unb64(item["plaintext"].as_str().unwrap()), format!("msg {i}").as_bytes(), "{r}");
        }
        let (s, r) = read_subject(rc, key, subject).await;
        assert_eq!((s, &r["data"]["generation"], &r["data"]["destroyed"]), (200, &json!(1), &json!(false)), "{r}");
        assert_eq!(r["data"]["id"], hex_id(&split_subject_ct(&cts[0]).2), "{r}");
    }

    let cts = burst(rc, "k", "brand-new", 20).await;
    assert_eq!(cts.len(), 20);
    check_all(rc, "k", "brand-new", &cts).await;

    // A key and a subject both brand new (upsert and first use at once).
    let cts = burst(rc, "fresh-key", "brand-new-too", 20).await;
    check_all(rc, "fresh-key", "brand-new-too", &cts).await;
    let (s, r) = rc.get("transit/keys/fresh-key").await;
    assert_eq!((s, &r["data"]["latest_version"]), (200, &json!(1)), "{r}");

    // Concurrent batches naming the same new subjects in different orders.
    let subjects: Vec<String> = (0..5).map(|i| format!("batch-subject-{i}")).collect();
    let mut set = tokio::task::JoinSet::new();
    for j in 0..10 {
        let c = rc.clone();
        let mut order = subjects.clone();
        order.rotate_left(j % 5);
        if j % 2 == 1 {
            order.reverse();
        }
        set.spawn(async move {
            let items: Vec<Value> =
                order.iter().map(|s| json!({"plaintext": b64(s.as_bytes()), "subject": s})).collect();
            let (s, r) = c.post("transit/encrypt/k", json!({"batch_input": items})).await;
            assert_eq!(s, 200, "concurrent batch {j}: {r}");
            order
                .into_iter()
                .zip(results(&r).iter().map(|i| i["ciphertext"].as_str().unwrap().to_string()))
                .collect::<Vec<_>>()
        });
    }
    let mut by_subject: std::collections::HashMap<String, Vec<String>> = Default::default();
    for pairs in set.join_all().await {
        for (s, ct) in pairs {
            by_subject.entry(s).or_default().push(ct);
        }
    }
    assert_eq!(by_subject.len(), 5);
    for (subject, cts) in &by_subject {
        assert_eq!(cts.len(), 10, "{subject}");
        for ct in cts {
            assert_eq!(tag_of(ct), tag_of(&cts[0]), "{subject}: one key");
            assert_subject_ct(ct, 1, 1);
            assert_eq!(decrypt_ok(rc, "k", ct, json!({"subject": subject})).await, subject.as_bytes());
        }
        let (s, r) = read_subject(rc, "k", subject).await;
        assert_eq!((s, &r["data"]["generation"]), (200, &json!(1)), "{r}");
    }
    let mut expected: Vec<String> = subjects.clone();
    expected.push("brand-new".into());
    expected.sort();
    assert_eq!(list_subjects(rc, "k").await, expected);
    assert_no_panic(&v.srv);
}

#[tokio::test]
async fn concurrent_first_use_makes_one_key_sqlite() {
    concurrent_first_use(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_first_use_makes_one_key_postgres() {
    concurrent_first_use(Backend::Postgres).await;
}

/// Red team: copies of one key restored under other names share its
/// subjects; destroying a subject under one name destroys it under all.
/// A forged tombstone in a backup erases nothing outside the key it is
/// restored as. Refused items never remake an erased subject.
async fn erasure_reaches_every_copy(backend: Backend) {
    let v = vault(backend).await;
    let rc = &v.rc;
    create_key(rc, "orig", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let (a1, _) = encrypt(rc, "orig", b"alice", Some(ALICE)).await;
    let (b1, _) = encrypt(rc, "orig", b"bob", Some(BOB)).await;
    let bk = backup_of(rc, "orig").await;
    let (s, r) = rc.post("transit/restore/copy", json!({"backup": bk})).await;
    assert_eq!(s, 204, "{r}");
    assert_eq!(decrypt_ok(rc, "copy", &a1, json!({})).await, b"alice");
    destroy(rc, "orig", ALICE).await;
    for key in ["orig", "copy"] {
        let (s, r) = decrypt(rc, key, &a1, json!({})).await;
        assert_destroyed(s, &r, &format!("alice under {key} after her destroy under orig"));
        assert_eq!(decrypt_ok(rc, key, &b1, json!({})).await, b"bob", "bob under {key}");
        assert_eq!(list_subjects(rc, key).await, [BOB], "LIST {key}");
    }
    let (s, r) = read_subject(rc, "copy", ALICE).await;
    assert_eq!((s, &r["data"]["destroyed"]), (200, &json!(true)), "the copy's row is a tombstone: {r}");
    // Restoring the old backup under yet another name: still erased.
    let (s, r) = rc.post("transit/restore/copy2", json!({"backup": bk})).await;
    assert_eq!(s, 204, "{r}");
    let (s, r) = decrypt(rc, "copy2", &a1, json!({})).await;
    assert_destroyed(s, &r, "alice in a later restore of an older backup");

    // A forged tombstone for bob's id, restored as the attacker's own key.
    create_key(rc, "mine", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    let own = unb64(&backup_of(rc, "mine").await);
    let bob_id = hex_id(&split_subject_ct(&b1).2);
    let tomb =
        serde_json::to_vec(&json!({"id": bob_id, "generation": 4294967295u32, "created_time": 0, "destroyed_time": 0}))
            .unwrap();
    let mut bundle = b"TKS1".to_vec();
    bundle.extend_from_slice(&(own.len() as u32).to_be_bytes());
    bundle.extend_from_slice(&own);
    bundle.extend_from_slice(&1u32.to_be_bytes());
    bundle.extend_from_slice(&(tomb.len() as u32).to_be_bytes());
    bundle.extend_from_slice(&tomb);
    let (s, r) = rc.post("transit/restore/mine2", json!({"backup": b64(&bundle)})).await;
    assert!(s == 204 || s == 400, "{r}");
    assert_eq!(decrypt_ok(rc, "orig", &b1, json!({})).await, b"bob", "a forged tombstone erased bob");
    let (s, r) = rc.post("transit/restore/orig-dr", json!({"backup": bk})).await;
    assert_eq!(s, 204, "{r}");
    assert_eq!(decrypt_ok(rc, "orig-dr", &b1, json!({})).await, b"bob", "disaster recovery lost bob");
    destroy(rc, "orig", BOB).await;
    let (b2, _) = encrypt(rc, "orig", b"bob again", Some(BOB)).await;
    assert_subject_ct(&b2, 1, 2);

    // Refused items (a version that does not exist, an index field that
    // is not there) never remake an erased subject.
    let erased = |n: &'static str| async move {
        let (s, r) = read_subject(rc, "orig", n).await;
        (s, r["data"]["destroyed"].clone(), r["data"].get("subject").cloned())
    };
    let (s, r) =
        rc.post("transit/encrypt/orig", json!({"plaintext": b64(b"x"), "subject": ALICE, "key_version": 99})).await;
    assert_refused(s, &r, "encrypt with a version that does not exist");
    let (s, r) = rc
        .post(
            "transit/encrypt-fields/orig",
            json!({"document": {"a": 1}, "fields": ["/a"], "index_fields": ["/nope"], "subject": ALICE}),
        )
        .await;
    assert_refused(s, &r, "encrypt-fields with a missing index field");
    let (p1, _) = encrypt(rc, "orig", b"plain", None).await;
    let (s, r) = rc.post("transit/rewrap/orig", json!({"ciphertext": p1, "subject": ALICE, "key_version": 99})).await;
    assert_refused(s, &r, "rewrap with a version that does not exist");
    assert_eq!(erased(ALICE).await, (200, json!(true), None), "a refused item remade alice's key");
}

#[tokio::test]
async fn erasure_reaches_every_copy_sqlite() {
    erasure_reaches_every_copy(Backend::Sqlite).await;
}

#[tokio::test]
async fn erasure_reaches_every_copy_postgres() {
    erasure_reaches_every_copy(Backend::Postgres).await;
}
