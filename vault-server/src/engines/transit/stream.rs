//! Streamed encryption of uploads (beyond Vault, whose transit takes one
//! JSON body of at most 32 MiB): `stream/encrypt/{name}` and
//! `stream/decrypt/{name}` take a raw body of any length and answer with a
//! raw body produced as the input arrives, in the `vault-stream` format
//! (docs/formats.md): a fresh data key per stream, wrapped by the named key
//! exactly as `datakey` wraps one, so a client encrypting locally with a key
//! from `datakey/plaintext` writes the same format.
//!
//! Memory per stream is a few segments whatever its size: the request body
//! is pulled a chunk at a time and the answer goes through a channel of
//! [`CHANNEL_DEPTH`] chunks, so a slow reader slows the writer. Decryption
//! releases only authenticated segments; a stream found truncated or
//! tampered after the answer started ends in an error chunk, which the
//! HTTP layer turns into an aborted response (never a complete 200).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vault_stream::{Algorithm, Cipher, Decryptor, EncryptParams, Encryptor, Header, StreamError};
use zeroize::Zeroizing;

use super::Transit;
use super::ops::{self, ItemError, open_one, seal_one, subject_of};
use crate::barrier::Unsealed;
use crate::logical::{BoxFuture, ByteStream, ChunkSource, LogicalError, RawBody, Request, Response, fields};

/// Defaults of [`StreamSettings`] (`[transit]` in the config file).
pub mod defaults {
    /// `stream_max_bytes`: 16 GiB.
    pub const MAX_BYTES: u64 = crate::logical::DEFAULT_STREAM_LIMIT;
    /// `stream_max_concurrent`: streams in progress at once, all mounts.
    pub const MAX_CONCURRENT: usize = 64;
}

/// Server-wide limits on streams (`[transit]` in the config file), shared
/// by every transit mount.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Largest stream body accepted (bytes).
    pub max_bytes: u64,
    /// Streams in progress at once, all mounts together; one more is a 503.
    pub max_concurrent: usize,
    slots: Arc<Semaphore>,
}

impl StreamSettings {
    /// Settings with these limits (a fresh set of slots).
    pub fn new(max_bytes: u64, max_concurrent: usize) -> Self {
        Self { max_bytes, max_concurrent, slots: Arc::new(Semaphore::new(max_concurrent)) }
    }

    /// Streams in progress now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent.saturating_sub(self.slots.available_permits())
    }

    fn acquire(&self) -> Result<OwnedSemaphorePermit, LogicalError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            LogicalError::Busy(format!("too many streams in progress (at most {}); retry shortly", self.max_concurrent))
        })
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self::new(defaults::MAX_BYTES, defaults::MAX_CONCURRENT)
    }
}

impl PartialEq for StreamSettings {
    fn eq(&self, other: &Self) -> bool {
        self.max_bytes == other.max_bytes && self.max_concurrent == other.max_concurrent
    }
}

impl Eq for StreamSettings {}

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

fn item(e: ItemError) -> LogicalError {
    LogicalError::InvalidRequest(e.to_string())
}

/// Failures of the format reach the client in these words only (which check
/// failed is no help to a caller and some help to an attacker).
fn format_error(e: StreamError) -> LogicalError {
    match e {
        StreamError::InvalidParameter(m) => bad(m),
        StreamError::Truncated => bad("stream is truncated"),
        StreamError::TooManySegments => bad("stream exceeds 2^32 segments: use a larger segment_size"),
        StreamError::Random => LogicalError::Internal("the random number generator failed".into()),
        e @ (StreamError::BadMagic
        | StreamError::UnsupportedVersion(_)
        | StreamError::UnsupportedAlgorithm(_)
        | StreamError::BadSegmentSize(_)
        | StreamError::InvalidHeader(_)) => bad(format!("invalid stream: {e}")),
        _ => bad("stream authentication failed"),
    }
}

/// The query parameters of both paths.
struct Params {
    /// Base64 in the query, as transit's `associated_data` everywhere.
    aad: Zeroizing<Vec<u8>>,
    context: Option<Zeroizing<Vec<u8>>>,
    subject: Option<String>,
    segment_size: u32,
    algorithm: Algorithm,
    key_version: u32,
}

impl Params {
    fn of(data: &Map<String, Value>) -> Result<Self, LogicalError> {
        let b64 = |field: &str| -> Result<Option<Zeroizing<Vec<u8>>>, LogicalError> {
            match fields::string(data, field)? {
                None => Ok(None),
                Some(s) => base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map(|v| Some(Zeroizing::new(v)))
                    .map_err(|_| bad(format!("{field} must be base64"))),
            }
        };
        let segment_size = match fields::count(data, "segment_size")? {
            None => vault_stream::DEFAULT_SEGMENT_SIZE,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (vault_stream::MIN_SEGMENT_SIZE..=MAX_SERVER_SEGMENT).contains(n))
                .ok_or_else(|| bad("segment_size must be between 4096 and 1048576 bytes"))?,
        };
        let algorithm = match fields::string(data, "algorithm")?.as_deref() {
            None | Some("aes256-gcm96") => Algorithm::Aes256Gcm,
            Some("chacha20-poly1305") => Algorithm::ChaCha20Poly1305,
            Some(_) => return Err(bad("algorithm must be aes256-gcm96 or chacha20-poly1305")),
        };
        let key_version = match fields::count(data, "key_version")? {
            None => 0,
            Some(n) => u32::try_from(n).map_err(|_| bad("invalid key_version"))?,
        };
        Ok(Self {
            aad: b64("associated_data")?.unwrap_or_default(),
            context: b64("context")?,
            subject: fields::string(data, "subject")?.filter(|s| !s.is_empty()),
            segment_size,
            algorithm,
            key_version,
        })
    }

    fn context(&self) -> Option<&[u8]> {
        self.context.as_deref().map(|c| &c[..])
    }
}

/// The answer's chunks, made on demand from the request body: polled by
/// the connection that sends the answer, so the body is read only as fast
/// as the answer is taken (backpressure without a channel), and no other
/// task or hand-over sits between the socket and the cipher.
struct Transform {
    input: ByteStream,
    /// `None` once finished (or failed).
    cipher: Option<Cipher>,
    /// Output not yet handed out (the header, authenticated plaintext, ...).
    out: Vec<u8>,
    /// Changes when the vault seals: the stream stops at once, aborting the
    /// answer. (Not the mount's `shutdown`: a tune of the mount rebuilds its
    /// backend, and that must not cut the uploads in progress.)
    seal: tokio::sync::watch::Receiver<u64>,
    _slot: OwnedSemaphorePermit,
}

/// Largest segment the server encrypts or decrypts: what one stream holds
/// is about two segments (the one being filled or opened, and its output),
/// so this bounds a stream to a few MiB, whatever its header claims. The
/// format allows up to 16 MiB: larger segments are for local use.
pub const MAX_SERVER_SEGMENT: u32 = 1024 * 1024;

/// Room reserved for output beyond the segments in hand.
const OUT_BATCH: usize = 64 * 1024;

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform").field("input", &self.input).field("pending", &self.out.len()).finish()
    }
}

impl Transform {
    /// The next input chunk, or the error that ends the stream.
    async fn next_input(&mut self) -> Result<Option<Bytes>, LogicalError> {
        if self.seal.has_changed().unwrap_or(true) {
            return Err(LogicalError::Sealed);
        }
        tokio::select! {
            r = self.input.next() => r,
            _ = self.seal.changed() => Err(LogicalError::Sealed),
        }
    }

    async fn produce(&mut self) -> Result<Option<Bytes>, LogicalError> {
        loop {
            if self.cipher.is_none() {
                // Finished: what is left, then the end.
                return Ok((!self.out.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.out))));
            }
            // Output goes out as soon as there is some: a slow sender's
            // reader sees each segment when it is sealed or authenticated,
            // and the answer's head leaves with the first of them.
            if !self.out.is_empty() {
                // Reserved whole: no regrowth while the next batch fills.
                let next = Vec::with_capacity(self.out.capacity());
                return Ok(Some(Bytes::from(std::mem::replace(&mut self.out, next))));
            }
            match self.next_input().await {
                Ok(Some(chunk)) => {
                    let Some(cipher) = self.cipher.as_mut() else { continue };
                    if let Err(e) = cipher.push(&chunk, &mut self.out) {
                        self.cipher = None;
                        return Err(format_error(e));
                    }
                }
                Ok(None) => {
                    if let Some(c) = self.cipher.take() {
                        c.finish(&mut self.out).map_err(format_error)?;
                    }
                }
                Err(e) => {
                    self.cipher = None;
                    return Err(e);
                }
            }
        }
    }
}

impl ChunkSource for Transform {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, LogicalError>> {
        // Decryption releases `out` only once its segments authenticated
        // (the decryptor appends nothing else), and an error ends the
        // answer without it: the HTTP layer aborts the response.
        Box::pin(async move {
            let r = self.produce().await;
            if r.is_err() {
                // Pending once before the abort: hyper flushes what it has
                // (the answer's head, segments already released), so the
                // client sees a 200 cut short rather than no answer.
                tokio::task::yield_now().await;
            }
            r
        })
    }
}

fn answer(t: Transform) -> Response {
    Response::Raw { content_type: "application/octet-stream".into(), body: RawBody::Stream(ByteStream::new(t)) }
}

impl Transit {
    pub(super) async fn stream_encrypt(
        &self,
        u: &Unsealed,
        name: &str,
        mut req: Request,
    ) -> Result<Response, LogicalError> {
        let slot = self.streams.acquire()?;
        // Taken first: a seal from here on stops the stream.
        let seal = self.view.seal_signal();
        let p = Params::of(&req.data)?;
        let input = req.stream.take().ok_or_else(|| bad("missing request body"))?;
        let key = self.key(u, name).await?;
        let one = [&req.data];
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, &req.data, &one, false, &[], |_| true)).await?;
        let subject = p.subject.as_deref().map(|s| subjects.for_encrypt(s)).transpose().map_err(item)?;

        let mut data_key = Zeroizing::new([0u8; vault_stream::KEY_LEN]);
        crate::crypto::random::fill(&mut data_key[..]);
        // Wrapped as `datakey` wraps: an ordinary transit ciphertext, so
        // `decrypt` (and a client holding the right policy) can unwrap it.
        let (version, wrapped) =
            seal_one(&key, p.key_version, &data_key[..], p.context(), None, &[], subject).map_err(item)?;
        let params = EncryptParams::new(name, version, wrapped.as_bytes())
            .with_algorithm(p.algorithm)
            .with_segment_size(p.segment_size)
            .with_associated_data(&p.aad);
        let (enc, header) = Encryptor::new(&data_key, &params).map_err(format_error)?;
        drop(data_key);

        let mut out = Vec::with_capacity(OUT_BATCH + 2 * (p.segment_size as usize + vault_stream::TAG_LEN));
        out.extend_from_slice(&header);
        // The first chunk is read before the answer starts: a client that
        // sent `Expect: 100-continue` (curl does for uploads over 1 MiB)
        // gets its 100 now, rather than a 200 it must first time out on.
        let mut input = input;
        let cipher = match input.next().await? {
            Some(chunk) => {
                let mut enc = enc;
                enc.push(&chunk, &mut out).map_err(format_error)?;
                Some(Cipher::Encrypt(enc))
            }
            None => {
                enc.finish(&mut out).map_err(format_error)?;
                None
            }
        };
        Ok(answer(Transform { input, cipher, out, seal, _slot: slot }))
    }

    pub(super) async fn stream_decrypt(
        &self,
        u: &Unsealed,
        name: &str,
        mut req: Request,
    ) -> Result<Response, LogicalError> {
        let slot = self.streams.acquire()?;
        // Taken first: a seal from here on stops the stream.
        let seal = self.view.seal_signal();
        let p = Params::of(&req.data)?;
        let mut input = req.stream.take().ok_or_else(|| bad("missing request body"))?;
        // The key is looked up (and the policy already checked) before any
        // body byte is read.
        let key = self.key(u, name).await?;

        // The header first: bounded by the format (a 255-byte name, a 64 KiB
        // wrapped key), plus the one chunk that completed it.
        let mut buf: Vec<u8> = Vec::new();
        let (header, used) = loop {
            if let Some(found) = Header::parse(&buf).map_err(format_error)? {
                break found;
            }
            match input.next().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => return Err(bad("stream is truncated: it ends inside its header")),
            }
        };
        if header.segment_size() > MAX_SERVER_SEGMENT {
            return Err(bad(format!(
                "the stream's segments ({} bytes) are larger than this server decrypts ({MAX_SERVER_SEGMENT}): decrypt it locally",
                header.segment_size()
            )));
        }
        if header.key_name() != name {
            return Err(bad(format!(
                "the stream was encrypted with key {:?}, not {name:?}",
                header.key_name().chars().take(64).collect::<String>()
            )));
        }
        let wrapped = std::str::from_utf8(header.wrapped_key()).map_err(|_| bad("stream authentication failed"))?;
        // The version the header names is the one that wrapped the key: a
        // header edited to name another fails here (and its digest fails
        // every segment anyway).
        let wrapped_version = ops::version_of(wrapped).ok_or_else(|| bad("stream authentication failed"))?;
        if wrapped_version != header.key_version() {
            return Err(bad("stream authentication failed"));
        }
        let tagged: Vec<_> = subject_of(wrapped).into_iter().collect();
        let one = [&req.data];
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, &req.data, &one, false, &tagged, |_| false)).await?;
        let (data_key, _) = open_one(&key, wrapped, p.context(), &[], &subjects, p.subject.as_deref()).map_err(item)?;
        let data_key: Zeroizing<[u8; vault_stream::KEY_LEN]> =
            Zeroizing::new(data_key[..].try_into().map_err(|_| bad("stream authentication failed"))?);
        let mut dec = Decryptor::new(&data_key, &header, &p.aad).map_err(format_error)?;
        drop(data_key);

        // The first segment is opened before the answer starts, so a wrong
        // associated_data or key, or any tampering of a one-segment stream,
        // is a plain 400 rather than an aborted answer.
        let full = (header.segment_size() as usize).saturating_add(vault_stream::TAG_LEN);
        let mut ended = false;
        while buf.len().saturating_sub(used) <= full {
            match input.next().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(OUT_BATCH.saturating_add(full.saturating_mul(2)));
        dec.push(&buf[used..], &mut out).map_err(format_error)?;
        drop(buf);
        let cipher = if ended {
            // Complete and authenticated: the answer is `out` alone.
            dec.finish(&mut out).map_err(format_error)?;
            None
        } else {
            Some(Cipher::Decrypt(dec))
        };
        Ok(answer(Transform { input, cipher, out, seal, _slot: slot }))
    }
}
