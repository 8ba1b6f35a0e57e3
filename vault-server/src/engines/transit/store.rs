//! Named keys in storage and in memory.
//!
//! While unsealed, keys are held decrypted in memory, so an encryption
//! touches no storage. The cache follows the rule of ARCHITECTURE.md
//! ("Caches of security state"): a loader notes the generation before its
//! storage read, every change bumps it after its commit (this server's own
//! writes, and other servers' through the change feed), and a load that
//! raced a change is not kept.
//!
//! Every change is a read-modify-write guarded by the record's revision
//! (`Expect::Rev`), retried on conflict: of two servers rotating the same key
//! at once, one wins and the other sees the result.
//!
//! Encryption counts (`keys::Usage`) live in the in-memory copy. A copy that
//! is replaced (after a change) hands its unflushed counts to the next copy
//! loaded, and [`Keys::flush`] adds them to the stored record from time to
//! time, so counts from every server add up without a write per encryption.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::key::TransitKey;
use crate::barrier::Unsealed;
use crate::barrier::view::View;
use crate::logical::LogicalError;
use crate::storage::{Expect, StorageError};

/// Storage prefix of key records (Vault's name).
pub(super) const POLICY_PREFIX: &str = "policy/";

const RETRIES: usize = 8;

#[derive(Default)]
struct Inner {
    live: HashMap<String, Arc<TransitKey>>,
    /// Replaced copies that still hold unflushed encryption counts.
    retired: HashMap<String, Vec<Arc<TransitKey>>>,
    generation: u64,
}

/// The key cache of one transit mount.
#[derive(Default)]
pub(super) struct Keys {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn path(name: &str) -> String {
    format!("{POLICY_PREFIX}{name}")
}

fn is_conflict(e: &crate::barrier::BarrierError) -> bool {
    matches!(e, crate::barrier::BarrierError::Storage(StorageError::Conflict(_)))
}

fn has_unflushed(k: &TransitKey) -> bool {
    k.ring.versions().any(|(_, v)| v.usage().unflushed() > 0)
}

/// Another row written in the same commit as a key (its subjects).
#[derive(Clone)]
pub(super) enum Extra {
    /// Put this value; `Some` expectation guards it.
    Put(String, Vec<u8>, Option<Expect>),
    Delete(String),
}

fn add(batch: &mut crate::barrier::view::ViewBatch<'_>, u: &Unsealed, extra: Vec<Extra>) {
    for e in extra {
        match e {
            Extra::Put(path, value, Some(expect)) => batch.put_expect(u, &path, &value, expect),
            Extra::Put(path, value, None) => batch.put(u, &path, &value),
            Extra::Delete(path) => batch.delete(&path),
        };
    }
}

/// What a change did to a key.
pub(super) enum Change<T> {
    /// Write this record, answer `T`.
    Write(TransitKey, T),
    /// Write this record and the other rows at once, answer `T`.
    WriteWith(TransitKey, Vec<Extra>, T),
    /// Delete the record and apply the other rows at once, answer `T`.
    DeleteWith(Vec<Extra>, T),
    /// Nothing to write, answer `T`.
    Keep(T),
}

impl Keys {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `name` (from memory, else storage), or `None`.
    pub(super) async fn get(
        &self,
        view: &View,
        u: &Unsealed,
        name: &str,
    ) -> Result<Option<Arc<TransitKey>>, LogicalError> {
        let generation = {
            let inner = self.lock();
            if let Some(k) = inner.live.get(name) {
                return Ok(Some(k.clone()));
            }
            inner.generation
        };
        // Boxed: the storage read is a large future, and inlined it would make
        // every caller's future (copied whole when boxed) large too.
        let Some(raw) = Box::pin(view.get(u, &path(name))).await? else {
            return Ok(None);
        };
        let key = Arc::new(TransitKey::decode(&raw).map_err(LogicalError::internal)?);
        let mut inner = self.lock();
        if inner.generation == generation {
            if let Some(old) = inner.retired.remove(name) {
                for o in &old {
                    key.ring.take_unflushed_from(&o.ring);
                }
            }
            inner.live.insert(name.to_string(), key.clone());
        }
        Ok(Some(key))
    }

    /// `name` changed in storage (after a commit here, or announced by the
    /// change feed): drop the copy in memory, keeping its counts.
    pub(super) fn invalidate(&self, name: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        if let Some(old) = inner.live.remove(name)
            && has_unflushed(&old)
        {
            inner.retired.entry(name.to_string()).or_default().push(old);
        }
    }

    /// Anything may have changed (a lost change feed).
    pub(super) fn invalidate_all(&self) {
        let names: Vec<String> = self.lock().live.keys().cloned().collect();
        for n in names {
            self.invalidate(&n);
        }
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
    }

    /// Forget everything, counts included (seal, unmount): the material is
    /// wiped as the last copy drops.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.live.clear();
        inner.retired.clear();
    }

    /// Read-modify-write of the stored record of `name`, retried when another
    /// writer commits in between. `f` sees the stored key (`None` if absent)
    /// and decides.
    pub(super) async fn change<T>(
        &self,
        view: &View,
        u: &Unsealed,
        name: &str,
        mut f: impl FnMut(Option<TransitKey>) -> Result<Change<T>, LogicalError>,
    ) -> Result<T, LogicalError> {
        let p = path(name);
        for attempt in 0..RETRIES {
            let stored = Box::pin(view.get_with_rev(u, &p)).await?;
            let (current, expect) = match stored {
                Some((raw, rev)) => (Some(TransitKey::decode(&raw).map_err(LogicalError::internal)?), Expect::Rev(rev)),
                None => (None, Expect::Absent),
            };
            let mut batch = view.batch();
            let answer = match f(current)? {
                Change::Keep(t) => return Ok(t),
                Change::Write(key, t) => {
                    batch.put_expect(u, &p, &key.encode(), expect);
                    t
                }
                Change::WriteWith(key, extra, t) => {
                    batch.put_expect(u, &p, &key.encode(), expect);
                    add(&mut batch, u, extra);
                    t
                }
                Change::DeleteWith(extra, t) => {
                    batch.delete_expect(&p, expect);
                    add(&mut batch, u, extra);
                    t
                }
            };
            match Box::pin(batch.commit()).await {
                Ok(()) => {
                    self.invalidate(name);
                    return Ok(answer);
                }
                Err(e) if is_conflict(&e) => {
                    // Back off a little, with jitter, so writers that keep
                    // colliding spread out instead of failing together.
                    let mut r = [0u8; 1];
                    crate::crypto::random::fill(&mut r);
                    let ms = (1u64 << attempt.min(5)) + u64::from(r[0] % 8);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("too many concurrent changes of this key; try again".into()))
    }

    /// Names with encryption counts not yet stored.
    pub(super) fn unflushed(&self) -> Vec<String> {
        let inner = self.lock();
        let mut names: Vec<String> =
            inner.live.iter().filter(|(_, k)| has_unflushed(k)).map(|(n, _)| n.clone()).collect();
        names.extend(inner.retired.keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// Copies of `name` in memory (live and retired).
    pub(super) fn copies(&self, name: &str) -> Vec<Arc<TransitKey>> {
        let inner = self.lock();
        let mut v: Vec<Arc<TransitKey>> = inner.live.get(name).cloned().into_iter().collect();
        if let Some(r) = inner.retired.get(name) {
            v.extend(r.iter().cloned());
        }
        v
    }

    /// Drop every retired copy of `name` (the key no longer exists).
    pub(super) fn discard_retired(&self, name: &str) {
        self.lock().retired.remove(name);
    }

    /// Drop retired copies whose counts are all stored.
    pub(super) fn prune_retired(&self) {
        let mut inner = self.lock();
        for list in inner.retired.values_mut() {
            list.retain(|k| has_unflushed(k));
        }
        inner.retired.retain(|_, l| !l.is_empty());
    }
}
