//! AppRole end to end, over HTTP against the real server: roles, role IDs,
//! secret IDs (generated and custom, lookup, destroy, accessors), login and
//! the token it mints (policies enforced), use limits (including a
//! concurrent double use), TTL expiry, CIDR bindings, lockout, role deletion,
//! and no secret ID at rest — on SQLite, and the main flow on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store, contains};

const INVALID: &str = "invalid role or secret ID";

async fn unsealed(backend: Backend) -> (Store, ServerProc, Client, String) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let c = srv.client();
    let (keys, root) = c.init(1, 1).await;
    c.unseal(&keys).await;
    (store, srv, c, root)
}

/// Enable approle, write the `app` policy, mount kv with one secret.
async fn setup(rc: &Client) {
    let (s, v) = rc.post("sys/auth/approle", json!({"type": "approle"})).await;
    assert_eq!(s, 204, "enable approle: {v}");
    let policy = "path \"kv/*\" { capabilities = [\"read\"] }";
    let (s, v) = rc.put("sys/policies/acl/app", json!({"policy": policy})).await;
    assert_eq!(s, 204, "policy: {v}");
    let (s, v) = rc.post("sys/mounts/kv", json!({"type": "kv"})).await;
    assert_eq!(s, 204, "mount kv: {v}");
    let (s, v) = rc.put("kv/app/db", json!({"password": "p1"})).await;
    assert_eq!(s, 204, "kv write: {v}");
}

async fn role_id(rc: &Client, role: &str) -> String {
    let (s, v) = rc.get(&format!("auth/approle/role/{role}/role-id")).await;
    assert_eq!(s, 200, "role-id: {v}");
    v["data"]["role_id"].as_str().unwrap().to_string()
}

/// Generate a secret ID: (secret_id, accessor, full response data).
async fn secret_id(rc: &Client, role: &str, body: Value) -> (String, String, Value) {
    let (s, v) = rc.post(&format!("auth/approle/role/{role}/secret-id"), body).await;
    assert_eq!(s, 200, "secret-id: {v}");
    let d = v["data"].clone();
    (d["secret_id"].as_str().unwrap().to_string(), d["secret_id_accessor"].as_str().unwrap().to_string(), d)
}

async fn login(c: &Client, role_id: &str, secret_id: &str) -> (u16, Value) {
    c.post("auth/approle/login", json!({"role_id": role_id, "secret_id": secret_id})).await
}

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

fn assert_invalid(reply: (u16, Value), what: &str) {
    let (s, v) = reply;
    assert_eq!(s, 400, "{what}: {v}");
    assert_eq!(v["errors"][0], INVALID, "{what}: {v}");
}

/// Role, secret ID, login, and the token's policies enforced.
async fn happy_path(c: &Client, rc: &Client, secrets: &mut Vec<String>) -> String {
    let (s, v) = rc
        .post("auth/approle/role/web", json!({"token_policies": ["app"], "token_ttl": "1h", "token_max_ttl": "2h"}))
        .await;
    assert_eq!(s, 204, "create role: {v}");
    let (s, v) = rc.get("auth/approle/role/web").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["token_policies"], json!(["app"]));
    assert_eq!(v["data"]["token_ttl"], 3600);
    assert_eq!(v["data"]["token_max_ttl"], 7200);
    assert_eq!(v["data"]["bind_secret_id"], true);
    let (s, v) = rc.list("auth/approle/role").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["keys"].as_array().unwrap().contains(&json!("web")), "{v}");

    let rid = role_id(rc, "web").await;
    let (sid, accessor, d) = secret_id(rc, "web", json!({})).await;
    assert_eq!(d["secret_id_num_uses"], 0);
    assert_eq!(d["secret_id_ttl"], 0);
    secrets.push(sid.clone());

    let (s, v) = login(c, &rid, &sid).await;
    assert_eq!(s, 200, "login: {v}");
    let token = token_of(&v);
    assert_eq!(v["auth"]["policies"], json!(["app", "default"]), "{v}");
    assert_eq!(v["auth"]["metadata"]["role_name"], "web", "{v}");
    assert_eq!(v["auth"]["lease_duration"], 3600, "{v}");
    assert_eq!(v["auth"]["renewable"], true, "{v}");

    let app = c.with_token(&token);
    let (s, v) = app.get("kv/app/db").await;
    assert_eq!(s, 200, "read with the approle token: {v}");
    assert_eq!(v["data"]["password"], "p1");
    assert_eq!(app.put("kv/app/db", json!({"password": "p2"})).await.0, 403, "write must be denied");
    assert_eq!(app.get("sys/mounts").await.0, 403);
    let (s, v) = app.get("auth/token/lookup-self").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["display_name"], "approle", "{v}");

    // The secret ID is still usable (no use limit) and visible by accessor.
    let (s, v) = rc.list("auth/approle/role/web/secret-id").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["keys"], json!([accessor]));
    let (s, v) = rc.post("auth/approle/role/web/secret-id/lookup", json!({"secret_id": sid})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["secret_id_accessor"], accessor.as_str());
    assert!(v["data"].get("secret_id").is_none(), "lookup must not echo the secret: {v}");
    assert_eq!(login(c, &rid, &sid).await.0, 200);

    // The unauthenticated client may log in but not manage roles.
    assert_eq!(c.get("auth/approle/role/web/role-id").await.0, 403);
    assert_eq!(c.post("auth/approle/role/web/secret-id", json!({})).await.0, 403);
    rid
}

async fn full_flow(backend: Backend) {
    let (store, _srv, c, root) = unsealed(backend).await;
    let rc = c.with_token(&root);
    setup(&rc).await;
    let mut secrets = Vec::new();
    let web_rid = happy_path(&c, &rc, &mut secrets).await;

    // Failures from 127.0.0.1 are counted per role and per address (the
    // address threshold is 4 × 5 = 20): this test stays below it until the
    // lockout section, which is last.

    // A wrong secret ID and an unknown role ID get the same answer.
    assert_invalid(login(&c, &web_rid, "not-the-secret").await, "wrong secret");
    assert_invalid(login(&c, "no-such-role-id", &secrets[0]).await, "unknown role id");
    let (s, v) = c.post("auth/approle/login", json!({"secret_id": "x"})).await;
    assert_eq!(s, 400, "missing role_id: {v}");

    // hvac's shapes: comma-separated lists, metadata as a JSON string.
    let (s, v) = rc
        .post(
            "auth/approle/role/hv",
            json!({"token_policies": "app,extra", "secret_id_bound_cidrs": "127.0.0.0/8,10.0.0.0/8"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let hv = role_id(&rc, "hv").await;
    let (sid, _, _) =
        secret_id(&rc, "hv", json!({"metadata": "{\"team\": \"blue\"}", "cidr_list": "127.0.0.1/32"})).await;
    secrets.push(sid.clone());
    let (s, v) = login(&c, &hv, &sid).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["metadata"]["team"], "blue", "{v}");
    assert_eq!(v["auth"]["policies"], json!(["app", "default", "extra"]), "{v}");

    // secret_id_num_uses = 1: one login, then refused.
    let (s, v) = rc.post("auth/approle/role/once", json!({"token_policies": ["app"], "secret_id_num_uses": 1})).await;
    assert_eq!(s, 204, "{v}");
    let once = role_id(&rc, "once").await;
    let (sid, _, d) = secret_id(&rc, "once", json!({})).await;
    assert_eq!(d["secret_id_num_uses"], 1);
    secrets.push(sid.clone());
    assert_eq!(login(&c, &once, &sid).await.0, 200);
    assert_invalid(login(&c, &once, &sid).await, "second use of a 1-use secret ID");

    // A concurrent double use of a 1-use secret ID succeeds exactly once.
    for _ in 0..3 {
        let (sid, _, _) = secret_id(&rc, "once", json!({})).await;
        secrets.push(sid.clone());
        let (a, b) = tokio::join!(login(&c, &once, &sid), login(&c, &once, &sid));
        let oks = [a.0, b.0].iter().filter(|s| **s == 200).count();
        assert_eq!(oks, 1, "exactly one of two concurrent logins may succeed: {a:?} {b:?}");
    }

    // secret_id_ttl: expired secret IDs are refused.
    let (s, v) = rc.post("auth/approle/role/short", json!({"token_policies": ["app"], "secret_id_ttl": "1s"})).await;
    assert_eq!(s, 204, "{v}");
    let short = role_id(&rc, "short").await;
    let (sid, _, d) = secret_id(&rc, "short", json!({})).await;
    assert_eq!(d["secret_id_ttl"], 1);
    secrets.push(sid.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_invalid(login(&c, &short, &sid).await, "expired secret ID");

    // secret_id_bound_cidrs: a login from 127.0.0.1 is refused.
    let (s, v) = rc.post("auth/approle/role/netbound", json!({"secret_id_bound_cidrs": ["10.0.0.0/8"]})).await;
    assert_eq!(s, 204, "{v}");
    let nb = role_id(&rc, "netbound").await;
    let (sid, _, _) = secret_id(&rc, "netbound", json!({})).await;
    secrets.push(sid.clone());
    let (s, v) = login(&c, &nb, &sid).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("CIDR"), "{v}");

    // token_bound_cidrs: the login works, the token is unusable from here.
    let (s, v) = rc.post("auth/approle/role/tokbound", json!({"token_bound_cidrs": ["10.0.0.0/8"]})).await;
    assert_eq!(s, 204, "{v}");
    let tb = role_id(&rc, "tokbound").await;
    let (sid, _, _) = secret_id(&rc, "tokbound", json!({})).await;
    secrets.push(sid.clone());
    let (s, v) = login(&c, &tb, &sid).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.with_token(&token_of(&v)).get("auth/token/lookup-self").await.0, 403);

    // Destroy by secret ID and by accessor: the secret IDs stop working.
    let (s1, _, _) = secret_id(&rc, "web", json!({})).await;
    let (s2, a2, _) = secret_id(&rc, "web", json!({})).await;
    secrets.extend([s1.clone(), s2.clone()]);
    let (s, v) = rc.post("auth/approle/role/web/secret-id/destroy", json!({"secret_id": s1})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = rc.post("auth/approle/role/web/secret-id-accessor/destroy", json!({"secret_id_accessor": a2})).await;
    assert_eq!(s, 204, "{v}");
    assert_invalid(login(&c, &web_rid, &s1).await, "destroyed secret ID");
    assert_invalid(login(&c, &web_rid, &s2).await, "destroyed (by accessor) secret ID");
    // As Vault: a lookup of a destroyed secret ID answers nothing (204, no data).
    assert_eq!(
        rc.post("auth/approle/role/web/secret-id/lookup", json!({"secret_id": s1})).await,
        (204, serde_json::Value::Null)
    );

    // A custom secret ID and a custom role ID.
    let (s, v) = rc.post("auth/approle/role/web/role-id", json!({"role_id": "web-custom-role-id"})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) =
        rc.post("auth/approle/role/web/custom-secret-id", json!({"secret_id": "Custom-Secret-0123456789"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["secret_id"], "Custom-Secret-0123456789");
    secrets.push("Custom-Secret-0123456789".into());
    assert_eq!(login(&c, "web-custom-role-id", "Custom-Secret-0123456789").await.0, 200);
    assert_invalid(login(&c, &web_rid, "Custom-Secret-0123456789").await, "old role ID");

    // Bad input is a clear 400.
    let (s, v) = rc.post("auth/approle/role/bad", json!({"token_type": "batch"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc.post("auth/approle/role/bad", json!({"secret_id_bound_cidrs": ["10.0.0.0/40"]})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("CIDR"), "{v}");
    let (s, v) = rc.post("auth/approle/role/bad", json!({"token_ttl": "soon"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc.post("auth/approle/role/bad", json!({"bind_secret_id": false})).await;
    assert_eq!(s, 400, "no constraint at all: {v}");
    assert_eq!(rc.get("auth/approle/role/bad").await.0, 404);

    // No generated or custom secret ID is ever stored (paths or values).
    let raw = store.raw_bytes();
    assert!(!raw.is_empty());
    for sid in &secrets {
        assert!(!contains(&raw, sid.as_bytes()), "secret ID {sid} found in storage");
    }
    assert!(!contains(&raw, b"web-custom-role-id"), "role ID found in storage in the clear");

    // Deleting a role deletes its secret IDs: its credentials stop working.
    let (hv_sid, hv_acc, _) = secret_id(&rc, "hv", json!({})).await;
    assert_eq!(rc.delete("auth/approle/role/hv").await.0, 204);
    assert_eq!(rc.get("auth/approle/role/hv").await.0, 404);
    assert_invalid(login(&c, &hv, &hv_sid).await, "deleted role");
    let (s, _) = rc.post("auth/approle/role/hv", json!({})).await;
    assert_eq!(s, 204);
    let (s, v) = rc.post("auth/approle/role/hv/secret-id-accessor/lookup", json!({"secret_id_accessor": hv_acc})).await;
    assert_eq!(s, 404, "a re-created role must not see old secret IDs: {v}");

    // Lockout: repeated failures for a role ID give 429, even with the right secret.
    let (s, _) = rc.post("auth/approle/role/lock", json!({})).await;
    assert_eq!(s, 204);
    let lock = role_id(&rc, "lock").await;
    let (good, _, _) = secret_id(&rc, "lock", json!({})).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(login(&c, &lock, &format!("wrong-{i}")).await.0);
    }
    assert_eq!(statuses, vec![400; 5]);
    let (s, v) = login(&c, &lock, &good).await;
    assert_eq!(s, 429, "locked out: {v}");
    // Another role from the same address still works (the address limit is higher).
    assert_eq!(login(&c, "web-custom-role-id", "Custom-Secret-0123456789").await.0, 200);
}

#[tokio::test]
async fn approle_sqlite() {
    full_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn approle_postgres_happy_path() {
    let (store, _srv, c, root) = unsealed(Backend::Postgres).await;
    let rc = c.with_token(&root);
    setup(&rc).await;
    let mut secrets = Vec::new();
    let rid = happy_path(&c, &rc, &mut secrets).await;
    // Single use holds on PostgreSQL too, under concurrency.
    let (s, _) = rc.post("auth/approle/role/once", json!({"secret_id_num_uses": 1})).await;
    assert_eq!(s, 204);
    let once = role_id(&rc, "once").await;
    let (sid, _, _) = secret_id(&rc, "once", json!({})).await;
    secrets.push(sid.clone());
    let (a, b) = tokio::join!(login(&c, &once, &sid), login(&c, &once, &sid));
    assert_eq!([a.0, b.0].iter().filter(|s| **s == 200).count(), 1, "{a:?} {b:?}");
    assert_invalid(login(&c, &rid, "wrong").await, "wrong secret");
    let raw = store.raw_bytes();
    for sid in &secrets {
        assert!(!contains(&raw, sid.as_bytes()), "secret ID found in the PostgreSQL dump");
    }
}

/// A delegated role administrator (a policy on `auth/approle/role/*` only)
/// cannot turn its AppRole into a root-token factory: `root` is refused on
/// the role, on the `policies` property and under the legacy name.
async fn role_admin_cannot_grant_root(backend: Backend) {
    let (_store, _srv, c, root) = unsealed(backend).await;
    let rc = c.with_token(&root);
    setup(&rc).await;
    let policy =
        "path \"auth/approle/role/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }";
    assert_eq!(rc.put("sys/policies/acl/role-admin", json!({"policy": policy})).await.0, 204);
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["role-admin"]})).await;
    assert_eq!(s, 200, "{v}");
    let admin = c.with_token(&token_of(&v));

    for (path, body) in [
        ("auth/approle/role/evil", json!({"token_policies": ["root"]})),
        ("auth/approle/role/evil", json!({"policies": "default,Root"})),
    ] {
        let (s, v) = admin.post(path, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["errors"][0].as_str().unwrap().contains("cannot create root tokens"), "{v}");
    }
    assert_eq!(admin.get("auth/approle/role/evil").await.0, 404, "nothing was written");

    // A legitimate role, then an attempt to escalate it through the property endpoint.
    assert_eq!(admin.post("auth/approle/role/svc", json!({"token_policies": ["app"]})).await.0, 204);
    let (s, v) = admin.post("auth/approle/role/svc/policies", json!({"token_policies": ["root"]})).await;
    assert_eq!(s, 400, "{v}");
    let rid = role_id(&admin, "svc").await;
    let (sid, _, _) = secret_id(&admin, "svc", json!({})).await;
    let (s, v) = login(&c, &rid, &sid).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["policies"], json!(["app", "default"]));
}

#[tokio::test]
async fn role_admin_cannot_grant_root_sqlite() {
    role_admin_cannot_grant_root(Backend::Sqlite).await;
}

#[tokio::test]
async fn role_admin_cannot_grant_root_postgres() {
    role_admin_cannot_grant_root(Backend::Postgres).await;
}
