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
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use vault_stream::{Algorithm, Decryptor, EncryptParams, Encryptor, Header, StreamError};
use zeroize::Zeroizing;

use super::Transit;
use super::ops::{self, ItemError, open_one, seal_one, subject_of};
use crate::barrier::Unsealed;
use crate::logical::stream::ChannelSource;
use crate::logical::{ByteStream, LogicalError, RawBody, Request, Response, fields};

/// Chunks queued between the task and the HTTP answer: with 64 KiB
/// segments, a quarter MiB per stream at most besides the segment in hand.
const CHANNEL_DEPTH: usize = 4;

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
                .filter(|n| (vault_stream::MIN_SEGMENT_SIZE..=vault_stream::MAX_SEGMENT_SIZE).contains(n))
                .ok_or_else(|| bad("segment_size must be between 4096 and 16777216 bytes"))?,
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

/// The answer: raw bytes fed by a task through a bounded channel.
fn answer(rx: mpsc::Receiver<Result<Bytes, LogicalError>>) -> Response {
    Response::Raw {
        content_type: "application/octet-stream".into(),
        body: RawBody::Stream(ByteStream::new(ChannelSource(rx))),
    }
}

/// What a stream task needs besides its cipher.
struct Task {
    input: ByteStream,
    tx: mpsc::Sender<Result<Bytes, LogicalError>>,
    /// Set when the mount goes away or the vault seals: the task stops at
    /// its next chunk, aborting the answer.
    closed: Arc<AtomicBool>,
    _slot: OwnedSemaphorePermit,
}

impl Task {
    /// The next input chunk, or the error that ends the stream.
    async fn next(&mut self) -> Result<Option<Bytes>, LogicalError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(LogicalError::Sealed);
        }
        self.input.next().await
    }

    /// Send `out` (emptied) on; false when the reader went away.
    async fn send(&self, out: &mut Vec<u8>) -> bool {
        if out.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(out));
        self.tx.send(Ok(chunk)).await.is_ok()
    }

    async fn fail(&self, e: LogicalError) {
        // The reader may be gone already; nothing more to do then.
        let _ = self.tx.send(Err(e)).await;
    }
}

impl Transit {
    pub(super) async fn stream_encrypt(
        &self,
        u: &Unsealed,
        name: &str,
        mut req: Request,
    ) -> Result<Response, LogicalError> {
        let slot = self.streams.acquire()?;
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
        let (mut enc, header) = Encryptor::new(&data_key, &params).map_err(format_error)?;
        drop(data_key);

        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let mut task = Task { input, tx, closed: self.closed.clone(), _slot: slot };
        let segment = p.segment_size as usize;
        tokio::spawn(async move {
            let mut out = header;
            loop {
                match task.next().await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = enc.push(&chunk, &mut out) {
                            return task.fail(format_error(e)).await;
                        }
                        // Whole segments go out as they are sealed.
                        if out.len() >= segment && !task.send(&mut out).await {
                            return;
                        }
                    }
                    Ok(None) => {
                        if let Err(e) = enc.finish(&mut out) {
                            return task.fail(format_error(e)).await;
                        }
                        task.send(&mut out).await;
                        return;
                    }
                    Err(e) => return task.fail(e).await,
                }
            }
        });
        Ok(answer(rx))
    }

    pub(super) async fn stream_decrypt(
        &self,
        u: &Unsealed,
        name: &str,
        mut req: Request,
    ) -> Result<Response, LogicalError> {
        let slot = self.streams.acquire()?;
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
        let (data_key, _) =
            open_one(&key, wrapped, p.context(), &[], &subjects, p.subject.as_deref()).map_err(item)?;
        let data_key: Zeroizing<[u8; vault_stream::KEY_LEN]> = Zeroizing::new(
            data_key[..].try_into().map_err(|_| bad("stream authentication failed"))?,
        );
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
        let mut out = Vec::with_capacity(full.saturating_mul(2));
        dec.push(&buf[used..], &mut out).map_err(format_error)?;
        drop(buf);
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        if ended {
            dec.finish(&mut out).map_err(format_error)?;
            // Complete and authenticated: one chunk, sent before the task
            // would start (the channel has room).
            let _ = tx.try_send(Ok(Bytes::from(out)));
            drop(slot);
            return Ok(answer(rx));
        }

        let mut task = Task { input, tx, closed: self.closed.clone(), _slot: slot };
        tokio::spawn(async move {
            loop {
                if !task.send(&mut out).await {
                    return;
                }
                match task.next().await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = dec.push(&chunk, &mut out) {
                            // Segments that authenticated before this one
                            // were sent; the error aborts the answer.
                            return task.fail(format_error(e)).await;
                        }
                    }
                    Ok(None) => {
                        if let Err(e) = dec.finish(&mut out) {
                            return task.fail(format_error(e)).await;
                        }
                        task.send(&mut out).await;
                        return;
                    }
                    Err(e) => return task.fail(e).await,
                }
            }
        });
        Ok(answer(rx))
    }
}
