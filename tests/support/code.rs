//! Helpers for the single-use code and bearer token tests (`tests/code_*.rs`,
//! `tests/bearer_*.rs`):
//!
//! - config snippets: a session, a `code` provider with its clients;
//! - the back channel: [`mint`] (`POST /sso/code` with HTTP Basic), the
//!   browser's [`redeem`] (`GET /sso/authorize`), the session cookie it sets;
//! - key sets are served by [`super::jwks::JwksServer`], tokens signed with
//!   [`super::keys`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{StatusCode, header};
use serde_json::Value;

use super::client;

/// The session secret of every test config (32 bytes).
pub const SESSION_SECRET: &str = "code-tests-session-secret-32-byt";

/// The back-channel client of the `kb` code provider.
pub const CLIENT: (&str, &str) = ("app1", "app1-secret-0123456789");
/// A second client of the same provider.
pub const CLIENT2: (&str, &str) = ("app2", "app2-secret-0123456789");

/// Where the `kb` provider sends browsers that need a code.
pub const LOGIN_URL: &str = "https://app.test/login";

#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::SESSION_COOKIE as COOKIE;

/// `[session]` with [`SESSION_SECRET`] and `validity_minutes`.
pub fn session(validity_minutes: u64) -> String {
    format!("[session]\nsecret = \"{SESSION_SECRET}\"\nvalidity_minutes = {validity_minutes}\n")
}

/// A `kind = "code"` provider `id` with [`CLIENT`] and [`CLIENT2`], and
/// `code_ttl_seconds` when given.
pub fn code_provider(id: &str, ttl: Option<u64>) -> String {
    let ttl = ttl.map(|t| format!("code_ttl_seconds = {t}\n")).unwrap_or_default();
    format!(
        r#"
[[providers]]
id = "{id}"
kind = "code"
login_url = "{LOGIN_URL}"
{ttl}clients = [
  {{ client_id = "{}", client_secret = "{}" }},
  {{ client_id = "{}", client_secret = "{}" }},
]
"#,
        CLIENT.0, CLIENT.1, CLIENT2.0, CLIENT2.1
    )
}

/// A protected route under `prefix` to `upstream`, signing in with `login`
/// and/or accepting tokens of `bearer` providers.
pub fn route(id: &str, prefix: &str, upstream: &str, login: Option<&str>, bearer: &[&str]) -> String {
    let login = login.map(|l| format!("login = \"{l}\"\n")).unwrap_or_default();
    let bearer = if bearer.is_empty() {
        String::new()
    } else {
        format!("bearer = [{}]\n", bearer.iter().map(|b| format!("\"{b}\"")).collect::<Vec<_>>().join(", "))
    };
    format!("\n[[routes]]\nid = \"{id}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{login}{bearer}")
}

/// `Basic base64(id:secret)`.
pub fn basic((id, secret): (&str, &str)) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// An answer of porteiro's own, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer { status, headers, text }
    }

    /// The body as JSON; fails loudly when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `error_description` of a JSON error answer.
    pub fn description(&self) -> String {
        self.json()["error_description"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_description: {}", self.text))
            .into()
    }
}

/// `POST {base}/sso/code` with `authorization` (none when `None`) and a raw body.
pub async fn mint_raw(base: &str, authorization: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
    let mut req = client().post(format!("{base}/sso/code")).header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    Answer::read(req.body(body).send().await.unwrap()).await
}

/// `POST {base}/sso/code` as `client` with a JSON body.
pub async fn mint(base: &str, client: (&str, &str), body: &Value) -> Answer {
    mint_raw(base, Some(&basic(client)), body.to_string()).await
}

/// Mints a code as [`CLIENT`]; fails unless porteiro answers 200 with one.
pub async fn mint_code(base: &str, body: &Value) -> String {
    let a = mint(base, CLIENT, body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()["code"].as_str().unwrap().to_string()
}

/// The browser's `GET {base}/sso/authorize?code=..&redirectUrl=..`.
pub async fn redeem(http: &reqwest::Client, base: &str, code: &str, redirect_url: &str) -> reqwest::Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", code)
        .append_pair("redirectUrl", redirect_url)
        .finish();
    http.get(format!("{base}/sso/authorize?{query}"))
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap()
}

/// The `Set-Cookie` values of porteiro's session cookie.
pub fn session_set_cookies(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|c| c.starts_with(&format!("{COOKIE}=")))
        .collect()
}

/// `name=value` of the (single) session cookie set by an answer.
pub fn session_cookie(headers: &http::HeaderMap) -> Option<String> {
    let set = session_set_cookies(headers);
    assert!(set.len() <= 1, "one session cookie expected: {set:?}");
    set.first().map(|c| c.split(';').next().unwrap().to_string())
}

/// The `Max-Age` of the session cookie set by an answer.
pub fn session_max_age(headers: &http::HeaderMap) -> Option<u64> {
    let set = session_set_cookies(headers);
    set.first()?.split(';').find_map(|a| a.trim().strip_prefix("Max-Age=")).map(|v| v.parse().unwrap())
}
