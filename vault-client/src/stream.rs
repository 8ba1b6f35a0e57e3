//! Streaming encryption of files and byte streams of any size with a
//! transit key, in the `vault-stream` format (docs/formats.md, "Streaming
//! AEAD"), which the server and this module both write and read.
//!
//! Two ways to run, same bytes out ([`StreamMode`]):
//!
//! * **Server** (the default): the bytes go to the server's
//!   `{mount}/stream/encrypt/{key}` or `stream/decrypt/{key}` and come back
//!   transformed, in one request read while it is still being sent. The
//!   data key never leaves the server.
//! * **Local**: one request for a data key (`datakey/plaintext/{key}` to
//!   encrypt; `decrypt/{key}` on the wrapped key in the stream's header to
//!   decrypt), then the work is done here, at local disk speed. The data
//!   key lives in zeroized memory for as long as it takes to set up the
//!   cipher.
//!
//! ```no_run
//! # async fn demo(client: &vault_client::Client) -> Result<(), vault_client::Error> {
//! use std::path::Path;
//! use vault_client::stream::StreamOptions;
//!
//! let files = client.transit("transit").stream("backups");
//! let opts = StreamOptions::new().associated_data("db-2024-06-01");
//! files.encrypt_file(Path::new("dump.sql"), Path::new("dump.sql.vlts"), &opts).await?;
//! let local = opts.clone().local();
//! files.decrypt_file(Path::new("dump.sql.vlts"), Path::new("restored.sql"), &local).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! * **No partial output files.** [`StreamKey::encrypt_file`] and
//!   [`StreamKey::decrypt_file`] write to a temporary file (mode 0600) in
//!   the destination's directory and rename it over the destination only
//!   when everything succeeded, after `fsync`; on any failure the temporary
//!   file is removed ([`AtomicFile`]). With the generic
//!   [`StreamKey::encrypt`] / [`StreamKey::decrypt`], what was written to
//!   the writer before an error is provisional: decrypted bytes are
//!   released segment by segment, and only a successful return says the
//!   stream was complete and authentic.
//! * **A damaged stream is an error, never short output.** Locally the
//!   format's checks fail ([`Error::Stream`]); in server mode the server
//!   aborts its answer when it finds the damage after it started answering,
//!   and any incomplete answer body is [`Error::StreamAborted`].
//! * **No retries**: a streamed body cannot be sent twice. The data-key
//!   requests of local mode are ordinary requests (retried by the client's
//!   rules before anything is streamed).
//! * **Bounded memory**, backpressure both ways: a few segments at most;
//!   the input is read only as fast as the output is written.
//! * **Timeouts** bound each wait for progress (the client's timeout, see
//!   [`crate::ClientBuilder::timeout`]), not the whole transfer:
//!   [`Error::StreamStalled`].
//! * Errors name files and keys, never data; `Debug` of [`StreamOptions`]
//!   hides the subject and the associated data. In server mode plaintext
//!   passes through the HTTP stack's buffers, which cannot be wiped.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::CONTENT_TYPE;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufWriter};
use zeroize::Zeroizing;

pub use vault_stream::Algorithm;
use vault_stream::{Cipher, Decryptor, EncryptParams, Encryptor, Header, KEY_LEN, StreamError};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::transit::{DataKey, Params, Plaintext, Transit};

/// Bytes read from the input at a time (and the largest upload chunk).
const CHUNK: usize = 64 * 1024;

/// How long an upload waits for the answer's head once it has sent what
/// the server reads before answering ([`Gate`]), as curl waits for
/// `100 Continue`. If something in between holds the head back (a
/// buffering proxy), the upload goes on after this.
const HEAD_GRACE: Duration = Duration::from_secs(1);

/// Most bytes of an error answer read to report it.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where the work is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamMode {
    /// The server encrypts or decrypts; the bytes make a round trip.
    #[default]
    Server,
    /// This process does, under a data key transit makes or unwraps.
    Local,
}

/// Called with the number of input bytes consumed so far.
type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// How to encrypt or decrypt a stream. Decryption uses only the mode, the
/// associated data and the subject (the rest is in the stream's header).
#[derive(Clone, Default)]
pub struct StreamOptions {
    mode: StreamMode,
    associated_data: Option<Vec<u8>>,
    context: Option<Vec<u8>>,
    subject: Option<String>,
    segment_size: Option<u32>,
    algorithm: Option<Algorithm>,
    key_version: Option<u32>,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: bool| if v { "<set>" } else { "<none>" };
        f.debug_struct("StreamOptions")
            .field("mode", &self.mode)
            .field("associated_data", &shown(self.associated_data.is_some()))
            .field("context", &shown(self.context.is_some()))
            .field("subject", &shown(self.subject.is_some()))
            .field("segment_size", &self.segment_size)
            .field("algorithm", &self.algorithm)
            .field("key_version", &self.key_version)
            .field("progress", &shown(self.progress.is_some()))
            .finish()
    }
}

impl StreamOptions {
    /// Server mode, AES-256-GCM, 64 KiB segments, the key's latest version,
    /// no associated data, no subject.
    pub fn new() -> StreamOptions {
        StreamOptions::default()
    }

    /// In this mode.
    #[must_use]
    pub fn mode(mut self, mode: StreamMode) -> StreamOptions {
        self.mode = mode;
        self
    }

    /// In [`StreamMode::Local`].
    #[must_use]
    pub fn local(self) -> StreamOptions {
        self.mode(StreamMode::Local)
    }

    /// With associated data: authenticated, not stored, so decryption must
    /// be given the same bytes (e.g. a file id, to stop files being swapped).
    #[must_use]
    pub fn associated_data(mut self, ad: impl Into<Vec<u8>>) -> StreamOptions {
        self.associated_data = Some(ad.into());
        self
    }

    /// With a key derivation context (required by derived keys): the data
    /// key is wrapped under the key derived for it.
    #[must_use]
    pub fn context(mut self, context: impl Into<Vec<u8>>) -> StreamOptions {
        self.context = Some(context.into());
        self
    }

    /// For a data subject (crypto-shredding: docs/transit-extensions.md):
    /// the stream's data key is wrapped under the subject's key, so
    /// deleting the subject makes the stream undecryptable.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> StreamOptions {
        self.subject = Some(subject.into());
        self
    }

    /// Plaintext bytes per segment, 4096 to 16 MiB (default 64 KiB).
    #[must_use]
    pub fn segment_size(mut self, bytes: u32) -> StreamOptions {
        self.segment_size = Some(bytes);
        self
    }

    /// The segment AEAD (default AES-256-GCM).
    #[must_use]
    pub fn algorithm(mut self, algorithm: Algorithm) -> StreamOptions {
        self.algorithm = Some(algorithm);
        self
    }

    /// Encrypt under this version of the key (default: the latest).
    #[must_use]
    pub fn key_version(mut self, version: u32) -> StreamOptions {
        self.key_version = Some(version);
        self
    }

    /// Call `f` with the number of input bytes consumed so far, as the
    /// stream advances (for progress bars).
    #[must_use]
    pub fn on_progress(mut self, f: impl Fn(u64) + Send + Sync + 'static) -> StreamOptions {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Transit's parameters for the data-key requests of local mode.
    fn transit_params(&self, with_version: bool) -> Params {
        let mut p = Params::new();
        if let Some(c) = &self.context {
            p = p.context(c.as_slice());
        }
        if let Some(s) = &self.subject {
            p = p.subject(s.as_str());
        }
        if with_version && let Some(v) = self.key_version {
            p = p.key_version(u64::from(v));
        }
        p
    }

    fn ad(&self) -> &[u8] {
        self.associated_data.as_deref().unwrap_or_default()
    }
}

/// What a stream moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Bytes read from the input.
    pub bytes_in: u64,
    /// Bytes written to the output.
    pub bytes_out: u64,
}

/// The server's name of an algorithm.
fn algorithm_name(a: Algorithm) -> Result<&'static str> {
    match a {
        Algorithm::Aes256Gcm => Ok("aes256-gcm96"),
        Algorithm::ChaCha20Poly1305 => Ok("chacha20-poly1305"),
        _ => Err(Error::InvalidArgument("this stream algorithm has no server name".into())),
    }
}

/// Streams under one transit key; get one with [`Transit::stream`].
#[derive(Debug, Clone)]
pub struct StreamKey<'a> {
    transit: Transit<'a>,
    key: String,
}

impl<'a> Transit<'a> {
    /// Streaming encryption (files, uploads of any size) with `key`.
    pub fn stream(&self, key: &str) -> StreamKey<'a> {
        StreamKey { transit: self.clone(), key: key.to_string() }
    }
}

/// How the input and output are called in errors.
#[derive(Debug, Clone, Copy)]
struct Names<'n> {
    input: &'n str,
    output: &'n str,
}

const GENERIC: Names<'static> = Names { input: "the input", output: "the output" };

impl Names<'_> {
    fn read_err(&self, e: io::Error) -> Error {
        Error::Io { what: format!("cannot read {}", self.input), source: e }
    }
    fn write_err(&self, e: io::Error) -> Error {
        Error::Io { what: format!("cannot write {}", self.output), source: e }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
}

impl StreamKey<'_> {
    /// The transit key's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Encrypt everything `reader` yields into `writer` (which gets the
    /// stream: header, then segments), flushed at the end.
    pub async fn encrypt<R, W>(&self, reader: R, writer: W, opts: &StreamOptions) -> Result<StreamStats>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        self.run(Op::Encrypt, reader, writer, opts, GENERIC).await
    }

    /// Decrypt the stream `reader` yields into `writer`. What reaches
    /// `writer` before this returns `Ok` is provisional (see the module
    /// documentation): on an error, discard it.
    pub async fn decrypt<R, W>(&self, reader: R, writer: W, opts: &StreamOptions) -> Result<StreamStats>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        self.run(Op::Decrypt, reader, writer, opts, GENERIC).await
    }

    /// Encrypt the file `input` into `output`, atomically (see [`AtomicFile`]).
    pub async fn encrypt_file(&self, input: &Path, output: &Path, opts: &StreamOptions) -> Result<StreamStats> {
        self.file(Op::Encrypt, input, output, opts).await
    }

    /// Decrypt the file `input` into `output`, atomically: `output` appears
    /// only when the whole stream authenticated.
    pub async fn decrypt_file(&self, input: &Path, output: &Path, opts: &StreamOptions) -> Result<StreamStats> {
        self.file(Op::Decrypt, input, output, opts).await
    }

    async fn file(&self, op: Op, input: &Path, output: &Path, opts: &StreamOptions) -> Result<StreamStats> {
        let (in_name, out_name) = (input.display().to_string(), output.display().to_string());
        let names = Names { input: &in_name, output: &out_name };
        let reader = tokio::fs::File::open(input).await.map_err(|e| names.read_err(e))?;
        let mut out = AtomicFile::create(output).await?;
        let stats = self.run(op, reader, &mut out, opts, names).await?;
        out.commit().await?;
        Ok(stats)
    }

    async fn run<R, W>(
        &self,
        op: Op,
        reader: R,
        writer: W,
        opts: &StreamOptions,
        names: Names<'_>,
    ) -> Result<StreamStats>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        match (opts.mode, op) {
            (StreamMode::Local, Op::Encrypt) => self.encrypt_local(reader, writer, opts, names).await,
            (StreamMode::Local, Op::Decrypt) => self.decrypt_local(reader, writer, opts, names).await,
            (StreamMode::Server, _) => self.through_server(op, reader, writer, opts, names).await,
        }
    }

    fn client(&self) -> &Client {
        self.transit.client
    }

    // ---- local mode ----

    async fn encrypt_local<R, W>(
        &self,
        mut reader: R,
        mut writer: W,
        opts: &StreamOptions,
        names: Names<'_>,
    ) -> Result<StreamStats>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let path = self.transit.path("datakey/plaintext", &self.key)?;
        let DataKey { plaintext, ciphertext: wrapped, key_version } =
            self.transit.data_key(&self.key, true, Some(256), &opts.transit_params(true)).await?;
        let data_key = key_bytes(&path, plaintext)?;
        if opts.subject.is_some() && !has_subject_tag(&wrapped) {
            // A server that does not bind data keys to subjects would
            // otherwise give a stream that survives the subject's deletion.
            return Err(Error::InvalidArgument(
                "the server did not wrap the data key under the subject's key (its datakey endpoint \
                 does not take subjects): use server mode for subject streams"
                    .into(),
            ));
        }
        let version = u32::try_from(key_version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| Error::Decode { path: path.clone(), detail: "key_version is not a key version".into() })?;
        let mut params = EncryptParams::new(&self.key, version, wrapped.as_bytes()).with_associated_data(opts.ad());
        if let Some(s) = opts.segment_size {
            params = params.with_segment_size(s);
        }
        if let Some(a) = opts.algorithm {
            params = params.with_algorithm(a);
        }
        let (enc, header) = Encryptor::new(&data_key, &params)?;
        drop(data_key);

        let mut stats = StreamStats::default();
        writer.write_all(&header).await.map_err(|e| names.write_err(e))?;
        stats.bytes_out += header.len() as u64;
        let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
        let mut out = Vec::with_capacity(CHUNK + 2 * vault_stream::TAG_LEN);
        pump(Cipher::Encrypt(enc), &mut reader, &mut writer, &mut buf, &mut out, &mut stats, opts, names).await
    }

    async fn decrypt_local<R, W>(
        &self,
        mut reader: R,
        mut writer: W,
        opts: &StreamOptions,
        names: Names<'_>,
    ) -> Result<StreamStats>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut stats = StreamStats::default();
        // Ciphertext only: no need to wipe these.
        let mut buf = vec![0u8; CHUNK];
        let (header, used, head) = read_header(&mut reader, names).await?;
        stats.bytes_in = head.len() as u64;
        let wrapped = self.check_header(&header)?;
        let path = self.transit.path("decrypt", &self.key)?;
        let plain = self.transit.decrypt(&self.key, wrapped, &opts.transit_params(false)).await?;
        let data_key = key_bytes(&path, Some(plain))?;
        let mut dec = Decryptor::new(&data_key, &header, opts.ad())?;
        drop(data_key);

        // Plaintext: wiped on drop (the whole capacity), and never
        // reallocated (a push yields at most its input plus one held-back
        // segment).
        let segment = header.segment_size() as usize;
        let mut out = Zeroizing::new(Vec::with_capacity(CHUNK + segment + vault_stream::TAG_LEN));
        dec.push(&head[used..], &mut out)?;
        drop(head);
        write_out(&mut writer, &mut out, &mut stats, names).await?;
        progress(opts, stats.bytes_in);
        pump(Cipher::Decrypt(dec), &mut reader, &mut writer, &mut buf, &mut out, &mut stats, opts, names).await
    }

    // ---- server mode ----

    async fn through_server<R, W>(
        &self,
        op: Op,
        reader: R,
        mut writer: W,
        opts: &StreamOptions,
        names: Names<'_>,
    ) -> Result<StreamStats>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let (verb, with_settings) = match op {
            Op::Encrypt => ("stream/encrypt", true),
            Op::Decrypt => ("stream/decrypt", false),
        };
        let path = self.transit.path(verb, &self.key)?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(ad) = &opts.associated_data {
            query.push(("associated_data", B64.encode(ad)));
        }
        if let Some(c) = &opts.context {
            query.push(("context", B64.encode(c)));
        }
        if let Some(s) = &opts.subject {
            query.push(("subject", s.clone()));
        }
        if with_settings {
            if let Some(s) = opts.segment_size {
                query.push(("segment_size", s.to_string()));
            }
            if let Some(a) = opts.algorithm {
                query.push(("algorithm", algorithm_name(a)?.to_string()));
            }
            if let Some(v) = opts.key_version {
                query.push(("key_version", v.to_string()));
            }
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();

        let shared =
            Arc::new(Upload { read: AtomicU64::new(0), error: Mutex::new(None), progress: opts.progress.clone() });
        let (head_tx, head_rx) = tokio::sync::watch::channel(false);
        let (reader, gate): (Box<dyn AsyncRead + Unpin + Send>, Gate) = match op {
            // The server reads the first chunk before it answers (so that
            // `Expect: 100-continue` clients get their 100): one byte is
            // enough, and leaves almost nothing unread if it refuses.
            Op::Encrypt => (Box::new(reader), Gate::FirstSegment { head: head_rx, limit: 1 }),
            Op::Decrypt => {
                // Checked here first: a stream of another key, or not a
                // stream, is refused with a clear error and nothing sent.
                let mut reader = reader;
                let (header, used, head) = read_header(&mut reader, names).await?;
                self.check_header(&header)?;
                let full = u64::from(header.segment_size()) + vault_stream::TAG_LEN as u64;
                let gate = Gate::FirstSegment { head: head_rx, limit: used as u64 + full + 1 };
                (Box::new(io::Cursor::new(head).chain(reader)), gate)
            }
        };
        let body = reqwest::Body::wrap_stream(upload(reader, shared.clone(), gate));
        let request =
            self.client().stream_request(&path, &query)?.header(CONTENT_TYPE, "application/octet-stream").body(body);

        let mut stats = StreamStats::default();
        let mut watch = Stall::new(self.client().stall_timeout());
        // Returns at the answer's head, while the upload goes on.
        let sent = watch.wait(request.send(), &shared, stats.bytes_out).await?;
        let _ = head_tx.send(true);
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(read) = shared.take_error(names) {
                    return Err(read);
                }
                return Err(self.why_cut(&path, e).await);
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(error_answer(response).await);
        }
        loop {
            let chunk = watch.wait(response.chunk(), &shared, stats.bytes_out).await?;
            match chunk {
                Ok(Some(bytes)) => {
                    writer.write_all(&bytes).await.map_err(|e| names.write_err(e))?;
                    stats.bytes_out += bytes.len() as u64;
                }
                Ok(None) => break,
                // An answer that ends before its end: the server aborted it
                // (a damaged stream, found after the answer started), or the
                // upload failed and took the connection down.
                Err(_) => return Err(shared.take_error(names).unwrap_or(Error::StreamAborted)),
            }
        }
        if let Some(e) = shared.take_error(names) {
            return Err(e);
        }
        writer.flush().await.map_err(|e| names.write_err(e))?;
        stats.bytes_in = shared.read.load(Ordering::Relaxed);
        Ok(stats)
    }
}

impl StreamKey<'_> {
    /// What decryption checks in a header before asking for anything: the
    /// key it names, and that the wrapped key's version is the header's.
    /// Returns the wrapped key.
    fn check_header<'h>(&self, header: &'h Header) -> Result<&'h str> {
        if header.key_name() != self.key {
            return Err(Error::InvalidArgument(format!(
                "the stream was encrypted with transit key {:?}, not {:?}",
                header.key_name(),
                self.key
            )));
        }
        let wrapped = std::str::from_utf8(header.wrapped_key())
            .map_err(|_| StreamError::InvalidHeader("the wrapped data key is not a transit ciphertext"))?;
        if wrapped_version(wrapped) != Some(header.key_version()) {
            // The header's version is authenticated by every segment, the
            // wrapped key by the unwrap: they must name the same version.
            return Err(Error::Stream(StreamError::InvalidHeader(
                "the wrapped data key's version differs from the header's key version (tampered header)",
            )));
        }
        Ok(wrapped)
    }

    /// The error for a request that got no answer: the connection broke
    /// during the upload. A server that refuses a request before reading
    /// its body closes the connection, and the unread upload can reset it
    /// before the refusal is read; the common cause, a token without
    /// `update` on the path, is asked for (`sys/capabilities-self`).
    async fn why_cut(&self, path: &str, e: reqwest::Error) -> Error {
        // The URL carries the subject and associated data: not in messages.
        let e = e.without_url();
        if e.is_connect() || e.is_timeout() {
            return Error::Http(e);
        }
        let body = serde_json::json!({ "paths": [path] });
        let caps = self.client().put_json::<_, serde_json::Value>("sys/capabilities-self", &body).await;
        let allowed = caps.ok().and_then(|v| {
            let list =
                v.get("data").and_then(|d| d.get(path)).or_else(|| v.get(path)).or_else(|| v.get("capabilities"));
            list.and_then(serde_json::Value::as_array)
                .map(|l| l.iter().any(|c| matches!(c.as_str(), Some("update" | "create" | "root"))))
        });
        match allowed {
            Some(false) => Error::Api {
                status: 403,
                errors: vec![format!(
                    "permission denied: the token has no update capability on {path} \
                     (the server refused the stream and closed the connection during the upload)"
                )],
            },
            _ => Error::Http(e),
        }
    }
}

/// Read a stream's header: the header, its length, and every byte read
/// (the header and what came with it). `Header::parse` errs as soon as the
/// bytes show a problem, and the format bounds the header (64 KiB wrapped
/// key at most), so this holds a header plus one chunk at most.
async fn read_header<R: AsyncRead + Unpin>(reader: &mut R, names: Names<'_>) -> Result<(Header, usize, Vec<u8>)> {
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    loop {
        if let Some((header, used)) = Header::parse(&head)? {
            return Ok((header, used, head));
        }
        let n = reader.read(&mut buf).await.map_err(|e| names.read_err(e))?;
        if n == 0 {
            return Err(Error::Stream(StreamError::Truncated));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// Report `bytes_in` to the progress callback, if any.
fn progress(opts: &StreamOptions, bytes_in: u64) {
    if let Some(f) = &opts.progress {
        f(bytes_in);
    }
}

/// Write and clear `out`.
async fn write_out<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut Vec<u8>,
    stats: &mut StreamStats,
    names: Names<'_>,
) -> Result<()> {
    if !out.is_empty() {
        writer.write_all(out).await.map_err(|e| names.write_err(e))?;
        stats.bytes_out += out.len() as u64;
        out.clear();
    }
    Ok(())
}

/// A data key from transit as a wiped array (the `Plaintext` it came in is
/// dropped, and so wiped, here).
fn key_bytes(path: &str, plaintext: Option<Plaintext>) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let plaintext = plaintext.ok_or_else(|| Error::Decode { path: path.into(), detail: "no data key".into() })?;
    if plaintext.len() != KEY_LEN {
        return Err(Error::Decode { path: path.into(), detail: "the data key is not 256 bits".into() });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&plaintext);
    Ok(key)
}

/// The version `N` of a transit ciphertext `vault:vN:...`.
fn wrapped_version(wrapped: &str) -> Option<u32> {
    let (digits, rest) = wrapped.strip_prefix("vault:v")?.split_once(':')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    digits.parse().ok()
}

/// Whether a transit ciphertext carries a subject tag
/// (`vault:vN:s{G}.{id}:{base64}`; base64 has no `:`).
fn has_subject_tag(wrapped: &str) -> bool {
    wrapped
        .strip_prefix("vault:v")
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(_, rest)| rest.starts_with('s') && rest.contains(':'))
}

/// The error of a non-success answer (Vault's `{"errors": [...]}`), read
/// up to [`MAX_ERROR_BODY`].
async fn error_answer(mut response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    // A body that cannot be read still leaves the status to report.
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    Error::from_response(status, &body)
}

/// What the upload shares with the request: bytes read so far, the first
/// read error (reported instead of the broken request it causes), and the
/// caller's progress callback.
struct Upload {
    read: AtomicU64,
    error: Mutex<Option<io::Error>>,
    progress: Option<ProgressFn>,
}

impl Upload {
    fn take_error(&self, names: Names<'_>) -> Option<Error> {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).take().map(|e| names.read_err(e))
    }
}

/// Local mode's loop: read `reader` a chunk at a time through `cipher`,
/// write what it releases, and end with its final segment.
#[allow(clippy::too_many_arguments)]
async fn pump<R, W>(
    mut cipher: Cipher,
    reader: &mut R,
    writer: &mut W,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    stats: &mut StreamStats,
    opts: &StreamOptions,
    names: Names<'_>,
) -> Result<StreamStats>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let n = reader.read(buf).await.map_err(|e| names.read_err(e))?;
        if n == 0 {
            break;
        }
        stats.bytes_in += n as u64;
        cipher.push(&buf[..n], out)?;
        write_out(writer, out, stats, names).await?;
        progress(opts, stats.bytes_in);
    }
    cipher.finish(out)?;
    write_out(writer, out, stats, names).await?;
    writer.flush().await.map_err(|e| names.write_err(e))?;
    Ok(*stats)
}

/// How much of an upload goes out before the answer's head (see
/// [`HEAD_GRACE`]): a server that refuses a request after reading only part
/// of it closes the connection, and bytes it left unread make that close a
/// reset, which can lose the refusal. So the upload stops, until the head
/// arrives, at what the server reads before it answers.
enum Gate {
    /// Nothing more to hold back.
    Open,
    /// The server reads `limit` bytes before it answers: for encryption its
    /// first chunk (one byte will do), for decryption the header, the
    /// first segment and one byte more (to know that segment is not the
    /// last).
    FirstSegment { head: tokio::sync::watch::Receiver<bool>, limit: u64 },
}

impl Gate {
    /// How many bytes may be read now (after waiting, if the limit is reached).
    async fn allow(&mut self, sent: u64) -> usize {
        let head = match self {
            Gate::Open => return CHUNK,
            Gate::FirstSegment { limit, .. } if sent < *limit => {
                return usize::try_from(*limit - sent).unwrap_or(CHUNK).min(CHUNK);
            }
            Gate::FirstSegment { head, .. } => head,
        };
        let _ = tokio::time::timeout(HEAD_GRACE, head.wait_for(|answered| *answered)).await;
        *self = Gate::Open;
        CHUNK
    }
}

/// The request body: `reader` in chunks of up to [`CHUNK`] bytes, pulled
/// by the HTTP stack as it can send them (backpressure), held back by the
/// `gate` until the answer's head.
fn upload<R>(
    reader: R,
    shared: Arc<Upload>,
    gate: Gate,
) -> impl futures_util::Stream<Item = io::Result<Vec<u8>>> + Send + 'static
where
    R: AsyncRead + Unpin + Send + 'static,
{
    futures_util::stream::unfold(Some((reader, shared, gate)), |state| async move {
        let (mut reader, shared, mut gate) = state?;
        let sent = shared.read.load(Ordering::Relaxed);
        let max = gate.allow(sent).await;
        let mut buf = Zeroizing::new(vec![0u8; max]);
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                let total = shared.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                if let Some(f) = &shared.progress {
                    f(total);
                }
                Some((Ok(buf[..n].to_vec()), Some((reader, shared, gate))))
            }
            Err(e) => {
                let kind = e.kind();
                *shared.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                Some((Err(io::Error::new(kind, "reading the input failed")), None))
            }
        }
    })
}

/// Bounds each wait of a streamed request by the time without progress:
/// a wait times out only if neither the upload nor the answer moved for a
/// whole period.
struct Stall {
    period: Duration,
    last: u64,
}

impl Stall {
    fn new(period: Duration) -> Stall {
        Stall { period, last: 0 }
    }

    async fn wait<F: Future>(&mut self, fut: F, upload: &Upload, written: u64) -> Result<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = tokio::time::sleep(self.period) => {
                    let now = upload.read.load(Ordering::Relaxed).saturating_add(written);
                    if now == self.last {
                        return Err(Error::StreamStalled(self.period));
                    }
                    self.last = now;
                }
            }
        }
    }
}

/// An output file that appears whole or not at all.
///
/// Bytes go to a temporary file (mode 0600) in the destination's
/// directory; [`commit`](Self::commit) flushes it, `fsync`s it, renames it
/// over the destination and `fsync`s the directory. Dropped without a
/// commit (an error, a panic, a cancelled task), the temporary file is
/// removed and the destination is untouched.
pub struct AtomicFile {
    dest: PathBuf,
    temp: tempfile::TempPath,
    file: BufWriter<tokio::fs::File>,
}

impl fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicFile").field("dest", &self.dest).field("temp", &&*self.temp).finish_non_exhaustive()
    }
}

impl AtomicFile {
    /// Start writing `dest` (nothing appears there until the commit).
    pub async fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        let io_err = |e| Error::Io { what: format!("cannot create {}", dest.display()), source: e };
        if dest.file_name().is_none() {
            return Err(io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name")));
        }
        let dir = parent_dir(&dest);
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new().prefix(".vault-stream-").suffix(".tmp").tempfile_in(dir)
        })
        .await
        .map_err(|e| io_err(io::Error::other(e)))?
        .map_err(io_err)?;
        let (file, temp) = temp.into_parts();
        Ok(AtomicFile { dest, temp, file: BufWriter::with_capacity(CHUNK, tokio::fs::File::from_std(file)) })
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Make the file appear at the destination, whole.
    pub async fn commit(mut self) -> Result<()> {
        let dest = self.dest;
        let io_err = |e| Error::Io { what: format!("cannot write {}", dest.display()), source: e };
        self.file.flush().await.map_err(io_err)?;
        let file = self.file.into_inner();
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        let temp = self.temp;
        let target = dest.clone();
        tokio::task::spawn_blocking(move || temp.persist(&target).map_err(|e| e.error))
            .await
            .map_err(|e| io_err(io::Error::other(e)))?
            .map_err(io_err)?;
        // The rename is durable once the directory is (best effort: some
        // file systems refuse to sync a directory).
        if let Ok(d) = tokio::fs::File::open(parent_dir(&dest)).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl AsyncWrite for AtomicFile {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_file_appears_whole_on_commit_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        rt().block_on(async {
            let mut f = AtomicFile::create(&dest).await.unwrap();
            f.write_all(b"hello ").await.unwrap();
            assert!(!dest.exists(), "nothing at the destination before the commit");
            assert_eq!(entries(dir.path()).len(), 1, "one temporary file");
            f.write_all(b"world").await.unwrap();
            f.commit().await.unwrap();
        });
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(entries(dir.path()), ["out.bin"], "no temporary file left");
    }

    #[test]
    fn atomic_file_dropped_leaves_nothing_and_keeps_an_old_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        rt().block_on(async {
            let mut f = AtomicFile::create(&dest).await.unwrap();
            f.write_all(&[7u8; 200_000]).await.unwrap();
            drop(f);
        });
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

        std::fs::write(&dest, b"old").unwrap();
        rt().block_on(async {
            let mut f = AtomicFile::create(&dest).await.unwrap();
            f.write_all(b"partial").await.unwrap();
        });
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["out.bin"]);
    }

    #[test]
    fn atomic_file_cleans_up_when_the_task_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        rt().block_on(async {
            let d = dest.clone();
            let task = tokio::spawn(async move {
                let mut f = AtomicFile::create(&d).await.unwrap();
                f.write_all(b"partial").await.unwrap();
                std::future::pending::<()>().await;
                f.commit().await
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            task.abort();
            let _ = task.await;
        });
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[test]
    fn atomic_file_in_a_missing_directory_is_an_io_error_naming_it() {
        let e = rt().block_on(AtomicFile::create("/nonexistent-dir-x/out.bin")).unwrap_err();
        assert!(matches!(&e, Error::Io { what, .. } if what.contains("/nonexistent-dir-x/out.bin")), "{e:?}");
    }

    #[test]
    fn wrapped_key_versions() {
        assert_eq!(wrapped_version("vault:v1:abc"), Some(1));
        assert_eq!(wrapped_version("vault:v12:s1.xyz:abc"), Some(12));
        for bad in ["vault:v:abc", "vault:vx:abc", "vault:v1:", "v1:abc", "vault:v99999999999:x"] {
            assert_eq!(wrapped_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn subject_tags() {
        assert!(has_subject_tag("vault:v1:s1.abc:Zm9v"));
        assert!(!has_subject_tag("vault:v1:Zm9v"));
        assert!(!has_subject_tag("vault:v1:sZm9v"));
    }

    #[test]
    fn data_keys_must_be_256_bits() {
        assert!(key_bytes("p", Some(Plaintext::from(&[1u8; 32][..]))).is_ok());
        assert!(matches!(key_bytes("p", Some(Plaintext::from(&[1u8; 16][..]))), Err(Error::Decode { .. })));
        assert!(matches!(key_bytes("p", None), Err(Error::Decode { .. })));
    }

    #[test]
    fn options_debug_hides_subject_and_associated_data() {
        let o = StreamOptions::new().associated_data("file-SECRET").subject("ada-SECRET").local().segment_size(4096);
        let shown = format!("{o:?}");
        assert!(!shown.contains("SECRET") && shown.contains("Local") && shown.contains("4096"), "{shown}");
    }

    #[test]
    fn stall_fires_only_without_progress() {
        rt().block_on(async {
            let up = Upload { read: AtomicU64::new(0), error: Mutex::new(None), progress: None };
            let mut s = Stall::new(Duration::from_millis(20));
            let e = s.wait(std::future::pending::<()>(), &up, 0).await.unwrap_err();
            assert!(matches!(e, Error::StreamStalled(_)), "{e:?}");

            // Progress every 10 ms keeps a 100 ms wait alive.
            let up = Arc::new(up);
            let mover = up.clone();
            let ticker = tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    mover.read.fetch_add(1, Ordering::Relaxed);
                }
            });
            let mut s = Stall::new(Duration::from_millis(20));
            s.wait(tokio::time::sleep(Duration::from_millis(100)), &up, 0).await.unwrap();
            ticker.await.unwrap();
        });
    }
}
