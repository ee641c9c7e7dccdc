//! porteiro's own endpoints under `server.auth_prefix` (`/sso`): login
//! callback, explicit start, logout, userinfo, forward-auth and the demo
//! login page. They never reach an upstream.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::json;
use tracing::{info, warn};

use crate::auth::bearer::BearerAuth;
use crate::auth::code::{self, CodeError, CodeLogin};
use crate::auth::fetch::Fetcher;
use crate::auth::identifiers::{Identifiers, Mapping, MappingError};
use crate::auth::jwks::{JwksRegistry, JwksSettings};
use crate::auth::jwt::JwtLogin;
use crate::auth::oidc::{ClientAuth, Comeback, Endpoints, OidcLogin, OidcSettings};
use crate::auth::saml::{self, MetadataSource, SamlLogin, SamlSettings};
use crate::auth::store::Revocation;
use crate::auth::token::{KeySource, Rules, TokenError, Verifier};
use crate::auth::{self, Identity, Provider, claims, redirect as sanitize};
use crate::body::Body;
use crate::canonical::Target;
use crate::config::{Config, KeyConfig, ProviderConfig, ProviderKind, SamlMetadata, TokenConfig, TokenEndpointAuth};
use crate::error::{self, escape_html};
use crate::gateway::{Gateway, redirect};
use crate::server::ConnInfo;

/// Largest form or JSON body porteiro's own endpoints read.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Builds the runtime provider for one configured provider.
pub(crate) fn build_provider(
    p: &ProviderConfig,
    config: &Config,
    keep: &[String],
    fetcher: &Fetcher,
    jwks: &JwksRegistry,
) -> Result<Provider, String> {
    let validity = config.session.validity.as_secs();
    Ok(match &p.kind {
        ProviderKind::Jwt(j) => {
            // A path is a page of porteiro's own (the demo login page).
            let same_origin = j.login_url.starts_with('/');
            let login_url = match same_origin {
                true => url::Url::parse("http://porteiro.invalid").and_then(|base| base.join(&j.login_url)),
                false => url::Url::parse(&j.login_url),
            }
            .map_err(|e| format!("provider {}: login_url: {e}", p.id))?;
            Provider::Jwt(JwtLogin {
                id: p.id.clone(),
                login_url,
                same_origin,
                return_param: j.return_param.clone(),
                logout_url: j.logout_url.clone(),
                verifier: verifier(&p.id, &j.token, fetcher, jwks)?,
                claims: claims::ClaimMap { groups_claim: j.groups_claim.clone(), keep: keep.to_vec() },
                validity,
            })
        }
        ProviderKind::Code(c) => Provider::Code(CodeLogin {
            id: p.id.clone(),
            login_url: url::Url::parse(&c.login_url).map_err(|e| format!("provider {}: login_url: {e}", p.id))?,
            return_param: c.return_param.clone(),
            logout_url: c.logout_url.clone(),
            clients: c.clients.clone(),
            code_ttl: c.code_ttl,
            default_validity_minutes: (validity / 60) as i64,
        }),
        ProviderKind::Oidc(o) => Provider::Oidc(Box::new(OidcLogin::start(
            OidcSettings {
                id: p.id.clone(),
                clock: jwks.clock().clone(),
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
                }),
                algorithms: o.algorithms.clone(),
                leeway: o.leeway_seconds,
                audience: o.audience.clone(),
                logout_url: o.logout_url.clone(),
                claims: claims::ClaimMap { groups_claim: o.groups_claim.clone(), keep: keep.to_vec() },
                redirect_uri: format!("{}{}/callback", config.server.public_url, config.server.auth_prefix),
                validity,
                jwks: JwksSettings {
                    min_refresh: o.jwks_min_refresh,
                    max_refresh: o.jwks_max_refresh,
                    ..JwksSettings::default()
                },
            },
            fetcher.clone(),
        ))),
        ProviderKind::Saml(m) => Provider::Saml(Box::new(
            SamlLogin::start(
                SamlSettings {
                    id: p.id.clone(),
                    metadata: match &m.metadata {
                        SamlMetadata::File { xml, .. } => MetadataSource::Inline(xml.clone()),
                        SamlMetadata::Url(u) => MetadataSource::Url(u.clone()),
                    },
                    entity_id: m.entity_id.clone(),
                    acs_url: format!("{}{}/saml/acs", config.server.public_url, config.server.auth_prefix),
                    email_attribute: m.email_attribute.clone(),
                    name_attribute: m.name_attribute.clone(),
                    groups_attribute: m.groups_attribute.clone(),
                    logout_url: m.logout_url.clone(),
                    leeway: Duration::from_secs(m.leeway_seconds),
                    validity,
                    signing: m.signing.clone(),
                },
                fetcher.clone(),
            )
            .map_err(|e| format!("provider {}: {e}", p.id))?,
        )),
        ProviderKind::Bearer(b) => Provider::Bearer(BearerAuth::new(
            p.id.clone(),
            verifier(&p.id, &b.token, fetcher, jwks)?,
            claims::ClaimMap { groups_claim: b.groups_claim.clone(), keep: keep.to_vec() },
            b.required_scopes.clone(),
        )),
    })
}

fn verifier(id: &str, t: &TokenConfig, fetcher: &Fetcher, jwks: &JwksRegistry) -> Result<Verifier, String> {
    let keys = match &t.keys {
        KeyConfig::Secret(s) => KeySource::Secret(DecodingKey::from_secret(s.expose())),
        KeyConfig::PublicKey { pem, path } => KeySource::Public(
            DecodingKey::from_rsa_pem(pem)
                .or_else(|_| DecodingKey::from_ec_pem(pem))
                .or_else(|_| DecodingKey::from_ed_pem(pem))
                .map_err(|e| format!("provider {id}: {}: {e}", path.display()))?,
        ),
        KeyConfig::Jwks { url, min_refresh, max_refresh } => {
            let settings =
                JwksSettings { min_refresh: *min_refresh, max_refresh: *max_refresh, ..JwksSettings::default() };
            KeySource::Jwks(jwks.get(url, settings, fetcher))
        }
    };
    let rules = Rules {
        issuer: t.issuer.clone(),
        audience: t.audience.clone(),
        algorithms: t.algorithms.clone(),
        leeway: t.leeway_seconds,
        max_age: t.max_token_age_seconds,
        require_exp: t.require_exp,
    };
    Ok(Verifier::new(keys, rules))
}

/// The insecure built-in login page that stands in for a customer's
/// "authentication address" in the demo.
pub(crate) struct DemoLogin {
    pub provider: String,
    issuer: String,
    key: EncodingKey,
}

impl DemoLogin {
    pub(crate) fn from_config(config: &Config) -> Option<DemoLogin> {
        config.providers.iter().find_map(|p| match &p.kind {
            ProviderKind::Jwt(j) if j.demo_login => match &j.token.keys {
                KeyConfig::Secret(s) => Some(DemoLogin {
                    provider: p.id.clone(),
                    issuer: j.token.issuer.clone(),
                    key: EncodingKey::from_secret(s.expose()),
                }),
                _ => None,
            },
            _ => None,
        })
    }
}

/// Query parameters, decoded.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Reads a small body of porteiro's own endpoints, or `None` if too large.
async fn small_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_FORM_BYTES).collect().await.ok().map(|b| b.to_bytes())
}

/// The `iss` of a token, read without verifying anything: it only picks
/// which provider's keys will verify the token.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

impl Gateway {
    /// Phase 3: porteiro's own endpoints. `endpoint` is the path below the prefix.
    pub(crate) async fn internal(&self, req: Request<Incoming>, endpoint: &str, _conn: ConnInfo) -> Response<Body> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        let post = req.method() == Method::POST;
        match endpoint {
            "/callback" if get => self.callback(req).await,
            "/start" if get => self.start(&req).await,
            "/saml/acs" if post => self.saml_acs(req).await,
            "/saml/metadata" if get => self.saml_metadata(&req),
            "/logout" if get || post => self.logout(&req).await,
            "/userinfo" if get => self.userinfo(&req),
            // Any method: Envoy's check request keeps the original one.
            "/auth" => self.forward_auth(&req).await,
            e if e.starts_with("/auth/") => self.forward_auth(&req).await,
            "/demo-login" if self.demo.is_some() && get => {
                let q = query(&req);
                self.demo_form(&sanitize::sanitize(param(&q, "redirectUrl"), &self.public_url), None)
            }
            "/demo-login" if self.demo.is_some() && post => self.demo_submit(req).await,
            "/authorize" if get => self.authorize(req).await,
            "/code" if post => self.mint_code(req).await,
            "/identifiers" if post || get || req.method() == Method::DELETE => self.identifiers(req).await,
            "/callback" | "/start" | "/logout" | "/userinfo" | "/authorize" | "/code" | "/identifiers" => {
                let mut resp =
                    error::error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed.", false);
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
                resp
            }
            // The IdP posts to the ACS; nothing else is a SAML binding porteiro
            // speaks (a GET here is a bookmark or a misconfigured IdP).
            "/saml/acs" | "/saml/metadata" => {
                let allow = if endpoint == "/saml/acs" { "POST" } else { "GET, HEAD" };
                let mut resp =
                    error::error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed.", false);
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            _ => self.reject(&req, StatusCode::NOT_FOUND, "not_found", "No such endpoint."),
        }
    }

    /// `GET /sso/callback`: a `jwt` login token (`?jwt=&redirectUrl=`) or an
    /// OpenID Connect answer (`?code=&state=`, or `?error=&state=`) comes back.
    async fn callback(&self, req: Request<Incoming>) -> Response<Body> {
        let q = query(&req);
        let html = error::wants_html(req.headers());
        if param(&q, "jwt").is_none() && param(&q, "state").is_some() {
            return self.oidc_callback(&req, &q).await;
        }
        let Some(token) = param(&q, "jwt") else {
            return self.login_failed(
                &req,
                "-",
                StatusCode::BAD_REQUEST,
                "missing_token",
                "The login answer carries no token.",
            );
        };
        // Which provider: named explicitly, else the one whose issuer the token claims.
        let candidates: Vec<&JwtLogin> = match param(&q, "provider") {
            Some(id) => self.provider(id).and_then(|p| p.as_jwt()).into_iter().collect(),
            None => {
                let iss = unverified_issuer(token);
                self.providers
                    .iter()
                    .filter_map(|p| p.as_jwt())
                    .filter(|p| iss.as_deref() == Some(p.verifier.rules().issuer.as_str()))
                    .collect()
            }
        };
        if candidates.is_empty() {
            return self.login_failed(
                &req,
                "-",
                StatusCode::UNAUTHORIZED,
                "unknown_issuer",
                "No login provider accepts this token.",
            );
        }
        let now = self.shared.clock.now();
        let mut last = TokenError::Malformed;
        let mut chosen = None;
        for provider in &candidates {
            match provider.login(token, now, self.shared.store.as_ref()).await {
                Ok(identity) => {
                    chosen = Some((provider, identity));
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some((provider, identity)) = chosen else {
            let id = candidates.first().map_or("-", |p| p.id.as_str());
            let status = match last {
                TokenError::KeysUnavailable | TokenError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            return self.login_failed(&req, id, status, last.reason(), &last.description());
        };
        if let Err(why) = identity.check_header_safe() {
            return self.login_failed(&req, &provider.id, StatusCode::UNAUTHORIZED, "unsafe_claims", why);
        }
        let return_to = param(&q, "redirectUrl").or_else(|| param(&q, &provider.return_param));
        let location = sanitize::sanitize(return_to, &self.public_url);
        self.start_session(&req, &provider.id, identity, &location, html)
    }

    async fn oidc_callback<B>(&self, req: &Request<B>, q: &[(String, String)]) -> Response<Body> {
        let state = param(q, "state").unwrap_or_default();
        let Some(states) = &self.login_states else {
            return self.login_failed(req, "-", StatusCode::BAD_REQUEST, "unknown_state", "No sign-in is in progress.");
        };
        let provider =
            states.provider_of(state, req.headers()).and_then(|id| self.provider(&id)).and_then(|p| p.as_oidc());
        let Some(provider) = provider else {
            return self.login_failed(
                req,
                "-",
                StatusCode::BAD_REQUEST,
                "unknown_state",
                "This sign-in was not started in this browser, or it took too long.",
            );
        };
        let id = provider.s.id.clone();
        let result = provider.finish(states, req.headers(), q, self.shared.store.as_ref()).await;
        let mut resp = match result {
            Ok((identity, return_to)) => {
                self.start_session(req, &id, identity, &return_to, error::wants_html(req.headers()))
            }
            Err(f) => {
                let mut resp = self.login_failed(req, &id, f.status, f.reason, &f.text);
                if let Some(r) = f.retry {
                    // Point the page's retry link at a fresh login for the same place.
                    let retry = form_urlencoded::Serializer::new(String::new())
                        .append_pair("provider", &id)
                        .append_pair("redirectUrl", &r)
                        .finish();
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("<{}/start?{retry}>; rel=\"retry\"", self.auth_prefix))
                    {
                        resp.headers_mut().insert(header::LINK, v);
                    }
                    if error::wants_html(req.headers()) {
                        resp = self.failure_page(f.status, &f.text, &format!("{}/start?{retry}", self.auth_prefix));
                    }
                }
                resp
            }
        };
        if let Some(clear) = states.clear(state, Comeback::Navigation) {
            resp.headers_mut().append(header::SET_COOKIE, clear);
        }
        resp
    }

    /// `POST /sso/saml/acs`: the IdP's signed Response (HTTP-POST binding).
    async fn saml_acs(&self, req: Request<Incoming>) -> Response<Body> {
        // The body is consumed below; keep the headers for the answer.
        let mut probe = Request::new(());
        *probe.headers_mut() = req.headers().clone();
        let body = match Limited::new(req.into_body(), saml::MAX_RESPONSE_BYTES * 2).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return self.login_failed(
                    &probe,
                    "-",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "response_too_large",
                    "The sign-in answer is too large.",
                );
            }
        };
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let (Some(response), relay) = (param(&form, "SAMLResponse"), param(&form, "RelayState").unwrap_or("")) else {
            return self.login_failed(
                &probe,
                "-",
                StatusCode::BAD_REQUEST,
                "missing_response",
                "The sign-in answer carries no SAMLResponse.",
            );
        };
        let attempt = match saml::take_attempt(relay, self.shared.store.as_ref()).await {
            Ok(a) => a,
            Err(f) => {
                let status = if f.reason == "store_unavailable" {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                };
                let mut resp = self.login_failed(&probe, "-", status, f.reason, &f.text);
                // A replayed or stale answer: its attempt cookie, if any, is of no use.
                if let Some(clear) = self.login_states.as_ref().and_then(|s| s.clear(relay, Comeback::CrossSitePost)) {
                    resp.headers_mut().append(header::SET_COOKIE, clear);
                }
                return resp;
            }
        };
        let Some(provider) = self.provider(&attempt.provider).and_then(|p| p.as_saml()) else {
            return self.login_failed(
                &probe,
                "-",
                StatusCode::BAD_REQUEST,
                "unknown_relay_state",
                "This sign-in's provider is gone.",
            );
        };
        let id = provider.s.id.clone();
        let Some(states) = &self.login_states else {
            let text = "This sign-in was not started in this browser.";
            return self.login_failed(&probe, &id, StatusCode::BAD_REQUEST, "saml_browser_mismatch", text);
        };
        let posted = saml::Posted { saml_response: response, relay_state: relay, headers: probe.headers(), states };
        let mut resp = match provider.finish(attempt, posted, self.shared.store.as_ref(), self.shared.clock.now()).await
        {
            Ok((identity, return_to)) => self.start_session(&probe, &id, identity, &return_to, true),
            Err(f) => {
                let status = match f.reason {
                    "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                    // As OpenID Connect's unknown state: not this browser's sign-in.
                    "saml_browser_mismatch" => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNAUTHORIZED,
                };
                self.login_failed(&probe, &id, status, f.reason, &f.text)
            }
        };
        // The attempt is spent whatever the outcome: its cookie goes too.
        if let Some(clear) = states.clear(relay, Comeback::CrossSitePost) {
            resp.headers_mut().append(header::SET_COOKIE, clear);
        }
        resp
    }

    /// `GET /sso/saml/metadata[?provider=]`: the SP metadata to paste into the IdP.
    fn saml_metadata(&self, req: &Request<Incoming>) -> Response<Body> {
        let q = query(req);
        let mut saml = self.providers.iter().filter_map(|p| p.as_saml());
        let chosen = match param(&q, "provider") {
            Some(id) => self.provider(id).and_then(|p| p.as_saml()),
            None => match (saml.next(), saml.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        };
        match chosen.map(|p| p.metadata_xml()) {
            Some(Some(xml)) => {
                let mut resp = Response::new(Body::full(xml));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/samlmetadata+xml"));
                resp
            }
            Some(None) => {
                error::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "The SP metadata cannot be written.", false)
            }
            None => {
                error::error(StatusCode::NOT_FOUND, "unknown_provider", "Name a SAML provider with ?provider=.", false)
            }
        }
    }

    /// Starts a login with `provider` for a browser that should come back to
    /// `return_to`: a redirect (OpenID Connect and SAML also set a
    /// login-attempt cookie that binds the attempt to this browser).
    pub(crate) async fn begin_login(
        &self,
        provider: &Provider,
        headers: &http::HeaderMap,
        return_to: &str,
        login_hint: Option<&str>,
    ) -> Response<Body> {
        // Every way into a login passes here: the return path is made safe
        // once, whatever the request path looked like (`//evil.com/x` too).
        let return_to = &sanitize::sanitize(Some(return_to), &self.public_url);
        if let Provider::Saml(p) = provider {
            let Some(states) = &self.login_states else {
                return error::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no_session_secret",
                    "Sessions are not configured.",
                    error::wants_html(headers),
                );
            };
            return match p.begin(states, headers, return_to, self.shared.store.as_ref()).await {
                Ok((url, cookies)) => {
                    let mut resp = redirect(&url);
                    for c in cookies {
                        resp.headers_mut().append(header::SET_COOKIE, c);
                    }
                    resp
                }
                Err(f) => {
                    self.shared.metrics.auth_failure(provider.id(), f.reason);
                    warn!(provider = provider.id(), reason = f.reason, "cannot start a SAML login");
                    error::error(StatusCode::SERVICE_UNAVAILABLE, f.reason, &f.text, error::wants_html(headers))
                }
            };
        }
        if let Provider::Oidc(p) = provider {
            let begun = self.login_states.as_ref().and_then(|s| p.begin(s, headers, return_to, login_hint));
            return match begun {
                Some((url, cookies)) => {
                    let mut resp = redirect(&url);
                    for c in cookies {
                        resp.headers_mut().append(header::SET_COOKIE, c);
                    }
                    resp
                }
                None => {
                    self.shared.metrics.auth_failure(provider.id(), "idp_unavailable");
                    error::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "idp_unavailable",
                        "The identity provider is not reachable yet; try again in a moment.",
                        error::wants_html(headers),
                    )
                }
            };
        }
        match provider.login_location(return_to) {
            Some(location) => redirect(&location),
            None => error::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Sign-in is required.",
                error::wants_html(headers),
            ),
        }
    }

    fn failure_page(&self, status: StatusCode, text: &str, retry: &str) -> Response<Body> {
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign-in failed</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}</style></head>\
             <body><h1>Sign-in failed</h1><p>{}.</p><p><a href=\"{}\">Try again</a></p></body></html>\n",
            // The texts are sentences already: no second full stop.
            escape_html(text.trim_end_matches('.')),
            escape_html(retry)
        );
        error::page_response(status, page)
    }

    /// Sets the session cookie(s) and sends the browser on to `location`.
    fn start_session<B>(
        &self,
        req: &Request<B>,
        provider: &str,
        identity: Identity,
        location: &str,
        html: bool,
    ) -> Response<Body> {
        let Some(sessions) = &self.sessions else {
            return error::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_session_secret",
                "Sessions are not configured.",
                html,
            );
        };
        let cookies = match sessions.write(&identity, req.headers()) {
            Ok(c) => c,
            Err(why) => return self.login_failed(req, provider, StatusCode::UNAUTHORIZED, "identity_too_large", why),
        };
        info!(provider, user = %identity.sub, "signed in");
        self.shared.metrics.login(provider);
        let mut resp = redirect(location);
        for c in cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp
    }

    /// A refused login: logged (never the token) and counted, then a short
    /// page for browsers or JSON for scripts.
    fn login_failed<B>(
        &self,
        req: &Request<B>,
        provider: &str,
        status: StatusCode,
        reason: &'static str,
        text: &str,
    ) -> Response<Body> {
        warn!(provider, reason, status = status.as_u16(), "login refused");
        self.shared.metrics.auth_failure(provider, reason);
        if error::wants_html(req.headers()) {
            let page = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign-in failed</title>\
                 <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}</style></head>\
                 <body><h1>Sign-in failed</h1><p>{}.</p><p><a href=\"/\">Try again</a></p></body></html>\n",
                escape_html(text.trim_end_matches('.'))
            );
            error::page_response(status, page)
        } else {
            error::json(status, &json!({ "error": reason, "error_description": text }))
        }
    }

    /// `GET /sso/authorize?code=&redirectUrl=`: a browser redeems a single-use code.
    async fn authorize(&self, req: Request<Incoming>) -> Response<Body> {
        let q = query(&req);
        let html = error::wants_html(req.headers());
        let Some(code) = param(&q, "code") else {
            return self.login_failed(
                &req,
                "-",
                StatusCode::BAD_REQUEST,
                "missing_code",
                "The login link carries no code.",
            );
        };
        let pending = match code::redeem(code, self.shared.store.as_ref()).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return self.login_failed(
                    &req,
                    "-",
                    StatusCode::BAD_REQUEST,
                    "invalid_code",
                    "The login code is invalid, expired or already used.",
                );
            }
            Err(e) => {
                warn!(error = %e, "state store unavailable");
                return self.login_failed(
                    &req,
                    "-",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "Login state is unavailable.",
                );
            }
        };
        let Some(provider) = self.provider(&pending.provider).and_then(|p| p.as_code()) else {
            return self.login_failed(
                &req,
                "-",
                StatusCode::BAD_REQUEST,
                "invalid_code",
                "The login code's provider is gone.",
            );
        };
        let identity = pending.into_identity(self.shared.clock.now());
        if let Err(why) = identity.check_header_safe() {
            return self.login_failed(&req, &provider.id, StatusCode::BAD_REQUEST, "unsafe_claims", why);
        }
        let return_to = param(&q, "redirectUrl").or_else(|| param(&q, &provider.return_param));
        let location = sanitize::sanitize(return_to, &self.public_url);
        self.start_session(&req, &provider.id, identity, &location, html)
    }

    /// The code provider and client id of a request's HTTP Basic credentials.
    #[expect(clippy::result_large_err, reason = "the answer is built once and returned as is")]
    fn code_client<B>(&self, req: &Request<B>) -> Result<(&CodeLogin, String), Response<Body>> {
        let found = code::basic_credentials(req.headers()).and_then(|(id, secret)| {
            self.providers.iter().filter_map(|p| p.as_code()).find(|p| p.client_matches(&id, &secret)).map(|p| (p, id))
        });
        found.ok_or_else(|| {
            warn!("back-channel call with a bad or missing client credential");
            self.shared.metrics.auth_failure("-", "invalid_client");
            let mut resp = error::json(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "invalid_client", "error_description": "unknown client or wrong secret" }),
            );
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"porteiro\""));
            resp
        })
    }

    /// `POST /sso/code`: a trusted backend mints a single-use login code.
    async fn mint_code(&self, req: Request<Incoming>) -> Response<Body> {
        let (provider, client) = match self.code_client(&req) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let body = match json_body(req).await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        let pending = match provider.pending(&body, &client, self.shared.identifiers.as_ref()).await {
            Ok(p) => p,
            Err(CodeError::Bad(code::BadRequest(why))) => return invalid_request(&why),
            Err(CodeError::UnknownIdentifier) => {
                return error::json(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": "unknown_identifier", "error_description": "no user is mapped to this user_identifier" }),
                );
            }
            Err(CodeError::Unavailable(e)) => return unavailable(&e),
        };
        match provider.mint(&pending, self.shared.store.as_ref()).await {
            Ok(code) => {
                info!(provider = %provider.id, client = %client, user = %pending.sub, "login code minted");
                error::json(StatusCode::OK, &json!({ "code": code, "expires_in": provider.code_ttl.as_secs() }))
            }
            Err(CodeError::Unavailable(e)) | Err(CodeError::Bad(code::BadRequest(e))) => unavailable(&e),
            Err(CodeError::UnknownIdentifier) => unavailable("unexpected"),
        }
    }

    /// `POST|GET|DELETE /sso/identifiers`: a client's identifier mappings
    /// (Engage "De-Para").
    async fn identifiers(&self, req: Request<Incoming>) -> Response<Body> {
        let (_, client) = match self.code_client(&req) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let Some(ids) = self.shared.identifiers.clone() else {
            return error::json(
                StatusCode::NOT_FOUND,
                &json!({ "error": "not_configured", "error_description": "identifier mappings need server.state_dir or session.store = \"redis\"" }),
            );
        };
        let method = req.method().clone();
        let identifier = query(&req).into_iter().find(|(k, _)| k == "identifier").map(|(_, v)| v);
        let body = if method == Method::POST {
            match json_body(req).await {
                Ok(v) => Some(v),
                Err(resp) => return resp,
            }
        } else {
            None
        };
        match (method, body, identifier) {
            (Method::POST, Some(body), _) => add_mappings(&ids, &client, body).await,
            (Method::GET, _, _) => match ids.list(&client).await {
                Ok(list) => error::json(StatusCode::OK, &json!(list)),
                Err(e) => unavailable(&e.to_string()),
            },
            (_, _, Some(identifier)) => match ids.remove(&client, &identifier).await {
                Ok(true) => error::json(StatusCode::OK, &json!({ "removed": identifier })),
                Ok(false) => error::json(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": "unknown_identifier", "error_description": "no such mapping" }),
                ),
                Err(e) => unavailable(&e.to_string()),
            },
            _ => invalid_request("identifier is required (?identifier=...)"),
        }
    }

    /// `GET /sso/start?provider=&redirectUrl=[&login_hint=]`: begin a login
    /// explicitly (also the target of nginx's `error_page 401` for
    /// forward-auth, and of the retry link on a failed sign-in page).
    /// `login_hint` is passed on to an OpenID provider.
    async fn start(&self, req: &Request<Incoming>) -> Response<Body> {
        let q = query(req);
        let return_to = sanitize::sanitize(param(&q, "redirectUrl").or_else(|| param(&q, "rd")), &self.public_url);
        let provider = match param(&q, "provider") {
            Some(id) => self.provider(id).filter(|p| p.is_login()),
            None => {
                let path = return_to.split('?').next().unwrap_or("/");
                let host = Target::of_request(req).ok().and_then(|t| t.host().map(str::to_string));
                let by_route = Target::of_parts(host.as_deref(), path, None)
                    .ok()
                    .and_then(|t| self.route(&t).ok().and_then(|r| r.login.clone()));
                let mut logins = self.providers.iter().filter(|p| p.is_login());
                by_route
                    .or_else(|| match (logins.next(), logins.next()) {
                        (Some(only), None) => Some(only.clone()),
                        _ => None,
                    })
                    .and_then(|p| self.provider(p.id()))
            }
        };
        match provider {
            // begin_login, not login_location: an OpenID Connect login needs
            // its state cookie (login_location is None for it).
            Some(p) => self.begin_login(p, req.headers(), &return_to, param(&q, "login_hint")).await,
            None => error::error(
                StatusCode::BAD_REQUEST,
                "unknown_provider",
                "Name a login provider with ?provider=.",
                error::wants_html(req.headers()),
            ),
        }
    }

    /// `GET|POST /sso/logout`: revoke the session, clear the cookies, then
    /// the provider's `logout_url` or a signed-out page.
    async fn logout<B>(&self, req: &Request<B>) -> Response<Body> {
        let identity = self.any_session(req.headers());
        if let Some(id) = &identity {
            let now = self.shared.clock.now();
            let ttl = Duration::from_secs(id.exp.saturating_sub(now).max(1));
            if let Err(e) = self.shared.store.revoke(Revocation::Session(id.sid.clone()), now, ttl).await {
                warn!(error = %e, "could not record the logout; the cookie is cleared anyway");
            }
            info!(provider = %id.provider, user = %id.sub, "signed out");
        }
        let next = identity.as_ref().and_then(|id| self.provider(&id.provider)).and_then(|p| p.logout_url());
        let mut resp = match next {
            Some(url) => redirect(url),
            None if error::wants_html(req.headers()) => error::page_response(
                StatusCode::OK,
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Signed out</title>\
                 <style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}</style></head>\
                 <body><h1>Signed out</h1><p>You have been signed out.</p><p><a href=\"/\">Sign in again</a></p></body></html>\n"
                    .to_string(),
            ),
            None => error::json(StatusCode::OK, &json!({ "signed_out": true })),
        };
        if let Some(sessions) = &self.sessions {
            for c in sessions.clear(req.headers()) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
        resp
    }

    /// `GET /sso/userinfo`: the current identity as JSON, or 401.
    fn userinfo<B>(&self, req: &Request<B>) -> Response<Body> {
        match self.any_session(req.headers()) {
            Some(id) => error::json(
                StatusCode::OK,
                &json!({
                    "user": id.sub,
                    "email": id.email,
                    "name": id.name,
                    "preferred_username": id.username,
                    "groups": id.groups,
                    "provider": id.provider,
                    "expires_at": id.exp,
                }),
            ),
            None => error::json(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "unauthorized", "error_description": "not signed in" }),
            ),
        }
    }

    fn demo_form(&self, return_to: &str, problem: Option<&str>) -> Response<Body> {
        let problem = problem.map(|p| format!("<p class=\"problem\">{}</p>", escape_html(p))).unwrap_or_default();
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Demo login</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:30em;margin:4em auto;padding:0 1em}}\
             label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em}}button{{margin-top:1em;padding:.5em 1.5em}}\
             .warn{{background:#fff3bf;padding:.6em}}.problem{{color:#b00}}</style></head><body>\
             <h1>Demo login</h1><p class=\"warn\">This page stands in for your company's login page. It is insecure \
             and for local demos only.</p>{problem}\
             <form method=\"post\" action=\"{prefix}/demo-login\">\
             <input type=\"hidden\" name=\"redirectUrl\" value=\"{ret}\">\
             <label for=\"name\">Name</label><input id=\"name\" name=\"name\" value=\"Ana Souza\" required>\
             <label for=\"email\">Email</label><input id=\"email\" name=\"email\" value=\"ana@example.com\" required>\
             <label for=\"groups\">Groups (comma-separated)</label><input id=\"groups\" name=\"groups\" value=\"support\">\
             <button type=\"submit\">Sign in</button></form></body></html>\n",
            prefix = escape_html(&self.auth_prefix),
            ret = escape_html(return_to),
        );
        let status = if problem.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        error::page_response(status, page)
    }

    /// Mints a short-lived HS256 token as the customer's login page would,
    /// and sends the browser to the callback with it.
    async fn demo_submit(&self, req: Request<Incoming>) -> Response<Body> {
        let Some(demo) = &self.demo else {
            return self.reject(&req, StatusCode::NOT_FOUND, "not_found", "No such endpoint.");
        };
        let Some(body) = small_body(req).await else {
            return error::error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "Form too large.", true);
        };
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let field = |n: &str| param(&form, n).map(str::trim).unwrap_or("");
        let (name, email) = (field("name"), field("email"));
        let return_to = sanitize::sanitize(Some(field("redirectUrl")), &self.public_url);
        if name.is_empty() || !claims::valid_email(email) {
            return self.demo_form(&return_to, Some("Enter a name and a valid email address."));
        }
        let groups: Vec<&str> = field("groups").split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
        let now = self.shared.clock.now();
        let claims = json!({
            "iss": demo.issuer, "name": name, "email": email, "groups": groups,
            "iat": now, "exp": now + 60, "jti": auth::seal::random_id(16),
        });
        let Ok(token) = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &demo.key) else {
            return error::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Could not sign the demo token.", true);
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("jwt", &token)
            .append_pair("redirectUrl", &return_to)
            .append_pair("provider", &demo.provider)
            .finish();
        redirect(&format!("{}/callback?{query}", self.auth_prefix))
    }
}

/// Reads a JSON body of at most 16 KiB.
async fn json_body(req: Request<Incoming>) -> Result<serde_json::Value, Response<Body>> {
    let bytes = Limited::new(req.into_body(), 16 * 1024).collect().await.map_err(|_| {
        error::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({ "error": "invalid_request", "error_description": "body larger than 16 KiB" }),
        )
    })?;
    auth::json::value(&bytes.to_bytes())
        .map_err(|_| invalid_request("the body is not valid JSON (or names a member twice)"))
}

fn invalid_request(why: &str) -> Response<Body> {
    error::json(StatusCode::BAD_REQUEST, &json!({ "error": "invalid_request", "error_description": why }))
}

fn unavailable(why: &str) -> Response<Body> {
    warn!(error = why, "state unavailable");
    error::json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({ "error": "temporarily_unavailable", "error_description": "login state is unavailable" }),
    )
}

/// Validates an Engage identifiers array and stores it, all or nothing.
async fn add_mappings(ids: &Identifiers, client: &str, body: serde_json::Value) -> Response<Body> {
    let serde_json::Value::Array(items) = body else {
        return invalid_request("the body must be an array of {user_login, client_application_id, identifier}");
    };
    if items.is_empty() || items.len() > 1000 {
        return invalid_request("send between 1 and 1000 mappings");
    }
    let mut mappings = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| match item.get(name) {
            Some(serde_json::Value::String(s))
                if !s.trim().is_empty() && s.len() <= 512 && !s.bytes().any(|b| b < 0x20) =>
            {
                Some(s.trim().to_string())
            }
            _ => None,
        };
        let mut fields = ["user_login", "client_application_id", "identifier"].map(|n| (n, field(n)));
        if let Some((name, _)) = fields.iter().find(|(_, v)| v.is_none()) {
            return invalid_request(&format!("[{i}].{name} must be a non-empty string"));
        }
        let [user_login, client_application_id, identifier] =
            fields.each_mut().map(|(_, v)| v.take().unwrap_or_default());
        let mapping = Mapping { user_login, client_application_id, identifier };
        if mapping.client_application_id != client {
            return invalid_request(&format!("[{i}].client_application_id must be your client_id"));
        }
        mappings.push(mapping);
    }
    match ids.add(client, &mappings).await {
        Ok(added) => error::json(StatusCode::OK, &json!({ "added": added, "total": mappings.len() })),
        Err(MappingError::Conflict(identifier)) => error::json(
            StatusCode::CONFLICT,
            &json!({ "error": "conflict", "error_description": format!("identifier {identifier:?} is already mapped to another user") }),
        ),
        Err(MappingError::Storage(e)) => unavailable(&e),
    }
}
