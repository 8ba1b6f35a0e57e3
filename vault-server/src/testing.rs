//! Pause points, compiled into test builds only, so a test can force the
//! interleaving of two tasks (a lookup stopped between its storage read and
//! its cache fill while a revocation runs) instead of hoping load finds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct Gate {
    reached: Notify,
    release: Notify,
}

/// Named pause points of one object (a token store, a policy store...).
#[derive(Default)]
pub(crate) struct Pauses {
    gates: Mutex<HashMap<&'static str, Arc<Gate>>>,
}

impl std::fmt::Debug for Pauses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pauses")
    }
}

/// An armed pause point: the next task to reach it waits for [`Armed::release`].
pub(crate) struct Armed {
    gate: Arc<Gate>,
}

impl Armed {
    /// Wait until a task has reached the point (and is parked there).
    pub(crate) async fn reached(&self) {
        self.gate.reached.notified().await;
    }

    /// Let the parked task go on.
    pub(crate) fn release(&self) {
        self.gate.release.notify_one();
    }
}

impl Pauses {
    /// Make the next task that reaches `name` stop there.
    pub(crate) fn arm(&self, name: &'static str) -> Armed {
        let gate = Arc::new(Gate::default());
        self.gates.lock().unwrap().insert(name, gate.clone());
        Armed { gate }
    }

    /// A pause point: returns at once unless armed.
    pub(crate) async fn at(&self, name: &'static str) {
        let gate = self.gates.lock().unwrap().remove(name);
        if let Some(g) = gate {
            g.reached.notify_one();
            g.release.notified().await;
        }
    }
}
