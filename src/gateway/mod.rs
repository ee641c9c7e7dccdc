//! The request path. Every request to the main listener goes through these
//! phases, in order:
//!
//! 1. **Request id** — `X-Request-Id` kept from a trusted proxy when sane,
//!    else generated ([`request_id`]); set on the request that goes upstream
//!    and on every answer, and a field of the `request` span every log line
//!    about the request carries. (Draining refuses nothing here: after
//!    `SIGTERM` porteiro serves as usual for `server.shutdown_delay_seconds`,
//!    then [`crate::server`] stops accepting and says `Connection: close`.)
//! 2. **Canonical request** — host and path are validated and normalised
//!    once ([`crate::canonical`]); a request that could be read two ways
//!    gets `400`. Everything after decides on this [`canonical::Target`], and the
//!    upstream receives exactly its host and path.
//! 3. **Internal endpoints** — paths under `server.auth_prefix` (`/sso`) are
//!    porteiro's own ([`endpoints`]) and never reach an upstream.
//! 4. **Route** — host, then longest path prefix ([`crate::routes`]); no
//!    route gets `404`. Encoded `/` or `\`, and `;`, get `400` unless the
//!    route allows them.
//! 5. **Authenticate** — public routes and `public_paths` pass; protected
//!    routes need an identity. The outcome is a [`Verdict`] — an identity
//!    or a refusal — never an error.
//! 6. **Proxy** — headers rewritten ([`crate::proxy`]), identity headers set
//!    (with `identity_jwt`, the signed assertion of
//!    [`crate::auth::identity_jwt`]), request streamed to the upstream,
//!    answer streamed back; `502` when the upstream is down, `504` when it
//!    is too slow.
//!
//! Forward-auth (`/sso/auth`, [`forward_auth`]) runs phases 2, 4 and 5 on
//! the URL its caller names ([`asked_url`]), so it judges exactly as
//! proxying would. Every refusal is an [`crate::error::Reject`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;
use tracing::{Instrument, info, warn};

mod access;
mod api_key_endpoints;
mod asked_url;
mod backchannel;
mod endpoints;
mod forward_auth;
mod limits;
pub mod memo;
pub mod request_id;

use self::memo::{ConnMemo, Presented, Proof};
use crate::auth::api_keys;
use crate::auth::identity_jwt::{self, IdentitySigner};
use crate::auth::jwks::JwksRegistry;
use crate::auth::provider::{self, Provider, bearer};
use crate::auth::session::{SessionCookies, strip_cookies};
use crate::auth::store::Store;
use crate::auth::{self, Identity};
use crate::canonical;
use crate::config::{Access, AllowRules, Config, IdentityAudience, RouteConfig};
use crate::error::{self, Class, Reject};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::Body;
use crate::proxy::{self, Forwarding, Proxy, StripSet, Target};
use crate::routes::{RouteTable, normalize_host, prefix_matches};
use crate::server::ConnInfo;

/// Identity headers porteiro sets for upstreams (oauth2-proxy compatible,
/// and the signed identity of routes with `identity_jwt = true`) and answers
/// to forward-auth callers; always stripped from clients' requests.
pub const IDENTITY_HEADERS: [&str; 9] = [
    identity_jwt::HEADER,
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
    /// The session index and API keys: in memory, redb under
    /// `server.state_dir`, or Redis.
    pub records: crate::auth::records::Records,
    pub api_keys: crate::auth::api_keys::ApiKeys,
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
    /// Takes API keys of its login provider's users.
    api_keys: bool,
    /// Sends the signed identity header, for this audience.
    identity_jwt: Option<IdentityAudience>,
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
    /// How it passed: `Public`, `Session` or `Bearer` (for the access log).
    Pass(Option<Arc<Identity>>, access::Auth),
    /// An expired session renewed at its OpenID provider: go on with the
    /// new identity, and set these cookies (the new session) on whatever
    /// the upstream answers.
    Renewed(Arc<Identity>, Vec<HeaderValue>),
    /// The provider refused to renew the session, which has ended: sign in
    /// again (as [`Verdict::SignIn`]), and clear the session cookies.
    Ended(Vec<HeaderValue>),
    /// No valid session: a login for a browser navigation, else `401`.
    SignIn,
    /// Signed in, but the route's `allow` rules say no: `403`.
    Forbidden,
    /// An API client's answer, made already (RFC 6750 challenges).
    Respond(Response<Body>),
}

/// Phase 5 as far as it goes without waiting: a verdict, or what is left
/// to do to reach one.
enum Judged<'r> {
    Done(Verdict),
    /// A verdict on a credential: when it passes, the connection may keep
    /// the credential ([`memo`]) with how it was proved.
    Proved(Verdict, Proof),
    /// A bearer token not verified before (and its cache key).
    Bearer(&'r str, [u8; 32]),
    /// An API key this replica has not seen.
    ApiKey(&'r str),
    /// An expired session its OpenID provider may renew.
    Renew(&'r Arc<Provider>, Arc<Identity>),
}

/// Why a canonical request has no route to go on to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteRefusal {
    NoRoute,
    EncodedSlash,
    Semicolon,
}

impl RouteRefusal {
    pub(crate) fn reject(self) -> Reject {
        match self {
            RouteRefusal::NoRoute => {
                Reject::new(Class::NotFound, "no_route", "No application is served at this address.")
            }
            RouteRefusal::EncodedSlash => {
                Reject::new(Class::BadRequest, "encoded_slash", "Encoded slashes are not allowed in this path.")
            }
            RouteRefusal::Semicolon => {
                Reject::new(Class::BadRequest, "semicolon", "Semicolons are not allowed in this path.")
            }
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
    pub(crate) login_states: Option<auth::attempt::LoginStates>,
    pub(crate) demo: Option<provider::jwt::DemoLogin>,
    pub(crate) admin_token: Option<crate::config::Secret>,
    /// Login providers whose users may mint API keys (those of routes with
    /// `api_keys = true`).
    pub(crate) api_key_providers: Vec<String>,
    pub(crate) api_keys_per_user: usize,
    /// `server.access_log`.
    access_log: bool,
    /// `[rate_limit]`: per client address, reset by a reload.
    pub(crate) limits: limits::RateLimits,
    /// Signs the identity header of routes with `identity_jwt = true`
    /// (there is none without such a route); serves `/jwks.json`.
    pub(crate) identity_signer: Option<IdentitySigner>,
    /// The audience of a signed identity when the route names none and the
    /// request no host: `server.public_url`'s host name.
    public_host: String,
    /// Tells this gateway's routes from those of an earlier or later one
    /// (a reload) in the credentials connections keep.
    instance: u64,
}

impl Gateway {
    /// Compiles a gateway from a validated config.
    pub fn new(config: &Config, shared: Arc<Shared>) -> Result<Gateway, String> {
        let tls = proxy::upstream_tls(config.server.upstream_ca_file.as_deref())?;
        let fetcher = auth::fetch::Fetcher::new(tls.clone());
        let mut proxy = Proxy::new(proxy::ProxySettings {
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
        let setup = provider::Setup { config, keep: &keep, fetcher: &fetcher, jwks: &shared.jwks };
        let mut providers = Vec::new();
        for p in &config.providers {
            providers.push(Arc::new(provider::build(p, &setup)?));
        }
        let demo = provider::jwt::DemoLogin::from_config(config);
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
        let routes = RouteTable::new(config.routes.iter().map(|r| {
            let (login, bearer) = match &r.access {
                Access::Protected { login, bearer } => {
                    (login.as_deref().and_then(find), bearer.iter().filter_map(|b| find(b)).collect())
                }
                Access::Public => (None, Vec::new()),
            };
            let target = proxy.target(&r.upstream);
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
                auth::attempt::LoginStates::new(
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
            api_key_providers: {
                let mut ids: Vec<String> = config
                    .routes
                    .iter()
                    .filter(|r| r.api_keys)
                    .filter_map(|r| match &r.access {
                        Access::Protected { login: Some(l), .. } => Some(l.clone()),
                        _ => None,
                    })
                    .collect();
                ids.sort();
                ids.dedup();
                ids
            },
            api_keys_per_user: config.session.api_keys_per_user,
            access_log: config.server.access_log,
            limits: limits::RateLimits::new(&config.rate_limit),
            identity_signer: match &config.session.secret {
                Some(secret) if config.routes.iter().any(|r| r.identity_jwt.is_some()) => {
                    Some(IdentitySigner::new(&config.server.public_url, secret, &config.session.previous_secrets))
                }
                _ => None,
            },
            public_host: {
                let authority = config.server.public_url.split_once("://").map_or("", |(_, a)| a);
                normalize_host(authority).into_owned()
            },
            instance: {
                static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                INSTANCES.fetch_add(1, Ordering::Relaxed)
            },
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
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        memo: Arc<ConnMemo>,
    ) -> Response<Body> {
        // Phase 1: the request id.
        let peer = conn.peer.ip();
        let fwd = Forwarding { peer, tls: conn.tls, trusted: self.trusted(peer) };
        let id = request_id::choose(req.headers(), fwd.trusted);
        let id_text = id.to_str().unwrap_or("-");
        // The client as trusted proxies report it: rate limits and the
        // access log count it.
        let client = access::client_addr(req.headers(), peer, &self.trusted_proxies);
        // Nothing is kept for a line the log level would drop.
        let line = (self.access_log
            && tracing::enabled!(target: crate::log_batch::ACCESS_TARGET, tracing::Level::INFO))
        .then(|| access::Line::of(req.headers(), req.method(), req.uri(), client));
        let mut note = access::Note::default();
        let span = tracing::info_span!("request", id = id_text);
        // A disabled span is not worth wrapping the request's future in: the
        // wrapper moves the whole (large) future once more.
        let mut resp = if span.is_disabled() {
            self.phases(req, &id, fwd, client, &memo, &mut note).await
        } else {
            self.phases(req, &id, fwd, client, &memo, &mut note).instrument(span).await
        };
        resp.headers_mut().insert(request_id::X_REQUEST_ID.clone(), id.clone());
        if let Some(line) = line {
            line.write(id_text, &mut resp, note);
        }
        resp
    }

    /// Whether `peer` is one of `server.trusted_proxies`.
    fn trusted(&self, peer: std::net::IpAddr) -> bool {
        !self.trusted_proxies.is_empty() && self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    /// Phases 2 to 6.
    async fn phases<'g>(
        &'g self,
        req: Request<Incoming>,
        id: &HeaderValue,
        fwd: Forwarding,
        client: IpAddr,
        memo: &ConnMemo,
        note: &mut access::Note<'g>,
    ) -> Response<Body> {
        // A tunnel to anywhere is no request for an application (DESIGN §8.1).
        if req.method() == Method::CONNECT {
            let refusal = Reject::new(Class::MethodNotAllowed, "connect", "CONNECT is not supported.");
            let mut resp = self.reject(&req, refusal);
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
            return resp;
        }

        // Phase 2: the canonical request.
        let target = match canonical::Target::of_request(&req) {
            Ok(target) => target,
            Err(refusal) => {
                return self.reject(&req, Reject::new(Class::BadRequest, refusal.reason(), refusal.message()));
            }
        };

        // Phase 3: internal endpoints.
        if prefix_matches(&self.auth_prefix, target.path()) {
            let endpoint = target.path()[self.auth_prefix.len()..].to_string();
            drop(target);
            // Boxed: login flows need KBs of future state, which every
            // proxied request's future would otherwise carry and copy.
            return Box::pin(self.internal(req, &endpoint, client)).await;
        }

        // Phase 4: route.
        let route = match self.route(&target) {
            Ok(route) => route,
            Err(refusal) => return self.reject(&req, refusal.reject()),
        };
        note.route = Some(&route.id);

        // Phase 5: authenticate.
        let (method, headers) = (req.method(), req.headers());
        let mut renewed_cookies = Vec::new();
        let identity = match self.authenticate(method, headers, route, &target, client, Some(memo)).await {
            Verdict::Pass(identity, how) => {
                note.auth = how;
                note.user.clone_from(&identity);
                identity
            }
            Verdict::Renewed(identity, cookies) => {
                note.auth = access::Auth::Refreshed;
                note.user = Some(identity.clone());
                renewed_cookies = cookies;
                Some(identity)
            }
            Verdict::SignIn => {
                note.auth = access::Auth::Refused("no_session");
                // Boxed: starting a login waits on the store (kilobytes of
                // state every request's future would otherwise carry).
                let resp = Box::pin(self.sign_in_required(method, headers, route, &target.return_path())).await;
                route.metrics.answered(resp.status());
                return resp;
            }
            Verdict::Ended(clear) => {
                note.auth = access::Auth::Refused("session_ended");
                let mut resp = Box::pin(self.sign_in_required(method, headers, route, &target.return_path())).await;
                for c in clear {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                route.metrics.answered(resp.status());
                return resp;
            }
            Verdict::Forbidden => {
                note.auth = access::Auth::Refused("forbidden");
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
        let (mut resp, took) = self.proxy(req, id, route, host, rewritten, identity.as_deref(), fwd).await;
        // The renewed session goes back beside whatever the upstream said.
        for c in renewed_cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        note.upstream = took;
        route.metrics.answered(resp.status());
        resp
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
        client: IpAddr,
        memo: Option<&ConnMemo>,
    ) -> Verdict {
        // What waits (on a provider or the store) is boxed: the request's
        // future, copied as it moves through the phases, then does not
        // carry those kilobytes.
        match self.judge(method, headers, route, target, client, memo) {
            Judged::Done(verdict) | Judged::Proved(verdict, _) => verdict,
            Judged::Bearer(token, key) => Box::pin(self.verify_bearer(route, token, &key, client)).await,
            Judged::ApiKey(token) => Box::pin(self.check_api_key(route, token, client)).await,
            Judged::Renew(login, expired) => Box::pin(self.renew(route, login, expired, method, headers)).await,
        }
    }

    /// Phase 5 without waiting: public paths, sessions, bearer tokens
    /// verified before and API keys seen before (most requests) are judged
    /// here; otherwise, what is left to do.
    fn judge<'r>(
        &self,
        method: &Method,
        headers: &'r http::HeaderMap,
        route: &'r Route,
        target: &canonical::Target<'_>,
        client: IpAddr,
        memo: Option<&ConnMemo>,
    ) -> Judged<'r> {
        let credential = bearer::credential(headers);
        if credential == bearer::Credential::Several {
            info!(reason = "several_authorization", %method, status = 400, "request refused");
            self.shared.metrics.rejected("several_authorization");
            let why = "Send at most one Authorization header.";
            let refusal = Reject::new(Class::BadRequest, "several_authorization", why);
            return Judged::Done(Verdict::Respond(refusal.answer(error::wants_html(headers))));
        }
        let public = route.access == Access::Public || {
            let decision = target.decision_path();
            route.public_paths.iter().any(|p| prefix_matches(p, &decision))
        };
        if public {
            return Judged::Done(Verdict::Pass(None, access::Auth::Public));
        }
        let Some((memo, presented)) = memo.and_then(|m| Some((m, Presented::of(headers)?))) else {
            return self.judge_credentials(headers, route, credential, client);
        };
        if let Some(verdict) = self.recall(memo, route, &presented) {
            return Judged::Done(verdict);
        }
        let judged = self.judge_credentials(headers, route, credential, client);
        if let Judged::Proved(Verdict::Pass(Some(identity), _), proof) = &judged {
            memo.keep(self.instance, route_key(route), &presented, identity, proof.clone());
        }
        judged
    }

    /// The credential a connection kept ([`memo`]), when the request
    /// presents exactly it on the same route and it still holds.
    fn recall(&self, memo: &ConnMemo, route: &Route, presented: &Presented<'_>) -> Option<Verdict> {
        let (identity, proof) = memo.recall(self.instance, route_key(route), presented)?;
        let now = self.shared.clock.now();
        let (holds, how) = match &proof {
            Proof::Session => {
                let store = &self.shared.store;
                let id = &identity;
                let live = id.exp > now && !store.is_revoked(&id.sid, &id.sub, id.email.as_deref(), id.iat);
                (live, access::Auth::Session)
            }
            Proof::Bearer { until } => (now < *until, access::Auth::Bearer),
            Proof::ApiKey(known) => (self.shared.api_keys.still_valid(known), access::Auth::ApiKey),
        };
        if !holds {
            // Judged afresh, which says why.
            memo.forget();
            return None;
        }
        if how == access::Auth::ApiKey {
            self.shared.metrics.api_key_used();
        }
        Some(Verdict::Pass(Some(identity), how))
    }

    /// Phase 5 for a request that needs credentials (after the public
    /// paths).
    fn judge_credentials<'r>(
        &self,
        headers: &'r http::HeaderMap,
        route: &'r Route,
        credential: bearer::Credential<'r>,
        client: IpAddr,
    ) -> Judged<'r> {
        if route.api_keys {
            if let bearer::Credential::Bearer(token) = credential {
                if token.starts_with(api_keys::PREFIX) {
                    return self.judge_api_key(route, token, client);
                }
            }
        }
        if !route.bearer.is_empty() && (credential != bearer::Credential::Absent || route.login.is_none()) {
            return self.judge_bearer(route, credential.token(), client);
        }
        let Some(login) = route.login.as_ref() else { return Judged::Done(Verdict::SignIn) };
        if let Some(identity) = self.session(headers, Some(login.id())) {
            return Judged::Proved(self.allowed(route, identity, access::Auth::Session), Proof::Session);
        }
        match self.renewable(headers, Some(login.id())) {
            Some(expired) => Judged::Renew(login, expired),
            None => Judged::Done(Verdict::SignIn),
        }
    }

    /// An expired session in the request's cookies that its provider may
    /// still renew (`refresh = true`), not revoked; only from provider
    /// `from` when one is named.
    pub(crate) fn renewable(&self, headers: &http::HeaderMap, from: Option<&str>) -> Option<Arc<Identity>> {
        let identity = self.sessions.as_ref()?.read_renewable(headers, self.shared.clock.now())?;
        if from.is_some_and(|p| p != identity.provider) {
            return None;
        }
        let revoked =
            self.shared.store.is_revoked(&identity.sid, &identity.sub, identity.email.as_deref(), identity.iat);
        (!revoked).then_some(identity)
    }

    /// Renews an expired session at its OpenID provider (see
    /// [`provider::oidc_refresh`]) before the request's body is read, so
    /// the request goes on untouched: the new session for the route's
    /// `allow` rules and a new cookie, or the session ended, or `503`
    /// while the provider cannot be asked.
    async fn renew(
        &self,
        route: &Route,
        login: &Arc<Provider>,
        expired: Arc<Identity>,
        method: &Method,
        headers: &http::HeaderMap,
    ) -> Verdict {
        let asked = provider::oidc_refresh::renew(login, &self.shared.store, expired.clone()).await;
        let metrics = &self.shared.metrics;
        let count = |result: &'static str| {
            if asked.led {
                metrics.session_refresh(login.id(), result);
            }
        };
        let Some(sessions) = &self.sessions else { return Verdict::SignIn };
        match asked.renewal {
            provider::oidc_refresh::Renewal::Renewed(identity) => {
                if asked.led {
                    info!(provider = %login.id(), user = %identity.sub, joined = asked.joined, "session renewed");
                }
                count(if asked.joined { "joined" } else { "renewed" });
                match sessions.write(&identity, headers) {
                    Ok(cookies) => match self.allowed(route, identity, access::Auth::Session) {
                        Verdict::Pass(Some(identity), _) => Verdict::Renewed(identity, cookies),
                        other => other,
                    },
                    Err(why) => {
                        warn!(provider = %login.id(), error = why, "renewed session does not fit a cookie; it ends");
                        self.end_session(&expired).await;
                        Verdict::Ended(sessions.clear(headers))
                    }
                }
            }
            provider::oidc_refresh::Renewal::Ended(reason) => {
                if asked.led {
                    info!(provider = %login.id(), user = %expired.sub, reason, "session not renewed; it ends");
                }
                count(if reason == "abandoned" { "abandoned" } else { "ended" });
                self.end_session(&expired).await;
                Verdict::Ended(sessions.clear(headers))
            }
            provider::oidc_refresh::Renewal::Unavailable(reason) => {
                count("unavailable");
                let text = "Your session cannot be renewed right now; try again in a moment.";
                let mut resp = Reject::new(Class::Unavailable, "refresh_unavailable", text)
                    .answer(error::wants_html(headers) && is_navigation(method, headers));
                resp.extensions_mut().insert(error::Refused(reason));
                Verdict::Respond(resp)
            }
        }
    }

    /// Ends a session whose refresh was refused: revoked on every replica
    /// (by its id), dropped from the index, its refresh token forgotten.
    async fn end_session(&self, identity: &Identity) {
        let now = self.shared.clock.now();
        let until = identity.renew_until.unwrap_or(identity.exp);
        let ttl = std::time::Duration::from_secs(until.saturating_sub(now) + 60);
        let store = self.shared.store.as_ref();
        if let Err(e) = store.revoke(crate::auth::store::Revocation::Session(identity.sid.clone()), now, ttl).await {
            warn!(error = %e, "cannot record the end of a session whose refresh was refused");
        }
        let entry = crate::auth::records::SessionEntry::of(identity);
        if let Err(e) = self.shared.records.drop_sessions(&[entry]).await {
            warn!(error = %e, "cannot drop an ended session from the index");
        }
        provider::oidc_refresh::forget(store, &identity.sid).await;
    }

    /// The route's `allow` rules on an identity.
    fn allowed(&self, route: &Route, identity: Arc<Identity>, how: access::Auth) -> Verdict {
        if permits(&route.allow, &identity) {
            return Verdict::Pass(Some(identity), how);
        }
        info!(route = %route.id, user = %identity.sub, "signed in but not allowed");
        Verdict::Forbidden
    }

    /// An API call: `Authorization: Bearer <JWT>` checked against the
    /// route's bearer providers (RFC 6750 answers, never a redirect). A
    /// token verified before is answered from a provider's cache; only a
    /// new one is checked for token syntax, then verified (waiting, when a
    /// provider's keys must be fetched).
    fn judge_bearer<'t>(
        &self,
        route: &Route,
        token: Result<&'t str, Option<auth::token::TokenError>>,
        client: IpAddr,
    ) -> Judged<'t> {
        let token = match token {
            Ok(token) => token,
            Err(None) => {
                let refusal = bearer_refusal(Class::Unauthorized, None, "bearer token required".into());
                return Judged::Done(Verdict::Respond(refusal.json()));
            }
            // Unreadable by any provider: refused as malformed.
            Err(Some(e)) => {
                return Judged::Done(
                    self.bearer_blocked(client).unwrap_or_else(|| self.bearer_refused(route, "-", e, client)),
                );
            }
        };
        let key = bearer::cache_key(token);
        let now = self.shared.clock.now();
        let bearers = || route.bearer.iter().filter_map(|p| p.as_bearer());
        if let Some((b, accepted)) = bearers().find_map(|b| b.cached(&key, now).map(|a| (b, a))) {
            let proof = Proof::Bearer { until: accepted.until };
            return Judged::Proved(self.bearer_accepted(route, b, accepted), proof);
        }
        if let Some(blocked) = self.bearer_blocked(client) {
            return Judged::Done(blocked);
        }
        if !bearer::well_formed(token) {
            return Judged::Done(self.bearer_refused(route, "-", auth::token::TokenError::Malformed, client));
        }
        Judged::Bearer(token, key)
    }

    /// A client that sent too many bad credentials waits before any more
    /// are verified.
    fn bearer_blocked(&self, client: IpAddr) -> Option<Verdict> {
        let wait = self.limits.blocked(client)?;
        Some(Verdict::Respond(self.too_many("failed_auth", wait, false)))
    }

    /// A new, well-formed bearer token verified by the route's providers.
    async fn verify_bearer(&self, route: &Route, token: &str, key: &[u8; 32], client: IpAddr) -> Verdict {
        let now = self.shared.clock.now();
        let mut refused = None;
        for provider in &route.bearer {
            let Some(b) = provider.as_bearer() else { continue };
            match b.verify(key, token, now).await {
                Ok(accepted) => return self.bearer_accepted(route, b, accepted),
                Err(e) => {
                    // Several providers: keep the reason of the one the token was meant for.
                    if refused.is_none_or(|(_, prev)| relevance(e) > relevance(prev)) {
                        refused = Some((b.id.as_str(), e));
                    }
                }
            }
        }
        let (provider, e) = refused.unwrap_or(("-", auth::token::TokenError::Malformed));
        self.bearer_refused(route, provider, e, client)
    }

    /// A refused bearer token: logged, counted against the client, and the
    /// RFC 6750 answer.
    fn bearer_refused(&self, route: &Route, provider: &str, e: auth::token::TokenError, client: IpAddr) -> Verdict {
        info!(route = %route.id, provider, reason = e.reason(), "bearer token refused");
        self.shared.metrics.auth_failure(provider, e.reason());
        self.limits.failed(client);
        let mut resp: Response<Body> = bearer_refusal(e.class(), Some("invalid_token"), e.description()).json();
        // The access log says why (`expired`...), not only RFC 6750's word.
        resp.extensions_mut().insert(error::Refused(e.reason()));
        Verdict::Respond(resp)
    }

    /// `Authorization: Bearer pk_...` on a route that takes API keys: a key
    /// of a user of the route's login provider, not revoked, then the
    /// route's `allow` rules. Answered from memory once this replica has
    /// seen the key; else looked up in the store (waiting), which a client
    /// that sent too many bad credentials does not get.
    fn judge_api_key<'t>(&self, route: &Route, token: &'t str, client: IpAddr) -> Judged<'t> {
        match self.shared.api_keys.known(token) {
            Some(api_keys::Check::Valid(known)) => {
                let proof = Proof::ApiKey(known.clone());
                Judged::Proved(self.api_key_answer(route, api_keys::Check::Valid(known), client), proof)
            }
            Some(answer) => Judged::Done(self.api_key_answer(route, answer, client)),
            None => match self.limits.blocked(client) {
                Some(wait) => Judged::Done(Verdict::Respond(self.too_many("failed_auth", wait, false))),
                None => Judged::ApiKey(token),
            },
        }
    }

    /// An API key this replica has not seen, looked up in the store.
    async fn check_api_key(&self, route: &Route, token: &str, client: IpAddr) -> Verdict {
        let answer = self.shared.api_keys.check(token).await;
        self.api_key_answer(route, answer, client)
    }

    fn api_key_answer(&self, route: &Route, answer: api_keys::Check, client: IpAddr) -> Verdict {
        let metrics = &self.shared.metrics;
        let refused = |reason: &'static str| {
            info!(route = %route.id, reason, "API key refused");
            metrics.api_key_refused(reason);
            self.limits.failed(client);
            let text = "The API key is unknown, revoked, or not valid for this application.";
            let mut resp: Response<Body> =
                bearer_refusal(Class::Unauthorized, Some("invalid_token"), text.into()).json();
            resp.extensions_mut().insert(error::Refused(reason));
            Verdict::Respond(resp)
        };
        match answer {
            api_keys::Check::Valid(known) => {
                let identity = known.identity().clone();
                if route.login.as_ref().is_none_or(|l| l.id() != identity.provider) {
                    return refused("wrong_provider");
                }
                match self.allowed(route, identity, access::Auth::ApiKey) {
                    Verdict::Forbidden => {
                        metrics.api_key_refused("not_allowed");
                        Verdict::Forbidden
                    }
                    pass => {
                        metrics.api_key_used();
                        pass
                    }
                }
            }
            api_keys::Check::Unknown(reason) => refused(reason),
            api_keys::Check::Unavailable => {
                metrics.api_key_refused("unavailable");
                let text = "API keys cannot be checked right now; try again.";
                Verdict::Respond(Reject::new(Class::Unavailable, "store_unavailable", text).json())
            }
        }
    }

    /// `429` with `Retry-After`, counted under `bucket` (`login`,
    /// `failed_auth`); a page for a browser navigation when `html`.
    pub(crate) fn too_many(&self, bucket: &'static str, wait: std::time::Duration, html: bool) -> Response<Body> {
        let seconds = limits::retry_after(wait);
        let what = if bucket == "login" { "sign-in requests" } else { "refused credentials" };
        self.shared.metrics.rate_limited(bucket);
        info!(bucket, retry_after = seconds, "rate limited");
        let text = format!("Too many {what} from your address; try again in {seconds} s.");
        let mut resp = Reject::new(Class::TooManyRequests, "rate_limited", text).answer(html);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        resp
    }

    /// A verified bearer token: the provider's required scopes, then the
    /// route's `allow` rules.
    fn bearer_accepted(&self, route: &Route, b: &bearer::BearerAuth, accepted: bearer::Accepted) -> Verdict {
        if !b.missing_scopes(&accepted).is_empty() {
            self.shared.metrics.auth_failure(&b.id, "insufficient_scope");
            let scope = format!(
                "Bearer realm=\"porteiro\", error=\"insufficient_scope\", scope=\"{}\"",
                b.required_scopes.join(" ")
            );
            let text = "token lacks a required scope";
            let refusal = Reject::new(Class::Forbidden, "insufficient_scope", text).challenge(scope);
            return Verdict::Respond(refusal.json());
        }
        self.allowed(route, accepted.identity, access::Auth::Bearer)
    }

    /// The session in the request's cookies, not revoked; only from
    /// provider `from` when one is named.
    pub(crate) fn session(&self, headers: &http::HeaderMap, from: Option<&str>) -> Option<Arc<Identity>> {
        let identity = self.sessions.as_ref()?.read(headers, self.shared.clock.now())?;
        if from.is_some_and(|p| p != identity.provider) {
            return None;
        }
        let revoked =
            self.shared.store.is_revoked(&identity.sid, &identity.sub, identity.email.as_deref(), identity.iat);
        (!revoked).then_some(identity)
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
            _ => Reject::new(Class::Unauthorized, "unauthorized", "Sign-in is required.")
                .answer(error::wants_html(headers) && is_navigation(method, headers)),
        }
    }

    /// Phase 6: rewrite headers and send upstream (or answer as whoami).
    /// `host` is the canonical host; `rewritten` the normalised path when it
    /// differs from the request's.
    #[allow(clippy::too_many_arguments)]
    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        id: &HeaderValue,
        route: &Route,
        host: Option<HeaderValue>,
        rewritten: Option<String>,
        identity: Option<&Identity>,
        fwd: Forwarding,
    ) -> (Response<Body>, Option<std::time::Duration>) {
        let strip = if fwd.trusted { &route.strip_trusted } else { &route.strip_untrusted };
        // The request id, three X-Forwarded-*, four identity headers, the
        // signed one and the route's own.
        let mut added = proxy::Added::with_capacity(1 + 3 + 4 + 1 + route.claim_headers.len());
        added.push(&request_id::X_REQUEST_ID, id);
        let upgrade =
            proxy::prepare_request_headers(req.headers_mut(), host.as_ref(), &fwd, strip, &route.upgrades, &mut added);
        if let Some(sessions) = &self.sessions {
            strip_cookies(req.headers_mut(), |name| sessions.owns(name));
        }
        // An API key is porteiro's credential, like its cookie: it never
        // reaches the upstream.
        if route.api_keys {
            if let bearer::Credential::Bearer(token) = bearer::credential(req.headers()) {
                if token.starts_with(api_keys::PREFIX) {
                    req.headers_mut().remove(header::AUTHORIZATION);
                }
            }
        }
        if let Some(identity) = identity {
            identity_headers(identity, route, Audience::Upstream, |name, value| added.push(name, value));
            if route.identity_jwt.is_some() {
                let host = host.as_ref().and_then(|h| h.to_str().ok());
                if let Some(assertion) = self.identity_assertion(route, identity, host) {
                    added.push(&identity_jwt::HEADER_NAME, &assertion);
                }
            }
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
                (proxy::whoami(&req, &added, path, &route.identity), None)
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
                match self.proxy.forward(req, added, upstream, rewritten, upgrade).await {
                    Ok((resp, took)) => {
                        route.metrics.upstream_duration(took.as_secs_f64());
                        (resp, Some(took))
                    }
                    Err(proxy::UpstreamError::ClientBody(why)) => {
                        info!(route = %route.id, error = %why, "request body malformed or cut short");
                        self.shared.metrics.rejected("bad_request_body");
                        let text = "The request body is malformed or incomplete.";
                        (Reject::new(Class::BadRequest, "bad_request_body", text).answer(html), None)
                    }
                    Err(e) => {
                        warn!(route = %route.id, upstream = %upstream.authority(), error = %e, "upstream failed");
                        let refusal = match e {
                            proxy::UpstreamError::Timeout(_) => Reject::new(
                                Class::Timeout,
                                "upstream_timeout",
                                "The application did not answer in time.",
                            ),
                            _ => Reject::new(Class::BadGateway, "bad_gateway", "The application is unreachable."),
                        };
                        (refusal.answer(html), None)
                    }
                }
            }
        }
    }

    /// The signed identity header's value on `route` (none unless it has
    /// `identity_jwt = true`): `host` (as the request names it) gives the
    /// audience when the route names none.
    pub(crate) fn identity_assertion(&self, route: &Route, id: &Identity, host: Option<&str>) -> Option<HeaderValue> {
        let audience = match route.identity_jwt.as_ref()? {
            IdentityAudience::Fixed(a) => std::borrow::Cow::Borrowed(a.as_str()),
            IdentityAudience::RequestHost => {
                host.map_or(std::borrow::Cow::Borrowed(self.public_host.as_str()), normalize_host)
            }
        };
        self.identity_signer.as_ref()?.assertion(id, &audience, self.shared.clock.now())
    }

    /// An answer refused before a route is known; logged and counted.
    pub(crate) fn reject<B>(&self, req: &Request<B>, refusal: Reject) -> Response<Body> {
        let status = refusal.status().as_u16();
        info!(reason = refusal.reason, method = %req.method(), status, "request refused");
        self.shared.metrics.rejected(refusal.reason);
        refusal.answer(error::wants_html(req.headers()))
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

/// The identity headers for `route`, each handed to `put`. Values were checked for control
/// characters at login; anything still unrepresentable is left out. The
/// standard four are made once per identity (cached sessions share them).
pub(crate) fn identity_headers(
    id: &Identity,
    route: &Route,
    to: Audience,
    mut put: impl FnMut(&HeaderName, &HeaderValue),
) {
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
            put(name, v);
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
            put(name, &v);
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
    // From trusted proxies too: what porteiro replaces (after reading the
    // proxy's X-Forwarded-* and X-Request-Id).
    let replaced = proxy::SET_FORWARDING.iter().copied().chain([request_id::X_REQUEST_ID.as_str()]);
    let always = always.chain(replaced);
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
        api_keys: r.api_keys,
        identity_jwt: r.identity_jwt.clone(),
        metrics: metrics.route(&r.id),
    }
}

/// A route as a connection's kept credential names it: where it lives in
/// its gateway (routes do not move while the gateway lives).
fn route_key(route: &Route) -> usize {
    std::ptr::from_ref(route) as usize
}

/// Signed in but not allowed (`403`).
pub(crate) fn forbidden(html: bool) -> Response<Body> {
    let text = "You are signed in, but not allowed to use this application.";
    Reject::new(Class::Forbidden, "forbidden", text).answer(html)
}

/// A browser navigation (as opposed to an API call or XHR): GET/HEAD that
/// accepts HTML and is not marked as a script's request.
pub(crate) fn is_navigation(method: &Method, h: &http::HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && error::wants_html(h)
        && !h.contains_key("x-requested-with")
        && h.get("sec-fetch-mode").is_none_or(|m| m == "navigate")
}

/// An RFC 6750 refusal: `WWW-Authenticate: Bearer realm="porteiro"[, error=...]`
/// and a JSON body `{"error", "error_description"}`. Without an `error` (no
/// token at all) the challenge carries no error code, as the RFC asks.
pub(crate) fn bearer_refusal(class: Class, error: Option<&'static str>, description: String) -> Reject {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"porteiro\", error=\"{e}\", error_description=\"{description}\""),
        None => "Bearer realm=\"porteiro\"".to_string(),
    };
    Reject::new(class, error.unwrap_or("unauthorized"), description).challenge(challenge)
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
