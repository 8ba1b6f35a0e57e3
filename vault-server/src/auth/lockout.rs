//! Login abuse protection: two mechanisms with different jobs.
//!
//! **User lockout** (userpass and AppRole, as in Vault: a password or a
//! secret ID can be guessed). Failures are counted per (auth mount
//! accessor, alias); `threshold` failures within `counter_reset` lock the
//! alias for `duration`, and every attempt then gets a 429 without the
//! credential being checked. The state is kept in storage, through the
//! barrier (so encrypted), at `sys/lockout/<accessor>/<hmac(alias)>`: every
//! server of a PostgreSQL group sees the same counts and locks. Counting is
//! a revision-guarded read-modify-write; the locked state is read through the
//! storage read cache, which every commit and the change feed invalidate
//! (with its generation check), and nothing here caches it again. Paths hold
//! only a keyed hash of the alias: a "user name" may be a password typed
//! into the wrong field. `sys/locked-users` lists and unlocks (Vault's API).
//!
//! **Per-address limits** (every method, in memory, per server). A token
//! bucket per client address (IPv6 per /64, what one host usually gets)
//! that only bad requests drain; when it is empty, requests from that
//! address get a 429 before any work. One address never drains another's
//! bucket. JWT/OIDC and Kubernetes get no user lockout at all: a signature
//! cannot be guessed, and a lock on a role name would let anyone lock every
//! workload of the role out. Their limit bounds what a bad request costs us
//! and the systems we call (signature checks, JWKS fetches, TokenReview).
//! Memory is enough for per-address state: it protects this server's work,
//! several servers only multiply a budget that either guesses nothing
//! (signatures) or is bounded per alias by the shared lockout (passwords),
//! and writing every bad request to the database would itself be an
//! amplification an attacker could use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::barrier::{Barrier, BarrierError, Batch, Unsealed, now_unix};
use crate::crypto::hmac::HmacKey;
use crate::crypto::random;
use crate::logical::LogicalError;
use crate::storage::{Expect, StorageError};

/// Lockout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutConfig {
    /// Failures allowed before a lockout (per alias; an address of a
    /// password method gets [`ADDRESS_FACTOR`] times as many).
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

/// Which per-address budget a login path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A secret a caller might guess (password, secret ID): a small budget,
    /// derived from the lockout settings.
    Guessable,
    /// A signed token (JWT, service-account token): nothing to guess, so a
    /// larger budget that only bounds the cost of bad requests.
    Signed,
}

/// Per-address failures are allowed this many times the per-alias threshold
/// for password methods (an address may serve many users, e.g. a NAT).
pub const ADDRESS_FACTOR: u32 = 4;
/// Bad signed-token requests an address may make at once...
pub const SIGNED_BURST: u32 = 30;
/// ...and then one more per this interval.
pub const SIGNED_INTERVAL: Duration = Duration::from_secs(1);
/// Addresses tracked per budget; past this the least punished are forgotten
/// (forgetting only ever favours the forgotten address).
const MAX_ADDRESSES: usize = 65_536;
/// Longest interval/duration used in clock arithmetic (configuration
/// values beyond it cannot overflow an `Instant`).
const MAX_SPAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// Storage prefix of the lockout records: `sys/lockout/<accessor>/<mac>`.
const PREFIX: &str = "sys/lockout/";
/// The HMAC key for alias hashes (random, created on first failure).
const KEY_PATH: &str = "sys/lockout-key";
const LABEL_ALIAS: &[u8] = b"lockout/alias";
/// Optimistic-concurrency retries for a counter update.
const MAX_RETRIES: usize = 16;
/// How often (at most) a server tidies expired records.
const TIDY_EVERY: i64 = 600;
/// Longer aliases are not recorded (no real one is: user names have at most
/// 256 bytes, role IDs less than 4096), so a failed login carrying a huge
/// "name" cannot make us store it; its address still pays.
const MAX_ALIAS_BYTES: usize = 4096;

/// A token bucket's parameters: `burst` bad requests, then one per `every`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: u32,
    every: Duration,
}

impl Rate {
    /// How far ahead of now an address's debt may run before it is refused.
    fn tolerance(self) -> Duration {
        self.every.saturating_mul(self.burst.saturating_sub(1))
    }
}

fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(MAX_SPAN)).unwrap_or(t)
}

/// The bucket key: IPv4 (or IPv4-mapped IPv6) exactly, other IPv6 by /64.
pub(crate) fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Per-address budgets as a generic cell rate algorithm: each address keeps
/// the time at which its debt is paid off; a bad request adds `every`; an
/// address is refused while its debt exceeds `burst - 1` intervals.
#[derive(Debug, Default)]
struct AddressLimiter {
    paid_off: Mutex<HashMap<IpAddr, Instant>>,
}

impl AddressLimiter {
    /// `Err(retry_after)` when `addr` is over its budget.
    fn check(&self, addr: IpAddr, rate: Rate, now: Instant) -> Result<(), Duration> {
        let map = self.paid_off.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&address_key(addr)) {
            Some(t) if t.saturating_duration_since(now) > rate.tolerance() => {
                Err(t.saturating_duration_since(now) - rate.tolerance())
            }
            _ => Ok(()),
        }
    }

    /// Charge one bad request to `addr`.
    fn charge(&self, addr: IpAddr, rate: Rate, now: Instant) {
        let key = address_key(addr);
        let mut map = self.paid_off.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key) {
            Self::shrink(&mut map, now);
        }
        let t = map.get(&key).copied().filter(|t| *t > now).unwrap_or(now);
        // Debt never runs further ahead than the tolerance plus one interval:
        // an address that keeps failing while refused is not refused longer.
        let cap = later(later(now, rate.tolerance()), rate.every);
        map.insert(key, later(t, rate.every).min(cap));
    }

    /// Make room for a tenth more: drop paid-off entries, then as many of
    /// the least indebted as needed (so a full map is not swept again on
    /// every new address).
    fn shrink(map: &mut HashMap<IpAddr, Instant>, now: Instant) {
        map.retain(|_, t| *t > now);
        let target = MAX_ADDRESSES - MAX_ADDRESSES / 10;
        if map.len() <= target {
            return;
        }
        let mut by_debt: Vec<(IpAddr, Instant)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        by_debt.sort_by_key(|(_, t)| *t);
        for (k, _) in by_debt.iter().take(map.len() - target) {
            map.remove(k);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.paid_off.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A stored lockout record. The alias is inside the encrypted value only.
#[derive(Serialize, Deserialize)]
struct Record {
    alias: String,
    failures: u32,
    /// Unix seconds of the first counted failure.
    first: i64,
    /// Unix seconds the lockout began (0: not locked).
    #[serde(default)]
    locked_at: i64,
    /// Unix seconds the lockout ends (0: not locked).
    #[serde(default)]
    locked_until: i64,
}

impl Record {
    fn locked(&self, now: i64) -> bool {
        self.locked_until > now
    }

    /// Neither locked nor holding failures that still count: deletable.
    fn stale(&self, now: i64, counter_reset: Duration) -> bool {
        !self.locked(now) && now.saturating_sub(self.first) > secs(counter_reset)
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.min(MAX_SPAN).as_secs()).unwrap_or(i64::MAX)
}

fn is_conflict(e: &BarrierError) -> bool {
    matches!(e, BarrierError::Storage(StorageError::Conflict(_)))
}

fn locked_message(remaining: u64) -> LogicalError {
    LogicalError::RateLimited(format!(
        "too many failed login attempts; locked out for another {} seconds",
        remaining.max(1)
    ))
}

/// Login protection state. One per server, shared by all auth mounts.
#[derive(Debug, Default)]
pub struct Lockout {
    config: Mutex<LockoutConfig>,
    guessable: AddressLimiter,
    signed: AddressLimiter,
    last_tidy: AtomicI64,
    /// Lockouts begun by this server (read by the metrics scrape).
    begun: std::sync::atomic::AtomicU64,
}

impl Lockout {
    /// Lockouts this server began since it started.
    pub fn lockouts_begun(&self) -> u64 {
        self.begun.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// New state with `config`.
    pub fn new(config: LockoutConfig) -> Self {
        Self { config: Mutex::new(config), ..Self::default() }
    }

    /// Change the settings (existing counters stay).
    pub fn configure(&self, config: LockoutConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn config(&self) -> LockoutConfig {
        *self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn budget(&self, kind: Credential) -> (&AddressLimiter, Rate) {
        match kind {
            Credential::Signed => (&self.signed, Rate { burst: SIGNED_BURST, every: SIGNED_INTERVAL }),
            Credential::Guessable => {
                // threshold × 4 failures per lockout duration, on average.
                let c = self.config();
                let burst = c.threshold.max(1).saturating_mul(ADDRESS_FACTOR);
                let every = (c.duration.min(MAX_SPAN) / burst).max(Duration::from_millis(1));
                (&self.guessable, Rate { burst, every })
            }
        }
    }

    // --- per address ---------------------------------------------------------

    /// Refuse (429) a request from an address over its budget. Requests
    /// without a known address (not over TCP) are not limited here.
    pub fn check_address(&self, kind: Credential, addr: Option<IpAddr>) -> Result<(), LogicalError> {
        let Some(addr) = addr else { return Ok(()) };
        let (limiter, rate) = self.budget(kind);
        limiter.check(addr, rate, Instant::now()).map_err(|wait| {
            LogicalError::RateLimited(format!(
                "too many failed login attempts from this address; retry in {} seconds",
                wait.as_secs().max(1)
            ))
        })
    }

    /// Charge a bad request to its address.
    pub fn address_failure(&self, kind: Credential, addr: Option<IpAddr>) {
        if let Some(addr) = addr {
            let (limiter, rate) = self.budget(kind);
            limiter.charge(addr, rate, Instant::now());
        }
    }

    // --- per alias, in storage -----------------------------------------------

    async fn load_key(barrier: &Barrier, u: &Unsealed) -> Result<Option<HmacKey>, LogicalError> {
        let Some(raw) = barrier.get(u, KEY_PATH).await? else { return Ok(None) };
        if raw.len() != 32 {
            return Err(LogicalError::internal("the stored lockout HMAC key is malformed"));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&raw);
        Ok(Some(HmacKey::new(k)))
    }

    /// The key, created on first use; servers racing to create it agree
    /// because the write requires the path absent.
    async fn key(barrier: &Barrier, u: &Unsealed) -> Result<HmacKey, LogicalError> {
        for _ in 0..MAX_RETRIES {
            if let Some(k) = Self::load_key(barrier, u).await? {
                return Ok(k);
            }
            let k = random::key32().map_err(LogicalError::internal)?;
            let mut b = Batch::new();
            b.put_expect(u, KEY_PATH, &k[..], Expect::Absent);
            match barrier.write(b).await {
                Ok(()) => return Ok(HmacKey::new(k)),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::internal("could not create the lockout HMAC key"))
    }

    fn record_path(key: &HmacKey, accessor: &str, alias: &str) -> String {
        let mut data = Vec::with_capacity(accessor.len() + alias.len() + 1);
        data.extend_from_slice(accessor.as_bytes());
        data.push(0);
        data.extend_from_slice(alias.as_bytes());
        format!("{PREFIX}{accessor}/{}", key.mac_hex(LABEL_ALIAS, &data))
    }

    async fn read(barrier: &Barrier, u: &Unsealed, path: &str) -> Result<Option<(Record, i64)>, LogicalError> {
        match barrier.get_with_rev(u, path).await? {
            Some((raw, rev)) => {
                let r = serde_json::from_slice(&raw)
                    .map_err(|e| LogicalError::internal(format!("malformed lockout record: {e}")))?;
                Ok(Some((r, rev)))
            }
            None => Ok(None),
        }
    }

    /// Refuse (429) when `alias` on the mount is locked out. Reads only.
    pub async fn check_user(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        accessor: &str,
        alias: &str,
    ) -> Result<(), LogicalError> {
        let Some(key) = Self::load_key(barrier, u).await? else { return Ok(()) };
        let now = now_unix();
        match Self::read(barrier, u, &Self::record_path(&key, accessor, alias)).await? {
            Some((r, _)) if r.locked(now) => Err(locked_message(u64::try_from(r.locked_until - now).unwrap_or(1))),
            _ => Ok(()),
        }
    }

    /// Count a failed attempt for `alias`. The login is refused whatever
    /// happens here, so a storage error is logged, not returned.
    pub async fn user_failure(&self, barrier: &Barrier, u: &Unsealed, accessor: &str, alias: &str) {
        if alias.len() > MAX_ALIAS_BYTES {
            return;
        }
        if let Err(e) = self.count_failure(barrier, u, accessor, alias).await {
            tracing::warn!(accessor, error = %e, "could not record a failed login");
        }
    }

    async fn count_failure(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        accessor: &str,
        alias: &str,
    ) -> Result<(), LogicalError> {
        let c = self.config();
        let key = Self::key(barrier, u).await?;
        let path = Self::record_path(&key, accessor, alias);
        for _ in 0..MAX_RETRIES {
            let now = now_unix();
            let current = Self::read(barrier, u, &path).await?;
            let rev = current.as_ref().map(|(_, rev)| *rev);
            let mut r = match current {
                // Already locked (a concurrent attempt passed the check): nothing to add.
                Some((r, _)) if r.locked(now) => return Ok(()),
                Some((r, _)) if !r.stale(now, c.counter_reset) && r.locked_until == 0 => r,
                _ => Record { alias: alias.to_string(), failures: 0, first: now, locked_at: 0, locked_until: 0 },
            };
            r.failures = r.failures.saturating_add(1);
            let locks = r.failures >= c.threshold.max(1);
            if locks {
                r.locked_at = now;
                r.locked_until = now.saturating_add(secs(c.duration));
            }
            let json = Zeroizing::new(serde_json::to_vec(&r).map_err(LogicalError::internal)?);
            let mut b = Batch::new();
            b.put_expect(u, &path, &json, rev.map_or(Expect::Absent, Expect::Rev));
            match barrier.write(b).await {
                Ok(()) => {
                    if locks {
                        self.begun.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("the failure counter is being updated concurrently".into()))
    }

    /// A successful login clears the alias's failures (not its address's).
    pub async fn user_success(&self, barrier: &Barrier, u: &Unsealed, accessor: &str, alias: &str) {
        let result = async {
            let Some(key) = Self::load_key(barrier, u).await? else { return Ok(()) };
            let path = Self::record_path(&key, accessor, alias);
            if let Some((_, rev)) = Self::read(barrier, u, &path).await? {
                let mut b = Batch::new();
                b.delete_expect(&path, Expect::Rev(rev));
                match barrier.write(b).await {
                    Ok(()) => {}
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(LogicalError::from(e)),
                }
            }
            Ok::<(), LogicalError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(accessor, error = %e, "could not clear a login failure counter");
        }
    }

    /// `POST sys/locked-users/{accessor}/unlock/{alias}`: forget the alias's
    /// failures and lock. Idempotent, as in Vault.
    pub async fn unlock(barrier: &Barrier, u: &Unsealed, accessor: &str, alias: &str) -> Result<(), LogicalError> {
        if accessor.is_empty() || accessor.contains('/') || alias.is_empty() {
            return Err(LogicalError::InvalidRequest("a mount accessor and an alias are required".into()));
        }
        let Some(key) = Self::load_key(barrier, u).await? else { return Ok(()) };
        barrier.delete(&Self::record_path(&key, accessor, alias)).await?;
        Ok(())
    }

    /// `GET/LIST sys/locked-users`, in Vault's shape: `by_namespace` (the
    /// root namespace only) → `mount_accessors` → `alias_identifiers`, with
    /// counts, largest first, and `total`.
    pub async fn locked_users(
        barrier: &Barrier,
        u: &Unsealed,
        only: Option<&str>,
    ) -> Result<Map<String, Value>, LogicalError> {
        let now = now_unix();
        let accessors: Vec<String> = match only {
            Some(a) if a.is_empty() || a.contains('/') => {
                return Err(LogicalError::InvalidRequest("invalid mount_accessor".into()));
            }
            Some(a) => vec![a.to_string()],
            None => barrier
                .list(u, PREFIX)
                .await?
                .into_iter()
                .filter_map(|d| d.strip_suffix('/').map(str::to_string))
                .collect(),
        };
        let mut by_accessor = Vec::new();
        let mut total = 0usize;
        for acc in accessors {
            let dir = format!("{PREFIX}{acc}/");
            let mut aliases = Vec::new();
            for name in barrier.list(u, &dir).await? {
                if let Some((r, _)) = Self::read(barrier, u, &format!("{dir}{name}")).await?
                    && r.locked(now)
                {
                    aliases.push(r.alias);
                }
            }
            aliases.sort();
            total += aliases.len();
            if !aliases.is_empty() || only.is_some() {
                by_accessor.push((acc, aliases));
            }
        }
        by_accessor.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        let mount_accessors: Vec<Value> = by_accessor
            .into_iter()
            .map(|(acc, aliases)| {
                serde_json::json!({"mount_accessor": acc, "counts": aliases.len(), "alias_identifiers": aliases})
            })
            .collect();
        let by_namespace: Vec<Value> = if mount_accessors.is_empty() && only.is_none() {
            Vec::new()
        } else {
            vec![serde_json::json!({
                "namespace_id": "root", "namespace_path": "", "counts": total, "mount_accessors": mount_accessors,
            })]
        };
        let mut m = Map::new();
        m.insert("by_namespace".into(), Value::Array(by_namespace));
        m.insert("total".into(), total.into());
        Ok(m)
    }

    /// Delete records that neither lock nor count any more (also those of
    /// mounts since disabled). Runs at most every [`TIDY_EVERY`] seconds per
    /// server; each delete is revision-guarded, so servers tidying at once
    /// never remove a record another just updated.
    pub async fn tidy(&self, barrier: &Barrier, u: &Unsealed) {
        let now = now_unix();
        let last = self.last_tidy.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TIDY_EVERY
            || self.last_tidy.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let reset = self.config().counter_reset;
        let result = async {
            let mut removed = 0usize;
            for dir in barrier.list(u, PREFIX).await?.into_iter().filter(|d| d.ends_with('/')) {
                let dir = format!("{PREFIX}{dir}");
                for name in barrier.list(u, &dir).await? {
                    let path = format!("{dir}{name}");
                    if let Some((r, rev)) = Self::read(barrier, u, &path).await?
                        && r.stale(now, reset)
                    {
                        let mut b = Batch::new();
                        b.delete_expect(&path, Expect::Rev(rev));
                        match barrier.write(b).await {
                            Ok(()) => removed += 1,
                            Err(e) if is_conflict(&e) => {}
                            Err(e) => return Err(LogicalError::from(e)),
                        }
                    }
                }
            }
            Ok::<usize, LogicalError>(removed)
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "tidied expired login lockout records"),
            Err(e) => tracing::warn!(error = %e, "tidying login lockout records failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;
    use crate::barrier::{KEYRING_PATH, Keyring};
    use crate::storage::{Storage, WriteBatch};

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn signed_budget_is_per_address_and_refills() {
        let l = Lockout::default();
        let a = ip("192.0.2.1");
        for _ in 0..SIGNED_BURST {
            l.check_address(Credential::Signed, a).unwrap();
            l.address_failure(Credential::Signed, a);
        }
        let e = l.check_address(Credential::Signed, a).unwrap_err();
        assert!(matches!(&e, LogicalError::RateLimited(m) if m.contains("from this address")), "{e:?}");
        // Another address, and the other budget of the same address, are untouched.
        l.check_address(Credential::Signed, ip("192.0.2.2")).unwrap();
        l.check_address(Credential::Guessable, a).unwrap();
        // Unknown addresses are not limited.
        l.check_address(Credential::Signed, None).unwrap();
    }

    #[test]
    fn gcra_refills_one_per_interval_and_caps_debt() {
        let lim = AddressLimiter::default();
        let rate = Rate { burst: 3, every: Duration::from_secs(10) };
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(lim.check(a, rate, t0).is_ok());
            lim.charge(a, rate, t0);
        }
        assert!(lim.check(a, rate, t0).is_err());
        // Hammering while refused does not extend the wait beyond one interval.
        for _ in 0..100 {
            lim.charge(a, rate, t0);
        }
        let wait = lim.check(a, rate, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(10), "{wait:?}");
        assert!(lim.check(a, rate, t0 + Duration::from_secs(10)).is_ok());
        assert!(lim.check(a, rate, t0 + Duration::from_secs(9)).is_err());
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let l = Lockout::default();
        for i in 0..SIGNED_BURST {
            l.address_failure(Credential::Signed, ip(&format!("2001:db8:1:2::{i:x}")));
        }
        assert!(l.check_address(Credential::Signed, ip("2001:db8:1:2:ffff::1")).is_err());
        assert!(l.check_address(Credential::Signed, ip("2001:db8:1:3::1")).is_ok());
        for _ in 0..SIGNED_BURST {
            l.address_failure(Credential::Signed, ip("::ffff:203.0.113.9"));
        }
        assert!(l.check_address(Credential::Signed, ip("203.0.113.9")).is_err());
    }

    #[test]
    fn memory_is_bounded_and_eviction_spares_the_indebted() {
        let lim = AddressLimiter::default();
        let rate = Rate { burst: 2, every: Duration::from_secs(60) };
        let now = Instant::now();
        let worst: IpAddr = "10.255.255.255".parse().unwrap();
        for _ in 0..2 {
            lim.charge(worst, rate, now);
        }
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            lim.charge(IpAddr::V4(std::net::Ipv4Addr::from(i)), rate, now);
        }
        assert!(lim.len() <= MAX_ADDRESSES, "{}", lim.len());
        assert!(lim.check(worst, rate, now).is_err(), "the most indebted address was forgotten");
    }

    #[test]
    fn guessable_budget_follows_the_configuration() {
        let l = Lockout::new(LockoutConfig { threshold: 2, ..Default::default() });
        let a = ip("192.0.2.7");
        for _ in 0..(2 * ADDRESS_FACTOR) {
            l.check_address(Credential::Guessable, a).unwrap();
            l.address_failure(Credential::Guessable, a);
        }
        let e = l.check_address(Credential::Guessable, a).unwrap_err();
        assert!(matches!(&e, LogicalError::RateLimited(m) if m.contains("retry in")), "{e:?}");
    }

    async fn barrier() -> (tempfile::TempDir, Arc<Barrier>, Unsealed) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let barrier = Barrier::new(storage);
        let keyring = Keyring::generate(now_unix()).unwrap();
        let mut b = WriteBatch::new();
        b.put(KEYRING_PATH, Barrier::wrap_keyring(&keyring));
        barrier.storage().write(b).await.unwrap();
        let u = barrier.install(keyring);
        (dir, Arc::new(barrier), u)
    }

    #[tokio::test]
    async fn user_lockout_is_stored_listed_and_unlocked() {
        let (_dir, b, u) = barrier().await;
        let l = Lockout::new(LockoutConfig { threshold: 3, ..Default::default() });
        let acc = "auth_userpass_1234";
        l.check_user(&b, &u, acc, "bob").await.unwrap();
        for _ in 0..2 {
            l.user_failure(&b, &u, acc, "bob").await;
        }
        l.check_user(&b, &u, acc, "bob").await.unwrap();
        // An alias no method can have is never stored.
        let huge = "x".repeat(MAX_ALIAS_BYTES + 1);
        for _ in 0..3 {
            l.user_failure(&b, &u, acc, &huge).await;
        }
        l.check_user(&b, &u, acc, &huge).await.unwrap();
        assert_eq!(b.storage().list(&format!("sys/lockout/{acc}/")).await.unwrap().len(), 1);
        // A success clears the count.
        l.user_success(&b, &u, acc, "bob").await;
        for _ in 0..3 {
            l.user_failure(&b, &u, acc, "bob").await;
        }
        let e = l.check_user(&b, &u, acc, "bob").await.unwrap_err();
        assert!(matches!(&e, LogicalError::RateLimited(m) if m.contains("locked out")), "{e:?}");
        // Another server with its own memory sees the same lock: it is in storage.
        let other = Lockout::new(LockoutConfig { threshold: 3, ..Default::default() });
        assert!(other.check_user(&b, &u, acc, "bob").await.is_err());
        // Other aliases and other mounts are unaffected.
        l.check_user(&b, &u, acc, "alice").await.unwrap();
        l.check_user(&b, &u, "auth_approle_9", "bob").await.unwrap();

        let d = Lockout::locked_users(&b, &u, None).await.unwrap();
        assert_eq!(
            Value::Object(d),
            serde_json::json!({"by_namespace": [{"namespace_id": "root", "namespace_path": "", "counts": 1,
                "mount_accessors": [{"mount_accessor": acc, "counts": 1, "alias_identifiers": ["bob"]}]}], "total": 1})
        );
        let d = Lockout::locked_users(&b, &u, Some("auth_other_1")).await.unwrap();
        assert_eq!(d["total"], 0);
        assert_eq!(d["by_namespace"][0]["mount_accessors"][0]["alias_identifiers"], serde_json::json!([]));

        // Neither the alias nor the key is in the clear in storage.
        let mut raw = Vec::new();
        for dir in ["sys/", "sys/lockout/", &format!("sys/lockout/{acc}/")] {
            for k in b.storage().list(dir).await.unwrap() {
                raw.extend_from_slice(k.as_bytes());
                if let Some(e) = b.storage().get(&format!("{dir}{k}")).await.unwrap() {
                    raw.extend_from_slice(e.value.as_bytes());
                }
            }
        }
        assert!(!raw.windows(3).any(|w| w == b"bob"), "alias in the clear");

        Lockout::unlock(&b, &u, acc, "bob").await.unwrap();
        l.check_user(&b, &u, acc, "bob").await.unwrap();
        Lockout::unlock(&b, &u, acc, "bob").await.unwrap();
        assert!(Lockout::unlock(&b, &u, "a/b", "bob").await.is_err());
        assert_eq!(Lockout::locked_users(&b, &u, None).await.unwrap()["by_namespace"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn lockout_expires_and_tidy_removes_stale_records() {
        let (_dir, b, u) = barrier().await;
        let l = Lockout::new(LockoutConfig {
            threshold: 1,
            duration: Duration::from_secs(1),
            counter_reset: Duration::from_secs(1),
        });
        l.user_failure(&b, &u, "acc", "u").await;
        assert!(l.check_user(&b, &u, "acc", "u").await.is_err());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        l.check_user(&b, &u, "acc", "u").await.unwrap();
        l.tidy(&b, &u).await;
        assert!(b.storage().list("sys/lockout/acc/").await.unwrap().is_empty());
    }
}
