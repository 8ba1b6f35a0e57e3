//! The logical layer: requests and responses as engines see them, and the
//! [`Backend`] trait every secrets engine, auth method and the system
//! backend implement. Nothing here knows HTTP: the `http` module translates.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use serde_json::{Map, Value};

use crate::auth::Authorized;

pub mod fields;
pub mod kit;
pub mod paths;
pub mod stream;

pub use paths::{BodyKind, Field, FieldKind, PathSpec, Route};
pub use stream::{ByteStream, ChunkSource, RawBody};

/// What the caller wants to do (Vault's logical operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET.
    Read,
    /// LIST or GET with `list=true`.
    List,
    /// POST/PUT on a path that does not exist yet (decided by the backend's
    /// existence check; otherwise [`Update`](Self::Update)).
    Create,
    /// POST/PUT.
    Update,
    /// PATCH (JSON merge patch).
    Patch,
    /// DELETE.
    Delete,
}

impl Operation {
    /// The policy capability this operation needs.
    pub fn capability(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
        }
    }
}

/// A logical request. `path` is relative to the mount once routed.
/// `Debug` shows the field names of `data`, never their values (secrets).
pub struct Request {
    /// The operation.
    pub op: Operation,
    /// Path relative to the backend's mount point (no leading slash).
    pub path: String,
    /// Request data: the JSON body, or the query parameters of a read (for
    /// a streamed path: the query parameters only).
    pub data: Map<String, Value>,
    /// Caller's address, for CIDR bindings and lockouts.
    pub client_addr: Option<IpAddr>,
    /// The entry of the backend's path table that matched (None for
    /// backends without a table).
    pub route: Option<Route>,
    /// The body of a path declared [`BodyKind::Stream`], unread.
    pub stream: Option<ByteStream>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("op", &self.op)
            .field("path", &self.path)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("client_addr", &self.client_addr)
            .field("route", &self.route.as_ref().map(Route::pattern))
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request with no data.
    pub fn new(op: Operation, path: impl Into<String>) -> Self {
        Self { op, path: path.into(), data: Map::new(), client_addr: None, route: None, stream: None }
    }

    /// A capture of the matched route ("" when none).
    pub fn param(&self, name: &str) -> &str {
        self.route.as_ref().map_or("", |r| r.get(name))
    }

    /// The matched pattern ("" when the backend has no table).
    pub fn pattern(&self) -> &'static str {
        self.route.as_ref().map_or("", Route::pattern)
    }
}

/// Authentication result attached to a login response (Vault's `auth` block).
/// `Debug` redacts the token.
#[derive(Clone, Default, serde::Serialize)]
pub struct AuthInfo {
    /// The new token (secret: only ever sent to the client that logged in).
    pub client_token: String,
    /// The token's accessor.
    pub accessor: String,
    /// Effective policies.
    pub policies: Vec<String>,
    /// Policies attached to the token.
    pub token_policies: Vec<String>,
    /// Metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Seconds until expiry (0 = none).
    pub lease_duration: u64,
    /// Whether the token can be renewed.
    pub renewable: bool,
    /// Entity (identity) ID, empty until identity exists.
    pub entity_id: String,
    /// "service".
    pub token_type: String,
    /// Whether the token has no parent.
    pub orphan: bool,
    /// Remaining uses (0 = unlimited).
    pub num_uses: u64,
}

impl std::fmt::Debug for AuthInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInfo")
            .field("client_token", &"<redacted>")
            .field("accessor", &self.accessor)
            .field("policies", &self.policies)
            .field("lease_duration", &self.lease_duration)
            .finish_non_exhaustive()
    }
}

/// What an auth method returns on a successful login: the core (not the
/// method) mints the token, so no auth method ever touches the token store.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// Policies to attach (the core always adds `default` unless `no_default_policy`).
    pub policies: Vec<String>,
    /// Do not add the `default` policy.
    pub no_default_policy: bool,
    /// Token TTL in seconds (0: the mount's/system default).
    pub ttl: u64,
    /// Hard cap on the token's lifetime in seconds (0: system max).
    pub max_ttl: u64,
    /// Periodic token: renewals reset the TTL to this, without max (0: not periodic).
    pub period: u64,
    /// Uses before the token expires (0: unlimited).
    pub num_uses: u64,
    /// Shown in lookups, e.g. "approle" or the user name.
    pub display_name: String,
    /// Metadata (not secret: it is returned by lookups and logged by audit).
    pub metadata: Map<String, Value>,
    /// CIDRs the token may be used from (empty: anywhere).
    pub bound_cidrs: Vec<String>,
    /// Whether the token can be renewed.
    pub renewable: bool,
    /// Alias name for identity (e.g. the user name or role id).
    pub alias: String,
}

/// A logical response. `Debug` shows data keys only (values may be secrets).
pub enum Response {
    /// A successful login: the core creates the token and answers with Vault's
    /// `auth` block (plus optional warnings).
    Login(Box<Login>),
    /// Data in Vault's standard envelope.
    Data {
        /// `data` (may be absent, e.g. login responses).
        data: Option<Map<String, Value>>,
        /// `auth` block for logins.
        auth: Option<Box<AuthInfo>>,
        /// Warnings to show the caller.
        warnings: Vec<String>,
    },
    /// Success with nothing to say.
    NoContent,
    /// Nothing readable here, but what is known about the path is returned
    /// (KV v2: a deleted or destroyed version answers 404 with its metadata).
    NotFoundWithData(Map<String, Value>),
    /// Data with another status than 200: a batch in which some items failed
    /// answers 400 with every item's result (Vault's rule), or the status
    /// the caller chose for partial failures.
    DataWithStatus(u16, Map<String, Value>),
    /// `data` already serialized, with its status: a large batch's results
    /// written once, without building a tree to serialize. The engine must
    /// hand a JSON object (written with serde_json wherever text needs
    /// escaping): it is spliced into the envelope as is.
    Encoded(u16, String),
    /// Raw bytes or a byte stream with a content type, instead of the
    /// envelope (status 200).
    Raw {
        /// e.g. `application/octet-stream`.
        content_type: String,
        /// The body.
        body: RawBody,
    },
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Login(l) => f.debug_tuple("Login").field(&l.policies).finish(),
            Response::Data { data, auth, warnings } => f
                .debug_struct("Data")
                .field("data_keys", &data.as_ref().map(|d| d.keys().collect::<Vec<_>>()))
                .field("auth", auth)
                .field("warnings", warnings)
                .finish(),
            Response::NoContent => f.write_str("NoContent"),
            Response::NotFoundWithData(d) => {
                f.debug_tuple("NotFoundWithData").field(&d.keys().collect::<Vec<_>>()).finish()
            }
            Response::DataWithStatus(status, d) => {
                f.debug_tuple("DataWithStatus").field(status).field(&d.keys().collect::<Vec<_>>()).finish()
            }
            Response::Encoded(status, _) => f.debug_tuple("Encoded").field(status).finish_non_exhaustive(),
            Response::Raw { content_type, .. } => f.debug_struct("Raw").field("content_type", content_type).finish(),
        }
    }
}

impl Response {
    /// A plain data response.
    pub fn data(data: Map<String, Value>) -> Self {
        Response::Data { data: Some(data), auth: None, warnings: Vec::new() }
    }
    /// Build a data response from any JSON object value.
    pub fn json(value: Value) -> Self {
        match value {
            Value::Object(m) => Self::data(m),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                Self::data(m)
            }
        }
    }
}

/// Errors a backend returns; the HTTP layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogicalError {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller may not do this (403).
    #[error("permission denied")]
    PermissionDenied,
    /// Nothing at this path (404, empty error list as Vault does).
    #[error("not found")]
    NotFound,
    /// No handler for this path (404 with a message).
    #[error("unsupported path: {0}")]
    UnsupportedPath(String),
    /// The path exists but not for this operation (405).
    #[error("unsupported operation")]
    UnsupportedOperation,
    /// A check-and-set or concurrency precondition failed (400 in Vault).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts (429).
    #[error("{0}")]
    RateLimited(String),
    /// A system the vault drives on the caller's behalf (e.g. the database
    /// of a rotated role) failed or refused (502). The message names the
    /// failure, never a secret.
    #[error("{0}")]
    Upstream(String),
    /// The vault is sealed (503).
    #[error("Vault is sealed")]
    Sealed,
    /// The body is larger than the path allows (413).
    #[error("{0}")]
    TooLarge(String),
    /// The sender stalled (408).
    #[error("{0}")]
    TimedOut(String),
    /// The server is at a capacity limit; try again (503).
    #[error("{0}")]
    Busy(String),
    /// Something failed on our side. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl LogicalError {
    /// An internal error: `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        LogicalError::Internal(detail.to_string())
    }
}

impl From<crate::barrier::BarrierError> for LogicalError {
    fn from(e: crate::barrier::BarrierError) -> Self {
        match e {
            crate::barrier::BarrierError::Sealed => LogicalError::Sealed,
            crate::barrier::BarrierError::Storage(s @ crate::storage::StorageError::InvalidPath(_)) => {
                LogicalError::InvalidRequest(s.to_string())
            }
            other => LogicalError::internal(other),
        }
    }
}

/// `path` with its `index`-th `/`-separated segment lowercased, when
/// `path` starts with `prefix` and that segment has an uppercase letter:
/// the shared form of [`Backend::canonical_path`] for backends whose names
/// are case-insensitive (policies, AppRole roles, userpass users).
pub fn fold_segment(path: &str, prefix: &str, index: usize) -> Option<String> {
    if !path.starts_with(prefix) {
        return None;
    }
    let seg = path.split('/').nth(index)?;
    if !seg.chars().any(char::is_uppercase) {
        return None;
    }
    Some(
        path.split('/')
            .enumerate()
            .map(|(i, s)| if i == index { s.to_lowercase() } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// Boxed future returned by [`Backend::handle`] (the trait must be object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A mounted engine: secrets engine, auth method or the system backend.
///
/// Every call carries an [`Authorized`] value, which only the policy check
/// can make: a backend cannot be reached without one.
pub trait Backend: Send + Sync + 'static {
    /// Handle a request routed to this mount (`req.path` is mount-relative).
    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>>;

    /// Whether `path` (mount-relative) exists, so a write can be classified
    /// as `create` or `update` for the policy check. `None`: no distinction
    /// (writes are `update`).
    fn exists<'a>(
        &'a self,
        _unsealed: &'a crate::barrier::Unsealed,
        _path: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async { Ok(None) })
    }

    /// [`exists`](Self::exists) given the route the core already matched
    /// (a backend with a path table need not match `path` again).
    fn exists_routed<'a>(
        &'a self,
        unsealed: &'a crate::barrier::Unsealed,
        path: &'a str,
        _route: Option<&'a Route>,
    ) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        self.exists(unsealed, path)
    }

    /// True when the backend handles `Create` and `Update` alike, so that
    /// [`exists`](Self::exists) only matters to the policy check (KV).
    fn create_is_update(&self) -> bool {
        false
    }

    /// The canonical form of a mount-relative path when this backend folds
    /// names (e.g. lowercases role or policy names), or None if `path` is
    /// already canonical. The core checks the policy against the canonical
    /// path and hands that same path to the backend, so a deny rule on
    /// `role/admin` cannot be bypassed with `role/ADMIN`.
    fn canonical_path(&self, _path: &str) -> Option<String> {
        None
    }

    /// The backend's path table (see [`paths`]): the core routes by it (an
    /// unmatched path is 404, an operation it does not list is 405), reads
    /// `unauthenticated`, `sudo`, the existence check and the body kind from
    /// it, validates declared fields, and passes the match as
    /// [`Request::route`]. A backend without a table (tests) gets every path
    /// of its mount, with a token, no `sudo`, JSON bodies.
    fn paths(&self) -> &'static [PathSpec] {
        &[]
    }

    /// Largest streamed body accepted on this mount's stream paths.
    fn stream_limit(&self) -> u64 {
        DEFAULT_STREAM_LIMIT
    }

    /// Another server changed storage under this mount (`path` is
    /// mount-relative; None: anything may have changed). Backends with
    /// in-memory state derived from storage drop or reload it here; the
    /// change feed calls this (Vault's `InvalidateFunc`).
    fn invalidate(&self, _path: Option<&str>) {}

    /// Background work, called by the core every scheduler interval while
    /// unsealed (KV v2: due rotations). Must make its work run once across
    /// servers sharing the storage, and must not fail loudly: errors are the
    /// engine's to record.
    fn periodic<'a>(&'a self, _unsealed: &'a crate::barrier::Unsealed) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Called once when the mount is removed (on every server that sees the
    /// removal) or the vault seals: engines with background work or caches
    /// stop and drop them here. The mount's data is deleted by the core.
    fn shutdown(&self) {}
}

/// Default of [`Backend::stream_limit`]: 16 GiB.
pub const DEFAULT_STREAM_LIMIT: u64 = 16 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_values() {
        let mut r = Request::new(Operation::Update, "auth/userpass/login/bob");
        r.data.insert("password".into(), "hunter2-CANARY".into());
        let d = format!("{r:?}");
        assert!(d.contains("password") && !d.contains("CANARY"), "{d}");
        let a = AuthInfo { client_token: "hvs.SECRETSECRET".into(), ..Default::default() };
        let resp = Response::Data { data: None, auth: Some(Box::new(a)), warnings: vec![] };
        assert!(!format!("{resp:?}").contains("SECRETSECRET"));
        let mut m = Map::new();
        m.insert("password".into(), "VALUE-CANARY".into());
        assert!(!format!("{:?}", Response::data(m)).contains("VALUE-CANARY"));
    }
}
