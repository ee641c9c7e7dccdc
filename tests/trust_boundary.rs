//! One request, one meaning (DESIGN §8.1): requests that porteiro could
//! judge one way while the upstream or the ingress reads them another. Each
//! is sent as an attacker would, as raw bytes or raw HTTP/2 frames, since an
//! HTTP client library would normalise it first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use bytes::Bytes;
use reqwest::StatusCode;
use support::auth::*;

/// Two hosts on one upstream that dispatches on `Host`: `public.test` is
/// public, `admin.test` needs a login; plus `/admin/` protected on the
/// default host, `/assets/` public below a protected `/`, and a route for a
/// Java app that sets `allow_semicolons`.
async fn gateway(up: &RunningUpstream) -> Gateway {
    let upstream = format!("http://{}", up.authority());
    Conf::new(&up.authority())
        .route("public_paths", r#"["/assets/"]"#)
        .raw(&format!(
            r#"
[[routes]]
host = "public.test"
path_prefix = "/"
upstream = "{upstream}"
public = true

[[routes]]
host = "admin.test"
path_prefix = "/"
upstream = "{upstream}"
login = "intranet"

[[routes]]
path_prefix = "/open/"
upstream = "{upstream}"
public = true

[[routes]]
host = "java.test"
path_prefix = "/"
upstream = "{upstream}"
public = true
allow_semicolons = true

[[routes]]
host = "java.test"
path_prefix = "/admin/"
upstream = "{upstream}"
login = "intranet"
allow_semicolons = true
"#
        ))
        .start()
        .await
}

fn addr(gw: &Gateway) -> std::net::SocketAddr {
    gw.running.addr
}

/// The echo upstream's answer in a raw answer's body.
fn body_echo(answer: &str) -> Echo {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not echo JSON: {answer:?}"))
}

#[tokio::test]
async fn host_confusion_is_refused() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let a = addr(&gw);
    // The route was chosen by the absolute-form target's host while the
    // upstream dispatched on the client's own Host.
    let confused =
        raw_text(a, b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&confused), 400, "{confused}");
    for hostile in [
        &b"GET /x HTTP/1.1\r\nHost: public.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: admin.test\xff\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: public.test@admin.test\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: public.test/admin\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: public.test:80:81\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_text(a, hostile).await;
        assert_eq!(raw_status(&answer), 400, "{:?} -> {answer}", String::from_utf8_lossy(hostile));
    }
    assert_eq!(up.hits(), 0, "nothing hostile reached the upstream");
    // The host that chose the route is the Host the upstream receives.
    let fine =
        raw_text(a, b"GET http://public.test/x HTTP/1.1\r\nHost: PUBLIC.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&fine), 200, "{fine}");
    let echo = body_echo(&fine);
    assert_eq!(echo.all("host"), ["PUBLIC.test"]);
    let fine = raw_text(a, b"GET http://public.test/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(body_echo(&fine).all("host"), ["public.test"]);
    // An HTTP/1.0 request may come without a Host: it gets the host-less routes.
    let old = raw_text(a, b"GET /open/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(raw_status(&old), 200, "{old}");
}

/// Raw HTTP/2 (prior knowledge on the plain listener): `:authority` is the
/// request's host, and a `host` header naming another is refused.
#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let send = |h2: &mut h2::client::SendRequest<Bytes>, host: Option<&str>| {
        let mut req = http::Request::get("http://public.test/x");
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let (resp, _) = h2.send_request(req.body(()).unwrap(), true).unwrap();
        resp
    };
    let resp = send(&mut h2, Some("admin.test")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = send(&mut h2, None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let echo: Echo = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(echo.all("host"), ["public.test"]);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn paths_the_upstream_reads_differently_are_refused_or_judged_as_it_reads_them() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let a = addr(&gw);
    // Each of these is /admin/secret (or /private) to nginx or Tomcat; none
    // may reach the upstream without a login.
    for path in ["//admin/secret", "/open/..;/admin/secret", "/admin;x/secret", "/assets/..;/private", "/assets;/../x"]
    {
        let answer =
            raw_text(a, format!("GET {path} HTTP/1.1\r\nHost: any.test\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let status = raw_status(&answer);
        assert!(status == 400 || status == 401, "{path} -> {answer}");
    }
    assert_eq!(up.hits(), 0);
    // `//` is merged: the merged path is judged and sent upstream.
    let cookie = gw.login(&hs_token(&claims())).await;
    let answer = raw_text(
        a,
        format!("GET //admin//secret HTTP/1.1\r\nHost: any.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(body_echo(&answer).path(), "/admin/secret");
    // A route that allows `;` judges the path as Tomcat reads it.
    let java = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: java.test\r\nConnection: close\r\n\r\n");
    for path in ["/x/..;/admin/secret", "/admin;jsessionid=1/secret", "/;x/admin/secret"] {
        let answer = raw_text(a, java(path).as_bytes()).await;
        assert_eq!(raw_status(&answer), 401, "{path} -> {answer}");
    }
    assert_eq!(up.hits(), 1);
    let answer = raw_text(a, java("/app;jsessionid=1/x").as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(body_echo(&answer).path(), "/app;jsessionid=1/x", "params kept for the app");
}

#[tokio::test]
async fn raw_non_ascii_bytes_are_forwarded_exactly() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    // A path that is rewritten (a dot segment) and keeps its raw UTF-8.
    let answer =
        raw_text(addr(&gw), "GET /open/café/./ü HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n".as_bytes())
            .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(body_echo(&answer).path(), "/open/café/ü");
}

#[tokio::test]
async fn h2c_and_unlisted_upgrades_are_not_tunnelled() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let answer = raw_text(
        addr(&gw),
        b"GET /x HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    // The upstream would have switched; porteiro never asked it to.
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let echo = body_echo(&answer);
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(echo.all(name).is_empty(), "{name} forwarded: {echo:?}");
    }
    let config = Conf::new("127.0.0.1:1").route("upgrades", r#"["websocket", "h2c"]"#).toml();
    let err = porteiro::config::Config::from_toml(&config, "test").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("upgrades") && err.contains("h2c"), "{err}");
}

#[tokio::test]
async fn path_override_headers_never_reach_the_upstream() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let answer = raw_text(
        addr(&gw),
        b"GET /x HTTP/1.1\r\nHost: public.test\r\nX-Original-URL: /admin/secret\r\nX_Rewrite.URL: /admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let echo = body_echo(&answer);
    let names = echo.names();
    assert!(!names.iter().any(|n| n.contains("original") || n.contains("rewrite")), "{names:?}");
}

#[tokio::test]
async fn porteiro_cookie_never_goes_upstream_and_junk_cannot_shadow_it() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let a = addr(&gw);
    let cookie = gw.login(&hs_token(&claims())).await;
    // A cookie line holding a byte that is not UTF-8 still loses porteiro's.
    let mut request = b"GET /x HTTP/1.1\r\nHost: any.test\r\nConnection: close\r\nCookie: lang=portugu\xeas; ".to_vec();
    request.extend_from_slice(cookie.as_bytes());
    request.extend_from_slice(b"; theme=dark\r\n\r\n");
    let answer = raw_text(a, &request).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let echo = body_echo(&answer);
    let sent = echo.all("cookie");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let line = sent[0];
    assert!(!line.contains(COOKIE), "{line}");
    assert!(line.starts_with("lang=portugu") && line.ends_with("; theme=dark"), "{line}");
    // A junk cookie of porteiro's name tossed in after (or before) the real
    // one does not sign the user out.
    for line in [format!("{cookie}; {COOKIE}=junk"), format!("{COOKIE}=junk; {cookie}")] {
        let resp = gw.get("/x").header("cookie", line.as_str()).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{line}");
    }
}

#[tokio::test]
async fn http2_cookie_crumbs_go_upstream_as_one_line() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let cookie = gw.login(&hs_token(&claims())).await;
    let tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://app.test/x")
        .header("cookie", "a=1")
        .header("cookie", cookie.as_str())
        .header("cookie", "b=2")
        .body(())
        .unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200, "the session in a crumb is found");
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let echo: Echo = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(echo.all("cookie"), ["a=1; b=2"]);
}

#[tokio::test]
async fn forward_auth_judges_the_url_the_proxy_set() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up).await;
    let cookie = gw.login(&hs_token(&claims())).await;
    let ask = |headers: &[(&str, &str)], cookie: Option<&str>| {
        let mut req = gw.get("/sso/auth");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    // Behind Caddy or Traefik: the proxy sets X-Forwarded-Uri, the client
    // adds its own X-Original-URL naming a public path.
    let caddy = [("x-forwarded-host", "app.test"), ("x-forwarded-uri", "/admin/x"), ("x-original-url", "/open/x")];
    assert_eq!(ask(&caddy, None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(ask(&caddy, Some(&cookie)).await.unwrap().status(), StatusCode::FORBIDDEN);
    // The same client alone names a public URL: it passes, judged as itself.
    let public = [("x-forwarded-host", "app.test"), ("x-forwarded-uri", "/open/x")];
    assert_eq!(ask(&public, None).await.unwrap().status(), StatusCode::OK);
    // A malformed or missing URL: 401 without a session, 403 with one.
    for bad in [
        &[("x-original-url", "https://a.test/x%00")][..],
        &[("x-forwarded-uri", "/a"), ("x-forwarded-host", "a b")],
        &[],
    ] {
        assert_eq!(ask(bad, None).await.unwrap().status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(ask(bad, Some(&cookie)).await.unwrap().status(), StatusCode::FORBIDDEN, "{bad:?}");
    }
    // Envoy's ext_authz appends the original path to the check request's.
    let envoy = gw.get("/sso/auth/admin/secret?x=1").header("host", "app.test").send().await.unwrap();
    assert_eq!(envoy.status(), StatusCode::UNAUTHORIZED);
    let envoy = gw.navigate("/sso/auth/admin/secret?x=1").header("cookie", cookie.as_str()).send().await.unwrap();
    assert_eq!(envoy.status(), StatusCode::OK);
    assert!(envoy.headers().get("x-auth-request-email").is_some());
    let envoy = gw.navigate("/sso/auth/admin/secret").send().await.unwrap();
    assert_eq!(envoy.status(), StatusCode::FOUND, "a browser is sent to log in");
    let envoy = gw.get("/sso/auth/open/x").header("x-forwarded-uri", "/admin/x").send().await.unwrap();
    assert_eq!(envoy.status(), StatusCode::UNAUTHORIZED, "a second name must agree");
    assert_eq!(up.hits(), 0, "forward-auth never proxies");
}
