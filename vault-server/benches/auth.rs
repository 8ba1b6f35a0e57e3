//! The per-request authorization cost: token lookup (keyed hash + cache) and
//! the policy check (cached compiled ACL), as a request pays it, and the
//! whole logical request path for an authenticated no-op.
//!
//! - `auth/lookup+acl`: `Core::authenticate` (HMAC of the token, cache hit,
//!   expiry and CIDR checks) + `PolicyStore::acl` (cache hit) + `Acl::allows`.
//! - `auth/acl_only`: `Acl::allows` on a compiled 3-rule policy (glob match).
//! - `auth/handle_lookup_self`: `Core::handle` for `GET auth/token/lookup-self`
//!   with a non-root token: routing, authentication, policy, backend, response.
//!
//! Run: `cargo bench -p vault-server --bench auth -- --noplot`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use vault_api::{InitRequest, UnsealRequest};
use vault_server::core::Core;
use vault_server::logical::{Operation, Request};
use vault_server::storage::Storage;

const POLICY: &str = r#"
path "secret/data/app/*" { capabilities = ["read", "list"] }
path "secret/data/+/shared" { capabilities = ["read"] }
path "sys/*" { capabilities = ["deny"] }
"#;

fn bench_auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (core, token) = rt.block_on(async {
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let core = Core::new(storage, vault_server::catalog::builtin()).await.unwrap();
        let init = core
            .init(InitRequest { secret_shares: Some(1), secret_threshold: Some(1), ..Default::default() })
            .await
            .unwrap();
        core.unseal(UnsealRequest { key: Some(init.keys[0].clone()), ..Default::default() }).await.unwrap();
        let mut put = Request::new(Operation::Update, "sys/policies/acl/app");
        put.data = json!({"policy": POLICY}).as_object().unwrap().clone();
        core.handle(Some(&init.root_token), put).await.unwrap();
        let mut create = Request::new(Operation::Update, "auth/token/create");
        create.data = json!({"policies": ["app"]}).as_object().unwrap().clone();
        let resp = core.handle(Some(&init.root_token), create).await.unwrap();
        let vault_server::logical::Response::Data { auth: Some(a), .. } = resp.response else { panic!("no auth") };
        (core, a.client_token.clone())
    });
    let addr = Some("127.0.0.1".parse().unwrap());

    let mut g = c.benchmark_group("auth");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("lookup+acl", |b| {
        b.to_async(&rt).iter(|| async {
            let entry = core.authenticate(Some(&token), addr).await.unwrap();
            let u = core.unsealed().unwrap();
            let acl = core.active().unwrap().policies().acl(core.barrier(), &u, &entry.policies).await.unwrap();
            black_box(acl.allows("secret/data/app/db", Operation::Read, false))
        })
    });
    let acl = rt.block_on(async {
        let entry = core.authenticate(Some(&token), addr).await.unwrap();
        let u = core.unsealed().unwrap();
        core.active().unwrap().policies().acl(core.barrier(), &u, &entry.policies).await.unwrap()
    });
    g.bench_function("acl_only", |b| {
        b.iter(|| black_box(acl.allows(black_box("secret/data/team/shared"), Operation::Read, false)))
    });
    g.bench_function("handle_lookup_self", |b| {
        b.to_async(&rt).iter(|| async {
            let mut req = Request::new(Operation::Read, "auth/token/lookup-self");
            req.client_addr = addr;
            black_box(core.handle(Some(&token), req).await.unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
