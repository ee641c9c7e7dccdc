//! OpenID Connect logout both ways (DESIGN §2.2, §3, §5):
//!
//! - RP-Initiated Logout against the real provider (panva's `oidc-provider`,
//!   `tests/oidc-op/op.js`): `/sso/logout` -> the provider's end-session
//!   page -> confirmed there -> back on porteiro's signed-out page, and the
//!   provider's session is gone too.
//! - Back-Channel Logout sent by the real provider when the user logs out
//!   there: the session is refused on the replica it reached and, through
//!   Redis, on the other replica within one second.
//! - Hostile logout tokens, signed by the test with keys it controls (the
//!   test IdP's, whose JWKS it serves): each one 400 with nothing revoked,
//!   and positive controls proving the same path accepts a good token and
//!   ends exactly the sessions it names.
//!
//! These tests fail, never skip, when Node.js, the npm install or
//! `redis-server` is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::keys::{SigningKey, sign_raw, unsigned};
use support::oidc::{
    Browser, CALLBACK, Gateway, LOGOUT_DONE, PUBLIC_HOST, PUBLIC_URL, RealOp, TestIdp, assert_hardened, default_user,
    idp_config, op_logout_client, start_porteiro, start_ready,
};
use support::redis::RedisServer;
use support::{FakeUpstream, RunningUpstream, client, eventually_within, now};

const CLIENT_ID: &str = "porteiro-logout";
const CLIENT_SECRET: &str = "logout-client-secret-0123456789";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

// === the real provider ===

/// porteiro's `[[providers]]` and `[[routes]]` for the real provider `op`
/// (`extra`: more provider keys).
fn op_body(op: &RealOp, upstream: &str, extra: &str) -> String {
    format!(
        r#"
[[providers]]
id = "niara"
kind = "oidc"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{extra}

[[routes]]
id = "app"
path_prefix = "/"
upstream = "{upstream}"
login = "niara"
"#,
        issuer = op.issuer,
    )
}

/// A provider with porteiro's logout URIs registered (`backchannel`: and
/// its back-channel logout URI), its cookies under `cookie_prefix` (one
/// provider process per prefix).
async fn logout_op(cookie_prefix: &str, backchannel: bool) -> Arc<RealOp> {
    RealOp::start(json!({
        "clients": [op_logout_client(CLIENT_ID, CLIENT_SECRET, backchannel)],
        "cookie_prefix": cookie_prefix,
    }))
    .await
}

/// Signs `browser` in through porteiro as `login` at the real provider;
/// the browser ends on `path`, which the upstream answers.
async fn op_sign_in(op: &RealOp, browser: &Browser, path: &str, login: &str) {
    let to_op = browser.start_login(&format!("{PUBLIC_URL}{path}")).await;
    let back = op.sign_in(browser, &to_op, login).await;
    let callback = browser.follow(&back).await;
    assert_eq!(callback.status, StatusCode::FOUND, "callback refused: {}", callback.body);
    assert!(callback.sets_session());
    assert!(reaches_app(browser, path).await, "signed in, {path} should reach the app");
}

/// Does `browser`'s session get it to the app on `path` (else: sent to sign in)?
async fn reaches_app(browser: &Browser, path: &str) -> bool {
    let page = browser.get(&format!("{PUBLIC_URL}{path}")).await;
    match page.status {
        StatusCode::OK => true,
        StatusCode::FOUND => false,
        other => panic!("{path}: unexpected {other}: {}", page.body),
    }
}

/// The claims of a JWT, read without verifying it.
fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn logout_goes_through_the_providers_end_session_page_and_ends_both_sessions() {
    let op = logout_op("oprp", false).await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start_ready(&op_body(&op, &up.url(), "")).await;
    let browser = gw.browser();
    op_sign_in(&op, &browser, "/painel", "ana").await;

    // The control: while the provider's session lives, a new login at the
    // provider goes straight back to porteiro, no login page.
    let again = browser.start_login(&format!("{PUBLIC_URL}/sso/start?provider=niara&redirectUrl=/x")).await;
    assert_eq!(op.first_prompt(&browser, &again).await, None, "the provider's session should still be signed in");
    let before_logout = browser.snapshot();

    // porteiro's logout: the session ends here, and the browser is sent to
    // the provider's end-session endpoint with the RP-Initiated Logout
    // parameters.
    let logout = browser.get(&format!("{PUBLIC_URL}/sso/logout")).await;
    assert_eq!(logout.status, StatusCode::FOUND, "{}", logout.body);
    assert_hardened(&logout);
    let to_op = logout.location();
    assert_eq!(to_op.origin().ascii_serialization(), op.issuer);
    assert_eq!(to_op.path(), "/session/end");
    assert_eq!(logout.location_param("client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(logout.location_param("post_logout_redirect_uri").as_deref(), Some(LOGOUT_DONE));
    assert_eq!(logout.location_param("state").as_deref(), Some("niara"));
    let hint = logout.location_param("id_token_hint").expect("id_token_hint: porteiro kept the ID token");
    let hint = payload(&hint);
    assert_eq!(
        (hint["iss"].as_str(), hint["aud"].as_str(), hint["sub"].as_str()),
        (Some(op.issuer.as_str()), Some(CLIENT_ID), Some("ana"))
    );
    let cleared = logout.set_cookie(support::SESSION_COOKIE).expect("the session cookie is cleared");
    assert_eq!(cleared.max_age(), Some(cookie::time::Duration::ZERO));
    assert!(!browser.has_session());

    // At the provider: its confirmation page, "Yes, sign me out", then
    // back to porteiro's post_logout_redirect_uri with the state.
    let back = op.log_out(&browser, to_op.as_str()).await;
    assert_eq!(back.location().as_str(), format!("{LOGOUT_DONE}?state=niara"));
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.is_html());
    assert!(done.body.contains("You have been signed out"), "{}", done.body);
    assert_hardened(&done);

    // porteiro's old cookie is revoked...
    assert!(!reaches_app(&before_logout, "/painel").await, "the old session cookie must be refused");
    // ...and the provider's session is gone: a new login asks for a login.
    let after = browser.start_login(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(op.first_prompt(&browser, &after).await.as_deref(), Some("login"));
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn logout_url_comes_after_the_provider_and_logout_at_provider_false_stays_home() {
    let op = logout_op("oprp2", false).await;
    let up = FakeUpstream::new("app").start().await;

    // With logout_url: the provider's way back goes on there.
    let gw = start_ready(&op_body(&op, &up.url(), "logout_url = \"https://intranet.example.com/bye\"")).await;
    let browser = gw.browser();
    op_sign_in(&op, &browser, "/a", "carla").await;
    let logout = browser.get(&format!("{PUBLIC_URL}/sso/logout")).await;
    assert_eq!(logout.location().path(), "/session/end", "{}", logout.location());
    let back = op.log_out(&browser, logout.location().as_str()).await;
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.location().as_str(), "https://intranet.example.com/bye");
    // `state` only picks a configured URL: anything else is the page.
    let odd = browser.get(&format!("{LOGOUT_DONE}?state=https://evil.example")).await;
    assert_eq!(odd.status, StatusCode::OK);
    assert!(odd.body.contains("signed out"), "{}", odd.body);

    // logout_at_provider = false: porteiro's logout only, as before.
    let gw = start_ready(&op_body(&op, &up.url(), "logout_at_provider = false")).await;
    let browser = gw.browser();
    op_sign_in(&op, &browser, "/b", "bruno").await;
    let logout = browser.get(&format!("{PUBLIC_URL}/sso/logout")).await;
    assert_eq!(logout.status, StatusCode::OK, "no trip to the provider: {}", logout.body);
    assert!(logout.body.contains("You have been signed out"));
    assert!(!browser.has_session());
    assert!(!reaches_app(&browser, "/b").await);
}

/// `browser`'s porteiro cookies, in a browser that reaches `other`: the
/// same browser, sent to another replica by the load balancer.
fn same_browser_on(browser: &Browser, other: &Gateway) -> Browser {
    let moved = other.browser();
    for c in browser.cookies(PUBLIC_HOST) {
        moved.add_cookie(PUBLIC_HOST, &c.name, &c.value, &c.path);
    }
    moved
}

#[tokio::test]
async fn logging_out_at_the_provider_ends_the_session_on_every_replica_within_a_second() {
    let redis = RedisServer::start();
    let op = logout_op("opbc", true).await;
    let up = FakeUpstream::new("app").start().await;
    let store = format!("store = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    let a = start_porteiro(&format!("{store}{}", op_body(&op, &up.url(), ""))).await;
    let b = start_porteiro(&format!("{store}{}", op_body(&op, &up.url(), ""))).await;
    a.wait_ready().await;
    b.wait_ready().await;
    // The provider reaches porteiro's published name on replica A.
    op.route_host(PUBLIC_HOST, a.addr()).await;

    let on_a = a.browser();
    op_sign_in(&op, &on_a, "/reservas", "ana").await;
    let on_b = same_browser_on(&on_a, &b);
    assert!(reaches_app(&on_b, "/reservas").await, "the session works on B too");
    assert!(op.backchannel_sent().await.is_empty());

    // The user logs out at the provider itself, not through porteiro.
    let done = op.log_out(&on_a, &format!("{}/session/end", op.issuer)).await;
    assert!(!done.location().as_str().starts_with(PUBLIC_URL), "{}", done.location());
    let logged_out = Instant::now();
    let sent = op.backchannel_sent().await;
    assert_eq!(sent.len(), 1, "{sent:?}\n{}", op.stderr());
    assert_eq!(sent[0]["client_id"], CLIENT_ID);
    assert_eq!(sent[0]["sub"], "ana");
    assert!(sent[0]["sid"].as_str().is_some_and(|s| !s.is_empty()), "a sid-bound logout: {sent:?}");
    assert_eq!(sent[0]["ok"], true, "porteiro should answer 200: {sent:?}");
    assert_eq!(a.count("porteiro_backchannel_logouts_total{provider=\"niara\",result=\"ok\"}").await, 1.0);

    // Refused on A at once, and on B (through Redis) within a second.
    assert!(!reaches_app(&on_a, "/reservas").await, "A ended the session");
    eventually_within(Duration::from_secs(1), "B refuses the session", || async {
        !reaches_app(&on_b, "/reservas").await
    })
    .await;
    assert!(logged_out.elapsed() < Duration::from_secs(1));
    assert_eq!(up.hits(), 2, "the app saw the two requests made before the logout");
}

// === hostile logout tokens, against the test IdP ===

/// The test IdP signs `sid` into ID tokens, so sessions carry it.
fn user_with_sid(sid: &str) -> Value {
    let mut user = default_user();
    user["sid"] = json!(sid);
    user
}

/// Signs a browser in at the test IdP; its session carries `sid`.
async fn idp_sign_in(gw: &Gateway, idp: &TestIdp, sid: &str) -> Browser {
    idp.set_user(user_with_sid(sid));
    let browser = gw.browser();
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/app")).await;
    let back = browser.follow(&to_idp).await;
    assert!(back.location().as_str().starts_with(CALLBACK), "{}", back.location());
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    assert!(reaches_app(&browser, "/app").await);
    browser
}

fn jti() -> String {
    format!("jti-{}", rand::random::<u64>())
}

/// Good logout token claims for `idp`'s user with `sid`.
fn good_claims(idp: &TestIdp, sid: Option<&str>) -> Value {
    let mut c = json!({
        "iss": idp.issuer,
        "aud": idp.client_id(),
        "iat": now(),
        "jti": jti(),
        "sub": "user-4711-ana",
        "events": { EVENT: {} },
    });
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    c
}

/// Posts a body to `/sso/backchannel-logout` with a content type.
async fn post_raw(gw: &Gateway, content_type: Option<&str>, body: String) -> (StatusCode, Value) {
    let mut req = client().post(gw.url("/sso/backchannel-logout")).body(body);
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    assert_eq!(
        resp.headers().get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "every answer: Cache-Control: no-store"
    );
    let bytes = resp.bytes().await.unwrap();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, json)
}

/// Posts `logout_token=<token>` as the provider would.
async fn post_token(gw: &Gateway, token: &str) -> (StatusCode, Value) {
    let body = form_urlencoded::Serializer::new(String::new()).append_pair("logout_token", token).finish();
    post_raw(gw, Some("application/x-www-form-urlencoded"), body).await
}

fn series(provider: &str, result: &str) -> String {
    format!("porteiro_backchannel_logouts_total{{provider=\"{provider}\",result=\"{result}\"}}")
}

/// `claims` with `name` removed.
fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

/// `claims` with `name` set to `value`.
fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

async fn two_idps() -> (TestIdp, TestIdp, RunningUpstream, Gateway) {
    let idp = TestIdp::builder().start().await;
    let other = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    // A second OpenID provider, with a key under the same `kid`.
    let body = format!("{}\n{}", idp_config(&idp, &up.url(), ""), other.provider("other", ""));
    let gw = start_ready(&body).await;
    (idp, other, up, gw)
}

#[tokio::test]
async fn hostile_logout_tokens_are_refused_and_revoke_nothing() {
    let (idp, other, _up, gw) = two_idps().await;
    let browser = idp_sign_in(&gw, &idp, "op-sid-1").await;
    let good = || good_claims(&idp, Some("op-sid-1"));
    let key = idp.signing_key();
    let es256 = |claims: &Value| key.sign(claims);
    let header = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid);
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(key.kid.clone());
        let secret = json!({"keys": [key.jwk()]}).to_string();
        jsonwebtoken::encode(&h, &good(), &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let twice = {
        let text = good().to_string();
        format!("{},\"sid\":\"op-sid-2\"}}", text.strip_suffix('}').unwrap())
    };

    // (what, token, provider, reason counted)
    let hostile: Vec<(&str, String, &str, &str)> = vec![
        ("no events", es256(&without(good(), "events")), "idp", "missing_claim"),
        ("events a string", es256(&with(good(), "events", json!(EVENT))), "idp", "bad_claim"),
        ("events an array", es256(&with(good(), "events", json!([EVENT]))), "idp", "bad_claim"),
        (
            "events of another kind",
            es256(&with(good(), "events", json!({"urn:other:event": {}}))),
            "idp",
            "not_a_logout_token",
        ),
        ("the event not an object", es256(&with(good(), "events", json!({ EVENT: "yes" }))), "idp", "bad_claim"),
        ("a nonce", es256(&with(good(), "nonce", json!("n-123"))), "idp", "nonce_present"),
        ("wrong aud", es256(&with(good(), "aud", json!("someone-else"))), "idp", "wrong_audience"),
        ("several aud, no azp", es256(&with(good(), "aud", json!([idp.client_id(), "x"]))), "idp", "wrong_audience"),
        ("wrong iss", es256(&with(good(), "iss", json!("https://evil.example"))), "-", "wrong_issuer"),
        ("a key not in the JWKS, same kid", idp.rogue_key().sign(&good()), "idp", "bad_signature"),
        ("another provider's key, same kid", other.signing_key().sign(&good()), "idp", "bad_signature"),
        ("an unknown kid", SigningKey::ec("not-published").sign(&good()), "idp", "unknown_key"),
        ("alg none", unsigned(&good()), "idp", "algorithm_not_allowed"),
        ("HS256 keyed with the JWKS", hs256, "idp", "algorithm_not_allowed"),
        ("ES384, not allowed", idp.es384_key().sign(&good()), "idp", "algorithm_not_allowed"),
        ("a payload member twice", key.sign_raw(&twice), "-", "malformed_token"),
        (
            "a header member twice",
            sign_raw(key.keys(), &header.replace('}', &format!(r#","kid":"{}"}}"#, key.kid)), &good().to_string()),
            "idp",
            "malformed_token",
        ),
        ("neither sid nor sub", es256(&without(without(good(), "sid"), "sub")), "idp", "no_sid_nor_sub"),
        ("sid not a string", es256(&with(good(), "sid", json!(7))), "idp", "bad_claim"),
        ("iat too old", es256(&with(good(), "iat", json!(now() - 3600))), "idp", "too_old"),
        ("iat in the future", es256(&with(good(), "iat", json!(now() + 3600))), "idp", "not_yet_valid"),
        ("no iat", es256(&without(good(), "iat")), "idp", "missing_claim"),
        ("expired", es256(&with(good(), "exp", json!(now() - 3600))), "idp", "expired"),
        ("no jti", es256(&without(good(), "jti")), "idp", "missing_claim"),
        ("not a JWT", "not-a-jwt".into(), "-", "malformed_token"),
    ];
    for (what, token, provider, reason) in &hostile {
        let before = gw.count(&series(provider, reason)).await;
        let (status, body) = post_token(&gw, token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_request", "{what}: {body}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {body}");
        assert_eq!(gw.count(&series(provider, reason)).await, before + 1.0, "{what}: counted as {provider}/{reason}");
        assert!(reaches_app(&browser, "/app").await, "{what}: the session must still work");
    }

    // Malformed requests: never a logout.
    let token = es256(&good());
    let form = |pairs: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let malformed: Vec<(&str, Option<&str>, String)> = vec![
        ("JSON body", Some("application/json"), json!({ "logout_token": token }).to_string()),
        ("no content type", None, form(&[("logout_token", &token)])),
        (
            "two tokens",
            Some("application/x-www-form-urlencoded"),
            form(&[("logout_token", &token), ("logout_token", &token)]),
        ),
        ("no token", Some("application/x-www-form-urlencoded"), form(&[("token", &token)])),
        ("empty token", Some("application/x-www-form-urlencoded"), form(&[("logout_token", "")])),
        ("too large", Some("application/x-www-form-urlencoded"), form(&[("logout_token", &"a".repeat(40 * 1024))])),
    ];
    for (what, content_type, body) in malformed {
        let (status, answer) = post_raw(&gw, content_type, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{what}: {answer}");
    }
    assert_eq!(gw.count(&series("-", "bad_request")).await, 6.0);
    let get = client().get(gw.url("/sso/backchannel-logout")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(reaches_app(&browser, "/app").await, "still signed in after every hostile request");

    // A good token for another provider session of this provider: accepted
    // (200, empty), once; the replay is refused. This session is untouched.
    let unrelated = es256(&good_claims(&idp, Some("op-sid-unrelated")));
    let (status, body) = post_token(&gw, &unrelated).await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    let (status, body) = post_token(&gw, &unrelated).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a replayed jti: {body}");
    assert_eq!(gw.count(&series("idp", "replayed")).await, 1.0);
    assert!(reaches_app(&browser, "/app").await, "a logout of another sid ends nothing here");

    // The positive control, on the very same path: the session's own sid.
    let (status, _) = post_token(&gw, &es256(&good())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!reaches_app(&browser, "/app").await, "the good logout token ends the session");
    assert_eq!(gw.count(&series("idp", "ok")).await, 2.0);
}

#[tokio::test]
async fn a_logout_ends_the_named_sessions_of_its_own_provider_only() {
    let (idp, other, _up, gw) = two_idps().await;
    let first = idp_sign_in(&gw, &idp, "op-sid-1").await;
    let second = idp_sign_in(&gw, &idp, "op-sid-2").await;

    // By sid: that provider session's porteiro session, not the other one.
    let (status, _) = post_token(&gw, &idp.signing_key().sign(&good_claims(&idp, Some("op-sid-1")))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!reaches_app(&first, "/app").await);
    assert!(reaches_app(&second, "/app").await, "another sid of the same user stays");

    // Another provider logs out a user with the same subject: its own
    // users only (the subject is that provider's namespace).
    let for_other = json!({
        "iss": other.issuer, "aud": other.client_id(), "iat": now(), "jti": jti(),
        "sub": "user-4711-ana", "events": { EVENT: {} },
    });
    let (status, _) = post_token(&gw, &other.signing_key().sign(&for_other)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gw.count(&series("other", "ok")).await, 1.0);
    assert!(reaches_app(&second, "/app").await, "another provider's logout ends nothing here");

    // By sub alone: every session of that user at this provider.
    let (status, _) = post_token(&gw, &idp.signing_key().sign(&without(good_claims(&idp, None), "sid"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!reaches_app(&second, "/app").await);
}

#[tokio::test]
async fn the_endpoint_is_rate_limited_as_a_login_endpoint() {
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start_ready(&format!("{}\n[rate_limit]\nlogin_per_minute = 2\n", idp_config(&idp, &up.url(), ""))).await;
    for _ in 0..2 {
        assert_eq!(post_token(&gw, "x.y.z").await.0, StatusCode::BAD_REQUEST);
    }
    let limited = client()
        .post(gw.url("/sso/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("logout_token=x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn without_an_end_session_endpoint_logout_stays_as_before() {
    // The test IdP's discovery lists no end_session_endpoint.
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start_ready(&idp_config(&idp, &up.url(), "")).await;
    let browser = idp_sign_in(&gw, &idp, "s1").await;
    let logout = browser.get(&format!("{PUBLIC_URL}/sso/logout")).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    assert!(logout.body.contains("You have been signed out"));
    assert!(!reaches_app(&browser, "/app").await);

    let gw = start_ready(&idp_config(&idp, &up.url(), "logout_url = \"https://intranet.example.com/bye\"")).await;
    let browser = idp_sign_in(&gw, &idp, "s2").await;
    let logout = browser.get(&format!("{PUBLIC_URL}/sso/logout")).await;
    assert_eq!(logout.status, StatusCode::FOUND);
    assert_eq!(logout.location().as_str(), "https://intranet.example.com/bye");
}
