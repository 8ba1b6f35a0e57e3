//! Policy parameter constraints end to end (`allowed_parameters`,
//! `denied_parameters`, `required_parameters`): a refused request is a 403
//! `permission denied` before the backend runs, so nothing is written.
//!
//! The first test is the red team's escalation: a self-service policy that
//! allows only `password` on a user's own userpass entry used to let the
//! user set `token_policies` and log in with an admin policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store};

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

fn assert_denied(reply: (u16, Value), what: &str) {
    let (s, v) = reply;
    assert_eq!(s, 403, "{what}: {v}");
    assert_eq!(v, json!({"errors": ["permission denied"]}), "{what}");
}

const SELF_SERVICE: &str = r#"
path "auth/userpass/users/bob" {
  capabilities = ["update"]
  allowed_parameters = {
    "password" = []
  }
}
"#;

async fn self_service_cannot_escalate(backend: Backend) {
    let (_store, _srv, c, root) = unsealed(backend).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await.0, 204);
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("kv/crown-jewels", json!({"v": "secret"})).await.0, 204);
    let admin = "path \"*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\", \"sudo\"] }";
    assert_eq!(rc.put("sys/policies/acl/adminpol", json!({"policy": admin})).await.0, 204);
    assert_eq!(rc.put("sys/policies/acl/bob-self", json!({"policy": SELF_SERVICE})).await.0, 204);
    let (s, v) =
        rc.post("auth/userpass/users/bob", json!({"password": "bob-pass-1", "token_policies": ["bob-self"]})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = c.post("auth/userpass/login/bob", json!({"password": "bob-pass-1"})).await;
    assert_eq!(s, 200, "{v}");
    let bob = c.with_token(&token_of(&v));

    // The escalation attempts, in every shape: refused, nothing written.
    for body in [
        json!({"token_policies": ["adminpol"]}),
        json!({"token_policies": "adminpol"}),
        json!({"policies": ["adminpol"]}),
        json!({"password": "bob-pass-2", "token_policies": ["adminpol"]}),
        json!({"Token_Policies": ["adminpol"]}),
        json!({"token_ttl": "768h"}),
        json!({"token_bound_cidrs": []}),
    ] {
        assert_denied(bob.post("auth/userpass/users/bob", body.clone()).await, &format!("bob posts {body}"));
    }
    let (_, v) = rc.get("auth/userpass/users/bob").await;
    assert_eq!(v["data"]["token_policies"], json!(["bob-self"]), "{v}");
    let (s, v) = c.post("auth/userpass/login/bob", json!({"password": "bob-pass-1"})).await;
    assert_eq!(s, 200, "the refused request with a password changed nothing: {v}");
    assert_eq!(v["auth"]["token_policies"], json!(["bob-self", "default"]), "{v}");
    assert_denied(c.with_token(&token_of(&v)).get("kv/crown-jewels").await, "bob is no admin");

    // What the policy is for still works: bob changes his password.
    let (s, v) = bob.post("auth/userpass/users/bob", json!({"password": "bob-pass-2"})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(c.post("auth/userpass/login/bob", json!({"password": "bob-pass-1"})).await.0, 400);
    let (s, v) = c.post("auth/userpass/login/bob", json!({"password": "bob-pass-2"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["token_policies"], json!(["bob-self", "default"]), "{v}");
    // ... and only on his own entry.
    assert_denied(bob.post("auth/userpass/users/alice", json!({"password": "x"})).await, "another user");
    // Root is not constrained.
    let (s, v) = rc.post("auth/userpass/users/bob", json!({"token_policies": ["bob-self", "adminpol"]})).await;
    assert_eq!(s, 204, "{v}");
}

#[tokio::test]
async fn self_service_cannot_escalate_sqlite() {
    self_service_cannot_escalate(Backend::Sqlite).await;
}

#[tokio::test]
async fn self_service_cannot_escalate_postgres() {
    self_service_cannot_escalate(Backend::Postgres).await;
}

const KV_RULES: &str = r#"
path "kv/team/*" {
  capabilities = ["create", "update", "read", "list", "delete"]
  required_parameters = ["team"]
  denied_parameters = {
    "owner" = ["admin", "root*"]
  }
}
path "kv/frozen/*" {
  capabilities = ["create", "update", "read"]
  denied_parameters = {
    "*" = []
  }
}
path "kv/sizes/*" {
  capabilities = ["create", "update"]
  allowed_parameters = {
    "size" = ["small", "medium", 1, 2]
    "*" = []
  }
}
"#;

async fn denied_and_required(backend: Backend) {
    let (_store, _srv, c, root) = unsealed(backend).await;
    let rc = c.with_token(&root);
    assert_eq!(rc.post("sys/mounts/kv", json!({"type": "kv"})).await.0, 204);
    assert_eq!(rc.put("sys/policies/acl/kvw", json!({"policy": KV_RULES})).await.0, 204);
    assert_eq!(rc.put("kv/frozen/a", json!({"v": "orig"})).await.0, 204);
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["kvw"]})).await;
    let t = c.with_token(&token_of(&v));

    // required_parameters: a write without `team` is refused and not stored.
    assert_denied(t.put("kv/team/x", json!({"owner": "bob"})).await, "missing team");
    assert_eq!(rc.get("kv/team/x").await.0, 404, "nothing was written");
    assert_eq!(t.put("kv/team/x", json!({"team": "a", "owner": "bob"})).await.0, 204);
    // denied_parameters: listed values (and globs, and list elements) are refused.
    for owner in [json!("admin"), json!("rootkit"), json!(["bob", "admin"]), json!("bob,admin")] {
        let body = json!({"team": "a", "owner": owner});
        assert_denied(t.put("kv/team/x", body.clone()).await, &format!("{body}"));
    }
    assert_eq!(rc.get("kv/team/x").await.1["data"]["owner"], "bob", "refused writes changed nothing");
    assert_eq!(t.put("kv/team/x", json!({"team": "a", "owner": "carol"})).await.0, 204);
    // Vault checks reads too: the query parameters are the read's data.
    assert_denied(t.get("kv/team/x").await, "read without the required parameter");
    let (s, v) = t.get("kv/team/x?team=a").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["owner"], "carol");
    // List and delete carry no parameters to check.
    assert_eq!(t.list("kv/team").await.0, 200);
    assert_eq!(t.delete("kv/team/x").await.0, 204);

    // "*" = [] in denied_parameters refuses any parameter.
    assert_denied(t.put("kv/frozen/a", json!({"v": "changed"})).await, "frozen");
    assert_eq!(rc.get("kv/frozen/a").await.1["data"]["v"], "orig");
    assert_eq!(t.get("kv/frozen/a").await.0, 200, "a read without data passes");

    // allowed_parameters with values (strings and numbers) next to "*".
    for size in [json!("small"), json!(2), json!(["small", "medium"]), json!("small,medium")] {
        let (s, v) = t.put("kv/sizes/a", json!({"size": size, "other": "anything"})).await;
        assert_eq!(s, 204, "size {size}: {v}");
    }
    for size in [json!("large"), json!(3), json!("2"), json!(["small", "large"]), json!(true)] {
        assert_denied(t.put("kv/sizes/a", json!({"size": size})).await, &format!("size {size}"));
    }
}

#[tokio::test]
async fn denied_and_required_sqlite() {
    denied_and_required(Backend::Sqlite).await;
}

#[tokio::test]
async fn denied_and_required_postgres() {
    denied_and_required(Backend::Postgres).await;
}
