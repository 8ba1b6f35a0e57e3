//! Named leases shared by every server on one storage, so periodic jobs
//! (token tidy) run on one server per period. A lease is a barrier row
//! `core/leases/<name>` taken with a revision-guarded write: of several
//! servers trying at once, one wins. A holder that crashed loses its lease
//! at once if the storage can tell (`Storage::is_connected`), else on expiry.

use serde::{Deserialize, Serialize};

use crate::barrier::{Barrier, BarrierError, Batch, Unsealed, now_unix};
use crate::storage::{Expect, StorageError};

const PREFIX: &str = "core/leases/";

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    until: i64,
}

/// Take the lease `name` for `secs` seconds unless another server holds it.
/// Returns whether this server now holds it.
pub async fn try_claim(barrier: &Barrier, u: &Unsealed, name: &str, secs: i64) -> Result<bool, BarrierError> {
    let path = format!("{PREFIX}{name}");
    let now = now_unix();
    let me = barrier.storage().instance();
    let expect = match barrier.get_with_rev(u, &path).await? {
        Some((raw, rev)) => {
            let held: Option<Lease> = serde_json::from_slice(&raw).ok();
            if let Some(l) = held
                && l.owner != me
                && l.until > now
                && barrier.storage().is_connected(&l.owner).await?
            {
                return Ok(false);
            }
            Expect::Rev(rev)
        }
        None => Expect::Absent,
    };
    let lease = Lease { owner: me.to_string(), until: now.saturating_add(secs) };
    let json = serde_json::to_vec(&lease).unwrap_or_default();
    let mut batch = Batch::new();
    batch.put_expect(u, &path, &json, expect);
    match barrier.write(batch).await {
        Ok(()) => Ok(true),
        Err(BarrierError::Storage(StorageError::Conflict(_))) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::barrier::Keyring;
    use crate::storage::Storage;

    #[tokio::test]
    async fn one_holder_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let barrier = Barrier::new(storage);
        let u = barrier.install(Keyring::generate(0).unwrap());
        assert!(try_claim(&barrier, &u, "job", 60).await.unwrap());
        // The holder may renew its own lease.
        assert!(try_claim(&barrier, &u, "job", 60).await.unwrap());
        // On SQLite (one server per file) another owner is a crashed
        // predecessor: its lease is taken over even before it expires.
        let other = Lease { owner: "crashed-predecessor".into(), until: now_unix() + 60 };
        barrier.put(&u, "core/leases/job", &serde_json::to_vec(&other).unwrap()).await.unwrap();
        assert!(try_claim(&barrier, &u, "job", 60).await.unwrap());
        let expired = Lease { owner: "someone-else".into(), until: now_unix() - 1 };
        barrier.put(&u, "core/leases/job", &serde_json::to_vec(&expired).unwrap()).await.unwrap();
        assert!(try_claim(&barrier, &u, "job", 60).await.unwrap());
    }
}
