//! Listeners: accept, TLS, HTTP/1.1 + HTTP/2, connection limits, graceful
//! drain. Knows nothing of routes or authentication: it hands each request
//! to a [`Handler`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::TlsFiles;
use crate::metrics::Metrics;
use crate::proxy::body::Body;

/// What a handler learns about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client connected over TLS.
    pub tls: bool,
}

/// Answers requests; one per listener.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> impl Future<Output = Response<Body>> + Send;
}

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Time for a request head (and the TLS handshake); on HTTP/1.1 it also
    /// closes keep-alive connections that stay idle this long.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
}

/// Once the listener drains, how long a connection may stay open for one
/// more answer (which says `Connection: close`) before it is closed as idle.
const DRAIN_LINGER: Duration = Duration::from_millis(250);

/// A TLS server config that a reload can replace (certificate rotation).
pub type TlsSwap = Arc<ArcSwap<rustls::ServerConfig>>;

/// Loads a PEM certificate chain and key into a rustls config with ALPN
/// `h2` and `http/1.1`.
pub fn tls_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("server.tls.cert: cannot read {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("server.tls.cert: no certificate in {}", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("server.tls.key: cannot read a private key from {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: certificate and key do not match or are unusable: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish within `limits.shutdown_grace`: idle
/// connections are closed, and every answer from then on says
/// `Connection: close`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsSwap>,
    handler: Arc<H>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
) {
    let builder = Arc::new(http_builder(&limits));
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let local = listener.local_addr().ok();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            handler: handler.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            handshake_timeout: limits.header_read_timeout,
        };
        let tls = tls.as_ref().map(|t| t.load_full());
        tracker.spawn(async move {
            conn.run(stream, peer, tls).await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    info!(listener = ?local, open = tracker.len(), "stopped accepting; draining connections");
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait()).await.is_err() {
        warn!(listener = ?local, open = tracker.len(), "shutdown grace expired; closing remaining connections");
    }
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

struct Connection<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Arc<H>,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
}

impl<H: Handler> Connection<H> {
    // What a connection costs while it is idle is what its task holds, so
    // the task's own future is kept small: the TLS session and the HTTP
    // connection state (kilobytes, sized for HTTP/1.1, HTTP/2 and TLS alike)
    // are boxed and allocated only once the client has sent its first bytes.
    async fn run(self, stream: TcpStream, peer: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) {
        let _open = self.metrics.as_ref().map(|m| OpenGuard::new(m.clone()));
        // A client that sends nothing within header_read_timeout is closed,
        // as one that sends an incomplete request head is. A peek, not
        // `readable()`: readiness may be reported on a fresh socket with no
        // byte to read, and hyper's protocol detection then waits for the
        // first bytes without any timeout.
        let mut first = [0u8; 1];
        let first_bytes = tokio::time::timeout(self.handshake_timeout, stream.peek(&mut first));
        let ready = tokio::select! {
            r = first_bytes => r,
            () = self.shutdown.cancelled() => return,
        };
        match ready {
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
            None => Box::pin(self.serve(TokioIo::new(stream), ConnInfo { peer, tls: false })).await,
            Some(config) => Box::pin(self.serve_tls(stream, peer, config)).await,
        }
    }

    async fn serve_tls(&self, stream: TcpStream, peer: SocketAddr, config: Arc<rustls::ServerConfig>) {
        let accept = TlsAcceptor::from(config).accept(stream);
        match tokio::time::timeout(self.handshake_timeout, accept).await {
            Ok(Ok(tls_stream)) => self.serve(TokioIo::new(tls_stream), ConnInfo { peer, tls: true }).await,
            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn serve<I>(&self, io: TokioIo<I>, info: ConnInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let draining = self.shutdown.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let draining = draining.clone();
            // Boxed: hyper keeps a slot the size of this future for the
            // whole life of an HTTP/1.1 connection; boxed, the handler's
            // state (kilobytes) lives only while a request is in flight.
            Box::pin(async move {
                let mut resp = handler.call(req, info).await;
                // Once the listener drains, every HTTP/1.1 connection
                // closes after its in-flight answer, which must say
                // `Connection: close`, or a keep-alive client sends its next
                // request into the closing socket. hyper adds it when
                // `graceful_shutdown` reaches the connection before the
                // answer's head is written; an answer finished in between
                // gets it here. (HTTP/2 drops the header and sends GOAWAY.)
                if draining.is_cancelled() && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            })
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = self.shutdown.cancelled() => {
                // Closing an idle HTTP/1.1 connection races with the
                // client's next request, already on its way: it would get a
                // read error. A connection in use gets its next answer
                // first, saying `Connection: close` (above), and the client
                // reconnects instead; only one still quiet after DRAIN_LINGER
                // is closed (HTTP/2: told GOAWAY) then.
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
}

/// Keeps the open-connections gauge right however a connection ends.
struct OpenGuard(Arc<Metrics>);

impl OpenGuard {
    fn new(metrics: Arc<Metrics>) -> OpenGuard {
        metrics.connections.inc();
        metrics.connections_open.inc();
        OpenGuard(metrics)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}
