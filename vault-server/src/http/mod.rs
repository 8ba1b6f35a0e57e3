//! HTTP: the only module that knows axum and status codes. It turns
//! requests into core calls (raw `sys/` endpoints) or logical requests, and
//! results into Vault's JSON shapes.

mod budget;
mod error;
pub mod serve;
mod sys_raw;
pub mod tls;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
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
    /// Longest pause allowed while a request body is read (`http_read_timeout`).
    body_stall: Duration,
    /// Request body bytes buffered by all requests together.
    in_flight: Arc<budget::Budget>,
}

/// The application: every request goes through [`dispatch`]. `body_stall`
/// is the listener's `http_read_timeout`; `in_flight_bytes` bounds the
/// request bodies buffered at once (`max_request_bytes_in_flight`).
pub fn router(
    core: Arc<Core>,
    max_body: usize,
    body_stall: Duration,
    in_flight_bytes: usize,
    max_connections: usize,
) -> Router {
    Router::new().fallback(dispatch).layer(DefaultBodyLimit::disable()).with_state(AppState {
        core,
        max_body,
        body_stall,
        in_flight: Arc::new(budget::Budget::new(in_flight_bytes, max_body, max_connections)),
    })
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
    let path = percent_decode(raw, "path")?;
    // No Vault path has a control character; storage refuses them too.
    if path.chars().any(char::is_control) {
        return Err(ApiError::bad_request("path must not contain control characters"));
    }
    Ok(path)
}

/// Percent-decode `raw` (part of the URL named `what`): every `%` must be
/// followed by two hex digits and the result must be UTF-8.
fn percent_decode(raw: &str, what: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid percent-encoding in {what}"));
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly (`from_str_radix` alone would take "+1").
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit)).ok_or_else(bad)?;
            let s = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("{what} is not valid UTF-8")))
}

/// Query parameters as a JSON map (values are strings). A malformed
/// percent-encoding is a 400: silently dropping it would turn e.g.
/// `list=%zz` into "no list flag".
fn query_map(uri: &Uri) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    if let Some(q) = uri.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(&k.replace('+', " "), "query string")?;
            let v = percent_decode(&v.replace('+', " "), "query string")?;
            m.insert(k, Value::String(v));
        }
    }
    Ok(m)
}

/// Parse a request body: empty is `{}`, otherwise it must be a JSON object.
fn body_map(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        // `null` (what `vault write -f` sends) is an empty body, as in Vault.
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to parse JSON input: {}",
            // serde's message names the position and the problem, never echoes content.
            e
        ))),
    }
}

/// Typed body for raw endpoints: a clear 400 on wrong shape or types. The
/// top level must be an object: serde would otherwise read a JSON array as
/// the struct's fields in order (`[2,2]` as shares and threshold).
fn typed_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(T::default()),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("request body must be a JSON object")),
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("failed to parse JSON input: {e}")))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds the limit of {limit} bytes"))
}

/// Read the whole body, at most `limit` bytes, failing with a 408 when no
/// data arrives for `stall` (Vault's `http_read_timeout`). The timeout is per
/// read, not for the whole body: an upload that keeps sending is fine, one
/// that stops holds its connection no longer than `stall`.
fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many request bytes in flight; retry shortly")
}

async fn read_body(
    mut body: Body,
    limit: usize,
    stall: Duration,
    budget: &budget::Budget,
    peer: std::net::IpAddr,
) -> Result<(Bytes, budget::Held), ApiError> {
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut total = 0usize;
    // What is buffered so far, counted against the shared budget (see budget.rs).
    let mut held = budget::Held::default();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout(stall, next).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("timed out reading the request body (no data for {} s)", stall.as_secs()),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body could not be read");
                return Err(ApiError::bad_request("failed to read the request body"));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing we use.
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(too_large(limit));
        }
        if !budget.cover(&mut held, peer, total) {
            return Err(busy());
        }
        match first.take() {
            None if more.is_empty() => first = Some(data),
            f => {
                if let Some(f) = f {
                    more.extend_from_slice(&f);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok((first.unwrap_or_else(|| Bytes::from(more)), held))
}

async fn dispatch(State(state): State<AppState>, req: HttpRequest) -> Response {
    let (parts, body) = req.into_parts();
    // Served by `serve.rs`, every request has its peer; without one (a
    // router driven another way) refuse rather than guess an address.
    let Some(ConnectInfo(tls::PeerAddr(peer))) = parts.extensions.get::<ConnectInfo<tls::PeerAddr>>().copied() else {
        return error::internal("request without a peer address").into_response();
    };
    let http1 = parts.version <= Version::HTTP_11;
    match handle(state, peer, parts.method, parts.uri, parts.headers, body).await {
        Ok(r) => r,
        Err(e) => {
            let timed_out = e.status == StatusCode::REQUEST_TIMEOUT;
            let mut r = e.into_response();
            if timed_out && http1 {
                // The rest of the body may still come: the connection is not reusable.
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    }
}

/// `X-Vault-Wrap-TTL` asks for response wrapping, which this server does
/// not implement: answering in the clear (with `wrap_info: null`) would hand
/// the secret to whoever relays the response (an orchestrator doing secure
/// introduction), so such requests are refused before anything runs.
fn refuse_wrapping(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key("x-vault-wrap-ttl") {
        return Err(ApiError::bad_request(
            "response wrapping is not supported by this server: remove the X-Vault-Wrap-TTL header",
        ));
    }
    Ok(())
}

/// `sys/wrapping/{wrap,unwrap,lookup,rewrap}`: refused plainly rather than
/// answering 403/404, which would read as "this wrapping token was already
/// used or tampered with".
fn is_wrapping_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    p == "sys/wrapping" || p.starts_with("sys/wrapping/")
}

async fn handle(
    state: AppState,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    refuse_wrapping(&headers)?;
    let Some(raw_path) = uri.path().strip_prefix("/v1/") else {
        return Err(ApiError::empty(StatusCode::NOT_FOUND));
    };
    let path = decode_path(raw_path)?;
    if path.split('/').any(|s| s == ".." || s == ".") {
        return Err(ApiError::bad_request("path must not contain '.' or '..' segments"));
    }
    if is_wrapping_path(&path) {
        return Err(ApiError::bad_request("response wrapping is not supported by this server"));
    }
    // Refuse a declared oversize body before reading any of it.
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > state.max_body as u64
    {
        return Err(too_large(state.max_body));
    }
    // The budget is held until the request is answered (the body lives that long).
    let (body, _budget) = read_body(body, state.max_body, state.body_stall, &state.in_flight, peer.ip()).await?;
    if let Some(r) = sys_raw::handle(&state.core, &method, &path, &uri, &headers, &body, peer.ip()).await? {
        return Ok(r);
    }

    let mut data = query_map(&uri)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    struct Two {
        #[serde(default)]
        a: u32,
        #[serde(default)]
        b: u32,
    }

    #[test]
    fn typed_body_takes_objects_only() {
        assert_eq!(typed_body::<Two>(b" {\"a\": 2, \"b\": 3} ").map(|t| (t.a, t.b)).unwrap(), (2, 3));
        assert_eq!(typed_body::<Two>(b"  \n").map(|t| (t.a, t.b)).unwrap(), (0, 0));
        // serde alone would read `[2,3]` as a = 2, b = 3.
        for body in [&b"[2,3]"[..], b" []", b"null", b"5", b"\"x\"", b"true"] {
            let e = typed_body::<Two>(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.errors[0].contains("JSON object"), "{:?}", e.errors);
        }
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(decode_path("team%2Dx/%C3%A9").unwrap(), "team-x/é");
        for bad in ["%", "%2", "%zz", "%+1", "%-1", "%ff"] {
            assert_eq!(decode_path(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let q = |s: &str| query_map(&s.parse::<Uri>().unwrap());
        let m = q("/v1/x?list=true&a+b=c%20d&flag").unwrap();
        assert_eq!((m["list"].as_str(), m["a b"].as_str(), m["flag"].as_str()), (Some("true"), Some("c d"), Some("")));
        for bad in ["/v1/x?list=%zz", "/v1/x?x=%2&list=true", "/v1/x?%+1=x"] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrapping_is_recognised() {
        let mut h = HeaderMap::new();
        assert!(refuse_wrapping(&h).is_ok());
        h.insert("x-vault-wrap-ttl", HeaderValue::from_static(""));
        assert_eq!(refuse_wrapping(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
        for p in ["sys/wrapping/unwrap", "sys/wrapping/lookup/", "sys/wrapping"] {
            assert!(is_wrapping_path(p), "{p}");
        }
        assert!(!is_wrapping_path("sys/wrappingx"));
        assert!(!is_wrapping_path("kv/sys/wrapping/unwrap"));
    }

    #[tokio::test]
    async fn body_reading_limits_and_stalls() {
        let budget = budget::Budget::new(1 << 20, 1024, 64);
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let (ok, _held) = read_body(Body::from("{\"a\":1}"), 1024, Duration::from_secs(1), &budget, ip).await.unwrap();
        assert_eq!(&ok[..], b"{\"a\":1}");
        let big = read_body(Body::from(vec![b'x'; 2000]), 1024, Duration::from_secs(1), &budget, ip).await.unwrap_err();
        assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
        // A body whose next chunk never comes.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
        let e =
            read_body(Body::new(stalled_body(rx)), 1024, Duration::from_millis(100), &budget, ip).await.unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        drop(tx);
    }

    #[tokio::test]
    async fn a_full_budget_refuses_big_bodies_not_small_ones() {
        // 1 MiB in all, 200 KiB bodies allowed: one address holds at most 200 KiB beyond the free part.
        let budget = budget::Budget::new(1 << 20, 200 * 1024, 64);
        let limit = 1 << 20;
        let stall = Duration::from_secs(1);
        let mut held = Vec::new();
        for i in 0..5u8 {
            let ip: std::net::IpAddr = format!("192.0.2.{i}").parse().unwrap();
            let body = Body::from(vec![b'x'; budget::FREE_BYTES + 200 * 1024]);
            held.push(read_body(body, limit, stall, &budget, ip).await.unwrap());
        }
        let ip: std::net::IpAddr = "192.0.2.9".parse().unwrap();
        let refused = read_body(Body::from(vec![b'x'; budget::FREE_BYTES + 200 * 1024]), limit, stall, &budget, ip)
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        // A small body (a login, an unseal) still goes through.
        let small = read_body(Body::from(vec![b'{'; 2000]), limit, stall, &budget, ip).await;
        assert!(small.is_ok());
        drop(held);
        assert!(
            read_body(Body::from(vec![b'x'; budget::FREE_BYTES + 200 * 1024]), limit, stall, &budget, ip).await.is_ok()
        );
    }

    /// A body fed by a channel.
    fn stalled_body(
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl axum::body::HttpBody<Data = Bytes, Error = std::io::Error> {
        struct Rx(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);
        impl axum::body::HttpBody for Rx {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
                self.0.poll_recv(cx).map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
            }
        }
        Rx(rx)
    }
}
