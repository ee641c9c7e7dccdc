//! What a signed-in (or not) client can make porteiro do: identity headers it
//! forges never reach the upstream, `redirectUrl` never leaves the site, and
//! a route's `allow` rules answer 403 (DESIGN 3, 4, 5, 6, 8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::auth::*;

/// Identity headers a client might forge, spelled the ways frameworks fold
/// together (case, `_`, `.`), plus the route's custom `X-Name`.
const FORGED: [(&str, &str); 9] = [
    ("X-Forwarded-User", "admin"),
    ("x_forwarded_email", "admin@example.com"),
    ("X.Forwarded.Groups", "admins"),
    ("X-FORWARDED-PREFERRED-USERNAME", "root"),
    ("X-AUTH-REQUEST-USER", "admin"),
    ("x_auth_request_email", "admin@example.com"),
    ("X-Auth-Request-Groups", "admins"),
    ("X-Name", "Administrator"),
    ("x_name", "Administrator"),
];

/// Sends a GET with the forged headers, written by hand so their spelling
/// reaches porteiro exactly as given; returns the echo upstream's JSON.
async fn forged_request(gw: &Gateway, path: &str, cookie: Option<&str>) -> Echo {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    for (name, value) in FORGED {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    req.push_str("\r\n");
    let answer = raw_text(gw.running.addr, req.as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{path}: {answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    // The echo upstream answers with a Content-Length body (no chunking).
    serde_json::from_str(body).unwrap_or_else(|_| panic!("{path}: not echo JSON: {body}"))
}

/// No header the upstream saw is one porteiro owns, in any spelling.
fn assert_no_identity_headers(echo: &Echo, case: &str) {
    let owned = [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
        "x-auth-request-preferred-username",
    ];
    for name in echo.names() {
        let folded = name.replace(['_', '.'], "-");
        assert!(!owned.contains(&folded.as_str()), "{case}: {name} reached the upstream: {:?}", echo.all(name));
    }
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::with_public_parts(&upstream.authority()).start().await;
    let cookie = gw.login(&hs_token(&claims_with(json!({"userid": "C-1"})))).await;

    // Protected, signed in: exactly porteiro's values, once each.
    let echo = forged_request(&gw, "/tickets/1", Some(&cookie)).await;
    assert_eq!(echo.all("x-forwarded-user"), ["C-1"]);
    assert_eq!(echo.all("x-forwarded-email"), ["ana@example.com"]);
    assert_eq!(echo.all("x-forwarded-groups"), ["support,agents"]);
    assert_eq!(echo.all("x-forwarded-preferred-username"), ["C-1"]);
    assert_eq!(echo.all("x-name"), ["Ana Souza"]);
    let names = echo.names();
    for spelled in ["x_forwarded_email", "x.forwarded.groups", "x_name", "x-auth-request-user"] {
        assert!(!names.contains(&spelled), "{spelled} reached the upstream");
    }
    for name in &names {
        assert!(!name.starts_with("x-auth-request") && !name.starts_with("x_auth_request"), "{name}");
    }

    // Public route and a public path of the protected route, with and
    // without a session: no identity at all.
    for (path, c) in [("/status/ok", None), ("/status/ok", Some(cookie.as_str())), ("/assets/a.css", None)] {
        let echo = forged_request(&gw, path, c).await;
        assert_no_identity_headers(&echo, path);
        assert!(echo.all("x-name").is_empty(), "{path}: X-Name of the protected route leaked");
    }
    let echo = forged_request(&gw, "/assets/a.css", Some(&cookie)).await;
    assert_no_identity_headers(&echo, "public path with a session");
}

#[tokio::test]
async fn redirect_url_never_leaves_the_site() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).server("public_url", q("https://helpdesk.example.com")).start().await;
    let hostile = [
        "//evil.com",
        "/\\evil.com",
        "\\/evil.com",
        "https:evil.com",
        "https://evil.com/",
        "http://evil.com",
        "%2F%2Fevil.com",
        "/%2F/evil.com",
        "/%2f%2fevil.com",
        "/%5Cevil.com",
        "/%09/evil.com",
        "/\t/evil.com",
        "/%252F%252Fevil.com",
        "/x\r\nSet-Cookie: pwned=1",
        "/x%0d%0aSet-Cookie:%20pwned=1",
        "javascript:alert(1)",
        "evil.com",
        " /x",
        "https://helpdesk.example.com.evil.com/",
        "https://helpdesk.example.com@evil.com/",
    ];
    for target in hostile {
        let resp = gw.callback(&hs_token(&claims()), target).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{target:?}");
        assert_eq!(location(&resp), "/", "{target:?}");
        let cookies = set_cookies(&resp);
        assert_eq!(cookies.len(), 1, "{target:?}: {cookies:?}");
        assert_eq!(cookies[0].name, "__Host-porteiro_session", "{target:?}");

        // /sso/start sends the same value on to the login page as `/`.
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("redirectUrl", target).finish();
        let resp = gw.navigate(&format!("/sso/start?{query}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{target:?}");
        assert_eq!(query_of(&location(&resp)), [("redirectUrl".to_string(), "/".to_string())], "{target:?}");
    }
    for (target, kept) in [
        ("/tickets/1?x=y", "/tickets/1?x=y"),
        ("/kb/a%20b?q=a%2Fb", "/kb/a%20b?q=a%2Fb"),
        ("https://helpdesk.example.com/kb?x=1", "/kb?x=1"),
    ] {
        let resp = gw.callback(&hs_token(&claims()), target).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{target:?}");
        assert_eq!(location(&resp), kept, "{target:?}");
    }
    // No redirectUrl at all: home.
    let resp = gw.navigate(&format!("/sso/callback?jwt={}", hs_token(&claims()))).send().await.unwrap();
    assert_eq!(location(&resp), "/");
}

#[tokio::test]
async fn return_param_names_the_login_pages_parameter() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).provider("return_param", q("RedirectPath")).start().await;
    let resp = gw.navigate("/docs/start?tab=2").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(query_of(&location(&resp)), [("RedirectPath".to_string(), "/docs/start?tab=2".to_string())]);
    // The login page may answer with either name.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("jwt", &hs_token(&claims()))
        .append_pair("RedirectPath", "/docs/start?tab=2")
        .finish();
    let resp = gw.navigate(&format!("/sso/callback?{query}")).send().await.unwrap();
    assert_eq!(location(&resp), "/docs/start?tab=2");
    let resp = gw.callback(&hs_token(&claims()), "/docs/other").await;
    assert_eq!(location(&resp), "/docs/other");
}

#[tokio::test]
async fn allow_rules_answer_403() {
    let upstream = FakeUpstream::new("app").start().await;
    let up = upstream.authority();
    let gw = Conf::new(&up)
        .route("allow", r#"{ email_domains = ["example.com"] }"#)
        .raw(&format!(
            "[[routes]]\npath_prefix = \"/ops/\"\nupstream = \"http://{up}\"\nlogin = \"intranet\"\n\
             allow = {{ groups = [\"ops\", \"sre\"] }}\n\n\
             [[routes]]\npath_prefix = \"/finance/\"\nupstream = \"http://{up}\"\nlogin = \"intranet\"\n\
             allow = {{ claims = {{ dept = [\"finance\"] }} }}\n\n\
             [[routes]]\npath_prefix = \"/vip/\"\nupstream = \"http://{up}\"\nlogin = \"intranet\"\n\
             allow = {{ emails = [\"boss@example.com\"] }}\n"
        ))
        .start()
        .await;
    let user = |c: serde_json::Value| {
        let token = hs_token(&claims_with(c));
        let gw = &gw;
        async move { gw.login(&token).await }
    };
    let ana = user(json!({"email": "ana@example.com", "groups": ["support"]})).await;
    let mixed_case = user(json!({"email": "Ana@Example.COM"})).await;
    let eve = user(json!({"email": "eve@evil.test"})).await;
    let lookalike = user(json!({"email": "eve@example.com.evil.test"})).await;
    let sub = user(json!({"email": "eve@sub.example.com"})).await;
    let no_email = user(json!({"email": null, "userid": "U-9"})).await;
    let olga = user(json!({"email": "olga@example.com", "groups": ["sre"]})).await;
    let fin = user(json!({"email": "fin@example.com", "dept": "finance"})).await;
    let fin_list = user(json!({"email": "fin2@example.com", "dept": ["sales", "finance"]})).await;
    let sales = user(json!({"email": "sam@example.com", "dept": "sales"})).await;
    let boss = user(json!({"email": "BOSS@example.com"})).await;

    let cases = [
        ("/", &ana, true),
        ("/", &mixed_case, true),
        ("/", &eve, false),
        ("/", &lookalike, false),
        ("/", &sub, false),
        ("/", &no_email, false),
        ("/ops/", &olga, true),
        ("/ops/", &ana, false),
        ("/finance/", &fin, true),
        ("/finance/", &fin_list, true),
        ("/finance/", &sales, false),
        ("/finance/", &ana, false),
        ("/vip/", &boss, true),
        ("/vip/", &ana, false),
    ];
    for (path, cookie, allowed) in cases {
        let hits = upstream.hits();
        let api = gw.get(path).header("cookie", cookie.as_str()).send().await.unwrap();
        if allowed {
            assert_eq!(api.status(), StatusCode::OK, "{path} {cookie}");
            assert_eq!(upstream.hits(), hits + 1);
            continue;
        }
        assert_eq!(json_error(api, StatusCode::FORBIDDEN).await, "forbidden", "{path}");
        let page = gw.navigate(path).header("cookie", cookie.as_str()).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(set_cookies(&page).is_empty(), "a 403 keeps the session");
        assert!(page.text().await.unwrap().contains("not allowed"));
        assert_eq!(upstream.hits(), hits, "{path}: a refused request reached the upstream");
    }
}
