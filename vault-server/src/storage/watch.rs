//! Waiting for a path to change, without a thread or a query per waiter.
//!
//! A waiter registers on a path and parks on a [`Notify`]; the storage wakes
//! every waiter of a path when a write of it commits on this server or when
//! the PostgreSQL change feed announces it. Registrations are weak: when the
//! last waiter of a path goes away, its entry is swept on the next wake or
//! when the table has doubled since the last sweep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

#[derive(Default)]
pub(super) struct Watchers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    paths: HashMap<String, Weak<Notify>>,
    sweep_at: usize,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The notifier of `path` (shared by every waiter of that path).
    pub(super) fn watch(&self, path: &str) -> Arc<Notify> {
        let mut g = self.lock();
        if let Some(n) = g.paths.get(path).and_then(Weak::upgrade) {
            return n;
        }
        if g.paths.len() >= g.sweep_at {
            g.paths.retain(|_, w| w.strong_count() > 0);
            g.sweep_at = (g.paths.len() * 2).max(64);
        }
        let n = Arc::new(Notify::new());
        g.paths.insert(path.to_string(), Arc::downgrade(&n));
        n
    }

    /// Wake the waiters of `path`.
    pub(super) fn fire(&self, path: &str) {
        let mut g = self.lock();
        if g.paths.is_empty() {
            return;
        }
        match g.paths.get(path).map(Weak::upgrade) {
            Some(Some(n)) => n.notify_waiters(),
            Some(None) => {
                g.paths.remove(path);
            }
            None => {}
        }
    }

    /// Wake everybody (notifications may have been lost).
    pub(super) fn fire_all(&self) {
        let g = self.lock();
        for n in g.paths.values().filter_map(Weak::upgrade) {
            n.notify_waiters();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().paths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fire_wakes_only_that_path() {
        let w = Watchers::default();
        let a = w.watch("a");
        let b = w.watch("b");
        let wa = a.notified();
        let wb = b.notified();
        tokio::pin!(wa, wb);
        wa.as_mut().enable();
        wb.as_mut().enable();
        w.fire("a");
        assert!(tokio::time::timeout(Duration::from_secs(1), wa).await.is_ok());
        assert!(tokio::time::timeout(Duration::from_millis(50), wb).await.is_err());
        w.fire_all();
    }

    #[tokio::test]
    async fn dead_registrations_are_swept() {
        let w = Watchers::default();
        for i in 0..1000 {
            drop(w.watch(&format!("p{i}")));
        }
        assert!(w.len() < 200, "{}", w.len());
        let keep = w.watch("x");
        assert!(Arc::ptr_eq(&keep, &w.watch("x")));
        drop(keep);
        w.fire("x");
        assert!(w.len() < 200);
    }
}
