//! The programs in examples/ against a real server: the axum service that
//! loads its configuration at boot and follows a rotation, the PII example
//! (field encryption, blind-index lookup, crypto-shredding), and the boot
//! benchmark's program.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vault_e2e::{Backend, ServerProc, Store};

fn example_bin(name: &str) -> PathBuf {
    let bin = vault_e2e::server_bin().parent().unwrap().join(name);
    assert!(bin.exists(), "{} not built: cargo build -p vault-examples --bins", bin.display());
    bin
}

/// A server with `secret/` (KV v2) and `transit/`; the root client.
async fn vault() -> (Store, ServerProc, vault_e2e::Client) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, _root, rc) = srv.kv2_ready().await;
    let (s, v) = rc.post("sys/mounts/transit", json!({"type": "transit"})).await;
    assert_eq!(s, 204, "{v}");
    (store, srv, rc)
}

/// An AppRole role `app` with a policy `app` made of `policy`; the role ID
/// and a fresh secret ID written to files in `dir`.
async fn approle(rc: &vault_e2e::Client, policy: &str, dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (s, v) = rc.put("sys/policies/acl/app", json!({"policy": policy})).await;
    assert!(s == 204 || s == 200, "{v}");
    let (s, v) = rc.post("sys/auth/approle", json!({"type": "approle"})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = rc.post("auth/approle/role/app", json!({"token_policies": "app", "token_ttl": "5m"})).await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = rc.get("auth/approle/role/app/role-id").await;
    let role_id = v["data"]["role_id"].as_str().unwrap().to_string();
    let (_, v) = rc.post("auth/approle/role/app/secret-id", json!({})).await;
    let secret_id = v["data"]["secret_id"].as_str().unwrap().to_string();
    let (r, sfile) = (dir.join("role_id"), dir.join("secret_id"));
    std::fs::write(&r, role_id).unwrap();
    std::fs::write(&sfile, secret_id).unwrap();
    (r, sfile)
}

/// A child whose output lines are collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            });
        }
        Proc { child, lines }
    }

    fn wait_line(&self, prefix: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            assert!(start.elapsed() < limit, "no line {prefix:?} within {limit:?}: {:?}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fingerprint(password: &str) -> String {
    hex::encode(&Sha256::digest(password.as_bytes())[..4])
}

#[tokio::test(flavor = "multi_thread")]
async fn app_service_loads_at_boot_and_follows_rotation() {
    let (_store, srv, rc) = vault().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"
path "secret/data/myapp/*" { capabilities = ["read"] }
path "secret/data/shared" { capabilities = ["read"] }
"#;
    let (role_file, secret_file) = approle(&rc, policy, dir.path()).await;
    for (path, data) in [
        ("secret/data/myapp/config", json!({"db_host": "db.internal"})),
        ("secret/data/shared", json!({"db_host": "shared-db", "pool_size": "20"})),
        ("secret/data/myapp/db", json!({"username": "app", "password": "first-CANARY-pw"})),
    ] {
        let (s, v) = rc.post(path, json!({"data": data})).await;
        assert_eq!(s, 200, "{path}: {v}");
    }

    let mut cmd = Command::new(example_bin("app_service"));
    cmd.env_clear()
        .env("VAULT_ADDR", srv.url())
        .env("VAULT_ROLE_ID_FILE", &role_file)
        .env("VAULT_SECRET_ID_FILE", &secret_file)
        .env("LISTEN", "127.0.0.1:0");
    let app = Proc::spawn(cmd);
    let line = app.wait_line("listening on ", Duration::from_secs(20));
    let addr = line.trim_start_matches("listening on ").trim().to_string();
    let http = reqwest::Client::new();
    let status = || async {
        let r = http.get(format!("http://{addr}/status")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };

    // The first path wins for db_host; pool_size came from secret/shared as a
    // string and fits the u32 field.
    let s = status().await;
    assert_eq!(s["db_host"], "db.internal", "{s}");
    assert_eq!(s["pool_size"], 20, "{s}");
    assert_eq!(s["db_user"], "app", "{s}");
    assert_eq!(s["db_password_sha256_prefix"], fingerprint("first-CANARY-pw"), "{s}");

    // The vault rotates the password; the service uses the new one, unrestarted.
    let (st, v) = rc
        .post("secret/rotation/myapp/db", json!({"period": "24h", "generator": {"type": "password", "length": 24}}))
        .await;
    assert_eq!(st, 204, "{v}");
    let (st, v) = rc.post("secret/rotate/myapp/db", json!({})).await;
    assert!(st == 200 || st == 204, "{v}");
    let (_, v) = rc.get("secret/data/myapp/db").await;
    let new_pw = v["data"]["data"]["password"].as_str().unwrap().to_string();
    assert_ne!(new_pw, "first-CANARY-pw");
    let want = fingerprint(&new_pw);
    let start = Instant::now();
    loop {
        let s = status().await;
        if s["db_password_sha256_prefix"] == want.as_str() {
            assert_eq!(s["db_user"], "app", "{s}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "rotation not followed: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = app.text();
    assert!(!out.contains("CANARY") && !out.contains(&new_pw), "a password reached the output: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pii_records_lookup_and_shredding() {
    let (_store, srv, rc) = vault().await;
    let token = rc.token.clone().unwrap();
    let out = Command::new(example_bin("pii_records"))
        .env_clear()
        .env("VAULT_ADDR", srv.url())
        .env("VAULT_TOKEN", token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(steps[0], json!({"step": "stored", "rows": 3, "plaintext_in_rows": false}));
    assert_eq!(steps[1], json!({"step": "lookup", "found_id": 1, "name": "Ada Lovelace"}));
    assert_eq!(
        steps[2],
        json!({"step": "erased", "user": 2, "readable": {"user-1": true, "user-2": false, "user-3": true}})
    );
    // The server agrees: user 2's subject key is destroyed.
    let (s, v) = rc.get("transit/subjects/users/user-2").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["destroyed"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_stream_encrypts_through_the_server_and_decrypts_locally() {
    let (_store, srv, rc) = vault().await;
    let token = rc.token.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scan-0042.pdf");
    // 3 MiB and a bit: several segments, the last one short.
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 1234u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let out = Command::new(example_bin("upload_stream"))
        .arg(&file)
        .env_clear()
        .env("VAULT_ADDR", srv.url())
        .env("VAULT_TOKEN", token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(steps[0]["step"], "encrypted");
    assert_eq!(steps[0]["bytes_in"], data.len());
    assert_eq!(steps[1], json!({"step": "decrypted", "via": "local", "identical": true}));
    assert_eq!(
        steps[2],
        json!({"step": "refused", "wrong_id": true, "flipped_byte": true, "cut_off": true, "output_left": false})
    );
    // What is stored is the stream, not the file.
    let sealed = std::fs::read(dir.path().join("scan-0042.pdf.vlts")).unwrap();
    assert!(sealed.starts_with(b"VLTS") && sealed.len() > data.len());
    assert!(!vault_e2e::contains(&sealed, &data[1000..1064]));
    let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["scan-0042.pdf", "scan-0042.pdf.vlts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_config_logs_in_and_loads_three_secrets() {
    let (_store, srv, rc) = vault().await;
    let dir = tempfile::tempdir().unwrap();
    let (role_file, secret_file) =
        approle(&rc, r#"path "secret/data/boot/*" { capabilities = ["read"] }"#, dir.path()).await;
    for (path, data) in [
        ("secret/data/boot/db", json!({"db_host": "h", "db_user": "u", "db_password": "p"})),
        ("secret/data/boot/api", json!({"api_url": "https://api", "api_key": "k"})),
        ("secret/data/boot/signing", json!({"signing_key": "s"})),
    ] {
        let (s, v) = rc.post(path, json!({"data": data})).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    let run = |extra: Option<&str>| {
        let mut c = Command::new(example_bin("boot_config"));
        c.env_clear()
            .env("VAULT_ADDR", srv.url())
            .env("VAULT_ROLE_ID_FILE", &role_file)
            .env("VAULT_SECRET_ID_FILE", &secret_file);
        if let Some(a) = extra {
            c.arg(a);
        }
        c.output().unwrap()
    };
    let out = run(None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "loaded");
    // A field missing everywhere: a clear error naming it, never a value.
    let (s, _) = rc.delete("secret/metadata/boot/signing").await;
    assert_eq!(s, 204);
    let out = run(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("signing_key"), "{err}");
    assert!(!err.contains("https://api"), "{err}");
}

/// examples/injection: the Python app gets its password through `vaultctl
/// exec` (an env file of references) and through `vaultctl agent --once`
/// (AppRole from files, a rendered INI file, mode 0400).
#[tokio::test(flavor = "multi_thread")]
async fn injection_example_exec_and_agent() {
    let (_store, srv, rc) = vault().await;
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/injection");
    for f in ["app.py", "app.env", "config.ini.tmpl", "agent.toml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    approle(&rc, r#"path "secret/data/myapp/*" { capabilities = ["read"] }"#, &run_dir).await;
    let (s, v) = rc
        .post(
            "secret/data/myapp/db",
            json!({"data": {"host": "db.internal", "username": "app", "password": "CANARY-pw-1"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let token = rc.token.clone().unwrap();
    let vaultctl = |args: &[&str], envs: &[(&str, &str)]| {
        let mut c = Command::new(vault_e2e::vaultctl_bin());
        c.args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", dir.path())
            .env("VAULT_ADDR", srv.url());
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let want = fingerprint("CANARY-pw-1");

    // exec: secrets in the environment, from the env file's references.
    let out = vaultctl(&["exec", "--env-file", "app.env", "--", "python3", "app.py"], &[("VAULT_TOKEN", &token)]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got["env"], json!({"db_user": "app", "db_password_sha256_prefix": want}), "{got}");

    // agent --once: AppRole from the files, config.ini rendered 0400.
    let out = vaultctl(&["agent", "--config", "agent.toml", "--once"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("python3")
        .arg("app.py")
        .current_dir(dir.path())
        .env("APP_CONFIG", run_dir.join("config.ini"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got["file"], json!({"db_user": "app", "db_password_sha256_prefix": want, "mode": "0o400"}), "{got}");
}
