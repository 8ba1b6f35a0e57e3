//! Brute-force protection shared by every login path: failed attempts are
//! counted per (mount, user or role) and per client address; past the
//! threshold the key is locked out for a while and every attempt gets a clear
//! 429 without the credential even being checked.
//!
//! Counters live in memory (per server): a restart or another server starts
//! from zero, which bounds an attacker to `threshold` tries per lockout
//! window per server. Persisting them is a known extension.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::logical::LogicalError;

/// Lockout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutConfig {
    /// Failures allowed before a lockout (per user/role, and per address × 4).
    pub threshold: u32,
    /// How long a lockout lasts.
    pub duration: Duration,
    /// Failures older than this are forgotten.
    pub counter_reset: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        // Vault's user lockout defaults: 5 failures, 15 minutes.
        Self { threshold: 5, duration: Duration::from_secs(15 * 60), counter_reset: Duration::from_secs(15 * 60) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

/// Failure counters. One per server, shared by all auth mounts.
#[derive(Debug, Default)]
pub struct Lockout {
    config: Mutex<LockoutConfig>,
    counters: Mutex<HashMap<String, Counter>>,
}

/// Per-address failures are allowed this many times the per-user threshold
/// (an address may serve many users, e.g. a NAT).
const ADDRESS_FACTOR: u32 = 4;

impl Lockout {
    /// New counters with `config`.
    pub fn new(config: LockoutConfig) -> Self {
        Self { config: Mutex::new(config), counters: Mutex::new(HashMap::new()) }
    }

    /// Change the settings (existing counters stay).
    pub fn configure(&self, config: LockoutConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn keys(mount: &str, subject: &str, addr: Option<IpAddr>) -> [Option<String>; 2] {
        [Some(format!("u|{mount}|{subject}")), addr.map(|a| format!("a|{a}"))]
    }

    /// Refuse (429) if `subject` on `mount` or the address is locked out.
    pub fn check(&self, mount: &str, subject: &str, addr: Option<IpAddr>) -> Result<(), LogicalError> {
        let now = Instant::now();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(mount, subject, addr).into_iter().flatten() {
            if let Some(c) = counters.get(&key)
                && let Some(until) = c.locked_until
                && until > now
            {
                let secs = (until - now).as_secs().max(1);
                return Err(LogicalError::RateLimited(format!(
                    "too many failed login attempts; locked out for another {secs} seconds"
                )));
            }
        }
        Ok(())
    }

    /// Record a failed attempt.
    pub fn failure(&self, mount: &str, subject: &str, addr: Option<IpAddr>) {
        let config = *self.config.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for (i, key) in Self::keys(mount, subject, addr).into_iter().enumerate() {
            let Some(key) = key else { continue };
            let threshold = if i == 0 { config.threshold } else { config.threshold.saturating_mul(ADDRESS_FACTOR) };
            let c = counters.entry(key).or_insert(Counter { failures: 0, first: now, locked_until: None });
            if now.duration_since(c.first) > config.counter_reset || c.locked_until.is_some_and(|u| u <= now) {
                *c = Counter { failures: 0, first: now, locked_until: None };
            }
            c.failures += 1;
            if c.failures >= threshold {
                c.locked_until = Some(now + config.duration);
            }
        }
        // Bound memory: forget stale entries when the map grows.
        if counters.len() > 100_000 {
            counters.retain(|_, c| {
                c.locked_until.is_some_and(|u| u > now) || now.duration_since(c.first) < config.counter_reset
            });
        }
    }

    /// A successful login clears the subject's counter (not the address's).
    pub fn success(&self, mount: &str, subject: &str) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.remove(&format!("u|{mount}|{subject}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_threshold_and_success_resets() {
        let l = Lockout::new(LockoutConfig { threshold: 3, ..Default::default() });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..2 {
            l.failure("userpass/", "bob", Some(ip));
        }
        assert!(l.check("userpass/", "bob", Some(ip)).is_ok());
        l.success("userpass/", "bob");
        for _ in 0..3 {
            l.failure("userpass/", "bob", Some(ip));
        }
        assert!(matches!(l.check("userpass/", "bob", Some(ip)), Err(LogicalError::RateLimited(_))));
        // Another user from another address is unaffected.
        assert!(l.check("userpass/", "alice", Some("10.0.0.1".parse().unwrap())).is_ok());
    }

    #[test]
    fn address_lockout_spans_users() {
        let l = Lockout::new(LockoutConfig { threshold: 2, ..Default::default() });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..8 {
            l.failure("approle/", &format!("role{i}"), Some(ip));
        }
        assert!(l.check("approle/", "fresh-role", Some(ip)).is_err());
    }

    #[test]
    fn lockout_expires() {
        let l = Lockout::new(LockoutConfig {
            threshold: 1,
            duration: Duration::from_millis(20),
            counter_reset: Duration::from_secs(60),
        });
        l.failure("m/", "u", None);
        assert!(l.check("m/", "u", None).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(l.check("m/", "u", None).is_ok());
    }
}
