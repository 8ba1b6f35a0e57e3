//! Time to unseal.
//!
//! - `shamir/split_5_of_3`, `shamir/combine_3`: `crypto::shamir` (vsss-rs)
//!   on the 32-byte unseal key, 5 shares, threshold 3.
//! - `core/unseal_3_shares`: `Core::unseal` called with 3 shares on an
//!   initialized, sealed core over SQLite, timed from the first share to the
//!   reply to the third (hex decoding, combine, root-key unwrap, keyring
//!   load, token store and mount table activation). Setup (untimed): seal
//!   the core again.
//! - `core/restart_unseal_3_shares`: the same after a restart: setup opens a
//!   fresh copy of a freshly initialized SQLite store and builds a new
//!   `Core` over it (untimed), then the 3 unseal calls are timed.
//! - `core/init_5_of_3`: `Core::init` on an empty SQLite store (key
//!   generation, split, and one durable transaction); setup opens the store.
//!
//! Run: `cargo bench -p vault-server --bench unseal -- --noplot`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use zeroize::Zeroizing;

use vault_api::{InitRequest, UnsealRequest};
use vault_server::core::Core;
use vault_server::crypto::shamir;
use vault_server::storage::Storage;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/vault.db", dir.display())
}

fn init_request() -> InitRequest {
    InitRequest { secret_shares: Some(5), secret_threshold: Some(3), ..Default::default() }
}

async fn unseal3(core: &Core, keys: &[String]) {
    let mut sealed = true;
    for k in &keys[..3] {
        let s = core.unseal(UnsealRequest { key: Some(k.clone()), ..Default::default() }).await.unwrap();
        sealed = s.sealed;
    }
    assert!(!sealed, "three shares must unseal");
}

fn bench_shamir(c: &mut Criterion) {
    let key = Zeroizing::new([0x3cu8; 32]);
    let shares = shamir::split(&key, 3, 5).unwrap();
    assert_eq!(*shamir::combine(&shares[1..4]).unwrap(), *key);

    let mut g = c.benchmark_group("shamir");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("split_5_of_3", |b| b.iter(|| shamir::split(black_box(&key), 3, 5).unwrap()));
    g.bench_function("combine_3", |b| b.iter(|| shamir::combine(black_box(&shares[..3])).unwrap()));
    g.finish();
}

fn bench_core(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("core");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(20);

    // Warm: one initialized core, sealed again before every iteration.
    {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(dir.path());
        let (core, keys) = rt.block_on(async {
            let core = Core::new(Storage::open(&url).await.unwrap(), vault_server::catalog::builtin()).await.unwrap();
            let keys = core.init(init_request()).await.unwrap().keys;
            (core, keys)
        });
        g.bench_function("unseal_3_shares", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        core.seal().await;
                        let start = Instant::now();
                        unseal3(&core, &keys).await;
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
        rt.block_on(async {
            core.seal().await;
            core.storage().close().await;
        });
    }

    // Restart: a fresh copy of a freshly initialized store and a new Core per iteration.
    {
        let template = tempfile::tempdir().unwrap();
        let keys = rt.block_on(async {
            let storage = Storage::open(&sqlite_url(template.path())).await.unwrap();
            let core = Core::new(storage.clone(), vault_server::catalog::builtin()).await.unwrap();
            let keys = core.init(init_request()).await.unwrap().keys;
            storage.close().await;
            drop(core);
            drop(storage);
            // Let SQLite's connection threads finish closing (checkpoint) before copying.
            tokio::time::sleep(Duration::from_millis(500)).await;
            keys
        });
        let work = tempfile::tempdir().unwrap();
        let mut n = 0u64;
        g.bench_function("restart_unseal_3_shares", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let dir = work.path().join(n.to_string());
                        std::fs::create_dir(&dir).unwrap();
                        for f in ["vault.db", "vault.db-wal"] {
                            let src = template.path().join(f);
                            if src.exists() {
                                std::fs::copy(&src, dir.join(f)).unwrap();
                            }
                        }
                        let storage = Storage::open(&sqlite_url(&dir)).await.unwrap();
                        let core: Arc<Core> =
                            Core::new(storage.clone(), vault_server::catalog::builtin()).await.unwrap();
                        let start = Instant::now();
                        unseal3(&core, &keys).await;
                        total += start.elapsed();
                        core.seal().await;
                        storage.close().await;
                        drop(core);
                        drop(storage);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    total
                })
            })
        });
    }

    // Init on an empty store.
    {
        let work = tempfile::tempdir().unwrap();
        let mut n = 0u64;
        g.sample_size(10);
        g.bench_function("init_5_of_3", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let dir = work.path().join(n.to_string());
                        let storage = Storage::open(&sqlite_url(&dir)).await.unwrap();
                        let core = Core::new(storage.clone(), vault_server::catalog::builtin()).await.unwrap();
                        let start = Instant::now();
                        let resp = core.init(init_request()).await.unwrap();
                        total += start.elapsed();
                        assert_eq!(resp.keys.len(), 5);
                        storage.close().await;
                        drop(core);
                        drop(storage);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    total
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_shamir, bench_core);
criterion_main!(benches);
