//! The client library's typed configuration (`Client::load`, references,
//! `Client::resolve`) and watches (`Client::watch`, `Client::watch_secret`)
//! against the real server: merging several KV paths (first listed wins),
//! per-field fallbacks to environment variables and `_FILE` files, `vault:`
//! references, errors that name fields and places but never values, a
//! limited token (no access to `sys/internal/ui/mounts`), KV v1; a watch
//! that sees a write and a rotation, survives a server restart and stops
//! when its receivers are dropped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use vault_client::{ConfigError, Reference};
use vault_e2e::{Backend, ServerProc, Store};

/// A fresh server on SQLite, initialized, unsealed, `secret/` mounted as KV
/// v2: the store, the server, the unseal keys, the root token, the harness
/// client (root) and a library client (root).
async fn vault() -> (Store, ServerProc, Vec<String>, String, vault_e2e::Client, vault_client::Client) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (keys, root, rc) = srv.kv2_ready().await;
    let client = vault_client::Client::new(srv.url()).unwrap().with_token(&root);
    (store, srv, keys, root, rc, client)
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| m.get(name).cloned()
}

#[derive(Debug, Deserialize, PartialEq)]
struct AppConfig {
    password: String,
    port: u16,
    db_host: String,
    db_user: String,
    timeout_secs: u64,
    debug: bool,
    api_key: String,
    db_password: String,
    feature_flags: Vec<String>,
    #[serde(rename = "smtp-token")]
    smtp_token: String,
    #[serde(default)]
    nowhere: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn load_merges_paths_env_files_and_references() {
    let (_store, _srv, _keys, _root, _rc, client) = vault().await;
    let kv = client.kv2("secret");
    kv.write("myapp", &fields(json!({"password": "app-pw", "port": "8080", "unrelated": "x"}))).await.unwrap();
    kv.write("shared", &fields(json!({"password": "shared-pw", "db_host": "db.internal", "timeout_secs": 30})))
        .await
        .unwrap();
    kv.write("team", &fields(json!({"db_host": "team-host", "db_user": "team-user", "port": 1}))).await.unwrap();
    kv.write("refs/db", &fields(json!({"dsn_password": "ref-pw", "smtp": "smtp-tok"}))).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "file-api-key\n").unwrap();
    let env = vars(&[
        // KV wins over the environment: PASSWORD is ignored.
        ("PASSWORD", "env-pw"),
        ("DEBUG", "true"),
        ("API_KEY_FILE", key_file.to_str().unwrap()),
        ("DB_PASSWORD", "vault:secret/refs/db#dsn_password"),
        ("FEATURE_FLAGS", r#"["a","b"]"#),
        ("SMTP_TOKEN", "vault:secret/refs/db#smtp"),
    ]);
    let c: AppConfig = client.load_with_vars(&["secret/myapp", "secret/shared", "/secret/team/"], env).await.unwrap();
    assert_eq!(
        c,
        AppConfig {
            password: "app-pw".into(),                   // myapp before shared
            port: 8080,                                  // myapp's "8080" before team's 1, coerced
            db_host: "db.internal".into(),               // shared before team
            db_user: "team-user".into(),                 // only in team
            timeout_secs: 30,                            // a JSON number
            debug: true,                                 // env, coerced
            api_key: "file-api-key".into(),              // API_KEY_FILE, newline trimmed
            db_password: "ref-pw".into(),                // env reference resolved
            feature_flags: vec!["a".into(), "b".into()], // env JSON text
            smtp_token: "smtp-tok".into(),               // renamed field: SMTP_TOKEN
            nowhere: None,
        }
    );

    // A reference stored in KV is resolved too; a path with no secret is skipped.
    kv.write("indirect", &fields(json!({"password": "vault:secret/refs/db#dsn_password"}))).await.unwrap();
    #[derive(Deserialize)]
    struct Small {
        password: String,
        port: u16,
    }
    let s: Small =
        client.load_with_vars(&["secret/nothing-here", "secret/indirect", "secret/myapp"], vars(&[])).await.unwrap();
    assert_eq!((s.password.as_str(), s.port), ("ref-pw", 8080));

    // `load` reads the process environment (nothing needed from it here).
    let s: Small = client.load(&["secret/myapp"]).await.unwrap();
    assert_eq!(s.password, "app-pw");

    // resolve(): strings as they are, other JSON values as JSON text.
    let r = Reference::parse("vault:secret/refs/db#dsn_password").unwrap();
    assert_eq!(client.resolve(&r).await.unwrap().as_str(), "ref-pw");
    let r: Reference = "secret/shared#timeout_secs".parse().unwrap();
    assert_eq!(client.resolve(&r).await.unwrap().as_str(), "30");
    assert_eq!(client.read_secret("secret/shared").await.unwrap().unwrap().data["db_host"], "db.internal");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_errors_name_fields_and_places_never_values() {
    let (_store, _srv, _keys, _root, _rc, client) = vault().await;
    let kv = client.kv2("secret");
    kv.write("myapp", &fields(json!({"password": "CANARY-pw-1", "port": "CANARY-not-a-port"}))).await.unwrap();
    kv.write("shared", &fields(json!({"password": "CANARY-pw-2", "db_host": "CANARY-host"}))).await.unwrap();

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Needs {
        password: String,
        db_host: String,
        db_password: String,
    }
    let no_secrets = |e: &ConfigError| {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("CANARY"), "a value leaked: {shown}");
    };

    // Missing everywhere: the field, both paths and both variables.
    let e = client.load_with_vars::<Needs>(&["secret/myapp", "secret/shared"], vars(&[])).await.unwrap_err();
    no_secrets(&e);
    match &e {
        ConfigError::Missing { field, looked } => {
            assert_eq!(field, "db_password");
            assert_eq!(looked, &["secret/myapp", "secret/shared", "env DB_PASSWORD", "env DB_PASSWORD_FILE"]);
        }
        other => panic!("{other:?}"),
    }
    let shown = e.to_string();
    for part in ["db_password", "secret/myapp", "secret/shared", "DB_PASSWORD", "DB_PASSWORD_FILE"] {
        assert!(shown.contains(part), "{part} not in: {shown}");
    }

    // A value that does not fit: the field, where it came from, the type; not the value.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Port {
        port: u16,
    }
    let e = client.load_with_vars::<Port>(&["secret/myapp"], vars(&[])).await.unwrap_err();
    no_secrets(&e);
    assert!(
        matches!(&e, ConfigError::Invalid { field, from, detail }
            if field == "port" && from == "secret/myapp" && detail.contains("u16")),
        "{e:?}"
    );
    let e = client.load_with_vars::<Port>(&[], vars(&[("PORT", "CANARY-env")])).await.unwrap_err();
    no_secrets(&e);
    assert!(matches!(&e, ConfigError::Invalid { field, from, .. } if field == "port" && from == "env PORT"), "{e:?}");

    // An unreadable _FILE names the variable and the file.
    let e =
        client.load_with_vars::<Port>(&[], vars(&[("PORT_FILE", "/nonexistent/CANARY-dir/port")])).await.unwrap_err();
    assert!(matches!(&e, ConfigError::File { var, .. } if var == "PORT_FILE"), "{e:?}");

    // A reference to nothing: the reference, not a value.
    let e = client.load_with_vars::<Port>(&[], vars(&[("PORT", "vault:secret/gone#port")])).await.unwrap_err();
    assert!(matches!(&e, ConfigError::Unresolved { reference, .. } if reference == "vault:secret/gone#port"), "{e:?}");
    let e = client.resolve(&Reference::parse("secret/myapp#nokey").unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("nokey") && e.to_string().contains("secret/myapp"), "{e}");
    no_secrets(&e);

    // No token: the vault's refusal, naming the path.
    let anon = vault_client::Client::new(client.address()).unwrap();
    let e = anon.load_with_vars::<Port>(&["secret/myapp"], vars(&[])).await.unwrap_err();
    assert!(
        matches!(&e, ConfigError::Vault { place, error } if place.contains("secret/myapp") && error.status() == Some(403)),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn load_with_a_token_limited_to_its_secret_and_from_kv_v1() {
    let (_store, _srv, _keys, _root, rc, client) = vault().await;
    client.kv2("secret").write("myapp", &fields(json!({"password": "pw", "port": 9}))).await.unwrap();
    let policy = r#"path "secret/data/myapp" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/myapp", json!({"policy": policy})).await.0, 204);
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["myapp"]})).await;
    assert_eq!(s, 200, "{v}");
    let app =
        vault_client::Client::new(client.address()).unwrap().with_token(v["auth"]["client_token"].as_str().unwrap());

    #[derive(Deserialize)]
    struct Conf {
        password: String,
        port: u16,
    }
    // sys/internal/ui/mounts is refused to this token: the mount is the first segment.
    let c: Conf = app.load_with_vars(&["secret/myapp"], vars(&[])).await.unwrap();
    assert_eq!((c.password.as_str(), c.port), ("pw", 9));

    // KV v1, found through sys/internal/ui/mounts.
    let (s, b) = rc.post("sys/mounts/kv1", json!({"type": "kv", "options": {"version": "1"}})).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(rc.put("kv1/app", json!({"password": "v1-pw", "port": "10"})).await.0, 204);
    let c: Conf = client.load_with_vars(&["kv1/app"], vars(&[])).await.unwrap();
    assert_eq!((c.password.as_str(), c.port), ("v1-pw", 10));
    // Only KV v2 can be watched (blocking reads).
    assert!(matches!(client.watch_secret("kv1/app").await, Err(ConfigError::Shape(m)) if m.contains("KV version 1")));
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Db {
    username: String,
    password: String,
}

/// Wait for the next value of `rx`, at most `limit`.
async fn changed_within<T: Clone>(rx: &mut tokio::sync::watch::Receiver<T>, limit: Duration) -> T {
    tokio::time::timeout(limit, rx.changed()).await.expect("no change in time").expect("the watch ended");
    rx.borrow_and_update().clone()
}

/// Start a server on `store` listening on `addr` (a restart on the same port).
fn restart_on(store: &Store, addr: SocketAddr) -> ServerProc {
    let mut cmd = Command::new(vault_e2e::server_bin());
    cmd.arg("server").arg("--listen").arg(addr.to_string()).arg("--storage").arg(&store.url);
    ServerProc::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_writes_rotations_and_a_server_restart() {
    let (store, srv, keys, _root, rc, client) = vault().await;
    let kv = client.kv2("secret");
    kv.write("db", &fields(json!({"username": "app", "password": "v1-CANARY"}))).await.unwrap();

    let mut typed = client.watch::<Db>("secret/db").await.unwrap();
    let mut raw = client.watch_secret("secret/db").await.unwrap();
    assert_eq!(typed.borrow_and_update().password, "v1-CANARY");
    assert_eq!(raw.borrow_and_update().version, 1);
    assert!(!format!("{:?}", *raw.borrow()).contains("CANARY"), "Secret's Debug shows no values");

    // A write wakes both at once (blocking reads, no polling interval).
    let started = Instant::now();
    kv.write("db", &fields(json!({"username": "app", "password": "v2-CANARY"}))).await.unwrap();
    assert_eq!(changed_within(&mut typed, Duration::from_secs(5)).await.password, "v2-CANARY");
    assert_eq!(changed_within(&mut raw, Duration::from_secs(5)).await.version, 2);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // A rotation.
    let (s, b) = rc.post("secret/rotation/db", json!({"period": "1h", "generator": {"type": "password"}})).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = rc.post("secret/rotate/db", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let rotated = changed_within(&mut typed, Duration::from_secs(5)).await;
    assert!(rotated.password != "v2-CANARY" && !rotated.password.is_empty());
    assert_eq!(rotated.username, "app");
    assert_eq!(changed_within(&mut raw, Duration::from_secs(5)).await.version, 3);

    // A version that does not fit the type is skipped; the next one arrives.
    kv.write("db", &fields(json!({"username": "app"}))).await.unwrap();
    assert_eq!(changed_within(&mut raw, Duration::from_secs(5)).await.version, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!typed.has_changed().unwrap(), "version 4 lacks `password`: the typed watch keeps version 3");

    // Server restart (a crash), same port and storage; unsealed again later.
    let addr = srv.addr;
    srv.kill9();
    let srv = restart_on(&store, addr); // at once: nothing else takes the port meanwhile
    tokio::time::sleep(Duration::from_secs(1)).await; // the watchers meet a sealed server (503)
    srv.client().unseal(&keys).await;
    let writer = rc.clone();
    let (st, b) = writer.post("secret/data/db", json!({"data": {"username": "app", "password": "v5-CANARY"}})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(changed_within(&mut typed, Duration::from_secs(30)).await.password, "v5-CANARY");
    let s = changed_within(&mut raw, Duration::from_secs(30)).await;
    assert_eq!(s.version, 5);

    // A missing secret is an error at once.
    assert!(matches!(client.watch::<Db>("secret/none").await, Err(ConfigError::NotFound(p)) if p == "secret/none"));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_stops_when_its_receivers_are_dropped() {
    let (_store, _srv, _keys, root, _rc, client) = vault().await;
    client.kv2("secret").write("db", &fields(json!({"username": "u", "password": "p"}))).await.unwrap();

    // A client of its own, dropped at once: afterwards only the watch task
    // holds it, so when that task ends the client's connection and pool
    // tasks end too, and the runtime is back to the tasks it had before.
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let own = vault_client::Client::new(client.address()).unwrap().with_token(&root);
    let rx = own.watch::<Db>("secret/db").await.unwrap();
    drop(own);
    let rx2 = rx.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(metrics.num_alive_tasks() > before, "the watch runs a task");
    drop(rx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(metrics.num_alive_tasks() > before, "one receiver is left: still running");
    drop(rx2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > before {
        assert!(Instant::now() < deadline, "the watch task is still alive: {} > {before}", metrics.num_alive_tasks());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_picks_up_a_relogin_after_its_token_is_revoked() {
    let (_store, _srv, _keys, _root, rc, client) = vault().await;
    let kv = client.kv2("secret");
    kv.write("db", &fields(json!({"username": "app", "password": "v1"}))).await.unwrap();
    let policy = r#"path "secret/data/db" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/db", json!({"policy": policy})).await.0, 204);
    let token = || async {
        let (s, v) = rc.post("auth/token/create", json!({"policies": ["db"]})).await;
        assert_eq!(s, 200, "{v}");
        v["auth"]["client_token"].as_str().unwrap().to_string()
    };
    let first = token().await;
    let app = vault_client::Client::new(client.address()).unwrap().with_token(&first);
    let mut rx = app.watch::<Db>("secret/db").await.unwrap();

    // Revoked: the blocking read already waiting may still bring version 2,
    // the following reads are refused (403) and retried with backoff.
    let (s, b) = rc.post("auth/token/revoke", json!({"token": first})).await;
    assert_eq!(s, 204, "{b}");
    kv.write("db", &fields(json!({"username": "app", "password": "v2"}))).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), rx.changed()).await;
    rx.borrow_and_update();
    kv.write("db", &fields(json!({"username": "app", "password": "v3"}))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!rx.has_changed().unwrap(), "a revoked token reads nothing");

    // A login elsewhere sets the token of every clone, the watcher's included.
    app.set_token(token().await);
    assert_eq!(changed_within(&mut rx, Duration::from_secs(15)).await.password, "v3");
}
