//! Silent session refresh (`refresh = true`, DESIGN §2.2) against the real
//! OpenID provider (panva's `oidc-provider`, `tests/oidc-op/op.js`), which
//! issues refresh tokens for `offline_access` with `prompt=consent` and
//! rotates them on every use (a second use of one is refused and revokes
//! the grant, so a gateway that refreshes twice shows). The provider counts
//! the refresh grants it answered (`/__test/refreshes`).
//!
//! porteiro's clock is moved past the session's validity (5 minutes)
//! instead of sleeping; the provider's tokens (ID token 1 h, refresh token
//! 14 days) stay valid across that move.
//!
//! - navigation, XHR and POST with a body on an expired session: renewed,
//!   answered by the upstream with the provider's changed claims, the body
//!   delivered once, the new cookie on the answer;
//! - 20 concurrent requests on one expired session: one refresh at the
//!   provider; a request with the old cookie afterwards joins it;
//! - a grant revoked at the provider: the session ends (login for a
//!   navigation, 401 for an XHR), cookies cleared, never retried;
//! - two replicas on one Redis racing: one refresh;
//! - the token endpoint unreachable: `503`, the session kept, and renewed
//!   once the provider is back;
//! - the refresh tokens the provider issued appear in no log line.
//!
//! These tests fail, never skip, when Node.js, the npm install or
//! `redis-server` is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use porteiro::clock::Clock;
use serde_json::{Value, json};
use support::oidc::{Browser, Gateway, PUBLIC_HOST, PUBLIC_URL, RealOp, SESSION_COOKIE, oidc_config, op_client};
use support::redis::RedisServer;
use support::{FakeUpstream, RunningUpstream, client};

const CLIENT_ID: &str = "porteiro-refresh";
const CLIENT_SECRET: &str = "refresh-client-secret-0123456789";
/// Past the 5-minute session, well within the provider's token lifetimes.
const PAST_EXPIRY: Duration = Duration::from_secs(6 * 60);

// === every log line of this test binary ===

/// The log lines porteiro (in this process) wrote, at debug level, from
/// the first test that asked on.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// === the provider and porteiro ===

/// A provider whose client may use refresh tokens, in a process of its own
/// (`cookie_prefix`): tests change its accounts and revoke its grants.
async fn refresh_op(cookie_prefix: &str) -> Arc<RealOp> {
    let mut client = op_client(CLIENT_ID, CLIENT_SECRET, "client_secret_basic");
    client["grant_types"] = json!(["authorization_code", "refresh_token"]);
    RealOp::start(json!({ "clients": [client], "cookie_prefix": cookie_prefix })).await
}

/// `[session]` keys (5-minute sessions, `store`), then the provider with
/// `refresh = true` and a route to `upstream` forwarding the name claim.
fn refresh_body(op: &RealOp, upstream: &str, store: &str) -> String {
    format!(
        r#"validity_minutes = 5
{store}

[[providers]]
id = "niara"
kind = "oidc"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "offline_access"]
extra_params = {{ prompt = "consent" }}
refresh = true

[[routes]]
id = "app"
path_prefix = "/"
upstream = "{upstream}"
login = "niara"
headers = {{ "X-Name" = "name" }}
"#,
        issuer = op.issuer,
    )
}

async fn start(op: &RealOp, up: &RunningUpstream, store: &str, clock: Clock) -> Gateway {
    logs();
    let gw = Gateway::start_with_clock(oidc_config(&refresh_body(op, &up.url(), store)), clock).await;
    gw.wait_ready().await;
    gw
}

/// Signs `browser` in through porteiro as `login` at the real provider.
async fn sign_in(op: &RealOp, browser: &Browser, login: &str) {
    let to_op = browser.start_login(&format!("{PUBLIC_URL}/start")).await;
    let back = op.sign_in(browser, &to_op, login).await;
    let callback = browser.follow(&back).await;
    assert_eq!(callback.status, StatusCode::FOUND, "callback refused: {}", callback.body);
    let cookie = callback.set_cookie(SESSION_COOKIE).expect("a session cookie");
    // The cookie outlives the 5-minute session: max_session_minutes (a day).
    assert_eq!(cookie.max_age(), Some(cookie::time::Duration::minutes(1440)));
}

/// Refresh grants the provider answered and refused for porteiro's client.
async fn refreshes(op: &RealOp) -> (u64, u64) {
    let resp = client().get(format!("{}/__test/refreshes", op.issuer)).send().await.unwrap();
    let counts: Value = resp.json().await.unwrap();
    (counts["ok"][CLIENT_ID].as_u64().unwrap_or(0), counts["refused"][CLIENT_ID].as_u64().unwrap_or(0))
}

async fn op_post(op: &RealOp, path: &str, body: Value) {
    let resp = client().post(format!("{}{path}", op.issuer)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{path}");
}

const XHR: [(&str, &str); 1] = [("x-requested-with", "XMLHttpRequest")];

/// A script's GET (`Accept: application/json`, `X-Requested-With`).
async fn xhr(browser: &Browser, path: &str) -> support::oidc::Page {
    browser.send_with(Method::GET, &format!("{PUBLIC_URL}{path}"), None, Some("application/json"), &XHR).await
}

/// The renewed session's cookie on `page`: set, and living as long as the
/// session may still be renewed (more than the 5-minute session).
fn assert_renewed_cookie(page: &support::oidc::Page) {
    let cookie = page.set_cookie(SESSION_COOKIE).unwrap_or_else(|| panic!("no new session cookie: {:?}", page.headers));
    let max_age = cookie.max_age().unwrap().whole_seconds();
    assert!(max_age > 60 * 60 && max_age <= 1440 * 60, "Max-Age {max_age}");
}

// === the tests ===

#[tokio::test]
async fn navigation_xhr_and_post_are_renewed_with_the_providers_new_claims() {
    let op = refresh_op("oprf1").await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start(&op, &up, "", Clock::default()).await;
    let (nav, script, form) = (gw.browser(), gw.browser(), gw.browser());
    for b in [&nav, &script, &form] {
        sign_in(&op, b, "carla").await;
    }
    let before = nav.get(&format!("{PUBLIC_URL}/before")).await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.echo().header("x-name"), Some("Carla Dias"));
    assert_eq!(before.echo().header("x-forwarded-groups"), Some("managers"));
    assert_eq!(refreshes(&op).await, (0, 0), "a valid session is not refreshed");

    // The provider changes the user's claims; porteiro's sessions expire.
    op_post(
        &op,
        "/__test/account",
        json!({"login": "carla", "claims": {"name": "Carla D. Dias", "groups": ["managers", "auditors"]}}),
    )
    .await;
    gw.advance(PAST_EXPIRY);
    let hits = up.hits();

    // A navigation: no login redirect, the upstream answers with the new claims.
    let page = nav.get(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.echo().path(), "/painel");
    assert_eq!(page.echo().header("x-name"), Some("Carla D. Dias"));
    assert_eq!(page.echo().header("x-forwarded-groups"), Some("managers,auditors"));
    assert_eq!(page.echo().header("cookie"), None, "porteiro's cookie never goes upstream");
    assert_renewed_cookie(&page);
    assert_eq!(refreshes(&op).await, (1, 0));
    // The new cookie is a valid session: no second refresh.
    let again = nav.get(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.set_cookie(SESSION_COOKIE).is_none());

    // An XHR: renewed too, never a 401.
    let page = xhr(&script, "/api/data").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.echo().header("x-forwarded-groups"), Some("managers,auditors"));
    assert_renewed_cookie(&page);
    assert_eq!(refreshes(&op).await, (2, 0));

    // A POST with a body: renewed before the body is read, which reaches
    // the upstream once, whole.
    let value = "x".repeat(200_000);
    let body = form_urlencoded::Serializer::new(String::new()).append_pair("field", &value).finish();
    let sent = body.len() as u64;
    let page = form.send_with(Method::POST, &format!("{PUBLIC_URL}/submit"), Some(body), Some("*/*"), &XHR).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let echo = page.echo();
    assert_eq!((echo.method.as_str(), echo.body_bytes), ("POST", sent));
    assert_eq!(echo.header("x-name"), Some("Carla D. Dias"));
    assert_renewed_cookie(&page);
    assert_eq!(refreshes(&op).await, (3, 0));
    assert_eq!(up.hits(), hits + 4, "each request reached the upstream once");
    assert_eq!(gw.count("porteiro_session_refreshes_total{provider=\"niara\",result=\"renewed\"}").await, 3.0);
}

#[tokio::test]
async fn twenty_concurrent_requests_on_one_expired_session_make_one_refresh() {
    let op = refresh_op("oprf2").await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start(&op, &up, "", Clock::default()).await;
    let browser = gw.browser();
    sign_in(&op, &browser, "ana").await;
    let old_cookie = browser.snapshot();
    gw.advance(PAST_EXPIRY);

    let requests = (0..20).map(|i| {
        let b = browser.snapshot();
        async move {
            if i % 2 == 0 {
                xhr(&b, &format!("/api/{i}")).await
            } else {
                b.get(&format!("{PUBLIC_URL}/page/{i}")).await
            }
        }
    });
    let pages = futures_util::future::join_all(requests).await;
    for page in &pages {
        assert_eq!(page.status, StatusCode::OK, "{}: {}", page.url, page.body);
        assert_eq!(page.echo().header("x-forwarded-user"), Some("ana"));
        assert_renewed_cookie(page);
    }
    assert_eq!(refreshes(&op).await, (1, 0), "one refresh at the provider for 20 requests");
    assert_eq!(up.hits(), 20);

    // A request still carrying the expired cookie gets the same renewal.
    let late = old_cookie.get(&format!("{PUBLIC_URL}/late")).await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    assert_renewed_cookie(&late);
    assert_eq!(refreshes(&op).await, (1, 0), "no second refresh for the old cookie");
    assert_eq!(gw.count("porteiro_session_refreshes_total{provider=\"niara\",result=\"renewed\"}").await, 1.0);
}

#[tokio::test]
async fn a_grant_revoked_at_the_provider_ends_the_session() {
    let op = refresh_op("oprf3").await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start(&op, &up, "", Clock::default()).await;
    let (nav, script) = (gw.browser(), gw.browser());
    sign_in(&op, &nav, "bruno").await;
    sign_in(&op, &script, "bruno").await;
    let nav_before = nav.snapshot();
    op_post(&op, "/__test/revoke", json!({"login": "bruno"})).await;
    gw.advance(PAST_EXPIRY);

    // A navigation: the session ends, cookie cleared, on to sign in again.
    let page = nav.get(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let to = page.location();
    assert!(to.as_str().starts_with(&op.issuer) || to.path().starts_with("/sso/"), "a login: {to}");
    let cleared = page.set_cookie(SESSION_COOKIE).expect("the session cookie is cleared");
    assert_eq!(cleared.max_age(), Some(cookie::time::Duration::ZERO));
    assert!(!nav.has_session());

    // An XHR: 401 JSON, cookie cleared.
    let page = xhr(&script, "/api/data").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert_eq!(page.json()["error"], "unauthorized");
    assert_eq!(page.set_cookie(SESSION_COOKIE).and_then(|c| c.max_age()), Some(cookie::time::Duration::ZERO));
    assert_eq!(refreshes(&op).await, (0, 2), "each session tried once, refused");

    // The ended session is never tried again, even with its old cookie.
    let page = nav_before.get(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(refreshes(&op).await, (0, 2));
    assert_eq!(up.hits(), 0);
    assert_eq!(gw.count("porteiro_session_refreshes_total{provider=\"niara\",result=\"ended\"}").await, 2.0);
}

#[tokio::test]
async fn two_replicas_racing_on_one_redis_make_one_refresh() {
    let redis = RedisServer::start();
    let op = refresh_op("oprf4").await;
    let up = FakeUpstream::new("app").start().await;
    let store = format!("store = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    // One clock: the replicas agree on the time, as real ones do.
    let clock = Clock::default();
    let a = start(&op, &up, &store, clock.clone()).await;
    let b = start(&op, &up, &store, clock.clone()).await;
    let on_a = a.browser();
    sign_in(&op, &on_a, "ana").await;
    let on_b = b.browser();
    for c in on_a.cookies(PUBLIC_HOST) {
        on_b.add_cookie(PUBLIC_HOST, &c.name, &c.value, &c.path);
    }
    clock.advance(PAST_EXPIRY);

    let requests = (0..20).map(|i| {
        let b = if i % 2 == 0 { on_a.snapshot() } else { on_b.snapshot() };
        async move { xhr(&b, &format!("/api/{i}")).await }
    });
    let pages = futures_util::future::join_all(requests).await;
    for page in &pages {
        assert_eq!(page.status, StatusCode::OK, "{}: {}", page.url, page.body);
        assert_eq!(page.echo().header("x-forwarded-user"), Some("ana"));
        assert_renewed_cookie(page);
    }
    assert_eq!(refreshes(&op).await, (1, 0), "one refresh at the provider across both replicas");
    let series = |r: &str| format!("porteiro_session_refreshes_total{{provider=\"niara\",result=\"{r}\"}}");
    let renewed = a.count(&series("renewed")).await + b.count(&series("renewed")).await;
    let joined = a.count(&series("joined")).await + b.count(&series("joined")).await;
    assert_eq!((renewed, joined), (1.0, 1.0), "one replica refreshed, the other used its result");
}

#[tokio::test]
async fn refresh_tokens_never_reach_the_logs() {
    let op = refresh_op("oprf5").await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start(&op, &up, "", Clock::default()).await;
    let (ok, gone) = (gw.browser(), gw.browser());
    sign_in(&op, &ok, "ana").await;
    sign_in(&op, &gone, "bruno").await;
    op_post(&op, "/__test/revoke", json!({"login": "bruno"})).await;
    gw.advance(PAST_EXPIRY);
    assert_eq!(ok.get(&format!("{PUBLIC_URL}/a")).await.status, StatusCode::OK);
    assert_eq!(xhr(&gone, "/b").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refreshes(&op).await, (1, 1), "one refresh renewed, one refused");

    let resp = client().get(format!("{}/__test/refresh-tokens", op.issuer)).send().await.unwrap();
    let tokens: Vec<String> = resp.json().await.unwrap();
    assert!(tokens.len() >= 3, "two logins and one rotation: {tokens:?}");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("session renewed"), "the capture works: {logs}");
    assert!(logs.contains("session refresh refused by the provider"), "{logs}");
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a refresh token was logged");
    }
}

/// A TCP relay to the provider that can be cut: while down, every
/// connection is closed at once, pooled ones included (a provider that is
/// down).
struct Relay {
    addr: std::net::SocketAddr,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (cut, tasks) = (down.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tasks.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Relay { addr, down, open }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for task in self.open.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

#[tokio::test]
async fn a_provider_that_is_down_answers_503_and_keeps_the_session() {
    let op = refresh_op("oprf6").await;
    let up = FakeUpstream::new("app").start().await;
    let relay = Relay::start(op.port).await;
    // Explicit endpoints: the token endpoint through the relay.
    let body = refresh_body(&op, &up.url(), "").replace(
        "refresh = true\n",
        &format!(
            "refresh = true\nauthorization_endpoint = \"{i}/auth\"\ntoken_endpoint = \"http://{r}/token\"\njwks_uri = \"{i}/jwks\"\n",
            i = op.issuer,
            r = relay.addr
        ),
    );
    logs();
    let gw = Gateway::start_with_clock(oidc_config(&body), Clock::default()).await;
    gw.wait_ready().await;
    let browser = gw.browser();
    sign_in(&op, &browser, "ana").await;
    relay.set_down(true);
    gw.advance(PAST_EXPIRY);

    let page = xhr(&browser, "/api/data").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert_eq!(page.json()["error"], "refresh_unavailable");
    assert!(page.set_cookie(SESSION_COOKIE).is_none(), "the session is kept");
    let page = browser.get(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(page.is_html());
    assert!(browser.has_session());
    assert_eq!(up.hits(), 0);

    // The provider is back: the same session is renewed.
    relay.set_down(false);
    let page = xhr(&browser, "/api/data").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_renewed_cookie(&page);
    assert_eq!(refreshes(&op).await, (1, 0));
    let series = |r: &str| format!("porteiro_session_refreshes_total{{provider=\"niara\",result=\"{r}\"}}");
    assert_eq!(gw.count(&series("unavailable")).await, 2.0);
    assert_eq!(gw.count(&series("renewed")).await, 1.0);
}

#[tokio::test]
async fn logout_of_an_expired_session_ends_it_before_any_renewal() {
    let op = refresh_op("oprf7").await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start(&op, &up, "", Clock::default()).await;
    let browser = gw.browser();
    sign_in(&op, &browser, "ana").await;
    let kept = browser.snapshot();
    gw.advance(PAST_EXPIRY);

    // The expired (but renewable) session logs out: ended, not renewed.
    let logout = browser.get(&format!("{PUBLIC_URL}/sso/logout")).await;
    assert!(logout.status.is_redirection() || logout.status == StatusCode::OK, "{}", logout.body);
    assert!(!browser.has_session());
    // A copy of the old cookie is refused, and the provider never asked.
    let page = xhr(&kept, "/api/data").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert_eq!(refreshes(&op).await, (0, 0));
    assert_eq!(up.hits(), 0);
}
