//! Interoperability with the Rust Vault client `vaultrs` (0.8): start the
//! server on each backend and drive it only through vaultrs' public API:
//! sys (health/status, init, unseal and the seal status it returns, seal,
//! secrets and auth mounts, ACL policies), KV v2 (set, CAS, read,
//! read_version, list, metadata, delete, undelete, destroy, config), AppRole
//! (role, role-id, secret-id, login), userpass (user, login) and tokens
//! (create, lookup, renew, revoke). Every call's result is asserted: a
//! shape vaultrs cannot parse fails the call itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use vault_e2e::{Backend, ServerProc, Store};
use vaultrs::api::auth::approle::requests::{GenerateNewSecretIDRequestBuilder, SetAppRoleRequestBuilder};
use vaultrs::api::auth::userpass::requests::CreateUserRequestBuilder;
use vaultrs::api::kv2::requests::{SetSecretMetadataRequestBuilder, SetSecretRequestOptions};
use vaultrs::api::sys::requests::EnableEngineRequestBuilder;
use vaultrs::api::token::requests::CreateTokenRequestBuilder;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::sys::ServerStatus;
use vaultrs::{auth, kv2, sys, token};

const APP_POLICY: &str = r#"path "secret/data/app/*" {
  capabilities = ["create", "read", "update"]
}
"#;

fn client(url: &str, token: &str) -> VaultClient {
    // reqwest is built without a default rustls provider; the tree has only ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = VaultClientSettingsBuilder::default()
        .address(url)
        .token(token)
        .timeout(Some(Duration::from_secs(60)))
        .build()
        .expect("vaultrs settings");
    VaultClient::new(settings).expect("vaultrs client")
}

/// The HTTP status of a vaultrs API error (panics on any other outcome).
/// vaultrs reports an error answer with an `errors` list as `APIError`, and
/// one without (Vault's 404 for a deleted KV version carries the metadata
/// instead) as the HTTP layer's `ServerResponseError`.
#[track_caller]
fn api_status<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) -> u16 {
    match r {
        Err(ClientError::APIError { code, .. }) => code,
        Err(ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        }) => code,
        other => panic!("{what}: expected an API error, got {other:?}"),
    }
}

async fn vaultrs_flow(backend: Backend) {
    let store = Store::new(backend);
    let srv = ServerProc::start(&store, &[]);
    let url = srv.url();
    let anon = client(&url, "");

    // --- sys: health, init, unseal (whose answer is the seal status) ---
    assert!(matches!(sys::status(&anon).await.unwrap(), ServerStatus::UNINITIALIZED));
    let init = sys::start_initialization(&anon, 3, 2, None).await.expect("init");
    assert_eq!(init.keys.len(), 3, "keys");
    assert_eq!(init.keys_base64.len(), 3, "keys_base64");
    assert!(!init.root_token.is_empty());
    assert!(matches!(sys::status(&anon).await.unwrap(), ServerStatus::SEALED));
    let code = api_status(sys::start_initialization(&anon, 1, 1, None).await, "second init");
    assert_eq!(code, 400, "a second init");

    let s = sys::unseal(&anon, Some(init.keys[0].clone()), None, None).await.expect("unseal 1");
    assert!(s.sealed && s.progress == 1 && s.threshold == 2 && s.n_shares == 3, "{s:?}");
    assert!(!s.version.is_empty());
    // A reset forgets the share given so far.
    let s = sys::unseal(&anon, None, Some(true), None).await.expect("unseal reset");
    assert!(s.sealed && s.progress == 0, "{s:?}");
    // keys_base64 are accepted as well as hex.
    let s = sys::unseal(&anon, Some(init.keys_base64[1].clone()), None, None).await.expect("unseal b64");
    assert!(s.sealed && s.progress == 1, "{s:?}");
    let s = sys::unseal(&anon, Some(init.keys[2].clone()), None, None).await.expect("unseal 2");
    assert!(!s.sealed && s.progress == 0, "{s:?}");
    assert!(s.cluster_name.as_deref().is_some_and(|n| !n.is_empty()), "cluster_name: {s:?}");
    assert!(matches!(sys::status(&anon).await.unwrap(), ServerStatus::OK));
    let h = sys::health(&anon).await.expect("health");
    assert!(h.initialized && !h.sealed && !h.standby, "{h:?}");

    // No token: 403.
    assert_eq!(api_status(sys::mount::list(&anon).await, "mounts without a token"), 403);

    let root = client(&url, &init.root_token);
    let me = root.lookup().await.expect("lookup-self");
    assert_eq!(me.policies, vec!["root".to_string()]);
    assert_eq!(me.id, init.root_token);

    // --- sys: secrets engines ---
    sys::mount::enable(&root, "secret", "kv-v2", None).await.expect("enable secret/ as kv-v2");
    sys::mount::enable(
        &root,
        "kv1",
        "kv",
        Some(
            EnableEngineRequestBuilder::default()
                .description("v1 store")
                .options(HashMap::from([("version".to_string(), "1".to_string())])),
        ),
    )
    .await
    .expect("enable kv1/");
    let mounts = sys::mount::list(&root).await.expect("list mounts");
    let secret = &mounts["secret/"];
    assert_eq!(secret.mount_type, "kv", "kv-v2 is stored as kv");
    assert_eq!(secret.options.as_ref().and_then(|o| o.get("version")).map(String::as_str), Some("2"));
    assert_eq!(mounts["kv1/"].description, "v1 store");
    assert_eq!(mounts["sys/"].mount_type, "system");
    let conf = sys::mount::get_configuration_of_a_secret_engine(&root, "secret").await.expect("mount config");
    assert_eq!(conf.mount_type, "kv");
    assert_eq!(conf.accessor, secret.accessor);
    sys::mount::disable(&root, "kv1").await.expect("disable kv1/");
    assert!(!sys::mount::list(&root).await.unwrap().contains_key("kv1/"));
    let code = api_status(sys::mount::enable(&root, "bad", "no-such-engine", None).await, "unknown engine");
    assert_eq!(code, 400);

    // --- sys: auth methods (vaultrs needs config.token_type) ---
    sys::auth::enable(&root, "approle", "approle", None).await.expect("enable approle");
    sys::auth::enable(&root, "userpass", "userpass", None).await.expect("enable userpass");
    let auths = sys::auth::list(&root).await.expect("list auth methods");
    for (path, kind) in [("token/", "token"), ("approle/", "approle"), ("userpass/", "userpass")] {
        let a = auths.get(path).unwrap_or_else(|| panic!("{path} missing: {auths:?}"));
        assert_eq!(a.mount_type, kind);
        assert_eq!(a.config.token_type, "default-service", "{path}");
        assert!(a.accessor.starts_with(&format!("auth_{kind}_")), "{path}: {}", a.accessor);
    }

    // --- sys: policies ---
    sys::policy::set(&root, "app", APP_POLICY).await.expect("policy set");
    let list = sys::policy::list(&root).await.expect("policy list");
    for p in ["app", "default", "root"] {
        assert!(list.policies.iter().any(|x| x == p), "{p} not in {:?}", list.policies);
    }
    let p = sys::policy::read(&root, "app").await.expect("policy read");
    assert_eq!((p.name.as_str(), p.rules.as_str()), ("app", APP_POLICY));
    sys::policy::set(&root, "scratch", APP_POLICY).await.expect("policy set scratch");
    sys::policy::delete(&root, "scratch").await.expect("policy delete");
    assert_eq!(api_status(sys::policy::read(&root, "scratch").await, "deleted policy"), 404);
    let code = api_status(sys::policy::set(&root, "broken", "path {").await, "malformed policy");
    assert_eq!(code, 400);

    kv2_flow(&root).await;
    approle_flow(&url, &root).await;
    userpass_flow(&url, &root).await;
    token_flow(&url, &root).await;

    // --- seal, then unseal again ---
    sys::seal(&root).await.expect("seal");
    assert!(matches!(sys::status(&anon).await.unwrap(), ServerStatus::SEALED));
    assert_eq!(api_status(kv2::read::<Value>(&root, "secret", "app/db").await, "read while sealed"), 503);
    sys::unseal(&anon, Some(init.keys[1].clone()), None, None).await.unwrap();
    let s = sys::unseal(&anon, Some(init.keys[0].clone()), None, None).await.unwrap();
    assert!(!s.sealed, "{s:?}");
    let v: Value = kv2::read(&root, "secret", "app/db").await.expect("read after unseal");
    assert_eq!(v["user"], "svc");

    let status = srv.terminate();
    assert!(status.success(), "vault-server exited with {status}");
}

async fn kv2_flow(root: &VaultClient) {
    let m = kv2::set(root, "secret", "app/db", &json!({"user": "svc", "password": "pw1"})).await.expect("kv2 set v1");
    assert_eq!(m.version, 1);
    assert!(m.created_time.ends_with('Z') && m.deletion_time.is_empty() && !m.destroyed, "{m:?}");
    let m = kv2::set(root, "secret", "app/db", &json!({"user": "svc", "password": "pw2"})).await.expect("set v2");
    assert_eq!(m.version, 2);
    // Check-and-set: the wrong version is refused (400), the right one accepted.
    let code = api_status(
        kv2::set_with_options(root, "secret", "app/db", &json!({"x": "y"}), SetSecretRequestOptions { cas: 1 }).await,
        "cas mismatch",
    );
    assert_eq!(code, 400);
    let m = kv2::set_with_options(
        root,
        "secret",
        "app/db",
        &json!({"user": "svc", "password": "pw3"}),
        SetSecretRequestOptions { cas: 2 },
    )
    .await
    .expect("cas 2");
    assert_eq!(m.version, 3);

    let latest: HashMap<String, String> = kv2::read(root, "secret", "app/db").await.expect("read latest");
    assert_eq!(latest["password"], "pw3");
    let v1: HashMap<String, String> = kv2::read_version(root, "secret", "app/db", 1).await.expect("read v1");
    assert_eq!(v1["password"], "pw1");
    kv2::set(root, "secret", "app/cache", &json!({"k": "v"})).await.expect("set app/cache");
    kv2::set(root, "secret", "top", &json!({"k": "v"})).await.expect("set top");
    let mut keys = kv2::list(root, "secret", "app").await.expect("list app/");
    keys.sort();
    assert_eq!(keys, vec!["cache".to_string(), "db".to_string()]);
    let mut top = kv2::list(root, "secret", "").await.expect("list /");
    top.sort();
    assert_eq!(top, vec!["app/".to_string(), "top".to_string()]);
    assert_eq!(api_status(kv2::list(root, "secret", "nothing").await, "list of nothing"), 404);
    assert_eq!(api_status(kv2::read::<Value>(root, "secret", "missing").await, "missing secret"), 404);

    // Metadata.
    kv2::set_metadata(
        root,
        "secret",
        "app/db",
        Some(
            SetSecretMetadataRequestBuilder::default()
                .max_versions(5u64)
                .custom_metadata(HashMap::from([("owner".to_string(), "team-a".to_string())])),
        ),
    )
    .await
    .expect("set metadata");
    let md = kv2::read_metadata(root, "secret", "app/db").await.expect("read metadata");
    assert_eq!((md.current_version, md.oldest_version, md.max_versions), (3, 0, 5), "{md:?}");
    assert_eq!(md.versions.len(), 3);
    assert_eq!(md.custom_metadata.as_ref().and_then(|c| c.get("owner")).map(String::as_str), Some("team-a"));
    assert_eq!(md.delete_version_after, "0s");

    // Soft delete, undelete, destroy.
    kv2::delete_versions(root, "secret", "app/db", vec![1]).await.expect("delete v1");
    assert_eq!(api_status(kv2::read_version::<Value>(root, "secret", "app/db", 1).await, "deleted v1"), 404);
    let md = kv2::read_metadata(root, "secret", "app/db").await.unwrap();
    assert!(!md.versions["1"].deletion_time.is_empty(), "{md:?}");
    kv2::undelete_versions(root, "secret", "app/db", vec![1]).await.expect("undelete v1");
    let v1: HashMap<String, String> = kv2::read_version(root, "secret", "app/db", 1).await.expect("v1 is back");
    assert_eq!(v1["password"], "pw1");
    kv2::destroy_versions(root, "secret", "app/db", vec![1]).await.expect("destroy v1");
    let md = kv2::read_metadata(root, "secret", "app/db").await.unwrap();
    assert!(md.versions["1"].destroyed, "{md:?}");
    kv2::undelete_versions(root, "secret", "app/db", vec![1]).await.expect("undelete of a destroyed version");
    assert_eq!(api_status(kv2::read_version::<Value>(root, "secret", "app/db", 1).await, "destroyed v1"), 404);
    kv2::delete_latest(root, "secret", "app/cache").await.expect("delete latest");
    assert_eq!(api_status(kv2::read::<Value>(root, "secret", "app/cache").await, "deleted latest"), 404);
    kv2::delete_metadata(root, "secret", "app/cache").await.expect("delete metadata");
    assert_eq!(api_status(kv2::read_metadata(root, "secret", "app/cache").await, "metadata gone"), 404);

    // Engine config.
    kv2::config::set(
        root,
        "secret",
        Some(vaultrs::api::kv2::requests::SetConfigurationRequestBuilder::default().max_versions(10u64)),
    )
    .await
    .expect("config set");
    let c = kv2::config::read(root, "secret").await.expect("config read");
    assert_eq!((c.max_versions, c.cas_required, c.delete_version_after.as_str()), (10, false, "0s"));
}

async fn approle_flow(url: &str, root: &VaultClient) {
    auth::approle::role::set(
        root,
        "approle",
        "web",
        Some(SetAppRoleRequestBuilder::default().token_policies(vec!["app".to_string()]).token_ttl("1h")),
    )
    .await
    .expect("approle role set");
    let roles = auth::approle::role::list(root, "approle").await.expect("role list");
    assert_eq!(roles.keys, vec!["web".to_string()]);
    let r = auth::approle::role::read(root, "approle", "web").await.expect("role read");
    assert_eq!(r.token_policies, vec!["app".to_string()]);
    assert_eq!(r.token_ttl, 3600);
    assert!(r.bind_secret_id);
    let role_id = auth::approle::role::read_id(root, "approle", "web").await.expect("role-id").role_id;
    assert!(!role_id.is_empty());
    let sid = auth::approle::role::secret::generate(
        root,
        "approle",
        "web",
        Some(GenerateNewSecretIDRequestBuilder::default().metadata(r#"{"env":"test"}"#)),
    )
    .await
    .expect("secret-id");
    assert!(!sid.secret_id.is_empty() && !sid.secret_id_accessor.is_empty());
    let accessors = auth::approle::role::secret::list(root, "approle", "web").await.expect("secret-id list");
    assert_eq!(accessors.keys, vec![sid.secret_id_accessor.clone()]);
    let info = auth::approle::role::secret::read(root, "approle", "web", &sid.secret_id).await.expect("lookup");
    assert_eq!(info.secret_id_accessor, sid.secret_id_accessor);
    assert_eq!(info.metadata.as_ref().and_then(|m| m.get("env")).map(String::as_str), Some("test"));

    let anon = client(url, "");
    let login = auth::approle::login(&anon, "approle", &role_id, &sid.secret_id).await.expect("approle login");
    assert!(login.policies.contains(&"app".to_string()) && login.policies.contains(&"default".to_string()));
    assert_eq!(login.lease_duration, 3600);
    assert!(login.renewable);
    // The token works, within its policy.
    let app = client(url, &login.client_token);
    kv2::set(&app, "secret", "app/from-approle", &json!({"ok": "yes"})).await.expect("write with the approle token");
    assert_eq!(api_status(kv2::read::<Value>(&app, "secret", "top").await, "outside the policy"), 403);
    let code = api_status(auth::approle::login(&anon, "approle", &role_id, "wrong").await, "bad secret-id");
    assert_eq!(code, 400);
    auth::approle::role::secret::delete(root, "approle", "web", &sid.secret_id).await.expect("destroy secret-id");
    let code = api_status(auth::approle::login(&anon, "approle", &role_id, &sid.secret_id).await, "destroyed id");
    assert_eq!(code, 400);
}

async fn userpass_flow(url: &str, root: &VaultClient) {
    auth::userpass::user::set(
        root,
        "userpass",
        "alice",
        "correct horse",
        Some(CreateUserRequestBuilder::default().token_policies(vec!["app".to_string()])),
    )
    .await
    .expect("user set");
    let users = auth::userpass::user::list(root, "userpass").await.expect("user list");
    assert_eq!(users.keys, vec!["alice".to_string()]);
    let u = auth::userpass::user::read(root, "userpass", "alice").await.expect("user read");
    assert_eq!(u.token_policies, vec!["app".to_string()]);
    let anon = client(url, "");
    let login = auth::userpass::login(&anon, "userpass", "alice", "correct horse").await.expect("userpass login");
    assert!(login.token_policies.contains(&"app".to_string()), "{:?}", login.token_policies);
    let me = token::lookup(root, &login.client_token).await.expect("lookup the login token");
    assert_eq!(me.meta.as_ref().and_then(|m| m.get("username")).map(String::as_str), Some("alice"));
    assert_eq!(me.path, "auth/userpass/login/alice");
    let code = api_status(auth::userpass::login(&anon, "userpass", "alice", "wrong").await, "bad password");
    assert_eq!(code, 400);
    auth::userpass::user::update_password(root, "userpass", "alice", "new password").await.expect("password");
    auth::userpass::login(&anon, "userpass", "alice", "new password").await.expect("login with the new password");
    auth::userpass::user::delete(root, "userpass", "alice").await.expect("user delete");
    let code = api_status(auth::userpass::login(&anon, "userpass", "alice", "new password").await, "deleted user");
    assert_eq!(code, 400);
}

async fn token_flow(url: &str, root: &VaultClient) {
    let t = token::new(
        root,
        Some(
            CreateTokenRequestBuilder::default()
                .policies(vec!["app".to_string()])
                .ttl("1h")
                .display_name("ci")
                .meta(HashMap::from([("purpose".to_string(), "interop".to_string())])),
        ),
    )
    .await
    .expect("token create");
    assert_eq!(t.lease_duration, 3600);
    assert!(t.renewable && !t.orphan && t.token_type == "service", "{t:?}");
    assert_eq!(t.token_policies, vec!["app".to_string(), "default".to_string()]);
    let l = token::lookup(root, &t.client_token).await.expect("lookup");
    assert_eq!(l.accessor, t.accessor);
    assert_eq!(l.display_name, "token-ci");
    assert_eq!(l.meta.as_ref().and_then(|m| m.get("purpose")).map(String::as_str), Some("interop"));
    assert!(l.ttl > 3500 && l.ttl <= 3600, "ttl {}", l.ttl);
    let la = token::lookup_accessor(root, &t.accessor).await.expect("lookup-accessor");
    assert_eq!(la.accessor, t.accessor);
    assert!(la.id.is_empty(), "lookup-accessor must not reveal the token");
    let child = client(url, &t.client_token);
    let me = token::lookup_self(&child).await.expect("lookup-self");
    assert_eq!(me.id, t.client_token);
    let renewed = token::renew(root, &t.client_token, Some("2h")).await.expect("renew");
    assert_eq!(renewed.lease_duration, 7200);
    let renewed = child.renew(Some("30m")).await.expect("renew-self");
    assert_eq!(renewed.lease_duration, 1800);
    // A child of the child, revoked with its parent.
    let creator_policy = "path \"auth/token/create\" { capabilities = [\"update\"] }\n";
    sys::policy::set(root, "creator", creator_policy).await.unwrap();
    let parent = token::new(root, Some(CreateTokenRequestBuilder::default().policies(vec!["creator".to_string()])))
        .await
        .expect("parent token");
    let parent_c = client(url, &parent.client_token);
    let grandchild = token::new(&parent_c, None).await.expect("child of a non-root token");
    token::revoke(root, &parent.client_token).await.expect("revoke parent");
    assert_eq!(api_status(token::lookup(root, &grandchild.client_token).await, "child of a revoked token"), 403);
    token::revoke_accessor(root, &t.accessor).await.expect("revoke-accessor");
    assert_eq!(api_status(token::lookup_self(&child).await, "revoked token"), 403);
    let orphan = token::new_orphan(root, None).await.expect("orphan");
    assert!(orphan.orphan);
    let oc = client(url, &orphan.client_token);
    oc.revoke().await.expect("revoke-self");
    assert_eq!(api_status(token::lookup_self(&oc).await, "self-revoked token"), 403);
}

#[tokio::test]
async fn vaultrs_sqlite() {
    vaultrs_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn vaultrs_postgres() {
    vaultrs_flow(Backend::Postgres).await;
}
