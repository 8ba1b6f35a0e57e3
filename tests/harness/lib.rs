//! Test harness: start the real `vault-server` binary against SQLite or a
//! throwaway PostgreSQL cluster, and talk to it over loopback HTTP.
//!
//! PostgreSQL tests never skip: without `initdb`/`pg_ctl` they fail with the
//! command that installs them. As root, the cluster runs as user `postgres`
//! (PostgreSQL refuses to run as root).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Which storage a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A database in a throwaway PostgreSQL cluster.
    Postgres,
}

/// A storage location that outlives server restarts within a test.
#[derive(Debug)]
pub struct Store {
    /// The URL given to `--storage`.
    pub url: String,
    /// For SQLite: the directory holding the file (inspect it for plaintext).
    pub dir: Option<tempfile::TempDir>,
    /// For PostgreSQL: the cluster (kept alive while the store lives).
    pub pg: Option<Arc<PgCluster>>,
    /// For PostgreSQL: the database name.
    pub db: Option<String>,
}

impl Store {
    /// A fresh, empty store on `backend`.
    pub fn new(backend: Backend) -> Store {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/vault.db", dir.path().display());
                Store { url, dir: Some(dir), pg: None, db: None }
            }
            Backend::Postgres => {
                let pg = PgCluster::shared();
                let db = pg.create_database();
                Store { url: pg.url(&db), dir: None, pg: Some(pg), db: Some(db) }
            }
        }
    }

    /// Every byte the store holds, for "no plaintext at rest" checks: the
    /// SQLite files, or a dump of the PostgreSQL database.
    pub fn raw_bytes(&self) -> Vec<u8> {
        if let Some(dir) = &self.dir {
            let mut out = Vec::new();
            for e in std::fs::read_dir(dir.path()).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    out.extend(std::fs::read(p).unwrap());
                }
            }
            return out;
        }
        let pg = self.pg.as_ref().unwrap();
        pg.dump(self.db.as_ref().unwrap())
    }
}

/// Path of the built `vault-server` binary (cargo builds it for this package's tests).
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VAULT_SERVER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/vault-server
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("vault-server");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p vault-server` (the README's test command does)",
        bin.display()
    );
    bin
}

/// Path of the built `vaultctl` binary (`cargo build -p vault-client --bins`;
/// the README's test command builds every binary first).
pub fn vaultctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VAULTCTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("vaultctl");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p vault-client --bins` (the README's test command does)",
        bin.display()
    );
    bin
}

/// A running `vault-server server` process.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every log line it wrote so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The config file given with `--config` (removed when the server is dropped).
    config: Option<tempfile::TempPath>,
}

/// The `[audit]` table letting file audit devices write below the
/// temporary directory (where the tests put their audit files).
pub fn audit_in_temp_dir() -> String {
    format!("[audit]\nfile_dirs = [{:?}]\n", std::env::temp_dir().display().to_string())
}

/// Write `toml` to a temporary file (for `--config`); the file is removed
/// when the returned path is dropped.
pub fn config_file(toml: &str) -> tempfile::TempPath {
    let mut f = tempfile::Builder::new().prefix("vault-config-").suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, toml.as_bytes()).unwrap();
    f.into_temp_path()
}

impl ServerProc {
    /// Start `vault-server server` on `store`, with extra args, and wait until it listens.
    pub fn start(store: &Store, extra: &[&str]) -> ServerProc {
        let mut cmd = Command::new(server_bin());
        cmd.arg("server").arg("--listen").arg("127.0.0.1:0").arg("--storage").arg(&store.url);
        cmd.args(extra);
        Self::spawn(cmd)
    }

    /// Like [`start`](Self::start), with a TOML config file holding `toml`
    /// (e.g. a `[rotation]` table) passed as `--config`.
    pub fn start_with_config(store: &Store, toml: &str, extra: &[&str]) -> ServerProc {
        let path = config_file(toml);
        let mut args: Vec<&str> = vec!["--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut srv = Self::start(store, &args);
        srv.config = Some(path);
        srv
    }

    /// Same as [`spawn`](Self::spawn), for servers logging JSON.
    pub fn spawn_json(cmd: Command) -> ServerProc {
        Self::spawn(cmd)
    }

    /// Start an arbitrary `vault-server` command line and wait for "listening".
    pub fn spawn(mut cmd: Command) -> ServerProc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        cmd.env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn vault-server");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = parse_listen(&line) {
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("vault-server did not start listening; logs:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        ServerProc { child, addr, logs, config: None }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Initialize (one share), unseal, mount `secret/` as KV v2: the unseal
    /// keys, the root token and a client holding it.
    pub async fn kv2_ready(&self) -> (Vec<String>, String, Client) {
        let c = self.client();
        let (keys, root) = c.init(1, 1).await;
        c.unseal(&keys).await;
        let rc = c.with_token(&root);
        let (s, v) = rc.post("sys/mounts/secret", serde_json::json!({"type": "kv", "options": {"version": "2"}})).await;
        assert_eq!(s, 204, "mount kv v2: {v}");
        (keys, root, rc)
    }

    /// A client for this server.
    pub fn client(&self) -> Client {
        Client::new(&self.url())
    }

    /// SIGTERM and wait for exit.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait(Duration::from_secs(20))
    }

    /// SIGKILL (a crash) and wait.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("vault-server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// All log output so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Find the listen address in a "listening" log line, text (`addr=...`) or JSON (`"addr":"..."`).
fn parse_listen(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    if let Some(i) = line.find("addr=") {
        let rest = &line[i + 5..];
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        return rest[..end].parse().ok();
    }
    let v: Value = serde_json::from_str(line).ok()?;
    v["fields"]["addr"].as_str()?.parse().ok()
}

/// A small HTTP client speaking the vault API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Token sent as `X-Vault-Token`.
    pub token: Option<String>,
}

/// Status and parsed body (Null when empty).
pub type Reply = (u16, Value);

/// Longest any test request may take (the longest deliberate wait in the
/// tests is a few seconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8200`).
    pub fn new(base: &str) -> Client {
        // reqwest is built without a default rustls provider; the tree has only ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A server that never answers fails the test (named) instead of stalling the run.
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("HTTP client");
        Client { http, base: base.trim_end_matches('/').into(), token: None }
    }

    /// The same client with a token.
    pub fn with_token(&self, token: &str) -> Client {
        Client { token: Some(token.into()), ..self.clone() }
    }

    /// Any request: method, path under /v1/, optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("request {method} {path}: {e}"))
    }

    /// Like [`call`](Self::call), but a transport failure (connection
    /// refused or reset, e.g. the server was killed) is an `Err`, not a panic.
    pub async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Reply, String> {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, url);
        if let Some(t) = &self.token {
            rb = rb.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, v))
    }

    /// Raw body request (for malformed-input tests).
    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        let resp = self.builder(method, path).body(body).send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, v)
    }

    /// `method` without a body; the answer's status and raw bytes.
    pub async fn raw_bytes(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let resp = self.builder(method, path).send().await.expect("request");
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    /// A request to `/v1/{path}` with the token, if any.
    fn builder(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let rb = self.http.request(m, url);
        match &self.token {
            Some(t) => rb.header("X-Vault-Token", t),
            None => rb,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }
    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(body)).await
    }
    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body)).await
    }
    /// DELETE.
    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }
    /// LIST.
    pub async fn list(&self, path: &str) -> Reply {
        self.call("LIST", path, None).await
    }

    /// Initialize with `n` shares, threshold `t`: (hex keys, root token).
    pub async fn init(&self, n: u32, t: u32) -> (Vec<String>, String) {
        let (s, v) = self.put("sys/init", serde_json::json!({"secret_shares": n, "secret_threshold": t})).await;
        assert_eq!(s, 200, "init: {v}");
        let keys = v["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
        (keys, v["root_token"].as_str().unwrap().to_string())
    }

    /// Submit shares until unsealed; returns the last seal status.
    pub async fn unseal(&self, keys: &[String]) -> Value {
        let mut last = Value::Null;
        for k in keys {
            let (s, v) = self.put("sys/unseal", serde_json::json!({"key": k})).await;
            assert_eq!(s, 200, "unseal: {v}");
            last = v;
        }
        last
    }
}

/// A throwaway PostgreSQL cluster shared by the tests of one test binary,
/// stopped when the last test using it is done.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
    counter: Mutex<u32>,
}

static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// Group role whose members log in with a password (scram-sha-256) over
/// 127.0.0.1; every other role is trusted. Created with the cluster.
pub const ROTATED_GROUP: &str = "vault_rotated";

/// The pg_hba.conf line put before the trust lines.
const ROTATED_HBA_LINE: &str = "host all +vault_rotated 127.0.0.1/32 scram-sha-256";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn pg_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BIN") {
        return PathBuf::from(d);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    if let Some(d) = candidates.into_iter().rev().find(|d| d.join("initdb").exists()) {
        return d;
    }
    if let Ok(o) = Command::new("sh").args(["-c", "command -v initdb"]).output()
        && o.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if let Some(d) = p.parent() {
            return d.to_path_buf();
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. The PostgreSQL tests need them and never skip.\n\
         Install them with: apt-get install -y postgresql-15 (or set PG_BIN to the directory holding initdb)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgCluster {
    /// The shared cluster, started if none is running.
    pub fn shared() -> Arc<PgCluster> {
        let mut g = SHARED.lock().unwrap();
        if let Some(c) = g.upgrade() {
            return c;
        }
        let c = Arc::new(PgCluster::start());
        *g = Arc::downgrade(&c);
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c.arg(self.bin.join(args[0]));
            c
        } else {
            Command::new(self.bin.join(args[0]))
        };
        cmd.args(&args[1..]).output().expect("run PostgreSQL tool")
    }

    fn start() -> PgCluster {
        let bin = pg_bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("vault-pg-").tempdir().unwrap().keep();
        if as_postgres {
            let s = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(s.success(), "chown of the PostgreSQL data dir failed");
        }
        let port = free_port();
        let c = PgCluster { dir: dir.clone(), port, bin, as_postgres, counter: Mutex::new(0) };
        let data = dir.join("data");
        let data_s = data.to_str().unwrap();
        let out = c.run(&["initdb", "-D", data_s, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // Members of `vault_rotated` (roles whose passwords the rotation tests
        // rotate) must give their password; everyone else stays `trust`. The
        // line goes first: pg_hba.conf is first match wins.
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(&hba, format!("{ROTATED_HBA_LINE}\n{old}")).expect("write pg_hba.conf");
        let opts =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200", dir.display());
        let log = dir.join("pg.log");
        let out = c.run(&["pg_ctl", "-D", data_s, "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // The group of password-checked roles (see pg_hba.conf above).
        c.psql("postgres", &format!("CREATE ROLE {ROTATED_GROUP} NOLOGIN"));
        c
    }

    /// What the cluster's server has logged so far (its `pg_ctl -l` file).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("pg.log")).unwrap_or_default()
    }

    /// A new empty database.
    pub fn create_database(&self) -> String {
        let n = {
            let mut g = self.counter.lock().unwrap();
            *g += 1;
            *g
        };
        let name = format!("vault_{}_{}", std::process::id(), n);
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .or_else(|_| {
                Command::new("psql")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
                    .arg(format!("CREATE DATABASE {name}"))
                    .output()
            })
            .expect("psql");
        assert!(out.status.success(), "CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr));
        name
    }

    /// Connection URL for `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The port (for tools such as psql).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A plain-text dump of `db` (pg_dump), for "no plaintext at rest" checks.
    pub fn dump(&self, db: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "--data-only", db])
            .output()
            .expect("pg_dump");
        assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Run SQL through psql and return stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-At", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl PgCluster {
    /// Try to log in to `db` as `user` with `password` over 127.0.0.1 (never
    /// prompting) and run `select 1`: Ok, or psql's error output.
    pub fn try_login(&self, db: &str, user: &str, password: &str) -> Result<(), String> {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", user, "-d", db])
            .args(["-w", "-At", "-c", "select 1"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSFILE")
            .output()
            .expect("psql");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
            Ok(())
        } else {
            let (err, out) = (String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
            Err(format!("{}{}", err.trim(), out.trim()))
        }
    }

    /// Start psql as the superuser running `sql` in the background, with
    /// `application_name` set to `app_name` (so [`terminate_app`](Self::terminate_app)
    /// can end its session). Kill the child when done.
    pub fn psql_spawn(&self, db: &str, app_name: &str, sql: &str) -> Child {
        Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-At", "-c", sql])
            .env("PGAPPNAME", app_name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql")
    }

    /// Terminate every session whose `application_name` is `app_name`
    /// (rolling back its open transaction); returns how many there were.
    pub fn terminate_app(&self, app_name: &str) -> usize {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{}'",
                app_name.replace('\'', "''")
            ),
        );
        out.trim().parse().unwrap_or(0)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run(&["pg_ctl", "-D", data.to_str().unwrap_or_default(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Does `haystack` contain `needle`?
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A raw HTTP/1.1 connection to a server, for what `reqwest` cannot send:
/// paths it would normalize (`..` segments) and a body sent only after a
/// pause (the server authorizes a request before reading its body).
#[derive(Debug)]
pub struct RawHttp {
    stream: tokio::net::TcpStream,
}

impl RawHttp {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawHttp {
        RawHttp { stream: tokio::net::TcpStream::connect(addr).await.expect("connect") }
    }

    /// Write `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The head of a request: request line, `Host`, `Connection: close`, the
    /// token if any, a JSON `Content-Length` of `body_len`, and the blank line.
    pub fn head(method: &str, path: &str, token: Option<&str>, body_len: usize) -> String {
        let mut h = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(t) = token {
            h.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        h.push_str(&format!("Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"));
        h
    }

    /// Read the whole answer (the request said `Connection: close`): status
    /// and body parsed as JSON (a string if it is not JSON, Null if empty).
    pub async fn response(mut self) -> Reply {
        use tokio::io::AsyncReadExt as _;
        let mut raw = Vec::new();
        tokio::time::timeout(REQUEST_TIMEOUT, self.stream.read_to_end(&mut raw))
            .await
            .expect("raw HTTP answer timed out")
            .expect("read");
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of headers in the answer");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut body = raw[split + 4..].to_vec();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
            let mut out = Vec::new();
            let mut rest = &body[..];
            loop {
                let eol = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
                let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).expect("chunk size");
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
                rest = &rest[eol + 2 + size + 2..];
            }
            body = out;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, v)
    }

    /// One whole request on a fresh connection.
    pub async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let mut c = RawHttp::connect(addr).await;
        let mut bytes = RawHttp::head(method, path, token, body.len()).into_bytes();
        bytes.extend_from_slice(body);
        c.send(&bytes).await;
        c.response().await
    }
}
