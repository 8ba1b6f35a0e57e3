//! What the two signed-token methods (JWT/OIDC in this module, Kubernetes in
//! `methods/kubernetes.rs`) share: the storage layout and routes, field
//! helpers, a secret string type, and how a failed login is answered and
//! charged to the client address.
//!
//! Storage layout within a mount's view:
//!
//! ```text
//! config          the method's configuration (JSON)
//! role/<name>     a role (JSON)
//! ```

use std::future::Future;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::auth::methods::MethodContext;
use crate::barrier::Unsealed;
use crate::barrier::view::View;
use crate::logical::fields::string_list;
use crate::logical::{Field, FieldKind, LogicalError, Login, Operation, PathSpec, Request, Response, fields};

/// Storage key of the mount's configuration.
pub(crate) const CONFIG_KEY: &str = "config";
/// Storage prefix of roles.
pub(crate) const ROLE_PREFIX: &str = "role/";

// ---------------------------------------------------------------------------
// A stored secret
// ---------------------------------------------------------------------------

/// A stored secret string (OIDC client secret, TokenReview reviewer token):
/// wiped from memory on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
    /// The secret without surrounding blanks (the untrimmed one is wiped).
    pub(crate) fn trimmed(self) -> Self {
        Self(self.0.trim().to_string())
    }
}

/// A secret string field removed from the request data (so no copy stays
/// behind in it); absent or null is empty.
pub(crate) fn take_secret(d: &mut Map<String, Value>, field: &str) -> Result<Secret, LogicalError> {
    match d.remove(field) {
        Some(Value::String(s)) => Ok(Secret::new(s)),
        None | Some(Value::Null) => Ok(Secret::default()),
        Some(_) => Err(bad(format!("invalid value for '{field}': expected a string"))),
    }
}

// ---------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------

pub(crate) fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

/// Vault's rule for names: letters, digits, `_`, `-`, `.`; first and last
/// character a letter, digit or `_`.
pub(crate) fn valid_name(name: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 256 && word(first) && word(last) && bytes.iter().all(|&b| word(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

pub(crate) fn role_name(raw: &str) -> Result<&str, LogicalError> {
    if valid_name(raw) {
        Ok(raw)
    } else {
        Err(bad(format!(
            "invalid role name \"{raw}\": use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'"
        )))
    }
}

/// A non-empty trimmed string field.
pub(crate) fn nonempty(d: &Map<String, Value>, field: &str) -> Result<Option<String>, LogicalError> {
    Ok(fields::string(d, field)?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
}

/// A list of strings with empty entries dropped.
pub(crate) fn clean_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    Ok(string_list(d, field)?.map(|l| l.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()))
}

/// A list of PEM blocks: a JSON list, or one string (no comma splitting, so
/// a bundle is never cut apart).
pub(crate) fn pem_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(if s.trim().is_empty() { Vec::new() } else { vec![s.trim().to_string()] })),
        Some(Value::Array(_)) => clean_list(d, field),
        Some(_) => Err(bad(format!("'{field}' must be a list of PEM strings"))),
    }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

pub(crate) const CONFIG: &str = "config";
pub(crate) const ROLES: &str = "role";
pub(crate) const ROLE: &str = "role/{name}";
pub(crate) const LOGIN: &str = "login";

/// The paths both methods serve (Vault's JWT/OIDC and Kubernetes APIs).
pub(crate) static PATHS: &[PathSpec] = {
    use Operation::*;
    &[
        PathSpec::new(CONFIG, &[Read, Update]).existence_check(),
        PathSpec::new(ROLES, &[List]),
        PathSpec::new(ROLE, &[Read, Update, Delete]).existence_check(),
        PathSpec::new(LOGIN, &[Update])
            .unauthenticated()
            .fields(&[Field::new("role", FieldKind::String), Field::new("jwt", FieldKind::String)]),
    ]
};

/// What JWT/OIDC and Kubernetes each do their own way; [`serve`] routes
/// their shared path table to it.
pub(crate) trait RoleMethod: Sync {
    /// The mount's storage and context.
    fn store(&self) -> &Store;
    /// `GET config`.
    fn read_config(&self, u: &Unsealed) -> impl Future<Output = Result<Response, LogicalError>> + Send;
    /// `POST config`.
    fn write_config(
        &self,
        u: &Unsealed,
        d: Map<String, Value>,
    ) -> impl Future<Output = Result<Response, LogicalError>> + Send;
    /// `GET role/{name}`.
    fn read_role(&self, u: &Unsealed, name: &str) -> impl Future<Output = Result<Response, LogicalError>> + Send;
    /// `POST role/{name}`.
    fn write_role(
        &self,
        u: &Unsealed,
        name: &str,
        d: &Map<String, Value>,
    ) -> impl Future<Output = Result<Response, LogicalError>> + Send;
    /// `POST login`.
    fn login(&self, u: &Unsealed, req: Request) -> impl Future<Output = Result<Response, LogicalError>> + Send;
}

/// Route a request of either method by [`PATHS`].
pub(crate) async fn serve<M: RoleMethod>(m: &M, u: &Unsealed, req: Request) -> Result<Response, LogicalError> {
    let req = crate::logical::paths::ensure_routed(PATHS, req)?;
    match (req.pattern(), req.op) {
        (CONFIG, Operation::Read) => m.read_config(u).await,
        (CONFIG, _) => m.write_config(u, req.data).await,
        (ROLES, _) => m.store().list_roles(u).await,
        (ROLE, op) => {
            let name = role_name(req.param("name"))?;
            match op {
                Operation::Read => m.read_role(u, name).await,
                Operation::Delete => m.store().delete_role(name).await,
                _ => m.write_role(u, name, &req.data).await,
            }
        }
        _ => m.login(u, req).await,
    }
}

// ---------------------------------------------------------------------------
// Storage and login answers
// ---------------------------------------------------------------------------

/// A mount's storage view and context.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) view: View,
    pub(crate) ctx: MethodContext,
}

impl Store {
    pub(crate) async fn load<T: for<'de> Deserialize<'de>>(
        &self,
        u: &Unsealed,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, LogicalError> {
        match self.view.get(u, key).await? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| LogicalError::internal(format!("corrupt {what} record: {e}"))),
            None => Ok(None),
        }
    }

    pub(crate) async fn store<T: Serialize>(&self, u: &Unsealed, key: &str, v: &T) -> Result<(), LogicalError> {
        let raw = serde_json::to_vec(v).map(Zeroizing::new).map_err(LogicalError::internal)?;
        self.view.put(u, key, &raw).await?;
        Ok(())
    }

    pub(crate) async fn load_role<T: for<'de> Deserialize<'de>>(
        &self,
        u: &Unsealed,
        name: &str,
    ) -> Result<Option<T>, LogicalError> {
        self.load(u, &format!("{ROLE_PREFIX}{name}"), "role").await
    }

    pub(crate) async fn store_role<T: Serialize>(
        &self,
        u: &Unsealed,
        name: &str,
        role: &T,
    ) -> Result<(), LogicalError> {
        self.store(u, &format!("{ROLE_PREFIX}{name}"), role).await
    }

    pub(crate) async fn delete_role(&self, name: &str) -> Result<Response, LogicalError> {
        self.view.delete(&format!("{ROLE_PREFIX}{name}")).await?;
        Ok(Response::NoContent)
    }

    pub(crate) async fn list_roles(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let keys: Vec<Value> = self
            .view
            .list(u, ROLE_PREFIX)
            .await?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .map(Value::String)
            .collect();
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut m = Map::new();
        m.insert("keys".into(), Value::Array(keys));
        Ok(Response::data(m))
    }

    /// `Backend::exists` for both methods: the config and roles are records.
    pub(crate) async fn exists(&self, u: &Unsealed, path: &str) -> Result<Option<bool>, LogicalError> {
        let key = match crate::logical::paths::find(PATHS, path) {
            Some(r) if r.pattern() == CONFIG => CONFIG_KEY.to_string(),
            Some(r) if r.pattern() == ROLE && valid_name(r.get("name")) => format!("{ROLE_PREFIX}{}", r.get("name")),
            _ => return Ok(None),
        };
        Ok(Some(self.view.get(u, &key).await?.is_some()))
    }

    /// The mount path as a display-name prefix (`jwt`, `auth-k8s`).
    pub(crate) fn display_prefix(&self) -> String {
        self.ctx.mount_path.trim_end_matches('/').replace('/', "-")
    }

    /// Answer a login; charge a refused token or a failed remote call to
    /// the client address. Never to the role: a signature cannot be
    /// guessed, and locking a role by name would let anyone lock out every
    /// workload of it.
    pub(crate) fn finish(&self, result: Result<Login, Fail>, addr: Option<IpAddr>) -> Result<Response, LogicalError> {
        match result {
            Ok(login) => Ok(Response::Login(Box::new(login))),
            Err(Fail::Denied(msg)) => {
                self.ctx.signed_failed(addr);
                Err(bad(msg))
            }
            Err(Fail::Upstream(msg)) => {
                self.ctx.signed_failed(addr);
                Err(LogicalError::Upstream(msg.into()))
            }
            Err(Fail::Error(e)) => Err(e),
        }
    }
}

/// Why a login failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The token was refused: 400, charged to the client address.
    Denied(String),
    /// A remote the login needed (JWKS, TokenReview) failed: 502 with this
    /// generic message (the detail is logged), charged to the address too,
    /// since a bad token can make us call it.
    Upstream(&'static str),
    /// Anything else (configuration, storage, CIDR binding): passed
    /// through, not charged.
    Error(LogicalError),
}

impl From<LogicalError> for Fail {
    fn from(e: LogicalError) -> Self {
        Fail::Error(e)
    }
}

pub(crate) fn denied(msg: impl Into<String>) -> Fail {
    Fail::Denied(msg.into())
}
