//! Engage-style identifier mappings ("De-Para", seed 001): a backend that
//! only knows its own user ids registers `identifier -> user_login` with
//! `POST /sso/identifiers` (Engage's array of `{user_login,
//! client_application_id, identifier}`), then mints codes by
//! `{"user_identifier": ...}` as Engage's `custom_sso` grant does. Mappings
//! are per client, all-or-nothing per batch, and survive a restart of the
//! real binary (redb under `server.state_dir`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http::header;
use serde_json::{Value, json};
use support::code::{
    Answer, CLIENT, CLIENT2, basic, code_provider, mint, mint_code, redeem, route, session, session_cookie,
    session_max_age,
};
use support::{Echo, FakeUpstream, GatewayProcess, RunningUpstream, client, start_gateway};

fn body(upstream: &RunningUpstream) -> String {
    format!("{}{}{}", session(15), code_provider("kb", None), route("docs", "/docs", &upstream.url(), Some("kb"), &[]))
}

fn state_dir_line(dir: &std::path::Path) -> String {
    format!("state_dir = {:?}\nshutdown_grace_seconds = 5", dir.to_str().unwrap())
}

fn mapping(user_login: &str, client: &str, identifier: &str) -> Value {
    json!({"user_login": user_login, "client_application_id": client, "identifier": identifier})
}

/// `METHOD {base}/sso/identifiers[?identifier=..]` as `client`.
async fn identifiers(
    base: &str,
    method: reqwest::Method,
    client_creds: (&str, &str),
    identifier: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut url = format!("{base}/sso/identifiers");
    if let Some(i) = identifier {
        url.push_str("?identifier=");
        url.push_str(&form_urlencoded::byte_serialize(i.as_bytes()).collect::<String>());
    }
    let mut req = client().request(method, url).header(header::AUTHORIZATION, basic(client_creds));
    if let Some(b) = body {
        req = req.header(header::CONTENT_TYPE, "application/json").body(b.to_string());
    }
    Answer::read(req.send().await.unwrap()).await
}

async fn post(base: &str, client: (&str, &str), body: Value) -> Answer {
    identifiers(base, reqwest::Method::POST, client, None, Some(body)).await
}

/// The client's mappings as `(user_login, identifier)`, checking each names the client.
async fn list(base: &str, client_creds: (&str, &str)) -> BTreeSet<(String, String)> {
    let a = identifiers(base, reqwest::Method::GET, client_creds, None, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["client_application_id"], client_creds.0, "{m}");
            (m["user_login"].as_str().unwrap().to_string(), m["identifier"].as_str().unwrap().to_string())
        })
        .collect()
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs.iter().map(|(u, i)| (u.to_string(), i.to_string())).collect()
}

/// Mints a code for `user_identifier` as `client`, redeems it, and returns
/// what the upstream then sees for `/docs/`.
async fn sign_in_as(base: &str, client_creds: (&str, &str), identifier: &str) -> Echo {
    let minted = mint(base, client_creds, &json!({"user_identifier": identifier})).await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    let code = minted.json()["code"].as_str().unwrap().to_string();
    let resp = redeem(&client(), base, &code, "/docs/").await;
    assert_eq!(resp.status(), 302);
    let cookie = session_cookie(resp.headers()).unwrap();
    let resp = client().get(format!("{base}/docs/")).header(header::COOKIE, cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn mappings_round_trip_conflict_and_unknown_identifiers() {
    let up = FakeUpstream::new("engage").start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&state_dir_line(dir.path()), &body(&up)).await;
    let base = gw.url("");

    // Add two mappings (one user_login is an email, one is a plain login).
    let a = post(
        &base,
        CLIENT,
        json!([mapping("ana.souza", "app1", "u-1"), mapping("bob@example.com", "app1", "9f1c-4b2e-guid")]),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json(), json!({"added": 2, "total": 2}));
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let both = set(&[("ana.souza", "u-1"), ("bob@example.com", "9f1c-4b2e-guid")]);
    assert_eq!(list(&base, CLIENT).await, both);

    // The same mapping again is a no-op, not a conflict.
    let a = post(&base, CLIENT, json!([mapping("ana.souza", "app1", "u-1")])).await;
    assert_eq!((a.status.as_u16(), a.json()), (200, json!({"added": 0, "total": 1})));

    // An identifier already mapped to someone else: 409, and the whole
    // batch (with its good new mapping) is not stored.
    let a = post(&base, CLIENT, json!([mapping("carol", "app1", "u-3"), mapping("eve", "app1", "u-1")])).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.json()["error"], "conflict");
    assert!(a.description().contains("u-1"), "{}", a.text);
    // Two users for one identifier inside one batch: also a conflict.
    let a = post(&base, CLIENT, json!([mapping("carol", "app1", "u-4"), mapping("dave", "app1", "u-4")])).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(list(&base, CLIENT).await, both, "a refused batch stores nothing");

    // Mapping for another client: 400 naming the item and field; nothing stored.
    let a = post(&base, CLIENT, json!([mapping("carol", "app1", "u-3"), mapping("carol", "app2", "u-5")])).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.description().contains("[1].client_application_id"), "{}", a.text);
    // Malformed batches name what is wrong.
    for (what, bad, field) in [
        ("not an array", json!(mapping("carol", "app1", "u-3")), "array"),
        ("empty", json!([]), "between 1 and 1000"),
        ("no identifier", json!([{"user_login": "carol", "client_application_id": "app1"}]), "[0].identifier"),
        ("blank user_login", json!([mapping("  ", "app1", "u-3")]), "[0].user_login"),
        (
            "numeric identifier",
            json!([{"user_login": "c", "client_application_id": "app1", "identifier": 3}]),
            "[0].identifier",
        ),
        ("control characters", json!([mapping("carol\r\nx", "app1", "u-3")]), "[0].user_login"),
    ] {
        let a = post(&base, CLIENT, bad).await;
        assert_eq!(a.status, 400, "{what}: {}", a.text);
        assert!(a.description().contains(field), "{what}: {}", a.text);
    }
    assert_eq!(list(&base, CLIENT).await, both);

    // Identifiers are per client: app2 sees none of app1's, and may use
    // the same identifier for its own user.
    assert_eq!(list(&base, CLIENT2).await, set(&[]));
    let a = post(&base, CLIENT2, json!([mapping("zoe", "app2", "u-1")])).await;
    assert_eq!(a.status, 200, "{}", a.text);

    // Codes by identifier: the session is the mapped user_login.
    let echo = sign_in_as(&base, CLIENT, "u-1").await;
    assert_eq!(echo.header("x-forwarded-user"), Some("ana.souza"));
    assert_eq!(echo.header("x-forwarded-preferred-username"), Some("ana.souza"));
    assert_eq!(echo.header("x-forwarded-email"), None, "a plain login is not an email");
    let echo = sign_in_as(&base, CLIENT, "9f1c-4b2e-guid").await;
    assert_eq!(echo.header("x-forwarded-user"), Some("bob@example.com"));
    assert_eq!(echo.header("x-forwarded-email"), Some("bob@example.com"));
    let echo = sign_in_as(&base, CLIENT2, "u-1").await;
    assert_eq!(echo.header("x-forwarded-user"), Some("zoe"), "app2's u-1 is app2's user");
    // tokenValidity still applies to codes by identifier.
    let code = mint_code(&base, &json!({"user_identifier": "u-1", "tokenValidity": 60})).await;
    assert_eq!(session_max_age(redeem(&client(), &base, &code, "/").await.headers()), Some(3600));

    // Unknown identifier: 404.
    let a = mint(&base, CLIENT, &json!({"user_identifier": "u-404"})).await;
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.json()["error"], "unknown_identifier");
    let a = mint(&base, CLIENT2, &json!({"user_identifier": "9f1c-4b2e-guid"})).await;
    assert_eq!(a.status, 404, "app1's identifier is unknown to app2: {}", a.text);

    // DELETE: gone for listing and for codes; deleting again is 404.
    let a = identifiers(&base, reqwest::Method::DELETE, CLIENT, Some("u-1"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json(), json!({"removed": "u-1"}));
    let a = identifiers(&base, reqwest::Method::DELETE, CLIENT, Some("u-1"), None).await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = mint(&base, CLIENT, &json!({"user_identifier": "u-1"})).await;
    assert_eq!(a.status, 404, "a removed identifier: {}", a.text);
    assert_eq!(list(&base, CLIENT).await, set(&[("bob@example.com", "9f1c-4b2e-guid")]));
    assert_eq!(list(&base, CLIENT2).await, set(&[("zoe", "u-1")]), "app2's u-1 untouched");
    let a = identifiers(&base, reqwest::Method::DELETE, CLIENT, None, None).await;
    assert_eq!(a.status, 400, "DELETE needs ?identifier=: {}", a.text);
}

#[tokio::test]
async fn identifiers_need_client_credentials() {
    let up = FakeUpstream::new("engage").start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&state_dir_line(dir.path()), &body(&up)).await;
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE] {
        let a = Answer::read(
            client()
                .request(method.clone(), gw.url("/sso/identifiers?identifier=u-1"))
                .body(json!([mapping("mallory", "app1", "u-1")]).to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 401, "{method}: {}", a.text);
        assert_eq!(a.json()["error"], "invalid_client");
        assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"porteiro\""));
        let a =
            identifiers(&gw.url(""), method.clone(), (CLIENT.0, "app1-secret-wrong-wrong"), Some("u-1"), None).await;
        assert_eq!(a.status, 401, "{method} with a wrong secret: {}", a.text);
    }
    assert_eq!(list(&gw.url(""), CLIENT).await, set(&[]), "nothing was stored");
}

#[tokio::test]
async fn without_state_dir_identifiers_are_not_configured() {
    let up = FakeUpstream::new("engage").start().await;
    let gw = start_gateway("", &body(&up)).await;
    let base = gw.url("");
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE] {
        let a =
            identifiers(&base, method.clone(), CLIENT, Some("u-1"), Some(json!([mapping("ana", "app1", "u-1")]))).await;
        assert_eq!(a.status, 404, "{method}: {}", a.text);
        assert_eq!(a.json()["error"], "not_configured");
        assert!(a.description().contains("state_dir"), "{}", a.text);
    }
    let a = mint(&base, CLIENT, &json!({"user_identifier": "u-1"})).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.description().contains("user_identifier"), "{}", a.text);
    // Document360 codes do not need a state_dir.
    mint_code(&base, &json!({"emailId": "ana@example.com"})).await;
}

#[tokio::test]
async fn mappings_survive_a_restart_of_the_binary() {
    let up = FakeUpstream::new("engage").start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let mut first = GatewayProcess::start(&state_dir_line(&state), &body(&up)).await;
    let base = first.url("");
    let a =
        post(&base, CLIENT, json!([mapping("ana.souza", "app1", "u-1"), mapping("bob@example.com", "app1", "u-2")]))
            .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = post(&base, CLIENT2, json!([mapping("zoe", "app2", "u-1")])).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(sign_in_as(&base, CLIENT, "u-1").await.header("x-forwarded-user"), Some("ana.souza"));
    let a = identifiers(&base, reqwest::Method::DELETE, CLIENT, Some("u-2"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = post(&base, CLIENT, json!([mapping("carol", "app1", "u-3")])).await;
    assert_eq!(a.status, 200, "{}", a.text);

    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", first.logs().join("\n"));
    drop(first);

    let second = GatewayProcess::start(&state_dir_line(&state), &body(&up)).await;
    let base = second.url("");
    assert_eq!(list(&base, CLIENT).await, set(&[("ana.souza", "u-1"), ("carol", "u-3")]), "removal kept too");
    assert_eq!(list(&base, CLIENT2).await, set(&[("zoe", "u-1")]));
    assert_eq!(sign_in_as(&base, CLIENT, "u-1").await.header("x-forwarded-user"), Some("ana.souza"));
    assert_eq!(sign_in_as(&base, CLIENT, "u-3").await.header("x-forwarded-user"), Some("carol"));
    assert_eq!(sign_in_as(&base, CLIENT2, "u-1").await.header("x-forwarded-user"), Some("zoe"));
    assert_eq!(mint(&base, CLIENT, &json!({"user_identifier": "u-2"})).await.status, 404);
    // Conflicts are still judged against what was stored before the restart.
    let a = post(&base, CLIENT, json!([mapping("eve", "app1", "u-1")])).await;
    assert_eq!(a.status, 409, "{}", a.text);
}
