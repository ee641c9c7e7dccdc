//! Shared helpers for the session and `jwt` login tests (`tests/login_*.rs`,
//! `tests/forward_auth*.rs`): a config builder, a started porteiro with a
//! client that never follows redirects, a manual cookie jar, test signing
//! keys, a JWKS server fake and an upstream fake that echoes what it got.
//!
//! Everything listens on `127.0.0.1:0`, so test binaries and the tests in
//! them run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different part of the helpers")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use porteiro::Running;
use porteiro::config::Config;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// `session.secret` of the test gateways (>= 32 bytes).
pub const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";
/// HS256 secret shared with the "customer's login page".
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdefghijk";
/// `iss` the `intranet` provider accepts.
pub const ISSUER: &str = "intranet.test";
/// The provider's "authentication address".
pub const LOGIN_URL: &str = "https://login.intranet.test/sso/helpdesk";
/// Default plain cookie name (no `__Host-` prefix over plain http).
pub const COOKIE: &str = "porteiro_session";

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A random id, for `jti` and `kid` values.
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>())
}

/// A TOML string literal.
pub fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
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
        Conf { server, session, provider, route, extra: String::new() }
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
        let text = self.toml();
        Config::from_toml(&text, "test").unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"))
    }

    pub async fn start(&self) -> Gw {
        Gw::start(self.config()).await
    }
}

// === A started gateway ===

/// A client that never follows redirects and keeps no cookies: every hop and
/// every cookie is the test's to assert and carry.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A running porteiro.
pub struct Gw {
    pub running: Running,
    pub base: String,
    pub admin: Option<String>,
    pub client: reqwest::Client,
}

impl Gw {
    /// Starts `config` and waits until `/readyz` says ready (key sets fetched).
    pub async fn start(config: Config) -> Gw {
        let running = porteiro::start(config).await.expect("porteiro starts");
        let gw = Gw {
            base: format!("http://{}", running.addr),
            admin: running.admin_addr.map(|a| format!("http://{a}")),
            running,
            client: client(),
        };
        gw.wait_ready().await;
        gw
    }

    pub async fn wait_ready(&self) {
        let Some(admin) = &self.admin else { return };
        for _ in 0..200 {
            if let Ok(r) = self.client.get(format!("{admin}/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("porteiro never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A plain GET (an API client: no `Accept: text/html`).
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// A browser navigation.
    pub fn browser(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
    }

    /// `GET /sso/callback?jwt=<token>&redirectUrl=<redirect>` as a browser.
    pub async fn callback(&self, token: &str, redirect: &str) -> reqwest::Response {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("jwt", token)
            .append_pair("redirectUrl", redirect)
            .finish();
        self.browser(&format!("/sso/callback?{query}")).send().await.unwrap()
    }

    /// Signs in with `token`, asserting the callback's answer, and returns
    /// the `Cookie` header value that carries the session.
    pub async fn login(&self, token: &str) -> String {
        let resp = self.callback(token, "/").await;
        assert_eq!(resp.status(), StatusCode::FOUND, "login refused: {}", resp.text().await.unwrap_or_default());
        assert_eq!(location(&resp), "/");
        let mut jar = Jar::default();
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

/// Sends `request` (a whole HTTP/1.1 request, written by hand: header names
/// in any case, URLs past what `reqwest` builds) to `addr` and returns the
/// answer as text, read until the server closes or 5 s pass. Write errors
/// are ignored: the server may stop reading early.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
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

/// A browser's cookie jar, kept by hand: `Set-Cookie` in, `Cookie` out.
#[derive(Debug, Clone, Default)]
pub struct Jar(BTreeMap<String, String>);

impl Jar {
    pub fn absorb(&mut self, resp: &reqwest::Response) {
        for c in set_cookies(resp) {
            let expired = c.attr("Max-Age").is_some_and(|m| m.parse::<i64>().unwrap_or(0) <= 0);
            if expired || c.value.is_empty() {
                self.0.remove(&c.name);
            } else {
                self.0.insert(c.name, c.value);
            }
        }
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_string(), value.to_string());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn header(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }
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
    let now = now();
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

/// An asymmetric signing key with its public half as a JWK and as PEM.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

/// RSA generation is the slowest step; one 2048-bit key per binary is
/// generated lazily and reused under any kid.
fn rsa_private() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
}

impl SigningKey {
    /// A fresh RSA key (RS256).
    pub fn rsa_new(kid: &str) -> SigningKey {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        SigningKey::from_rsa(kid, &private)
    }

    /// The binary's shared RSA key (RS256) under `kid`.
    pub fn rsa(kid: &str) -> SigningKey {
        SigningKey::from_rsa(kid, rsa_private())
    }

    fn from_rsa(kid: &str, private: &rsa::RsaPrivateKey) -> SigningKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let public = private.to_public_key();
        let der = private.to_pkcs1_der().unwrap();
        SigningKey {
            alg: Algorithm::RS256,
            kid: kid.to_string(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
            public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
        }
    }

    /// A fresh ECDSA P-256 key (ES256).
    pub fn ec(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed P-256 point");
        SigningKey {
            alg: Algorithm::ES256,
            kid: kid.to_string(),
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
            }),
            public_pem: pair.public_key_pem(),
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        SigningKey {
            alg: Algorithm::EdDSA,
            kid: kid.to_string(),
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }),
            public_pem: pair.public_key_pem(),
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs with this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// The base64url signature of `message` (for hand-assembled tokens).
    pub fn sign_message(&self, message: &[u8]) -> String {
        jsonwebtoken::crypto::sign(message, &self.encoding, self.alg).unwrap()
    }

    /// Signs with this key but names another `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

// === Fakes ===

/// Serves `handler` on `127.0.0.1:0` (HTTP/1.1) until the runtime ends.
/// `accept` decides per connection whether to serve it or drop it at once.
async fn serve<F, A>(handler: F, accept: A) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Result<Response<Full<Bytes>>, String> + Clone + Send + Sync + 'static,
    A: Fn() -> bool + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            if !accept() {
                drop(stream);
                continue;
            }
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { handler(req) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JwksMode {
    Up,
    /// Answers `500`.
    Failing,
    /// Closes every connection without an answer.
    Closed,
}

struct JwksState {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
    mode: Mutex<JwksMode>,
    max_age: Mutex<Option<u64>>,
}

/// A JWKS endpoint whose key set can change at runtime, that counts fetches
/// and can be taken down.
#[derive(Clone)]
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<JwksState>,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> JwksServer {
        let state = Arc::new(JwksState {
            keys: Mutex::new(keys.iter().map(|k| k.jwk()).collect()),
            fetches: AtomicUsize::new(0),
            mode: Mutex::new(JwksMode::Up),
            max_age: Mutex::new(None),
        });
        let s = state.clone();
        let handler = move |req: Request<Incoming>| {
            let mode = *s.mode.lock().unwrap();
            if mode == JwksMode::Closed {
                return Err("closed".to_string());
            }
            s.fetches.fetch_add(1, Ordering::SeqCst);
            let mut resp = if mode == JwksMode::Failing {
                Response::new(Full::new(Bytes::from_static(b"{\"error\":\"down\"}")))
            } else if req.uri().path() != "/jwks.json" {
                let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            } else {
                let body = json!({ "keys": *s.keys.lock().unwrap() }).to_string();
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                if let Some(age) = *s.max_age.lock().unwrap() {
                    r.headers_mut().insert("cache-control", format!("max-age={age}").parse().unwrap());
                }
                r
            };
            if mode == JwksMode::Failing {
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Ok(resp)
        };
        let s = state.clone();
        let addr = serve(handler, move || *s.mode.lock().unwrap() != JwksMode::Closed).await;
        JwksServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// How many requests reached the endpoint (closed connections excluded).
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    pub fn add_key(&self, key: &SigningKey) -> &Self {
        self.state.keys.lock().unwrap().push(key.jwk());
        self
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) -> &Self {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
        self
    }

    /// Sends `Cache-Control: max-age=<seconds>` with the key set.
    pub fn max_age(&self, seconds: u64) -> &Self {
        *self.state.max_age.lock().unwrap() = Some(seconds);
        self
    }

    /// From now on every fetch gets `500`.
    pub fn fail(&self) -> &Self {
        *self.state.mode.lock().unwrap() = JwksMode::Failing;
        self
    }

    /// From now on connections are closed without an answer.
    pub fn take_down(&self) -> &Self {
        *self.state.mode.lock().unwrap() = JwksMode::Closed;
        self
    }

    pub fn bring_up(&self) -> &Self {
        *self.state.mode.lock().unwrap() = JwksMode::Up;
        self
    }
}

/// An upstream that answers every request with JSON describing it:
/// `{"method", "path", "query", "headers": {name: [values]}}`.
pub struct EchoUpstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let handler = move |req: Request<Incoming>| {
            h.fetch_add(1, Ordering::SeqCst);
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in req.headers() {
                headers.entry(k.as_str().to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into());
            }
            let body = json!({
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "query": req.uri().query(),
                "headers": headers,
            });
            let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
            resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
            Ok::<_, String>(resp)
        };
        let addr = serve(handler, || true).await;
        EchoUpstream { addr, hits }
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Requests that reached the upstream.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// What the echo upstream saw.
#[derive(Debug)]
pub struct Echo(pub Value);

impl Echo {
    pub async fn from(resp: reqwest::Response) -> Echo {
        let bytes = resp.bytes().await.unwrap();
        Echo(
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not echo JSON: {}", String::from_utf8_lossy(&bytes))),
        )
    }

    /// Every value of a header (lower-case name).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0["headers"][name]
            .as_array()
            .map(|vs| vs.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// The one value of a header; panics when it came more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.into_iter().next()
    }

    /// Header names the upstream saw, lower-case.
    pub fn names(&self) -> Vec<String> {
        self.0["headers"].as_object().unwrap().keys().cloned().collect()
    }

    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap()
    }

    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }
}
