//! Transit: encrypt and decrypt per AEAD key type and size, blind indexes,
//! and subject-key encrypts with a warm and a cold subject cache, each next
//! to a baseline measured in the same run so figures can be quoted as ratios.
//!
//! Groups and rows (throughput in bytes of plaintext or input):
//! - `<key type>` (`aes128-gcm96`, `aes256-gcm96`, `chacha20-poly1305`,
//!   `xchacha20-poly1305`), sizes 16 B, 128 B, 1 KiB, 64 KiB:
//!   - `encrypt/engine`: the engine's encrypt of one item (`ops::seal_one`
//!     through `engines::transit::bench::Aead::encrypt`): version lookup,
//!     cipher keyed per call, random nonce, seal, usage count, the
//!     `vault:v1:<base64>` string.
//!   - `encrypt/crypto`: the primitive under it (`crypto::seal`): keyed per
//!     call, random nonce, `nonce || ciphertext || tag` in a new `Vec`.
//!   - `encrypt/raw`: the RustCrypto cipher directly, keyed once, fixed
//!     nonce, in place on a preallocated buffer: the floor.
//!   - `decrypt/engine` (`ops::open_one`: parse, base64, open, plaintext in
//!     a zeroizing buffer wiped on drop), `decrypt/crypto` (`crypto::open`),
//!     `decrypt/raw` (copy the body into a preallocated buffer, decrypt in
//!     place; no wipe).
//! - `blind_index`, a 32-byte input, default parameters (256 bits, no
//!   normalization):
//!   - `engine_per_item`: `index::index` (the field's key derived with HKDF
//!     for the item, then HMAC-SHA-256, hex);
//!   - `engine_shared_key`: `index::index_with` (the field's key derived once
//!     per request, as for a batch sharing its top-level `field`);
//!   - `raw_hmac_sha256`: `hmac::Hmac<Sha256>` keyed per call over the same
//!     input (no hex): the floor.
//! - `subject`: whole requests through the HTTP router in process (axum
//!   `oneshot`, no socket, root token, an `aes256-gcm96` key, 128 B):
//!   - `no_subject`: `POST transit/encrypt/bench` (the baseline);
//!   - `subject_warm`: the same with `"subject": "alice"`, the subject's key
//!     in the engine's subject cache;
//!   - `subject_cold`: the same with the subject's key dropped from the
//!     engine's cache before each request (untimed), through
//!     `Backend::invalidate(Some("subject/bench/<id>"))`, the call the change
//!     feed makes when another server changes that subject: the request
//!     reads the record (a storage read-cache hit here), opens it through the
//!     barrier, parses the JSON and unwraps the key;
//!   - `nocache/*`: the same three on a second server whose storage read
//!     cache is off (`Storage::open_with(url, 0)`), so a cold subject's
//!     record comes from SQLite;
//!   - `hkdf_raw`: `hkdf::Hkdf<Sha256>` with a 32-byte salt and key, three
//!     info parts, 32 bytes out: the shape of the per-message subject key
//!     derivation, for scale.
//!
//! Run: `cargo bench -p vault-server --bench transit -- --warm-up-time 1 --measurement-time 3 --noplot`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use bytes::Bytes;
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tower::ServiceExt;

use vault_server::core::Core;
use vault_server::engines::transit::bench::{Aead, BlindIndex};
use vault_server::http::tls::PeerAddr;
use vault_server::logical::Backend;
use vault_server::storage::Storage;

const SIZES: [(usize, &str); 4] = [(16, "16B"), (128, "128B"), (1024, "1KiB"), (65536, "64KiB")];
const ROOT: &str = "root-token";

fn plaintext(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn group<'c>(c: &'c mut Criterion, name: &str) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    // Defaults for a plain `cargo bench`; the command line overrides them.
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g
}

// ---------------------------------------------------------------------------
// AEAD per key type
// ---------------------------------------------------------------------------

fn bench_aead<A: AeadInOut + KeyInit>(c: &mut Criterion, type_name: &str, key_len: usize) {
    let engine = Aead::new(type_name).unwrap();
    let raw = A::new_from_slice(&[0x5au8; 32][..key_len]).unwrap();
    let mut nonce = Nonce::<A>::default();
    nonce.iter_mut().for_each(|b| *b = 7);

    let mut g = group(c, type_name);
    for (size, label) in SIZES {
        let pt = plaintext(size);
        g.throughput(Throughput::Bytes(size as u64));

        // The three layers agree before anything is timed.
        let ct = engine.encrypt(&pt).unwrap();
        assert!(ct.starts_with("vault:v1:"), "{ct}");
        assert_eq!(&**engine.decrypt(&ct).unwrap(), &pt[..]);
        let sealed = engine.seal(&pt).unwrap();
        assert_eq!(sealed.len(), nonce.len() + size + 16);
        assert_eq!(&**engine.open(&sealed).unwrap(), &pt[..]);
        let mut body = pt.clone();
        let tag = raw_seal(&raw, &nonce, &mut body);
        let mut work = vec![0u8; size];
        raw_open(&raw, &nonce, &body, &tag, &mut work);
        assert_eq!(work, pt);

        g.bench_with_input(BenchmarkId::new("encrypt/engine", label), &pt, |b, pt| {
            b.iter(|| engine.encrypt(black_box(pt)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("encrypt/crypto", label), &pt, |b, pt| {
            b.iter(|| engine.seal(black_box(pt)).unwrap())
        });
        let mut buf = pt.clone();
        g.bench_function(BenchmarkId::new("encrypt/raw", label), |b| b.iter(|| raw_seal(&raw, &nonce, &mut buf)));

        g.bench_with_input(BenchmarkId::new("decrypt/engine", label), &ct, |b, ct| {
            b.iter(|| engine.decrypt(black_box(ct)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decrypt/crypto", label), &sealed, |b, s| {
            b.iter(|| engine.open(black_box(s)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decrypt/raw", label), &body, |b, body| {
            b.iter(|| raw_open(&raw, &nonce, black_box(body), &tag, &mut work))
        });
    }
    g.finish();
}

// The raw rows go through these non-inlined functions so that each loop
// measures one call (as in benches/barrier.rs, whose caveat applies: this
// binary instantiates the cipher crates' generic code itself).
#[inline(never)]
fn raw_seal<A: AeadInOut>(c: &A, nonce: &Nonce<A>, buf: &mut [u8]) -> Tag<A> {
    c.encrypt_inout_detached(nonce, &[], InOutBuf::from(buf)).unwrap()
}

#[inline(never)]
fn raw_open<A: AeadInOut>(c: &A, nonce: &Nonce<A>, body: &[u8], tag: &Tag<A>, work: &mut [u8]) {
    work.copy_from_slice(body);
    c.decrypt_inout_detached(nonce, &[], InOutBuf::from(work), tag).unwrap()
}

fn bench_aeads(c: &mut Criterion) {
    bench_aead::<Aes128Gcm>(c, "aes128-gcm96", 16);
    bench_aead::<Aes256Gcm>(c, "aes256-gcm96", 32);
    bench_aead::<ChaCha20Poly1305>(c, "chacha20-poly1305", 32);
    bench_aead::<XChaCha20Poly1305>(c, "xchacha20-poly1305", 32);
}

// ---------------------------------------------------------------------------
// Blind index
// ---------------------------------------------------------------------------

fn bench_blind_index(c: &mut Criterion) {
    let bi = BlindIndex::new("email").unwrap();
    let input = b"ada.lovelace@analytical.example";
    let input = &input[..32.min(input.len())];
    let first = bi.index(input).unwrap();
    assert_eq!(first.len(), 64);
    assert_eq!(bi.index_shared(input).unwrap(), first);
    let key = [0x5au8; 32];

    let mut g = group(c, "blind_index");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("engine_per_item", |b| b.iter(|| bi.index(black_box(input)).unwrap()));
    g.bench_function("engine_shared_key", |b| b.iter(|| bi.index_shared(black_box(input)).unwrap()));
    g.bench_function("raw_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(black_box(&key)).unwrap();
            mac.update(black_box(input));
            mac.finalize().into_bytes()
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Subject keys, through the router
// ---------------------------------------------------------------------------

struct Server {
    _dir: tempfile::TempDir,
    core: Arc<Core>,
    app: axum::Router,
    /// The `transit/` mount's engine, told to forget the subject.
    transit: Arc<dyn Backend>,
    /// The mount's storage prefix id.
    uuid: String,
    /// `subject/bench/<hex id>`: the subject's path relative to the mount.
    subject: String,
}

/// A dev server (SQLite in a temporary directory, storage read cache of
/// `cache_bytes`), a key `bench` and the subject `alice` made.
async fn server(cache_bytes: Option<u64>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v.db", dir.path().display());
    let storage = match cache_bytes {
        None => Storage::open(&url).await.unwrap(),
        Some(n) => Storage::open_with(&url, n).await.unwrap(),
    };
    let core = Core::new(storage, vault_server::catalog::builtin()).await.unwrap();
    core.dev_init(Some(ROOT)).await.unwrap();
    let app = vault_server::http::router(core.clone(), 1 << 20, Duration::from_secs(5), 64 << 20, 64);
    let (s, v) = call(&app, "POST", "transit/keys/bench", &json!({"type": "aes256-gcm96"})).await;
    assert!(s == 200 || s == 204, "{s} {v}");
    let (s, v) = call(&app, "POST", "transit/encrypt/bench", &json!({"plaintext": "AA==", "subject": "alice"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(&app, "GET", "transit/subjects/bench/alice", &Value::Null).await;
    assert_eq!(s, 200, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let mount = core.active().unwrap().router().route("transit/keys/bench").unwrap().0.clone();
    assert_eq!(mount.entry.kind, "transit");
    let (transit, uuid) = (mount.backend.clone(), mount.entry.uuid.clone());
    Server { _dir: dir, core, app, transit, uuid, subject: format!("subject/bench/{id}") }
}

fn request(method: &str, path: &str, body: Body) -> Request<Body> {
    let mut r =
        Request::builder().method(method).uri(format!("/v1/{path}")).header("X-Vault-Token", ROOT).body(body).unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    r.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
    r
}

async fn call(app: &axum::Router, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let resp = app.clone().oneshot(request(method, path, body)).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
}

/// One encrypt request, answer read whole; what every `subject` row times.
async fn encrypt(app: &axum::Router, body: &Bytes) {
    let resp = app.clone().oneshot(request("POST", "transit/encrypt/bench", Body::from(body.clone()))).await.unwrap();
    assert_eq!(resp.status(), 200);
    black_box(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap());
}

fn bench_subjects(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cached = rt.block_on(server(None));
    let uncached = rt.block_on(server(Some(0)));
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let pt = b64(&plaintext(128));
    let plain = Bytes::from(json!({"plaintext": pt}).to_string());
    let subject = Bytes::from(json!({"plaintext": pt, "subject": "alice"}).to_string());

    // The subject's record is in the read cache of the first server only.
    let record = |s: &Server| format!("logical/{}/{}", s.uuid, s.subject);
    rt.block_on(encrypt(&cached.app, &subject));
    assert!(cached.core.storage().is_cached(&record(&cached)));
    assert!(!uncached.core.storage().is_caching());

    let mut g = group(c, "subject");
    g.throughput(Throughput::Bytes(128));
    for (prefix, s) in [("", &cached), ("nocache/", &uncached)] {
        g.bench_function(format!("{prefix}no_subject"), |b| b.to_async(&rt).iter(|| encrypt(&s.app, &plain)));
        g.bench_function(format!("{prefix}subject_warm"), |b| b.to_async(&rt).iter(|| encrypt(&s.app, &subject)));
        g.bench_function(format!("{prefix}subject_cold"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let subject = &subject;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        s.transit.invalidate(Some(&s.subject));
                        let t = Instant::now();
                        encrypt(&s.app, subject).await;
                        total += t.elapsed();
                    }
                    total
                }
            })
        });
    }
    // The cold row read the record through the cache, and left it there.
    assert!(cached.core.storage().is_cached(&record(&cached)));

    let (salt, ikm) = ([1u8; 32], [2u8; 32]);
    let info: [&[u8]; 3] = [b"vault-transit-subject-data-v1\0", &[3u8; 16], &1u32.to_be_bytes()];
    g.bench_function("hkdf_raw", |b| {
        b.iter(|| {
            let hk = hkdf::Hkdf::<Sha256>::new(Some(black_box(&salt[..])), black_box(&ikm[..]));
            let mut out = [0u8; 32];
            hk.expand_multi_info(&info, &mut out).unwrap();
            out
        })
    });
    g.finish();

    rt.block_on(async {
        for s in [&cached, &uncached] {
            s.core.seal().await;
            s.core.storage().close().await;
        }
    });
}

criterion_group!(benches, bench_aeads, bench_blind_index, bench_subjects);
criterion_main!(benches);
