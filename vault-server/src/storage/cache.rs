//! A read cache of stored entries (ciphertext, as stored, and "absent"), so
//! hot paths such as a KV read do not pay a database round trip per record.
//!
//! It holds exactly what the database holds — sealed values — so it adds no
//! plaintext to memory and stays valid across seal, unseal and key rotation.
//! A write that commits on this server *updates* the entries of the paths it
//! touched ([`ReadCache::committed`]): where the commit knows the outcome (a
//! put with an expectation that held: its value and next revision; a delete:
//! absent) that outcome is cached, every other path is forgotten. A write by
//! another server announced on the PostgreSQL change feed invalidates its
//! path; a lost feed connection clears everything. (A second *process*
//! writing one SQLite file would not be seen: SQLite storage is for a single
//! server.)
//!
//! Races between a reader filling the cache and a commit updating it (or an
//! announcement invalidating it) are settled with generation counters: a
//! reader notes its bucket's generation before going to the database and
//! withdraws its insert if the generation moved meanwhile; a commit notes it
//! before its transaction and, if anything else moved it since, only forgets
//! the path. So a value read before a commit can never stay cached after the
//! commit's update, and a commit's outcome never replaces a newer change.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Entry;

/// Default capacity in bytes (ciphertext + path + bookkeeping).
pub const DEFAULT_BYTES: u64 = 64 * 1024 * 1024;
/// Larger entries are not cached (they would evict many small ones).
const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Generation buckets: a write bumps one bucket, so unrelated readers rarely
/// have to withdraw an insert.
const BUCKETS: usize = 1024;
const OVERHEAD: u64 = 64;

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<String, Option<Entry>> for Weigh {
    fn weight(&self, key: &String, val: &Option<Entry>) -> u64 {
        OVERHEAD + key.len() as u64 + val.as_ref().map_or(0, |e| e.value.as_bytes().len() as u64)
    }
}

/// The cache; `None` capacity disables it.
pub(super) struct ReadCache {
    map: Option<quick_cache::sync::Cache<String, Option<Entry>, Weigh>>,
    gens: Box<[AtomicU64]>,
}

/// Proof of the generation seen before a database read.
pub(super) struct Ticket {
    bucket: usize,
    generation: u64,
}

impl ReadCache {
    /// A cache holding up to `bytes` (0: disabled).
    pub(super) fn new(bytes: u64) -> Self {
        let map = (bytes > 0).then(|| {
            let items = usize::try_from(bytes / 512).unwrap_or(usize::MAX).max(16);
            quick_cache::sync::Cache::with_weighter(items, bytes, Weigh)
        });
        Self { map, gens: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn bucket(path: &str) -> usize {
        // FNV-1a: only spreads paths over buckets, nothing depends on it being strong.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % BUCKETS as u64) as usize
    }

    /// Whether the cache holds anything at all (a capacity above 0).
    pub(super) fn enabled(&self) -> bool {
        self.map.is_some()
    }

    /// A cached lookup: `Some(None)` means "known absent".
    pub(super) fn get(&self, path: &str) -> Option<Option<Entry>> {
        self.map.as_ref()?.get(path)
    }

    /// Note the generation before reading `path` from the database.
    pub(super) fn ticket(&self, path: &str) -> Ticket {
        let bucket = Self::bucket(path);
        Ticket { bucket, generation: self.gens[bucket].load(Ordering::SeqCst) }
    }

    /// Remember what the database returned, unless a write intervened.
    pub(super) fn fill(&self, ticket: Ticket, path: &str, value: &Option<Entry>) {
        let Some(map) = &self.map else { return };
        if value.as_ref().is_some_and(|e| e.value.as_bytes().len() > MAX_ENTRY_BYTES) {
            return;
        }
        if self.gens[ticket.bucket].load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        map.insert(path.to_string(), value.clone());
        // A writer may have bumped the generation between the check and the
        // insert; its removal may then have run before our insert.
        if self.gens[ticket.bucket].load(Ordering::SeqCst) != ticket.generation {
            map.remove(path);
        }
    }

    /// `path` was written or deleted by a local commit, whose outcome for it
    /// is `state` when known (a value with its revision, or absent). Forget
    /// what was cached and remember `state` instead, unless the path's bucket
    /// changed between `ticket` (taken before the transaction began) and now:
    /// then another commit or a change announced by another server may be
    /// newer than this one, and the path is only forgotten.
    pub(super) fn committed(&self, ticket: Ticket, path: &str, state: Option<Option<Entry>>) {
        let before = self.gens[ticket.bucket].fetch_add(1, Ordering::SeqCst);
        let Some(map) = &self.map else { return };
        match state {
            Some(value)
                if before == ticket.generation
                    && value.as_ref().is_none_or(|e| e.value.as_bytes().len() <= MAX_ENTRY_BYTES) =>
            {
                map.insert(path.to_string(), value);
                // Anyone who bumped the bucket after us may have removed the
                // path before our insert: withdraw it, as `fill` does.
                if self.gens[ticket.bucket].load(Ordering::SeqCst) != before + 1 {
                    map.remove(path);
                }
            }
            _ => {
                map.remove(path);
            }
        }
    }

    /// `path` was written or deleted (after the commit).
    pub(super) fn invalidate(&self, path: &str) {
        self.gens[Self::bucket(path)].fetch_add(1, Ordering::SeqCst);
        if let Some(map) = &self.map {
            map.remove(path);
        }
    }

    /// Forget everything (change notifications may have been lost).
    pub(super) fn clear(&self) {
        for g in self.gens.iter() {
            g.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(map) = &self.map {
            map.clear();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::Ciphertext;

    fn entry(rev: i64) -> Option<Entry> {
        Some(Entry { value: Ciphertext::from_storage(vec![rev as u8; 40]), rev })
    }

    #[test]
    fn fill_then_hit_and_invalidate() {
        let c = ReadCache::new(1 << 20);
        assert!(c.get("a").is_none());
        let t = c.ticket("a");
        c.fill(t, "a", &entry(1));
        assert_eq!(c.get("a").unwrap().unwrap().rev, 1);
        c.invalidate("a");
        assert!(c.get("a").is_none());
        let t = c.ticket("b");
        c.fill(t, "b", &None);
        assert!(c.get("b").unwrap().is_none(), "absence is cached");
    }

    #[test]
    fn a_read_overtaken_by_a_write_is_not_cached() {
        let c = ReadCache::new(1 << 20);
        let t = c.ticket("k"); // reader starts, reads the old value...
        c.invalidate("k"); // ...a write commits meanwhile...
        c.fill(t, "k", &entry(1)); // ...the stale value must not stay.
        assert!(c.get("k").is_none());
        let t = c.ticket("k");
        c.clear();
        c.fill(t, "k", &entry(1));
        assert!(c.get("k").is_none());
    }

    #[test]
    fn a_commit_caches_its_outcome_unless_overtaken() {
        let c = ReadCache::new(1 << 20);
        let t = c.ticket("k");
        c.committed(t, "k", Some(entry(3)));
        assert_eq!(c.get("k").unwrap().unwrap().rev, 3);
        // Outcome unknown (a put without expectation): forgotten.
        let t = c.ticket("k");
        c.committed(t, "k", None);
        assert!(c.get("k").is_none());
        // Another change of the bucket since the ticket (another commit, a
        // change announced by another server): forgotten.
        let t = c.ticket("k");
        c.invalidate("k");
        c.committed(t, "k", Some(entry(4)));
        assert!(c.get("k").is_none());
        // A reader that started before the commit cannot put its older value back.
        let r = c.ticket("k");
        let t = c.ticket("k");
        c.committed(t, "k", Some(entry(5)));
        c.fill(r, "k", &entry(4));
        assert_eq!(c.get("k").unwrap().unwrap().rev, 5);
        // A delete: known absent.
        let t = c.ticket("k");
        c.committed(t, "k", Some(None));
        assert!(c.get("k").unwrap().is_none());
    }

    #[test]
    fn disabled_and_bounded() {
        let off = ReadCache::new(0);
        let t = off.ticket("a");
        off.fill(t, "a", &entry(1));
        assert!(off.get("a").is_none());
        let small = ReadCache::new(4096);
        for i in 0..1000 {
            let p = format!("p/{i}");
            let t = small.ticket(&p);
            small.fill(t, &p, &entry(1));
        }
        let held = (0..1000).filter(|i| small.get(&format!("p/{i}")).is_some()).count();
        assert!(held > 0 && held < 100, "held {held}");
    }
}
