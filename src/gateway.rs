//! The request path. Every request to the main listener goes through these
//! phases, in order:
//!
//! 1. **Drain check** — while shutting down, new requests get `503`.
//! 2. **Normalise** — the path is normalised once ([`crate::path`]); a
//!    malformed path gets `400`. This normalised path picks the route, decides
//!    public-or-protected, and is the path sent upstream.
//! 3. **Internal endpoints** — paths under `server.auth_prefix` (`/sso`) are
//!    porteiro's own and never reach an upstream.
//! 4. **Match** — host, then longest path prefix ([`crate::routes`]); no
//!    route gets `404`. Encoded `/` or `\` gets `400` unless the route allows it.
//! 5. **Authenticate** — public routes and `public_paths` pass; protected
//!    routes need an identity. The outcome is either an identity or an answer
//!    (a redirect to login, a 401) — never an error.
//! 6. **Proxy** — headers rewritten ([`crate::proxy`]), request streamed to
//!    the upstream, answer streamed back; `502` when the upstream is down,
//!    `504` when it is too slow.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;
use tracing::{info, warn};

use crate::body::Body;
use crate::config::{Access, Config, RouteConfig, Upstream};
use crate::error;
use crate::metrics::{Metrics, RouteMetrics};
use crate::path;
use crate::proxy::{self, Forwarding, Proxy, StripSet, Target};
use crate::routes::{RouteTable, prefix_matches};
use crate::server::ConnInfo;

/// Identity headers porteiro sets for upstreams (oauth2-proxy compatible) and
/// answers to forward-auth callers; always stripped from clients' requests.
pub const IDENTITY_HEADERS: [&str; 7] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
];

/// One compiled route.
pub struct Route {
    pub id: String,
    target: Target,
    access: Access,
    public_paths: Vec<String>,
    /// Headers removed from a client's request before anything is added:
    /// identity and forwarding headers from untrusted peers...
    strip_untrusted: StripSet,
    /// ...identity headers alone from trusted proxies (also what whoami highlights).
    identity: StripSet,
    preserve_host: bool,
    allow_encoded_slashes: bool,
    metrics: RouteMetrics,
}

/// Everything one configuration needs to answer requests. Replaced whole on
/// reload; what must outlive a reload (metrics, drain flag) is shared.
pub struct Gateway {
    routes: RouteTable<Route>,
    proxy: Proxy,
    metrics: Arc<Metrics>,
    auth_prefix: String,
    trusted_proxies: Vec<IpNet>,
    draining: Arc<AtomicBool>,
}

impl Gateway {
    /// Compiles a gateway from a validated config.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        draining: Arc<AtomicBool>,
    ) -> Result<Gateway, String> {
        let tls = proxy::upstream_tls(config.server.upstream_ca_file.as_deref())?;
        let proxy = Proxy::new(proxy::ProxySettings {
            connect_timeout: config.server.upstream_connect_timeout,
            timeout: config.server.upstream_timeout,
            tls,
        });
        let routes = RouteTable::new(config.routes.iter().map(|r| {
            (
                r.host.clone(),
                r.path_prefix.clone(),
                compile_route(r, &metrics),
            )
        }));
        Ok(Gateway {
            routes,
            proxy,
            metrics,
            auth_prefix: config.server.auth_prefix.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            draining,
        })
    }

    /// Whether this gateway can serve: not draining, (later) keys loaded.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers one request (see the module docs for the phases).
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        // Phase 1: drain.
        if self.draining.load(Ordering::Relaxed) {
            let mut resp = error::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "The gateway is shutting down; try again.",
                error::wants_html(req.headers()),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            return resp;
        }

        // Phase 2: normalise.
        let (rewritten, encoded_slash) = match path::normalize(req.uri().path()) {
            Ok(path::Normalized {
                path: Cow::Owned(p),
                encoded_slash,
            }) => (Some(p), encoded_slash),
            Ok(path::Normalized {
                path: Cow::Borrowed(_),
                encoded_slash,
            }) => (None, encoded_slash),
            Err(_) => {
                return self.reject(
                    &req,
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "The request path is malformed.",
                );
            }
        };
        let path = rewritten.as_deref().unwrap_or(req.uri().path());

        // Phase 3: internal endpoints.
        if prefix_matches(&self.auth_prefix, path) {
            return self.reject(
                &req,
                StatusCode::NOT_FOUND,
                "not_found",
                "No such endpoint.",
            );
        }

        // Phase 4: match.
        let host = request_host(&req);
        let Some(route) = self.routes.find(host, path) else {
            return self.reject(
                &req,
                StatusCode::NOT_FOUND,
                "no_route",
                "No application is served at this address.",
            );
        };
        if encoded_slash && !route.allow_encoded_slashes {
            return self.reject(
                &req,
                StatusCode::BAD_REQUEST,
                "encoded_slash",
                "Encoded slashes are not allowed in this path.",
            );
        }

        // Phase 5: authenticate.
        let open = route.access == Access::Public
            || route.public_paths.iter().any(|p| prefix_matches(p, path));
        if !open {
            // No login method can be configured yet, so nobody is signed in.
            let resp = error::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Sign-in is required.",
                error::wants_html(req.headers()),
            );
            route.metrics.answered(resp.status());
            return resp;
        }

        // Phase 6: proxy.
        let resp = self.proxy(req, route, rewritten, conn).await;
        route.metrics.answered(resp.status());
        resp
    }

    /// Phase 6: rewrite headers and send upstream (or answer as whoami).
    /// `rewritten` is the normalised path when it differs from the request's.
    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        rewritten: Option<String>,
        conn: ConnInfo,
    ) -> Response<Body> {
        let trusted = self
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&conn.peer.ip()));
        let fwd = Forwarding {
            peer: conn.peer.ip(),
            tls: conn.tls,
            trusted,
        };
        let host = request_host_value(&req);
        let strip = if trusted {
            &route.identity
        } else {
            &route.strip_untrusted
        };
        let upgrade = proxy::prepare_request_headers(req.headers_mut(), host.as_ref(), &fwd, strip);
        // HTTP/2 clients send :authority, not Host; HTTP/1.1 upstreams need Host.
        if !req.headers().contains_key(header::HOST) {
            if let Some(h) = host {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        match &route.target {
            Target::Whoami => {
                let path = rewritten.as_deref().unwrap_or(req.uri().path());
                proxy::whoami(&req, path, &route.identity)
            }
            Target::Http { scheme, authority } => {
                if !route.preserve_host {
                    if let Ok(v) = http::HeaderValue::from_str(authority.as_str()) {
                        req.headers_mut().insert(header::HOST, v);
                    }
                }
                let html = error::wants_html(req.headers());
                match self
                    .proxy
                    .forward(req, scheme, authority, rewritten, upgrade)
                    .await
                {
                    Ok((resp, took)) => {
                        route.metrics.upstream_duration(took.as_secs_f64());
                        resp
                    }
                    Err(e) => {
                        warn!(route = %route.id, upstream = %authority, error = %e, "upstream failed");
                        let (status, code, text) = match e {
                            proxy::UpstreamError::Timeout(_) => (
                                StatusCode::GATEWAY_TIMEOUT,
                                "upstream_timeout",
                                "The application did not answer in time.",
                            ),
                            _ => (
                                StatusCode::BAD_GATEWAY,
                                "bad_gateway",
                                "The application is unreachable.",
                            ),
                        };
                        error::error(status, code, text, html)
                    }
                }
            }
        }
    }

    /// An answer refused before a route is known; logged and counted.
    fn reject(
        &self,
        req: &Request<Incoming>,
        status: StatusCode,
        reason: &'static str,
        text: &str,
    ) -> Response<Body> {
        info!(reason, method = %req.method(), status = status.as_u16(), "request refused");
        self.metrics.rejected(reason);
        error::error(status, reason, text, error::wants_html(req.headers()))
    }
}

fn compile_route(r: &RouteConfig, metrics: &Metrics) -> Route {
    let custom: Vec<&str> = r.headers.iter().map(|(h, _)| h.as_str()).collect();
    let identity = StripSet::new(
        IDENTITY_HEADERS
            .iter()
            .copied()
            .chain(custom.iter().copied()),
    );
    let strip_untrusted = StripSet::new(
        IDENTITY_HEADERS
            .iter()
            .chain(proxy::FORWARDING_HEADERS.iter())
            .copied()
            .chain(custom.iter().copied()),
    );
    let target = match &r.upstream {
        Upstream::Http { scheme, authority } => Target::Http {
            scheme: scheme.clone(),
            authority: authority.clone(),
        },
        Upstream::Whoami => Target::Whoami,
    };
    Route {
        id: r.id.clone(),
        target,
        access: r.access.clone(),
        public_paths: r.public_paths.clone(),
        strip_untrusted,
        identity,
        preserve_host: r.preserve_host,
        allow_encoded_slashes: r.allow_encoded_slashes,
        metrics: metrics.route(&r.id),
    }
}

/// The host a request was sent to: the URI's authority (HTTP/2, absolute
/// form) or the Host header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// [`request_host`] as a header value, for `X-Forwarded-Host` and `Host`. On
/// HTTP/1.1 it shares the Host header's bytes instead of copying them.
fn request_host_value<B>(req: &Request<B>) -> Option<http::HeaderValue> {
    match req.uri().authority() {
        Some(a) => http::HeaderValue::from_str(a.as_str()).ok(),
        None => req
            .headers()
            .get(header::HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned(),
    }
}
