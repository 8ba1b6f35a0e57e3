//! Tokens and policies end to end: the token store's Vault API (create,
//! lookup, renew, revoke with cascade, accessors, use limits, CIDR binding),
//! HCL policies enforced on every request, sudo paths, capabilities-self,
//! sys/auth, and no token at rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, contains};

async fn unsealed(backend: Backend) -> (Store, ServerProc, Client, String) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    (store, srv, c, root)
}

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

async fn tokens_and_policies(backend: Backend) {
    let (store, _srv, c, root) = unsealed(backend).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("kv/app/db", json!({"password": "p1"})).await.0, 204);
    assert_eq!(rc.put("kv/other/x", json!({"v": "no"})).await.0, 204);

    // A policy in HCL; a parse error is a 400 naming the line.
    let policy = r#"
# the app may read its own secrets
path "kv/app/*" {
  capabilities = ["read", "list"]
}
path "kv/app/writable" {
  capabilities = ["create", "update"]
}
path "kv/app/denied" {
  capabilities = ["deny"]
}
path "kv/+/shared" {
  capabilities = ["read"]
}
"#;
    assert_eq!(rc.put("sys/policies/acl/app", json!({"policy": policy})).await.0, 204);
    let (s, v) = rc.put("sys/policies/acl/bad", json!({"policy": "path \"x\" {\n  capabilities = [\"fly\"]\n}"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("line"), "{v}");
    let (_, v) = rc.get("sys/policies/acl/app").await;
    assert_eq!(v["data"]["policy"], policy);
    let (_, v) = rc.list("sys/policies/acl").await;
    let keys: Vec<&str> = v["data"]["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(keys.contains(&"app") && keys.contains(&"default") && keys.contains(&"root"), "{v}");
    assert_eq!(rc.get("sys/policy").await.1["data"]["policies"].as_array().unwrap().len(), keys.len());
    assert_eq!(rc.delete("sys/policies/acl/root").await.0, 400);
    assert_eq!(rc.delete("sys/policies/acl/default").await.0, 400);

    // A child token with the app policy.
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["app"], "ttl": "1h", "meta": {"team": "a"}})).await;
    assert_eq!(s, 200, "{v}");
    let app = token_of(&v);
    assert_eq!(v["auth"]["policies"], json!(["app", "default"]));
    assert_eq!(v["auth"]["lease_duration"], 3600);
    let ac = c.with_token(&app);
    assert_eq!(ac.get("kv/app/db").await.1["data"]["password"], "p1");
    assert_eq!(ac.list("kv/app").await.0, 200);
    assert_eq!(ac.get("kv/other/x").await.0, 403);
    assert_eq!(ac.put("kv/app/db", json!({"password": "p2"})).await.0, 403, "update not granted");
    assert_eq!(ac.put("kv/app/writable", json!({"v": 1})).await.0, 204, "create granted");
    assert_eq!(rc.put("kv/app/denied", json!({"v": 1})).await.0, 204);
    assert_eq!(ac.get("kv/app/denied").await.0, 403, "deny on the more specific path wins");
    assert_eq!(rc.put("kv/team/shared", json!({"v": 1})).await.0, 204);
    assert_eq!(ac.get("kv/team/shared").await.0, 200, "+ matches one segment");
    assert_eq!(rc.put("kv/team/x/shared", json!({"v": 1})).await.0, 204);
    assert_eq!(ac.get("kv/team/x/shared").await.0, 403, "+ matches exactly one segment");
    assert_eq!(ac.get("sys/mounts").await.0, 403);
    assert_eq!(ac.put("sys/rotate", json!({})).await.0, 403, "sudo path");
    // The default policy lets a token look itself up.
    let (s, v) = ac.get("auth/token/lookup-self").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["id"], app.as_str());
    assert_eq!(v["data"]["meta"]["team"], "a");
    assert_eq!(v["data"]["orphan"], false);
    let accessor = v["data"]["accessor"].as_str().unwrap().to_string();
    // capabilities-self
    let (_, v) = ac.post("sys/capabilities-self", json!({"paths": ["kv/app/db", "kv/other/x"]})).await;
    assert_eq!(v["data"]["kv/app/db"], json!(["list", "read"]), "{v}");
    assert_eq!(v["data"]["kv/other/x"], json!(["deny"]));

    // A child cannot escalate; a grandchild is revoked with its parent.
    let (s, v) = ac.post("auth/token/create", json!({"policies": ["root"]})).await;
    assert_eq!(s, 403, "creating tokens is not in the app policy: {v}");
    assert_eq!(
        rc.put(
            "sys/policies/acl/app",
            json!({"policy": format!("{policy}\npath \"auth/token/create\" {{ capabilities = [\"update\"] }}")})
        )
        .await
        .0,
        204
    );
    let (s, v) = ac.post("auth/token/create", json!({"policies": ["root"]})).await;
    assert_eq!(s, 400, "child policies must be a subset: {v}");
    let (s, v) = ac.post("auth/token/create", json!({"policies": ["app"]})).await;
    assert_eq!(s, 200, "{v}");
    let grandchild = token_of(&v);
    let (s, _) = ac.post("auth/token/create", json!({"no_parent": true})).await;
    assert_eq!(s, 400, "orphans need sudo");
    assert_eq!(c.with_token(&grandchild).get("kv/app/db").await.0, 200);

    // Lookup by accessor, renew, revoke by accessor cascades.
    let (_, v) = rc.post("auth/token/lookup-accessor", json!({"accessor": accessor})).await;
    assert_eq!(v["data"]["id"], "", "lookup by accessor never reveals the token");
    assert_eq!(v["data"]["policies"], json!(["app", "default"]));
    let (s, v) = ac.post("auth/token/renew-self", json!({"increment": "2h"})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["auth"]["lease_duration"].as_u64().unwrap() > 3600);
    assert_eq!(rc.post("auth/token/revoke-accessor", json!({"accessor": accessor})).await.0, 204);
    assert_eq!(ac.get("kv/app/db").await.0, 403, "revoked token stops working at once");
    assert_eq!(c.with_token(&grandchild).get("kv/app/db").await.0, 403, "children are revoked with their parent");

    // Use-limited token: exactly num_uses requests.
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["app"], "num_uses": 2})).await;
    let limited = c.with_token(&token_of(&v));
    assert_eq!(limited.get("kv/app/db").await.0, 200);
    assert_eq!(limited.get("kv/app/db").await.0, 200);
    assert_eq!(limited.get("kv/app/db").await.0, 403);

    // CIDR-bound token: only usable from the bound network.
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["app"], "bound_cidrs": ["10.0.0.0/8"]})).await;
    assert_eq!(c.with_token(&token_of(&v)).get("kv/app/db").await.0, 403);
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["app"], "bound_cidrs": ["127.0.0.0/8"]})).await;
    assert_eq!(c.with_token(&token_of(&v)).get("kv/app/db").await.0, 200);

    // Expiry: a 1-second token stops working.
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["app"], "ttl": "1s"})).await;
    let short = c.with_token(&token_of(&v));
    assert_eq!(short.get("kv/app/db").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(short.get("kv/app/db").await.0, 403);

    // Orphans and revoke-orphan.
    let (s, v) = rc.post("auth/token/create-orphan", json!({"policies": ["app"]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["orphan"], true);
    let orphan = token_of(&v);
    let oc = c.with_token(&orphan);
    assert_eq!(oc.post("auth/token/revoke-self", json!({})).await.0, 204);
    assert_eq!(oc.get("kv/app/db").await.0, 403);

    // sys/auth lists the token method.
    let (s, v) = rc.get("sys/auth").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["token/"]["type"], "token");
    assert_eq!(rc.delete("sys/auth/token").await.0, 400, "the token method cannot be disabled");
    let (s, v) = rc.post("sys/auth/nosuch", json!({"type": "nosuch"})).await;
    assert_eq!(s, 400, "{v}");

    // No token or accessor at rest.
    let raw = store.raw_bytes();
    for t in [&root, &app, &grandchild, &orphan] {
        assert!(!contains(&raw, t.as_bytes()), "a token was found in storage");
    }
    assert!(!contains(&raw, accessor.as_bytes()), "an accessor was found in storage in the clear");
}

#[tokio::test]
async fn tokens_and_policies_sqlite() {
    tokens_and_policies(Backend::Sqlite).await;
}

#[tokio::test]
async fn tokens_and_policies_postgres() {
    tokens_and_policies(Backend::Postgres).await;
}

/// A token revoked on one server stops working on another at once.
#[tokio::test]
async fn revocation_is_seen_by_other_servers() {
    let store = Store::new(Backend::Postgres);
    let a = ServerProc::start(&store, &[]);
    let b = ServerProc::start(&store, &[]);
    let (keys, root) = a.client().init(1, 1).await;
    a.client().unseal(&keys).await;
    b.client().unseal(&keys).await;
    let ra = a.client().with_token(&root);
    let (_, v) = ra.post("auth/token/create", json!({"policies": ["default"]})).await;
    let t = token_of(&v);
    // B caches the token on first use.
    assert_eq!(b.client().with_token(&t).get("auth/token/lookup-self").await.0, 200);
    assert_eq!(ra.post("auth/token/revoke", json!({"token": t})).await.0, 204);
    let mut refused = false;
    for _ in 0..50 {
        if b.client().with_token(&t).get("auth/token/lookup-self").await.0 == 403 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "B kept accepting a token revoked on A");
}

/// The lockout threshold and duration come from the config file.
#[tokio::test]
async fn lockout_is_configurable() {
    let store = Store::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vault.toml");
    std::fs::write(&cfg, "[lockout]\nthreshold = 2\nduration = \"1h\"\n").unwrap();
    let srv = ServerProc::start(&store, &["--config", cfg.to_str().unwrap()]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await.0, 204);
    assert_eq!(rc.post("auth/userpass/users/eve", json!({"password": "right-password"})).await.0, 204);
    for _ in 0..2 {
        assert_eq!(c.post("auth/userpass/login/eve", json!({"password": "wrong"})).await.0, 400);
    }
    let (s, v) = c.post("auth/userpass/login/eve", json!({"password": "right-password"})).await;
    assert_eq!(s, 429, "locked out after the configured 2 failures: {v}");
    assert!(v["errors"][0].as_str().unwrap().contains("locked"), "{v}");
}
