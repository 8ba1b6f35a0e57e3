//! Known canaries sent through every kind of endpoint (ceremonies, tokens,
//! logins, KV v1/v2, transit, policies, failing requests) with the server
//! logging everything it can (trace level, JSON lines, access log): no log
//! line may hold a canary, a token, a share or a base64 form of them, and
//! neither may the file audit device that records it all (its secrets are
//! `hmac-sha256:` strings). SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use vault_e2e::{Backend, ServerProc, Store};

/// Every value sent carries this, so a leak of any of them is found.
const CANARY: &str = "LOGCANARY-7f3a";

fn canary(what: &str) -> String {
    format!("{CANARY}-{what}")
}

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

/// What must never be logged: the canaries, their base64 forms, and the
/// secrets the server handed out (shares, tokens, secret-ids, data keys).
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(!value.is_empty(), "{what} is empty");
        self.0.push((what.to_string(), value.to_string()));
    }
    /// A canary value, and its base64 form (transit plaintexts).
    fn value(&mut self, what: &str) -> String {
        let v = canary(what);
        self.add(what, &v);
        self.add(&format!("{what} (base64)"), &B64.encode(v.as_bytes()));
        v
    }
}

async fn ok(r: (u16, Value), what: &str) -> Value {
    assert!(r.0 < 300, "{what}: {} {}", r.0, r.1);
    r.1
}

async fn canaries_never_logged(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start_with_config(
        &store,
        &format!("access_log = true\nlog_format = \"json\"\n{}", vault_e2e::audit_in_temp_dir()),
        &["--log-level", "trace"],
    );
    let c = srv.client();
    let mut s = Secrets(Vec::new());

    // Ceremonies: shares and the root token.
    let (keys, root) = c.init(3, 2).await;
    for (i, k) in keys.iter().enumerate() {
        s.add(&format!("share {i}"), k);
    }
    s.add("root token", &root);
    // A wrong share first (errors must not echo it), then the right ones.
    let bad_share = B64.encode(canary("share").as_bytes());
    s.add("bad share", &bad_share);
    let (st, _) = c.put("sys/unseal", json!({"key": bad_share})).await;
    assert!(st == 400 || st == 200, "{st}");
    c.put("sys/unseal", json!({"reset": true})).await;
    c.unseal(&keys).await;
    let rc = c.with_token(&root);
    ok(rc.post("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await, "kv2").await;
    ok(rc.post("sys/mounts/kv1", json!({"type": "kv"})).await, "kv1").await;
    ok(rc.post("sys/mounts/transit", json!({"type": "transit"})).await, "transit").await;
    ok(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await, "userpass").await;
    ok(rc.post("sys/auth/approle", json!({"type": "approle"})).await, "approle").await;
    // A file audit device records everything from here on.
    let dir = tempfile::tempdir().unwrap();
    let audit_file = dir.path().join("audit.log");
    let options = json!({"file_path": audit_file.display().to_string()});
    ok(rc.put("sys/audit/file", json!({"type": "file", "options": options})).await, "audit device").await;

    // Policies (a policy body is not secret, but a canary in it must not be
    // echoed in errors either).
    let policy = r#"path "secret/data/app" { capabilities = ["read", "create", "update"] }"#;
    ok(rc.put("sys/policies/acl/app", json!({"policy": policy})).await, "policy").await;
    let (st, _) = rc.put("sys/policies/acl/broken", json!({"policy": canary("policy-syntax")})).await;
    assert_eq!(st, 400);

    // Tokens.
    let v = ok(rc.post("auth/token/create", json!({"policies": ["app"], "meta": {"note": "x"}})).await, "token").await;
    let app = token_of(&v);
    s.add("app token", &app);
    let appc = c.with_token(&app);
    ok(appc.get("auth/token/lookup-self").await, "lookup-self").await;
    ok(rc.post("auth/token/lookup", json!({"token": app})).await, "lookup").await;
    ok(appc.post("auth/token/renew-self", json!({})).await, "renew").await;
    let (st, _) = rc.post("auth/token/lookup", json!({"token": canary("not-a-token")})).await;
    assert!((400..500).contains(&st), "{st}");
    s.add("unknown token", &canary("not-a-token"));
    let (st, _) = c.with_token(&canary("bad-header-token")).get("secret/data/app").await;
    assert_eq!(st, 403);
    s.add("bad header token", &canary("bad-header-token"));

    // Logins.
    let pw = s.value("userpass-password");
    ok(rc.post("auth/userpass/users/alice", json!({"password": pw, "token_policies": ["app"]})).await, "user").await;
    let v = ok(c.post("auth/userpass/login/alice", json!({"password": pw})).await, "login").await;
    s.add("userpass token", &token_of(&v));
    let wrong = s.value("wrong-password");
    let (st, _) = c.post("auth/userpass/login/alice", json!({"password": wrong})).await;
    assert!((400..500).contains(&st), "{st}");
    ok(rc.post("auth/approle/role/app", json!({"token_policies": ["app"]})).await, "role").await;
    let v = ok(rc.get("auth/approle/role/app/role-id").await, "role-id").await;
    let role_id = v["data"]["role_id"].as_str().unwrap().to_string();
    let v = ok(rc.post("auth/approle/role/app/secret-id", json!({})).await, "secret-id").await;
    let secret_id = v["data"]["secret_id"].as_str().unwrap().to_string();
    s.add("secret id", &secret_id);
    let v =
        ok(c.post("auth/approle/login", json!({"role_id": role_id, "secret_id": secret_id})).await, "approle").await;
    s.add("approle token", &token_of(&v));
    let bad_sid = s.value("bad-secret-id");
    let (st, _) = c.post("auth/approle/login", json!({"role_id": role_id, "secret_id": bad_sid})).await;
    assert!((400..500).contains(&st), "{st}");

    // KV v2 and v1, including failing writes.
    let kv_pw = s.value("kv2-password");
    ok(appc.post("secret/data/app", json!({"data": {"password": kv_pw}})).await, "kv2 put").await;
    let v = ok(appc.get("secret/data/app").await, "kv2 get").await;
    assert_eq!(v["data"]["data"]["password"], kv_pw.as_str());
    let patched = s.value("kv2-patch");
    let (st, _) = rc.call("PATCH", "secret/data/app", Some(json!({"data": {"api_key": patched}}))).await;
    assert!(st < 300, "{st}");
    let cas = s.value("kv2-cas");
    let (st, _) = rc.post("secret/data/app", json!({"options": {"cas": 0}, "data": {"k": cas}})).await;
    assert_eq!(st, 400, "cas mismatch");
    let meta = s.value("kv2-custom-metadata");
    ok(rc.post("secret/metadata/app", json!({"custom_metadata": {"owner": meta}})).await, "meta").await;
    let kv1 = s.value("kv1-value");
    ok(rc.put("kv1/app", json!({"password": kv1})).await, "kv1 put").await;
    ok(rc.get("kv1/app").await, "kv1 get").await;
    let denied = s.value("denied-write");
    let (st, _) = appc.post("secret/data/other", json!({"data": {"password": denied}})).await;
    assert_eq!(st, 403);
    let bad_json = canary("malformed-json");
    s.add("malformed json", &bad_json);
    let (st, _) = rc.raw("POST", "secret/data/app", format!("{{\"data\": {bad_json}").into_bytes()).await;
    assert_eq!(st, 400);

    // Transit: plaintexts, ciphertexts, data keys, HMAC, signatures, failures.
    ok(rc.post("transit/keys/k", json!({})).await, "key").await;
    let pt = s.value("transit-plaintext");
    let v = ok(rc.post("transit/encrypt/k", json!({"plaintext": B64.encode(pt.as_bytes())})).await, "enc").await;
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_string();
    ok(rc.post("transit/decrypt/k", json!({"ciphertext": ct})).await, "dec").await;
    let batch = s.value("transit-batch");
    ok(rc.post("transit/encrypt/k", json!({"batch_input": [{"plaintext": B64.encode(batch.as_bytes())}]})).await, "b")
        .await;
    let v = ok(rc.post("transit/datakey/plaintext/k", json!({})).await, "datakey").await;
    s.add("data key", v["data"]["plaintext"].as_str().unwrap());
    let h = s.value("transit-hmac-input");
    ok(rc.post("transit/hmac/k", json!({"input": B64.encode(h.as_bytes())})).await, "hmac").await;
    let not_b64 = s.value("transit-not-base64");
    let (st, _) = rc.post("transit/encrypt/k", json!({"plaintext": not_b64})).await;
    assert_eq!(st, 400);
    let forged = format!("vault:v1:{}", B64.encode(canary("forged-ciphertext").as_bytes()));
    s.add("forged ciphertext", &forged);
    let (st, _) = rc.post("transit/decrypt/k", json!({"ciphertext": forged})).await;
    assert_eq!(st, 400);

    // Revocation last (the app token is used above).
    ok(rc.post("auth/token/revoke", json!({"token": app})).await, "revoke").await;

    let logs = srv.log_text();
    assert!(logs.contains("secret/data/app") && logs.contains("\"status\""), "access log lines missing:\n{logs}");
    assert!(logs.lines().all(|l| l.trim().is_empty() || serde_json::from_str::<Value>(l).is_ok()), "JSON lines");
    let mut found = Vec::new();
    for (what, value) in &s.0 {
        if let Some(line) = logs.lines().find(|l| l.contains(value.as_str())) {
            found.push(format!("{what}: {line}"));
        }
    }
    assert!(
        !logs.contains(CANARY),
        "a canary is in the log:\n{}",
        logs.lines().filter(|l| l.contains(CANARY)).collect::<Vec<_>>().join("\n")
    );
    assert!(found.is_empty(), "secrets in the log:\n{}", found.join("\n"));
    assert!(!logs.contains("panicked"), "{logs}");

    // The audit file: every request above is there, its values HMAC'd.
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).expect("audit lines are JSON")).collect();
    let recorded = |path: &str| entries.iter().any(|e| e["request"]["path"] == path && e["type"] == "response");
    for path in ["secret/data/app", "transit/encrypt/k", "auth/userpass/login/alice", "auth/approle/login", "kv1/app"] {
        assert!(recorded(path), "no response entry for {path} in the audit file");
    }
    assert!(audit.contains("\"hmac-sha256:"), "no HMAC'd value in the audit file");
    let mut found = Vec::new();
    for (what, value) in &s.0 {
        if let Some(line) = audit.lines().find(|l| l.contains(value.as_str())) {
            found.push(format!("{what}: {line}"));
        }
    }
    assert!(found.is_empty(), "secrets in the audit file:\n{}", found.join("\n"));
    // One exception, as in Vault: an entry's `error` is the answer's error
    // text in the clear, and the policy parser quotes the token it stopped
    // at. A policy is not a secret and goes back to its author; nothing else
    // may appear anywhere.
    let policy_canary = canary("policy-syntax");
    let mut leaks = Vec::new();
    for e in &entries {
        let mut e = e.clone();
        if e["error"].as_str().is_some_and(|t| t.contains(&policy_canary)) {
            e["error"] = Value::Null;
        }
        if e.to_string().contains(CANARY) {
            leaks.push(e.to_string());
        }
    }
    assert!(leaks.is_empty(), "a canary is in the audit file:\n{}", leaks.join("\n"));
}

#[tokio::test]
async fn canaries_never_logged_sqlite() {
    canaries_never_logged(Backend::Sqlite).await;
}

#[tokio::test]
async fn canaries_never_logged_postgres() {
    canaries_never_logged(Backend::Postgres).await;
}
