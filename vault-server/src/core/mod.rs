//! The core: ties the seal, the barrier, the token store and the mount table
//! together, and owns the sealed/unsealed state machine.
//!
//! ```text
//! uninitialized --init--> sealed --unseal (T shares)--> unsealed --seal--> sealed
//! ```
//!
//! While sealed, [`Core::active`] is `None` and the barrier holds no keys;
//! only init, unseal, seal-status and health work, everything else answers
//! `Sealed`.

mod generate_root;
pub mod hooks;
pub(crate) mod lease;
pub(crate) mod mounts;
pub(crate) mod policies;
mod rekey;
pub(crate) mod request;
pub mod restore;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock, Weak};

use tokio::sync::Mutex;
use zeroize::Zeroizing;

use vault_api::{Health, InitRequest, InitResponse, KeyStatus, SealStatus, UnsealRequest};

use crate::auth::TokenStore;
use crate::barrier::{Barrier, BarrierError, Batch, Keyring, Unsealed, now_unix};
use crate::crypto::random;
use crate::logical::LogicalError;
use crate::seal::{self, Added, KeyPart, SealError, ShareCollector};
use crate::storage::{Change, Expect, SEAL_CONFIG_CHANGE, SealConfig, Storage, StorageError};

pub use generate_root::GenerateRoot;
pub use mounts::{MountEntry, Router, Table};
pub use rekey::Rekey;

/// Server version reported by seal-status and health.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Build date reported by seal-status (set `VAULT_BUILD_DATE` at build time).
pub const BUILD_DATE: &str = match option_env!("VAULT_BUILD_DATE") {
    Some(d) => d,
    None => "2026-11-23T00:00:00Z",
};
const CLUSTER_PATH: &str = "core/cluster";

/// Errors of the core layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Sealed (503).
    #[error("Vault is sealed")]
    Sealed,
    /// Not initialized (400 on most paths; health/seal-status report it).
    #[error("Vault is not initialized")]
    NotInitialized,
    /// `sys/init` on an initialized vault.
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    /// Bad input (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// Seal-level failure (400: bad share, wrong key...).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Logical/backend error (mapped by kind).
    #[error(transparent)]
    Logical(#[from] LogicalError),
    /// Internal failure; the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl From<BarrierError> for CoreError {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Sealed => CoreError::Sealed,
            other => CoreError::Internal(other.to_string()),
        }
    }
}

/// Core errors seen from a backend (the system and token backends call the core).
impl From<CoreError> for LogicalError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Logical(l) => l,
            CoreError::Sealed => LogicalError::Sealed,
            CoreError::InvalidRequest(m) => LogicalError::InvalidRequest(m),
            // Keep the detail for the log (the caller sees "internal error").
            CoreError::Internal(detail) => LogicalError::Internal(detail),
            other => LogicalError::internal(other),
        }
    }
}

impl From<StorageError> for CoreError {
    fn from(e: StorageError) -> Self {
        CoreError::Internal(e.to_string())
    }
}

/// Cluster identity, created at init.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// e.g. `vault-cluster-1a2b3c4d`.
    pub name: String,
    /// UUID.
    pub id: String,
}

/// Everything that exists only while unsealed. Dropped on seal.
/// (It deliberately holds no [`Unsealed`]: the keyring changes on rotation,
/// so each request takes a fresh capability from the barrier.)
pub struct Active {
    tokens: TokenStore,
    policies: policies::PolicyStore,
    router: RwLock<Arc<Router>>,
    cluster: ClusterInfo,
    /// Moves whenever a token or policy cache entry is invalidated, so
    /// long-held authorizations (blocking reads) re-check themselves.
    security: crate::cache::Signal,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active").field("cluster", &self.cluster.name).finish_non_exhaustive()
    }
}

impl Active {
    /// The token store.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// The policy store.
    pub fn policies(&self) -> &policies::PolicyStore {
        &self.policies
    }

    /// The current routing table.
    pub fn router(&self) -> Arc<Router> {
        match self.router.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    /// Install `r` unless the installed router was built from newer mount
    /// tables (a reload that read the tables before a change must not
    /// replace the router built after it). False when neither is newer
    /// (the caller reads again).
    /// Install `r` unless the installed router is newer. Some(backends the
    /// new router no longer has: their mounts are gone, and the caller shuts
    /// them down) when the installed router is now at least as new as `r`;
    /// None when `r` lost a race and a newer one must be read.
    fn set_router(&self, r: Router) -> Option<Vec<Arc<dyn crate::logical::Backend>>> {
        let mut g = self.router.write().unwrap_or_else(|p| p.into_inner());
        if r.is_at_least(&g) {
            let gone = g.backends_not_in(&r);
            *g = Arc::new(r);
            Some(gone)
        } else if g.is_at_least(&r) {
            Some(Vec::new())
        } else {
            None
        }
    }

    /// Follows invalidations of tokens and policies (see [`crate::cache`]).
    pub fn security_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.security.subscribe()
    }
}

/// The vault core. Shared as `Arc<Core>`.
pub struct Core {
    me: Weak<Core>,
    barrier: Arc<Barrier>,
    active: RwLock<Option<Arc<Active>>>,
    /// Serialises state transitions (init, unseal completion, seal, rekey, root generation).
    transition: Mutex<()>,
    unseal_progress: std::sync::Mutex<Option<ShareCollector>>,
    rekey: std::sync::Mutex<Option<Rekey>>,
    generate_root: std::sync::Mutex<Option<GenerateRoot>>,
    /// The seal configuration and a generation moved by every local write
    /// of it, so a refresh that read storage before a rekey cannot install
    /// the old configuration after it.
    seal_config: RwLock<(Option<SealConfig>, u64)>,
    lockout: Arc<crate::auth::lockout::Lockout>,
    /// Mount types and their factories.
    catalog: crate::logical::kit::Catalog,
    /// Settings handed to every engine built.
    engine_settings: RwLock<crate::logical::kit::EngineSettings>,
    /// The time engines see.
    clock: crate::logical::kit::Clock,
    /// Which key ceremonies take no token (`disable_unauthed_*_endpoints`).
    unauthed_ceremonies: RwLock<crate::config::UnauthedCeremonies>,
    /// Re-checks held authorizations (one per core, shared by requests).
    reauth: Arc<request::Reauthorizer>,
    /// Called for every request (the HTTP pipeline runs them).
    hooks: hooks::Hooks,
    /// Requests by mount and status class (one of the hooks).
    counter: Arc<hooks::RequestCounter>,
    /// Prometheus metrics (one of the hooks; read by `sys/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Rate limits (API quotas from the barrier, built-in login/unseal limits).
    quotas: Arc<crate::quotas::Quotas>,
    /// The CORS setting (`sys/config/cors`).
    cors: crate::sys::cors::CorsState,
    /// Backup settings and scheduled-backup counters.
    backup: crate::backup::State,
    /// Audit devices (one of the hooks).
    audit: Arc<crate::audit::Broker>,
    #[cfg(test)]
    pub(crate) pauses: crate::testing::Pauses,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("barrier", &self.barrier).finish_non_exhaustive()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    /// A sealed core over `storage`, mounting the types of `catalog`
    /// (`crate::catalog::builtin()` for everything this server ships).
    pub async fn new(storage: Storage, catalog: crate::logical::kit::Catalog) -> Result<Arc<Self>, CoreError> {
        let seal_config = storage.seal_config().await?;
        let changes = storage.subscribe();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            barrier: Arc::new(Barrier::new(storage)),
            active: RwLock::new(None),
            transition: Mutex::new(()),
            unseal_progress: std::sync::Mutex::new(None),
            rekey: std::sync::Mutex::new(None),
            generate_root: std::sync::Mutex::new(None),
            seal_config: RwLock::new((seal_config, 0)),
            lockout: Arc::new(crate::auth::lockout::Lockout::default()),
            catalog,
            engine_settings: RwLock::new(crate::logical::kit::EngineSettings {
                metrics: metrics.clone(),
                ..Default::default()
            }),
            clock: Default::default(),
            unauthed_ceremonies: RwLock::new(crate::config::UnauthedCeremonies { rekey: false, generate_root: false }),
            reauth: Arc::new(request::Reauthorizer { core: me.clone() }),
            hooks: hooks::Hooks::default(),
            counter: Arc::new(hooks::RequestCounter::default()),
            metrics,
            quotas: Arc::default(),
            cors: Default::default(),
            backup: Default::default(),
            audit: Arc::new(crate::audit::Broker::default()),
            #[cfg(test)]
            pauses: Default::default(),
        });
        // The access log is added by the server when configured (a hook
        // that writes nothing still costs a call per request).
        core.hooks.add(core.counter.clone());
        core.hooks.add(core.metrics.clone());
        core.hooks.add(core.audit.clone());
        tokio::spawn(follow_changes(Arc::downgrade(&core), changes));
        Ok(core)
    }

    /// Apply a change another server made to shared state we cache.
    async fn on_change(&self, change: &Change) -> Result<(), CoreError> {
        let is = |p: &str| matches!(change, Change::Resync) || *change == Change::Path(p.into());
        // Another server restored a snapshot: the keys held here are of the vault that was.
        if *change == Change::Path(crate::storage::RESTORED.into()) {
            self.seal().await;
            return Ok(());
        }
        if is(SEAL_CONFIG_CHANGE) || is(seal::ROOT_KEY_PATH) {
            self.refresh_config().await?;
        }
        if self.active().is_err() {
            return Ok(());
        }
        if is(crate::barrier::KEYRING_PATH) {
            let u = self.unsealed()?;
            self.barrier.reload(&u).await?;
        }
        if is(mounts::MOUNTS_PATH) || is(mounts::AUTH_PATH) {
            self.reload_mounts().await?;
        }
        if is(crate::sys::cors::PATH)
            || matches!(change, Change::Path(p) if p.starts_with(crate::quotas::store::PREFIX))
        {
            self.reload_hardening(&self.unsealed()?).await;
        }
        if is(crate::audit::TABLE_PATH) {
            let u = self.unsealed()?;
            self.audit.load(&self.barrier, &u).await.map_err(|e| CoreError::Internal(e.to_string()))?;
        }
        let active = self.active()?;
        // Engines hear of changes under their own prefix (the change feed).
        active.router().invalidate(change);
        match change {
            Change::Resync => {
                // Notifications may have been lost: any token may have been
                // revoked and any policy changed.
                active.tokens.invalidate_all();
                active.policies.invalidate();
            }
            Change::Path(p) => {
                if let Some(id) = p.strip_prefix(crate::auth::token::ID_PREFIX) {
                    active.tokens.invalidate(id);
                } else if p.starts_with(policies::POLICY_PREFIX) {
                    active.policies.invalidate();
                }
            }
        }
        Ok(())
    }

    /// Rate limits: checked by the HTTP layer on every request.
    pub fn quotas(&self) -> &Arc<crate::quotas::Quotas> {
        &self.quotas
    }

    /// The CORS setting in force.
    pub fn cors(&self) -> &crate::sys::cors::CorsState {
        &self.cors
    }

    /// Load the stored quotas and CORS setting (at unseal, and when another
    /// server changed them). A failure keeps what was in force and is logged.
    async fn reload_hardening(&self, u: &Unsealed) {
        if let Err(e) = crate::quotas::store::reload(&self.quotas, &self.barrier, u).await {
            tracing::warn!(error = %e, "could not load the rate-limit quotas");
        }
        if let Err(e) = crate::sys::cors::reload(self, u).await {
            tracing::warn!(error = %e, "could not load the CORS setting");
        }
    }

    /// Set how secret rotation is scheduled (before unsealing).
    pub fn configure_rotation(&self, settings: crate::engines::RotationSettings) {
        self.engine_settings.write().unwrap_or_else(|p| p.into_inner()).rotation = settings;
    }

    /// Set the transit stream limits (before unsealing).
    pub fn configure_streams(&self, settings: crate::engines::transit::StreamSettings) {
        self.engine_settings.write().unwrap_or_else(|p| p.into_inner()).streams = settings;
    }

    /// How secret rotation is scheduled.
    pub fn rotation_settings(&self) -> crate::engines::RotationSettings {
        self.engine_settings().rotation
    }

    /// The settings engines are built with.
    pub fn engine_settings(&self) -> crate::logical::kit::EngineSettings {
        self.engine_settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The clock engines see (tests move it forward).
    pub fn clock(&self) -> &crate::logical::kit::Clock {
        &self.clock
    }

    /// The mount types this core can mount.
    pub fn catalog(&self) -> &crate::logical::kit::Catalog {
        &self.catalog
    }

    /// One scheduler tick: every mount runs its due background work (KV v2
    /// rotations). Each engine makes its work run once across servers.
    pub async fn run_periodic(&self) {
        let Ok(active) = self.active() else { return };
        let Ok(u) = self.unsealed() else { return };
        for m in active.router().mounts() {
            m.backend.periodic(&u).await;
        }
    }

    /// The hooks every request passes (add one to watch or refuse requests).
    pub fn hooks(&self) -> &hooks::Hooks {
        &self.hooks
    }

    /// Requests counted by mount, operation and status class.
    pub fn request_counter(&self) -> &hooks::RequestCounter {
        &self.counter
    }

    /// The Prometheus metrics of this core.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Backup settings and scheduled-backup counters (`crate::backup`).
    pub fn backup(&self) -> &crate::backup::State {
        &self.backup
    }

    /// The audit devices (`failures()` for the metrics exporter).
    pub fn audit(&self) -> &Arc<crate::audit::Broker> {
        &self.audit
    }

    /// Login failure counters shared by all auth methods.
    pub fn lockout(&self) -> &Arc<crate::auth::lockout::Lockout> {
        &self.lockout
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        self.barrier.storage()
    }

    /// The barrier.
    pub fn barrier(&self) -> &Arc<Barrier> {
        &self.barrier
    }

    /// A fresh capability for the current keyring, or `Sealed`.
    pub fn unsealed(&self) -> Result<Unsealed, CoreError> {
        Ok(self.barrier.unsealed()?)
    }

    /// The unsealed state, or `Sealed`.
    /// `path` (mount included, as requested) as hooks and logs may show it
    /// for a request that was not routed (refused, malformed, sealed):
    /// personal captures of the route that would serve it left as `{name}`,
    /// and under a mount whose table has personal captures, a path no entry
    /// matches is not shown past the mount. While sealed the mounts are
    /// unknown: a path shaped like transit's `…/subjects/{name}/{subject}`
    /// has its last segments withheld, any other is shown as asked.
    pub fn loggable_path(&self, path: &str) -> String {
        let Ok(active) = self.active() else { return withhold_subject_shaped(path) };
        let router = active.router();
        let Some((m, rel)) = router.route(path) else { return path.to_string() };
        let table = m.backend.paths();
        if !table.iter().any(|s| !s.personal.is_empty()) {
            return path.to_string();
        }
        let rel = rel.trim_end_matches('/');
        match crate::logical::paths::find(table, rel) {
            Some(r) => match r.redacted() {
                Some(red) => format!("{}{red}", m.route_path),
                None => path.to_string(),
            },
            None => format!("{}…", m.route_path),
        }
    }

    pub fn active(&self) -> Result<Arc<Active>, CoreError> {
        let g = self.active.read().unwrap_or_else(|p| p.into_inner());
        g.clone().ok_or(CoreError::Sealed)
    }

    fn config(&self) -> Option<SealConfig> {
        self.seal_config.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Record a seal configuration this server has just committed.
    fn set_seal_config(&self, c: Option<SealConfig>) {
        let mut g = self.seal_config.write().unwrap_or_else(|p| p.into_inner());
        *g = (c, g.1.wrapping_add(1));
    }

    /// Re-read the seal configuration (another server may have initialized or rekeyed).
    /// Of concurrent refreshes, one that sees another install first reads
    /// again, so the last value installed is never older than any read.
    async fn refresh_config(&self) -> Result<Option<SealConfig>, CoreError> {
        for _ in 0..8 {
            let seen = self.seal_config.read().unwrap_or_else(|p| p.into_inner()).1;
            let c = self.storage().seal_config().await?;
            #[cfg(test)]
            self.pauses.at("seal-config:before-install").await;
            let mut g = self.seal_config.write().unwrap_or_else(|p| p.into_inner());
            if g.1 == seen {
                *g = (c, seen.wrapping_add(1));
                return Ok(c);
            }
        }
        Err(CoreError::Internal("the seal configuration kept changing while it was read".into()))
    }

    async fn config_or_refresh(&self) -> Result<Option<SealConfig>, CoreError> {
        match self.config() {
            Some(c) => Ok(Some(c)),
            None => self.refresh_config().await,
        }
    }

    /// Whether the vault has been initialized.
    pub async fn initialized(&self) -> Result<bool, CoreError> {
        Ok(self.config_or_refresh().await?.is_some())
    }

    /// `sys/init`: create the key hierarchy and the first root token.
    /// Leaves the vault sealed, as Vault does.
    pub async fn init(&self, req: InitRequest) -> Result<InitResponse, CoreError> {
        // `vault operator init` sends zeros (and empty PGP fields) when not given.
        if req.recovery_shares.is_some_and(|n| n != 0) || req.recovery_threshold.is_some_and(|n| n != 0) {
            return Err(CoreError::InvalidRequest("parameters specific to auto unseal seals present".into()));
        }
        if req.pgp_keys.as_ref().is_some_and(|k| !k.is_empty())
            || req.root_token_pgp_key.as_ref().is_some_and(|k| !k.is_empty())
        {
            return Err(CoreError::InvalidRequest("PGP-encrypted key shares are not supported by this server".into()));
        }
        let config = seal::validate_config(req.secret_shares.unwrap_or(5), req.secret_threshold.unwrap_or(3))?;
        if let Some(stored) = req.stored_shares
            && stored != 0
            && stored != i64::from(config.secret_shares)
        {
            return Err(CoreError::InvalidRequest(
                "invalid seal configuration: stored_shares must equal secret_shares".into(),
            ));
        }
        let _t = self.transition.lock().await;
        if self.refresh_config().await?.is_some() {
            return Err(CoreError::AlreadyInitialized);
        }
        let (response, _) = self.create_hierarchy(config).await?;
        Ok(response)
    }

    /// Generate all keys and the root token, write them in one transaction.
    /// Returns the init response and the unseal key (for dev mode).
    async fn create_hierarchy(&self, config: SealConfig) -> Result<(InitResponse, Zeroizing<[u8; 32]>), CoreError> {
        let now = now_unix();
        let unseal_key = seal::new_unseal_key()?;
        let keyring = Keyring::generate(now).map_err(|e| CoreError::Internal(e.to_string()))?;
        let wrapped_root = seal::wrap_root(&unseal_key, keyring.root_key());
        let wrapped_keyring = Barrier::wrap_keyring(&keyring);
        // A temporary capability, only to encrypt the initial records; the
        // barrier is sealed again right after (init leaves the vault sealed).
        let u = self.barrier.install(keyring);
        let result = async {
            let mut batch = Batch::new();
            batch.raw().set_seal_config(config);
            batch.raw().put_expect(seal::ROOT_KEY_PATH, wrapped_root, Expect::Absent);
            batch.raw().put_expect(crate::barrier::KEYRING_PATH, wrapped_keyring, Expect::Absent);
            let tokens = TokenStore::generate(&u, &mut batch)?;
            let root_token = tokens.create_root(&u, &mut batch, now);
            let cluster = ClusterInfo { name: format!("vault-cluster-{}", random::hex_id(4)), id: random::uuid() };
            let cluster_json = serde_json::to_vec(&cluster).unwrap_or_default();
            batch.put(&u, CLUSTER_PATH, &cluster_json);
            mounts::initial_table(&u, &mut batch);
            self.barrier.write(batch).await?;
            Ok::<_, BarrierError>(root_token)
        }
        .await;
        drop(u);
        self.barrier.seal();
        let root_token = match result {
            Ok(t) => t,
            Err(BarrierError::Storage(StorageError::Conflict(_))) => {
                return Err(CoreError::AlreadyInitialized);
            }
            Err(e) => return Err(e.into()),
        };
        self.set_seal_config(Some(config));
        let parts = seal::split(config, &unseal_key)?;
        let response = InitResponse {
            keys: parts.iter().map(|p| hex::encode(p.as_bytes())).collect(),
            keys_base64: parts.iter().map(|p| b64(p.as_bytes())).collect(),
            root_token: root_token.to_string(),
        };
        Ok((response, unseal_key))
    }

    /// `sys/unseal`: submit one share (or reset).
    pub async fn unseal(&self, req: UnsealRequest) -> Result<SealStatus, CoreError> {
        if req.migrate == Some(true) {
            return Err(CoreError::InvalidRequest("seal migration is not supported".into()));
        }
        if req.reset == Some(true) {
            if self.active().is_ok() {
                return Err(CoreError::InvalidRequest("vault is unsealed".into()));
            }
            *lock(&self.unseal_progress) = None;
            return self.seal_status().await;
        }
        let key = match req.key.as_deref() {
            Some(k) if !k.is_empty() => k,
            _ => {
                return Err(CoreError::InvalidRequest(
                    "'key' must be specified in request body as JSON, or 'reset' set to true".into(),
                ));
            }
        };
        let Some(config) = self.config_or_refresh().await? else {
            return Err(CoreError::NotInitialized);
        };
        let part = KeyPart::decode(config, key)?;
        if self.active().is_ok() {
            return self.seal_status().await;
        }
        let parts = {
            let mut progress = lock(&self.unseal_progress);
            let collector = progress.get_or_insert_with(ShareCollector::new);
            match collector.add(part)? {
                Added::Duplicate => None,
                Added::Progress(n) if n < usize::from(config.secret_threshold) => None,
                Added::Progress(_) => {
                    // Threshold reached: the attempt ends here, success or not.
                    let parts = collector.take();
                    *progress = None;
                    Some(parts)
                }
            }
        };
        if let Some(parts) = parts {
            let unseal_key = seal::combine(config, &parts)?;
            drop(parts);
            self.unseal_with_key(&unseal_key).await?;
        }
        self.seal_status().await
    }

    /// Open the barrier with a verified unseal key and bring up the active state.
    async fn unseal_with_key(&self, unseal_key: &Zeroizing<[u8; 32]>) -> Result<(), CoreError> {
        let _t = self.transition.lock().await;
        if self.active().is_ok() {
            return Ok(());
        }
        let root = self.unwrap_root_key(unseal_key).await?;
        let (keyring, _) = self.barrier.load_keyring(root).await?;
        let u = self.barrier.install(keyring);
        // Audit devices start before the core serves a request: none runs unrecorded.
        let activated = match self.audit.load(&self.barrier, &u).await {
            Ok(()) => self.activate(u).await,
            Err(e) => Err(CoreError::Internal(format!("cannot load the audit devices: {e}"))),
        };
        match activated {
            Ok(active) => {
                *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(active));
                tracing::info!("vault unsealed");
                Ok(())
            }
            Err(e) => {
                self.audit.clear();
                self.barrier.seal();
                Err(e)
            }
        }
    }

    /// Verify an unseal key by unwrapping the stored root key with it.
    async fn unwrap_root_key(&self, unseal_key: &Zeroizing<[u8; 32]>) -> Result<Zeroizing<[u8; 32]>, CoreError> {
        let wrapped = self.storage().get(seal::ROOT_KEY_PATH).await?.ok_or(CoreError::NotInitialized)?;
        Ok(seal::unwrap_root(unseal_key, &wrapped.value)?)
    }

    async fn activate(&self, u: Unsealed) -> Result<Active, CoreError> {
        let security = crate::cache::signal();
        let tokens = TokenStore::load(&self.barrier, &u, security.clone()).await?;
        let raw = self
            .barrier
            .get(&u, CLUSTER_PATH)
            .await?
            .ok_or_else(|| CoreError::Internal("cluster record missing".into()))?;
        let cluster: ClusterInfo =
            serde_json::from_slice(&raw).map_err(|_| CoreError::Internal("cluster record malformed".into()))?;
        let router = mounts::load_router(self, &u, None).await?;
        self.reload_hardening(&u).await;
        Ok(Active {
            tokens,
            policies: policies::PolicyStore::new(Some(security.clone())),
            router: RwLock::new(Arc::new(router)),
            cluster,
            security,
        })
    }

    /// Seal: drop every key from memory. In-flight requests finish with the
    /// keys they hold; new ones get `Sealed`.
    pub async fn seal(&self) {
        let _t = self.transition.lock().await;
        let u = self.unsealed().ok();
        if let Some(u) = &u
            && let Err(e) = self.barrier.flush_usage(u).await
        {
            tracing::warn!(error = %e, "could not record key usage before sealing");
        }
        // Sign off the audit chains while the keys are still here.
        self.audit.close(&self.barrier, u.as_ref()).await;
        self.seal_now();
    }

    fn seal_now(&self) {
        let old = self.active.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(active) = old {
            for m in active.router().mounts() {
                m.backend.shutdown();
            }
        }
        self.audit.clear();
        self.barrier.seal();
        *lock(&self.unseal_progress) = None;
        *lock(&self.rekey) = None;
        *lock(&self.generate_root) = None;
        tracing::info!("vault sealed");
    }

    /// `sys/seal` with a token check: needs `update` + `sudo` on `sys/seal`.
    pub async fn seal_with_token(&self, token: Option<&str>, addr: Option<std::net::IpAddr>) -> Result<(), CoreError> {
        let Ok(active) = self.active() else { return Ok(()) };
        let entry = self.authenticate(token, addr).await?;
        let u = self.unsealed()?;
        let acl = active.policies.acl(&self.barrier, &u, &entry.policies).await?;
        crate::auth::acl::authorize(u, entry, &acl, "sys/seal", crate::logical::Operation::Update, true)?;
        drop(active);
        self.seal().await;
        Ok(())
    }

    /// `sys/seal-status`.
    pub async fn seal_status(&self) -> Result<SealStatus, CoreError> {
        let config = self.config_or_refresh().await?;
        let active = self.active().ok();
        let (progress, nonce) = match &*lock(&self.unseal_progress) {
            Some(c) => (c.progress() as u32, c.nonce().to_string()),
            None => (0, String::new()),
        };
        Ok(SealStatus {
            seal_type: "shamir".into(),
            initialized: config.is_some(),
            sealed: active.is_none(),
            t: config.map_or(0, |c| c.secret_threshold.into()),
            n: config.map_or(0, |c| c.secret_shares.into()),
            progress,
            nonce,
            version: VERSION.into(),
            build_date: BUILD_DATE.into(),
            migration: false,
            recovery_seal: false,
            storage_type: self.storage().kind().name().into(),
            cluster_name: active.as_ref().map(|a| a.cluster.name.clone()),
            cluster_id: active.as_ref().map(|a| a.cluster.id.clone()),
        })
    }

    /// `sys/health` body.
    pub async fn health(&self) -> Result<Health, CoreError> {
        let initialized = self.initialized().await?;
        let active = self.active().ok();
        Ok(Health {
            initialized,
            sealed: active.is_none(),
            standby: active.is_none(),
            performance_standby: false,
            replication_performance_mode: "disabled".into(),
            replication_dr_mode: "disabled".into(),
            server_time_utc: now_unix(),
            version: VERSION.into(),
            enterprise: false,
            cluster_name: active.as_ref().map(|a| a.cluster.name.clone()),
            cluster_id: active.as_ref().map(|a| a.cluster.id.clone()),
            echo_duration_ms: 0,
            clock_skew_ms: 0,
            replication_primary_canary_age_ms: 0,
        })
    }

    /// `sys/rotate`: new barrier term.
    pub async fn rotate(&self, u: &Unsealed) -> Result<u32, CoreError> {
        let term = self.barrier.rotate(u).await?;
        tracing::info!(term, "barrier key rotated");
        Ok(term)
    }

    /// `sys/key-status`.
    pub fn key_status(&self, u: &Unsealed) -> KeyStatus {
        let (term, install, encryptions) = self.barrier.key_status(u);
        KeyStatus { term, install_time: crate::logical::fields::rfc3339(install), encryptions }
    }

    /// Dev mode: initialize with one share, unseal, and optionally replace the
    /// root token with a caller-chosen one. Returns (unseal key b64, root token).
    pub async fn dev_init(&self, root_token: Option<&str>) -> Result<(String, Zeroizing<String>), CoreError> {
        let config = seal::validate_config(1, 1)?;
        let (resp, unseal_key) = {
            let _t = self.transition.lock().await;
            if self.refresh_config().await?.is_some() {
                return Err(CoreError::AlreadyInitialized);
            }
            self.create_hierarchy(config).await?
        };
        self.unseal_with_key(&unseal_key).await?;
        let key_b64 = b64(&unseal_key[..]);
        let token = match root_token {
            None => Zeroizing::new(resp.root_token.clone()),
            Some(chosen) => {
                let active = self.active()?;
                let u = self.unsealed()?;
                let entry = active
                    .tokens
                    .lookup(&self.barrier, &u, &resp.root_token, now_unix())
                    .await?
                    .ok_or_else(|| CoreError::Internal("root token missing".into()))?;
                let mut batch = Batch::new();
                active.tokens.rebind(&u, &mut batch, chosen, &entry);
                self.barrier.write(batch).await?;
                Zeroizing::new(chosen.to_string())
            }
        };
        // Dev mode serves `secret/` as KV v2, as Vault's dev server does.
        let u = self.unsealed()?;
        let entry = MountEntry {
            path: "secret/".into(),
            kind: "kv".into(),
            description: "key/value secret storage".into(),
            accessor: String::new(),
            uuid: String::new(),
            config: mounts::MountConfig::default(),
            options: Some(serde_json::json!({"version": "2"}).as_object().cloned().unwrap_or_default()),
            local: false,
            seal_wrap: false,
        };
        self.mount(&u, Table::Secrets, entry).await?;
        // ...and `transit/` beside it (encryption as a service).
        let transit = MountEntry {
            path: "transit/".into(),
            kind: "transit".into(),
            description: "encryption as a service".into(),
            accessor: String::new(),
            uuid: String::new(),
            config: mounts::MountConfig::default(),
            options: None,
            local: false,
            seal_wrap: false,
        };
        self.mount(&u, Table::Secrets, transit).await?;
        Ok((key_b64, token))
    }

    /// Periodic housekeeping: barrier auto-rotation, expired-token tidy (on
    /// one server of the group per run).
    pub async fn maintain(&self) {
        let Ok(u) = self.unsealed() else { return };
        match self.barrier.maintain(&u).await {
            Ok(Some(term)) => tracing::info!(term, "barrier key auto-rotated (usage bound)"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "barrier maintenance failed"),
        }
        // One server per minute tidies (the lease outlives the interval a little less).
        let mine = match lease::try_claim(&self.barrier, &u, "token-tidy", 55).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "could not take the token tidy lease");
                false
            }
        };
        if mine && let Ok(active) = self.active() {
            match active.tokens.tidy(&self.barrier, &u, now_unix()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revoked = n, "expired tokens tidied"),
                Err(e) => tracing::warn!(error = %e, "token tidy failed"),
            }
            match self.revoke_orphaned_mounts(&u).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revoked = n, "tokens of disabled auth methods revoked"),
                Err(e) => tracing::warn!(error = %e, "revoking tokens of disabled auth methods failed"),
            }
        }
    }

    fn arc(&self) -> Option<Arc<Core>> {
        self.me.upgrade()
    }
}

/// Follow changes made by other servers (PostgreSQL only) until the core is dropped.
async fn follow_changes(core: Weak<Core>, mut changes: tokio::sync::broadcast::Receiver<Change>) {
    loop {
        let change = match changes.recv().await {
            Ok(c) => c,
            // We fell behind: treat as a full resync.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Change::Resync,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(core) = core.upgrade() else { return };
        if let Err(e) = core.on_change(&change).await {
            tracing::warn!(error = %e, "could not apply a change made by another server");
        }
    }
}

/// Standard base64 (Vault's `keys_base64`).
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A path as logs may show it while the mounts are unknown (sealed): one
/// shaped like transit's `…/subjects/{name}/{subject}` loses its subject.
fn withhold_subject_shaped(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.iter().position(|s| *s == "subjects") {
        Some(i) if segments.len() > i + 2 => format!("{}/{{subject}}", segments[..i + 2].join("/")),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod loggable_tests {
    #[test]
    fn subject_shaped_paths_lose_their_subject_while_sealed() {
        let w = super::withhold_subject_shaped;
        assert_eq!(w("transit/subjects/pii/alice@example.com"), "transit/subjects/pii/{subject}");
        assert_eq!(w("eu/transit/subjects/pii/a/b"), "eu/transit/subjects/pii/{subject}");
        assert_eq!(w("transit/subjects/pii"), "transit/subjects/pii");
        assert_eq!(w("sys/mounts"), "sys/mounts");
        assert_eq!(w("secret/data/app"), "secret/data/app");
    }
}
