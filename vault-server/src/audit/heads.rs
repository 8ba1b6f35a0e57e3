//! The chain heads a server had when it closed its audit chains, kept in
//! the barrier (`core/audit-heads/{device uuid}/{chain node}`): a server
//! restarting on a file that ends with an earlier, validly signed `close`
//! (the file cut back while it was stopped) sees that it closed the chain
//! later, and continues from its own head, so the verifier reports the gap.
//! One record per chain, so several servers on one storage each keep their
//! own; at most [`KEEP`] per device (chains ended by a crash leave theirs).
//! Best effort: a storage error is logged and the writer starts as before.

use serde::{Deserialize, Serialize};

use super::writer::Head;
use crate::barrier::{Barrier, Unsealed};

const PREFIX: &str = "core/audit-heads/";
/// Records kept per device (the newest).
const KEEP: usize = 32;

#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    hash: String,
    /// Unix seconds when the chain was closed (the oldest are dropped).
    time: i64,
    /// The file and the host it was written on: a server whose file is new
    /// or empty at start goes on with its own last chain for that path.
    #[serde(default)]
    file: String,
    #[serde(default)]
    host: String,
}

/// This host's name (several servers on one storage tell their chains apart).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// The closing heads known for a device, and the newest one this host
/// closed for `file`.
pub struct Known {
    pub all: Vec<Head>,
    pub mine: Option<Head>,
}

fn dir(uuid: &str) -> String {
    format!("{PREFIX}{uuid}/")
}

async fn all(barrier: &Barrier, u: &Unsealed, uuid: &str) -> Result<Vec<(String, Record)>, String> {
    let dir = dir(uuid);
    let mut out = Vec::new();
    for node in barrier.list(u, &dir).await.map_err(|e| e.to_string())? {
        if let Some(raw) = barrier.get(u, &format!("{dir}{node}")).await.map_err(|e| e.to_string())?
            && let Ok(r) = serde_json::from_slice::<Record>(&raw)
        {
            out.push((node, r));
        }
    }
    Ok(out)
}

/// The closing heads known for a device (written to `file`, if a file).
pub async fn read(barrier: &Barrier, u: &Unsealed, uuid: &str, file: Option<&str>) -> Known {
    let records = match all(barrier, u, uuid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the audit chain heads: a file cut back while stopped would go unnoticed");
            return Known { all: Vec::new(), mine: None };
        }
    };
    let host = host();
    let mut mine: Option<(i64, Head)> = None;
    let mut all = Vec::new();
    for (node, r) in records {
        let Some(hash) = hex::decode(&r.hash).ok().and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()) else {
            continue;
        };
        let head = Head { node, seq: r.seq, hash };
        if file == Some(r.file.as_str()) && r.host == host && mine.as_ref().is_none_or(|(t, _)| r.time >= *t) {
            mine = Some((r.time, head.clone()));
        }
        all.push(head);
    }
    Known { all, mine: mine.map(|(_, h)| h) }
}

/// Keep `head` as its chain's closing head (and drop the oldest beyond [`KEEP`]).
pub async fn keep(barrier: &Barrier, u: &Unsealed, uuid: &str, file: Option<&str>, head: &Head) {
    let time = time::OffsetDateTime::now_utc().unix_timestamp();
    let record = Record {
        seq: head.seq,
        hash: hex::encode(head.hash),
        time,
        file: file.unwrap_or_default().to_string(),
        host: host(),
    };
    let Ok(raw) = serde_json::to_vec(&record) else { return };
    if let Err(e) = barrier.put(u, &format!("{}{}", dir(uuid), head.node), &raw).await {
        tracing::warn!(error = %e, "cannot keep the audit chain head");
        return;
    }
    if let Ok(mut records) = all(barrier, u, uuid).await
        && records.len() > KEEP
    {
        records.sort_by_key(|(_, r)| std::cmp::Reverse(r.time));
        for (node, _) in records.split_off(KEEP) {
            let _ = barrier.delete(&format!("{}{node}", dir(uuid))).await;
        }
    }
}

/// Drop a disabled device's heads.
pub async fn forget(barrier: &Barrier, u: &Unsealed, uuid: &str) {
    let dir = dir(uuid);
    if let Ok(nodes) = barrier.list(u, &dir).await {
        for node in nodes {
            let _ = barrier.delete(&format!("{dir}{node}")).await;
        }
    }
}
