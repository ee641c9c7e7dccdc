//! The session cookie after login: tampered, expired and foreign cookies are
//! no session; `previous_secrets` keep old cookies valid during rotation;
//! logout, `/sso/userinfo`, and revocation by the admin API (DESIGN 3, 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use porteiro::auth::Identity;
use porteiro::auth::session::SessionCookies;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::auth::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// Asserts `cookie` is no session: a browser is sent to log in, an API
/// client gets 401, nothing reaches the upstream.
async fn assert_no_session(gw: &Gateway, upstream: &RunningUpstream, cookie: &str, case: &str) {
    let hits = upstream.hits();
    let resp = gw.navigate("/tickets/7").header("cookie", cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND, "{case}");
    assert_eq!(query_of(&location(&resp)), [("redirectUrl".to_string(), "/tickets/7".to_string())], "{case}");
    let resp = gw.get("/tickets/7").header("cookie", cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{case}");
    let resp = gw.get("/sso/userinfo").header("cookie", cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{case}: userinfo");
    assert_eq!(upstream.hits(), hits, "{case}: reached the upstream");
}

/// The value of the session cookie in a `Cookie` header made by `Gateway::login`.
fn session_value(cookie: &str) -> &str {
    cookie.strip_prefix(&format!("{COOKIE}=")).expect("the session cookie alone")
}

#[tokio::test]
async fn tampered_and_truncated_cookies_are_no_session() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let cookie = gw.login(&hs_token(&claims())).await;
    gw.echo("/tickets/7", &cookie).await;
    let value = session_value(&cookie).to_string();

    // One character changed, in the nonce, the ciphertext and the tag.
    for at in [5, value.len() / 2, value.len() - 3] {
        let mut bytes = value.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{COOKIE}={}", String::from_utf8(bytes).unwrap());
        assert_no_session(&gw, &upstream, &tampered, &format!("char {at} flipped")).await;
    }
    assert_no_session(&gw, &upstream, &format!("{COOKIE}={}", &value[..value.len() - 4]), "truncated").await;
    assert_no_session(&gw, &upstream, &format!("{COOKIE}="), "empty").await;
    assert_no_session(&gw, &upstream, &format!("{COOKIE}=not-base64!!"), "garbage").await;
    // The same sealed value under another cookie name does not open.
    assert_no_session(&gw, &upstream, &format!("other_session={value}"), "renamed").await;
    // The original still works.
    gw.echo("/tickets/7", &cookie).await;
}

/// A session cookie sealed with `secret`, as porteiro writes it, for an
/// identity valid from `iat` to `exp`.
fn minted_cookie(secret: &str, iat: u64, exp: u64) -> String {
    let conf = Conf::new("127.0.0.1:9").session("secret", q(secret));
    let sessions = SessionCookies::new(&conf.config().session, false).unwrap();
    let identity = Identity {
        sid: random_id(),
        provider: "intranet".into(),
        sub: "ana@example.com".into(),
        name: Some("Ana Souza".into()),
        email: Some("ana@example.com".into()),
        username: None,
        groups: vec![],
        claims: BTreeMap::new(),
        iat,
        exp,
        oidc_sid: None,
        renew_until: None,
        header_values: Default::default(),
    };
    let set = sessions.write(&identity, &http::HeaderMap::new()).unwrap();
    set[0].to_str().unwrap().split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn an_expired_session_is_no_session() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let now = now();
    // Control: a cookie minted the same way but still valid works.
    let valid = minted_cookie(SESSION_SECRET, now - 60, now + 600);
    let echo = gw.echo("/", &valid).await;
    assert_eq!(echo.header("x-forwarded-user"), Some("ana@example.com"));
    // Expired a second ago, and long ago: the server checks, not the browser.
    assert_no_session(&gw, &upstream, &minted_cookie(SESSION_SECRET, now - 901, now - 1), "expired now").await;
    assert_no_session(&gw, &upstream, &minted_cookie(SESSION_SECRET, now - 9000, now - 8100), "expired long ago").await;
}

#[tokio::test]
async fn session_secret_rotation_with_previous_secrets() {
    const OLD: &str = "old-session-secret-0123456789abcdefgh";
    const NEW: &str = "new-session-secret-0123456789abcdefgh";
    let upstream = FakeUpstream::new("app").start().await;
    let old_gw = Conf::new(&upstream.authority()).session("secret", q(OLD)).start().await;
    let cookie = old_gw.login(&hs_token(&claims())).await;
    old_gw.echo("/", &cookie).await;

    // Another gateway with a different secret: a foreign cookie.
    let new_only = Conf::new(&upstream.authority()).session("secret", q(NEW)).start().await;
    assert_no_session(&new_only, &upstream, &cookie, "cookie of another secret").await;

    // Rotated: the new secret seals, the old one still opens.
    let rotated = Conf::new(&upstream.authority())
        .session("secret", q(NEW))
        .session("previous_secrets", format!("[{}]", q(OLD)))
        .start()
        .await;
    let echo = rotated.echo("/", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    // New logins on the rotated gateway are sealed with the new secret: the
    // gateway that only knows the new secret opens them, the old one cannot.
    let fresh = rotated.login(&hs_token(&claims())).await;
    new_only.echo("/", &fresh).await;
    assert_no_session(&old_gw, &upstream, &fresh, "new cookie on the old gateway").await;
}

#[tokio::test]
async fn logout_clears_the_cookie_and_revokes_the_session() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let cookie = gw.login(&hs_token(&claims())).await;
    let other = gw.login(&hs_token(&claims_with(json!({"email": "bruno@example.com"})))).await;

    // userinfo: the identity with the cookie, 401 without.
    let info = gw.get("/sso/userinfo").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    assert_eq!(info.headers()["cache-control"], "no-store");
    let info: Value = info.json().await.unwrap();
    assert_eq!(info["user"], "ana@example.com");
    assert_eq!(info["email"], "ana@example.com");
    assert_eq!(info["name"], "Ana Souza");
    assert_eq!(info["groups"], json!(["support", "agents"]));
    assert_eq!(info["provider"], "intranet");
    let anonymous = gw.get("/sso/userinfo").send().await.unwrap();
    assert_eq!(json_error(anonymous, StatusCode::UNAUTHORIZED).await, "unauthorized");

    // Logout: the cookie is deleted in the browser...
    let resp = gw.navigate("/sso/logout").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let cleared = set_cookies(&resp);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0].name, COOKIE);
    assert_eq!(cleared[0].value, "");
    assert_eq!(cleared[0].attr("Max-Age"), Some("0"));
    assert!(cleared[0].has("Path=/") && cleared[0].has("HttpOnly"));
    assert!(resp.text().await.unwrap().contains("Signed out"));

    // ...and a copy of the old value replayed afterwards is dead too.
    assert_no_session(&gw, &upstream, &cookie, "cookie replayed after logout").await;
    // Other users' sessions are untouched.
    gw.echo("/", &other).await;
    // Logging out again, or without a session, is harmless.
    let again = gw.get("/sso/logout").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(set_cookies(&again)[0].attr("Max-Age"), Some("0"));
    let post = gw.client.post(gw.url("/sso/logout")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_goes_on_to_the_providers_logout_url() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw =
        Conf::new(&upstream.authority()).provider("logout_url", q("https://login.intranet.test/logout")).start().await;
    let cookie = gw.login(&hs_token(&claims())).await;
    let resp = gw.navigate("/sso/logout").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), "https://login.intranet.test/logout");
    assert_eq!(set_cookies(&resp)[0].attr("Max-Age"), Some("0"));
    assert_no_session(&gw, &upstream, &cookie, "after logout").await;
}

#[tokio::test]
async fn admin_revoke_by_email_ends_that_users_sessions() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).server("admin_token", q(ADMIN_TOKEN)).start().await;
    let ana_1 = gw.login(&hs_token(&claims())).await;
    let ana_2 = gw.login(&hs_token(&claims())).await;
    let bruno = gw.login(&hs_token(&claims_with(json!({"email": "bruno@example.com"})))).await;

    // A wrong or missing admin token: 401, nothing revoked.
    let resp = gw.revoke("wrong-token-0123456789abcdef", json!({"email": "ana@example.com"})).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"porteiro-admin\"");
    assert_eq!(json_error(resp, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let admin = gw.admin.clone().unwrap();
    let resp = gw.client.post(format!("{admin}/admin/revoke")).json(&json!({"email": "ana@example.com"})).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    gw.echo("/", &ana_1).await;
    // The admin API is not on the main listener.
    let resp = gw.client.post(gw.url("/admin/revoke")).bearer_auth(ADMIN_TOKEN).json(&json!({"email": "x@y.z"}));
    // There it is a request on the protected route without a session: an
    // API call, so 401 (DESIGN §6), and nothing revoked.
    assert_eq!(resp.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // Bad bodies are refused.
    let resp = gw.revoke(ADMIN_TOKEN, json!({"email": "a@b.c", "subject": "s"})).await;
    assert_eq!(json_error(resp, StatusCode::BAD_REQUEST).await, "invalid_request");

    // Revoked by email, in any case: both of Ana's sessions end, Bruno's stays.
    let resp = gw.revoke(ADMIN_TOKEN, json!({"email": "ANA@Example.com"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_no_session(&gw, &upstream, &ana_1, "revoked session 1").await;
    assert_no_session(&gw, &upstream, &ana_2, "revoked session 2").await;
    gw.echo("/", &bruno).await;

    // Revocation covers sessions issued until then; a later login (a second
    // on, by porteiro's clock) works.
    gw.advance(Duration::from_millis(1100));
    let ana_3 = gw.login(&hs_token(&claims_at(gw.clock.now()))).await;
    gw.echo("/", &ana_3).await;
}

#[tokio::test]
async fn admin_revoke_by_subject_and_without_a_token_configured() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).server("admin_token", q(ADMIN_TOKEN)).start().await;
    let carla = gw.login(&hs_token(&claims_with(json!({"userid": "C-7", "email": "carla@example.com"})))).await;
    let ana = gw.login(&hs_token(&claims())).await;
    let resp = gw.revoke(ADMIN_TOKEN, json!({"subject": "C-7"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_no_session(&gw, &upstream, &carla, "revoked by subject").await;
    gw.echo("/", &ana).await;

    // Without server.admin_token the endpoint is off.
    let off = Conf::new(&upstream.authority()).start().await;
    let resp = off.revoke(ADMIN_TOKEN, json!({"subject": "C-7"})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn large_sessions_are_split_into_chunk_cookies() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let groups: Vec<String> = (0..300).map(|i| format!("group-number-{i:05}")).collect();
    let resp = gw.callback(&hs_token(&claims_with(json!({"groups": groups}))), "/").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cookies = set_cookies(&resp);
    assert!(cookies.len() > 1 && cookies.len() <= 5, "{} chunks", cookies.len());
    for (i, c) in cookies.iter().enumerate() {
        assert_eq!(c.name, format!("{COOKIE}_{i}"));
        assert!(c.value.len() <= 3800, "chunk {i} is {} bytes", c.value.len());
        assert!(c.has("HttpOnly") && c.has("Path=/") && c.has("SameSite=Lax") && c.has("Max-Age=900"));
    }
    let jar = Jar::default();
    jar.absorb(&resp);
    jar.set("other", "1");

    // All chunks together are the session; none of them reaches the upstream.
    let echo = gw.echo("/", &jar.header()).await;
    assert_eq!(echo.header("x-forwarded-groups").unwrap(), groups.join(","));
    assert_eq!(echo.all("cookie"), ["other=1"]);

    // A missing chunk is no session.
    let partial = jar.clone();
    partial.set(&format!("{COOKIE}_1"), "");
    let without_middle: String =
        partial.header().split("; ").filter(|c| !c.starts_with(&format!("{COOKIE}_1="))).collect::<Vec<_>>().join("; ");
    assert_no_session(&gw, &upstream, &without_middle, "middle chunk missing").await;

    // A later, small session clears the chunks the browser still holds.
    let resp = gw
        .navigate(&format!("/sso/callback?jwt={}&redirectUrl=/", hs_token(&claims())))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let set = set_cookies(&resp);
    assert_eq!(set[0].name, COOKIE);
    let cleared: Vec<&str> =
        set[1..].iter().filter(|c| c.attr("Max-Age") == Some("0")).map(|c| c.name.as_str()).collect();
    assert_eq!(cleared.len(), cookies.len(), "{set:?}");
    jar.absorb(&resp);
    assert!(jar.get(&format!("{COOKIE}_0")).is_none());
    let echo = gw.echo("/", &jar.header()).await;
    assert_eq!(echo.header("x-forwarded-groups"), Some("support,agents"));
}
