//! One client connection: TLS, then HTTP/1.1 or HTTP/2, and what an idle
//! HTTP/1.1 connection keeps while it waits for its next request: nothing
//! but its socket.
//!
//! hyper's HTTP/1.1 connection keeps a read and a write buffer (8 KiB each)
//! and its request state for as long as it lives. A browser keeps several
//! connections open and quiet for minutes, so once a connection has been
//! quiet for [`PARK_AFTER`] its hyper state is ended (at a request
//! boundary, nothing on the wire is lost: bytes hyper had read but not yet
//! used come back with the socket) and the task waits on the bare socket;
//! the next request gets a new one.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::{ConnInfo, DRAIN_LINGER, Handler, Limits, Shutdown};
use crate::metrics::Metrics;
use crate::proxy::body::Body;
use crate::proxy::upgrade::{UpgradeSlot, read_prefix, tunnel};

/// How long an HTTP/1.1 connection may stay quiet (no request in flight,
/// nothing received) before it gives back its HTTP state. Checked this
/// often: a connection is parked one to two periods after its last
/// answer, so one in steady use never is.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// The future of an HTTP/1.1 answer: the handler's, boxed (hyper keeps a
/// slot the size of its service's future for the whole life of its
/// connection state; boxed, the handler's state, kilobytes, lives only
/// while a request is in flight), then marked when the listener drains and
/// counted. A named future, not an `async` block around the handler's: that
/// would be one more copy of the handler's state per request.
struct Answer {
    handling: Pin<Box<dyn Future<Output = Response<Body>> + Send>>,
    draining: Shutdown,
    shared: Arc<Shared>,
}

impl Future for Answer {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut resp = std::task::ready!(this.handling.as_mut().poll(cx));
        close_if_draining(&mut resp, &this.draining);
        Poll::Ready(Ok(resp.map(|body| Tracked { body, shared: this.shared.clone() })))
    }
}

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP settings of a listener, built once.
pub(super) struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    pub(super) fn new(limits: &Limits) -> Builders {
        let mut http1 = http1::Builder::new();
        // The header read timeout is the connection task's (see
        // `drive_http1`): hyper's arms a timer for every request head
        // (allocated, put in the timer wheel, taken out again).
        http1
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders { http1, http2 }
    }
}

pub(super) struct Connection<H> {
    pub(super) builders: Arc<Builders>,
    pub(super) handler: Arc<H>,
    pub(super) metrics: Option<Arc<Metrics>>,
    pub(super) shutdown: Shutdown,
    pub(super) header_read_timeout: Duration,
}

impl<H: Handler> Connection<H> {
    // What a connection costs while it waits is what its task holds, so the
    // task's own future is kept small: the TLS session and the HTTP state
    // are boxed and allocated only once the client has sent its first bytes.
    pub(super) async fn run(self, stream: TcpStream, peer: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) {
        // A client that sends nothing within header_read_timeout is closed,
        // as one that sends an incomplete request head is.
        let accepted = Instant::now();
        let deadline = accepted + self.header_read_timeout;
        let first = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.next_bytes()) => r,
            () = self.shutdown.cancelled() => return,
        };
        match first {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "connection failed before its first bytes");
                return;
            }
            Err(_) => {
                debug!(%peer, "nothing received within header_read_timeout");
                return;
            }
        }
        match tls {
            None => match is_http2(&stream, deadline).await {
                Some(false) => Box::pin(self.serve_http1(stream, ConnInfo { peer, tls: false }, accepted)).await,
                Some(true) => Box::pin(self.serve_http2(stream, ConnInfo { peer, tls: false })).await,
                None => debug!(%peer, "connection ended inside the HTTP/2 preface"),
            },
            Some(config) => Box::pin(self.serve_tls(stream, peer, config)).await,
        }
    }

    async fn serve_tls(&self, stream: TcpStream, peer: SocketAddr, config: Arc<rustls::ServerConfig>) {
        let accept = TlsAcceptor::from(config).accept(stream);
        match tokio::time::timeout(self.header_read_timeout, accept).await {
            Ok(Ok(tls)) => {
                let info = ConnInfo { peer, tls: true };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    self.serve_http2(tls, info).await;
                } else {
                    self.serve_http1(tls, info, Instant::now()).await;
                }
            }
            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn serve_http2<I: ClientIo>(&self, io: I, info: ConnInfo) {
        let handler = self.handler.clone();
        let draining = self.shutdown.clone();
        let kept = Arc::new(H::PerConnection::default());
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let draining = draining.clone();
            let kept = kept.clone();
            Box::pin(async move {
                let mut resp = handler.call(req, info, &kept).await;
                close_if_draining(&mut resp, &draining);
                Ok::<_, Infallible>(resp)
            })
        });
        let conn = self.builders.http2.serve_connection(TokioIo::new(io), service);
        let mut conn = pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = self.shutdown.cancelled() => {
                // Requests in flight finish; new streams are refused (GOAWAY).
                tokio::select! {
                    r = conn.as_mut() => r,
                    () = tokio::time::sleep(DRAIN_LINGER) => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            }
        };
        if let Err(e) = result {
            debug!(peer = %info.peer, error = %e, "connection ended with an error");
        }
    }

    async fn serve_http1<I: ClientIo>(&self, mut io: I, info: ConnInfo, accepted: Instant) {
        let shared = Arc::new(Shared::default());
        let mut unread = Bytes::new();
        // Since when the connection waits for a request head: it was
        // accepted, or its last answer went out. A head not complete
        // header_read_timeout after that ends the connection (a slow
        // client's, or an idle keep-alive one), across parking too.
        let mut head_since = accepted;
        loop {
            // Boxed: while parked, this task's future holds no room for
            // hyper's connection state (kilobytes).
            let state = Box::pin(self.http1_state(io, unread, info, &shared, &mut head_since));
            let Some((socket, rest, parked)) = state.await else {
                return;
            };
            if let Some(upstream) = shared.take_upgrade() {
                Box::pin(tunnel(Watched { io: socket, prefix: rest, shared }, upstream)).await;
                return;
            }
            io = socket;
            if !parked {
                // The client closed, or asked to, or the listener drains.
                let _ = tokio::time::timeout(self.header_read_timeout, io.shutdown()).await;
                return;
            }
            unread = rest;
            if unread.is_empty() {
                // Parked: the task holds the socket and this wait, until
                // header_read_timeout after the last answer.
                let deadline = head_since + self.header_read_timeout;
                let _parked = self.metrics.as_ref().map(|m| Parked::new(m.clone()));
                crate::memory::freed();
                let next = tokio::select! {
                    r = tokio::time::timeout_at(deadline, io.next_bytes()) => r,
                    () = self.shutdown.cancelled() => return,
                };
                match next {
                    // A new head begins (nothing of it had come before
                    // parking): it has header_read_timeout from now.
                    Ok(Ok(n)) if n > 0 => head_since = Instant::now(),
                    _ => return,
                }
            }
        }
    }

    /// One hyper HTTP/1.1 state on the socket, from `unread` (bytes an
    /// earlier state had read but not used) until it ends: the socket back,
    /// what the client sent that was not used yet, and whether it was ended
    /// to park. `None`: the connection failed.
    async fn http1_state<I: ClientIo>(
        &self,
        io: I,
        unread: Bytes,
        info: ConnInfo,
        shared: &Arc<Shared>,
        head_since: &mut Instant,
    ) -> Option<(I, Bytes, bool)> {
        let watched = Watched { io, prefix: unread, shared: shared.clone() };
        let mut conn = self.builders.http1.serve_connection(TokioIo::new(watched), self.http1_service(info, shared));
        let (result, parked) = match self.drive_http1(&mut conn, shared, head_since).await {
            Ended::Hyper(result, parked) => (result, parked),
            Ended::HeadTimeout => {
                debug!(peer = %info.peer, "no complete request head within header_read_timeout");
                return None;
            }
        };
        if let Err(e) = result {
            debug!(peer = %info.peer, error = %e, "connection ended with an error");
            return None;
        }
        let http1::Parts { io: watched, read_buf, .. } = conn.into_parts();
        let Watched { io: socket, prefix, .. } = watched.into_inner();
        // Copied out: hyper's read_buf, empty or not, holds on to its whole
        // 8 KiB buffer.
        let rest = if read_buf.is_empty() && prefix.is_empty() {
            Bytes::new()
        } else {
            let mut joined = BytesMut::with_capacity(read_buf.len() + prefix.len());
            joined.extend_from_slice(&read_buf);
            joined.extend_from_slice(&prefix);
            joined.freeze()
        };
        Some((socket, rest, parked))
    }

    fn http1_service(
        &self,
        info: ConnInfo,
        shared: &Arc<Shared>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Tracked>,
        Error = Infallible,
        Future = Answer,
    > + use<H> {
        let handler = self.handler.clone();
        let draining = self.shutdown.clone();
        let shared = shared.clone();
        // What the handler keeps for the connection lives as long as this
        // hyper state: a parked connection holds none of it.
        let kept = Arc::new(H::PerConnection::default());
        service_fn(move |mut req: Request<Incoming>| {
            shared.started.fetch_add(1, Relaxed);
            if req.headers().contains_key(header::UPGRADE) {
                let slot = UpgradeSlot::default();
                *shared.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(slot.clone());
                req.extensions_mut().insert(slot);
            }
            Answer {
                handling: Box::pin(handler.call(req, info, &kept)),
                draining: draining.clone(),
                shared: shared.clone(),
            }
        })
    }

    /// Runs one hyper HTTP/1.1 state until it ends (and whether it was
    /// ended to park the connection), or until no request head came within
    /// header_read_timeout of `head_since`, which it moves on as answers
    /// finish.
    async fn drive_http1<I, S>(
        &self,
        conn: &mut http1::Connection<I, S>,
        shared: &Shared,
        head_since: &mut Instant,
    ) -> Ended
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin,
        S: hyper::service::HttpService<Incoming, ResBody = Tracked> + Unpin,
        S::Future: Unpin,
    {
        enum State {
            Running,
            /// The listener drains: one more answer may come, saying
            /// `Connection: close`, until DRAIN_LINGER.
            Lingering,
            /// hyper finishes what is in flight, then the connection closes.
            Closing,
        }
        let mut cancelled = pin!(self.shutdown.cancelled());
        let mut check = pin!(tokio::time::sleep(PARK_AFTER));
        let mut linger = pin!(tokio::time::sleep(DRAIN_LINGER));
        let mut seen = shared.started.load(Relaxed);
        let mut counts = shared.counts();
        let mut state = State::Running;
        // The shutdown signal and the idle check are polled once, to
        // register this task's waker; later wake-ups (one per read or
        // write) read their flags instead (polling the signal takes a lock
        // shared by every connection).
        let mut registered = false;
        poll_fn(|cx| {
            loop {
                if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                    return Poll::Ready(Ended::Hyper(r, false));
                }
                // Once a period, in every state: a request head overdue
                // ends the connection. (The wait for a head began when the
                // last answer finished: at most a period before it is seen.)
                if registered && check.is_elapsed() {
                    let now = Instant::now();
                    let now_counts = shared.counts();
                    let waiting = now_counts.0 == now_counts.1;
                    if waiting && now_counts != counts {
                        *head_since = now;
                    }
                    counts = now_counts;
                    if waiting && now >= *head_since + self.header_read_timeout {
                        return Poll::Ready(Ended::HeadTimeout);
                    }
                }
                match state {
                    State::Running => {
                        if !registered {
                            registered = true;
                            if cancelled.as_mut().poll(cx).is_ready() {
                                state = State::Lingering;
                                linger.as_mut().reset(Instant::now() + DRAIN_LINGER);
                                continue;
                            }
                            if check.as_mut().poll(cx).is_ready() {
                                continue;
                            }
                        } else if self.shutdown.is_cancelled() {
                            state = State::Lingering;
                            linger.as_mut().reset(Instant::now() + DRAIN_LINGER);
                            continue;
                        }
                        if check.is_elapsed() {
                            if shared.quiet_since(&mut seen) {
                                // Idle, hyper ends its state at once, with
                                // no I/O. If it does not, it was not idle
                                // after all (a request body left unread):
                                // it finishes that and the connection
                                // closes, as it would have; parking then
                                // could read the rest of that body as a
                                // request.
                                Pin::new(&mut *conn).graceful_shutdown();
                                if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                                    return Poll::Ready(Ended::Hyper(r, true));
                                }
                                state = State::Closing;
                            }
                            check.as_mut().reset(Instant::now() + PARK_AFTER);
                            let _ = check.as_mut().poll(cx);
                            continue;
                        }
                        return Poll::Pending;
                    }
                    State::Lingering | State::Closing => {
                        if matches!(state, State::Lingering) && linger.as_mut().poll(cx).is_ready() {
                            Pin::new(&mut *conn).graceful_shutdown();
                            state = State::Closing;
                            continue;
                        }
                        // The head check goes on (a half head may be what
                        // hyper waits for).
                        if check.is_elapsed() {
                            check.as_mut().reset(Instant::now() + PARK_AFTER);
                        }
                        let _ = check.as_mut().poll(cx);
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }
}

/// HTTP/2 with prior knowledge starts with its connection preface;
/// anything else on a plain listener is HTTP/1.1. `None`: the client went
/// away, or stopped inside the preface until the deadline.
async fn is_http2(stream: &TcpStream, deadline: Instant) -> Option<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // The rest of the preface is on its way (rare: it fits a packet).
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Once the listener drains, every HTTP/1.1 connection closes after its
/// in-flight answer, which must say `Connection: close`, or a keep-alive
/// client sends its next request into the closing socket. hyper adds it
/// when `graceful_shutdown` reaches the connection before the answer's head
/// is written; an answer finished in between gets it here. (HTTP/2 drops
/// the header and sends GOAWAY.) Not an async wrapper around the handler:
/// one more layer of future costs a copy of the request's state.
fn close_if_draining(resp: &mut Response<Body>, draining: &Shutdown) {
    if draining.is_cancelled() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// How a hyper HTTP/1.1 state ended.
enum Ended {
    /// hyper ended it (`true`: to park the connection).
    Hyper(hyper::Result<()>, bool),
    /// No complete request head within header_read_timeout.
    HeadTimeout,
}

/// A client socket, plain or TLS.
pub(super) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Waits until the client has sent something: the number of bytes
    /// waiting on the socket, 0 when it closed.
    fn next_bytes(&self) -> impl Future<Output = io::Result<usize>> + Send;
}

impl ClientIo for TcpStream {
    async fn next_bytes(&self) -> io::Result<usize> {
        self.peek(&mut [0u8; 1]).await
    }
}

impl ClientIo for TlsStream<TcpStream> {
    // TLS records on the socket: a request, or an alert hyper will read.
    async fn next_bytes(&self) -> io::Result<usize> {
        self.get_ref().0.peek(&mut [0u8; 1]).await
    }
}

/// Keeps the parked-connections gauge right however the wait ends.
struct Parked(Arc<Metrics>);

impl Parked {
    fn new(metrics: Arc<Metrics>) -> Parked {
        metrics.connections_parked.inc();
        Parked(metrics)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.connections_parked.dec();
    }
}

/// What the connection task learns from its HTTP/1.1 state without
/// reaching into it.
#[derive(Default)]
struct Shared {
    /// Requests handed to the handler, and answers whose body hyper is done
    /// with: equal when nothing is in flight.
    started: AtomicU32,
    finished: AtomicU32,
    /// Bytes received since the last idle check (a request head on its way).
    read: AtomicBool,
    /// hyper's last write was refused by a full socket: some of an answer
    /// is still in its buffer.
    write_blocked: AtomicBool,
    upgrade: Mutex<Option<UpgradeSlot>>,
}

impl Shared {
    /// Requests started and answers finished so far.
    fn counts(&self) -> (u32, u32) {
        (self.started.load(Relaxed), self.finished.load(Relaxed))
    }

    /// Nothing in flight, received or left to send since the last check.
    fn quiet_since(&self, seen: &mut u32) -> bool {
        let started = self.started.load(Relaxed);
        let read = self.read.swap(false, Relaxed);
        let quiet =
            started == *seen && started == self.finished.load(Relaxed) && !read && !self.write_blocked.load(Relaxed);
        *seen = started;
        quiet
    }

    fn take_upgrade(&self) -> Option<crate::proxy::upstream::Upgraded> {
        self.upgrade.lock().unwrap_or_else(PoisonError::into_inner).take()?.take()
    }
}

/// An answer's body, counted as finished when hyper drops it (written, or
/// the connection ended).
pub(super) struct Tracked {
    body: Body,
    shared: Arc<Shared>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.shared.finished.fetch_add(1, Relaxed);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket as an HTTP/1.1 state sees it: first the bytes an
/// earlier state had read but not used, then the socket; reads and
/// refused writes noted for the idle check.
struct Watched<I> {
    io: I,
    prefix: Bytes,
    shared: Arc<Shared>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if read_prefix(&mut this.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.shared.read.store(true, Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.shared.write_blocked.store(r.is_pending(), Relaxed);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.shared.write_blocked.store(r.is_pending(), Relaxed);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
