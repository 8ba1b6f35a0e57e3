//! Races between a reader filling a cache of security state and a change
//! invalidating it, forced deterministically with pause points: the reader
//! is stopped between its storage read and its cache fill while the change
//! commits. Each of these failed before the caches took generation tickets.

use super::*;
use crate::auth::token::TokenParams;
use crate::logical::{Login, Operation, Response};

async fn dev_core() -> (tempfile::TempDir, Arc<Core>) {
    dev_core_with_cache(crate::storage::DEFAULT_CACHE_BYTES).await
}

async fn dev_core_with_cache(cache_bytes: u64) -> (tempfile::TempDir, Arc<Core>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open_with(&format!("sqlite://{}/v.db", dir.path().display()), cache_bytes).await.unwrap();
    let core = Core::new(storage, crate::catalog::builtin()).await.unwrap();
    core.dev_init(Some("root-token")).await.unwrap();
    (dir, core)
}

async fn new_token(core: &Core, policies: &[&str]) -> (String, String) {
    let active = core.active().unwrap();
    let u = core.unsealed().unwrap();
    let mut batch = Batch::new();
    let params = TokenParams {
        policies: policies.iter().map(|p| p.to_string()).collect(),
        ttl: 3600,
        renewable: true,
        ..Default::default()
    };
    let (token, entry) = active.tokens.create(&u, &mut batch, params, now_unix());
    core.barrier.write(batch).await.unwrap();
    (token.to_string(), entry.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_racing_a_revocation_never_caches_the_revoked_token() {
    let (_d, core) = dev_core().await;
    let (token, id) = new_token(&core, &["default"]).await;
    let active = core.active().unwrap();
    let pause = active.tokens.pauses.arm("lookup:before-fill");
    let lookup = tokio::spawn({
        let core = core.clone();
        let token = token.clone();
        async move { core.authenticate(Some(&token), None).await.is_ok() }
    });
    pause.reached().await; // the lookup has read the row, not yet cached it
    let u = core.unsealed().unwrap();
    assert_eq!(active.tokens.revoke_tree(&core.barrier, &u, &id).await.unwrap(), 1);
    pause.release();
    assert!(lookup.await.unwrap(), "the racing lookup itself read the row before the delete");
    assert!(core.authenticate(Some(&token), None).await.is_err(), "a revoked token must not come back from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_change_notification_clears_the_token_cache() {
    let (_d, core) = dev_core().await;
    let (token, id) = new_token(&core, &["default"]).await;
    core.authenticate(Some(&token), None).await.unwrap(); // cached
    // Another server revokes it; this server misses the notification and resyncs.
    let u = core.unsealed().unwrap();
    let mut batch = Batch::new();
    batch.delete(&format!("{}{id}", crate::auth::token::ID_PREFIX));
    core.barrier.write(batch).await.unwrap();
    assert!(core.authenticate(Some(&token), None).await.is_ok(), "still cached: nothing announced the change");
    core.on_change(&Change::Resync).await.unwrap();
    assert!(core.authenticate(Some(&token), None).await.is_err());
    drop(u);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_built_from_policies_read_before_a_change_is_not_cached() {
    let (_d, core) = dev_core().await;
    let active = core.active().unwrap();
    let u = core.unsealed().unwrap();
    let names = vec!["default".to_string(), "p".to_string()];
    let wide = r#"path "secret/*" { capabilities = ["read"] }"#;
    let narrow = r#"path "secret/data/public" { capabilities = ["read"] }"#;
    active.policies.put(&core.barrier, &u, "p", wide).await.unwrap();
    let pause = active.policies.pauses.arm("acl:before-fill");
    let building = tokio::spawn({
        let core = core.clone();
        let names = names.clone();
        async move {
            let a = core.active().unwrap();
            let u = core.unsealed().unwrap();
            a.policies.acl(&core.barrier, &u, &names).await.unwrap()
        }
    });
    pause.reached().await; // policies fetched, ACL not yet cached
    active.policies.put(&core.barrier, &u, "p", narrow).await.unwrap();
    pause.release();
    assert!(building.await.unwrap().allows("secret/data/app", Operation::Read, false), "built from the old text");
    let acl = active.policies.acl(&core.barrier, &u, &names).await.unwrap();
    assert!(!acl.allows("secret/data/app", Operation::Read, false), "the narrowed policy must apply at once");
    assert!(acl.allows("secret/data/public", Operation::Read, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_built_before_a_mount_change_is_not_installed_after_it() {
    let (_d, core) = dev_core().await;
    let u = core.unsealed().unwrap();
    let pause = core.pauses.arm("router:before-install");
    let reload = tokio::spawn({
        let core = core.clone();
        async move { core.reload_mounts().await }
    });
    pause.reached().await; // the reload has read the tables
    let entry = MountEntry {
        path: "fresh/".into(),
        kind: "kv".into(),
        description: String::new(),
        accessor: String::new(),
        uuid: String::new(),
        config: mounts::MountConfig::default(),
        options: None,
        local: false,
        seal_wrap: false,
    };
    core.mount(&u, Table::Secrets, entry).await.unwrap();
    pause.release();
    reload.await.unwrap().unwrap();
    assert!(core.active().unwrap().router().get(Table::Secrets, "fresh/").is_some(), "the stale router won");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_config_refresh_racing_a_rekey_keeps_the_new_config() {
    let (_d, core) = dev_core().await;
    let pause = core.pauses.arm("seal-config:before-install");
    let refresh = tokio::spawn({
        let core = core.clone();
        async move { core.refresh_config().await }
    });
    pause.reached().await; // read the old (1 of 1) configuration
    let new = seal::validate_config(5, 3).unwrap();
    let mut batch = crate::storage::WriteBatch::new();
    batch.set_seal_config(new);
    core.storage().write(batch).await.unwrap();
    core.set_seal_config(Some(new));
    pause.release();
    refresh.await.unwrap().unwrap();
    assert_eq!(core.config(), Some(new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_login_yields_a_root_token() {
    let (_d, core) = dev_core().await;
    let router = core.active().unwrap().router();
    let m = router.get(Table::Auth, "token/").unwrap();
    for p in ["root", "Root", " root "] {
        let login = Login { policies: vec!["app".into(), p.into()], renewable: true, ..Default::default() };
        let err = core.finish_login(Response::Login(Box::new(login)), "auth/x/login", m).await.unwrap_err();
        assert!(err.to_string().contains("cannot create root tokens"), "{p}: {err}");
    }
    // Nothing was written: the token store holds only the root token.
    let u = core.unsealed().unwrap();
    assert_eq!(core.barrier.list(&u, crate::auth::token::ID_PREFIX).await.unwrap().len(), 1);
}

fn child_login() -> Login {
    Login { policies: vec!["default".into()], ttl: 3600, renewable: true, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_written_after_its_parent_was_revoked_revokes_itself() {
    let (_d, core) = dev_core().await;
    let (_, parent_id) = new_token(&core, &["default"]).await;
    let active = core.active().unwrap();
    let u = core.unsealed().unwrap();
    let parent = active.tokens.lookup_id(&core.barrier, &u, &parent_id, now_unix()).await.unwrap().unwrap();
    let pause = core.pauses.arm("mint:before-write");
    let minting = tokio::spawn({
        let core = core.clone();
        let parent = parent.clone();
        async move { core.mint(child_login(), "auth/token/create", Some(&parent), None).await }
    });
    pause.reached().await; // authorized under a live parent, not yet written
    assert_eq!(active.tokens.revoke_tree(&core.barrier, &u, &parent_id).await.unwrap(), 1);
    pause.release();
    let err = minting.await.unwrap().unwrap_err();
    assert!(matches!(err, CoreError::Logical(crate::logical::LogicalError::PermissionDenied)), "{err}");
    // Nothing but the root token is left.
    assert_eq!(core.barrier.list(&u, crate::auth::token::ID_PREFIX).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_written_after_its_auth_method_was_disabled_is_revoked() {
    let (_d, core) = dev_core().await;
    let u = core.unsealed().unwrap();
    let entry = MountEntry {
        path: "up/".into(),
        kind: "userpass".into(),
        description: String::new(),
        accessor: String::new(),
        uuid: String::new(),
        config: mounts::MountConfig::default(),
        options: None,
        local: false,
        seal_wrap: false,
    };
    core.mount(&u, Table::Auth, entry).await.unwrap();
    let uuid = core.active().unwrap().router().get(Table::Auth, "up/").unwrap().entry.uuid.clone();
    let pause = core.pauses.arm("mint:before-write");
    let login = tokio::spawn({
        let core = core.clone();
        async move { core.mint(child_login(), "auth/up/login/alice", None, Some(uuid)).await }
    });
    pause.reached().await; // the login was routed to the mount, its token not yet written
    core.unmount(&u, Table::Auth, "up/").await.unwrap();
    pause.release();
    assert!(login.await.unwrap().is_err(), "a token of a disabled auth method");
    assert_eq!(core.barrier.list(&u, crate::auth::token::ID_PREFIX).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidy_revokes_children_left_by_an_interrupted_revocation() {
    let (_d, core) = dev_core().await;
    let (_, parent_id) = new_token(&core, &["default"]).await;
    let active = core.active().unwrap();
    let u = core.unsealed().unwrap();
    let parent = active.tokens.lookup_id(&core.barrier, &u, &parent_id, now_unix()).await.unwrap().unwrap();
    let child = core.mint(child_login(), "auth/token/create", Some(&parent), None).await.unwrap();
    // A crash after the parent's row went and before its children did.
    let mut batch = Batch::new();
    batch.delete(&format!("{}{parent_id}", crate::auth::token::ID_PREFIX));
    core.barrier.write(batch).await.unwrap();
    active.tokens.invalidate(&parent_id);
    // Already unusable (its ancestry is checked on every use), but still stored...
    assert!(core.authenticate(Some(&child.client_token), None).await.is_err());
    let child_id = active.tokens.id_of(&child.client_token);
    assert!(active.tokens.alive(&core.barrier, &child_id).await.unwrap());
    // ...until tidy removes it.
    assert_eq!(active.tokens.tidy(&core.barrier, &u, now_unix()).await.unwrap(), 1);
    assert!(!active.tokens.alive(&core.barrier, &child_id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_valid_only_while_its_ancestors_are() {
    let (_d, core) = dev_core().await;
    let (_, parent_id) = new_token(&core, &["default"]).await;
    let active = core.active().unwrap();
    let u = core.unsealed().unwrap();
    let parent = active.tokens.lookup_id(&core.barrier, &u, &parent_id, now_unix()).await.unwrap().unwrap();
    let child = core.mint(child_login(), "auth/token/create", Some(&parent), None).await.unwrap();
    let child_entry = active.tokens.lookup(&core.barrier, &u, &child.client_token, now_unix()).await.unwrap().unwrap();
    let grandchild = core.mint(child_login(), "auth/token/create", Some(&child_entry), None).await.unwrap();
    assert!(core.authenticate(Some(&grandchild.client_token), None).await.is_ok());
    // The parent expires (no revocation, tidy has not run): its whole tree stops working at once.
    let mut expired = (*parent).clone();
    expired.expire_time = Some(now_unix() - 1);
    let mut batch = Batch::new();
    active.tokens.add(&u, &mut batch, &expired);
    core.barrier.write(batch).await.unwrap();
    active.tokens.invalidate(&parent_id);
    assert!(core.authenticate(Some(&child.client_token), None).await.is_err());
    assert!(core.authenticate(Some(&grandchild.client_token), None).await.is_err());
}

/// A backend that records what the change feed told it.
#[derive(Default)]
struct Recording {
    heard: std::sync::Mutex<Vec<Option<String>>>,
}

impl crate::logical::Backend for Recording {
    fn handle<'a>(
        &'a self,
        _: &'a crate::auth::Authorized,
        _: crate::logical::Request,
    ) -> crate::logical::BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async { Ok(Response::NoContent) })
    }
    fn invalidate(&self, path: Option<&str>) {
        self.heard.lock().unwrap().push(path.map(String::from));
    }
}

static RECORDING: std::sync::OnceLock<Arc<Recording>> = std::sync::OnceLock::new();

fn recording_factory(_: crate::logical::kit::EngineContext) -> Result<Arc<dyn crate::logical::Backend>, LogicalError> {
    Ok(RECORDING.get_or_init(Default::default).clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_hear_changes_under_their_own_prefix_only() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
    let catalog = crate::catalog::builtin().with_secrets("recording", recording_factory);
    let core = Core::new(storage, catalog).await.unwrap();
    core.dev_init(Some("root-token")).await.unwrap();
    let u = core.unsealed().unwrap();
    let entry = MountEntry {
        path: "rec/".into(),
        kind: "recording".into(),
        description: String::new(),
        accessor: String::new(),
        uuid: String::new(),
        config: Default::default(),
        options: None,
        local: false,
        seal_wrap: false,
    };
    core.mount(&u, Table::Secrets, entry).await.unwrap();
    let uuid = core.active().unwrap().router().get(Table::Secrets, "rec/").unwrap().entry.uuid.clone();
    let rec = RECORDING.get().unwrap();
    rec.heard.lock().unwrap().clear();
    // Another server wrote under this mount, under another mount, elsewhere; then a resync.
    for p in [format!("logical/{uuid}/keys/k1"), "logical/other-uuid/x".into(), "sys/token/id/abc".into()] {
        core.on_change(&Change::Path(p)).await.unwrap();
    }
    core.on_change(&Change::Resync).await.unwrap();
    assert_eq!(*rec.heard.lock().unwrap(), vec![Some("keys/k1".to_string()), None]);
}

fn auth_entry(path: &str, kind: &str) -> MountEntry {
    MountEntry {
        path: path.into(),
        kind: kind.into(),
        description: String::new(),
        accessor: String::new(),
        uuid: String::new(),
        config: Default::default(),
        options: None,
        local: false,
        seal_wrap: false,
    }
}

/// A disable whose caller goes away after the table change (a dropped
/// connection cancels the request's future) still revokes every token of
/// the method, and those tokens are refused from the moment the table
/// changed. (Red team: 327 of 400 tokens survived a dropped connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_cut_short_leaves_no_usable_token() {
    let (_d, core) = dev_core().await;
    let u = core.unsealed().unwrap();
    core.mount(&u, Table::Auth, auth_entry("up/", "userpass")).await.unwrap();
    let uuid = core.active().unwrap().router().get(Table::Auth, "up/").unwrap().entry.uuid.clone();
    let login = core.mint(child_login(), "auth/up/login/x", None, Some(uuid)).await.unwrap();
    let child = {
        let parent = core.authenticate(Some(&login.client_token), None).await.unwrap();
        core.mint(child_login(), "auth/token/create", Some(&parent), None).await.unwrap()
    };
    let pause = core.pauses.arm("unmount:cleanup");
    let disabling = tokio::spawn({
        let core = core.clone();
        let u = u.clone();
        async move { core.unmount(&u, Table::Auth, "up/").await }
    });
    pause.reached().await;
    // Committed, not yet revoked: neither the login token nor its child works.
    assert!(core.authenticate(Some(&login.client_token), None).await.is_err());
    assert!(core.authenticate(Some(&child.client_token), None).await.is_err());
    // The caller goes away; the clean-up goes on.
    disabling.abort();
    pause.release();
    let active = core.active().unwrap();
    let id = active.tokens.id_of(&login.client_token);
    let child_id = active.tokens.id_of(&child.client_token);
    // The tree is revoked parent first, then children (one write each):
    // wait for the whole clean-up, not just its first step.
    for _ in 0..500 {
        if !active.tokens.alive(&core.barrier, &id).await.unwrap()
            && !active.tokens.alive(&core.barrier, &child_id).await.unwrap()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!active.tokens.alive(&core.barrier, &id).await.unwrap(), "the method's token was revoked");
    assert!(!active.tokens.alive(&core.barrier, &child_id).await.unwrap(), "and its child");
}

/// Tokens of a method missing from the table (its clean-up never ran) are
/// refused, and the tidy revokes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_vanished_method_are_refused_and_tidied() {
    let (_d, core) = dev_core().await;
    let active = core.active().unwrap();
    let u = core.unsealed().unwrap();
    let mut batch = Batch::new();
    let params = TokenParams {
        policies: vec!["default".into()],
        ttl: 3600,
        mount: Some("no-such-mount".into()),
        ..Default::default()
    };
    let (token, entry) = active.tokens.create(&u, &mut batch, params, now_unix());
    core.barrier.write(batch).await.unwrap();
    assert!(core.authenticate(Some(&token), None).await.is_err());
    assert_eq!(core.revoke_orphaned_mounts(&u).await.unwrap(), 1);
    assert!(!active.tokens.alive(&core.barrier, &entry.id).await.unwrap());
    // Tokens of methods that exist, and the root token, are untouched.
    assert_eq!(core.revoke_orphaned_mounts(&u).await.unwrap(), 0);
    assert!(core.authenticate(Some("root-token"), None).await.is_ok());
}

/// Storage batches one KV v2 write of `secret/data/{key}` took.
async fn kv2_write_batches(core: &Core, key: &str) -> u64 {
    let before = core.barrier.storage().writes_submitted();
    let mut req = crate::logical::Request::new(Operation::Update, format!("secret/data/{key}"));
    req.data.insert("data".into(), serde_json::json!({"v": "x"}));
    core.handle(Some("root-token"), req).await.unwrap();
    core.barrier.storage().writes_submitted() - before
}

/// KV v2 writes a key whose metadata is not in the storage read cache as if
/// it were new (`Expect::Absent`), retrying after a read if it was not. With
/// the cache disabled nothing is ever cached: every overwrite would pay a
/// failed commit first. The guess is made only while the cache is in use.
#[tokio::test]
async fn kv2_guesses_a_new_key_only_with_a_read_cache() {
    let (_d, core) = dev_core_with_cache(0).await;
    assert_eq!(kv2_write_batches(&core, "a").await, 1);
    assert_eq!(kv2_write_batches(&core, "a").await, 1, "an overwrite reads the metadata first");
    let (_d, core) = dev_core().await;
    assert_eq!(kv2_write_batches(&core, "b").await, 1, "new: no read, one commit");
    assert_eq!(kv2_write_batches(&core, "b").await, 1, "its metadata is cached by that commit");
}
