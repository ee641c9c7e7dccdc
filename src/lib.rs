//! porteiro: a reverse-proxy authentication gateway.
//!
//! [`start`] binds the listeners of a validated [`config::Config`] and serves
//! until [`Running::shutdown`]; the binary (`main.rs`) adds the CLI, logging
//! and signals. Tests and benches use this library directly.

pub mod admin;
pub mod auth;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod devcert;
pub mod error;
pub mod gateway;
pub mod log_batch;
pub mod log_text;
pub mod memory;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod routes;
pub mod server;

/// Internals reached by the fuzz targets (`fuzz/`) and the property tests:
/// not an API, and free to change with them.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::proxy::upstream::h1::{
        BodyKind, Chunk, ChunkedDecoder, Head, ParseError, may_hold_head, parse_response_head,
    };
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::api_keys::ApiKeys;
use crate::auth::identifiers::Identifiers;
use crate::auth::jwks::JwksRegistry;
use crate::auth::records::Records;
use crate::auth::store::redis::RedisStore;
use crate::auth::store::{MemoryStore, Store};
use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::gateway::{Gateway, Shared};
use crate::metrics::Metrics;
use crate::proxy::body::Body;
use crate::server::{ConnInfo, Handler, Limits, TlsSwap};

/// Why porteiro could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind { key: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// Entries of each kind the in-process store (or the revocation mirror of
/// the Redis store) keeps before evicting.
const STORE_CAPACITY: u64 = 1_000_000;

/// The serving state: the current gateway (swapped whole on reload) and
/// what outlives reloads.
pub struct App {
    gateway: ArcSwap<Gateway>,
    config: ArcSwap<Config>,
    shared: Arc<Shared>,
    tls: Option<TlsSwap>,
}

impl App {
    /// Compiles `config` into a gateway.
    pub fn new(config: Config) -> Result<App, StartError> {
        App::with_clock(config, Clock::default())
    }

    /// As [`App::new`], reading time from `clock` (tests move it).
    pub fn with_clock(config: Config, clock: Clock) -> Result<App, StartError> {
        // Replicas sharing Redis share identifier mappings, the session
        // index and API keys there too; one process keeps them in redb
        // under server.state_dir (the session index in memory without it).
        let (store, identifiers, records): (Arc<dyn Store>, _, _) = match &config.session.store {
            StoreKind::Memory => {
                let store = Arc::new(MemoryStore::new(STORE_CAPACITY, clock.clone()));
                match &config.server.state_dir {
                    Some(dir) => (
                        store,
                        Some(Identifiers::open(dir).map_err(StartError::Setup)?),
                        Records::open(dir).map_err(StartError::Setup)?,
                    ),
                    None => (store, None, Records::in_memory().map_err(StartError::Setup)?),
                }
            }
            StoreKind::Redis { url, prefix } => {
                let store =
                    RedisStore::new(url.expose(), prefix, STORE_CAPACITY, clock.clone()).map_err(StartError::Setup)?;
                let identifiers = Identifiers::redis(store.connection(), prefix);
                let records = Records::redis(store.connection(), prefix);
                (Arc::new(store), Some(identifiers), records)
            }
        };
        let api_keys = ApiKeys::new(records.clone(), store.clone(), clock.clone());
        let shared = Arc::new(Shared {
            metrics: Arc::new(Metrics::new()),
            draining: Arc::new(AtomicBool::new(false)),
            store,
            jwks: JwksRegistry::new(clock.clone()),
            clock,
            identifiers,
            records,
            api_keys,
        });
        let gateway = Gateway::new(&config, shared.clone()).map_err(StartError::Setup)?;
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(ArcSwap::from_pointee(server::tls_config(files).map_err(StartError::Setup)?))),
            None => None,
        };
        Ok(App { gateway: ArcSwap::from_pointee(gateway), config: ArcSwap::from_pointee(config), shared, tls })
    }

    /// Replaces the configuration atomically. In-flight requests finish on
    /// the old one; sessions and connections are kept. Listen addresses and
    /// turning TLS on or off need a restart; certificates are re-read.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let result = self.try_reload(config);
        self.shared.metrics.reload(result.is_ok());
        result
    }

    fn try_reload(&self, config: Config) -> Result<(), StartError> {
        let old = self.config.load();
        let new_tls = match (&config.server.tls, &self.tls) {
            (Some(files), Some(_)) => Some(server::tls_config(files).map_err(StartError::Setup)?),
            (None, None) => None,
            _ => {
                return Err(StartError::Setup("server.tls: turning TLS on or off needs a restart".into()));
            }
        };
        let gateway = Gateway::new(&config, self.shared.clone()).map_err(StartError::Setup)?;
        if old.server.listen != config.server.listen || old.server.admin_listen != config.server.admin_listen {
            warn!("server.listen / server.admin_listen changed: the new addresses take effect after a restart");
        }
        if old.session.store != config.session.store {
            warn!(
                "session.store / session.redis_url / session.redis_prefix changed: the new store takes effect after a restart"
            );
        }
        if old.server.state_dir != config.server.state_dir {
            warn!("server.state_dir changed: the new directory takes effect after a restart");
        }
        if let (Some(swap), Some(tls)) = (&self.tls, new_tls) {
            swap.store(Arc::new(tls));
        }
        self.gateway.store(Arc::new(gateway));
        self.config.store(Arc::new(config));
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The clock every expiry reads.
    /// Client addresses the rate limits remember now (login, refused
    /// credentials, blocked): for tests of their bound.
    #[doc(hidden)]
    pub fn rate_limited_clients(&self) -> [u64; 3] {
        self.gateway.load().limits.clients()
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Ready to take traffic: not draining, every provider has its keys, and
    /// the state store is reachable (always, for the in-process one).
    pub fn ready(&self) -> bool {
        self.gateway.load().ready() && self.shared.store.ready()
    }
}

struct MainHandler(Arc<App>);

impl Handler for MainHandler {
    /// The credential the connection last proved.
    type PerConnection = gateway::memo::ConnMemo;

    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        memo: &Arc<Self::PerConnection>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        self.0.gateway.load_full().handle(req, conn, memo.clone())
    }
}

/// The admin listener: health, readiness, metrics, revocation.
struct AdminHandler(Arc<App>);

impl Handler for AdminHandler {
    type PerConnection = ();

    fn call(
        &self,
        req: Request<Incoming>,
        _conn: ConnInfo,
        _kept: &Arc<()>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let app = self.0.clone();
        async move { Self::answer(&app, req).await }
    }
}

impl AdminHandler {
    async fn answer(app: &App, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path().starts_with("/admin/") {
            let gateway = app.gateway.load_full();
            if let Some(resp) = admin::handle(&gateway, req).await {
                return resp;
            }
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if app.shared.draining.load(Ordering::Relaxed) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
            "/readyz" if !app.ready() => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/readyz" => text(StatusCode::OK, "ready\n"),
            "/metrics" => {
                let mut resp = Response::new(Body::full(app.shared.metrics.encode()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// A started porteiro: its bound addresses, and how to stop it.
pub struct Running {
    /// Where the main listener is bound (the real port when configured as 0).
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    shutdown: server::Shutdown,
    main: JoinHandle<()>,
    /// The admin listener outlives the main one's drain, so probes can see
    /// `/readyz` say 503 (and metrics can be scraped) while requests finish.
    admin_shutdown: server::Shutdown,
    admin: Option<JoinHandle<()>>,
}

impl Running {
    /// Begins a graceful shutdown: `/readyz` turns 503 at once while the
    /// main listener keeps serving for `server.shutdown_delay_seconds` (load
    /// balancers need that long to stop sending); then it stops accepting,
    /// and in-flight requests get `server.shutdown_grace_seconds`, their
    /// answers saying `Connection: close`. The admin listener keeps
    /// answering until [`Running::wait`] has seen the drain end.
    pub fn shutdown(&self) {
        self.app.shared.draining.store(true, Ordering::Relaxed);
        let delay = self.app.config.load().server.shutdown_delay;
        let token = self.shutdown.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !delay.is_zero() => {
                info!(
                    delay_seconds = delay.as_secs(),
                    "draining: /readyz says 503; still serving until the delay ends"
                );
                runtime.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => token.cancel(),
                        () = token.cancelled() => {}
                    }
                });
            }
            _ => token.cancel(),
        }
    }

    /// Cancelling it stops accepting now, whatever is left of the shutdown
    /// delay (the binary: a second `SIGTERM` or `SIGINT`).
    pub fn stop_token(&self) -> server::Shutdown {
        self.shutdown.clone()
    }

    /// Waits until the main listener has drained, then stops the admin
    /// listener.
    pub async fn wait(self) {
        let _ = self.main.await;
        self.admin_shutdown.cancel();
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
    }
}

/// Binds the listeners of `config` and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with_clock(config, Clock::default()).await
}

/// As [`start`], reading time from `clock`: tests move it past expiries.
pub async fn start_with_clock(config: Config, clock: Clock) -> Result<Running, StartError> {
    let server_cfg = config.server.clone();
    let app = Arc::new(App::with_clock(config, clock)?);
    let limits = Limits {
        max_connections: server_cfg.max_connections,
        header_read_timeout: server_cfg.header_read_timeout,
        max_header_bytes: server_cfg.max_header_bytes,
        max_headers: server_cfg.max_headers,
        shutdown_grace: server_cfg.shutdown_grace,
    };
    let bind = |key, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { key, addr, source })
    };
    let main = bind("server.listen", server_cfg.listen).await?;
    let admin = match server_cfg.admin_listen {
        Some(a) => Some(bind("server.admin_listen", a).await?),
        None => None,
    };
    let addr = main.local_addr().map_err(|e| StartError::Setup(e.to_string()))?;
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let shutdown = server::Shutdown::default();
    let admin_shutdown = server::Shutdown::default();
    let main_task = tokio::spawn(server::serve(
        main,
        app.tls.clone(),
        Arc::new(MainHandler(app.clone())),
        limits,
        Some(app.shared.metrics.clone()),
        shutdown.clone(),
    ));
    let admin_task = admin.map(|admin| {
        let admin_limits = Limits { max_connections: 64, ..limits };
        tokio::spawn(server::serve(
            admin,
            None,
            Arc::new(AdminHandler(app.clone())),
            admin_limits,
            None,
            admin_shutdown.clone(),
        ))
    });
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    info!(%addr, %scheme, admin = ?admin_addr, "porteiro listening");
    Ok(Running { addr, admin_addr, app, shutdown, main: main_task, admin_shutdown, admin: admin_task })
}
