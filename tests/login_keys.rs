//! Every key source of the `jwt` provider signs a login end to end: an HS256
//! `secret`, RS256/ES256/EdDSA keys from a JWKS, an RS256 `public_key_file`;
//! and the JWKS cache's behaviour: rotation to a new kid, keys kept while the
//! JWKS server is down, and a flood of unknown kids costing almost no
//! fetches (DESIGN 2.1, 8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::auth::*;

/// A login with `token` gets a session whose upstream identity is Ana's.
async fn assert_login_works(gw: &Gateway, token: &str) {
    let cookie = gw.login(token).await;
    let echo = gw.echo("/", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
}

/// A login with `token` is refused with 401 `error` and sets no cookie.
async fn assert_refused(gw: &Gateway, token: &str, error: &str) {
    let resp = gw.get(&format!("/sso/callback?jwt={token}&redirectUrl=/")).send().await.unwrap();
    assert!(set_cookies(&resp).is_empty(), "a refused login set a cookie");
    assert_eq!(json_error(resp, StatusCode::UNAUTHORIZED).await, error);
}

#[tokio::test]
async fn hs256_secret() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).provider("algorithms", r#"["HS256"]"#).start().await;
    assert_login_works(&gw, &hs_token(&claims())).await;
    // HS512 with the same secret is not on the list.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_refused(&gw, &hs512, "algorithm_not_allowed").await;
}

#[tokio::test]
async fn rs256_es256_and_eddsa_from_a_jwks() {
    let (rsa, ec, ed) = (SigningKey::rsa("rsa-1"), SigningKey::ec("ec-1"), SigningKey::ed("ed-1"));
    let jwks = JwksServer::start(&[&rsa, &ec, &ed]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).jwks(&jwks.url(), r#"["RS256", "ES256", "EdDSA"]"#).start().await;
    assert_eq!(jwks.fetches(), 1, "fetched once at start");
    for key in [&rsa, &ec, &ed] {
        assert_login_works(&gw, &key.sign(&claims())).await;
    }
    // A kid names exactly one key: the EC key's kid on an RSA signature fails.
    assert_refused(&gw, &rsa.sign_as("ec-1", &claims()), "unknown_key").await;
    // A key of the right kind that is not in the set fails.
    let stranger = SigningKey::ec("ec-1");
    assert_refused(&gw, &stranger.sign(&claims()), "bad_signature").await;
    // An HS256 token naming a kid of the set: HS is never allowed for a JWKS.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let hs = jsonwebtoken::encode(&header, &claims(), &jsonwebtoken::EncodingKey::from_secret(b"x")).unwrap();
    assert_refused(&gw, &hs, "algorithm_not_allowed").await;
}

#[tokio::test]
async fn jwks_algorithm_list_is_enforced() {
    let (rsa, ec) = (SigningKey::rsa("rsa-1"), SigningKey::ec("ec-1"));
    let jwks = JwksServer::start(&[&rsa, &ec]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).jwks(&jwks.url(), r#"["RS256"]"#).start().await;
    assert_login_works(&gw, &rsa.sign(&claims())).await;
    assert_refused(&gw, &ec.sign(&claims()), "algorithm_not_allowed").await;
}

#[tokio::test]
async fn rs256_public_key_file() {
    let rsa = SigningKey::rsa("file-key");
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).public_key_file(&rsa).start().await;
    assert_login_works(&gw, &rsa.sign(&claims())).await;
    // The kid does not matter for a single configured key.
    assert_login_works(&gw, &rsa.sign_as("anything", &claims())).await;
    let other = SigningKey::rsa_new("other");
    assert_refused(&gw, &other.sign(&claims()), "bad_signature").await;
}

#[tokio::test]
async fn a_new_kid_at_the_jwks_server_works_on_first_use() {
    let old = SigningKey::ec("2024-old");
    let jwks = JwksServer::start(&[&old]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .jwks(&jwks.url(), r#"["ES256"]"#)
        .provider("jwks_min_refresh_seconds", "1")
        .start()
        .await;
    assert_login_works(&gw, &old.sign(&claims())).await;
    let fetched = jwks.fetches();

    // The IdP rotates: the new key is published, then used at once.
    let new = SigningKey::ec("2025-new");
    jwks.set_keys(&[&old, &new]);
    // Unknown-kid refreshes are rate-limited to one per jwks_min_refresh_seconds
    // since the last fetch (the one at start): move porteiro's clock past it.
    gw.advance(Duration::from_millis(1100));
    assert_login_works(&gw, &new.sign(&claims())).await;
    assert_eq!(jwks.fetches(), fetched + 1, "exactly one refresh for the new kid");
    // The old key is still published and still works, without another fetch.
    assert_login_works(&gw, &old.sign(&claims())).await;
    assert_eq!(jwks.fetches(), fetched + 1);

    // The old key is withdrawn: after the next refresh it no longer verifies.
    let newest = SigningKey::ec("2026-newest");
    jwks.set_keys(&[&new, &newest]);
    gw.advance(Duration::from_millis(1100));
    assert_login_works(&gw, &newest.sign(&claims())).await;
    assert_refused(&gw, &old.sign(&claims()), "unknown_key").await;
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_jwks_server_is_down() {
    let rsa = SigningKey::rsa("rsa-1");
    let ed = SigningKey::ed("ed-1");
    let jwks = JwksServer::start(&[&rsa, &ed]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .jwks(&jwks.url(), r#"["RS256", "EdDSA"]"#)
        .provider("jwks_min_refresh_seconds", "1")
        .start()
        .await;

    // Answering 500: an unknown kid makes porteiro try a refresh, which
    // fails; the keys it had still verify.
    jwks.fail();
    gw.advance(Duration::from_millis(1100));
    let before = jwks.fetches();
    assert_refused(&gw, &SigningKey::ed("unknown").sign(&claims()), "unknown_key").await;
    assert_eq!(jwks.fetches(), before + 1, "the failed refresh was attempted");
    assert_login_works(&gw, &rsa.sign(&claims())).await;
    assert_login_works(&gw, &ed.sign(&claims())).await;

    // Gone entirely (connections closed): same.
    jwks.take_down();
    gw.advance(Duration::from_millis(1100));
    assert_refused(&gw, &SigningKey::ed("unknown-2").sign(&claims()), "unknown_key").await;
    assert_login_works(&gw, &rsa.sign(&claims())).await;
    assert_login_works(&gw, &ed.sign(&claims())).await;

    // Still ready: the keys were fetched once.
    let ready = gw.client.get(format!("{}/readyz", gw.admin.as_ref().unwrap())).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// A token naming a random kid, issued at `now`. Its signature is junk: an
/// attacker flooding kids would not sign either, and no key is found to
/// check it against.
fn unknown_kid_token(now: u64) -> String {
    assemble(&serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": random_id()}), &claims_at(now), "c2lnbmF0dXJl")
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_a_bounded_number_of_fetches() {
    let rsa = SigningKey::rsa("rsa-1");
    let jwks = JwksServer::start(&[&rsa]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .jwks(&jwks.url(), r#"["RS256"]"#)
        .provider("jwks_min_refresh_seconds", "3600")
        .start()
        .await;
    let at_start = jwks.fetches();
    assert_eq!(at_start, 1);

    // 200 logins with random kids, 50 at a time.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let batch = (0..50).map(|_| {
            let token = unknown_kid_token(gw.clock.now());
            let req = gw.get(&format!("/sso/callback?jwt={token}&redirectUrl=/")).send();
            async move {
                let resp = req.await.unwrap();
                (resp.status(), set_cookies(&resp).len())
            }
        });
        statuses.extend(futures_util::future::join_all(batch).await);
    }
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|&(s, c)| s == StatusCode::UNAUTHORIZED && c == 0), "{statuses:?}");
    let fetches = jwks.fetches();
    assert!(fetches <= 3, "{fetches} JWKS fetches for 200 unknown kids");

    // The known key still works, without a fetch.
    assert_login_works(&gw, &rsa.sign(&claims())).await;
    assert_eq!(jwks.fetches(), fetches);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_a_single_refresh() {
    let rsa = SigningKey::rsa("rsa-1");
    let jwks = JwksServer::start(&[&rsa]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .jwks(&jwks.url(), r#"["RS256"]"#)
        .provider("jwks_min_refresh_seconds", "600")
        .start()
        .await;
    // Past the rate limit since the fetch at start, on porteiro's clock; the
    // next refresh is allowed ten minutes later, however slowly the burst
    // runs (the scheduled refresh is an hour away).
    gw.advance(Duration::from_secs(601));
    let before = jwks.fetches();
    let batch = (0..100).map(|_| {
        let token = unknown_kid_token(gw.clock.now());
        let req = gw.get(&format!("/sso/callback?jwt={token}&redirectUrl=/")).send();
        async move { req.await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(batch).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert_eq!(jwks.fetches(), before + 1, "one refresh for 100 concurrent unknown kids");
}
