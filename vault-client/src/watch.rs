//! Following a KV v2 secret as a [`tokio::sync::watch`] channel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(serde::Deserialize)]
//! struct Db {
//!     username: String,
//!     password: String,
//! }
//!
//! let client = vault_client::Client::from_env()?;
//! let mut db = client.watch::<Db>("secret/myapp/db").await?;
//! loop {
//!     {
//!         let creds = db.borrow_and_update();
//!         // (re)connect with creds.username / creds.password
//!     }
//!     if db.changed().await.is_err() {
//!         break; // the watcher ended
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The channel starts with the secret's current version (read before
//! `watch` returns, so a missing secret or a value that does not fit `T` is
//! an error at once) and gets each newer version as it is written or rotated.
//! A background task follows the secret with the server's blocking reads
//! ([`Kv2::follow`](crate::Kv2::follow); no polling), and:
//!
//! * **retries** with exponential backoff (250 ms doubling to 10 s, with
//!   jitter) whatever goes wrong: server down or restarting, sealed (503),
//!   token expired or revoked (403). The task holds a clone of the client,
//!   and clones share the token, so a re-login done elsewhere (for example by
//!   a renewal task) is used at the next attempt. Nothing is missed: it
//!   resumes from the last version it saw;
//! * **skips** a version whose data does not fit `T` (a warning naming the
//!   field, never the value), keeping the previous value;
//! * **ends** when every receiver is dropped (checked while waiting, so at
//!   once), and ends the channel if the sender side is gone.
//!
//! The path is a full path, mount included, located as for
//! [`Client::load`]; only KV v2 can be watched. The typed watch reads the
//! secret's fields as `load` does (strings coerced to the field's type) but
//! without environment fallbacks or reference resolution: the channel shows
//! the secret.

use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::client::Client;
use crate::config::{ConfigError, DeError, Located, from_map, wipe_map};
use crate::kv2::Secret;

/// First retry delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential backoff with "equal jitter": each delay is half the current
/// cap plus a random part of the other half, so retries of many watchers
/// spread out but never come back to back.
#[derive(Debug)]
struct Backoff {
    cap: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { cap: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.cap = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let half = self.cap / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let delay = half + Duration::from_millis(rand::random_range(0..=jitter_ms));
        self.cap = (self.cap * 2).min(BACKOFF_MAX);
        delay
    }
}

impl Client {
    /// Watch the KV v2 secret at `path` (mount included): a channel holding
    /// its latest version (data and version number). See the
    /// [module docs](crate::watch).
    pub async fn watch_secret(&self, path: &str) -> Result<watch::Receiver<Secret>, ConfigError> {
        self.watch_with(path, |_, s| Ok(s)).await
    }

    /// Watch the KV v2 secret at `path` (mount included) as a `T`: a
    /// channel holding its latest version deserialized. See the
    /// [module docs](crate::watch).
    pub async fn watch<T>(&self, path: &str) -> Result<watch::Receiver<T>, ConfigError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.watch_with(path, |path, s| {
            let r = from_map::<T>(&s.data);
            wipe_map(s.data);
            r.map_err(|e| decode_error(path, e))
        })
        .await
    }

    async fn watch_with<T, F>(&self, path: &str, decode: F) -> Result<watch::Receiver<T>, ConfigError>
    where
        T: Send + Sync + 'static,
        F: Fn(&str, Secret) -> Result<T, ConfigError> + Send + 'static,
    {
        let path = path.trim_matches('/').to_string();
        let vault_err = |error| ConfigError::Vault { place: format!("watching {path}"), error };
        let at: Located = self.locate(&path).await.map_err(vault_err)?;
        if !at.v2 {
            return Err(ConfigError::Shape(format!("{path} is in a KV version 1 mount: only KV v2 can be watched")));
        }
        let kv = self.kv2(&at.mount);
        let first = kv.read(&at.rest).await.map_err(vault_err)?.ok_or_else(|| ConfigError::NotFound(path.clone()))?;
        let mut last = first.version;
        let (tx, rx) = watch::channel(decode(&path, first)?);

        let mut follow = kv.follow(&at.rest);
        tokio::spawn(async move {
            let mut backoff = Backoff::new();
            loop {
                let next = tokio::select! {
                    () = tx.closed() => break,
                    next = follow.next() => next,
                };
                match next {
                    Ok(s) => {
                        backoff.reset();
                        // The follower's first answer is the version already sent.
                        if s.version <= last {
                            continue;
                        }
                        last = s.version;
                        match decode(&path, s) {
                            Ok(v) => {
                                if tx.send(v).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(path = %path, version = last, error = %e, "watch: new version skipped");
                            }
                        }
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(path = %path, error = %e, retry_in = ?delay, "watch: read failed; retrying");
                        tokio::select! {
                            () = tx.closed() => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            tracing::debug!(path = %path, "watch ended: no receivers left");
        });
        Ok(rx)
    }
}

/// A decode error of a watched secret, named by field and path.
fn decode_error(path: &str, e: DeError) -> ConfigError {
    match e {
        DeError::Missing(field) => ConfigError::Missing { field, looked: vec![path.to_string()] },
        DeError::Field { field, detail } => ConfigError::Invalid { field, from: path.to_string(), detail },
        DeError::Other(detail) => ConfigError::Shape(format!("{path}: {detail}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let d1 = b.next_delay();
        assert!(d1 >= BACKOFF_MIN / 2 && d1 <= BACKOFF_MIN, "{d1:?}");
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= BACKOFF_MAX && d >= BACKOFF_MIN / 2, "{d:?}");
        }
        assert_eq!(b.cap, BACKOFF_MAX);
        let d = b.next_delay();
        assert!(d >= BACKOFF_MAX / 2, "{d:?}");
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
