//! `kind = "oidc"`: OpenID Connect Authorization Code flow with PKCE (S256),
//! `state` and `nonce` (Niara, Keycloak, Entra ID, Okta, Google...).
//!
//! Each login attempt gets its own short-lived encrypted cookie named after
//! its `state`, so logins in parallel tabs all work; a browser holds at most
//! [`MAX_ATTEMPTS`](crate::auth::attempt::MAX_ATTEMPTS) of them. The callback checks the state against that
//! cookie (and spends it once in the store), exchanges the code at the token
//! endpoint and verifies the ID token against the provider's JWKS.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::auth::Failure;
use crate::auth::attempt::{ATTEMPT_SECONDS, AttemptCookie, Comeback, LoginStates};
use crate::auth::claims::{self, ClaimMap};
use crate::auth::fetch::{FetchError, Fetcher};
use crate::auth::jwks::{Jwks, JwksSettings};
use crate::auth::seal::random_id;
use crate::auth::session::Identity;
use crate::auth::token::{KeySource, Rules, TokenError, Verifier, string_claim};
use crate::clock::Clock;
use crate::config::policy::url_allowed;
use crate::config::{OidcConfig, Secret, TokenEndpointAuth};
use crate::error::Class;

use super::{Ctx, Outcome, Params, Reply, Setup, param};

/// Largest token endpoint or userinfo answer read.
pub(super) const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
pub(super) const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// Endpoints configured explicitly, for providers without discovery.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub jwks: String,
    pub userinfo: Option<String>,
    pub end_session: Option<String>,
}

pub struct OidcSettings {
    pub id: String,
    pub clock: Clock,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    pub extra_params: Vec<(String, String)>,
    pub required_claims: Vec<String>,
    pub fetch_userinfo: bool,
    pub endpoints: Option<Endpoints>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway: u64,
    pub audience: Option<String>,
    pub logout_url: Option<String>,
    /// Send `/sso/logout` on to the provider's end-session endpoint.
    pub logout_at_provider: bool,
    pub claims: ClaimMap,
    /// `{public_url}{auth_prefix}/callback`.
    pub redirect_uri: String,
    /// `{public_url}{auth_prefix}/logout/done`: where the provider sends the
    /// browser back after logging out there.
    pub post_logout_redirect_uri: String,
    /// Session validity in seconds.
    pub validity: u64,
    pub jwks: JwksSettings,
}

/// What discovery found (or the explicit endpoints), with the key set.
pub struct Resolved {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    /// OpenID Connect RP-Initiated Logout 1.0.
    pub end_session_endpoint: Option<String>,
    /// The provider promises RFC 9207 `iss` in authorization responses.
    pub iss_parameter: bool,
    pub jwks: Arc<Jwks>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

pub struct OidcLogin {
    pub s: OidcSettings,
    /// `refresh = true` (and a session secret to seal refresh tokens with).
    pub(super) refresher: Option<super::oidc_refresh::Refresher>,
    resolved: Arc<ArcSwapOption<Resolved>>,
    pub(super) fetcher: Fetcher,
    /// Keeps the discovery task alive exactly as long as this provider.
    _alive: Arc<()>,
}

/// The content of a login attempt's cookie.
#[derive(Serialize, Deserialize)]
struct Attempt {
    /// Provider id.
    p: String,
    state: String,
    nonce: String,
    verifier: String,
    /// Sanitised return path.
    r: String,
    /// Created, unix seconds.
    t: u64,
    /// Created, unix nanoseconds: orders attempts started within the same
    /// second, so the oldest is the one expired (0 in older cookies).
    #[serde(default)]
    ns: u64,
}

/// A refused ID token.
impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Failure {
        Failure::new(e.class(), e.reason(), format!("ID {}", e.description()))
    }
}

impl OidcLogin {
    pub fn build(id: &str, o: &OidcConfig, setup: &Setup) -> OidcLogin {
        let refresher = match (&setup.config.session.secret, o.refresh) {
            (Some(secret), true) => Some(super::oidc_refresh::Refresher::new(
                secret,
                &setup.config.session.previous_secrets,
                o.max_session.as_secs(),
            )),
            _ => None,
        };
        let mut login = OidcLogin::start(
            OidcSettings {
                id: id.to_string(),
                clock: setup.jwks.clock().clone(),
                issuer: o.issuer.clone(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.clone(),
                scopes: o.scopes.clone(),
                client_auth: match o.token_endpoint_auth {
                    TokenEndpointAuth::ClientSecretBasic => ClientAuth::Basic,
                    TokenEndpointAuth::ClientSecretPost => ClientAuth::Post,
                },
                extra_params: o.extra_params.clone(),
                required_claims: o.required_claims.clone(),
                fetch_userinfo: o.fetch_userinfo,
                endpoints: o.endpoints.as_ref().map(|e| Endpoints {
                    authorization: e.authorization.clone(),
                    token: e.token.clone(),
                    jwks: e.jwks.clone(),
                    userinfo: e.userinfo.clone(),
                    end_session: e.end_session.clone(),
                }),
                algorithms: o.algorithms.clone(),
                leeway: o.leeway_seconds,
                audience: o.audience.clone(),
                logout_url: o.logout_url.clone(),
                logout_at_provider: o.logout_at_provider,
                claims: ClaimMap { groups_claim: o.groups_claim.clone(), keep: setup.keep.to_vec() },
                redirect_uri: setup.endpoint_url("/callback"),
                post_logout_redirect_uri: setup.endpoint_url(super::oidc_logout::LOGOUT_DONE),
                validity: setup.validity(),
                jwks: JwksSettings {
                    min_refresh: o.jwks_min_refresh,
                    max_refresh: o.jwks_max_refresh,
                    ..JwksSettings::default()
                },
            },
            setup.fetcher.clone(),
        );
        login.refresher = refresher;
        login
    }

    /// Creates the provider and starts discovery (retried with backoff until
    /// it succeeds, then refreshed hourly).
    pub fn start(settings: OidcSettings, fetcher: Fetcher) -> OidcLogin {
        let resolved = Arc::new(ArcSwapOption::empty());
        let alive = Arc::new(());
        if let Some(e) = &settings.endpoints {
            let jwks = Jwks::start(e.jwks.clone(), settings.jwks, fetcher.clone(), settings.clock.clone());
            resolved.store(Some(Arc::new(Resolved {
                authorization_endpoint: e.authorization.clone(),
                token_endpoint: e.token.clone(),
                userinfo_endpoint: e.userinfo.clone(),
                end_session_endpoint: e.end_session.clone(),
                iss_parameter: false,
                jwks,
            })));
        } else {
            tokio::spawn(discover_loop(
                settings.id.clone(),
                settings.issuer.clone(),
                settings.jwks,
                fetcher.clone(),
                settings.clock.clone(),
                Arc::downgrade(&resolved),
                Arc::downgrade(&alive),
            ));
        }
        OidcLogin { s: settings, refresher: None, resolved, fetcher, _alive: alive }
    }

    /// Discovery done and keys fetched.
    pub fn ready(&self) -> bool {
        self.resolved.load().as_ref().is_some_and(|r| r.jwks.ready())
    }

    /// What discovery found, once it has.
    pub fn resolved(&self) -> Option<Arc<Resolved>> {
        self.resolved.load_full()
    }

    /// Begins a login: the authorization URL to send the browser to, and the
    /// `Set-Cookie` values (this attempt's cookie, and expiry of attempts
    /// beyond [`MAX_ATTEMPTS`](crate::auth::attempt::MAX_ATTEMPTS)). `None` while the provider is not resolved.
    pub fn begin(
        &self,
        states: &LoginStates,
        request: &HeaderMap,
        return_to: &str,
        login_hint: Option<&str>,
    ) -> Option<(String, Vec<HeaderValue>)> {
        let resolved = self.resolved.load_full()?;
        let attempt = Attempt {
            p: self.s.id.clone(),
            state: random_id(24),
            nonce: random_id(24),
            verifier: random_id(32),
            r: return_to.to_string(),
            t: states.clock.now(),
            ns: states.clock.now_nanos(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(attempt.verifier.as_bytes()));
        let mut url = url::Url::parse(&resolved.authorization_endpoint).ok()?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.s.client_id)
                .append_pair("redirect_uri", &self.s.redirect_uri)
                .append_pair("scope", &self.s.scopes.join(" "))
                .append_pair("state", &attempt.state)
                .append_pair("nonce", &attempt.nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.s.extra_params {
                q.append_pair(k, v);
            }
            if let Some(hint) = login_hint {
                q.append_pair("login_hint", hint);
            }
        }
        let cookies = states.store(&attempt, request, Comeback::Navigation)?;
        Some((url.to_string(), cookies))
    }

    /// Handles `GET /sso/callback?code=&state=` (or `?error=`): the identity,
    /// the attempt's return path, and the cookie to clear.
    pub async fn finish(
        &self,
        states: &LoginStates,
        request: &HeaderMap,
        params: &[(String, String)],
        store: &dyn crate::auth::store::Store,
    ) -> Result<(Identity, String), Failure> {
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let state = get("state")
            .ok_or_else(|| Failure::new(Class::BadRequest, "missing_state", "The answer carries no state."))?;
        let attempt = states.open::<Attempt>(state, request).filter(|a| a.p == self.s.id).ok_or_else(|| {
            Failure::new(
                Class::BadRequest,
                "unknown_state",
                "This sign-in was not started in this browser, or it took too long.",
            )
        })?;
        let retry = Some(attempt.r.clone());
        let fail = |mut f: Failure| {
            f.retry = retry.clone();
            f
        };
        if let Some(error) = get("error") {
            let description = get("error_description").unwrap_or("");
            let text = format!(
                "The identity provider answered {error}{}{description}",
                if description.is_empty() { "" } else { ": " }
            );
            return Err(fail(Failure::new(Class::Unauthorized, "idp_error", text)));
        }
        let resolved = self.resolved.load_full().ok_or_else(|| {
            fail(Failure::new(Class::Unavailable, "idp_unavailable", "The identity provider is unavailable."))
        })?;
        // RFC 9207: when the provider names itself, it must be this one.
        match get("iss") {
            Some(iss) if iss != self.s.issuer => {
                return Err(fail(Failure::new(
                    Class::Unauthorized,
                    "issuer_mismatch",
                    "The answer came from another identity provider.",
                )));
            }
            None if resolved.iss_parameter => {
                return Err(fail(Failure::new(
                    Class::Unauthorized,
                    "issuer_missing",
                    "The answer does not name its identity provider.",
                )));
            }
            _ => {}
        }
        let code = get("code")
            .ok_or_else(|| fail(Failure::new(Class::BadRequest, "missing_code", "The answer carries no code.")))?;
        match store
            .insert_once(&format!("oidc-state:{}", attempt.state), Duration::from_secs(ATTEMPT_SECONDS + 60))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(Failure::new(
                    Class::BadRequest,
                    "state_replayed",
                    "This sign-in answer was already used.",
                )));
            }
            Err(e) => {
                warn!(error = %e, "login state store unavailable; login refused");
                return Err(fail(Failure::new(Class::Unavailable, "store_unavailable", "Login state is unavailable.")));
            }
        }
        let tokens = self.exchange(&resolved, code, &attempt.verifier).await.map_err(fail)?;
        let id_token = tokens.get("id_token").and_then(Value::as_str).ok_or_else(|| {
            fail(Failure::new(Class::BadGateway, "no_id_token", "The identity provider sent no ID token."))
        })?;
        let now = states.clock.now();
        let mut claims = self.verify_id_token(&resolved, id_token, Some(&attempt.nonce), now).await.map_err(fail)?;
        if self.s.fetch_userinfo {
            let access = tokens.get("access_token").and_then(Value::as_str);
            self.merge_userinfo(&resolved, access, &mut claims).await.map_err(fail)?;
        }
        let mut identity = self.identity(&claims, now).map_err(fail)?;
        if let Some(refresher) = &self.refresher {
            let token = tokens.get("refresh_token").and_then(Value::as_str);
            refresher.keep(self, store, &mut identity, token, now).await;
        }
        super::oidc_logout::keep_id_token(self, &resolved, store, &identity, id_token).await;
        Ok((identity, attempt.r))
    }

    async fn exchange(&self, resolved: &Resolved, code: &str, verifier: &str) -> Result<Map<String, Value>, Failure> {
        let req = self
            .token_request(resolved, code, verifier)
            .map_err(|_| Failure::new(Class::BadGateway, "token_request", "Bad token endpoint URL."))?;
        let fetched = self.fetcher.send(req, TOKEN_TIMEOUT, MAX_TOKEN_RESPONSE).await.map_err(|e| {
            warn!(provider = %self.s.id, error = %e, "token endpoint failed");
            match e {
                FetchError::Timeout(_) => {
                    Failure::new(Class::Timeout, "token_timeout", "The identity provider did not answer in time.")
                }
                FetchError::TooLarge(_) => {
                    Failure::new(Class::BadGateway, "token_too_large", "The identity provider's answer is too large.")
                }
                _ => Failure::new(Class::BadGateway, "token_unreachable", "The identity provider is unreachable."),
            }
        })?;
        let body = crate::auth::json::object(&fetched.body);
        if fetched.status != StatusCode::OK {
            let error = body.as_ref().ok().and_then(|b| b.get("error")).and_then(Value::as_str).unwrap_or("unknown");
            warn!(provider = %self.s.id, status = fetched.status.as_u16(), error, "token endpoint refused the code");
            return Err(Failure::new(
                Class::BadGateway,
                "code_refused",
                format!("The identity provider refused the code ({error})."),
            ));
        }
        // A repeated member (two `id_token`s) could be read either way.
        body.map_err(|_| {
            Failure::new(
                Class::BadGateway,
                "token_response",
                "The identity provider's answer is not a JSON object with unique member names.",
            )
        })
    }

    /// The token request of an authorization code (built whole before any
    /// await: the form encoder is not `Send`).
    fn token_request(
        &self,
        resolved: &Resolved,
        code: &str,
        verifier: &str,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.s.redirect_uri),
            ("code_verifier", verifier),
        ];
        self.token_post(resolved, &grant)
    }

    /// A `POST` to the token endpoint with `grant` and the client's
    /// authentication (`client_secret_basic` or `client_secret_post`).
    pub(super) fn token_post(
        &self,
        resolved: &Resolved,
        grant: &[(&str, &str)],
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in grant {
            form.append_pair(k, v);
        }
        let secret = String::from_utf8_lossy(self.s.client_secret.expose()).into_owned();
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(&resolved.token_endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        match self.s.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", enc(&self.s.client_id), enc(&secret));
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
                builder = builder.header(header::AUTHORIZATION, value);
                form.append_pair("client_id", &self.s.client_id);
            }
            ClientAuth::Post => {
                form.append_pair("client_id", &self.s.client_id).append_pair("client_secret", &secret);
            }
        }
        builder.body(Full::new(Bytes::from(form.finish())))
    }

    /// Verifies an ID token: signature, `iss`, `aud`/`azp`, times, `sub`,
    /// and the login's `nonce` when one is given (a refreshed ID token is
    /// checked without: porteiro does not keep the login's nonce).
    pub(super) async fn verify_id_token(
        &self,
        resolved: &Resolved,
        token: &str,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<Map<String, Value>, Failure> {
        let rules = Rules {
            issuer: self.s.issuer.clone(),
            audience: Some(self.s.client_id.clone()),
            algorithms: self.s.algorithms.clone(),
            leeway: self.s.leeway,
            max_age: Some(ATTEMPT_SECONDS),
            require_exp: true,
        };
        let verified = Verifier::new(KeySource::Jwks(resolved.jwks.clone()), rules).verify(token, now).await?;
        let c = verified.claims;
        if verified.iat.is_none() {
            return Err(TokenError::MissingClaim("iat").into());
        }
        if verified.sub.as_deref().is_none_or(str::is_empty) {
            return Err(TokenError::MissingClaim("sub").into());
        }
        // Several audiences: the authorized party must be us (OIDC Core 3.1.3.7).
        if let Some(Value::Array(aud)) = c.get("aud") {
            if aud.len() > 1 && c.get("azp").and_then(Value::as_str) != Some(self.s.client_id.as_str()) {
                return Err(TokenError::WrongAudience.into());
            }
        }
        // `audience`: the token must name it too, whatever the shape of `aud`.
        if let Some(extra) = &self.s.audience {
            let named = match c.get("aud") {
                Some(Value::String(a)) => a == extra,
                Some(Value::Array(aud)) => aud.iter().any(|a| a == extra),
                _ => false,
            };
            if !named {
                return Err(TokenError::WrongAudience.into());
            }
        }
        if let Some(azp) = c.get("azp") {
            if azp.as_str() != Some(self.s.client_id.as_str()) {
                return Err(TokenError::BadClaim("azp").into());
            }
        }
        let Some(nonce) = nonce else { return Ok(c) };
        let token_nonce = string_claim(&c, "nonce")?.ok_or(TokenError::MissingClaim("nonce"))?;
        if !bool::from(token_nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(Failure::new(
                Class::Unauthorized,
                "nonce_mismatch",
                "The ID token was not issued for this sign-in.",
            ));
        }
        Ok(c)
    }

    pub(super) async fn merge_userinfo(
        &self,
        resolved: &Resolved,
        access: Option<&str>,
        claims: &mut Map<String, Value>,
    ) -> Result<(), Failure> {
        let (Some(endpoint), Some(access)) = (&resolved.userinfo_endpoint, access) else {
            return Err(Failure::new(
                Class::BadGateway,
                "userinfo_unavailable",
                "The identity provider offers no userinfo.",
            ));
        };
        let req = Request::builder()
            .method(Method::GET)
            .uri(endpoint)
            .header(header::AUTHORIZATION, format!("Bearer {access}"))
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|_| Failure::new(Class::BadGateway, "userinfo", "Bad userinfo URL."))?;
        let fetched = self
            .fetcher
            .send(req, TOKEN_TIMEOUT, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|_| Failure::new(Class::BadGateway, "userinfo", "The userinfo endpoint failed."))?;
        let info: Map<String, Value> = match (fetched.status, crate::auth::json::object(&fetched.body)) {
            (StatusCode::OK, Ok(m)) => m,
            _ => return Err(Failure::new(Class::BadGateway, "userinfo", "The userinfo endpoint failed.")),
        };
        // OIDC Core 5.3.2: userinfo about someone else must be ignored.
        if info.get("sub") != claims.get("sub") {
            return Err(Failure::new(
                Class::Unauthorized,
                "userinfo_sub",
                "The userinfo answer is about another user.",
            ));
        }
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
        Ok(())
    }

    pub(super) fn identity(&self, c: &Map<String, Value>, now: u64) -> Result<Identity, Failure> {
        for name in &self.s.required_claims {
            let present = match c.get(name) {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(_) => true,
            };
            if !present {
                return Err(Failure::new(
                    Class::Unauthorized,
                    "missing_claim",
                    format!("The ID token lacks the {name} claim."),
                ));
            }
        }
        let email = string_claim(c, "email")?;
        if email.as_deref().is_some_and(|e| !claims::valid_email(e)) {
            return Err(TokenError::BadClaim("email").into());
        }
        let mut keep = self.s.claims.keep.clone();
        keep.extend(self.s.required_claims.iter().cloned());
        let identity = Identity {
            sid: random_id(16),
            provider: self.s.id.clone(),
            sub: string_claim(c, "sub")?.unwrap_or_default(),
            name: string_claim(c, "name")?,
            email,
            username: string_claim(c, "preferred_username")?,
            groups: claims::groups(c, &self.s.claims.groups_claim)?,
            claims: claims::kept_claims(c, &keep),
            iat: now,
            exp: now + self.s.validity,
            oidc_sid: string_claim(c, "sid")?,
            renew_until: None,
            header_values: Default::default(),
        };
        identity.check_header_safe().map_err(|why| Failure::new(Class::Unauthorized, "unsafe_claims", why))?;
        Ok(identity)
    }
}

async fn discover_loop(
    id: String,
    issuer: String,
    jwks_settings: JwksSettings,
    fetcher: Fetcher,
    clock: Clock,
    resolved: Weak<ArcSwapOption<Resolved>>,
    alive: Weak<()>,
) {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let mut backoff = Duration::from_millis(500);
    loop {
        if alive.strong_count() == 0 {
            return;
        }
        let wait = match discover(&url, &issuer, &fetcher).await {
            Ok(d) => {
                backoff = Duration::from_millis(500);
                let Some(slot) = resolved.upgrade() else { return };
                let current = slot.load_full();
                // Keep the key cache when the key set URL is unchanged.
                let jwks = match current.as_ref().filter(|r| r.jwks.url() == d.jwks_uri) {
                    Some(r) => r.jwks.clone(),
                    None => Jwks::start(d.jwks_uri.clone(), jwks_settings, fetcher.clone(), clock.clone()),
                };
                info!(provider = %id, issuer = %issuer, "OpenID provider discovered");
                slot.store(Some(Arc::new(Resolved {
                    authorization_endpoint: d.authorization_endpoint,
                    token_endpoint: d.token_endpoint,
                    userinfo_endpoint: d.userinfo_endpoint,
                    end_session_endpoint: d.end_session_endpoint,
                    iss_parameter: d.authorization_response_iss_parameter_supported,
                    jwks,
                })));
                Duration::from_secs(3600)
            }
            Err(e) => {
                warn!(provider = %id, issuer = %issuer, error = %e, retry_in = ?backoff, "OpenID discovery failed");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        clock.sleep(wait).await;
    }
}

async fn discover(url: &str, issuer: &str, fetcher: &Fetcher) -> Result<Discovery, String> {
    let fetched = fetcher.get(url, Duration::from_secs(5), 64 * 1024).await.map_err(|e| e.to_string())?;
    let d: Discovery = serde_json::from_slice(&fetched.body).map_err(|e| format!("not a discovery document: {e}"))?;
    // OIDC Discovery 4.3: the document must be about exactly this issuer.
    if d.issuer != issuer {
        return Err(format!("the document names issuer {:?}", d.issuer));
    }
    // Back-channel URLs carry secrets and keys: https (or loopback) only.
    for u in [Some(&d.token_endpoint), Some(&d.jwks_uri), d.userinfo_endpoint.as_ref()].into_iter().flatten() {
        url_allowed(u)?;
    }
    url::Url::parse(&d.authorization_endpoint).map_err(|e| format!("authorization_endpoint: {e}"))?;
    let mut d = d;
    // A browser goes there at logout; one that is no web URL is ignored
    // (logout then ends at porteiro), not a reason to refuse every login.
    if let Some(e) = &d.end_session_endpoint {
        if !url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some()) {
            warn!(issuer, "the discovery document's end_session_endpoint is not a web URL; ignored");
            d.end_session_endpoint = None;
        }
    }
    Ok(d)
}

impl AttemptCookie for Attempt {
    fn state(&self) -> &str {
        &self.state
    }

    fn created(&self) -> u64 {
        self.t
    }
}

/// `GET /sso/callback?code=&state=` (or `?error=&state=`): an OpenID
/// provider's answer. The attempt's cookie is cleared whatever the outcome.
pub async fn callback(ctx: &Ctx<'_>, headers: &HeaderMap, q: &Params) -> Reply {
    let state = param(q, "state").unwrap_or_default();
    let Some(states) = ctx.states else {
        return Outcome::failed("-", Class::BadRequest, "unknown_state", "No sign-in is in progress.").into();
    };
    let provider = states.provider_of(state, headers).and_then(|id| ctx.provider(&id)).and_then(|p| p.as_oidc());
    let Some(provider) = provider else {
        let text = "This sign-in was not started in this browser, or it took too long.";
        return Outcome::failed("-", Class::BadRequest, "unknown_state", text).into();
    };
    let id = provider.s.id.clone();
    let outcome = match provider.finish(states, headers, q, ctx.store).await {
        Ok((identity, return_to)) => Outcome::SignedIn { provider: id, identity: Box::new(identity), return_to },
        Err(failure) => Outcome::LoginFailed { provider: id, failure },
    };
    Reply { outcome, cookies: states.clear(state, Comeback::Navigation).into_iter().collect() }
}
