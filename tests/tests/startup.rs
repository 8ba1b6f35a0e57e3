//! Server start-up as an operator meets it, through the real binary: the
//! cause of a failure is named (PostgreSQL down: "connection refused", at
//! once; bad credentials: the server's message without sqlx's source
//! location), a port in use fails before any SQLite file exists, a fresh or
//! sealed server says which `vaultctl` command comes next, and the storage
//! URL and password can come from files (`*_FILE`, Docker/Kubernetes
//! secrets) without ever being logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vault_e2e::{Backend, PgCluster, ServerProc, Store, server_bin};

/// Run `cmd` until it exits (it must, within `limit`): status, everything it
/// wrote (stderr then stdout) and how long it took.
fn run_to_exit(mut cmd: Command, limit: Duration) -> (ExitStatus, String, Duration) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn vault-server");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("vault-server still running after {limit:?}; it wrote:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let mut out = String::new();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status, out, took)
}

fn server_cmd(listen: &str, storage: &str) -> Command {
    let mut cmd = Command::new(server_bin());
    cmd.args(["server", "--listen", listen, "--storage", storage]);
    cmd
}

/// A port nothing listens on (bound once, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn postgres_down_says_connection_refused_at_once() {
    let port = closed_port();
    let url = format!("postgres://vault:pw-canary-3141@127.0.0.1:{port}/vault");
    let (status, out, took) = run_to_exit(server_cmd("127.0.0.1:0", &url), Duration::from_secs(20));
    assert!(!status.success(), "must fail: {out}");
    assert!(out.to_lowercase().contains("refused"), "the cause must be named: {out}");
    assert!(out.contains(&format!("vault@127.0.0.1:{port}/vault")), "which database: {out}");
    assert!(!out.contains("timed out"), "{out}");
    assert!(took < Duration::from_secs(3), "took {took:?}, not at once: {out}");
    assert!(!out.contains("pw-canary-3141"), "the URL's password must never be shown: {out}");
}

#[test]
fn wrong_postgres_password_shows_the_servers_message_only() {
    let pg = PgCluster::shared();
    let db = pg.create_database();
    // Members of the harness's `vault_rotated` group must give a password.
    let role = format!("startup_pw_{}", std::process::id());
    pg.psql(&db, &format!("CREATE ROLE {role} LOGIN PASSWORD 'right-pw-2718' IN ROLE vault_rotated"));
    let url = format!("postgres://{role}:wrong-pw-1618@127.0.0.1:{}/{db}", pg.port());
    let (status, out, took) = run_to_exit(server_cmd("127.0.0.1:0", &url), Duration::from_secs(20));
    assert!(!status.success(), "must fail: {out}");
    assert!(out.contains(&format!("password authentication failed for user \"{role}\"")), "{out}");
    assert!(out.contains("28P01"), "SQLSTATE shown: {out}");
    assert!(!out.contains("at line"), "no PostgreSQL source location: {out}");
    assert!(!out.contains("wrong-pw-1618") && !out.contains("right-pw-2718"), "{out}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn port_in_use_fails_before_the_sqlite_file_exists() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    std::fs::create_dir(&data).unwrap();
    let url = format!("sqlite://{}/vault.db", data.display());
    let (status, out, _) = run_to_exit(server_cmd(&addr, &url), Duration::from_secs(20));
    assert!(!status.success(), "must fail: {out}");
    assert!(out.contains(&format!("cannot listen on {addr}")) && out.contains("in use"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "nothing may be created before the port is bound: {left:?}");
    drop(taken);
}

#[test]
fn unusable_tls_files_fail_before_the_sqlite_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n";
    let cfg = dir.path().join("vault.toml");
    std::fs::write(&cfg, toml).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut cmd = server_cmd("127.0.0.1:0", &format!("sqlite://{}/vault.db", data.display()));
    cmd.arg("--config").arg(&cfg);
    let (status, out, _) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success(), "must fail: {out}");
    assert!(out.contains("/nonexistent/cert.pem"), "{out}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "no storage before TLS is usable");
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_and_sealed_servers_say_what_to_run() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let hint = wait_for_log(&srv, "vaultctl operator init").await;
    assert!(hint.contains("not initialized"), "{hint}");
    assert!(hint.contains(&format!("VAULT_ADDR=http://{}", srv.addr)), "{hint}");
    let c = srv.client();
    let (keys, _root) = c.init(3, 2).await;
    assert!(srv.terminate().success());

    let srv = ServerProc::start(&store, &[]);
    let hint = wait_for_log(&srv, "vaultctl operator unseal").await;
    assert!(hint.contains("sealed") && hint.contains("2 of 3 key shares"), "{hint}");
    assert!(!srv.log_text().contains("operator init"), "an initialized vault is not told to init");
    srv.client().unseal(&keys).await;
    assert!(srv.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_gives_no_seal_hint() {
    let mut cmd = Command::new(server_bin());
    cmd.args(["dev", "--listen", "127.0.0.1:0"]);
    let srv = ServerProc::spawn(cmd);
    assert_eq!(srv.client().get("sys/health").await.0, 200);
    let logs = srv.log_text();
    assert!(!logs.contains("vaultctl operator"), "dev mode is unsealed: {logs}");
}

async fn wait_for_log(srv: &ServerProc, needle: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = srv.logs.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no log line with {needle:?}:\n{}", srv.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A database owned by a role that must log in with a password.
fn password_db(pg: &PgCluster, tag: &str, password: &str) -> (String, String) {
    let db = pg.create_database();
    let role = format!("startup_{tag}_{}", std::process::id());
    pg.psql(&db, &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE vault_rotated"));
    pg.psql(&db, &format!("ALTER DATABASE {db} OWNER TO {role}"));
    (db, role)
}

async fn assert_serves_postgres(srv: &ServerProc, secret: &str) {
    let (s, v) = srv.client().get("sys/seal-status").await;
    assert_eq!((s, v["storage_type"].as_str()), (200, Some("postgresql")), "{v}");
    let logs = srv.log_text();
    assert!(logs.contains("opening storage"), "{logs}");
    assert!(!logs.contains(secret), "the password must never be logged: {logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_url_from_a_file_env_and_config() {
    let pg = PgCluster::shared();
    let password = "url-file-pw-5772";
    let (db, role) = password_db(&pg, "urlfile", password);
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("storage_url");
    std::fs::write(&url_file, format!("postgres://{role}:{password}@127.0.0.1:{}/{db}\n", pg.port())).unwrap();

    // VAULT_STORAGE_URL_FILE (the Docker secrets convention).
    let mut cmd = Command::new(server_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0"]).env("VAULT_STORAGE_URL_FILE", &url_file);
    let srv = ServerProc::spawn(cmd);
    assert_serves_postgres(&srv, password).await;
    assert!(srv.log_text().contains(&format!("{role}:***@")), "the URL is logged redacted: {}", srv.log_text());
    assert!(srv.terminate().success());

    // `storage_url_file` in the config file.
    let cfg = dir.path().join("vault.toml");
    std::fs::write(&cfg, format!("listen_addr = \"127.0.0.1:0\"\nstorage_url_file = \"{}\"\n", url_file.display()))
        .unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(["server", "--config"]).arg(&cfg);
    let srv = ServerProc::spawn(cmd);
    assert_serves_postgres(&srv, password).await;
    assert!(srv.terminate().success());

    // An unreadable file is named, with the variable that pointed at it.
    let mut cmd = Command::new(server_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0"]).env("VAULT_STORAGE_URL_FILE", dir.path().join("missing"));
    let (status, out, _) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success());
    assert!(out.contains("VAULT_STORAGE_URL_FILE") && out.contains("missing"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_password_from_a_file() {
    let pg = PgCluster::shared();
    // Characters that must be percent-encoded in a URL.
    let password = "pw@file:5/77#2";
    let (db, role) = password_db(&pg, "pwfile", password);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pg_password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0"])
        .env("VAULT_STORAGE_URL", format!("postgres://{role}@127.0.0.1:{}/{db}", pg.port()))
        .env("VAULT_STORAGE_PASSWORD_FILE", &pw_file);
    let srv = ServerProc::spawn(cmd);
    assert_serves_postgres(&srv, "pw@file").await;
    assert!(!srv.log_text().contains("pw%40file"), "nor its encoded form");
    let (keys, _) = srv.client().init(1, 1).await;
    assert_eq!(srv.client().unseal(&keys).await["sealed"], false);
    assert!(srv.terminate().success());

    // The wrong password from a file: the server's message, no password.
    std::fs::write(&pw_file, "not-it-1234\n").unwrap();
    let mut cmd = server_cmd("127.0.0.1:0", &format!("postgres://{role}@127.0.0.1:{}/{db}", pg.port()));
    cmd.env("VAULT_STORAGE_PASSWORD_FILE", &pw_file);
    let (status, out, _) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success());
    assert!(out.contains("password authentication failed") && !out.contains("not-it-1234"), "{out}");
}

/// A PostgreSQL front that answers the first `rejections` connections as a
/// server still starting up does (SQLSTATE 57P03), then passes connections
/// through to `target`. Returns its port and the count of connections.
async fn starting_up_front(target: u16, rejections: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            if count.fetch_add(1, Ordering::SeqCst) >= rejections {
                tokio::spawn(async move {
                    if let Ok(mut pg) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut sock, &mut pg).await;
                    }
                });
                continue;
            }
            tokio::spawn(async move {
                // Startup messages: length-prefixed; an SSLRequest (length 8,
                // code 80877103) gets "N" (no TLS) and the startup message follows.
                loop {
                    let Ok(len) = sock.read_i32().await else { return };
                    let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
                    if sock.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if len == 8 && body == 80_877_103i32.to_be_bytes() {
                        let _ = sock.write_all(b"N").await;
                        continue;
                    }
                    break;
                }
                let mut fields = Vec::new();
                for f in ["SFATAL", "VFATAL", "C57P03", "Mthe database system is starting up"] {
                    fields.extend_from_slice(f.as_bytes());
                    fields.push(0);
                }
                fields.push(0);
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&(i32::try_from(fields.len()).unwrap() + 4).to_be_bytes());
                msg.extend_from_slice(&fields);
                let _ = sock.write_all(&msg).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_still_starting_up_is_waited_for() {
    let pg = PgCluster::shared();
    let db = pg.create_database();
    let (port, seen) = starting_up_front(pg.port(), 2).await;
    let mut cmd = Command::new(server_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0", "--storage"])
        .arg(format!("postgres://postgres@127.0.0.1:{port}/{db}?sslmode=disable"));
    let srv = ServerProc::spawn(cmd);
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 3, "two refusals, then a connection");
    let waits = srv.logs.lock().unwrap().iter().filter(|l| l.contains("PostgreSQL is starting up")).count();
    assert_eq!(waits, 2, "{}", srv.log_text());
    let (s, v) = srv.client().get("sys/seal-status").await;
    assert_eq!((s, v["storage_type"].as_str()), (200, Some("postgresql")));
    assert!(srv.terminate().success());
}
