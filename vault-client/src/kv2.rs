//! KV version 2 secrets: read the latest or a given version, write a new
//! version, and follow a secret's versions (writes and rotations) with
//! blocking reads instead of polling (docs/kv-rotation.md, "Watch: blocking
//! reads").
//!
//! Not-found handling: a secret that does not exist (bare 404) and a version
//! that is deleted or destroyed (a 404 that still carries the version's
//! metadata) both read as `None`. A 404 with messages (e.g. "no handler for
//! route", nothing mounted there) is an [`Error::Api`].
//!
//! Secret values never appear in `Debug` output or errors: [`Secret`]'s
//! `Debug` shows field names only, and decode errors never quote values.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::{Client, RawResponse};
use crate::error::{Error, Result};

/// Added to a blocking read's wait to make its request timeout, so the
/// server's answer at the end of the wait arrives before the client gives up.
const WAIT_SLACK: Duration = Duration::from_secs(15);

/// How long each blocking read of a [`Follow`] waits.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// A [`Follow`] round that brought nothing new is never shorter than this
/// (a server that answers at once, e.g. one ignoring
/// `wait_for_version_after`, must not make the loop spin).
const MIN_ROUND: Duration = Duration::from_secs(1);

/// Handle on one KV v2 mount; get one with [`Client::kv2`].
#[derive(Debug, Clone)]
pub struct Kv2<'a> {
    client: &'a Client,
    mount: String,
}

/// One version of a secret.
///
/// `Debug` shows the field names, the version and the creation time, never
/// the values.
#[derive(Clone, PartialEq)]
pub struct Secret {
    /// The secret's fields.
    pub data: Map<String, Value>,
    /// Its version number.
    pub version: u64,
    /// When this version was written (RFC 3339).
    pub created_time: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
        struct Fields<'a>(&'a Map<String, Value>);
        impl fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.keys().map(|k| (k, Redacted))).finish()
            }
        }
        f.debug_struct("Secret")
            .field("data", &Fields(&self.data))
            .field("version", &self.version)
            .field("created_time", &self.created_time)
            .finish()
    }
}

/// What a read of `data/{path}` found.
enum Found {
    /// A live version.
    Live(Secret),
    /// The version exists but is deleted or destroyed.
    Gone { version: u64 },
    /// No such secret (or no such version).
    Missing,
}

/// The envelope's `data` (only what is needed here).
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

/// `data` of a read: the fields (null when deleted) and the version's metadata.
#[derive(Deserialize)]
struct ReadData {
    data: Option<Map<String, Value>>,
    metadata: Option<VersionMeta>,
}

#[derive(Deserialize)]
struct VersionMeta {
    version: u64,
    #[serde(default)]
    created_time: String,
}

/// `data` of a write.
#[derive(Deserialize)]
struct WriteData {
    version: u64,
}

/// Body of a write.
#[derive(Serialize)]
struct WriteBody<'a> {
    data: &'a Map<String, Value>,
}

impl Client {
    /// The KV v2 engine mounted at `mount` (e.g. `"secret"`).
    pub fn kv2(&self, mount: &str) -> Kv2<'_> {
        Kv2 { client: self, mount: mount.trim_matches('/').to_string() }
    }
}

impl Kv2<'_> {
    /// The mount this handle works on.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// `GET {mount}/data/{path}`: the latest version, `None` if the secret
    /// does not exist or its latest version is deleted or destroyed.
    pub async fn read(&self, path: &str) -> Result<Option<Secret>> {
        match self.get_data(path, &[], None).await? {
            Found::Live(s) => Ok(Some(s)),
            Found::Gone { .. } | Found::Missing => Ok(None),
        }
    }

    /// `GET {mount}/data/{path}?version=N`: version `version` (0: the
    /// latest), `None` if it does not exist or is deleted or destroyed.
    pub async fn read_version(&self, path: &str, version: u64) -> Result<Option<Secret>> {
        let v = version.to_string();
        match self.get_data(path, &[("version", &v)], None).await? {
            Found::Live(s) => Ok(Some(s)),
            Found::Gone { .. } | Found::Missing => Ok(None),
        }
    }

    /// `POST {mount}/data/{path}` with `{"data": data}`: write a new
    /// version; returns its number.
    pub async fn write(&self, path: &str, data: &Map<String, Value>) -> Result<u64> {
        let api_path = self.data_path(path)?;
        let r = self.client.send(Method::POST, &api_path, Some(&WriteBody { data })).await?;
        let env: Envelope<WriteData> = r.json()?;
        env.data
            .map(|d| d.version)
            .ok_or_else(|| Error::Decode { path: api_path, detail: "the response has no data".into() })
    }

    /// A blocking read: wait up to `wait` (whole seconds, rounded up; the
    /// server allows at most 300 s) for a version newer than `after`.
    /// `Some` with the latest version as soon as it is newer than `after`
    /// (at once if it already is); `None` if the wait ended with nothing
    /// newer, if the secret does not exist, or if the newer version is
    /// already deleted or destroyed. The request's timeout is `wait` + 15 s.
    pub async fn wait_for_newer(&self, path: &str, after: u64, wait: Duration) -> Result<Option<Secret>> {
        match self.wait_data(path, after, wait).await? {
            Found::Live(s) if s.version > after => Ok(Some(s)),
            _ => Ok(None),
        }
    }

    /// Follow `path`'s versions: [`Follow::next`] returns the current
    /// version first (once one exists), then each newer version as it is
    /// written or rotated. The follower owns a clone of the client (cheap),
    /// so it may move into a task.
    pub fn follow(&self, path: &str) -> Follow {
        Follow { client: self.client.clone(), mount: self.mount.clone(), path: path.to_string(), last: 0 }
    }

    /// `{mount}/data/{path}`, refusing an empty mount or path.
    fn data_path(&self, path: &str) -> Result<String> {
        let path = path.trim_start_matches('/');
        if self.mount.is_empty() {
            return Err(Error::InvalidArgument("empty KV v2 mount".into()));
        }
        if path.is_empty() {
            return Err(Error::InvalidArgument("empty secret path".into()));
        }
        Ok(format!("{}/data/{path}", self.mount))
    }

    async fn wait_data(&self, path: &str, after: u64, wait: Duration) -> Result<Found> {
        let secs = wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0));
        let (after, wait_arg) = (after.to_string(), format!("{secs}s"));
        let query = [("wait_for_version_after", after.as_str()), ("wait", wait_arg.as_str())];
        let timeout = Duration::from_secs(secs).saturating_add(WAIT_SLACK);
        self.get_data(path, &query, Some(timeout)).await
    }

    async fn get_data(&self, path: &str, query: &[(&str, &str)], timeout: Option<Duration>) -> Result<Found> {
        let api_path = self.data_path(path)?;
        let r = self.client.send_with::<()>(Method::GET, &api_path, query, None, timeout).await?;
        found(r)
    }
}

/// Interpret the answer to a read of `data/{path}`.
fn found(r: RawResponse) -> Result<Found> {
    if r.status == StatusCode::NOT_FOUND {
        // A deleted or destroyed version: 404 with the version's metadata.
        if let Ok(Envelope { data: Some(ReadData { metadata: Some(m), .. }) }) = r.parse::<Envelope<ReadData>>() {
            return Ok(Found::Gone { version: m.version });
        }
        if r.is_bare_not_found() {
            return Ok(Found::Missing);
        }
    }
    let path = r.path.clone();
    let env: Envelope<ReadData> = r.json()?;
    let bad = |detail: &str| Error::Decode { path: path.clone(), detail: detail.into() };
    let d = env.data.ok_or_else(|| bad("the response has no data"))?;
    let m = d.metadata.ok_or_else(|| bad("the response has no data.metadata"))?;
    match d.data {
        Some(data) => Ok(Found::Live(Secret { data, version: m.version, created_time: m.created_time })),
        // A success without data: as a deleted version.
        None => Ok(Found::Gone { version: m.version }),
    }
}

/// Follows one secret's versions; get one with [`Kv2::follow`].
#[derive(Debug, Clone)]
pub struct Follow {
    client: Client,
    mount: String,
    path: String,
    last: u64,
}

impl Follow {
    /// The next version: the first call returns the current version (or
    /// waits until one exists), each later call the first version newer than
    /// the last one returned. Deleted or destroyed versions are skipped.
    ///
    /// Waits as long as it takes, with blocking reads of
    /// [`FOLLOW_WAIT`] each. Cancel-safe: dropping the future loses nothing.
    /// An error (server unreachable, sealed, ...) is returned as is; calling
    /// `next` again resumes from the last version returned.
    pub async fn next(&mut self) -> Result<Secret> {
        let kv = self.client.kv2(&self.mount);
        loop {
            let started = Instant::now();
            match kv.wait_data(&self.path, self.last, FOLLOW_WAIT).await? {
                Found::Live(s) if s.version > self.last => {
                    self.last = s.version;
                    return Ok(s);
                }
                Found::Gone { version } if version > self.last => {
                    self.last = version;
                    continue;
                }
                _ => {}
            }
            if let Some(rest) = MIN_ROUND.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }

    /// The version last returned by [`Follow::next`] (0 before the first).
    pub fn last_version(&self) -> u64 {
        self.last
    }

    /// The followed secret's path (within its mount).
    pub fn path(&self) -> &str {
        &self.path
    }
}
