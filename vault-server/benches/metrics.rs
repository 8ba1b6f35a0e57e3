//! What the metrics cost a request: the response hooks as the HTTP
//! pipeline runs them after every answer.
//!
//! - `hooks/none`: no hook registered (the pipeline's floor).
//! - `hooks/request_counter`: the counter the core had before metrics
//!   (atomics by mount, operation and status class).
//! - `hooks/metrics`: the Prometheus hook on an existing series (the steady
//!   state: a read-locked lookup by mount, route, operation and status, a
//!   histogram observation, and the classification of logins and rotations).
//! - `hooks/metrics_login`: the same for a login (one more counter).
//! - `render`: one scrape's text with ~50 request series.
//!
//! Run: `cargo bench -p vault-server --bench metrics -- --noplot`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;

use vault_server::core::Core;
use vault_server::core::hooks::{Hooks, RequestCounter, RequestEvent, ResponseEvent};
use vault_server::logical::Operation;
use vault_server::metrics::Metrics;
use vault_server::storage::Storage;

fn event<'a>(path: &'a str, route: &'a str, mount: &'a str, kind: &'a str) -> RequestEvent<'a> {
    RequestEvent {
        request_id: "00000000-0000-0000-0000-000000000000",
        op: Operation::Read,
        path,
        route,
        mount,
        mount_type: kind,
        caller: None,
        remote: None,
        data: None,
        client_token: None,
        audit: &CARRY,
    }
}

static CARRY: vault_server::audit::Carry = vault_server::audit::Carry::new();

fn respond(hooks: &Hooks, e: &RequestEvent<'_>) {
    let r = ResponseEvent {
        request: e,
        status: 200,
        duration: Duration::from_micros(120),
        data: None,
        errors: &[],
        auth: None,
    };
    hooks.response(black_box(&r)).now_or_never().unwrap();
}

fn bench_hooks(c: &mut Criterion) {
    let read = event("secret/data/app/db", "data/{path+}", "secret/", "kv");
    let login = event("auth/userpass/login/alice", "login/{username}", "auth/userpass/", "userpass");
    let mut g = c.benchmark_group("hooks");
    let none = Hooks::default();
    g.bench_function("none", |b| b.iter(|| respond(&none, &read)));
    let counter = Hooks::default();
    counter.add(Arc::new(RequestCounter::default()));
    g.bench_function("request_counter", |b| b.iter(|| respond(&counter, &read)));
    let metrics = Hooks::default();
    metrics.add(Arc::new(Metrics::new()));
    g.bench_function("metrics", |b| b.iter(|| respond(&metrics, &read)));
    g.bench_function("metrics_login", |b| b.iter(|| respond(&metrics, &login)));
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let core: Arc<Core> = rt.block_on(async {
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        Core::new(storage, vault_server::catalog::builtin()).await.unwrap()
    });
    let routes = ["data/{path+}", "metadata/{path+}", "config", "keys/{name}", "encrypt/{name}"];
    for m in 0..10 {
        let mount = format!("m{m}/");
        for r in routes {
            let e = event("x", r, &mount, "kv");
            respond(core.hooks(), &e);
        }
    }
    let _guard = rt.enter();
    c.bench_function("render", |b| b.iter(|| black_box(core.metrics().render(&core).len())));
}

criterion_group!(benches, bench_hooks, bench_render);
criterion_main!(benches);
