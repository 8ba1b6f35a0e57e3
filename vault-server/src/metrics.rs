//! Prometheus metrics: the registry a core owns, the request hook that
//! feeds it, and the scrape that renders it (`GET /v1/sys/metrics?format=prometheus`).
//!
//! Two kinds of series:
//! - *events*, counted as they happen: requests (latency histogram by
//!   mount, route template, operation and status), logins, unseal attempts,
//!   key rotations, token creations, and the events other subsystems report
//!   through the small `pub fn`s below (audit failures, rate-limit
//!   violations, backups). Most are derived from what the request hook
//!   already sees, so no hot path gains a call.
//! - *state*, read at scrape time from counters the components keep anyway
//!   (seal state, in-flight streams, storage latency and group-commit
//!   sizes, cache hits, pool connections, lockouts): nothing is added to
//!   their hot paths but an atomic increment.
//!
//! Label values are bounded: mounts (route paths, which only an admin
//! creates), route templates (path-table patterns such as `data/{path+}`),
//! operations, status codes and auth method types. A request path never
//! becomes a label (it names secrets); a request refused before routing
//! counts under mount `""` and route `""`. The request family is capped at
//! [`MAX_REQUEST_SERIES`] series, past which new combinations count under
//! mount and route `other`.
//!
//! The registry belongs to the core (no global recorder): two servers in
//! one process, as in the tests, never mix their numbers.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::hooks::{Hook, ResponseEvent};
use crate::logical::BoxFuture;

/// The content type of the answer (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Most (mount, route, operation, status) series kept; new combinations
/// past it count under mount and route `other` (a bound on memory and on
/// the scrape's size, whatever mounts come and go).
pub const MAX_REQUEST_SERIES: usize = 4096;

/// Request latency buckets, seconds: from a cached read (~100 µs) to a
/// slow storage round trip or a large batch.
const REQUEST_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mount: String,
    route: String,
    operation: &'static str,
    status: &'static str,
}

/// The `status` label: the code itself for the statuses this server
/// answers, its class for any other. `sys/health` answers whatever code
/// the caller asks for (`activecode=…`): without this, an anonymous caller
/// could mint hundreds of series.
fn status_label(status: u16) -> &'static str {
    macro_rules! known {
        ($($code:literal),*) => {
            match status {
                $($code => stringify!($code),)*
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            }
        };
    }
    known!(
        200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 411, 412, 413, 415,
        416, 422, 429, 431, 472, 473, 499, 500, 501, 502, 503, 504
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    method: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthMethodLabels {
    auth_method: String,
}

/// Outcome label values.
const SUCCESS: &str = "success";
const FAILURE: &str = "failure";

/// What a key rotation rotated (label `kind` of `vault_key_rotations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationKind {
    /// The barrier keyring (`sys/rotate`).
    Barrier,
    /// A transit named key (API or `auto_rotate_period`).
    Transit,
    /// A KV v2 secret rotation policy run.
    Kv2,
}

impl RotationKind {
    fn label(self) -> &'static str {
        match self {
            RotationKind::Barrier => "barrier",
            RotationKind::Transit => "transit",
            RotationKind::Kv2 => "kv2",
        }
    }
}

const HELP_REQUESTS: &str = "Requests and their latency, by mount, route template, operation and status";
const HELP_LOGINS: &str = "Login attempts by auth method type and result";
const HELP_TOKENS: &str = "Tokens created, by auth method type";

/// The labelled families, as exported: the encoder writes nothing for a
/// family without series, so these are declared (`# HELP`, `# TYPE`, no
/// sample, which the format allows) until their first event. Dashboards,
/// alert rules and their tests then find every name on any server.
const LABELLED: [(&str, &str, &str); 3] = [
    ("vault_core_handle_request_seconds", "histogram", HELP_REQUESTS),
    ("vault_auth_logins_total", "counter", HELP_LOGINS),
    ("vault_token_creation_total", "counter", HELP_TOKENS),
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The metrics of one core. Shared as `Arc<Metrics>`; it is also the hook
/// that counts requests.
pub struct Metrics {
    registry: Registry,
    requests: HistogramFamily<RequestLabels>,
    logins: Family<LoginLabels, Counter>,
    unseal_attempts: Family<ResultLabels, Counter>,
    rotations: Family<RotationLabels, Counter>,
    token_creations: Family<AuthMethodLabels, Counter>,
    /// Request series created so far (an upper bound: see `observe_request`).
    request_series: std::sync::atomic::AtomicUsize,
    /// `[telemetry] unauthenticated_metrics_access`.
    unauthenticated: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("request_series", &self.request_series.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every event family registered (so that a
    /// family appears in the scrape, with its help text, before its first
    /// event: dashboards and alerts find the name).
    pub fn new() -> Self {
        let requests: HistogramFamily<RequestLabels> = Family::new_with_constructor(request_histogram);
        let logins = Family::<LoginLabels, Counter>::default();
        let unseal_attempts = Family::<ResultLabels, Counter>::default();
        let rotations = Family::<RotationLabels, Counter>::default();
        let token_creations = Family::<AuthMethodLabels, Counter>::default();
        let mut r = Registry::default();
        r.register("vault_core_handle_request_seconds", HELP_REQUESTS, requests.clone());
        r.register("vault_auth_logins", HELP_LOGINS, logins.clone());
        r.register(
            "vault_core_unseal_attempts",
            "Unseal key shares submitted, by result (failure: refused share or wrong key)",
            unseal_attempts.clone(),
        );
        r.register(
            "vault_key_rotations",
            "Key rotations by kind (barrier, transit, kv2) and result",
            rotations.clone(),
        );
        r.register("vault_token_creation", HELP_TOKENS, token_creations.clone());
        // Presence before the first event: the unlabeled outcomes exist at zero.
        for result in [SUCCESS, FAILURE] {
            drop(unseal_attempts.get_or_create(&ResultLabels { result }));
            for kind in [RotationKind::Barrier, RotationKind::Transit, RotationKind::Kv2] {
                drop(rotations.get_or_create(&RotationLabels { kind: kind.label(), result }));
            }
        }
        Self {
            registry: r,
            requests,
            logins,
            unseal_attempts,
            rotations,
            token_creations,
            request_series: std::sync::atomic::AtomicUsize::new(0),
            unauthenticated: Default::default(),
        }
    }

    /// Let `sys/metrics` be read without a token (Vault's
    /// `unauthenticated_metrics_access`).
    pub fn set_unauthenticated_access(&self, on: bool) {
        self.unauthenticated.store(on, Ordering::Relaxed);
    }

    /// Whether `sys/metrics` is read without a token.
    pub fn unauthenticated_access(&self) -> bool {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// A key rotation ended (for rotations outside a request: scheduled
    /// transit and KV v2 rotations; the request hook counts the API's).
    pub fn rotation(&self, kind: RotationKind, ok: bool) {
        let result = if ok { SUCCESS } else { FAILURE };
        self.rotations.get_or_create(&RotationLabels { kind: kind.label(), result }).inc();
    }

    /// Requests seen so far under `mount` (all routes, operations and
    /// statuses): for tests and the bench.
    pub fn requests_under(&self, mount: &str) -> u64 {
        let mut n = 0;
        // Family has no iterator: render and sum (cold path only).
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_ok() {
            let want = format!("mount=\"{mount}\"");
            for line in text.lines() {
                if line.starts_with("vault_core_handle_request_seconds_count") && line.contains(&want) {
                    n += line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                }
            }
        }
        n
    }

    fn observe_request(&self, mount: &str, route: &str, operation: &'static str, status: u16, secs: f64) {
        let status = status_label(status);
        let mut labels = RequestLabels { mount: mount.to_string(), route: route.to_string(), operation, status };
        if let Some(h) = self.requests.get(&labels) {
            h.observe(secs);
            return;
        }
        // A new series: counted (two threads creating the same one count it
        // twice, so the cap may bite a little early, never late).
        if self.request_series.fetch_add(1, Ordering::Relaxed) >= MAX_REQUEST_SERIES {
            labels.mount = "other".into();
            labels.route = "other".into();
        }
        self.requests.get_or_create(&labels).observe(secs);
    }

    /// Events that the request tells of, by where it went and how it ended.
    fn classify(&self, e: &ResponseEvent<'_>) {
        let r = e.request;
        let ok = (200..300).contains(&e.status);
        // A refused request (4xx) attempted nothing; a 5xx attempted and failed.
        let outcome = if ok {
            Some(SUCCESS)
        } else if e.status >= 500 && e.status != crate::http::CLIENT_GONE {
            Some(FAILURE)
        } else {
            None
        };
        if r.mount == "sys/" {
            match r.path.trim_end_matches('/') {
                "sys/unseal" => {
                    let result = if ok { SUCCESS } else { FAILURE };
                    self.unseal_attempts.get_or_create(&ResultLabels { result }).inc();
                }
                "sys/rotate" | "sys/rotate/keyring" => {
                    if let Some(result) = outcome {
                        self.rotations.get_or_create(&RotationLabels { kind: "barrier", result }).inc();
                    }
                }
                _ => {}
            }
            return;
        }
        if r.mount_type == "transit" && r.route == "keys/{name}/rotate" {
            if let Some(result) = outcome {
                self.rotations.get_or_create(&RotationLabels { kind: "transit", result }).inc();
            }
            return;
        }
        if let Some(rest) = r.mount.strip_prefix("auth/") {
            if r.mount_type == "token" {
                if ok && r.route.starts_with("create") {
                    self.token_creations.get_or_create(&AuthMethodLabels { auth_method: "token".into() }).inc();
                }
                return;
            }
            if !rest.is_empty() && r.route.starts_with("login") {
                let result = if ok { SUCCESS } else { FAILURE };
                self.logins.get_or_create(&LoginLabels { method: r.mount_type.to_string(), result }).inc();
                if ok {
                    self.token_creations
                        .get_or_create(&AuthMethodLabels { auth_method: r.mount_type.to_string() })
                        .inc();
                }
            }
        }
    }

    /// The Prometheus text of every series: the events counted here, then
    /// the state read from `core` now.
    pub fn render(&self, core: &crate::core::Core) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let state = State::read(core);
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(state));
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a label value (never a caller's bytes: they are bounded above).
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_client::encoding::prometheus_text::encode(&mut out, &scrape))
        {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        for (name, kind, help) in LABELLED {
            if !out.contains(&format!("# TYPE {name} ")) {
                out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n"));
            }
        }
        out
    }
}

impl Hook for Metrics {
    fn watches_requests(&self) -> bool {
        false
    }

    fn on_response<'a>(&'a self, e: &'a ResponseEvent<'a>) -> BoxFuture<'a, ()> {
        let r = e.request;
        self.observe_request(r.mount, r.route, r.op.capability(), e.status, e.duration.as_secs_f64());
        self.classify(e);
        Box::pin(std::future::ready(()))
    }
}

/// A histogram of atomics with fixed bounds, for components that count on
/// their own hot paths (storage): an observation is three relaxed adds and
/// a short scan, no lock; the scrape reads it.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds in the recorded unit (nanoseconds, items).
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative), plus one above the last bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    /// Buckets with upper bounds `bounds` (ascending).
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record `v`.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Record a duration in nanoseconds.
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// (sum, count, cumulative buckets) with values multiplied by `scale`
    /// (1e-9 for nanoseconds to seconds).
    fn snapshot(&self, scale: f64) -> HistogramSnapshot {
        let mut acc = 0u64;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc = acc.saturating_add(c.load(Ordering::Relaxed));
            let le = self.bounds.get(i).map_or(f64::INFINITY, |b| *b as f64 * scale);
            buckets.push((le, acc));
        }
        // The count is the buckets' total (read together with them), so
        // `_count` always equals the `+Inf` bucket.
        HistogramSnapshot { sum: self.sum.load(Ordering::Relaxed) as f64 * scale, count: acc, buckets }
    }
}

#[derive(Debug, Clone)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

/// Storage latency bounds, nanoseconds (50 µs .. 5 s).
pub const STORAGE_NS_BOUNDS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Group-commit size bounds (write batches per transaction).
pub const GROUP_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

/// What the storage layer counts on its own paths (read at scrape time).
#[derive(Debug)]
pub struct StorageStats {
    /// Database reads (cache misses), latency in ns.
    pub get: AtomicHistogram,
    /// Group commits (one transaction each), latency in ns.
    pub commit: AtomicHistogram,
    /// Write batches per group commit.
    pub group: AtomicHistogram,
    /// Transactions that failed as a whole.
    pub commit_failures: AtomicU64,
    /// Reads answered by the read cache.
    pub cache_hits: AtomicU64,
    /// Reads that went to the database while the cache was on.
    pub cache_misses: AtomicU64,
}

impl Default for StorageStats {
    fn default() -> Self {
        Self {
            get: AtomicHistogram::new(STORAGE_NS_BOUNDS),
            commit: AtomicHistogram::new(STORAGE_NS_BOUNDS),
            group: AtomicHistogram::new(GROUP_BOUNDS),
            commit_failures: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }
}

/// Connections of the storage's pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Connections open.
    pub open: u64,
    /// Of those, idle (in the pool or parked for reuse).
    pub idle: u64,
    /// Most connections the pool may open.
    pub max: u64,
}

/// The state read at one scrape (a collector over copied values, so the
/// encoder never holds a component's lock).
#[derive(Debug)]
struct State {
    unsealed: bool,
    streams_in_flight: u64,
    streams_max: u64,
    lockouts: u64,
    storage_get: HistogramSnapshot,
    storage_commit: HistogramSnapshot,
    storage_group: HistogramSnapshot,
    commit_failures: u64,
    cache_hits: u64,
    cache_misses: u64,
    pool: PoolStats,
    /// (cache, hits, misses) of the security caches (only while unsealed:
    /// they live and die with the unsealed state).
    security_caches: Vec<(&'static str, u64, u64)>,
    /// Requests refused because no audit device could record them.
    audit_request_failures: u64,
    /// Response entries an audit device could not write.
    audit_response_failures: u64,
    /// Requests refused per rate-limit quota name.
    quota_violations: Vec<(String, u64)>,
    backup_last_success: i64,
    backup_failures: u64,
}

impl State {
    fn read(core: &crate::core::Core) -> Self {
        let storage = core.storage();
        let stats = storage.stats();
        let streams = core.engine_settings().streams;
        State {
            unsealed: core.active().is_ok(),
            streams_in_flight: streams.in_flight() as u64,
            streams_max: streams.max_concurrent as u64,
            lockouts: core.lockout().lockouts_begun(),
            storage_get: stats.get.snapshot(1e-9),
            storage_commit: stats.commit.snapshot(1e-9),
            storage_group: stats.group.snapshot(1.0),
            commit_failures: stats.commit_failures.load(Ordering::Relaxed),
            cache_hits: stats.cache_hits.load(Ordering::Relaxed),
            cache_misses: stats.cache_misses.load(Ordering::Relaxed),
            pool: storage.pool_stats(),
            audit_request_failures: core.audit().request_failures(),
            audit_response_failures: core.audit().response_failures(),
            quota_violations: core.quotas().violations(),
            backup_last_success: core.backup().last_success_timestamp_seconds(),
            backup_failures: core.backup().failures_total(),
            security_caches: match core.active() {
                Ok(a) => {
                    let (th, tm) = a.tokens().cache_hits_misses();
                    let [(ph, pm), (ah, am)] = a.policies().cache_hits_misses();
                    vec![("token", th, tm), ("policy", ph, pm), ("acl", ah, am)]
                }
                Err(_) => Vec::new(),
            },
        }
    }
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    prometheus_client::metrics::counter::ConstCounter::new(v).encode(e.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn histogram(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, h: &HistogramSnapshot) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for State {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut e,
            "vault_core_unsealed",
            "1 when this server is unsealed, 0 when sealed",
            i64::from(self.unsealed),
        )?;
        gauge(
            &mut e,
            "vault_transit_streams_in_flight",
            "Transit streams in progress now",
            clamp(self.streams_in_flight),
        )?;
        gauge(
            &mut e,
            "vault_transit_streams_max",
            "Transit streams allowed at once ([transit] stream_max_concurrent)",
            clamp(self.streams_max),
        )?;
        counter(
            &mut e,
            "vault_auth_lockouts",
            "User lockouts begun on this server (too many failed logins)",
            self.lockouts,
        )?;
        histogram(
            &mut e,
            "vault_storage_get_seconds",
            "Database reads (read cache misses), seconds",
            &self.storage_get,
        )?;
        histogram(
            &mut e,
            "vault_storage_commit_seconds",
            "Group commits (one database transaction each), seconds",
            &self.storage_commit,
        )?;
        histogram(&mut e, "vault_storage_group_commit_batches", "Write batches per group commit", &self.storage_group)?;
        counter(
            &mut e,
            "vault_storage_commit_failures",
            "Group commits whose transaction failed",
            self.commit_failures,
        )?;
        counter(&mut e, "vault_storage_cache_hits", "Storage reads answered by the read cache", self.cache_hits)?;
        counter(&mut e, "vault_storage_cache_misses", "Storage reads that went to the database", self.cache_misses)?;
        for (name, help, pick) in [
            ("vault_cache_hits", "Lookups answered by a token, policy or ACL cache (since the last unseal)", true),
            (
                "vault_cache_misses",
                "Lookups a token, policy or ACL cache could not answer (since the last unseal)",
                false,
            ),
        ] {
            let mut d = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cache, hits, misses) in &self.security_caches {
                let v = if pick { *hits } else { *misses };
                prometheus_client::metrics::counter::ConstCounter::new(v)
                    .encode(d.encode_family(&[("cache", *cache)])?)?;
            }
        }
        gauge(&mut e, "vault_storage_pool_connections", "Database connections open", clamp(self.pool.open))?;
        gauge(
            &mut e,
            "vault_storage_pool_idle_connections",
            "Database connections open and idle",
            clamp(self.pool.idle),
        )?;
        gauge(
            &mut e,
            "vault_storage_pool_max_connections",
            "Most database connections the pool opens",
            clamp(self.pool.max),
        )?;
        // Vault's names (`vault.audit.log_request_failure`, ...).
        counter(
            &mut e,
            "vault_audit_log_request_failure",
            "Requests refused because no audit device could record them",
            self.audit_request_failures,
        )?;
        counter(
            &mut e,
            "vault_audit_log_response_failure",
            "Response entries an audit device could not write",
            self.audit_response_failures,
        )?;
        let mut d = e.encode_descriptor(
            "vault_quota_rate_limit_violation",
            "Requests refused by a rate-limit quota, by quota name",
            None,
            MetricType::Counter,
        )?;
        for (quota, n) in &self.quota_violations {
            prometheus_client::metrics::counter::ConstCounter::new(*n)
                .encode(d.encode_family(&[("quota", quota.as_str())])?)?;
        }
        gauge(
            &mut e,
            "vault_backup_last_success_timestamp_seconds",
            "Unix time of the last scheduled backup that was written and verified (0: none yet)",
            self.backup_last_success,
        )?;
        counter(
            &mut e,
            "vault_backup_failures",
            "Scheduled backups that failed (writing or verifying)",
            self.backup_failures,
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::hooks::RequestEvent;
    use crate::logical::Operation;

    fn event<'a>(path: &'a str, route: &'a str, mount: &'a str, mount_type: &'a str) -> RequestEvent<'a> {
        RequestEvent {
            request_id: "id",
            op: Operation::Update,
            path,
            route,
            mount,
            mount_type,
            caller: None,
            remote: None,
            data: None,
            client_token: None,
            audit: &CARRY,
        }
    }

    static CARRY: crate::audit::Carry = crate::audit::Carry::new();

    fn respond(m: &Metrics, e: &RequestEvent<'_>, status: u16) {
        let r = ResponseEvent {
            request: e,
            status,
            duration: std::time::Duration::from_millis(3),
            data: None,
            errors: &[],
            auth: None,
        };
        futures_util::FutureExt::now_or_never(m.on_response(&r)).unwrap();
    }

    fn text(m: &Metrics) -> String {
        let mut s = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut s, &m.registry).unwrap();
        s
    }

    #[test]
    fn requests_are_labelled_by_template_never_by_path() {
        let m = Metrics::new();
        let e = event("secret/data/CANARY-NAME", "data/{path+}", "secret/", "kv");
        respond(&m, &e, 200);
        respond(&m, &e, 403);
        let t = text(&m);
        assert!(!t.contains("CANARY"), "{t}");
        assert!(t.contains(r#"vault_core_handle_request_seconds_count{mount="secret/",route="data/{path+}",operation="update",status="200"} 1"#), "{t}");
        assert_eq!(m.requests_under("secret/"), 2);
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_REQUEST_SERIES + 10 {
            let mount = format!("m{i}/");
            respond(&m, &event("x", "", &mount, "kv"), 200);
        }
        assert!(
            m.requests
                .get(&RequestLabels {
                    mount: "other".into(),
                    route: "other".into(),
                    operation: "update",
                    status: "200"
                })
                .is_some()
        );
        assert_eq!(m.requests_under("other"), 10);
    }

    #[test]
    fn caller_chosen_statuses_fold_into_their_class() {
        let m = Metrics::new();
        // sys/health?activecode=… answers any code the caller names.
        for code in 200..600 {
            respond(&m, &event("sys/health", "", "sys/", "system"), code);
        }
        let t = text(&m);
        let series = t.lines().filter(|l| l.starts_with("vault_core_handle_request_seconds_count")).count();
        assert!(series <= 40, "{series} series from one route:\n{t}");
        assert!(t.contains(r#"status="4xx""#) && t.contains(r#"status="503""#), "{t}");
        assert_eq!(status_label(1000), "other");
    }

    #[test]
    fn logins_unseals_rotations_and_tokens_are_classified() {
        let m = Metrics::new();
        respond(&m, &event("auth/userpass/login/bob", "login/{username}", "auth/userpass/", "userpass"), 400);
        respond(&m, &event("auth/userpass/login/bob", "login/{username}", "auth/userpass/", "userpass"), 200);
        respond(&m, &event("auth/token/create", "create", "auth/token/", "token"), 200);
        respond(&m, &event("sys/unseal", "", "sys/", "system"), 400);
        respond(&m, &event("sys/rotate", "rotate", "sys/", "system"), 204);
        respond(&m, &event("sys/rotate", "rotate", "sys/", "system"), 403);
        respond(&m, &event("transit/keys/k/rotate", "keys/{name}/rotate", "transit/", "transit"), 500);
        m.rotation(RotationKind::Kv2, true);
        let t = text(&m);
        for want in [
            r#"vault_auth_logins_total{method="userpass",result="failure"} 1"#,
            r#"vault_auth_logins_total{method="userpass",result="success"} 1"#,
            r#"vault_token_creation_total{auth_method="token"} 1"#,
            r#"vault_token_creation_total{auth_method="userpass"} 1"#,
            r#"vault_core_unseal_attempts_total{result="failure"} 1"#,
            r#"vault_key_rotations_total{kind="barrier",result="success"} 1"#,
            r#"vault_key_rotations_total{kind="barrier",result="failure"} 0"#,
            r#"vault_key_rotations_total{kind="transit",result="failure"} 1"#,
            r#"vault_key_rotations_total{kind="kv2",result="success"} 1"#,
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }

    #[test]
    fn atomic_histograms_are_cumulative() {
        let h = AtomicHistogram::new(&[10, 100]);
        for v in [5, 50, 500, 7] {
            h.observe(v);
        }
        let s = h.snapshot(1.0);
        assert_eq!(s.buckets, vec![(10.0, 2), (100.0, 3), (f64::INFINITY, 4)]);
        assert_eq!((s.sum, s.count), (562.0, 4));
        h.observe(u64::MAX);
        assert_eq!(h.snapshot(1.0).count, 5, "no overflow panic on a huge value");
    }
}
