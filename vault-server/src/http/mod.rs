//! HTTP: the only module that knows axum and status codes. It turns
//! requests into core calls (raw `sys/` endpoints) or logical requests, and
//! results into Vault's JSON shapes.

mod error;
mod sys_raw;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub use error::ApiError;

use crate::core::Core;
use crate::crypto::random;
use crate::logical::{self, Operation, Request};

/// Shared state of the HTTP layer.
#[derive(Clone, Debug)]
pub struct AppState {
    core: Arc<Core>,
    max_body: usize,
}

/// The application: every request goes through [`dispatch`].
pub fn router(core: Arc<Core>, max_body: usize) -> Router {
    Router::new().fallback(dispatch).layer(DefaultBodyLimit::disable()).with_state(AppState { core, max_body })
}

/// A JSON response with Vault's headers. The content type is exactly
/// `application/json` (hvac compares it literally) and nothing is cached.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(_) => b"{\"errors\":[\"internal error\"]}".to_vec(),
    };
    let mut r = (status, bytes).into_response();
    set_common_headers(r.headers_mut());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn no_content() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    set_common_headers(r.headers_mut());
    r
}

fn set_common_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
}

/// The caller's token: `X-Vault-Token`, else `Authorization: Bearer`.
fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Percent-decode a URL path (hvac percent-quotes mount paths).
fn decode_path(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex =
                bytes.get(i + 1..i + 3).ok_or_else(|| ApiError::bad_request("invalid percent-encoding in path"))?;
            let s = std::str::from_utf8(hex).map_err(|_| ApiError::bad_request("invalid percent-encoding in path"))?;
            let b = u8::from_str_radix(s, 16).map_err(|_| ApiError::bad_request("invalid percent-encoding in path"))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("path is not valid UTF-8"))
}

/// Query parameters as a JSON map (values are strings).
fn query_map(uri: &Uri) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(q) = uri.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_path(&k.replace('+', " ")).unwrap_or_default();
            let v = decode_path(&v.replace('+', " ")).unwrap_or_default();
            m.insert(k, Value::String(v));
        }
    }
    m
}

/// Parse a request body: empty is `{}`, otherwise it must be a JSON object.
fn body_map(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to parse JSON input: {}",
            // serde's message names the position and the problem, never echoes content.
            e
        ))),
    }
}

/// Typed body for raw endpoints: a clear 400 on wrong shape or types.
fn typed_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("failed to parse JSON input: {e}")))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds the limit of {limit} bytes"))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))
}

async fn dispatch(
    State(state): State<AppState>,
    ConnectInfo(tls::PeerAddr(peer)): ConnectInfo<tls::PeerAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(state, peer, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(raw_path) = uri.path().strip_prefix("/v1/") else {
        return Err(ApiError::empty(StatusCode::NOT_FOUND));
    };
    let path = decode_path(raw_path)?;
    if path.split('/').any(|s| s == ".." || s == ".") {
        return Err(ApiError::bad_request("path must not contain '.' or '..' segments"));
    }
    // Refuse a declared oversize body before reading any of it.
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > state.max_body as u64
    {
        return Err(too_large(state.max_body));
    }
    let body = read_body(body, state.max_body).await?;
    if let Some(r) = sys_raw::handle(&state.core, &method, &path, &uri, &headers, &body, peer.ip()).await? {
        return Ok(r);
    }

    let mut data = query_map(&uri);
    let list_flag = match data.remove("list") {
        Some(Value::String(s)) => logical::fields::parse_bool(&s)
            .ok_or_else(|| ApiError::bad_request("invalid value for 'list': expected a boolean"))?,
        _ => false,
    };
    let op = match method.as_str() {
        "GET" if list_flag => Operation::List,
        "GET" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" => Operation::Update,
        "PATCH" => Operation::Patch,
        "DELETE" => Operation::Delete,
        _ => return Err(ApiError::empty(StatusCode::METHOD_NOT_ALLOWED)),
    };
    if matches!(op, Operation::Update | Operation::Patch) {
        data = body_map(&body)?;
    } else if !body.is_empty() && op == Operation::Delete {
        // Some clients send a body with DELETE (e.g. a list of versions).
        data.extend(body_map(&body)?);
    }
    let mut path = path;
    if op == Operation::List && !path.ends_with('/') {
        path.push('/');
    }
    let req = Request { op, path: path.clone(), data, client_addr: Some(peer.ip()) };
    let handled = state.core.handle(token(&headers), req).await?;
    Ok(logical_response(&path, handled))
}

/// Vault copies `data` to the top level for these `sys/` routes (its
/// "HTTPSysInjector"); clients such as hvac read either place.
fn injects_top_level(path: &str) -> bool {
    const ROUTES: &[&str] = &[
        "sys/mounts",
        "sys/key-status",
        "sys/rotate",
        "sys/policy",
        "sys/auth",
        "sys/capabilities",
        "sys/capabilities-self",
        "sys/capabilities-accessor",
        "sys/audit",
        "sys/remount",
    ];
    ROUTES.iter().any(|r| path == *r || path.strip_prefix(r).is_some_and(|rest| rest.starts_with('/')))
}

fn logical_response(path: &str, handled: crate::core::request::Handled) -> Response {
    match handled.response {
        logical::Response::NoContent => no_content(),
        // The core turns logins into data responses; reaching here is a bug.
        logical::Response::Login(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
        logical::Response::NotFoundWithData(data) => {
            envelope(path, StatusCode::NOT_FOUND, Some(data), None, Vec::new(), handled.mount_type)
        }
        logical::Response::Data { data, auth, warnings } => {
            envelope(path, StatusCode::OK, data, auth, warnings, handled.mount_type)
        }
    }
}

/// Vault's standard response envelope.
fn envelope(
    path: &str,
    status: StatusCode,
    data: Option<Map<String, Value>>,
    auth: Option<Box<logical::AuthInfo>>,
    warnings: Vec<String>,
    mount_type: String,
) -> Response {
    let mut body = Map::new();
    if injects_top_level(path)
        && let Some(d) = &data
    {
        for (k, v) in d {
            body.insert(k.clone(), v.clone());
        }
    }
    body.insert("request_id".into(), random::uuid().into());
    body.insert("lease_id".into(), "".into());
    body.insert("renewable".into(), false.into());
    body.insert("lease_duration".into(), 0.into());
    body.insert("data".into(), data.map(Value::Object).unwrap_or(Value::Null));
    body.insert("wrap_info".into(), Value::Null);
    body.insert("warnings".into(), if warnings.is_empty() { Value::Null } else { warnings.into() });
    body.insert("auth".into(), auth.and_then(|a| serde_json::to_value(a).ok()).unwrap_or(Value::Null));
    body.insert("mount_type".into(), mount_type.into());
    json_response(status, &Value::Object(body))
}
