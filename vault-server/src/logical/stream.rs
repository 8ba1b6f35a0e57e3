//! Byte-stream bodies: what a backend whose path declares
//! [`BodyKind::Stream`](super::paths::BodyKind::Stream) reads instead of a
//! JSON map, and the raw answers (bytes or a stream, with a content type)
//! a backend may give instead of Vault's envelope. The HTTP layer supplies
//! and consumes these; nothing here knows HTTP.
//!
//! Reading is pull-based: the next chunk is read from the connection only
//! when the backend asks for it, so a slow backend slows the sender
//! (backpressure) and memory stays at a chunk or two per stream.

use bytes::Bytes;

use super::{BoxFuture, LogicalError};

/// Where the chunks of a stream come from (the HTTP body, a test, a file).
pub trait ChunkSource: Send {
    /// The next chunk; `Ok(None)` at the end. Errors are final: over the
    /// limit (413), stalled (408), the sender gave up (400), busy (503).
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, LogicalError>>;
}

/// A streamed request body, or the body of a raw streamed answer.
pub struct ByteStream {
    // A Mutex only to make the stream `Sync` (backends' futures hold
    // requests across awaits); `next` takes `&mut self`, so it never locks.
    source: std::sync::Mutex<Box<dyn ChunkSource>>,
    read: u64,
    done: bool,
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteStream({} bytes read)", self.read)
    }
}

impl ByteStream {
    /// A stream over `source`.
    pub fn new(source: impl ChunkSource + 'static) -> Self {
        Self { source: std::sync::Mutex::new(Box::new(source)), read: 0, done: false }
    }

    /// The next non-empty chunk, or `None` at the end (and ever after).
    pub async fn next(&mut self) -> Result<Option<Bytes>, LogicalError> {
        while !self.done {
            let source = self.source.get_mut().unwrap_or_else(|p| p.into_inner());
            match source.next_chunk().await {
                Ok(Some(c)) if c.is_empty() => continue,
                Ok(Some(c)) => {
                    self.read = self.read.saturating_add(c.len() as u64);
                    return Ok(Some(c));
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
        Ok(None)
    }

    /// Bytes handed out so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

/// A backend's raw answer body.
#[derive(Debug)]
pub enum RawBody {
    /// All at once.
    Bytes(Bytes),
    /// Produced as the client reads it. An error after the first chunk
    /// aborts the response (the client sees a reset or an incomplete
    /// chunked body, never a complete 200).
    Stream(ByteStream),
}

/// Chunks from a tokio channel: a backend producing a streamed answer from
/// a task sends chunks (or a final error) here; the channel's bound is the
/// backpressure.
#[derive(Debug)]
pub struct ChannelSource(pub tokio::sync::mpsc::Receiver<Result<Bytes, LogicalError>>);

impl ChunkSource for ChannelSource {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, LogicalError>> {
        Box::pin(async move { self.0.recv().await.transpose() })
    }
}

/// A fixed list of chunks (tests, small answers).
#[derive(Debug)]
pub struct ChunksSource(pub std::collections::VecDeque<Bytes>);

impl ChunkSource for ChunksSource {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, LogicalError>> {
        Box::pin(async move { Ok(self.0.pop_front()) })
    }
}
