//! The AppRole auth method (Vault's `approle`), for machines: a client logs in
//! with a role ID (an identifier, like a user name) and a secret ID (the
//! credential), and gets a token with the role's policies.
//!
//! Storage, inside the mount's view (values are barrier-encrypted; paths are
//! stored in the clear, so no secret and no role ID ever appears in a path):
//!
//! | path                                   | value                                   |
//! |----------------------------------------|-----------------------------------------|
//! | `config/hmac-key`                      | the mount's random 256-bit HMAC key     |
//! | `role/<name>`                          | the role                                |
//! | `role-id/<hmac(role_id)>`              | role ID → role name index               |
//! | `secret-id/<role uuid>/<hmac(secret)>` | a secret ID's properties (never itself) |
//! | `accessor/<role uuid>/<hmac(acc)>`     | accessor → secret ID hash               |
//!
//! Secret IDs are stored only under their keyed hash (HMAC-SHA-256 with the
//! per-mount key), so a copy of the database yields no usable secret ID, and
//! a login finds the entry by recomputing the hash: no secret is compared as
//! a string. Each role has a random `uuid` that prefixes its secret IDs, so
//! a role deleted and created again under the same name never inherits old
//! secret IDs, even if the clean-up of the old ones was interrupted.
//!
//! Use counts are decremented with a revision precondition (`Expect::Rev`):
//! of two concurrent logins with the last use of a secret ID, one wins and
//! the other re-reads, finds the entry gone, and fails.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{MethodContext, TokenSettings};
use crate::auth::Authorized;
use crate::auth::cidr::{self, Cidr};
use crate::barrier::view::View;
use crate::barrier::{BarrierError, Unsealed, now_unix};
use crate::crypto::hmac::{HmacKey, ct_eq};
use crate::crypto::random;
use crate::logical::fields::rfc3339;
use crate::logical::fields::string_list;
use crate::logical::{
    Backend, BoxFuture, Field, FieldKind, LogicalError, Login, Operation, PathSpec, Request, Response, fields,
};
use crate::storage::{Expect, StorageError};

/// The one answer for an unknown role ID and a wrong, expired, used-up or
/// destroyed secret ID: a caller cannot tell which part was wrong.
const INVALID_CREDENTIALS: &str = "invalid role or secret ID";

/// Where the mount's HMAC key lives.
const KEY_PATH: &str = "config/hmac-key";

/// HMAC labels: one per kind of value, so hashes of different kinds never collide.
const LABEL_ROLE_ID: &[u8] = b"approle/role-id";
const LABEL_SECRET_ID: &[u8] = b"approle/secret-id";
const LABEL_ACCESSOR: &[u8] = b"approle/secret-id-accessor";

/// Role names, role IDs and secret IDs longer than this are refused.
const MAX_LEN: usize = 4096;

/// Optimistic-concurrency retries before giving up with a conflict.
const MAX_RETRIES: usize = 16;

/// Deletes per storage batch when removing many secret IDs.
const DELETE_CHUNK: usize = 256;

/// Longest secret ID TTL accepted. Vault sets no bound, but a TTL so long
/// that the expiry time saturates would silently mean "never" (0 says that
/// explicitly), and the expiry must stay a representable RFC 3339 time.
const MAX_SECRET_ID_TTL: u64 = 100 * 365 * 24 * 3600;

/// What Vault reports as the expiration of a secret ID that never expires (Go's zero time).
const NEVER: &str = "0001-01-01T00:00:00Z";

/// The legacy names of token settings a role write accepts (and a read returns).
const LEGACY: &[&str] = &["policies", "period"];

/// Fields a role write understands (others are ignored with a warning, as Vault does).
const ROLE_FIELDS: &[&str] = &[
    "role_name",
    "role_id",
    "bind_secret_id",
    "secret_id_bound_cidrs",
    "bound_cidr_list",
    "secret_id_num_uses",
    "secret_id_ttl",
    "local_secret_ids",
    "token_ttl",
    "token_max_ttl",
    "token_explicit_max_ttl",
    "token_policies",
    "policies",
    "token_bound_cidrs",
    "token_num_uses",
    "token_period",
    "period",
    "token_no_default_policy",
    "token_type",
];

/// Vault's per-property endpoints `role/<name>/<property>`: the path segment,
/// the field names it accepts (the first is the canonical one), the value a
/// DELETE restores, and the names a read returns.
struct Property {
    segment: &'static str,
    accepts: &'static [&'static str],
    default: fn() -> Value,
    reads: &'static [&'static str],
}

fn empty_list() -> Value {
    Value::Array(Vec::new())
}
fn zero() -> Value {
    Value::from(0)
}
fn yes() -> Value {
    Value::Bool(true)
}

const PROPERTIES: &[Property] = &[
    Property {
        segment: "policies",
        accepts: &["token_policies", "policies"],
        default: empty_list,
        reads: &["policies", "token_policies"],
    },
    Property {
        segment: "secret-id-num-uses",
        accepts: &["secret_id_num_uses"],
        default: zero,
        reads: &["secret_id_num_uses"],
    },
    Property { segment: "secret-id-ttl", accepts: &["secret_id_ttl"], default: zero, reads: &["secret_id_ttl"] },
    Property { segment: "token-ttl", accepts: &["token_ttl"], default: zero, reads: &["token_ttl"] },
    Property { segment: "token-max-ttl", accepts: &["token_max_ttl"], default: zero, reads: &["token_max_ttl"] },
    Property { segment: "token-num-uses", accepts: &["token_num_uses"], default: zero, reads: &["token_num_uses"] },
    Property { segment: "bind-secret-id", accepts: &["bind_secret_id"], default: yes, reads: &["bind_secret_id"] },
    Property {
        segment: "secret-id-bound-cidrs",
        accepts: &["secret_id_bound_cidrs"],
        default: empty_list,
        reads: &["secret_id_bound_cidrs"],
    },
    Property {
        segment: "token-bound-cidrs",
        accepts: &["token_bound_cidrs"],
        default: empty_list,
        reads: &["token_bound_cidrs"],
    },
    Property {
        segment: "period",
        accepts: &["token_period", "period"],
        default: zero,
        reads: &["period", "token_period"],
    },
];

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

fn is_conflict(e: &BarrierError) -> bool {
    matches!(e, BarrierError::Storage(StorageError::Conflict(_)))
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, LogicalError> {
    serde_json::from_slice(raw).map_err(|e| LogicalError::internal(format!("malformed approle record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, LogicalError> {
    serde_json::to_vec(v).map(Zeroizing::new).map_err(LogicalError::internal)
}

fn role_path(name: &str) -> String {
    format!("role/{name}")
}
fn role_id_path(mac: &str) -> String {
    format!("role-id/{mac}")
}
fn secret_path(uuid: &str, mac: &str) -> String {
    format!("secret-id/{uuid}/{mac}")
}
fn accessor_path(uuid: &str, mac: &str) -> String {
    format!("accessor/{uuid}/{mac}")
}

/// Seconds as a signed offset, saturating.
fn secs(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Validate and normalise a role name: role names are case-insensitive (as
/// in Vault) and limited to letters, digits, space, `-`, `_` and `.`.
fn role_name(raw: &str) -> Result<String, LogicalError> {
    if raw.is_empty() {
        return Err(bad("missing role_name"));
    }
    if raw.len() >= MAX_LEN {
        return Err(bad("role_name must be less than 4096 bytes"));
    }
    if !raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
        || raw.chars().all(|c| c == '.')
    {
        return Err(bad(format!(
            "invalid role_name \"{raw}\": only letters, digits, space, hyphen, underscore and period are allowed"
        )));
    }
    Ok(raw.to_ascii_lowercase())
}

/// A non-negative integer field.
fn count(d: &Map<String, Value>, field: &str) -> Result<Option<u64>, LogicalError> {
    match fields::int(d, field)? {
        None => Ok(None),
        Some(n) => u64::try_from(n).map(Some).map_err(|_| bad(format!("{field} cannot be negative"))),
    }
}

/// A secret ID TTL (seconds; 0: never expires), bounded by [`MAX_SECRET_ID_TTL`].
fn secret_ttl(d: &Map<String, Value>, field: &str) -> Result<Option<u64>, LogicalError> {
    match fields::duration(d, field)? {
        Some(t) if t > MAX_SECRET_ID_TTL => {
            Err(bad(format!("{field} cannot be longer than 100 years (use 0 for secret IDs that never expire)")))
        }
        other => Ok(other),
    }
}

/// A list of CIDR blocks (JSON list or comma-separated string), validated.
fn cidr_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    let Some(list) = string_list(d, field)? else { return Ok(None) };
    let list: Vec<String> = list.into_iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    cidr::validate(&list).map_err(|e| bad(format!("{field}: {e}")))?;
    Ok(Some(list))
}

/// Address and prefix length of a CIDR string (already validated).
fn network(s: &str) -> Option<(IpAddr, u8)> {
    Cidr::parse(s)?;
    let s = s.trim();
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let len = match p {
        Some(p) => p.parse().ok()?,
        None if addr.is_ipv4() => 32,
        None => 128,
    };
    Some((addr, len))
}

/// Is every block of `inner` inside some block of `outer`? An empty `outer`
/// places no restriction.
fn cidrs_within(inner: &[String], outer: &[String]) -> bool {
    if outer.is_empty() {
        return true;
    }
    inner.iter().all(|i| {
        let Some((addr, len)) = network(i) else { return false };
        outer.iter().any(|o| match (Cidr::parse(o), network(o)) {
            (Some(block), Some((oaddr, olen))) => {
                oaddr.is_ipv4() == addr.is_ipv4() && olen <= len && block.contains(addr)
            }
            _ => false,
        })
    })
}

fn show_addr(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// Secret ID metadata: a JSON object of strings, given either as an object
/// or (as Vault documents and hvac sends) as a JSON-encoded string.
fn metadata(d: &Map<String, Value>) -> Result<Map<String, Value>, LogicalError> {
    let err = || bad("'metadata' must be a JSON object whose values are strings");
    let value = match d.get("metadata") {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Map::new()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| err())?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(err()),
    };
    let mut wrapped = Map::new();
    wrapped.insert("metadata".into(), value);
    fields::string_map(&wrapped, "metadata").map_err(|_| err())?.ok_or_else(err)
}

/// A required string field, trimmed.
fn required(d: &Map<String, Value>, field: &str) -> Result<Zeroizing<String>, LogicalError> {
    let v = fields::string(d, field)?.map(|s| Zeroizing::new(s.trim().to_string()));
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(bad(format!("missing {field}"))),
    }
}

/// A role as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
struct Role {
    /// Random, fixed at creation: the prefix of this role's secret IDs.
    uuid: String,
    /// The role ID (an identifier, not a secret).
    role_id: String,
    bind_secret_id: bool,
    secret_id_bound_cidrs: Vec<String>,
    secret_id_num_uses: u64,
    secret_id_ttl: u64,
    local_secret_ids: bool,
    /// Token settings (stored inline, under their `token_*` names).
    #[serde(flatten)]
    token: TokenSettings,
}

impl Default for Role {
    fn default() -> Self {
        Self {
            uuid: String::new(),
            role_id: String::new(),
            bind_secret_id: true,
            secret_id_bound_cidrs: Vec::new(),
            secret_id_num_uses: 0,
            secret_id_ttl: 0,
            local_secret_ids: false,
            token: TokenSettings::default(),
        }
    }
}

impl Role {
    /// Apply the fields present in `d` (absent fields keep their value).
    fn apply(&mut self, d: &Map<String, Value>, creating: bool) -> Result<(), LogicalError> {
        if let Some(id) = fields::string(d, "role_id")? {
            let id = id.trim();
            if id.is_empty() {
                return Err(bad("role_id cannot be empty"));
            }
            if id.len() >= MAX_LEN {
                return Err(bad("role_id must be less than 4096 bytes"));
            }
            self.role_id = id.to_string();
        }
        if let Some(b) = fields::boolean(d, "bind_secret_id")? {
            self.bind_secret_id = b;
        }
        if let Some(l) = cidr_list(d, "secret_id_bound_cidrs")? {
            self.secret_id_bound_cidrs = l;
        } else if let Some(l) = cidr_list(d, "bound_cidr_list")? {
            self.secret_id_bound_cidrs = l;
        }
        if let Some(n) = count(d, "secret_id_num_uses")? {
            self.secret_id_num_uses = n;
        }
        if let Some(t) = secret_ttl(d, "secret_id_ttl")? {
            self.secret_id_ttl = t;
        }
        if let Some(l) = fields::boolean(d, "local_secret_ids")? {
            if !creating && l != self.local_secret_ids {
                return Err(bad("local_secret_ids can only be set when the role is created"));
            }
            self.local_secret_ids = l;
        }
        self.token.update_from(d, LEGACY)?;
        self.validate()
    }

    fn validate(&self) -> Result<(), LogicalError> {
        if !self.bind_secret_id && self.secret_id_bound_cidrs.is_empty() && self.token.token_bound_cidrs.is_empty() {
            return Err(bad(
                "at least one constraint should be enabled on the role (bind_secret_id, secret_id_bound_cidrs or token_bound_cidrs)",
            ));
        }
        Ok(())
    }

    /// The role as Vault's read returns it (the role ID has its own endpoint).
    fn data(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("bind_secret_id".into(), self.bind_secret_id.into());
        m.insert("local_secret_ids".into(), self.local_secret_ids.into());
        m.insert("secret_id_bound_cidrs".into(), self.secret_id_bound_cidrs.clone().into());
        m.insert("secret_id_num_uses".into(), self.secret_id_num_uses.into());
        m.insert("secret_id_ttl".into(), self.secret_id_ttl.into());
        self.token.write_to(&mut m, LEGACY);
        m
    }
}

/// `role-id/<hmac>` → role name.
#[derive(Debug, Serialize, Deserialize)]
struct RoleIdIndex {
    name: String,
}

/// A secret ID's properties (never the secret ID itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct SecretIdEntry {
    accessor: String,
    creation_time: i64,
    /// Unix seconds; 0: never expires.
    expiration_time: i64,
    last_updated_time: i64,
    /// Uses left; 0: unlimited.
    num_uses: u64,
    /// The TTL it was created with (seconds; 0: none).
    ttl: u64,
    cidr_list: Vec<String>,
    token_bound_cidrs: Vec<String>,
    metadata: Map<String, Value>,
}

impl SecretIdEntry {
    fn expired(&self, now: i64) -> bool {
        self.expiration_time != 0 && now >= self.expiration_time
    }

    /// Vault's secret ID lookup data.
    fn data(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("cidr_list".into(), self.cidr_list.clone().into());
        m.insert("creation_time".into(), rfc3339(self.creation_time).into());
        let exp = if self.expiration_time == 0 { NEVER.to_string() } else { rfc3339(self.expiration_time) };
        m.insert("expiration_time".into(), exp.into());
        m.insert("last_updated_time".into(), rfc3339(self.last_updated_time).into());
        m.insert("metadata".into(), Value::Object(self.metadata.clone()));
        m.insert("secret_id_accessor".into(), self.accessor.clone().into());
        m.insert("secret_id_num_uses".into(), self.num_uses.into());
        m.insert("secret_id_ttl".into(), self.ttl.into());
        m.insert("token_bound_cidrs".into(), self.token_bound_cidrs.clone().into());
        m
    }
}

/// `accessor/<role uuid>/<hmac>` → the secret ID's hash.
#[derive(Debug, Serialize, Deserialize)]
struct AccessorEntry {
    accessor: String,
    secret_id_hmac: String,
    #[serde(default)]
    expiration_time: i64,
}

/// Why a login failed.
#[derive(Debug)]
enum Refusal {
    /// Unknown role ID, or a wrong/expired/used secret ID: one message for all.
    Invalid,
    /// The caller's address is not allowed (the message says so).
    Address(String),
    /// Not the caller's fault (storage, internal): not counted as a failure.
    Error(LogicalError),
}

impl From<LogicalError> for Refusal {
    fn from(e: LogicalError) -> Self {
        Refusal::Error(e)
    }
}

impl From<BarrierError> for Refusal {
    fn from(e: BarrierError) -> Self {
        Refusal::Error(e.into())
    }
}

/// The AppRole auth method for one mount.
#[derive(Debug)]
pub struct AppRole {
    view: View,
    ctx: MethodContext,
    /// The mount's HMAC key, loaded (or created) on first use, forgotten on seal.
    key: Mutex<Option<Arc<HmacKey>>>,
}

impl AppRole {
    /// The method over its storage view.
    pub fn new(view: View, ctx: MethodContext) -> Self {
        Self { view, ctx, key: Mutex::new(None) }
    }

    /// The mount's HMAC key: read it, or create it on first use. Two servers
    /// racing to create it agree because the write requires the path absent.
    async fn key(&self, u: &Unsealed) -> Result<Arc<HmacKey>, LogicalError> {
        let cached = self.key.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(k) = cached {
            return Ok(k);
        }
        let key = Arc::new(self.load_or_create_key(u).await?);
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(key)
    }

    async fn load_or_create_key(&self, u: &Unsealed) -> Result<HmacKey, LogicalError> {
        for _ in 0..MAX_RETRIES {
            if let Some(raw) = self.view.get(u, KEY_PATH).await? {
                if raw.len() != 32 {
                    return Err(LogicalError::internal("the stored approle HMAC key is malformed"));
                }
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(&raw);
                return Ok(HmacKey::new(k));
            }
            let k = random::key32().map_err(LogicalError::internal)?;
            let mut b = self.view.batch();
            b.put_expect(u, KEY_PATH, &k[..], Expect::Absent);
            match b.commit().await {
                Ok(()) => return Ok(HmacKey::new(k)),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::internal("could not create the approle HMAC key"))
    }

    async fn role(&self, u: &Unsealed, name: &str) -> Result<Option<(Role, i64)>, LogicalError> {
        match self.view.get_with_rev(u, &role_path(name)).await? {
            Some((raw, rev)) => Ok(Some((decode(&raw)?, rev))),
            None => Ok(None),
        }
    }

    async fn existing_role(&self, u: &Unsealed, name: &str) -> Result<Role, LogicalError> {
        match self.role(u, name).await? {
            Some((r, _)) => Ok(r),
            None => Err(bad(format!("role \"{name}\" does not exist"))),
        }
    }

    async fn route(&self, u: &Unsealed, req: Request) -> Result<Response, LogicalError> {
        let req = crate::logical::paths::ensure_routed(PATHS, req)?;
        let op = req.op;
        let d = &req.data;
        let pattern = req.pattern();
        if pattern == TIDY {
            return self.tidy(u).await;
        }
        if pattern == LOGIN {
            return self.login(u, &req).await;
        }
        if pattern == ROLES {
            return self.list_roles(u).await;
        }
        let name = role_name(req.param("name"))?;
        match pattern {
            ROLE => match op {
                Operation::Read => {
                    let (role, _) = self.role(u, &name).await?.ok_or(LogicalError::NotFound)?;
                    Ok(Response::data(role.data()))
                }
                Operation::Delete => self.delete_role(u, &name).await,
                _ => self.write_role(u, &name, d, false).await,
            },
            ROLE_ID => match op {
                Operation::Read => {
                    let (role, _) = self.role(u, &name).await?.ok_or(LogicalError::NotFound)?;
                    let mut m = Map::new();
                    m.insert("role_id".into(), role.role_id.into());
                    Ok(Response::data(m))
                }
                _ => {
                    let id = required(d, "role_id")?;
                    let mut only = Map::new();
                    only.insert("role_id".into(), Value::String(id.to_string()));
                    self.write_role(u, &name, &only, true).await
                }
            },
            SECRET_ID => match op {
                Operation::List => self.list_accessors(u, &name).await,
                _ => self.create_secret_id(u, &name, d, None).await,
            },
            CUSTOM_SECRET_ID => {
                let secret = required(d, "secret_id")?;
                self.create_secret_id(u, &name, d, Some(secret)).await
            }
            SECRET_ID_LOOKUP | SECRET_ID_DESTROY => {
                let secret = required(d, "secret_id")?;
                self.by_secret_id(u, &name, &secret, pattern == SECRET_ID_DESTROY).await
            }
            ACCESSOR_LOOKUP | ACCESSOR_DESTROY => {
                let accessor = required(d, "secret_id_accessor")?;
                self.by_accessor(u, &name, &accessor, pattern == ACCESSOR_DESTROY).await
            }
            // PROPERTY: `property` checks the segment names one.
            _ => self.property(u, &name, req.param("property"), op, d).await,
        }
    }

    async fn list_roles(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let keys: Vec<String> = self.view.list(u, "role/").await?.into_iter().filter(|k| !k.ends_with('/')).collect();
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut m = Map::new();
        m.insert("keys".into(), keys.into());
        Ok(Response::data(m))
    }

    /// Create or update a role (merge: absent fields keep their value), and
    /// keep the role ID index in step, atomically.
    async fn write_role(
        &self,
        u: &Unsealed,
        name: &str,
        d: &Map<String, Value>,
        must_exist: bool,
    ) -> Result<Response, LogicalError> {
        let key = self.key(u).await?;
        let path = role_path(name);
        for _ in 0..MAX_RETRIES {
            let current = self.role(u, name).await?;
            if must_exist && current.is_none() {
                return Err(bad(format!("role \"{name}\" does not exist")));
            }
            let rev = current.as_ref().map(|(_, rev)| *rev);
            let mut role = current.map(|(r, _)| r).unwrap_or_default();
            let old_role_id = role.role_id.clone();
            role.apply(d, rev.is_none())?;
            if role.uuid.is_empty() {
                role.uuid = random::uuid();
            }
            if role.role_id.is_empty() {
                role.role_id = random::uuid();
            }

            let mut b = self.view.batch();
            let json = encode(&role)?;
            b.put_expect(u, &path, &json, rev.map_or(Expect::Absent, Expect::Rev));
            if role.role_id != old_role_id {
                let new_index = role_id_path(&key.mac_hex(LABEL_ROLE_ID, role.role_id.as_bytes()));
                let index_json = encode(&RoleIdIndex { name: name.to_string() })?;
                match self.view.get_with_rev(u, &new_index).await? {
                    None => {
                        b.put_expect(u, &new_index, &index_json, Expect::Absent);
                    }
                    Some((raw, index_rev)) => {
                        let other: RoleIdIndex = decode(&raw)?;
                        if other.name != name {
                            return Err(bad("the role_id is already in use by another role"));
                        }
                        b.put_expect(u, &new_index, &index_json, Expect::Rev(index_rev));
                    }
                }
                if !old_role_id.is_empty() {
                    b.delete(&role_id_path(&key.mac_hex(LABEL_ROLE_ID, old_role_id.as_bytes())));
                }
            }
            match b.commit().await {
                Ok(()) => {
                    let unknown: Vec<&str> =
                        d.keys().map(String::as_str).filter(|k| !ROLE_FIELDS.contains(k)).collect();
                    if unknown.is_empty() {
                        return Ok(Response::NoContent);
                    }
                    return Ok(Response::Data {
                        data: None,
                        auth: None,
                        warnings: vec![format!("Endpoint ignored these unrecognized parameters: {unknown:?}")],
                    });
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict(format!("role \"{name}\" was modified concurrently; retry")))
    }

    /// Delete a role, its role ID index and all its secret IDs.
    async fn delete_role(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let key = self.key(u).await?;
        for _ in 0..MAX_RETRIES {
            let Some((role, rev)) = self.role(u, name).await? else { return Ok(Response::NoContent) };
            // Role and index go first, together: from then on no login can
            // reach the secret IDs, whose removal follows.
            let mut b = self.view.batch();
            b.delete_expect(&role_path(name), Expect::Rev(rev));
            b.delete(&role_id_path(&key.mac_hex(LABEL_ROLE_ID, role.role_id.as_bytes())));
            match b.commit().await {
                Ok(()) => {
                    self.purge_secret_ids(u, &role.uuid).await?;
                    return Ok(Response::NoContent);
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict(format!("role \"{name}\" was modified concurrently; retry")))
    }

    /// Remove every secret ID and accessor under a role's uuid.
    async fn purge_secret_ids(&self, u: &Unsealed, uuid: &str) -> Result<usize, LogicalError> {
        let mut removed = 0;
        for dir in [format!("secret-id/{uuid}/"), format!("accessor/{uuid}/")] {
            let keys = self.view.list(u, &dir).await?;
            for chunk in keys.chunks(DELETE_CHUNK) {
                let mut b = self.view.batch();
                for k in chunk {
                    b.delete(&format!("{dir}{k}"));
                }
                b.commit().await?;
            }
            if dir.starts_with("secret-id/") {
                removed += keys.len();
            }
        }
        Ok(removed)
    }

    /// GET/POST/DELETE `role/<name>/<property>`.
    async fn property(
        &self,
        u: &Unsealed,
        name: &str,
        segment: &str,
        op: Operation,
        d: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let Some(prop) = PROPERTIES.iter().find(|p| p.segment == segment) else {
            return Err(LogicalError::UnsupportedPath(format!("role/{name}/{segment}")));
        };
        match op {
            Operation::Read => {
                let (role, _) = self.role(u, name).await?.ok_or(LogicalError::NotFound)?;
                let all = role.data();
                let mut m = Map::new();
                for f in prop.reads {
                    if let Some(v) = all.get(*f) {
                        m.insert((*f).to_string(), v.clone());
                    }
                }
                Ok(Response::data(m))
            }
            Operation::Create | Operation::Update => {
                let Some((field, value)) =
                    prop.accepts.iter().find_map(|f| d.get(*f).filter(|v| !v.is_null()).map(|v| (*f, v.clone())))
                else {
                    return Err(bad(format!("missing {}", prop.accepts[0])));
                };
                let mut only = Map::new();
                only.insert(field.to_string(), value);
                self.write_role(u, name, &only, true).await
            }
            Operation::Delete => {
                let mut only = Map::new();
                only.insert(prop.accepts[0].to_string(), (prop.default)());
                self.write_role(u, name, &only, true).await
            }
            _ => Err(LogicalError::UnsupportedOperation),
        }
    }

    /// POST `role/<name>/secret-id` (generated) or `custom-secret-id`.
    async fn create_secret_id(
        &self,
        u: &Unsealed,
        name: &str,
        d: &Map<String, Value>,
        custom: Option<Zeroizing<String>>,
    ) -> Result<Response, LogicalError> {
        let key = self.key(u).await?;
        let role = self.existing_role(u, name).await?;
        if !role.bind_secret_id {
            return Err(bad("bind_secret_id is not set on the role"));
        }
        if let Some(s) = &custom
            && s.len() >= MAX_LEN
        {
            return Err(bad("secret_id must be less than 4096 bytes"));
        }
        let cidrs = cidr_list(d, "cidr_list")?.unwrap_or_default();
        if !cidrs_within(&cidrs, &role.secret_id_bound_cidrs) {
            return Err(bad("cidr_list must be a subset of the role's secret_id_bound_cidrs"));
        }
        let token_cidrs = cidr_list(d, "token_bound_cidrs")?.unwrap_or_default();
        if !cidrs_within(&token_cidrs, &role.token.token_bound_cidrs) {
            return Err(bad("token_bound_cidrs must be a subset of the role's token_bound_cidrs"));
        }
        let num_uses = match count(d, "num_uses")? {
            None => role.secret_id_num_uses,
            Some(n) if role.secret_id_num_uses > 0 && (n == 0 || n > role.secret_id_num_uses) => {
                return Err(bad("num_uses cannot be higher than the role's secret_id_num_uses"));
            }
            Some(n) => n,
        };
        let ttl = match secret_ttl(d, "ttl")? {
            None => role.secret_id_ttl,
            Some(t) if role.secret_id_ttl > 0 && (t == 0 || t > role.secret_id_ttl) => {
                return Err(bad("ttl cannot be longer than the role's secret_id_ttl"));
            }
            Some(t) => t,
        };
        let metadata = metadata(d)?;

        for _ in 0..MAX_RETRIES {
            let secret = match &custom {
                Some(s) => s.clone(),
                None => Zeroizing::new(random::uuid()),
            };
            let accessor = random::uuid();
            let now = now_unix();
            let entry = SecretIdEntry {
                accessor: accessor.clone(),
                creation_time: now,
                expiration_time: if ttl > 0 { now.saturating_add(secs(ttl)) } else { 0 },
                last_updated_time: now,
                num_uses,
                ttl,
                cidr_list: cidrs.clone(),
                token_bound_cidrs: token_cidrs.clone(),
                metadata: metadata.clone(),
            };
            let sid_mac = key.mac_hex(LABEL_SECRET_ID, secret.as_bytes());
            let acc = AccessorEntry {
                accessor: accessor.clone(),
                secret_id_hmac: sid_mac.clone(),
                expiration_time: entry.expiration_time,
            };
            let mut b = self.view.batch();
            b.put_expect(u, &secret_path(&role.uuid, &sid_mac), &encode(&entry)?, Expect::Absent);
            b.put_expect(
                u,
                &accessor_path(&role.uuid, &key.mac_hex(LABEL_ACCESSOR, accessor.as_bytes())),
                &encode(&acc)?,
                Expect::Absent,
            );
            match b.commit().await {
                Ok(()) => {
                    let mut m = Map::new();
                    m.insert("secret_id".into(), secret.as_str().into());
                    m.insert("secret_id_accessor".into(), accessor.into());
                    m.insert("secret_id_ttl".into(), ttl.into());
                    m.insert("secret_id_num_uses".into(), num_uses.into());
                    return Ok(Response::data(m));
                }
                Err(e) if is_conflict(&e) && custom.is_some() => {
                    return Err(bad("the given secret_id is already registered on this role"));
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::internal("could not store a new secret ID"))
    }

    /// Read a secret ID entry by its hash; an expired one is removed and reads as absent.
    async fn secret_entry(
        &self,
        u: &Unsealed,
        key: &HmacKey,
        role: &Role,
        sid_mac: &str,
    ) -> Result<Option<(SecretIdEntry, i64)>, LogicalError> {
        let Some((raw, rev)) = self.view.get_with_rev(u, &secret_path(&role.uuid, sid_mac)).await? else {
            return Ok(None);
        };
        let entry: SecretIdEntry = decode(&raw)?;
        if entry.expired(now_unix()) {
            self.remove_secret_id(key, role, sid_mac, &entry.accessor, Some(rev)).await?;
            return Ok(None);
        }
        Ok(Some((entry, rev)))
    }

    /// Delete a secret ID and its accessor (with a revision check when given;
    /// losing that race means someone else changed or removed it: fine).
    async fn remove_secret_id(
        &self,
        key: &HmacKey,
        role: &Role,
        sid_mac: &str,
        accessor: &str,
        rev: Option<i64>,
    ) -> Result<(), LogicalError> {
        let mut b = self.view.batch();
        let path = secret_path(&role.uuid, sid_mac);
        match rev {
            Some(r) => b.delete_expect(&path, Expect::Rev(r)),
            None => b.delete(&path),
        };
        b.delete(&accessor_path(&role.uuid, &key.mac_hex(LABEL_ACCESSOR, accessor.as_bytes())));
        match b.commit().await {
            Ok(()) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `secret-id/lookup` and `secret-id/destroy`.
    async fn by_secret_id(
        &self,
        u: &Unsealed,
        name: &str,
        secret: &str,
        destroy: bool,
    ) -> Result<Response, LogicalError> {
        let key = self.key(u).await?;
        let role = self.existing_role(u, name).await?;
        let sid_mac = key.mac_hex(LABEL_SECRET_ID, secret.as_bytes());
        let entry = self.secret_entry(u, &key, &role, &sid_mac).await?;
        if destroy {
            if let Some((e, _)) = entry {
                self.remove_secret_id(&key, &role, &sid_mac, &e.accessor, None).await?;
            }
            return Ok(Response::NoContent);
        }
        // As Vault: looking up an unknown secret ID answers nothing (204).
        match entry {
            Some((e, _)) => Ok(Response::data(e.data())),
            None => Ok(Response::NoContent),
        }
    }

    /// `secret-id-accessor/lookup` and `secret-id-accessor/destroy`.
    async fn by_accessor(
        &self,
        u: &Unsealed,
        name: &str,
        accessor: &str,
        destroy: bool,
    ) -> Result<Response, LogicalError> {
        let key = self.key(u).await?;
        let role = self.existing_role(u, name).await?;
        let acc_path = accessor_path(&role.uuid, &key.mac_hex(LABEL_ACCESSOR, accessor.as_bytes()));
        let Some(raw) = self.view.get(u, &acc_path).await? else {
            return if destroy { Ok(Response::NoContent) } else { Err(LogicalError::NotFound) };
        };
        let acc: AccessorEntry = decode(&raw)?;
        if destroy {
            self.remove_secret_id(&key, &role, &acc.secret_id_hmac, accessor, None).await?;
            return Ok(Response::NoContent);
        }
        match self.secret_entry(u, &key, &role, &acc.secret_id_hmac).await? {
            Some((e, _)) => Ok(Response::data(e.data())),
            None => {
                // A dangling accessor (its secret ID expired or was used up).
                self.view.delete(&acc_path).await?;
                Err(LogicalError::NotFound)
            }
        }
    }

    /// LIST `role/<name>/secret-id`: the accessors of the live secret IDs.
    async fn list_accessors(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let role = self.existing_role(u, name).await?;
        let dir = format!("accessor/{}/", role.uuid);
        let now = now_unix();
        let mut keys = Vec::new();
        for k in self.view.list(u, &dir).await? {
            if let Some(raw) = self.view.get(u, &format!("{dir}{k}")).await? {
                let acc: AccessorEntry = decode(&raw)?;
                if acc.expiration_time == 0 || now < acc.expiration_time {
                    keys.push(Value::String(acc.accessor));
                }
            }
        }
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut m = Map::new();
        m.insert("keys".into(), Value::Array(keys));
        Ok(Response::data(m))
    }

    /// POST `login`.
    async fn login(&self, u: &Unsealed, req: &Request) -> Result<Response, LogicalError> {
        let d = &req.data;
        let addr = req.client_addr;
        let role_id = fields::string(d, "role_id")?.map(|s| s.trim().to_string()).unwrap_or_default();
        if role_id.is_empty() {
            return Err(bad("missing role_id"));
        }
        // The role ID is the alias Vault locks (and `sys/locked-users` names).
        self.ctx.check_guess(u, &role_id, addr).await?;
        let secret = Zeroizing::new(fields::string(d, "secret_id")?.map(|s| s.trim().to_string()).unwrap_or_default());
        match self.verify(u, &role_id, &secret, addr).await {
            Ok(login) => {
                self.ctx.guess_succeeded(u, &role_id).await;
                Ok(Response::Login(Box::new(login)))
            }
            Err(Refusal::Invalid) => {
                self.ctx.guess_failed(u, &role_id, addr).await;
                Err(bad(INVALID_CREDENTIALS))
            }
            Err(Refusal::Address(msg)) => {
                self.ctx.guess_failed(u, &role_id, addr).await;
                Err(bad(msg))
            }
            Err(Refusal::Error(e)) => Err(e),
        }
    }

    async fn verify(&self, u: &Unsealed, role_id: &str, secret: &str, addr: Option<IpAddr>) -> Result<Login, Refusal> {
        if role_id.len() >= MAX_LEN || secret.len() >= MAX_LEN {
            return Err(Refusal::Invalid);
        }
        let key = self.key(u).await?;
        let index_path = role_id_path(&key.mac_hex(LABEL_ROLE_ID, role_id.as_bytes()));
        let Some(raw) = self.view.get(u, &index_path).await? else { return Err(Refusal::Invalid) };
        let index: RoleIdIndex = decode(&raw)?;
        let Some((role, _)) = self.role(u, &index.name).await? else { return Err(Refusal::Invalid) };
        // The index only points the way: the role must still carry this role ID.
        if !ct_eq(role.role_id.as_bytes(), role_id.as_bytes()) {
            return Err(Refusal::Invalid);
        }
        // Checked before the secret ID, so a caller from a refused address
        // learns nothing about the secret ID it sent.
        if !cidr::allowed(&role.secret_id_bound_cidrs, addr) {
            return Err(Refusal::Address(format!(
                "source address \"{}\" unauthorized by CIDR restrictions on the role",
                show_addr(addr)
            )));
        }
        let mut metadata = Map::new();
        let mut bound_cidrs = role.token.token_bound_cidrs.clone();
        if role.bind_secret_id {
            if secret.is_empty() {
                return Err(Refusal::Invalid);
            }
            let entry = self.use_secret_id(u, &key, &role, secret, addr).await?;
            metadata = entry.metadata;
            if !entry.token_bound_cidrs.is_empty() {
                bound_cidrs = entry.token_bound_cidrs;
            }
        }
        metadata.insert("role_name".into(), Value::String(index.name.clone()));
        Ok(Login { bound_cidrs, ..role.token.login("approle".into(), metadata, role.role_id.clone())? })
    }

    /// Find the secret ID by its hash, check it, and spend one use if it is
    /// limited: the decrement (or the removal of the last use) is written
    /// only if the entry is still at the revision we read.
    async fn use_secret_id(
        &self,
        u: &Unsealed,
        key: &HmacKey,
        role: &Role,
        secret: &str,
        addr: Option<IpAddr>,
    ) -> Result<SecretIdEntry, Refusal> {
        let sid_mac = key.mac_hex(LABEL_SECRET_ID, secret.as_bytes());
        let path = secret_path(&role.uuid, &sid_mac);
        for _ in 0..MAX_RETRIES {
            let Some((mut entry, rev)) = self.secret_entry(u, key, role, &sid_mac).await? else {
                return Err(Refusal::Invalid);
            };
            if !cidr::allowed(&entry.cidr_list, addr) {
                return Err(Refusal::Address(format!(
                    "source address \"{}\" unauthorized by CIDR restrictions on the secret ID",
                    show_addr(addr)
                )));
            }
            if entry.num_uses == 0 {
                return Ok(entry);
            }
            let mut b = self.view.batch();
            if entry.num_uses == 1 {
                b.delete_expect(&path, Expect::Rev(rev));
                b.delete(&accessor_path(&role.uuid, &key.mac_hex(LABEL_ACCESSOR, entry.accessor.as_bytes())));
            } else {
                entry.num_uses -= 1;
                entry.last_updated_time = now_unix();
                b.put_expect(u, &path, &encode(&entry)?, Expect::Rev(rev));
            }
            match b.commit().await {
                Ok(()) => return Ok(entry),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Refusal::Error(LogicalError::Conflict("the secret ID is being used concurrently; retry".into())))
    }

    /// POST `tidy/secret-id`: remove expired secret IDs, accessors whose
    /// secret ID is gone, and secret IDs of roles that no longer exist.
    async fn tidy(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let key = self.key(u).await?;
        // List the secret ID directories before reading the roles: a
        // directory listed here belongs to a role created earlier, so if that
        // role is missing below it really was deleted.
        let secret_dirs = self.view.list(u, "secret-id/").await?;
        let accessor_dirs = self.view.list(u, "accessor/").await?;
        let mut live = HashSet::new();
        for name in self.view.list(u, "role/").await? {
            if let Some((role, _)) = self.role(u, &name).await? {
                live.insert(role.uuid);
            }
        }
        let now = now_unix();
        let mut removed = 0usize;
        for dir in secret_dirs.iter().filter(|d| d.ends_with('/')) {
            let uuid = dir.trim_end_matches('/');
            if !live.contains(uuid) {
                removed += self.purge_secret_ids(u, uuid).await?;
                continue;
            }
            let role = Role { uuid: uuid.to_string(), ..Role::default() };
            for mac in self.view.list(u, &format!("secret-id/{dir}")).await? {
                let Some((raw, rev)) = self.view.get_with_rev(u, &secret_path(uuid, &mac)).await? else { continue };
                let entry: SecretIdEntry = decode(&raw)?;
                if entry.expired(now) {
                    self.remove_secret_id(&key, &role, &mac, &entry.accessor, Some(rev)).await?;
                    removed += 1;
                }
            }
        }
        for dir in accessor_dirs.iter().filter(|d| d.ends_with('/')) {
            let uuid = dir.trim_end_matches('/');
            if !live.contains(uuid) {
                removed += self.purge_secret_ids(u, uuid).await?;
                continue;
            }
            for mac in self.view.list(u, &format!("accessor/{dir}")).await? {
                let path = accessor_path(uuid, &mac);
                let Some(raw) = self.view.get(u, &path).await? else { continue };
                let acc: AccessorEntry = decode(&raw)?;
                if self.view.get(u, &secret_path(uuid, &acc.secret_id_hmac)).await?.is_none() {
                    self.view.delete(&path).await?;
                }
            }
        }
        Ok(Response::Data {
            data: None,
            auth: None,
            warnings: vec![format!("tidy removed {removed} expired or orphaned secret IDs")],
        })
    }
}

const LOGIN: &str = "login";
const ROLES: &str = "role";
const ROLE: &str = "role/{name}";
const ROLE_ID: &str = "role/{name}/role-id";
const SECRET_ID: &str = "role/{name}/secret-id";
const CUSTOM_SECRET_ID: &str = "role/{name}/custom-secret-id";
const SECRET_ID_LOOKUP: &str = "role/{name}/secret-id/lookup";
const SECRET_ID_DESTROY: &str = "role/{name}/secret-id/destroy";
const ACCESSOR_LOOKUP: &str = "role/{name}/secret-id-accessor/lookup";
const ACCESSOR_DESTROY: &str = "role/{name}/secret-id-accessor/destroy";
const PROPERTY: &str = "role/{name}/{property}";
const TIDY: &str = "tidy/secret-id";

/// AppRole's paths (Vault's API). A role's single properties
/// (`role/{name}/policies`...) share one entry; [`PROPERTIES`] names them.
static PATHS: &[PathSpec] = {
    use Operation::*;
    &[
        PathSpec::new(LOGIN, &[Update])
            .unauthenticated()
            .fields(&[Field::new("role_id", FieldKind::String), Field::new("secret_id", FieldKind::String)]),
        PathSpec::new(ROLES, &[List]),
        PathSpec::new(ROLE, &[Read, Update, Delete]).existence_check(),
        PathSpec::new(ROLE_ID, &[Read, Update]).fields(&[Field::new("role_id", FieldKind::String)]),
        PathSpec::new(SECRET_ID, &[List, Update]),
        PathSpec::new(CUSTOM_SECRET_ID, &[Update]).fields(&[Field::new("secret_id", FieldKind::String)]),
        PathSpec::new(SECRET_ID_LOOKUP, &[Update, Delete]).fields(&[Field::new("secret_id", FieldKind::String)]),
        PathSpec::new(SECRET_ID_DESTROY, &[Update, Delete]).fields(&[Field::new("secret_id", FieldKind::String)]),
        PathSpec::new(ACCESSOR_LOOKUP, &[Update, Delete])
            .fields(&[Field::new("secret_id_accessor", FieldKind::String)]),
        PathSpec::new(ACCESSOR_DESTROY, &[Update, Delete])
            .fields(&[Field::new("secret_id_accessor", FieldKind::String)]),
        PathSpec::new(PROPERTY, &[Read, Update, Delete]),
        PathSpec::new(TIDY, &[Update]),
    ]
};

impl Backend for AppRole {
    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }

    fn canonical_path(&self, path: &str) -> Option<String> {
        // Role names are case-insensitive (lowercased, as Vault).
        crate::logical::fold_segment(path, "role/", 1)
    }

    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move { self.route(auth.unsealed(), req).await })
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async move {
            let path = path.trim_matches('/');
            let Some(("role", raw)) = path.split_once('/') else { return Ok(None) };
            if raw.contains('/') {
                return Ok(None);
            }
            match role_name(raw) {
                Ok(name) => Ok(Some(self.view.get(u, &role_path(&name)).await?.is_some())),
                Err(_) => Ok(None),
            }
        })
    }

    fn shutdown(&self) {
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::auth::lockout::{Lockout, LockoutConfig};
    use crate::barrier::{Barrier, KEYRING_PATH, Keyring};
    use crate::storage::{Storage, WriteBatch};

    struct Fixture {
        _dir: tempfile::TempDir,
        barrier: Arc<Barrier>,
        auth: Authorized,
        approle: Arc<AppRole>,
    }

    async fn fixture() -> Fixture {
        fixture_with_threshold(3).await
    }

    async fn fixture_with_threshold(threshold: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let barrier = Arc::new(Barrier::new(storage));
        let keyring = Keyring::generate(now_unix()).unwrap();
        let mut b = WriteBatch::new();
        b.put(KEYRING_PATH, Barrier::wrap_keyring(&keyring));
        barrier.storage().write(b).await.unwrap();
        let u = barrier.install(keyring);
        let view = View::new(barrier.clone(), "logical/approle-test/");
        let ctx = MethodContext {
            mount_path: "approle/".into(),
            accessor: "auth_approle_test".into(),
            barrier: barrier.clone(),
            lockout: Arc::new(Lockout::new(LockoutConfig { threshold, ..Default::default() })),
        };
        Fixture { _dir: dir, barrier, auth: Authorized::unauthenticated(u), approle: Arc::new(AppRole::new(view, ctx)) }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    impl Fixture {
        async fn call(&self, op: Operation, path: &str, body: Value) -> Result<Response, LogicalError> {
            self.call_from(op, path, body, ip("127.0.0.1")).await
        }

        async fn call_from(
            &self,
            op: Operation,
            path: &str,
            body: Value,
            addr: Option<IpAddr>,
        ) -> Result<Response, LogicalError> {
            let mut req = Request::new(op, path);
            req.data = body.as_object().cloned().unwrap_or_default();
            req.client_addr = addr;
            self.approle.handle(&self.auth, req).await
        }

        async fn data(&self, op: Operation, path: &str, body: Value) -> Map<String, Value> {
            match self.call(op, path, body).await {
                Ok(Response::Data { data: Some(d), .. }) => d,
                other => panic!("{path}: expected data, got {other:?}"),
            }
        }

        async fn role_id(&self, name: &str) -> String {
            self.data(Operation::Read, &format!("role/{name}/role-id"), json!({})).await["role_id"]
                .as_str()
                .unwrap()
                .to_string()
        }

        async fn secret_id(&self, name: &str, body: Value) -> (String, String) {
            let d = self.data(Operation::Update, &format!("role/{name}/secret-id"), body).await;
            (d["secret_id"].as_str().unwrap().to_string(), d["secret_id_accessor"].as_str().unwrap().to_string())
        }

        async fn login(&self, role_id: &str, secret_id: &str) -> Result<Login, LogicalError> {
            self.login_from(role_id, secret_id, ip("127.0.0.1")).await
        }

        async fn login_from(
            &self,
            role_id: &str,
            secret_id: &str,
            addr: Option<IpAddr>,
        ) -> Result<Login, LogicalError> {
            match self
                .call_from(Operation::Update, "login", json!({"role_id": role_id, "secret_id": secret_id}), addr)
                .await?
            {
                Response::Login(l) => Ok(*l),
                other => panic!("expected a login, got {other:?}"),
            }
        }

        /// Every raw byte under the view (paths and ciphertexts).
        async fn raw_dump(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let mut stack = vec!["logical/approle-test/".to_string()];
            while let Some(dir) = stack.pop() {
                for child in self.barrier.storage().list(&dir).await.unwrap() {
                    let p = format!("{dir}{child}");
                    out.extend_from_slice(p.as_bytes());
                    if child.ends_with('/') {
                        stack.push(p);
                    } else if let Some(e) = self.barrier.storage().get(&p).await.unwrap() {
                        out.extend_from_slice(e.value.as_bytes());
                    }
                }
            }
            out
        }
    }

    fn invalid(r: Result<Login, LogicalError>) -> String {
        match r {
            Err(LogicalError::InvalidRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn role_crud_and_login() {
        let f = fixture().await;
        let r = f
            .call(
                Operation::Create,
                "role/App1",
                json!({"token_policies": "b,a", "token_ttl": "1h", "token_max_ttl": 7200, "secret_id_num_uses": "0", "token_num_uses": 3}),
            )
            .await
            .unwrap();
        assert!(matches!(r, Response::NoContent));
        let role = f.data(Operation::Read, "role/app1", json!({})).await;
        assert_eq!(role["token_policies"], json!(["a", "b"]));
        assert_eq!(role["policies"], json!(["a", "b"]));
        assert_eq!(role["token_ttl"], 3600);
        assert_eq!(role["bind_secret_id"], true);
        assert_eq!(role["token_type"], "default");
        let keys = f.data(Operation::List, "role", json!({})).await;
        assert_eq!(keys["keys"], json!(["app1"]));

        let role_id = f.role_id("app1").await;
        let (secret, accessor) = f.secret_id("app1", json!({"metadata": "{\"env\":\"prod\"}"})).await;
        let login = f.login(&role_id, &secret).await.unwrap();
        assert_eq!(login.policies, vec!["a", "b"]);
        assert_eq!(login.ttl, 3600);
        assert_eq!(login.max_ttl, 7200);
        assert_eq!(login.num_uses, 3);
        assert_eq!(login.alias, role_id);
        assert_eq!(login.display_name, "approle");
        assert!(login.renewable);
        assert_eq!(login.metadata["role_name"], "app1");
        assert_eq!(login.metadata["env"], "prod");

        // Lookup by secret ID and by accessor; the listing shows the accessor.
        let d = f.data(Operation::Update, "role/app1/secret-id/lookup", json!({"secret_id": secret})).await;
        assert_eq!(d["secret_id_accessor"], accessor.as_str());
        assert_eq!(d["expiration_time"], NEVER);
        let d = f
            .data(Operation::Update, "role/app1/secret-id-accessor/lookup", json!({"secret_id_accessor": accessor}))
            .await;
        assert_eq!(d["metadata"]["env"], "prod");
        let d = f.data(Operation::List, "role/app1/secret-id", json!({})).await;
        assert_eq!(d["keys"], json!([accessor]));

        // Update merges; the role ID survives.
        f.call(Operation::Update, "role/app1", json!({"token_ttl": 60})).await.unwrap();
        let role = f.data(Operation::Read, "role/app1", json!({})).await;
        assert_eq!(role["token_ttl"], 60);
        assert_eq!(role["token_policies"], json!(["a", "b"]));
        assert_eq!(f.role_id("app1").await, role_id);

        // Deleting the role removes its secret IDs and role ID index.
        f.call(Operation::Delete, "role/app1", json!({})).await.unwrap();
        assert!(matches!(f.call(Operation::Read, "role/app1", json!({})).await, Err(LogicalError::NotFound)));
        assert_eq!(invalid(f.login(&role_id, &secret).await), INVALID_CREDENTIALS);
        let dump = f.raw_dump().await;
        assert!(!contains(&dump, b"secret-id/"), "secret IDs left behind");
        assert!(!contains(&dump, b"role-id/"), "role ID index left behind");
    }

    #[tokio::test]
    async fn wrong_credentials_share_one_message_and_lock_out() {
        let f = fixture().await;
        f.call(Operation::Update, "role/r", json!({})).await.unwrap();
        let role_id = f.role_id("r").await;
        let (secret, _) = f.secret_id("r", json!({})).await;
        assert_eq!(invalid(f.login("no-such-role", &secret).await), INVALID_CREDENTIALS);
        assert_eq!(invalid(f.login(&role_id, "wrong").await), INVALID_CREDENTIALS);
        assert_eq!(invalid(f.login(&role_id, "").await), INVALID_CREDENTIALS);
        assert_eq!(invalid(f.login(&role_id, &secret[1..]).await), INVALID_CREDENTIALS);
        // Threshold 3 reached for this role ID: even the right secret is refused.
        assert!(matches!(f.login(&role_id, &secret).await, Err(LogicalError::RateLimited(_))));
        // Another role ID from another address is unaffected.
        assert_eq!(invalid(f.login_from("other", "x", ip("10.9.9.9")).await), INVALID_CREDENTIALS);
    }

    /// The role ID lockout is in storage: a second server (its own memory,
    /// the same database) refuses the locked role ID too.
    #[tokio::test]
    async fn lockout_is_seen_by_another_server() {
        let f = fixture().await;
        f.call(Operation::Update, "role/r", json!({})).await.unwrap();
        let role_id = f.role_id("r").await;
        let (secret, _) = f.secret_id("r", json!({})).await;
        for i in 0..3 {
            f.login_from(&role_id, "wrong", ip(&format!("10.0.0.{i}"))).await.unwrap_err();
        }
        let mut ctx = f.approle.ctx.clone();
        ctx.lockout = Arc::new(Lockout::new(LockoutConfig { threshold: 3, ..Default::default() }));
        let other = AppRole::new(f.approle.view.clone(), ctx);
        let login = || {
            let mut req = Request::new(Operation::Update, "login");
            req.data = json!({"role_id": role_id, "secret_id": secret}).as_object().cloned().unwrap();
            req.client_addr = ip("10.1.1.1");
            req
        };
        assert!(matches!(other.handle(&f.auth, login()).await, Err(LogicalError::RateLimited(_))));
        Lockout::unlock(&f.barrier, f.auth.unsealed(), "auth_approle_test", &role_id).await.unwrap();
        assert!(matches!(other.handle(&f.auth, login()).await, Ok(Response::Login(_))));
    }

    #[tokio::test]
    async fn num_uses_ttl_and_destroy() {
        let f = fixture().await;
        f.call(Operation::Update, "role/r", json!({"secret_id_num_uses": 2, "secret_id_ttl": "1h"})).await.unwrap();
        let role_id = f.role_id("r").await;
        let (secret, _) = f.secret_id("r", json!({})).await;
        f.login(&role_id, &secret).await.unwrap();
        let d = f.data(Operation::Update, "role/r/secret-id/lookup", json!({"secret_id": secret})).await;
        assert_eq!(d["secret_id_num_uses"], 1);
        assert_eq!(d["secret_id_ttl"], 3600);
        f.login(&role_id, &secret).await.unwrap();
        assert_eq!(invalid(f.login(&role_id, &secret).await), INVALID_CREDENTIALS);
        assert!(matches!(
            f.call(Operation::Update, "role/r/secret-id/lookup", json!({"secret_id": secret})).await,
            Ok(Response::NoContent)
        ));

        // Per-secret limits may not exceed the role's.
        assert!(f.call(Operation::Update, "role/r/secret-id", json!({"num_uses": 3})).await.is_err());
        assert!(f.call(Operation::Update, "role/r/secret-id", json!({"ttl": "2h"})).await.is_err());
        let d = f.data(Operation::Update, "role/r/secret-id", json!({"num_uses": 1, "ttl": 1})).await;
        assert_eq!(d["secret_id_num_uses"], 1);
        assert_eq!(d["secret_id_ttl"], 1);
        let short = d["secret_id"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        f.approle.ctx.guess_succeeded(f.auth.unsealed(), &role_id).await;
        assert_eq!(invalid(f.login(&role_id, &short).await), INVALID_CREDENTIALS);

        // Destroy by secret ID and by accessor.
        let (s1, _) = f.secret_id("r", json!({})).await;
        let (s2, a2) = f.secret_id("r", json!({})).await;
        f.call(Operation::Update, "role/r/secret-id/destroy", json!({"secret_id": s1})).await.unwrap();
        f.call(Operation::Update, "role/r/secret-id-accessor/destroy", json!({"secret_id_accessor": a2}))
            .await
            .unwrap();
        f.approle.ctx.guess_succeeded(f.auth.unsealed(), &role_id).await;
        assert_eq!(invalid(f.login(&role_id, &s1).await), INVALID_CREDENTIALS);
        assert_eq!(invalid(f.login(&role_id, &s2).await), INVALID_CREDENTIALS);
        assert!(matches!(f.call(Operation::List, "role/r/secret-id", json!({})).await, Err(LogicalError::NotFound)));
    }

    #[tokio::test]
    async fn concurrent_use_of_a_single_use_secret_succeeds_once() {
        let f = fixture_with_threshold(1000).await;
        f.call(Operation::Update, "role/r", json!({"secret_id_num_uses": 1})).await.unwrap();
        let role_id = f.role_id("r").await;
        for _ in 0..5 {
            let (secret, _) = f.secret_id("r", json!({})).await;
            let attempts = (0..6).map(|_| f.login(&role_id, &secret));
            let results = futures_join_all(attempts).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "{results:?}");
            f.approle.ctx.guess_succeeded(f.auth.unsealed(), &role_id).await;
        }
    }

    /// Poll several futures concurrently (no futures crate in the tree).
    async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut set = Vec::new();
        for fut in futs {
            set.push(Box::pin(fut));
        }
        let mut outs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, fut) in set.iter_mut().enumerate() {
                if outs[i].is_none() {
                    match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => outs[i] = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        })
        .await;
        outs.into_iter().map(|o| o.unwrap()).collect()
    }

    #[tokio::test]
    async fn cidr_bindings() {
        let f = fixture().await;
        f.call(
            Operation::Update,
            "role/r",
            json!({"secret_id_bound_cidrs": ["10.0.0.0/8"], "token_bound_cidrs": "10.0.0.0/8, 192.168.0.0/16"}),
        )
        .await
        .unwrap();
        let role_id = f.role_id("r").await;
        let (secret, _) =
            f.secret_id("r", json!({"cidr_list": "10.1.0.0/16", "token_bound_cidrs": ["10.1.2.0/24"]})).await;
        let m = invalid(f.login_from(&role_id, &secret, ip("127.0.0.1")).await);
        assert!(m.contains("CIDR restrictions on the role"), "{m}");
        let m = invalid(f.login_from(&role_id, &secret, ip("10.2.0.1")).await);
        assert!(m.contains("CIDR restrictions on the secret ID"), "{m}");
        let login = f.login_from(&role_id, &secret, ip("10.1.0.1")).await.unwrap();
        assert_eq!(login.bound_cidrs, vec!["10.1.2.0/24"]);
        // A secret ID's CIDRs must lie within the role's.
        assert!(f.call(Operation::Update, "role/r/secret-id", json!({"cidr_list": "11.0.0.0/8"})).await.is_err());
        assert!(f.call(Operation::Update, "role/r/secret-id", json!({"cidr_list": "10.0.0.0/7"})).await.is_err());
        assert!(
            f.call(Operation::Update, "role/r/secret-id", json!({"token_bound_cidrs": "172.16.0.0/12"})).await.is_err()
        );
        // Bad CIDRs are refused when the role is written.
        assert!(f.call(Operation::Update, "role/r", json!({"token_bound_cidrs": ["10.0.0.0/99"]})).await.is_err());
    }

    #[tokio::test]
    async fn custom_ids_and_no_secret_binding() {
        let f = fixture().await;
        f.call(Operation::Update, "role/a", json!({})).await.unwrap();
        f.call(Operation::Update, "role/b", json!({})).await.unwrap();
        f.call(Operation::Update, "role/a/role-id", json!({"role_id": "custom-a"})).await.unwrap();
        assert_eq!(f.role_id("a").await, "custom-a");
        // A role ID belongs to one role only.
        let r = f.call(Operation::Update, "role/b/role-id", json!({"role_id": "custom-a"})).await;
        assert!(matches!(r, Err(LogicalError::InvalidRequest(_))), "{r:?}");
        let d = f.data(Operation::Update, "role/a/custom-secret-id", json!({"secret_id": "my-own-secret-value"})).await;
        assert_eq!(d["secret_id"], "my-own-secret-value");
        assert!(
            f.call(Operation::Update, "role/a/custom-secret-id", json!({"secret_id": "my-own-secret-value"}))
                .await
                .is_err()
        );
        f.login("custom-a", "my-own-secret-value").await.unwrap();

        // Without bind_secret_id a CIDR binding is required, and the role ID alone logs in.
        assert!(f.call(Operation::Update, "role/c", json!({"bind_secret_id": false})).await.is_err());
        f.call(Operation::Update, "role/c", json!({"bind_secret_id": false, "secret_id_bound_cidrs": "127.0.0.0/8"}))
            .await
            .unwrap();
        let c = f.role_id("c").await;
        let login = f.login(&c, "").await.unwrap();
        assert_eq!(login.metadata["role_name"], "c");
        assert!(f.call(Operation::Update, "role/c/secret-id", json!({})).await.is_err());

        // The raw secret ID is nowhere in storage (neither paths nor values).
        let (generated, _) = f.secret_id("a", json!({})).await;
        let dump = f.raw_dump().await;
        assert!(!contains(&dump, generated.as_bytes()));
        assert!(!contains(&dump, b"my-own-secret-value"));
        assert!(!contains(&dump, b"custom-a"));
    }

    #[tokio::test]
    async fn validation_and_properties() {
        let f = fixture().await;
        for (body, needle) in [
            (json!({"token_type": "batch"}), "not supported"),
            (json!({"token_ttl": 100, "token_max_ttl": 10}), "token_max_ttl"),
            (json!({"secret_id_num_uses": -1}), "negative"),
            (json!({"token_ttl": "forever"}), "token_ttl"),
            (json!({"token_policies": [1]}), "token_policies"),
        ] {
            match f.call(Operation::Update, "role/v", body.clone()).await {
                Err(LogicalError::InvalidRequest(m)) => assert!(m.contains(needle), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            f.call(Operation::Update, "role/bad%2Fname", json!({})).await,
            Err(LogicalError::InvalidRequest(_))
        ));
        assert!(matches!(f.call(Operation::Update, "role/..", json!({})).await, Err(LogicalError::InvalidRequest(_))));
        // Unknown parameters are ignored with a warning.
        match f.call(Operation::Update, "role/v", json!({"nonsense": 1})).await.unwrap() {
            Response::Data { warnings, .. } => assert!(warnings[0].contains("nonsense")),
            other => panic!("{other:?}"),
        }
        // Property endpoints.
        f.call(Operation::Update, "role/v/policies", json!({"policies": ["x"]})).await.unwrap();
        let d = f.data(Operation::Read, "role/v/policies", json!({})).await;
        assert_eq!(d["token_policies"], json!(["x"]));
        f.call(Operation::Update, "role/v/secret-id-ttl", json!({"secret_id_ttl": "10m"})).await.unwrap();
        assert_eq!(f.data(Operation::Read, "role/v/secret-id-ttl", json!({})).await["secret_id_ttl"], 600);
        f.call(Operation::Delete, "role/v/secret-id-ttl", json!({})).await.unwrap();
        assert_eq!(f.data(Operation::Read, "role/v/secret-id-ttl", json!({})).await["secret_id_ttl"], 0);
        assert!(f.call(Operation::Update, "role/v/token-ttl", json!({})).await.is_err());
        assert!(f.call(Operation::Update, "role/missing/policies", json!({"policies": "x"})).await.is_err());
        // Existence check: create vs update.
        assert_eq!(f.approle.exists(f.auth.unsealed(), "role/v").await.unwrap(), Some(true));
        assert_eq!(f.approle.exists(f.auth.unsealed(), "role/nope").await.unwrap(), Some(false));
        assert_eq!(f.approle.exists(f.auth.unsealed(), "role/v/secret-id").await.unwrap(), None);
        // Unknown paths and operations.
        assert!(matches!(f.call(Operation::Read, "login", json!({})).await, Err(LogicalError::UnsupportedOperation)));
        assert!(matches!(f.call(Operation::Read, "nope", json!({})).await, Err(LogicalError::UnsupportedPath(_))));
        assert!(matches!(f.call(Operation::Update, "login", json!({})).await, Err(LogicalError::InvalidRequest(_))));
        assert!(matches!(
            f.call(Operation::Update, "role/missing/secret-id", json!({})).await,
            Err(LogicalError::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn root_policy_and_out_of_range_numbers_are_refused() {
        let f = fixture().await;
        let refused = |r: Result<Response, LogicalError>, needle: &str| match r {
            Err(LogicalError::InvalidRequest(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a 400 with {needle:?}, got {other:?}"),
        };
        refused(f.call(Operation::Update, "role/r", json!({"token_policies": ["a", "root"]})).await, "root tokens");
        refused(f.call(Operation::Update, "role/r", json!({"policies": "default,ROOT"})).await, "root tokens");
        assert!(matches!(f.call(Operation::Read, "role/r", json!({})).await, Err(LogicalError::NotFound)));
        f.call(Operation::Update, "role/r", json!({"token_policies": ["a"]})).await.unwrap();
        refused(f.call(Operation::Update, "role/r/policies", json!({"policies": "root"})).await, "root tokens");
        refused(f.call(Operation::Update, "role/r/policies", json!({"token_policies": ["root"]})).await, "root tokens");
        assert_eq!(f.data(Operation::Read, "role/r", json!({})).await["token_policies"], json!(["a"]));

        // Numbers that meet a clock or a counter: out of range is a 400, not saturated or wrapped.
        for body in [
            json!({"secret_id_ttl": 1_000_000_000_000u64}),
            json!({"secret_id_ttl": "876001h"}),
            json!({"secret_id_num_uses": -1}),
            json!({"token_num_uses": -5}),
        ] {
            assert!(
                matches!(f.call(Operation::Update, "role/r", body.clone()).await, Err(LogicalError::InvalidRequest(_))),
                "{body}"
            );
        }
        f.call(Operation::Update, "role/r", json!({"secret_id_ttl": "876000h"})).await.unwrap();
        f.call(Operation::Update, "role/r", json!({"secret_id_ttl": 0})).await.unwrap();
        for body in [json!({"ttl": 1_000_000_000_000u64}), json!({"num_uses": -1})] {
            assert!(
                matches!(
                    f.call(Operation::Update, "role/r/secret-id", body.clone()).await,
                    Err(LogicalError::InvalidRequest(_))
                ),
                "{body}"
            );
        }
        let d = f.data(Operation::Update, "role/r/secret-id", json!({"ttl": "87600h"})).await;
        let secret = d["secret_id"].as_str().unwrap().to_string();
        let d = f.data(Operation::Update, "role/r/secret-id/lookup", json!({"secret_id": secret})).await;
        assert!(d["expiration_time"].as_str().unwrap().starts_with("20"), "{d:?}");
    }

    #[tokio::test]
    async fn tidy_removes_expired_and_orphaned() {
        let f = fixture().await;
        f.call(Operation::Update, "role/r", json!({})).await.unwrap();
        f.secret_id("r", json!({"ttl": 1})).await;
        let (keep, _) = f.secret_id("r", json!({})).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        match f.call(Operation::Update, "tidy/secret-id", json!({})).await.unwrap() {
            Response::Data { warnings, .. } => assert!(warnings[0].contains("removed 1"), "{warnings:?}"),
            other => panic!("{other:?}"),
        }
        let role_id = f.role_id("r").await;
        f.login(&role_id, &keep).await.unwrap();
    }

    #[test]
    fn cidr_subsets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(cidrs_within(&s(&["10.1.0.0/16"]), &s(&["10.0.0.0/8"])));
        assert!(cidrs_within(&s(&["10.1.2.3"]), &s(&["10.0.0.0/8"])));
        assert!(!cidrs_within(&s(&["10.0.0.0/7"]), &s(&["10.0.0.0/8"])));
        assert!(!cidrs_within(&s(&["11.0.0.0/8"]), &s(&["10.0.0.0/8"])));
        assert!(cidrs_within(&s(&["1.2.3.4/32"]), &[]));
        assert!(!cidrs_within(&s(&["::1/128"]), &s(&["0.0.0.0/0"])));
    }
}
