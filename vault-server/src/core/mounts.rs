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
use crate::logical::{Backend, LogicalError};
use crate::storage::Expect;

/// Barrier path of the mount table.
pub const MOUNTS_PATH: &str = "core/mounts";
/// Prefixes nobody can mount at or under (Vault's protected paths).
const PROTECTED: &[&str] = &["sys/", "auth/", "audit/", "cubbyhole/", "identity/"];
/// Types that exist once and cannot be mounted.
const SINGLETONS: &[&str] = &["system", "token", "cubbyhole", "identity"];

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Vault's `mountInfo` JSON for `sys/mounts`.
    pub fn to_json(&self) -> Value {
        json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": {
                "default_lease_ttl": self.config.default_lease_ttl,
                "max_lease_ttl": self.config.max_lease_ttl,
                "force_no_cache": self.config.force_no_cache,
            },
            "options": self.options,
            "local": self.local,
            "seal_wrap": self.seal_wrap,
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": format!("v{}+builtin", super::VERSION),
            "running_sha256": "",
        })
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
    /// The engine.
    pub backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mounted({} {})", self.entry.path, self.entry.kind)
    }
}

/// Mounts sorted for longest-prefix matching, plus the table's storage revision.
#[derive(Debug, Default)]
pub struct Router {
    mounts: Vec<Mounted>,
    rev: Option<i64>,
}

impl Router {
    /// All mounts (system first).
    pub fn mounts(&self) -> &[Mounted] {
        &self.mounts
    }

    /// The mount for `path` and the path relative to it.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Mounted, &'p str)> {
        self.mounts.iter().filter_map(|m| {
            let mp = m.entry.path.as_str();
            if let Some(rest) = path.strip_prefix(mp) {
                Some((m, rest))
            } else if path == &mp[..mp.len() - 1] {
                Some((m, ""))
            } else {
                None
            }
        }).max_by_key(|(m, _)| m.entry.path.len())
    }

    /// The mount at exactly `path` (normalized, trailing slash).
    pub fn get(&self, path: &str) -> Option<&Mounted> {
        self.mounts.iter().find(|m| m.entry.path == path)
    }

    fn user_entries(&self) -> Vec<MountEntry> {
        self.mounts.iter().filter(|m| m.entry.kind != "system").map(|m| m.entry.clone()).collect()
    }
}

/// The initial (empty) user mount table, added to the init batch.
pub fn initial_table(u: &Unsealed, batch: &mut Batch) {
    batch.put(u, MOUNTS_PATH, b"[]");
}

/// Build the router from the stored table.
pub async fn load_router(core: &Core, u: &Unsealed) -> Result<Router, CoreError> {
    let (entries, rev) = match core.barrier.get_with_rev(u, MOUNTS_PATH).await? {
        Some((raw, rev)) => {
            let entries: Vec<MountEntry> = serde_json::from_slice(&raw)
                .map_err(|_| CoreError::Internal("mount table malformed".into()))?;
            (entries, Some(rev))
        }
        None => (Vec::new(), None),
    };
    build_router(core, entries, rev)
}

fn build_router(core: &Core, entries: Vec<MountEntry>, rev: Option<i64>) -> Result<Router, CoreError> {
    let me = core.arc().ok_or_else(|| CoreError::Internal("core dropped".into()))?;
    let mut mounts = vec![Mounted {
        entry: MountEntry::system(),
        backend: Arc::new(crate::sys::SystemBackend::new(Arc::downgrade(&me))),
    }];
    for entry in entries {
        let view = View::new(core.barrier.clone(), format!("logical/{}/", entry.uuid));
        let backend = crate::engines::build(&entry, view)?;
        mounts.push(Mounted { entry, backend });
    }
    Ok(Router { mounts, rev })
}

/// Normalize a mount path: no leading slash, one trailing slash, clean segments.
pub fn normalize(path: &str) -> Result<String, LogicalError> {
    let p = path.trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return Err(LogicalError::InvalidRequest("mount path must not be empty".into()));
    }
    if p.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(LogicalError::InvalidRequest(format!(
            "path '{path}' does not match cleaned path"
        )));
    }
    if p.chars().any(|c| c.is_control() || c == '*' || c == '+') {
        return Err(LogicalError::InvalidRequest(format!("invalid mount path '{path}'")));
    }
    Ok(format!("{p}/"))
}

impl Core {
    /// Enable a secrets engine at `entry.path` (already normalized).
    pub async fn mount(&self, u: &Unsealed, mut entry: MountEntry) -> Result<(), CoreError> {
        if PROTECTED.iter().any(|p| entry.path.starts_with(p)) {
            return Err(LogicalError::InvalidRequest(format!("cannot mount \"{}\"", entry.path)).into());
        }
        if SINGLETONS.contains(&entry.kind.as_str()) {
            return Err(LogicalError::InvalidRequest(format!(
                "mount type of \"{}\" is not mountable",
                entry.kind
            ))
            .into());
        }
        entry.uuid = random::uuid();
        entry.accessor = format!("{}_{}", entry.kind, random::hex_id(4));
        // Build once up front so a bad type/options is a 400 before anything is written.
        crate::engines::build(&entry, View::new(self.barrier.clone(), format!("logical/{}/", entry.uuid)))?;
        self.update_table(u, |entries| {
            if let Some(existing) = entries.iter().find(|e| {
                e.path.starts_with(&entry.path) || entry.path.starts_with(&e.path)
            }) {
                return Err(LogicalError::InvalidRequest(format!(
                    "path is already in use at {}",
                    existing.path
                )));
            }
            entries.push(entry.clone());
            Ok(())
        })
        .await?;
        tracing::info!(path = %entry.path, kind = %entry.kind, "secrets engine enabled");
        Ok(())
    }

    /// Disable the mount at `path` and delete its data. Absent: no error.
    pub async fn unmount(&self, u: &Unsealed, path: &str) -> Result<(), CoreError> {
        if PROTECTED.iter().any(|p| path.starts_with(p)) {
            return Err(LogicalError::InvalidRequest(format!("cannot unmount \"{path}\"")).into());
        }
        let mut removed = None;
        self.update_table(u, |entries| {
            if let Some(i) = entries.iter().position(|e| e.path == path) {
                removed = Some(entries.remove(i));
            }
            Ok(())
        })
        .await?;
        if let Some(entry) = removed {
            View::new(self.barrier.clone(), format!("logical/{}/", entry.uuid)).clear(u).await?;
            tracing::info!(path = %entry.path, "secrets engine disabled");
        }
        Ok(())
    }

    /// Change a mount's description, lease settings or options.
    pub async fn tune(
        &self,
        u: &Unsealed,
        path: &str,
        f: impl FnOnce(&mut MountEntry) -> Result<(), LogicalError>,
    ) -> Result<(), CoreError> {
        let mut f = Some(f);
        self.update_table(u, |entries| {
            let e = entries.iter_mut().find(|e| e.path == path).ok_or_else(|| {
                LogicalError::InvalidRequest(format!("cannot fetch sysview for path \"{path}\""))
            })?;
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
        mut change: impl FnMut(&mut Vec<MountEntry>) -> Result<(), LogicalError>,
    ) -> Result<(), CoreError> {
        let active = self.active()?;
        for _ in 0..8 {
            let current = load_router(self, u).await?;
            let mut entries = current.user_entries();
            change(&mut entries)?;
            let json = serde_json::to_vec(&entries).map_err(|e| CoreError::Internal(e.to_string()))?;
            let mut batch = Batch::new();
            let expect = current.rev.map_or(Expect::Absent, Expect::Rev);
            batch.put_expect(u, MOUNTS_PATH, &json, expect);
            match self.barrier.write(batch).await {
                Ok(()) => {
                    let rev = current.rev.map_or(1, |r| r + 1);
                    active.set_router(build_router(self, entries, Some(rev))?);
                    return Ok(());
                }
                Err(crate::barrier::BarrierError::Storage(crate::storage::StorageError::Conflict(_))) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Internal("mount table update kept conflicting".into()))
    }

    /// Reload the router from storage (another server changed the table).
    pub async fn reload_mounts(&self) -> Result<(), CoreError> {
        let active = self.active()?;
        let router = load_router(self, &self.unsealed()?).await?;
        active.set_router(router);
        Ok(())
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
