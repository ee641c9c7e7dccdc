//! `{auth_prefix}/auth`: forward-auth for nginx `auth_request`,
//! ingress-nginx `auth-url`, Traefik and Caddy ForwardAuth, and Envoy
//! `ext_authz`. The URL the caller names ([`super::asked_url`]) goes
//! through the phases a proxied request does.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tracing::info;

use super::{Audience, Gateway, RouteRefusal, Verdict, asked_url, forbidden, identity_headers, is_navigation};
use crate::canonical;
use crate::error;
use crate::proxy::Body;

impl Gateway {
    /// `{auth_prefix}/auth`: forward-auth for nginx `auth_request`,
    /// ingress-nginx `auth-url`, Traefik and Caddy ForwardAuth, and Envoy
    /// `ext_authz` (`{auth_prefix}/auth/<original path>`). The URL the caller
    /// names ([`super::asked_url`]) goes through the phases a proxied
    /// request does: canonical form, route, authenticate. The answer is only
    /// ever `200`, `401`, `403` or, with `?redirect=true` or in Envoy's form,
    /// a login redirect for a browser: nginx turns anything else into a
    /// `500` for the user.
    pub(super) async fn forward_auth<B>(&self, req: &Request<B>, client: std::net::IpAddr) -> Response<Body> {
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
        let asked = match asked_url::asked_url(headers, envoy.as_deref()) {
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
            Err(refusal) => return self.forward_auth_refused(headers, refusal.reject().reason),
        };
        // The original method, from the caller's header, else (Envoy) the
        // check request's own.
        let method = ["x-forwarded-method", "x-original-method"]
            .iter()
            .find_map(|n| headers.get(*n).and_then(|m| Method::from_bytes(m.as_bytes()).ok()))
            .unwrap_or_else(|| if envoy.is_some() { req.method().clone() } else { Method::GET });
        let redirect_mode = envoy.is_some() || query_flag(req.uri().query(), "redirect");
        let resp = match self.authenticate(&method, headers, route, &target, client, None).await {
            Verdict::Pass(identity, _) => {
                let mut resp = Response::new(Body::empty());
                if let Some(id) = identity {
                    identity_headers(&id, route, Audience::ForwardAuth, |name, value| {
                        resp.headers_mut().insert(name.clone(), value.clone());
                    });
                    // The caller passes it on (nginx: `auth_request_set`),
                    // for the asked URL's host.
                    if let Some(assertion) = self.identity_assertion(route, &id, target.host()) {
                        resp.headers_mut().insert(crate::auth::identity_jwt::HEADER_NAME.clone(), assertion);
                    }
                }
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            // The renewed session's cookie rides on the answer; an ingress
            // passes it on only when told to (nginx: `auth_request_set` and
            // `add_header Set-Cookie`).
            Verdict::Renewed(id, cookies) => {
                let mut resp = Response::new(Body::empty());
                identity_headers(&id, route, Audience::ForwardAuth, |name, value| {
                    resp.headers_mut().insert(name.clone(), value.clone());
                });
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                for c in cookies {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                resp
            }
            Verdict::Forbidden => forbidden(false),
            Verdict::SignIn => match &route.login {
                Some(p) if redirect_mode && is_navigation(&method, headers) => {
                    self.start_login(p, headers, &target.return_path()).await
                }
                _ => sign_in_json(),
            },
            Verdict::Ended(clear) => {
                let mut resp = match &route.login {
                    Some(p) if redirect_mode && is_navigation(&method, headers) => {
                        self.start_login(p, headers, &target.return_path()).await
                    }
                    _ => sign_in_json(),
                };
                for c in clear {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                resp
            }
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
        match self.session(headers, None) {
            Some(_) => forbidden(false),
            None => sign_in_json(),
        }
    }
}

/// `401 {"error": "unauthorized"}`: sign-in is required (JSON whatever the
/// Accept header: forward-auth callers turn it into a login themselves).
fn sign_in_json() -> Response<Body> {
    error::Reject::new(error::Class::Unauthorized, "unauthorized", "Sign-in is required.").json()
}

/// `?name=true` (or `1`) in a query.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == name && (v == "true" || v == "1")))
}
