//! Secrets engines. Each is built by a factory registered in the catalog
//! (`crate::catalog`) from an [`EngineContext`], whose view of the barrier
//! is limited to the mount's own prefix.

pub mod generate;
pub(crate) mod kv;
pub(crate) mod kv2;
pub mod pg_role;
#[doc(hidden)]
pub mod transit;

use std::sync::Arc;
use std::time::Duration;

use crate::logical::kit::EngineContext;
use crate::logical::{Backend, LogicalError};

/// Default of [`RotationSettings::max_failures`].
pub const DEFAULT_MAX_FAILURES: u32 = 10;

/// Scheduling of KV v2 secret rotation (`[rotation]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationSettings {
    /// How often the scheduler looks for due rotations.
    pub interval: Duration,
    /// How long a server's claim on a rotation lasts; the external calls of
    /// one rotation get a third of it each, so a claim outlives its work.
    pub lease: Duration,
    /// Consecutive failures after which a rotation is suspended (no more
    /// automatic attempts). With the backoff (5 s doubling, at most 10 min)
    /// the default gives up after about half an hour.
    pub max_failures: u32,
    /// Where PostgreSQL rotations may connect. Nothing by default.
    pub postgres_allowed_hosts: Arc<pg_role::HostAllowList>,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            max_failures: DEFAULT_MAX_FAILURES,
            postgres_allowed_hosts: Arc::new(pg_role::HostAllowList::default()),
        }
    }
}

/// Vault's mount type aliases: `kv-v1` and `kv-v2` are stored as type `kv`
/// with `options.version` forced to `"1"`/`"2"` (so `sys/mounts` reports
/// `kv`, as Vault does). Other types are returned unchanged.
pub fn resolve_alias(
    kind: String,
    options: Option<serde_json::Map<String, serde_json::Value>>,
) -> (String, Option<serde_json::Map<String, serde_json::Value>>) {
    let version = match kind.as_str() {
        "kv-v1" => "1",
        "kv-v2" => "2",
        _ => return (kind, options),
    };
    let mut options = options.unwrap_or_default();
    options.insert("version".into(), version.into());
    ("kv".into(), Some(options))
}

/// The KV engine (`kv`, `generic`, and the `kv-v1`/`kv-v2` aliases):
/// version 1 or 2 from the mount's `version` option.
pub fn kv_factory(ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
    let version = match ctx.mount.kind.as_str() {
        "kv-v1" => "1",
        "kv-v2" => "2",
        _ => ctx.option("version").unwrap_or("1"),
    };
    match version {
        "1" | "" => Ok(Arc::new(kv::KvV1::new(ctx.view))),
        "2" => Ok(Arc::new(kv2::KvV2::new(ctx.view, ctx.settings.rotation).with_metrics(ctx.settings.metrics))),
        other => Err(LogicalError::InvalidRequest(format!("invalid kv version \"{other}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kv_aliases_become_kv_with_a_version() {
        let opts = |v: serde_json::Value| v.as_object().cloned();
        assert_eq!(resolve_alias("kv-v2".into(), None), ("kv".into(), opts(json!({"version": "2"}))));
        // The alias wins over a version given in the options, as in Vault.
        assert_eq!(
            resolve_alias("kv-v1".into(), opts(json!({"version": "2", "x": "y"}))),
            ("kv".into(), opts(json!({"version": "1", "x": "y"})))
        );
        assert_eq!(resolve_alias("kv".into(), None), ("kv".into(), None));
        assert_eq!(resolve_alias("approle".into(), opts(json!({}))), ("approle".into(), opts(json!({}))));
    }
}
