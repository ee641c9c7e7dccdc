//! Helpers for the OpenID Connect end-to-end tests (`tests/oidc_*.rs`).
//!
//! - [`start_porteiro`]: porteiro in-process with `public_url` =
//!   [`PUBLIC_URL`]. The test [`Browser`] resolves that name to porteiro's
//!   real (port 0) address, so `redirect_uri` is known before anything
//!   starts and no port is ever guessed.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use porteiro::config::Config;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::browser::{Browser, PUBLIC_HOST, Page, StoredCookie};
use super::keys::{Keys, SigningKey};
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::{Echo, FakeUpstream, Gateway, PATIENCE, RunningUpstream, SESSION_COOKIE, now, parse_config};

/// `server.public_url`: the test browser resolves [`PUBLIC_HOST`] to
/// porteiro's real address (see [`Browser::new`]).
pub const PUBLIC_URL: &str = "http://porteiro.test";
/// porteiro's `redirect_uri`: `{public_url}/sso/callback`.
pub const CALLBACK: &str = "http://porteiro.test/sso/callback";
pub const SESSION_SECRET: &str = "oidc-tests-session-secret-0123456789abcdef";
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

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

// === porteiro ===

/// porteiro's config for these tests: `[server]` published as
/// [`PUBLIC_URL`] (both listeners on `127.0.0.1:0`), a `[session]` with a
/// secret, then `body` (providers and routes).
pub fn oidc_config(body: &str) -> Config {
    parse_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC_URL}\"\n\n\
         [session]\nsecret = \"{SESSION_SECRET}\"\n\n{body}\n"
    ))
}

/// Starts porteiro with [`oidc_config`]`(body)`; does not wait for readiness.
pub async fn start_porteiro(body: &str) -> Gateway {
    Gateway::start(oidc_config(body)).await
}

/// [`start_porteiro`], then waits until `/readyz` says 200.
pub async fn start_ready(body: &str) -> Gateway {
    Gateway::start_ready(oidc_config(body)).await
}

impl Gateway {
    /// A new browser (empty cookie jar) that reaches this porteiro as
    /// [`PUBLIC_URL`].
    pub fn browser(&self) -> Browser {
        Browser::new(self.addr())
    }
}

impl Browser {
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

/// `{public_url}/sso/logout/done`: the `post_logout_redirect_uri` porteiro
/// sends to a provider's end-session endpoint.
pub const LOGOUT_DONE: &str = "http://porteiro.test/sso/logout/done";
/// `{public_url}/sso/backchannel-logout`, as registered at a provider.
pub const BACKCHANNEL_LOGOUT: &str = "http://porteiro.test/sso/backchannel-logout";

/// [`op_client`] with logout at the provider: porteiro's
/// `post_logout_redirect_uri` registered and, when `backchannel`, its
/// back-channel logout URI with `backchannel_logout_session_required`
/// (the provider then puts `sid` in ID and logout tokens).
pub fn op_logout_client(id: &str, secret: &str, backchannel: bool) -> Value {
    let mut client = op_client(id, secret, "client_secret_basic");
    client["post_logout_redirect_uris"] = json!([LOGOUT_DONE]);
    if backchannel {
        client["backchannel_logout_uri"] = json!(BACKCHANNEL_LOGOUT);
        client["backchannel_logout_session_required"] = json!(true);
    }
    client
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

    /// Requests the provider itself makes to `http://{name}/...` (its
    /// back-channel logouts) go to `to` instead: porteiro's listener.
    pub async fn route_host(&self, name: &str, to: SocketAddr) {
        let resp = super::client()
            .post(format!("{}/__test/hosts", self.issuer))
            .json(&json!({ name: to.to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }

    /// The back-channel logouts the provider sent so far, each
    /// `{client_id, sub, sid, ok, error}` (`ok`: porteiro answered 200).
    pub async fn backchannel_sent(&self) -> Vec<Value> {
        let resp = super::client().get(format!("{}/__test/backchannel", self.issuer)).send().await.unwrap();
        resp.json::<Vec<Value>>().await.unwrap()
    }

    /// The user logs out at the provider itself (its end-session page,
    /// "Yes, sign me out"), from `browser`. `end_session` is the URL the
    /// browser is sent to, with whatever parameters it carries. Returns
    /// the provider's redirect once the logout is done (the provider has
    /// sent its back-channel logouts by then).
    pub async fn log_out(&self, browser: &Browser, end_session: &str) -> Page {
        let page = browser.get(end_session).await;
        assert_eq!(page.status, StatusCode::OK, "{}: {}\n{}", page.url, page.body, self.stderr());
        assert!(page.body.contains("op.logoutForm"), "not the logout confirmation page: {}", page.body);
        let action = attribute(&page.body, "<form", "action").unwrap_or_else(|| panic!("no form: {}", page.body));
        let action = page.url.join(&action).unwrap();
        let mut form = hidden_inputs(&page.body);
        // The "Yes, sign me out" button: end the provider's whole session.
        form.push(("logout".into(), "yes".into()));
        let done = browser.post_form(action.as_str(), &form).await;
        assert!(done.status.is_redirection(), "{}: {} {}\n{}", done.url, done.status, done.body, self.stderr());
        done
    }

    /// The first page the provider shows `browser` for porteiro's
    /// authorization request `to_authorize`: its interaction's `prompt`
    /// (`login`, `consent`), or `None` when it sends the browser straight
    /// back (its session still signed in and consented).
    pub async fn first_prompt(&self, browser: &Browser, to_authorize: &Page) -> Option<String> {
        let mut page = browser.get(to_authorize.location().as_str()).await;
        while page.status.is_redirection() {
            if page.location().as_str().starts_with(CALLBACK) {
                return None;
            }
            page = browser.follow(&page).await;
        }
        assert_eq!(page.status, StatusCode::OK, "{}: {}\n{}", page.url, page.body, self.stderr());
        hidden_inputs(&page.body).into_iter().find(|(k, _)| k == "prompt").map(|(_, v)| v)
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
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
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

    /// Connections accepted and closed unanswered while the IdP was down
    /// (see [`TestIdpBuilder::start_down`]).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// A down IdP starts answering.
    pub fn bring_up(&self) {
        self.down.store(false, Ordering::SeqCst);
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

    /// The key the IdP signs ID tokens with (ES256, published in its JWKS).
    pub fn signing_key(&self) -> &SigningKey {
        &self.idp.es256
    }

    /// A key under the same `kid` that the JWKS does not hold.
    pub fn rogue_key(&self) -> &SigningKey {
        &self.idp.rogue
    }

    /// An ES384 key the JWKS holds (`algorithms = ["ES256"]` refuses it).
    pub fn es384_key(&self) -> &SigningKey {
        &self.idp.es384
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
        self.serve(false).await
    }

    /// An IdP that is down: its address is bound (and kept), but every
    /// connection is closed unanswered until [`TestIdp::bring_up`].
    pub async fn start_down(self) -> TestIdp {
        self.serve(true).await
    }

    async fn serve(self, down: bool) -> TestIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(down));
        let refused = Arc::new(AtomicUsize::new(0));
        let issuer = format!("http://{addr}");
        let idp = Arc::new(Idp {
            issuer: issuer.clone(),
            client_id: self.client_id,
            client_secret: self.client_secret,
            iss_supported: self.iss_supported,
            es256: SigningKey::new("es256-key", Keys::p256()),
            es384: SigningKey::new("es384-key", Keys::p384()),
            rogue: SigningKey::new("es256-key", Keys::p256()),
            authorize_reply: Mutex::new(AuthorizeReply::Code),
            iss_param: Mutex::new(IssParam::Auto),
            token_reply: Mutex::new(TokenReply::Good),
            user: Mutex::new(default_user()),
            codes: Mutex::new(HashMap::new()),
            authorize_calls: Mutex::new(Vec::new()),
            token_calls: Mutex::new(Vec::new()),
        });
        let serving = idp.clone();
        let (is_down, refusals) = (down.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                if is_down.load(Ordering::SeqCst) {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
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
        TestIdp { addr, issuer, idp, down, refused }
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
            (Method::GET, "/jwks") => {
                json_response(StatusCode::OK, &json!({"keys": [self.es256.jwk(), self.es384.jwk()]}))
            }
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
                header.kid = Some(self.es256.kid.clone());
                let secret = json!({"keys": [self.es256.jwk()]}).to_string();
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
