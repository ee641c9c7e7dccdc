//! porteiro as the forward-auth target of a real nginx (`auth_request`), the
//! way DESIGN 1 deploys it behind an existing ingress: nginx asks
//! `/sso/auth`, turns a 401 into its own redirect to `/sso/start`, proxies
//! `/sso/` to porteiro, and hands the user to the app in a header.
//!
//! nginx must be installed (`.ci/run` installs nginx-light); without it this
//! test fails rather than skips, so a green run always means it ran.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use support::auth::*;
use support::nginx::Nginx;

/// The nginx `server` of DESIGN 1's forward-auth deployment.
fn forward_auth_server(porteiro: &str, upstream: &str) -> String {
    format!(
        r#"        location / {{
            auth_request /sso/auth;
            auth_request_set $user $upstream_http_x_auth_request_user;
            auth_request_set $email $upstream_http_x_auth_request_email;
            proxy_set_header X-Forwarded-User $user;
            proxy_set_header X-Forwarded-Email $email;
            proxy_pass http://{upstream};
            error_page 401 = @login;
        }}
        location = /sso/auth {{
            internal;
            proxy_pass http://{porteiro}/sso/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}
        location /sso/ {{
            proxy_pass http://{porteiro};
        }}
        location @login {{
            return 302 /sso/start?redirectUrl=$request_uri;
        }}"#
    )
}

/// The path and query of a Location, absolute or not.
fn path_of(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_porteiro() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let nginx = Nginx::start(&forward_auth_server(&gw.running.addr.to_string(), &upstream.authority()));
    let client = client();
    let get = |path: &str| client.get(nginx.url(path)).header("accept", "text/html");

    // Not signed in: porteiro answers nginx's subrequest 401, nginx sends
    // the browser to /sso/start with the original path.
    let resp = get("/tickets/1?x=y").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND, "nginx error log:\n{}", nginx.error_log());
    assert_eq!(path_of(&location(&resp)), "/sso/start?redirectUrl=/tickets/1?x=y");
    assert_eq!(upstream.hits(), 0);
    // A client's own X-Forwarded-User does not get it in.
    let resp = get("/tickets/1").header("x-forwarded-user", "admin").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(upstream.hits(), 0);

    // /sso/start (through nginx) sends the browser on to the login page.
    let resp = get("/sso/start?redirectUrl=/tickets/1?x=y").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let login = location(&resp);
    assert!(login.starts_with(LOGIN_URL), "{login}");
    assert_eq!(query_of(&login), [("redirectUrl".to_string(), "/tickets/1?x=y".to_string())]);

    // The login page's callback, through nginx: the session cookie is minted.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("jwt", &hs_token(&claims_with(serde_json::json!({"userid": "C-9"}))))
        .append_pair("redirectUrl", "/tickets/1?x=y")
        .finish();
    let resp = get(&format!("/sso/callback?{query}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), "/tickets/1?x=y");
    let jar = Jar::default();
    jar.absorb(&resp);
    assert!(jar.get(COOKIE).is_some(), "{:?}", set_cookies(&resp));

    // Signed in: nginx lets the request through with the user porteiro named,
    // over whatever the client claimed.
    let resp = get("/tickets/1?x=y").header("cookie", jar.header()).header("x-forwarded-user", "admin").send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "nginx error log:\n{}", nginx.error_log());
    let echo = Echo::from(resp).await;
    assert_eq!(echo.path(), "/tickets/1");
    assert_eq!(echo.query(), Some("x=y"));
    assert_eq!(echo.header("x-forwarded-user"), Some("C-9"));
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    assert_eq!(upstream.hits(), 1);

    // Logout through nginx; the old cookie no longer gets past auth_request.
    let resp = get("/sso/logout").header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get("/tickets/1").header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(upstream.hits(), 1);
}
