//! KV version 2: versioned key/value secrets (Vault's `kv` with `version=2`).
//!
//! Storage layout inside the mount's view:
//! - `config`: the mount configuration (JSON);
//! - `meta/{path}`: a key's metadata (versions map, settings);
//! - `ver/{path}/{n}`: the data of version `n`, one encrypted row per version.
//!
//! - `rot/{path}`: the key's rotation policy and state (`rotation.rs`);
//! - `rotroles/{hash}`: which policy rotates a PostgreSQL role (`rotation.rs`).
//!
//! Every write of data and metadata is one atomic batch guarded by a
//! precondition on the metadata row, retried a few times on conflict, so two
//! servers writing the same key cannot both create the same version.
//!
//! Times are kept in nanoseconds and shown as RFC 3339 with nanoseconds, as
//! Vault does. Reads may wait for a newer version (`wait_for_version_after`,
//! docs/kv-rotation.md); waiters park on the storage's change notifier.

mod rotation;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::auth::Authorized;
use crate::barrier::view::{View, ViewBatch};
use crate::barrier::{BarrierError, Unsealed};
use crate::engines::RotationSettings;
use crate::logical::fields;
use crate::logical::{Backend, BoxFuture, Field, FieldKind, LogicalError, Operation, PathSpec, Request, Response};
use crate::storage::{Expect, StorageError};

/// Vault's default number of versions kept when neither the mount nor the key sets one.
const DEFAULT_MAX_VERSIONS: u64 = 10;
/// How many times a conflicting write is retried.
const RETRIES: usize = 8;
const CONFIG_KEY: &str = "config";
const CAS_REQUIRED: &str = "check-and-set parameter required for this call";
const CAS_MISMATCH: &str = "check-and-set parameter did not match the current version";

/// Longest secret path (storage rows carry a prefix and a version number too).
const MAX_KEY_BYTES: usize = 512;
/// Longest a read may wait for a newer version.
const MAX_WAIT_SECS: u64 = 300;
/// Wait when `wait_for_version_after` is given without `wait`.
const DEFAULT_WAIT_SECS: u64 = 30;
const NANOS: i64 = 1_000_000_000;

/// The KV v2 engine.
#[derive(Debug)]
pub struct KvV2 {
    view: View,
    settings: RotationSettings,
    /// Rotation outcomes are counted here (none: not counted).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// Now, in nanoseconds since the Unix epoch.
fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Nanoseconds since the epoch as RFC 3339 (Go's `RFC3339Nano`: trailing zeros trimmed).
fn rfc3339_ns(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// What a write puts in the new version.
enum Body<'a> {
    /// The request's data, as is.
    Replace(&'a Map<String, Value>),
    /// RFC 7386 merge into the latest live version (which must exist).
    Patch(&'a Map<String, Value>),
    /// These fields replace the latest version's (or start a new secret).
    Rotate(&'a Map<String, Value>),
}

/// Extra row written in the same batch as a new version (the rotation
/// record), built once the version number is known.
type Extra<'a> = &'a (dyn Fn(u64, &mut ViewBatch<'_>) -> Result<(), LogicalError> + Sync);

/// Mount configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Config {
    #[serde(default)]
    max_versions: u64,
    #[serde(default)]
    cas_required: bool,
    /// Seconds (0: never).
    #[serde(default)]
    delete_version_after: u64,
}

/// One version's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct VersionMeta {
    created_ns: i64,
    #[serde(default)]
    deletion_ns: Option<i64>,
    #[serde(default)]
    destroyed: bool,
}

/// A key's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    #[serde(default)]
    cas_required: bool,
    created_ns: i64,
    updated_ns: i64,
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    oldest_version: u64,
    #[serde(default)]
    max_versions: u64,
    #[serde(default)]
    delete_version_after: u64,
    #[serde(default)]
    custom_metadata: Option<Map<String, Value>>,
    #[serde(default)]
    versions: BTreeMap<u64, VersionMeta>,
}

/// Go's `time.Duration.String()` for whole seconds ("0s", "1h0m0s", "1m30s").
fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Is this a conflict on exactly this storage path?
fn conflict_at(e: &BarrierError, path: &str) -> bool {
    matches!(e, BarrierError::Storage(StorageError::Conflict(p)) if p == path)
}

/// Reject paths that would escape or be ambiguous.
fn check_key(path: &str) -> Result<(), LogicalError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(LogicalError::InvalidRequest("a secret path must be given and must not end in '/'".into()));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") || path.chars().any(char::is_control) {
        return Err(LogicalError::InvalidRequest(format!("invalid secret path {path:?}")));
    }
    if path.len() > MAX_KEY_BYTES {
        return Err(LogicalError::InvalidRequest(format!("a secret path may be at most {MAX_KEY_BYTES} bytes")));
    }
    Ok(())
}

/// Check a list prefix (may be empty or end in '/').
fn check_prefix(prefix: &str) -> Result<(), LogicalError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(());
    }
    check_key(trimmed)
}

fn is_conflict(e: &BarrierError) -> bool {
    matches!(e, BarrierError::Storage(StorageError::Conflict(_)))
}

fn to_json<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, LogicalError> {
    serde_json::to_vec(v).map(Zeroizing::new).map_err(LogicalError::internal)
}

/// The smallest non-zero of two settings (0 = unset).
fn min_nonzero(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

/// A list of version numbers (`versions`): array of integers or numeric strings, or a comma list.
fn version_list(data: &Map<String, Value>) -> Result<Vec<u64>, LogicalError> {
    let bad = || LogicalError::InvalidRequest("invalid value for 'versions': expected a list of integers".into());
    let parse = |v: &Value| -> Result<u64, LogicalError> {
        match v {
            Value::Number(n) => n.as_u64().ok_or_else(bad),
            Value::String(s) => s.trim().parse().map_err(|_| bad()),
            _ => Err(bad()),
        }
    };
    let out: Vec<u64> = match data.get("versions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(parse).collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| parse(&Value::String(p.into())))
            .collect::<Result<_, _>>()?,
        Some(v @ Value::Number(_)) => vec![parse(v)?],
        Some(_) => return Err(bad()),
    };
    if out.is_empty() {
        return Err(LogicalError::InvalidRequest("no version number provided".into()));
    }
    Ok(out)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The key structure of `v` with leaves replaced by null, down to `depth` (0: unlimited).
fn subkeys(v: &Map<String, Value>, depth: u64, level: u64) -> Map<String, Value> {
    v.iter()
        .map(|(k, val)| {
            let inner = match val {
                Value::Object(m) if depth == 0 || level < depth => Value::Object(subkeys(m, depth, level + 1)),
                _ => Value::Null,
            };
            (k.clone(), inner)
        })
        .collect()
}

impl KvV2 {
    /// An engine over `view`.
    pub fn new(view: View, settings: RotationSettings) -> Self {
        Self { view, settings, metrics: None }
    }

    /// Count rotation outcomes in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_rotation(&self, ok: bool) {
        if let Some(m) = &self.metrics {
            m.rotation(crate::metrics::RotationKind::Kv2, ok);
        }
    }

    async fn config(&self, u: &Unsealed) -> Result<Config, LogicalError> {
        match self.view.get(u, CONFIG_KEY).await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(LogicalError::internal),
            None => Ok(Config::default()),
        }
    }

    async fn meta(&self, u: &Unsealed, key: &str) -> Result<Option<(Meta, i64)>, LogicalError> {
        match self.view.get_with_rev(u, &format!("meta/{key}")).await? {
            Some((raw, rev)) => Ok(Some((serde_json::from_slice(&raw).map_err(LogicalError::internal)?, rev))),
            None => Ok(None),
        }
    }

    async fn version_data(&self, u: &Unsealed, key: &str, n: u64) -> Result<Option<Value>, LogicalError> {
        match self.view.get(u, &format!("ver/{key}/{n}")).await? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw).map_err(LogicalError::internal)?)),
            None => Ok(None),
        }
    }

    /// Effective deletion time of a version (explicit, or from delete_version_after).
    fn deletion_time(cfg: &Config, meta: &Meta, v: &VersionMeta) -> Option<i64> {
        if v.deletion_ns.is_some() {
            return v.deletion_ns;
        }
        let after = min_nonzero(cfg.delete_version_after, meta.delete_version_after);
        if after == 0 {
            return None;
        }
        i64::try_from(after).ok().and_then(|a| a.checked_mul(NANOS)).and_then(|a| v.created_ns.checked_add(a))
    }

    fn is_deleted(cfg: &Config, meta: &Meta, v: &VersionMeta) -> bool {
        Self::deletion_time(cfg, meta, v).is_some_and(|t| t <= now_ns())
    }

    fn version_json(cfg: &Config, meta: &Meta, n: u64, v: &VersionMeta) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("created_time".into(), rfc3339_ns(v.created_ns).into());
        m.insert("custom_metadata".into(), meta.custom_metadata.clone().map(Value::Object).unwrap_or(Value::Null));
        m.insert("deletion_time".into(), Self::deletion_time(cfg, meta, v).map(rfc3339_ns).unwrap_or_default().into());
        m.insert("destroyed".into(), v.destroyed.into());
        m.insert("version".into(), n.into());
        m
    }

    fn metadata_json(cfg: &Config, meta: &Meta) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("cas_required".into(), meta.cas_required.into());
        m.insert("created_time".into(), rfc3339_ns(meta.created_ns).into());
        m.insert("current_version".into(), meta.current_version.into());
        m.insert("custom_metadata".into(), meta.custom_metadata.clone().map(Value::Object).unwrap_or(Value::Null));
        m.insert("delete_version_after".into(), go_duration(meta.delete_version_after).into());
        m.insert("max_versions".into(), meta.max_versions.into());
        m.insert("oldest_version".into(), meta.oldest_version.into());
        m.insert("updated_time".into(), rfc3339_ns(meta.updated_ns).into());
        let mut versions = Map::new();
        for (n, v) in &meta.versions {
            let mut e = Map::new();
            e.insert("created_time".into(), rfc3339_ns(v.created_ns).into());
            e.insert(
                "deletion_time".into(),
                Self::deletion_time(cfg, meta, v).map(rfc3339_ns).unwrap_or_default().into(),
            );
            e.insert("destroyed".into(), v.destroyed.into());
            versions.insert(n.to_string(), Value::Object(e));
        }
        m.insert("versions".into(), Value::Object(versions));
        m
    }

    /// Which version a read asks for (`version`, 0 or absent: latest).
    fn requested_version(data: &Map<String, Value>, meta: &Meta) -> Result<u64, LogicalError> {
        match fields::count(data, "version")? {
            None | Some(0) => Ok(meta.current_version),
            Some(n) => Ok(n),
        }
    }

    /// A user's write of a new version (`patch`: merge into the latest instead of replacing).
    async fn write_data(&self, u: &Unsealed, key: &str, req: &Request, patch: bool) -> Result<Response, LogicalError> {
        let new_data = match req.data.get("data") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => {
                return Err(LogicalError::InvalidRequest("no data provided".into()));
            }
            Some(_) => return Err(LogicalError::InvalidRequest("invalid value for 'data': expected an object".into())),
        };
        let cas = match req.data.get("options") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => fields::count(o, "cas")?,
            Some(_) => {
                return Err(LogicalError::InvalidRequest("invalid value for 'options': expected an object".into()));
            }
        };
        let body = if patch { Body::Patch(new_data) } else { Body::Replace(new_data) };
        let (cfg, meta, n) = self.write_version(u, key, body, Some(cas), None).await?;
        let v = meta.versions.get(&n).cloned().unwrap_or_default();
        Ok(Response::data(Self::version_json(&cfg, &meta, n, &v)))
    }

    /// Write a new version: data, metadata (and `extra`) in one batch guarded
    /// by the metadata row's revision, retried on conflict. `cas`: `Some` for
    /// a user's write (check-and-set rules apply), `None` for the vault's own
    /// (rotation). Returns the config, the new metadata and version number.
    async fn write_version(
        &self,
        u: &Unsealed,
        key: &str,
        body: Body<'_>,
        cas: Option<Option<u64>>,
        extra: Option<Extra<'_>>,
    ) -> Result<(Config, Meta, u64), LogicalError> {
        let cfg = self.config(u).await?;
        // A new key's metadata is absent and, never read, not in the storage
        // read cache: reading it first would cost a database round trip
        // before the commit's. When the metadata is not cached and a new
        // key's write would go through (a user's replace whose check-and-set
        // allows version 0), write as if the key were new: `Expect::Absent`
        // guards the metadata row, so on an existing key the whole batch
        // fails, writes nothing, and the next attempt reads the metadata
        // like after any other conflict. A key written here before has its
        // metadata cached by that commit (`storage/group.rs`), so this guess
        // is wrong only for keys this server has not seen since it started
        // or since the cache let them go. Without a cache in use (disabled,
        // or not following PostgreSQL's change feed) nothing is ever cached
        // and the guess would be wrong for every existing key: read first.
        let mut guess_new = matches!(body, Body::Replace(_))
            && extra.is_none()
            && !matches!(cas, Some(Some(c)) if c != 0)
            && self.view.is_caching()
            && !self.view.is_cached(&format!("meta/{key}"));
        for _ in 0..RETRIES {
            let existing = if std::mem::take(&mut guess_new) { None } else { self.meta(u, key).await? };
            let now = now_ns();
            let (mut meta, expect) = match existing {
                Some((m, rev)) => (m, Expect::Rev(rev)),
                None if matches!(body, Body::Patch(_)) => return Err(LogicalError::NotFound),
                None => (Meta { created_ns: now, ..Meta::default() }, Expect::Absent),
            };
            if let Some(cas) = cas {
                if (cfg.cas_required || meta.cas_required) && cas.is_none() {
                    return Err(LogicalError::InvalidRequest(CAS_REQUIRED.into()));
                }
                if let Some(c) = cas
                    && c != meta.current_version
                {
                    return Err(LogicalError::InvalidRequest(CAS_MISMATCH.into()));
                }
            }
            let cur = meta.current_version;
            let live = meta.versions.get(&cur).is_some_and(|v| !v.destroyed && !Self::is_deleted(&cfg, &meta, v));
            let value = match body {
                Body::Replace(m) => Value::Object(m.clone()),
                Body::Patch(m) => {
                    if !live {
                        return Err(LogicalError::NotFound);
                    }
                    let mut target = self.version_data(u, key, cur).await?.ok_or(LogicalError::NotFound)?;
                    merge_patch(&mut target, &Value::Object(m.clone()));
                    target
                }
                Body::Rotate(fields) => {
                    let mut target = match live {
                        true => self.version_data(u, key, cur).await?.unwrap_or_else(|| Value::Object(Map::new())),
                        false => Value::Object(Map::new()),
                    };
                    if let Value::Object(t) = &mut target {
                        t.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                    } else {
                        target = Value::Object(fields.clone());
                    }
                    target
                }
            };
            let n = cur.checked_add(1).ok_or_else(|| LogicalError::internal("version overflow"))?;
            meta.current_version = n;
            meta.updated_ns = now;
            meta.versions.insert(n, VersionMeta { created_ns: now, deletion_ns: None, destroyed: false });
            // Trim the oldest versions beyond the limit.
            let max = match min_nonzero(cfg.max_versions, meta.max_versions) {
                0 => DEFAULT_MAX_VERSIONS,
                m => m,
            };
            let mut trimmed = Vec::new();
            while meta.versions.len() as u64 > max {
                match meta.versions.pop_first() {
                    Some((old, _)) => trimmed.push(old),
                    None => break,
                }
            }
            // Like Vault, oldest_version stays 0 until versions are trimmed.
            if !trimmed.is_empty() {
                meta.oldest_version = meta.versions.keys().next().copied().unwrap_or(n);
            }
            let data_json = to_json(&value)?;
            let meta_json = to_json(&meta)?;
            let mut batch = self.view.batch();
            batch.put(u, &format!("ver/{key}/{n}"), &data_json);
            for old in trimmed {
                batch.delete(&format!("ver/{key}/{old}"));
            }
            batch.put_expect(u, &format!("meta/{key}"), &meta_json, expect);
            if let Some(extra) = extra {
                extra(n, &mut batch)?;
            }
            match batch.commit().await {
                Ok(()) => return Ok((cfg, meta, n)),
                Err(e) if conflict_at(&e, &format!("{}meta/{key}", self.view.prefix())) => continue,
                Err(e) if is_conflict(&e) => {
                    return Err(LogicalError::Conflict("a concurrent change of this secret won; try again".into()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("too many concurrent writes to this key; try again".into()))
    }

    /// Read-modify-write of a key's metadata only (with extra deletes of version rows).
    async fn update_meta<F>(&self, u: &Unsealed, key: &str, create: bool, mut f: F) -> Result<(), LogicalError>
    where
        F: FnMut(&mut Meta, i64) -> Result<Vec<u64>, LogicalError>,
    {
        for _ in 0..RETRIES {
            let now = now_ns();
            let (mut meta, expect) = match self.meta(u, key).await? {
                Some((m, rev)) => (m, Expect::Rev(rev)),
                None if create => (Meta { created_ns: now, updated_ns: now, ..Meta::default() }, Expect::Absent),
                None => return Err(LogicalError::NotFound),
            };
            let drop_rows = f(&mut meta, now)?;
            let meta_json = to_json(&meta)?;
            let mut batch = self.view.batch();
            for n in drop_rows {
                batch.delete(&format!("ver/{key}/{n}"));
            }
            batch.put_expect(u, &format!("meta/{key}"), &meta_json, expect);
            match batch.commit().await {
                Ok(()) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("too many concurrent writes to this key; try again".into()))
    }

    async fn read_data(&self, u: &Unsealed, key: &str, data: &Map<String, Value>) -> Result<Response, LogicalError> {
        let cfg = self.config(u).await?;
        let (meta, _) = self.meta(u, key).await?.ok_or(LogicalError::NotFound)?;
        let n = Self::requested_version(data, &meta)?;
        let v = meta.versions.get(&n).ok_or(LogicalError::NotFound)?;
        // As Vault: a deleted or destroyed version is a 404 that still
        // carries the version's metadata (clients use it to tell why).
        if v.destroyed || Self::is_deleted(&cfg, &meta, v) {
            let mut out = Map::new();
            out.insert("data".into(), Value::Null);
            out.insert("metadata".into(), Value::Object(Self::version_json(&cfg, &meta, n, v)));
            return Ok(Response::NotFoundWithData(out));
        }
        let body = self.version_data(u, key, n).await?.ok_or(LogicalError::NotFound)?;
        let mut out = Map::new();
        out.insert("data".into(), body);
        out.insert("metadata".into(), Value::Object(Self::version_json(&cfg, &meta, n, v)));
        Ok(Response::data(out))
    }

    /// A read that waits (`wait_for_version_after`, `wait`) until the
    /// current version is newer than the one the caller has, the wait ends,
    /// or the vault is sealed. The waiter is a parked task: registering on
    /// the metadata row's notifier *before* each check means a write landing
    /// between the check and the park still wakes it.
    ///
    /// The authorization was checked once, before the wait: every time the
    /// waiter wakes (a write, or any revocation or policy change) it asks
    /// again, so a token revoked or a policy narrowed while it waits gets a
    /// 403, never the next version.
    async fn watch_data(
        &self,
        auth: &Authorized,
        key: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let u = auth.unsealed();
        let after = fields::count(data, "wait_for_version_after")?.unwrap_or(0);
        if fields::count(data, "version")?.is_some_and(|v| v != 0) {
            return Err(LogicalError::InvalidRequest("wait_for_version_after cannot be combined with version".into()));
        }
        let wait = fields::duration(data, "wait")?.unwrap_or(DEFAULT_WAIT_SECS);
        if wait > MAX_WAIT_SECS {
            return Err(LogicalError::InvalidRequest(format!("wait may be at most {MAX_WAIT_SECS}s")));
        }
        let latest = Map::new();
        let notify = self.view.watch(&format!("meta/{key}"));
        let mut seals = self.view.seal_signal();
        seals.borrow_and_update();
        // Subscribed before the first check, so no change goes unseen.
        let mut security = auth.security_changes();
        if let Some(s) = security.as_mut() {
            s.borrow_and_update();
        }
        // A revocation between the policy check and the subscription above.
        auth.still_authorized(data).await?;
        if self.view.is_sealed() {
            // Sealed between the authorization and the subscription.
            return Err(LogicalError::Sealed);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        loop {
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Bounded by the deadline too: a stalled database must not hold the request.
            let current = match tokio::time::timeout_at(deadline, self.meta(u, key)).await {
                Ok(m) => m?,
                Err(_) => break,
            };
            if current.is_some_and(|(m, _)| m.current_version > after) {
                auth.still_authorized(data).await?;
                return self.read_data(u, key, &latest).await;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => break,
                // The capability must not outlive a seal: end the wait.
                _ = seals.changed() => return Err(LogicalError::Sealed),
                // A token revoked or a policy changed: ask again now, so a
                // revoked waiter ends at once instead of at the next write.
                Some(Ok(())) = async {
                    match security.as_mut() {
                        Some(s) => Some(s.changed().await),
                        None => std::future::pending().await,
                    }
                } => {
                    auth.still_authorized(data).await?;
                }
            }
        }
        auth.still_authorized(data).await?;
        match self.read_data(u, key, &latest).await? {
            Response::Data { data, auth, mut warnings } => {
                warnings.push(format!("no version newer than {after} within the wait"));
                Ok(Response::Data { data, auth, warnings })
            }
            other => Ok(other),
        }
    }

    async fn read_subkeys(&self, u: &Unsealed, key: &str, data: &Map<String, Value>) -> Result<Response, LogicalError> {
        let depth = fields::count(data, "depth")?.unwrap_or(0);
        let cfg = self.config(u).await?;
        let (meta, _) = self.meta(u, key).await?.ok_or(LogicalError::NotFound)?;
        let n = Self::requested_version(data, &meta)?;
        let v = meta.versions.get(&n).ok_or(LogicalError::NotFound)?;
        if v.destroyed || Self::is_deleted(&cfg, &meta, v) {
            return Err(LogicalError::NotFound);
        }
        let body = self.version_data(u, key, n).await?.ok_or(LogicalError::NotFound)?;
        let keys = match &body {
            Value::Object(m) => subkeys(m, depth, 1),
            _ => Map::new(),
        };
        let mut out = Map::new();
        out.insert("subkeys".into(), Value::Object(keys));
        out.insert("metadata".into(), Value::Object(Self::version_json(&cfg, &meta, n, v)));
        Ok(Response::data(out))
    }

    async fn write_metadata(
        &self,
        u: &Unsealed,
        key: &str,
        data: &Map<String, Value>,
        patch: bool,
    ) -> Result<(), LogicalError> {
        let max_versions = fields::count(data, "max_versions")?;
        let cas_required = fields::boolean(data, "cas_required")?;
        let dva = fields::duration(data, "delete_version_after")?;
        // A patch may remove custom metadata keys with null: validate the other values.
        let custom = match data.get("custom_metadata") {
            Some(Value::Object(m)) if patch => {
                let mut only = Map::new();
                only.insert(
                    "custom_metadata".into(),
                    Value::Object(
                        m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect(),
                    ),
                );
                fields::string_map(&only, "custom_metadata")?
            }
            _ => fields::string_map(data, "custom_metadata")?,
        };
        if let Some(c) = &custom {
            if c.len() > 64 {
                return Err(LogicalError::InvalidRequest("custom_metadata may hold at most 64 keys".into()));
            }
            if c.keys().any(|k| k.len() > 128) {
                return Err(LogicalError::InvalidRequest("custom_metadata keys must be at most 128 bytes".into()));
            }
        }
        let raw_custom = data.get("custom_metadata").cloned();
        self.update_meta(u, key, !patch, |meta, now| {
            if let Some(m) = max_versions {
                meta.max_versions = m;
            }
            if let Some(c) = cas_required {
                meta.cas_required = c;
            }
            if let Some(d) = dva {
                meta.delete_version_after = d;
            }
            if patch {
                if let Some(Value::Object(p)) = &raw_custom {
                    let mut cur = Value::Object(meta.custom_metadata.clone().unwrap_or_default());
                    merge_patch(&mut cur, &Value::Object(p.clone()));
                    meta.custom_metadata = match cur {
                        Value::Object(m) if !m.is_empty() => Some(m),
                        _ => None,
                    };
                }
            } else if custom.is_some() {
                meta.custom_metadata = custom.clone();
            }
            meta.updated_ns = now;
            Ok(Vec::new())
        })
        .await
    }

    async fn delete_metadata(&self, u: &Unsealed, key: &str) -> Result<(), LogicalError> {
        self.refuse_if_pending(u, key).await?;
        for _ in 0..RETRIES {
            let Some((meta, rev)) = self.meta(u, key).await? else {
                return Ok(());
            };
            let mut batch = self.view.batch();
            for n in meta.versions.keys() {
                batch.delete(&format!("ver/{key}/{n}"));
            }
            batch.delete_expect(&format!("meta/{key}"), Expect::Rev(rev));
            // The secret's rotation policy (and its role index rows) goes with it.
            self.drop_rotation(u, key, &mut batch).await?;
            match batch.commit().await {
                Ok(()) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("too many concurrent writes to this key; try again".into()))
    }

    async fn list(&self, u: &Unsealed, prefix: &str) -> Result<Response, LogicalError> {
        check_prefix(prefix)?;
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let keys = self.view.list(u, &format!("meta/{prefix}")).await?;
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut data = Map::new();
        data.insert("keys".into(), keys.into());
        Ok(Response::data(data))
    }

    async fn handle_config(&self, u: &Unsealed, req: &Request) -> Result<Response, LogicalError> {
        match req.op {
            Operation::Read => {
                let cfg = self.config(u).await?;
                let mut m = Map::new();
                m.insert("cas_required".into(), cfg.cas_required.into());
                m.insert("delete_version_after".into(), go_duration(cfg.delete_version_after).into());
                m.insert("max_versions".into(), cfg.max_versions.into());
                Ok(Response::data(m))
            }
            Operation::Create | Operation::Update => {
                let mut cfg = self.config(u).await?;
                if let Some(m) = fields::count(&req.data, "max_versions")? {
                    cfg.max_versions = m;
                }
                if let Some(c) = fields::boolean(&req.data, "cas_required")? {
                    cfg.cas_required = c;
                }
                if let Some(d) = fields::duration(&req.data, "delete_version_after")? {
                    cfg.delete_version_after = d;
                }
                self.view.put(u, CONFIG_KEY, &to_json(&cfg)?).await?;
                Ok(Response::NoContent)
            }
            _ => Err(LogicalError::UnsupportedOperation),
        }
    }

    async fn dispatch(&self, auth: &Authorized, req: Request) -> Result<Response, LogicalError> {
        let u = auth.unsealed();
        let pattern = req.pattern();
        if pattern == CONFIG {
            return self.handle_config(u, &req).await;
        }
        // Every other path is `<section>/<key>`; the table routed it.
        let section = pattern.split('/').next().unwrap_or_default();
        let key = req.param("path");
        let path = req.path.as_str();
        if req.op == Operation::List {
            return self.list(u, key).await;
        }
        check_key(key)?;
        match (section, req.op) {
            ("data", Operation::Read) if req.data.contains_key("wait_for_version_after") => {
                self.watch_data(auth, key, &req.data).await
            }
            ("data", Operation::Read) => self.read_data(u, key, &req.data).await,
            ("data", Operation::Create | Operation::Update) => self.write_data(u, key, &req, false).await,
            ("data", Operation::Patch) => self.write_data(u, key, &req, true).await,
            ("data", Operation::Delete) => {
                let cfg = self.config(u).await?;
                let res = self
                    .update_meta(u, key, false, |meta, now| {
                        let cur = meta.current_version;
                        let deleted_already = meta.versions.get(&cur).map(|v| Self::is_deleted(&cfg, meta, v));
                        if let (Some(false), Some(v)) = (deleted_already, meta.versions.get_mut(&cur))
                            && !v.destroyed
                        {
                            v.deletion_ns = Some(now);
                        }
                        Ok(Vec::new())
                    })
                    .await;
                match res {
                    Ok(()) | Err(LogicalError::NotFound) => Ok(Response::NoContent),
                    Err(e) => Err(e),
                }
            }
            ("delete", Operation::Create | Operation::Update) => {
                let versions = version_list(&req.data)?;
                self.update_meta(u, key, false, |meta, now| {
                    for n in &versions {
                        if let Some(v) = meta.versions.get_mut(n)
                            && v.deletion_ns.is_none()
                            && !v.destroyed
                        {
                            v.deletion_ns = Some(now);
                        }
                    }
                    Ok(Vec::new())
                })
                .await
                .or_else(|e| if matches!(e, LogicalError::NotFound) { Ok(()) } else { Err(e) })?;
                Ok(Response::NoContent)
            }
            ("undelete", Operation::Create | Operation::Update) => {
                let versions = version_list(&req.data)?;
                self.update_meta(u, key, false, |meta, _| {
                    for n in &versions {
                        if let Some(v) = meta.versions.get_mut(n)
                            && !v.destroyed
                        {
                            v.deletion_ns = None;
                        }
                    }
                    Ok(Vec::new())
                })
                .await
                .or_else(|e| if matches!(e, LogicalError::NotFound) { Ok(()) } else { Err(e) })?;
                Ok(Response::NoContent)
            }
            ("destroy", Operation::Create | Operation::Update) => {
                let versions = version_list(&req.data)?;
                self.update_meta(u, key, false, |meta, _| {
                    let mut rows = Vec::new();
                    for n in &versions {
                        if let Some(v) = meta.versions.get_mut(n) {
                            v.destroyed = true;
                            rows.push(*n);
                        }
                    }
                    Ok(rows)
                })
                .await
                .or_else(|e| if matches!(e, LogicalError::NotFound) { Ok(()) } else { Err(e) })?;
                Ok(Response::NoContent)
            }
            ("metadata", Operation::Read) => {
                let cfg = self.config(u).await?;
                let (meta, _) = self.meta(u, key).await?.ok_or(LogicalError::NotFound)?;
                Ok(Response::data(Self::metadata_json(&cfg, &meta)))
            }
            ("metadata", Operation::Create | Operation::Update) => {
                self.write_metadata(u, key, &req.data, false).await?;
                Ok(Response::NoContent)
            }
            ("metadata", Operation::Patch) => {
                self.write_metadata(u, key, &req.data, true).await?;
                Ok(Response::NoContent)
            }
            ("metadata", Operation::Delete) => {
                self.delete_metadata(u, key).await?;
                Ok(Response::NoContent)
            }
            ("subkeys", Operation::Read) => self.read_subkeys(u, key, &req.data).await,
            ("rotation", Operation::Read) => self.read_rotation(u, key).await,
            ("rotation", Operation::Create | Operation::Update) => {
                self.set_rotation(auth, req.op, key, &req.data).await
            }
            ("rotation", Operation::Delete) => self.delete_rotation(auth, key, &req.data).await,
            ("rotate", Operation::Create | Operation::Update) => {
                // Boxed: the rotation's future is 4x any other here.
                let (cfg, meta, n) = Box::pin(self.rotate(u, key)).await?;
                let v = meta.versions.get(&n).cloned().unwrap_or_default();
                Ok(Response::data(Self::version_json(&cfg, &meta, n, &v)))
            }
            ("data" | "delete" | "undelete" | "destroy" | "metadata" | "subkeys" | "rotation" | "rotate", _) => {
                Err(LogicalError::UnsupportedOperation)
            }
            _ => Err(LogicalError::UnsupportedPath(path.to_string())),
        }
    }
}

const CONFIG: &str = "config";

/// KV v2's paths (Vault's `kv` version 2 API, plus `rotation/` and `rotate/`).
static PATHS: &[PathSpec] = {
    use Operation::*;
    &[
        PathSpec::new(CONFIG, &[Read, Update]).fields(&[
            Field::new("max_versions", FieldKind::Count),
            Field::new("cas_required", FieldKind::Bool),
            Field::new("delete_version_after", FieldKind::Duration),
        ]),
        PathSpec::new("data/{path+}", &[Read, Update, Patch, Delete])
            .existence_check()
            .fields(&[Field::new("version", FieldKind::Count), Field::new("wait_for_version_after", FieldKind::Count)]),
        PathSpec::new("metadata/{path*}", &[Read, Update, Patch, Delete, List]).existence_check().fields(&[
            Field::new("max_versions", FieldKind::Count),
            Field::new("cas_required", FieldKind::Bool),
            Field::new("delete_version_after", FieldKind::Duration),
        ]),
        PathSpec::new("delete/{path+}", &[Update]),
        PathSpec::new("undelete/{path+}", &[Update]),
        PathSpec::new("destroy/{path+}", &[Update]),
        PathSpec::new("subkeys/{path+}", &[Read]).fields(&[Field::new("version", FieldKind::Count)]),
        PathSpec::new("rotation/{path+}", &[Read, Update, Delete]),
        PathSpec::new("rotate/{path+}", &[Update]),
    ]
};

impl Backend for KvV2 {
    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }

    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move { self.dispatch(auth, crate::logical::paths::ensure_routed(PATHS, req)?).await })
    }

    fn create_is_update(&self) -> bool {
        true
    }

    fn periodic<'a>(&'a self, u: &'a Unsealed) -> BoxFuture<'a, ()> {
        Box::pin(self.run_due(u))
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async move {
            let key = match path.split_once('/') {
                Some(("data" | "metadata", k)) => k,
                _ => return Ok(None),
            };
            if check_key(key).is_err() {
                return Ok(None);
            }
            Ok(Some(self.meta(u, key).await?.is_some()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": ["b"]});
        merge_patch(&mut t, &json!({"a": "c", "n": {"x": 1}}));
        assert_eq!(t, json!({"a": "c", "n": {"x": 1}}));
    }

    #[test]
    fn subkeys_depth() {
        let v = json!({"a": 1, "b": {"c": {"d": 2}}});
        let Value::Object(m) = v else { panic!() };
        assert_eq!(Value::Object(subkeys(&m, 0, 1)), json!({"a": null, "b": {"c": {"d": null}}}));
        assert_eq!(Value::Object(subkeys(&m, 1, 1)), json!({"a": null, "b": null}));
        assert_eq!(Value::Object(subkeys(&m, 2, 1)), json!({"a": null, "b": {"c": null}}));
    }

    #[test]
    fn durations_and_paths() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(90), "1m30s");
        assert!(check_key("a/b").is_ok());
        assert!(check_key("a/../b").is_err());
        assert!(check_key("").is_err());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a/").is_ok());
        assert!(check_prefix("a//").is_err());
        assert_eq!(min_nonzero(0, 3), 3);
        assert_eq!(min_nonzero(5, 3), 3);
    }
}
