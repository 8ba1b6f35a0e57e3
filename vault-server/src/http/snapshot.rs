//! Storage snapshot endpoints (storage-agnostic versions of Vault's raft
//! snapshot API; docs/backup.md):
//!
//! - `GET sys/storage/snapshot` (also `sys/storage/raft/snapshot`): a
//!   consistent snapshot, streamed as a file (token with `sudo`).
//! - `POST sys/storage/snapshot` / `sys/storage/snapshot-restore` (also
//!   `snapshot-force` and the `raft/` names): restore a snapshot file sent as
//!   the body. Uninitialized: no token; sealed: a threshold of the current
//!   unseal key shares in `X-Vault-Unseal-Key`; unsealed: a `sudo` token.
//!   The server is sealed afterwards.
//! - `POST sys/storage/snapshot-verify`: the restore drill (counts per
//!   mount), with the snapshot's shares in `X-Vault-Unseal-Key` or, with a
//!   `sudo` token and no shares, the running server's keys.
//!
//! Raw endpoints (they work sealed, and move files, not JSON): their bodies
//! are read after the early authorization, with their own limit
//! (`[backup] max_snapshot_bytes`), one at a time, and not against the JSON
//! in-flight budget.

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use super::{ApiError, AppState, json_response, token};
use crate::backup::{self, BackupError, drill};
use crate::core::restore::Proof;
use crate::logical::Operation;

/// Where shares are sent (repeat the header, or separate with commas):
/// a header, because the body is the file; never logged.
pub static UNSEAL_KEY_HEADER: HeaderName = HeaderName::from_static("x-vault-unseal-key");

const TAKE: &[&str] = &["sys/storage/snapshot", "sys/storage/raft/snapshot"];
const RESTORE: &[&str] = &[
    "sys/storage/snapshot",
    "sys/storage/snapshot-restore",
    "sys/storage/snapshot-force",
    "sys/storage/raft/snapshot",
    "sys/storage/raft/snapshot-force",
];
const VERIFY: &str = "sys/storage/snapshot-verify";

/// Whether `path` is one of the snapshot endpoints.
pub(super) fn is_snapshot(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    TAKE.contains(&p) || RESTORE.contains(&p) || p == VERIFY
}

/// The shares sent in [`UNSEAL_KEY_HEADER`].
fn shares(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(&UNSEAL_KEY_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Serve a snapshot endpoint. `body_read` is set once the body was read to its end.
pub(super) async fn handle(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Body,
    peer: std::net::IpAddr,
    body_read: &mut bool,
) -> Result<Response, ApiError> {
    let core = &state.core;
    let path = path.trim_end_matches('/');
    let keys = shares(headers);
    let proof = Proof { token: token(headers), keys: &keys, addr: Some(peer) };
    let write = matches!(method.as_str(), "PUT" | "POST");
    if method == Method::GET && TAKE.contains(&path) {
        core.authorize_sudo(path, Operation::Read, proof).await?;
        let chunks = backup::take(core).await.map_err(api_error)?;
        return Ok(file_response(chunks));
    }
    let limit = core.backup().settings().max_snapshot_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if write && RESTORE.contains(&path) {
        core.precheck_restore(path, proof).await?;
        let _gate = core.backup().try_gate().map_err(api_error)?;
        let bytes = read_file(body, limit, declared, state.body_stall).await?;
        *body_read = true;
        let m = backup::restore(core, path, &bytes, proof).await.map_err(api_error)?;
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"restored": true, "sealed": true, "entries": m.entries, "sha256": m.sha256}),
        ));
    }
    if write && path == VERIFY {
        // With this server's keys, only a caller trusted with them; with
        // shares, the caller proves the snapshot's own keys. While this
        // server is unsealed a token is always needed (it does the work).
        if keys.is_empty() || core.active().is_ok() {
            core.authorize_sudo(path, Operation::Update, proof).await?;
        }
        let _gate = core.backup().try_gate().map_err(api_error)?;
        let bytes = read_file(body, limit, declared, state.body_stall).await?;
        *body_read = true;
        let parsed = backup::format::parse(&bytes).map_err(|e| api_error(e.into()))?;
        let file_sha256 = backup::format::sha256_hex(&bytes);
        drop(bytes);
        let using = if keys.is_empty() { drill::Keys::Server(core) } else { drill::Keys::Shares(&keys) };
        let mut report = drill::run(&parsed, using, None).await.map_err(api_error)?;
        report.sha256 = file_sha256;
        return Ok(json_response(StatusCode::OK, &report));
    }
    let allow = if TAKE.contains(&path) { "GET, PUT, POST" } else { "PUT, POST" };
    Err(ApiError::method_not_allowed(path, allow))
}

/// A backup error as an answer (details of a 500 go to the log only).
fn api_error(e: BackupError) -> ApiError {
    match e {
        BackupError::Format(f) => ApiError::bad_request(f.to_string()),
        BackupError::Invalid(m) => ApiError::bad_request(m),
        BackupError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        BackupError::Core(c) => c.into(),
        other => super::error::internal(&other.to_string()),
    }
}

/// The snapshot as a streamed file. A failure mid-way aborts the answer
/// (never a complete-looking file; the manifest would not match anyway).
fn file_response(chunks: backup::Chunks) -> Response {
    let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
        let item = rx.recv().await?;
        let item = item.map_err(|e| {
            tracing::error!(error = %e, "snapshot stream failed");
            std::io::Error::other("snapshot failed")
        });
        Some((item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    super::set_common_headers(r.headers_mut());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"vault.snap\""));
    r
}

/// Read a snapshot body of at most `limit` bytes; each chunk must come
/// within `stall` (a large upload takes longer than a JSON body's whole-body
/// timeout, but may not pause).
async fn read_file(
    mut body: Body,
    limit: u64,
    declared: Option<u64>,
    stall: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("snapshot exceeds max_snapshot_bytes ({limit} bytes)"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(64 << 20) as usize);
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout(stall, next).await {
            Err(_) => return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the snapshot upload stalled")),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ApiError::bad_request("failed to read the request body")),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data): Result<Bytes, _> = frame.into_data() else { continue };
        if out.len() as u64 + data.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&data);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("the request body must be a snapshot file"));
    }
    Ok(out)
}
