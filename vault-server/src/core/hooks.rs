//! Request and response hooks: the points where something may watch (and
//! refuse) every request, raw `sys/` endpoints included. The HTTP pipeline
//! calls [`Hooks::request`] after authentication and authorization and
//! before the backend runs (for a streamed body: before its first byte is
//! read), and [`Hooks::response`] once the answer is known, success or error.
//!
//! Hooks see what an audit device needs, as typed values it can HMAC
//! (request and response data are the JSON maps the backend saw and gave);
//! the two built here record no values at all: [`AccessLog`] writes one line
//! per request (method, path, status, duration, accessor) and
//! [`RequestCounter`] counts requests by mount and status class for the
//! metrics issue to export.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::logical::{BoxFuture, Operation};

/// Who is calling, as far as the token tells (nothing secret: the accessor
/// is the token's public handle). Cheap to clone: it shares the token entry.
#[derive(Clone)]
pub struct Caller {
    token: Arc<crate::auth::TokenEntry>,
}

impl Caller {
    pub(crate) fn new(token: Arc<crate::auth::TokenEntry>) -> Self {
        Self { token }
    }
    /// Token accessor.
    pub fn accessor(&self) -> &str {
        &self.token.accessor
    }
    /// Token policies.
    pub fn policies(&self) -> &[String] {
        &self.token.policies
    }
    /// Identity entity (empty until identity exists).
    pub fn entity_id(&self) -> &str {
        ""
    }
    /// The token's display name.
    pub fn display_name(&self) -> &str {
        &self.token.display_name
    }
    /// The token's metadata (not secret: Vault shows it in audit entries).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.token.meta
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("accessor", &self.accessor()).field("policies", &self.policies()).finish()
    }
}

/// One request as hooks see it.
/// `Debug` shows the data's field names, never their values (secrets).
pub struct RequestEvent<'a> {
    /// The request id (also `request_id` in the answer and `X-Request-Id`).
    pub request_id: &'a str,
    /// The operation.
    pub op: Operation,
    /// Full request path (mount included), canonical form.
    pub path: &'a str,
    /// The route template: the backend's path-table pattern that matched
    /// (e.g. `data/{path+}`), "" for backends without a table and raw endpoints.
    pub route: &'a str,
    /// The mount's route path (e.g. `secret/`), or `sys/` for raw endpoints.
    pub mount: &'a str,
    /// The mount's type (e.g. `kv`, `system`).
    pub mount_type: &'a str,
    /// The caller (None: unauthenticated, such as logins and unseal).
    pub caller: Option<&'a Caller>,
    /// Remote address.
    pub remote: Option<IpAddr>,
    /// Request data the backend will see (None for streamed bodies).
    pub data: Option<&'a Map<String, Value>>,
    /// The token the request presented, if any. Secret: a hook that records
    /// it must replace it by a keyed hash (audit devices do); `Debug` hides it.
    pub client_token: Option<&'a str>,
    /// What the audit broker keeps of this request from its request entry
    /// to its response entry (one per request, owned by the pipeline).
    pub audit: &'a crate::audit::Carry,
}

/// How a request ended, as hooks see it.
/// `Debug` shows the data's field names, never their values (secrets).
pub struct ResponseEvent<'a> {
    /// The request.
    pub request: &'a RequestEvent<'a>,
    /// HTTP-style status (200, 204, 403...).
    pub status: u16,
    /// Time since the request arrived.
    pub duration: Duration,
    /// Response data (None for errors, empty answers and raw bodies).
    pub data: Option<&'a Map<String, Value>>,
    /// Error messages, when the request failed.
    pub errors: &'a [String],
    /// The answer's `auth` block (logins, token creation: it holds the new
    /// token and its accessor, secrets an audit device must hash), filled
    /// only when a hook asks for response data.
    pub auth: Option<&'a Map<String, Value>>,
}

fn data_keys(data: Option<&Map<String, Value>>) -> Option<Vec<&String>> {
    data.map(|d| d.keys().collect())
}

impl std::fmt::Debug for RequestEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestEvent")
            .field("request_id", &self.request_id)
            .field("op", &self.op)
            .field("path", &self.path)
            .field("route", &self.route)
            .field("mount", &self.mount)
            .field("caller", &self.caller)
            .field("remote", &self.remote)
            .field("data_keys", &data_keys(self.data))
            .field("client_token", &self.client_token.map(|_| "<redacted>"))
            .finish()
    }
}

impl std::fmt::Debug for ResponseEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseEvent")
            .field("request", &self.request)
            .field("status", &self.status)
            .field("duration", &self.duration)
            .field("data_keys", &data_keys(self.data))
            .field("errors", &self.errors)
            .field("auth_keys", &data_keys(self.auth))
            .finish()
    }
}

/// Why a hook refused a request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The request may not proceed (e.g. no audit device could record it:
    /// Vault answers 500 and runs nothing).
    #[error("{0}")]
    Refused(String),
    /// The vault is being sealed (an audit device waits for the requests
    /// in flight before it closes): the request was not run, and is
    /// answered as a sealed vault's (503).
    #[error("Vault is sealed")]
    Sealing,
}

/// Something that watches every request.
pub trait Hook: Send + Sync {
    /// Before the backend runs; an error refuses the request.
    fn on_request<'a>(&'a self, _event: &'a RequestEvent<'a>) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async { Ok(()) })
    }

    /// After the answer is known (never refuses: it is too late).
    fn on_response<'a>(&'a self, _event: &'a ResponseEvent<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Whether [`ResponseEvent::data`] should be filled (a copy of every
    /// answer's data: only hooks that record values, such as audit devices).
    /// Asked on every request, so it may change (an audit device enabled).
    fn wants_response_data(&self) -> bool {
        false
    }

    /// Whether `on_request` does anything (false: it is not called, which
    /// saves a call per request for hooks that only watch answers).
    fn watches_requests(&self) -> bool {
        true
    }
}

/// The hooks of a core, called in order.
#[derive(Default)]
pub struct Hooks {
    list: RwLock<Arc<Registered>>,
}

/// The hooks, and what the pipeline needs to know of them at once.
#[derive(Default)]
struct Registered {
    all: Vec<Arc<dyn Hook>>,
    watching_requests: Vec<Arc<dyn Hook>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooks({})", self.current().all.len())
    }
}

impl Hooks {
    fn current(&self) -> Arc<Registered> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Add a hook (after the existing ones).
    pub fn add(&self, hook: Arc<dyn Hook>) {
        let mut g = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut all = g.all.clone();
        all.push(hook);
        let watching_requests = all.iter().filter(|h| h.watches_requests()).cloned().collect();
        *g = Arc::new(Registered { all, watching_requests });
    }

    /// Whether any hook wants response data.
    pub fn want_response_data(&self) -> bool {
        self.list.read().unwrap_or_else(|p| p.into_inner()).all.iter().any(|h| h.wants_response_data())
    }

    /// Run every hook's `on_request`; the first refusal wins.
    pub async fn request(&self, event: &RequestEvent<'_>) -> Result<(), HookError> {
        let current = self.current();
        if current.watching_requests.is_empty() {
            return Ok(());
        }
        for h in &current.watching_requests {
            h.on_request(event).await?;
        }
        Ok(())
    }

    /// Run every hook's `on_response`.
    pub async fn response(&self, event: &ResponseEvent<'_>) {
        for h in &self.current().all {
            h.on_response(event).await;
        }
    }
}

/// One structured log line per request, target `vault::access`, with no
/// values: request id, operation, path, status, duration, accessor, remote
/// address. Enabled by `access_log = true` (the line costs a write per request).
#[derive(Debug, Default)]
pub struct AccessLog;

/// The tracing target of access log lines.
pub const ACCESS_TARGET: &str = "vault::access";

impl Hook for AccessLog {
    fn watches_requests(&self) -> bool {
        false
    }

    fn on_response<'a>(&'a self, e: &'a ResponseEvent<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let r = e.request;
            tracing::info!(
                target: ACCESS_TARGET,
                request_id = r.request_id,
                op = r.op.capability(),
                path = r.path,
                route = r.route,
                mount = r.mount,
                status = e.status,
                duration_us = u64::try_from(e.duration.as_micros()).unwrap_or(u64::MAX),
                accessor = r.caller.map_or("", Caller::accessor),
                remote = %r.remote.map(|a| a.to_string()).unwrap_or_default(),
                "request"
            );
        })
    }
}

/// Requests counted by (mount, operation, status class): what the metrics
/// issue exports. Keyed by mount, never by full path (paths name secrets).
/// Counting takes no allocation once a mount has been seen.
#[derive(Debug, Default)]
pub struct RequestCounter {
    mounts: RwLock<HashMap<String, Arc<Counts>>>,
}

/// Operations in the order of [`OPS`].
const OPS: [&str; 6] = ["read", "list", "create", "update", "patch", "delete"];
/// Status classes 100..=500.
const CLASSES: usize = 5;

/// One mount's counters, by operation and status class.
#[derive(Debug, Default)]
struct Counts([[AtomicU64; CLASSES]; OPS.len()]);

/// (mount, operation capability, status class).
pub type CounterKey = (String, &'static str, u16);

fn op_index(op: &str) -> Option<usize> {
    OPS.iter().position(|o| *o == op)
}

fn class_index(status: u16) -> Option<usize> {
    (1..=CLASSES as u16).contains(&(status / 100)).then(|| usize::from(status / 100 - 1))
}

impl RequestCounter {
    /// Requests seen for `mount`, operation capability `op`, status class
    /// (e.g. 200, 400, 500).
    pub fn get(&self, mount: &str, op: &str, class: u16) -> u64 {
        let (Some(o), Some(c)) = (op_index(op), class_index(class)) else { return 0 };
        self.mounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mount)
            .map_or(0, |m| m.0[o][c].load(Ordering::Relaxed))
    }

    /// Every non-zero counter: ((mount, op, status class), count), sorted.
    pub fn snapshot(&self) -> Vec<(CounterKey, u64)> {
        let g = self.mounts.read().unwrap_or_else(|p| p.into_inner());
        let mut v = Vec::new();
        for (mount, counts) in g.iter() {
            for (o, row) in counts.0.iter().enumerate() {
                for (c, n) in row.iter().enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        v.push(((mount.clone(), OPS[o], (c as u16 + 1) * 100), n));
                    }
                }
            }
        }
        v.sort();
        v
    }

    fn count(&self, mount: &str, op: &'static str, status: u16) {
        let (Some(o), Some(c)) = (op_index(op), class_index(status)) else { return };
        if let Some(m) = self.mounts.read().unwrap_or_else(|p| p.into_inner()).get(mount) {
            m.0[o][c].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut g = self.mounts.write().unwrap_or_else(|p| p.into_inner());
        // Bounded: mounts are few; a flood of distinct mount names cannot come
        // from callers (unknown paths count under "").
        if g.len() < 10_000 {
            g.entry(mount.to_string()).or_default().0[o][c].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Hook for RequestCounter {
    fn watches_requests(&self) -> bool {
        false
    }

    fn on_response<'a>(&'a self, e: &'a ResponseEvent<'a>) -> BoxFuture<'a, ()> {
        self.count(e.request.mount, e.request.op.capability(), e.status);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refuse;
    impl Hook for Refuse {
        fn on_request<'a>(&'a self, _: &'a RequestEvent<'a>) -> BoxFuture<'a, Result<(), HookError>> {
            Box::pin(async { Err(HookError::Refused("no".into())) })
        }
    }

    static CARRY: crate::audit::Carry = crate::audit::Carry::new();

    fn event() -> RequestEvent<'static> {
        RequestEvent {
            request_id: "id",
            op: Operation::Read,
            path: "secret/data/x",
            route: "data/{path+}",
            mount: "secret/",
            mount_type: "kv",
            caller: None,
            remote: None,
            data: None,
            client_token: None,
            audit: &CARRY,
        }
    }

    #[test]
    fn debug_never_shows_data_values() {
        let mut data = Map::new();
        data.insert("password".into(), "CANARY-SECRET".into());
        let mut e = event();
        e.data = Some(&data);
        e.client_token = Some("hvs.CANARY-TOKEN");
        let shown = format!("{e:?}");
        assert!(shown.contains("password") && !shown.contains("CANARY"), "{shown}");
        let r = ResponseEvent {
            request: &e,
            status: 200,
            duration: Duration::ZERO,
            data: Some(&data),
            errors: &[],
            auth: Some(&data),
        };
        assert!(!format!("{r:?}").contains("CANARY"));
    }

    #[tokio::test]
    async fn hooks_run_in_order_and_refuse() {
        let hooks = Hooks::default();
        let counter = Arc::new(RequestCounter::default());
        hooks.add(counter.clone());
        let e = event();
        assert!(hooks.request(&e).await.is_ok());
        for status in [200, 204, 403] {
            hooks
                .response(&ResponseEvent {
                    request: &e,
                    status,
                    duration: Duration::ZERO,
                    data: None,
                    errors: &[],
                    auth: None,
                })
                .await;
        }
        assert_eq!(counter.get("secret/", "read", 200), 2);
        assert_eq!(counter.get("secret/", "read", 400), 1);
        hooks.add(Arc::new(Refuse));
        assert!(hooks.request(&e).await.is_err());
    }
}
