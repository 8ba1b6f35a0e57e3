//! The `sys/` endpoints Vault serves outside the logical router, because
//! they must work while sealed or before any token exists: init, unseal,
//! seal-status, seal, health, rekey and generate-root. They answer raw JSON
//! (no envelope), as Vault does.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ApiError, json_response, no_content, query_map, set_common_headers, token, typed_body};
use crate::core::Core;
use crate::logical::Operation;
use crate::logical::fields::parse_bool;

/// The raw endpoints (served outside the logical router).
const RAW: &[&str] = &[
    "sys/init",
    "sys/unseal",
    "sys/seal-status",
    "sys/seal",
    "sys/health",
    "sys/rekey/init",
    "sys/rekey/update",
    "sys/generate-root/attempt",
    "sys/generate-root/update",
];

/// The methods a raw endpoint serves (its `Allow` header on a 405).
fn allowed(path: &str) -> &'static str {
    match path {
        "sys/init" => "GET, PUT, POST",
        "sys/seal-status" => "GET",
        "sys/health" => "GET, HEAD",
        "sys/rekey/init" | "sys/generate-root/attempt" => "GET, PUT, POST, DELETE",
        _ => "PUT, POST",
    }
}

/// Whether `path` is one of the raw endpoints.
pub(super) fn is_raw(path: &str) -> bool {
    RAW.contains(&path.trim_end_matches('/'))
}

/// Serve `path`, one of the raw endpoints ([`is_raw`]).
pub(super) async fn handle(
    core: &Arc<Core>,
    method: &Method,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    peer: std::net::IpAddr,
) -> Result<Response, ApiError> {
    let path = path.trim_end_matches('/');
    let m = method.as_str();
    let write = m == "PUT" || m == "POST";
    let not_allowed = || Err(ApiError::method_not_allowed(path, allowed(path)));
    match path {
        "sys/init" => match m {
            "GET" => Ok(ok(&vault_api::InitStatus { initialized: core.initialized().await? })),
            _ if write => Ok(ok(&core.init(typed_body(body)?).await?)),
            _ => not_allowed(),
        },
        "sys/unseal" if write => Ok(ok(&core.unseal(typed_body(body)?).await?)),
        "sys/seal-status" if m == "GET" => Ok(ok(&core.seal_status().await?)),
        "sys/seal" if write => {
            core.seal_with_token(token(headers), Some(peer)).await?;
            Ok(no_content())
        }
        "sys/health" if m == "GET" || m == "HEAD" => Ok(health(core, m == "HEAD", uri).await?),
        // Key ceremonies: the core decides whether the caller needs a token
        // (with `sudo`) before the body is even parsed.
        "sys/rekey/init" => {
            let Some(op) = ceremony_op(m) else { return not_allowed() };
            let grant = core.authorize_ceremony(path, op, token(headers), Some(peer)).await?;
            Ok(match op {
                Operation::Read => ok(&core.rekey_status(&grant).await?),
                Operation::Delete => {
                    core.rekey_cancel(&grant).await?;
                    no_content()
                }
                _ => ok(&core.rekey_init(&grant, typed_body(body)?).await?),
            })
        }
        "sys/generate-root/attempt" => {
            let Some(op) = ceremony_op(m) else { return not_allowed() };
            let grant = core.authorize_ceremony(path, op, token(headers), Some(peer)).await?;
            Ok(match op {
                Operation::Read => ok(&core.generate_root_status(&grant).await?),
                Operation::Delete => {
                    core.generate_root_cancel(&grant).await?;
                    no_content()
                }
                _ => ok(&core.generate_root_start(&grant, typed_body(body)?).await?),
            })
        }
        "sys/rekey/update" if write => {
            let grant = core.authorize_ceremony(path, Operation::Update, token(headers), Some(peer)).await?;
            match core.rekey_update(&grant, typed_body(body)?).await? {
                Ok(status) => Ok(ok(&status)),
                Err(complete) => Ok(ok(&complete)),
            }
        }
        "sys/generate-root/update" if write => {
            let grant = core.authorize_ceremony(path, Operation::Update, token(headers), Some(peer)).await?;
            Ok(ok(&core.generate_root_update(&grant, typed_body(body)?).await?))
        }
        "sys/unseal"
        | "sys/seal-status"
        | "sys/seal"
        | "sys/health"
        | "sys/rekey/update"
        | "sys/generate-root/update" => not_allowed(),
        // `is_raw` decided this path is raw.
        _ => Err(ApiError::empty(StatusCode::NOT_FOUND)),
    }
}

/// The `sys/health` parameters that choose the status code for a state
/// (Vault's list; this server is never a standby or DR secondary, but a bad
/// value is refused whichever state would use it).
const HEALTH_CODES: &[&str] = &[
    "uninitcode",
    "sealedcode",
    "standbycode",
    "activecode",
    "drsecondarycode",
    "performancestandbycode",
    "haunhealthycode",
    "removedcode",
];

/// The boolean `sys/health` parameters.
const HEALTH_FLAGS: &[&str] = &["standbyok", "perfstandbyok"];

/// `sys/health`: the status code tells the state; query parameters override
/// each code (Vault's `uninitcode`, `sealedcode`, `activecode`, ...). Only
/// final codes 200-599 are accepted: a 1xx would be an interim response (or
/// a protocol switch) and is not a health answer, and hyper cannot send
/// anything above 599 in a way clients agree on.
async fn health(core: &Arc<Core>, head: bool, uri: &Uri) -> Result<Response, ApiError> {
    let q = query_map(uri)?;
    let mut codes = std::collections::HashMap::new();
    for &name in HEALTH_CODES {
        if let Some(v) = q.get(name) {
            let code = v
                .as_str()
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("invalid value for '{name}': expected an HTTP status code 200-599"))
                })?;
            codes.insert(name, code);
        }
    }
    for &flag in HEALTH_FLAGS {
        if let Some(Value::String(s)) = q.get(flag)
            && !s.is_empty()
            && parse_bool(s).is_none()
        {
            return Err(ApiError::bad_request(format!("invalid value for '{flag}': expected a boolean")));
        }
    }
    let code = |name: &str, default: StatusCode| codes.get(name).copied().unwrap_or(default);
    let h = core.health().await?;
    let status = if !h.initialized {
        code("uninitcode", StatusCode::NOT_IMPLEMENTED)
    } else if h.sealed {
        code("sealedcode", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        code("activecode", StatusCode::OK)
    };
    // No body for HEAD, nor for the codes that cannot carry one.
    if head || matches!(status, StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED) {
        let mut r = status.into_response();
        set_common_headers(r.headers_mut());
        return Ok(r);
    }
    Ok(json_response(status, &h))
}

/// The operation a ceremony status/start/cancel endpoint performs, for the
/// policy check (GET read, PUT/POST update, DELETE delete).
fn ceremony_op(method: &str) -> Option<Operation> {
    match method {
        "GET" => Some(Operation::Read),
        "PUT" | "POST" => Some(Operation::Update),
        "DELETE" => Some(Operation::Delete),
        _ => None,
    }
}

fn ok<T: serde::Serialize>(v: &T) -> Response {
    json_response(StatusCode::OK, v)
}
