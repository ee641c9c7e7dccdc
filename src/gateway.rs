//! The request path. Every request to the main listener goes through these
//! phases, in order:
//!
//! 1. **Drain check** — while shutting down, new requests get `503`.
//! 2. **Canonical request** — host and path are validated and normalised
//!    once ([`crate::canonical`]); a request that could be read two ways
//!    gets `400`. Everything after decides on this [`canonical::Target`], and the
//!    upstream receives exactly its host and path.
//! 3. **Internal endpoints** — paths under `server.auth_prefix` (`/sso`) are
//!    porteiro's own and never reach an upstream.
//! 4. **Route** — host, then longest path prefix ([`crate::routes`]); no
//!    route gets `404`. Encoded `/` or `\`, and `;`, get `400` unless the
//!    route allows them.
//! 5. **Authenticate** — public routes and `public_paths` pass; protected
//!    routes need an identity. The outcome is a [`Verdict`] — an identity
//!    or a refusal — never an error.
//! 6. **Proxy** — headers rewritten ([`crate::proxy`]), request streamed to
//!    the upstream, answer streamed back; `502` when the upstream is down,
//!    `504` when it is too slow.
//!
//! Forward-auth (`/sso/auth`) runs phases 2, 4 and 5 on the URL its caller
//! names ([`Gateway::decide`]), so it judges exactly as proxying would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;
use tracing::{info, warn};

use crate::auth::jwks::JwksRegistry;
use crate::auth::session::{SessionCookies, strip_cookies};
use crate::auth::store::Store;
use crate::auth::{self, Identity, Provider};
use crate::body::Body;
use crate::canonical;
use crate::config::{Access, AllowRules, Config, RouteConfig, Upstream};
use crate::error;
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::{self, Forwarding, Proxy, StripSet, Target};
use crate::routes::{RouteTable, prefix_matches};
use crate::server::ConnInfo;
use crate::upstream::Pool;

/// Identity headers porteiro sets for upstreams (oauth2-proxy compatible) and
/// answers to forward-auth callers; always stripped from clients' requests.
pub const IDENTITY_HEADERS: [&str; 8] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
];

/// What outlives a configuration reload.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub draining: Arc<AtomicBool>,
    /// Replay ids, revocations, login state: must survive reloads.
    pub store: Arc<dyn Store>,
    pub jwks: JwksRegistry,
    /// Identifier mappings: in Redis with `session.store = "redis"`, else in
    /// redb when `server.state_dir` is set.
    pub identifiers: Option<crate::auth::identifiers::Identifiers>,
    /// Every expiry reads it; tests move it.
    pub clock: crate::clock::Clock,
}

/// One compiled route.
pub struct Route {
    pub id: String,
    target: Target,
    access: Access,
    /// The browser login provider, when the route has one.
    pub(crate) login: Option<Arc<Provider>>,
    /// Bearer providers tried in order for API clients.
    bearer: Vec<Arc<Provider>>,
    public_paths: Vec<String>,
    allow: AllowRules,
    /// Headers removed from a client's request before anything is added:
    /// identity and forwarding headers from untrusted peers...
    strip_untrusted: StripSet,
    /// ...and from trusted proxies, all but the forwarding headers.
    strip_trusted: StripSet,
    /// Identity headers (what whoami highlights).
    identity: StripSet,
    /// Route-specific identity headers: header -> claim.
    claim_headers: Vec<(HeaderName, String)>,
    preserve_host: bool,
    allow_encoded_slashes: bool,
    allow_semicolons: bool,
    /// Upgrade protocols passed through (`websocket` by default; never `h2c`).
    upgrades: proxy::Upgrades,
    metrics: RouteMetrics,
}

/// Email rules (an address or its domain) AND group rules AND every claim
/// rule; a kind of rule not configured does not restrict. Addresses and
/// domains were lower-cased at load; only a route with email rules pays for
/// lower-casing the identity's email.
fn permits(rules: &AllowRules, id: &Identity) -> bool {
    let email_ok = (rules.emails.is_empty() && rules.email_domains.is_empty())
        || id.email.as_deref().map(str::to_ascii_lowercase).is_some_and(|e| {
            rules.emails.contains(&e)
                || e.rsplit_once('@').is_some_and(|(_, d)| rules.email_domains.iter().any(|a| a == d))
        });
    let groups_ok = rules.groups.is_empty() || id.groups.iter().any(|g| rules.groups.contains(g));
    let claims_ok = rules
        .claims
        .iter()
        .all(|(name, allowed)| id.claims.get(name).is_some_and(|vs| vs.iter().any(|v| allowed.contains(v))));
    email_ok && groups_ok && claims_ok
}

/// The outcome of the authenticate phase: go on (with an identity, or
/// none on a public path), or a refusal for the caller to answer.
pub(crate) enum Verdict {
    Pass(Option<Arc<Identity>>),
    /// No valid session: a login for a browser navigation, else `401`.
    SignIn,
    /// Signed in, but the route's `allow` rules say no: `403`.
    Forbidden,
    /// An API client's answer, made already (RFC 6750 challenges).
    Respond(Response<Body>),
}

/// Why a canonical request has no route to go on to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteRefusal {
    NoRoute,
    EncodedSlash,
    Semicolon,
}

impl RouteRefusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            RouteRefusal::NoRoute => StatusCode::NOT_FOUND,
            RouteRefusal::EncodedSlash | RouteRefusal::Semicolon => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            RouteRefusal::NoRoute => "no_route",
            RouteRefusal::EncodedSlash => "encoded_slash",
            RouteRefusal::Semicolon => "semicolon",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            RouteRefusal::NoRoute => "No application is served at this address.",
            RouteRefusal::EncodedSlash => "Encoded slashes are not allowed in this path.",
            RouteRefusal::Semicolon => "Semicolons are not allowed in this path.",
        }
    }
}

/// Everything one configuration needs to answer requests. Replaced whole on
/// reload; what must outlive a reload is in [`Shared`].
pub struct Gateway {
    routes: RouteTable<Route>,
    proxy: Proxy,
    pub(crate) shared: Arc<Shared>,
    pub(crate) auth_prefix: String,
    pub(crate) public_url: String,
    trusted_proxies: Vec<IpNet>,
    pub(crate) providers: Vec<Arc<Provider>>,
    pub(crate) sessions: Option<SessionCookies>,
    pub(crate) login_states: Option<auth::oidc::LoginStates>,
    pub(crate) demo: Option<crate::sso::DemoLogin>,
    pub(crate) admin_token: Option<crate::config::Secret>,
}

impl Gateway {
    /// Compiles a gateway from a validated config.
    pub fn new(config: &Config, shared: Arc<Shared>) -> Result<Gateway, String> {
        let tls = proxy::upstream_tls(config.server.upstream_ca_file.as_deref())?;
        let fetcher = auth::fetch::Fetcher::new(tls.clone());
        let proxy = Proxy::new(proxy::ProxySettings {
            connect_timeout: config.server.upstream_connect_timeout,
            timeout: config.server.upstream_timeout,
            tls,
        });
        // Claims a session must carry for route headers and allow rules.
        let mut keep: Vec<String> = Vec::new();
        for r in &config.routes {
            keep.extend(r.headers.iter().map(|(_, c)| c.clone()));
            keep.extend(r.allow.claims.iter().map(|(c, _)| c.clone()));
        }
        keep.sort();
        keep.dedup();
        let mut providers = Vec::new();
        for p in &config.providers {
            let built = crate::sso::build_provider(p, config, &keep, &fetcher, &shared.jwks)?;
            providers.push(Arc::new(built));
        }
        let demo = crate::sso::DemoLogin::from_config(config);
        if let Some(d) = &demo {
            warn!(
                provider = %d.provider,
                "INSECURE demo login page enabled at {}/demo-login: anyone reaching this listener can sign in as anyone. Never use it in production.",
                config.server.auth_prefix
            );
        }
        let find = |id: &str| providers.iter().find(|p| p.id() == id).cloned();
        // A route's custom identity headers are porteiro's on every route: a
        // client must not forge on a public route (often the same app) what
        // a protected route's login sets.
        let custom: Vec<&str> = config.routes.iter().flat_map(|r| r.headers.iter().map(|(h, _)| h.as_str())).collect();
        // One connection pool per distinct upstream, shared by its routes.
        let mut pools: Vec<Arc<Pool>> = Vec::new();
        let routes = RouteTable::new(config.routes.iter().map(|r| {
            let (login, bearer) = match &r.access {
                Access::Protected { login, bearer } => {
                    (login.as_deref().and_then(find), bearer.iter().filter_map(|b| find(b)).collect())
                }
                Access::Public => (None, Vec::new()),
            };
            let target = match &r.upstream {
                Upstream::Http { scheme, authority } => {
                    let pool = match pools.iter().find(|p| p.is_for(scheme, authority)) {
                        Some(pool) => pool.clone(),
                        None => {
                            let pool = proxy.pool(scheme, authority);
                            pools.push(pool.clone());
                            pool
                        }
                    };
                    Target::Http(pool)
                }
                Upstream::Whoami => Target::Whoami,
            };
            (r.host.clone(), r.path_prefix.clone(), compile_route(r, target, login, bearer, &custom, &shared.metrics))
        }));
        Ok(Gateway {
            routes,
            proxy,
            auth_prefix: config.server.auth_prefix.clone(),
            public_url: config.server.public_url.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            sessions: SessionCookies::new(&config.session, config.server.public_https),
            login_states: config.session.secret.as_ref().map(|secret| {
                auth::oidc::LoginStates::new(
                    secret,
                    &config.session.previous_secrets,
                    config.server.public_https,
                    &config.server.auth_prefix,
                    shared.clock.clone(),
                )
            }),
            providers,
            demo,
            admin_token: config.server.admin_token.clone(),
            shared,
        })
    }

    /// Ready to take traffic: not draining and every provider has its keys.
    pub fn ready(&self) -> bool {
        !self.shared.draining.load(Ordering::Relaxed) && self.providers.iter().all(|p| p.ready())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(crate) fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.id() == id)
    }

    /// Answers one request (see the module docs for the phases).
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        // A tunnel to anywhere is no request for an application (DESIGN §8.1).
        if req.method() == Method::CONNECT {
            let mut resp = self.reject(&req, StatusCode::METHOD_NOT_ALLOWED, "connect", "CONNECT is not supported.");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
            return resp;
        }

        // Phase 1: drain.
        if self.shared.draining.load(Ordering::Relaxed) {
            let mut resp = error::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "The gateway is shutting down; try again.",
                error::wants_html(req.headers()),
            );
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }

        // Phase 2: the canonical request.
        let target = match canonical::Target::of_request(&req) {
            Ok(target) => target,
            Err(refusal) => return self.reject(&req, StatusCode::BAD_REQUEST, refusal.reason(), refusal.message()),
        };

        // Phase 3: internal endpoints.
        if prefix_matches(&self.auth_prefix, target.path()) {
            let endpoint = target.path()[self.auth_prefix.len()..].to_string();
            drop(target);
            // Boxed: login flows need KBs of future state, which every
            // proxied request's future would otherwise carry and copy.
            return Box::pin(self.internal(req, &endpoint, conn)).await;
        }

        // Phase 4: route.
        let route = match self.route(&target) {
            Ok(route) => route,
            Err(refusal) => return self.reject(&req, refusal.status(), refusal.reason(), refusal.message()),
        };

        // Phase 5: authenticate.
        let (method, headers) = (req.method(), req.headers());
        let identity = match self.authenticate(method, headers, route, &target).await {
            Verdict::Pass(identity) => identity,
            Verdict::SignIn => {
                let resp = self.sign_in_required(method, headers, route, &target.return_path()).await;
                route.metrics.answered(resp.status());
                return resp;
            }
            Verdict::Forbidden => {
                route.metrics.answered(StatusCode::FORBIDDEN);
                return forbidden(is_navigation(method, headers));
            }
            Verdict::Respond(resp) => {
                route.metrics.answered(resp.status());
                return resp;
            }
        };

        // Phase 6: proxy.
        let (host, rewritten) = target.into_upstream();
        let resp = self.proxy(req, route, host, rewritten, identity.as_deref(), conn).await;
        route.metrics.answered(resp.status());
        resp
    }

    /// `{auth_prefix}/auth`: forward-auth for nginx `auth_request`,
    /// ingress-nginx `auth-url`, Traefik and Caddy ForwardAuth, and Envoy
    /// `ext_authz` (`{auth_prefix}/auth/<original path>`). The URL the caller
    /// names ([`crate::forward_auth`]) goes through the phases a proxied
    /// request does: canonical form, route, authenticate. The answer is only
    /// ever `200`, `401`, `403` or, with `?redirect=true` or in Envoy's form,
    /// a login redirect for a browser: nginx turns anything else into a
    /// `500` for the user.
    pub(crate) async fn forward_auth<B>(&self, req: &Request<B>) -> Response<Body> {
        let headers = req.headers();
        // Envoy's form is read from the path as received: the normalised one
        // already had its own `..` resolved against `{auth_prefix}/auth`.
        let raw = req.uri().path().strip_prefix(self.auth_prefix.as_str()).and_then(|r| r.strip_prefix("/auth"));
        let envoy = match raw {
            Some("") => None,
            Some(rest) if rest.starts_with('/') => Some(match req.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            }),
            _ => return self.forward_auth_refused(headers, "bad_original_url"),
        };
        let asked = match crate::forward_auth::asked_url(headers, envoy.as_deref()) {
            Ok(asked) => asked,
            Err(problem) => return self.forward_auth_refused(headers, problem.reason()),
        };
        let target = match canonical::Target::of_parts(asked.host.as_deref(), &asked.path, asked.query.as_deref()) {
            Ok(target) => target,
            Err(refusal) => return self.forward_auth_refused(headers, refusal.reason()),
        };
        let route = match self.route(&target) {
            Ok(route) => route,
            // Nothing to protect here under this config: deny rather than open.
            Err(RouteRefusal::NoRoute) => {
                self.shared.metrics.rejected("no_route");
                return forbidden(false);
            }
            Err(refusal) => return self.forward_auth_refused(headers, refusal.reason()),
        };
        // The original method, from the caller's header, else (Envoy) the
        // check request's own.
        let method = ["x-forwarded-method", "x-original-method"]
            .iter()
            .find_map(|n| headers.get(*n).and_then(|m| Method::from_bytes(m.as_bytes()).ok()))
            .unwrap_or_else(|| if envoy.is_some() { req.method().clone() } else { Method::GET });
        let redirect_mode = envoy.is_some() || query_flag(req.uri().query(), "redirect");
        let resp = match self.authenticate(&method, headers, route, &target).await {
            Verdict::Pass(identity) => {
                let mut resp = Response::new(Body::empty());
                if let Some(id) = identity {
                    put_identity_headers(resp.headers_mut(), &id, route, Audience::ForwardAuth);
                }
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            Verdict::Forbidden => forbidden(false),
            Verdict::SignIn => match &route.login {
                Some(p) if redirect_mode && is_navigation(&method, headers) => {
                    self.start_login(p, headers, &target.return_path()).await
                }
                _ => sign_in_json(),
            },
            // Bearer challenges (401, or 403 for a missing scope) are
            // answers an ingress relays; anything else would be a 500 there.
            Verdict::Respond(resp) if matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => resp,
            Verdict::Respond(_) => sign_in_json(),
        };
        route.metrics.answered(resp.status());
        resp
    }

    /// A forward-auth request whose URL cannot be judged: `401` without a
    /// session (nginx then starts a login), `403` with one.
    fn forward_auth_refused(&self, headers: &http::HeaderMap, reason: &'static str) -> Response<Body> {
        info!(reason, "forward-auth request refused");
        self.shared.metrics.rejected(reason);
        match self.any_session(headers) {
            Some(_) => forbidden(false),
            None => sign_in_json(),
        }
    }

    /// The session in the request, from any provider, not revoked.
    pub(crate) fn any_session(&self, headers: &http::HeaderMap) -> Option<Arc<Identity>> {
        let identity = self.sessions.as_ref()?.read(headers, self.shared.clock.now())?;
        let store = &self.shared.store;
        (!store.is_revoked(&identity.sid, &identity.sub, identity.email.as_deref(), identity.iat)).then_some(identity)
    }

    /// Phase 4: the route a canonical request goes to. The route is chosen on
    /// the path without `;params`, as servers that drop them will read it;
    /// encoded slashes and semicolons are refused unless the route allows
    /// them.
    pub(crate) fn route(&self, target: &canonical::Target<'_>) -> Result<&Route, RouteRefusal> {
        let route = self.routes.find(target.host(), &target.decision_path()).ok_or(RouteRefusal::NoRoute)?;
        if target.encoded_slash() && !route.allow_encoded_slashes {
            return Err(RouteRefusal::EncodedSlash);
        }
        if target.semicolon() && !route.allow_semicolons {
            return Err(RouteRefusal::Semicolon);
        }
        Ok(route)
    }

    /// Phase 5. Several `Authorization` headers are 400, on any route.
    /// Public routes and `public_paths` pass without a session. A request
    /// carrying `Authorization` on a route that takes bearer tokens (or any
    /// request to a bearer-only route) is judged as an API call; otherwise
    /// it needs a valid session from the route's login provider. Either way
    /// the route's `allow` rules decide.
    pub(crate) async fn authenticate(
        &self,
        method: &Method,
        headers: &http::HeaderMap,
        route: &Route,
        target: &canonical::Target<'_>,
    ) -> Verdict {
        let credential = auth::bearer::credential(headers);
        if credential == auth::bearer::Credential::Several {
            info!(reason = "several_authorization", %method, status = 400, "request refused");
            self.shared.metrics.rejected("several_authorization");
            let why = "Send at most one Authorization header.";
            let resp = error::error(StatusCode::BAD_REQUEST, "several_authorization", why, error::wants_html(headers));
            return Verdict::Respond(resp);
        }
        let public = route.access == Access::Public || {
            let decision = target.decision_path();
            route.public_paths.iter().any(|p| prefix_matches(p, &decision))
        };
        if public {
            return Verdict::Pass(None);
        }
        if !route.bearer.is_empty() && (credential != auth::bearer::Credential::Absent || route.login.is_none()) {
            return self.authenticate_bearer(route, credential.token()).await;
        }
        match self.session(headers, route) {
            Some(identity) => self.allowed(route, identity),
            None => Verdict::SignIn,
        }
    }

    /// The route's `allow` rules on an identity.
    fn allowed(&self, route: &Route, identity: Arc<Identity>) -> Verdict {
        if permits(&route.allow, &identity) {
            return Verdict::Pass(Some(identity));
        }
        info!(route = %route.id, user = %identity.sub, "signed in but not allowed");
        Verdict::Forbidden
    }

    /// An API call: `Authorization: Bearer <JWT>` checked against the
    /// route's bearer providers (RFC 6750 answers, never a redirect).
    async fn authenticate_bearer(
        &self,
        route: &Route,
        token: Result<&str, Option<auth::token::TokenError>>,
    ) -> Verdict {
        let now = self.shared.clock.now();
        let mut refused = None;
        let token = match token {
            Ok(token) => token,
            Err(None) => {
                return Verdict::Respond(bearer_challenge(StatusCode::UNAUTHORIZED, None, "bearer token required"));
            }
            // Unreadable by any provider: refused below as malformed.
            Err(Some(e)) => {
                refused = Some(("-", e));
                ""
            }
        };
        let providers = if refused.is_none() { &route.bearer[..] } else { &[] };
        for provider in providers {
            let Some(b) = provider.as_bearer() else { continue };
            match b.check(token, now).await {
                Ok(accepted) => {
                    let missing = b.missing_scopes(&accepted);
                    if !missing.is_empty() {
                        self.shared.metrics.auth_failure(&b.id, "insufficient_scope");
                        let mut resp = bearer_challenge(
                            StatusCode::FORBIDDEN,
                            Some("insufficient_scope"),
                            "token lacks a required scope",
                        );
                        let scope = format!(
                            "Bearer realm=\"porteiro\", error=\"insufficient_scope\", scope=\"{}\"",
                            b.required_scopes.join(" ")
                        );
                        if let Ok(v) = HeaderValue::from_str(&scope) {
                            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                        }
                        return Verdict::Respond(resp);
                    }
                    return self.allowed(route, accepted.identity);
                }
                Err(e) => {
                    // Several providers: keep the reason of the one the token was meant for.
                    if refused.is_none_or(|(_, prev)| relevance(e) > relevance(prev)) {
                        refused = Some((b.id.as_str(), e));
                    }
                }
            }
        }
        let (provider, e) = refused.unwrap_or(("-", auth::token::TokenError::Malformed));
        info!(route = %route.id, provider, reason = e.reason(), "bearer token refused");
        self.shared.metrics.auth_failure(provider, e.reason());
        let status = match e {
            auth::token::TokenError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        Verdict::Respond(bearer_challenge(status, Some("invalid_token"), &e.description()))
    }

    /// The session in the request's cookies, valid for `route`'s provider
    /// and not revoked.
    pub(crate) fn session(&self, headers: &http::HeaderMap, route: &Route) -> Option<Arc<Identity>> {
        let identity = self.sessions.as_ref()?.read(headers, self.shared.clock.now())?;
        let provider = route.login.as_ref()?;
        if identity.provider != provider.id() {
            return None;
        }
        let revoked =
            self.shared.store.is_revoked(&identity.sid, &identity.sub, identity.email.as_deref(), identity.iat);
        (!revoked).then_some(identity)
    }

    /// Sends a browser on an app's path to `provider`'s login.
    pub(crate) async fn start_login(
        &self,
        provider: &Provider,
        headers: &http::HeaderMap,
        return_to: &str,
    ) -> Response<Body> {
        // An OpenID Connect or SAML attempt begins at `{auth_prefix}/start`:
        // the browser sends the attempt cookies it holds (`Path=/sso/`)
        // only there, and only with them can the oldest beyond the bound be
        // expired. Here, on the app's path, it sends none.
        if provider.binds_browser() {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("provider", provider.id())
                .append_pair("redirectUrl", return_to)
                .finish();
            return redirect(&format!("{}/start?{query}", self.auth_prefix));
        }
        self.begin_login(provider, headers, return_to, None).await
    }

    /// Not signed in: a browser navigation goes to the login page, anything
    /// else gets a 401 it can act on.
    pub(crate) async fn sign_in_required(
        &self,
        method: &Method,
        headers: &http::HeaderMap,
        route: &Route,
        return_to: &str,
    ) -> Response<Body> {
        match &route.login {
            Some(provider) if is_navigation(method, headers) => self.start_login(provider, headers, return_to).await,
            _ => error::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Sign-in is required.",
                error::wants_html(headers) && is_navigation(method, headers),
            ),
        }
    }

    /// Phase 6: rewrite headers and send upstream (or answer as whoami).
    /// `host` is the canonical host; `rewritten` the normalised path when it
    /// differs from the request's.
    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        host: Option<HeaderValue>,
        rewritten: Option<String>,
        identity: Option<&Identity>,
        conn: ConnInfo,
    ) -> Response<Body> {
        let trusted = self.trusted_proxies.iter().any(|n| n.contains(&conn.peer.ip()));
        let fwd = Forwarding { peer: conn.peer.ip(), tls: conn.tls, trusted };
        let strip = if trusted { &route.strip_trusted } else { &route.strip_untrusted };
        if identity.is_some() {
            // Room for the identity headers too: the map then grows once, not
            // twice (each growth rehashes every header).
            req.headers_mut().reserve(3 + 4 + route.claim_headers.len());
        }
        let upgrade = proxy::prepare_request_headers(req.headers_mut(), host.as_ref(), &fwd, strip, &route.upgrades);
        if let Some(sessions) = &self.sessions {
            strip_cookies(req.headers_mut(), |name| sessions.owns(name));
        }
        if let Some(identity) = identity {
            put_identity_headers(req.headers_mut(), identity, route, Audience::Upstream);
        }
        // The host that chose the route is the one the upstream receives
        // (HTTP/2 and absolute-form requests carry it outside `Host`).
        let has_host = host.is_some();
        if let Some(h) = host {
            req.headers_mut().insert(header::HOST, h);
        }
        match &route.target {
            Target::Whoami => {
                let path = rewritten.as_deref().unwrap_or(req.uri().path());
                proxy::whoami(&req, path, &route.identity)
            }
            Target::Http(upstream) => {
                // The upstream's own name, unless the route keeps the client's
                // (and the client sent one: HTTP/1.1 upstreams need a Host).
                if !route.preserve_host || !has_host {
                    if let Some(v) = upstream.host_header() {
                        req.headers_mut().insert(header::HOST, v.clone());
                    }
                }
                let html = error::wants_html(req.headers());
                match self.proxy.forward(req, upstream, rewritten, upgrade).await {
                    Ok((resp, took)) => {
                        route.metrics.upstream_duration(took.as_secs_f64());
                        resp
                    }
                    Err(proxy::UpstreamError::ClientBody(why)) => {
                        info!(route = %route.id, error = %why, "request body malformed or cut short");
                        self.shared.metrics.rejected("bad_request_body");
                        let text = "The request body is malformed or incomplete.";
                        error::error(StatusCode::BAD_REQUEST, "bad_request_body", text, html)
                    }
                    Err(e) => {
                        warn!(route = %route.id, upstream = %upstream.authority(), error = %e, "upstream failed");
                        let (status, code, text) = match e {
                            proxy::UpstreamError::Timeout(_) => (
                                StatusCode::GATEWAY_TIMEOUT,
                                "upstream_timeout",
                                "The application did not answer in time.",
                            ),
                            _ => (StatusCode::BAD_GATEWAY, "bad_gateway", "The application is unreachable."),
                        };
                        error::error(status, code, text, html)
                    }
                }
            }
        }
    }

    /// An answer refused before a route is known; logged and counted.
    pub(crate) fn reject<B>(
        &self,
        req: &Request<B>,
        status: StatusCode,
        reason: &'static str,
        text: &str,
    ) -> Response<Body> {
        info!(reason, method = %req.method(), status = status.as_u16(), "request refused");
        self.shared.metrics.rejected(reason);
        error::error(status, reason, text, error::wants_html(req.headers()))
    }
}

/// How much a provider's refusal says about a token, when several bearer
/// providers refuse it: a key or algorithm that does not fit says least (the
/// token was meant for another provider), a signature or issuer mismatch
/// more, and anything found in a token the provider verified (expired,
/// wrong audience, missing scope claim...) most.
fn relevance(e: auth::token::TokenError) -> u8 {
    use auth::token::TokenError::*;
    match e {
        AlgorithmNotAllowed | UnknownKey => 0,
        BadSignature | WrongIssuer => 1,
        _ => 2,
    }
}

/// Who identity headers are for: the upstream (`X-Forwarded-*`) or a
/// forward-auth caller (`X-Auth-Request-*`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    Upstream,
    ForwardAuth,
}

/// Sets the identity headers for `route`. Values were checked for control
/// characters at login; anything still unrepresentable is left out. The
/// standard four are made once per identity (cached sessions share them).
pub(crate) fn put_identity_headers(headers: &mut http::HeaderMap, id: &Identity, route: &Route, to: Audience) {
    // Built at compile time: made per request, each name cost a validation.
    static UPSTREAM: [HeaderName; 4] = [
        HeaderName::from_static("x-forwarded-user"),
        HeaderName::from_static("x-forwarded-email"),
        HeaderName::from_static("x-forwarded-preferred-username"),
        HeaderName::from_static("x-forwarded-groups"),
    ];
    static FORWARD_AUTH: [HeaderName; 4] = [
        HeaderName::from_static("x-auth-request-user"),
        HeaderName::from_static("x-auth-request-email"),
        HeaderName::from_static("x-auth-request-preferred-username"),
        HeaderName::from_static("x-auth-request-groups"),
    ];
    let names = match to {
        Audience::Upstream => &UPSTREAM,
        Audience::ForwardAuth => &FORWARD_AUTH,
    };
    let values = id.header_values();
    for (name, value) in names.iter().zip(values) {
        if let Some(v) = value {
            headers.insert(name.clone(), v.clone());
        }
    }
    for (name, claim) in &route.claim_headers {
        let value = match claim.as_str() {
            "sub" => values[0].clone(),
            "email" => values[1].clone(),
            "preferred_username" => values[2].clone(),
            "groups" => values[3].clone(),
            "name" => id.name.as_deref().and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()),
            other => id.claims.get(other).and_then(|v| HeaderValue::from_bytes(v.join(",").as_bytes()).ok()),
        };
        if let Some(v) = value {
            headers.insert(name.clone(), v);
        }
    }
}

/// `custom` is every route's custom identity header names.
fn compile_route(
    r: &RouteConfig,
    target: Target,
    login: Option<Arc<Provider>>,
    bearer: Vec<Arc<Provider>>,
    custom: &[&str],
    metrics: &Metrics,
) -> Route {
    let identity = StripSet::new(IDENTITY_HEADERS.iter().copied().chain(custom.iter().copied()));
    // From anyone: what porteiro sets, and what lets an upstream read
    // another path or protocol than the one judged here.
    let always = IDENTITY_HEADERS.iter().chain(proxy::NEVER_FORWARDED.iter()).copied().chain(custom.iter().copied());
    let trusted = StripSet::new(always.clone());
    let strip_untrusted = StripSet::new(always.chain(proxy::FORWARDING_HEADERS.iter().copied()));
    Route {
        id: r.id.clone(),
        target,
        access: r.access.clone(),
        login,
        bearer,
        public_paths: r.public_paths.clone(),
        allow: r.allow.clone(),
        strip_untrusted,
        strip_trusted: trusted,
        identity,
        claim_headers: r.headers.clone(),
        preserve_host: r.preserve_host,
        allow_encoded_slashes: r.allow_encoded_slashes,
        allow_semicolons: r.allow_semicolons,
        upgrades: proxy::Upgrades::new(&r.upgrades),
        metrics: metrics.route(&r.id),
    }
}

/// `401 {"error": "unauthorized"}`: sign-in is required (JSON whatever the
/// Accept header: forward-auth callers turn it into a login themselves).
fn sign_in_json() -> Response<Body> {
    error::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({ "error": "unauthorized", "error_description": "Sign-in is required." }),
    )
}

/// `?name=true` (or `1`) in a query.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == name && (v == "true" || v == "1")))
}

/// Signed in but not allowed (`403`).
pub(crate) fn forbidden(html: bool) -> Response<Body> {
    error::error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "You are signed in, but not allowed to use this application.",
        html,
    )
}

/// A browser navigation (as opposed to an API call or XHR): GET/HEAD that
/// accepts HTML and is not marked as a script's request.
pub(crate) fn is_navigation(method: &Method, h: &http::HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && error::wants_html(h)
        && !h.contains_key("x-requested-with")
        && h.get("sec-fetch-mode").is_none_or(|m| m == "navigate")
}

/// An RFC 6750 answer: `WWW-Authenticate: Bearer realm="porteiro"[, error=...]`
/// and a JSON body `{"error", "error_description"}`. Without an `error` (no
/// token at all) the challenge carries no error code, as the RFC asks.
pub(crate) fn bearer_challenge(status: StatusCode, error: Option<&str>, description: &str) -> Response<Body> {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"porteiro\", error=\"{e}\", error_description=\"{description}\""),
        None => "Bearer realm=\"porteiro\"".to_string(),
    };
    let mut resp = error::json(
        status,
        &serde_json::json!({ "error": error.unwrap_or("unauthorized"), "error_description": description }),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// A `302` of porteiro's own (never cached, never leaks a Referer).
pub(crate) fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    error::harden(resp.headers_mut());
    resp
}
