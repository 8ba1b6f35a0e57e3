//! The memory request bodies may hold while they are buffered. Bodies are
//! read before the token is checked, so this is what unauthenticated
//! senders can make the server hold:
//!
//! - the first [`FREE_BYTES`] of every body come from a separate pool for
//!   small bodies (`max_connections` × [`FREE_BYTES`]), so small requests
//!   (logins, unseal, most writes) never wait on big ones (when that pool is
//!   empty, they draw on the main budget like big ones);
//! - beyond that, bytes come from one budget (`max_request_bytes_in_flight`),
//!   taken without waiting (a full budget is a 503 at once);
//! - and one client address (IPv6 by /64) may hold at most an eighth of the
//!   budget (at least one full request), so a few slow senders cannot take
//!   it all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of each body that are not counted.
pub(crate) const FREE_BYTES: usize = 64 * 1024;

/// Bytes held per client address.
type Ledger = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The shared budget.
#[derive(Debug)]
pub(crate) struct Budget {
    /// KiB permits.
    global: Arc<Semaphore>,
    /// KiB permits for the first [`FREE_BYTES`] of each body.
    small: Arc<Semaphore>,
    per_addr: Ledger,
    per_addr_max: usize,
}

/// What one body holds (released on drop).
#[derive(Debug, Default)]
pub(crate) struct Held {
    permit: Option<OwnedSemaphorePermit>,
    kib: usize,
    /// None until the body's first bytes arrive; then whether its free part
    /// came from the small pool (Some(permit)) or must be counted (Some(None)).
    small: Option<Option<OwnedSemaphorePermit>>,
    share: Option<(Ledger, IpAddr, usize)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((map, key, bytes)) = self.share.take() {
            let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = m.get_mut(&key) {
                *v = v.saturating_sub(bytes);
                if *v == 0 {
                    m.remove(&key);
                }
            }
        }
    }
}

impl Budget {
    /// A budget of `bytes` in all; one address at most an eighth of it, and
    /// never less than `max_body`.
    pub(crate) fn new(bytes: usize, max_body: usize, max_connections: usize) -> Self {
        let permits = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        let small = max_connections.saturating_mul(FREE_BYTES / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            global: Arc::new(Semaphore::new(permits)),
            small: Arc::new(Semaphore::new(small)),
            per_addr: Arc::default(),
            per_addr_max: (bytes / 8).max(max_body),
        }
    }

    /// Grow `held` to cover `total` bytes of a body from `peer`; false when
    /// the address's share or the global budget is exhausted (nothing more
    /// is taken then; what `held` has is released when it drops).
    pub(crate) fn cover(&self, held: &mut Held, peer: IpAddr, total: usize) -> bool {
        if held.small.is_none() {
            held.small = Some(self.small.clone().try_acquire_many_owned((FREE_BYTES / 1024) as u32).ok());
        }
        // Without a small-pool share, every byte counts.
        let free = if matches!(held.small, Some(Some(_))) { FREE_BYTES } else { 0 };
        let counted = total.saturating_sub(free);
        let have = held.share.as_ref().map_or(0, |(_, _, b)| *b);
        if counted <= have {
            return true;
        }
        let key = crate::auth::lockout::address_key(peer);
        {
            let mut m = self.per_addr.lock().unwrap_or_else(|p| p.into_inner());
            let used = m.entry(key).or_insert(0);
            if *used + (counted - have) > self.per_addr_max {
                if *used == 0 {
                    m.remove(&key);
                }
                return false;
            }
            *used += counted - have;
        }
        // From here the address's share is recorded in `held` (so a failure
        // below still gives it back on drop).
        held.share = Some((self.per_addr.clone(), key, counted));
        let need = counted.div_ceil(1024);
        if need > held.kib {
            let Ok(more) = u32::try_from(need - held.kib) else { return false };
            let Ok(p) = self.global.clone().try_acquire_many_owned(more) else { return false };
            match held.permit.as_mut() {
                Some(h) => h.merge(p),
                None => held.permit = Some(p),
            }
            held.kib = need;
        }
        true
    }

    /// KiB left in the global budget (tests).
    #[cfg(test)]
    pub(crate) fn available_kib(&self) -> usize {
        self.global.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_are_free_big_ones_share_and_no_address_takes_all() {
        // 1 MiB in all; an address at most 128 KiB (its eighth) but at least max_body (100 KiB).
        let b = Budget::new(1024 * 1024, 100 * 1024, 64);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut small = Held::default();
        assert!(b.cover(&mut small, a, FREE_BYTES));
        assert_eq!(b.available_kib(), 1024, "the first 64 KiB are free");
        let mut big = Held::default();
        assert!(b.cover(&mut big, a, FREE_BYTES + 100 * 1024));
        assert_eq!(b.available_kib(), 1024 - 100);
        let mut more = Held::default();
        assert!(!b.cover(&mut more, a, FREE_BYTES + 64 * 1024), "over the address's share");
        drop(more);
        let mut theirs = Held::default();
        assert!(b.cover(&mut theirs, other, FREE_BYTES + 100 * 1024), "another address is unaffected");
        // IPv6 addresses of one /64 share one share.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let mut x = Held::default();
        assert!(b.cover(&mut x, v6a, FREE_BYTES + 100 * 1024));
        let mut y = Held::default();
        assert!(!b.cover(&mut y, v6b, FREE_BYTES + 100 * 1024));
        drop((y, x, theirs, big, small));
        assert_eq!(b.available_kib(), 1024);
        assert!(b.per_addr.lock().unwrap().is_empty(), "every share is given back");
    }

    #[test]
    fn small_bodies_are_bounded_too() {
        // Room for two small bodies' free parts; a third counts in full.
        let b = Budget::new(1024 * 1024, 100 * 1024, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let (mut x, mut y, mut z) = (Held::default(), Held::default(), Held::default());
        assert!(b.cover(&mut x, a, 1000) && b.cover(&mut y, a, 1000));
        assert_eq!(b.available_kib(), 1024);
        assert!(b.cover(&mut z, a, 1000));
        assert_eq!(b.available_kib(), 1023, "the pool for small bodies was empty");
        drop((x, y, z));
        assert_eq!(b.available_kib(), 1024);
        assert_eq!(b.small.available_permits(), 128);
    }
}
