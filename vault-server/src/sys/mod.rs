//! The system backend, mounted at `sys/`: mount table management, barrier
//! rotation and key status. (Seal/unseal/init/health/rekey/generate-root are
//! served by the HTTP layer directly, as in Vault, because they must work
//! while sealed or without a token.)

use std::sync::{Arc, Weak};

use serde_json::{Map, Value};

use crate::auth::Authorized;
use crate::core::mounts::{MountConfig, MountEntry, normalize};
use crate::core::{Core, CoreError};
use crate::logical::{Backend, BoxFuture, LogicalError, Operation, Request, Response, fields};

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

fn core_err(e: CoreError) -> LogicalError {
    match e {
        CoreError::Logical(l) => l,
        CoreError::Sealed => LogicalError::Sealed,
        CoreError::InvalidRequest(m) => LogicalError::InvalidRequest(m),
        other => LogicalError::internal(other),
    }
}

impl Backend for SystemBackend {
    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let core = self.core.upgrade().ok_or(LogicalError::Sealed)?;
            route(&core, auth, req).await
        })
    }

    fn root_paths(&self) -> &'static [&'static str] {
        // Vault's sudo-protected system paths among those served here.
        &["rotate", "rotate/*", "remount"]
    }
}

async fn route(core: &Arc<Core>, auth: &Authorized, req: Request) -> Result<Response, LogicalError> {
    let u = auth.unsealed();
    let owned = req.path.trim_end_matches('/').to_string();
    let path = owned.as_str();
    match (path, req.op) {
        ("mounts", Operation::Read) => {
            let router = core.active().map_err(core_err)?.router();
            let mut data = Map::new();
            for m in router.mounts() {
                data.insert(m.entry.path.clone(), m.entry.to_json());
            }
            Ok(Response::data(data))
        }
        ("rotate", Operation::Update | Operation::Create) => {
            core.rotate(u).await.map_err(core_err)?;
            Ok(Response::NoContent)
        }
        ("key-status", Operation::Read) => {
            let s = core.key_status(u);
            Ok(Response::json(serde_json::to_value(s).map_err(LogicalError::internal)?))
        }
        _ => {
            if let Some(rest) = path.strip_prefix("mounts/") {
                if let Some(mount) = rest.strip_suffix("/tune") {
                    return tune(core, u, mount, req).await;
                }
                return mount_op(core, u, rest, req).await;
            }
            Err(LogicalError::UnsupportedPath(format!("no handler for route \"sys/{path}\"")))
        }
    }
}

async fn mount_op(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    raw_path: &str,
    req: Request,
) -> Result<Response, LogicalError> {
    let path = normalize(raw_path)?;
    match req.op {
        Operation::Read => {
            let router = core.active().map_err(core_err)?.router();
            let m = router.get(&path).ok_or_else(|| {
                LogicalError::InvalidRequest(format!("No secret engine mount at {path}"))
            })?;
            Ok(Response::json(m.entry.to_json()))
        }
        Operation::Create | Operation::Update => {
            let d = &req.data;
            let kind = fields::string(d, "type")?
                .or(fields::string(d, "plugin_name")?)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    LogicalError::InvalidRequest("backend type must be specified as a string".into())
                })?;
            let config = parse_config(d.get("config"))?;
            let entry = MountEntry {
                path,
                kind,
                description: fields::string(d, "description")?.unwrap_or_default(),
                accessor: String::new(),
                uuid: String::new(),
                config,
                options: fields::string_map(d, "options")?,
                local: fields::boolean(d, "local")?.unwrap_or(false),
                seal_wrap: fields::boolean(d, "seal_wrap")?.unwrap_or(false),
            };
            core.mount(u, entry).await.map_err(core_err)?;
            Ok(Response::NoContent)
        }
        Operation::Delete => {
            core.unmount(u, &path).await.map_err(core_err)?;
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
        return Err(LogicalError::InvalidRequest(
            "given default lease TTL greater than given max lease TTL".into(),
        ));
    }
    Ok(c)
}

/// The system's default and maximum lease TTL (Vault's 768h).
const SYSTEM_TTL: u64 = 768 * 3600;

async fn tune(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    raw_path: &str,
    req: Request,
) -> Result<Response, LogicalError> {
    let path = normalize(raw_path)?;
    match req.op {
        Operation::Read => {
            let router = core.active().map_err(core_err)?.router();
            let m = router.get(&path).ok_or_else(|| {
                LogicalError::InvalidRequest(format!("cannot fetch sysview for path \"{path}\""))
            })?;
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
            core.tune(u, &path, move |e| {
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
            .map_err(core_err)?;
            Ok(Response::NoContent)
        }
        _ => Err(LogicalError::UnsupportedOperation),
    }
}
