//! The single-use login code flow end to end (DESIGN §2.3, §3; Document360's
//! code flow): a backend mints a code over the back channel with HTTP Basic
//! client credentials, a browser redeems it at `/sso/authorize`, the session
//! it gets reaches the upstream as identity headers. Codes are single use
//! (also under 50 concurrent redemptions), short-lived, and only trusted
//! clients with well-formed bodies get one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::Duration;

use http::header;
use serde_json::{Value, json};
use support::code::{
    Answer, CLIENT, COOKIE, LOGIN_URL, basic, code_provider, mint, mint_code, mint_raw, redeem, route, session,
    session_cookie, session_max_age,
};
use support::keys::now;
use support::{Echo, FakeUpstream, Gateway, client, start_gateway};

/// porteiro with a `kb` code provider (`code_ttl_seconds` = `ttl`), sessions
/// of 30 minutes by default, and `/docs` behind it.
async fn gateway(ttl: Option<u64>) -> (Gateway, support::RunningUpstream) {
    let up = FakeUpstream::new("kb").start().await;
    let body =
        format!("{}{}{}", session(30), code_provider("kb", ttl), route("docs", "/docs", &up.url(), Some("kb"), &[]));
    (start_gateway("", &body).await, up)
}

fn base(gw: &Gateway) -> String {
    gw.url("")
}

/// Document360's payload, as its docs show it.
fn document360_body() -> Value {
    json!({
        "username": "ana.souza",
        "firstName": "Ana",
        "lastName": "Souza",
        "emailId": "ana@example.com",
        "readerGroupIds": ["readers", "editors"],
        "tokenValidity": 15
    })
}

#[tokio::test]
async fn code_minted_by_backend_redeemed_by_browser_reaches_upstream() {
    let (gw, up) = gateway(None).await;
    let browser = client();

    // 0. Not signed in: the browser is sent to the customer's login page,
    //    which will mint a code for it.
    let resp = browser.get(gw.url("/docs/x?y=1")).header(header::ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()[header::LOCATION].to_str().unwrap();
    assert_eq!(location, format!("{LOGIN_URL}?redirectUrl=%2Fdocs%2Fx%3Fy%3D1"));

    // 1. Back channel: the backend mints a code.
    let minted = mint(&base(&gw), CLIENT, &document360_body()).await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    assert_eq!(minted.header("cache-control"), Some("no-store"));
    assert_eq!(minted.header("content-type"), Some("application/json"));
    let answer = minted.json();
    assert_eq!(answer["expires_in"], 60, "code_ttl_seconds defaults to 60");
    let code = answer["code"].as_str().unwrap().to_string();
    // Opaque and unguessable: at least 128 bits of URL-safe base64.
    assert!(code.len() >= 22, "{code}");
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{code}");
    let other = mint_code(&base(&gw), &document360_body()).await;
    assert_ne!(code, other, "every code is fresh");

    // 2. Browser: redeems the code, comes back where it was going.
    let resp = redeem(&browser, &base(&gw), &code, "/docs/x?y=1").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()[header::LOCATION], "/docs/x?y=1");
    let set: Vec<&str> = resp.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(set.len(), 1, "{set:?}");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=900"] {
        assert!(set[0].contains(flag), "{flag} missing from {}", set[0]);
    }
    assert!(!set[0].contains("Secure"), "plain http: no Secure flag: {}", set[0]);
    let cookie = session_cookie(resp.headers()).unwrap();

    // 3. The protected page, with the session (and a cookie of the app's own).
    let resp = browser
        .get(gw.url("/docs/x?y=1"))
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, format!("theme=dark; {cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.uri, "/docs/x?y=1");
    assert_eq!(echo.header("x-forwarded-user"), Some("ana@example.com"));
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    assert_eq!(echo.header("x-forwarded-preferred-username"), Some("ana.souza"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("readers,editors"));
    assert_eq!(echo.header("cookie"), Some("theme=dark"), "porteiro's cookie never reaches the upstream");
    assert_eq!(up.hits(), 1, "only the signed-in request reached the upstream");

    // The session is the user's, named as the backend said.
    let info = Answer::read(browser.get(gw.url("/sso/userinfo")).header(header::COOKIE, &cookie).send().await.unwrap())
        .await
        .json();
    assert_eq!(info["name"], "Ana Souza");
    assert_eq!(info["provider"], "kb");

    // 4. The same code again: refused, and no cookie.
    for accept in ["text/html", "application/json"] {
        let resp = client()
            .get(gw.url(&format!("/sso/authorize?code={code}&redirectUrl=/docs/x")))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "second redemption ({accept})");
        assert!(resp.headers().get(header::SET_COOKIE).is_none());
        assert!(resp.headers().get(header::LOCATION).is_none());
        if accept == "application/json" {
            assert_eq!(Answer::read(resp).await.json()["error"], "invalid_code");
        }
    }
}

#[tokio::test]
async fn session_validity_comes_from_token_validity_clamped_to_5_1440_minutes() {
    let (gw, _up) = gateway(None).await;
    // (tokenValidity, expected Max-Age): Document360 clamps to 5..=1440
    // minutes; without it the session's own validity (30 min here) applies.
    let cases: [(Option<Value>, u64); 6] = [
        (Some(json!(2)), 300),
        (Some(json!(15)), 900),
        (Some(json!(2000)), 86_400),
        (Some(json!(-7)), 300),
        (Some(Value::Null), 1800),
        (None, 1800),
    ];
    for (validity, expected) in cases {
        let mut body = json!({"emailId": "bob@example.com"});
        if let Some(v) = &validity {
            body["tokenValidity"] = v.clone();
        }
        let code = mint_code(&base(&gw), &body).await;
        let before = now();
        let resp = redeem(&client(), &base(&gw), &code, "/docs/").await;
        assert_eq!(resp.status(), 302);
        assert_eq!(session_max_age(resp.headers()), Some(expected), "tokenValidity {validity:?}");
        // The sealed session itself ends then too, not only the cookie.
        let cookie = session_cookie(resp.headers()).unwrap();
        let info =
            Answer::read(client().get(gw.url("/sso/userinfo")).header(header::COOKIE, cookie).send().await.unwrap())
                .await
                .json();
        let expires_at = info["expires_at"].as_u64().unwrap();
        assert!(
            (before + expected..=now() + expected).contains(&expires_at),
            "tokenValidity {validity:?}: expires_at {expires_at}, now {before}"
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_redemptions_of_one_code_make_exactly_one_session() {
    let (gw, _up) = gateway(None).await;
    let code = mint_code(&base(&gw), &document360_body()).await;
    let base = base(&gw);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (base, code) = (base.clone(), code.clone());
            // A client each: 50 connections, so the redemptions really race.
            tokio::spawn(async move {
                let resp = redeem(&client(), &base, &code, "/docs/").await;
                (resp.status().as_u16(), resp.headers().get_all(header::SET_COOKIE).iter().count())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let won: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 302).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    assert_eq!(won[0].1, 1, "the winner got its session cookie");
    assert_eq!(outcomes.iter().filter(|o| **o == (400, 0)).count(), 49, "{outcomes:?}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let (gw, _up) = gateway(Some(1)).await;
    let stale = mint(&base(&gw), CLIENT, &document360_body()).await;
    assert_eq!(stale.json()["expires_in"], 1);
    let stale = stale.json()["code"].as_str().unwrap().to_string();
    gw.advance(Duration::from_secs(2));
    let resp = redeem(&client(), &base(&gw), &stale, "/docs/").await;
    assert_eq!(resp.status(), 400, "a code past code_ttl_seconds");
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
    // A fresh one from the same gateway still works: it was the age.
    let fresh = mint_code(&base(&gw), &document360_body()).await;
    assert_eq!(redeem(&client(), &base(&gw), &fresh, "/docs/").await.status(), 302);
}

#[tokio::test]
async fn unknown_client_wrong_secret_or_no_credentials_get_401() {
    let (gw, _up) = gateway(None).await;
    let body = document360_body().to_string();
    let cases: [(&str, Option<String>); 6] = [
        ("unknown client", Some(basic(("nobody", CLIENT.1)))),
        ("wrong secret", Some(basic((CLIENT.0, "app1-secret-0123456780")))),
        ("secret of another client", Some(basic((CLIENT.0, support::code::CLIENT2.1)))),
        ("no Authorization", None),
        ("not base64", Some("Basic %%%".into())),
        ("not Basic", Some(format!("Bearer {}", CLIENT.1))),
    ];
    for (what, authorization) in cases {
        let a = mint_raw(&base(&gw), authorization.as_deref(), body.clone()).await;
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"porteiro\""), "{what}");
        assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
        assert_eq!(a.json()["error"], "invalid_client", "{what}");
        assert!(a.json()["code"].is_null());
    }
    // The same body with the right credentials is fine.
    assert_eq!(mint_raw(&base(&gw), Some(&basic(CLIENT)), body).await.status, 200);
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_field() {
    let (gw, _up) = gateway(None).await;
    let ok = |extra: Value| {
        let mut b = json!({"emailId": "ana@example.com"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "emailId=ana@example.com".into(), "JSON"),
        ("empty body", String::new(), "JSON"),
        ("a JSON array", "[]".into(), "object"),
        // DESIGN §8.1: parsers disagree on which of two same-named members counts.
        ("emailId twice", r#"{"emailId":"ana@example.com","emailId":"eve@example.com"}"#.into(), "twice"),
        ("a JSON string", "\"ana@example.com\"".into(), "object"),
        ("missing emailId", json!({"firstName": "Ana"}).to_string(), "emailId"),
        ("emailId 5", json!({"emailId": 5}).to_string(), "emailId"),
        ("invalid email", json!({"emailId": "not-an-email"}).to_string(), "emailId"),
        ("tokenValidity \"15\"", ok(json!({"tokenValidity": "15"})), "tokenValidity"),
        ("tokenValidity 1.5", ok(json!({"tokenValidity": 1.5})), "tokenValidity"),
        ("readerGroupIds \"g\"", ok(json!({"readerGroupIds": "g"})), "readerGroupIds"),
        ("readerGroupIds [1]", ok(json!({"readerGroupIds": [1]})), "readerGroupIds"),
        ("firstName CR/LF", ok(json!({"firstName": "Ana\r\nX-Forwarded-User: root"})), "firstName"),
        ("lastName LF", ok(json!({"lastName": "Souza\nx"})), "lastName"),
        ("username CR", ok(json!({"username": "ana\r"})), "username"),
        ("firstName 7", ok(json!({"firstName": 7})), "firstName"),
    ];
    for (what, body, field) in cases {
        let a = mint_raw(&base(&gw), Some(&basic(CLIENT)), body).await;
        assert_eq!(a.status, 400, "{what}: {}", a.text);
        assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
        assert_eq!(a.json()["error"], "invalid_request", "{what}");
        let description = a.description();
        assert!(description.contains(field), "{what}: {description:?} should name {field}");
    }
    // Over 16 KiB: 413, before any field is looked at.
    let huge = ok(json!({"firstName": "a".repeat(17 * 1024)}));
    let a = mint_raw(&base(&gw), Some(&basic(CLIENT)), huge).await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.json()["error"], "invalid_request");
    // Just under the limit is read (and then refused for the field's length).
    let big = ok(json!({"firstName": "a".repeat(15 * 1024)}));
    let a = mint_raw(&base(&gw), Some(&basic(CLIENT)), big).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.description().contains("firstName"), "{}", a.text);
}

#[tokio::test]
async fn authorize_without_a_code_or_with_a_forged_one_sets_no_cookie() {
    let (gw, _up) = gateway(None).await;
    for path in [
        "/sso/authorize?redirectUrl=/docs/",
        "/sso/authorize?code=&redirectUrl=/docs/",
        "/sso/authorize?code=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&redirectUrl=/docs/",
        "/sso/authorize?code=..%2F..%2Fetc&redirectUrl=/docs/",
    ] {
        let resp = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        assert!(resp.headers().get(header::SET_COOKIE).is_none(), "{path}");
    }
    // redirectUrl that would leave the site becomes "/".
    let code = mint_code(&base(&gw), &document360_body()).await;
    let resp = redeem(&client(), &base(&gw), &code, "//evil.test/x").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()[header::LOCATION], "/");
    assert!(session_cookie(resp.headers()).is_some_and(|c| c.starts_with(COOKIE)));
}
