//! Rate limits: Vault's API quotas (`sys/quotas/rate-limit/{name}`, kept in
//! the barrier) and built-in limits on logins and unseal (from the server
//! config). Every request is counted against them by client address before
//! anything else is done for it: no token is looked up, no body byte read.
//!
//! Knows nothing of HTTP: the HTTP layer asks [`Quotas::check`] and turns a
//! [`Decision`] into a 429 and headers.

mod limiter;
pub mod rule;
pub mod store;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use limiter::{Limiter, MAX_KEYS, RateInfo, Verdict};
pub use rule::{QuotaConfig, RateLimitQuota};

/// Name under which refusals by the built-in login limit are counted.
pub const BUILTIN_LOGIN: &str = "builtin-login";
/// Name under which refusals by the built-in unseal limit are counted.
pub const BUILTIN_UNSEAL: &str = "builtin-unseal";

/// One built-in limit: `rate` requests per second per client, up to
/// `burst` at once. A `rate` of 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuiltinLimit {
    /// Requests per second, sustained.
    pub rate: f64,
    /// Requests at once.
    pub burst: u32,
}

impl BuiltinLimit {
    fn limiter(self) -> Option<Limiter> {
        self.bucket().map(Limiter::new)
    }

    /// Its token bucket; None when off (rate 0) or when its spans are too
    /// long for the limiter ([`rule::MAX_SPAN`]: see [`BuiltinLimit::valid`]).
    fn bucket(self) -> Option<governor::Quota> {
        if self.rate <= 0.0 || !self.rate.is_finite() {
            return None;
        }
        let period = Duration::try_from_secs_f64(1.0 / self.rate).ok()?;
        rule::bucket(period, NonZeroU32::new(self.burst.max(1))?)
    }

    /// Off, or a limit the limiter can hold (a slow rate with a large burst
    /// cannot: the configuration refuses it rather than run without it).
    pub fn valid(self) -> bool {
        self.rate == 0.0 || self.bucket().is_some()
    }
}

/// The built-in limits (`[quotas]` in the server config). They apply
/// whatever the API quotas say, exempt paths included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuiltinLimits {
    /// `auth/{mount}/login...` per client.
    pub login: BuiltinLimit,
    /// `sys/unseal` per client.
    pub unseal: BuiltinLimit,
}

impl Default for BuiltinLimits {
    /// Logins: 10 a second, 50 at once (a brute force gets 864k guesses a
    /// day at most from one address, before the per-user lockout; a batch of
    /// services starting behind one NAT is not refused). Unseal: 2 a second,
    /// 30 at once (shares are 256-bit, so this bounds work, not guessing; a
    /// ceremony with a reset and a wrong share fits in the burst).
    fn default() -> Self {
        Self { login: BuiltinLimit { rate: 10.0, burst: 50 }, unseal: BuiltinLimit { rate: 2.0, burst: 30 } }
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Which quota refused it (a built-in one by [`BUILTIN_LOGIN`] / [`BUILTIN_UNSEAL`]).
    pub quota: String,
    /// When one request would be let through again.
    pub retry_after: Duration,
    /// Headers to send with the refusal, if they are enabled.
    pub info: Option<RateInfo>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on; `Some` when `X-Ratelimit-*` headers are to be sent.
    Allowed(Option<RateInfo>),
    /// Answer 429.
    Limited(Limited),
}

/// The API quotas in force, most specific first for matching.
#[derive(Debug, Default)]
struct Installed {
    rules: Vec<(RateLimitQuota, Arc<Limiter>)>,
    config: QuotaConfig,
}

/// Every rate limit of one server.
#[derive(Debug)]
pub struct Quotas {
    login: RwLock<Option<Arc<Limiter>>>,
    unseal: RwLock<Option<Arc<Limiter>>>,
    installed: RwLock<Arc<Installed>>,
    /// Refusals by quota name, since start.
    violations: Mutex<BTreeMap<String, u64>>,
    /// Serializes reloads from storage (see [`store::reload`]).
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
}

impl Default for Quotas {
    fn default() -> Self {
        let q = Self {
            login: RwLock::default(),
            unseal: RwLock::default(),
            installed: RwLock::default(),
            violations: Mutex::default(),
            reload_lock: tokio::sync::Mutex::new(()),
        };
        q.configure(BuiltinLimits::default());
        q
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(|p| p.into_inner()) = v;
}

/// Whether `path` is a login: `auth/{mount...}/login` or below it, or a
/// segment starting with `login` (`auth/oidc/login...`).
pub fn is_login(path: &str) -> bool {
    path.strip_prefix("auth/").is_some_and(|rest| rest.split('/').skip(1).any(|s| s.starts_with("login")))
}

impl Quotas {
    /// Set the built-in limits (at start).
    pub fn configure(&self, limits: BuiltinLimits) {
        write(&self.login, limits.login.limiter().map(Arc::new));
        write(&self.unseal, limits.unseal.limiter().map(Arc::new));
    }

    /// Count a request for `path` (as requested, `/v1/` removed) from `ip`.
    pub fn check(&self, path: &str, ip: IpAddr) -> Decision {
        let path = rule::normalize_request_path(path);
        // Compared without a trailing slash: the raw endpoints serve
        // `sys/unseal/` as `sys/unseal`, so the limit must see it as that too.
        let bare = path.trim_end_matches('/');
        let builtin = if is_login(&path) {
            read(&self.login).map(|l| (BUILTIN_LOGIN, l))
        } else if bare == "sys/unseal" {
            read(&self.unseal).map(|l| (BUILTIN_UNSEAL, l))
        } else {
            None
        };
        let installed = read(&self.installed);
        if let Some((name, limiter)) = builtin
            && let Verdict::Limited { retry_after, .. } = limiter.check(ip)
        {
            self.count(name);
            return Decision::Limited(Limited { quota: name.to_string(), retry_after, info: None });
        }
        // `sys/quotas/*` is always exempt: a quota must never lock out its
        // own repair (a tiny global rate would otherwise refuse its deletion).
        if installed.rules.is_empty() || installed.config.exempt(&path) || bare.starts_with("sys/quotas") {
            return Decision::Allowed(None);
        }
        let best = installed
            .rules
            .iter()
            .filter_map(|(q, l)| q.specificity(&path).map(|s| (s, q, l)))
            .max_by_key(|(s, _, _)| *s);
        let Some((_, quota, limiter)) = best else { return Decision::Allowed(None) };
        let headers = installed.config.enable_rate_limit_response_headers;
        match limiter.check(ip) {
            Verdict::Allowed(info) => Decision::Allowed(headers.then_some(info)),
            Verdict::Limited { retry_after, limit } => {
                self.count(&quota.name);
                let info = headers.then_some(RateInfo { limit, remaining: 0, reset: retry_after });
                Decision::Limited(Limited { quota: quota.name.clone(), retry_after, info })
            }
        }
    }

    fn count(&self, name: &str) {
        let mut v = self.violations.lock().unwrap_or_else(|p| p.into_inner());
        match v.get_mut(name) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                // Names come from stored quotas (bounded by what an admin
                // made); a deleted quota's count stays until restart.
                v.insert(name.to_string(), 1);
            }
        }
    }

    /// Requests refused so far, by quota name (for the metrics exporter).
    pub fn violations(&self) -> Vec<(String, u64)> {
        self.violations.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Put `rules` and `config` in force. A quota whose definition did not
    /// change keeps its limiter (its clients' buckets), so a reload after an
    /// unrelated write does not hand every client a fresh burst.
    pub fn install(&self, rules: Vec<RateLimitQuota>, config: QuotaConfig) {
        let old = read(&self.installed);
        let rules = rules
            .into_iter()
            .filter_map(|q| {
                let kept = old.rules.iter().find(|(o, _)| *o == q).map(|(_, l)| l.clone());
                let limiter = match kept {
                    Some(l) => l,
                    None => match q.governor_quota() {
                        Some(g) => Arc::new(Limiter::new(g)),
                        None => {
                            // Stored by a version that took it; a write now refuses it.
                            tracing::warn!(quota = %q.name, "the rate-limit quota gives no usable limit (its period is too long): not enforced; write it again or delete it");
                            return None;
                        }
                    },
                };
                Some((q, limiter))
            })
            .collect();
        write(&self.installed, Arc::new(Installed { rules, config }));
    }

    /// The quota configuration in force.
    pub fn config(&self) -> QuotaConfig {
        read(&self.installed).config.clone()
    }

    /// The limiter of the quota `name`, if installed (tests, memory checks).
    pub fn limiter(&self, name: &str) -> Option<Arc<Limiter>> {
        read(&self.installed).rules.iter().find(|(q, _)| q.name == name).map(|(_, l)| l.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn logins_are_recognized() {
        for p in ["auth/userpass/login/alice", "auth/approle/login", "auth/my/jwt/login", "auth/oidc/loginx"] {
            assert!(is_login(p), "{p}");
        }
        for p in ["auth/token/lookup-self", "kv/login", "auth/login", "sys/auth/login"] {
            assert!(!is_login(p), "{p}");
        }
    }

    #[test]
    fn builtin_limits_apply_to_logins_and_unseal_only() {
        let q = Quotas::default();
        q.configure(BuiltinLimits {
            login: BuiltinLimit { rate: 0.001, burst: 2 },
            unseal: BuiltinLimit { rate: 0.001, burst: 1 },
        });
        let a = ip("192.0.2.1");
        assert!(matches!(q.check("auth/userpass/login/x", a), Decision::Allowed(None)));
        assert!(matches!(q.check("auth/userpass//login/y", a), Decision::Allowed(None)));
        let Decision::Limited(l) = q.check("auth/approle/login", a) else { panic!("not limited") };
        assert_eq!(l.quota, BUILTIN_LOGIN);
        assert!(l.retry_after > Duration::from_secs(900));
        assert!(matches!(q.check("sys/unseal", a), Decision::Allowed(_)));
        assert!(matches!(q.check("sys/unseal", a), Decision::Limited(_)));
        // The raw endpoint serves these as sys/unseal: limited alike.
        assert!(matches!(q.check("sys/unseal/", a), Decision::Limited(_)));
        assert!(matches!(q.check("sys/unseal//", a), Decision::Limited(_)));
        assert!(matches!(q.check("kv/data/x", a), Decision::Allowed(None)));
        // 0 turns a limit off.
        q.configure(BuiltinLimits {
            login: BuiltinLimit { rate: 0.0, burst: 1 },
            unseal: BuiltinLimit { rate: 0.0, burst: 1 },
        });
        for _ in 0..100 {
            assert!(matches!(q.check("auth/approle/login", a), Decision::Allowed(None)));
        }
        assert_eq!(q.violations(), vec![(BUILTIN_LOGIN.to_string(), 1), (BUILTIN_UNSEAL.to_string(), 3)]);
    }

    #[test]
    fn the_most_specific_api_quota_decides_and_exempt_paths_pass() {
        let q = Quotas::default();
        let rules = vec![
            RateLimitQuota::new("global", "", 1.0, 3600).unwrap(),
            RateLimitQuota::new("kv", "kv/", 3.0, 3600).unwrap(),
        ];
        let config = QuotaConfig { enable_rate_limit_response_headers: true, ..QuotaConfig::default() };
        q.install(rules.clone(), config.clone());
        let a = ip("192.0.2.1");
        for left in [2, 1, 0] {
            let Decision::Allowed(Some(info)) = q.check("kv/data/x", a) else { panic!() };
            assert_eq!((info.limit, info.remaining), (3, left));
        }
        let Decision::Limited(l) = q.check("kv//data/y", a) else { panic!() };
        assert_eq!(l.quota, "kv");
        assert!(l.info.is_some());
        // The global quota is separate, and sys/health is exempt.
        assert!(matches!(q.check("transit/encrypt/k", a), Decision::Allowed(Some(_))));
        assert!(matches!(q.check("transit/encrypt/k", a), Decision::Limited(_)));
        assert!(matches!(q.check("sys/health", a), Decision::Allowed(None)));
        assert!(matches!(q.check("sys/health/", a), Decision::Allowed(None)));
        // A quota never refuses its own repair.
        assert!(matches!(q.check("sys/quotas/rate-limit/global", a), Decision::Allowed(None)));
        assert!(matches!(q.check("sys/quotas/config", a), Decision::Allowed(None)));
        // Reinstalling the same rules keeps the buckets.
        q.install(rules.clone(), config.clone());
        assert!(matches!(q.check("kv/data/x", a), Decision::Limited(_)));
        assert_eq!(q.violations(), vec![("global".into(), 1), ("kv".into(), 2)]);
        // A stored quota whose period the limiter cannot hold (an earlier
        // version took it) is left out, without a panic: it must not stop
        // an unseal; the others stay in force.
        let century = 100 * 365 * 24 * 3600;
        let bad = RateLimitQuota { name: "bad".into(), path: "transit/".into(), rate: 0.17, interval: century };
        q.install(rules.into_iter().chain([bad]).collect(), config);
        assert!(q.limiter("bad").is_none());
        assert!(matches!(q.check("kv/data/x", a), Decision::Limited(_)));
        assert!(matches!(q.check("transit/encrypt/k", a), Decision::Limited(_)));
    }
}
