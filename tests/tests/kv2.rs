//! KV version 2 end to end, over HTTP against the real server: versioned
//! writes and reads, check-and-set, patch, metadata, max_versions trimming,
//! soft delete / undelete / destroy, subkeys, list, metadata delete, and no
//! plaintext at rest — on SQLite, and the main flow on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use vault_e2e::{Backend, Client, ServerProc, Store, contains};

async fn unsealed(backend: Backend) -> (Store, ServerProc, Client) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, _root, rc) = srv.kv2_ready().await;
    (store, srv, rc)
}

/// Write v1 and v2 of `secret/data/app/db`, read latest and version 1.
async fn write_two_versions(rc: &Client) {
    let (s, v) = rc.post("secret/data/app/db", json!({"data": {"password": "CANARY-one-77"}})).await;
    assert_eq!(s, 200, "write v1: {v}");
    assert_eq!(v["data"]["version"], 1);
    assert_eq!(v["data"]["destroyed"], false);
    assert_eq!(v["data"]["deletion_time"], "");
    assert!(v["data"]["created_time"].as_str().unwrap().contains('T'));
    let (s, v) = rc.put("secret/data/app/db", json!({"data": {"password": "CANARY-two-88", "user": "bob"}})).await;
    assert_eq!(s, 200, "write v2: {v}");
    assert_eq!(v["data"]["version"], 2);

    let (s, v) = rc.get("secret/data/app/db").await;
    assert_eq!(s, 200, "read: {v}");
    assert_eq!(v["data"]["data"], json!({"password": "CANARY-two-88", "user": "bob"}));
    assert_eq!(v["data"]["metadata"]["version"], 2);
    let (s, v) = rc.get("secret/data/app/db?version=1").await;
    assert_eq!(s, 200, "read v1: {v}");
    assert_eq!(v["data"]["data"], json!({"password": "CANARY-one-77"}));
    assert_eq!(v["data"]["metadata"]["version"], 1);
}

/// With the read cache off, no key's metadata is ever cached, so every write
/// is first tried as a new key's (`Expect::Absent` on the metadata) while the
/// metadata is read: on an existing key that attempt must fail whole and the
/// write go through from what was read, with check-and-set still enforced.
async fn writes_without_cache(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start_with_config(&store, "cache_max_bytes = 0\n", &[]);
    let (_keys, _root, rc) = srv.kv2_ready().await;
    write_two_versions(&rc).await;
    let (s, v) = rc.post("secret/data/app/db", json!({"data": {"x": "1"}, "options": {"cas": 0}})).await;
    assert_eq!(s, 400, "cas 0 on an existing key: {v}");
    let (s, v) = rc.post("secret/data/app/db", json!({"data": {"x": "3"}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["version"], 3);
    let (s, v) = rc.post("secret/data/fresh", json!({"data": {"x": "1"}, "options": {"cas": 0}})).await;
    assert_eq!(s, 200, "cas 0 on a new key: {v}");
    assert_eq!(v["data"]["version"], 1);
    let (s, v) = rc.get("secret/metadata/app/db").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["current_version"], 3);
    assert_eq!(v["data"]["versions"].as_object().unwrap().len(), 3, "{v}");
    let (s, v) = rc.get("secret/data/app/db?version=2").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["data"], json!({"password": "CANARY-two-88", "user": "bob"}));
}

#[tokio::test]
async fn kv2_writes_without_read_cache_sqlite() {
    writes_without_cache(Backend::Sqlite).await;
}

#[tokio::test]
async fn kv2_writes_without_read_cache_postgres() {
    writes_without_cache(Backend::Postgres).await;
}

#[tokio::test]
async fn kv2_full_flow_sqlite() {
    let (store, _srv, rc) = unsealed(Backend::Sqlite).await;
    write_two_versions(&rc).await;

    // Reading a missing key or version.
    let (s, _) = rc.get("secret/data/nope").await;
    assert_eq!(s, 404);
    let (s, _) = rc.get("secret/data/app/db?version=9").await;
    assert_eq!(s, 404);

    // Check-and-set.
    let (s, v) = rc.post("secret/data/app/db", json!({"data": {"x": "1"}, "options": {"cas": 1}})).await;
    assert_eq!(s, 400, "cas mismatch: {v}");
    assert!(v.to_string().contains("did not match the current version"), "{v}");
    let (s, v) = rc.post("secret/data/app/db", json!({"data": {"x": "1"}, "options": {"cas": 0}})).await;
    assert_eq!(s, 400, "cas 0 on existing: {v}");
    let (s, v) =
        rc.post("secret/data/app/db", json!({"data": {"password": "p3", "user": "bob"}, "options": {"cas": 2}})).await;
    assert_eq!(s, 200, "cas ok: {v}");
    assert_eq!(v["data"]["version"], 3);
    let (s, v) = rc.post("secret/data/fresh", json!({"data": {"a": "b"}, "options": {"cas": 0}})).await;
    assert_eq!(s, 200, "cas 0 new: {v}");

    // cas_required on the key's metadata.
    let (s, v) = rc.post("secret/metadata/fresh", json!({"cas_required": true})).await;
    assert_eq!(s, 204, "metadata write: {v}");
    let (s, v) = rc.post("secret/data/fresh", json!({"data": {"a": "c"}})).await;
    assert_eq!(s, 400, "cas required: {v}");
    assert!(v.to_string().contains("check-and-set parameter required"), "{v}");
    let (s, v) = rc.post("secret/data/fresh", json!({"data": {"a": "c"}, "options": {"cas": 1}})).await;
    assert_eq!(s, 200, "cas given: {v}");

    // Bad input.
    let (s, v) = rc.post("secret/data/app/db", json!({"password": "x"})).await;
    assert_eq!(s, 400, "no data: {v}");
    let (s, v) = rc.post("secret/data/app/db", json!({"data": "str"})).await;
    assert_eq!(s, 400, "data not object: {v}");
    let (s, v) = rc.post("secret/metadata/app/db", json!({"max_versions": -1})).await;
    assert_eq!(s, 400, "negative max_versions: {v}");
    assert!(v.to_string().contains("max_versions"), "{v}");

    // Patch: merge into a new version.
    let (s, v) = rc.call("PATCH", "secret/data/app/db", Some(json!({"data": {"user": null, "port": 5432}}))).await;
    assert_eq!(s, 200, "patch: {v}");
    assert_eq!(v["data"]["version"], 4);
    let (_, v) = rc.get("secret/data/app/db").await;
    assert_eq!(v["data"]["data"], json!({"password": "p3", "port": 5432}));
    let (s, _) = rc.call("PATCH", "secret/data/missing", Some(json!({"data": {"a": "b"}}))).await;
    assert_eq!(s, 404);

    // Metadata.
    let (s, v) = rc.get("secret/metadata/app/db").await;
    assert_eq!(s, 200, "metadata: {v}");
    let m = &v["data"];
    assert_eq!(m["current_version"], 4);
    assert_eq!(m["oldest_version"], 0, "Vault keeps 0 until versions are trimmed");
    assert_eq!(m["max_versions"], 0);
    assert_eq!(m["cas_required"], false);
    assert_eq!(m["delete_version_after"], "0s");
    assert_eq!(m["versions"].as_object().unwrap().len(), 4);
    assert_eq!(m["versions"]["1"]["destroyed"], false);

    // Custom metadata, patched.
    let (s, v) = rc.post("secret/metadata/app/db", json!({"custom_metadata": {"owner": "ops"}})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = rc.call("PATCH", "secret/metadata/app/db", Some(json!({"custom_metadata": {"team": "db"}}))).await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = rc.get("secret/metadata/app/db").await;
    assert_eq!(v["data"]["custom_metadata"], json!({"owner": "ops", "team": "db"}));
    let (_, v) = rc.get("secret/data/app/db").await;
    assert_eq!(v["data"]["metadata"]["custom_metadata"], json!({"owner": "ops", "team": "db"}));
    let (s, v) = rc.call("PATCH", "secret/metadata/app/db", Some(json!({"custom_metadata": {"team": null}}))).await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = rc.get("secret/metadata/app/db").await;
    assert_eq!(v["data"]["custom_metadata"], json!({"owner": "ops"}));
    assert_eq!(v["data"]["max_versions"], 0, "a metadata write keeps settings it does not name");

    // Soft delete of the latest, then undelete.
    let (s, _) = rc.delete("secret/data/app/db").await;
    assert_eq!(s, 204);
    let (s, v) = rc.get("secret/data/app/db").await;
    assert_eq!(s, 404);
    // As Vault: the 404 still carries the deleted version's metadata.
    assert_eq!(v["data"]["data"], serde_json::Value::Null, "{v}");
    assert_eq!(v["data"]["metadata"]["version"], 4, "{v}");
    assert_ne!(v["data"]["metadata"]["deletion_time"], "", "{v}");
    let (_, v) = rc.get("secret/metadata/app/db").await;
    assert_ne!(v["data"]["versions"]["4"]["deletion_time"], "");
    let (s, v) = rc.post("secret/undelete/app/db", json!({"versions": [4]})).await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = rc.get("secret/data/app/db").await;
    assert_eq!(s, 200);
    // Soft delete of given versions.
    let (s, v) = rc.post("secret/delete/app/db", json!({"versions": [2]})).await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = rc.get("secret/data/app/db?version=2").await;
    assert_eq!(s, 404);
    let (s, _) = rc.post("secret/delete/app/db", json!({})).await;
    assert_eq!(s, 400);

    // Destroy.
    let (s, v) = rc.put("secret/destroy/app/db", json!({"versions": [1]})).await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = rc.get("secret/data/app/db?version=1").await;
    assert_eq!(s, 404);
    let (s, _) = rc.post("secret/undelete/app/db", json!({"versions": [1]})).await;
    assert_eq!(s, 204);
    let (s, v) = rc.get("secret/data/app/db?version=1").await;
    assert_eq!(s, 404, "destroyed stays destroyed");
    assert_eq!(v["data"]["metadata"]["destroyed"], true, "{v}");
    let (_, v) = rc.get("secret/metadata/app/db").await;
    assert_eq!(v["data"]["versions"]["1"]["destroyed"], true);

    // Subkeys.
    rc.post("secret/data/nested", json!({"data": {"a": 1, "b": {"c": {"d": "x"}}}})).await;
    let (s, v) = rc.get("secret/subkeys/nested").await;
    assert_eq!(s, 200, "subkeys: {v}");
    assert_eq!(v["data"]["subkeys"], json!({"a": null, "b": {"c": {"d": null}}}));
    let (_, v) = rc.get("secret/subkeys/nested?depth=1").await;
    assert_eq!(v["data"]["subkeys"], json!({"a": null, "b": null}));

    // max_versions trims the oldest versions.
    let (s, v) = rc.post("secret/metadata/trim", json!({"max_versions": 2})).await;
    assert_eq!(s, 204, "{v}");
    for i in 1..=4 {
        let (s, v) = rc.post("secret/data/trim", json!({"data": {"i": i}})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, v) = rc.get("secret/metadata/trim").await;
    assert_eq!(v["data"]["current_version"], 4);
    assert_eq!(v["data"]["oldest_version"], 3);
    let versions: Vec<&String> = v["data"]["versions"].as_object().unwrap().keys().collect();
    assert_eq!(versions, vec!["3", "4"]);
    let (s, _) = rc.get("secret/data/trim?version=1").await;
    assert_eq!(s, 404);
    let (s, v) = rc.get("secret/data/trim?version=3").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["data"]["i"], 3);

    // Mount config.
    let (s, v) = rc.post("secret/config", json!({"max_versions": 5, "delete_version_after": "1h"})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = rc.get("secret/config").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["max_versions"], 5);
    assert_eq!(v["data"]["delete_version_after"], "1h0m0s");
    assert_eq!(v["data"]["cas_required"], false);

    // List.
    let (s, v) = rc.list("secret/metadata").await;
    assert_eq!(s, 200, "list: {v}");
    let keys: Vec<&str> = v["data"]["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for k in ["app/", "fresh", "nested", "trim"] {
        assert!(keys.contains(&k), "{keys:?}");
    }
    let (s, v) = rc.list("secret/metadata/app").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["keys"], json!(["db"]));
    let (s, _) = rc.list("secret/metadata/none").await;
    assert_eq!(s, 404);

    // Bad paths.
    let (s, _) = rc.post("secret/data/a//b", json!({"data": {"a": "b"}})).await;
    assert_eq!(s, 400);

    // No plaintext at rest.
    let raw = store.raw_bytes();
    assert!(!contains(&raw, b"CANARY-one-77") && !contains(&raw, b"CANARY-two-88"), "plaintext in storage");

    // Metadata delete removes every version.
    let (s, _) = rc.delete("secret/metadata/app/db").await;
    assert_eq!(s, 204);
    let (s, _) = rc.get("secret/metadata/app/db").await;
    assert_eq!(s, 404);
    let (s, _) = rc.get("secret/data/app/db?version=3").await;
    assert_eq!(s, 404);
    let (s, _) = rc.list("secret/metadata/app").await;
    assert_eq!(s, 404);
    let (s, v) = rc.post("secret/data/app/db", json!({"data": {"again": "1"}})).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["version"], 1, "{v}");
}

#[tokio::test]
async fn kv2_concurrent_writes_get_distinct_versions() {
    let (_store, _srv, rc) = unsealed(Backend::Sqlite).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = rc.clone();
        tasks.push(tokio::spawn(async move { c.post("secret/data/race", json!({"data": {"i": i}})).await }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        versions.push(v["data"]["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
    let (_, v) = rc.get("secret/metadata/race").await;
    assert_eq!(v["data"]["current_version"], 8);
}

#[tokio::test]
async fn kv2_happy_path_postgres() {
    let (store, _srv, rc) = unsealed(Backend::Postgres).await;
    write_two_versions(&rc).await;
    let (s, v) = rc.post("secret/destroy/app/db", json!({"versions": [1]})).await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = rc.get("secret/data/app/db?version=1").await;
    assert_eq!(s, 404);
    let (s, v) = rc.list("secret/metadata/app").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["keys"], json!(["db"]));
    let raw = store.raw_bytes();
    assert!(!contains(&raw, b"CANARY-two-88"), "plaintext in storage");
}
