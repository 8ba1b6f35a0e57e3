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
    let core = Core::new(storage).await.unwrap();
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
                e.caller.map(|c| c.accessor.clone()).unwrap_or_default(),
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
