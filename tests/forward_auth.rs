//! `GET /sso/auth`, the forward-auth endpoint, called as an ingress would:
//! the original URL in `X-Original-URL` or `X-Forwarded-Host/-Uri`, the
//! browser's cookies passed along (DESIGN 1, 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::auth::*;

/// A gateway whose `/` route has a public `/assets/` path, plus a host-bound
/// route for `admin.test` that only the `ops` group may use.
async fn gateway() -> (RunningUpstream, Gateway) {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .route("public_paths", r#"["/assets/"]"#)
        .raw(&format!(
            "[[routes]]\nhost = \"admin.test\"\npath_prefix = \"/\"\nupstream = \"http://{}\"\nlogin = \"intranet\"\n\
             allow = {{ groups = [\"ops\"] }}\n",
            upstream.authority()
        ))
        .start()
        .await;
    (upstream, gw)
}

/// `GET /sso/auth` asking about `original` (`X-Original-URL`).
fn ask(gw: &Gateway, original: &str, cookie: Option<&str>) -> reqwest::RequestBuilder {
    let mut req = gw.get("/sso/auth").header("x-original-url", original);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn signed_in_users_pass_with_identity_headers() {
    let (upstream, gw) = gateway().await;
    let cookie = gw.login(&hs_token(&claims_with(json!({"userid": "C-5"})))).await;
    let resp = ask(&gw, "https://app.test/tickets/1?x=y", Some(&cookie)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-auth-request-user").as_deref(), Some("C-5"));
    assert_eq!(header(&resp, "x-auth-request-email").as_deref(), Some("ana@example.com"));
    assert_eq!(header(&resp, "x-auth-request-groups").as_deref(), Some("support,agents"));
    assert_eq!(header(&resp, "x-auth-request-preferred-username").as_deref(), Some("C-5"));
    assert_eq!(header(&resp, "x-name").as_deref(), Some("Ana Souza"));
    assert_eq!(header(&resp, "x-forwarded-user"), None, "forward-auth answers X-Auth-Request-*");
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
    assert!(set_cookies(&resp).is_empty());

    // The same with X-Forwarded-Host + X-Forwarded-Uri (Traefik, Caddy).
    let resp = gw
        .get("/sso/auth")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.test")
        .header("x-forwarded-uri", "/tickets/1?x=y")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-auth-request-user").as_deref(), Some("C-5"));
    // A path-only X-Original-URL with the host from X-Forwarded-Host.
    let resp = gw
        .get("/sso/auth")
        .header("x-original-url", "/tickets/2")
        .header("x-forwarded-host", "app.test")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.hits(), 0, "forward-auth never proxies");
}

#[tokio::test]
async fn not_signed_in_is_401_unless_redirect_is_asked_for() {
    let (_upstream, gw) = gateway().await;
    // nginx turns a 401 into its own login redirect: 401 whatever the Accept.
    for accept in ["text/html", "application/json"] {
        let resp = ask(&gw, "https://app.test/tickets/1?x=y", None).header("accept", accept).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{accept}");
        assert!(resp.headers().get("location").is_none());
    }
    // Forged identity headers in the auth request change nothing.
    let resp = ask(&gw, "https://app.test/tickets/1", None)
        .header("x-auth-request-user", "admin")
        .header("x-forwarded-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("x-auth-request-user").is_none());

    // ?redirect=true (Traefik, Caddy pass the answer on): a browser
    // navigation goes to the login page with the original path and query.
    let resp = gw
        .get("/sso/auth?redirect=true")
        .header("x-original-url", "https://app.test/tickets/1?x=y")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let login = location(&resp);
    assert!(login.starts_with(LOGIN_URL), "{login}");
    assert_eq!(query_of(&login), [("redirectUrl".to_string(), "/tickets/1?x=y".to_string())]);
    // ...but an API client, or a POST described by X-Forwarded-Method, still gets 401.
    let resp = ask(&gw, "https://app.test/tickets/1", None).query(&[("redirect", "true")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = ask(&gw, "https://app.test/tickets/1", None)
        .query(&[("redirect", "true")])
        .header("accept", "text/html")
        .header("x-forwarded-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signed_in_but_not_allowed_is_403() {
    let (_upstream, gw) = gateway().await;
    let ana = gw.login(&hs_token(&claims())).await;
    let olga = gw.login(&hs_token(&claims_with(json!({"email": "olga@example.com", "groups": ["ops"]})))).await;
    // The host of the original URL picks the route.
    let resp = ask(&gw, "https://admin.test/users", Some(&ana)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("x-auth-request-user").is_none());
    let resp = ask(&gw, "https://admin.test/users", Some(&ana)).query(&[("redirect", "true")]);
    assert_eq!(resp.header("accept", "text/html").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let resp = ask(&gw, "https://admin.test/users", Some(&olga)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-auth-request-email").as_deref(), Some("olga@example.com"));
    // Ana may use app.test.
    let resp = ask(&gw, "https://app.test/users", Some(&ana)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn public_paths_dot_segments_and_encoded_slashes() {
    let (_upstream, gw) = gateway().await;
    let resp = ask(&gw, "https://app.test/assets/app.css", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("x-auth-request-user").is_none());
    // Dot segments are resolved before the public/protected decision.
    for sneaky in ["/assets/../tickets/1", "/assets/%2e%2e/tickets/1", "/assets/./../tickets/1"] {
        let resp = ask(&gw, &format!("https://app.test{sneaky}"), None).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{sneaky}");
    }
    // An encoded slash is refused, as on the proxy path: an upstream that
    // decodes it would see /assets/../tickets/1. Forward-auth answers only
    // 200/401/403 (nginx makes anything else a 500): 401 without a session,
    // 403 with one.
    let cookie = gw.login(&hs_token(&claims())).await;
    for sneaky in
        ["/assets/..%2Ftickets/1", "/assets/..%2ftickets/1", "/assets/..%5Ctickets/1", "/assets/..;/tickets/1"]
    {
        let resp = ask(&gw, &format!("https://app.test{sneaky}"), None).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{sneaky}");
        let resp = ask(&gw, &format!("https://app.test{sneaky}"), Some(&cookie)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{sneaky} signed in");
        // And the proxy path refuses them too.
        let proxied = gw.get(sneaky).send().await.unwrap();
        assert_eq!(proxied.status(), StatusCode::BAD_REQUEST, "{sneaky} proxied");
    }
}

#[tokio::test]
async fn no_original_url_or_revoked_session() {
    let (_upstream, gw) = gateway().await;
    // No URL named: 401 without a session, 403 with one (never a 400, which
    // nginx would turn into a 500).
    let resp = gw.get("/sso/auth").send().await.unwrap();
    assert_eq!(json_error(resp, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let cookie = gw.login(&hs_token(&claims())).await;
    let resp = gw.get("/sso/auth").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(ask(&gw, "https://app.test/", Some(&cookie)).send().await.unwrap().status(), StatusCode::OK);
    let out = gw.get("/sso/logout").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    let resp = ask(&gw, "https://app.test/", Some(&cookie)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "revoked on every request");
}
