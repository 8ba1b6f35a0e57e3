//! The `sys/` endpoints Vault serves outside the logical router, because
//! they must work while sealed or before any token exists: init, unseal,
//! seal-status, seal, health, rekey and generate-root. They answer raw JSON
//! (no envelope), as Vault does.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ApiError, json_response, no_content, query_map, token, typed_body};
use crate::core::Core;
use crate::logical::Operation;
use crate::logical::fields::parse_bool;

/// Serve `path` if it is one of the raw endpoints; `None` otherwise.
pub(super) async fn handle(
    core: &Arc<Core>,
    method: &Method,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    peer: std::net::IpAddr,
) -> Result<Option<Response>, ApiError> {
    let path = path.trim_end_matches('/');
    let m = method.as_str();
    let write = m == "PUT" || m == "POST";
    let not_allowed = || Err(ApiError::empty(StatusCode::METHOD_NOT_ALLOWED));
    match path {
        "sys/init" => match m {
            "GET" => Ok(Some(ok(&vault_api::InitStatus { initialized: core.initialized().await? }))),
            _ if write => Ok(Some(ok(&core.init(typed_body(body)?).await?))),
            _ => not_allowed(),
        },
        "sys/unseal" if write => Ok(Some(ok(&core.unseal(typed_body(body)?).await?))),
        "sys/seal-status" if m == "GET" => Ok(Some(ok(&core.seal_status().await?))),
        "sys/seal" if write => {
            core.seal_with_token(token(headers), Some(peer)).await?;
            Ok(Some(no_content()))
        }
        "sys/health" if m == "GET" || m == "HEAD" => Ok(Some(health(core, m == "HEAD", uri).await?)),
        // Key ceremonies: the core decides whether the caller needs a token
        // (with `sudo`) before the body is even parsed.
        "sys/rekey/init" => {
            let Some(op) = ceremony_op(m) else { return not_allowed() };
            let grant = core.authorize_ceremony(path, op, token(headers), Some(peer)).await?;
            Ok(Some(match op {
                Operation::Read => ok(&core.rekey_status(&grant).await?),
                Operation::Delete => {
                    core.rekey_cancel(&grant).await?;
                    no_content()
                }
                _ => ok(&core.rekey_init(&grant, typed_body(body)?).await?),
            }))
        }
        "sys/generate-root/attempt" => {
            let Some(op) = ceremony_op(m) else { return not_allowed() };
            let grant = core.authorize_ceremony(path, op, token(headers), Some(peer)).await?;
            Ok(Some(match op {
                Operation::Read => ok(&core.generate_root_status(&grant).await?),
                Operation::Delete => {
                    core.generate_root_cancel(&grant).await?;
                    no_content()
                }
                _ => ok(&core.generate_root_start(&grant, typed_body(body)?).await?),
            }))
        }
        "sys/rekey/update" if write => {
            let grant = core.authorize_ceremony(path, Operation::Update, token(headers), Some(peer)).await?;
            match core.rekey_update(&grant, typed_body(body)?).await? {
                Ok(status) => Ok(Some(ok(&status))),
                Err(complete) => Ok(Some(ok(&complete))),
            }
        }
        "sys/generate-root/update" if write => {
            let grant = core.authorize_ceremony(path, Operation::Update, token(headers), Some(peer)).await?;
            Ok(Some(ok(&core.generate_root_update(&grant, typed_body(body)?).await?)))
        }
        "sys/unseal"
        | "sys/seal-status"
        | "sys/seal"
        | "sys/health"
        | "sys/rekey/update"
        | "sys/generate-root/update" => not_allowed(),
        _ => Ok(None),
    }
}

/// `sys/health`: the status code tells the state; query parameters override
/// each code (Vault's `uninitcode`, `sealedcode`, `activecode`, ...).
async fn health(core: &Arc<Core>, head: bool, uri: &Uri) -> Result<Response, ApiError> {
    let q = query_map(uri);
    let code = |name: &str, default: u16| -> Result<StatusCode, ApiError> {
        match q.get(name) {
            Some(Value::String(s)) => {
                s.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| {
                    ApiError::bad_request(format!("invalid value for '{name}': expected an HTTP status code"))
                })
            }
            _ => StatusCode::from_u16(default).map_err(|_| ApiError::empty(StatusCode::BAD_REQUEST)),
        }
    };
    for flag in ["standbyok", "perfstandbyok"] {
        if let Some(Value::String(s)) = q.get(flag)
            && !s.is_empty()
            && parse_bool(s).is_none()
        {
            return Err(ApiError::bad_request(format!("invalid value for '{flag}': expected a boolean")));
        }
    }
    let h = core.health().await?;
    let status = if !h.initialized {
        code("uninitcode", 501)?
    } else if h.sealed {
        code("sealedcode", 503)?
    } else {
        code("activecode", 200)?
    };
    if head {
        let mut r = status.into_response();
        r.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
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
