//! porteiro's own endpoints under `server.auth_prefix` (`/sso`): a table of
//! path -> (methods, handler). Login methods' endpoints (callbacks, the
//! SAML ACS, the code API) live with their provider in
//! [`crate::auth::provider`] and come back here as an [`Outcome`], which
//! [`Gateway::answer`] turns into the response and, for a login, the
//! session cookie. They never reach an upstream.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::{info, warn};

use super::{Gateway, redirect};
use crate::auth::provider::{Ctx, Outcome, Params, Provider, Reply, code, jwt, oidc, oidc_logout, param, saml};
use crate::auth::records::SessionEntry;
use crate::auth::{Failure, Identity, claims};
use crate::canonical::Target;
use crate::error::{self, Class, Reject, escape_html};
use crate::proxy::Body;

/// One of porteiro's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Callback,
    Start,
    Logout,
    /// Where an OpenID provider sends the browser back after its logout.
    LogoutDone,
    /// OpenID Connect Back-Channel Logout.
    BackchannelLogout,
    Userinfo,
    ForwardAuth,
    SamlAcs,
    SamlMetadata,
    Authorize,
    Code,
    Identifiers,
    DemoLogin,
    /// `/api-keys`: list (GET), mint (POST).
    ApiKeys,
    /// `/api-keys/{id}`: revoke (DELETE).
    ApiKey,
    /// The public keys of the signed identity header.
    Jwks,
}

/// Path below the prefix, the methods it answers (its `Allow`), the
/// endpoint, and the largest body a `POST` to it may carry.
struct Entry {
    path: &'static str,
    allow: &'static str,
    endpoint: Endpoint,
    max_body: usize,
}

/// Largest form the demo login page posts.
const MAX_FORM_BYTES: usize = 8 * 1024;

const ENDPOINTS: &[Entry] = &[
    // `jwt` (`?jwt=`) and OpenID Connect (`?code=&state=`) answers.
    Entry { path: "/callback", allow: "GET, HEAD", endpoint: Endpoint::Callback, max_body: 0 },
    Entry { path: "/start", allow: "GET, HEAD", endpoint: Endpoint::Start, max_body: 0 },
    Entry { path: "/logout", allow: "GET, HEAD, POST", endpoint: Endpoint::Logout, max_body: 0 },
    Entry { path: oidc_logout::LOGOUT_DONE, allow: "GET, HEAD", endpoint: Endpoint::LogoutDone, max_body: 0 },
    Entry {
        path: "/backchannel-logout",
        allow: "POST",
        endpoint: Endpoint::BackchannelLogout,
        max_body: oidc_logout::MAX_BODY_BYTES,
    },
    Entry { path: "/userinfo", allow: "GET, HEAD", endpoint: Endpoint::Userinfo, max_body: 0 },
    // Any method: Envoy's check request keeps the original one. Also
    // `/auth/<original path>` (Envoy), matched below.
    Entry { path: "/auth", allow: "", endpoint: Endpoint::ForwardAuth, max_body: 0 },
    // The IdP posts to the ACS; nothing else is a SAML binding porteiro
    // speaks (a GET here is a bookmark or a misconfigured IdP).
    Entry { path: "/saml/acs", allow: "POST", endpoint: Endpoint::SamlAcs, max_body: 2 * saml::MAX_RESPONSE_BYTES },
    Entry { path: "/saml/metadata", allow: "GET, HEAD", endpoint: Endpoint::SamlMetadata, max_body: 0 },
    Entry { path: "/authorize", allow: "GET, HEAD", endpoint: Endpoint::Authorize, max_body: 0 },
    Entry { path: "/code", allow: "POST", endpoint: Endpoint::Code, max_body: code::MAX_JSON_BYTES },
    Entry {
        path: "/identifiers",
        allow: "GET, HEAD, POST, DELETE",
        endpoint: Endpoint::Identifiers,
        max_body: code::MAX_JSON_BYTES,
    },
    Entry { path: "/demo-login", allow: "GET, HEAD, POST", endpoint: Endpoint::DemoLogin, max_body: MAX_FORM_BYTES },
    Entry {
        path: "/api-keys",
        allow: "GET, HEAD, POST",
        endpoint: Endpoint::ApiKeys,
        max_body: super::api_key_endpoints::MAX_JSON_BYTES,
    },
    // `/api-keys/{id}`, matched below.
    Entry { path: "/api-keys/", allow: "DELETE", endpoint: Endpoint::ApiKey, max_body: 0 },
    // Only when a route has `identity_jwt = true`.
    Entry { path: "/jwks.json", allow: "GET, HEAD", endpoint: Endpoint::Jwks, max_body: 0 },
];

fn find(endpoint: &str) -> Option<&'static Entry> {
    let forward_auth = endpoint.starts_with("/auth/");
    let api_key = endpoint.strip_prefix("/api-keys/").is_some_and(|id| !id.is_empty() && !id.contains('/'));
    ENDPOINTS.iter().find(|e| {
        (e.path == endpoint && e.endpoint != Endpoint::ApiKey)
            || (forward_auth && e.endpoint == Endpoint::ForwardAuth)
            || (api_key && e.endpoint == Endpoint::ApiKey)
    })
}

/// An empty `allow` takes any method.
fn allows(allow: &str, method: &Method) -> bool {
    allow.is_empty() || allow.split(", ").any(|m| m == method.as_str())
}

/// Query parameters, decoded.
fn query<B>(req: &Request<B>) -> Vec<(String, String)> {
    req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

impl Gateway {
    /// What the providers' endpoints share with the gateway.
    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            providers: &self.providers,
            store: self.shared.store.as_ref(),
            states: self.login_states.as_ref(),
            identifiers: self.shared.identifiers.as_ref(),
            clock: &self.shared.clock,
            public_url: &self.public_url,
        }
    }

    /// Phase 3: porteiro's own endpoints. `endpoint` is the path below the prefix.
    pub(super) async fn internal(&self, req: Request<Incoming>, endpoint: &str, client: IpAddr) -> Response<Body> {
        let entry = match find(endpoint) {
            Some(e) if e.endpoint == Endpoint::DemoLogin && self.demo.is_none() => None,
            Some(e) if e.endpoint == Endpoint::Jwks && self.identity_signer.is_none() => None,
            found => found,
        };
        let entry = match entry {
            Some(e) => e,
            _ => return self.reject(&req, Reject::new(Class::NotFound, "not_found", "No such endpoint.")),
        };
        if !allows(entry.allow, req.method()) {
            let mut resp = Reject::new(Class::MethodNotAllowed, "method_not_allowed", "Method not allowed.").json();
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(entry.allow));
            return resp;
        }
        // Login endpoints: a rate per client address (DESIGN §9).
        let login = matches!(
            entry.endpoint,
            Endpoint::Callback
                | Endpoint::Authorize
                | Endpoint::Code
                | Endpoint::Start
                | Endpoint::SamlAcs
                | Endpoint::BackchannelLogout
        );
        if login {
            if let Err(wait) = self.limits.login(client) {
                return self.too_many("login", wait, error::wants_html(req.headers()));
            }
        }
        let q = query(&req);
        match entry.endpoint {
            Endpoint::ForwardAuth => return self.forward_auth(&req, client).await,
            Endpoint::Start => return self.start(&req, &q).await,
            Endpoint::Logout => return self.logout(req.headers()).await,
            Endpoint::LogoutDone => return self.logout_done(req.headers(), &q),
            Endpoint::BackchannelLogout => return self.backchannel_logout(req, entry.max_body).await,
            Endpoint::Userinfo => return self.userinfo(req.headers()),
            Endpoint::Jwks => return self.jwks(),
            Endpoint::ApiKeys => return self.api_keys(req, entry.max_body).await,
            Endpoint::ApiKey => {
                let id = endpoint.strip_prefix("/api-keys/").unwrap_or_default().to_string();
                return self.revoke_api_key(req, &id).await;
            }
            _ => {}
        }
        let (parts, body) = req.into_parts();
        let body = match parts.method {
            Method::POST => Limited::new(body, entry.max_body).collect().await.ok().map(|b| b.to_bytes()),
            _ => Some(Bytes::new()),
        };
        let (headers, ctx) = (&parts.headers, self.ctx());
        let reply: Reply = match entry.endpoint {
            // An OpenID provider's answer (`state`, `code` or `error`): one
            // without `state` is an IdP-initiated login, refused there.
            Endpoint::Callback
                if param(&q, "jwt").is_none() && ["state", "code", "error"].iter().any(|p| param(&q, p).is_some()) =>
            {
                oidc::callback(&ctx, headers, &q).await
            }
            Endpoint::Callback => jwt::callback(&ctx, &q).await.into(),
            Endpoint::SamlAcs => saml::acs(&ctx, headers, body).await,
            Endpoint::SamlMetadata => saml::metadata(&ctx, &q).into(),
            Endpoint::Authorize => code::authorize(&ctx, &q).await.into(),
            Endpoint::Code => code::mint(&ctx, headers, body).await.into(),
            Endpoint::Identifiers => code::identifiers(&ctx, &parts.method, headers, &q, body).await.into(),
            Endpoint::DemoLogin if parts.method == Method::POST => return self.demo_submit(body),
            Endpoint::DemoLogin => return self.demo_form(&ctx.return_path(param(&q, "redirectUrl")), None),
            Endpoint::ForwardAuth
            | Endpoint::Start
            | Endpoint::Logout
            | Endpoint::LogoutDone
            | Endpoint::BackchannelLogout
            | Endpoint::Userinfo
            | Endpoint::ApiKeys
            | Endpoint::ApiKey
            | Endpoint::Jwks => unreachable!("answered above"),
        };
        self.answer(reply, headers).await
    }

    /// Turns what an endpoint came to into the answer: a login's session
    /// cookie and redirect, a refusal's page or JSON, plus the endpoint's
    /// own cookies.
    async fn answer(&self, reply: Reply, headers: &HeaderMap) -> Response<Body> {
        let mut resp = match reply.outcome {
            Outcome::SignedIn { provider, identity, return_to } => {
                self.start_session(headers, &provider, *identity, &return_to).await
            }
            Outcome::Redirect(location) => redirect(&location),
            Outcome::Json(value) => error::json(StatusCode::OK, &value),
            Outcome::Document { content_type, body } => {
                let mut resp = Response::new(Body::full(body));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                resp
            }
            Outcome::LoginFailed { provider, failure } => self.login_failed(headers, &provider, &failure),
            Outcome::Refused(refusal) => refusal.json(),
            Outcome::Unauthenticated(refusal) => {
                self.shared.metrics.auth_failure("-", refusal.reason);
                refusal.json()
            }
        };
        for c in reply.cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp
    }

    /// Records the session in the index, sets the session cookie(s) and
    /// sends the browser on to `location`.
    async fn start_session(
        &self,
        headers: &HeaderMap,
        provider: &str,
        identity: Identity,
        location: &str,
    ) -> Response<Body> {
        let Some(sessions) = &self.sessions else {
            let refusal = Reject::new(Class::Internal, "no_session_secret", "Sessions are not configured.");
            return refusal.answer(error::wants_html(headers));
        };
        let cookies = match sessions.write(&identity, headers) {
            Ok(c) => c,
            Err(why) => {
                let failure = Failure::new(Class::Unauthorized, "identity_too_large", why);
                return self.login_failed(headers, provider, &failure);
            }
        };
        // A session the index does not know could not be listed nor ended
        // by `sid`: without the index, no session.
        let entry = SessionEntry::of(&identity);
        if let Err(e) = self.shared.records.add_session(&entry, self.shared.clock.now()).await {
            warn!(provider, error = %e, "cannot record the session");
            let failure = Failure::new(Class::Unavailable, "store_unavailable", "Sign-in is unavailable; try again.");
            return self.login_failed(headers, provider, &failure);
        }
        info!(provider, user = %identity.sub, "signed in");
        self.shared.metrics.login(provider);
        let mut resp = redirect(location);
        for c in cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp.extensions_mut().insert(super::access::SignedInAs(identity.sub.clone()));
        resp
    }

    /// A refused login: logged (never the token) and counted, then a short
    /// page for browsers (with a link to try again) or JSON for scripts.
    fn login_failed(&self, headers: &HeaderMap, provider: &str, failure: &Failure) -> Response<Body> {
        let (reason, status) = (failure.reason, failure.class.status());
        warn!(provider, reason, status = status.as_u16(), "login refused");
        self.shared.metrics.auth_failure(provider, reason);
        // Where to try again: a fresh login for the same place, when known.
        let retry = failure.retry.as_ref().map(|r| {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("provider", provider)
                .append_pair("redirectUrl", r)
                .finish();
            format!("{}/start?{query}", self.auth_prefix)
        });
        let mut resp = if error::wants_html(headers) {
            // The texts are sentences already: no second full stop.
            let body = format!(
                "<p>{}.</p><p><a href=\"{}\">Try again</a></p>",
                escape_html(failure.text.trim_end_matches('.')),
                escape_html(retry.as_deref().unwrap_or("/"))
            );
            error::page(status, "Sign-in failed", "Sign-in failed", &body)
        } else {
            failure.reject().json()
        };
        if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&format!("<{r}>; rel=\"retry\"")).ok()) {
            resp.headers_mut().insert(header::LINK, v);
        }
        resp
    }

    /// Sends a browser on an app's path to `provider`'s login.
    pub(super) async fn start_login(
        &self,
        provider: &Provider,
        headers: &HeaderMap,
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

    /// Starts a login with `provider` for a browser that should come back to
    /// `return_to`: a redirect, with the login-attempt cookies that bind
    /// OpenID Connect and SAML attempts to this browser.
    async fn begin_login(
        &self,
        provider: &Provider,
        headers: &HeaderMap,
        return_to: &str,
        login_hint: Option<&str>,
    ) -> Response<Body> {
        // Every way into a login passes here: the return path is made safe
        // once, whatever the request path looked like (`//evil.com/x` too).
        let ctx = self.ctx();
        let return_to = ctx.return_path(Some(return_to));
        match provider.begin(&ctx, headers, &return_to, login_hint).await {
            Ok((location, cookies)) => {
                let mut resp = redirect(&location);
                for c in cookies {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                resp
            }
            Err(failure) => {
                self.shared.metrics.auth_failure(provider.id(), failure.reason);
                warn!(provider = provider.id(), reason = failure.reason, "cannot start a login");
                failure.reject().answer(error::wants_html(headers))
            }
        }
    }

    /// `GET /sso/start?provider=&redirectUrl=[&login_hint=]`: begin a login
    /// explicitly (also the target of nginx's `error_page 401` for
    /// forward-auth, and of the retry link on a failed sign-in page).
    /// `login_hint` is passed on to an OpenID provider.
    async fn start(&self, req: &Request<Incoming>, q: &Params) -> Response<Body> {
        let ctx = self.ctx();
        let return_to = ctx.return_path(param(q, "redirectUrl").or_else(|| param(q, "rd")));
        let provider = match param(q, "provider") {
            Some(id) => self.provider(id).filter(|p| p.is_login()),
            None => {
                // The provider of the route the return path goes to, else the only one.
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
            Some(p) => self.begin_login(p, req.headers(), &return_to, param(q, "login_hint")).await,
            None => Reject::new(Class::BadRequest, "unknown_provider", "Name a login provider with ?provider=.")
                .answer(error::wants_html(req.headers())),
        }
    }

    /// `GET|POST /sso/logout`: revoke the session, clear the cookies, then
    /// the OpenID provider's end-session endpoint (RP-Initiated Logout,
    /// which comes back to [`Gateway::logout_done`]), else the provider's
    /// `logout_url`, else a signed-out page.
    async fn logout(&self, headers: &HeaderMap) -> Response<Body> {
        // An expired session that could still be renewed is ended too.
        let identity = self.session(headers, None).or_else(|| self.renewable(headers, None));
        if let Some(id) = &identity {
            let now = self.shared.clock.now();
            let until = id.renew_until.unwrap_or(id.exp);
            let ttl = std::time::Duration::from_secs(until.saturating_sub(now).max(1));
            let revocation = crate::auth::store::Revocation::Session(id.sid.clone());
            if let Err(e) = self.shared.store.revoke(revocation, now, ttl).await {
                warn!(error = %e, "could not record the logout; the cookie is cleared anyway");
            }
            if let Err(e) = self.shared.records.drop_sessions(&[SessionEntry::of(id)]).await {
                warn!(error = %e, "could not drop the session from the index");
            }
            if id.renew_until.is_some() {
                crate::auth::provider::oidc_refresh::forget(self.shared.store.as_ref(), &id.sid).await;
            }
            info!(provider = %id.provider, user = %id.sub, "signed out");
        }
        let provider = identity.as_ref().and_then(|id| Some((id, self.provider(&id.provider)?)));
        let at_provider = match provider {
            Some((id, p)) => match p.as_oidc() {
                Some(o) => oidc_logout::end_session_url(o, self.shared.store.as_ref(), id).await,
                None => None,
            },
            None => None,
        };
        let next = at_provider.as_deref().or_else(|| provider.and_then(|(_, p)| p.logout_url()));
        let mut resp = match next {
            Some(url) => redirect(url),
            None => signed_out(headers),
        };
        if let Some(sessions) = &self.sessions {
            for c in sessions.clear(headers) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
        resp
    }

    /// `GET /sso/logout/done[?state=<provider>]`: an OpenID provider's way
    /// back after its logout (the `post_logout_redirect_uri`): on to that
    /// provider's `logout_url`, else the signed-out page. Changes nothing:
    /// the session ended before the browser went to the provider.
    fn logout_done(&self, headers: &HeaderMap, q: &Params) -> Response<Body> {
        match param(q, "state").and_then(|id| self.provider(id)).and_then(|p| p.logout_url()) {
            Some(url) => redirect(url),
            None => signed_out(headers),
        }
    }

    /// `GET /sso/userinfo`: the current identity as JSON, or 401.
    fn userinfo(&self, headers: &HeaderMap) -> Response<Body> {
        match self.session(headers, None) {
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
            None => Reject::new(Class::Unauthorized, "unauthorized", "not signed in").json(),
        }
    }

    /// `GET /sso/jwks.json`: the keys that verify `X-Porteiro-Jwt-Assertion`
    /// (the current one, then those of `session.previous_secrets`). Cached
    /// for a minute: a new key is used at once after a rotation, and
    /// verifiers fetch the set again on an unknown `kid` anyway.
    fn jwks(&self) -> Response<Body> {
        let Some(signer) = &self.identity_signer else {
            return Reject::new(Class::NotFound, "not_found", "No such endpoint.").json();
        };
        let mut resp = Response::new(Body::full(signer.jwks()));
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
        resp
    }

    /// The demo login page (`demo_login = true`): a form standing in for a
    /// customer's login page.
    fn demo_form(&self, return_to: &str, problem: Option<&str>) -> Response<Body> {
        let problem = problem.map(|p| format!("<p class=\"problem\">{}</p>", escape_html(p))).unwrap_or_default();
        let body = format!(
            "<p class=\"warn\">This page stands in for your company's login page. It is insecure \
             and for local demos only.</p>{problem}\
             <form method=\"post\" action=\"{prefix}/demo-login\">\
             <input type=\"hidden\" name=\"redirectUrl\" value=\"{ret}\">\
             <label for=\"name\">Name</label><input id=\"name\" name=\"name\" value=\"Ana Souza\" required>\
             <label for=\"email\">Email</label><input id=\"email\" name=\"email\" value=\"ana@example.com\" required>\
             <label for=\"groups\">Groups (comma-separated)</label><input id=\"groups\" name=\"groups\" value=\"support\">\
             <button type=\"submit\">Sign in</button></form>",
            prefix = escape_html(&self.auth_prefix),
            ret = escape_html(return_to),
        );
        let status = if problem.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        error::page(status, "Demo login", "Demo login", &body)
    }

    /// Mints a short-lived login token as the customer's login page would,
    /// and sends the browser to the callback with it.
    fn demo_submit(&self, body: Option<Bytes>) -> Response<Body> {
        let Some(demo) = &self.demo else {
            return Reject::new(Class::NotFound, "not_found", "No such endpoint.").answer(true);
        };
        let Some(body) = body else {
            return Reject::new(Class::TooLarge, "too_large", "Form too large.").answer(true);
        };
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let field = |n: &str| param(&form, n).map(str::trim).unwrap_or("");
        let (name, email) = (field("name"), field("email"));
        let return_to = self.ctx().return_path(Some(field("redirectUrl")));
        if name.is_empty() || !claims::valid_email(email) {
            return self.demo_form(&return_to, Some("Enter a name and a valid email address."));
        }
        let groups: Vec<&str> = field("groups").split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
        let Some(token) = demo.mint(name, email, &groups, self.shared.clock.now()) else {
            return Reject::new(Class::Internal, "internal", "Could not sign the demo token.").answer(true);
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("jwt", &token)
            .append_pair("redirectUrl", &return_to)
            .append_pair("provider", &demo.provider)
            .finish();
        redirect(&format!("{}/callback?{query}", self.auth_prefix))
    }
}

/// The end of a logout without anywhere else to go: a page for a browser,
/// JSON for a script.
fn signed_out(headers: &HeaderMap) -> Response<Body> {
    if error::wants_html(headers) {
        error::page(
            StatusCode::OK,
            "Signed out",
            "Signed out",
            "<p>You have been signed out.</p><p><a href=\"/\">Sign in again</a></p>",
        )
    } else {
        error::json(StatusCode::OK, &json!({ "signed_out": true }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_decides_endpoints_and_their_methods() {
        let code = find("/code").map(|e| (e.endpoint, e.allow));
        assert_eq!(code, Some((Endpoint::Code, "POST")));
        assert!(allows("POST", &Method::POST) && !allows("POST", &Method::GET));
        // Envoy's `/auth/<original path>` is forward-auth, with any method.
        let envoy = find("/auth/admin/x").unwrap();
        assert_eq!(envoy.endpoint, Endpoint::ForwardAuth);
        assert!(allows(envoy.allow, &Method::DELETE));
        assert!(find("/authx").is_none() && find("/code/").is_none() && find("").is_none());
        // Only endpoints that read a POST body have a limit for it.
        for e in ENDPOINTS {
            assert_eq!(
                e.max_body > 0,
                allows(e.allow, &Method::POST) && e.endpoint != Endpoint::Logout && e.endpoint != Endpoint::ForwardAuth,
                "{}",
                e.path
            );
        }
    }
}
