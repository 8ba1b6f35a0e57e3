//! Group commit: one database transaction carries every write batch that
//! arrived while the previous transaction was being made durable.
//!
//! Under load this turns N fsyncs into one, which is how durable writes at
//! high concurrency can beat the database's single-row commit rate. Each
//! batch runs in its own savepoint, so a failed expectation (a conflict)
//! rolls back that batch alone and the others still commit.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::cache::Ticket;
use super::{Backend, Entry, Expect, Op, Shared, StorageError, WriteBatch};

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

/// What a committed group left at each path whose outcome it knows: a put
/// with an expectation that held has the revision after it (1 on `Absent`,
/// `r + 1` on `Rev(r)`), a delete leaves the path absent. A put without
/// expectation (its revision is the database's business) or a path of a
/// batch that did not apply is left out: the cache forgets those.
fn outcomes<'a>(batches: &[&'a WriteBatch], results: &[Result<(), StorageError>]) -> HashMap<&'a str, Option<Entry>> {
    let mut known: HashMap<&str, Option<Option<Entry>>> = HashMap::new();
    for (batch, result) in batches.iter().zip(results) {
        if result.is_err() {
            continue;
        }
        for op in batch.ops() {
            match op {
                Op::Put { path, value, expect } => {
                    let rev = match expect {
                        Some(Expect::Absent) => Some(1),
                        Some(Expect::Rev(r)) => r.checked_add(1),
                        None => None,
                    };
                    known.insert(path.as_str(), rev.map(|rev| Some(Entry { value: value.clone(), rev })));
                }
                Op::Delete { path, .. } => {
                    known.insert(path.as_str(), Some(None));
                }
                Op::SetSealConfig(_) => {}
            }
        }
    }
    known.into_iter().filter_map(|(p, s)| s.map(|s| (p, s))).collect()
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
        // Before the transaction: what the cache may learn from it afterwards.
        let tickets: HashMap<&str, Ticket> =
            batches.iter().flat_map(|b| b.paths()).map(|p| (p, shared.cache.ticket(p))).collect();
        let started = std::time::Instant::now();
        let results = match &*backend {
            Backend::Sqlite(b) => b.commit_group(&batches).await,
            Backend::Postgres(b) => b.commit_group(&batches).await,
        };
        shared.stats.commit.observe_duration(started.elapsed());
        shared.stats.group.observe(batches.len() as u64);
        #[cfg(test)]
        shared.pauses.at("commit:before-cache").await;
        // Whatever the outcome (a conflict means a cached copy was stale; a
        // failed transaction may still have committed), update or forget
        // every path and wake its watchers, before anyone hears back.
        let known = match &results {
            Ok(r) if shared.following.load(std::sync::atomic::Ordering::SeqCst) => outcomes(&batches, r),
            _ => HashMap::new(),
        };
        for (path, ticket) in tickets {
            shared.cache.committed(ticket, path, known.get(path).cloned());
            shared.watchers.fire(path);
        }
        match results {
            Ok(results) => {
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                // The transaction failed as a whole: nothing was written.
                shared.stats.commit_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::AeadKey;

    #[test]
    fn outcomes_known_only_from_expectations_and_deletes_of_applied_batches() {
        let ct = |b: &[u8]| AeadKey::new(&[7; 32]).seal(&[1], b"t", b);
        let mut a = WriteBatch::new();
        a.put_expect("new", ct(b"n"), Expect::Absent).put_expect("old", ct(b"o"), Expect::Rev(4)).put("free", ct(b"f"));
        let mut b = WriteBatch::new();
        b.delete("gone").put_expect("lost", ct(b"l"), Expect::Absent);
        let mut c = WriteBatch::new();
        c.put("old", ct(b"o2")); // after a's known revision: unknown again
        let results = vec![Ok(()), Err(StorageError::Conflict("lost".into())), Ok(())];
        let k = outcomes(&[&a, &b, &c], &results);
        assert_eq!(k.get("new").unwrap().as_ref().unwrap().rev, 1);
        assert!(!k.contains_key("old"), "the last write of old has no expectation");
        assert!(!k.contains_key("free"));
        assert!(!k.contains_key("gone") && !k.contains_key("lost"), "b did not apply");
        let k = outcomes(&[&a, &b], &[Ok(()), Ok(())]);
        assert_eq!(k.get("old").unwrap().as_ref().unwrap().rev, 5);
        assert!(k.get("gone").unwrap().is_none(), "deleted: known absent");
    }
}
