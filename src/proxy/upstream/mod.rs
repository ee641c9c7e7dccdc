//! porteiro's HTTP/1.1 client for upstreams: one pool of keep-alive
//! connections per upstream (scheme + authority), built with the gateway.
//!
//! The exchange runs inside the request's own task: the request head is
//! written, the answer's head read and parsed ([`h1`]), and the answer's
//! body read from the socket as the client's connection takes it
//! ([`UpstreamBody`]). No task per connection, no channels between the two
//! sides: on the hot path (a pooled connection, an answer in one read) a
//! request costs one `write` and one `read` upstream, and its buffers are
//! the connection's own, reused.
//!
//! - Idle connections are kept last-in first-out: the warmest is reused and
//!   the coldest, at the front, expire after [`IDLE_TIMEOUT`]; at most
//!   [`MAX_IDLE`] per upstream. One the upstream has closed (or sent
//!   anything to) while idle is dropped when picked: the event loop has
//!   already seen it readable, so checking costs no system call.
//! - A request that met a connection closing as it was picked is retried
//!   once on a new connection when it cannot have been acted on: its head
//!   could not be written, or it is bodiless and idempotent and not a byte
//!   of answer came back. Otherwise the client gets a 502.
//! - A client's request body that fails (a malformed chunk, the client
//!   gone) is the client's fault, never the upstream's: before the answer
//!   it is [`UpstreamError::ClientBody`]; after, the answer goes on. Either
//!   way the upstream sees the request end mid-body, never its last chunk,
//!   and the connection is not reused. Request trailers are dropped.
//! - A connection goes back to the pool only when its exchange ended
//!   cleanly: the request body sent whole, the answer read to its end, no
//!   stray bytes after it, neither `Connection: close` nor a body delimited
//!   by the close. After `101 Switching Protocols` it belongs to the tunnel.

pub(crate) mod h1;

pub use h1::{HOP_BY_HOP, HOP_BY_HOP_LENGTHS};

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, warn};

use crate::proxy::upgrade::read_prefix;

use h1::{BodyKind, Chunk, ChunkedDecoder, ParseError, RequestFraming};

/// Idle connections kept per upstream; one more is closed instead.
pub const MAX_IDLE: usize = 1024;

/// How long a connection may sit idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP keepalive probes start after this much silence, so a dead upstream
/// host is noticed on connections the pool keeps.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A connection's read buffer: allocated once, reused while the bytes read
/// into it have been let go (answers are passed on before the next request).
const READ_BUFFER: usize = 16 * 1024;

/// Why an upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connection failed")]
    Connect,
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream request failed")]
    Request,
    /// The client's request body broke HTTP framing (a malformed chunk) or
    /// ended early, before the upstream answered: the client's fault, not
    /// the upstream's. The upstream got the request head and part of the
    /// body at most, never its end, and its connection is closed.
    #[error("the client's request body failed: {0}")]
    ClientBody(String),
}

/// How new connections are made; shared by every pool of a gateway.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl Connector {
    /// `tls` verifies `https` upstreams; `connect_timeout` bounds name
    /// resolution and the TCP connect (the TLS handshake counts against the
    /// request's own timeout).
    pub fn new(mut tls: rustls::ClientConfig, connect_timeout: Duration) -> Connector {
        // Only HTTP/1.1 is spoken upstream.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector { tls: TlsConnector::from(Arc::new(tls)), connect_timeout }
    }
}

/// The keep-alive connections to one upstream.
pub struct Pool {
    authority: Authority,
    /// `Host` for requests that do not keep the client's: the authority.
    host_header: Option<HeaderValue>,
    /// What to resolve: the authority's host, IPv6 brackets removed.
    host: String,
    port: u16,
    /// `Some` for `https`: the connector and the name the certificate must
    /// carry (`None` when the host is no valid server name: every connect fails).
    tls: Option<(TlsConnector, Option<ServerName<'static>>)>,
    connect_timeout: Duration,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Pool {
    /// An empty pool for `scheme://authority`; connections are made on demand.
    pub fn new(scheme: &Scheme, authority: &Authority, connector: &Connector) -> Pool {
        let https = *scheme == Scheme::HTTPS;
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_string();
        let tls = https.then(|| {
            let name = ServerName::try_from(host.clone()).ok();
            if name.is_none() {
                warn!(upstream = %authority, "not a valid TLS server name: connections to this upstream will fail");
            }
            (connector.tls.clone(), name)
        });
        Pool {
            host_header: HeaderValue::from_str(authority.as_str()).ok(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.clone(),
            host,
            tls,
            connect_timeout: connector.connect_timeout,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether this is the pool for `scheme://authority`.
    pub fn is_for(&self, scheme: &Scheme, authority: &Authority) -> bool {
        self.tls.is_some() == (*scheme == Scheme::HTTPS) && self.authority == *authority
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The authority as a `Host` value, built once.
    pub fn host_header(&self) -> Option<&HeaderValue> {
        self.host_header.as_ref()
    }

    /// Sends `req` (origin-form URI, `Host` set, hop-by-hop headers gone) on
    /// an idle connection or a new one and returns the answer's head; its
    /// body streams from the connection. Not bounded in time here: the
    /// caller's timeout covers it all.
    pub async fn send<B>(
        self: &Arc<Self>,
        req: Request<B>,
        added: crate::proxy::Added,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::error::Error,
    {
        let (parts, body) = req.into_parts();
        let framing = RequestFraming::of(&parts.method, body.is_end_stream(), body.size_hint().exact());
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let bodiless = matches!(framing, RequestFraming::None | RequestFraming::Length(0));
        // Bodiless requests keep theirs here (empty; it ends with the request).
        let (_empty, mut body) = if bodiless { (Some(body), None) } else { (None, Some(body)) };
        let mut idle = self.take_idle();
        loop {
            let reused = idle.is_some();
            let mut conn = match idle.take() {
                Some(conn) => conn,
                // Boxed: connecting (TLS included) takes a few KB of future
                // state that every request would otherwise carry.
                None => Box::pin(self.connect()).await?,
            };
            h1::encode_request_head(&mut conn.head, &parts.method, target, &parts.headers, &added, framing);
            let mut upload = body.take().map(|b| Box::new(Upload::new(b, framing == RequestFraming::Chunked)));
            match exchange(&mut conn, &mut upload, &parts.method).await {
                Ok(head) => return Ok(self.answer(conn, head, upload)),
                Err(Failure::ClientBody(why)) => return Err(UpstreamError::ClientBody(why)),
                Err(failure) => {
                    let unsent = matches!(failure, Failure::HeadWrite(_));
                    let unanswered = matches!(failure, Failure::Unanswered(_));
                    if reused && (unsent || (unanswered && bodiless && parts.method.is_idempotent())) {
                        // The upstream closed the connection as it was picked:
                        // nothing was acted on, so a new connection may try.
                        debug!(upstream = %self.authority, error = %failure, "pooled upstream connection closed; retrying on a new one");
                        body = upload.map(|u| u.body);
                        continue;
                    }
                    debug!(upstream = %self.authority, error = %failure, "upstream request failed");
                    return Err(UpstreamError::Request);
                }
            }
        }
    }

    /// The answer for `head`: its body reads on from `conn`.
    fn answer<B>(
        self: &Arc<Self>,
        conn: Box<Conn>,
        head: h1::Head,
        upload: Option<Box<Upload<B>>>,
    ) -> Response<UpstreamBody<B>> {
        let reading = if head.status == StatusCode::SWITCHING_PROTOCOLS {
            Reading::Switched
        } else {
            match head.body {
                BodyKind::Empty => Reading::Done,
                BodyKind::Length(n) => Reading::Length(n),
                BodyKind::Chunked => Reading::Chunked(ChunkedDecoder::default()),
                BodyKind::Close => Reading::Close,
            }
        };
        let mut body = UpstreamBody { conn: Some(conn), pool: self.clone(), reading, upload, reusable: head.reusable };
        if matches!(body.reading, Reading::Done) {
            body.finish();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // The list stays consistent whatever a panicking holder did.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection still open.
    fn take_idle(&self) -> Option<Box<Conn>> {
        let now = Instant::now();
        loop {
            let mut conn = {
                let mut idle = self.lock();
                expire_oldest(&mut idle, now);
                idle.pop_back()?.conn
            };
            if conn.is_idle_and_open() {
                return Some(conn);
            }
        }
    }

    /// Puts a connection whose exchange has ended cleanly back, newest last.
    fn put(&self, conn: Box<Conn>) {
        let now = Instant::now();
        let mut idle = self.lock();
        expire_oldest(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, UpstreamError> {
        let tcp = match tokio::time::timeout(self.connect_timeout, self.tcp()).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                debug!(upstream = %self.authority, error = %e, "upstream connect failed");
                return Err(UpstreamError::Connect);
            }
            Err(_) => {
                debug!(upstream = %self.authority, timeout = ?self.connect_timeout, "upstream connect timed out");
                return Err(UpstreamError::Connect);
            }
        };
        match &self.tls {
            None => Ok(Conn::new(Stream::Plain(tcp))),
            Some((_, None)) => Err(UpstreamError::Connect),
            Some((connector, Some(name))) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Ok(Conn::new(Stream::Tls(Box::new(tls)))),
                Err(e) => {
                    debug!(upstream = %self.authority, error = %e, "upstream TLS handshake failed");
                    Err(UpstreamError::Connect)
                }
            },
        }
    }

    /// A TCP connection to the first address that takes one; each address
    /// gets an equal share of what is left of the connect timeout.
    async fn tcp(&self) -> io::Result<TcpStream> {
        let started = Instant::now();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port)).await?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the upstream host has no address");
        for (i, addr) in addrs.iter().enumerate() {
            let left = self.connect_timeout.saturating_sub(started.elapsed());
            let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Requests are written whole: no reason to wait for more.
                    // Either option failing leaves a working connection.
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(upstream = %self.authority, error = %e, "cannot set TCP_NODELAY");
                    }
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                        debug!(upstream = %self.authority, error = %e, "cannot set TCP keepalive");
                    }
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")),
            }
        }
        Err(last)
    }
}

/// Drops idle connections from the cold end while they are past
/// [`IDLE_TIMEOUT`]; last-in first-out keeps the oldest there.
fn expire_oldest(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle.front().is_some_and(|c| now.duration_since(c.since) > IDLE_TIMEOUT) {
        idle.pop_front();
    }
}

/// Why an exchange produced no answer.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The request head could not be written: the upstream cannot have
    /// acted on the request.
    #[error("writing the request failed: {0}")]
    HeadWrite(io::Error),
    /// The connection ended (or failed) before a byte of answer came.
    #[error("the connection ended without an answer: {0}")]
    Unanswered(io::Error),
    /// It ended inside the answer's head.
    #[error("the connection ended inside the answer's head")]
    Truncated,
    #[error("reading the answer failed: {0}")]
    Read(io::Error),
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The client's request body failed: malformed, or the client went away.
    #[error("the client's request body failed: {0}")]
    ClientBody(String),
    /// `101` after the request body started: nothing can be tunnelled.
    #[error("the upstream switched protocols during a request body")]
    SwitchedMidBody,
}

/// Writes the request head, then reads the answer's head while sending the
/// request body (an upstream may answer before reading it all).
async fn exchange<B>(conn: &mut Conn, upload: &mut Option<Box<Upload<B>>>, method: &Method) -> Result<h1::Head, Failure>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    let Conn { stream, head, .. } = conn;
    stream.write_all(head).await.map_err(Failure::HeadWrite)?;
    if upload.is_none() {
        // Nothing more to write: the TLS layer may still hold the head.
        stream.flush().await.map_err(Failure::HeadWrite)?;
    }
    let head_request = *method == Method::HEAD;
    let mut received = false;
    let head = poll_fn(|cx| {
        if let Some(up) = upload.as_mut() {
            match up.poll_send(cx, &mut conn.stream) {
                Poll::Ready(Ok(())) => *upload = None,
                Poll::Ready(Err(UploadError::Body(why))) => return Poll::Ready(Err(Failure::ClientBody(why))),
                // The upstream stopped reading; its answer may still come.
                // The connection is not reused: the body is cut short.
                Poll::Ready(Err(UploadError::Write(e))) => {
                    debug!(error = %e, "upstream stopped reading the request body");
                    if let Some(up) = upload.as_mut() {
                        up.failed = true;
                    }
                }
                Poll::Pending => {}
            }
        }
        conn.poll_head(cx, head_request, &mut received)
    })
    .await?;
    if head.status == StatusCode::SWITCHING_PROTOCOLS && upload.is_some() {
        return Err(Failure::SwitchedMidBody);
    }
    Ok(head)
}

/// An upstream connection: the socket and its buffers.
struct Conn {
    stream: Stream,
    /// Read into, then frozen into `input`: answers' heads and bodies are
    /// slices of it, no copies.
    read_buf: BytesMut,
    /// Bytes received and not yet consumed.
    input: Bytes,
    /// The request head being written; its capacity is kept.
    head: Vec<u8>,
}

impl Conn {
    /// Boxed: it moves between the pool and each answer's body.
    fn new(stream: Stream) -> Box<Conn> {
        Box::new(Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_BUFFER),
            input: Bytes::new(),
            head: Vec::with_capacity(1024),
        })
    }

    /// An idle connection is usable when the event loop has seen nothing
    /// arrive on it (a close, a reset, stray bytes): reading then answers
    /// `Pending` without a system call.
    fn is_idle_and_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        matches!(Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Whether the exchange left nothing unread.
    fn is_drained(&self) -> bool {
        self.input.is_empty() && self.read_buf.is_empty()
    }

    /// Reads more, then makes the bytes not yet consumed `input`; `Ok(0)` at
    /// end of stream. When they hold the start of an element the parser
    /// could not finish (rare), they are gathered in `read_buf` until
    /// `enough` holds for them: an element arriving in many small reads is
    /// copied once, not once per read.
    fn poll_fill(&mut self, cx: &mut Context<'_>, enough: impl Fn(&[u8]) -> bool) -> Poll<io::Result<usize>> {
        if !self.input.is_empty() {
            self.read_buf.extend_from_slice(&self.input);
            self.input = Bytes::new();
        }
        // Without a partial element, what arrives goes to the parser as it is.
        let gathering = !self.read_buf.is_empty();
        loop {
            if self.read_buf.capacity() - self.read_buf.len() < READ_BUFFER / 4 {
                // Reclaims the whole buffer when every slice of it is gone.
                self.read_buf.reserve(READ_BUFFER);
            }
            let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf))?;
            if n == 0 || !gathering || enough(&self.read_buf) {
                self.input = self.read_buf.split().freeze();
                return Poll::Ready(Ok(n));
            }
        }
    }

    /// Reads and parses the answer's head, skipping interim (`1xx`) ones
    /// other than `101`. `received`: a byte of answer has arrived.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        received: &mut bool,
    ) -> Poll<Result<h1::Head, Failure>> {
        loop {
            if !self.input.is_empty() {
                if let Some((len, head)) = h1::parse_response_head(&self.input, head_request)? {
                    self.consume(len);
                    if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                        continue;
                    }
                    return Poll::Ready(Ok(head));
                }
            }
            match ready!(self.poll_fill(cx, h1::may_hold_head)) {
                // What came before the end (now `input`) counts as received.
                Ok(0) if *received || !self.input.is_empty() => return Poll::Ready(Err(Failure::Truncated)),
                Ok(0) => {
                    return Poll::Ready(Err(Failure::Unanswered(io::ErrorKind::UnexpectedEof.into())));
                }
                Ok(_) => *received = true,
                Err(e) if *received => return Poll::Ready(Err(Failure::Read(e))),
                Err(e) => return Poll::Ready(Err(Failure::Unanswered(e))),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.input.advance(n);
        if self.input.is_empty() {
            // An empty slice still holds the buffer: let it go, so the next
            // read can reuse the buffer.
            self.input = Bytes::new();
        }
    }

    /// Up to `max` bytes of what has been read.
    fn take_input(&mut self, max: u64) -> Bytes {
        let n = usize::try_from(max).unwrap_or(usize::MAX).min(self.input.len());
        let data = self.input.split_to(n);
        if self.input.is_empty() {
            self.input = Bytes::new();
        }
        data
    }
}

/// A connection's transport.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

enum UploadError {
    /// The client's body failed: why, for the logs.
    Body(String),
    /// The upstream connection would not take more.
    Write(io::Error),
}

/// A request body on its way upstream, as it arrives from the client.
struct Upload<B> {
    body: B,
    chunked: bool,
    /// What is still to be written of the current frame: chunk size line,
    /// data, CRLF.
    pending: VecDeque<Bytes>,
    /// The body has ended and its end is queued.
    ended: bool,
    /// The upstream stopped taking it, or the client's body failed;
    /// nothing more is sent.
    failed: bool,
    /// The client's body failed: the upstream connection's write side is
    /// to be shut down, so the upstream learns at once that the request
    /// will not be completed (it sees the end of the stream mid-body)
    /// instead of waiting for the rest while porteiro waits for its answer.
    closing: bool,
}

impl<B> Upload<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    fn new(body: B, chunked: bool) -> Upload<B> {
        Upload { body, chunked, pending: VecDeque::with_capacity(3), ended: false, failed: false, closing: false }
    }

    /// Shuts the upstream's write side once the client's body has failed.
    fn poll_close(&mut self, cx: &mut Context<'_>, stream: &mut Stream) {
        // An error here means the connection is gone already: as good.
        if self.closing && Pin::new(stream).poll_shutdown(cx).is_ready() {
            self.closing = false;
        }
    }

    /// Sends what the client's body gives until it ends (`Ready(Ok)`), the
    /// client has nothing more yet or the upstream takes no more (`Pending`).
    fn poll_send(&mut self, cx: &mut Context<'_>, stream: &mut Stream) -> Poll<Result<(), UploadError>>
    where
        B::Error: std::error::Error,
    {
        if self.failed {
            self.poll_close(cx, stream);
            return Poll::Pending;
        }
        loop {
            while !self.pending.is_empty() {
                let slices: [IoSlice<'_>; 3] =
                    std::array::from_fn(|i| IoSlice::new(self.pending.get(i).map_or(&[][..], |b| &b[..])));
                let mut n =
                    ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices)).map_err(UploadError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Write(io::ErrorKind::WriteZero.into())));
                }
                while n > 0 {
                    let Some(front) = self.pending.front_mut() else { break };
                    let step = n.min(front.len());
                    front.advance(step);
                    n -= step;
                    if front.is_empty() {
                        self.pending.pop_front();
                    }
                }
            }
            if self.ended {
                return Pin::new(&mut *stream).poll_flush(cx).map_err(UploadError::Write);
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    // Waiting on the client: what the TLS layer holds goes out now.
                    ready!(Pin::new(&mut *stream).poll_flush(cx)).map_err(UploadError::Write)?;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    if self.chunked {
                        self.pending.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    self.ended = true;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed = true;
                    self.closing = true;
                    self.poll_close(cx, stream);
                    return Poll::Ready(Err(UploadError::Body(describe(&e))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) if self.chunked => {
                    self.pending.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                    self.pending.push_back(data);
                    self.pending.push_back(Bytes::from_static(b"\r\n"));
                }
                Ok(data) => self.pending.push_back(data),
                // Request trailers are never forwarded (DESIGN §4, §8.1):
                // many servers merge them into the header fields, where
                // they would arrive unchecked, after porteiro has removed
                // and set headers (`X-Forwarded-User` in a trailer). The
                // body's end comes next; its last chunk has no trailers.
                Err(_) => {}
            }
        }
    }
}

/// An error and its causes, for a log line (hyper's body errors say
/// "error reading a body from connection"; the cause says what was wrong).
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// How the rest of an answer's body is delimited.
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    /// `101`: the connection is the tunnel's; see [`UpstreamBody::take_upgraded`].
    Switched,
    Done,
}

/// An upstream's response body, read from its connection as the client
/// takes it. Once it has ended cleanly the connection goes back to the
/// pool; dropped before (the client went away), the connection closes with
/// it: the rest is still on the wire.
pub struct UpstreamBody<B = Incoming> {
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    reading: Reading,
    /// The request body, when it is still going out.
    upload: Option<Box<Upload<B>>>,
    /// The answer allows another exchange on this connection.
    reusable: bool,
}

/// A connection after `101 Switching Protocols`: what the upstream sent
/// after its head comes first, then the socket.
pub struct Upgraded {
    stream: Stream,
    prefix: Bytes,
}

impl<B> UpstreamBody<B> {
    /// After `101`, the connection for the tunnel.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        if !matches!(self.reading, Reading::Switched) {
            return None;
        }
        self.reading = Reading::Done;
        let conn = self.conn.take()?;
        let Conn { stream, input, .. } = *conn;
        Some(Upgraded { stream, prefix: input })
    }

    /// The body has ended: the connection goes back when nothing of the
    /// exchange is left over.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable && self.upload.is_none() && conn.is_drained() {
                self.pool.put(conn);
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.reading = Reading::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<B> http_body::Body for UpstreamBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        // A request body still going out keeps going (an upstream that
        // answers as it reads, or answered early).
        if let (Some(up), Some(conn)) = (this.upload.as_mut(), this.conn.as_mut()) {
            match up.poll_send(cx, &mut conn.stream) {
                Poll::Ready(Ok(())) => this.upload = None,
                // Too late for a `400`: the upstream's answer is on its way
                // to the client. It goes on; the connection is not reused.
                Poll::Ready(Err(UploadError::Body(why))) => {
                    debug!(upstream = %this.pool.authority, error = %why, "the client's request body failed after the answer began");
                }
                Poll::Ready(Err(UploadError::Write(_))) => up.failed = true,
                Poll::Pending => {}
            }
        }
        let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
        loop {
            match &mut this.reading {
                Reading::Length(left) => {
                    if !conn.input.is_empty() {
                        let data = conn.take_input(*left);
                        *left -= data.len() as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut conn.input) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Chunk::Trailers(trailers)) => {
                        // The last frame: a server may not poll past it.
                        if conn.input.is_empty() {
                            conn.input = Bytes::new();
                        }
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Chunk::End) => {
                        if conn.input.is_empty() {
                            conn.input = Bytes::new();
                        }
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Chunk::NeedMore) => {}
                    Err(e) => return this.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
                },
                Reading::Close => {
                    if !conn.input.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.take_input(u64::MAX)))));
                    }
                }
                Reading::Switched | Reading::Done => return Poll::Ready(None),
            }
            let filled = match &this.reading {
                Reading::Chunked(decoder) => conn.poll_fill(cx, |b| decoder.may_hold_element(b)),
                _ => conn.poll_fill(cx, |_| true),
            };
            match ready!(filled) {
                Ok(0) if matches!(this.reading, Reading::Close) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed mid-body")),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if read_prefix(&mut this.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
