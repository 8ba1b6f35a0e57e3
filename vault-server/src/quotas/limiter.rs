//! A keyed token bucket (governor's GCRA) per client address, with its
//! memory bounded: idle entries are swept every few seconds, and a limiter
//! that still holds more than [`MAX_KEYS`] clients is reset.

use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

/// Clients one limiter tracks at most (about 64 bytes each).
pub const MAX_KEYS: usize = 100_000;

/// How often idle clients are forgotten (and the cap checked).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Checks between two looks at the map's size, whatever the time: a flood
/// of new addresses cannot outgrow the cap by more than this between sweeps.
const SWEEP_CHECKS: u64 = 4096;

type Keyed = governor::RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; what the client has left.
    Allowed(RateInfo),
    /// Refused; when to come back.
    Limited {
        /// Time until one request would be let through.
        retry_after: Duration,
        /// The bucket's size.
        limit: u32,
    },
}

/// The client's bucket after a request was let through (for the
/// `X-Ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// The bucket's size.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// One keyed limiter.
pub struct Limiter {
    quota: governor::Quota,
    inner: RwLock<Keyed>,
    clock: DefaultClock,
    started: Instant,
    /// Milliseconds since `started` of the last sweep.
    swept_at: AtomicU64,
    checks: AtomicU64,
    /// Times the cap forced a reset (logged, and visible in tests).
    resets: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("quota", &self.quota).finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter with no client yet.
    pub fn new(quota: governor::Quota) -> Self {
        let clock = DefaultClock::default();
        Self {
            quota,
            inner: RwLock::new(Self::fresh(quota, &clock)),
            clock,
            started: Instant::now(),
            swept_at: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    fn fresh(quota: governor::Quota, clock: &DefaultClock) -> Keyed {
        governor::RateLimiter::hashmap_with_clock(quota, clock.clone()).with_middleware::<StateInformationMiddleware>()
    }

    /// The quota this limiter enforces.
    pub fn quota(&self) -> governor::Quota {
        self.quota
    }

    /// Count one request of `ip` (IPv6 clients by their /64: one host
    /// holds a whole /64, so per-address buckets would not limit it).
    pub fn check(&self, ip: IpAddr) -> Verdict {
        self.maybe_sweep();
        let key = client_key(ip);
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let limit = self.quota.burst_size().get();
        match inner.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = limit.saturating_sub(remaining);
                let reset = self.quota.replenish_interval().saturating_mul(missing);
                Verdict::Allowed(RateInfo { limit, remaining, reset })
            }
            Err(not_until) => Verdict::Limited { retry_after: not_until.wait_time_from(self.clock.now()), limit },
        }
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Times the cap forced a reset.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// Forget clients whose bucket is full again (they are as if never
    /// seen), every [`SWEEP_EVERY`] or [`SWEEP_CHECKS`] checks; one caller
    /// does it, the others go on.
    fn maybe_sweep(&self) {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.swept_at.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= SWEEP_EVERY.as_millis() as u64 || n % SWEEP_CHECKS == SWEEP_CHECKS - 1;
        if !due || self.swept_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        self.sweep();
    }

    /// Forget idle clients now; reset the limiter if still over the cap.
    pub fn sweep(&self) {
        let over = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            inner.retain_recent();
            inner.shrink_to_fit();
            inner.len() > MAX_KEYS
        };
        if over {
            // More live clients than the cap: start afresh rather than grow
            // without bound (each client gets a full bucket again; the cap is
            // large enough that this takes a flood from many networks).
            *self.inner.write().unwrap_or_else(|p| p.into_inner()) = Self::fresh(self.quota, &self.clock);
            self.resets.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(max_clients = MAX_KEYS, "rate limiter tracked too many clients; it was reset");
        }
    }
}

/// The bucket key of a client: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::num::NonZeroU32;

    use super::*;

    fn per_minute(n: u32) -> governor::Quota {
        governor::Quota::per_minute(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn a_client_gets_its_burst_then_a_retry_after() {
        let l = Limiter::new(per_minute(3));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let remaining: Vec<u32> = (0..3)
            .map(|_| match l.check(a) {
                Verdict::Allowed(i) => i.remaining,
                Verdict::Limited { .. } => panic!("limited too early"),
            })
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        match l.check(a) {
            Verdict::Limited { retry_after, limit } => {
                assert_eq!(limit, 3);
                assert!(retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20));
            }
            v => panic!("{v:?}"),
        }
        // Another client has its own bucket.
        assert!(matches!(l.check(b), Verdict::Allowed(_)));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = Limiter::new(per_minute(1));
        assert!(matches!(l.check("2001:db8::1".parse().unwrap()), Verdict::Allowed(_)));
        assert!(matches!(l.check("2001:db8::ffff:2".parse().unwrap()), Verdict::Limited { .. }));
        assert!(matches!(l.check("2001:db8:0:1::1".parse().unwrap()), Verdict::Allowed(_)));
        // An IPv4-mapped address is its IPv4 client.
        assert!(matches!(l.check("192.0.2.7".parse().unwrap()), Verdict::Allowed(_)));
        assert!(matches!(l.check("::ffff:192.0.2.7".parse().unwrap()), Verdict::Limited { .. }));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        // Buckets that refill in a nanosecond are idle at once: swept.
        let l = Limiter::new(governor::Quota::with_period(Duration::from_nanos(1)).unwrap());
        for i in 0..20_000u32 {
            l.check(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        l.sweep();
        assert!(l.len() < 100, "{}", l.len());
        // Buckets that stay live (one request per hour) hit the cap: reset.
        let l = Limiter::new(governor::Quota::per_hour(NonZeroU32::new(1).unwrap()));
        let n = u32::try_from(MAX_KEYS + 2 * SWEEP_CHECKS as usize).unwrap();
        for i in 0..n {
            l.check(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(l.len() <= MAX_KEYS + SWEEP_CHECKS as usize, "{}", l.len());
        assert!(l.resets() >= 1);
    }
}
