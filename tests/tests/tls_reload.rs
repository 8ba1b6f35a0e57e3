//! TLS end to end, through the real binary: the certificate and key are
//! reloaded on SIGHUP while a client keeps its kept-alive connection (it
//! goes on working; a new connection sees the new certificate), a failed
//! reload keeps the old pair, TLS 1.0/1.1 are refused, a required client
//! certificate is enforced, and HSTS is sent over TLS only.
//!
//! Certificates come from `openssl` (as in the other TLS tests): a CA, and
//! server and client certificates it signs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vault_e2e::{Backend, ServerProc, Store};

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is needed for the TLS tests (apt-get install -y openssl)")
}

fn openssl_ok(args: &[&str]) {
    let out = openssl(args);
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA: (cert, key).
fn ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    openssl_ok(&[
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
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// A leaf signed by `ca` for `usage` (`serverAuth` or `clientAuth`): (cert, key).
fn leaf(dir: &Path, name: &str, ca: &(PathBuf, PathBuf), usage: &str) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.ext")),
    );
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    std::fs::write(&ext, format!("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"))
        .unwrap();
    openssl_ok(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.0.to_str().unwrap(),
        "-CAkey",
        ca.1.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

fn der(cert: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert).unwrap()
}

/// A rustls client trusting `ca`, with a client certificate if given.
fn client_config(ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca)).unwrap();
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => {
            b.with_client_auth_cert(vec![der(cert)], PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    // Every connection a full handshake: a resumed session shows the
    // certificate of the session it resumes, not the one served now.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// A kept-alive HTTPS/1.1 connection.
struct Conn(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Conn {
    fn open(srv: &ServerProc, cfg: &Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(srv.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::IpAddress(srv.addr.ip().into());
        let tls = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
        let mut s = rustls::StreamOwned::new(tls, tcp);
        // Finish the handshake now (a refused client certificate shows up here or at the first read).
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(Conn(s))
    }

    /// The certificate the server presented.
    fn peer(&self) -> CertificateDer<'static> {
        self.0.conn.peer_certificates().unwrap()[0].clone().into_owned()
    }

    /// GET `path`: (status, head).
    fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        self.0.flush()?;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if self.0.read(&mut byte)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body)?;
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Ok((status, head))
    }
}

fn tls_toml(cert: &Path, key: &Path, extra: &str) -> String {
    format!("[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}", cert.display(), key.display())
}

fn sighup(srv: &ServerProc) {
    assert!(Command::new("kill").args(["-HUP", &srv.pid().to_string()]).status().unwrap().success());
}

/// Wait for a log line containing `needle` (5 s at most).
fn wait_log(srv: &ServerProc, needle: &str, count: usize) {
    let start = Instant::now();
    while srv.log_text().matches(needle).count() < count {
        assert!(start.elapsed() < Duration::from_secs(5), "no log line {needle:?}:\n{}", srv.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn certificate_reload_keeps_connections_and_old_pair_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = ca(d, "ca");
    let one = leaf(d, "one", &ca, "serverAuth");
    let two = leaf(d, "two", &ca, "serverAuth");
    // The server reads these two paths; the test swaps their content.
    let (cert, key) = (d.join("server.pem"), d.join("server.key"));
    std::fs::copy(&one.0, &cert).unwrap();
    std::fs::copy(&one.1, &key).unwrap();
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start_with_config(&store, &tls_toml(&cert, &key, ""), &[]);
    let cfg = client_config(&ca.0, None);

    let mut kept = Conn::open(&srv, &cfg).unwrap();
    assert_eq!(kept.peer(), der(&one.0));
    let (s, head) = kept.get("/v1/sys/seal-status").unwrap();
    assert_eq!(s, 200);
    // HSTS over TLS: one year by default.
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");

    // New pair on disk, SIGHUP: the kept connection goes on, a new one sees the new certificate.
    std::fs::copy(&two.0, &cert).unwrap();
    std::fs::copy(&two.1, &key).unwrap();
    sighup(&srv);
    wait_log(&srv, "TLS certificate reloaded", 1);
    assert_eq!(kept.get("/v1/sys/seal-status").unwrap().0, 200);
    assert!(Conn::open(&srv, &cfg).unwrap().peer() == der(&two.0), "{}", srv.log_text());

    // A broken pair (key of another certificate, then garbage): the reload
    // fails, says why without key material, and the old pair stays.
    std::fs::copy(&one.1, &key).unwrap();
    sighup(&srv);
    wait_log(&srv, "TLS certificate reload failed", 1);
    let garbage = "-----BEGIN PRIVATE KEY-----\nS0VZLUNBTkFSWS1ub3QtYS1rZXk=\n-----END PRIVATE KEY-----\n";
    std::fs::write(&key, garbage).unwrap();
    sighup(&srv);
    wait_log(&srv, "TLS certificate reload failed", 2);
    let fresh = Conn::open(&srv, &cfg).unwrap();
    assert_eq!(fresh.peer(), der(&two.0));
    assert_eq!(kept.get("/v1/sys/seal-status").unwrap().0, 200);
    let logs = srv.log_text();
    let key_one = std::fs::read_to_string(&one.1).unwrap();
    let key_body = key_one.lines().nth(1).unwrap();
    assert!(!logs.contains("S0VZLUNBTkFSWS1ub3QtYS1rZXk") && !logs.contains(key_body), "{logs}");
    // The server is still alive and serving after three SIGHUPs.
    assert_eq!(Conn::open(&srv, &cfg).unwrap().get("/v1/sys/health").unwrap().0, 501);
}

#[test]
fn old_protocol_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = ca(d, "ca");
    let one = leaf(d, "one", &ca, "serverAuth");
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start_with_config(&store, &tls_toml(&one.0, &one.1, ""), &[]);
    let connect = srv.addr.to_string();
    let s_client = |version: &str| {
        // SECLEVEL=0 lets this OpenSSL offer the old versions at all.
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &connect, version, "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile"])
            .arg(&ca.0)
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    for old in ["-tls1", "-tls1_1"] {
        let (ok, out) = s_client(old);
        assert!(!ok, "{old} was accepted: {out}");
    }
    for good in ["-tls1_2", "-tls1_3"] {
        let (ok, out) = s_client(good);
        assert!(ok && out.contains("Verify return code: 0"), "{good}: {out}");
    }
}

#[test]
fn required_client_certificates_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = ca(d, "ca");
    let clients = self::ca(d, "clients");
    let other = self::ca(d, "other");
    let server = leaf(d, "server", &ca, "serverAuth");
    let good = leaf(d, "good", &clients, "clientAuth");
    let stranger = leaf(d, "stranger", &other, "clientAuth");
    let store = Store::new(Backend::Sqlite);
    let extra = format!(
        "tls_client_ca_file = \"{}\"\ntls_require_and_verify_client_cert = true\nhsts_max_age = 600\n",
        clients.0.display()
    );
    let srv = ServerProc::start_with_config(&store, &tls_toml(&server.0, &server.1, &extra), &[]);

    let (s, head) = Conn::open(&srv, &client_config(&ca.0, Some(&good))).unwrap().get("/v1/sys/seal-status").unwrap();
    assert_eq!(s, 200);
    assert!(head.contains("strict-transport-security: max-age=600"), "{head}");
    // Without a certificate, or with one from another CA: no answer.
    for identity in [None, Some(&stranger)] {
        let refused = Conn::open(&srv, &client_config(&ca.0, identity)).and_then(|mut c| c.get("/v1/sys/seal-status"));
        assert!(refused.is_err(), "answered without a valid client certificate: {refused:?}");
    }
    drop(srv);

    // Optional (a CA, not required): a client without a certificate is served.
    let extra = format!("tls_client_ca_file = \"{}\"\n", clients.0.display());
    let srv = ServerProc::start_with_config(&store, &tls_toml(&server.0, &server.1, &extra), &[]);
    assert_eq!(Conn::open(&srv, &client_config(&ca.0, None)).unwrap().get("/v1/sys/seal-status").unwrap().0, 200);
    drop(srv);

    // Contradictory settings are refused at start.
    let bad = tls_toml(&server.0, &server.1, "tls_require_and_verify_client_cert = true\n");
    let path = vault_e2e::config_file(&bad);
    let out = Command::new(vault_e2e::server_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_client_ca_file"));
}

#[tokio::test]
async fn no_hsts_over_plain_http() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let r = reqwest::get(format!("{}/v1/sys/seal-status", srv.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
}
