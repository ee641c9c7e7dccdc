//! `/sso/api-keys` (DESIGN §2.6): a signed-in user lists, mints and revokes
//! their API keys, as JSON or on a small page. Changes need the session
//! cookie, a JSON body (a cross-site HTML form cannot send one) and, when
//! the browser says where the request comes from, this site as its origin.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::Gateway;
use crate::auth::Identity;
use crate::auth::api_keys::{MAX_NAME_CHARS, MintError};
use crate::auth::records::KeyRecord;
use crate::error::{self, Class, Reject, escape_html};
use crate::proxy::Body;

/// Largest body of `POST /sso/api-keys`.
pub const MAX_JSON_BYTES: usize = 4096;

/// The page's only script: create (the key shown once, with a copy
/// button) and revoke, by `fetch` with JSON. Allowed by its hash in the
/// page's Content-Security-Policy, nothing else runs.
const SCRIPT: &str = r#"
const base = document.getElementById('keys').dataset.base;
const problem = document.getElementById('problem');
async function call(method, url, body) {
  const r = await fetch(url, { method, credentials: 'same-origin',
    headers: { 'Accept': 'application/json', 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : {} };
}
document.getElementById('create').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = document.getElementById('name').value;
  const r = await call('POST', base, { name });
  if (r.status !== 201) { problem.textContent = r.json.error_description || 'Could not create the key.'; return; }
  problem.textContent = '';
  document.getElementById('key').value = r.json.key;
  document.getElementById('minted').hidden = false;
});
document.getElementById('copy').addEventListener('click', async () => {
  const key = document.getElementById('key');
  key.select();
  try { await navigator.clipboard.writeText(key.value); } catch (_) { document.execCommand('copy'); }
  document.getElementById('copy').textContent = 'Copied';
});
for (const b of document.querySelectorAll('button[data-id]')) {
  b.addEventListener('click', async () => {
    const r = await call('DELETE', base + '/' + encodeURIComponent(b.dataset.id));
    if (r.status === 204) { location.reload(); } else { problem.textContent = r.json.error_description || 'Could not revoke the key.'; }
  });
}
"#;

/// The page's Content-Security-Policy: its own script (by hash) and
/// requests to this site only.
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

fn refuse(class: Class, reason: &'static str, text: &'static str) -> Response<Body> {
    Reject::new(class, reason, text).json()
}

/// A request that changes keys must come from this site: an `Origin` (or
/// `Sec-Fetch-Site`) naming another is refused. `own` is the public URL.
fn same_origin(headers: &HeaderMap, own: &str) -> bool {
    if headers.get("sec-fetch-site").is_some_and(|v| v != "same-origin" && v != "none") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if origin.eq_ignore_ascii_case(own) {
        return true;
    }
    // The site as the browser reached it: its Origin names the Host it sent.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if !o.is_empty() && o.eq_ignore_ascii_case(h))
}

/// A JSON body (`application/json`, with or without parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")))
}

fn key_json(k: &KeyRecord) -> serde_json::Value {
    json!({
        "id": k.id,
        "name": k.name,
        "provider": k.owner.provider,
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
    })
}

fn date(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

impl Gateway {
    /// The session of a user who may have API keys, or the answer to give.
    fn key_owner(&self, headers: &HeaderMap) -> Result<std::sync::Arc<Identity>, Reject> {
        let Some(identity) = self.session(headers, None) else {
            return Err(Reject::new(Class::Unauthorized, "unauthorized", "Sign in to manage API keys."));
        };
        if !self.api_key_providers.contains(&identity.provider) {
            let text = "API keys are not enabled for your sign-in.";
            return Err(Reject::new(Class::Forbidden, "api_keys_disabled", text));
        }
        Ok(identity)
    }

    /// `GET /sso/api-keys` (the list; a page for a browser) and
    /// `POST /sso/api-keys` (mint).
    pub(super) async fn api_keys(&self, req: Request<Incoming>, max_body: usize) -> Response<Body> {
        let headers = req.headers();
        if req.method() != Method::POST && error::wants_html(headers) && self.session(headers, None).is_none() {
            // A browser without a session signs in first, then comes back:
            // straight away with one provider, else the user picks one.
            let here = format!("{}/api-keys", self.auth_prefix);
            let logins: Vec<_> = self.api_key_providers.iter().filter_map(|id| self.provider(id)).collect();
            if let [only] = logins[..] {
                return self.start_login(only, headers, &here).await;
            }
            let links: String = logins
                .iter()
                .map(|p| {
                    let query = form_urlencoded::Serializer::new(String::new())
                        .append_pair("provider", p.id())
                        .append_pair("redirectUrl", &here)
                        .finish();
                    format!(
                        "<li><a href=\"{}\">{}</a></li>",
                        escape_html(&format!("{}/start?{query}", self.auth_prefix)),
                        escape_html(p.id())
                    )
                })
                .collect();
            let body = format!("<p>Sign in to manage your API keys:</p><ul>{links}</ul>");
            return error::page(StatusCode::UNAUTHORIZED, "API keys", "API keys", &body);
        }
        let owner = match self.key_owner(headers) {
            Ok(owner) => owner,
            Err(refusal) => return refusal.json(),
        };
        if req.method() == Method::POST {
            return self.mint_api_key(req, &owner, max_body).await;
        }
        let keys = match self.shared.api_keys.list(&owner).await {
            Ok(keys) => keys,
            Err(e) => {
                warn!(error = %e, "cannot list API keys");
                return refuse(Class::Unavailable, "store_unavailable", "API keys are unavailable; try again.");
            }
        };
        if error::wants_html(req.headers()) {
            return self.api_keys_page(&owner, &keys);
        }
        error::json(StatusCode::OK, &json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }))
    }

    async fn mint_api_key(&self, req: Request<Incoming>, owner: &Identity, max_body: usize) -> Response<Body> {
        let headers = req.headers();
        if !same_origin(headers, &self.public_url) {
            warn!(user = %owner.sub, "API key mint from another origin refused");
            self.shared.metrics.api_key_refused("cross_origin");
            return refuse(Class::Forbidden, "cross_origin", "Requests from another site cannot create API keys.");
        }
        if !is_json(headers) {
            self.shared.metrics.api_key_refused("not_json");
            return refuse(Class::UnsupportedMediaType, "json_required", "Send a JSON body: {\"name\": \"...\"}.");
        }
        let body: Bytes = match Limited::new(req.into_body(), max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return refuse(Class::TooLarge, "too_large", "The body is too large."),
        };
        let name = match crate::auth::json::object(&body) {
            Ok(map) if map.len() == 1 => map.get("name").and_then(|n| n.as_str()).map(|n| n.trim().to_string()),
            _ => None,
        };
        let Some(name) =
            name.filter(|n| !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS && !n.chars().any(char::is_control))
        else {
            return refuse(Class::BadRequest, "invalid_request", "Send {\"name\": \"...\"}: 1 to 100 characters.");
        };
        match self.shared.api_keys.mint(owner, &name, self.api_keys_per_user).await {
            Ok(minted) => {
                self.shared.metrics.api_key("minted");
                error::json(
                    StatusCode::CREATED,
                    &json!({
                        "id": minted.id,
                        "key": minted.key,
                        "name": minted.name,
                        "created_at": minted.created_at,
                    }),
                )
            }
            Err(MintError::OverLimit(limit)) => {
                self.shared.metrics.api_key_refused("over_limit");
                Reject::new(
                    Class::Conflict,
                    "too_many_keys",
                    format!("You have {limit} API keys, the most allowed: revoke one first."),
                )
                .json()
            }
            Err(MintError::Store(e)) => {
                warn!(error = %e, "cannot mint an API key");
                refuse(Class::Unavailable, "store_unavailable", "API keys are unavailable; try again.")
            }
        }
    }

    /// `DELETE /sso/api-keys/{id}`: revokes one of the caller's keys.
    pub(super) async fn revoke_api_key(&self, req: Request<Incoming>, id: &str) -> Response<Body> {
        let headers = req.headers();
        let owner = match self.key_owner(headers) {
            Ok(owner) => owner,
            Err(refusal) => return refusal.json(),
        };
        if !same_origin(headers, &self.public_url) {
            self.shared.metrics.api_key_refused("cross_origin");
            return refuse(Class::Forbidden, "cross_origin", "Requests from another site cannot revoke API keys.");
        }
        match self.shared.api_keys.revoke(id, Some(&owner)).await {
            Ok(Some(_)) => {
                self.shared.metrics.api_key("revoked");
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                error::harden(resp.headers_mut());
                resp
            }
            Ok(None) => refuse(Class::NotFound, "not_found", "You have no API key with this id."),
            Err(e) => {
                warn!(error = %e, "cannot revoke an API key");
                refuse(Class::Unavailable, "store_unavailable", "API keys are unavailable; try again.")
            }
        }
    }

    fn api_keys_page(&self, owner: &Identity, keys: &[KeyRecord]) -> Response<Body> {
        let rows: String = keys
            .iter()
            .map(|k| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><button type=\"button\" data-id=\"{}\">Revoke</button></td></tr>",
                    escape_html(&k.name),
                    date(k.created_at),
                    k.last_used_at.map(date).unwrap_or_else(|| "never".into()),
                    escape_html(&k.id),
                )
            })
            .collect();
        let list = if keys.is_empty() {
            "<p>You have no API keys.</p>".to_string()
        } else {
            format!("<table><tr><th>Name</th><th>Created</th><th>Last used</th><th></th></tr>{rows}</table>")
        };
        let who = owner.email.as_deref().unwrap_or(&owner.sub);
        let body = format!(
            "<p>Signed in as {who}. A key works like you on this application's API \
             (<code>Authorization: Bearer pk_...</code>) until you revoke it.</p>\
             <div id=\"keys\" data-base=\"{base}\">{list}</div>\
             <p class=\"problem\" id=\"problem\"></p>\
             <form id=\"create\"><label for=\"name\">New key's name</label>\
             <input id=\"name\" name=\"name\" maxlength=\"{MAX_NAME_CHARS}\" required placeholder=\"clock-in mobile\">\
             <button type=\"submit\">Create key</button></form>\
             <div id=\"minted\" hidden><p class=\"warn\">Copy the key now: it is shown only once.</p>\
             <input id=\"key\" readonly><button type=\"button\" id=\"copy\">Copy</button> \
             <a href=\"{base}\">Done</a></div>\
             <script>{SCRIPT}</script>",
            who = escape_html(who),
            base = escape_html(&format!("{}/api-keys", self.auth_prefix)),
        );
        let mut resp: Response<Body> = error::page(StatusCode::OK, "API keys", "API keys", &body);
        resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone());
        info!(user = %owner.sub, keys = keys.len(), "API keys page");
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_rules() {
        let own = "https://kb.example.com";
        assert!(same_origin(&headers(&[]), own), "no Origin: a non-browser client");
        assert!(same_origin(&headers(&[("origin", "https://kb.example.com")]), own));
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]), own));
        assert!(!same_origin(&headers(&[("origin", "https://evil.test"), ("host", "kb.example.com")]), own));
        assert!(!same_origin(&headers(&[("origin", "null")]), own));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), own));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site"), ("origin", "https://a.example.com")]), own));
        assert!(is_json(&headers(&[("content-type", "application/json; charset=utf-8")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[("content-type", "application/x-www-form-urlencoded")])));
    }
}
