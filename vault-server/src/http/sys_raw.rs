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
        "sys/rekey/init" => match m {
            "GET" => Ok(Some(ok(&core.rekey_status().await?))),
            "DELETE" => {
                core.rekey_cancel().await?;
                Ok(Some(no_content()))
            }
            _ if write => Ok(Some(ok(&core.rekey_init(typed_body(body)?).await?))),
            _ => not_allowed(),
        },
        "sys/rekey/update" if write => match core.rekey_update(typed_body(body)?).await? {
            Ok(status) => Ok(Some(ok(&status))),
            Err(complete) => Ok(Some(ok(&complete))),
        },
        "sys/generate-root/attempt" => match m {
            "GET" => Ok(Some(ok(&core.generate_root_status().await?))),
            "DELETE" => {
                core.generate_root_cancel().await?;
                Ok(Some(no_content()))
            }
            _ if write => Ok(Some(ok(&core.generate_root_start(typed_body(body)?).await?))),
            _ => not_allowed(),
        },
        "sys/generate-root/update" if write => Ok(Some(ok(&core.generate_root_update(typed_body(body)?).await?))),
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

fn ok<T: serde::Serialize>(v: &T) -> Response {
    json_response(StatusCode::OK, v)
}
