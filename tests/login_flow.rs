//! The `jwt` browser login, hop by hop with a hand-kept cookie jar: protected
//! page -> login page -> callback -> session cookie -> upstream with identity
//! headers; the answers for API clients; the cookie's flags under HTTPS and
//! its validity clamped by config (DESIGN 2.1, 3, 4, 6).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::auth::*;

#[tokio::test]
async fn browser_flow_hop_by_hop_under_https_public_url() {
    let upstream = FakeUpstream::new("app").start().await;
    // Browsers reach porteiro over HTTPS (a TLS terminator in front); the
    // test talks plain HTTP to the listener to see the cookie flags.
    // Custom headers may name the standard identity fields too.
    let headers = r#"{ "X-Name" = "name", "X-Sub" = "sub", "X-Mail" = "email", "X-Login" = "preferred_username", "X-Teams" = "groups" }"#;
    let gw = Conf::new(&upstream.authority())
        .server("public_url", q("https://helpdesk.example.com"))
        .route("headers", headers)
        .start()
        .await;
    let cookie_name = "__Host-porteiro_session";

    // Hop 1: a browser opens a protected page and is sent to the login page
    // with its path and query in redirectUrl.
    let resp = gw.navigate("/tickets/1?x=y").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let login = location(&resp);
    assert!(login.starts_with(&format!("{LOGIN_URL}?")), "{login}");
    assert_eq!(query_of(&login), [("redirectUrl".to_string(), "/tickets/1?x=y".to_string())]);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(set_cookies(&resp).is_empty(), "no cookie before login");

    // The same page asked for by an API client, a POST, or an XHR: 401 JSON.
    let api = gw.get("/tickets/1?x=y").send().await.unwrap();
    assert_eq!(json_error(api, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let post = gw.client.post(gw.url("/tickets/1")).header("accept", "text/html").body("x=1").send().await.unwrap();
    assert_eq!(json_error(post, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let xhr = gw.navigate("/tickets/1").header("x-requested-with", "XMLHttpRequest").send().await.unwrap();
    assert_eq!(xhr.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream unauthenticated");

    // Hop 2: the customer's login page mints a token and sends the browser
    // back to the callback with the redirectUrl it was given.
    let token = hs_token(&claims_with(json!({"userid": "C-42", "name": "Ana Souza"})));
    let resp = gw.callback(&token, "/tickets/1?x=y").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), "/tickets/1?x=y");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    let cookies = set_cookies(&resp);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert_eq!(c.name, cookie_name);
    assert!(c.value.len() > 40, "sealed value: {}", c.value);
    assert!(!c.value.contains("Ana") && !c.value.contains("C-42"), "the cookie is encrypted");
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=900"] {
        assert!(c.has(flag), "{flag} missing from {c:?}");
    }
    assert!(c.attr("Domain").is_none(), "__Host- cookies carry no Domain");
    let jar = Jar::default();
    jar.absorb(&resp);
    jar.set("theme", "dark");
    jar.set("app_session", "abc");

    // Hop 3: the browser follows with the cookie; the upstream sees who it is,
    // never porteiro's cookie, but the app's own cookies untouched.
    let resp = gw.navigate("/tickets/1?x=y").header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = Echo::from(resp).await;
    assert_eq!(echo.path(), "/tickets/1");
    assert_eq!(echo.query(), Some("x=y"));
    assert_eq!(echo.header("x-forwarded-user"), Some("C-42"));
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("support,agents"));
    assert_eq!(echo.header("x-forwarded-preferred-username"), Some("C-42"));
    assert_eq!(echo.header("x-name"), Some("Ana Souza"));
    assert_eq!(echo.header("x-sub"), Some("C-42"));
    assert_eq!(echo.header("x-mail"), Some("ana@example.com"));
    assert_eq!(echo.header("x-login"), Some("C-42"));
    assert_eq!(echo.header("x-teams"), Some("support,agents"));
    // A second request with the same cookie (the session now cached) carries the same identity.
    let resp = gw.navigate("/tickets/2").header("cookie", jar.header()).send().await.unwrap();
    let again = Echo::from(resp).await;
    assert_eq!(again.header("x-forwarded-groups"), Some("support,agents"));
    assert_eq!(again.header("x-teams"), Some("support,agents"));
    let sent = echo.all("cookie").join("; ");
    assert!(!sent.contains(cookie_name), "porteiro's cookie leaked upstream: {sent}");
    let mut kept: Vec<&str> = sent.split("; ").collect();
    kept.sort();
    assert_eq!(kept, ["app_session=abc", "theme=dark"]);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn plain_http_cookie_has_no_secure_flag_and_no_host_prefix() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let resp = gw.callback(&hs_token(&claims()), "/").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cookies = set_cookies(&resp);
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].name, COOKIE);
    assert!(!cookies[0].has("Secure"), "{cookies:?}");
    assert!(cookies[0].has("HttpOnly") && cookies[0].has("SameSite=Lax") && cookies[0].has("Path=/"));

    // Only the session cookie, alone in the Cookie header: the upstream gets
    // no Cookie header at all.
    let echo = gw.echo("/", &format!("{COOKIE}={}", cookies[0].value)).await;
    assert!(echo.all("cookie").is_empty(), "{:?}", echo.all("cookie"));
    assert_eq!(echo.header("x-forwarded-user"), Some("ana@example.com"), "sub falls back to email");
}

#[tokio::test]
async fn session_validity_is_clamped_to_5_to_1440_minutes() {
    let upstream = FakeUpstream::new("app").start().await;
    for (minutes, max_age, warned) in [(1, 300, true), (15, 900, false), (5000, 86400, true)] {
        let conf = Conf::new(&upstream.authority()).session("validity_minutes", minutes.to_string());
        let config = conf.config();
        let warning = config.warnings.iter().any(|w| w.contains("session.validity_minutes"));
        assert_eq!(warning, warned, "validity_minutes = {minutes}: {:?}", config.warnings);
        let gw = Gateway::start(config).await;
        let resp = gw.callback(&hs_token(&claims()), "/").await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        let cookies = set_cookies(&resp);
        assert_eq!(
            cookies[0].attr("Max-Age"),
            Some(max_age.to_string().as_str()),
            "validity_minutes = {minutes}: {cookies:?}"
        );
        // The session itself (not only the browser's hint) lasts that long.
        let info = gw.get("/sso/userinfo").header("cookie", format!("{COOKIE}={}", cookies[0].value)).send().await;
        let info: serde_json::Value = info.unwrap().json().await.unwrap();
        let expires = info["expires_at"].as_u64().unwrap();
        let want = now() + max_age;
        assert!(expires.abs_diff(want) <= 2, "validity_minutes = {minutes}: expires_at {expires}, want ~{want}");
    }
}

#[tokio::test]
async fn public_paths_and_public_routes_need_no_session() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::with_public_parts(&upstream.authority()).start().await;
    for path in ["/assets/app.css", "/status/health"] {
        let resp = gw.navigate(path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let echo = Echo::from(resp).await;
        assert_eq!(echo.header("x-forwarded-user"), None);
    }
    // A sibling of a public prefix is still protected.
    let resp = gw.navigate("/assetsx").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
}
