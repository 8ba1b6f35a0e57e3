//! Rotation policies of KV v2 secrets (an extension: docs/kv-rotation.md).
//!
//! A policy and its state are one barrier-encrypted row, `rot/{path}`. One
//! rotation is three steps, each a durable write or an idempotent external
//! change, so a crash between any two is repaired by running it again:
//!
//! 1. claim: the row gets a lease and the *pending* values (revision-guarded:
//!    of several servers, one wins; a recorded pending value is reused);
//! 2. apply (PostgreSQL generator): set the role's password, expire the
//!    previous role's after the grace period (one database transaction);
//! 3. commit: new version + metadata + row (pending cleared) in one batch.
//!
//! A rotation that keeps failing is suspended after `[rotation]
//! max_failures` consecutive failures (no more automatic attempts; a
//! rotate-now still tries). `DELETE rotation/{path}?force=true` discards a
//! pending value that was never committed.
//!
//! A PostgreSQL role is rotated by at most one policy of the mount: each
//! policy holds an index row per role, `rotroles/{hash of cluster + role}`,
//! written and removed in the same revision-guarded batches as the policy.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{Body, Config, KvV2, Meta, NANOS, check_key, now_ns, rfc3339_ns, to_json};
use crate::auth::Authorized;
use crate::barrier::Unsealed;
use crate::barrier::view::ViewBatch;
use crate::engines::generate::{BytesSpec, CharClass, PasswordSpec};
use crate::engines::pg_role::{self, AdminConnection, PgRoleError};
use crate::logical::{LogicalError, Operation, Response, fields};
use crate::storage::Expect;
use zeroize::Zeroizing;

/// First retry delay after a failure; doubles per failure.
const BACKOFF_START_SECS: u64 = 5;
/// Longest retry delay.
const BACKOFF_MAX_SECS: u64 = 600;
/// Most fields one policy may rotate.
const MAX_FIELDS: usize = 64;
/// Longest period (and so grace period): a year. Beyond it a schedule is a
/// typo, and times far off would only meet overflow.
const MAX_PERIOD_SECS: u64 = 365 * 86_400;

/// Storage key (in the mount's view) of a secret's rotation record.
pub(super) fn record_key(key: &str) -> String {
    format!("rot/{key}")
}

/// Storage key of the index row saying which policy rotates `role` on the
/// cluster `identity` ([`AdminConnection::cluster_identity`]). Hashed: the
/// path is stored in the clear, host and role names need not be.
fn role_claim_key(identity: &str, role: &str) -> String {
    let mut h = Sha256::new();
    h.update(identity.as_bytes());
    h.update([0u8]);
    h.update(role.as_bytes());
    format!("rotroles/{}", hex::encode(h.finalize()))
}

/// The index rows a PostgreSQL policy holds through `conn`: (key, role).
fn claims_for(conn: &AdminConnection, roles: &[String]) -> Vec<(String, String)> {
    let id = conn.cluster_identity();
    roles.iter().map(|r| (role_claim_key(&id, r), r.clone())).collect()
}

/// An index row's value: the secret whose policy rotates the role.
#[derive(Debug, Serialize, Deserialize)]
struct RoleClaim {
    key: String,
    role: String,
}

/// A change of the role index, added to a policy's batch.
enum ClaimOp {
    Put(String, Expect, Zeroizing<Vec<u8>>),
    Delete(String, Expect),
}

fn add_ops(batch: &mut ViewBatch<'_>, u: &Unsealed, ops: Vec<ClaimOp>) {
    for op in ops {
        match op {
            ClaimOp::Put(k, e, v) => batch.put_expect(u, &k, &v, e),
            ClaimOp::Delete(k, e) => batch.delete_expect(&k, e),
        };
    }
}

/// How new values are made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Generator {
    /// Random passwords, one per rotated field.
    Password { spec: PasswordSpec },
    /// Random bytes in an encoding, one per rotated field.
    Bytes { spec: BytesSpec },
    /// A PostgreSQL role's password, set through an admin connection.
    Postgresql {
        /// Path (in this mount) of the secret holding the admin connection.
        connection: String,
        /// One role, or two used alternately (grace period).
        roles: Vec<String>,
        /// How the role's password is generated.
        password: PasswordSpec,
    },
}

/// A rotation policy as set by `POST rotation/{path}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Policy {
    period_secs: u64,
    /// PostgreSQL with two roles: how long the previous password stays valid.
    grace_secs: Option<u64>,
    fields: Vec<String>,
    generator: Generator,
}

/// A claim on a rotation by one server, until a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    owner: String,
    until_ns: i64,
}

/// Values chosen for a rotation that has started and not finished. Stored
/// only inside the encrypted record; `Debug` never shows the values.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    started_ns: i64,
    values: Map<String, Value>,
    /// PostgreSQL: the role that gets the new password.
    role: Option<String>,
    /// PostgreSQL with two roles: the role in use until now.
    previous_role: Option<String>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("started_ns", &self.started_ns)
            .field("fields", &self.values.keys().collect::<Vec<_>>())
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A secret's rotation policy and state (`rot/{path}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    policy: Policy,
    next_ns: i64,
    #[serde(default)]
    last_ns: Option<i64>,
    #[serde(default)]
    last_version: u64,
    #[serde(default)]
    rotations: u64,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    last_error: String,
    #[serde(default)]
    active_role: Option<String>,
    #[serde(default)]
    lease: Option<Lease>,
    #[serde(default)]
    pending: Option<Pending>,
    /// No automatic attempts (after `max_failures` consecutive failures).
    #[serde(default)]
    suspended: bool,
    /// Role index rows this policy holds ([`role_claim_key`]).
    #[serde(default)]
    claims: Vec<String>,
}

fn secs_ns(secs: u64) -> i64 {
    i64::try_from(secs).ok().and_then(|s| s.checked_mul(NANOS)).unwrap_or(i64::MAX)
}

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

/// A JSON value without its `type` key (generator parameters).
fn params(g: &Map<String, Value>) -> Value {
    Value::Object(g.iter().filter(|(k, _)| k.as_str() != "type").map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A list of strings: JSON array or comma-separated string.
fn string_list(data: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    let err = || bad(format!("invalid value for '{field}': expected a list of strings"));
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Ok(Some(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect()))
        }
        Some(Value::Array(a)) => {
            a.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(err)).collect::<Result<_, _>>().map(Some)
        }
        Some(_) => Err(err()),
    }
}

/// What a `PgRoleError` tells the operator (never a secret: the module
/// guarantees its messages carry none).
fn pg_message(e: &PgRoleError) -> String {
    e.to_string()
}

/// Why a change that would lose a pending value is refused, and the way out.
fn pending_conflict() -> LogicalError {
    LogicalError::Conflict(
        "a rotation of this secret is pending (its new value may already be live); try again once it has \
         finished, or discard it with DELETE rotation/{path}?force=true"
            .into(),
    )
}

/// A failed PostgreSQL change as the caller sees it: 400 for what the
/// vault refused before connecting, 502 for what the database did.
fn pg_error(e: PgRoleError) -> LogicalError {
    match e {
        PgRoleError::InvalidConnection(_) | PgRoleError::NotAllowed(_) => LogicalError::InvalidRequest(pg_message(&e)),
        _ => LogicalError::Upstream(pg_message(&e)),
    }
}

impl Policy {
    /// Parse and check a policy from a request body.
    fn parse(data: &Map<String, Value>) -> Result<Self, LogicalError> {
        let period_secs = fields::duration(data, "period")?.ok_or_else(|| bad("'period' is required"))?;
        if period_secs == 0 {
            return Err(bad("'period' must be at least 1s"));
        }
        if period_secs > MAX_PERIOD_SECS {
            return Err(bad("'period' may be at most 365d"));
        }
        let grace_secs = fields::duration(data, "grace_period")?;
        let g = match data.get("generator") {
            Some(Value::Object(g)) => g,
            None | Some(Value::Null) => return Err(bad("'generator' is required")),
            Some(_) => return Err(bad("invalid value for 'generator': expected an object")),
        };
        let kind = g.get("type").and_then(Value::as_str).unwrap_or_default();
        let fields = string_list(data, "fields")?;
        let (generator, fields) = match kind {
            "password" | "bytes" => {
                let spec = params(g);
                let generator = if kind == "password" {
                    Generator::Password { spec: PasswordSpec::from_json(Some(&spec), &CharClass::ALL).map_err(bad)? }
                } else {
                    Generator::Bytes { spec: BytesSpec::from_json(Some(&spec)).map_err(bad)? }
                };
                let fields = fields.unwrap_or_else(|| vec!["password".to_string()]);
                if fields.is_empty() || fields.len() > MAX_FIELDS {
                    return Err(bad(format!("'fields' must name 1 to {MAX_FIELDS} fields")));
                }
                if fields.iter().any(|f| f.is_empty() || f.len() > 128) {
                    return Err(bad("field names must be 1 to 128 bytes"));
                }
                let mut sorted = fields.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != fields.len() {
                    return Err(bad("'fields' names a field twice"));
                }
                if grace_secs.is_some() {
                    return Err(bad("'grace_period' applies to the postgresql generator with two roles"));
                }
                (generator, fields)
            }
            "postgresql" => {
                let connection = g
                    .get("connection")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("the postgresql generator needs 'connection' (path of the admin secret)"))?
                    .to_string();
                check_key(&connection)?;
                let roles = string_list(g, "roles")?.unwrap_or_default();
                if roles.is_empty() || roles.len() > 2 {
                    return Err(bad("the postgresql generator needs 'roles': one role, or two used alternately"));
                }
                for r in &roles {
                    pg_role::validate_role_name(r).map_err(bad)?;
                }
                if roles.len() == 2 && roles[0] == roles[1] {
                    return Err(bad("the two roles must differ"));
                }
                if roles.len() == 1 && grace_secs.is_some() {
                    return Err(bad(
                        "a grace period needs two roles: PostgreSQL keeps one password per role, so one role \
                         cannot have the old and new password valid at once",
                    ));
                }
                if let Some(f) = &fields
                    && f != &["username", "password"]
                {
                    return Err(bad("the postgresql generator always rotates 'username' and 'password'"));
                }
                let password =
                    PasswordSpec::from_json(g.get("password"), &[CharClass::Lower, CharClass::Upper, CharClass::Digit])
                        .map_err(bad)?;
                (Generator::Postgresql { connection, roles, password }, vec!["username".into(), "password".into()])
            }
            "" => return Err(bad("'generator.type' is required: password, bytes or postgresql")),
            other => {
                return Err(bad(format!("unknown generator type \"{other}\": expected password, bytes or postgresql")));
            }
        };
        if let Some(grace) = grace_secs
            && grace > period_secs
        {
            return Err(bad("'grace_period' may not exceed 'period'"));
        }
        Ok(Policy { period_secs, grace_secs, fields, generator })
    }

    fn generator_json(&self) -> Value {
        let mut m = Map::new();
        match &self.generator {
            Generator::Password { spec } => {
                m.insert("type".into(), "password".into());
                if let Value::Object(p) = spec.to_json() {
                    m.extend(p);
                }
            }
            Generator::Bytes { spec } => {
                m.insert("type".into(), "bytes".into());
                if let Value::Object(p) = spec.to_json() {
                    m.extend(p);
                }
            }
            Generator::Postgresql { connection, roles, password } => {
                m.insert("type".into(), "postgresql".into());
                m.insert("connection".into(), connection.clone().into());
                m.insert("roles".into(), roles.clone().into());
                m.insert("password".into(), password.to_json());
            }
        }
        Value::Object(m)
    }
}

impl Record {
    /// A record for a new policy, first due at `next_ns`.
    fn new(policy: Policy, next_ns: i64) -> Self {
        Record {
            policy,
            next_ns,
            last_ns: None,
            last_version: 0,
            rotations: 0,
            failures: 0,
            last_error: String::new(),
            active_role: None,
            lease: None,
            pending: None,
            suspended: false,
            claims: Vec::new(),
        }
    }

    /// Retry delay after `failures` consecutive failures.
    fn backoff_ns(&self) -> i64 {
        let shift = self.failures.saturating_sub(1).min(16);
        let secs = BACKOFF_START_SECS.saturating_mul(1 << shift).min(BACKOFF_MAX_SECS).min(self.policy.period_secs);
        secs_ns(secs)
    }

    /// Due; or left pending by a crash (the claim was never released: repair
    /// at once, the lease is checked when claiming). A failed rotation also
    /// stays pending, but releases its claim and waits for its backoff.
    /// A suspended policy is never due (only a rotate-now runs it).
    fn due(&self, now: i64) -> bool {
        !self.suspended && (self.next_ns <= now || (self.pending.is_some() && self.lease.is_some()))
    }
}

impl KvV2 {
    async fn record(&self, u: &Unsealed, key: &str) -> Result<Option<(Record, i64)>, LogicalError> {
        match self.view.get_with_rev(u, &record_key(key)).await? {
            Some((raw, rev)) => Ok(Some((serde_json::from_slice(&raw).map_err(LogicalError::internal)?, rev))),
            None => Ok(None),
        }
    }

    /// The latest live version's data, if any.
    async fn live_data(&self, u: &Unsealed, cfg: &Config, key: &str) -> Result<Option<(Meta, Value)>, LogicalError> {
        let Some((meta, _)) = self.meta(u, key).await? else { return Ok(None) };
        let cur = meta.current_version;
        let live = meta.versions.get(&cur).is_some_and(|v| !v.destroyed && !Self::is_deleted(cfg, &meta, v));
        if !live {
            return Ok(None);
        }
        Ok(self.version_data(u, key, cur).await?.map(|d| (meta, d)))
    }

    /// The admin connection a PostgreSQL policy names.
    async fn admin_connection(&self, u: &Unsealed, path: &str) -> Result<AdminConnection, LogicalError> {
        let cfg = self.config(u).await?;
        let data = match self.live_data(u, &cfg, path).await? {
            Some((_, Value::Object(m))) => m,
            _ => return Err(bad(format!("the connection secret \"{path}\" does not exist in this mount"))),
        };
        AdminConnection::from_secret(&data)
            .map_err(|e| bad(format!("connection secret \"{path}\": {}", pg_message(&e))))
    }

    /// Refuse a change that would lose a pending rotation's value (it may
    /// already be live in a database).
    pub(super) async fn refuse_if_pending(&self, u: &Unsealed, key: &str) -> Result<(), LogicalError> {
        if self.record(u, key).await?.is_some_and(|(r, _)| r.pending.is_some()) {
            return Err(pending_conflict());
        }
        Ok(())
    }

    /// `POST rotation/{path}`.
    pub(super) async fn set_rotation(
        &self,
        auth: &Authorized,
        op: Operation,
        key: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let u = auth.unsealed();
        let policy = Policy::parse(data)?;
        let mut wanted = Vec::new();
        if let Generator::Postgresql { connection, roles, .. } = &policy.generator {
            // The vault will connect to a database server and change a role
            // there: a privileged act, like Vault's root-protected paths.
            if !auth.may_sudo(&format!("rotation/{key}"), op) {
                return Err(LogicalError::PermissionDenied);
            }
            if connection == key {
                return Err(bad("a secret cannot be its own admin connection"));
            }
            // The vault will use the admin secret on the caller's behalf: the
            // caller must be allowed to read it (no confused deputy).
            if !auth.may(&format!("data/{connection}"), Operation::Read) {
                return Err(LogicalError::PermissionDenied);
            }
            let conn = self.admin_connection(u, connection).await?;
            conn.check_host(&self.settings.postgres_allowed_hosts).map_err(pg_error)?;
            if let Some(r) = roles.iter().find(|r| !conn.allows(r)) {
                return Err(bad(format!("role \"{r}\" is not in the connection's allowed_roles")));
            }
            wanted = claims_for(&conn, roles);
        }
        let cfg = self.config(u).await?;
        // The first rotation is due at once for a secret without a live
        // version, else one period after the latest version was written.
        let base = match self.live_data(u, &cfg, key).await? {
            Some((meta, _)) => meta.versions.get(&meta.current_version).map(|v| v.created_ns),
            None => None,
        };
        let period = secs_ns(policy.period_secs);
        for _ in 0..super::RETRIES {
            let (mut record, expect) = match self.record(u, key).await? {
                Some((r, _)) if r.pending.is_some() => {
                    return Err(LogicalError::Conflict(
                        "a rotation of this secret is pending; change its policy once it has finished, or discard \
                         it with DELETE rotation/{path}?force=true"
                            .into(),
                    ));
                }
                Some((mut r, rev)) => {
                    let last = r.last_ns.or(base);
                    r.next_ns = last.map_or_else(now_ns, |t| t.saturating_add(period));
                    r.policy = policy.clone();
                    // A new policy starts afresh.
                    r.failures = 0;
                    r.suspended = false;
                    r.last_error.clear();
                    (r, Expect::Rev(rev))
                }
                None => {
                    let next_ns = base.map_or_else(now_ns, |t| t.saturating_add(period));
                    (Record::new(policy.clone(), next_ns), Expect::Absent)
                }
            };
            let ops = self.plan_claims(u, key, &record.claims, &wanted).await?;
            record.claims = wanted.iter().map(|(k, _)| k.clone()).collect();
            let mut batch = self.view.batch();
            batch.put_expect(u, &record_key(key), &to_json(&record)?, expect);
            add_ops(&mut batch, u, ops);
            match batch.commit().await {
                Ok(()) => return Ok(Response::NoContent),
                Err(e) if super::is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("too many concurrent changes of this rotation policy; try again".into()))
    }

    /// `GET rotation/{path}`.
    pub(super) async fn read_rotation(&self, u: &Unsealed, key: &str) -> Result<Response, LogicalError> {
        let (r, _) = self.record(u, key).await?.ok_or(LogicalError::NotFound)?;
        let p = &r.policy;
        let mut m = Map::new();
        m.insert("period".into(), p.period_secs.into());
        let grace = match (&p.generator, p.grace_secs) {
            (Generator::Postgresql { roles, .. }, g) if roles.len() == 2 => g.unwrap_or(p.period_secs),
            _ => 0,
        };
        m.insert("grace_period".into(), grace.into());
        m.insert("fields".into(), p.fields.clone().into());
        m.insert("generator".into(), p.generator_json());
        m.insert("next_rotation".into(), rfc3339_ns(r.next_ns).into());
        m.insert("last_rotation".into(), r.last_ns.map(rfc3339_ns).unwrap_or_default().into());
        m.insert("last_version".into(), r.last_version.into());
        m.insert("rotations".into(), r.rotations.into());
        m.insert("active_role".into(), r.active_role.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("pending".into(), r.pending.is_some().into());
        m.insert("suspended".into(), r.suspended.into());
        m.insert("failures".into(), r.failures.into());
        m.insert("last_error".into(), r.last_error.clone().into());
        Ok(Response::data(m))
    }

    /// The index changes that take a policy of `key` from holding the rows
    /// `old` to holding `new` (key, role). Refused (400) when another
    /// secret's policy holds one of the new rows. The decision rests on the
    /// rows alone, each change revision-guarded: a read from a stale cache
    /// can then only refuse (transiently), never let two policies hold one
    /// row. (Rows are removed in the same batch as their policy, so a row
    /// whose policy is gone should not exist; if one did, setting a policy
    /// with that role on the named secret and deleting it removes it.)
    async fn plan_claims(
        &self,
        u: &Unsealed,
        key: &str,
        old: &[String],
        new: &[(String, String)],
    ) -> Result<Vec<ClaimOp>, LogicalError> {
        let mut ops = Vec::new();
        for (k, role) in new {
            let value = to_json(&RoleClaim { key: key.to_string(), role: role.clone() })?;
            match self.view.get_with_rev(u, k).await? {
                None => ops.push(ClaimOp::Put(k.clone(), Expect::Absent, value)),
                Some((raw, rev)) => {
                    let owner: RoleClaim = serde_json::from_slice(&raw).map_err(LogicalError::internal)?;
                    if owner.key != key {
                        return Err(bad(format!(
                            "role \"{role}\" on this PostgreSQL server is already rotated by the policy of secret \
                             \"{}\": two policies would undo each other's passwords",
                            owner.key
                        )));
                    }
                    // Ours already: rewritten guarded, so a row that has
                    // gone meanwhile (a stale read) fails the batch.
                    ops.push(ClaimOp::Put(k.clone(), Expect::Rev(rev), value));
                }
            }
        }
        for k in old.iter().filter(|k| !new.iter().any(|(n, _)| n == *k)) {
            if let Some((raw, rev)) = self.view.get_with_rev(u, k).await?
                && serde_json::from_slice::<RoleClaim>(&raw).is_ok_and(|c| c.key == key)
            {
                ops.push(ClaimOp::Delete(k.clone(), Expect::Rev(rev)));
            }
        }
        Ok(ops)
    }

    /// Add the removal of `key`'s policy (and its role index rows) to a
    /// batch, e.g. a metadata delete's. Nothing when there is no policy.
    pub(super) async fn drop_rotation(
        &self,
        u: &Unsealed,
        key: &str,
        batch: &mut ViewBatch<'_>,
    ) -> Result<(), LogicalError> {
        let Some((r, rev)) = self.record(u, key).await? else { return Ok(()) };
        let ops = self.plan_claims(u, key, &r.claims, &[]).await?;
        batch.delete_expect(&record_key(key), Expect::Rev(rev));
        add_ops(batch, u, ops);
        Ok(())
    }

    /// `DELETE rotation/{path}` (`force`: also when a rotation is pending).
    pub(super) async fn delete_rotation(
        &self,
        auth: &Authorized,
        key: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let u = auth.unsealed();
        let force = fields::boolean(data, "force")?.unwrap_or(false);
        let Some((r, rev)) = self.record(u, key).await? else { return Ok(Response::NoContent) };
        let discarded = match &r.pending {
            None => None,
            Some(_) if !force => return Err(pending_conflict()),
            Some(p) => {
                let pg = matches!(r.policy.generator, Generator::Postgresql { .. });
                // Discarding may leave a role with a password no one knows:
                // as privileged as setting such a policy.
                if pg && !auth.may_sudo(&format!("rotation/{key}"), Operation::Delete) {
                    return Err(LogicalError::PermissionDenied);
                }
                if let Some(l) = &r.lease
                    && l.until_ns > now_ns()
                    && (l.owner == self.view.instance() || self.view.is_connected(&l.owner).await?)
                {
                    return Err(LogicalError::Conflict(
                        "a rotation of this secret is running right now; try again once it has finished or failed"
                            .into(),
                    ));
                }
                Some((p.clone(), pg))
            }
        };
        let ops = self.plan_claims(u, key, &r.claims, &[]).await?;
        let mut batch = self.view.batch();
        batch.delete_expect(&record_key(key), Expect::Rev(rev));
        add_ops(&mut batch, u, ops);
        match batch.commit().await {
            Ok(()) => {}
            Err(e) if super::is_conflict(&e) => {
                return Err(LogicalError::Conflict("the policy changed meanwhile; try again".into()));
            }
            Err(e) => return Err(e.into()),
        }
        let Some((p, pg)) = discarded else { return Ok(Response::NoContent) };
        let warning = match (&p.role, pg) {
            (Some(role), true) => {
                let previous = p.previous_role.as_deref().map_or_else(String::new, |prev| {
                    let grace = r.policy.grace_secs.unwrap_or(r.policy.period_secs);
                    format!(", and role \"{prev}\" may have been set to stop working {grace}s after that attempt")
                });
                format!(
                    "discarded a rotation that was started and never committed: PostgreSQL may already have \
                     applied it, so role \"{role}\" may now have a password that no one knows{previous}. The secret \
                     keeps its latest version, which may no longer log in: set the role's password again (e.g. a \
                     new policy and POST rotate/{key}) before relying on it"
                )
            }
            _ => "discarded a rotation that was started and never committed; the secret keeps its latest version"
                .to_string(),
        };
        tracing::warn!(key, role = p.role.as_deref().unwrap_or(""), "pending rotation discarded by a forced delete");
        let mut m = Map::new();
        m.insert("discarded_pending".into(), true.into());
        m.insert("role".into(), p.role.clone().map(Value::String).unwrap_or(Value::Null));
        Ok(Response::Data { data: Some(m), auth: None, warnings: vec![warning] })
    }

    /// Values for a new rotation.
    fn new_pending(r: &Record, now: i64) -> Pending {
        let mut values = Map::new();
        let (mut role, mut previous_role) = (None, None);
        match &r.policy.generator {
            Generator::Password { spec } => {
                for f in &r.policy.fields {
                    values.insert(f.clone(), Value::String(spec.generate().to_string()));
                }
            }
            Generator::Bytes { spec } => {
                for f in &r.policy.fields {
                    values.insert(f.clone(), Value::String(spec.generate().to_string()));
                }
            }
            Generator::Postgresql { roles, password, .. } => {
                // Alternate: the role not in use gets the new password, so the
                // one in use keeps working through the grace period.
                let next = match (roles.as_slice(), r.active_role.as_deref()) {
                    ([a, b], Some(active)) if active == a => b.clone(),
                    ([a, ..], _) => a.clone(),
                    ([], _) => String::new(),
                };
                if roles.len() == 2 {
                    previous_role = r.active_role.clone().filter(|p| *p != next);
                }
                values.insert("username".into(), Value::String(next.clone()));
                values.insert("password".into(), Value::String(password.generate().to_string()));
                role = Some(next);
            }
        }
        Pending { started_ns: now, values, role, previous_role }
    }

    /// Step 2 for PostgreSQL: make the pending password the role's, through
    /// `conn` (read when the rotation was claimed).
    async fn apply(&self, r: &Record, p: &Pending, conn: Option<&AdminConnection>) -> Result<(), LogicalError> {
        if !matches!(r.policy.generator, Generator::Postgresql { .. }) {
            return Ok(());
        }
        let conn = conn.ok_or_else(|| LogicalError::internal("no admin connection for a postgresql rotation"))?;
        let role = p.role.as_deref().unwrap_or_default();
        let password = p.values.get("password").and_then(Value::as_str).unwrap_or_default();
        for name in std::iter::once(role).chain(p.previous_role.as_deref()) {
            if !conn.allows(name) {
                return Err(bad(format!("role \"{name}\" is not in the connection's allowed_roles")));
            }
        }
        let grace = r.policy.grace_secs.unwrap_or(r.policy.period_secs);
        // Whole seconds, rounded up: the old password works at least `grace`.
        let now_secs = now_ns().saturating_add(NANOS - 1) / NANOS;
        let expire_at = now_secs.saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
        let expire = p.previous_role.as_deref().map(|prev| (prev, expire_at));
        let timeout = self.settings.lease / 3;
        pg_role::set_password(conn, &self.settings.postgres_allowed_hosts, role, password, expire, timeout)
            .await
            .map_err(pg_error)
    }

    /// Run one rotation of `key` now (claim, apply, commit). Returns the new
    /// version like a write does.
    pub(super) async fn rotate(&self, u: &Unsealed, key: &str) -> Result<(Config, Meta, u64), LogicalError> {
        let in_progress = || LogicalError::Conflict("a rotation of this secret is in progress".into());
        let (mut r, rev) = self.record(u, key).await?.ok_or(LogicalError::NotFound)?;
        let now = now_ns();
        if let Some(l) = &r.lease
            && l.until_ns > now
            && (l.owner == self.view.instance() || self.view.is_connected(&l.owner).await?)
        {
            return Err(in_progress());
        }
        // (An unexpired lease whose holder has gone — crashed — is taken over
        // at once; its pending value is reused below.)
        // The admin connection as it is now, read once for this rotation. A
        // connection secret pointed at another server moves the policy's
        // role index rows with the claim below (or fails, if another policy
        // rotates that role there).
        let mut batch = self.view.batch();
        let mut early: Option<LogicalError> = None;
        let conn = match &r.policy.generator {
            Generator::Postgresql { connection, roles, .. } => match self.admin_connection(u, connection).await {
                Ok(conn) => {
                    let wanted = claims_for(&conn, roles);
                    if wanted.iter().map(|(k, _)| k).ne(r.claims.iter()) {
                        match self.plan_claims(u, key, &r.claims, &wanted).await {
                            Ok(ops) => {
                                add_ops(&mut batch, u, ops);
                                r.claims = wanted.into_iter().map(|(k, _)| k).collect();
                            }
                            Err(e) => early = Some(e),
                        }
                    }
                    Some(conn)
                }
                Err(e) => {
                    early = Some(e);
                    None
                }
            },
            _ => None,
        };
        // 1. Claim, recording the values before anything external happens.
        let pending = match r.pending.clone() {
            Some(p) => p,
            None => Self::new_pending(&r, now),
        };
        r.pending = Some(pending.clone());
        let lease_ns = i64::try_from(self.settings.lease.as_nanos()).unwrap_or(i64::MAX);
        r.lease = Some(Lease { owner: self.view.instance().to_string(), until_ns: now.saturating_add(lease_ns) });
        batch.put_expect(u, &record_key(key), &to_json(&r)?, Expect::Rev(rev));
        match batch.commit().await {
            Ok(()) => {}
            Err(e) if super::is_conflict(&e) => return Err(in_progress()),
            Err(e) => return Err(e.into()),
        }
        let claimed = Expect::Rev(rev + 1);
        // 2. Apply to the outside world (idempotent: the same value again on repair).
        let applied = match early {
            Some(e) => Err(e),
            None => self.apply(&r, &pending, conn.as_ref()).await,
        };
        if let Err(err) = applied {
            self.count_rotation(false);
            let msg = err.to_string();
            r.lease = None;
            r.failures = r.failures.saturating_add(1);
            r.last_error = msg.clone();
            r.next_ns = now_ns().saturating_add(r.backoff_ns());
            // Bounded retries: a rotation that keeps failing stops being
            // attempted automatically (its pending value is kept).
            let suspend = !r.suspended && r.failures >= self.settings.max_failures;
            r.suspended |= suspend;
            let mut batch = self.view.batch();
            batch.put_expect(u, &record_key(key), &to_json(&r)?, claimed);
            if let Err(e) = batch.commit().await {
                tracing::warn!(error = %e, "could not record a rotation failure");
            }
            if suspend {
                tracing::warn!(
                    key,
                    failures = r.failures,
                    error = %msg,
                    "secret rotation suspended after too many consecutive failures: no more automatic attempts \
                     until a rotate-now succeeds, or the policy is deleted (force=true) and set again"
                );
            } else {
                tracing::warn!(key, failures = r.failures, error = %msg, "secret rotation failed");
            }
            return Err(err);
        }
        // 3. Commit the version and the finished record together.
        let done = now_ns();
        let finish = |n: u64, batch: &mut ViewBatch<'_>| -> Result<(), LogicalError> {
            let mut fin = r.clone();
            fin.pending = None;
            fin.lease = None;
            fin.last_ns = Some(done);
            fin.last_version = n;
            fin.rotations = fin.rotations.saturating_add(1);
            fin.failures = 0;
            fin.suspended = false;
            fin.last_error.clear();
            fin.next_ns = done.saturating_add(secs_ns(fin.policy.period_secs));
            if pending.role.is_some() {
                fin.active_role = pending.role.clone();
            }
            batch.put_expect(u, &record_key(key), &to_json(&fin)?, claimed);
            Ok(())
        };
        let out = self.write_version(u, key, Body::Rotate(&pending.values), None, Some(&finish)).await?;
        tracing::info!(key, version = out.2, "secret rotated");
        self.count_rotation(true);
        Ok(out)
    }

    /// Scheduler tick: run every rotation of this mount that is due, or
    /// pending after a crash or failure and no longer claimed.
    pub(super) async fn run_due(&self, u: &Unsealed) {
        let keys = match self.view.scan(u, "rot/").await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "could not list rotation policies");
                return;
            }
        };
        let mut seals = self.view.seal_signal();
        seals.borrow_and_update();
        for full in keys {
            // Keys must not be used past a seal: stop between rotations.
            if self.view.is_sealed() || seals.has_changed().unwrap_or(true) {
                return;
            }
            let Some(key) = full.strip_prefix("rot/") else { continue };
            let now = now_ns();
            match self.record(u, key).await {
                Ok(Some((r, _))) if r.due(now) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(key, error = %e, "could not read a rotation policy");
                    continue;
                }
            }
            match self.rotate(u, key).await {
                // Failures are recorded and logged by `rotate`.
                Ok(_)
                | Err(LogicalError::Conflict(_) | LogicalError::Upstream(_) | LogicalError::InvalidRequest(_)) => {}
                Err(e) => tracing::warn!(key, error = %e, "scheduled rotation failed"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Policy, LogicalError> {
        Policy::parse(v.as_object().unwrap())
    }

    #[test]
    fn policies_parse_and_refuse() {
        let p = parse(json!({"period": "1h", "generator": {"type": "password", "length": 20}})).unwrap();
        assert_eq!(p.period_secs, 3600);
        assert_eq!(p.fields, vec!["password"]);
        let p =
            parse(json!({"period": 60, "fields": "a,b", "generator": {"type": "bytes", "encoding": "hex"}})).unwrap();
        assert_eq!(p.fields, vec!["a", "b"]);
        let pg = json!({"period": "1h", "grace_period": "10m",
            "generator": {"type": "postgresql", "connection": "db/admin", "roles": ["a_blue", "a_green"]}});
        let p = parse(pg).unwrap();
        assert_eq!(p.fields, vec!["username", "password"]);
        for (body, needle) in [
            (json!({"generator": {"type": "password"}}), "period"),
            (json!({"period": 0, "generator": {"type": "password"}}), "period"),
            (json!({"period": 5, "generator": {"type": "nope"}}), "unknown generator"),
            (json!({"period": 5, "generator": {"type": "password", "length": 2}}), ""),
            (json!({"period": 5, "fields": ["a", "a"], "generator": {"type": "password"}}), "twice"),
            (json!({"period": 5, "grace_period": 1, "generator": {"type": "password"}}), "grace"),
            (
                json!({"period": 5, "grace_period": 1, "generator": {"type": "postgresql", "connection": "c", "roles": ["r"]}}),
                "two roles",
            ),
            (
                json!({"period": 5, "grace_period": 10, "generator": {"type": "postgresql", "connection": "c", "roles": ["r", "s"]}}),
                "exceed",
            ),
            (
                json!({"period": 5, "generator": {"type": "postgresql", "connection": "c", "roles": ["r", "r"]}}),
                "differ",
            ),
            (json!({"period": 5, "generator": {"type": "postgresql", "connection": "../x", "roles": ["r"]}}), ""),
            // Bounds: whatever meets a clock.
            (json!({"period": MAX_PERIOD_SECS + 1, "generator": {"type": "password"}}), "at most 365d"),
            (json!({"period": u64::MAX, "generator": {"type": "password"}}), "at most"),
            (json!({"period": "366d", "generator": {"type": "password"}}), "at most 365d"),
            (json!({"period": "184467440737095516150s", "generator": {"type": "password"}}), "period"),
            (json!({"period": -1, "generator": {"type": "password"}}), "period"),
            (json!({"period": 1.5, "generator": {"type": "password"}}), "period"),
            (
                json!({"period": 60, "grace_period": u64::MAX, "generator": {"type": "postgresql", "connection": "c", "roles": ["r", "s"]}}),
                "grace_period",
            ),
            (json!({"period": 5, "generator": {"type": "password", "length": u64::MAX}}), "length"),
            (json!({"period": 5, "generator": {"type": "bytes", "length": 1e300}}), "length"),
            (json!({"period": 5, "generator": {"type": "bytes", "length": -3}}), "length"),
            (json!({"period": 5, "generator": {"type": "postgresql", "connection": "c", "roles": ["bad name"]}}), ""),
        ] {
            match parse(body.clone()) {
                Err(LogicalError::InvalidRequest(m)) => assert!(m.contains(needle), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn roles_alternate_and_pending_hides_values() {
        let policy = parse(json!({"period": 60,
            "generator": {"type": "postgresql", "connection": "c", "roles": ["r_blue", "r_green"]}}))
        .unwrap();
        let mut r = Record::new(policy, 0);
        let p = KvV2::new_pending(&r, 1);
        assert_eq!(p.role.as_deref(), Some("r_blue"));
        assert_eq!(p.previous_role, None);
        r.active_role = Some("r_blue".into());
        let p = KvV2::new_pending(&r, 1);
        assert_eq!(p.role.as_deref(), Some("r_green"));
        assert_eq!(p.previous_role.as_deref(), Some("r_blue"));
        let secret = p.values["password"].as_str().unwrap().to_string();
        assert_eq!(secret.len(), 32);
        r.pending = Some(p);
        assert!(!format!("{r:?}").contains(&secret));
    }

    #[test]
    fn due_and_backoff() {
        let policy = parse(json!({"period": 60, "generator": {"type": "password"}})).unwrap();
        let mut r = Record::new(policy, 100);
        r.failures = 1;
        assert!(!r.due(99) && r.due(100));
        r.pending = Some(KvV2::new_pending(&r, 1));
        assert!(!r.due(0), "a failed rotation (claim released) waits for its backoff");
        r.lease = Some(Lease { owner: "crashed".into(), until_ns: 0 });
        assert!(r.due(0), "a crashed rotation (claim never released) is due at once");
        assert_eq!(r.backoff_ns(), 5 * NANOS);
        r.failures = 5;
        assert_eq!(r.backoff_ns(), 60 * NANOS, "capped by the period");
        r.failures = u32::MAX;
        assert_eq!(r.backoff_ns(), 60 * NANOS, "no overflow however many failures");
        // A suspended policy is never due, not even when it looks crashed.
        r.suspended = true;
        assert!(!r.due(i64::MAX), "suspended: no automatic attempt");
        // The longest period, from the last instant: saturates, no wrap.
        let policy = parse(json!({"period": "365d", "generator": {"type": "password"}})).unwrap();
        assert_eq!(i64::MAX.saturating_add(secs_ns(policy.period_secs)), i64::MAX);
        assert!(!rfc3339_ns(i64::MAX).is_empty());
    }

    #[test]
    fn role_claims_name_cluster_and_role() {
        let a = role_claim_key("db\u{0}5432", "app");
        assert!(a.starts_with("rotroles/") && a.len() == "rotroles/".len() + 64, "{a}");
        assert!(!a.contains("app") && !a.contains("db"), "no names in the clear: {a}");
        assert_eq!(a, role_claim_key("db\u{0}5432", "app"));
        assert_ne!(a, role_claim_key("db\u{0}5432", "App"));
        assert_ne!(a, role_claim_key("db\u{0}5433", "app"));
        // The separator keeps (identity, role) pairs apart.
        assert_ne!(role_claim_key("ab", "c"), role_claim_key("a", "bc"));
    }
}
