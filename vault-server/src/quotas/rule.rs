//! One rate-limit quota as Vault defines it (`sys/quotas/rate-limit/{name}`)
//! and the quota configuration (`sys/quotas/config`), with the checks a
//! definition must pass and how a request path is matched.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest quota name (it is a storage path segment and a metric label).
const MAX_NAME: usize = 128;

/// Largest `rate` taken: beyond this a limit is no limit (and the
/// replenish period would round to nothing).
pub const MAX_RATE: f64 = 1_000_000_000.0;

/// Longest replenish period, and longest time a full bucket stands for
/// (period × burst): ten years. The limiter counts time in u64 nanoseconds
/// from its start and adds these spans to it: one past ~584 years panics in
/// the limiter crate, and one near it wraps the sum, after which the quota
/// limits nobody. Ten years leaves centuries of uptime before either.
pub const MAX_SPAN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A token bucket of `burst` refilled one every `period`, if the limiter can
/// hold its spans ([`MAX_SPAN`]).
pub fn bucket(period: Duration, burst: NonZeroU32) -> Option<governor::Quota> {
    if period > MAX_SPAN || period.checked_mul(burst.get()).is_none_or(|full| full > MAX_SPAN) {
        return None;
    }
    Some(governor::Quota::with_period(period)?.allow_burst(burst))
}

/// A stored rate-limit quota. Fields as Vault names them; `interval` in
/// whole seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitQuota {
    /// The quota's name.
    pub name: String,
    /// Where it applies: `""` (everything), a mount (`kv/`, `auth/userpass/`),
    /// a path below one (`kv/data/team`), or a prefix ending in `*`.
    pub path: String,
    /// Requests allowed per `interval`.
    pub rate: f64,
    /// Seconds over which `rate` requests are allowed.
    pub interval: u64,
}

/// Why a definition is refused (a 400 naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl RateLimitQuota {
    /// A checked quota: `rate` finite and in (0, [`MAX_RATE`]], `interval`
    /// at least a second, `path` normalized (no leading `/`, no empty or
    /// dot segments, `*` only at its end).
    pub fn new(name: &str, path: &str, rate: f64, interval: u64) -> Result<Self, Invalid> {
        check_name(name)?;
        if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE {
            return Err(Invalid(format!("rate must be a positive number no larger than {MAX_RATE}")));
        }
        if interval == 0 {
            return Err(Invalid("interval must be at least 1s".into()));
        }
        let q = Self { name: name.to_string(), path: normalize_quota_path(path)?, rate, interval };
        // A tiny rate over a long interval gives a period the limiter cannot
        // hold ([`MAX_SPAN`]).
        q.governor_quota().ok_or_else(|| {
            Invalid(format!(
                "rate and interval give no usable limit: interval / rate (the wait for one more request) and that times ceil(rate) (for a full bucket) must each be at most {} days",
                MAX_SPAN.as_secs() / 86_400
            ))
        })?;
        Ok(q)
    }

    /// The token bucket: up to `ceil(rate)` requests at once (Vault's
    /// bucket holds `rate` tokens), one more every `interval / rate`. None
    /// if its spans pass [`MAX_SPAN`] (also for a stored quota that an
    /// earlier version took: it must not stop an unseal).
    pub fn governor_quota(&self) -> Option<governor::Quota> {
        let period = Duration::try_from_secs_f64(self.interval as f64 / self.rate).ok()?;
        let burst = NonZeroU32::new(self.rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)?;
        bucket(period, burst)
    }

    /// How specific the quota is for `path` (normalized request path), if
    /// it applies: the longer the matching prefix, the more specific, so a
    /// path quota beats its mount's, which beats the global one.
    pub fn specificity(&self, path: &str) -> Option<usize> {
        path_specificity(&self.path, path)
    }

    /// The read answer's `data`, Vault's fields.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("path".into(), self.path.clone().into());
        m.insert("type".into(), "rate-limit".into());
        m.insert("rate".into(), self.rate.into());
        m.insert("interval".into(), self.interval.into());
        m.insert("block_interval".into(), 0.into());
        m.insert("role".into(), "".into());
        m.insert("inheritable".into(), false.into());
        m
    }
}

/// `sys/quotas/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaConfig {
    /// Paths no API quota applies to (exact, or a prefix ending in `*`).
    pub rate_limit_exempt_paths: Vec<String>,
    /// Send `X-Ratelimit-*` headers on answers a quota applied to.
    pub enable_rate_limit_response_headers: bool,
    /// Stored for Vault compatibility; the response hooks (audit) always
    /// see a refused request with its 429.
    pub enable_rate_limit_audit_logging: bool,
}

/// Vault's default exempt paths: what an operator needs to see and repair
/// a server that is being flooded.
pub const DEFAULT_EXEMPT: &[&str] = &[
    "sys/generate-recovery-token/attempt",
    "sys/generate-recovery-token/update",
    "sys/generate-root/attempt",
    "sys/generate-root/update",
    "sys/health",
    "sys/seal-status",
    "sys/unseal",
];

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            rate_limit_exempt_paths: DEFAULT_EXEMPT.iter().map(|s| (*s).to_string()).collect(),
            enable_rate_limit_response_headers: false,
            enable_rate_limit_audit_logging: false,
        }
    }
}

impl QuotaConfig {
    /// Whether `path` (normalized) is exempt from API quotas.
    pub fn exempt(&self, path: &str) -> bool {
        self.rate_limit_exempt_paths.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path.trim_end_matches('/') == e.trim_end_matches('/'),
        })
    }

    /// Checked exempt paths (normalized as quota paths).
    pub fn with_exempt(mut self, paths: &[String]) -> Result<Self, Invalid> {
        if paths.len() > 1000 {
            return Err(Invalid("rate_limit_exempt_paths holds at most 1000 paths".into()));
        }
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            let n = normalize_quota_path(p)?;
            if n.is_empty() {
                return Err(Invalid("rate_limit_exempt_paths must not hold an empty path".into()));
            }
            out.push(n);
        }
        self.rate_limit_exempt_paths = out;
        Ok(self)
    }
}

fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!("quota name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'")))
    }
}

/// A quota or exempt path in canonical form: segments joined by one `/`, a
/// trailing `/` kept (a mount), a `*` only as the very last character.
pub fn normalize_quota_path(path: &str) -> Result<String, Invalid> {
    if path.len() > 1024 || path.chars().any(char::is_control) {
        return Err(Invalid("path must be at most 1024 characters without control characters".into()));
    }
    let glob = path.ends_with('*');
    let body = path.strip_suffix('*').unwrap_or(path);
    if body.contains('*') {
        return Err(Invalid("path may hold '*' only at its end".into()));
    }
    let segments: Vec<&str> = body.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(Invalid("path must not contain '.' or '..' segments".into()));
    }
    let mut out = segments.join("/");
    if !out.is_empty() && body.ends_with('/') {
        out.push('/');
    }
    if glob {
        out.push('*');
    }
    Ok(out)
}

/// A request path as quotas see it: empty segments dropped (the core does
/// the same before routing, so `kv//x` cannot slip past a quota on `kv/x`).
pub fn normalize_request_path(path: &str) -> String {
    if !path.contains("//") && !path.starts_with('/') {
        return path.to_string();
    }
    let mut out: String = path.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
    if path.ends_with('/') && !out.is_empty() {
        out.push('/');
    }
    out
}

fn path_specificity(quota: &str, path: &str) -> Option<usize> {
    if quota.is_empty() {
        return Some(0);
    }
    if let Some(prefix) = quota.strip_suffix('*') {
        return path.starts_with(prefix).then_some(quota.len());
    }
    // `kv/` covers the mount; `kv/data/x` covers itself and what is below it.
    let bare = quota.trim_end_matches('/');
    let rest = path.strip_prefix(bare)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(quota.len() + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn definitions_are_checked() {
        assert!(RateLimitQuota::new("q", "", 10.0, 1).is_ok());
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e9] {
            assert!(RateLimitQuota::new("q", "", rate, 1).is_err(), "{rate}");
        }
        assert!(RateLimitQuota::new("q", "", 1.0, 0).is_err());
        // A period too long for a Duration is refused, not a panic.
        assert!(RateLimitQuota::new("q", "", 1e-300, 3_153_600_000).is_err());
        for name in ["", "a/b", "..", "x y", &"n".repeat(129)] {
            assert!(RateLimitQuota::new(name, "", 1.0, 1).is_err(), "{name}");
        }
        for path in ["kv/*/x", "kv/../sys", "a\nb"] {
            assert!(RateLimitQuota::new("q", path, 1.0, 1).is_err(), "{path}");
        }
        assert_eq!(RateLimitQuota::new("q", "/kv//data/", 1.0, 1).unwrap().path, "kv/data/");
    }

    #[test]
    fn the_most_specific_quota_wins() {
        let global = RateLimitQuota::new("g", "", 1.0, 1).unwrap();
        let mount = RateLimitQuota::new("m", "kv/", 1.0, 1).unwrap();
        let path = RateLimitQuota::new("p", "kv/data/team", 1.0, 1).unwrap();
        let glob = RateLimitQuota::new("s", "kv/data/te*", 1.0, 1).unwrap();
        let p = "kv/data/team/x";
        let (g, m, s, pa) = (
            global.specificity(p).unwrap(),
            mount.specificity(p).unwrap(),
            glob.specificity(p).unwrap(),
            path.specificity(p).unwrap(),
        );
        assert!(g < m && m < s && s < pa, "{g} {m} {s} {pa}");
        assert_eq!(mount.specificity("kv"), Some(4));
        assert_eq!(mount.specificity("kvx/data"), None);
        assert_eq!(path.specificity("kv/data/teamx"), None);
        assert_eq!(glob.specificity("kv/data/tex"), Some(11));
    }

    #[test]
    fn request_paths_lose_empty_segments() {
        assert_eq!(normalize_request_path("kv//data///x"), "kv/data/x");
        assert_eq!(normalize_request_path("kv/data/"), "kv/data/");
        assert_eq!(normalize_request_path("kv/data"), "kv/data");
    }

    #[test]
    fn exempt_paths_are_exact_or_globs() {
        let c = QuotaConfig::default();
        assert!(c.exempt("sys/health") && !c.exempt("sys/healthx") && !c.exempt("sys/mounts"));
        let c = c.with_exempt(&["sys/*".into(), "kv/data/a".into()]).unwrap();
        assert!(c.exempt("sys/mounts") && c.exempt("kv/data/a") && !c.exempt("kv/data/ab"));
        assert!(QuotaConfig::default().with_exempt(&[String::new()]).is_err());
    }

    #[test]
    fn quotas_become_token_buckets() {
        let q = RateLimitQuota::new("q", "", 2.5, 10).unwrap().governor_quota().unwrap();
        assert_eq!(q.burst_size().get(), 3);
        assert_eq!(q.replenish_interval(), Duration::from_secs(4));
    }

    /// Spans the limiter cannot hold are refused (a red team's finding: one
    /// past ~584 years panicked in the limiter while the quota was stored,
    /// and again on every unseal; one just under it wrapped and limited
    /// nobody).
    #[test]
    fn periods_the_limiter_cannot_hold_are_refused() {
        let century = 100 * 365 * 24 * 3600;
        for (rate, interval) in [
            (0.17, century),
            (0.170_956_998_585_317_13, century),
            (0.1, century),
            (0.001, 365 * 24 * 3600),
            (1.0, 11 * 365 * 24 * 3600),
            (1.5, 9 * 365 * 24 * 3600),
            (MAX_RATE, u64::MAX),
            (f64::MIN_POSITIVE, 1),
        ] {
            let err = RateLimitQuota::new("q", "", rate, interval).unwrap_err();
            assert!(err.0.contains("no usable limit"), "{rate} {interval}: {err}");
            let stored = RateLimitQuota { name: "q".into(), path: String::new(), rate, interval };
            assert!(stored.governor_quota().is_none(), "{rate} {interval}");
        }
        // The longest taken still works.
        let q = RateLimitQuota::new("q", "", 1.0, 10 * 365 * 24 * 3600).unwrap().governor_quota().unwrap();
        assert_eq!(q.replenish_interval(), MAX_SPAN);
        assert!(RateLimitQuota::new("q", "", 0.5, 5 * 365 * 24 * 3600).is_ok());
    }
}
