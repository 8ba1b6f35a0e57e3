//! `sys/config/cors`, as Vault: CORS is off until an operator enables it
//! with the origins allowed. Stored in the barrier at [`PATH`]; every server
//! keeps the setting in memory ([`CorsState`]) and reloads it when the change
//! feed names that path. Only the HTTP layer sets the headers.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::barrier::{Barrier, BarrierError, Unsealed};
use crate::core::Core;
use crate::logical::{Field, FieldKind, LogicalError, Operation, Request, Response, fields};

/// The route in the `sys/` table.
pub const CORS: &str = "config/cors";
/// Where the setting is stored.
pub const PATH: &str = "sys/config/cors";

/// Fields of `sys/config/cors` (Vault's).
pub const FIELDS: &[Field] = &[
    Field::new("enabled", FieldKind::Bool),
    Field::new("allowed_origins", FieldKind::CommaList),
    Field::new("allowed_headers", FieldKind::CommaList),
];

/// Headers a browser may always send (Vault's standard list); the
/// configured `allowed_headers` come on top.
pub const STD_HEADERS: &[&str] = &[
    "Content-Type",
    "X-Requested-With",
    "X-Vault-AWS-IAM-Server-ID",
    "X-Vault-MFA",
    "X-Vault-No-Request-Forwarding",
    "X-Vault-Wrap-Format",
    "X-Vault-Wrap-TTL",
    "X-Vault-Policy-Override",
    "Authorization",
    "X-Vault-Token",
];

/// Methods allowed cross-origin (Vault's list).
pub const METHODS: &str = "DELETE, GET, OPTIONS, POST, PUT, LIST";

/// Most origins or headers one setting holds (each is compared per request).
const MAX_ENTRIES: usize = 256;

/// The CORS setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfig {
    /// Whether CORS headers are sent at all.
    pub enabled: bool,
    /// Origins allowed, or exactly `["*"]`.
    pub allowed_origins: Vec<String>,
    /// Headers allowed beyond [`STD_HEADERS`].
    pub allowed_headers: Vec<String>,
}

impl CorsConfig {
    /// Whether `origin` may call (only meaningful when enabled).
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }

    /// `Access-Control-Allow-Headers` for a preflight.
    pub fn allow_headers(&self) -> String {
        let mut all: Vec<&str> = STD_HEADERS.to_vec();
        all.extend(self.allowed_headers.iter().map(String::as_str));
        all.join(", ")
    }
}

/// The setting in force on this server.
#[derive(Debug, Default)]
pub struct CorsState(RwLock<Arc<CorsConfig>>);

impl CorsState {
    /// The setting now (cheap: one lock and an `Arc` clone).
    pub fn get(&self) -> Arc<CorsConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, c: CorsConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
    }
}

async fn load(barrier: &Barrier, u: &Unsealed) -> Result<CorsConfig, BarrierError> {
    let Some(raw) = barrier.get(u, PATH).await? else { return Ok(CorsConfig::default()) };
    Ok(serde_json::from_slice(&raw).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stored CORS setting is malformed; CORS stays off");
        CorsConfig::default()
    }))
}

/// Put the stored setting in force (at unseal, after a write, and when
/// another server changed it). Reads are whole-record and the record is
/// re-read after every change, so the last reload installs the last write.
pub async fn reload(core: &Core, u: &Unsealed) -> Result<(), BarrierError> {
    let c = load(core.barrier(), u).await?;
    core.cors().set(c);
    Ok(())
}

/// Serve `sys/config/cors`.
pub async fn route(core: &Arc<Core>, u: &Unsealed, req: Request) -> Result<Response, LogicalError> {
    match req.op {
        Operation::Read => {
            let c = load(core.barrier(), u).await?;
            let mut data = Map::new();
            data.insert("enabled".into(), c.enabled.into());
            data.insert("allowed_origins".into(), c.allowed_origins.clone().into());
            let headers: Vec<Value> = c.allow_headers().split(", ").map(|h| Value::from(h.to_string())).collect();
            data.insert("allowed_headers".into(), headers.into());
            Ok(Response::data(data))
        }
        Operation::Delete => {
            core.barrier().delete(PATH).await?;
            reload(core, u).await?;
            Ok(Response::NoContent)
        }
        _ => {
            let c = parse(&req.data)?;
            // Plain strings and booleans: serializing cannot fail.
            let bytes = serde_json::to_vec(&c).unwrap_or_default();
            core.barrier().put(u, PATH, &bytes).await?;
            reload(core, u).await?;
            Ok(Response::NoContent)
        }
    }
}

fn parse(data: &Map<String, Value>) -> Result<CorsConfig, LogicalError> {
    let bad = |m: String| LogicalError::InvalidRequest(m);
    let enabled = fields::boolean(data, "enabled")?.unwrap_or(false);
    let origins = fields::string_list(data, "allowed_origins")?.unwrap_or_default();
    let headers = fields::string_list(data, "allowed_headers")?.unwrap_or_default();
    if origins.len() > MAX_ENTRIES || headers.len() > MAX_ENTRIES {
        return Err(bad(format!("at most {MAX_ENTRIES} origins and {MAX_ENTRIES} headers")));
    }
    if enabled && origins.is_empty() {
        return Err(bad("at least one origin or the wildcard must be provided".into()));
    }
    if origins.len() > 1 && origins.iter().any(|o| o == "*") {
        return Err(bad("to allow all origins the '*' must be the only value for allowed_origins".into()));
    }
    // An origin is `scheme://host[:port]`; what goes back in a header must be a valid header value.
    for o in &origins {
        let ok = o == "*"
            || ((o.starts_with("https://") || o.starts_with("http://"))
                && o.len() <= 256
                && o.bytes().all(|b| b.is_ascii_graphic())
                && !o.trim_start_matches("https://").trim_start_matches("http://").contains('/'));
        if !ok {
            return Err(bad(format!("allowed origin \"{}\" is not scheme://host[:port]", o.escape_debug())));
        }
    }
    for h in &headers {
        if h.is_empty() || h.len() > 128 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad(format!("allowed header \"{}\" is not a header name", h.escape_debug())));
        }
    }
    Ok(CorsConfig { enabled, allowed_origins: origins, allowed_headers: headers })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn settings_are_checked() {
        let c = parse(&map(json!({"enabled": true, "allowed_origins": "https://a.example,http://b.example:8080"})))
            .unwrap();
        assert!(c.allows("https://a.example") && c.allows("http://b.example:8080") && !c.allows("https://c.example"));
        let star = parse(&map(json!({"enabled": true, "allowed_origins": ["*"]}))).unwrap();
        assert!(star.allows("https://anything.example"));
        for bad in [
            json!({"enabled": true}),
            json!({"enabled": true, "allowed_origins": ["*", "https://a.example"]}),
            json!({"enabled": true, "allowed_origins": ["https://a.example/path"]}),
            json!({"enabled": true, "allowed_origins": ["https://a.example\r\nX-Evil: 1"]}),
            json!({"enabled": true, "allowed_origins": ["*"], "allowed_headers": ["X-A: b"]}),
        ] {
            assert!(parse(&map(bad.clone())).is_err(), "{bad}");
        }
        let h = parse(&map(json!({"enabled": true, "allowed_origins": "*", "allowed_headers": "X-Custom"}))).unwrap();
        assert!(h.allow_headers().ends_with("X-Vault-Token, X-Custom"));
    }
}
