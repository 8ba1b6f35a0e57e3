//! Serving connections with hyper-util, plain or TLS, with the listener
//! limits `axum::serve` cannot set: a cap on concurrent connections, a
//! header-read timeout, an idle timeout and a TLS handshake timeout (the
//! body-read timeout is applied where the body is read, in `dispatch`).
//!
//! Timeouts follow Vault's `listener "tcp"` semantics (Go's `net/http`):
//! - `http_read_header_timeout` (10 s): a request's head must be complete
//!   this long after the connection opened, or after its first byte arrived
//!   on a kept-alive connection;
//! - `http_idle_timeout` (5 min): a connection with no request in flight is
//!   closed after this long; a response the client stops reading is cut
//!   after this long without progress;
//! - `http_read_timeout` (30 s): see `read_body` (a stalled body is a 408).
//!
//! A request in flight has no connection deadline while its handler runs:
//! it may wait (KV `wait_for_version_after`) as long as it needs. Once only
//! answers are being sent (a streamed answer lasts as long as its upload),
//! the connection must make progress: an answer that moves no frame for the
//! idle timeout closes it (a reader that stops reading, an HTTP/2 peer that
//! never opens its window).
//!
//! Connections beyond `max_connections` wait in the kernel's accept backlog
//! (no descriptor, no memory here) until a slot frees, instead of being
//! refused: a burst of clients is slowed down, not failed, and the timeouts
//! above bound how long an idle or stalled connection can hold a slot.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

/// The peer address of a connection, plain or TLS, inserted into every
/// request as axum's `ConnectInfo<PeerAddr>`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Listener limits (the `[listener]` table of the config file). Defaults are
/// Vault's listener defaults where Vault has the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// `http_read_header_timeout`: time to receive a request's head (Vault: 10 s).
    pub read_header_timeout: Duration,
    /// `http_read_timeout`: longest pause while a request body is read (Vault: 30 s).
    pub read_timeout: Duration,
    /// `http_idle_timeout`: how long a connection may stay without a request (Vault: 5 min).
    pub idle_timeout: Duration,
    /// `max_connections`: concurrent connections served; more wait to be accepted.
    pub max_connections: usize,
    /// `tls_handshake_timeout`: time to complete a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// `max_request_bytes_in_flight`: request bodies buffered at once, all
    /// connections together (each is also capped by `max_request_bytes`);
    /// beyond it a request gets a 503 instead of the server running out of
    /// memory (bodies are read before authentication).
    pub max_request_bytes_in_flight: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
            tls_handshake_timeout: Duration::from_secs(10),
            max_request_bytes_in_flight: 512 * 1024 * 1024,
        }
    }
}

/// Concurrent requests on one HTTP/2 connection.
pub(crate) const MAX_H2_STREAMS: u32 = 100;

/// Shutdown phases sent to every connection task.
const RUNNING: u8 = 0;
/// Finish the requests in flight, accept no new ones, close.
const DRAINING: u8 = 1;
/// The grace period is over: drop the connection.
const KILLED: u8 = 2;

/// Serve `app` on `listener` (over TLS when `tls` is set) until `shutdown`
/// resolves; then stop accepting, let requests in flight finish for up to
/// `grace`, and drop whatever connection is still open.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    // The config allows 1..=1,000,000; clamp here too so the cast below is exact.
    let max = u32::try_from(limits.max_connections.clamp(1, 1_000_000)).unwrap_or(1_000_000);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (ctl_tx, ctl_rx) = watch::channel(RUNNING);
    let tls = tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    // The header and idle deadlines live in `Guarded`. hyper's own header
    // timer (on by default once a timer is set) would also cut kept-alive
    // connections after the header timeout, and costs a timer per request.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    // Each HTTP/2 stream is a request (with a body budget): bound them per
    // connection like Go's server (250) does, a little tighter.
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_H2_STREAMS);
    let builder = Arc::new(builder);
    let mut shutdown = pin!(shutdown);
    let mut full_logged = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(max_connections = max, "connection limit reached; new connections wait");
                    full_logged = true;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if slots.available_permits() > 0 {
            full_logged = false;
        }
        let conn =
            Conn { builder: builder.clone(), app: app.clone(), tls: tls.clone(), limits, ctl: ctl_rx.clone(), peer };
        tokio::spawn(async move {
            conn.run(stream).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = ctl_tx.send(DRAINING);
    // Every connection holds a slot: all slots back means all closed.
    if tokio::time::timeout(grace, slots.acquire_many(max)).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing them");
        let _ = ctl_tx.send(KILLED);
        // Dropping a connection is immediate; wait briefly for the tasks to see it.
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(max)).await;
    }
}

/// One accepted connection.
struct Conn {
    builder: Arc<Builder<TokioExecutor>>,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ListenerLimits,
    ctl: watch::Receiver<u8>,
    peer: SocketAddr,
}

impl Conn {
    async fn run(mut self, tcp: TcpStream) {
        let peer = self.peer;
        match self.tls.take() {
            None => self.http(tcp).await,
            Some(acceptor) => {
                let hs = tokio::time::timeout(self.limits.tls_handshake_timeout, acceptor.accept(tcp));
                let tls = tokio::select! {
                    r = hs => r,
                    _ = self.ctl.wait_for(|s| *s != RUNNING) => return,
                };
                match tls {
                    Ok(Ok(stream)) => self.http(stream).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn http<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut self, io: T) {
        let clock = Arc::new(Clock::new());
        let io = TokioIo::new(Guarded::new(io, clock.clone(), &self.limits));
        let app = TowerToHyperService::new(self.app.clone());
        let peer = self.peer;
        let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
            let in_flight = clock.request_started();
            req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
            let fut = hyper::service::Service::call(&app, req);
            async move {
                // The request stays in flight until its answer's body is
                // sent: a streamed answer (transit streams) starts before
                // the upload ends, and the connection is not idle meanwhile
                // (no header or idle deadline cuts it).
                let r = fut.await;
                r.map(|resp| resp.map(|body| axum::body::Body::new(HeldBody::new(body, in_flight))))
            }
        });
        let mut conn = pin!(self.builder.serve_connection(io, svc));
        let mut draining = false;
        loop {
            let phase = if draining { KILLED } else { DRAINING };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                // A closed channel (the server is gone) counts as killed.
                r = self.ctl.wait_for(|s| *s >= phase) => {
                    if r.is_err() || phase == KILLED {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// Milliseconds since the connection opened; `NONE` for "not set".
const NONE: u64 = u64::MAX;

/// What the connection is doing, shared by its I/O (which enforces the
/// deadlines) and its service (which knows when a request is in flight).
#[derive(Debug)]
struct Clock {
    opened: Instant,
    /// Requests in flight (HTTP/2 may have several).
    busy: AtomicUsize,
    /// When the connection last became idle (opened, or last request done).
    idle_since: AtomicU64,
    /// When the head being read started (open, or first byte after idle).
    head_since: AtomicU64,
    /// Of `busy`, the requests whose handler is done and whose answer's
    /// body is being sent ([`HeldBody`]).
    sending: AtomicUsize,
    /// When an answer being sent last made progress (a body frame taken,
    /// or, on HTTP/1, bytes of the request read).
    progress_at: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
            progress_at: AtomicU64::new(0),
        }
    }

    fn progressed(&self) {
        self.progress_at.store(self.now(), Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.head_since.store(NONE, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight; dropping it (response ready, or the request
/// abandoned) may make the connection idle.
struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until hyper drops it
/// (sent in full, or the connection gone). While it is being sent the
/// connection is held to progress instead: an answer that takes no step for
/// the idle timeout (a reader that stops reading, an HTTP/2 peer that never
/// opens its flow-control window) closes the connection.
struct HeldBody {
    body: axum::body::Body,
    in_flight: InFlight,
}

impl HeldBody {
    fn new(body: axum::body::Body, in_flight: InFlight) -> Self {
        in_flight.0.progressed();
        in_flight.0.sending.fetch_add(1, Ordering::Relaxed);
        Self { body, in_flight }
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        self.in_flight.0.sending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::body::Body for HeldBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = hyper::body::Body::poll_frame(Pin::new(&mut self.body), cx);
        if let Poll::Ready(Some(Ok(_))) = &r {
            self.in_flight.0.progressed();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream that fails a pending read or write with `TimedOut` once the
/// connection's deadline has passed, which makes hyper close it.
struct Guarded<T> {
    inner: T,
    clock: Arc<Clock>,
    header_ms: u64,
    idle_ms: u64,
    /// HTTP/2 (known from the preface): bytes that arrive while idle are
    /// pings and window updates, not the start of a new request head.
    h2: Option<bool>,
    seen: Vec<u8>,
    read_timer: Option<(u64, Pin<Box<Sleep>>)>,
    /// Since when writes have been pending without progress (`NONE`: they are not).
    write_stalled: u64,
    write_timer: Option<(u64, Pin<Box<Sleep>>)>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NONE / 2).min(NONE / 2)
}

impl<T> Guarded<T> {
    fn new(inner: T, clock: Arc<Clock>, limits: &ListenerLimits) -> Self {
        Self {
            inner,
            clock,
            header_ms: ms(limits.read_header_timeout),
            idle_ms: ms(limits.idle_timeout),
            h2: None,
            seen: Vec::new(),
            read_timer: None,
            write_stalled: NONE,
            write_timer: None,
        }
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if self.h2.is_none() {
            // Decide from the first bytes whether this is the HTTP/2 preface.
            let want = H2_PREFACE.len() - self.seen.len();
            self.seen.extend_from_slice(&bytes[..bytes.len().min(want)]);
            if !H2_PREFACE.starts_with(&self.seen) {
                self.h2 = Some(false);
                self.seen = Vec::new();
            } else if self.seen.len() == H2_PREFACE.len() {
                self.h2 = Some(true);
                self.seen = Vec::new();
            }
        }
        let c = &self.clock;
        if self.h2 == Some(false) {
            // An HTTP/1 upload whose answer is being sent is progress (on
            // HTTP/2, reads may be pings: only body frames count there).
            c.progressed();
        }
        if self.h2 != Some(true) && c.busy.load(Ordering::Relaxed) == 0 && c.head_since.load(Ordering::Relaxed) == NONE
        {
            // HTTP/1: the first byte after an idle period starts a new head.
            c.head_since.store(c.now(), Ordering::Relaxed);
        }
    }

    /// When a pending read must give up, or, while a request is in flight
    /// (no deadline), when to look again.
    fn read_deadline(&self) -> Deadline {
        let c = &self.clock;
        let busy = c.busy.load(Ordering::Relaxed);
        if busy > 0 && busy == c.sending.load(Ordering::Relaxed) {
            // Only answers being sent: each step of theirs pushes this on.
            return Deadline::Close(c.progress_at.load(Ordering::Relaxed).saturating_add(self.idle_ms));
        }
        if busy > 0 {
            // hyper may not poll the socket again when the request ends (its
            // last read already registered for readiness); this wake-up makes
            // it, so the idle deadline gets armed.
            return Deadline::Recheck(c.now().saturating_add(self.idle_ms));
        }
        let idle = c.idle_since.load(Ordering::Relaxed).saturating_add(self.idle_ms);
        match c.head_since.load(Ordering::Relaxed) {
            NONE => Deadline::Close(idle),
            h => Deadline::Close(idle.min(h.saturating_add(self.header_ms))),
        }
    }
}

/// A point in time (ms since open) for a pending read or write.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// Fail with `TimedOut` then.
    Close(u64),
    /// Only wake the connection then.
    Recheck(u64),
}

/// Pending until the deadline, then `TimedOut` (or a wake-up). The timer is
/// kept between polls and only moved earlier: when the deadline moves later
/// (every request pushes the idle deadline) it fires early once and is
/// re-armed then, which keeps timer updates off the per-request path.
fn wait_until(
    clock: &Clock,
    timer: &mut Option<(u64, Pin<Box<Sleep>>)>,
    deadline: Deadline,
    cx: &mut Context<'_>,
) -> Poll<io::Error> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connection deadline passed");
    let (deadline, fatal) = match deadline {
        Deadline::Close(d) => (d, true),
        Deadline::Recheck(d) => (d, false),
    };
    if fatal && clock.now() >= deadline {
        return Poll::Ready(timed_out());
    }
    let at = |ms: u64| tokio::time::Instant::from_std(clock.opened + Duration::from_millis(ms));
    let (armed, sleep) = timer.get_or_insert_with(|| (deadline, Box::pin(tokio::time::sleep_until(at(deadline)))));
    if deadline < *armed {
        *armed = deadline;
        sleep.as_mut().reset(at(deadline));
    }
    loop {
        match sleep.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            // Armed for this deadline (or a later one, which cannot be): due.
            Poll::Ready(()) if fatal && *armed >= deadline => return Poll::Ready(timed_out()),
            // A wake-up that has been delivered: nothing more to do.
            Poll::Ready(()) if *armed >= deadline => return Poll::Pending,
            // Armed for an earlier deadline that has since moved: re-arm.
            Poll::Ready(()) => {
                *armed = deadline;
                sleep.as_mut().reset(at(deadline));
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_read(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let d = this.read_deadline();
                wait_until(&this.clock, &mut this.read_timer, d, cx).map(Err)
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Guarded<T> {
    /// A write that makes no progress for the idle timeout fails: a client
    /// that stops reading its responses does not hold the connection forever.
    fn write_result<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => {
                if self.write_stalled == NONE {
                    self.write_stalled = self.clock.now();
                }
                let d = self.write_stalled.saturating_add(self.idle_ms);
                wait_until(&self.clock, &mut self.write_timer, Deadline::Close(d), cx).map(Err)
            }
            ready => {
                self.write_stalled = NONE;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_result(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_result(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_result(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
