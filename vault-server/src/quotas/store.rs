//! API quotas in the barrier: one record per quota under
//! `sys/quotas/rate-limit/`, the configuration at `sys/quotas/config`.
//! Stored inside the barrier like every other setting (paths are clear,
//! values encrypted), so they survive restarts and are shared by servers on
//! one PostgreSQL, which reload them when the change feed names a path
//! under [`PREFIX`].

use crate::barrier::{Barrier, BarrierError, Unsealed};

use super::{QuotaConfig, Quotas, RateLimitQuota};

/// Every quota record lives under this prefix.
pub const PREFIX: &str = "sys/quotas/";
/// One record per rate-limit quota, by name.
pub const RATE_LIMIT_PREFIX: &str = "sys/quotas/rate-limit/";
/// The quota configuration.
pub const CONFIG_PATH: &str = "sys/quotas/config";

/// The names of the stored quotas, sorted.
pub async fn list(barrier: &Barrier, u: &Unsealed) -> Result<Vec<String>, BarrierError> {
    let mut names: Vec<String> =
        barrier.list(u, RATE_LIMIT_PREFIX).await?.into_iter().filter(|n| !n.ends_with('/')).collect();
    names.sort();
    Ok(names)
}

/// One stored quota. A record that does not parse is skipped with a
/// warning (it cannot be an attacker's: the barrier authenticated it).
pub async fn get(barrier: &Barrier, u: &Unsealed, name: &str) -> Result<Option<RateLimitQuota>, BarrierError> {
    let path = format!("{RATE_LIMIT_PREFIX}{name}");
    let Some(raw) = barrier.get(u, &path).await? else { return Ok(None) };
    match serde_json::from_slice(&raw) {
        Ok(q) => Ok(Some(q)),
        Err(e) => {
            tracing::warn!(quota = name, error = %e, "stored rate-limit quota is malformed; ignored");
            Ok(None)
        }
    }
}

/// Write a quota.
pub async fn put(barrier: &Barrier, u: &Unsealed, q: &RateLimitQuota) -> Result<(), BarrierError> {
    // Plain strings, numbers and booleans: serializing cannot fail.
    let bytes = serde_json::to_vec(q).unwrap_or_default();
    barrier.put(u, &format!("{RATE_LIMIT_PREFIX}{}", q.name), &bytes).await
}

/// Delete a quota.
pub async fn delete(barrier: &Barrier, name: &str) -> Result<(), BarrierError> {
    barrier.delete(&format!("{RATE_LIMIT_PREFIX}{name}")).await
}

/// The stored configuration, or Vault's defaults.
pub async fn config(barrier: &Barrier, u: &Unsealed) -> Result<QuotaConfig, BarrierError> {
    let Some(raw) = barrier.get(u, CONFIG_PATH).await? else { return Ok(QuotaConfig::default()) };
    Ok(serde_json::from_slice(&raw).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stored quota configuration is malformed; defaults used");
        QuotaConfig::default()
    }))
}

/// Write the configuration.
pub async fn put_config(barrier: &Barrier, u: &Unsealed, c: &QuotaConfig) -> Result<(), BarrierError> {
    let bytes = serde_json::to_vec(c).unwrap_or_default();
    barrier.put(u, CONFIG_PATH, &bytes).await
}

/// Read every quota and the configuration and put them in force.
///
/// Reloads run one at a time, and one runs after every change (a local
/// write, or the change feed naming a path under [`PREFIX`]): whatever a
/// reload that started before a change installed, the reload that change
/// triggers starts after it and installs the newer state last.
pub async fn reload(quotas: &Quotas, barrier: &Barrier, u: &Unsealed) -> Result<(), BarrierError> {
    let _one = quotas.reload_lock.lock().await;
    let mut rules = Vec::new();
    for name in list(barrier, u).await? {
        if let Some(q) = get(barrier, u, &name).await? {
            rules.push(q);
        }
    }
    let config = config(barrier, u).await?;
    quotas.install(rules, config);
    Ok(())
}
