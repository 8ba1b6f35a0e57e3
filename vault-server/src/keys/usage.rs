//! Encryption counts per key version, kept across restarts and servers
//! without a storage write per encryption.
//!
//! Each server counts in memory ([`Usage::record`], one relaxed atomic add).
//! From time to time it loads the stored record, adds what it counted since
//! its last flush ([`VersionedKey::absorb_usage`]), writes the record with a
//! revision check, and only then marks those counts flushed
//! ([`VersionedKey::mark_flushed`]). Every server adds only its own deltas to
//! what is stored, so the stored count is the sum over all servers; a failed
//! or conflicting write flushes nothing and is simply tried again.
//!
//! [`VersionedKey::absorb_usage`]: super::VersionedKey::absorb_usage
//! [`VersionedKey::mark_flushed`]: super::VersionedKey::mark_flushed

use std::sync::atomic::{AtomicU64, Ordering};

/// NIST SP 800-38D §8.3: with random 96-bit nonces, one GCM key may be used
/// for at most 2^32 encryptions (the chance of a repeated nonce stays below
/// 2^-32). The same bound is used for the other random-nonce AEADs.
pub(crate) const RANDOM_NONCE_LIMIT: u64 = 1 << 32;

/// Where a key version should be rotated: well short of
/// [`RANDOM_NONCE_LIMIT`], leaving about 1.3 billion encryptions of room for
/// counts other servers have not flushed yet and for the time a rotation takes.
pub(crate) const ROTATE_AT: u64 = 3_000_000_000;
const _: () = assert!(ROTATE_AT < RANDOM_NONCE_LIMIT);

/// The encryption count of one key version.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// The count in the stored record this value was loaded from, plus what
    /// was absorbed into it since.
    persisted: u64,
    /// Encryptions by this process since load. A relaxed `fetch_add`: only
    /// the sum matters, never its order with other memory. (Wrapping needs
    /// 2^64 encryptions, which no process lives to do.)
    local: AtomicU64,
    /// How much of `local` was already added to the stored record.
    flushed: AtomicU64,
}

impl Usage {
    /// A count loaded from storage.
    pub(crate) fn new(persisted: u64) -> Self {
        Self { persisted, local: AtomicU64::new(0), flushed: AtomicU64::new(0) }
    }

    /// Count `n` encryptions; returns the total known here afterwards.
    pub(crate) fn record(&self, n: u64) -> u64 {
        let local = self.local.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        self.persisted.saturating_add(local)
    }

    /// Total encryptions known here: the stored count at load plus this
    /// process's since (other servers' counts arrive with the next load).
    pub(crate) fn total(&self) -> u64 {
        self.persisted.saturating_add(self.local.load(Ordering::Relaxed))
    }

    /// This process's encryptions not yet added to the stored record.
    pub(crate) fn unflushed(&self) -> u64 {
        self.local.load(Ordering::Relaxed).saturating_sub(self.flushed.load(Ordering::Relaxed))
    }

    /// True once the total reached `limit` (e.g. [`ROTATE_AT`]).
    pub(crate) fn needs_rotation(&self, limit: u64) -> bool {
        self.total() >= limit
    }

    /// Add another process's (or an older copy's) unflushed count to the stored count.
    pub(super) fn add_persisted(&mut self, n: u64) {
        self.persisted = self.persisted.saturating_add(n);
    }

    /// `n` of this process's encryptions are now part of the stored record.
    pub(super) fn mark_flushed(&self, n: u64) {
        self.flushed.fetch_add(n, Ordering::Relaxed);
    }

    /// Take over `n` unflushed encryptions counted on an older copy.
    pub(super) fn add_local(&self, n: u64) {
        self.local.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts moved from a live key into a stored record by
/// [`absorb_usage`](super::VersionedKey::absorb_usage): (version, count)
/// pairs, to pass to [`mark_flushed`](super::VersionedKey::mark_flushed) once
/// the record is written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "mark the counts flushed once the record is written, or they are added again"]
pub(crate) struct UsageDelta(pub(super) Vec<(u32, u64)>);

impl UsageDelta {
    /// True when there was nothing to add (no write needed).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The (version, count) pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.0.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_and_saturate() {
        let u = Usage::new(10);
        assert_eq!(u.record(5), 15);
        assert_eq!(u.total(), 15);
        assert_eq!(u.unflushed(), 5);
        u.mark_flushed(3);
        assert_eq!(u.unflushed(), 2);
        assert!(!u.needs_rotation(16));
        assert!(u.needs_rotation(15));
        let huge = Usage::new(u64::MAX - 1);
        assert_eq!(huge.record(10), u64::MAX);
        assert!(huge.needs_rotation(RANDOM_NONCE_LIMIT));
    }
}
