//! Bearer tokens for APIs (DESIGN §2.4, §6; RFC 6750): HS256 with a shared
//! secret, RS256 and ES256 from a JWKS served on loopback. Every refusal is a
//! 401 with `WWW-Authenticate: Bearer realm="porteiro", error="invalid_token",
//! error_description="..."` and the same words in a JSON body, never a
//! redirect; a missing token gets a bare challenge; a missing scope 403.
//! Verification results are cached, but a cached token is still refused
//! once it expires (or grows too old).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::Duration;

use http::header;
use serde_json::{Value, json};
use support::code::{Answer, LOGIN_URL, code_provider, mint_code, redeem, route, session, session_cookie};
use support::jwks::JwksServer;
use support::keys::{self, HS_SECRET, now};
use support::{Echo, FakeUpstream, Gateway, RunningUpstream, client, raw_request, start_gateway};

const HS_ISSUER: &str = "https://issuer.test";
const IDP_ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "api://porteiro";

struct Setup {
    gw: Gateway,
    up: RunningUpstream,
    jwks: JwksServer,
}

/// porteiro with bearer providers `hs` (HS256), `keys` (RS256/ES256 from
/// the JWKS), `scoped` (needs `reports:read`) and `young` (tokens at most
/// 1 s old), a `kb` code login, and a route for each:
/// `/api/hs`, `/api/keys`, `/api/any` (hs then keys), `/api/scoped`,
/// `/api/young`, `/app` (code login for browsers, `keys` for APIs) and the
/// public `/public`.
async fn setup() -> Setup {
    let up = FakeUpstream::new("api").start().await;
    let jwks = JwksServer::document(json!({"keys": [keys::rsa().jwk("rsa-1"), keys::ec().jwk("ec-1")]})).await;
    let providers = format!(
        r#"
[[providers]]
id = "hs"
kind = "bearer"
issuer = "{HS_ISSUER}"
audience = "{AUDIENCE}"
secret = "{HS_SECRET}"
leeway_seconds = 0

[[providers]]
id = "keys"
kind = "bearer"
issuer = "{IDP_ISSUER}"
audience = "{AUDIENCE}"
jwks_url = "{jwks_url}"
jwks_min_refresh_seconds = 300
algorithms = ["RS256", "ES256"]
leeway_seconds = 0

[[providers]]
id = "scoped"
kind = "bearer"
issuer = "{HS_ISSUER}"
audience = "api://reports"
secret = "{HS_SECRET}"
required_scopes = ["reports:read"]

[[providers]]
id = "young"
kind = "bearer"
issuer = "{HS_ISSUER}"
audience = "api://young"
secret = "{HS_SECRET}"
leeway_seconds = 0
max_token_age_seconds = 1
"#,
        jwks_url = jwks.url()
    );
    let u = up.url();
    let routes = [
        route("hs", "/api/hs", &u, None, &["hs"]),
        route("keys", "/api/keys", &u, None, &["keys"]),
        route("any", "/api/any", &u, None, &["hs", "keys"]),
        route("scoped", "/api/scoped", &u, None, &["scoped"]),
        route("young", "/api/young", &u, None, &["young"]),
        route("app", "/app", &u, Some("kb"), &["keys"]),
    ]
    .concat();
    let public = format!("\n[[routes]]\nid = \"pub\"\npath_prefix = \"/public\"\nupstream = \"{u}\"\npublic = true\n");
    let body = format!("{}{}{providers}{routes}{public}", session(15), code_provider("kb", None));
    let gw = start_gateway("", &body).await;
    gw.wait_ready().await;
    Setup { gw, up, jwks }
}

/// Claims of a token `hs` accepts, valid for five minutes.
fn hs_claims() -> Value {
    let now = now();
    json!({"iss": HS_ISSUER, "aud": AUDIENCE, "sub": "svc-billing", "iat": now, "exp": now + 300})
}

/// Claims of a token `keys` accepts, valid for five minutes.
fn idp_claims() -> Value {
    let now = now();
    json!({
        "iss": IDP_ISSUER, "aud": [AUDIENCE, "other"], "sub": "user-42", "email": "ana@example.com",
        "groups": ["staff", "ops"], "iat": now, "exp": now + 300
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn hs(claims: &Value) -> String {
    keys::hs().sign(None, claims)
}

fn rs(claims: &Value) -> String {
    keys::rsa().sign(Some("rsa-1"), claims)
}

fn es(claims: &Value) -> String {
    keys::ec().sign(Some("ec-1"), claims)
}

/// `GET path` with `Authorization: Bearer token`, as a browser would ask
/// (Accept: text/html) when `browser`.
async fn call(s: &Setup, path: &str, token: Option<&str>, browser: bool) -> reqwest::Response {
    let mut req = client().get(s.gw.url(path));
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if browser {
        req = req.header(header::ACCEPT, "text/html,application/xhtml+xml");
    }
    req.send().await.unwrap()
}

/// Asserts an RFC 6750 `invalid_token` refusal with `description`.
async fn assert_invalid_token(resp: reqwest::Response, description: &str, what: &str) {
    let a = Answer::read(resp).await;
    assert_eq!(a.status, 401, "{what}: {}", a.text);
    assert_eq!(
        a.header("www-authenticate"),
        Some(
            format!("Bearer realm=\"porteiro\", error=\"invalid_token\", error_description=\"{description}\"").as_str()
        ),
        "{what}"
    );
    assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
    assert_eq!(a.json(), json!({"error": "invalid_token", "error_description": description}), "{what}");
    assert!(a.header("location").is_none(), "{what}: never a redirect");
}

#[tokio::test]
async fn valid_tokens_reach_the_upstream_with_the_subject() {
    let s = setup().await;
    let cases = [
        ("HS256", "/api/hs/x", hs(&hs_claims()), "svc-billing"),
        ("RS256", "/api/keys/x", rs(&idp_claims()), "user-42"),
        ("ES256", "/api/keys/x", es(&idp_claims()), "user-42"),
        ("HS256 on a two-provider route", "/api/any/x", hs(&hs_claims()), "svc-billing"),
        ("RS256 on a two-provider route", "/api/any/x", rs(&idp_claims()), "user-42"),
        ("ES256 on a two-provider route", "/api/any/x", es(&idp_claims()), "user-42"),
    ];
    for (what, path, token, sub) in cases {
        let resp = client()
            .get(s.gw.url(path))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("X-Forwarded-User", "root")
            .header("X-Forwarded-Groups", "admins")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{what}");
        let echo: Echo = resp.json().await.unwrap();
        assert_eq!(echo.header("x-forwarded-user"), Some(sub), "{what}: the token's sub, never the client's header");
        assert_eq!(echo.header("authorization"), Some(format!("Bearer {token}").as_str()), "{what}");
        if sub == "user-42" {
            assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"), "{what}");
            assert_eq!(echo.header("x-forwarded-groups"), Some("staff,ops"), "{what}");
        } else {
            assert_eq!(echo.header("x-forwarded-groups"), None, "{what}: forged groups removed");
        }
    }
    assert_eq!(s.up.hits(), 6);
}

#[tokio::test]
async fn bad_tokens_get_401_invalid_token_with_the_reason() {
    let s = setup().await;
    let past = now() - 10;
    let future = now() + 600;
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &hs_claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    // A real RS256 token whose payload was swapped for another subject.
    let tampered = {
        let t = rs(&idp_claims());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            with(idp_claims(), "sub", json!("admin")).to_string(),
        );
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let cases: Vec<(&str, &str, String, &str)> = vec![
        // HS256 (shared secret)
        ("HS256 expired", "/api/hs", hs(&with(hs_claims(), "exp", json!(past))), "token expired"),
        ("HS256 nbf in the future", "/api/hs", hs(&with(hs_claims(), "nbf", json!(future))), "token not yet valid"),
        (
            "HS256 wrong aud",
            "/api/hs",
            hs(&with(hs_claims(), "aud", json!("api://other"))),
            "token audience not accepted",
        ),
        (
            "HS256 no aud",
            "/api/hs",
            hs(&{
                let mut c = hs_claims();
                c.as_object_mut().unwrap().remove("aud");
                c
            }),
            "token audience not accepted",
        ),
        (
            "HS256 wrong iss",
            "/api/hs",
            hs(&with(hs_claims(), "iss", json!("https://evil.test"))),
            "token issuer not accepted",
        ),
        ("HS256 wrong secret", "/api/hs", wrong_secret, "token signature invalid"),
        ("HS256 alg none", "/api/hs", keys::unsigned(&hs_claims()), "token algorithm not allowed"),
        (
            "HS256 route, RS256 token",
            "/api/hs",
            rs(&with(idp_claims(), "iss", json!(HS_ISSUER))),
            "token algorithm not allowed",
        ),
        // RS256 / ES256 (JWKS)
        ("RS256 expired", "/api/keys", rs(&with(idp_claims(), "exp", json!(past))), "token expired"),
        ("ES256 expired", "/api/keys", es(&with(idp_claims(), "exp", json!(past))), "token expired"),
        ("RS256 nbf in the future", "/api/keys", rs(&with(idp_claims(), "nbf", json!(future))), "token not yet valid"),
        ("ES256 nbf in the future", "/api/keys", es(&with(idp_claims(), "nbf", json!(future))), "token not yet valid"),
        (
            "RS256 wrong aud",
            "/api/keys",
            rs(&with(idp_claims(), "aud", json!(["api://other"]))),
            "token audience not accepted",
        ),
        (
            "ES256 wrong aud",
            "/api/keys",
            es(&with(idp_claims(), "aud", json!("api://other"))),
            "token audience not accepted",
        ),
        ("RS256 wrong iss", "/api/keys", rs(&with(idp_claims(), "iss", json!(HS_ISSUER))), "token issuer not accepted"),
        ("ES256 wrong iss", "/api/keys", es(&with(idp_claims(), "iss", json!(HS_ISSUER))), "token issuer not accepted"),
        (
            "RS256 unknown kid",
            "/api/keys",
            keys::rsa().sign(Some("rsa-2"), &idp_claims()),
            "token signed with an unknown key",
        ),
        (
            "ES256 unknown kid",
            "/api/keys",
            keys::ec().sign(Some("nope"), &idp_claims()),
            "token signed with an unknown key",
        ),
        (
            "ES256 token under the RSA kid",
            "/api/keys",
            keys::ec().sign(Some("rsa-1"), &idp_claims()),
            "token signed with an unknown key",
        ),
        ("JWKS alg none", "/api/keys", keys::unsigned(&idp_claims()), "token algorithm not allowed"),
        (
            "JWKS route, HS256 token",
            "/api/keys",
            hs(&with(hs_claims(), "iss", json!(IDP_ISSUER))),
            "token algorithm not allowed",
        ),
        // Not a JWT at all
        ("garbage", "/api/hs", "not-a-jwt".into(), "token malformed"),
        ("garbage (3 parts)", "/api/keys", "a.b.c".into(), "token malformed"),
        ("tampered payload", "/api/keys", tampered.clone(), "token signature invalid"),
        // Two providers: the reason comes from the one the token was meant for.
        ("tampered RS256 on a two-provider route", "/api/any", tampered, "token signature invalid"),
        (
            "expired HS256 on a two-provider route",
            "/api/any",
            hs(&with(hs_claims(), "exp", json!(past))),
            "token expired",
        ),
        (
            "expired RS256 on a two-provider route",
            "/api/any",
            rs(&with(idp_claims(), "exp", json!(past))),
            "token expired",
        ),
    ];
    for (what, path, token, description) in &cases {
        for browser in [false, true] {
            let resp = call(&s, &format!("{path}/x"), Some(token), browser).await;
            assert_invalid_token(resp, description, &format!("{what} (browser: {browser})")).await;
        }
    }
    assert_eq!(s.up.hits(), 0, "no refused token reached the upstream");
    assert_eq!(s.jwks.fetches(), 1, "unknown kids within jwks_min_refresh_seconds cost no fetch");
}

#[tokio::test]
async fn no_token_on_a_bearer_only_route_gets_a_bare_challenge_never_a_redirect() {
    let s = setup().await;
    for (what, authorization) in [
        ("none", None),
        ("Basic", Some("Basic YXBwMTpzM2NyZXQ=")),
        ("empty Bearer", Some("Bearer ")),
        ("no scheme", Some("abc")),
    ] {
        for browser in [false, true] {
            let mut req = client().get(s.gw.url("/api/keys/x"));
            if let Some(a) = authorization {
                req = req.header(header::AUTHORIZATION, a);
            }
            if browser {
                req = req.header(header::ACCEPT, "text/html");
            }
            let a = Answer::read(req.send().await.unwrap()).await;
            assert_eq!(a.status, 401, "{what} (browser: {browser}): {}", a.text);
            assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"porteiro\""), "{what}: no error= part");
            assert!(a.header("location").is_none());
            assert_eq!(a.header("content-type"), Some("application/json"));
        }
    }
    assert_eq!(s.up.hits(), 0);
}

#[tokio::test]
async fn a_missing_scope_gets_403_insufficient_scope() {
    let s = setup().await;
    let claims = |scope: Value| {
        let now = now();
        let mut c = json!({"iss": HS_ISSUER, "aud": "api://reports", "sub": "svc", "iat": now, "exp": now + 300});
        for (k, v) in scope.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    for (what, extra) in [
        ("no scope", json!({})),
        ("another scope", json!({"scope": "reports:write"})),
        ("a prefix of it", json!({"scope": "reports"})),
        ("scp list without it", json!({"scp": ["reports:write"]})),
    ] {
        let a = Answer::read(call(&s, "/api/scoped/r", Some(&hs(&claims(extra))), false).await).await;
        assert_eq!(a.status, 403, "{what}: {}", a.text);
        let challenge = a.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"porteiro\", error=\"insufficient_scope\""),
            "{what}: {challenge}"
        );
        assert!(challenge.contains("scope=\"reports:read\""), "{what}: {challenge}");
        assert_eq!(a.json()["error"], "insufficient_scope", "{what}");
    }
    for (what, extra) in [
        ("scope string", json!({"scope": "reports:write reports:read"})),
        ("scp list", json!({"scp": ["reports:read"]})),
        ("scp string", json!({"scp": "reports:read"})),
    ] {
        let resp = call(&s, "/api/scoped/r", Some(&hs(&claims(extra))), false).await;
        assert_eq!(resp.status(), 200, "{what}");
    }
}

#[tokio::test]
async fn a_route_with_login_and_bearer_tells_browsers_from_api_clients() {
    let s = setup().await;
    // A browser without a token or session: off to the login page.
    let resp = call(&s, "/app/page?tab=2", None, true).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()[header::LOCATION], format!("{LOGIN_URL}?redirectUrl=%2Fapp%2Fpage%3Ftab%3D2"));
    // An API client without anything: 401, not a redirect.
    let resp = call(&s, "/app/page", None, false).await;
    assert_eq!(resp.status(), 401);
    // Any bearer token makes it an API call, judged as such even from a browser.
    let expired = rs(&with(idp_claims(), "exp", json!(now() - 5)));
    assert_invalid_token(call(&s, "/app/page", Some(&expired), true).await, "token expired", "expired").await;
    assert_invalid_token(call(&s, "/app/page", Some("garbage"), true).await, "token malformed", "garbage").await;
    assert_eq!(s.up.hits(), 0);
    // A good token passes, as does a browser session from a code.
    let resp = call(&s, "/app/page", Some(&es(&idp_claims())), true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Echo>().await.unwrap().header("x-forwarded-user"), Some("user-42"));
    let code = mint_code(&s.gw.url(""), &json!({"emailId": "bob@example.com"})).await;
    let cookie = session_cookie(redeem(&client(), &s.gw.url(""), &code, "/app/page").await.headers()).unwrap();
    let resp = client()
        .get(s.gw.url("/app/page"))
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Echo>().await.unwrap().header("x-forwarded-user"), Some("bob@example.com"));
    // A bad token next to a good session is still a bad token.
    let resp = client()
        .get(s.gw.url("/app/page"))
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, &cookie)
        .header(header::AUTHORIZATION, format!("Bearer {expired}"))
        .send()
        .await
        .unwrap();
    assert_invalid_token(resp, "token expired", "expired token with a session").await;
}

#[tokio::test]
async fn a_cached_token_is_still_refused_once_it_expires() {
    let s = setup().await;
    let issued = now();
    let exp = issued + 2;
    let token = hs(&json!({"iss": HS_ISSUER, "aud": AUDIENCE, "sub": "svc-short", "iat": issued, "exp": exp}));
    let token_rs = rs(&json!({"iss": IDP_ISSUER, "aud": AUDIENCE, "sub": "svc-short", "iat": issued, "exp": exp}));
    for _ in 0..3 {
        assert_eq!(call(&s, "/api/hs/x", Some(&token), false).await.status(), 200);
        assert_eq!(call(&s, "/api/keys/x", Some(&token_rs), false).await.status(), 200);
    }
    // Past `exp` on porteiro's clock (no leeway on these providers).
    s.gw.advance(Duration::from_secs((exp + 1).saturating_sub(s.gw.clock.now())));
    for _ in 0..2 {
        assert_invalid_token(call(&s, "/api/hs/x", Some(&token), false).await, "token expired", "cached HS256").await;
        assert_invalid_token(call(&s, "/api/keys/x", Some(&token_rs), false).await, "token expired", "cached RS256")
            .await;
    }
    assert_eq!(s.up.hits(), 6);
}

#[tokio::test]
async fn a_cached_token_is_still_refused_once_older_than_max_token_age() {
    let s = setup().await;
    let issued = now();
    // Valid for ten minutes, but the provider takes tokens at most 1 s old.
    let token = hs(&json!({"iss": HS_ISSUER, "aud": "api://young", "sub": "svc", "iat": issued, "exp": issued + 600}));
    assert_eq!(call(&s, "/api/young/x", Some(&token), false).await.status(), 200);
    // Two seconds older on porteiro's clock.
    s.gw.advance(Duration::from_secs((issued + 2).saturating_sub(s.gw.clock.now())));
    assert_invalid_token(call(&s, "/api/young/x", Some(&token), false).await, "token issued too long ago", "cached")
        .await;
    // A fresh token is fine: it was the age. Dated by porteiro's clock, now
    // ahead of the system's.
    let now = s.gw.clock.now();
    let fresh = hs(&json!({"iss": HS_ISSUER, "aud": "api://young", "sub": "svc", "iat": now, "exp": now + 600}));
    assert_eq!(call(&s, "/api/young/x", Some(&fresh), false).await.status(), 200);
}

/// DESIGN §8.1: on a route that takes bearer tokens, a request carrying
/// `Authorization` is an API call, even from a browser and even when the
/// route also has a login: an unusable credential gets a 401 challenge it
/// can act on, never a redirect to a login page.
#[tokio::test]
async fn any_authorization_on_a_bearer_route_is_an_api_call() {
    let s = setup().await;
    let bare = [
        ("Basic", "Basic YXBwMTpzM2NyZXQ="),
        ("empty Bearer", "Bearer "),
        ("Bearer alone", "Bearer"),
        ("no scheme", "abc"),
    ];
    for (path, browser) in [("/app/page", true), ("/app/page", false), ("/api/keys/x", true)] {
        for (what, authorization) in bare {
            let mut req = client().get(s.gw.url(path)).header(header::AUTHORIZATION, authorization);
            if browser {
                req = req.header(header::ACCEPT, "text/html,application/xhtml+xml");
            }
            let a = Answer::read(req.send().await.unwrap()).await;
            let what = format!("{what} on {path} (browser: {browser})");
            assert_eq!(a.status, 401, "{what}: {}", a.text);
            assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"porteiro\""), "{what}");
            assert!(a.header("location").is_none(), "{what}: never a login redirect");
            assert_eq!(a.header("content-type"), Some("application/json"), "{what}");
        }
        // A token with characters no token has is a malformed token.
        let mut req = client().get(s.gw.url(path)).header(header::AUTHORIZATION, "Bearer a,b");
        if browser {
            req = req.header(header::ACCEPT, "text/html,application/xhtml+xml");
        }
        assert_invalid_token(req.send().await.unwrap(), "token malformed", &format!("Bearer a,b on {path}")).await;
    }
    assert_eq!(s.up.hits(), 0);
    // The control: without Authorization the browser is sent to sign in.
    let resp = call(&s, "/app/page", None, true).await;
    assert_eq!(resp.status(), 302);
    assert!(resp.headers()[header::LOCATION].to_str().unwrap().starts_with(LOGIN_URL));
}

/// DESIGN §8.1: two `Authorization` lines could mean two identities to
/// porteiro and to the upstream: 400, on every route, whatever they hold.
#[tokio::test]
async fn several_authorization_headers_are_400() {
    let s = setup().await;
    let good = format!("Authorization: Bearer {}", es(&idp_claims()));
    let other = format!("Authorization: Bearer {}", hs(&with(hs_claims(), "sub", json!("svc-other"))));
    let host = format!("Host: {}", s.gw.addr());
    for path in ["/api/keys/x", "/app/page", "/public/x"] {
        // The control: one line passes.
        let one = raw_request(s.gw.addr(), &[&format!("GET {path} HTTP/1.1"), &host, &good, "Connection: close"]).await;
        assert_eq!(one.status, 200, "{path}: {}", one.text());
        for second in [good.as_str(), other.as_str(), "Authorization: Basic YXBwMTpzM2NyZXQ="] {
            let hits = s.up.hits();
            let lines = [&format!("GET {path} HTTP/1.1") as &str, &host, &good, second, "Connection: close"];
            let answer = raw_request(s.gw.addr(), &lines).await;
            assert_eq!(answer.status, 400, "{path} with {second}: {}", answer.text());
            assert!(answer.header("location").is_none());
            assert_eq!(s.up.hits(), hits, "{path}: nothing went upstream");
        }
    }
}

/// DESIGN §8.1: a correctly signed token naming a member twice is refused:
/// porteiro's JSON parser would keep the last `email`, another the first.
#[tokio::test]
async fn a_token_naming_a_member_twice_is_refused() {
    let s = setup().await;
    let now = now();
    let claims = |email: &str| {
        format!(
            r#"{{"iss":"{IDP_ISSUER}","aud":"{AUDIENCE}","sub":"user-42",{email},"iat":{now},"exp":{}}}"#,
            now + 300
        )
    };
    let header = r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#;
    let control = keys::sign_raw(keys::rsa(), header, &claims(r#""email":"ana@example.com""#));
    let resp = call(&s, "/api/keys/x", Some(&control), false).await;
    assert_eq!(resp.status(), 200, "the control");
    assert_eq!(resp.json::<Echo>().await.unwrap().header("x-forwarded-email"), Some("ana@example.com"));
    let twice = keys::sign_raw(keys::rsa(), header, &claims(r#""email":"ana@example.com","email":"eve@example.com""#));
    assert_invalid_token(call(&s, "/api/keys/x", Some(&twice), false).await, "token malformed", "email twice").await;
    let nested = claims(r#""email":"ana@example.com","org":{"id":1,"id":2}"#);
    let nested = keys::sign_raw(keys::rsa(), header, &nested);
    assert_invalid_token(call(&s, "/api/keys/x", Some(&nested), false).await, "token malformed", "nested").await;
    let header_twice = r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1","kid":"rsa-1"}"#;
    let header_twice = keys::sign_raw(keys::rsa(), header_twice, &claims(r#""email":"ana@example.com""#));
    assert_invalid_token(call(&s, "/api/keys/x", Some(&header_twice), false).await, "token malformed", "header").await;
    assert_eq!(s.up.hits(), 1, "only the control went upstream");
}

/// DESIGN §8.1: RSA keys under 2048 bits never verify anything. A JWKS
/// that serves only such a key gives porteiro no key at all (the provider
/// is not ready, its tokens are refused); next to a good key, the small
/// one is ignored and the rest of the set loads.
#[tokio::test]
async fn an_rsa_key_under_2048_bits_verifies_nothing() {
    let up = FakeUpstream::new("api").start().await;
    let only_small = JwksServer::document(json!({"keys": [keys::rsa_1024().jwk("small")]})).await;
    let mixed = JwksServer::document(json!({"keys": [keys::rsa_1024().jwk("small"), keys::rsa().jwk("rsa-1")]})).await;
    let provider = |id: &str, url: &str| {
        format!(
            "\n[[providers]]\nid = \"{id}\"\nkind = \"bearer\"\nissuer = \"{IDP_ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
             jwks_url = \"{url}\"\nalgorithms = [\"RS256\"]\n"
        )
    };
    let body = format!(
        "{}{}{}{}",
        provider("weak", &only_small.url()),
        provider("mixed", &mixed.url()),
        route("weak", "/api/weak", &up.url(), None, &["weak"]),
        route("mixed", "/api/mixed", &up.url(), None, &["mixed"]),
    );
    let gw = start_gateway("", &body).await;
    let mixed_route = |token: String| {
        let gw = &gw;
        async move {
            client()
                .get(gw.url("/api/mixed/x"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
        }
    };
    // The mixed set loads: its good key verifies.
    let mut status = 0;
    for _ in 0..100 {
        status = mixed_route(keys::rsa().sign(Some("rsa-1"), &idp_claims())).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the 2048-bit key of the mixed set verifies");
    // Its 1024-bit key does not.
    let small = keys::rsa_1024().sign(Some("small"), &idp_claims());
    assert_invalid_token(mixed_route(small.clone()).await, "token signed with an unknown key", "mixed set").await;
    // The set with only the small key yields no key: refused, not ready.
    let resp =
        client().get(gw.url("/api/weak/x")).header(header::AUTHORIZATION, format!("Bearer {small}")).send().await;
    let a = Answer::read(resp.unwrap()).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.json(), json!({"error": "invalid_token", "error_description": "signing keys unavailable"}));
    assert!(only_small.fetches() >= 1, "the set was fetched");
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "a provider with no usable key is not ready");
    assert_eq!(up.hits(), 1, "only the 2048-bit token went upstream");
}
