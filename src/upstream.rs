//! porteiro's HTTP/1.1 client for upstreams: one pool of keep-alive
//! connections per upstream (scheme + authority), built with the gateway.
//!
//! Why not hyper-util's pooled client: per request it boxed a ~3 KB future,
//! hashed a pool key, built an absolute URI and spawned a task to put the
//! connection back. Here a route holds an `Arc` of its pool, a request takes
//! an idle connection under a short lock, and the connection goes back when
//! the response body ends ([`UpstreamBody`]).
//!
//! - Idle connections are kept last-in first-out: the warmest is reused and
//!   the coldest, at the front, expire after [`IDLE_TIMEOUT`]; at most
//!   [`MAX_IDLE`] per upstream. A connection found closed is dropped.
//! - A request an idle connection could not take (it closed as it was picked,
//!   and hyper handed the request back unsent) is retried once on a new
//!   connection. A request that may have reached the upstream is never
//!   retried.
//! - A connection is not reused after `101 Switching Protocols` (the socket
//!   belongs to the tunnel), after `Connection: close`, or when the response
//!   body was not read to its end (the client went away mid-answer).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

/// Idle connections kept per upstream; one more is closed instead.
pub const MAX_IDLE: usize = 1024;

/// How long a connection may sit idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP keepalive probes start after this much silence, so a dead upstream
/// host is noticed on connections the pool keeps.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why an upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connection failed")]
    Connect,
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream request failed")]
    Request,
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
    /// request's own timeout, as it did with hyper-util's client).
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
    sender: SendRequest<Incoming>,
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

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a
    /// new one, and returns the response head with the connection it came
    /// on. Not bounded in time here: the caller's timeout covers it all.
    pub async fn send(self: &Arc<Self>, req: Request<Incoming>) -> Result<(Response<Incoming>, Conn), UpstreamError> {
        let req = match self.take_idle() {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Conn { sender, pool: self.clone() })),
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request was written
                    // (the upstream ended it while idle): nothing reached the
                    // upstream, so a new connection may take the request.
                    Some(req) => {
                        debug!(upstream = %self.authority, error = %e.into_error(), "idle upstream connection closed; retrying on a new one");
                        req
                    }
                    None => {
                        debug!(upstream = %self.authority, error = %e.into_error(), "upstream request failed");
                        return Err(UpstreamError::Request);
                    }
                },
            },
            None => req,
        };
        // Boxed: connecting (TLS included) takes a few KB of future state
        // that every request would otherwise carry, and copy as its future
        // moves, while few requests connect.
        let mut sender = Box::pin(self.connect()).await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((resp, Conn { sender, pool: self.clone() })),
            Err(e) => {
                debug!(upstream = %self.authority, error = %e.into_error(), "upstream request failed");
                Err(UpstreamError::Request)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // The list stays consistent whatever a panicking holder did.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that can take a request now.
    fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        let now = Instant::now();
        let mut idle = self.lock();
        expire_oldest(&mut idle, now);
        for i in (0..idle.len()).rev() {
            let Some(c) = idle.get(i) else { continue };
            if c.sender.is_ready() {
                return idle.remove(i).map(|c| c.sender);
            }
            if c.sender.is_closed() || now.duration_since(c.since) > IDLE_TIMEOUT {
                idle.remove(i);
            }
            // Otherwise still busy finishing its last exchange (a request
            // body still going out): left for a later request.
        }
        None
    }

    /// Puts a connection whose exchange has ended back, newest last.
    fn put(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        expire_oldest(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: now });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
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
            None => handshake(tcp).await,
            Some((_, None)) => Err(UpstreamError::Connect),
            Some((connector, Some(name))) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => handshake(tls).await,
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

/// An HTTP/1.1 handshake on `io`; one spawned task drives the connection
/// for its whole life, `with_upgrades` so that after a `101` the socket is
/// handed to the tunnel.
async fn handshake<T>(io: T) -> Result<SendRequest<Incoming>, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await.map_err(|e| {
        debug!(error = %e, "upstream HTTP handshake failed");
        UpstreamError::Connect
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A connection taken from a pool for one exchange. Dropped, it closes;
/// [`UpstreamBody`] puts it back when the answer has been read whole.
pub struct Conn {
    sender: SendRequest<Incoming>,
    pool: Arc<Pool>,
}

/// An upstream's response body, streamed through. It holds the connection
/// the body arrives on and puts it back in the pool once the body has ended
/// — read to its end, or empty from the start (`HEAD`, `204`, `304`), which
/// a server may drop without reading. Dropped before its end (the client went
/// away), it closes the connection with it: the rest is still on the wire.
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Conn>,
}

impl UpstreamBody {
    /// `conn` is `None` when the connection must not be reused.
    pub fn new(body: Incoming, conn: Option<Conn>) -> UpstreamBody {
        UpstreamBody { body, conn }
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.pool.put(conn.sender);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.release(),
            // A length-delimited body's last bytes: done, whether or not
            // the reader polls once more.
            Some(Ok(_)) if this.body.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.conn = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests;
