//! Streamed transit encryption (`transit/stream/encrypt/{name}` and
//! `transit/stream/decrypt/{name}`: vault-server/src/engines/transit/stream.rs,
//! byte format in docs/formats.md "Streaming AEAD") end to end, through the
//! real binary over HTTP, on SQLite (and the basic round trips on
//! PostgreSQL):
//!
//! - round trips at the segment edges (0 B, 1 B, segment - 1, segment,
//!   segment + 1, 3 * segment + 7) for 4 KiB and default segments, both
//!   algorithms, buffered and chunked bodies cut at odd sizes; the header
//!   (magic, algorithm, segment size, key version, name, wrapped key) and the
//!   ciphertext length checked against the format; associated data, derived
//!   keys (`context`), subjects, `key_version`; the wrapped key is an
//!   ordinary transit ciphertext of a 32-byte key; wrong associated data,
//!   context or subject, another key's stream, bad parameters refused;
//! - a large stream (generated on the fly, never held in memory) encrypted
//!   and piped straight into a concurrent decrypt, compared by SHA-256, with
//!   the server's resident memory growth bounded;
//! - streams longer than the listener's header and idle timeouts (an upload
//!   trickling over HTTP/1.1 and HTTP/2, a slow reader) are not cut while
//!   they flow;
//! - tampering: truncation at every header byte, at every segment boundary
//!   and inside segments and tags; one flipped bit in every header byte and in
//!   every segment body and tag; segments swapped, duplicated, dropped,
//!   appended; another stream's header spliced on; a trimmed key version.
//!   Each ends as a 4xx before the answer or an aborted answer whose bytes are
//!   a prefix of the true plaintext (only authenticated segments released),
//!   never a complete 200;
//! - policy: a token without `update` on the stream path gets a 403 before
//!   the server reads any of the body (shown on a raw socket that sends a
//!   chunked head and no body);
//! - limits: `[transit] stream_max_bytes` (413, or an aborted answer once
//!   the limit is passed mid-stream) and `stream_max_concurrent` (503 while
//!   the slots are held; freed by finished and by abandoned streams);
//! - 16 concurrent streams;
//! - sealing the vault aborts the streams in progress; other changes (a
//!   mount, an auth method, a policy, a tune) do not;
//! - no plaintext canary (nor subject name) in the server's log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body::Frame;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use vault_e2e::{Backend, Client, ServerProc, Store};

/// Smallest segment size (the tests' "small" segments).
const SEG_MIN: usize = 4096;
/// The server's default segment size.
const SEG_DEFAULT: usize = 65536;
/// Every segment's tag.
const TAG: usize = 16;
/// Text put in plaintexts whose absence from the server log is checked.
const CANARY: &str = "stream-canary-5b1e93c7";
/// A subject name whose absence from the log and the stream is checked.
const ALICE: &str = "alice.stream@example.org";

// ---------------------------------------------------------------------------
// A server
// ---------------------------------------------------------------------------

struct Vault {
    _store: Store,
    srv: ServerProc,
    rc: Client,
    keys: Vec<String>,
    root: String,
    api: Api,
}

/// A fresh server on `backend` (with `config` as its TOML config if not
/// empty), initialized, unsealed, `transit/` mounted.
async fn vault_with(backend: Backend, config: &str) -> Vault {
    let store = Store::new(backend);
    let srv = if config.is_empty() {
        ServerProc::start(&store, &[])
    } else {
        ServerProc::start_with_config(&store, config, &[])
    };
    let (keys, root, rc) = srv.kv2_ready().await;
    let (s, v) = rc.post("sys/mounts/transit", json!({"type": "transit"})).await;
    assert_eq!(s, 204, "mount transit: {v}");
    let api = Api::new(&srv.url(), &root);
    Vault { _store: store, srv, rc, keys, root, api }
}

async fn vault(backend: Backend) -> Vault {
    vault_with(backend, "").await
}

async fn create_key(rc: &Client, name: &str, body: Value) {
    let (s, v) = rc.post(&format!("transit/keys/{name}"), body).await;
    assert_eq!(s, 200, "create key {name}: {v}");
}

async fn rotate(rc: &Client, name: &str) {
    let (s, v) = rc.post(&format!("transit/keys/{name}/rotate"), json!({})).await;
    assert_eq!(s, 200, "rotate {name}: {v}");
}

async fn token_with(rc: &Client, name: &str, policy: &str) -> String {
    let (s, v) = rc.put(&format!("sys/policies/acl/{name}"), json!({"policy": policy})).await;
    assert_eq!(s, 204, "policy {name}: {v}");
    let (s, v) = rc.post("auth/token/create", json!({"policies": [name]})).await;
    assert_eq!(s, 200, "token for {name}: {v}");
    v["auth"]["client_token"].as_str().unwrap().to_string()
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A 4xx in Vault's error shape: `{"errors": [...]}`, no `data`.
fn assert_client_error(s: u16, v: &Value, what: &str) {
    assert!((400..500).contains(&s), "{what}: expected a 4xx, got {s}: {v}");
    assert_error_shape(v, what);
}

/// Vault's error shape: `{"errors": [...]}` with messages, no `data`.
fn assert_error_shape(v: &Value, what: &str) {
    let list = v["errors"].as_array().unwrap_or_else(|| panic!("{what}: no errors list in {v}"));
    assert!(!list.is_empty() && list.iter().all(Value::is_string), "{what}: errors must be messages: {v}");
    assert!(v.get("data").is_none_or(Value::is_null), "{what}: an error with data: {v}");
}

/// The server's log holds none of `secrets`.
fn assert_log_clean(srv: &ServerProc, secrets: &[&[u8]]) {
    let log = srv.log_text();
    assert!(!log.is_empty(), "the server logged nothing at all");
    for s in secrets {
        let text = String::from_utf8_lossy(s);
        assert!(!log.contains(&*text), "the server log holds a secret ({text:?})");
        assert!(!log.contains(&b64(s)), "the server log holds a secret in base64 ({text:?})");
        assert!(!log.contains(&hex::encode(s)), "the server log holds a secret in hex ({text:?})");
    }
}

// ---------------------------------------------------------------------------
// HTTP: the stream endpoints through reqwest, request bodies as streams
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

type Query<'a> = &'a [(&'a str, String)];

impl Api {
    fn new(base: &str, token: &str) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A stalled server fails the test instead of hanging it.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .read_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Api { http, base: base.trim_end_matches('/').into(), token: token.into() }
    }

    fn with_token(&self, token: &str) -> Api {
        Api { token: token.into(), ..self.clone() }
    }

    /// `POST transit/stream/{op}/{key}?{query}` with `body`.
    fn request(&self, op: &str, key: &str, query: Query<'_>, body: reqwest::Body) -> reqwest::RequestBuilder {
        let mut url = format!("{}/v1/transit/stream/{op}/{key}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{}={}", escape(k), escape(v)));
        }
        self.http
            .post(url)
            .header("X-Vault-Token", &self.token)
            .header("Content-Type", "application/octet-stream")
            .body(body)
    }

    async fn call(&self, op: &str, key: &str, query: Query<'_>, body: impl Into<reqwest::Body>) -> Outcome {
        outcome(self.request(op, key, query, body.into()).send().await).await
    }

    /// Encrypt `plain` (chunked at odd sizes if `chunked`): the stream.
    async fn encrypt(&self, key: &str, query: Query<'_>, plain: &[u8], chunked: bool) -> Vec<u8> {
        let body = if chunked { chunks(plain, &[1, 777, 4095, 4097, 10_000]) } else { plain.to_vec().into() };
        self.call("encrypt", key, query, body).await.complete(&format!("encrypt {} bytes with {key}", plain.len()))
    }

    /// Decrypt `stream` (chunked at other odd sizes if `chunked`).
    async fn decrypt(&self, key: &str, query: Query<'_>, stream: &[u8], chunked: bool) -> Outcome {
        let body = if chunked { chunks(stream, &[3, 1000, 4113, 65_537, 7]) } else { stream.to_vec().into() };
        self.call("decrypt", key, query, body).await
    }
}

/// Percent-encode all but unreserved characters (RFC 3986).
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How a stream request ended.
enum Outcome {
    /// 200 and the body read to its proper end.
    Complete(Vec<u8>),
    /// An answer other than 200 (before the stream started): status, body.
    Refused(u16, Value),
    /// 200, then the body broke off: what arrived before, and the error.
    Aborted(Vec<u8>, String),
    /// No answer at all.
    Failed(String),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Complete(b) => write!(f, "complete 200 with {} bytes", b.len()),
            Outcome::Refused(s, v) => write!(f, "refused {s}: {v}"),
            Outcome::Aborted(b, e) => write!(f, "200 aborted after {} bytes: {e}", b.len()),
            Outcome::Failed(e) => write!(f, "no answer: {e}"),
        }
    }
}

impl Outcome {
    fn complete(self, what: &str) -> Vec<u8> {
        match self {
            Outcome::Complete(b) => b,
            o => panic!("{what}: expected a complete 200, got {o:?}"),
        }
    }

    /// A 4xx (or `status` if given) in Vault's error shape: the body.
    fn refused(self, status: Option<u16>, what: &str) -> Value {
        match self {
            Outcome::Refused(s, v) => {
                match status {
                    Some(want) => assert_eq!(s, want, "{what}: {v}"),
                    None => assert!((400..500).contains(&s), "{what}: expected a 4xx, got {s}: {v}"),
                }
                assert_error_shape(&v, what);
                v
            }
            o => panic!("{what}: expected an error answer before the stream, got {o:?}"),
        }
    }

    /// Not a clean 200: a 4xx before the answer, or an aborted answer whose
    /// bytes are a prefix of `plain` no longer than `max_released`. True if
    /// aborted.
    fn rejected(self, plain: &[u8], max_released: usize, what: &str) -> bool {
        match self {
            Outcome::Refused(s, v) => {
                assert_client_error(s, &v, what);
                false
            }
            Outcome::Aborted(got, _) => {
                assert!(
                    got.len() <= max_released,
                    "{what}: {} bytes released before the abort, at most {max_released} may be",
                    got.len()
                );
                assert!(plain.starts_with(&got), "{what}: the {} bytes released are not the plaintext's", got.len());
                true
            }
            o => panic!("{what}: expected a 4xx or an aborted answer, got {o:?}"),
        }
    }
}

/// Read an answer: a 200 must be `application/octet-stream`, read to its
/// end (or its abort); anything else is parsed as JSON.
async fn outcome(r: Result<reqwest::Response, reqwest::Error>) -> Outcome {
    let mut resp = match r {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(error_chain(&e)),
    };
    let status = resp.status().as_u16();
    if status != 200 {
        return match resp.text().await {
            Ok(t) => Outcome::Refused(status, serde_json::from_str(&t).unwrap_or(Value::String(t))),
            Err(e) => Outcome::Failed(format!("{status} with an unreadable body: {}", error_chain(&e))),
        };
    }
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap_or("?").to_string());
    assert_eq!(ct.as_deref(), Some("application/octet-stream"), "content type of a stream answer");
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return Outcome::Complete(got),
            Err(e) => return Outcome::Aborted(got, error_chain(&e)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A request body of fixed chunks, sent with `Transfer-Encoding: chunked`.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// `data` as a chunked body, cut at `sizes` (cycled).
fn chunks(data: &[u8], sizes: &[usize]) -> reqwest::Body {
    let mut out = VecDeque::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        out.push_back(Bytes::copy_from_slice(&data[at..at + n]));
        at += n;
        i += 1;
    }
    reqwest::Body::wrap(Chunks(out))
}

type Feed = mpsc::Sender<Result<Bytes, io::Error>>;

/// A request body fed through a channel: it ends when every sender is
/// dropped, and breaks off (the request is aborted) on an `Err`.
struct Channel(mpsc::Receiver<Result<Bytes, io::Error>>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

fn channel_body(depth: usize) -> (Feed, reqwest::Body) {
    let (tx, rx) = mpsc::channel(depth);
    (tx, reqwest::Body::wrap(Channel(rx)))
}

// ---------------------------------------------------------------------------
// Deterministic inputs, generated on the fly
// ---------------------------------------------------------------------------

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const TABLE_LEN: usize = 1 << 20;

/// 1 MiB of pseudo-random bytes, the raw material of every input.
fn table() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| (0..TABLE_LEN / 8).flat_map(|i| splitmix(i as u64).to_le_bytes()).collect())
}

/// Bytes `offset..offset + buf.len()` of input `seed`: the table, rotated by
/// a per-MiB amount (cheap copies even in a debug build), with the block
/// number and seed stamped at the start of every 512-byte block so that no
/// two blocks of any input are alike (a reordering cannot go unnoticed).
fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let t = table();
    let mut done = 0;
    while done < buf.len() {
        let p = offset + done as u64;
        let mib = p >> 20;
        let within = (p & (TABLE_LEN as u64 - 1)) as usize;
        let n = (TABLE_LEN - within).min(buf.len() - done);
        let rot = (splitmix(seed ^ mib.wrapping_mul(0x1000_0000_01B3)) as usize) & (TABLE_LEN - 1);
        let start = (within + rot) & (TABLE_LEN - 1);
        let first = n.min(TABLE_LEN - start);
        buf[done..done + first].copy_from_slice(&t[start..start + first]);
        buf[done + first..done + n].copy_from_slice(&t[..n - first]);
        done += n;
    }
    let end = offset + buf.len() as u64;
    let mut block = offset / 512;
    while block * 512 < end {
        let stamp = (block ^ seed.rotate_left(32)).to_le_bytes();
        for (k, b) in stamp.iter().enumerate() {
            let p = block * 512 + k as u64;
            if p >= offset && p < end {
                buf[(p - offset) as usize] = *b;
            }
        }
        block += 1;
    }
}

/// The first `len` bytes of input `seed`, with the canary in front.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(seed, 0, &mut v);
    let c = CANARY.as_bytes();
    let n = c.len().min(len);
    v[..n].copy_from_slice(&c[..n]);
    v
}

/// Send `len` bytes of input `seed` (no canary) into `tx`, `chunk` at a
/// time, and end the body: the input's SHA-256, or None if the request
/// stopped taking the body.
async fn generate(seed: u64, len: u64, chunk: usize, tx: Feed) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    let mut at = 0u64;
    while at < len {
        let n = chunk.min((len - at) as usize);
        let mut buf = vec![0u8; n];
        fill(seed, at, &mut buf);
        h.update(&buf);
        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
            return None;
        }
        at += n as u64;
    }
    Some(h.finalize().into())
}

// ---------------------------------------------------------------------------
// The format (docs/formats.md "Streaming AEAD"), as the tests read it
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Header {
    len: usize,
    algorithm: u8,
    segment_size: usize,
    key_version: u32,
    name: String,
    wrapped: String,
    /// Every field's byte range.
    regions: Vec<(&'static str, Range<usize>)>,
}

/// Parse the header at the start of `b` (which must hold all of it).
fn parse_header(b: &[u8]) -> Header {
    let mut regions = Vec::new();
    let mut at = 0;
    let mut field = |name: &'static str, n: usize| {
        let r = at..at + n;
        at += n;
        regions.push((name, r.clone()));
        r
    };
    let magic = field("magic", 4);
    assert_eq!(&b[magic], b"VLTS", "magic");
    let version = field("version", 1);
    assert_eq!(b[version.start], 1, "format version");
    let algorithm = b[field("algorithm", 1).start];
    let segment_size = u32::from_be_bytes(b[field("segment_size", 4)].try_into().unwrap()) as usize;
    let key_version = u32::from_be_bytes(b[field("key_version", 4)].try_into().unwrap());
    let name_len = b[field("name_len", 1).start] as usize;
    let name = String::from_utf8(b[field("name", name_len)].to_vec()).unwrap();
    let wrapped_len = u16::from_be_bytes(b[field("wrapped_len", 2)].try_into().unwrap()) as usize;
    let wrapped = String::from_utf8(b[field("wrapped", wrapped_len)].to_vec()).expect("wrapped key is text");
    field("salt", 32);
    field("nonce_prefix", 7);
    field("commitment", 32);
    Header { len: at, algorithm, segment_size, key_version, name, wrapped, regions }
}

/// Segment bytes of a stream of `p` plaintext bytes (header not included).
fn body_len(p: u64, seg: usize) -> u64 {
    p + TAG as u64 * p.div_ceil(seg as u64).max(1)
}

/// The byte ranges of the segments of `stream` (header `h`).
fn segments(stream: &[u8], h: &Header) -> Vec<Range<usize>> {
    let full = h.segment_size + TAG;
    let mut out = Vec::new();
    let mut at = h.len;
    while at < stream.len() {
        let end = (at + full).min(stream.len());
        out.push(at..end);
        at = end;
    }
    out
}

/// Checks common to every stream the server writes.
fn check_stream(stream: &[u8], plain_len: usize, key: &str, algorithm: u8, seg: usize, version: u32) -> Header {
    let h = parse_header(stream);
    assert_eq!(h.name, key, "key name in the header");
    assert_eq!(h.algorithm, algorithm, "algorithm in the header");
    assert_eq!(h.segment_size, seg, "segment size in the header");
    assert_eq!(h.key_version, version, "key version in the header");
    assert!(h.wrapped.starts_with(&format!("vault:v{version}:")), "wrapped key: {}", h.wrapped);
    assert_eq!(
        (stream.len() - h.len) as u64,
        body_len(plain_len as u64, seg),
        "length of the segments of a {plain_len}-byte stream at {seg}-byte segments"
    );
    let c = CANARY.as_bytes();
    assert!(!stream.windows(c.len()).any(|w| w == c), "plaintext in the ciphertext stream");
    h
}

// ---------------------------------------------------------------------------
// Piped round trips: encrypt's answer is decrypt's request body
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Piped {
    len: u64,
    ciphertext_len: u64,
    header: Header,
}

/// Encrypt `len` bytes of input `seed` (sent `chunk` at a time), piping the
/// answer as it arrives into a concurrent decrypt; the decrypted bytes must
/// hash as the input did. Nothing is held beyond a few chunks.
async fn piped(api: &Api, key: &str, enc_q: Query<'_>, dec_q: Query<'_>, seed: u64, len: u64, chunk: usize) -> Piped {
    let what = format!("piped round trip of {len} bytes with {key}");
    let (in_tx, in_body) = channel_body(4);
    let generator = tokio::spawn(generate(seed, len, chunk, in_tx));
    let enc = api.request("encrypt", key, enc_q, in_body).send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(enc.status(), 200, "{what}: encrypt");
    let (mid_tx, mid_body) = channel_body(4);
    // Pass the ciphertext on as it comes, keeping its head for the header.
    let pump = tokio::spawn(async move {
        let mut enc = enc;
        let (mut n, mut head) = (0u64, Vec::new());
        loop {
            match enc.chunk().await {
                Ok(Some(c)) => {
                    if head.len() < 70_000 {
                        head.extend_from_slice(&c[..c.len().min(70_000 - head.len())]);
                    }
                    n += c.len() as u64;
                    if mid_tx.send(Ok(c)).await.is_err() {
                        return Err(format!("decrypt stopped reading after {n} bytes"));
                    }
                }
                Ok(None) => return Ok((n, head)),
                Err(e) => {
                    let _ = mid_tx.send(Err(io::Error::other("encrypt answer broke off"))).await;
                    return Err(format!("encrypt answer broke off after {n} bytes: {}", error_chain(&e)));
                }
            }
        }
    });
    let mut dec = api.request("decrypt", key, dec_q, mid_body).send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(dec.status(), 200, "{what}: decrypt");
    let mut h = Sha256::new();
    let mut out = 0u64;
    loop {
        match dec.chunk().await {
            Ok(Some(c)) => {
                h.update(&c);
                out += c.len() as u64;
            }
            Ok(None) => break,
            Err(e) => panic!("{what}: decrypt answer broke off after {out} bytes: {}", error_chain(&e)),
        }
    }
    let input = generator.await.unwrap().unwrap_or_else(|| panic!("{what}: the encrypt request stopped reading"));
    let (ciphertext_len, head) = pump.await.unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(out, len, "{what}: decrypted length");
    assert_eq!(<[u8; 32]>::from(h.finalize()), input, "{what}: SHA-256 of the output differs from the input's");
    let header = parse_header(&head);
    assert_eq!(ciphertext_len, header.len as u64 + body_len(len, header.segment_size), "{what}: ciphertext length");
    Piped { len, ciphertext_len, header }
}

// ---------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------

/// Encrypt then decrypt `plain` (chunked or not): the stream.
async fn round_trip(api: &Api, key: &str, q: Query<'_>, plain: &[u8], chunked: bool, what: &str) -> Vec<u8> {
    let stream = api.encrypt(key, q, plain, chunked).await;
    let back = api.decrypt(key, q, &stream, !chunked).await.complete(what);
    assert!(back == plain, "{what}: decrypted {} bytes differ from the {} sent", back.len(), plain.len());
    stream
}

fn sizes(seg: usize) -> [usize; 6] {
    [0, 1, seg - 1, seg, seg + 1, 3 * seg + 7]
}

async fn basic_round_trips(v: &Vault) {
    let api = &v.api;
    create_key(&v.rc, "rt", json!({})).await;
    create_key(&v.rc, "rt-chacha", json!({"type": "chacha20-poly1305"})).await;
    let mut n = 0u64;
    for key in ["rt", "rt-chacha"] {
        for (seg, seg_q) in [(SEG_MIN, Some(SEG_MIN)), (SEG_DEFAULT, None)] {
            for (alg, alg_q) in [(1u8, None), (1, Some("aes256-gcm96")), (2, Some("chacha20-poly1305"))] {
                let mut q = Vec::new();
                if let Some(s) = seg_q {
                    q.push(("segment_size", s.to_string()));
                }
                if let Some(a) = alg_q {
                    q.push(("algorithm", a.to_string()));
                }
                for len in sizes(seg) {
                    n += 1;
                    let what = format!("{key}, {len} bytes, segment {seg}, algorithm {alg_q:?}");
                    let plain = pattern(n, len);
                    let stream = round_trip(api, key, &q, &plain, n.is_multiple_of(2), &what).await;
                    check_stream(&stream, len, key, alg, seg, 1);
                }
            }
        }
    }
}

#[tokio::test]
async fn round_trips_sqlite() {
    let v = vault(Backend::Sqlite).await;
    let (api, rc) = (&v.api, &v.rc);
    basic_round_trips(&v).await;

    // Two encryptions of one input differ (fresh data key, salt and prefix).
    let plain = pattern(1000, 5000);
    let q = [("segment_size", SEG_MIN.to_string())];
    let s1 = round_trip(api, "rt", &q, &plain, false, "first").await;
    let s2 = round_trip(api, "rt", &q, &plain, false, "second").await;
    let (h1, h2) = (parse_header(&s1), parse_header(&s2));
    assert_ne!(h1.wrapped, h2.wrapped, "a fresh data key per stream");
    assert_ne!(s1[h1.len - 71..], s2[h2.len - 71..], "fresh salt, prefix and commitment per stream");

    // The wrapped key is an ordinary transit ciphertext of a 32-byte key.
    let (s, r) = rc.post("transit/decrypt/rt", json!({"ciphertext": h1.wrapped})).await;
    assert_eq!(s, 200, "the header's wrapped key decrypts with transit/decrypt: {r}");
    let dk = B64.decode(r["data"]["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(dk.len(), 32, "a 256-bit data key");

    // The largest segment size, and segment sizes that are not powers of two.
    for seg in [1_048_576usize, 5000, 65_537] {
        let q = [("segment_size", seg.to_string())];
        let plain = pattern(seg as u64, 3 * 5000 + 11);
        let stream = round_trip(api, "rt", &q, &plain, true, &format!("segment {seg}")).await;
        check_stream(&stream, plain.len(), "rt", 1, seg, 1);
    }

    // Associated data: needed, and the same, to decrypt. Base64 with '+',
    // '/' and '=' goes through the query string.
    let ad = b64(&[0xfb, 0xff, 0xbf, 0x00, 0x3e]);
    assert!(ad.contains('+') && ad.contains('/') && ad.ends_with('='), "{ad}");
    let other_ad = b64(b"another file id");
    for alg in ["aes256-gcm96", "chacha20-poly1305"] {
        let plain = pattern(2000, 3 * SEG_MIN + 7);
        let q = [("segment_size", SEG_MIN.to_string()), ("algorithm", alg.into()), ("associated_data", ad.clone())];
        let stream = round_trip(api, "rt", &q, &plain, true, &format!("{alg} with associated data")).await;
        for (wrong, wq) in [
            ("other associated data", vec![("associated_data", other_ad.clone())]),
            ("no associated data", vec![]),
            ("empty associated data", vec![("associated_data", String::new())]),
        ] {
            for chunked in [false, true] {
                let o = api.decrypt("rt", &wq, &stream, chunked).await;
                o.rejected(&plain, 0, &format!("{alg}: {wrong}"));
            }
        }
        // And the other way round: none at encryption, some at decryption.
        let stream = api.encrypt("rt", &q[..2], &plain, false).await;
        api.decrypt("rt", &q[2..], &stream, false).await.rejected(&plain, 0, "associated data not used to encrypt");
    }

    // A stream names its key: decrypting it with another is a 400 before
    // the answer (the header says which key; the URL must match).
    let stream = api.encrypt("rt", &[], &pattern(3000, 100), false).await;
    let r = api.decrypt("rt-chacha", &[], &stream, false).await.refused(Some(400), "another key's stream");
    assert!(r.to_string().contains("rt"), "the error names the stream's key: {r}");
    let r = api.decrypt("missing", &[], &stream, false).await.refused(Some(400), "a key that does not exist");
    assert!(!r.to_string().contains(CANARY), "{r}");

    // Derived keys: the context is needed, and the same.
    create_key(rc, "drv", json!({"derived": true})).await;
    let plain = pattern(4000, 10_000);
    let ctx = [("context", b64(b"tenant-1"))];
    round_trip(api, "drv", &ctx, &plain, true, "derived key").await;
    let stream = api.encrypt("drv", &ctx, &plain, false).await;
    api.decrypt("drv", &[("context", b64(b"tenant-2"))], &stream, false).await.refused(Some(400), "another context");
    api.decrypt("drv", &[], &stream, false).await.refused(Some(400), "no context");
    api.call("encrypt", "drv", &[], plain.clone()).await.refused(Some(400), "a derived key without context");

    // key_version: the header carries the version that wrapped the key.
    create_key(rc, "ver", json!({})).await;
    rotate(rc, "ver").await;
    let plain = pattern(5000, 9000);
    let old = round_trip(api, "ver", &[("key_version", "1".into())], &plain, false, "key_version 1").await;
    check_stream(&old, plain.len(), "ver", 1, SEG_DEFAULT, 1);
    let new = round_trip(api, "ver", &[], &plain, false, "latest version").await;
    check_stream(&new, plain.len(), "ver", 1, SEG_DEFAULT, 2);
    api.call("encrypt", "ver", &[("key_version", "3".into())], plain.clone())
        .await
        .refused(Some(400), "key_version above the latest");

    // Subjects: the stream names only the subject's id; decrypt finds it.
    create_key(rc, "pii", json!({})).await;
    let plain = pattern(6000, 2 * SEG_MIN + 5);
    let sq = [("subject", ALICE.to_string()), ("segment_size", SEG_MIN.to_string())];
    let stream = round_trip(api, "pii", &sq, &plain, true, "subject").await;
    let h = check_stream(&stream, plain.len(), "pii", 1, SEG_MIN, 1);
    assert!(h.wrapped.starts_with("vault:v1:s1."), "a subject's wrapped key: {}", h.wrapped);
    for part in [ALICE, "alice"] {
        assert!(!stream.windows(part.len()).any(|w| w == part.as_bytes()), "the subject's name in the stream");
    }
    assert!(api.decrypt("pii", &[], &stream, false).await.complete("no subject given") == plain);
    api.decrypt("pii", &[("subject", "bob".into())], &stream, false).await.refused(Some(400), "another subject");
    let (s, r) = rc.delete(&format!("transit/subjects/pii/{ALICE}")).await;
    assert_eq!(s, 204, "destroy the subject: {r}");
    api.decrypt("pii", &sq, &stream, false).await.refused(Some(400), "a destroyed subject");

    // Bad parameters and bodies: a 400 before any answer.
    let plain = pattern(7000, 100);
    for (what, q) in [
        ("segment_size below 4096", vec![("segment_size", "4095".to_string())]),
        ("segment_size above 16 MiB", vec![("segment_size", "16777217".to_string())]),
        ("segment_size above the server's 1 MiB", vec![("segment_size", "1048577".to_string())]),
        ("segment_size 0", vec![("segment_size", "0".to_string())]),
        ("segment_size not a number", vec![("segment_size", "big".to_string())]),
        ("unknown algorithm", vec![("algorithm", "aes128-gcm96".to_string())]),
        ("associated_data not base64", vec![("associated_data", "%%%".to_string())]),
        ("context not base64", vec![("context", "not base64!".to_string())]),
    ] {
        api.call("encrypt", "rt", &q, plain.clone()).await.refused(Some(400), what);
    }
    api.call("encrypt", "missing", &[], plain.clone()).await.refused(Some(400), "encrypt with no such key");
    create_key(rc, "signing", json!({"type": "ed25519"})).await;
    api.call("encrypt", "signing", &[], plain.clone()).await.refused(None, "a signing key");
    api.call("decrypt", "rt", &[], plain.clone()).await.refused(Some(400), "not a stream");
    api.call("decrypt", "rt", &[], Vec::new()).await.refused(Some(400), "an empty body");

    assert_log_clean(&v.srv, &[CANARY.as_bytes(), ALICE.as_bytes()]);
}

#[tokio::test]
async fn round_trips_postgres() {
    let v = vault(Backend::Postgres).await;
    basic_round_trips(&v).await;
    let p = piped(&v.api, "rt", &[], &[], 77, 8 << 20, 100_003).await;
    assert_eq!(p.header.segment_size, SEG_DEFAULT);
    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 2. A large stream, piped, in bounded server memory
// ---------------------------------------------------------------------------

/// Resident set (VmRSS) and its peak (VmHWM) of process `pid`, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MIB: u64 = 1 << 20;

/// Until streams stop counting as idle connections (see
/// `slow_streams_outlive_listener_timeouts`), a stream over HTTP/1.1 is cut
/// `http_read_header_timeout` (10 s) after its answer starts; 1 GiB takes
/// longer than that in a debug build, so this test gives it 10 minutes.
const LONG_HEAD_TIMEOUT: &str = "[listener]\nhttp_read_header_timeout = \"600s\"\n";

#[tokio::test]
async fn large_stream_piped_in_bounded_memory() {
    let v = vault_with(Backend::Sqlite, LONG_HEAD_TIMEOUT).await;
    create_key(&v.rc, "big", json!({})).await;
    // Warm up (allocator arenas, connection buffers) before the baseline.
    piped(&v.api, "big", &[], &[], 1, 4 * MIB, 65_536).await;
    let (rss_before, hwm_before) = memory_of(v.srv.pid());

    let len = 1024 * MIB;
    let started = Instant::now();
    let api = v.api.clone();
    let run = tokio::spawn(async move { piped(&api, "big", &[], &[], 42, len, 256 * 1024).await }).await;
    let took = started.elapsed();
    let p = run.unwrap_or_else(|e| {
        let log = v.srv.log_text();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("after {:.1} s; server log (last lines first):\n{}", took.as_secs_f64(), tail.join("\n"));
        std::panic::resume_unwind(e.into_panic())
    });
    let (rss_after, hwm_after) = memory_of(v.srv.pid());
    let growth = hwm_after.saturating_sub(rss_before);
    eprintln!(
        "{} MiB piped through encrypt and decrypt in {:.1} s ({:.0} MiB/s); ciphertext {} bytes; server RSS \
         {} MiB before, {} MiB after, peak {} MiB (peak before {} MiB): growth {} MiB",
        p.len / MIB,
        took.as_secs_f64(),
        (p.len / MIB) as f64 / took.as_secs_f64(),
        p.ciphertext_len,
        rss_before / MIB,
        rss_after / MIB,
        hwm_after / MIB,
        hwm_before / MIB,
        growth / MIB
    );
    assert_eq!(p.header.segment_size, SEG_DEFAULT);
    assert!(growth < 256 * MIB, "server memory grew by {} MiB for one 1 GiB stream", growth / MIB);
    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 2b. Streams longer than the listener's header and idle timeouts
// ---------------------------------------------------------------------------

/// Listener timeouts made short (2 s for a request head, 3 s idle) so that
/// a stream outliving them takes seconds, not minutes.
const SHORT_TIMEOUTS: &str = "[listener]\nhttp_read_header_timeout = \"2s\"\nhttp_idle_timeout = \"3s\"\n";

/// Encrypt `chunks` chunks of `chunk` bytes of input `seed`, one every
/// `every`: the answer.
async fn trickle(api: &Api, key: &str, q: Query<'_>, seed: u64, chunk: usize, n: u64, every: Duration) -> Outcome {
    let (tx, body) = channel_body(2);
    let feed = tokio::spawn(async move {
        for i in 0..n {
            let mut buf = vec![0u8; chunk];
            fill(seed, i * chunk as u64, &mut buf);
            if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let o = outcome(api.request("encrypt", key, q, body).send().await).await;
    feed.abort();
    o
}

/// Decrypt `stream`, reading the answer at about `rate` bytes a second:
/// the answer.
async fn slow_reader(api: &Api, key: &str, stream: Vec<u8>, rate: f64) -> Outcome {
    let mut resp = match api.request("decrypt", key, &[], stream.into()).send().await {
        Ok(r) if r.status() == 200 => r,
        r => return outcome(r).await,
    };
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return Outcome::Complete(got),
            Err(e) => return Outcome::Aborted(got, error_chain(&e)),
        }
        let due = Duration::from_secs_f64(got.len() as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

async fn timed(f: impl std::future::Future<Output = Outcome>, started: Instant) -> (Outcome, Duration) {
    let o = f.await;
    (o, started.elapsed())
}

/// A stream is one request for as long as it flows: neither the deadline
/// for reading a request head nor the idle deadline of the connection may
/// cut it. Three streams of about 6 s against 2 s/3 s timeouts: an upload
/// trickling over HTTP/1.1, the same over HTTP/2, and a decrypt whose
/// client reads slowly (so the server reads the upload slowly too).
#[tokio::test]
async fn slow_streams_outlive_listener_timeouts() {
    let v = vault_with(Backend::Sqlite, SHORT_TIMEOUTS).await;
    create_key(&v.rc, "slow", json!({})).await;
    let q = [("segment_size", SEG_MIN.to_string())];
    let (chunk, n, every) = (SEG_MIN, 24u64, Duration::from_millis(250));
    let mut plain = vec![0u8; chunk * n as usize];
    fill(5, 0, &mut plain);
    let big = pattern(6, 36 << 20);
    let big_stream = v.api.encrypt("slow", &[], &big, false).await;
    let mut h2 = v.api.clone();
    h2.http = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();

    let started = Instant::now();
    let (h1_up, h2_up, down) = tokio::join!(
        timed(trickle(&v.api, "slow", &q, 5, chunk, n, every), started),
        timed(trickle(&h2, "slow", &q, 5, chunk, n, every), started),
        timed(slow_reader(&v.api, "slow", big_stream, 6.0 * MIB as f64), started),
    );
    let mut failures = Vec::new();
    for (what, (o, took)) in [("HTTP/1.1 upload", &h1_up), ("HTTP/2 upload", &h2_up), ("slow reader", &down)] {
        eprintln!("{what}: {o:?} after {:.1} s", took.as_secs_f64());
        if !matches!(o, Outcome::Complete(_)) {
            failures.push(format!("{what} cut after {:.1} s: {o:?}", took.as_secs_f64()));
        }
    }
    assert!(
        failures.is_empty(),
        "streams still flowing were cut (listener: 2 s header, 3 s idle timeouts):\n{}",
        failures.join("\n")
    );
    for (what, o) in [("HTTP/1.1", h1_up.0), ("HTTP/2", h2_up.0)] {
        let stream = o.complete(what);
        check_stream(&stream, plain.len(), "slow", 1, SEG_MIN, 1);
        assert!(v.api.decrypt("slow", &[], &stream, true).await.complete(what) == plain, "{what}");
    }
    assert!(down.0.complete("slow reader") == big, "slow reader: other bytes");
    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 3. Tampering
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tampered_streams_never_complete() {
    let v = vault(Backend::Sqlite).await;
    let (api, rc) = (&v.api, &v.rc);
    create_key(rc, "t", json!({})).await;
    let seg = SEG_MIN;
    let ad = b64(b"file-17");
    let q = [("segment_size", seg.to_string()), ("associated_data", ad.clone())];
    let dq = [("associated_data", ad)];
    let plain = pattern(17, 4 * seg + 1234);
    let stream = api.encrypt("t", &q, &plain, true).await;
    let h = check_stream(&stream, plain.len(), "t", 1, seg, 1);
    let segs = segments(&stream, &h);
    assert_eq!(segs.len(), 5, "{segs:?}");
    // The stream as sent decrypts (so every failure below is the change's).
    assert!(api.decrypt("t", &dq, &stream, false).await.complete("untouched stream") == plain);

    let (mut refused, mut aborted) = (0, 0);
    let mut tally = |was_aborted: bool| {
        if was_aborted {
            aborted += 1;
        } else {
            refused += 1;
        }
    };

    // Truncation: at every header byte, at every segment boundary, and
    // inside every segment and tag. A stream cut after k whole segments may
    // release at most k - 1 of them (the last whole one could be the final
    // one and is held back); one cut inside segment k at most k.
    for cut in 0..=h.len {
        let o = api.decrypt("t", &dq, &stream[..cut], false).await;
        tally(o.rejected(&plain, 0, &format!("cut at header byte {cut}")));
    }
    for (k, r) in segs.iter().enumerate() {
        if k > 0 {
            let o = api.decrypt("t", &dq, &stream[..r.start], k % 2 == 0).await;
            tally(o.rejected(&plain, (k - 1) * seg, &format!("cut after {k} segments")));
        }
        let n = r.len();
        for inside in [1, n / 2, n - TAG, n - TAG + 1, n - 1] {
            let cut = r.start + inside;
            let o = api.decrypt("t", &dq, &stream[..cut], inside % 2 == 0).await;
            tally(o.rejected(&plain, k * seg, &format!("cut {inside} bytes into segment {k}")));
        }
    }

    // One flipped bit in every header byte (magic, version, algorithm,
    // segment_size, key_version, name_len, name, wrapped_len, wrapped key,
    // salt, nonce prefix, commitment): nothing released.
    for (region, r) in &h.regions {
        for i in r.clone() {
            let mut t = stream.clone();
            t[i] ^= 1 << (i % 8);
            let o = api.decrypt("t", &dq, &t, false).await;
            tally(o.rejected(&plain, 0, &format!("bit {} of header byte {i} ({region})", i % 8)));
        }
    }
    // One flipped bit in each segment's body (first, middle, last byte) and
    // tag (first, last byte): segments before it may be released, not it.
    for (k, r) in segs.iter().enumerate() {
        let n = r.len();
        let places = [(0, "body start"), ((n - TAG) / 2, "body middle"), (n - TAG - 1, "body end")];
        let tags = [(n - TAG, "tag start"), (n - 1, "tag end")];
        for (off, part) in places.into_iter().filter(|_| n > TAG).chain(tags) {
            let mut t = stream.clone();
            t[r.start + off] ^= 0x80;
            let o = api.decrypt("t", &dq, &t, k % 2 == 1).await;
            tally(o.rejected(&plain, k * seg, &format!("flipped bit in segment {k} ({part})")));
        }
    }

    // Segments rearranged.
    let header = &stream[..h.len];
    let seg_bytes = |k: usize| &stream[segs[k].clone()];
    let assemble = |order: &[usize]| -> Vec<u8> {
        let mut out = header.to_vec();
        for &k in order {
            out.extend_from_slice(seg_bytes(k));
        }
        out
    };
    for (what, order, max) in [
        ("segments 1 and 2 swapped", vec![0, 2, 1, 3, 4], seg),
        ("segments 0 and 1 swapped", vec![1, 0, 2, 3, 4], 0),
        ("segment 1 duplicated", vec![0, 1, 1, 2, 3, 4], 2 * seg),
        ("segment 2 dropped", vec![0, 1, 3, 4], 2 * seg),
        ("the last segment appended again", vec![0, 1, 2, 3, 4, 4], 4 * seg),
        ("segment 3 appended after the last", vec![0, 1, 2, 3, 4, 3], 4 * seg),
        ("the last segment dropped", vec![0, 1, 2, 3], 3 * seg),
        ("the last segment moved to the front", vec![4, 0, 1, 2, 3], 0),
    ] {
        let o = api.decrypt("t", &dq, &assemble(&order), false).await;
        tally(o.rejected(&plain, max, what));
    }
    // Bytes after the final segment.
    let mut t = stream.clone();
    t.push(0);
    tally(api.decrypt("t", &dq, &t, false).await.rejected(&plain, 4 * seg, "one byte after the final segment"));
    let mut t = stream.clone();
    t.extend_from_slice(&[0u8; TAG]);
    tally(api.decrypt("t", &dq, &t, true).await.rejected(&plain, 4 * seg, "an empty segment after the final one"));

    // Another stream of the same key and length: its header on these
    // segments, and these segments' header on its.
    let other_plain = pattern(18, plain.len());
    let other = api.encrypt("t", &q, &other_plain, false).await;
    let oh = parse_header(&other);
    let mut spliced = other[..oh.len].to_vec();
    spliced.extend_from_slice(&stream[h.len..]);
    tally(api.decrypt("t", &dq, &spliced, false).await.rejected(&plain, 0, "another stream's header"));
    let mut spliced = stream[..h.len].to_vec();
    spliced.extend_from_slice(&other[oh.len..]);
    tally(api.decrypt("t", &dq, &spliced, false).await.rejected(&plain, 0, "another stream's segments"));
    // One segment from the other stream, in place.
    let mut mixed = stream.clone();
    mixed[segs[2].clone()].copy_from_slice(&other[segs[2].start - h.len + oh.len..segs[2].end - h.len + oh.len]);
    tally(api.decrypt("t", &dq, &mixed, false).await.rejected(&plain, 2 * seg, "a segment of another stream"));

    // A key version below min_decryption_version: a 400 before the answer.
    rotate(rc, "t").await;
    let newer = api.encrypt("t", &q, &plain, false).await;
    check_stream(&newer, plain.len(), "t", 1, seg, 2);
    let (s, r) = rc.post("transit/keys/t/config", json!({"min_decryption_version": 2})).await;
    assert_eq!(s, 200, "{r}");
    api.decrypt("t", &dq, &stream, false)
        .await
        .refused(Some(400), "a stream of a version below min_decryption_version");
    let (s, r) = rc.post("transit/keys/t/config", json!({"min_encryption_version": 2})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = rc.post("transit/keys/t/trim", json!({"min_available_version": 2})).await;
    assert_eq!(s, 200, "trim: {r}");
    api.decrypt("t", &dq, &stream, false).await.refused(Some(400), "a stream of a trimmed version");
    assert!(api.decrypt("t", &dq, &newer, false).await.complete("the newer stream") == plain);

    eprintln!("tampering: {refused} refused before the answer, {aborted} aborted answers");
    assert!(refused > 0 && aborted > 0, "both kinds of failure are exercised");
    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 4. Policy: refused before the body is read
// ---------------------------------------------------------------------------

/// Send only the head of a chunked POST (no body byte, not even the end
/// chunk) and wait `wait` for an answer: its status and JSON body, or None.
async fn head_only(addr: SocketAddr, path: &str, token: Option<&str>, wait: Duration) -> Option<(u16, Value)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST /v1/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(t) = token {
        head.push_str(&format!("X-Vault-Token: {t}\r\n"));
    }
    head.push_str("Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let read = async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed with {} bytes of answer", raw.len());
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let body = &raw[end + 4..];
            let len = head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()));
            let done = match len {
                Some(len) => body.len() >= len,
                None => body.ends_with(b"0\r\n\r\n"),
            };
            if !done {
                continue;
            }
            let text = if len.is_some() {
                String::from_utf8_lossy(body).into_owned()
            } else {
                // One chunk is all an error answer takes.
                let text = String::from_utf8_lossy(body).into_owned();
                text.split("\r\n").nth(1).unwrap_or_default().to_string()
            };
            return (status, serde_json::from_str(&text).unwrap_or(Value::String(text)));
        }
    };
    let answer = tokio::time::timeout(wait, read).await.ok();
    drop(s);
    answer
}

#[tokio::test]
async fn policy_refuses_before_reading_the_body() {
    let v = vault(Backend::Sqlite).await;
    let (api, rc) = (&v.api, &v.rc);
    create_key(rc, "k", json!({})).await;
    create_key(rc, "k2", json!({})).await;
    let plain = pattern(40, 10_000);
    let stream = api.encrypt("k", &[], &plain, false).await;
    let addr = v.srv.addr;
    let wait = Duration::from_secs(10);

    let plain_transit = token_with(
        rc,
        "plain-transit",
        r#"path "transit/encrypt/*" { capabilities = ["update"] }
           path "transit/decrypt/*" { capabilities = ["update"] }"#,
    )
    .await;
    let read_only =
        token_with(rc, "stream-read", r#"path "transit/stream/*" { capabilities = ["read", "list"] }"#).await;
    let enc_k = token_with(rc, "enc-k", r#"path "transit/stream/encrypt/k" { capabilities = ["update"] }"#).await;
    let all = token_with(rc, "stream-all", r#"path "transit/stream/*" { capabilities = ["update"] }"#).await;

    // 403 with no body byte sent: the server decided before reading any.
    for (who, token, path) in [
        ("transit but not stream paths", Some(&plain_transit), "transit/stream/encrypt/k"),
        ("transit but not stream paths", Some(&plain_transit), "transit/stream/decrypt/k"),
        ("read on stream paths", Some(&read_only), "transit/stream/encrypt/k"),
        ("read on stream paths", Some(&read_only), "transit/stream/decrypt/k"),
        ("encrypt on k only", Some(&enc_k), "transit/stream/decrypt/k"),
        ("encrypt on k only", Some(&enc_k), "transit/stream/encrypt/k2"),
        ("no token", None, "transit/stream/encrypt/k"),
        ("a made-up token", Some(&"hvs.not-a-token".to_string()), "transit/stream/decrypt/k"),
    ] {
        let started = Instant::now();
        let (s, r) = head_only(addr, path, token.map(String::as_str), wait)
            .await
            .unwrap_or_else(|| panic!("{who} on {path}: no answer without a body"));
        assert_eq!(s, 403, "{who} on {path}: {r}");
        assert_client_error(s, &r, &format!("{who} on {path}"));
        assert!(started.elapsed() < Duration::from_secs(5), "{who} on {path}: answered late");
    }
    // The control: an allowed decrypt does wait for the stream's header
    // (no answer without a body)...
    assert!(
        head_only(addr, "transit/stream/decrypt/k", Some(&all), Duration::from_secs(1)).await.is_none(),
        "an allowed decrypt answered before any byte of the stream"
    );

    // ... and through reqwest the allowed tokens work, the others don't.
    let enc = api.with_token(&enc_k);
    let s2 = enc.encrypt("k", &[], &plain, true).await;
    enc.decrypt("k", &[], &s2, false).await.refused(Some(403), "enc-k decrypting");
    let all_api = api.with_token(&all);
    assert!(all_api.decrypt("k", &[], &s2, true).await.complete("stream-all decrypting") == plain);
    assert!(all_api.decrypt("k", &[], &stream, false).await.complete("stream-all decrypting") == plain);
    round_trip(&all_api, "k2", &[], &plain, true, "stream-all on k2").await;
    for t in [&plain_transit, &read_only] {
        api.with_token(t).call("encrypt", "k", &[], plain.clone()).await.refused(Some(403), "no stream policy");
    }

    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 5. Limits: stream_max_bytes and stream_max_concurrent
// ---------------------------------------------------------------------------

/// Start an encrypt whose body does not end yet (one chunk sent): the
/// feed, and the answer (its head already received).
async fn held_stream(api: &Api, seed: u64) -> (Feed, reqwest::Response) {
    let (tx, body) = channel_body(4);
    tx.send(Ok(Bytes::from(pattern(seed, 10_000)))).await.unwrap();
    let resp = api.request("encrypt", "lim", &[], body).send().await.unwrap();
    (tx, resp)
}

#[tokio::test]
async fn limits_on_size_and_concurrency() {
    let v = vault_with(Backend::Sqlite, "[transit]\nstream_max_bytes = 100000\nstream_max_concurrent = 2\n").await;
    let (api, rc) = (&v.api, &v.rc);
    create_key(rc, "lim", json!({})).await;

    // Size: declared too large, a 413 before the answer.
    let big = pattern(50, 200_000);
    let r = api.call("encrypt", "lim", &[], big.clone()).await.refused(Some(413), "200000 bytes with a length");
    assert!(r.to_string().contains("100000"), "the error names the limit: {r}");
    // Chunked, the limit is found mid-stream: never a complete answer (the
    // answer may break off before its head is out: no answer at all).
    match api.call("encrypt", "lim", &[], chunks(&big, &[10_000])).await {
        Outcome::Refused(s, r) => assert_eq!(s, 413, "{r}"),
        Outcome::Aborted(got, _) => assert!(got.len() < 200_000, "{} bytes of a 200000-byte stream", got.len()),
        Outcome::Failed(e) => eprintln!("over the limit mid-stream: no answer ({e})"),
        Outcome::Complete(got) => panic!("200000 bytes over a 100000-byte limit: a complete answer of {}", got.len()),
    }
    // At the limit: accepted.
    let exact = pattern(51, 100_000);
    let stream = api.encrypt("lim", &[], &exact, true).await;
    // Its ciphertext is over the limit, so decrypting it is refused too.
    assert!(stream.len() > 100_000);
    api.decrypt("lim", &[], &stream, false).await.refused(Some(413), "a 100000-byte stream's ciphertext");
    match api.decrypt("lim", &[], &stream, true).await {
        Outcome::Refused(s, r) => assert_eq!(s, 413, "{r}"),
        o => {
            o.rejected(&exact, exact.len() - 1, "decrypting an over-limit ciphertext, chunked");
        }
    }
    let half = pattern(52, 50_000);
    let half_stream = round_trip(api, "lim", &[], &half, true, "under the limit").await;

    // Concurrency: two streams held open take both slots (finished and
    // failed streams above gave theirs back: retried briefly, as a slot is
    // freed just after its answer ends).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut held, mut busy) = (Vec::new(), 0);
    while held.len() < 2 {
        let (tx, resp) = held_stream(api, 60 + held.len() as u64).await;
        if resp.status() == 200 {
            held.push((tx, resp));
        } else {
            assert_eq!(resp.status(), 503, "holding a stream");
            busy += 1;
            assert!(Instant::now() < deadline, "slots not freed by the earlier streams");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("slots: {busy} retries before two streams were held");
    // A third of either kind: 503 in Vault's error shape, before any body.
    api.call("encrypt", "lim", &[], half.clone()).await.refused(Some(503), "a third stream");
    api.call("decrypt", "lim", &[], half_stream.clone()).await.refused(Some(503), "a third stream (decrypt)");
    let (s, r) = head_only(v.srv.addr, "transit/stream/encrypt/lim", Some(&v.root), Duration::from_secs(10))
        .await
        .expect("a 503 without a body");
    assert_eq!(s, 503, "{r}");

    // One finishes normally, the other's client gives up mid-body.
    let (tx1, resp1) = held.remove(0);
    let (tx2, resp2) = held.remove(0);
    tx1.send(Ok(Bytes::from(pattern(70, 5000)))).await.unwrap();
    drop(tx1);
    let done = outcome(Ok(resp1)).await.complete("a held stream, finished");
    check_stream(&done, 15_000, "lim", 1, SEG_DEFAULT, 1);
    let _ = tx2.send(Err(io::Error::other("client gives up"))).await;
    drop(tx2);
    match outcome(Ok(resp2)).await {
        Outcome::Complete(b) => panic!("an abandoned upload got a complete answer ({} bytes)", b.len()),
        o => eprintln!("abandoned upload: {o:?}"),
    }
    // Both slots come back: a piped round trip needs two at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (tx_a, resp_a) = held_stream(api, 80).await;
        let (tx_b, resp_b) = held_stream(api, 81).await;
        if resp_a.status() == 200 && resp_b.status() == 200 {
            drop((tx_a, tx_b));
            let a = outcome(Ok(resp_a)).await.complete("after the slots came back (a)");
            let b = outcome(Ok(resp_b)).await.complete("after the slots came back (b)");
            assert!(api.decrypt("lim", &[], &a, false).await.complete("a") == pattern(80, 10_000));
            assert!(api.decrypt("lim", &[], &b, true).await.complete("b") == pattern(81, 10_000));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slots of the finished and abandoned streams were not given back ({} and {})",
            resp_a.status(),
            resp_b.status()
        );
        drop((tx_a, tx_b, resp_a, resp_b));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = piped(api, "lim", &[], &[], 90, 60_000, 7_000).await;
    assert_eq!(p.len, 60_000);

    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 6. Concurrent streams
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_streams() {
    let v = vault(Backend::Sqlite).await;
    create_key(&v.rc, "c", json!({})).await;
    create_key(&v.rc, "c2", json!({"type": "chacha20-poly1305"})).await;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16u64 {
        let api = v.api.clone();
        set.spawn(async move {
            let key = if i % 2 == 0 { "c" } else { "c2" };
            let mut q = vec![];
            if i % 3 == 0 {
                q.push(("segment_size", SEG_MIN.to_string()));
            }
            if i % 4 < 2 {
                q.push(("algorithm", "chacha20-poly1305".to_string()));
            }
            let ad = [("associated_data", b64(&i.to_be_bytes()))];
            q.extend_from_slice(&ad);
            piped(&api, key, &q, &ad, 1000 + i, 4 * MIB + i * 1001, 50_000 + i as usize * 777).await
        });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, 16);
    eprintln!("16 concurrent 4 MiB streams (encrypt piped into decrypt) in {:.1} s", started.elapsed().as_secs_f64());
    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// 7. Sealing aborts the streams in progress
// ---------------------------------------------------------------------------

/// Read from `resp` until at least `n` bytes arrived (or it ended).
async fn read_at_least(resp: &mut reqwest::Response, n: usize, into: &mut Vec<u8>) {
    while into.len() < n {
        let c = tokio::time::timeout(Duration::from_secs(20), resp.chunk()).await.expect("answer stalled");
        match c.unwrap() {
            Some(c) => into.extend_from_slice(&c),
            None => panic!("the answer ended after {} bytes", into.len()),
        }
    }
}

/// Read the rest of `resp`: Ok(all) if it ended properly, Err(partial) if it broke off.
async fn read_rest(mut resp: reqwest::Response, mut got: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), resp.chunk()).await.expect("answer stalled") {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return Ok(got),
            Err(_) => return Err(got),
        }
    }
}

#[tokio::test]
async fn seal_aborts_streams_in_progress() {
    let Vault { srv, rc, keys, api, _store, .. } = vault(Backend::Sqlite).await;
    create_key(&rc, "s", json!({})).await;
    let seg = SEG_MIN;
    let q = [("segment_size", seg.to_string())];
    let plain = pattern(99, 64 * seg);
    let stream = api.encrypt("s", &q, &plain, false).await;

    // An encrypt and a decrypt in progress: output flowing, input not done.
    let (etx, ebody) = channel_body(4);
    for i in 0..4u64 {
        etx.send(Ok(Bytes::from(pattern(100 + i, 3 * seg)))).await.unwrap();
    }
    let mut enc = api.request("encrypt", "s", &q, ebody).send().await.unwrap();
    assert_eq!(enc.status(), 200);
    let mut enc_got = Vec::new();
    read_at_least(&mut enc, 2 * seg, &mut enc_got).await;

    let (dtx, dbody) = channel_body(4);
    let half = stream.len() / 2;
    dtx.send(Ok(Bytes::copy_from_slice(&stream[..half]))).await.unwrap();
    let mut dec = api.request("decrypt", "s", &[], dbody).send().await.unwrap();
    assert_eq!(dec.status(), 200);
    let mut dec_got = Vec::new();
    read_at_least(&mut dec, 4 * seg, &mut dec_got).await;

    let (s, r) = rc.put("sys/seal", json!({})).await;
    assert_eq!(s, 204, "seal: {r}");

    // The clients go on sending everything and end their bodies normally.
    let feed = tokio::spawn(async move {
        for i in 0..4u64 {
            if etx.send(Ok(Bytes::from(pattern(200 + i, 3 * seg)))).await.is_err() {
                break;
            }
        }
        drop(etx);
        let rest = Bytes::copy_from_slice(&stream[half..]);
        let _ = dtx.send(Ok(rest)).await;
        drop(dtx);
    });
    let enc_end = read_rest(enc, enc_got).await;
    assert!(enc_end.is_err(), "an encrypt in progress completed normally across a seal");
    match read_rest(dec, dec_got).await {
        Ok(all) => panic!("a decrypt in progress completed normally across a seal ({} bytes)", all.len()),
        Err(got) => {
            assert!(got.len() < plain.len() && plain.starts_with(&got), "decrypt released other bytes than a prefix")
        }
    }
    feed.await.unwrap();

    // Sealed: new streams get a 503; after unsealing they work again.
    let o = api.call("encrypt", "s", &q, plain.clone()).await;
    let Outcome::Refused(503, _) = o else { panic!("a stream while sealed: {o:?}") };
    rc.unseal(&keys).await;
    round_trip(&api, "s", &q, &plain[..5 * seg + 3], true, "after unsealing").await;

    assert_log_clean(&srv, &[CANARY.as_bytes()]);
}

/// Start an encrypt on key `key` (4 KiB segments) whose body goes on: the
/// feed, the answer, and what was read of it (a first segment).
async fn stream_in_progress(api: &Api, key: &str, seed: u64) -> (Feed, reqwest::Response, Vec<u8>) {
    let (tx, body) = channel_body(4);
    tx.send(Ok(Bytes::from(pattern(seed, 3 * SEG_MIN)))).await.unwrap();
    let q = [("segment_size", SEG_MIN.to_string())];
    let mut resp = api.request("encrypt", key, &q, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    read_at_least(&mut resp, SEG_MIN, &mut got).await;
    (tx, resp, got)
}

/// Finish a stream from [`stream_in_progress`]: true if it completed.
async fn finish_stream(tx: Feed, resp: reqwest::Response, got: Vec<u8>, seed: u64) -> bool {
    let _ = tx.send(Ok(Bytes::from(pattern(seed + 1, 3 * SEG_MIN)))).await;
    drop(tx);
    read_rest(resp, got).await.is_ok()
}

/// Only a seal or the mount going away stops the streams in progress
/// (stream.rs, `Task::closed`): changes to other mounts, to policies, and a
/// tune of the transit mount itself (a TTL) leave them going.
#[tokio::test]
async fn mount_changes_keep_streams_going() {
    let v = vault(Backend::Sqlite).await;
    let (api, rc) = (&v.api, &v.rc);
    create_key(rc, "m", json!({})).await;
    let changes: [(&str, &str, Value); 5] = [
        ("mount another engine", "sys/mounts/other", json!({"type": "kv"})),
        ("enable an auth method", "sys/auth/userpass", json!({"type": "userpass"})),
        ("write a policy", "sys/policies/acl/p", json!({"policy": "path \"a\" { capabilities = [\"read\"] }"})),
        ("tune another mount", "sys/mounts/secret/tune", json!({"default_lease_ttl": "1h"})),
        ("tune the transit mount", "sys/mounts/transit/tune", json!({"default_lease_ttl": "1h"})),
    ];
    let mut cut = Vec::new();
    for (i, (what, path, body)) in changes.into_iter().enumerate() {
        let seed = 300 + 2 * i as u64;
        let (tx, resp, got) = stream_in_progress(api, "m", seed).await;
        let (s, r) = rc.post(path, body).await;
        assert!(s == 200 || s == 204, "{what}: {s} {r}");
        if !finish_stream(tx, resp, got, seed).await {
            cut.push(what);
        }
    }
    let (s, r) = rc.delete("sys/mounts/other").await;
    assert_eq!(s, 204, "{r}");
    assert!(cut.is_empty(), "streams in progress were aborted by: {cut:?}");
    assert_log_clean(&v.srv, &[CANARY.as_bytes()]);
}

// ---------------------------------------------------------------------------
// Regressions from the red team of the stream endpoints
// ---------------------------------------------------------------------------

/// An HTTP/2 peer that never opens its receive window cannot hold a
/// connection (nor the stream slots of its requests) past the idle timeout:
/// an answer being sent is held to progress.
#[tokio::test]
async fn a_stalled_http2_reader_is_cut_after_the_idle_timeout() {
    // Long enough that the slots are still held when checked on a loaded
    // machine; the connection must still go well before the 40 s below.
    let cfg = "[transit]\nstream_max_concurrent = 2\n[listener]\nhttp_idle_timeout = \"8s\"\n";
    let v = vault_with(Backend::Sqlite, cfg).await;
    create_key(&v.rc, "h2", json!({})).await;
    let tcp = tokio::net::TcpStream::connect(v.srv.url().trim_start_matches("http://")).await.unwrap();
    let (mut send, conn) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let req = http::Request::post(format!("{}/v1/transit/stream/encrypt/h2", v.srv.url()))
            .header("x-vault-token", &v.root)
            .body(())
            .unwrap();
        let (answer, mut body) = send.send_request(req, false).unwrap();
        body.send_data(bytes::Bytes::from(pattern(9, 200_000)), true).unwrap();
        answers.push(answer);
        send = send.ready().await.unwrap();
    }
    for a in answers {
        assert_eq!(a.await.unwrap().status(), 200);
    }
    // Whether the answers still hold their slots now depends on how much of
    // them hyper has taken into its own buffers; what must hold is that the
    // connection does not outlive the idle timeout (before the fix it was
    // never closed: connections, and slots, held for good).
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(40), conn).await;
    assert!(closed.is_ok(), "a connection whose answers never moved was still open after 40 s");
    eprintln!("stalled HTTP/2 connection closed after {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let plain = pattern(2, 5000);
    round_trip(&v.api, "h2", &[], &plain, false, "after the stalled connection").await;
}

/// Over HTTP/1.0 an aborted answer would end like a complete one (the
/// connection closes either way): streams refuse HTTP/1.0.
#[tokio::test]
async fn streams_refuse_http_1_0() {
    let v = vault(Backend::Sqlite).await;
    create_key(&v.rc, "h10", json!({})).await;
    for op in ["encrypt", "decrypt"] {
        let mut tcp = tokio::net::TcpStream::connect(v.srv.url().trim_start_matches("http://")).await.unwrap();
        let req = format!(
            "POST /v1/transit/stream/{op}/h10 HTTP/1.0\r\nX-Vault-Token: {}\r\nContent-Length: 5\r\n\r\nhello",
            v.root
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.0 400"), "{op}: {text}");
        assert!(text.contains("HTTP/1.1 or HTTP/2"), "{op}: {text}");
    }
}

/// A stream whose header claims segments larger than the server decrypts
/// (the format allows 16 MiB, for local use) is refused before any memory
/// is committed to it.
#[tokio::test]
async fn oversized_segments_are_refused_by_the_server() {
    let v = vault(Backend::Sqlite).await;
    create_key(&v.rc, "big", json!({})).await;
    let (s, r) = v.rc.post("transit/datakey/plaintext/big", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let wrapped = r["data"]["ciphertext"].as_str().unwrap().to_string();
    let key: [u8; 32] = B64.decode(r["data"]["plaintext"].as_str().unwrap()).unwrap().try_into().unwrap();
    let params = vault_stream::EncryptParams::new("big", 1, wrapped.as_bytes()).with_segment_size(16 << 20);
    let (mut enc, mut stream) = vault_stream::Encryptor::new(&key, &params).unwrap();
    enc.push(&pattern(3, 100), &mut stream).unwrap();
    enc.finish(&mut stream).unwrap();
    let o = v.api.decrypt("big", &[], &stream, false).await;
    match o {
        Outcome::Refused(400, body) => assert!(body.to_string().contains("decrypt it locally"), "{body}"),
        o => panic!("expected a 400, got {o:?}"),
    }
}
