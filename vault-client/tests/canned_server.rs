//! The client against an in-process canned HTTP responder: status handling
//! (health state codes, bare vs. explained 404), methods, the token header,
//! and that errors never show the token. No vault server needed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::canned;

use serde_json::json;
use vault_client::{Client, Error};

const TOKEN: &str = "hvs.CANNED-TOKEN-SECRET";

const HEALTH_SEALED: &str = r#"{"initialized":true,"sealed":true,"standby":true,"performance_standby":false,
"replication_performance_mode":"disabled","replication_dr_mode":"disabled","server_time_utc":1,"version":"0.1.0",
"enterprise":false,"echo_duration_ms":0,"clock_skew_ms":0,"replication_primary_canary_age_ms":0}"#;

#[tokio::test]
async fn health_state_codes_are_answers() {
    let (url, seen) = canned(vec![(503, HEALTH_SEALED), (500, r#"{"errors":["internal error"]}"#)]).await;
    let c = Client::new(url).unwrap();
    let h = c.sys().health().await.unwrap();
    assert_eq!(h.status, 503);
    assert!(h.health.sealed);
    let e = c.sys().health().await.unwrap_err();
    assert!(matches!(&e, Error::Api { status: 500, errors } if errors == &vec!["internal error".to_string()]));
    assert_eq!(seen.lock().unwrap()[0].path, "/v1/sys/health");
}

#[tokio::test]
async fn logical_not_found_handling() {
    let (url, seen) = canned(vec![
        (404, r#"{"errors":[]}"#),
        (404, r#"{"errors":["no handler for route \"nope/x\""]}"#),
        (404, r#"{"errors":[]}"#),
        (200, r#"{"data":{"keys":["a","dir/"]}}"#),
        (204, ""),
        (200, r#"{"data":{"foo":"bar"}}"#),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let l = c.logical();
    assert!(l.read("kv/missing").await.unwrap().is_none());
    let e = l.read("nope/x").await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("no handler for route"), "{e}");
    assert!(l.list("kv/empty").await.unwrap().is_empty());
    assert_eq!(l.list("kv").await.unwrap(), vec!["a", "dir/"]);
    assert!(l.write("kv/a", &json!({"foo": "bar"})).await.unwrap().is_none());
    assert_eq!(l.read("kv/a").await.unwrap().unwrap()["data"]["foo"], "bar");

    let seen = seen.lock().unwrap();
    let methods: Vec<(&str, &str)> = seen.iter().map(|s| (s.method.as_str(), s.path.as_str())).collect();
    assert_eq!(
        methods,
        vec![
            ("GET", "/v1/kv/missing"),
            ("GET", "/v1/nope/x"),
            ("LIST", "/v1/kv/empty/"),
            ("LIST", "/v1/kv/"),
            ("PUT", "/v1/kv/a"),
            ("GET", "/v1/kv/a"),
        ]
    );
    assert!(seen.iter().all(|s| s.header("x-vault-token") == Some(TOKEN)));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&seen[4].body).unwrap(), json!({"foo": "bar"}));
}

#[tokio::test]
async fn sys_envelopes_and_bodies() {
    let (url, seen) = canned(vec![
        (
            200,
            r#"{"term":2,"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,
                  "data":{"term":2,"install_time":"2026-01-01T00:00:00Z","encryptions":7},
                  "wrap_info":null,"warnings":null,"auth":null,"mount_type":"system"}"#,
        ),
        (204, ""),
        (
            200,
            r#"{"nonce":"n1","complete":true,"keys":["aa"],"keys_base64":["qg=="],"pgp_fingerprints":null,
                  "backup":false,"verification_required":false}"#,
        ),
        (400, r#"{"errors":["rekey in progress"]}"#),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let ks = c.sys().key_status().await.unwrap();
    assert_eq!((ks.term, ks.encryptions), (2, 7));
    let mut opts = std::collections::BTreeMap::new();
    opts.insert("version".to_string(), "1".to_string());
    c.sys().mount("/kvx/", "kv", Some("test"), &opts).await.unwrap();
    match c.sys().rekey_update("share", "n1").await.unwrap() {
        vault_client::RekeyUpdate::Complete(done) => assert_eq!(done.keys_base64, vec!["qg=="]),
        other => panic!("{other:?}"),
    }
    let e = c.sys().rekey_init(3, 2).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!e.to_string().contains(TOKEN) && !format!("{e:?}").contains(TOKEN));

    let seen = seen.lock().unwrap();
    assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", "/v1/sys/mounts/kvx"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[1].body).unwrap(),
        json!({"type": "kv", "description": "test", "options": {"version": "1"}})
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[2].body).unwrap(),
        json!({"key": "share", "nonce": "n1"})
    );
}

#[tokio::test]
async fn transport_errors_do_not_show_the_token() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(format!("http://127.0.0.1:{port}")).unwrap().with_token(TOKEN);
    let e = c.sys().seal_status().await.unwrap_err();
    assert!(matches!(e, Error::Http(_)), "{e:?}");
    let mut shown = format!("{e} {e:?}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        shown.push_str(&s.to_string());
        src = s.source();
    }
    assert!(!shown.contains("CANNED-TOKEN"), "{shown}");
}

#[tokio::test]
async fn keep_alive_survives_a_huge_lease_duration() {
    // lookup-self: 2 s left, renewable; renew-self: u64::MAX seconds. The
    // task used to panic computing 2/3 of that (renewal then stopped silently).
    let (url, seen) = canned(vec![
        (200, r#"{"data":{"accessor":"a","policies":["default"],"ttl":2,"renewable":true}}"#),
        (200, r#"{"auth":{"client_token":"t","accessor":"a","lease_duration":18446744073709551615,"renewable":true}}"#),
    ])
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let ka = c.keep_alive(None);
    let mut status = ka.status();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while status.borrow().renewals == 0 {
        tokio::time::timeout_at(deadline, status.changed()).await.expect("no renewal").expect("keep-alive task died");
    }
    // The next round starts at once with the huge TTL: give it time to panic.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(status.has_changed().is_ok(), "the keep-alive task died");
    let ttl = status.borrow().ttl.unwrap();
    assert!(ttl <= std::time::Duration::from_secs(10 * 366 * 24 * 3600), "{ttl:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);
    drop(ka);
}

/// A server answering every connection with `head` and then `chunk`
/// forever (until the client goes away).
async fn endless(head: &'static str, chunk: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn huge_or_endless_response_bodies_are_refused() {
    use std::time::Duration;
    // 3 GB announced: refused on the headers, at the default limit.
    let url = endless(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3000000000\r\n\r\n",
        vec![b' '; 64 * 1024],
    )
    .await;
    let c = Client::new(url).unwrap().with_token(TOKEN);
    let e = tokio::time::timeout(Duration::from_secs(20), c.logical().read("secret/data/app"))
        .await
        .expect("the client kept reading")
        .unwrap_err();
    assert!(
        matches!(&e, Error::ResponseTooLarge { limit, .. } if *limit == vault_client::DEFAULT_MAX_RESPONSE_BYTES),
        "{e:?}"
    );
    assert!(e.to_string().contains("too large"), "{e}");

    // An endless chunked body: refused once the bytes read pass the limit.
    let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
    chunk.extend(vec![b' '; 64 * 1024]);
    chunk.extend(b"\r\n");
    let url =
        endless("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n", chunk).await;
    for limit in [1024 * 1024, vault_client::DEFAULT_MAX_RESPONSE_BYTES] {
        let c = Client::builder(url.clone()).max_response_bytes(limit).build().unwrap().with_token(TOKEN);
        let e = tokio::time::timeout(Duration::from_secs(20), c.logical().read("secret/data/app"))
            .await
            .expect("the client kept reading")
            .unwrap_err();
        assert!(matches!(&e, Error::ResponseTooLarge { limit: l, .. } if *l == limit), "{e:?}");
    }

    // Under the limit, the same kind of body is read as usual.
    let (url, _) = canned(vec![(200, r#"{"data":{"k":"v"}}"#)]).await;
    let c = Client::builder(url).max_response_bytes(64).build().unwrap().with_token(TOKEN);
    assert_eq!(c.logical().read("kv/a").await.unwrap().unwrap()["data"]["k"], "v");
}
