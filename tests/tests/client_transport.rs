//! The library's transport: which failures are retried (a counting canned
//! server: 4xx never, 503 for any method, other 5xx for reads only, health
//! statuses never; connection refused until the server comes up), and TLS
//! against the real server: a self-signed certificate that is its own CA
//! (`openssl req -x509`, CA:TRUE) given as `VAULT_CACERT` is accepted where
//! plain WebPKI refuses it, still checked against the server's name; an
//! unrelated certificate is refused at once; a CA-signed leaf still works;
//! a client certificate is presented to a server that requires one
//! (`openssl s_server -Verify`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vault_client::{Client, ClientBuilder, Error};
use vault_e2e::{Backend, ServerProc, Store, server_bin};

const TOKEN: &str = "hvs.TRANSPORT-TOKEN-SECRET";
const SEALED: &str = r#"{"errors":["Vault is sealed"]}"#;

// ---------------------------------------------------------------------------
// A canned server that counts
// ---------------------------------------------------------------------------

/// One request as received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    body: String,
}

/// Answers each connection with the next (status, body), then 599 to
/// anything more (so an unexpected retry shows), recording every request.
async fn canned(responses: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(listener, responses, seen.clone()));
    (format!("http://{addr}"), seen)
}

async fn serve(listener: TcpListener, responses: Vec<(u16, &'static str)>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut responses = responses.into_iter();
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { return };
        let (status, reply) = responses.next().unwrap_or((599, r#"{"errors":["unexpected request"]}"#));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(i + 4);
            }
        };
        let Some(head_end) = head_end else { continue };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap().split(' ');
        let (method, path) = (first.next().unwrap().to_string(), first.next().unwrap().to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let len: usize = header("content-length").map(|v| v.parse().unwrap()).unwrap_or(0);
        while buf.len() < head_end + len {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..(head_end + len).min(buf.len())]).to_string();
        log.lock().unwrap().push(Seen { method, path, token: header("x-vault-token"), body });
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    }
}

/// A client retrying up to 3 times with short waits.
fn quick(url: &str) -> Client {
    ClientBuilder::new(url)
        .token(TOKEN)
        .max_retries(3)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .build()
        .unwrap()
}

fn count(seen: &Arc<Mutex<Vec<Seen>>>) -> usize {
    seen.lock().unwrap().len()
}

fn shown(e: &Error) -> String {
    let mut s = format!("{e} {e:?}");
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(" {x} {x:?}"));
        src = x.source();
    }
    s
}

const SEAL_STATUS: &str = r#"{"type":"shamir","initialized":true,"sealed":false,"t":1,"n":1,"progress":0,
"nonce":"","version":"0.1.0","build_date":"","migration":false,"recovery_seal":false,"storage_type":"sqlite"}"#;

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

#[tokio::test]
async fn client_errors_are_never_retried() {
    let (url, seen) = canned(vec![
        (400, r#"{"errors":["bad request"]}"#),
        (403, r#"{"errors":["permission denied"]}"#),
        (404, r#"{"errors":["no handler for route"]}"#),
        (429, r#"{"errors":["too many failed login attempts"]}"#),
        (400, r#"{"errors":["invalid role or secret ID"]}"#),
    ])
    .await;
    let c = quick(&url);
    for want in [400, 403, 404, 429] {
        let e = c.logical().read("secret/x").await.unwrap_err();
        assert_eq!(e.status(), Some(want), "{e:?}");
    }
    assert_eq!(count(&seen), 4, "one request per call");
    let e = c.auth().approle("role", "SECRET-ID-VALUE").await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(count(&seen), 5);
    assert!(!shown(&e).contains("SECRET-ID-VALUE"));
}

#[tokio::test]
async fn sealed_503_is_retried_for_any_method_then_reported() {
    let (url, seen) = canned(vec![
        (503, SEALED),
        (503, SEALED),
        (204, ""),
        (503, SEALED),
        (503, SEALED),
        (503, SEALED),
        (503, SEALED),
    ])
    .await;
    let c = quick(&url);
    // A write retried after the server was unsealed: same body, same token.
    assert!(c.logical().write("secret/x", &json!({"k": "v"})).await.unwrap().is_none());
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for s in seen.iter() {
            assert_eq!((s.method.as_str(), s.path.as_str()), ("PUT", "/v1/secret/x"));
            assert_eq!(s.token.as_deref(), Some(TOKEN));
            assert_eq!(serde_json::from_str::<serde_json::Value>(&s.body).unwrap(), json!({"k": "v"}));
        }
    }
    // Still sealed after 3 retries: the 503 is the answer.
    let e = c.logical().read("secret/x").await.unwrap_err();
    assert!(e.is_unavailable() && e.to_string().contains("Vault is sealed"), "{e}");
    assert_eq!(count(&seen), 7);
    assert!(!shown(&e).contains(TOKEN));
}

#[tokio::test]
async fn other_server_errors_are_retried_for_reads_only() {
    let (url, seen) = canned(vec![
        (500, r#"{"errors":["internal error"]}"#),
        (502, "<html>bad gateway</html>"),
        (200, SEAL_STATUS),
        (500, r#"{"errors":["internal error"]}"#),
        (502, r#"{"errors":["TokenReview request failed"]}"#),
    ])
    .await;
    let c = quick(&url);
    assert!(!c.sys().seal_status().await.unwrap().sealed);
    assert_eq!(count(&seen), 3, "a GET is retried after 500 and 502");
    // A write or a login may have taken effect: not sent twice.
    let e = c.logical().write("transit/encrypt/k", &json!({"plaintext": "aGk="})).await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(count(&seen), 4);
    let e = c.auth().kubernetes("web", "JWT-VALUE").await.unwrap_err();
    assert_eq!(e.status(), Some(502));
    assert_eq!(count(&seen), 5);
}

#[tokio::test]
async fn health_statuses_are_answers_not_retried() {
    let health = r#"{"initialized":true,"sealed":true,"standby":true,"performance_standby":false,
"replication_performance_mode":"disabled","replication_dr_mode":"disabled","server_time_utc":1,"version":"0.1.0",
"enterprise":false,"echo_duration_ms":0,"clock_skew_ms":0,"replication_primary_canary_age_ms":0}"#;
    let (url, seen) = canned(vec![(503, health)]).await;
    let h = quick(&url).sys().health().await.unwrap();
    assert_eq!(h.status, 503);
    assert!(h.health.sealed);
    assert_eq!(count(&seen), 1);
}

#[tokio::test]
async fn retries_can_be_disabled() {
    let (url, seen) = canned(vec![(503, SEALED), (200, SEAL_STATUS)]).await;
    let c = ClientBuilder::from_vars(|name| match name {
        "VAULT_ADDR" => Some(url.clone()),
        "VAULT_MAX_RETRIES" => Some("0".into()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap();
    assert!(c.sys().seal_status().await.unwrap_err().is_unavailable());
    assert_eq!(count(&seen), 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_server_listens() {
    let port = free_port();
    // Nothing listens: retried, then a transport error without the token.
    let c = ClientBuilder::new(format!("http://127.0.0.1:{port}"))
        .token(TOKEN)
        .max_retries(2)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();
    let e = c.sys().seal_status().await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(!shown(&e).contains(TOKEN));
    // A login's transport error does not show its URL (a userpass URL holds
    // the user name) nor the password.
    let e = c.auth().userpass("maybe-a-password", "PASSWORD-VALUE", None).await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(!shown(&e).contains("maybe-a-password") && !shown(&e).contains("PASSWORD-VALUE"), "{}", shown(&e));

    // The server comes up while the client is retrying: the request succeeds.
    let c = ClientBuilder::new(format!("http://127.0.0.1:{port}"))
        .max_retries(50)
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        serve(listener, vec![(200, SEAL_STATUS)], log).await;
    });
    let started = Instant::now();
    assert!(!c.sys().seal_status().await.unwrap().sealed);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(count(&seen), 1);
}

// ---------------------------------------------------------------------------
// TLS against the real server
// ---------------------------------------------------------------------------

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .expect("openssl is needed for the TLS tests (apt-get install -y openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `openssl req -x509` for `san`, OpenSSL's defaults otherwise (so CA:TRUE):
/// (certificate, key).
fn self_signed(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    self_signed_with(dir, name, san, &[])
}

/// Like [`self_signed`], with more `-addext` options.
fn self_signed_with(dir: &Path, name: &str, san: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let extra: Vec<&str> = extra.iter().flat_map(|e| ["-addext", *e]).collect();
    let san = format!("subjectAltName={san}");
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=vault-test",
        "-addext",
        &san,
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ];
    args.extend(extra);
    openssl(&args);
    (cert, key)
}

/// The real server on TLS with `cert`/`key`.
fn tls_server(dir: &Path, store: &Store, cert: &Path, key: &Path) -> ServerProc {
    let config = dir.join("vault.toml");
    std::fs::write(
        &config,
        format!(
            "listen_addr = \"127.0.0.1:0\"\nstorage_url = \"{}\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            store.url,
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.arg("server").arg("--config").arg(&config);
    ServerProc::spawn(cmd)
}

fn from_env(addr: &str, cacert: &Path) -> Result<Client, Error> {
    let (addr, cacert) = (addr.to_string(), cacert.to_str().unwrap().to_string());
    ClientBuilder::from_vars(move |name| match name {
        "VAULT_ADDR" => Some(addr.clone()),
        "VAULT_CACERT" => Some(cacert.clone()),
        "VAULT_MAX_RETRIES" => Some("2".into()),
        _ => None,
    })?
    .retry_backoff(Duration::from_secs(10), Duration::from_secs(10))
    .build()
}

#[tokio::test]
async fn self_signed_ca_certificate_is_accepted_as_vault_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", "IP:127.0.0.1");
    // The case at hand: OpenSSL made it a CA certificate.
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("CA:TRUE"), "{text}");
    let store = Store::new(Backend::Sqlite);
    let srv = tls_server(dir.path(), &store, &cert, &key);
    let url = format!("https://{}", srv.addr);

    // WebPKI alone refuses it (what reqwest does with this CA bundle).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let plain = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let refused = plain.get(format!("{url}/v1/sys/seal-status")).send().await.unwrap_err();
    assert!(format!("{refused:?}").contains("CaUsedAsEndEntity"), "{refused:?}");

    // The library accepts exactly that certificate.
    let c = from_env(&url, &cert).unwrap();
    let status = c.sys().seal_status().await.unwrap();
    assert!(!status.initialized);

    // Pinned, but the name still has to match: `localhost` is not in the
    // certificate (only IP 127.0.0.1).
    let by_name = from_env(&format!("https://localhost:{}", srv.addr.port()), &cert).unwrap();
    let started = Instant::now();
    let e = by_name.sys().seal_status().await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(shown(&e).to_lowercase().contains("name"), "{}", shown(&e));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "TLS failures are not retried: {:?} {}",
        started.elapsed(),
        shown(&e)
    );

    // An unrelated self-signed certificate (also CA:TRUE) is refused, at once.
    let (other, _) = self_signed(dir.path(), "other", "IP:127.0.0.1");
    let c = from_env(&url, &other).unwrap();
    let started = Instant::now();
    let e = c.sys().seal_status().await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "TLS failures are not retried");
    // And with no CA bundle, the platform roots do not know it either.
    let c = Client::builder(&url).max_retries(0).build().unwrap();
    assert!(c.sys().seal_status().await.unwrap_err().is_transport());
}

#[tokio::test]
async fn pinned_self_signed_certificate_must_allow_server_auth() {
    let dir = tempfile::tempdir().unwrap();
    // A pinned CA:TRUE certificate made for TLS clients only.
    let (cert, key) = self_signed_with(dir.path(), "clientonly", "IP:127.0.0.1", &["extendedKeyUsage=clientAuth"]);
    let store = Store::new(Backend::Sqlite);
    let srv = tls_server(dir.path(), &store, &cert, &key);
    let url = format!("https://{}", srv.addr);
    let c = from_env(&url, &cert).unwrap().with_token(TOKEN);
    let e = c.sys().seal_status().await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(shown(&e).contains("Purpose"), "{}", shown(&e));
    drop(srv);

    // serverAuth listed: accepted.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_with(dir.path(), "server", "IP:127.0.0.1", &["extendedKeyUsage=serverAuth"]);
    let store = Store::new(Backend::Sqlite);
    let srv = tls_server(dir.path(), &store, &cert, &key);
    let c = from_env(&format!("https://{}", srv.addr), &cert).unwrap();
    assert!(!c.sys().seal_status().await.unwrap().initialized);
}

#[tokio::test]
async fn ca_signed_leaf_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (ca_cert, ca_key) = self_signed(dir.path(), "ca", "DNS:test-ca");
    std::fs::write(dir.path().join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
        .unwrap();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &d("leaf.key"),
        "-out",
        &d("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &d("leaf.csr"),
        "-CA",
        ca_cert.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &d("leaf.ext"),
        "-out",
        &d("leaf.pem"),
    ]);
    let store = Store::new(Backend::Sqlite);
    let srv = tls_server(dir.path(), &store, Path::new(&d("leaf.pem")), Path::new(&d("leaf.key")));
    let c = from_env(&format!("https://{}", srv.addr), &ca_cert).unwrap();
    assert!(!c.sys().seal_status().await.unwrap().initialized);
}

/// `openssl s_server` requiring a client certificate signed by `client_ca`.
struct SServer(Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn client_certificate_is_presented() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key) = self_signed(dir.path(), "server", "IP:127.0.0.1");
    let (client_cert, client_key) = self_signed(dir.path(), "client", "DNS:app");
    // Port 0: s_server picks a free port and prints it ("ACCEPT 127.0.0.1:N").
    // (A port picked here and handed over could be taken meanwhile by
    // another test of this binary, which then stops listening on it.)
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-Verify", "1"])
        .args(["-cert", server_cert.to_str().unwrap(), "-key", server_key.to_str().unwrap()])
        .args(["-CAfile", client_cert.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let out = child.stdout.take().unwrap();
    let _guard = SServer(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        // Read to the end (s_server never blocks on a full pipe).
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("ACCEPT 127.0.0.1:").and_then(|p| p.trim().parse::<u16>().ok()) {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).expect("s_server did not listen");
    let url = format!("https://127.0.0.1:{port}");
    let (u, ca, cc, ck) = (
        url.clone(),
        server_cert.to_str().unwrap().to_string(),
        client_cert.to_str().unwrap().to_string(),
        client_key.to_str().unwrap().to_string(),
    );
    // With VAULT_CLIENT_CERT/KEY the handshake completes: s_server answers
    // its HTML status page, which is not the JSON asked for (a decode error).
    let c = ClientBuilder::from_vars(move |name| match name {
        "VAULT_ADDR" => Some(u.clone()),
        "VAULT_CACERT" => Some(ca.clone()),
        "VAULT_CLIENT_CERT" => Some(cc.clone()),
        "VAULT_CLIENT_KEY" => Some(ck.clone()),
        "VAULT_MAX_RETRIES" => Some("0".into()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap();
    let e = c.sys().seal_status().await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");
    // Without it, the server ends the handshake.
    let c = ClientBuilder::new(&url).ca_cert_file(&server_cert).unwrap().max_retries(0).build().unwrap();
    let e = c.sys().seal_status().await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    // The key never shows in Debug.
    let key = std::fs::read_to_string(&client_key).unwrap();
    let b = ClientBuilder::new(&url).client_identity_pem(std::fs::read(&client_cert).unwrap(), key.clone());
    let inner = key.lines().nth(1).unwrap();
    assert!(!format!("{b:?}").contains(inner));
}
