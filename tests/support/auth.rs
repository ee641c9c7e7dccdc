//! The `jwt` login provider (the customer's own login page signs a token,
//! porteiro's `/sso/callback` takes it): a config builder ([`Conf`]), login
//! helpers on [`Gateway`], the manual cookie jar ([`Jar`]) and token minting.
//! Used by `tests/login_*.rs`, `tests/forward_auth*.rs` and others with
//! `use support::auth::*`, which also brings the common helpers they use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different part of the helpers")]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use porteiro::config::Config;
use serde_json::{Value, json};

#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::browser::Jar;
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::jwks::JwksServer;
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::keys::SigningKey;
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::{Echo, FakeUpstream, Gateway, RunningUpstream, client, now, parse_config, q, raw_status, raw_text};

/// `session.secret` of the test gateways (>= 32 bytes).
pub const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";
/// HS256 secret shared with the "customer's login page".
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijk";
/// `iss` the `intranet` provider accepts.
pub const ISSUER: &str = "intranet.test";
/// The provider's "authentication address".
pub const LOGIN_URL: &str = "https://login.intranet.test/sso/helpdesk";
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::SESSION_COOKIE as COOKIE;

/// A random id, for `jti` and `kid` values.
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>())
}

// === Config ===

/// One TOML table as ordered `key = value` lines; values are TOML text.
#[derive(Clone, Debug, Default)]
pub struct Table(Vec<(String, String)>);

impl Table {
    fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn unset(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    fn write(&self, header: &str, out: &mut String) {
        out.push_str(header);
        out.push('\n');
        for (k, v) in &self.0 {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push('\n');
    }
}

/// A gateway config: one `jwt` provider `intranet` (HS256 with
/// [`JWT_SECRET`]) and one protected route `/` to `upstream` that also maps
/// the `name` claim to `X-Name`. Keys are replaced with the setters; values
/// are TOML text (use [`q`] for strings).
#[derive(Clone, Debug)]
pub struct Conf {
    server: Table,
    session: Table,
    provider: Table,
    route: Table,
    extra: String,
    /// Directories of files the config names, kept as long as it is.
    files: Vec<std::sync::Arc<tempfile::TempDir>>,
}

impl Conf {
    pub fn new(upstream: &str) -> Conf {
        let mut server = Table::default();
        server.set("listen", q("127.0.0.1:0"));
        server.set("admin_listen", q("127.0.0.1:0"));
        let mut session = Table::default();
        session.set("secret", q(SESSION_SECRET));
        let mut provider = Table::default();
        provider.set("id", q("intranet"));
        provider.set("kind", q("jwt"));
        provider.set("login_url", q(LOGIN_URL));
        provider.set("issuer", q(ISSUER));
        provider.set("secret", q(JWT_SECRET));
        let mut route = Table::default();
        route.set("path_prefix", q("/"));
        route.set("upstream", q(&format!("http://{upstream}")));
        route.set("login", q("intranet"));
        route.set("headers", r#"{ "X-Name" = "name" }"#);
        Conf { server, session, provider, route, extra: String::new(), files: Vec::new() }
    }

    pub fn server(mut self, key: &str, value: impl Into<String>) -> Conf {
        self.server.set(key, value);
        self
    }

    pub fn session(mut self, key: &str, value: impl Into<String>) -> Conf {
        self.session.set(key, value);
        self
    }

    pub fn provider(mut self, key: &str, value: impl Into<String>) -> Conf {
        self.provider.set(key, value);
        self
    }

    pub fn without_provider(mut self, key: &str) -> Conf {
        self.provider.unset(key);
        self
    }

    /// Sets a key of the main `/` route.
    pub fn route(mut self, key: &str, value: impl Into<String>) -> Conf {
        self.route.set(key, value);
        self
    }

    /// Appends raw TOML (more `[[routes]]`, more `[[providers]]`).
    pub fn raw(mut self, toml: &str) -> Conf {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// [`Conf::new`] with public parts: `public_paths = ["/assets/"]` on the
    /// main route, and a public `/status/` route to the same upstream.
    pub fn with_public_parts(upstream: &str) -> Conf {
        Conf::new(upstream).route("public_paths", r#"["/assets/"]"#).public_route("/status/", upstream)
    }

    /// Another public `[[routes]]` entry: `prefix` to `upstream` (an
    /// authority), no session needed.
    pub fn public_route(self, prefix: &str, upstream: &str) -> Conf {
        self.raw(&format!("[[routes]]\npath_prefix = {}\nupstream = \"http://{upstream}\"\npublic = true\n", q(prefix)))
    }

    /// Tokens verified with `key`'s public half, from a PEM file (drops
    /// `secret`).
    pub fn public_key_file(mut self, key: &SigningKey) -> Conf {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login.pub.pem");
        std::fs::write(&path, key.public_pem()).unwrap();
        self.files.push(std::sync::Arc::new(dir));
        self.without_provider("secret").provider("public_key_file", q(path.to_str().unwrap()))
    }

    /// Keys signed by a JWKS at `url` (drops `secret`).
    pub fn jwks(self, url: &str, algorithms: &str) -> Conf {
        self.without_provider("secret").provider("jwks_url", q(url)).provider("algorithms", algorithms)
    }

    pub fn toml(&self) -> String {
        let mut out = String::new();
        self.server.write("[server]", &mut out);
        self.session.write("[session]", &mut out);
        self.provider.write("[[providers]]", &mut out);
        self.route.write("[[routes]]", &mut out);
        out.push_str(&self.extra);
        out
    }

    pub fn config(&self) -> Config {
        parse_config(&self.toml())
    }

    /// Starts porteiro and waits until it is ready (key sets fetched).
    pub async fn start(&self) -> Gateway {
        Gateway::start_ready(self.config()).await
    }
}

// === Signing in through the `jwt` provider ===

impl Gateway {
    /// A plain GET (an API client: no `Accept: text/html`).
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// A browser navigation (`Accept: text/html`).
    pub fn navigate(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
    }

    /// `GET /sso/callback?jwt=<token>&redirectUrl=<redirect>` as a browser.
    pub async fn callback(&self, token: &str, redirect: &str) -> reqwest::Response {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("jwt", token)
            .append_pair("redirectUrl", redirect)
            .finish();
        self.navigate(&format!("/sso/callback?{query}")).send().await.unwrap()
    }

    /// Signs in with `token`, asserting the callback's answer, and returns
    /// the `Cookie` header value that carries the session.
    pub async fn login(&self, token: &str) -> String {
        let resp = self.callback(token, "/").await;
        assert_eq!(resp.status(), StatusCode::FOUND, "login refused: {}", resp.text().await.unwrap_or_default());
        assert_eq!(location(&resp), "/");
        let jar = Jar::default();
        jar.absorb(&resp);
        assert!(jar.get(COOKIE).is_some() || jar.get("__Host-porteiro_session").is_some(), "no session cookie");
        jar.header()
    }

    /// The JSON a protected request carrying `cookie` got from the echo upstream.
    pub async fn echo(&self, path: &str, cookie: &str) -> Echo {
        let resp = self.get(path).header("cookie", cookie).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path} with a session");
        Echo::from(resp).await
    }

    /// `POST /admin/revoke` with `token` and a JSON body.
    pub async fn revoke(&self, token: &str, body: Value) -> reqwest::Response {
        let admin = self.admin.as_ref().expect("admin listener");
        self.client.post(format!("{admin}/admin/revoke")).bearer_auth(token).json(&body).send().await.unwrap()
    }
}

// === Responses and cookies ===

/// The `Location` header (panics when there is none).
pub fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").expect("a Location header").to_str().unwrap().to_string()
}

/// The query parameters of a URL (absolute or a path).
pub fn query_of(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// One parsed `Set-Cookie`.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attributes as written (`HttpOnly`, `Max-Age=900`, ...).
    pub attrs: Vec<String>,
}

impl SetCookie {
    /// Is the attribute present (case-insensitive, `Name` or `Name=value`)?
    pub fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

pub fn set_cookies(resp: &reqwest::Response) -> Vec<SetCookie> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let s = v.to_str().unwrap();
            let mut parts = s.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            SetCookie { name: name.to_string(), value: value.to_string(), attrs: parts.map(str::to_string).collect() }
        })
        .collect()
}

/// Asserts a porteiro JSON error answer and returns its `error` word.
pub async fn json_error(resp: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct.as_deref(), Some("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().expect("an error word").to_string()
}

// === Tokens and keys ===

/// Good login claims (TomTicket's), fresh for now: `iss`, `name`, `email`,
/// `groups`, `iat`, `exp` in a minute and a unique `jti`.
pub fn claims() -> Value {
    claims_at(now())
}

/// [`claims`] issued at `now` (a gateway's `clock.now()` once the test has
/// moved it).
pub fn claims_at(now: u64) -> Value {
    json!({
        "iss": ISSUER,
        "name": "Ana Souza",
        "email": "ana@example.com",
        "groups": ["support", "agents"],
        "iat": now,
        "exp": now + 60,
        "jti": random_id(),
    })
}

/// `claims()` with `changes` merged in (`null` removes a claim).
pub fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

pub fn sign_hs(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token as the customer's login page signs it with [`JWT_SECRET`].
pub fn hs_token(claims: &Value) -> String {
    sign_hs(JWT_SECRET.as_bytes(), claims)
}

/// A token with arbitrary header and payload bytes, HS256-signed with
/// [`JWT_SECRET`] (for payloads that are not JSON, headers with extra members).
pub fn hs_token_raw(header: &[u8], payload: &[u8]) -> String {
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{sig}")
}

/// A hand-assembled token: `header.payload.signature`, each part given raw.
pub fn assemble(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}
