//! Regression tests for the adversarial review of the token and policy
//! paths, through the real server on SQLite and PostgreSQL: no path to a
//! token with more power than its creator, revocations and policy changes
//! that hold under concurrent readers (bounded load), blocking reads that
//! end when their token is revoked, and numbers that meet a clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{Backend, Client, ServerProc, Store};

fn token_of(v: &Value) -> String {
    v["auth"]["client_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_string()
}

fn err_text(v: &Value) -> String {
    v["errors"].to_string()
}

async fn ready(backend: Backend) -> (Store, ServerProc, Client, Client) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let (_, _root, rc) = srv.kv2_ready().await;
    let c = srv.client();
    (store, srv, c, rc)
}

// ---------------------------------------------------------------------------
// Item 1: no token with more power than its creator.
// ---------------------------------------------------------------------------

async fn no_escalation(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;

    // An AppRole admin (no sys/ access) cannot get a root token.
    assert_eq!(rc.post("sys/auth/approle", json!({"type": "approle"})).await.0, 204);
    let admin_policy = r#"path "auth/approle/role/*" { capabilities = ["create", "read", "update", "list"] }"#;
    assert_eq!(rc.put("sys/policies/acl/approle-admin", json!({"policy": admin_policy})).await.0, 204);
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["approle-admin"]})).await;
    let admin = c.with_token(&token_of(&v));
    let (s, v) = admin.post("auth/approle/role/evil", json!({"token_policies": ["root"], "token_ttl": 0})).await;
    if s < 300 {
        // Refused at login, whatever the role says.
        let (_, rid) = admin.get("auth/approle/role/evil/role-id").await;
        let (_, sid) = admin.post("auth/approle/role/evil/secret-id", json!({})).await;
        let (s, v) = c
            .post(
                "auth/approle/login",
                json!({"role_id": rid["data"]["role_id"], "secret_id": sid["data"]["secret_id"]}),
            )
            .await;
        assert_eq!(s, 400, "login through a role naming root: {v}");
        assert!(err_text(&v).contains("cannot create root tokens"), "{v}");
    } else {
        assert_eq!(s, 400, "{v}");
    }

    // A parent without `default` cannot give it to a child.
    assert_eq!(
        rc.put("sys/policies/acl/app", json!({"policy": r#"path "secret/data/app" { capabilities = ["read"] }"#}))
            .await
            .0,
        204
    );
    let create = r#"path "auth/token/create" { capabilities = ["update"] }"#;
    assert_eq!(rc.put("sys/policies/acl/creator", json!({"policy": create})).await.0, 204);
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["app", "creator"], "no_default_policy": true})).await;
    assert_eq!(s, 200, "{v}");
    let parent = c.with_token(&token_of(&v));
    let (s, v) = parent.post("auth/token/create", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["policies"], json!(["app", "creator"]), "default must not appear: {v}");
    let (s, v) = parent.post("auth/token/create", json!({"policies": ["app", "default"]})).await;
    assert_eq!(s, 400, "default is not the parent's to give: {v}");
    let (s, v) = parent.post("auth/token/create", json!({"policies": ["root"]})).await;
    assert_eq!(s, 400, "{v}");
    // Orphans and periodic tokens need sudo.
    assert_eq!(parent.post("auth/token/create", json!({"no_parent": true})).await.0, 400);
    assert_eq!(parent.post("auth/token/create", json!({"period": "1h"})).await.0, 400);

    // A use-limited token cannot create a child with more uses than it has left.
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["creator"], "num_uses": 1})).await;
    let one = c.with_token(&token_of(&v));
    let (s, v) = one.post("auth/token/create", json!({})).await;
    assert_eq!(s, 400, "its one use cannot buy an unlimited child: {v}");
    assert!(err_text(&v).contains("no uses left"), "{v}");
    assert_eq!(one.get("auth/token/lookup-self").await.0, 403, "the use was spent");

    let (_, v) = rc.post("auth/token/create", json!({"policies": ["creator"], "num_uses": 5})).await;
    let five = c.with_token(&token_of(&v));
    let (s, v) = five.post("auth/token/create", json!({})).await; // 4 left
    assert_eq!(s, 400, "an unlimited child of a limited parent: {v}");
    let (s, v) = five.post("auth/token/create", json!({"num_uses": 3})).await; // 3 left
    assert_eq!(s, 400, "it may give 2 of its 3 remaining uses, keeping one: {v}");
    let (s, v) = five.post("auth/token/create", json!({"num_uses": 1})).await; // 2 left, 1 given
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["num_uses"], 1);
    let child = token_of(&v);
    // The use given away came out of the parent's budget: one use is left,
    // and that last use revokes it and its child.
    assert_eq!(five.get("auth/token/lookup-self").await.0, 200);
    assert_eq!(five.get("auth/token/lookup-self").await.0, 403, "uses are conserved, never multiplied");
    assert_eq!(c.with_token(&child).get("auth/token/lookup-self").await.0, 403, "outlived its exhausted parent");
    // A CIDR-bound parent cannot give its child a wider binding (or none).
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["creator"], "bound_cidrs": ["127.0.0.0/8"]})).await;
    let bound = c.with_token(&token_of(&v));
    let (s, v) = bound.post("auth/token/create", json!({"bound_cidrs": ["0.0.0.0/0"]})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = bound.post("auth/token/create", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = rc.post("auth/token/lookup", json!({"token": token_of(&v)})).await;
    assert_eq!(v["data"]["bound_cidrs"], json!(["127.0.0.0/8"]), "inherited: {v}");
    let (s, v) = rc.post("auth/token/create", json!({"num_uses": -1})).await;
    assert_eq!(s, 400, "negative uses are not 'unlimited': {v}");
}

#[tokio::test]
async fn no_escalation_sqlite() {
    no_escalation(Backend::Sqlite).await;
}

#[tokio::test]
async fn no_escalation_postgres() {
    no_escalation(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// The policy sees exactly the path the backend serves.
// ---------------------------------------------------------------------------

async fn paths_checked_as_served(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    let admin = r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#;
    assert_eq!(rc.put("sys/policies/acl/adminpol", json!({"policy": admin})).await.0, 204);
    let token_for = |policy: &'static str| {
        let rc = rc.clone();
        async move {
            let (s, v) = rc.post("auth/token/create", json!({"policies": [policy]})).await;
            assert_eq!(s, 200, "{v}");
            token_of(&v)
        }
    };

    // `//`: refused before routing (AppRole used to trim it after the check).
    assert_eq!(rc.post("sys/auth/approle", json!({"type": "approle"})).await.0, 204);
    assert_eq!(rc.post("auth/approle/role/admin", json!({"token_policies": ["adminpol"]})).await.0, 204);
    let helpdesk = "path \"auth/approle/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }\n\
                    path \"auth/approle/role/admin/*\" { capabilities = [\"deny\"] }";
    assert_eq!(rc.put("sys/policies/acl/helpdesk", json!({"policy": helpdesk})).await.0, 204);
    let h = c.with_token(&token_for("helpdesk").await);
    assert_eq!(h.get("auth/approle/role/admin/role-id").await.0, 403);
    let (s, v) = h.get("auth/approle//role/admin/role-id").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(h.post("auth/approle//role/admin/secret-id", json!({})).await.0, 400);
    // Case: role names are folded before the check, not after.
    assert_eq!(h.get("auth/approle/role/ADMIN/role-id").await.0, 403);
    assert_eq!(h.post("auth/approle/role/Admin/secret-id", json!({})).await.0, 403);

    // A trailing `/` is dropped before the check (sudo and exact denies hold).
    let tokadm = "path \"auth/token/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }\n\
                  path \"auth/token/create-orphan\" { capabilities = [\"deny\"] }";
    assert_eq!(rc.put("sys/policies/acl/tokadm", json!({"policy": tokadm})).await.0, 204);
    let t = c.with_token(&token_for("tokadm").await);
    let victim = token_for("tokadm").await;
    assert_eq!(t.post("auth/token/revoke-orphan", json!({"token": victim})).await.0, 403, "sudo path");
    assert_eq!(t.post("auth/token/revoke-orphan/", json!({"token": victim})).await.0, 403, "sudo path + '/'");
    assert_eq!(t.post("auth/token/create-orphan/", json!({})).await.0, 403, "exact deny + '/'");
    let poladm = "path \"sys/policies/acl/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }\n\
                  path \"sys/policies/acl/default\" { capabilities = [\"deny\"] }\n\
                  path \"sys/policies/acl/adminpol\" { capabilities = [\"deny\"] }";
    assert_eq!(rc.put("sys/policies/acl/poladm", json!({"policy": poladm})).await.0, 204);
    let p = c.with_token(&token_for("poladm").await);
    assert_eq!(p.put("sys/policies/acl/default/", json!({"policy": admin})).await.0, 403);
    assert_eq!(p.put("sys/policies/acl/DEFAULT", json!({"policy": admin})).await.0, 403);
    assert_eq!(p.put("sys/policies/acl/ADMINPOL", json!({"policy": admin})).await.0, 403);
    assert_eq!(p.put("sys/policy/Default", json!({"policy": admin})).await.0, 403);
    // What is allowed still works, in any case: the name is folded, as Vault does.
    let (s, v) = p.get("sys/policies/acl/Poladm").await;
    assert_eq!((s, v["data"]["name"].as_str()), (200, Some("poladm")), "{v}");
    assert_eq!(rc.get("sys/mounts/").await.0, 200);
    assert_eq!(rc.list("sys/policies/acl").await.0, 200);

    // Userpass user names likewise.
    assert_eq!(rc.post("sys/auth/userpass", json!({"type": "userpass"})).await.0, 204);
    let (s, v) =
        rc.post("auth/userpass/users/root-admin", json!({"password": "orig-pw", "token_policies": ["adminpol"]})).await;
    assert_eq!(s, 204, "{v}");
    let hd = "path \"auth/userpass/users/*\" { capabilities = [\"update\"] }\n\
              path \"auth/userpass/users/root-admin\" { capabilities = [\"deny\"] }\n\
              path \"auth/userpass/users/root-admin/*\" { capabilities = [\"deny\"] }";
    assert_eq!(rc.put("sys/policies/acl/hd", json!({"policy": hd})).await.0, 204);
    let h = c.with_token(&token_for("hd").await);
    for path in [
        "auth/userpass/users/root-admin/password",
        "auth/userpass/users/ROOT-ADMIN/password",
        "auth/userpass/users/root-admin/password/",
        "auth/userpass/users/Root-Admin",
    ] {
        assert_eq!(h.post(path, json!({"password": "mine"})).await.0, 403, "{path}");
    }
    assert_eq!(c.post("auth/userpass/login/root-admin", json!({"password": "mine"})).await.0, 400);
    assert_eq!(c.post("auth/userpass/login/ROOT-ADMIN", json!({"password": "orig-pw"})).await.0, 200);

    // Control characters never reach storage (a 500 on PostgreSQL before).
    assert_eq!(rc.get("sys/policies/acl/a%00").await.0, 400);
    assert_eq!(rc.get("sys/locked-users?mount_accessor=a%00").await.0, 400);
}

#[tokio::test]
async fn paths_checked_as_served_sqlite() {
    paths_checked_as_served(Backend::Sqlite).await;
}

#[tokio::test]
async fn paths_checked_as_served_postgres() {
    paths_checked_as_served(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Item 9: numbers that meet a clock.
// ---------------------------------------------------------------------------

async fn bounded_numbers(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    for body in [
        json!({"explicit_max_ttl": 18446744073709551615u64}),
        json!({"explicit_max_ttl": "18446744073709551615"}),
        json!({"period": 9223372036854775808u64}),
        json!({"period": 18446744073709551615u64}),
        json!({"ttl": "9999999999h"}),
        json!({"ttl": -5}),
        // Under a second but not zero: not read as 0, which would give the
        // default TTL, or no expiry at all (a red team's finding).
        json!({"ttl": "999ms"}),
        json!({"explicit_max_ttl": "500ms"}),
    ] {
        let (s, v) = rc.post("auth/token/create", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let (_, v) = rc.post("auth/token/create", json!({"policies": ["default"], "ttl": "1h"})).await;
    let t = c.with_token(&token_of(&v));
    let (s, v) = t.post("auth/token/renew-self", json!({"increment": 9223372036854775807i64})).await;
    assert_eq!(s, 400, "{v}");
    // Within bounds but beyond the system maximum: clamped, and the token lives.
    let (s, v) = t.post("auth/token/renew-self", json!({"increment": "100000h"})).await;
    assert_eq!(s, 200, "{v}");
    let lease = v["auth"]["lease_duration"].as_u64().unwrap();
    assert!(lease > 0 && lease <= 768 * 3600, "{v}");
    assert_eq!(t.get("auth/token/lookup-self").await.0, 200, "the renewal must not kill the token");

    let (s, v) = rc
        .post("sys/mounts/kvx", json!({"type": "kv", "config": {"default_lease_ttl": 18446744073709551615u64}}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc.post("secret/metadata/app", json!({"delete_version_after": 18446744073709551615u64})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc.post("secret/config", json!({"delete_version_after": "99999999999s"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = rc.post("secret/config", json!({"delete_version_after": "1ms"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("under 1s"), "{v}");
}

#[tokio::test]
async fn bounded_numbers_sqlite() {
    bounded_numbers(Backend::Sqlite).await;
}

#[tokio::test]
async fn bounded_numbers_postgres() {
    bounded_numbers(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Item 4: blocking reads end when their authorization does.
// ---------------------------------------------------------------------------

/// Start a blocking read of `secret/data/app` newer than `after` with `token`.
fn wait_read(c: &Client, token: &str, after: u64) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    let c = c.with_token(token);
    tokio::spawn(async move {
        let t0 = Instant::now();
        let (s, v) = c.get(&format!("secret/data/app?wait_for_version_after={after}&wait=60s")).await;
        (s, v, t0.elapsed())
    })
}

async fn reader_token(rc: &Client) -> String {
    let (s, v) = rc.post("auth/token/create", json!({"policies": ["reader"], "ttl": "1h"})).await;
    assert_eq!(s, 200, "{v}");
    token_of(&v)
}

async fn blocked_reads_end(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    let reader = r#"path "secret/data/app" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/reader", json!({"policy": reader})).await.0, 204);
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "1"}})).await.0, 200);
    let settle = Duration::from_millis(300);

    // Revoked while waiting: the waiter ends at once with 403.
    let t = reader_token(&rc).await;
    let w = wait_read(&c, &t, 1);
    tokio::time::sleep(settle).await;
    assert_eq!(rc.post("auth/token/revoke", json!({"token": t})).await.0, 204);
    let (s, v, took) = tokio::time::timeout(Duration::from_secs(10), w).await.expect("waiter ended").unwrap();
    assert_eq!(s, 403, "{v}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Revoke, then rotate: the new version never reaches the revoked token.
    let t = reader_token(&rc).await;
    let w = wait_read(&c, &t, 1);
    tokio::time::sleep(settle).await;
    assert_eq!(rc.post("auth/token/revoke", json!({"token": t})).await.0, 204);
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "2-new-secret"}})).await.0, 200);
    let (s, v, _) = w.await.unwrap();
    assert_eq!(s, 403, "the revoked waiter must not get version 2: {v}");
    assert!(!v.to_string().contains("2-new-secret"));

    // The policy narrowed while waiting: 403, not the next version.
    let t = reader_token(&rc).await;
    let w = wait_read(&c, &t, 2);
    tokio::time::sleep(settle).await;
    let other = r#"path "secret/data/other" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/reader", json!({"policy": other})).await.0, 204);
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "3-new-secret"}})).await.0, 200);
    let (s, v, _) = w.await.unwrap();
    assert_eq!(s, 403, "{v}");
    assert!(!v.to_string().contains("3-new-secret"));

    // A waiter whose token and policy hold still gets the next version,
    // even when other tokens are revoked meanwhile.
    assert_eq!(rc.put("sys/policies/acl/reader", json!({"policy": reader})).await.0, 204);
    let t = reader_token(&rc).await;
    let w = wait_read(&c, &t, 3);
    tokio::time::sleep(settle).await;
    let bystander = reader_token(&rc).await;
    assert_eq!(rc.post("auth/token/revoke", json!({"token": bystander})).await.0, 204);
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "4"}})).await.0, 200);
    let (s, v, _) = w.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["data"]["v"], "4");
}

#[tokio::test]
async fn blocked_reads_end_sqlite() {
    blocked_reads_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn blocked_reads_end_postgres() {
    blocked_reads_end(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Items 2 and 3 under bounded load: concurrent readers race the change.
// ---------------------------------------------------------------------------

const READERS: usize = 6;
/// Trials per load test (each is a fresh token or policy change under load).
const TRIALS: usize = 8;
/// Fewer for revocation: each token carries 1.5 MB of metadata.
const REVOKE_TRIALS: usize = 4;

/// Readers hammer `path` with whichever token is in `tokens`; after `changed`
/// is set (once the change request has returned), every 200 to a request
/// that started later is a violation. Returns the number of violations.
async fn race(c: &Client, tokens: Vec<String>, path: &str, change: impl std::future::Future<Output = ()>) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let changed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let violations = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for i in 0..READERS {
        let c = c.with_token(&tokens[i % tokens.len()]);
        let (stop, changed_at, violations, served) =
            (stop.clone(), changed_at.clone(), violations.clone(), served.clone());
        let path = path.to_string();
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let (s, _) = c.get(&path).await;
                served.fetch_add(1, Ordering::SeqCst);
                let after_change = changed_at.lock().unwrap().is_some_and(|t| started > t);
                if s == 200 && after_change {
                    violations.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Let the readers warm the caches, then change under them.
    while served.load(Ordering::SeqCst) < READERS * 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    change.await;
    *changed_at.lock().unwrap() = Some(Instant::now());
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    violations.load(Ordering::SeqCst)
}

async fn revocation_under_load(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    let reader = r#"path "secret/data/app" { capabilities = ["read"] }"#;
    assert_eq!(rc.put("sys/policies/acl/reader", json!({"policy": reader})).await.0, 204);
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "1"}})).await.0, 200);
    // Large caller-controlled metadata makes each token load slow (the window
    // in which a racing lookup used to re-cache a revoked token): larger than
    // the storage read cache's entry limit, so every miss goes to the database.
    let meta: serde_json::Map<String, Value> = (0..3000).map(|i| (format!("k{i}"), json!("m".repeat(500)))).collect();
    for trial in 0..REVOKE_TRIALS {
        let (s, v) = rc.post("auth/token/create", json!({"policies": ["reader"], "meta": meta})).await;
        assert_eq!(s, 200, "{v}");
        let t = token_of(&v);
        let revoke = rc.post("auth/token/revoke", json!({"token": t.clone()}));
        let bad = race(&c, vec![t], "secret/data/app", async {
            assert_eq!(revoke.await.0, 204);
        })
        .await;
        assert_eq!(bad, 0, "trial {trial}: a revoked token kept reading");
    }
}

#[tokio::test]
async fn revocation_under_load_sqlite() {
    revocation_under_load(Backend::Sqlite).await;
}

#[tokio::test]
async fn revocation_under_load_postgres() {
    revocation_under_load(Backend::Postgres).await;
}

async fn policy_change_under_load(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    assert_eq!(rc.post("secret/data/app", json!({"data": {"v": "1"}})).await.0, 200);
    // One large policy in the set makes each ACL build slow.
    let mut big = String::new();
    for i in 0..4000 {
        big.push_str(&format!("path \"secret/data/filler/{i}/*\" {{ capabilities = [\"read\"] }}\n"));
    }
    assert_eq!(rc.put("sys/policies/acl/big", json!({"policy": big})).await.0, 204);
    let wide = r#"path "secret/data/*" { capabilities = ["read"] }"#;
    let narrow = r#"path "secret/data/public" { capabilities = ["read"] }"#;
    for trial in 0..TRIALS {
        assert_eq!(rc.put("sys/policies/acl/p", json!({"policy": wide})).await.0, 204);
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let (_, v) = rc.post("auth/token/create", json!({"policies": ["big", "p"]})).await;
            tokens.push(token_of(&v));
        }
        // Two edits back to back: the first empties the caches, so readers
        // are rebuilding ACLs (from the wide text) while the second commits.
        let bad = race(&c, tokens, "secret/data/app", async {
            assert_eq!(rc.put("sys/policies/acl/p", json!({"policy": format!("{wide}\n")})).await.0, 204);
            assert_eq!(rc.put("sys/policies/acl/p", json!({"policy": narrow})).await.0, 204);
        })
        .await;
        assert_eq!(bad, 0, "trial {trial}: the narrowed policy was not enforced");
        // A brand-new token with the same policy set is refused too.
        let (_, v) = rc.post("auth/token/create", json!({"policies": ["big", "p"]})).await;
        assert_eq!(c.with_token(&token_of(&v)).get("secret/data/app").await.0, 403, "trial {trial}");
    }
}

#[tokio::test]
async fn policy_change_under_load_sqlite() {
    policy_change_under_load(Backend::Sqlite).await;
}

#[tokio::test]
async fn policy_change_under_load_postgres() {
    policy_change_under_load(Backend::Postgres).await;
}

/// Children minted while their parent is being revoked never outlive it.
async fn children_racing_a_revocation(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    let create = r#"path "auth/token/create" { capabilities = ["update"] }"#;
    assert_eq!(rc.put("sys/policies/acl/creator", json!({"policy": create})).await.0, 204);
    for trial in 0..3 {
        let (_, v) = rc.post("auth/token/create", json!({"policies": ["creator"]})).await;
        let parent = c.with_token(&token_of(&v));
        for _ in 0..20 {
            assert_eq!(parent.post("auth/token/create", json!({})).await.0, 200);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let minted: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let mut creators = Vec::new();
        for _ in 0..4 {
            let (parent, stop, minted) = (parent.clone(), stop.clone(), minted.clone());
            creators.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let (s, v) = parent.post("auth/token/create", json!({})).await;
                    if s == 200 {
                        minted.lock().unwrap().push(token_of(&v));
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let token = parent.token.clone().unwrap();
        assert_eq!(rc.post("auth/token/revoke", json!({"token": token})).await.0, 204);
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::SeqCst);
        for cr in creators {
            cr.await.unwrap();
        }
        let minted = minted.lock().unwrap().clone();
        assert!(!minted.is_empty());
        let mut alive = 0;
        for t in &minted {
            if c.with_token(t).get("auth/token/lookup-self").await.0 == 200 {
                alive += 1;
            }
        }
        assert_eq!(alive, 0, "trial {trial}: {alive} of {} children outlived their revoked parent", minted.len());
    }
}

#[tokio::test]
async fn children_racing_a_revocation_sqlite() {
    children_racing_a_revocation(Backend::Sqlite).await;
}

#[tokio::test]
async fn children_racing_a_revocation_postgres() {
    children_racing_a_revocation(Backend::Postgres).await;
}

/// A token stops working the moment its parent expires (not at the next tidy).
async fn children_die_with_an_expired_parent(backend: Backend) {
    let (_store, _srv, c, rc) = ready(backend).await;
    let create = r#"path "auth/token/create" { capabilities = ["update"] }"#;
    assert_eq!(rc.put("sys/policies/acl/creator", json!({"policy": create})).await.0, 204);
    let (_, v) =
        rc.post("auth/token/create", json!({"policies": ["creator"], "ttl": "2s", "explicit_max_ttl": "2s"})).await;
    let parent = c.with_token(&token_of(&v));
    let (s, v) = parent.post("auth/token/create", json!({"ttl": "10h"})).await;
    assert_eq!(s, 200, "{v}");
    let child = c.with_token(&token_of(&v));
    let (_, v) = child.post("auth/token/create", json!({"ttl": "10h"})).await;
    let grandchild = c.with_token(&token_of(&v));
    assert_eq!(grandchild.get("auth/token/lookup-self").await.0, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(parent.get("auth/token/lookup-self").await.0, 403);
    assert_eq!(child.get("auth/token/lookup-self").await.0, 403, "a child of an expired parent");
    assert_eq!(grandchild.get("auth/token/lookup-self").await.0, 403);
    assert_eq!(child.post("auth/token/create", json!({})).await.0, 403);
}

#[tokio::test]
async fn children_die_with_an_expired_parent_sqlite() {
    children_die_with_an_expired_parent(Backend::Sqlite).await;
}

#[tokio::test]
async fn children_die_with_an_expired_parent_postgres() {
    children_die_with_an_expired_parent(Backend::Postgres).await;
}
