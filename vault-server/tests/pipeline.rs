//! The request pipeline, in process (the router driven without a socket):
//! every request gets one id (header, envelope, hooks); hooks see raw `sys/`
//! endpoints and logical requests alike; a refusing hook stops a request
//! before the backend runs; a denied request reads no body byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::Frame;
use serde_json::{Value, json};
use tower::ServiceExt;
use vault_server::core::Core;
use vault_server::core::hooks::{Hook, HookError, RequestEvent, ResponseEvent};
use vault_server::http::tls::PeerAddr;
use vault_server::logical::BoxFuture;
use vault_server::storage::Storage;

const ROOT: &str = "root-token";

async fn dev() -> (tempfile::TempDir, Arc<Core>, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
    let core = Core::new(storage, vault_server::catalog::builtin()).await.unwrap();
    core.dev_init(Some(ROOT)).await.unwrap();
    let app = vault_server::http::router(core.clone(), 1 << 20, Duration::from_secs(5), 64 << 20, 64);
    (dir, core, app)
}

fn request(method: &str, path: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(format!("/v1/{path}"));
    if let Some(t) = token {
        r = r.header("X-Vault-Token", t);
    }
    let mut r = r.body(body).unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    r.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
    r
}

/// (status, X-Request-Id, JSON body or Null)
async fn call(app: &axum::Router, method: &str, path: &str, token: Option<&str>, body: Body) -> (u16, String, Value) {
    let resp = app.clone().oneshot(request(method, path, token, body)).await.unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, id, v)
}

/// Records (request id, path, mount, accessor, had data) of requests, and
/// (request id, status) of responses.
type Seen = (String, String, String, String, bool);

#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<Seen>>,
    responses: Mutex<Vec<(String, u16)>>,
}

impl Hook for Recorder {
    fn on_request<'a>(&'a self, e: &'a RequestEvent<'a>) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async move {
            self.requests.lock().unwrap().push((
                e.request_id.to_string(),
                e.path.to_string(),
                e.mount.to_string(),
                e.caller.map(|c| c.accessor().to_string()).unwrap_or_default(),
                e.data.is_some(),
            ));
            Ok(())
        })
    }
    fn on_response<'a>(&'a self, e: &'a ResponseEvent<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.responses.lock().unwrap().push((e.request.request_id.to_string(), e.status)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_one_id_and_passes_the_hooks() {
    let (_d, core, app) = dev().await;
    let rec = Arc::new(Recorder::default());
    core.hooks().add(rec.clone());

    // A raw endpoint (no envelope): the header carries the id.
    let (s, id_health, _) = call(&app, "GET", "sys/health", None, Body::empty()).await;
    assert_eq!(s, 200);
    assert_eq!(id_health.len(), 36, "a UUID");
    // A logical write and read: the envelope's request_id is the header's.
    let body = Body::from(json!({"data": {"k": "v"}}).to_string());
    let (s, id_write, v) = call(&app, "POST", "secret/data/app", Some(ROOT), body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["request_id"], id_write);
    let (s, id_read, v) = call(&app, "GET", "secret/data/app", Some(ROOT), Body::empty()).await;
    assert_eq!((s, v["request_id"].as_str()), (200, Some(id_read.as_str())));
    // An error answer has an id too, and the hooks see it.
    let (s, id_denied, _) = call(&app, "GET", "secret/data/app", Some("hvs.nope"), Body::empty()).await;
    assert_eq!(s, 403);

    let requests = rec.requests.lock().unwrap().clone();
    let responses = rec.responses.lock().unwrap().clone();
    let ids: Vec<&str> = requests.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids, vec![id_health.as_str(), id_write.as_str(), id_read.as_str()], "the denied one never reached them");
    assert_eq!(requests[0].2, "sys/", "raw endpoints are seen too");
    assert_eq!((requests[1].1.as_str(), requests[1].2.as_str()), ("secret/data/app", "secret/"));
    assert!(requests[1].4, "hooks see the write's data");
    assert!(!requests[1].3.is_empty(), "and the caller's accessor");
    let statuses: Vec<(&str, u16)> = responses.iter().map(|(i, s)| (i.as_str(), *s)).collect();
    assert_eq!(
        statuses,
        vec![(id_health.as_str(), 200), (id_write.as_str(), 200), (id_read.as_str(), 200), (id_denied.as_str(), 403)]
    );
    // The counter hook counted them by mount and status class.
    assert_eq!(core.request_counter().get("secret/", "read", 200), 1);
    assert_eq!(
        core.request_counter().get("secret/", "update", 200) + core.request_counter().get("secret/", "create", 200),
        1
    );
}

/// Refuses while `on` is set.
struct Gate {
    on: AtomicBool,
}

impl Hook for Gate {
    fn on_request<'a>(&'a self, _: &'a RequestEvent<'a>) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async move {
            if self.on.load(Ordering::SeqCst) { Err(HookError::Refused("recording failed".into())) } else { Ok(()) }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_hook_stops_the_request_before_the_backend() {
    let (_d, core, app) = dev().await;
    let gate = Arc::new(Gate { on: AtomicBool::new(true) });
    core.hooks().add(gate.clone());
    let body = Body::from(json!({"data": {"k": "v"}}).to_string());
    let (s, _, v) = call(&app, "POST", "secret/data/app", Some(ROOT), body).await;
    assert_eq!(s, 500, "{v}");
    let (s, _, _) = call(&app, "PUT", "sys/init", None, Body::from("{}")).await;
    assert_eq!(s, 500, "raw endpoints are refused as well");
    gate.on.store(false, Ordering::SeqCst);
    let (s, _, _) = call(&app, "GET", "secret/data/app", Some(ROOT), Body::empty()).await;
    assert_eq!(s, 404, "the refused write never ran");
}

/// A request body that counts the bytes the server pulled from it.
struct Counting {
    left: usize,
    pulled: Arc<AtomicUsize>,
}

impl HttpBody for Counting {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(4096);
        self.left -= n;
        self.pulled.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; n])))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_reads_no_body_byte() {
    let (_d, core, app) = dev().await;
    let _ = core;
    // A token that may read but not write.
    let policy = json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"}).to_string();
    assert_eq!(call(&app, "PUT", "sys/policies/acl/ro", Some(ROOT), Body::from(policy)).await.0, 204);
    let (_, _, v) = call(&app, "POST", "auth/token/create", Some(ROOT), Body::from(r#"{"policies":["ro"]}"#)).await;
    let ro = v["auth"]["client_token"].as_str().unwrap().to_string();
    for token in [Some(ro.as_str()), Some("hvs.unknown"), None] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = Body::new(Counting { left: 512 * 1024, pulled: pulled.clone() });
        let (s, _, _) = call(&app, "POST", "secret/data/app", token, body).await;
        assert_eq!(s, 403);
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "a denied request must not read its body ({token:?})");
    }
    // Allowed: the body is read.
    let pulled = Arc::new(AtomicUsize::new(0));
    let body = Body::new(Counting { left: 10, pulled: pulled.clone() });
    let (s, _, v) = call(&app, "POST", "secret/data/app", Some(ROOT), body).await;
    assert_eq!(s, 400, "ten spaces are no JSON object: {v}");
    assert_eq!(pulled.load(Ordering::SeqCst), 10);
}

/// A body of tiny values parses into a tree tens of times its size: it is
/// refused from a count taken before parsing (red team: one unauthenticated
/// 32 MiB login body took 600 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_would_parse_into_huge_trees_are_refused() {
    let (_d, _core, app) = dev().await;
    let mut zeros = String::from(r#"{"password":["#);
    zeros.push_str(&"0,".repeat(400_000));
    zeros.push_str("0]}");
    assert!(zeros.len() < 1 << 20, "under max_request_bytes");
    let (s, _, v) = call(&app, "POST", "auth/token/create", Some(ROOT), Body::from(zeros)).await;
    assert_eq!(s, 413, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("too many JSON values"), "{v}");
    // An ordinary body of the same size (one long string) is fine.
    let secret = json!({"data": {"blob": "x".repeat(800_000)}}).to_string();
    let (s, _, v) = call(&app, "POST", "secret/data/big", Some(ROOT), Body::from(secret)).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_was_not_found_and_which_methods_exist() {
    let (_d, _core, app) = dev().await;
    let (s, _, v) = call(&app, "GET", "secret/app/db", Some(ROOT), Body::empty()).await;
    assert_eq!(s, 404);
    let msg = v["errors"][0].as_str().unwrap();
    assert!(msg.contains("secret/app/db") && msg.contains("no handler"), "{msg}");
    let resp = app.clone().oneshot(request("DELETE", "sys/unseal", None, Body::empty())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "PUT, POST");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["errors"][0].as_str().unwrap().contains("PUT, POST"), "{v}");
}

// ---------------------------------------------------------------------------
// The engine kit and the body contract, with a test engine registered in the
// catalog: a stream path, a JSON path with declared fields, a raw download.
// ---------------------------------------------------------------------------

mod streamtest {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Bytes;
    use serde_json::json;
    use vault_server::auth::Authorized;
    use vault_server::logical::kit::EngineContext;
    use vault_server::logical::{
        Backend, BoxFuture, ByteStream, ChunkSource, Field, FieldKind, LogicalError, Operation, PathSpec, RawBody,
        Request, Response,
    };

    /// Shutdowns of every streamtest backend (tests in this binary that
    /// count them use their own mount and compare before/after).
    pub static SHUTDOWNS: AtomicUsize = AtomicUsize::new(0);

    static PATHS: &[PathSpec] = &[
        PathSpec::new("upload", &[Operation::Update]).stream(),
        PathSpec::new("echo/{name}", &[Operation::Read, Operation::Update])
            .fields(&[Field::new("n", FieldKind::Int), Field::new("ttl", FieldKind::Duration)]),
        PathSpec::new("download/{size}", &[Operation::Read]),
    ];

    pub struct Engine;

    pub fn factory(_ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
        Ok(Arc::new(Engine))
    }

    /// `left` bytes in 64 KiB chunks.
    struct Zeros {
        left: u64,
        chunk: Bytes,
    }

    impl ChunkSource for Zeros {
        fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, LogicalError>> {
            Box::pin(async move {
                if self.left == 0 {
                    return Ok(None);
                }
                let n = self.left.min(self.chunk.len() as u64);
                self.left -= n;
                Ok(Some(self.chunk.slice(..n as usize)))
            })
        }
    }

    impl Backend for Engine {
        fn paths(&self) -> &'static [PathSpec] {
            PATHS
        }

        fn stream_limit(&self) -> u64 {
            2 << 30
        }

        fn shutdown(&self) {
            SHUTDOWNS.fetch_add(1, Ordering::SeqCst);
        }

        fn handle<'a>(&'a self, _: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
            Box::pin(async move {
                match req.pattern() {
                    "upload" => {
                        let mut s = req.stream.ok_or_else(|| LogicalError::internal("no stream"))?;
                        let (mut total, mut largest) = (0u64, 0usize);
                        while let Some(c) = s.next().await? {
                            total += c.len() as u64;
                            largest = largest.max(c.len());
                        }
                        Ok(Response::json(json!({"bytes": total, "largest_chunk": largest})))
                    }
                    "echo/{name}" => Ok(Response::json(json!({"name": req.param("name"), "n": req.data.get("n")}))),
                    "download/{size}" => {
                        let size: u64 =
                            req.param("size").parse().map_err(|_| LogicalError::InvalidRequest("size".into()))?;
                        let source = Zeros { left: size, chunk: Bytes::from(vec![7u8; 64 * 1024]) };
                        let body = RawBody::Stream(ByteStream::new(source));
                        Ok(Response::Raw { content_type: "application/octet-stream".into(), body })
                    }
                    other => Err(LogicalError::internal(format!("unrouted {other}"))),
                }
            })
        }
    }
}

async fn dev_with_streamtest() -> (tempfile::TempDir, Arc<Core>, axum::Router) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
    let catalog = vault_server::catalog::builtin().with_secrets("streamtest", streamtest::factory);
    let core = Core::new(storage, catalog).await.unwrap();
    core.dev_init(Some(ROOT)).await.unwrap();
    let app = vault_server::http::router(core.clone(), 1 << 20, Duration::from_secs(5), 64 << 20, 64);
    let (s, _, v) = call(&app, "POST", "sys/mounts/st", Some(ROOT), Body::from(r#"{"type":"streamtest"}"#)).await;
    assert_eq!(s, 204, "{v}");
    (dir, core, app)
}

/// Peak resident memory of this process, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 1 GiB in 1 MiB chunks, produced as the server pulls them (the same
/// buffer each time: the client itself holds 1 MiB).
struct Gib {
    left: usize,
    chunk: Bytes,
    pulled: Arc<AtomicUsize>,
}

impl HttpBody for Gib {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        self.pulled.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_path_takes_a_gibibyte_in_bounded_memory() {
    let (_d, core, app) = dev_with_streamtest().await;
    let rec = Arc::new(Recorder::default());
    core.hooks().add(rec.clone());
    let before = peak_rss_kib();
    let pulled = Arc::new(AtomicUsize::new(0));
    let body = Body::new(Gib { left: 1 << 30, chunk: Bytes::from(vec![1u8; 1 << 20]), pulled: pulled.clone() });
    let (s, _, v) = call(&app, "POST", "st/upload", Some(ROOT), body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["bytes"], 1u64 << 30);
    assert_eq!(pulled.load(Ordering::SeqCst), 1 << 30);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "a 1 GiB upload grew the peak memory by {grown_mib} MiB");
    // The hooks saw the upload, without a body (it was the backend's to read).
    let requests = rec.requests.lock().unwrap().clone();
    assert!(requests.iter().any(|r| r.1 == "st/upload" && r.2 == "st/"), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_or_refused_upload_reads_nothing_and_limits_hold_before_reading() {
    let (_d, core, app) = dev_with_streamtest().await;
    let policy = json!({"policy": "path \"st/*\" { capabilities = [\"read\"] }"}).to_string();
    assert_eq!(call(&app, "PUT", "sys/policies/acl/ro", Some(ROOT), Body::from(policy)).await.0, 204);
    let (_, _, v) = call(&app, "POST", "auth/token/create", Some(ROOT), Body::from(r#"{"policies":["ro"]}"#)).await;
    let ro = v["auth"]["client_token"].as_str().unwrap().to_string();
    let upload = |pulled: &Arc<AtomicUsize>| {
        Body::new(Gib { left: 8 << 20, chunk: Bytes::from(vec![1u8; 1 << 16]), pulled: pulled.clone() })
    };
    for token in [Some(ro.as_str()), Some("hvs.unknown"), None] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let (s, _, _) = call(&app, "POST", "st/upload", token, upload(&pulled)).await;
        assert_eq!(s, 403);
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "a denied upload must not be read ({token:?})");
    }
    // A refusing hook: nothing read either.
    let gate = Arc::new(Gate { on: AtomicBool::new(true) });
    core.hooks().add(gate.clone());
    let pulled = Arc::new(AtomicUsize::new(0));
    assert_eq!(call(&app, "POST", "st/upload", Some(ROOT), upload(&pulled)).await.0, 500);
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
    gate.on.store(false, Ordering::SeqCst);

    // Declared sizes over the limits: 413 before a byte is read, for the
    // stream path (its own 2 GiB limit) and a JSON path (max_request_bytes).
    for (path, declared) in [("st/upload", 3u64 << 30), ("st/echo/x", 2 << 20)] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let mut req = request("POST", path, Some(ROOT), upload(&pulled));
        req.headers_mut().insert("content-length", declared.to_string().parse().unwrap());
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "{path}");
    }
    // Undeclared: the JSON path stops reading just past its limit.
    let pulled = Arc::new(AtomicUsize::new(0));
    assert_eq!(call(&app, "POST", "st/echo/x", Some(ROOT), upload(&pulled)).await.0, 413);
    assert!(pulled.load(Ordering::SeqCst) <= (1 << 20) + (1 << 16));
    // ...while the stream path takes the same 8 MiB.
    let pulled = Arc::new(AtomicUsize::new(0));
    let (s, _, v) = call(&app, "POST", "st/upload", Some(ROOT), upload(&pulled)).await;
    assert_eq!((s, v["data"]["bytes"].as_u64()), (200, Some(8 << 20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tables_route_validate_and_answer_raw_bodies() {
    let (_d, _core, app) = dev_with_streamtest().await;
    // Captures and declared fields.
    let (s, _, v) = call(&app, "POST", "st/echo/abc", Some(ROOT), Body::from(r#"{"n": "42"}"#)).await;
    assert_eq!((s, &v["data"]["name"]), (200, &json!("abc")), "{v}");
    let (s, _, v) = call(&app, "POST", "st/echo/abc", Some(ROOT), Body::from(r#"{"n": "many"}"#)).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, v) = call(&app, "POST", "st/echo/abc", Some(ROOT), Body::from(r#"{"ttl": "forever"}"#)).await;
    assert_eq!(s, 400, "{v}");
    // Unknown path: 404 saying so; a known path with the wrong operation: 405.
    let (s, _, v) = call(&app, "GET", "st/nothing/here", Some(ROOT), Body::empty()).await;
    assert_eq!(s, 404);
    assert!(v["errors"][0].as_str().unwrap().contains("st/nothing/here"), "{v}");
    assert_eq!(call(&app, "DELETE", "st/echo/abc", Some(ROOT), Body::empty()).await.0, 405);
    assert_eq!(call(&app, "GET", "st/upload", Some(ROOT), Body::empty()).await.0, 405);
    // Unknown paths and wrong operations still need a token first.
    assert_eq!(call(&app, "GET", "st/nothing/here", None, Body::empty()).await.0, 403);
    // A raw streamed answer with its content type.
    let resp = app.clone().oneshot(request("GET", "st/download/200000", Some(ROOT), Body::empty())).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").unwrap(), "application/octet-stream");
    assert!(resp.headers().get("x-request-id").is_some());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    assert_eq!(bytes.len(), 200_000);
    assert!(bytes.iter().all(|b| *b == 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmount_shuts_down_and_other_mounts_keep_their_backends() {
    let (_d, core, app) = dev_with_streamtest().await;
    assert_eq!(call(&app, "POST", "sys/mounts/st2", Some(ROOT), Body::from(r#"{"type":"streamtest"}"#)).await.0, 204);
    let backend = |path: &str| {
        let router = core.active().unwrap().router();
        router.mounts().iter().find(|m| m.route_path == path).map(|m| m.backend.clone())
    };
    let (st, st2, kv) = (backend("st/").unwrap(), backend("st2/").unwrap(), backend("secret/").unwrap());
    // Tuning one mount's description and mounting another keep every backend.
    let tune = Body::from(r#"{"description":"renamed"}"#);
    assert_eq!(call(&app, "POST", "sys/mounts/st2/tune", Some(ROOT), tune).await.0, 204);
    assert_eq!(call(&app, "POST", "sys/mounts/other", Some(ROOT), Body::from(r#"{"type":"kv"}"#)).await.0, 204);
    assert!(Arc::ptr_eq(&st, &backend("st/").unwrap()));
    assert!(Arc::ptr_eq(&st2, &backend("st2/").unwrap()));
    assert!(Arc::ptr_eq(&kv, &backend("secret/").unwrap()));
    // Tuning a lease setting rebuilds that mount only (the old backend is
    // shut down). No other test here unmounts or seals, so counts are exact.
    let shutdowns = || streamtest::SHUTDOWNS.load(Ordering::SeqCst);
    let before = shutdowns();
    let tune = Body::from(r#"{"default_lease_ttl":"1h"}"#);
    assert_eq!(call(&app, "POST", "sys/mounts/st2/tune", Some(ROOT), tune).await.0, 204);
    assert!(!Arc::ptr_eq(&st2, &backend("st2/").unwrap()));
    assert!(Arc::ptr_eq(&st, &backend("st/").unwrap()));
    assert_eq!(shutdowns(), before + 1);
    // Unmount: shutdown once, and the backend is gone.
    assert_eq!(call(&app, "DELETE", "sys/mounts/st", Some(ROOT), Body::empty()).await.0, 204);
    assert!(backend("st/").is_none());
    assert_eq!(shutdowns(), before + 2, "unmount shut the backend down, once");
    let (s, _, _) = call(&app, "POST", "st/upload", Some(ROOT), Body::from("x")).await;
    assert_eq!(s, 404);
}

/// A client that goes away mid-request (hyper drops the request's future)
/// still gets its request recorded by the response hooks, as 499 (red
/// team: dropped writes that committed left no access-log line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_went_away_still_reaches_the_response_hooks() {
    let (_d, core, app) = dev().await;
    let rec = Arc::new(Recorder::default());
    core.hooks().add(rec.clone());
    let body = Body::from(json!({"data": {"k": "v"}}).to_string());
    assert_eq!(call(&app, "POST", "secret/data/app", Some(ROOT), body).await.0, 200);
    // A blocking read for a version that never comes, abandoned after 200 ms.
    let req = request("GET", "secret/data/app?wait_for_version_after=1&wait=30", Some(ROOT), Body::empty());
    assert!(tokio::time::timeout(Duration::from_millis(200), app.clone().oneshot(req)).await.is_err());
    let mut gone = None;
    for _ in 0..100 {
        gone = rec.responses.lock().unwrap().iter().find(|r| r.1 == 499).cloned();
        if gone.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (id, _) = gone.expect("the abandoned request reached the response hooks");
    let requests = rec.requests.lock().unwrap().clone();
    assert!(requests.iter().any(|r| r.0 == id && r.1 == "secret/data/app"), "{requests:?}");
    assert_eq!(core.request_counter().get("secret/", "read", 400), 1, "counted as a 4xx");
}

/// Path tables keep Vault's create/update split where the backend can tell
/// (red team: AppRole role writes had lost their existence check), and list
/// paths need `list` (red team: policy names were listed with `read`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_update_stay_apart_and_lists_need_list() {
    let (_d, _core, app) = dev().await;
    assert_eq!(call(&app, "POST", "sys/auth/approle", Some(ROOT), Body::from(r#"{"type":"approle"}"#)).await.0, 204);
    assert_eq!(call(&app, "POST", "auth/approle/role/existing", Some(ROOT), Body::from("{}")).await.0, 204);
    let token_with = |caps: &'static str| {
        let app = app.clone();
        async move {
            let name = caps.replace([',', ' ', '"'], "");
            let policy = format!(
                r#"path "auth/approle/role/*" {{ capabilities = [{caps}] }}
                path "sys/policies/acl" {{ capabilities = [{caps}] }}"#
            );
            let body = Body::from(json!({ "policy": policy }).to_string());
            assert_eq!(call(&app, "PUT", &format!("sys/policies/acl/{name}"), Some(ROOT), body).await.0, 204);
            let body = Body::from(json!({ "policies": [name] }).to_string());
            let (_, _, v) = call(&app, "POST", "auth/token/create", Some(ROOT), body).await;
            v["auth"]["client_token"].as_str().unwrap().to_string()
        }
    };
    let update_only = token_with(r#""update""#).await;
    let create_only = token_with(r#""create""#).await;
    let post = |token: String, role: &'static str| {
        let app = app.clone();
        async move { call(&app, "POST", &format!("auth/approle/role/{role}"), Some(&token), Body::from("{}")).await.0 }
    };
    assert_eq!(post(update_only.clone(), "fresh").await, 403, "update alone cannot create");
    assert_eq!(post(update_only.clone(), "existing").await, 204, "update changes an existing role");
    assert_eq!(post(create_only.clone(), "existing").await, 403, "create alone cannot change");
    assert_eq!(post(create_only.clone(), "fresh").await, 204, "create makes a new role");
    // Listing policies needs `list`; a plain GET is not a list.
    let read_only = token_with(r#""read""#).await;
    assert_eq!(call(&app, "LIST", "sys/policies/acl", Some(&read_only), Body::empty()).await.0, 403);
    assert_eq!(call(&app, "GET", "sys/policies/acl", Some(ROOT), Body::empty()).await.0, 405);
    assert_eq!(call(&app, "LIST", "sys/policies/acl", Some(ROOT), Body::empty()).await.0, 200);
}

/// A request answered without its body being read (denied before the read)
/// says `Connection: close`: the unread body is still on the connection, so
/// it cannot carry another request, and a client must not reuse it (hvac
/// saw "remote end closed connection without response").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_closes_the_connection_and_says_so() {
    let (_d, _core, app) = dev().await;
    let send = |token: Option<&'static str>, body: &'static str| {
        let app = app.clone();
        async move {
            let mut req = request("POST", "secret/data/app", token, Body::from(body));
            req.headers_mut().insert("content-length", body.len().to_string().parse().unwrap());
            let resp = app.oneshot(req).await.unwrap();
            (resp.status().as_u16(), resp.headers().get("connection").map(|v| v.to_str().unwrap().to_string()))
        }
    };
    let body = r#"{"data":{"k":"v"}}"#;
    assert_eq!(send(Some("hvs.nope"), body).await, (403, Some("close".into())), "denied, body unread");
    assert_eq!(send(Some(ROOT), body).await, (200, None), "read: the connection stays");
    let resp = app.clone().oneshot(request("GET", "sys/health", None, Body::empty())).await.unwrap();
    assert!(resp.headers().get("connection").is_none(), "no body, nothing to close for");
}
