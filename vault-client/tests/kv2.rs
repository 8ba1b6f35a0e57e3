//! The KV v2 module against an in-process canned HTTP responder: request
//! paths and query strings, parsing, not-found handling (bare 404 and 404
//! with a deleted version's metadata), following versions, and that secret
//! values never show in `Debug` output or errors. No vault server needed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Seen, canned};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use vault_client::{Client, Error, Secret};

const TOKEN: &str = "hvs.KV2-CANNED-TOKEN";

/// A read answer: version `version` with `data` (null: deleted), Vault's envelope.
fn version(data: Value, version: u64) -> String {
    json!({
        "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {
            "data": data,
            "metadata": {
                "version": version, "created_time": "2026-01-02T03:04:05.123456789Z",
                "deletion_time": "", "destroyed": false, "custom_metadata": null,
            },
        },
        "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv",
    })
    .to_string()
}

fn ok(data: Value, v: u64) -> (u16, String) {
    (200, version(data, v))
}

/// A deleted or destroyed version: 404 with its metadata.
fn gone(v: u64) -> (u16, String) {
    (404, version(Value::Null, v))
}

fn bare_404() -> (u16, String) {
    (404, r#"{"errors":[]}"#.to_string())
}

fn requests(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<(String, String)> {
    seen.lock().unwrap().iter().map(|s| (s.method.clone(), s.path.clone())).collect()
}

fn get(target: &str) -> (String, String) {
    ("GET".to_string(), target.to_string())
}

#[tokio::test]
async fn read_parses_and_maps_not_found_to_none() {
    let (url, seen) = canned(vec![
        ok(json!({"password": "p1", "n": 2}), 4),
        bare_404(),
        gone(5),
        (404, r#"{"errors":["no handler for route \"nope/data/app\""]}"#.to_string()),
        ok(json!({"password": "old"}), 2),
        gone(1),
        bare_404(),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let kv = c.kv2("/secret/");
    assert_eq!(kv.mount(), "secret");

    let s = kv.read("app").await.unwrap().unwrap();
    assert_eq!(s.version, 4);
    assert_eq!(s.created_time, "2026-01-02T03:04:05.123456789Z");
    assert_eq!(Value::Object(s.data), json!({"password": "p1", "n": 2}));
    assert!(kv.read("missing").await.unwrap().is_none(), "bare 404");
    assert!(kv.read("deleted").await.unwrap().is_none(), "404 with metadata");
    let e = c.kv2("nope").read("app").await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("no handler for route"), "{e}");

    assert_eq!(kv.read_version("app", 2).await.unwrap().unwrap().version, 2);
    assert!(kv.read_version("app", 1).await.unwrap().is_none(), "deleted version");
    assert!(kv.read_version("app", 9).await.unwrap().is_none(), "no such version");

    assert_eq!(
        requests(&seen),
        vec![
            get("/v1/secret/data/app"),
            get("/v1/secret/data/missing"),
            get("/v1/secret/data/deleted"),
            get("/v1/nope/data/app"),
            get("/v1/secret/data/app?version=2"),
            get("/v1/secret/data/app?version=1"),
            get("/v1/secret/data/app?version=9"),
        ]
    );
}

#[tokio::test]
async fn write_posts_data_and_returns_the_version() {
    let write_answer = json!({
        "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {"version": 7, "created_time": "2026-01-02T03:04:05Z", "deletion_time": "", "destroyed": false},
        "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv",
    });
    let (url, seen) = canned(vec![
        (200, write_answer.to_string()),
        (400, r#"{"errors":["check-and-set parameter required for this call"]}"#.to_string()),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let mut data = Map::new();
    data.insert("password".into(), json!("WRITTEN-SECRET"));
    assert_eq!(c.kv2("secret").write("db/app", &data).await.unwrap(), 7);
    let e = c.kv2("secret").write("db/app", &data).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!format!("{e} {e:?}").contains("WRITTEN-SECRET"));

    let seen = seen.lock().unwrap();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/v1/secret/data/db/app"));
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({"data": {"password": "WRITTEN-SECRET"}}));
}

#[tokio::test]
async fn wait_for_newer_sends_the_wait_and_keeps_only_newer_versions() {
    let mut timed_out: Value = serde_json::from_str(&version(json!({"k": "v2"}), 2)).unwrap();
    timed_out["warnings"] = json!(["no version newer than 2 within the wait"]);
    let (url, seen) = canned(vec![
        ok(json!({"k": "v3"}), 3),
        (200, timed_out.to_string()),
        bare_404(),
        gone(3),
        (503, r#"{"errors":["Vault is sealed"]}"#.to_string()),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let kv = c.kv2("secret");
    let s = kv.wait_for_newer("app", 2, Duration::from_secs(30)).await.unwrap().unwrap();
    assert_eq!((s.version, s.data["k"].as_str()), (3, Some("v3")));
    // Sub-second waits round up to whole seconds.
    assert!(kv.wait_for_newer("app", 2, Duration::from_millis(1500)).await.unwrap().is_none(), "timed out");
    assert!(kv.wait_for_newer("none", 0, Duration::from_secs(1)).await.unwrap().is_none(), "no secret");
    assert!(kv.wait_for_newer("app", 2, Duration::from_secs(1)).await.unwrap().is_none(), "newer but deleted");
    let e = kv.wait_for_newer("app", 3, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(e.status(), Some(503));

    assert_eq!(
        requests(&seen),
        vec![
            get("/v1/secret/data/app?wait_for_version_after=2&wait=30s"),
            get("/v1/secret/data/app?wait_for_version_after=2&wait=2s"),
            get("/v1/secret/data/none?wait_for_version_after=0&wait=1s"),
            get("/v1/secret/data/app?wait_for_version_after=2&wait=1s"),
            get("/v1/secret/data/app?wait_for_version_after=3&wait=1s"),
        ]
    );
}

#[tokio::test]
async fn follow_returns_each_newer_version() {
    let (url, seen) = canned(vec![
        // First call: nothing yet (the wait ends with a 404), then version 1.
        bare_404(),
        ok(json!({"k": "v1"}), 1),
        // Version 2 was deleted before we saw it: skipped.
        gone(2),
        ok(json!({"k": "v3"}), 3),
        // A wait that ends with nothing newer, then version 4.
        ok(json!({"k": "v3"}), 3),
        ok(json!({"k": "v4"}), 4),
        // An error is returned; the next call resumes from version 4.
        (503, r#"{"errors":["Vault is sealed"]}"#.to_string()),
        ok(json!({"k": "v5"}), 5),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let mut f = c.kv2("secret").follow("app");
    drop(c);
    assert_eq!(f.last_version(), 0);
    assert_eq!(f.next().await.unwrap().data["k"], "v1");
    assert_eq!(f.next().await.unwrap().version, 3);
    assert_eq!(f.next().await.unwrap().version, 4);
    assert_eq!(f.next().await.unwrap_err().status(), Some(503));
    assert_eq!(f.next().await.unwrap().version, 5);
    assert_eq!(f.last_version(), 5);
    assert_eq!(f.path(), "app");

    let afters: Vec<String> = requests(&seen)
        .into_iter()
        .map(|(m, t)| {
            assert_eq!(m, "GET");
            let q = t.strip_prefix("/v1/secret/data/app?wait_for_version_after=").unwrap();
            q.strip_suffix("&wait=30s").unwrap().to_string()
        })
        .collect();
    assert_eq!(afters, ["0", "0", "1", "2", "3", "3", "4", "4"]);
}

#[test]
fn secret_debug_shows_names_never_values() {
    let mut data = Map::new();
    data.insert("password".into(), json!("TOP-SECRET-VALUE"));
    data.insert("nested".into(), json!({"inner": "INNER-SECRET"}));
    let s = Secret { data, version: 7, created_time: "2026-01-02T03:04:05Z".into() };
    for shown in [format!("{s:?}"), format!("{s:#?}")] {
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("password") && shown.contains("nested") && shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains('7') && shown.contains("version"), "{shown}");
    }
}

#[tokio::test]
async fn decode_errors_and_bad_arguments_do_not_leak() {
    // A value of the wrong type next to a secret: the error names the path, not values.
    let body = json!({"data": {"data": {"password": "LEAKY-SECRET"}, "metadata": {"version": "LEAKY-VERSION"}}});
    let (url, _seen) = canned(vec![(200, body.to_string())]).await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let e = c.kv2("secret").read("app").await.unwrap_err();
    assert!(matches!(&e, Error::Decode { path, .. } if path == "secret/data/app"), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("LEAKY") && !shown.contains(TOKEN), "{shown}");

    // Refused before sending anything.
    assert!(matches!(c.kv2("secret").read("").await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.kv2("/").read("app").await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.kv2("secret").read("../sys/x").await, Err(Error::InvalidArgument(_))));
}
