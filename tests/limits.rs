//! `[server]` and `[session]` settings README documents that no other test
//! held: `header_read_timeout_seconds` (slow and idle connections),
//! `max_headers`, a non-default `auth_prefix` end to end, `cookie_domain`,
//! the `rd=` alias of `redirectUrl`, and the five-cookie limit of a session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use support::auth::{COOKIE, Conf, LOGIN_URL, claims, hs_token, location, q, set_cookies};
use support::{FakeUpstream, PATIENCE, metric, public_route, raw_request, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// === connections ===

/// Reads until the server closes `stream`; returns what came before the
/// close. Fails if it stays open for [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "still open after {PATIENCE:?}; got {:?}", String::from_utf8_lossy(&got));
    got
}

/// Whether `stream` is still open with nothing to read.
async fn still_open(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await.is_err()
}

/// Sends (the rest of) one request and reads its whole answer, which must
/// carry a `Content-Length`; returns the status line.
async fn request_on(stream: &mut TcpStream, rest_of_request: &[u8]) -> String {
    stream.write_all(rest_of_request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .map(|(_, v)| v.trim().parse().unwrap())
                .unwrap_or_else(|| panic!("no Content-Length: {head}"));
            if got.len() >= end + length {
                assert_eq!(got.len(), end + length, "more than one answer");
                return head.lines().next().unwrap().to_string();
            }
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// On each of two gateways (1 s and 120 s), a connection that sent half a
/// request head (slowloris) and one idle after a request.
async fn slow_and_idle(gw: &support::Gateway) -> [TcpStream; 2] {
    let mut slow = TcpStream::connect(gw.addr()).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n").await.unwrap();
    let mut idle = TcpStream::connect(gw.addr()).await.unwrap();
    let status = request_on(&mut idle, b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    [slow, idle]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_closes_slow_heads_and_idle_keep_alive_connections() {
    let up = FakeUpstream::new("app").start().await;
    let quick = start_gateway("header_read_timeout_seconds = 1", &public_route("app", &up.url())).await;
    let patient = start_gateway("header_read_timeout_seconds = 120", &public_route("app", &up.url())).await;
    let started = Instant::now();
    let mut quick_conns = slow_and_idle(&quick).await;
    let mut patient_conns = slow_and_idle(&patient).await;

    // The 1 s gateway closes both, with no answer to the half head.
    for (what, conn) in ["slow", "idle"].into_iter().zip(quick_conns.iter_mut()) {
        let got = until_closed(conn).await;
        assert!(got.is_empty(), "{what}: {}", String::from_utf8_lossy(&got));
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout");
    assert!(!up.seen().iter().any(|s| s.uri == "/slow"), "the half request went upstream");

    // The 120 s gateway kept both, and each still works.
    for conn in patient_conns.iter_mut() {
        assert!(still_open(conn).await, "closed by the 120 s gateway");
    }
    let [slow, idle] = &mut patient_conns;
    assert!(request_on(slow, b"X-Rest: of the head\r\n\r\n").await.starts_with("HTTP/1.1 200"));
    assert!(request_on(idle, b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n").await.starts_with("HTTP/1.1 200"));
}

/// A head trickled in, a line now and then, each before the connection
/// times out but never the whole head: the connection still ends
/// header_read_timeout after it was accepted (give or take the second the
/// check runs at), although it goes quiet between lines (long enough for
/// an idle connection to be parked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_across_parking_still_times_out() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 3", &public_route("app", &up.url())).await;
    let mut conn = TcpStream::connect(gw.addr()).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"GET /trickle HTTP/1.1\r\nHost: app.test\r\n").await.unwrap();
    let mut lines = 0;
    // A line every 1.8 s: quiet long enough to be parked in between.
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        if conn.write_all(format!("X-Line-{lines}: x\r\n").as_bytes()).await.is_err() || !still_open(&mut conn).await {
            break started.elapsed();
        }
        lines += 1;
        assert!(started.elapsed() < Duration::from_secs(12), "still open after {lines} lines");
    };
    assert!(closed >= Duration::from_millis(2_900), "closed before the timeout: {closed:?}");
    assert!(lines >= 1, "a line was sent after the first quiet period");
    assert!(!up.seen().iter().any(|s| s.uri == "/trickle"), "the half request went upstream");
}

/// A keep-alive connection idle (and parked) for most of
/// header_read_timeout, then sending a head slowly: the head has the whole
/// timeout from its first byte, as on a new connection; the idle time
/// before it does not count against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_begun_late_in_the_idle_time_gets_the_whole_timeout() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 3", &public_route("app", &up.url())).await;
    let mut conn = TcpStream::connect(gw.addr()).await.unwrap();
    let status = request_on(&mut conn, b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Idle 2.6 s, then a head over 2.2 s: 4.8 s after the last answer,
    // 2.2 s after its first byte.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    conn.write_all(b"GET /late HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let status = request_on(&mut conn, b"Host: app.test\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(up.seen().iter().any(|s| s.uri == "/late"));
}

/// README (Memory): "A connection that sends nothing within
/// `header_read_timeout_seconds` is now closed", and gives back its
/// `max_connections` slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_closes_a_connection_that_sends_nothing() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 1", &public_route("app", &up.url())).await;
    let mut silent = TcpStream::connect(gw.addr()).await.unwrap();
    let got = until_closed(&mut silent).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let metrics = gw.metrics().await;
    assert_eq!(metric(&metrics, "porteiro_connections_open"), Some(0.0), "{metrics}");
}

/// A request head with `count` header lines, `Host` included.
fn head_with_headers(count: usize) -> Vec<String> {
    let mut lines = vec!["GET /h HTTP/1.1".to_string(), "Host: app.test".to_string()];
    lines.extend((1..count).map(|i| format!("X-Filler-{i}: {i}")));
    lines
}

#[tokio::test]
async fn max_headers_limits_the_header_count() {
    // The built-in app: no upstream server with a header limit of its own
    // (porteiro adds three X-Forwarded-* fields on the way).
    let default = start_gateway("", &public_route("app", "builtin:whoami")).await;
    let ten = start_gateway("max_headers = 10", &public_route("app", "builtin:whoami")).await;
    for (gw, limit) in [(&default, 100), (&ten, 10)] {
        let fits = head_with_headers(limit);
        let fits: Vec<&str> = fits.iter().map(String::as_str).collect();
        let answer = raw_request(gw.addr(), &fits).await;
        assert_eq!(answer.status, 200, "{limit} headers: {}", answer.text());
        let over = head_with_headers(limit + 1);
        let over: Vec<&str> = over.iter().map(String::as_str).collect();
        let answer = raw_request(gw.addr(), &over).await;
        assert_eq!(answer.status, 431, "{} headers: {}", limit + 1, answer.text());
    }
}

// === endpoints and cookies ===

#[tokio::test]
async fn a_non_default_auth_prefix_serves_the_jwt_login_and_frees_sso_for_the_app() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).server("auth_prefix", q("/auth")).start().await;

    // Not signed in: sent to the login page.
    let resp = gw.navigate("/tickets/42").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), format!("{LOGIN_URL}?redirectUrl=%2Ftickets%2F42"));
    // The callback lives under /auth.
    let token = hs_token(&claims());
    let query = format!("jwt={token}&redirectUrl=%2Ftickets%2F42");
    let resp = gw.navigate(&format!("/auth/callback?{query}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap());
    assert_eq!(location(&resp), "/tickets/42");
    let cookie = set_cookies(&resp).into_iter().find(|c| c.name == COOKIE).expect("session cookie");
    let cookie = format!("{COOKIE}={}", cookie.value);
    let me = gw.get("/auth/userinfo").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<serde_json::Value>().await.unwrap()["email"], "ana@example.com");

    // /sso/ is the app's now: with a session, it goes upstream as is.
    let echo = gw.echo(&format!("/sso/callback?{query}"), &cookie).await;
    assert_eq!(echo.path(), "/sso/callback");
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    let resp = gw.get("/sso/userinfo").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "no session: the app's route, not porteiro's endpoint");

    // Logout under /auth ends the session.
    let resp = gw.navigate("/auth/logout").header("cookie", &cookie).send().await.unwrap();
    assert!(resp.status().is_redirection() || resp.status() == StatusCode::OK, "{}", resp.status());
    let cleared = set_cookies(&resp).into_iter().find(|c| c.name == COOKIE).expect("cookie cleared");
    assert!(cleared.has("Max-Age=0"), "{cleared:?}");
    let me = gw.get("/auth/userinfo").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "revoked");
}

#[tokio::test]
async fn a_non_default_auth_prefix_is_the_oidc_redirect_uri() {
    use support::oidc::{PUBLIC_URL, TestIdp};
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC_URL}\"\n\
         auth_prefix = \"/auth\"\n\n[session]\nsecret = \"{}\"\n\n{}",
        support::oidc::SESSION_SECRET,
        support::oidc::idp_config(&idp, &up.url(), "")
    );
    let gw = support::Gateway::start_ready(support::parse_config(&text)).await;
    let browser = gw.browser();
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/orders")).await;
    assert_eq!(to_idp.location_param("redirect_uri").as_deref(), Some(&*format!("{PUBLIC_URL}/auth/callback")));
    let attempt = browser.state_cookies();
    assert_eq!(attempt.len(), 1);
    assert_eq!(attempt[0].path, "/auth/", "the attempt cookie goes to the prefix only");
    let back = browser.follow(&to_idp).await;
    assert!(back.location().as_str().starts_with(&format!("{PUBLIC_URL}/auth/callback?")), "{}", back.location());
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    assert_eq!(done.location().as_str(), format!("{PUBLIC_URL}/orders"));
    assert_eq!(browser.get(&format!("{PUBLIC_URL}/orders")).await.echo().uri, "/orders");
}

#[tokio::test]
async fn cookie_domain_shares_the_session_across_subdomains() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .server("public_url", q("https://app.example.test"))
        .session("cookie_domain", q("example.test"))
        .start()
        .await;
    let resp = gw.callback(&hs_token(&claims()), "/").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let all = set_cookies(&resp);
    // Under https a cookie with a Domain cannot be __Host-: plain name.
    assert!(!all.iter().any(|c| c.name.starts_with("__Host-")), "{all:?}");
    let cookie = all.iter().find(|c| c.name == COOKIE).unwrap_or_else(|| panic!("{all:?}"));
    assert_eq!(cookie.attr("Domain"), Some("example.test"), "{cookie:?}");
    for flag in ["Secure", "HttpOnly"] {
        assert!(cookie.has(flag), "{flag}: {cookie:?}");
    }
    assert_eq!(cookie.attr("Path"), Some("/"));
    // A browser sends it to a sibling host; porteiro opens it there.
    let resp = gw
        .get("/x")
        .header("host", "reports.example.test")
        .header("cookie", format!("{COOKIE}={}", cookie.value))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Without cookie_domain, under https: __Host- and no Domain.
    let host_only = Conf::new(&upstream.authority()).server("public_url", q("https://app.example.test")).start().await;
    let resp = host_only.callback(&hs_token(&claims()), "/").await;
    let all = set_cookies(&resp);
    let cookie = all.iter().find(|c| c.name == format!("__Host-{COOKIE}")).unwrap_or_else(|| panic!("{all:?}"));
    assert_eq!(cookie.attr("Domain"), None, "{cookie:?}");
}

#[tokio::test]
async fn rd_is_an_alias_of_redirect_url_at_sso_start() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    for (query, expected) in [
        ("rd=%2Ftickets%2F42%3Fx%3D1", "/tickets/42?x=1"),
        ("redirectUrl=%2Fdocs", "/docs"),
        // Hostile values become `/`, whichever name carries them.
        ("rd=%2F%2Fevil.example", "/"),
        ("rd=https%3A%2F%2Fevil.example%2F", "/"),
    ] {
        let resp = gw.navigate(&format!("/sso/start?{query}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{query}");
        let to = location(&resp);
        let sent: Vec<(String, String)> =
            url::Url::parse(&to).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert!(to.starts_with(&format!("{LOGIN_URL}?")), "{query}: {to}");
        assert_eq!(sent, vec![("redirectUrl".to_string(), expected.to_string())], "{query}: {to}");
    }
}

// === session size ===

const CODE_CLIENT: (&str, &str) = ("app1", "app1-secret-0123456789");

/// Mints a code for a user with `groups` and redeems it: the redemption's answer.
async fn code_login(gw: &support::auth::Gateway, groups: &[String]) -> reqwest::Response {
    let body = json!({"username": "ana", "firstName": "Ana", "lastName": "Souza", "emailId": "ana@example.com",
                      "readerGroupIds": groups});
    let resp = gw
        .client
        .post(gw.url("/sso/code"))
        .basic_auth(CODE_CLIENT.0, Some(CODE_CLIENT.1))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    let code = resp.json::<serde_json::Value>().await.unwrap()["code"].as_str().unwrap().to_string();
    gw.navigate(&format!("/sso/authorize?code={code}&redirectUrl=%2Fkb%2F")).send().await.unwrap()
}

/// README: an identity too large for one cookie is split into up to 5;
/// "beyond that the login fails with a clear error". A `code` login, whose
/// groups come in a JSON body (a `jwt` token in a URL is capped at 16 KiB,
/// which never needs 5 cookies).
#[tokio::test]
async fn a_session_needing_more_than_five_cookies_fails_the_login() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .raw(&format!(
            "[[providers]]\nid = \"kb\"\nkind = \"code\"\nlogin_url = \"https://app.test/login\"\n\
             clients = [{{ client_id = \"{}\", client_secret = \"{}\" }}]\n\n\
             [[routes]]\nid = \"kb\"\npath_prefix = \"/kb/\"\nupstream = \"http://{}\"\nlogin = \"kb\"\n",
            CODE_CLIENT.0,
            CODE_CLIENT.1,
            upstream.authority()
        ))
        .start()
        .await;
    // Random names: nothing for a compressor to shrink. 54 bytes each in
    // the JSON body.
    let groups = |n: usize| {
        (0..n).map(|_| format!("{:032x}{:016x}", rand::random::<u128>(), rand::random::<u64>())).collect::<Vec<_>>()
    };

    // A few chunks: signed in.
    let resp = code_login(&gw, &groups(120)).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap());
    let chunks = set_cookies(&resp).into_iter().filter(|c| c.name.starts_with(&format!("{COOKIE}_"))).count();
    assert!((2..=5).contains(&chunks), "{chunks} chunks");

    // Far more than 5 chunks: refused, no cookie at all.
    let resp = code_login(&gw, &groups(285)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&resp).iter().all(|c| !c.name.starts_with(COOKIE)), "{:?}", set_cookies(&resp));
    let body = resp.text().await.unwrap();
    assert!(body.contains("Sign-in failed"), "{body}");
    let metrics = support::admin_metrics(gw.running.admin_addr.unwrap()).await;
    let series = r#"porteiro_auth_failures_total{provider="kb",reason="identity_too_large"}"#;
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"porteiro_logins_total{provider="kb"}"#), Some(1.0), "{metrics}");
    assert_eq!(upstream.hits(), 0);
}
