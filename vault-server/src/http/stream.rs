//! Streamed request and response bodies: the HTTP side of
//! [`logical::stream`](crate::logical::stream).
//!
//! A streamed request body is read chunk by chunk as the backend asks for
//! it (hyper reads from the socket only when polled, so TCP flow control
//! slows a sender whose data the backend has not taken: backpressure end
//! to end). Each chunk the backend holds is counted against the shared
//! in-flight budget until it asks for the next one, so many concurrent
//! uploads cannot exhaust memory; the stall timeout applies per chunk as
//! for buffered bodies.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};

use super::budget::{Budget, Held};
use crate::logical::{BoxFuture, ByteStream, ChunkSource, LogicalError};

/// The chunks of an HTTP request body, at most `limit` bytes in all.
pub(super) struct HttpChunks {
    pub(super) body: Body,
    pub(super) limit: u64,
    pub(super) stall: Duration,
    pub(super) budget: Arc<Budget>,
    pub(super) peer: IpAddr,
    read: u64,
    held: Held,
}

impl HttpChunks {
    pub(super) fn new(body: Body, limit: u64, stall: Duration, budget: Arc<Budget>, peer: IpAddr) -> Self {
        Self { body, limit, stall, budget, peer, read: 0, held: Held::default() }
    }
}

impl ChunkSource for HttpChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, LogicalError>> {
        Box::pin(async move {
            // The backend asks for more once it is done with the last chunk.
            self.held = Held::default();
            loop {
                let next = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx));
                let frame = match tokio::time::timeout(self.stall, next).await {
                    Err(_) => {
                        return Err(LogicalError::TimedOut(format!(
                            "timed out reading the request body (no data for {} s)",
                            self.stall.as_secs()
                        )));
                    }
                    Ok(None) => return Ok(None),
                    Ok(Some(Err(e))) => {
                        tracing::debug!(error = %e, "streamed request body could not be read");
                        return Err(LogicalError::InvalidRequest("failed to read the request body".into()));
                    }
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else { continue };
                self.read = self.read.saturating_add(data.len() as u64);
                if self.read > self.limit {
                    return Err(LogicalError::TooLarge(format!(
                        "request body exceeds the limit of {} bytes",
                        self.limit
                    )));
                }
                if !self.budget.cover(&mut self.held, self.peer, data.len()) {
                    return Err(LogicalError::Busy("too many request bytes in flight; retry shortly".into()));
                }
                return Ok(Some(data));
            }
        })
    }
}

/// A response body produced from a [`ByteStream`]; an error after the
/// first byte aborts the response (hyper resets the stream or leaves the
/// chunked body incomplete), so a client can never take a failed stream
/// for a complete one.
pub(super) fn response_body(stream: ByteStream) -> Body {
    let s = futures_util::stream::unfold(stream, |mut s| async move {
        match s.next().await {
            Ok(Some(chunk)) => Some((Ok::<_, LogicalError>(chunk), s)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a streamed response failed; aborting it");
                Some((Err(e), s))
            }
        }
    });
    Body::from_stream(s)
}
