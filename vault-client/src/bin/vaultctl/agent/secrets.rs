//! Following secrets for `exec` and `agent`: the library's
//! [`Client::watch_secret`] (KV v2 blocking reads, retries with backoff,
//! the client's shared token), its new versions passed on as [`Changed`]
//! events on one channel for all the secrets followed.

use anyhow::Context as _;
use tokio::sync::mpsc;
use vault_client::Client;

use super::AbortOnDrop;

/// A new version of a followed secret: its full path and version number.
#[derive(Debug, Clone)]
pub(crate) struct Changed {
    pub(crate) path: String,
    pub(crate) version: u64,
}

/// Follow the KV v2 secret at `path` (mount included), sending each newer
/// version on `tx`. `seen`: the version the caller already read, if any; a
/// newer one found when the watch starts is sent at once (written between
/// the caller's read and now). Dropping the handle (or closing `tx`) stops
/// following.
pub(crate) async fn follow(
    client: &Client,
    path: &str,
    seen: Option<u64>,
    tx: mpsc::Sender<Changed>,
) -> anyhow::Result<AbortOnDrop> {
    let mut rx = client.watch_secret(path).await.with_context(|| format!("cannot follow secret {path}"))?;
    let path = path.to_string();
    let current = rx.borrow_and_update().version;
    let task = tokio::spawn(async move {
        if seen.is_some_and(|v| current > v) && tx.send(Changed { path: path.clone(), version: current }).await.is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
            let version = rx.borrow_and_update().version;
            if tx.send(Changed { path: path.clone(), version }).await.is_err() {
                return;
            }
        }
    });
    Ok(AbortOnDrop(task))
}
