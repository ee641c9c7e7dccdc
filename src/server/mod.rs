//! Listeners: accept, TLS, HTTP/1.1 + HTTP/2, connection limits, graceful
//! drain. Knows nothing of routes or authentication: it hands each request
//! to a [`Handler`].

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::connection::{Builders, Connection};

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
    /// What the handler keeps per connection, across its requests (an
    /// HTTP/1.1 connection drops it when it parks).
    type PerConnection: Default + Send + Sync + 'static;

    /// The answer's future owns what it needs (no borrow of the handler):
    /// the listener boxes it as it is, with no wrapper around it.
    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        kept: &Arc<Self::PerConnection>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static;
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

/// When a listener stops accepting. Every answer asks whether it has
/// (to say `Connection: close`): a flag, because the token's own check and
/// its clones take a lock that all connections share.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownInner>);

#[derive(Default)]
struct ShutdownInner {
    token: CancellationToken,
    begun: AtomicBool,
}

impl Shutdown {
    /// Stops the listener. The flag is set first, so whoever is woken by the
    /// token finds it set.
    pub fn cancel(&self) {
        self.0.begun.store(true, Ordering::Release);
        self.0.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.begun.load(Ordering::Acquire)
    }

    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.0.token.cancelled()
    }
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
    shutdown: Shutdown,
) {
    let builders = Arc::new(Builders::new(&limits));
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
            builders: builders.clone(),
            handler: handler.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            header_read_timeout: limits.header_read_timeout,
        };
        let tls = tls.as_ref().map(|t| t.load_full());
        let open = metrics.as_ref().map(|m| OpenGuard::new(m.clone()));
        tracker.spawn(async move {
            conn.run(stream, peer, tls).await;
            crate::memory::freed();
            drop(open);
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
