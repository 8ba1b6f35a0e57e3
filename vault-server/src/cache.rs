//! In-memory caches of security state (token entries, parsed policies,
//! compiled ACLs), with the one rule every such cache must follow
//! (ARCHITECTURE.md, "Caches of security state"):
//!
//! **A value read from storage is cached only if no invalidation of its key
//! happened since before the read started.** A reader takes a [`Ticket`]
//! (the key's generation) *before* it reads; every invalidation bumps the
//! generation *after* its storage commit; [`Guarded::fill`] compares the two
//! under the same lock the invalidation takes, so a lookup that read a row
//! before a revocation's delete can never put it back after the revocation
//! cleared it. (The race the storage read cache settles the same way, one
//! layer up.)
//!
//! Every invalidation also moves a shared [`Signal`], so requests that hold
//! an authorization for a long time (blocking reads) wake up and re-check it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};

/// Generation buckets: an invalidation bumps one bucket (or all, on clear),
/// so a revocation rarely makes unrelated readers withdraw their fill.
const BUCKETS: usize = 64;

/// Moves on every invalidation of security state (a counter, so two quick
/// changes are never merged into "nothing happened" by a late observer).
pub type Signal = Arc<tokio::sync::watch::Sender<u64>>;

/// A new signal.
pub fn signal() -> Signal {
    Arc::new(tokio::sync::watch::Sender::new(0))
}

fn bump(signal: &Option<Signal>) {
    if let Some(s) = signal {
        s.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct Inner<K, V> {
    /// Values with their weight (about the bytes they hold).
    map: HashMap<K, (V, usize)>,
    gens: [u64; BUCKETS],
    bytes: usize,
}

/// A map bounded in entries and bytes whose fills are checked against
/// invalidations.
pub struct Guarded<K, V> {
    inner: Mutex<Inner<K, V>>,
    limit: usize,
    max_bytes: usize,
    signal: Option<Signal>,
    /// Lookups that found / did not find a value (read by the metrics scrape).
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// Entries heavier than this share of the byte budget are not cached (one
/// caller-sized value must not evict everything else).
const MAX_ENTRY_SHARE: usize = 16;

impl<K, V> std::fmt::Debug for Guarded<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guarded(..)")
    }
}

/// The generation of a key's bucket, noted before a storage read.
/// Deliberately neither `Clone` nor `Copy`: one ticket, one fill.
#[derive(Debug)]
pub struct Ticket {
    bucket: usize,
    generation: u64,
}

impl<K: Hash + Eq, V: Clone> Guarded<K, V> {
    /// A cache of at most `limit` entries and `max_bytes` of weight;
    /// invalidations move `signal`.
    pub fn new(limit: usize, max_bytes: usize, signal: Option<Signal>) -> Self {
        Self {
            inner: Mutex::new(Inner { map: HashMap::new(), gens: [0; BUCKETS], bytes: 0 }),
            limit,
            max_bytes,
            signal,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bucket<Q: Hash + ?Sized>(inner: &Inner<K, V>, key: &Q) -> usize {
        (inner.map.hasher().hash_one(key) % BUCKETS as u64) as usize
    }

    /// The cached value of `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.lock().map.get(key).map(|(v, _)| v.clone());
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// (hits, misses) of [`get`](Self::get) so far.
    pub fn hits_misses(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Note `key`'s generation. Take it **before** reading from storage.
    pub fn ticket<Q>(&self, key: &Q) -> Ticket
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.lock();
        let bucket = Self::bucket(&inner, key);
        Ticket { bucket, generation: inner.gens[bucket] }
    }

    /// Cache what storage returned (`weight`: about the bytes it holds),
    /// unless an invalidation of the key's bucket happened since `ticket` was
    /// taken, or it is too heavy. Returns whether it was kept.
    pub fn fill(&self, ticket: Ticket, key: K, value: V, weight: usize) -> bool {
        let mut inner = self.lock();
        if inner.gens[ticket.bucket] != ticket.generation || weight > self.max_bytes / MAX_ENTRY_SHARE {
            return false;
        }
        if inner.map.len() >= self.limit || inner.bytes.saturating_add(weight) > self.max_bytes {
            // Bounded memory; a rare full refill is cheaper than LRU bookkeeping here.
            inner.map.clear();
            inner.bytes = 0;
        }
        if let Some((_, old)) = inner.map.insert(key, (value, weight)) {
            inner.bytes -= old;
        }
        inner.bytes += weight;
        true
    }

    /// `key` changed in storage (call after the commit).
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        {
            let mut inner = self.lock();
            let b = Self::bucket(&inner, key);
            inner.gens[b] = inner.gens[b].wrapping_add(1);
            if let Some((_, w)) = inner.map.remove(key) {
                inner.bytes -= w;
            }
        }
        bump(&self.signal);
    }

    /// Anything may have changed (a lost change notification, a policy edit
    /// that affects every compiled ACL).
    pub fn clear(&self) {
        {
            let mut inner = self.lock();
            for g in inner.gens.iter_mut() {
                *g = g.wrapping_add(1);
            }
            inner.map.clear();
            inner.bytes = 0;
        }
        bump(&self.signal);
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c: Guarded<String, u32> = Guarded::new(100, 1 << 20, None);
        let t = c.ticket("k"); // reader: ticket, then the storage read...
        c.invalidate("k"); // ...a revocation commits and invalidates...
        assert!(!c.fill(t, "k".into(), 1, 8), "the stale read must be withdrawn");
        assert_eq!(c.get("k"), None);
        // A read that starts after the invalidation is cached.
        let t = c.ticket("k");
        assert!(c.fill(t, "k".into(), 2, 8));
        assert_eq!(c.get("k"), Some(2));
    }

    #[test]
    fn clear_withdraws_every_pending_fill() {
        let c: Guarded<String, u32> = Guarded::new(100, 1 << 20, None);
        let tickets: Vec<_> = (0..200).map(|i| (i, c.ticket(&format!("k{i}")))).collect();
        c.clear();
        for (i, t) in tickets {
            assert!(!c.fill(t, format!("k{i}"), i, 8));
        }
        assert!(c.is_empty());
    }

    #[test]
    fn invalidations_move_the_signal_and_memory_is_bounded() {
        let s = signal();
        let mut rx = s.subscribe();
        let c: Guarded<String, u32> = Guarded::new(4, 1600, Some(s));
        c.invalidate("x");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        c.clear();
        assert!(rx.has_changed().unwrap());
        for i in 0..10 {
            let k = format!("k{i}");
            let t = c.ticket(&k);
            c.fill(t, k, i, 8);
        }
        assert!(c.len() <= 4);
        // Bytes bound the cache too, and one heavy value is never cached.
        let t = c.ticket("heavy");
        assert!(!c.fill(t, "heavy".into(), 0, 101), "over a sixteenth of the budget");
        c.clear();
        for i in 0..4 {
            let k = format!("b{i}");
            let t = c.ticket(&k);
            assert!(c.fill(t, k, i, 100));
        }
        assert_eq!(c.inner.lock().unwrap().bytes, 400);
        c.invalidate("b0");
        assert_eq!(c.inner.lock().unwrap().bytes, 300);
    }
}
