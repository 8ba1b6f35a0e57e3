//! Bad input gets a clear 4xx in Vault's `{"errors": [...]}` shape, never a
//! 500 or a panic, and nothing half-written; secrets never reach the logs;
//! TLS and the config file work; SIGTERM exits cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

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
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n[listener]\ntls_handshake_timeout = \"1s\"\n",
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
    // A client that never finishes its handshake is dropped after
    // `tls_handshake_timeout`.
    let (_, took, closed) = send_and_wait_close(srv.addr, b"\x16\x03\x01\x00", Duration::from_secs(8));
    assert!(closed && took >= Duration::from_millis(700), "stalled handshake: closed {closed} after {took:?}");
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

// ---------------------------------------------------------------------------
// Listener hardening, response wrapping, and what a fuzz of every endpoint
// found. Timeouts are set to a second or two through `[listener]` so these
// run in seconds; bounds are loose because the machine may be busy.
// ---------------------------------------------------------------------------

/// Write `bytes` on a fresh connection, then read until the server closes
/// it (or `limit` passes): what was read, and how long the close took.
fn send_and_wait_close(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, Duration, bool) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.write_all(bytes).unwrap();
    read_until_close(&mut sock, limit)
}

/// Read until EOF or error (closed: true) or until `limit` (closed: false).
fn read_until_close(sock: &mut TcpStream, limit: Duration) -> (String, Duration, bool) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), start.elapsed(), false);
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), start.elapsed(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (String::from_utf8_lossy(&out).into_owned(), start.elapsed(), false);
            }
            // A reset is a close too.
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), start.elapsed(), true),
        }
    }
}

/// One HTTP/1.1 request on `sock` (kept alive); the status and the body.
fn keepalive_request(sock: &mut TcpStream, path: &str) -> (u16, String) {
    write!(sock, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a full response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>())
                })
                .map(Result::unwrap)
                .unwrap_or(0);
            if body.len() >= len {
                return (head[9..12].parse().unwrap(), body.to_string());
            }
        }
    }
}

/// The status of a raw HTTP/1 response, and its body parsed as JSON (Null if none).
fn parse_raw(resp: &str) -> (u16, Value) {
    assert!(resp.starts_with("HTTP/1.1 "), "not an HTTP response: {resp:?}");
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap() })
}

/// A request with one extra header (the harness client sends only the token).
async fn call_with_header(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    header: (&str, &str),
    body: Option<Value>,
) -> (u16, String) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut rb = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}/v1/{path}"));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    rb = rb.header(header.0, header.1);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Listener settings short enough for tests.
fn listener_toml(header: u32, read: u32, idle: u32, max_conns: u32) -> String {
    format!(
        "[listener]\nhttp_read_header_timeout = \"{header}s\"\nhttp_read_timeout = \"{read}s\"\n\
         http_idle_timeout = \"{idle}s\"\nmax_connections = {max_conns}\n"
    )
}

#[tokio::test]
async fn response_wrapping_is_refused_before_anything_runs() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let base = srv.url();
    let wrap = ("X-Vault-Wrap-TTL", "60s");
    let refused = |s: u16, body: &str, ctx: &str| {
        assert_eq!(s, 400, "{ctx}: {body}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert!(v["errors"][0].as_str().unwrap().contains("wrapping is not supported"), "{ctx}: {v}");
    };

    // A raw sys endpoint: nothing is initialized.
    let (s, b) = call_with_header(
        &base,
        "PUT",
        "sys/init",
        None,
        wrap,
        Some(json!({"secret_shares": 1, "secret_threshold": 1})),
    )
    .await;
    refused(s, &b, "init");
    assert_eq!(c.get("sys/init").await.1["initialized"], false);

    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("kv/s", json!({"password": "WRAP-CANARY-4242"})).await.0, 204);

    // A secret read: refused, and not in the answer.
    for ttl in ["60s", "0", "", "junk"] {
        let (s, b) = call_with_header(&base, "GET", "kv/s", Some(&root), ("X-Vault-Wrap-TTL", ttl), None).await;
        refused(s, &b, &format!("kv read, wrap ttl {ttl:?}"));
        assert!(!b.contains("WRAP-CANARY"), "{b}");
    }
    // Secure introduction: an AppRole secret-id must not be minted (and
    // returned in the clear) when the caller asked for it wrapped.
    assert_eq!(rc.post("sys/auth/approle", json!({"type": "approle"})).await.0, 204);
    assert_eq!(rc.post("auth/approle/role/app", json!({"token_policies": ["default"]})).await.0, 204);
    let (s, b) =
        call_with_header(&base, "POST", "auth/approle/role/app/secret-id", Some(&root), wrap, Some(json!({}))).await;
    refused(s, &b, "secret-id");
    assert!(!b.contains("secret_id"), "{b}");
    let (s, v) = rc.list("auth/approle/role/app/secret-id").await;
    assert!(s == 404 || v["data"]["keys"].as_array().is_none_or(Vec::is_empty), "a secret-id was minted: {s} {v}");
    // Writes are not executed either.
    let (s, b) =
        call_with_header(&base, "PUT", "kv/t", Some(&root), wrap, Some(json!({"password": "never-written"}))).await;
    refused(s, &b, "kv write");
    assert_eq!(rc.get("kv/t").await.0, 404);

    // sys/wrapping/* answers plainly that wrapping does not exist, with or
    // without a token (never a 403 that reads as "token already used").
    for (method, path) in [
        ("POST", "sys/wrapping/wrap"),
        ("POST", "sys/wrapping/unwrap"),
        ("POST", "sys/wrapping/lookup"),
        ("GET", "sys/wrapping/lookup"),
        ("POST", "sys/wrapping/rewrap"),
    ] {
        for client in [&c, &rc] {
            let (s, v) = client.call(method, path, Some(json!({"token": "hvs.x"}))).await;
            assert_eq!(s, 400, "{method} {path}: {v}");
            assert!(v["errors"][0].as_str().unwrap().contains("wrapping is not supported"), "{v}");
        }
    }

    // The same through hvac's `wrap_ttl` arguments.
    let py = std::env::var("VAULT_TEST_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
    let script = r#"
import os, sys, hvac
c = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["ROOT"])
for name, call in [
    ("read", lambda: c.read("kv/s", wrap_ttl="60s")),
    ("secret-id", lambda: c.auth.approle.generate_secret_id("app", wrap_ttl="60s")),
    ("unwrap", lambda: c.sys.unwrap("hvs.x")),
]:
    try:
        r = call()
        print(name, "NOT REFUSED", r)
        sys.exit(1)
    except hvac.exceptions.InvalidRequest as e:
        assert "wrapping is not supported" in str(e), (name, str(e))
print("hvac: 3 refused")
"#;
    let out = Command::new(&py)
        .args(["-c", script])
        .env("VAULT_ADDR", &base)
        .env("ROOT", &root)
        .output()
        .expect("python (set VAULT_TEST_PYTHON to an interpreter with hvac, e.g. target/pyenv/bin/python)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("hvac: 3 refused"),
        "hvac wrap_ttl (needs hvac: set VAULT_TEST_PYTHON, e.g. target/pyenv/bin/python made by scripts/test):\n{text}"
    );
    let (s, v) = rc.list("auth/approle/role/app/secret-id").await;
    assert!(s == 404 || v["data"]["keys"].as_array().is_none_or(Vec::is_empty), "hvac minted a secret-id: {v}");
    assert!(!srv.log_text().contains("WRAP-CANARY"));
}

#[tokio::test]
async fn stalled_headers_and_bodies_are_cut() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start_with_config(&store, &listener_toml(1, 1, 2, 4096), &[]);
    let quick = Duration::from_millis(700);
    let limit = Duration::from_secs(8);

    // Half a request line: closed after the header timeout, without an answer.
    let (got, took, closed) = send_and_wait_close(srv.addr, b"GET /v1/sys/hea", limit);
    assert!(closed && took >= quick, "half request line: closed {closed} after {took:?}: {got:?}");
    // Complete request line, headers never finished.
    let (_, took, closed) = send_and_wait_close(srv.addr, b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nX-A: ", limit);
    assert!(closed && took >= quick, "half headers: closed {closed} after {took:?}");
    // Trickling a header byte by byte does not extend the deadline.
    {
        let mut sock = TcpStream::connect(srv.addr).unwrap();
        let start = Instant::now();
        let mut cut = false;
        for b in b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if sock.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (_, _, closed) = read_until_close(&mut sock, limit);
        assert!(cut || closed, "byte-by-byte headers were never cut");
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    // Headers announcing 1000 bytes, 10 sent: a 408 in the JSON shape, then close.
    let req = b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"key\":\"00";
    let (got, took, closed) = send_and_wait_close(srv.addr, req, limit);
    assert!(closed && took >= quick, "stalled body: closed {closed} after {took:?}: {got:?}");
    let (s, v) = parse_raw(&got);
    assert_eq!(s, 408, "{got}");
    assert_error_shape(s, &v, "stalled body");

    // A body trickled in small pieces, never pausing for the timeout but
    // not complete within it, is cut too (the deadline is for the whole
    // body, as Vault's: a slow sender cannot hold the connection).
    {
        let body = br#"{"key": "0000000000000000000000000000000000000000000000000000000000000000"}"#;
        let mut sock = TcpStream::connect(srv.addr).unwrap();
        write!(
            sock,
            "PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let start = Instant::now();
        for chunk in body.chunks(10) {
            std::thread::sleep(Duration::from_millis(300));
            if sock.write_all(chunk).is_err() {
                break;
            }
        }
        let (got, _, _) = read_until_close(&mut sock, limit);
        let (s, v) = parse_raw(&got);
        assert_eq!(s, 408, "a trickled body was not cut: {got}");
        assert_error_shape(s, &v, "trickled body");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    // Keep-alive: an idle connection is closed after the idle timeout (2 s),
    // and a new request on it gets the header timeout, not the idle one.
    {
        let mut sock = TcpStream::connect(srv.addr).unwrap();
        assert_eq!(keepalive_request(&mut sock, "/v1/sys/seal-status").0, 200);
        let (_, took, closed) = read_until_close(&mut sock, limit);
        assert!(closed && took >= Duration::from_millis(1500), "idle keep-alive: closed {closed} after {took:?}");

        let mut sock = TcpStream::connect(srv.addr).unwrap();
        assert_eq!(keepalive_request(&mut sock, "/v1/sys/seal-status").0, 200);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(keepalive_request(&mut sock, "/v1/sys/seal-status").0, 200, "a kept-alive connection serves again");
        std::thread::sleep(Duration::from_millis(500));
        sock.write_all(b"GET /v1/sys/seal").unwrap();
        let (_, took, closed) = read_until_close(&mut sock, limit);
        assert!(closed && took < Duration::from_millis(1900), "half head after idle: closed {closed} after {took:?}");
    }

    // HTTP/2 without TLS (prior knowledge) goes through the same guards.
    // (reqwest has no default rustls provider: install it, whichever test runs first.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().timeout(Duration::from_secs(30)).build().unwrap();
    for _ in 0..3 {
        let r = h2.get(format!("{}/v1/sys/seal-status", srv.url())).send().await.unwrap();
        assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    }

    // Still serving, nothing panicked.
    assert_eq!(srv.client().get("sys/seal-status").await.0, 200);
    assert!(!srv.log_text().contains("panicked"), "{}", srv.log_text());
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start_with_config(&store, &listener_toml(10, 10, 60, 2), &[]);
    // Two kept-alive connections take both slots.
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(srv.addr).unwrap()).collect();
    for s in &mut held {
        assert_eq!(keepalive_request(s, "/v1/sys/seal-status").0, 200);
    }
    // A third is not served while they stay open...
    let mut third = TcpStream::connect(srv.addr).unwrap();
    third.write_all(b"GET /v1/sys/seal-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (got, _, closed) = read_until_close(&mut third, Duration::from_millis(1500));
    assert!(got.is_empty() && !closed, "served beyond the cap: {got:?}");
    // ...and is as soon as one closes.
    drop(held.pop());
    let (got, took, _) = read_until_close(&mut third, Duration::from_secs(10));
    assert_eq!(parse_raw(&got).0, 200, "after a slot freed ({took:?}): {got:?}");
    // The remaining held connection still works.
    assert_eq!(keepalive_request(&mut held[0], "/v1/sys/seal-status").0, 200);
    let logs = srv.log_text();
    assert!(logs.contains("connection limit reached"), "{logs}");
}

#[tokio::test]
async fn fuzz_findings_are_clear_4xx() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();

    // Raw sys bodies must be JSON objects: an array is not positional fields.
    for body in ["[]", "[1,1]", "[1, 1, [], null]", "null", "5", "\"x\"", "true"] {
        let (s, v) = c.raw("PUT", "sys/init", body.as_bytes().to_vec()).await;
        assert_error_shape(s, &v, &format!("init {body}"));
    }
    assert_eq!(c.get("sys/init").await.1["initialized"], false, "an array body initialized the vault");
    let (keys, root) = c.init(3, 2).await;
    let rc = c.with_token(&root);
    let (s, v) = rc.raw("PUT", "sys/unseal", format!("[\"{}\"]", keys[0]).into_bytes()).await;
    assert_error_shape(s, &v, "unseal with an array");
    assert_eq!(c.get("sys/seal-status").await.1["progress"], 0);
    c.unseal(&keys[..2]).await;
    for (path, body) in [
        ("sys/rekey/init", "[2,2]"),
        ("sys/rekey/update", "[\"00\", \"x\"]"),
        ("sys/generate-root/attempt", "[]"),
        ("sys/generate-root/update", "[\"00\"]"),
    ] {
        let (s, v) = rc.raw("PUT", path, body.as_bytes().to_vec()).await;
        assert_error_shape(s, &v, &format!("{path} {body}"));
    }
    let (s, v) = rc.get("sys/rekey/init").await;
    assert!(s == 200 && v["started"] == false, "an array body started a rekey: {v}");
    let (s, v) = rc.get("sys/generate-root/attempt").await;
    assert!(s == 200 && v["started"] == false, "an array body started generate-root: {v}");

    // sys/health: every *code parameter must be a final status 200-599,
    // whatever state the server is in; flags must be booleans.
    for q in [
        "activecode=100",
        "activecode=101",
        "activecode=102",
        "activecode=199",
        "activecode=600",
        "activecode=999",
        "activecode=1000",
        "activecode=-1",
        "activecode=",
        "activecode=abc",
        "sealedcode=abc",
        "uninitcode=99",
        "standbycode=x",
        "drsecondarycode=150",
        "performancestandbycode=2000",
        "haunhealthycode=abc",
        "removedcode=abc",
        "standbyok=maybe",
        "perfstandbyok=2",
        "activecode=%zz",
    ] {
        let (s, v) = c.get(&format!("sys/health?{q}")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_error_shape(s, &v, q);
        let (s, _) = c.call("HEAD", &format!("sys/health?{q}"), None).await;
        assert_eq!(s, 400, "HEAD {q}");
    }
    for (q, want) in [
        ("activecode=200", 200),
        ("activecode=299", 299),
        ("activecode=429&sealedcode=200&standbyok=true", 429),
        ("activecode=599", 599),
        ("activecode=204", 204),
        ("standbyok", 200),
    ] {
        let (s, v) = c.get(&format!("sys/health?{q}")).await;
        assert_eq!(s, want, "{q}: {v}");
        if want != 204 {
            assert_eq!(v["sealed"], false, "{q}: {v}");
        }
    }

    // Malformed percent-encoding in a query string is a 400, not ignored.
    rc.post("sys/mounts/kv", json!({"type": "kv"})).await;
    rc.put("kv/a", json!({"x": "1"})).await;
    for q in ["list=%zz", "list=%2", "list=%ff", "x=%zz&list=true", "list=true&%+1=x", "li%zzst=true"] {
        let (s, v) = rc.get(&format!("kv/?{q}")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_error_shape(s, &v, q);
    }
    assert_eq!(rc.get("kv/?list=%74rue").await.1["data"]["keys"], json!(["a"]));

    // A chunked body that breaks the framing is a 400, not "too large".
    let (got, _, _) = send_and_wait_close(
        srv.addr,
        format!(
            "PUT /v1/kv/b HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    let (s, v) = parse_raw(&got);
    assert_eq!(s, 400, "{got}");
    assert_error_shape(s, &v, "broken chunked body");

    // What hyper answers by itself, before any of our code runs (docs/api.md,
    // "Errors the HTTP library answers"): a URI over 64 KiB is a 414 and a
    // malformed request line a 400, both without a body, then the connection
    // closes. Just under the limit the server answers, in the JSON shape.
    let long = "a".repeat(64 * 1024);
    let (got, _, closed) = send_and_wait_close(
        srv.addr,
        format!("GET /v1/{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(got.starts_with("HTTP/1.1 414") && closed, "{:.200}", got);
    let near = "a".repeat(60 * 1024);
    let (got, _, _) = send_and_wait_close(
        srv.addr,
        format!("GET /v1/{near} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    let (s, v) = parse_raw(&got);
    assert_error_shape(s, &v, "60 KiB path");
    for line in ["GET\r\n\r\n", "GET /v1/sys/health HTTP/9.9\r\n\r\n", "G@T /v1/sys/health HTTP/1.1\r\n\r\n"] {
        let (got, _, closed) = send_and_wait_close(srv.addr, line.as_bytes(), Duration::from_secs(10));
        assert!(got.starts_with("HTTP/1.1 400") && closed, "{line:?}: {got:?}");
    }

    assert_eq!(c.get("sys/health").await.0, 200);
    assert!(!srv.log_text().contains("panicked"), "{}", srv.log_text());
}

#[tokio::test]
async fn sigterm_drains_within_the_grace_period_then_exits() {
    let store = Store::new(Backend::Sqlite);
    // Long timeouts: only the shutdown may end these connections.
    let srv = ServerProc::start_with_config(&store, &listener_toml(60, 60, 300, 4096), &[]);
    let addr = srv.addr;
    let mut idle = TcpStream::connect(addr).unwrap();
    assert_eq!(keepalive_request(&mut idle, "/v1/sys/seal-status").0, 200);
    // A request in flight that never completes (its body never comes).
    let mut stuck = TcpStream::connect(addr).unwrap();
    stuck.write_all(b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let start = Instant::now();
    let pid = srv.pid().to_string();
    let waiter = std::thread::spawn(move || srv.terminate());
    // The idle connection is closed at once (no request in flight)...
    let (_, took, closed) = read_until_close(&mut idle, Duration::from_secs(4));
    assert!(closed, "idle connection still open {took:?} after SIGTERM (pid {pid})");
    // ...the stuck one gets the grace period (5 s), then is dropped, and the
    // process exits cleanly.
    let (_, took, closed) = read_until_close(&mut stuck, Duration::from_secs(15));
    assert!(closed && took >= Duration::from_secs(3), "stuck request: closed {closed} after {took:?}");
    let status = waiter.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start_with_config(&store, &listener_toml(10, 10, 2, 4096), &[]);
    let (keys, root) = srv.client().init(1, 1).await;
    srv.client().unseal(&keys).await;
    let rc = srv.client().with_token(&root);
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("kv/s", json!({"v": "x".repeat(16 * 1024)})).await.0, 204);

    // Pipeline far more responses (about 50 MiB) than loopback socket
    // buffers hold, and read none: the server's writes stall.
    const N: usize = 3000;
    let mut sock = TcpStream::connect(srv.addr).unwrap();
    let one = format!("GET /v1/kv/s HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n\r\n");
    sock.write_all(one.repeat(N).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let (got, _, closed) = read_until_close(&mut sock, Duration::from_secs(20));
    let answered = got.matches("HTTP/1.1 200").count();
    assert!(
        closed && answered < N,
        "closed {closed}, {answered} of {N} responses delivered to a client that stopped reading"
    );
    // Others are still served (a fresh client: this test's blocking sleep
    // kept the pooled one from seeing the idle close).
    let r = Client::new(&srv.url()).try_call("GET", "sys/seal-status", None).await;
    assert_eq!(r.as_ref().map(|r| r.0), Ok(200), "{r:?}\n{}", srv.log_text());
}
