//! The system backend, mounted at `sys/`: mount table management, barrier
//! rotation and key status. (Seal/unseal/init/health/rekey/generate-root are
//! served by the HTTP layer directly, as in Vault, because they must work
//! while sealed or without a token.)

mod audit;
pub mod cors;
pub(crate) mod metrics;
pub mod quotas;

use std::sync::{Arc, Weak};

use serde_json::{Map, Value};

use crate::auth::Authorized;
use crate::core::mounts::{MountConfig, MountEntry, normalize};
use crate::core::{Core, Table};
use crate::logical::{
    Backend, BoxFuture, Field, FieldKind, LogicalError, Operation, PathSpec, Request, Response, fields,
};

/// The `sys/` backend.
#[derive(Debug)]
pub struct SystemBackend {
    core: Weak<Core>,
}

impl SystemBackend {
    /// A backend bound to its core (weak: the core owns the router that owns us).
    pub fn new(core: Weak<Core>) -> Self {
        Self { core }
    }
}

impl Backend for SystemBackend {
    fn canonical_path(&self, path: &str) -> Option<String> {
        // Policy names are case-insensitive (lowercased, as Vault); so are
        // the userpass aliases of `locked-users/{accessor}/unlock/{alias}`.
        let folded = crate::logical::fold_segment(path, "policies/acl/", 2)
            .or_else(|| crate::logical::fold_segment(path, "policy/", 1));
        if folded.is_some() {
            return folded;
        }
        let accessor = path.strip_prefix("locked-users/")?.split('/').next()?;
        let core = self.core.upgrade()?;
        let router = core.active().ok()?.router();
        let userpass = router.table(Table::Auth).any(|m| m.entry.accessor == accessor && m.entry.kind == "userpass");
        if userpass { crate::logical::fold_segment(path, "locked-users/", 3) } else { None }
    }

    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let core = self.core.upgrade().ok_or(LogicalError::Sealed)?;
            route(&core, auth, req).await
        })
    }

    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }

    fn periodic<'a>(&'a self, u: &'a crate::barrier::Unsealed) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Expired login lockout records (throttled inside to every few minutes).
            if let Some(core) = self.core.upgrade() {
                core.lockout().tidy(core.barrier(), u).await;
            }
        })
    }
}

const MOUNTS: &str = "mounts";
const AUTH: &str = "auth";
const LEADER: &str = "leader";
const UI_MOUNTS: &str = "internal/ui/mounts";
const UI_MOUNT: &str = "internal/ui/mounts/{path+}";
const ROTATE: &str = "rotate";
const ROTATE_KEYRING: &str = "rotate/keyring";
const POLICIES: &str = "policies/acl";
const POLICIES_LEGACY: &str = "policy";
const POLICY: &str = "policies/acl/{name}";
const POLICY_LEGACY: &str = "policy/{name}";
const CAPS_SELF: &str = "capabilities-self";
const CAPS: &str = "capabilities";
const CAPS_ACCESSOR: &str = "capabilities-accessor";
const LOCKED: &str = "locked-users";
const UNLOCK: &str = "locked-users/{accessor}/unlock/{alias+}";
const KEY_STATUS: &str = "key-status";
const MOUNT_TUNE: &str = "mounts/{path+}/tune";
const MOUNT: &str = "mounts/{path+}";
const AUTH_TUNE: &str = "auth/{path+}/tune";
const AUTH_MOUNT: &str = "auth/{path+}";

/// The logical `sys/` paths (init, unseal, health and the ceremonies are
/// raw endpoints of the HTTP layer). `sudo` as Vault's root paths.
static PATHS: &[PathSpec] = {
    use Operation::*;
    &[
        PathSpec::new(MOUNTS, &[Read]),
        PathSpec::new(AUTH, &[Read]),
        // Read by `vault status` and `vault operator unseal` without a token.
        PathSpec::new(LEADER, &[Read]).unauthenticated(),
        PathSpec::new(UI_MOUNTS, &[Read]),
        PathSpec::new(UI_MOUNT, &[Read]),
        PathSpec::new(ROTATE, &[Update]).sudo(),
        // `vault operator rotate` posts here (Vault >= 1.17, OpenBao).
        PathSpec::new(ROTATE_KEYRING, &[Update]).sudo(),
        PathSpec::new(POLICIES, &[List]),
        PathSpec::new(POLICIES_LEGACY, &[List, Read]),
        PathSpec::new(POLICY, &[Read, Update, Delete]).fields(&[Field::new("policy", FieldKind::String)]),
        PathSpec::new(POLICY_LEGACY, &[Read, Update, Delete])
            .fields(&[Field::new("policy", FieldKind::String), Field::new("rules", FieldKind::String)]),
        PathSpec::new(CAPS_SELF, &[Update]),
        PathSpec::new(CAPS, &[Update]).fields(&[Field::new("token", FieldKind::String)]),
        PathSpec::new(CAPS_ACCESSOR, &[Update]).fields(&[Field::new("accessor", FieldKind::String)]),
        PathSpec::new(LOCKED, &[Read, List]).fields(&[Field::new("mount_accessor", FieldKind::String)]),
        PathSpec::new(UNLOCK, &[Update]),
        PathSpec::new(KEY_STATUS, &[Read]),
        PathSpec::new(metrics::PATH, &[Read]).fields(&[Field::new("format", FieldKind::String)]),
        PathSpec::new(MOUNT_TUNE, &[Read, Update]).fields(TUNE_FIELDS),
        PathSpec::new(MOUNT, &[Read, Update, Delete]).fields(MOUNT_FIELDS),
        PathSpec::new(AUTH_TUNE, &[Read, Update]).sudo().fields(TUNE_FIELDS),
        PathSpec::new(AUTH_MOUNT, &[Read, Update, Delete]).sudo().fields(MOUNT_FIELDS),
        // Rate limits and CORS (quotas.rs, cors.rs). `sys/config/*` is sudo in Vault.
        PathSpec::new(quotas::RATE_LIMITS, &[List]),
        PathSpec::new(quotas::RATE_LIMIT, &[Read, Update, Delete]).fields(quotas::RATE_LIMIT_FIELDS),
        PathSpec::new(quotas::CONFIG, &[Read, Update]).fields(quotas::CONFIG_FIELDS),
        PathSpec::new(cors::CORS, &[Read, Update, Delete]).sudo().fields(cors::FIELDS),
        PathSpec::new(audit::LIST, &[Read]).sudo(),
        PathSpec::new(audit::DEVICE, &[Update, Delete]).sudo().fields(audit::DEVICE_FIELDS),
        PathSpec::new(audit::HASH, &[Update]).sudo().fields(audit::HASH_FIELDS),
    ]
};

const TUNE_FIELDS: &[Field] = &[
    Field::new("description", FieldKind::String),
    Field::new("options", FieldKind::StringMap),
    Field::new("default_lease_ttl", FieldKind::Duration),
    Field::new("max_lease_ttl", FieldKind::Duration),
    Field::new("force_no_cache", FieldKind::Bool),
];

const MOUNT_FIELDS: &[Field] = &[
    Field::new("type", FieldKind::String),
    Field::new("plugin_name", FieldKind::String),
    Field::new("description", FieldKind::String),
    Field::new("config", FieldKind::Object),
    Field::new("options", FieldKind::StringMap),
    Field::new("local", FieldKind::Bool),
    Field::new("seal_wrap", FieldKind::Bool),
];

async fn route(core: &Arc<Core>, auth: &Authorized, req: Request) -> Result<Response, LogicalError> {
    let req = crate::logical::paths::ensure_routed(PATHS, req)?;
    let u = auth.unsealed();
    let pattern = req.pattern();
    if quotas::handles(pattern) {
        return quotas::route(core, u, req).await;
    }
    if pattern == cors::CORS {
        return cors::route(core, u, req).await;
    }
    match (pattern, req.op) {
        (MOUNTS | AUTH, Operation::Read) => {
            let table = if pattern == AUTH { Table::Auth } else { Table::Secrets };
            let router = core.active().map_err(LogicalError::from)?.router();
            let mut data = Map::new();
            for m in router.table(table) {
                data.insert(m.entry.path.clone(), m.entry.to_json(table));
            }
            Ok(Response::data(data))
        }
        // One server, no HA: Vault's `LeaderResponse` fields for that case.
        // (Vault answers them raw, outside the envelope; here they are in
        // `data`, which the Vault CLI's status output does not need.)
        (LEADER, _) => Ok(Response::json(serde_json::json!({
            "ha_enabled": false,
            "is_self": false,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }))),
        (UI_MOUNTS, _) => {
            // Vault's UI listing: both tables, under `secret` and `auth`.
            let router = core.active().map_err(LogicalError::from)?.router();
            let mut data = Map::new();
            for (key, table) in [("secret", Table::Secrets), ("auth", Table::Auth)] {
                let mut mounts = Map::new();
                for m in router.table(table) {
                    mounts.insert(m.entry.path.clone(), m.entry.to_json(table));
                }
                data.insert(key.into(), Value::Object(mounts));
            }
            Ok(Response::data(data))
        }
        (metrics::PATH, _) => metrics::answer(core, &req.data),
        (ROTATE | ROTATE_KEYRING, _) => {
            core.rotate(u).await.map_err(LogicalError::from)?;
            Ok(Response::NoContent)
        }
        (POLICIES | POLICIES_LEGACY, _) => {
            let active = core.active().map_err(LogicalError::from)?;
            let names = active.policies().list(core.barrier(), u).await?;
            let mut data = Map::new();
            data.insert("keys".into(), names.clone().into());
            if pattern == POLICIES_LEGACY {
                data.insert("policies".into(), names.into());
            }
            Ok(Response::data(data))
        }
        (CAPS_SELF, _) => {
            let entry = auth.token().ok_or(LogicalError::PermissionDenied)?;
            capabilities(core, entry, &req.data).await
        }
        (CAPS, _) => {
            let token = fields::string(&req.data, "token")?
                .ok_or_else(|| LogicalError::InvalidRequest("missing required field 'token'".into()))?;
            let active = core.active().map_err(LogicalError::from)?;
            let entry = active
                .tokens()
                .lookup(core.barrier(), u, &token, crate::barrier::now_unix())
                .await?
                .ok_or_else(|| LogicalError::InvalidRequest("invalid token".into()))?;
            capabilities(core, &entry, &req.data).await
        }
        (CAPS_ACCESSOR, _) => {
            let accessor = fields::string(&req.data, "accessor")?
                .ok_or_else(|| LogicalError::InvalidRequest("missing required field 'accessor'".into()))?;
            let active = core.active().map_err(LogicalError::from)?;
            let entry = active
                .tokens()
                .lookup_accessor(core.barrier(), u, &accessor, crate::barrier::now_unix())
                .await?
                .ok_or_else(|| LogicalError::InvalidRequest("invalid accessor".into()))?;
            capabilities(core, &entry, &req.data).await
        }
        (LOCKED, _) => {
            let only = fields::string(&req.data, "mount_accessor")?.filter(|a| !a.is_empty());
            let data = crate::auth::lockout::Lockout::locked_users(core.barrier(), u, only.as_deref()).await?;
            Ok(Response::data(data))
        }
        (KEY_STATUS, _) => {
            let s = core.key_status(u);
            Ok(Response::json(serde_json::to_value(s).map_err(LogicalError::internal)?))
        }
        (POLICY | POLICY_LEGACY, _) => {
            let name = req.param("name").to_string();
            policy_op(core, u, &name, pattern == POLICY_LEGACY, req).await
        }
        (UI_MOUNT, _) => ui_mount(core, req.param("path")),
        (UNLOCK, _) => unlock_user(core, u, req.param("accessor"), req.param("alias")).await,
        (MOUNT_TUNE | AUTH_TUNE, _) => {
            let table = if pattern == AUTH_TUNE { Table::Auth } else { Table::Secrets };
            let mount = req.param("path").to_string();
            tune(core, u, table, &mount, req).await
        }
        (MOUNT | AUTH_MOUNT, _) => {
            let table = if pattern == AUTH_MOUNT { Table::Auth } else { Table::Secrets };
            let mount = req.param("path").to_string();
            mount_op(core, u, table, &mount, req).await
        }
        (audit::LIST | audit::DEVICE | audit::HASH, _) => audit::handle(core, u, req).await,
        _ => Err(LogicalError::UnsupportedOperation),
    }
}

/// `GET sys/internal/ui/mounts/{path}`: the mount serving `path` (what `vault
/// kv` reads to learn a mount's type and `options.version`), Vault's mount
/// info plus `path` (the mount path, without `auth/` for auth methods). No
/// mount there is a 403, as in Vault, so the endpoint cannot be used to
/// probe for mounts. (Vault serves it without a policy check and asks
/// instead whether the token has any right under the mount; here the
/// caller's policy must grant `read` on `sys/internal/ui/mounts/{path}`.)
fn ui_mount(core: &Arc<Core>, rest: &str) -> Result<Response, LogicalError> {
    let path = format!("{}/", rest.trim_matches('/'));
    let router = core.active().map_err(LogicalError::from)?.router();
    let Some((m, _)) = router.route(&path) else {
        return Err(LogicalError::PermissionDenied);
    };
    let Value::Object(mut data) = m.entry.to_json(m.table) else {
        return Err(LogicalError::internal("mount info is not an object"));
    };
    data.insert("path".into(), m.entry.path.clone().into());
    Ok(Response::data(data))
}

/// `POST sys/locked-users/{mount_accessor}/unlock/{alias}` (Vault's API;
/// idempotent). A policy must grant `update` on the path.
async fn unlock_user(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    accessor: &str,
    alias: &str,
) -> Result<Response, LogicalError> {
    // Userpass names are case-insensitive: its lockout is keyed by the lowercased name.
    let router = core.active().map_err(LogicalError::from)?.router();
    let userpass = router.table(Table::Auth).any(|m| m.entry.accessor == accessor && m.entry.kind == "userpass");
    let alias = if userpass { alias.to_lowercase() } else { alias.to_string() };
    crate::auth::lockout::Lockout::unlock(core.barrier(), u, accessor, &alias).await?;
    Ok(Response::NoContent)
}

/// `sys/capabilities*`: `path` or `paths`; answers per path and, for a single
/// path, under `capabilities` as well (Vault's shape).
async fn capabilities(
    core: &Arc<Core>,
    entry: &crate::auth::TokenEntry,
    d: &Map<String, Value>,
) -> Result<Response, LogicalError> {
    let paths = fields::string_list(d, "paths")?
        .or(fields::string_list(d, "path")?)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| LogicalError::InvalidRequest("missing required field 'paths'".into()))?;
    let mut data = Map::new();
    for p in &paths {
        let caps = core.capabilities(entry, p.trim_start_matches('/')).await.map_err(LogicalError::from)?;
        if paths.len() == 1 {
            data.insert("capabilities".into(), caps.clone().into());
        }
        data.insert(p.clone(), caps.into());
    }
    Ok(Response::data(data))
}

/// `sys/policies/acl/{name}` (modern: `policy` field) and `sys/policy/{name}`
/// (legacy: `rules` or `policy` in, `rules` out).
async fn policy_op(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    name: &str,
    legacy: bool,
    req: Request,
) -> Result<Response, LogicalError> {
    let name = name.to_lowercase();
    let active = core.active().map_err(LogicalError::from)?;
    let store = active.policies();
    match req.op {
        Operation::Read => {
            let p = store.get(core.barrier(), u, &name).await?.ok_or(LogicalError::NotFound)?;
            let mut data = Map::new();
            data.insert("name".into(), name.clone().into());
            let text = if name == "root" { String::new() } else { p.text().to_string() };
            data.insert(if legacy { "rules" } else { "policy" }.into(), text.into());
            Ok(Response::data(data))
        }
        Operation::Create | Operation::Update => {
            let policy = fields::string(&req.data, "policy")?.filter(|p| !p.is_empty());
            // Vault reads `rules` on the legacy path only when `policy` is
            // empty, and then answers 200 with a deprecation warning.
            let from_rules = policy.is_none() && legacy && req.data.contains_key("rules");
            let text = policy
                .or(fields::string(&req.data, "rules")?)
                .ok_or_else(|| LogicalError::InvalidRequest("'policy' parameter not supplied or empty".into()))?;
            // Vault accepts the policy base64-encoded too.
            let text = match base64_policy(&text) {
                Some(decoded) => decoded,
                None => text,
            };
            store.put(core.barrier(), u, &name, &text).await?;
            if from_rules {
                return Ok(Response::Data {
                    data: None,
                    auth: None,
                    warnings: vec!["'rules' is deprecated, please use 'policy' instead".into()],
                });
            }
            Ok(Response::NoContent)
        }
        Operation::Delete => {
            store.delete(core.barrier(), &name).await?;
            Ok(Response::NoContent)
        }
        _ => Err(LogicalError::UnsupportedOperation),
    }
}

/// Decode a base64 policy body, if it is one (and decodes to UTF-8 text).
fn base64_policy(text: &str) -> Option<String> {
    use base64::Engine as _;
    if text.contains(char::is_whitespace) || text.contains('"') {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
    String::from_utf8(raw).ok()
}

async fn mount_op(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    table: Table,
    raw_path: &str,
    req: Request,
) -> Result<Response, LogicalError> {
    let path = normalize(raw_path)?;
    match req.op {
        Operation::Read => {
            let router = core.active().map_err(LogicalError::from)?.router();
            let m = router.get(table, &path).ok_or_else(|| {
                LogicalError::InvalidRequest(format!(
                    "No {} mount at {path}",
                    match table {
                        Table::Secrets => "secret engine",
                        Table::Auth => "auth method",
                    }
                ))
            })?;
            Ok(Response::json(m.entry.to_json(table)))
        }
        Operation::Create | Operation::Update => {
            let d = &req.data;
            let kind = fields::string(d, "type")?
                .or(fields::string(d, "plugin_name")?)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| LogicalError::InvalidRequest("backend type must be specified as a string".into()))?;
            let config = parse_config(d.get("config"))?;
            let options = fields::string_map(d, "options")?;
            let (kind, options) = match table {
                Table::Secrets => crate::engines::resolve_alias(kind, options),
                Table::Auth => (kind, options),
            };
            let entry = MountEntry {
                path,
                kind,
                description: fields::string(d, "description")?.unwrap_or_default(),
                accessor: String::new(),
                uuid: String::new(),
                config,
                options,
                local: fields::boolean(d, "local")?.unwrap_or(false),
                seal_wrap: fields::boolean(d, "seal_wrap")?.unwrap_or(false),
            };
            core.mount(u, table, entry).await.map_err(LogicalError::from)?;
            Ok(Response::NoContent)
        }
        Operation::Delete => {
            core.unmount(u, table, &path).await.map_err(LogicalError::from)?;
            Ok(Response::NoContent)
        }
        _ => Err(LogicalError::UnsupportedOperation),
    }
}

fn parse_config(v: Option<&Value>) -> Result<MountConfig, LogicalError> {
    let Some(Value::Object(m)) = v else {
        return match v {
            None | Some(Value::Null) => Ok(MountConfig::default()),
            _ => Err(LogicalError::InvalidRequest("'config' must be an object".into())),
        };
    };
    let ttl = |k: &str| -> Result<u64, LogicalError> {
        match m.get(k) {
            Some(Value::String(s)) if s == "system" => Ok(0),
            _ => Ok(fields::duration(m, k)?.unwrap_or(0)),
        }
    };
    let c = MountConfig {
        default_lease_ttl: ttl("default_lease_ttl")?,
        max_lease_ttl: ttl("max_lease_ttl")?,
        force_no_cache: fields::boolean(m, "force_no_cache")?.unwrap_or(false),
    };
    if c.max_lease_ttl != 0 && c.default_lease_ttl > c.max_lease_ttl {
        return Err(LogicalError::InvalidRequest("given default lease TTL greater than given max lease TTL".into()));
    }
    Ok(c)
}

/// The system's default and maximum lease TTL (Vault's 768h), shared with the token store.
use crate::auth::token::SYSTEM_MAX_TTL as SYSTEM_TTL;

async fn tune(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    table: Table,
    raw_path: &str,
    req: Request,
) -> Result<Response, LogicalError> {
    let path = normalize(raw_path)?;
    match req.op {
        Operation::Read => {
            let router = core.active().map_err(LogicalError::from)?.router();
            let m = router
                .get(table, &path)
                .ok_or_else(|| LogicalError::InvalidRequest(format!("cannot fetch sysview for path \"{path}\"")))?;
            let c = &m.entry.config;
            let mut data = Map::new();
            data.insert("description".into(), m.entry.description.clone().into());
            let eff = |v: u64| if v == 0 { SYSTEM_TTL } else { v };
            data.insert("default_lease_ttl".into(), eff(c.default_lease_ttl).into());
            data.insert("max_lease_ttl".into(), eff(c.max_lease_ttl).into());
            data.insert("force_no_cache".into(), c.force_no_cache.into());
            if let Some(o) = &m.entry.options
                && !o.is_empty()
            {
                data.insert("options".into(), Value::Object(o.clone()));
            }
            Ok(Response::data(data))
        }
        Operation::Create | Operation::Update => {
            let d = req.data;
            let description = fields::string(&d, "description")?;
            let options = fields::string_map(&d, "options")?;
            let default_ttl = fields::duration(&d, "default_lease_ttl")?;
            let max_ttl = fields::duration(&d, "max_lease_ttl")?;
            let no_cache = fields::boolean(&d, "force_no_cache")?;
            core.tune(u, table, &path, move |e| {
                if let Some(desc) = description {
                    e.description = desc;
                }
                if let Some(t) = default_ttl {
                    e.config.default_lease_ttl = t;
                }
                if let Some(t) = max_ttl {
                    e.config.max_lease_ttl = t;
                }
                if let Some(b) = no_cache {
                    e.config.force_no_cache = b;
                }
                if e.config.max_lease_ttl != 0 && e.config.default_lease_ttl > e.config.max_lease_ttl {
                    return Err(LogicalError::InvalidRequest(
                        "given default lease TTL greater than given max lease TTL".into(),
                    ));
                }
                if let Some(o) = options {
                    let version_change = o.get("version") != e.options.as_ref().and_then(|x| x.get("version"))
                        && o.contains_key("version");
                    if version_change {
                        return Err(LogicalError::InvalidRequest(
                            "changing a mount's engine version is not supported; mount a new engine".into(),
                        ));
                    }
                    let mut merged = e.options.clone().unwrap_or_default();
                    merged.extend(o);
                    e.options = Some(merged);
                }
                Ok(())
            })
            .await
            .map_err(LogicalError::from)?;
            Ok(Response::NoContent)
        }
        _ => Err(LogicalError::UnsupportedOperation),
    }
}
