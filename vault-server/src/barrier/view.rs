//! A view of the barrier restricted to one prefix (a chroot): each mount
//! sees only `logical/<mount uuid>/`, so no engine can read another's data.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Barrier, BarrierError, Batch, Unsealed};
use crate::storage::Expect;

/// A prefix-restricted barrier handle.
#[derive(Clone)]
pub struct View {
    barrier: Arc<Barrier>,
    prefix: String,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "View({})", self.prefix)
    }
}

impl View {
    /// A view of `barrier` under `prefix` (which must end in `/`).
    pub fn new(barrier: Arc<Barrier>, prefix: impl Into<String>) -> Self {
        Self { barrier, prefix: prefix.into() }
    }

    /// The prefix, e.g. `logical/<uuid>/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Read a value.
    pub async fn get(&self, u: &Unsealed, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BarrierError> {
        self.barrier.get(u, &self.full(key)).await
    }

    /// Read a value and its revision.
    pub async fn get_with_rev(
        &self,
        u: &Unsealed,
        key: &str,
    ) -> Result<Option<(Zeroizing<Vec<u8>>, i64)>, BarrierError> {
        self.barrier.get_with_rev(u, &self.full(key)).await
    }

    /// Whether the storage read cache knows `key` (present or absent), i.e.
    /// whether a read would be answered without the database.
    pub fn is_cached(&self, key: &str) -> bool {
        self.barrier.is_cached(&self.full(key))
    }

    /// Whether the storage read cache is in use (enabled, and following
    /// other servers' changes): without it nothing is ever cached.
    pub fn is_caching(&self) -> bool {
        self.barrier.is_caching()
    }

    /// Write a value.
    pub async fn put(&self, u: &Unsealed, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        self.barrier.put(u, &self.full(key), value).await
    }

    /// Delete a value.
    pub async fn delete(&self, key: &str) -> Result<(), BarrierError> {
        self.barrier.delete(&self.full(key)).await
    }

    /// Immediate children of `prefix` within the view.
    pub async fn list(&self, u: &Unsealed, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.barrier.list(u, &self.full(prefix)).await
    }

    /// Every key under `prefix` (any depth), relative to the view.
    pub async fn scan(&self, _u: &Unsealed, prefix: &str) -> Result<Vec<String>, BarrierError> {
        let full = self.full(prefix);
        let paths = self.barrier.storage().scan(&full).await?;
        Ok(paths.into_iter().filter_map(|p| p.strip_prefix(&self.prefix).map(str::to_string)).collect())
    }

    /// Wipe what the database files still hold of deleted rows, where the
    /// database allows it ([`crate::storage::Storage::scrub`]).
    pub async fn scrub(&self) -> Result<(), BarrierError> {
        Ok(self.barrier.storage().scrub().await?)
    }

    /// A notifier woken when `key` is written or deleted (here or by another server).
    pub fn watch(&self, key: &str) -> std::sync::Arc<tokio::sync::Notify> {
        self.barrier.storage().watch(&self.full(key))
    }

    /// This server's id on the storage (lease owner).
    pub fn instance(&self) -> &str {
        self.barrier.storage().instance()
    }

    /// Whether the server with this id still runs on the storage.
    pub async fn is_connected(&self, instance: &str) -> Result<bool, BarrierError> {
        Ok(self.barrier.storage().is_connected(instance).await?)
    }

    /// True when the barrier holds no keys.
    pub fn is_sealed(&self) -> bool {
        self.barrier.is_sealed()
    }

    /// Follows seals (the value changes at every seal).
    pub fn seal_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.barrier.seal_signal()
    }

    /// A batch builder bound to this view.
    pub fn batch(&self) -> ViewBatch<'_> {
        ViewBatch { view: self, inner: Batch::new() }
    }

    /// Delete everything under the view (mount removal), in chunks.
    pub async fn clear(&self, u: &Unsealed) -> Result<(), BarrierError> {
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let mut batch = Batch::new();
            for child in self.list(u, &dir).await? {
                let path = format!("{dir}{child}");
                if child.ends_with('/') {
                    stack.push(path);
                } else {
                    batch.delete(&self.full(&path));
                }
            }
            self.barrier.write(batch).await?;
        }
        Ok(())
    }
}

/// An atomic batch of writes within one view.
#[derive(Debug)]
pub struct ViewBatch<'v> {
    view: &'v View,
    inner: Batch,
}

impl ViewBatch<'_> {
    /// Encrypt and put.
    pub fn put(&mut self, u: &Unsealed, key: &str, value: &[u8]) -> &mut Self {
        self.inner.put(u, &self.view.full(key), value);
        self
    }
    /// Encrypt and put with a precondition.
    pub fn put_expect(&mut self, u: &Unsealed, key: &str, value: &[u8], e: Expect) -> &mut Self {
        self.inner.put_expect(u, &self.view.full(key), value, e);
        self
    }
    /// Delete.
    pub fn delete(&mut self, key: &str) -> &mut Self {
        self.inner.delete(&self.view.full(key));
        self
    }
    /// Delete with a precondition.
    pub fn delete_expect(&mut self, key: &str, e: Expect) -> &mut Self {
        self.inner.delete_expect(&self.view.full(key), e);
        self
    }
    /// Apply atomically.
    pub async fn commit(self) -> Result<(), BarrierError> {
        self.view.barrier.write(self.inner).await
    }
}
