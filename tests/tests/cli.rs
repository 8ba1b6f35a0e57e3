//! The `vaultctl` binary against a real server: every verb group's happy
//! path and the failure paths a script relies on (exit code 2 for sealed and
//! not found, 1 for errors; the "no token" hint; a wrong token), Vault's
//! single-dash flags, `-format=json|yaml`, and the token helper file
//! (`$HOME/.vault-token`, HOME pointed at a temporary directory).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use vault_e2e::{Backend, ServerProc, Store};

/// What one `vaultctl` run produced.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Success; the stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        &self.stdout
    }

    /// Stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `vaultctl` with VAULT_ADDR set, its own HOME, and VAULT_TOKEN only
/// when given.
struct Ctl {
    addr: String,
    home: tempfile::TempDir,
    token: Option<String>,
}

impl Ctl {
    fn new(addr: &str, token: Option<&str>) -> Ctl {
        Ctl { addr: addr.into(), home: tempfile::tempdir().unwrap(), token: token.map(str::to_string) }
    }

    fn with_token(&self, token: Option<&str>) -> Ctl {
        Ctl { addr: self.addr.clone(), home: tempfile::tempdir().unwrap(), token: token.map(str::to_string) }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_in(args, None)
    }

    fn run_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        self.run_env(args, stdin, &[])
    }

    fn run_env(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(vault_e2e::vaultctl_bin());
        cmd.args(args)
            .env("VAULT_ADDR", &self.addr)
            .env("HOME", self.home.path())
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_CACERT")
            .env_remove("VAULT_FORMAT")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = &self.token {
            cmd.env("VAULT_TOKEN", t);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn vaultctl");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A fresh server with `secret/` as KV v2; a `vaultctl` runner holding the
/// root token.
async fn ready() -> (Store, ServerProc, Ctl, String) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, _rc) = srv.kv2_ready().await;
    let ctl = Ctl::new(&srv.url(), Some(&root));
    (store, srv, ctl, root)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_lifecycle_and_exit_codes() {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let ctl = Ctl::new(&srv.url(), None);

    // Not initialized: health and init -status say so with exit code 2.
    assert_eq!(ctl.run(&["health"]).code, 2);
    assert_eq!(ctl.run(&["operator", "init", "-status"]).code, 2);

    let init = ctl.run(&["operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json"]).json();
    let keys: Vec<String> =
        init["keys_base64"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
    let root = init["root_token"].as_str().unwrap().to_string();
    assert_eq!(keys.len(), 3);
    assert_eq!(ctl.run(&["operator", "init", "-status"]).code, 0);

    // Sealed: status and health exit 2; so does a request refused as sealed.
    let st = ctl.run(&["status"]);
    assert_eq!(st.code, 2, "{st:?}");
    assert!(st.stdout.contains("Sealed") && st.stdout.contains("true"), "{st:?}");
    let h = ctl.run(&["health", "-format=json"]);
    assert_eq!(h.code, 2, "{h:?}");
    assert_eq!(serde_json::from_str::<Value>(&h.stdout).unwrap()["health"]["sealed"], true);
    let rooted = ctl.with_token(Some(&root));
    let r = rooted.run(&["read", "secret/x"]);
    assert_eq!(r.code, 2, "a sealed vault is exit code 2: {r:?}");

    // Unseal: one share as an argument (old short form), one on stdin.
    let u = ctl.run(&["unseal", &keys[0]]);
    assert!(u.ok().contains("Unseal Progress"), "{u:?}");
    let u = ctl.run_in(&["operator", "unseal", "-format=json"], Some(format!("{}\n", keys[1]).as_bytes()));
    assert_eq!(u.json()["sealed"], false);
    assert_eq!(ctl.run(&["operator", "status"]).code, 0);
    assert_eq!(ctl.run(&["health"]).code, 0);

    // Key term: rotate moves it on.
    let ks = rooted.run(&["operator", "key-status", "-format=json"]).json();
    let term = ks["term"].as_u64().unwrap();
    let r = rooted.run(&["operator", "rotate", "-format", "json"]).json();
    assert_eq!(r["term"].as_u64().unwrap(), term + 1);
    assert!(rooted.run(&["key-status"]).ok().contains("Key Term"));

    // YAML output is YAML (one `key: value` per line).
    let y = ctl.run(&["status", "-format=yaml"]);
    let text = y.ok();
    assert!(text.lines().any(|l| l == "sealed: false"), "{text}");
    assert!(text.lines().any(|l| l == "initialized: true"), "{text}");
    assert!(serde_json::from_str::<Value>(text).is_err(), "not JSON");

    // Seal needs a token; without one the error says how to get one.
    let s = ctl.run(&["operator", "seal"]);
    assert_eq!(s.code, 1, "{s:?}");
    assert!(s.stderr.contains("no token: set VAULT_TOKEN or run `vaultctl login`"), "{s:?}");
    assert!(rooted.run(&["seal"]).ok().contains("sealed"));
    assert_eq!(ctl.run(&["status"]).code, 2);
    assert_eq!(ctl.run(&["health"]).code, 2, "health of a sealed vault exits 2");
    let share = format!("{}\n", keys[2]);
    ctl.run_in(&["unseal", "-"], Some(share.as_bytes())).ok();
    ctl.run(&["unseal", &keys[0]]).ok();
    assert_eq!(ctl.run(&["status"]).code, 0);

    // Rekey with Vault's flags; the nonce is taken from the attempt in progress.
    let r = rooted.run(&["operator", "rekey", "-init", "-key-shares=1", "-key-threshold=1", "-format=json"]).json();
    assert_eq!(r["started"], true, "{r}");
    rooted.run(&["operator", "rekey", &keys[0]]).ok();
    let done = rooted.run_in(&["operator", "rekey", "-format=json"], Some(format!("{}\n", keys[1]).as_bytes())).json();
    let new_key = done["keys_base64"][0].as_str().unwrap().to_string();

    // Generate a root token with the new share, decode it offline, use it.
    let g = rooted.run(&["operator", "generate-root", "-init", "-format=json"]).json();
    let otp = g["otp"].as_str().unwrap().to_string();
    let g = rooted.run(&["operator", "generate-root", "-format=json", &new_key]).json();
    assert_eq!(g["complete"], true, "{g}");
    let encoded = g["encoded_token"].as_str().unwrap();
    let token = ctl.run(&["operator", "generate-root", &format!("-decode={encoded}"), &format!("-otp={otp}")]);
    let token = token.ok().trim().to_string();
    let me = ctl.with_token(Some(&token)).run(&["token", "lookup", "-format=json"]).json();
    assert_eq!(me["data"]["policies"], json!(["root"]), "{me}");

    // Nothing mounted there: the server's reason, exit code 2.
    let nomount = rooted.run(&["kv", "get", "nosuchmount/x"]);
    assert_eq!(nomount.code, 2, "{nomount:?}");
    assert!(nomount.stderr.contains("no handler for route"), "{nomount:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_enable_and_kv_round_trip() {
    let (_store, _srv, ctl, _root) = ready().await;

    // `secrets enable -path=P kv-v2` mounts KV version 2.
    assert!(ctl.run(&["secrets", "enable", "-path=apps", "kv-v2"]).ok().contains("apps/"));
    let mounts = ctl.run(&["secrets", "list", "-format=json"]).json();
    assert_eq!(mounts["apps/"]["type"], "kv", "{mounts}");
    assert_eq!(mounts["apps/"]["options"]["version"], "2", "{mounts}");
    assert!(ctl.run(&["secrets", "list", "-detailed"]).ok().contains("apps/"));
    ctl.run(&["secrets", "tune", "-description=application secrets", "apps"]).ok();
    let mounts = ctl.run(&["secrets", "list", "-format=json"]).json();
    assert_eq!(mounts["apps/"]["description"], "application secrets");

    // put: strings, a file, stdin; -json typed values.
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "-----BEGIN X-----\nabc\n").unwrap();
    let put = ctl.run_in(
        &["kv", "put", "apps/web", "user=app", &format!("cert=@{}", cert.display()), "password=-"],
        Some(b"s3cret-from-stdin\n"),
    );
    assert!(put.ok().contains("version"), "{put:?}");
    let got = ctl.run(&["kv", "get", "-format=json", "apps/web"]).json();
    assert_eq!(
        got["data"]["data"],
        json!({"user": "app", "cert": "-----BEGIN X-----\nabc\n", "password": "s3cret-from-stdin"})
    );
    assert_eq!(got["data"]["metadata"]["version"], 1);
    assert_eq!(ctl.run(&["kv", "get", "-field=password", "apps/web"]).ok(), "s3cret-from-stdin\n");
    let table = ctl.run(&["kv", "get", "apps/web"]);
    assert!(table.ok().contains("=== Data ===") && table.stdout.contains("user        app"), "{table:?}");

    let put =
        ctl.run(&["kv", "put", "-json", "-format=json", "apps/db", "port=5432", "tls=true", r#"hosts=["a","b"]"#]);
    assert_eq!(put.json()["data"]["version"], 1);
    let got = ctl.run(&["kv", "get", "-format=json", "apps/db"]).json();
    assert_eq!(got["data"]["data"], json!({"port": 5432, "tls": true, "hosts": ["a", "b"]}));
    let bad = ctl.run(&["kv", "put", "-json", "apps/db", "pw=NOT-JSON-CANARY"]);
    assert_eq!(bad.code, 1);
    assert!(!bad.stderr.contains("CANARY"), "values never in errors: {bad:?}");

    // A JSON object on stdin, nested values kept.
    let put = ctl.run_in(&["kv", "put", "apps/cfg", "-"], Some(br#"{"limits": {"rps": 10}, "name": "x"}"#));
    put.ok();
    assert_eq!(ctl.run(&["kv", "get", "-field=limits", "apps/cfg"]).ok(), "{\"rps\":10}\n");

    // -mount, versions, patch, rollback.
    ctl.run(&["kv", "put", "-mount=apps", "web", "user=app2", "password=v2"]).ok();
    assert_eq!(ctl.run(&["kv", "get", "-field=user", "-version=1", "apps/web"]).ok(), "app\n");
    ctl.run(&["kv", "patch", "apps/web", "password=v3"]).ok();
    let got = ctl.run(&["kv", "get", "-format=json", "apps/web"]).json();
    assert_eq!(got["data"]["data"], json!({"user": "app2", "password": "v3"}));
    assert_eq!(got["data"]["metadata"]["version"], 3);
    ctl.run(&["kv", "rollback", "-version=1", "apps/web"]).ok();
    assert_eq!(ctl.run(&["kv", "get", "-field=password", "apps/web"]).ok(), "s3cret-from-stdin\n");

    // list, metadata.
    let l = ctl.run(&["kv", "list", "-format=json", "apps/"]).json();
    assert_eq!(l, json!(["cfg", "db", "web"]));
    ctl.run(&["kv", "metadata", "put", "-max-versions=7", "-custom-metadata=owner=ops", "apps/web"]).ok();
    let m = ctl.run(&["kv", "metadata", "get", "-format=json", "apps/web"]).json();
    assert_eq!(m["data"]["max_versions"], 7);
    assert_eq!(m["data"]["custom_metadata"]["owner"], "ops");
    assert_eq!(m["data"]["current_version"], 4);
    assert!(ctl.run(&["kv", "metadata", "get", "apps/web"]).ok().contains("=== Versions ==="));

    // delete / undelete / destroy.
    ctl.run(&["kv", "delete", "apps/web"]).ok();
    let gone = ctl.run(&["kv", "get", "apps/web"]);
    assert_eq!(gone.code, 2, "deleted: {gone:?}");
    ctl.run(&["kv", "undelete", "-versions=4", "apps/web"]).ok();
    assert_eq!(ctl.run(&["kv", "get", "-field=user", "apps/web"]).ok(), "app\n");
    ctl.run(&["kv", "destroy", "-versions=1", "apps/web"]).ok();
    assert_eq!(ctl.run(&["kv", "get", "-version=1", "apps/web"]).code, 2);
    ctl.run(&["kv", "metadata", "delete", "apps/web"]).ok();

    // Not found: exit code 2 with a one-line reason.
    let missing = ctl.run(&["kv", "get", "apps/nope"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("No value found at apps/nope"), "{missing:?}");
    assert_eq!(ctl.run(&["kv", "list", "apps/nothing/"]).code, 2);
    assert_eq!(ctl.run(&["kv", "metadata", "get", "apps/nope"]).code, 2);
    let f = ctl.run(&["kv", "get", "-field=nope", "apps/db"]);
    assert_eq!(f.code, 1, "{f:?}");

    // KV version 1 through the same commands.
    ctl.run(&["secrets", "enable", "-path=old", "-version=1", "kv"]).ok();
    ctl.run(&["kv", "put", "old/a", "k=v"]).ok();
    assert_eq!(ctl.run(&["kv", "get", "-field=k", "old/a"]).ok(), "v\n");
    assert_eq!(ctl.run(&["kv", "list", "-format=json", "old"]).json(), json!(["a"]));

    ctl.run(&["secrets", "disable", "old"]).ok();
    let mounts = ctl.run(&["secrets", "list", "-format=json"]).json();
    assert!(mounts.get("old/").is_none());
    // The older `mounts` form still works.
    ctl.run(&["mounts", "enable", "kvx", "--type", "kv", "--option", "version=2"]).ok();
    assert!(ctl.run(&["mounts", "list"]).ok().contains("kvx/"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_rotation_commands() {
    let (_store, _srv, ctl, _root) = ready().await;
    ctl.run(&["kv", "put", "secret/db", "user=app", "password=initial"]).ok();
    ctl.run(&["kv", "rotation", "set", "-period=1h", "-generator=password", "-length=40", "secret/db"]).ok();
    let p = ctl.run(&["kv", "rotation", "get", "-format=json", "secret/db"]).json();
    assert_eq!(p["data"]["period"], 3600, "{p}");
    assert_eq!(p["data"]["generator"]["length"], 40, "{p}");
    let r = ctl.run(&["kv", "rotation", "rotate", "-format=json", "secret/db"]).json();
    assert_eq!(r["data"]["version"], 2, "{r}");
    let pw = ctl.run(&["kv", "get", "-field=password", "secret/db"]);
    assert_eq!(pw.ok().trim().len(), 40);
    assert_eq!(ctl.run(&["kv", "get", "-field=user", "secret/db"]).ok(), "app\n");

    // The policy as JSON on stdin.
    ctl.run_in(
        &["kv", "rotation", "set", "secret/key", "-"],
        Some(
            br#"{"period": "24h", "generator": {"type": "bytes", "length": 16, "encoding": "hex"}, "fields": ["key"]}"#,
        ),
    )
    .ok();
    ctl.run(&["kv", "rotation", "rotate", "secret/key"]).ok();
    assert_eq!(ctl.run(&["kv", "get", "-field=key", "secret/key"]).ok().trim().len(), 32);

    ctl.run(&["kv", "rotation", "delete", "secret/db"]).ok();
    assert_eq!(ctl.run(&["kv", "rotation", "get", "secret/db"]).code, 2);
    let bad = ctl.run(&["kv", "rotation", "set", "-period=1h", "-generator=nope", "secret/db"]);
    assert_eq!(bad.code, 1, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_login_prints_and_stores_the_token() {
    let (_store, _srv, ctl, _root) = ready().await;
    ctl.run(&["auth", "enable", "approle"]).ok();
    let methods = ctl.run(&["auth", "list", "-format=json"]).json();
    assert_eq!(methods["approle/"]["type"], "approle", "{methods}");
    ctl.run_in(&["policy", "write", "app", "-"], Some(b"path \"secret/data/app\" {\n  capabilities = [\"read\"]\n}\n"))
        .ok();
    ctl.run(&["write", "auth/approle/role/web", "token_policies=app", "token_ttl=1h"]).ok();
    let role_id = ctl.run(&["read", "-field=role_id", "auth/approle/role/web/role-id"]).ok().trim().to_string();
    let secret_id =
        ctl.run(&["write", "-f", "-field=secret_id", "auth/approle/role/web/secret-id"]).ok().trim().to_string();
    assert!(!role_id.is_empty() && !secret_id.is_empty());
    ctl.run(&["kv", "put", "secret/app", "password=app-pw"]).ok();

    // Generic write of a login shows the auth block: the token is printed.
    let anon = ctl.with_token(None);
    let rid = format!("role_id={role_id}");
    let sid = format!("secret_id={secret_id}");
    let w = anon.run(&["write", "auth/approle/login", &rid, &sid]);
    let text = w.ok();
    let token_line = text.lines().find(|l| l.starts_with("token ")).unwrap_or_else(|| panic!("{text}"));
    let token = token_line.split_whitespace().nth(1).unwrap();
    assert!(!token.is_empty());
    assert!(text.contains("token_policies") && text.contains("[app default]"), "{text}");
    let sid2 = ctl.run(&["write", "-f", "-field=secret_id", "auth/approle/role/web/secret-id"]).ok().trim().to_string();
    let j = anon.run(&["write", "-format=json", "auth/approle/login", &rid, &format!("secret_id={sid2}")]).json();
    let token2 = j["auth"]["client_token"].as_str().unwrap();
    assert_eq!(j["auth"]["policies"], json!(["app", "default"]));
    let with2 = ctl.with_token(Some(token2));
    assert_eq!(with2.run(&["kv", "get", "-field=password", "secret/app"]).ok(), "app-pw\n");
    let sid3 = ctl.run(&["write", "-f", "-field=secret_id", "auth/approle/role/web/secret-id"]).ok().trim().to_string();
    let t = anon.run(&["write", "-field=token", "auth/approle/login", &rid, &format!("secret_id={sid3}")]);
    assert!(t.ok().trim().len() > 10, "{t:?}");

    // `login -method=approle`: secret_id from a file, token stored 0600 in $HOME.
    let sid4 = ctl.run(&["write", "-f", "-field=secret_id", "auth/approle/role/web/secret-id"]).ok().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sid_file = dir.path().join("secret-id");
    std::fs::write(&sid_file, &sid4).unwrap();
    let user = ctl.with_token(None);
    let l = user.run(&["login", "-method=approle", &rid, &format!("secret_id=@{}", sid_file.display())]);
    assert!(l.ok().contains("Success! You are now authenticated"), "{l:?}");
    let file = user.home.path().join(".vault-token");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(l.stdout.contains(stored.trim()), "the table shows the stored token");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Later commands use it.
    assert_eq!(user.run(&["kv", "get", "-field=password", "secret/app"]).ok(), "app-pw\n");
    let who = user.run(&["token", "lookup", "-format=json"]).json();
    assert_eq!(who["data"]["policies"], json!(["app", "default"]));
    // VAULT_TOKEN takes precedence over the stored token.
    let over = user.run_env(&["kv", "get", "secret/app"], None, &[("VAULT_TOKEN", "hvs.not-valid")]);
    assert_eq!(over.code, 1, "{over:?}");
    assert!(!over.stderr.contains(".vault-token"), "{over:?}");
    // A 403 with a stored token names where it came from, without the hint.
    let denied = user.run(&["kv", "get", "secret/other"]);
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(denied.stderr.contains("permission denied") && denied.stderr.contains(".vault-token"), "{denied:?}");

    // -token-only prints just the token and stores nothing.
    let sid5 = ctl.run(&["write", "-f", "-field=secret_id", "auth/approle/role/web/secret-id"]).ok().trim().to_string();
    let fresh = ctl.with_token(None);
    let only = fresh.run(&["login", "-method=approle", "-token-only", &rid, &format!("secret_id={sid5}")]);
    assert_eq!(only.ok().lines().count(), 1);
    assert!(!fresh.home.path().join(".vault-token").exists());

    // A wrong secret id: an error, exit 1, nothing stored.
    let bad = fresh.run(&["login", "-method=approle", &rid, "secret_id=wrong"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(!fresh.home.path().join(".vault-token").exists());

    // Token login verifies the token, from stdin.
    let tl = fresh.run_in(&["login", "-"], Some(format!("{token}\n").as_bytes()));
    tl.ok();
    assert_eq!(std::fs::read_to_string(fresh.home.path().join(".vault-token")).unwrap(), token);
    let wrong = fresh.run(&["login", "-no-store", "hvs.not-a-token"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("not valid") && !wrong.stderr.contains("no token"), "{wrong:?}");
    let nomethod = fresh.run(&["login", "-method=approle", "-path=nowhere", "role_id=r", "secret_id=s"]);
    assert_eq!(nomethod.code, 1, "{nomethod:?}");
    assert!(nomethod.stderr.contains("auth/nowhere/"), "{nomethod:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_policies_and_userpass() {
    let (_store, _srv, ctl, _root) = ready().await;

    // Token create shows the token (generic write and `token create`).
    let w = ctl.run(&["write", "-f", "auth/token/create"]);
    assert!(w.ok().lines().any(|l| l.starts_with("token ") && l.len() > 10), "{w:?}");
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("reader.hcl");
    std::fs::write(&pol, "path \"secret/data/*\" {\ncapabilities = [\"read\", \"list\"]\n     }\n").unwrap();
    ctl.run(&["policy", "fmt", pol.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::read_to_string(&pol).unwrap(),
        "path \"secret/data/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n"
    );
    ctl.run(&["policy", "write", "reader", pol.to_str().unwrap()]).ok();
    assert!(ctl.run(&["policy", "read", "reader"]).ok().contains("capabilities"));
    assert!(ctl.run(&["policy", "list"]).ok().lines().any(|l| l == "reader"));
    assert_eq!(ctl.run(&["policy", "read", "nope"]).code, 2);

    let t = ctl.run(&["token", "create", "-policy=reader", "-ttl=1h", "-field=token"]).ok().trim().to_string();
    let c = ctl.run(&["token", "create", "-policy=reader", "-format=json"]).json();
    assert_eq!(c["auth"]["policies"], json!(["default", "reader"]), "{c}");
    assert!(c["auth"]["client_token"].as_str().unwrap().len() > 10);
    let lk = ctl.run(&["token", "lookup", "-format=json", &t]).json();
    assert!(lk["data"]["policies"].as_array().unwrap().contains(&json!("reader")), "{lk}");
    let acc = lk["data"]["accessor"].as_str().unwrap().to_string();
    assert_eq!(ctl.run(&["token", "lookup", "-accessor", "-format=json", &acc]).json()["data"]["accessor"], acc);
    let reader = ctl.with_token(Some(&t));
    assert_eq!(reader.run(&["token", "capabilities", "secret/data/x"]).ok(), "list, read\n");
    assert_eq!(ctl.run(&["token", "capabilities", &t, "sys/mounts"]).ok(), "deny\n");
    reader.run(&["token", "renew", "-increment=30m"]).ok();
    ctl.run(&["token", "revoke", &t]).ok();
    let gone = reader.run(&["token", "lookup"]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("permission denied") && !gone.stderr.contains("no token"), "{gone:?}");

    // A wrong token: an error, exit 1, no "no token" hint.
    let wrong = ctl.with_token(Some("hvs.wrong")).run(&["kv", "get", "secret/x"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(!wrong.stderr.contains("no token"), "{wrong:?}");
    // No token at all: the hint.
    let none = ctl.with_token(None).run(&["kv", "list", "secret/"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("no token: set VAULT_TOKEN or run `vaultctl login`"), "{none:?}");

    // userpass login with -path, password on stdin.
    ctl.run(&["auth", "enable", "-path=people", "userpass"]).ok();
    ctl.run(&["write", "auth/people/users/ann", "password=correct horse", "token_policies=reader"]).ok();
    let ann = ctl.with_token(None);
    let l = ann.run_in(
        &["login", "-method=userpass", "-path=people", "-format=json", "username=ann", "password=-"],
        Some(b"correct horse\n"),
    );
    assert_eq!(l.json()["auth"]["policies"], json!(["default", "reader"]));
    assert!(ann.home.path().join(".vault-token").exists());
    ctl.run(&["kv", "put", "secret/shared", "k=v"]).ok();
    assert_eq!(ann.run(&["kv", "get", "-field=k", "secret/shared"]).ok(), "v\n");
    ctl.run(&["auth", "disable", "people"]).ok();
    ctl.run(&["policy", "delete", "reader"]).ok();
    assert_eq!(ctl.run(&["policy", "read", "reader"]).code, 2);

    // Generic read/list/delete on a KV v1 mount.
    ctl.run(&["secrets", "enable", "-path=plain", "kv"]).ok();
    ctl.run_in(&["write", "plain/a", "-"], Some(br#"{"n": 1, "s": "x"}"#)).ok();
    assert_eq!(ctl.run(&["read", "-format=json", "plain/a"]).json()["data"], json!({"n": 1, "s": "x"}));
    assert_eq!(ctl.run(&["read", "-field=n", "plain/a"]).ok(), "1\n");
    assert_eq!(ctl.run(&["list", "-format=json", "plain"]).json(), json!(["a"]));
    ctl.run(&["delete", "plain/a"]).ok();
    let r = ctl.run(&["read", "plain/a"]);
    assert_eq!(r.code, 2, "{r:?}");
    let l = ctl.run(&["list", "plain/"]);
    assert_eq!(l.code, 2, "list of nothing exits 2: {l:?}");
    let nodata = ctl.run(&["write", "plain/b"]);
    assert_eq!(nodata.code, 1, "write without data needs -f: {nodata:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transit_commands() {
    let (_store, _srv, ctl, _root) = ready().await;
    ctl.run(&["secrets", "enable", "transit"]).ok();
    ctl.run(&["transit", "keys", "create", "orders"]).ok();
    ctl.run(&["transit", "keys", "create", "-type=chacha20-poly1305", "other"]).ok();
    assert_eq!(ctl.run(&["transit", "keys", "list", "-format=json"]).json(), json!(["orders", "other"]));
    let k = ctl.run(&["transit", "keys", "read", "-format=json", "orders"]).json();
    assert_eq!(k["data"]["type"], "aes256-gcm96");
    assert_eq!(ctl.run(&["transit", "keys", "read", "nope"]).code, 2);

    let ct = ctl.run(&["transit", "encrypt", "orders", "card 4111"]).ok().trim().to_string();
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    assert_eq!(ctl.run(&["transit", "decrypt", "orders", &ct]).ok(), "card 4111");
    // Binary plaintext through stdin, ciphertext through stdin.
    let bytes: Vec<u8> = (0u8..=255).collect();
    let ct = ctl.run_in(&["transit", "encrypt", "orders", "-"], Some(&bytes)).ok().to_string();
    let mut cmd = Command::new(vault_e2e::vaultctl_bin());
    cmd.args(["transit", "decrypt", "orders", "-"])
        .env("VAULT_ADDR", &ctl.addr)
        .env("VAULT_TOKEN", ctl.token.as_ref().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(ct.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, bytes, "binary round trip");

    ctl.run(&["transit", "keys", "rotate", "orders"]).ok();
    let ct2 = ctl.run(&["transit", "encrypt", "-format=json", "orders", "x"]).json();
    assert!(ct2["data"]["ciphertext"].as_str().unwrap().starts_with("vault:v2:"), "{ct2}");
    let old = ctl.run(&["transit", "encrypt", "orders", "y"]).ok().trim().to_string();
    let rewrapped = ctl.run(&["transit", "rewrap", "orders", &old]).ok().trim().to_string();
    assert!(rewrapped.starts_with("vault:v2:"));
    assert_eq!(ctl.run(&["transit", "decrypt", "-base64", "orders", &rewrapped]).ok(), "eQ==\n");
    let bad = ctl.run(&["transit", "decrypt", "orders", "vault:v1:AAAA"]);
    assert_eq!(bad.code, 1, "{bad:?}");
}

#[test]
fn help_usage_and_completions() {
    let ctl = Ctl::new("http://127.0.0.1:1", None);
    let help = ctl.run(&["--help"]);
    let first = help.ok().lines().next().unwrap().to_string();
    assert!(first.contains("Vault's CLI"), "{first}");
    assert!(!first.contains("Client library"), "{first}");
    assert!(ctl.run(&["-help"]).ok().contains("Usage"), "single-dash -help");
    let usage = ctl.run(&["kv", "get"]);
    assert_eq!(usage.code, 1, "a usage error is exit code 1: {usage:?}");
    let bash = ctl.run(&["completion", "bash"]);
    assert!(bash.ok().contains("vaultctl"), "{bash:?}");
    assert!(ctl.run(&["completion", "zsh"]).ok().contains("#compdef vaultctl"));
    assert!(ctl.run(&["completion", "fish"]).ok().contains("complete -c vaultctl"));
    // Unreachable server: exit 1, the cause named once.
    let down = ctl.run(&["status"]);
    assert_eq!(down.code, 1, "{down:?}");
    assert!(down.stderr.starts_with("Error: ") && down.stderr.lines().count() == 1, "{down:?}");
}
