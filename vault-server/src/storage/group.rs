//! Group commit: one database transaction carries every write batch that
//! arrived while the previous transaction was being made durable.
//!
//! Under load this turns N fsyncs into one, which is how durable writes at
//! high concurrency can beat the database's single-row commit rate. Each
//! batch runs in its own savepoint, so a failed expectation (a conflict)
//! rolls back that batch alone and the others still commit.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Backend, Shared, StorageError, WriteBatch};

/// Most batches folded into one transaction: bounds latency and memory.
const MAX_GROUP: usize = 512;

struct Pending {
    batch: WriteBatch,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

enum Msg {
    Write(Pending),
    Stop,
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Writer {
    pub(super) fn start(backend: Arc<Backend>, shared: Arc<Shared>) -> Self {
        // SQLite has one writer at a time anyway; PostgreSQL benefits from a
        // few transactions in flight while one waits for its WAL flush.
        let workers = match &*backend {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => 4,
        };
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let rx = Arc::new(Mutex::new(rx));
        let tasks = (0..workers).map(|_| tokio::spawn(run(backend.clone(), rx.clone(), shared.clone()))).collect();
        Self { tx, tasks: Arc::new(std::sync::Mutex::new(tasks)) }
    }

    pub(super) async fn submit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Write(Pending { batch, reply })).await.map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    pub(super) async fn close(&self) {
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => return,
        };
        for _ in 0..tasks.len() {
            let _ = self.tx.send(Msg::Stop).await;
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn run(backend: Arc<Backend>, rx: Arc<Mutex<mpsc::Receiver<Msg>>>, shared: Arc<Shared>) {
    loop {
        let mut group = Vec::new();
        let mut stop = false;
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(Msg::Write(p)) => group.push(p),
                Some(Msg::Stop) | None => return,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Msg::Write(p)) => group.push(p),
                    Ok(Msg::Stop) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let batches: Vec<&WriteBatch> = group.iter().map(|p| &p.batch).collect();
        let results = match &*backend {
            Backend::Sqlite(b) => b.commit_group(&batches).await,
            Backend::Postgres(b) => b.commit_group(&batches).await,
        };
        // Whatever the outcome (a conflict means a cached copy was stale; a
        // failed transaction may still have committed), forget every path
        // and wake its watchers, before anyone hears back.
        for p in batches.iter().flat_map(|b| b.paths()) {
            shared.changed(p);
        }
        match results {
            Ok(results) => {
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                // The transaction failed as a whole: nothing was written.
                tracing::error!(error = %e, batches = group.len(), "storage transaction failed");
                let msg = e.to_string();
                for p in group {
                    let _ = p.reply.send(Err(StorageError::Transaction(msg.clone())));
                }
            }
        }
        if stop {
            return;
        }
    }
}
