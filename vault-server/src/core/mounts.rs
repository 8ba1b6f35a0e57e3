//! The mount table and the router. The table is stored inside the barrier
//! at `core/mounts`; each mount's data lives under `logical/<uuid>/`.
//! Requests route to the mount with the longest matching prefix.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Core, CoreError};
use crate::barrier::view::View;
use crate::barrier::{Batch, Unsealed};
use crate::crypto::random;
use crate::logical::kit::EngineContext;
use crate::logical::{Backend, LogicalError};
use crate::storage::Expect;

/// Barrier path of the secrets-engine mount table.
pub const MOUNTS_PATH: &str = "core/mounts";
/// Barrier path of the auth-method mount table.
pub const AUTH_PATH: &str = "core/auth";
/// Tries of a mount-table change that keeps losing to concurrent changes.
const MAX_TABLE_ATTEMPTS: u32 = 16;
/// Types that exist once and cannot be mounted.
const SINGLETONS: &[&str] = &["system", "token", "cubbyhole", "identity"];

/// The two mount tables: secrets engines (`sys/mounts`) and auth methods
/// (`sys/auth`, routed under `auth/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Secrets engines.
    Secrets,
    /// Auth methods.
    Auth,
}

impl Table {
    /// Where the table is stored (inside the barrier).
    pub fn storage_path(self) -> &'static str {
        match self {
            Table::Secrets => MOUNTS_PATH,
            Table::Auth => AUTH_PATH,
        }
    }
    /// Prefix of request paths routed to this table's mounts.
    pub fn route_prefix(self) -> &'static str {
        match self {
            Table::Secrets => "",
            Table::Auth => "auth/",
        }
    }
    /// Prefix of the mounts' data in storage.
    pub(crate) fn data_prefix(self) -> &'static str {
        match self {
            Table::Secrets => "logical/",
            Table::Auth => "auth/",
        }
    }
    /// Mount paths nobody can use (Vault's protected paths).
    fn protected(self) -> &'static [&'static str] {
        match self {
            Table::Secrets => &["sys/", "auth/", "audit/", "cubbyhole/", "identity/"],
            Table::Auth => &["token/"],
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Table::Secrets => "secret engine",
            Table::Auth => "auth method",
        }
    }
}

/// Lease settings of a mount (seconds; 0 = system default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountConfig {
    /// Default lease TTL.
    pub default_lease_ttl: u64,
    /// Maximum lease TTL.
    pub max_lease_ttl: u64,
    /// Disable caching.
    pub force_no_cache: bool,
}

/// One row of the mount table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountEntry {
    /// Mount path with trailing slash, e.g. `secret/`.
    pub path: String,
    /// Engine type, e.g. `kv`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: String,
    /// `<type>_<8 hex>`.
    pub accessor: String,
    /// Identifies the data prefix `logical/<uuid>/`.
    pub uuid: String,
    /// Lease settings.
    pub config: MountConfig,
    /// Engine options (e.g. `version`), or null.
    pub options: Option<Map<String, Value>>,
    /// Replication locality (kept for API compatibility).
    pub local: bool,
    /// Seal wrapping (kept for API compatibility).
    pub seal_wrap: bool,
}

impl MountEntry {
    /// Vault's `mountInfo` JSON for `sys/mounts` and `sys/auth` (`table`
    /// says which: auth mounts carry `config.token_type`, which clients
    /// such as vaultrs require).
    pub fn to_json(&self, table: Table) -> Value {
        let builtin = SINGLETONS.contains(&self.kind.as_str());
        let mut v = json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": {
                "default_lease_ttl": self.config.default_lease_ttl,
                "max_lease_ttl": self.config.max_lease_ttl,
                "force_no_cache": self.config.force_no_cache,
            },
            // Vault shows `{}` for a mounted engine or method given no
            // options, null for its built-in `sys/` and `token/`.
            "options": match (&self.options, builtin) {
                (None, false) => Some(Map::new()),
                (o, _) => o.clone(),
            },
            "local": self.local,
            "seal_wrap": self.seal_wrap,
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": format!("v{}+builtin", super::VERSION),
            "running_sha256": "",
        });
        if table == Table::Auth {
            v["config"]["token_type"] = "default-service".into();
        }
        if self.kind == "system" {
            // Vault passes `Accept` through to `sys/` (metrics, pprof formats).
            v["config"]["passthrough_request_headers"] = json!(["Accept"]);
        }
        if !builtin {
            // Built-in plugins (all of ours) are listed with their status.
            v["deprecation_status"] = "supported".into();
        }
        v
    }

    fn token() -> Self {
        Self {
            path: "token/".into(),
            kind: "token".into(),
            description: "token based credentials".into(),
            accessor: "auth_token_00000000".into(),
            uuid: "token".into(),
            config: MountConfig::default(),
            options: None,
            local: false,
            seal_wrap: false,
        }
    }

    fn system() -> Self {
        Self {
            path: "sys/".into(),
            kind: "system".into(),
            description: "system endpoints used for control, policy and debugging".into(),
            accessor: "system_00000000".into(),
            uuid: "system".into(),
            config: MountConfig::default(),
            options: None,
            local: false,
            seal_wrap: false,
        }
    }
}

/// A mount with its live backend.
#[derive(Clone)]
pub struct Mounted {
    /// The table row.
    pub entry: MountEntry,
    /// Which table it belongs to.
    pub table: Table,
    /// Request path prefix: `secret/`, or `auth/approle/`.
    pub route_path: String,
    /// The engine.
    pub backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mounted({} {})", self.route_path, self.entry.kind)
    }
}

/// All mounts of both tables.
#[derive(Debug, Default)]
pub struct Router {
    mounts: Vec<Arc<Mounted>>,
    /// Storage revisions of the (secrets, auth) tables it was built from:
    /// revisions only grow, so they order routers built by racing reloads.
    revs: (Option<i64>, Option<i64>),
}

impl Router {
    /// Built from tables at least as new as `other`'s (both of them).
    pub(super) fn is_at_least(&self, other: &Router) -> bool {
        self.revs.0 >= other.revs.0 && self.revs.1 >= other.revs.1
    }

    /// All mounts (built-ins first).
    pub fn mounts(&self) -> &[Arc<Mounted>] {
        &self.mounts
    }

    /// The mounts of one table.
    pub fn table(&self, t: Table) -> impl Iterator<Item = &Arc<Mounted>> {
        self.mounts.iter().filter(move |m| m.table == t)
    }

    /// The mount for `path` and the path relative to it.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Arc<Mounted>, &'p str)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let mp = m.route_path.as_str();
                if let Some(rest) = path.strip_prefix(mp) {
                    Some((m, rest))
                } else if path == &mp[..mp.len() - 1] {
                    Some((m, ""))
                } else {
                    None
                }
            })
            .max_by_key(|(m, _)| m.route_path.len())
    }

    /// The mount of `table` at exactly `path` (normalized, trailing slash).
    pub fn get(&self, table: Table, path: &str) -> Option<&Arc<Mounted>> {
        self.table(table).find(|m| m.entry.path == path)
    }

    /// The backends of this router that `newer` does not have (their
    /// mounts were removed, or changed and rebuilt).
    pub(super) fn backends_not_in(&self, newer: &Router) -> Vec<Arc<dyn Backend>> {
        self.mounts
            .iter()
            .filter(|m| !newer.mounts.iter().any(|n| Arc::ptr_eq(&n.backend, &m.backend)))
            .map(|m| m.backend.clone())
            .collect()
    }

    /// Tell each backend of a change another server made under its prefix.
    pub(super) fn invalidate(&self, change: &crate::storage::Change) {
        match change {
            crate::storage::Change::Resync => self.mounts.iter().for_each(|m| m.backend.invalidate(None)),
            crate::storage::Change::Path(p) => {
                for m in &self.mounts {
                    let rest = p
                        .strip_prefix(m.table.data_prefix())
                        .and_then(|r| r.strip_prefix(m.entry.uuid.as_str()))
                        .and_then(|r| r.strip_prefix('/'));
                    if let Some(rel) = rest {
                        m.backend.invalidate(Some(rel));
                    }
                }
            }
        }
    }
}

/// The initial (empty) user mount tables, added to the init batch.
pub fn initial_table(u: &Unsealed, batch: &mut Batch) {
    batch.put(u, MOUNTS_PATH, b"[]");
    batch.put(u, AUTH_PATH, b"[]");
}

async fn load_table(core: &Core, u: &Unsealed, t: Table) -> Result<(Vec<MountEntry>, Option<i64>), CoreError> {
    match core.barrier.get_with_rev(u, t.storage_path()).await? {
        Some((raw, rev)) => {
            let entries: Vec<MountEntry> =
                serde_json::from_slice(&raw).map_err(|_| CoreError::Internal("mount table malformed".into()))?;
            Ok((entries, Some(rev)))
        }
        None => Ok((Vec::new(), None)),
    }
}

/// Build the router from the stored tables, keeping the backends of
/// `previous` whose mount rows did not change (their in-memory state, such
/// as caches, survives changes to other mounts).
pub async fn load_router(core: &Core, u: &Unsealed, previous: Option<&Router>) -> Result<Router, CoreError> {
    let secrets = load_table(core, u, Table::Secrets).await?;
    let auth = load_table(core, u, Table::Auth).await?;
    build_router(core, secrets, auth, previous)
}

/// The live mount for a row: the previous backend when the row is the same
/// mount with the same settings (a new description does not matter),
/// otherwise a new one from the catalog.
fn mounted(core: &Core, table: Table, entry: MountEntry, previous: Option<&Router>) -> Result<Arc<Mounted>, CoreError> {
    let route_path = format!("{}{}", table.route_prefix(), entry.path);
    let same = |m: &&Arc<Mounted>| {
        m.table == table
            && m.entry.uuid == entry.uuid
            && m.entry.path == entry.path
            && m.entry.kind == entry.kind
            && m.entry.options == entry.options
            && m.entry.config == entry.config
    };
    if let Some(m) = previous.and_then(|r| r.mounts.iter().find(same)) {
        return Ok(Arc::new(Mounted { route_path, table, entry, backend: m.backend.clone() }));
    }
    let ctx = EngineContext {
        view: View::new(core.barrier.clone(), format!("{}{}/", table.data_prefix(), entry.uuid)),
        mount: entry.clone(),
        settings: core.engine_settings(),
        clock: core.clock().clone(),
        barrier: core.barrier.clone(),
        lockout: core.lockout().clone(),
    };
    let backend = core.catalog().build(table, ctx)?;
    Ok(Arc::new(Mounted { route_path, table, entry, backend }))
}

fn build_router(
    core: &Core,
    (secrets, secrets_rev): (Vec<MountEntry>, Option<i64>),
    (auth, auth_rev): (Vec<MountEntry>, Option<i64>),
    previous: Option<&Router>,
) -> Result<Router, CoreError> {
    let me = core.arc().ok_or_else(|| CoreError::Internal("core dropped".into()))?;
    let mut mounts = vec![
        Arc::new(Mounted {
            entry: MountEntry::system(),
            table: Table::Secrets,
            route_path: "sys/".into(),
            backend: Arc::new(crate::sys::SystemBackend::new(Arc::downgrade(&me))),
        }),
        Arc::new(Mounted {
            entry: MountEntry::token(),
            table: Table::Auth,
            route_path: "auth/token/".into(),
            backend: Arc::new(crate::auth::token_backend::TokenBackend::new(Arc::downgrade(&me))),
        }),
    ];
    for entry in secrets {
        mounts.push(mounted(core, Table::Secrets, entry, previous)?);
    }
    for entry in auth {
        mounts.push(mounted(core, Table::Auth, entry, previous)?);
    }
    Ok(Router { mounts, revs: (secrets_rev, auth_rev) })
}

/// Normalize a mount path: no leading slash, one trailing slash, clean segments.
pub fn normalize(path: &str) -> Result<String, LogicalError> {
    let p = path.trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return Err(LogicalError::InvalidRequest("mount path must not be empty".into()));
    }
    if p.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(LogicalError::InvalidRequest(format!("path '{path}' does not match cleaned path")));
    }
    if p.chars().any(|c| c.is_control() || c == '*' || c == '+') {
        return Err(LogicalError::InvalidRequest(format!("invalid mount path '{path}'")));
    }
    Ok(format!("{p}/"))
}

impl Core {
    /// Enable an engine or auth method at `entry.path` (already normalized).
    pub async fn mount(&self, u: &Unsealed, table: Table, mut entry: MountEntry) -> Result<(), CoreError> {
        if table.protected().iter().any(|p| entry.path.starts_with(p)) {
            return Err(LogicalError::InvalidRequest(format!("cannot mount \"{}\"", entry.path)).into());
        }
        if SINGLETONS.contains(&entry.kind.as_str()) {
            return Err(
                LogicalError::InvalidRequest(format!("mount type of \"{}\" is not mountable", entry.kind)).into()
            );
        }
        entry.uuid = random::uuid();
        entry.accessor = match table {
            Table::Secrets => format!("{}_{}", entry.kind, random::hex_id(4)),
            Table::Auth => format!("auth_{}_{}", entry.kind, random::hex_id(4)),
        };
        // Build once up front so a bad type/options is a 400 before anything is written.
        mounted(self, table, entry.clone(), None)?;
        self.update_table(u, table, |entries| {
            if let Some(existing) =
                entries.iter().find(|e| e.path.starts_with(&entry.path) || entry.path.starts_with(&e.path))
            {
                return Err(LogicalError::InvalidRequest(format!("path is already in use at {}", existing.path)));
            }
            entries.push(entry.clone());
            Ok(())
        })
        .await?;
        tracing::info!(path = %entry.path, kind = %entry.kind, table = table.noun(), "mount enabled");
        Ok(())
    }

    /// Disable the mount at `path` and delete its data. Absent: no error.
    pub async fn unmount(&self, u: &Unsealed, table: Table, path: &str) -> Result<(), CoreError> {
        if table.protected().iter().any(|p| path.starts_with(p)) {
            return Err(LogicalError::InvalidRequest(format!("cannot unmount \"{path}\"")).into());
        }
        let mut removed = None;
        self.update_table(u, table, |entries| {
            if let Some(i) = entries.iter().position(|e| e.path == path) {
                removed = Some(entries.remove(i));
            }
            Ok(())
        })
        .await?;
        let Some(entry) = removed else { return Ok(()) };
        // The table change is committed: the clean-up runs in its own task,
        // so a caller that goes away (a dropped connection cancels this
        // future) cannot stop it half way. Should the server stop first, the
        // tokens are unusable anyway (`token_usable` checks their method)
        // and the token tidy revokes them (`revoke_orphaned_mounts`).
        let me = self.arc().ok_or_else(|| CoreError::Internal("core dropped".into()))?;
        let u = u.clone();
        let cleanup = tokio::spawn(async move {
            #[cfg(test)]
            me.pauses.at("unmount:cleanup").await;
            me.clean_up_mount(&u, table, &entry).await
        });
        cleanup.await.map_err(|e| CoreError::Internal(format!("mount clean-up task failed: {e}")))?
    }

    /// Revoke a removed auth method's tokens and delete a removed mount's data.
    async fn clean_up_mount(&self, u: &Unsealed, table: Table, entry: &MountEntry) -> Result<(), CoreError> {
        if table == Table::Auth {
            // Tokens must not outlive the method that issued them.
            let n = self.active()?.tokens().revoke_mount(&self.barrier, u, &entry.uuid).await?;
            tracing::info!(path = %entry.path, revoked = n, "tokens of the disabled auth method revoked");
        }
        View::new(self.barrier.clone(), format!("{}{}/", table.data_prefix(), entry.uuid)).clear(u).await?;
        tracing::info!(path = %entry.path, table = table.noun(), "mount disabled");
        Ok(())
    }

    /// Revoke the tokens of auth methods no longer in the stored table (a
    /// disable whose clean-up was cut short). Run by the token tidy.
    pub(super) async fn revoke_orphaned_mounts(&self, u: &Unsealed) -> Result<usize, CoreError> {
        let active = self.active()?;
        let mut n = 0;
        for uuid in active.tokens().mounts_with_tokens(&self.barrier, u).await? {
            if !self.auth_mount_exists(u, &uuid).await? {
                n += active.tokens().revoke_mount(&self.barrier, u, &uuid).await?;
            }
        }
        Ok(n)
    }

    /// Change a mount's description, lease settings or options.
    pub async fn tune(
        &self,
        u: &Unsealed,
        table: Table,
        path: &str,
        f: impl FnOnce(&mut MountEntry) -> Result<(), LogicalError>,
    ) -> Result<(), CoreError> {
        let mut f = Some(f);
        self.update_table(u, table, |entries| {
            let e = entries
                .iter_mut()
                .find(|e| e.path == path)
                .ok_or_else(|| LogicalError::InvalidRequest(format!("no {} mounted at \"{path}\"", table.noun())))?;
            if let Some(f) = f.take() {
                f(e)?;
            }
            Ok(())
        })
        .await
    }

    /// Read-modify-write of the mount table with an optimistic revision
    /// check (another server may change it concurrently), then rebuild the router.
    async fn update_table(
        &self,
        u: &Unsealed,
        table: Table,
        mut change: impl FnMut(&mut Vec<MountEntry>) -> Result<(), LogicalError>,
    ) -> Result<(), CoreError> {
        let active = self.active()?;
        for attempt in 0..MAX_TABLE_ATTEMPTS {
            let (mut entries, rev) = load_table(self, u, table).await?;
            change(&mut entries)?;
            let json = serde_json::to_vec(&entries).map_err(|e| CoreError::Internal(e.to_string()))?;
            let mut batch = Batch::new();
            let expect = rev.map_or(Expect::Absent, Expect::Rev);
            batch.put_expect(u, table.storage_path(), &json, expect);
            match self.barrier.write(batch).await {
                Ok(()) => return self.install_router(&active, u).await,
                Err(crate::barrier::BarrierError::Storage(crate::storage::StorageError::Conflict(_))) => {
                    // Another change won: back off a little (with jitter, so
                    // racing writers spread out) and apply ours to the new table.
                    let ms = 1u64 << attempt.min(6);
                    let jitter = rand::random_range(0..=ms);
                    tokio::time::sleep(std::time::Duration::from_millis(ms + jitter)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Not a failure of the server: many changes at once. Safe to retry.
        Err(LogicalError::Busy("the mount table is being changed by other requests; retry".into()).into())
    }

    /// Whether the auth mount `uuid` is in the stored auth table, read from
    /// the database itself (a login re-checks this after minting: a disable
    /// that committed meanwhile may not have seen its token).
    pub(super) async fn auth_mount_exists(&self, u: &Unsealed, uuid: &str) -> Result<bool, CoreError> {
        let Some(raw) = self.barrier.get_fresh(u, AUTH_PATH).await? else { return Ok(false) };
        let entries: Vec<MountEntry> =
            serde_json::from_slice(&raw).map_err(|_| CoreError::Internal("mount table malformed".into()))?;
        Ok(entries.iter().any(|e| e.uuid == uuid))
    }

    /// Reload the router from storage (another server changed the table).
    pub async fn reload_mounts(&self) -> Result<(), CoreError> {
        let active = self.active()?;
        self.install_router(&active, &self.unsealed()?).await
    }

    /// Build the router from the stored tables and install it. A build
    /// that lost the race to a newer one (or read the two tables across a
    /// change: neither newer) reads again: revisions only grow, so a later
    /// read is at least as new as anything installed.
    async fn install_router(&self, active: &super::Active, u: &Unsealed) -> Result<(), CoreError> {
        for _ in 0..8 {
            let router = load_router(self, u, Some(&active.router())).await?;
            #[cfg(test)]
            self.pauses.at("router:before-install").await;
            if let Some(gone) = active.set_router(router) {
                // Mounts that were removed (or rebuilt) stop their work.
                for backend in gone {
                    backend.shutdown();
                }
                return Ok(());
            }
        }
        Err(CoreError::Internal("the mount tables kept changing while they were read".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("foo").unwrap(), "foo/");
        assert_eq!(normalize("/foo/bar/").unwrap(), "foo/bar/");
        assert!(normalize("").is_err());
        assert!(normalize("a//b").is_err());
        assert!(normalize("a/../b").is_err());
    }
}
