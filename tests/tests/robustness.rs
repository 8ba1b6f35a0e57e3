//! Bad input gets a clear 4xx in Vault's `{"errors": [...]}` shape, never a
//! 500 or a panic, and nothing half-written; secrets never reach the logs;
//! TLS and the config file work; SIGTERM exits cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, server_bin};

fn assert_error_shape(status: u16, v: &Value, ctx: &str) {
    assert!((400..500).contains(&status), "{ctx}: expected 4xx, got {status}: {v}");
    assert!(v["errors"].is_array(), "{ctx}: body must be {{\"errors\": [...]}}, got {v}");
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();

    // Before init.
    let (s, v) = c.put("sys/unseal", json!({"key": "00".repeat(33)})).await;
    assert_error_shape(s, &v, "unseal before init");
    for (body, ctx) in [
        (b"{not json".to_vec(), "malformed JSON"),
        (b"[1,2]".to_vec(), "array body"),
        (br#"{"secret_shares": "five"}"#.to_vec(), "wrong type"),
        (br#"{"secret_shares": 0, "secret_threshold": 1}"#.to_vec(), "zero shares"),
        (br#"{"secret_shares": 3, "secret_threshold": 4}"#.to_vec(), "threshold > shares"),
        (br#"{"secret_shares": 3, "secret_threshold": 1}"#.to_vec(), "threshold 1 of many"),
        (br#"{"secret_shares": 300, "secret_threshold": 2}"#.to_vec(), "too many shares"),
        (br#"{"secret_shares": 1, "secret_threshold": 1, "pgp_keys": ["x"]}"#.to_vec(), "pgp keys"),
        (br#"{"secret_shares": 1, "secret_threshold": 1, "recovery_shares": 1}"#.to_vec(), "recovery"),
    ] {
        let (s, v) = c.raw("PUT", "sys/init", body).await;
        assert_error_shape(s, &v, ctx);
    }
    // None of that initialized anything.
    assert_eq!(c.get("sys/init").await.1["initialized"], false);

    let (keys, root) = c.init(3, 2).await;
    c.unseal(&keys[..2]).await;
    let rc = c.with_token(&root);

    // Oversized body: 413 before the body is read, not a crash. Raw TCP,
    // because an HTTP client may report the early close instead of the reply.
    {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(srv.addr).unwrap();
        write!(
            sock,
            "PUT /v1/sys/mounts/x HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"type\":",
            33 * 1024 * 1024
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = sock.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(head.contains("errors"), "{head}");
    }

    // Unknown HTTP method.
    let (s, _) = rc.call("TRACE", "sys/mounts", None).await;
    assert_eq!(s, 405);
    // Path traversal segments are refused.
    // (raw TCP, since HTTP clients normalise dot segments away)
    for target in ["/v1/sys/../sys/mounts", "/v1/sys/%2e%2e/sys/mounts", "/v1/kv/./a"] {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(srv.addr).unwrap();
        write!(sock, "GET {target} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        sock.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
    }
    // Token problems: missing and wrong token are 403 (never 401).
    assert_eq!(c.get("sys/mounts").await.0, 403);
    assert_eq!(c.with_token("hvs.AAAAAAAAAAAAAAAAAAAAAAAA").get("sys/mounts").await.0, 403);
    let (s, v) = c.call("GET", "nomount/x", None).await;
    assert_eq!(s, 403, "no token must not reveal routing: {v}");
    let (s, v) = rc.get("nomount/x").await;
    assert_eq!(s, 404, "{v}");
    // Mount errors.
    for (path, body, ctx) in [
        ("sys/mounts/a", json!({}), "no type"),
        ("sys/mounts/a", json!({"type": 5}), "type not a string"),
        ("sys/mounts/a", json!({"type": "nosuchengine"}), "unknown type"),
        ("sys/mounts/sys", json!({"type": "kv"}), "protected path"),
        ("sys/mounts/auth/x", json!({"type": "kv"}), "protected prefix"),
        ("sys/mounts/a", json!({"type": "kv", "options": "v1"}), "options not a map"),
        ("sys/mounts/a", json!({"type": "kv", "options": {"version": "9"}}), "bad kv version"),
        ("sys/mounts/a", json!({"type": "kv", "config": {"default_lease_ttl": "forever"}}), "bad ttl"),
        ("sys/mounts/a", json!({"type": "system"}), "singleton type"),
    ] {
        let (s, v) = rc.post(path, body).await;
        assert_error_shape(s, &v, ctx);
    }
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    let (s, v) = rc.post("sys/mounts/kv", json!({"type": "kv"})).await;
    assert_eq!((s, v["errors"][0].as_str()), (400, Some("path is already in use at kv/")));
    let (s, v) = rc.post("sys/mounts/kv/inner", json!({"type": "kv"})).await;
    assert_error_shape(s, &v, "nested mount");
    // Percent-encoded mount paths (hvac quotes them) are decoded.
    assert_eq!(rc.post("sys/mounts/team%2Dx", json!({"type": "kv"})).await.0, 204);
    assert!(rc.get("sys/mounts").await.1["data"]["team-x/"].is_object());
    // KV input errors.
    let (s, v) = rc.raw("PUT", "kv/a", b"\"just a string\"".to_vec()).await;
    assert_error_shape(s, &v, "non-object secret");
    let (s, v) = rc.put("kv/a", json!({})).await;
    assert_error_shape(s, &v, "empty secret");
    let (s, v) = rc.put("kv/a//b", json!({"x": 1})).await;
    assert_error_shape(s, &v, "empty segment");
    // Bad query flags.
    let (s, v) = rc.get("kv/?list=maybe").await;
    assert_error_shape(s, &v, "bad list flag");
    let (s, v) = c.get("sys/health?activecode=abc").await;
    assert_error_shape(s, &v, "bad health code");
    // Generate-root and rekey misuse (with a token: without one they are 403).
    let (s, v) = rc.put("sys/generate-root/attempt", json!({"otp": "short"})).await;
    assert_error_shape(s, &v, "short otp");
    let (s, v) = rc.put("sys/generate-root/update", json!({"key": keys[0], "nonce": "x"})).await;
    assert_error_shape(s, &v, "update without attempt");
    let (s, v) = rc.put("sys/rekey/update", json!({"key": keys[0], "nonce": "x"})).await;
    assert_error_shape(s, &v, "rekey update without init");
    let (s, v) = rc.put("sys/rekey/init", json!({"secret_shares": 2, "secret_threshold": 3})).await;
    assert_error_shape(s, &v, "bad rekey config");
    let (s, v) = c.raw("PUT", "sys/unseal", b"{\"key\": 5}".to_vec()).await;
    assert_error_shape(s, &v, "key not a string");

    // Still healthy, nothing half-written: the vault works and has exactly the
    // mounts we made.
    assert_eq!(c.get("sys/health").await.0, 200);
    let (_, m) = rc.get("sys/mounts").await;
    let mut paths: Vec<&String> = m["data"].as_object().unwrap().keys().collect();
    paths.sort();
    assert_eq!(paths, ["kv/", "sys/", "team-x/"]);
    assert!(!srv.log_text().contains("panicked"), "server panicked:\n{}", srv.log_text());
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &["--log-level", "trace"]);
    let c = srv.client();
    let (keys, root) = c.init(3, 2).await;
    c.unseal(&keys[..2]).await;
    let rc = c.with_token(&root);
    rc.post("sys/mounts/kv", json!({"type": "kv"})).await;
    rc.put("kv/s", json!({"password": "LOG-CANARY-31337"})).await;
    rc.get("kv/s").await;
    // Errors that involve secrets: wrong share, bad token, malformed share.
    rc.put("sys/rekey/init", json!({"secret_shares": 2, "secret_threshold": 2})).await;
    c.put("sys/unseal", json!({"key": "zz-not-a-share"})).await;
    c.with_token("hvs.WRONGTOKENWRONGTOKEN1234").get("kv/s").await;
    let (_, gr) = rc.put("sys/generate-root/attempt", json!({})).await;
    let otp = gr["otp"].as_str().unwrap().to_string();
    rc.put("sys/seal", json!({})).await;
    let logs = srv.log_text();
    assert!(logs.contains("vault sealed"), "trace logging did run:\n{logs}");
    for secret in keys.iter().map(String::as_str).chain([root.as_str(), "LOG-CANARY-31337", otp.as_str()]) {
        assert!(!logs.contains(secret), "secret {secret:.6}… found in logs");
    }
    for k in &keys {
        let b64 = {
            use std::fmt::Write;
            let mut s = String::new();
            for b in hex::decode(k).unwrap() {
                write!(s, "{b}").unwrap();
            }
            s
        };
        assert!(!logs.contains(&b64));
    }
}

#[tokio::test]
async fn tls_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca_cert = dir.path().join("ca.pem");
    let ca_key = dir.path().join("ca.key");
    let csr = dir.path().join("leaf.csr");
    let ext = dir.path().join("leaf.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n").unwrap();
    let openssl = |args: Vec<&std::ffi::OsStr>| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is needed for the TLS test (apt-get install -y openssl)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    // A throwaway CA, and a leaf for 127.0.0.1 signed by it.
    openssl(vec![
        os("req"),
        os("-x509"),
        os("-newkey"),
        os("ec"),
        os("-pkeyopt"),
        os("ec_paramgen_curve:P-256"),
        os("-nodes"),
        os("-days"),
        os("1"),
        os("-subj"),
        os("/CN=test-ca"),
        os("-keyout"),
        ca_key.as_os_str(),
        os("-out"),
        ca_cert.as_os_str(),
    ]);
    openssl(vec![
        os("req"),
        os("-new"),
        os("-newkey"),
        os("ec"),
        os("-pkeyopt"),
        os("ec_paramgen_curve:P-256"),
        os("-nodes"),
        os("-subj"),
        os("/CN=127.0.0.1"),
        os("-keyout"),
        key.as_os_str(),
        os("-out"),
        csr.as_os_str(),
    ]);
    openssl(vec![
        os("x509"),
        os("-req"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca_cert.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("1"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        cert.as_os_str(),
    ]);
    let store = Store::new(Backend::Sqlite);
    let config = dir.path().join("vault.toml");
    std::fs::write(
        &config,
        format!(
            "listen_addr = \"127.0.0.1:0\"\nstorage_url = \"{}\"\nlog_format = \"json\"\nlog_level = \"info\"\n\
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            store.url,
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.arg("server").arg("--config").arg(&config);
    let srv = ServerProc::spawn_json(cmd);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_cert).unwrap()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let url = format!("https://{}/v1/sys/seal-status", srv.addr);
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["initialized"], false);
    // Plain HTTP to the TLS port does not get an answer.
    let plain = Client::new(&format!("http://{}", srv.addr));
    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/health", "http://".to_string() + &srv.addr.to_string()))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status().as_u16() >= 400);
    drop(plain);
    drop(http);
    // JSON logs: every line parses.
    for line in srv.log_text().lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not JSON: {line}");
    }
    assert!(srv.terminate().success());
}

#[tokio::test]
async fn bad_config_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen_addr = \"not-an-address\"\n").unwrap();
    let out = Command::new(server_bin()).arg("server").arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_addr"), "{err}");
}
