//! Helpers for the OpenID Connect end-to-end tests (`tests/oidc_*.rs`).
//!
//! - [`start_porteiro`]: porteiro in-process with `public_url` =
//!   [`PUBLIC_URL`]. The test browser resolves that name to porteiro's real
//!   (port 0) address, so `redirect_uri` is known before anything starts and
//!   no port is ever guessed.
//! - [`Browser`]: a client with a cookie jar that follows nothing by itself:
//!   every hop is a call, every `Set-Cookie` is kept per host and path as a
//!   browser would (cookies ignore ports; `Path` is honoured).
//! - [`RealOp`]: panva's `oidc-provider` (npm, installed by `.ci/run` into
//!   `tests/oidc-op/node_modules`) as a child process, and
//!   [`RealOp::sign_in`] to drive its login and consent pages.
//! - [`TestIdp`]: a small OpenID provider written here for what a real one
//!   will not do on demand: bad signatures, wrong claims, odd algorithms,
//!   slow, failing or huge token answers, RFC 9207 `iss` games.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use porteiro::Running;
use porteiro::config::Config;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The host name porteiro is published under in these tests.
pub const PUBLIC_HOST: &str = "porteiro.test";
/// `server.public_url`: the test browser resolves [`PUBLIC_HOST`] to
/// porteiro's real address (see [`Browser::new`]).
pub const PUBLIC_URL: &str = "http://porteiro.test";
/// porteiro's `redirect_uri`: `{public_url}/sso/callback`.
pub const CALLBACK: &str = "http://porteiro.test/sso/callback";
pub const SESSION_SECRET: &str = "oidc-tests-session-secret-0123456789abcdef";
pub const SESSION_COOKIE: &str = "porteiro_session";
pub const STATE_COOKIE_PREFIX: &str = "porteiro_login_";

/// The six claims Niara requires (seed 002).
pub const NIARA_CLAIMS: [&str; 6] =
    ["agencyid", "agencyname", "agencybusinessname", "agencycountry", "agencydocument", "agencybackofficecode"];

/// `required_claims = [...]` with the six Niara claims.
pub fn niara_required_claims() -> String {
    let list: Vec<String> = NIARA_CLAIMS.iter().map(|c| format!("\"{c}\"")).collect();
    format!("required_claims = [{}]", list.join(", "))
}

/// A route's `headers = {...}` forwarding each Niara claim as
/// `X-Agencyid`, `X-Agencyname`...
pub fn niara_headers() -> String {
    let list: Vec<String> = NIARA_CLAIMS.iter().map(|c| format!("\"X-{c}\" = \"{c}\"")).collect();
    format!("headers = {{ {} }}", list.join(", "))
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

// === porteiro ===

/// porteiro started in-process.
pub struct Porteiro {
    pub running: Running,
}

/// Starts porteiro with `body` (providers and routes) after a `[server]`
/// published as [`PUBLIC_URL`] (both listeners on `127.0.0.1:0`) and a
/// `[session]` with a secret. Does not wait for readiness.
pub async fn start_porteiro(body: &str) -> Porteiro {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC_URL}\"\n\n\
         [session]\nsecret = \"{SESSION_SECRET}\"\n\n{body}\n"
    );
    let config = Config::from_toml(&text, "oidc-test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let running = porteiro::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    Porteiro { running }
}

/// [`start_porteiro`], then waits until `/readyz` says 200.
pub async fn start_ready(body: &str) -> Porteiro {
    let p = start_porteiro(body).await;
    p.wait_ready().await;
    p
}

impl Porteiro {
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr.expect("admin listener"))
    }

    /// A new browser (empty cookie jar) that reaches this porteiro as
    /// [`PUBLIC_URL`].
    pub fn browser(&self) -> Browser {
        Browser::new(self.addr())
    }

    /// The status of `/readyz` on the admin listener.
    pub async fn readyz(&self) -> u16 {
        plain_client().get(self.admin_url("/readyz")).send().await.unwrap().status().as_u16()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.readyz().await != 200 {
            assert!(Instant::now() < deadline, "porteiro not ready within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        plain_client().get(self.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// `porteiro_auth_failures_total{provider, reason}`, 0 when absent.
    pub async fn failures(&self, provider: &str, reason: &str) -> f64 {
        let series = format!("porteiro_auth_failures_total{{provider=\"{provider}\",reason=\"{reason}\"}}");
        crate::support::metric(&self.metrics().await, &series).unwrap_or(0.0)
    }

    /// `porteiro_logins_total{provider}`, 0 when absent.
    pub async fn logins(&self, provider: &str) -> f64 {
        let series = format!("porteiro_logins_total{{provider=\"{provider}\"}}");
        crate::support::metric(&self.metrics().await, &series).unwrap_or(0.0)
    }
}

/// A client without cookies, redirects or proxies.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().timeout(PATIENCE).build().unwrap()
}

// === the browser ===

/// One stored cookie.
#[derive(Debug, Clone)]
pub struct StoredCookie {
    /// Host only, no port: browsers share cookies across ports.
    pub host: String,
    pub name: String,
    pub value: String,
    pub path: String,
    pub secure: bool,
}

/// A browser: a cookie jar and a client that never follows redirects.
/// Navigations send `Accept: text/html`, as browsers do.
#[derive(Clone)]
pub struct Browser {
    client: reqwest::Client,
    jar: Arc<Mutex<Vec<StoredCookie>>>,
    /// Every `Set-Cookie` received, in order.
    received: Arc<Mutex<Vec<String>>>,
}

/// One answer, with the URL it answered.
#[derive(Debug)]
pub struct Page {
    pub url: url::Url,
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

const NAVIGATION_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

impl Browser {
    /// A browser for which [`PUBLIC_HOST`] is `porteiro` (any port in the
    /// URL is replaced by porteiro's real one: public URLs carry none).
    pub fn new(porteiro: SocketAddr) -> Browser {
        Browser::with_client(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .resolve(PUBLIC_HOST, porteiro)
                .timeout(PATIENCE),
        )
    }

    /// Same, with a longer patience (for answers that are slow on purpose).
    pub fn patient(porteiro: SocketAddr, timeout: Duration) -> Browser {
        Browser::with_client(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .resolve(PUBLIC_HOST, porteiro)
                .timeout(timeout),
        )
    }

    fn with_client(builder: reqwest::ClientBuilder) -> Browser {
        Browser { client: builder.build().unwrap(), jar: Arc::default(), received: Arc::default() }
    }

    /// Another browser with a copy of this one's cookies (as they are now).
    pub fn snapshot(&self) -> Browser {
        Browser {
            client: self.client.clone(),
            jar: Arc::new(Mutex::new(self.jar.lock().unwrap().clone())),
            received: Arc::default(),
        }
    }

    /// Another browser with an empty jar.
    pub fn other_browser(&self) -> Browser {
        Browser { client: self.client.clone(), jar: Arc::default(), received: Arc::default() }
    }

    /// A top-level navigation.
    pub async fn get(&self, url: &str) -> Page {
        self.send(Method::GET, url, None, Some(NAVIGATION_ACCEPT)).await
    }

    /// A navigation with extra request headers (forged ones, say).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Page {
        self.send_with(Method::GET, url, None, Some(NAVIGATION_ACCEPT), headers).await
    }

    /// A script's request (`Accept: application/json`).
    pub async fn get_json(&self, url: &str) -> Page {
        self.send(Method::GET, url, None, Some("application/json")).await
    }

    /// A form submission.
    pub async fn post_form(&self, url: &str, form: &[(String, String)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.send(Method::POST, url, Some(body), Some(NAVIGATION_ACCEPT)).await
    }

    /// Follows one redirect `page` answered with.
    pub async fn follow(&self, page: &Page) -> Page {
        assert!(
            page.status.is_redirection(),
            "expected a redirect from {}, got {}: {}",
            page.url,
            page.status,
            page.body
        );
        self.get(page.location().as_str()).await
    }

    /// Follows redirects while they stay on `host`; returns the first
    /// answer that is not such a redirect (a page, or a redirect elsewhere).
    pub async fn follow_on(&self, page: Page, host: &str) -> Page {
        let mut page = page;
        for _ in 0..10 {
            if !page.status.is_redirection() || page.location().host_str() != Some(host) {
                return page;
            }
            page = self.follow(&page).await;
        }
        panic!("more than 10 redirects on {host}");
    }

    async fn send(&self, method: Method, url: &str, form: Option<String>, accept: Option<&str>) -> Page {
        self.send_with(method, url, form, accept, &[]).await
    }

    async fn send_with(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
        accept: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Page {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
        let mut req = self.client.request(method, parsed.clone());
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(cookies) = self.cookie_header(&parsed) {
            req = req.header(header::COOKIE, cookies);
        }
        if let Some(body) = form {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        for value in headers.get_all(header::SET_COOKIE) {
            self.store(&parsed, value.to_str().unwrap());
        }
        let body = resp.text().await.unwrap_or_else(|e| panic!("{url}: body: {e}"));
        Page { url: parsed, status, headers, body }
    }

    /// RFC 6265 §5.4, as far as these tests need: host-only cookies, path
    /// match, `Secure` only over https; longer paths first.
    fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let host = url.host_str()?;
        let path = url.path();
        let mut matching: Vec<StoredCookie> = self
            .jar
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.host == host && path_matches(&c.path, path) && (!c.secure || url.scheme() == "https"))
            .cloned()
            .collect();
        if matching.is_empty() {
            return None;
        }
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        Some(matching.iter().map(|c| format!("{}={}", c.name, c.value)).collect::<Vec<_>>().join("; "))
    }

    /// The last `Set-Cookie` this browser received for `name`.
    pub fn last_set_cookie(&self, name: &str) -> Option<cookie::Cookie<'static>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|raw| cookie::Cookie::parse(raw.clone()).unwrap())
            .find(|c| c.name() == name)
    }

    fn store(&self, url: &url::Url, set_cookie: &str) {
        self.received.lock().unwrap().push(set_cookie.to_string());
        let c = cookie::Cookie::parse(set_cookie.to_string())
            .unwrap_or_else(|e| panic!("bad Set-Cookie {set_cookie:?}: {e}"));
        let host = url.host_str().unwrap().to_string();
        let path = match c.path() {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => default_path(url.path()),
        };
        let expired = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
            || c.expires_datetime().is_some_and(|t| t <= cookie::time::OffsetDateTime::now_utc());
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|s| !(s.host == host && s.name == c.name() && s.path == path));
        if !expired {
            jar.push(StoredCookie {
                host,
                name: c.name().to_string(),
                value: c.value().to_string(),
                path,
                secure: c.secure().unwrap_or(false),
            });
        }
    }

    /// Puts a cookie in the jar as if `host` had set it.
    pub fn add_cookie(&self, host: &str, name: &str, value: &str, path: &str) {
        self.jar.lock().unwrap().push(StoredCookie {
            host: host.into(),
            name: name.into(),
            value: value.into(),
            path: path.into(),
            secure: false,
        });
    }

    /// The cookies held for `host` (any path).
    pub fn cookies(&self, host: &str) -> Vec<StoredCookie> {
        self.jar.lock().unwrap().iter().filter(|c| c.host == host).cloned().collect()
    }

    /// porteiro's login-attempt cookies held now.
    pub fn state_cookies(&self) -> Vec<StoredCookie> {
        self.cookies(PUBLIC_HOST).into_iter().filter(|c| c.name.starts_with(STATE_COOKIE_PREFIX)).collect()
    }

    pub fn has_session(&self) -> bool {
        self.cookies(PUBLIC_HOST).iter().any(|c| c.name.starts_with(SESSION_COOKIE))
    }

    /// Navigates to `url` on porteiro and follows porteiro's own redirects
    /// until the browser is sent elsewhere (the identity provider): returns
    /// that redirect.
    pub async fn start_login(&self, url: &str) -> Page {
        let first = self.get(url).await;
        assert_eq!(first.status, StatusCode::FOUND, "{url} should redirect to sign in: {}", first.body);
        assert_hardened(&first);
        let page = self.follow_on(first, PUBLIC_HOST).await;
        assert_eq!(page.status, StatusCode::FOUND, "porteiro should send the browser to the IdP: {}", page.body);
        assert_ne!(page.location().host_str(), Some(PUBLIC_HOST), "still on porteiro: {}", page.location());
        assert_hardened(&page);
        page
    }
}

fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => request_path[..i].to_string(),
    }
}

impl Page {
    /// `Location`, resolved against this page's URL.
    pub fn location(&self) -> url::Url {
        let loc = self
            .headers
            .get(header::LOCATION)
            .unwrap_or_else(|| panic!("no Location from {} ({}): {}", self.url, self.status, self.body));
        self.url.join(loc.to_str().unwrap()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `Set-Cookie` of this answer for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<cookie::Cookie<'static>> {
        self.set_cookies().into_iter().find(|c| c.name() == name)
    }

    pub fn set_cookies(&self) -> Vec<cookie::Cookie<'static>> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| cookie::Cookie::parse(v.to_str().unwrap().to_string()).unwrap())
            .collect()
    }

    /// Whether this answer starts a porteiro session.
    pub fn sets_session(&self) -> bool {
        self.set_cookies().iter().any(|c| c.name().starts_with(SESSION_COOKIE) && !c.value().is_empty())
    }

    /// The decoded query parameter `name` of `Location`.
    pub fn location_param(&self, name: &str) -> Option<String> {
        self.location().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The upstream's echo (see `support::FakeUpstream`).
    pub fn echo(&self) -> crate::support::Echo {
        assert_eq!(self.status, StatusCode::OK, "{}: {}", self.url, self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }

    pub fn is_html(&self) -> bool {
        self.header("content-type").is_some_and(|t| t.starts_with("text/html"))
    }
}

/// porteiro's own login answers are never cached and leak no Referer
/// (DESIGN §8).
pub fn assert_hardened(page: &Page) {
    assert_eq!(page.header("cache-control"), Some("no-store"), "{} {}", page.url, page.status);
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"), "{} {}", page.url, page.status);
}

// === HTML, read as simply as these pages allow ===

/// Decodes the few entities HTML templates write in attribute values.
pub fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of attribute `attr` in the first tag starting with `tag_start`
/// (e.g. `<form`), decoded.
pub fn attribute(html: &str, tag_start: &str, attr: &str) -> Option<String> {
    let tag_at = html.find(tag_start)?;
    let tag = &html[tag_at..tag_at + html[tag_at..].find('>')?];
    attr_in_tag(tag, attr)
}

fn attr_in_tag(tag: &str, attr: &str) -> Option<String> {
    let needle = format!(" {attr}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(decode_entities(&tag[start..end]))
}

/// Every `<input type="hidden" name=... value=...>` of `html`.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.match_indices("<input")
        .filter_map(|(i, _)| {
            let tag = &html[i..i + html[i..].find('>')?];
            (attr_in_tag(tag, "type").as_deref() == Some("hidden"))
                .then(|| Some((attr_in_tag(tag, "name")?, attr_in_tag(tag, "value").unwrap_or_default())))?
        })
        .collect()
}

/// The `href` of the first link whose text contains `text`.
pub fn link_with_text(html: &str, text: &str) -> Option<String> {
    html.match_indices("<a ").find_map(|(i, _)| {
        let rest = &html[i..];
        let tag_end = rest.find('>')?;
        let close = rest.find("</a>")?;
        rest[tag_end + 1..close].contains(text).then(|| attr_in_tag(&rest[..tag_end], "href"))?
    })
}

// === the real OpenID provider (oidc-provider, npm) ===

/// Where the provider script and its npm install live.
pub fn op_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("oidc-op")
}

/// A client to register at a [`RealOp`].
pub fn op_client(id: &str, secret: &str, auth_method: &str) -> Value {
    json!({
        "client_id": id,
        "client_secret": secret,
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": auth_method,
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    })
}

/// panva's `oidc-provider` running as `node tests/oidc-op/op.js 0 OPTIONS`
/// (see that file for the options and accounts).
///
/// Starting one costs about a second of CPU (Node.js, the package, an RSA
/// key), so the tests of one binary share a provider per set of options:
/// all clients redirect to the same [`CALLBACK`], each test has its own
/// browser (cookie jar) and porteiro, so nothing of one test shows in
/// another. The process ends with the test binary: it exits when its
/// stdin, held here, closes.
pub struct RealOp {
    pub issuer: String,
    pub port: u16,
    _child: std::process::Child,
    _stdin: std::process::ChildStdin,
    stderr: Arc<Mutex<String>>,
}

type OpRegistry = Mutex<HashMap<String, Arc<RealOp>>>;
static REAL_OPS: std::sync::OnceLock<OpRegistry> = std::sync::OnceLock::new();

impl RealOp {
    /// The provider for `options`, started on first use.
    pub async fn start(options: Value) -> Arc<RealOp> {
        tokio::task::spawn_blocking(move || {
            let mut ops = REAL_OPS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
            ops.entry(options.to_string()).or_insert_with(|| Arc::new(RealOp::spawn(&options))).clone()
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    fn spawn(options: &Value) -> RealOp {
        use std::io::{BufRead, Read};

        let dir = op_dir();
        let version = match std::process::Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
            Ok(out) => panic!("`node --version` failed: {out:?}; install Node.js 20.18 or later (see .ci/run)"),
            Err(e) => panic!(
                "cannot run `node` ({e}): the OpenID Connect end-to-end tests need Node.js 20.18 or later \
                 and `(cd tests/oidc-op && npm ci)`; .ci/run installs both"
            ),
        };
        // oidc-provider 9 uses URL.parse (Node.js 20.18+, 22.1+).
        let parts: Vec<u32> = version.trim_start_matches('v').split('.').filter_map(|p| p.parse().ok()).collect();
        assert!(
            matches!(parts.as_slice(), [major, minor, ..] if (*major, *minor) >= (20, 18)),
            "Node.js {version} is too old for oidc-provider 9: the OpenID Connect end-to-end tests need 20.18 or later"
        );
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "{} has no node_modules/oidc-provider: run `(cd tests/oidc-op && npm ci --no-audit --no-fund)` \
             (.ci/run does)",
            dir.display()
        );
        let mut child = std::process::Command::new("node")
            .arg("op.js")
            .arg("0")
            .arg(options.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node op.js: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining stdout so the provider never blocks on it.
            for _ in lines {}
        });
        let port: u16 = match rx.recv_timeout(PATIENCE) {
            Ok(Some(Ok(line))) => line.trim().parse().unwrap_or_else(|_| panic!("op.js printed {line:?}, not a port")),
            other => {
                std::thread::sleep(Duration::from_millis(200));
                let _ = child.kill();
                panic!("op.js did not start ({other:?}):\n{}", stderr.lock().unwrap());
            }
        };
        RealOp { issuer: format!("http://127.0.0.1:{port}"), port, _child: child, _stdin: stdin, stderr }
    }

    /// What the provider wrote on stderr so far (warnings, server errors).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Drives the provider's development login and consent pages, hop by
    /// hop, from porteiro's redirect to the authorization endpoint: signs in
    /// as `login` and consents. Returns the provider's redirect to porteiro's
    /// callback.
    pub async fn sign_in(&self, browser: &Browser, to_authorize: &Page, login: &str) -> Page {
        let authorize = to_authorize.location();
        assert_eq!(authorize.origin().ascii_serialization(), self.issuer, "authorization request to {authorize}");
        let mut page = browser.get(authorize.as_str()).await;
        for _ in 0..8 {
            if page.status.is_redirection() {
                if page.location().as_str().starts_with(CALLBACK) {
                    return page;
                }
                page = browser.follow(&page).await;
                continue;
            }
            assert_eq!(page.status, StatusCode::OK, "{}: {}\n{}", page.url, page.body, self.stderr());
            let action = attribute(&page.body, "<form", "action")
                .unwrap_or_else(|| panic!("no form at {}: {}", page.url, page.body));
            let action = page.url.join(&action).unwrap();
            let mut form = hidden_inputs(&page.body);
            let prompt = form.iter().find(|(k, _)| k == "prompt").map(|(_, v)| v.clone());
            match prompt.as_deref() {
                Some("login") => {
                    form.push(("login".into(), login.into()));
                    form.push(("password".into(), "any password".into()));
                }
                Some("consent") => {}
                other => panic!("unexpected interaction {other:?} at {}: {}", page.url, page.body),
            }
            page = browser.post_form(action.as_str(), &form).await;
        }
        panic!("the provider never sent the browser back to porteiro:\n{}", self.stderr());
    }

    /// The interaction page's `[ Cancel ]` link: the user refuses.
    pub async fn cancel(&self, browser: &Browser, to_authorize: &Page) -> Page {
        let mut page = browser.get(to_authorize.location().as_str()).await;
        while page.status.is_redirection() {
            page = browser.follow(&page).await;
        }
        assert_eq!(page.status, StatusCode::OK, "{}: {}", page.url, page.body);
        let cancel = link_with_text(&page.body, "Cancel").unwrap_or_else(|| panic!("no Cancel link: {}", page.body));
        let mut page = browser.get(page.url.join(&cancel).unwrap().as_str()).await;
        while page.status.is_redirection() && !page.location().as_str().starts_with(CALLBACK) {
            page = browser.follow(&page).await;
        }
        assert!(page.status.is_redirection(), "{}: {}", page.url, page.body);
        page
    }
}

// === the test IdP (written here) ===

/// What the authorization endpoint answers.
#[derive(Debug, Clone)]
pub enum AuthorizeReply {
    /// `302 redirect_uri?code=&state=` (+ `iss`, see [`IssParam`]).
    Code,
    /// `302 redirect_uri?error=&error_description=&state=`.
    Error(&'static str, &'static str),
}

/// RFC 9207 `iss` in the authorization response.
#[derive(Debug, Clone)]
pub enum IssParam {
    /// Sent when discovery promises it.
    Auto,
    Omit,
    /// Another issuer's name (a mix-up).
    Other(String),
}

/// What the token endpoint answers.
#[derive(Debug, Clone)]
pub enum TokenReply {
    /// A good ID token (after checking the request like a real provider).
    Good,
    /// Claims merged into the good ID token (`null` removes a claim).
    Patch(Value),
    /// Signed with a key the JWKS does not hold, under the JWKS key's `kid`.
    OtherKey,
    /// ES384 with a key the JWKS does hold (porteiro allows only ES256).
    Es384,
    /// HS256, keyed with the public key set's text.
    Hs256,
    /// `alg: none`, no signature.
    AlgNone,
    /// The status with an OAuth error body.
    Status(u16),
    /// Waits this long, then answers well.
    Sleep(Duration),
    /// A JSON answer of about this many bytes, with or without Content-Length.
    Huge { bytes: usize, content_length: bool },
    /// A token answer without `id_token`.
    NoIdToken,
    /// The good ID token, correctly signed, with this member written a
    /// second time with this value (JSON no serializer writes).
    Twice(&'static str, Value),
}

/// One authorization request, as the IdP received it.
#[derive(Debug, Clone)]
pub struct AuthorizeCall {
    pub params: Vec<(String, String)>,
}

impl AuthorizeCall {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One token request, as the IdP received it.
#[derive(Debug, Clone)]
pub struct TokenCall {
    pub basic_auth: Option<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl TokenCall {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    used: bool,
}

struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &'static str, alg: Algorithm) -> SigningKey {
        let (params, crv, len) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
            other => panic!("no key generation for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(params).unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 1 + 2 * len, "uncompressed EC point");
        let jwk = json!({
            "kty": "EC",
            "crv": crv,
            "kid": kid,
            "use": "sig",
            "alg": format!("{alg:?}"),
            "x": URL_SAFE_NO_PAD.encode(&raw[1..=len]),
            "y": URL_SAFE_NO_PAD.encode(&raw[1 + len..]),
        });
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        SigningKey { kid, alg, key, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// Signs `payload` exactly as given.
    fn sign_raw(&self, payload: &str) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_string());
        let header = serde_json::to_string(&header).unwrap();
        let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, self.alg).unwrap();
        format!("{message}.{signature}")
    }
}

struct Idp {
    issuer: String,
    client_id: String,
    client_secret: String,
    iss_supported: bool,
    es256: SigningKey,
    es384: SigningKey,
    /// Not in the JWKS; signs under `es256`'s kid.
    rogue: SigningKey,
    authorize_reply: Mutex<AuthorizeReply>,
    iss_param: Mutex<IssParam>,
    token_reply: Mutex<TokenReply>,
    /// Claims of the signed-in user (beyond iss/aud/exp/iat/nonce).
    user: Mutex<Value>,
    codes: Mutex<HashMap<String, Grant>>,
    authorize_calls: Mutex<Vec<AuthorizeCall>>,
    token_calls: Mutex<Vec<TokenCall>>,
}

/// A running test IdP. See [`TestIdp::builder`].
pub struct TestIdp {
    pub addr: SocketAddr,
    pub issuer: String,
    idp: Arc<Idp>,
}

/// Settings of a [`TestIdp`] before it starts.
pub struct TestIdpBuilder {
    client_id: String,
    client_secret: String,
    iss_supported: bool,
}

pub const IDP_CLIENT_ID: &str = "porteiro-app";
pub const IDP_CLIENT_SECRET: &str = "idp-client-secret: with odd chars & more";

/// The user the test IdP signs in by default: Niara claims and all.
pub fn default_user() -> Value {
    json!({
        "sub": "user-4711-ana",
        "email": "ana@agencia.example.com",
        "name": "Ana Souza",
        "preferred_username": "ana",
        "groups": ["agents", "finance"],
        "agencyid": "4711",
        "agencyname": "Viagens Ana Ltda",
        "agencybusinessname": "Ana Turismo",
        "agencycountry": "BR",
        "agencydocument": "12.345.678/0001-90",
        "agencybackofficecode": "BO-0042",
    })
}

impl TestIdp {
    pub fn builder() -> TestIdpBuilder {
        TestIdpBuilder {
            client_id: IDP_CLIENT_ID.into(),
            client_secret: IDP_CLIENT_SECRET.into(),
            iss_supported: false,
        }
    }

    /// An address for an IdP that is not running yet (bound, then released).
    pub async fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
    }

    pub fn set_authorize(&self, reply: AuthorizeReply) {
        *self.idp.authorize_reply.lock().unwrap() = reply;
    }

    pub fn set_iss_param(&self, iss: IssParam) {
        *self.idp.iss_param.lock().unwrap() = iss;
    }

    pub fn set_token(&self, reply: TokenReply) {
        *self.idp.token_reply.lock().unwrap() = reply;
    }

    pub fn set_user(&self, user: Value) {
        *self.idp.user.lock().unwrap() = user;
    }

    pub fn authorize_calls(&self) -> Vec<AuthorizeCall> {
        self.idp.authorize_calls.lock().unwrap().clone()
    }

    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.idp.token_calls.lock().unwrap().clone()
    }

    pub fn client_id(&self) -> &str {
        &self.idp.client_id
    }

    /// A `[[providers]]` entry for this IdP (`extra`: more keys).
    pub fn provider(&self, id: &str, extra: &str) -> String {
        format!(
            "[[providers]]\nid = \"{id}\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{}\"\n\
             client_secret = \"{}\"\nalgorithms = [\"ES256\"]\n{extra}\n",
            self.issuer, self.idp.client_id, self.idp.client_secret
        )
    }
}

impl TestIdpBuilder {
    /// Discovery promises RFC 9207 `iss` in authorization responses.
    pub fn iss_supported(mut self, yes: bool) -> Self {
        self.iss_supported = yes;
        self
    }

    pub async fn start(self) -> TestIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.serve(listener)
    }

    /// Starts on `addr` (from [`TestIdp::free_addr`]).
    pub async fn start_on(self, addr: SocketAddr) -> TestIdp {
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("rebinding {addr}: {e}"));
        self.serve(listener)
    }

    fn serve(self, listener: TcpListener) -> TestIdp {
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let idp = Arc::new(Idp {
            issuer: issuer.clone(),
            client_id: self.client_id,
            client_secret: self.client_secret,
            iss_supported: self.iss_supported,
            es256: SigningKey::generate("es256-key", Algorithm::ES256),
            es384: SigningKey::generate("es384-key", Algorithm::ES384),
            rogue: SigningKey::generate("es256-key", Algorithm::ES256),
            authorize_reply: Mutex::new(AuthorizeReply::Code),
            iss_param: Mutex::new(IssParam::Auto),
            token_reply: Mutex::new(TokenReply::Good),
            user: Mutex::new(default_user()),
            codes: Mutex::new(HashMap::new()),
            authorize_calls: Mutex::new(Vec::new()),
            token_calls: Mutex::new(Vec::new()),
        });
        let serving = idp.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let idp = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let idp = idp.clone();
                        async move { Ok::<_, Infallible>(idp.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestIdp { addr, issuer, idp }
    }
}

type IdpBody = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, value: &Value) -> Response<IdpBody> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

fn redirect_to(location: &str) -> Response<IdpBody> {
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut().insert(header::LOCATION, http::HeaderValue::from_str(location).unwrap());
    resp
}

fn check_token_request(idp: &Idp, call: &TokenCall) -> Result<Grant, &'static str> {
    let (id, secret) = match (&call.basic_auth, call.param("client_secret")) {
        (Some(_), Some(_)) => return Err("invalid_request"),
        (Some((id, secret)), None) => (id.clone(), secret.clone()),
        (None, Some(secret)) => (call.param("client_id").unwrap_or_default().to_string(), secret.to_string()),
        (None, None) => return Err("invalid_client"),
    };
    if id != idp.client_id || secret != idp.client_secret {
        return Err("invalid_client");
    }
    if call.param("client_id").is_some_and(|c| c != id) {
        return Err("invalid_client");
    }
    if call.param("grant_type") != Some("authorization_code") {
        return Err("unsupported_grant_type");
    }
    let code = call.param("code").ok_or("invalid_request")?;
    let mut codes = idp.codes.lock().unwrap();
    let grant = codes.get_mut(code).ok_or("invalid_grant")?;
    if grant.used {
        return Err("invalid_grant");
    }
    grant.used = true;
    if grant.client_id != id || call.param("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err("invalid_grant");
    }
    let verifier = call.param("code_verifier").ok_or("invalid_grant")?;
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return Err("invalid_grant");
    }
    Ok(Grant {
        client_id: grant.client_id.clone(),
        redirect_uri: grant.redirect_uri.clone(),
        nonce: grant.nonce.clone(),
        challenge: grant.challenge.clone(),
        used: true,
    })
}

impl Idp {
    async fn answer(&self, req: Request<Incoming>) -> Response<IdpBody> {
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/.well-known/openid-configuration") => self.discovery(),
            (Method::GET, "/jwks") => json_response(StatusCode::OK, &json!({"keys": [self.es256.jwk, self.es384.jwk]})),
            (Method::GET, "/authorize") => self.authorize(&req),
            (Method::POST, "/token") => self.token(req).await,
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    fn discovery(&self) -> Response<IdpBody> {
        let i = &self.issuer;
        json_response(
            StatusCode::OK,
            &json!({
                "issuer": i,
                "authorization_endpoint": format!("{i}/authorize"),
                "token_endpoint": format!("{i}/token"),
                "jwks_uri": format!("{i}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": self.iss_supported,
            }),
        )
    }

    fn authorize(&self, req: &Request<Incoming>) -> Response<IdpBody> {
        let params: Vec<(String, String)> =
            req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let call = AuthorizeCall { params };
        self.authorize_calls.lock().unwrap().push(call.clone());
        let (Some(redirect_uri), Some(client_id)) = (call.param("redirect_uri"), call.param("client_id")) else {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_request"}));
        };
        let mut back = url::Url::parse(redirect_uri).unwrap();
        {
            let mut q = back.query_pairs_mut();
            match &*self.authorize_reply.lock().unwrap() {
                AuthorizeReply::Code => {
                    let code = random_token();
                    self.codes.lock().unwrap().insert(
                        code.clone(),
                        Grant {
                            client_id: client_id.to_string(),
                            redirect_uri: redirect_uri.to_string(),
                            nonce: call.param("nonce").map(str::to_string),
                            challenge: call.param("code_challenge").unwrap_or_default().to_string(),
                            used: false,
                        },
                    );
                    q.append_pair("code", &code);
                }
                AuthorizeReply::Error(error, description) => {
                    q.append_pair("error", error).append_pair("error_description", description);
                }
            }
            if let Some(state) = call.param("state") {
                q.append_pair("state", state);
            }
            match &*self.iss_param.lock().unwrap() {
                IssParam::Auto if self.iss_supported => {
                    q.append_pair("iss", &self.issuer);
                }
                IssParam::Other(other) => {
                    q.append_pair("iss", other);
                }
                _ => {}
            }
        }
        redirect_to(back.as_str())
    }

    async fn token(&self, req: Request<Incoming>) -> Response<IdpBody> {
        let basic_auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| {
                let (id, secret) = pair.split_once(':')?;
                // RFC 6749 §2.3.1: both parts are form-encoded.
                let dec = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().unwrap().1.into_owned();
                Some((dec(id), dec(secret)))
            });
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let call = TokenCall { basic_auth, form };
        self.token_calls.lock().unwrap().push(call.clone());
        let reply = self.token_reply.lock().unwrap().clone();
        // Answers that never get as far as checking the request.
        match reply {
            TokenReply::Status(status) => {
                return json_response(
                    StatusCode::from_u16(status).unwrap(),
                    &json!({"error": "server_error", "error_description": "the database is on fire"}),
                );
            }
            TokenReply::Huge { bytes, content_length } => return huge(bytes, content_length),
            TokenReply::Sleep(d) => tokio::time::sleep(d).await,
            _ => {}
        }
        let grant = match check_token_request(self, &call) {
            Ok(g) => g,
            Err(error) => {
                let status = if error == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
                return json_response(status, &json!({"error": error}));
            }
        };
        let now = now();
        let mut claims = self.user.lock().unwrap().clone();
        let obj = claims.as_object_mut().unwrap();
        obj.insert("iss".into(), json!(self.issuer));
        obj.insert("aud".into(), json!(grant.client_id));
        obj.insert("iat".into(), json!(now));
        obj.insert("exp".into(), json!(now + 300));
        if let Some(nonce) = &grant.nonce {
            obj.insert("nonce".into(), json!(nonce));
        }
        let id_token = match &reply {
            TokenReply::Patch(patch) => {
                for (k, v) in patch.as_object().unwrap() {
                    if v.is_null() {
                        obj.remove(k);
                    } else {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                Some(self.es256.sign(&claims))
            }
            TokenReply::OtherKey => Some(self.rogue.sign(&claims)),
            TokenReply::Es384 => Some(self.es384.sign(&claims)),
            TokenReply::Hs256 => {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(self.es256.kid.to_string());
                let secret = json!({"keys": [self.es256.jwk]}).to_string();
                Some(jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap())
            }
            TokenReply::AlgNone => Some(format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": self.es256.kid}).to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )),
            TokenReply::NoIdToken => None,
            TokenReply::Twice(name, value) => {
                let text = claims.to_string();
                let payload = format!("{},{}:{value}}}", text.strip_suffix('}').unwrap(), json!(name));
                Some(self.es256.sign_raw(&payload))
            }
            _ => Some(self.es256.sign(&claims)),
        };
        let mut answer = json!({"access_token": random_token(), "token_type": "Bearer", "expires_in": 300});
        if let Some(t) = id_token {
            answer["id_token"] = json!(t);
        }
        json_response(StatusCode::OK, &answer)
    }
}

/// A token answer of `bytes` bytes of JSON: one piece with a
/// Content-Length, or streamed in 16 KiB chunks without one.
fn huge(bytes: usize, content_length: bool) -> Response<IdpBody> {
    let prefix = "{\"access_token\":\"x\",\"token_type\":\"Bearer\",\"padding\":\"";
    let suffix = "\"}";
    let pad = bytes.saturating_sub(prefix.len() + suffix.len());
    let mut resp = if content_length {
        let body = format!("{prefix}{}{suffix}", "a".repeat(pad));
        Response::new(Full::new(Bytes::from(body)).boxed())
    } else {
        let mut chunks = vec![Bytes::from(prefix)];
        let mut left = pad;
        while left > 0 {
            let n = left.min(16 * 1024);
            chunks.push(Bytes::from(vec![b'a'; n]));
            left -= n;
        }
        chunks.push(Bytes::from(suffix));
        let frames = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, Infallible>(Frame::data(c))));
        Response::new(BodyExt::boxed(StreamBody::new(frames)))
    };
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// The porteiro config for one test IdP provider `idp` guarding `/` with
/// the Niara claims required and forwarded.
pub fn idp_config(idp: &TestIdp, upstream: &str, provider_extra: &str) -> String {
    format!(
        "{}\n[[routes]]\nid = \"app\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\nlogin = \"idp\"\n{}\n",
        idp.provider("idp", &format!("{}\n{provider_extra}", niara_required_claims())),
        niara_headers()
    )
}
