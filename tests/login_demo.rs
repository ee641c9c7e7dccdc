//! The shipped demo, `gateway.toml`, signed into hop by hop as a browser
//! would: the built-in demo login page mints the token a customer's login
//! page would, and the built-in whoami upstream shows the identity headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use porteiro::config::Config;
use reqwest::StatusCode;
use support::auth::*;

/// `gateway.toml` from the crate root, listening on free ports.
fn demo_config() -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let text = std::fs::read_to_string(path).unwrap();
    for fixed in ["\"127.0.0.1:8080\"", "\"127.0.0.1:9090\""] {
        assert!(text.contains(fixed), "gateway.toml no longer listens on {fixed}: update this test");
    }
    let text = text.replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"").replace("\"127.0.0.1:9090\"", "\"127.0.0.1:0\"");
    Config::from_toml(&text, "gateway.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn demo_login_hop_by_hop() {
    let gw = Gateway::start(demo_config()).await;

    // Hop 1: the home page sends a browser to the demo login page, on
    // porteiro itself.
    let resp = gw.navigate("/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let login = location(&resp);
    assert_eq!(login, "/sso/demo-login?redirectUrl=%2F");

    // Hop 2: the login form.
    let resp = gw.navigate(&login).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let form = resp.text().await.unwrap();
    assert!(form.contains(r#"<form method="post" action="/sso/demo-login">"#), "{form}");
    assert!(form.contains(r#"<input type="hidden" name="redirectUrl" value="/">"#), "{form}");

    // Hop 3: posting it mints a token and sends the browser to the callback.
    let resp = gw
        .client
        .post(gw.url("/sso/demo-login"))
        .header("accept", "text/html")
        .form(&[
            ("name", "Ana Souza"),
            ("email", "ana@example.com"),
            ("groups", "support, agents"),
            ("redirectUrl", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(set_cookies(&resp).is_empty(), "the demo page itself sets no session");
    let callback = location(&resp);
    assert!(callback.starts_with("/sso/callback?"), "{callback}");
    let params = query_of(&callback);
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(param("redirectUrl"), Some("/"));
    assert_eq!(param("jwt").map(|t| t.split('.').count()), Some(3));

    // Hop 4: the callback starts the session.
    let resp = gw.navigate(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), "/");
    let jar = Jar::default();
    jar.absorb(&resp);
    assert!(jar.get(COOKIE).is_some(), "{:?}", set_cookies(&resp));
    // The demo token is single use like any other.
    let again = gw.get(&callback).send().await.unwrap();
    assert_eq!(json_error(again, StatusCode::UNAUTHORIZED).await, "replayed");

    // Hop 5: whoami shows what the app receives, identity rows highlighted.
    let resp = gw.navigate("/").header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    assert!(page.contains("<h1>whoami</h1>"), "{page}");
    for row in [
        r#"<tr class="id"><th>x-forwarded-user</th><td>ana@example.com</td></tr>"#,
        r#"<tr class="id"><th>x-forwarded-email</th><td>ana@example.com</td></tr>"#,
        r#"<tr class="id"><th>x-forwarded-groups</th><td>support,agents</td></tr>"#,
        r#"<tr class="id"><th>x-name</th><td>Ana Souza</td></tr>"#,
    ] {
        assert!(page.contains(row), "missing {row} in\n{page}");
    }
    assert!(!page.contains("porteiro_session"), "the session cookie reached the app");

    // The public status route needs no login.
    let resp = gw.navigate("/status/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn demo_login_form_checks_its_input() {
    let gw = Gateway::start(demo_config()).await;
    let resp = gw
        .client
        .post(gw.url("/sso/demo-login"))
        .form(&[("name", "Ana"), ("email", "not-an-email"), ("redirectUrl", "//evil.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let page = resp.text().await.unwrap();
    assert!(page.contains("valid email"), "{page}");
    assert!(page.contains(r#"name="redirectUrl" value="/""#), "the return path was sanitised: {page}");
}
