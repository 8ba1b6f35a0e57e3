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
//!   `sudo` token and no shares, the running server's keys. Unsealed: a
//!   `sudo` token; sealed: a threshold of the current shares (which then
//!   open the snapshot); uninitialized: anyone, with the snapshot's shares.
//!
//! Raw endpoints (they work sealed, and move files, not JSON): their bodies
//! are read only after the caller was authorized (shares combined and
//! checked against the current root key while sealed), with their own limit
//! (`[backup] max_snapshot_bytes`) and an overall deadline
//! ([`upload_deadline`]), one restore and one verify at a time (separate
//! gates: a verify never holds up a restore), and not against the JSON
//! in-flight budget.

use std::pin::Pin;
use std::time::Duration;

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
    let deadline = upload_deadline(limit);
    if write && RESTORE.contains(&path) {
        // Authorized (shares checked for real) before the gate or the body.
        core.precheck_restore(path, proof).await?;
        let _gate = core.backup().try_restore_gate().map_err(api_error)?;
        let bytes = read_file(body, limit, declared, state.body_stall, deadline).await?;
        *body_read = true;
        let m = backup::restore(core, path, &bytes, proof).await.map_err(api_error)?;
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"restored": true, "sealed": true, "entries": m.entries, "sha256": m.sha256}),
        ));
    }
    if write && path == VERIFY {
        // Unsealed: a sudo token (it does the work, maybe with its keys);
        // sealed: the current shares, checked now; uninitialized: anyone.
        // Its own gate: a verify never holds up a restore.
        core.precheck_verify(path, proof).await?;
        let _gate = core.backup().try_verify_gate().map_err(api_error)?;
        let bytes = read_file(body, limit, declared, state.body_stall, deadline).await?;
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

/// Every snapshot upload gets at least this long ...
pub const UPLOAD_BASE_TIME: Duration = Duration::from_secs(60);
/// ... plus the time to send `max_snapshot_bytes` at this many bytes a
/// second (1 MiB/s; 256 MiB: 60 s + 256 s).
pub const UPLOAD_MIN_RATE: u64 = 1 << 20;

/// The whole-upload deadline of a snapshot body for a server accepting at
/// most `limit` bytes: [`UPLOAD_BASE_TIME`] + `limit` / [`UPLOAD_MIN_RATE`].
/// A client trickling bytes just under the stall timeout holds its gate at
/// most this long.
pub fn upload_deadline(limit: u64) -> Duration {
    UPLOAD_BASE_TIME + Duration::from_secs(limit.div_ceil(UPLOAD_MIN_RATE))
}

/// Read a snapshot body of at most `limit` bytes; each chunk must come
/// within `stall` (a large upload takes longer than a JSON body's whole-body
/// timeout, but may not pause) and the whole body within `deadline`. The
/// buffer grows as bytes arrive: nothing is reserved on the client's word
/// (`Content-Length` only lets a too-large body be refused unread).
async fn read_file(
    mut body: Body,
    limit: u64,
    declared: Option<u64>,
    stall: Duration,
    deadline: Duration,
) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("snapshot exceeds max_snapshot_bytes ({limit} bytes)"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let too_slow = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the snapshot upload took longer than {} s (the limit for this server)", deadline.as_secs()),
        )
    };
    let ends = tokio::time::Instant::now() + deadline;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let wait = tokio::time::timeout_at(ends, tokio::time::timeout(stall, next));
        let frame = match wait.await {
            Err(_) => return Err(too_slow()),
            Ok(Err(_)) => return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the snapshot upload stalled")),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(Err(_)))) => return Err(ApiError::bad_request("failed to read the request body")),
            Ok(Ok(Some(Ok(f)))) => f,
        };
        let Ok(data): Result<Bytes, _> = frame.into_data() else { continue };
        if out.len() as u64 + data.len() as u64 > limit {
            return Err(too_large());
        }
        let need = out.len() + data.len();
        if need > out.capacity() {
            // Doubling as a Vec does, but never reserving past the limit.
            let target = need.max(out.capacity().saturating_mul(2)).min(cap);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&data);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("the request body must be a snapshot file"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use super::*;

    /// A body sending `chunk` bytes every `every`, `chunks` times (for ever if `None`).
    fn trickle(chunk: usize, every: Duration, chunks: Option<usize>) -> Body {
        let s = futures_util::stream::unfold(0usize, move |n| async move {
            if chunks.is_some_and(|c| n >= c) {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; chunk])), n + 1))
        });
        Body::from_stream(s)
    }

    #[test]
    fn the_upload_deadline_scales_with_the_limit() {
        assert_eq!(upload_deadline(0), UPLOAD_BASE_TIME);
        assert_eq!(upload_deadline(256 << 20), UPLOAD_BASE_TIME + Duration::from_secs(256));
        assert_eq!(upload_deadline(1), UPLOAD_BASE_TIME + Duration::from_secs(1));
        assert_eq!(upload_deadline(u64::MAX), UPLOAD_BASE_TIME + Duration::from_secs(u64::MAX.div_ceil(1 << 20)));
    }

    /// A client that never pauses long enough to stall (a byte every 20 ms,
    /// stall 5 s) is still cut at the whole-upload deadline.
    #[tokio::test]
    async fn a_trickled_upload_is_cut_at_the_deadline() {
        let started = Instant::now();
        let body = trickle(1, Duration::from_millis(20), None);
        let e = read_file(body, 1 << 20, Some(1 << 20), Duration::from_secs(5), Duration::from_millis(400))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert!(e.errors[0].contains("took longer"), "{:?}", e.errors);
        assert!(started.elapsed() < Duration::from_secs(3), "cut at the deadline, not the stall");
        // A pause is still a stall, before the deadline.
        let body = trickle(1, Duration::from_millis(500), None);
        let e = read_file(body, 1 << 20, None, Duration::from_millis(100), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!((e.status, e.errors[0].as_str()), (StatusCode::REQUEST_TIMEOUT, "the snapshot upload stalled"));
        // In time: the bytes.
        let body = trickle(3, Duration::from_millis(1), Some(4));
        let got = read_file(body, 12, Some(12), Duration::from_secs(1), Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, vec![b'x'; 12]);
    }

    /// The declared length reserves nothing, and the buffer never grows past the limit.
    #[tokio::test]
    async fn nothing_is_reserved_on_the_declared_length() {
        let body = trickle(10, Duration::from_millis(1), Some(1));
        let got =
            read_file(body, 256 << 20, Some(256 << 20), Duration::from_secs(1), Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 10);
        assert!(got.capacity() < 4096, "{} bytes reserved", got.capacity());
        let body = trickle(700, Duration::from_millis(1), Some(3));
        let got = read_file(body, 2100, None, Duration::from_secs(1), Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 2100);
        assert!(got.capacity() <= 2100, "{} bytes reserved", got.capacity());
        // Over the limit: 413, declared or not.
        let body = trickle(700, Duration::from_millis(1), Some(4));
        let e = read_file(body, 2100, None, Duration::from_secs(1), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = read_file(Body::empty(), 2100, Some(2101), Duration::from_secs(1), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
