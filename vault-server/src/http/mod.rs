//! HTTP: the only module that knows axum and status codes. It turns
//! requests into core calls (raw `sys/` endpoints) or logical requests, and
//! results into Vault's JSON shapes.

mod budget;
mod cors;
mod error;
mod quota;
pub(crate) mod serve;
mod snapshot;
mod stream;
mod sys_raw;
pub mod tls;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub use error::ApiError;

use tracing::Instrument;

use crate::core::Core;
use crate::core::hooks::{Caller, RequestEvent, ResponseEvent};
use crate::crypto::random;
use crate::logical::{self, Operation};

/// Shared state of the HTTP layer.
#[derive(Clone, Debug)]
pub struct AppState {
    core: Arc<Core>,
    max_body: usize,
    /// Longest pause allowed while a request body is read (`http_read_timeout`).
    body_stall: Duration,
    /// Request body bytes buffered by all requests together.
    in_flight: Arc<budget::Budget>,
    /// The last `sys/health` body, rendered once per second and state.
    health: Arc<sys_raw::RenderedHealth>,
    /// `Strict-Transport-Security`, sent on every answer when serving TLS.
    hsts: Option<HeaderValue>,
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
    router_with_hsts(core, max_body, body_stall, in_flight_bytes, max_connections, None)
}

/// [`router`] for a TLS listener: every answer carries
/// `Strict-Transport-Security: max-age={hsts_max_age}` (`None` or 0: none).
pub fn router_with_hsts(
    core: Arc<Core>,
    max_body: usize,
    body_stall: Duration,
    in_flight_bytes: usize,
    max_connections: usize,
    hsts_max_age: Option<u64>,
) -> Router {
    let hsts = hsts_max_age
        .filter(|s| *s > 0)
        .and_then(|s| HeaderValue::from_str(&format!("max-age={s}; includeSubDomains")).ok());
    Router::new().fallback(dispatch).layer(DefaultBodyLimit::disable()).with_state(AppState {
        core,
        max_body,
        body_stall,
        in_flight: Arc::new(budget::Budget::new(in_flight_bytes, max_body, max_connections)),
        health: Arc::default(),
        hsts,
    })
}

/// A JSON response with Vault's headers. The content type is exactly
/// `application/json` (hvac compares it literally) and nothing is cached.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    json_bytes_response(status, to_json(body))
}

/// `body` as JSON; a value that cannot be serialized becomes a generic error.
fn to_json<T: Serialize>(body: &T) -> bytes::Bytes {
    match serde_json::to_vec(body) {
        Ok(b) => b.into(),
        Err(_) => bytes::Bytes::from_static(b"{\"errors\":[\"internal error\"]}"),
    }
}

/// A response carrying `bytes`, already JSON, with Vault's headers.
fn json_bytes_response(status: StatusCode, bytes: bytes::Bytes) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    *r.headers_mut() = response_headers();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn no_content() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    *r.headers_mut() = response_headers();
    r
}

/// A header map for an answer: the common headers, and room for the
/// content type, the request id and the length (sized once: growing a
/// header map rehashes it, which costs more than the rest of `sys/health`).
fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::with_capacity(10);
    set_common_headers(&mut h);
    h
}

fn set_common_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
}

/// The caller's token: `X-Vault-Token`, else `Authorization: Bearer`.
fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get(&VAULT_TOKEN).and_then(|v| v.to_str().ok()) {
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
    let path = if raw.contains('%') { percent_decode(raw, "path")? } else { raw.to_string() };
    // No Vault path has a control character; storage refuses them too.
    if path.chars().any(char::is_control) {
        return Err(ApiError::bad_request("path must not contain control characters"));
    }
    Ok(path)
}

/// Percent-decode `raw` (part of the URL named `what`) with the
/// `percent-encoding` crate, strictly: that crate passes a malformed escape
/// through as text, so every `%` is first checked to start an escape of two
/// hex digits (RFC 3986, section 2.1), and the result must be UTF-8.
fn percent_decode(raw: &str, what: &str) -> Result<String, ApiError> {
    let well_formed =
        raw.split('%').skip(1).all(|s| s.as_bytes().get(..2).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return Err(ApiError::bad_request(format!("invalid percent-encoding in {what}")));
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ApiError::bad_request(format!("{what} is not valid UTF-8")))
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

/// Memory a parsed JSON value takes beyond its text, per value (a
/// `serde_json::Value` is 32 bytes, arrays grow by doubling, map entries
/// carry their node).
const PARSED_BYTES_PER_VALUE: usize = 64;

/// How many JSON values `body` holds, at most (commas and opening brackets
/// outside strings, plus one): a tree of that many values is what parsing
/// it allocates.
fn json_values(body: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b'{' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Charge the in-flight budget for what parsing `body` will allocate, before
/// parsing it: a body of tiny values (`[0,0,0,...]`) parses into a tree tens
/// of times its size, which the byte count alone would not bound. A body
/// whose tree would exceed twice `max_request_bytes` is a 413.
fn charge_parsed(
    state: &AppState,
    held: &mut budget::Held,
    peer: std::net::IpAddr,
    body: &[u8],
) -> Result<(), ApiError> {
    let tree = json_values(body).saturating_mul(PARSED_BYTES_PER_VALUE);
    if tree > state.max_body.saturating_mul(2) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body holds too many JSON values for the request size limit",
        ));
    }
    if !state.in_flight.cover(held, peer, body.len().saturating_add(tree)) {
        return Err(busy());
    }
    Ok(())
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
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("failed to parse JSON input: {}", quiet(&e))))
}

/// A serde error without the value it quotes: `invalid type: string
/// "<what was sent>", expected a boolean` becomes `invalid type, expected a
/// boolean` (what was sent may be a secret: an unseal key in the wrong field).
fn quiet(e: &serde_json::Error) -> String {
    let text = e.to_string();
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if text.starts_with(kind) {
            return match text.find(", expected ") {
                Some(i) => format!("{kind}{}", &text[i..]),
                None => format!("{kind} at line {} column {}", e.line(), e.column()),
            };
        }
    }
    text
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds the limit of {limit} bytes"))
}

fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many request bytes in flight; retry shortly")
}

/// Read the whole body, at most `limit` bytes, failing with a 408 unless it
/// is complete within `stall` (Vault's `http_read_timeout`, which Go applies
/// to the whole request): a sender trickling a byte now and then holds its
/// connection no longer than a silent one. Streamed bodies (`stream.rs`),
/// long by design, are timed per chunk instead.
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
    // No body at all (most GETs): nothing to read or count.
    if body.is_end_stream() {
        return Ok((Bytes::new(), held));
    }
    let deadline = tokio::time::Instant::now() + stall;
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout_at(deadline, next).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("timed out reading the request body (not complete within {} s)", stall.as_secs()),
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
    let started = std::time::Instant::now();
    // One id per request: in the answer (`request_id`, `X-Request-Id`), to
    // the hooks, and on every log line written while it runs (the span).
    let request_id = random::uuid();
    let span = tracing::info_span!("request", request_id = %request_id);
    // CORS first: a preflight or a refused origin is answered without
    // running anything (off by default: one header lookup).
    let cors = match cors::check(&state.core, &parts.method, &parts.headers) {
        cors::Cors::Answer(r) => return finish(&state, r, &request_id, None, None),
        cors::Cors::Allow(origin) => Some(origin),
        cors::Cors::None => None,
    };
    // A body the pipeline may leave unread (denied before reading it).
    let has_body = parts.headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let incoming =
        Incoming { peer, method: parts.method, uri: parts.uri, headers: parts.headers, body, version: parts.version };
    let (result, body_read, rate) = handle(&state, &request_id, started, incoming).instrument(span).await;
    let mut r = match result {
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
    };
    if http1 && has_body && !body_read {
        // The unread body is still on the connection: hyper will close it
        // after this answer, so say so (a client reusing it would see its
        // next request dropped).
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    finish(&state, r, &request_id, cors, rate)
}

/// Headers every answer gets last: the request id, HSTS under TLS, CORS
/// for an allowed origin, rate-limit state when enabled.
fn finish(
    state: &AppState,
    mut r: Response,
    request_id: &str,
    cors: Option<HeaderValue>,
    rate: Option<crate::quotas::RateInfo>,
) -> Response {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    if let Some(v) = &state.hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    if let Some(origin) = cors {
        cors::add(h, origin);
    }
    if let Some(info) = rate {
        quota::add_headers(h, &info);
    }
    r
}

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

// Header names looked up on every request, made once (a `&str` name is
// parsed and checked on each lookup).
static VAULT_TOKEN: HeaderName = HeaderName::from_static("x-vault-token");
static WRAP_TTL: HeaderName = HeaderName::from_static("x-vault-wrap-ttl");

/// `X-Vault-Wrap-TTL` asks for response wrapping, which this server does
/// not implement: answering in the clear (with `wrap_info: null`) would hand
/// the secret to whoever relays the response (an orchestrator doing secure
/// introduction), so such requests are refused before anything runs.
fn refuse_wrapping(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(&WRAP_TTL) {
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

/// What the pipeline knows of a request, for the hooks (owned: built as
/// the request is understood, complete once it is routed).
struct Seen {
    op: Operation,
    /// `path` is final: routed (personal captures redacted) or a raw
    /// endpoint's. Otherwise it is the path as requested, shown to hooks
    /// only through [`Core::loggable_path`].
    routed: bool,
    /// The request body was read to its end (else an HTTP/1 connection
    /// cannot carry another request: the answer says `Connection: close`).
    body_read: bool,
    path: String,
    template: &'static str,
    mount: std::borrow::Cow<'static, str>,
    mount_type: std::borrow::Cow<'static, str>,
    caller: Option<Caller>,
    remote: std::net::IpAddr,
    /// The client's rate-limit bucket, when `X-Ratelimit-*` headers are on.
    rate: Option<crate::quotas::RateInfo>,
    /// A rate limit refused the request (the hooks hear of it only when
    /// `enable_rate_limit_audit_logging` asks: a flood must not become a
    /// flood of audit writes).
    quota_refused: bool,
    /// The presented token, kept only when a hook records values (audit
    /// devices hash it).
    client_token: Option<String>,
    /// The answer's `auth` block, kept only when a hook records values.
    auth: Option<Map<String, Value>>,
    /// The audit broker's record of the request, from its request entry to
    /// its response entry (dropped with the request: a seal waits for it).
    audit: crate::audit::Carry,
}

impl Seen {
    /// An empty record (what a dropped `Pending` leaves behind).
    fn placeholder() -> Self {
        Seen {
            op: Operation::Read,
            routed: true,
            body_read: false,
            path: String::new(),
            template: "",
            mount: "".into(),
            mount_type: "".into(),
            caller: None,
            remote: std::net::Ipv4Addr::UNSPECIFIED.into(),
            rate: None,
            quota_refused: false,
            client_token: None,
            auth: None,
            audit: crate::audit::Carry::new(),
        }
    }

    /// Make `path` fit for hooks if routing did not (a request refused or
    /// failed before it was routed).
    fn settle(&mut self, core: &Core) {
        if !self.routed {
            self.path = core.loggable_path(&self.path);
            self.routed = true;
        }
    }

    fn event<'a>(&'a self, request_id: &'a str, data: Option<&'a Map<String, Value>>) -> RequestEvent<'a> {
        RequestEvent {
            request_id,
            op: self.op,
            path: &self.path,
            route: self.template,
            mount: &self.mount,
            mount_type: &self.mount_type,
            caller: self.caller.as_ref(),
            remote: Some(self.remote),
            data,
            client_token: self.client_token.as_deref(),
            audit: &self.audit,
        }
    }
}

/// The operation a method (and `?list=`) asks for.
fn operation(method: &Method, list_flag: bool) -> Result<Operation, ApiError> {
    Ok(match method.as_str() {
        "GET" | "HEAD" if list_flag => Operation::List,
        "GET" | "HEAD" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" => Operation::Update,
        "PATCH" => Operation::Patch,
        "DELETE" => Operation::Delete,
        _ => return Err(ApiError::empty(StatusCode::METHOD_NOT_ALLOWED)),
    })
}

/// The pipeline every request passes, raw `sys/` endpoints included:
///
/// ```text
/// request id -> parse -> route -> authenticate -> authorize -> body (JSON, bounded)
///   -> request hooks (may refuse) -> backend -> response hooks -> envelope
/// ```
///
/// No body byte is read before the policy check (a denied request costs no
/// body read); the hooks see the request's data, so an audit device can
/// record it, and run before anything executes. Raw endpoints do their own
/// authentication (most need none), after the hooks.
async fn handle(
    state: &AppState,
    request_id: &str,
    started: std::time::Instant,
    incoming: Incoming,
) -> (Result<Response, ApiError>, bool, Option<crate::quotas::RateInfo>) {
    let seen = Seen {
        op: operation(&incoming.method, false).unwrap_or(Operation::Read),
        routed: false,
        body_read: false,
        path: incoming.uri.path().strip_prefix("/v1/").unwrap_or_default().to_string(),
        template: "",
        mount: "".into(),
        mount_type: "".into(),
        caller: None,
        remote: incoming.peer.ip(),
        rate: None,
        quota_refused: false,
        client_token: None,
        auth: None,
        audit: crate::audit::Carry::new(),
    };
    // Until the response hooks ran, dropping this (the client went away and
    // hyper dropped the request's future) still tells the hooks, as 499.
    let mut pending = Pending { core: state.core.clone(), request_id, started, seen, done: false };
    let result = run(state, request_id, &mut pending.seen, incoming).await;
    if pending.seen.quota_refused && !state.core.quotas().config().enable_rate_limit_audit_logging {
        pending.done = true;
        return (result.map(|(r, _)| r), false, None);
    }
    let (status, errors) = match &result {
        Ok((r, _)) => (r.status().as_u16(), Vec::new()),
        Err(e) => (e.status.as_u16(), e.errors.clone()),
    };
    let data = result.as_ref().ok().and_then(|(_, d)| d.as_ref());
    pending.seen.settle(&state.core);
    let request = pending.seen.event(request_id, None);
    let event = ResponseEvent {
        request: &request,
        status,
        duration: started.elapsed(),
        data,
        errors: &errors,
        auth: pending.seen.auth.as_ref(),
    };
    // Told once: from here on, the client going away (hyper dropping this
    // future while a hook yields) must not add a second, 499 outcome; a hook
    // cut short finishes what it handed in (an audit device's queued entry
    // is written when its future is dropped).
    pending.done = true;
    state.core.hooks().response(&event).await;
    (result.map(|(r, _)| r), pending.seen.body_read, pending.seen.rate)
}

/// Status the hooks see for a request whose client went away first
/// (nginx's "client closed request").
pub const CLIENT_GONE: u16 = 499;

/// A request whose response hooks have not run yet.
struct Pending<'a> {
    core: Arc<Core>,
    request_id: &'a str,
    started: std::time::Instant,
    seen: Seen,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped mid-request: whatever ran (a write may have committed) is
        // recorded, from a task of its own (hooks are async).
        let mut seen = std::mem::replace(&mut self.seen, Seen::placeholder());
        seen.settle(&self.core);
        let core = self.core.clone();
        let request_id = self.request_id.to_string();
        let duration = self.started.elapsed();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let request = seen.event(&request_id, None);
                let errors = ["the client closed the connection before the answer".to_string()];
                let event = ResponseEvent {
                    request: &request,
                    status: CLIENT_GONE,
                    duration,
                    data: None,
                    errors: &errors,
                    auth: None,
                };
                core.hooks().response(&event).await;
            });
        }
    }
}

/// A request as it arrived.
struct Incoming {
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    version: Version,
}

/// The stages; returns the response and the data it carries (for the hooks).
async fn run(
    state: &AppState,
    request_id: &str,
    seen: &mut Seen,
    incoming: Incoming,
) -> Result<(Response, Option<Map<String, Value>>), ApiError> {
    let Incoming { peer, method, uri, headers, body, version } = incoming;
    refuse_wrapping(&headers)?;
    let Some(raw_path) = uri.path().strip_prefix("/v1/") else {
        return Err(ApiError::empty(StatusCode::NOT_FOUND));
    };
    let path = decode_path(raw_path)?;
    seen.path.clone_from(&path);
    if state.core.hooks().want_response_data() {
        seen.client_token = token(&headers).map(str::to_string);
    }
    if path.split('/').any(|s| s == ".." || s == ".") {
        return Err(ApiError::bad_request("path must not contain '.' or '..' segments"));
    }
    if is_wrapping_path(&path) {
        return Err(ApiError::bad_request("response wrapping is not supported by this server"));
    }
    // Rate limits before anything costs: no token looked up, no body read
    // (raw endpoints, logins and unseal included).
    seen.rate = quota::check(state.core.quotas(), &path, peer.ip()).inspect_err(|_| seen.quota_refused = true)?;
    // A body declared larger than the path takes is refused before any of it is read.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());

    // Storage snapshots (backup, restore, verify): raw too, with files as bodies.
    if snapshot::is_snapshot(&path) {
        seen.mount = "sys/".into();
        seen.mount_type = "system".into();
        seen.routed = true;
        state.core.hooks().request(&seen.event(request_id, None)).await.map_err(refused)?;
        // Boxed: its future (~16 KB, file streaming) would otherwise size
        // every request's future, copied whole into a box per request.
        let r =
            Box::pin(snapshot::handle(state, &method, &path, &headers, body, peer.ip(), &mut seen.body_read)).await?;
        return Ok((r, None));
    }

    // Raw `sys/` endpoints (init, unseal, health, ceremonies...): their own
    // authentication, raw JSON answers.
    if sys_raw::is_raw(&path) {
        if declared.is_some_and(|len| len > state.max_body as u64) {
            return Err(too_large(state.max_body));
        }
        seen.mount = "sys/".into();
        seen.mount_type = "system".into();
        seen.routed = true;
        state.core.hooks().request(&seen.event(request_id, None)).await.map_err(refused)?;
        let (body, _budget) = read_body(body, state.max_body, state.body_stall, &state.in_flight, peer.ip()).await?;
        seen.body_read = true;
        let r = Box::pin(sys_raw::handle(state, &method, &path, &uri, &headers, &body, peer.ip())).await?;
        return Ok((r, None));
    }

    // Logical requests: route, authenticate and authorize before the body.
    let mut query = query_map(&uri)?;
    let list_flag = match query.remove("list") {
        Some(Value::String(s)) => logical::fields::parse_bool(&s)
            .ok_or_else(|| ApiError::bad_request("invalid value for 'list': expected a boolean"))?,
        _ => false,
    };
    let op = operation(&method, list_flag)?;
    seen.op = op;
    if op == Operation::Read && path == "sys/metrics" && state.core.metrics().unauthenticated_access() {
        // `[telemetry] unauthenticated_metrics_access`: no token, sealed or not (Vault's).
        (seen.mount, seen.mount_type, seen.template, seen.routed) = ("sys/".into(), "system".into(), "metrics", true);
        state.core.hooks().request(&seen.event(request_id, Some(&query))).await.map_err(refused)?;
        let answer = crate::sys::metrics::answer(&state.core, &query)?;
        let handled = crate::core::request::Handled { response: answer, mount_type: "system".into() };
        return Ok(logical_response(&seen.path, handled, request_id, false));
    }
    let prepared = state.core.prepare(token(&headers), op, path, Some(peer.ip())).await?;
    seen.op = prepared.op();
    seen.path.clear();
    // What hooks and logs see: a data subject's name is left out.
    seen.path.push_str(&prepared.logged_path());
    seen.routed = true;
    seen.mount = prepared.mount().to_string().into();
    seen.mount_type = prepared.mount_type().to_string().into();
    seen.caller = prepared.caller().cloned();
    seen.template = prepared.template();

    if prepared.body_kind() == logical::BodyKind::Stream {
        // An HTTP/1.0 answer ends when the connection closes, so an aborted
        // stream (docs/transit-extensions.md) would look complete.
        if version < Version::HTTP_11 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "streams need HTTP/1.1 or HTTP/2: over HTTP/1.0 a failed stream cannot be told from a complete one",
            ));
        }
        let limit = prepared.stream_limit();
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes"),
            ));
        }
        // The hooks see the query parameters; the body is the backend's to read.
        state.core.hooks().request(&seen.event(request_id, Some(&query))).await.map_err(refused)?;
        let chunks = stream::HttpChunks::new(body, limit, state.body_stall, state.in_flight.clone(), peer.ip());
        let handled = state.core.execute(prepared, query, Some(logical::ByteStream::new(chunks))).await?;
        return Ok(logical_response(seen.path.as_str(), handled, request_id, false));
    }
    if declared.is_some_and(|len| len > state.max_body as u64) {
        return Err(too_large(state.max_body));
    }
    // What the body holds of the in-flight budget, until the request is
    // answered (its parsed data lives that long).
    let mut _held = budget::Held::default();
    let data = match op {
        Operation::Update | Operation::Patch | Operation::Delete => {
            let (body, mut held) =
                read_body(body, state.max_body, state.body_stall, &state.in_flight, peer.ip()).await?;
            seen.body_read = true;
            charge_parsed(state, &mut held, peer.ip(), &body)?;
            _held = held;
            if op == Operation::Delete {
                // Some clients send a body with DELETE (e.g. a list of versions).
                if !body.is_empty() {
                    query.extend(body_map(&body)?);
                }
                query
            } else {
                body_map(&body)?
            }
        }
        _ => query,
    };
    state.core.hooks().request(&seen.event(request_id, Some(&data))).await.map_err(refused)?;
    // `seen.path` is the canonical path (a LIST's ends in `/`).
    let handled = state.core.execute(prepared, data, None).await?;
    // The hooks see the response data only when one of them asks for it:
    // then it is handed back once the envelope is serialized (moved, not
    // copied).
    let want = state.core.hooks().want_response_data();
    if let logical::Response::Data { auth: Some(a), .. } = &handled.response
        && want
        && let Ok(Value::Object(m)) = serde_json::to_value(a)
    {
        seen.auth = Some(m);
    }
    Ok(logical_response(&seen.path, handled, request_id, want))
}

/// A hook refused the request: nothing ran (Vault answers 500 when no audit
/// device can record a request).
fn refused(e: crate::core::hooks::HookError) -> ApiError {
    if matches!(e, crate::core::hooks::HookError::Sealing) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    tracing::warn!(error = %e, "a request hook refused the request");
    // The hook's reason names no value (e.g. "no audit device could record
    // the request"): it is what the caller needs to know.
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}: the request was not run"))
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

/// The HTTP answer; with `keep`, also the answer's data (what the response
/// hooks see), given back after the envelope is serialized from it.
fn logical_response(
    path: &str,
    handled: crate::core::request::Handled,
    request_id: &str,
    keep: bool,
) -> (Response, Option<Map<String, Value>>) {
    let kept = |data: Option<Map<String, Value>>| data.filter(|_| keep);
    match handled.response {
        logical::Response::NoContent => (no_content(), None),
        // The core turns logins into data responses; reaching here is a bug.
        logical::Response::Login(_) => {
            (ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(), None)
        }
        logical::Response::NotFoundWithData(data) => {
            let r =
                envelope(path, StatusCode::NOT_FOUND, Some(&data), None, Vec::new(), handled.mount_type, request_id);
            (r, kept(Some(data)))
        }
        logical::Response::DataWithStatus(status, data) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            (envelope(path, status, Some(&data), None, Vec::new(), handled.mount_type, request_id), kept(Some(data)))
        }
        logical::Response::Data { data, auth, warnings } => {
            (envelope(path, StatusCode::OK, data.as_ref(), auth, warnings, handled.mount_type, request_id), kept(data))
        }
        logical::Response::Encoded(status, data) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            // Hooks that want the data get it parsed back.
            let shown = if keep { serde_json::from_str::<Map<String, Value>>(&data).ok() } else { None };
            (encoded_envelope(status, &data, &handled.mount_type, request_id), shown)
        }
        logical::Response::Raw { content_type, body } => {
            let body = match body {
                logical::RawBody::Bytes(b) => Body::from(b),
                logical::RawBody::Stream(s) => stream::response_body(s),
            };
            let mut r = Response::new(body);
            let ct = HeaderValue::from_str(&content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            (r, None)
        }
    }
}

/// Vault's standard response envelope, serialized straight from its parts
/// (no intermediate tree: this runs for every response).
#[derive(Serialize)]
struct Envelope<'a> {
    request_id: &'a str,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u64,
    data: Option<&'a Map<String, Value>>,
    wrap_info: Option<()>,
    warnings: Option<&'a [String]>,
    auth: Option<&'a logical::AuthInfo>,
    mount_type: &'a str,
}

/// The envelope around `data` the engine already serialized (a JSON object,
/// [`logical::Response::Encoded`]): spliced in, not parsed again.
fn encoded_envelope(status: StatusCode, data: &str, mount_type: &str, request_id: &str) -> Response {
    let mut out = Vec::with_capacity(data.len() + 160);
    out.extend_from_slice(b"{\"request_id\":");
    let _ = serde_json::to_writer(&mut out, request_id);
    out.extend_from_slice(b",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b",\"wrap_info\":null,\"warnings\":null,\"auth\":null,\"mount_type\":");
    let _ = serde_json::to_writer(&mut out, mount_type);
    out.push(b'}');
    json_bytes_response(status, out.into())
}

/// Vault's standard response envelope.
fn envelope(
    path: &str,
    status: StatusCode,
    data: Option<&Map<String, Value>>,
    auth: Option<Box<logical::AuthInfo>>,
    warnings: Vec<String>,
    mount_type: String,
    request_id: &str,
) -> Response {
    if injects_top_level(path)
        && let Some(d) = data
    {
        // Vault repeats these paths' data at the top level (older clients
        // read it there).
        let mut body = d.clone();
        let envelope = Envelope {
            request_id,
            lease_id: "",
            renewable: false,
            lease_duration: 0,
            data: Some(d),
            wrap_info: None,
            warnings: (!warnings.is_empty()).then_some(&warnings[..]),
            auth: auth.as_deref(),
            mount_type: &mount_type,
        };
        if let Ok(Value::Object(top)) = serde_json::to_value(&envelope) {
            body.extend(top);
        }
        return json_response(status, &Value::Object(body));
    }
    let body = Envelope {
        request_id,
        lease_id: "",
        renewable: false,
        lease_duration: 0,
        data,
        wrap_info: None,
        warnings: (!warnings.is_empty()).then_some(&warnings[..]),
        auth: auth.as_deref(),
        mount_type: &mount_type,
    };
    json_response(status, &body)
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
    fn typed_body_errors_do_not_quote_values() {
        #[derive(Debug, Default, serde::Deserialize)]
        struct Reset {
            #[serde(default)]
            #[allow(dead_code)]
            reset: bool,
        }
        let e = typed_body::<Reset>(br#"{"reset": "SECRET-CANARY"}"#).unwrap_err();
        let msg = &e.errors[0];
        assert!(!msg.contains("CANARY") && msg.contains("invalid type, expected a boolean"), "{msg}");
    }

    #[test]
    fn json_values_are_counted_outside_strings() {
        assert_eq!(json_values(b""), 1);
        assert_eq!(json_values(br#"{"a": 1}"#), 2);
        assert_eq!(json_values(br#"{"a": [1, 2, 3], "b": {"c": null}}"#), 7);
        // Commas, brackets and escaped quotes inside strings are text.
        assert_eq!(json_values(br#"{"a": "x,y[{\",z"}"#), 2);
        assert_eq!(json_values(br#"["\\", 1]"#), 3);
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

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// Any text: escapes, `%` runs, `+`, `&`, `=`, non-ASCII.
        fn urlish() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just("%".to_string()),
                    Just("%2".to_string()),
                    Just("%zz".to_string()),
                    Just("%C3%A9".to_string()),
                    Just("%ff".to_string()),
                    Just("+".to_string()),
                    Just("&".to_string()),
                    Just("=".to_string()),
                    Just("/".to_string()),
                    "[a-zA-Z0-9._~-]{1,5}",
                    any::<char>().prop_map(String::from),
                ],
                0..40,
            )
            .prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Decoding never panics; a failure is a 400.
            #[test]
            fn path_decoding_is_total(raw in urlish()) {
                if let Err(e) = decode_path(&raw) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
            }

            /// What the crate encodes decodes back to itself (no control characters).
            #[test]
            fn path_decoding_inverts_encoding(text in "[^\\p{Cc}]{0,40}") {
                let encoded = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string();
                prop_assert_eq!(decode_path(&encoded).unwrap(), text);
            }

            /// Any query parses or is a 400; every parsed value is a string.
            #[test]
            fn query_parsing_is_total(q in urlish()) {
                let encoded: String = q.chars().filter(|c| c.is_ascii_graphic() && *c != '#').collect();
                if let Ok(uri) = format!("/v1/x?{encoded}").parse::<Uri>() {
                    match query_map(&uri) {
                        Ok(m) => prop_assert!(m.values().all(Value::is_string)),
                        Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                    }
                }
            }

            /// Any body bytes: an object map or a 400, never a panic.
            #[test]
            fn body_parsing_is_total(body in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Err(e) = body_map(&body) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
                if let Err(e) = typed_body::<Two>(&body) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
            }

            /// JSON-ish bodies (the near misses matter most).
            #[test]
            fn jsonish_bodies_parse_or_400(
                parts in prop::collection::vec(prop_oneof![
                    Just("{"), Just("}"), Just("["), Just("]"), Just(":"), Just(","), Just("\"a\""),
                    Just("1e999"), Just("-0"), Just("null"), Just("\"\\ud800\""), Just(" "),
                ], 0..30)
            ) {
                let body = parts.concat();
                if let Err(e) = body_map(body.as_bytes()) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
            }

            /// Deeply nested JSON is refused, not a stack overflow.
            #[test]
            fn deep_nesting_is_refused(depth in 100usize..5000) {
                let body = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
                if let Err(e) = body_map(body.as_bytes()) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
            }
        }
    }

    /// Records every response event's status; the first one it sees it
    /// never finishes (as a hook yielding when the client goes away).
    #[derive(Default)]
    struct Stall(std::sync::Mutex<Vec<u16>>);

    impl crate::core::hooks::Hook for Stall {
        fn on_response<'a>(&'a self, e: &'a ResponseEvent<'a>) -> futures_util::future::BoxFuture<'a, ()> {
            Box::pin(async move {
                let first = {
                    let mut seen = self.0.lock().unwrap();
                    seen.push(e.status);
                    seen.len() == 1
                };
                if first {
                    std::future::pending::<()>().await;
                }
            })
        }
    }

    #[tokio::test]
    async fn a_client_leaving_while_the_response_hooks_run_is_not_told_twice() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let core = Core::new(storage, crate::catalog::builtin()).await.unwrap();
        core.dev_init(Some("root")).await.unwrap();
        let stall = Arc::new(Stall::default());
        core.hooks().add(stall.clone());
        let app = router(core, 1 << 20, Duration::from_secs(5), 64 << 20, 64);
        let mut r = HttpRequest::builder()
            .method("GET")
            .uri("/v1/sys/mounts")
            .header("X-Vault-Token", "root")
            .body(Body::empty())
            .unwrap();
        r.extensions_mut().insert(ConnectInfo(tls::PeerAddr("127.0.0.1:40000".parse().unwrap())));
        // The client leaves while the hook is stalled: the future is dropped.
        let cut = tokio::time::timeout(Duration::from_millis(300), tower::ServiceExt::oneshot(app, r)).await;
        assert!(cut.is_err(), "the hook stalls the answer");
        // A 499 would be told from a task of its own: give it time to run.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*stall.0.lock().unwrap(), [200], "one outcome per request, the real one");
    }
}
