//! `sys/quotas/rate-limit/{name}` and `sys/quotas/config`, as Vault
//! serves them. The quotas themselves live in `crate::quotas`; this is
//! their API: checked input, a barrier write, then a reload so the change
//! is in force before the answer.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::barrier::Unsealed;
use crate::core::Core;
use crate::logical::{Field, FieldKind, LogicalError, Operation, Request, Response, fields};
use crate::quotas::{RateLimitQuota, rule, store};

/// `LIST sys/quotas/rate-limit`.
pub const RATE_LIMITS: &str = "quotas/rate-limit";
/// `sys/quotas/rate-limit/{name}`.
pub const RATE_LIMIT: &str = "quotas/rate-limit/{name}";
/// `sys/quotas/config`.
pub const CONFIG: &str = "quotas/config";

/// Most quotas one vault holds.
pub const MAX_QUOTAS: usize = 1000;

/// Fields of a rate-limit quota (Vault's).
pub const RATE_LIMIT_FIELDS: &[Field] = &[
    Field::new("name", FieldKind::String),
    Field::new("path", FieldKind::String),
    // A float, or its text.
    Field::new("rate", FieldKind::Any),
    Field::new("interval", FieldKind::Duration),
    Field::new("block_interval", FieldKind::Duration),
    Field::new("role", FieldKind::String),
    Field::new("inheritable", FieldKind::Bool),
];

/// Fields of `sys/quotas/config` (Vault's).
pub const CONFIG_FIELDS: &[Field] = &[
    Field::new("rate_limit_exempt_paths", FieldKind::CommaList),
    Field::new("enable_rate_limit_response_headers", FieldKind::Bool),
    Field::new("enable_rate_limit_audit_logging", FieldKind::Bool),
];

/// Whether `pattern` is one of ours.
pub fn handles(pattern: &str) -> bool {
    matches!(pattern, RATE_LIMITS | RATE_LIMIT | CONFIG)
}

/// Serve a quota path.
pub async fn route(core: &Arc<Core>, u: &Unsealed, req: Request) -> Result<Response, LogicalError> {
    let barrier = core.barrier();
    match (req.pattern(), req.op) {
        (RATE_LIMITS, _) => {
            let names = store::list(barrier, u).await?;
            if names.is_empty() {
                return Err(LogicalError::NotFound);
            }
            let mut data = Map::new();
            data.insert("keys".into(), names.into());
            Ok(Response::data(data))
        }
        (RATE_LIMIT, Operation::Read) => {
            let q = store::get(barrier, u, req.param("name")).await?.ok_or(LogicalError::NotFound)?;
            Ok(Response::data(q.to_json()))
        }
        (RATE_LIMIT, Operation::Delete) => {
            store::delete(barrier, req.param("name")).await?;
            reload(core, u).await?;
            Ok(Response::NoContent)
        }
        (RATE_LIMIT, _) => write_quota(core, u, &req).await,
        (CONFIG, Operation::Read) => {
            let c = store::config(barrier, u).await?;
            let mut data = Map::new();
            data.insert("rate_limit_exempt_paths".into(), c.rate_limit_exempt_paths.clone().into());
            data.insert("enable_rate_limit_response_headers".into(), c.enable_rate_limit_response_headers.into());
            data.insert("enable_rate_limit_audit_logging".into(), c.enable_rate_limit_audit_logging.into());
            // Vault lists the paths no configuration can take off the exempt list; here there are none.
            data.insert("absolute_rate_limit_exempt_paths".into(), Vec::<String>::new().into());
            Ok(Response::data(data))
        }
        (CONFIG, _) => {
            let mut c = store::config(barrier, u).await?;
            if let Some(paths) = fields::string_list(&req.data, "rate_limit_exempt_paths")? {
                c = c.with_exempt(&paths).map_err(|e| LogicalError::InvalidRequest(e.0))?;
            }
            if let Some(b) = fields::boolean(&req.data, "enable_rate_limit_response_headers")? {
                c.enable_rate_limit_response_headers = b;
            }
            if let Some(b) = fields::boolean(&req.data, "enable_rate_limit_audit_logging")? {
                c.enable_rate_limit_audit_logging = b;
            }
            store::put_config(barrier, u, &c).await?;
            reload(core, u).await?;
            Ok(Response::NoContent)
        }
        _ => Err(LogicalError::UnsupportedOperation),
    }
}

/// Create or update a quota: fields not sent keep their stored value.
async fn write_quota(core: &Arc<Core>, u: &Unsealed, req: &Request) -> Result<Response, LogicalError> {
    let name = req.param("name");
    let bad = |m: &str| LogicalError::InvalidRequest(m.to_string());
    if let Some(n) = fields::string(&req.data, "name")?
        && !n.is_empty()
        && n != name
    {
        return Err(bad("name in the body differs from the name in the path"));
    }
    // Not supported: said plainly rather than ignored (a quota that does
    // less than asked would give a false sense of protection).
    if fields::string(&req.data, "role")?.is_some_and(|r| !r.is_empty()) {
        return Err(bad("role-based quotas are not supported by this server: leave 'role' empty"));
    }
    if fields::duration(&req.data, "block_interval")?.is_some_and(|d| d > 0) {
        return Err(bad("block_interval is not supported by this server: leave it 0"));
    }
    if fields::boolean(&req.data, "inheritable")? == Some(true) {
        return Err(bad("inheritable quotas need namespaces, which this server does not have"));
    }
    let old = store::get(core.barrier(), u, name).await?;
    let rate = match req.data.get("rate") {
        None | Some(Value::Null) => old.as_ref().map(|q| q.rate).ok_or_else(|| bad("missing required field 'rate'"))?,
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad("rate must be a number"))?,
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| bad("rate must be a number"))?,
        Some(_) => return Err(bad("rate must be a number")),
    };
    let interval = match fields::duration(&req.data, "interval")? {
        Some(0) | None => old.as_ref().map_or(1, |q| q.interval),
        Some(s) => s,
    };
    let path = match fields::string(&req.data, "path")? {
        Some(p) => p,
        None => old.as_ref().map(|q| q.path.clone()).unwrap_or_default(),
    };
    let q = RateLimitQuota::new(name, &path, rate, interval).map_err(|e| LogicalError::InvalidRequest(e.0))?;
    check_mount(core, &q.path)?;
    let names = store::list(core.barrier(), u).await?;
    // Every request scans the quotas: keep the list to what an operator writes by hand.
    if old.is_none() && names.len() >= MAX_QUOTAS {
        return Err(bad(&format!("at most {MAX_QUOTAS} rate-limit quotas")));
    }
    // Two quotas on one path would make "the most specific" ambiguous (Vault refuses it too).
    for other in names {
        if other != name
            && let Some(o) = store::get(core.barrier(), u, &other).await?
            && o.path.trim_end_matches('/') == q.path.trim_end_matches('/')
        {
            return Err(LogicalError::InvalidRequest(format!("quota {other} already applies to this path")));
        }
    }
    store::put(core.barrier(), u, &q).await?;
    reload(core, u).await?;
    Ok(Response::NoContent)
}

/// A quota path must start with a mount (`sys/` included), as in Vault.
fn check_mount(core: &Arc<Core>, path: &str) -> Result<(), LogicalError> {
    if path.is_empty() || path == "*" {
        return Ok(());
    }
    let probe = rule::normalize_request_path(path.trim_end_matches('*'));
    let router = core.active().map_err(LogicalError::from)?.router();
    let mounted = probe.starts_with("sys/")
        || probe == "sys"
        || router.mounts().iter().any(|m| {
            let mount = m.route_path.trim_end_matches('/');
            probe == mount || probe.strip_prefix(mount).is_some_and(|r| r.starts_with('/'))
        });
    if mounted {
        Ok(())
    } else {
        Err(LogicalError::InvalidRequest(format!("no mount at the start of path \"{path}\"")))
    }
}

/// Put the stored quotas in force on this server (after a local write, at
/// unseal, and when another server changed them).
pub async fn reload(core: &Core, u: &Unsealed) -> Result<(), LogicalError> {
    store::reload(core.quotas(), core.barrier(), u).await?;
    Ok(())
}
