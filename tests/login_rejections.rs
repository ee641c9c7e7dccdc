//! Every bad login token is refused at the callback with 400/401, for the
//! right reason, and sets no cookie (DESIGN 2.1, 6, 8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::auth::*;

/// `GET /sso/callback` with a raw query string, as an API client.
async fn callback_raw(gw: &Gateway, query: &str) -> reqwest::Response {
    gw.get(&format!("/sso/callback?{query}")).send().await.unwrap()
}

fn jwt_query(token: &str, extra: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.append_pair("jwt", token);
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    s.append_pair("redirectUrl", "/");
    s.finish()
}

/// Asserts a refusal: `status`, JSON `error` word, no cookie, no upstream hit.
async fn refused(gw: &Gateway, case: &str, query: &str, status: StatusCode, error: &str) {
    let resp = callback_raw(gw, query).await;
    assert_eq!(resp.status(), status, "{case}");
    assert!(set_cookies(&resp).is_empty(), "{case}: a refused login set a cookie");
    assert_eq!(resp.headers()["cache-control"], "no-store", "{case}");
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer", "{case}");
    let body: Value = resp.json().await.unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(body["error"], error, "{case}: {body}");
}

async fn gateway() -> (RunningUpstream, Gateway) {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    (upstream, gw)
}

#[tokio::test]
async fn bad_tokens_are_refused_for_the_right_reason() {
    let (upstream, gw) = gateway().await;
    let now = now();
    let u = StatusCode::UNAUTHORIZED;
    // Control: the same gateway takes a good token.
    gw.login(&hs_token(&claims())).await;

    let wrong_secret = sign_hs(b"another-secret-another-secret-0123", &claims());
    refused(&gw, "wrong secret", &jwt_query(&wrong_secret, &[]), u, "bad_signature").await;

    let wrong_iss = hs_token(&claims_with(json!({"iss": "evil.test"})));
    refused(&gw, "wrong iss", &jwt_query(&wrong_iss, &[]), u, "unknown_issuer").await;
    let wrong_iss = hs_token(&claims_with(json!({"iss": "evil.test"})));
    refused(&gw, "wrong iss, provider named", &jwt_query(&wrong_iss, &[("provider", "intranet")]), u, "wrong_issuer")
        .await;
    let no_iss = hs_token(&claims_with(json!({"iss": null})));
    refused(&gw, "no iss, provider named", &jwt_query(&no_iss, &[("provider", "intranet")]), u, "missing_claim").await;

    let expired = hs_token(&claims_with(json!({"iat": now - 200, "exp": now - 120})));
    refused(&gw, "expired", &jwt_query(&expired, &[]), u, "expired").await;
    let no_exp = hs_token(&claims_with(json!({"exp": null})));
    refused(&gw, "no exp (require_exp)", &jwt_query(&no_exp, &[]), u, "missing_exp").await;
    let exp_never = hs_token(&claims_with(json!({"exp": "never"})));
    refused(&gw, "exp: \"never\"", &jwt_query(&exp_never, &[]), u, "bad_claim").await;
    let too_old = hs_token(&claims_with(json!({"iat": now - 400, "exp": now + 60})));
    refused(&gw, "iat older than 300 s + leeway", &jwt_query(&too_old, &[]), u, "too_old").await;
    let future = hs_token(&claims_with(json!({"iat": now + 600, "exp": now + 900})));
    refused(&gw, "iat in the future", &jwt_query(&future, &[]), u, "not_yet_valid").await;

    // Unsigned tokens, whatever the spelling of "none".
    for alg in ["none", "None", "NONE"] {
        let unsigned = assemble(&json!({"alg": alg, "typ": "JWT"}), &claims(), "");
        refused(&gw, &format!("alg {alg}"), &jwt_query(&unsigned, &[]), u, "algorithm_not_allowed").await;
    }

    let no_name = hs_token(&claims_with(json!({"name": null})));
    refused(&gw, "no name", &jwt_query(&no_name, &[]), u, "missing_claim").await;
    let blank_name = hs_token(&claims_with(json!({"name": "  "})));
    refused(&gw, "blank name", &jwt_query(&blank_name, &[]), u, "missing_claim").await;
    let nobody = hs_token(&claims_with(json!({"email": null, "userid": null})));
    refused(&gw, "neither email nor userid", &jwt_query(&nobody, &[]), u, "missing_claim").await;
    let email_number = hs_token(&claims_with(json!({"email": 5})));
    refused(&gw, "email: 5", &jwt_query(&email_number, &[]), u, "bad_claim").await;
    let name_number = hs_token(&claims_with(json!({"name": 5})));
    refused(&gw, "name: 5", &jwt_query(&name_number, &[]), u, "bad_claim").await;
    let create_string = hs_token(&claims_with(json!({"create": "yes"})));
    refused(&gw, "create: \"yes\"", &jwt_query(&create_string, &[]), u, "bad_claim").await;
    let groups_numbers = hs_token(&claims_with(json!({"groups": [1, 2]})));
    refused(&gw, "groups: [1, 2]", &jwt_query(&groups_numbers, &[]), u, "bad_claim").await;

    // Values that would become header lines upstream.
    let crlf_name = hs_token(&claims_with(json!({"name": "Ana\r\nX-Forwarded-User: admin"})));
    refused(&gw, "CR/LF in name", &jwt_query(&crlf_name, &[]), u, "unsafe_claims").await;
    let nul_name = hs_token(&claims_with(json!({"name": "Ana\u{0}"})));
    refused(&gw, "NUL in name", &jwt_query(&nul_name, &[]), u, "unsafe_claims").await;
    let lf_userid = hs_token(&claims_with(json!({"userid": "C-1\nX: y"})));
    refused(&gw, "LF in userid", &jwt_query(&lf_userid, &[]), u, "unsafe_claims").await;
    let crlf_email = hs_token(&claims_with(json!({"email": "ana@example.com\r\nX: y"})));
    refused(&gw, "CR/LF in email", &jwt_query(&crlf_email, &[]), u, "bad_claim").await;

    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn malformed_tokens() {
    let (_upstream, gw) = gateway().await;
    let u = StatusCode::UNAUTHORIZED;
    refused(&gw, "no jwt parameter", "redirectUrl=/", StatusCode::BAD_REQUEST, "missing_token").await;
    refused(&gw, "empty jwt", &jwt_query("", &[]), u, "unknown_issuer").await;
    for junk in ["abc", "a.b", "a.b.c", "!!!.###.$$$", "a.b.c.d"] {
        refused(&gw, junk, &jwt_query(junk, &[]), u, "unknown_issuer").await;
        refused(
            &gw,
            &format!("{junk}, provider named"),
            &jwt_query(junk, &[("provider", "intranet")]),
            u,
            "malformed_token",
        )
        .await;
    }
    // Valid base64 but not JSON, in the header and in the payload.
    let header_junk =
        format!("{}.{}.sig", URL_SAFE_NO_PAD.encode("not json"), URL_SAFE_NO_PAD.encode(claims().to_string()));
    refused(&gw, "header not JSON", &jwt_query(&header_junk, &[]), u, "malformed_token").await;
    let not_json = hs_token_raw(br#"{"alg":"HS256"}"#, b"{\"iss\": \"intranet.test\", oops");
    refused(&gw, "payload not JSON", &jwt_query(&not_json, &[("provider", "intranet")]), u, "malformed_token").await;
    let array = hs_token_raw(br#"{"alg":"HS256"}"#, b"[1, 2]");
    refused(&gw, "payload a JSON array", &jwt_query(&array, &[("provider", "intranet")]), u, "malformed_token").await;
    let good = hs_token(&claims());
    // A good token with a byte of its signature changed.
    let mut sig_flipped = good.clone().into_bytes();
    let i = sig_flipped.len() - 10;
    sig_flipped[i] = if sig_flipped[i] == b'A' { b'B' } else { b'A' };
    refused(&gw, "signature changed", &jwt_query(std::str::from_utf8(&sig_flipped).unwrap(), &[]), u, "bad_signature")
        .await;
    // The header says HS256, but the payload was changed after signing.
    let forged = hs_token(&claims());
    let mut parts: Vec<String> = forged.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims_with(json!({"email": "admin@example.com"})).to_string());
    refused(&gw, "payload swapped", &jwt_query(&parts.join("."), &[]), u, "bad_signature").await;
}

#[tokio::test]
async fn oversized_tokens() {
    let (_upstream, gw) = gateway().await;
    // Past porteiro's own token bound (16 KiB) but within the header limit:
    // refused by porteiro, with a reason.
    let padded = hs_token(&claims_with(json!({"pad": "x".repeat(20 * 1024)})));
    refused(&gw, "20 KiB token", &jwt_query(&padded, &[]), StatusCode::UNAUTHORIZED, "token_too_long").await;
    // ~100 KB: the HTTP layer refuses the request head before porteiro reads
    // it. Too long a URL for reqwest, so the request is written by hand.
    let huge = hs_token(&claims_with(json!({"pad": "x".repeat(100 * 1024)})));
    let request = format!(
        "GET /sso/callback?{} HTTP/1.1\r\nHost: gw.test\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        jwt_query(&huge, &[])
    );
    let answer = raw_text(gw.running.addr, request.as_bytes()).await;
    let head = answer.split("\r\n\r\n").next().unwrap();
    assert_eq!(raw_status(head), 431, "Request Header Fields Too Large: {head}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
}

#[tokio::test]
async fn a_token_is_accepted_once() {
    let (_upstream, gw) = gateway().await;
    let token = hs_token(&claims());
    gw.login(&token).await;
    refused(&gw, "replayed token", &jwt_query(&token, &[]), StatusCode::UNAUTHORIZED, "replayed").await;
    // Another token with the same jti is a replay too.
    let jti = random_id();
    gw.login(&hs_token(&claims_with(json!({"jti": jti})))).await;
    let same_jti = hs_token(&claims_with(json!({"jti": jti, "name": "Someone Else"})));
    refused(&gw, "same jti", &jwt_query(&same_jti, &[]), StatusCode::UNAUTHORIZED, "replayed").await;
    // Tokens without a jti are remembered by their hash.
    let no_jti = hs_token(&claims_with(json!({"jti": null})));
    gw.login(&no_jti).await;
    refused(&gw, "replayed token without jti", &jwt_query(&no_jti, &[]), StatusCode::UNAUTHORIZED, "replayed").await;
    // A jti of the wrong type is invalid, not absent.
    let jti_number = hs_token(&claims_with(json!({"jti": 7})));
    refused(&gw, "jti: 7", &jwt_query(&jti_number, &[]), StatusCode::UNAUTHORIZED, "bad_claim").await;
}

#[tokio::test]
async fn browsers_get_a_short_html_page() {
    let (_upstream, gw) = gateway().await;
    let resp = gw.callback(&sign_hs(b"another-secret-another-secret-0123", &claims()), "/").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&resp).is_empty());
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Sign-in failed"), "{body}");
    assert!(!body.contains("eyJ"), "the page never echoes the token");
}

#[tokio::test]
async fn max_token_age_seconds_is_configurable() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .provider("max_token_age_seconds", "30")
        .provider("leeway_seconds", "5")
        .start()
        .await;
    let now = now();
    gw.login(&hs_token(&claims_with(json!({"iat": now - 20})))).await;
    let old = hs_token(&claims_with(json!({"iat": now - 60})));
    refused(&gw, "iat 60 s ago, max age 30 + 5", &jwt_query(&old, &[]), StatusCode::UNAUTHORIZED, "too_old").await;
    let expired = hs_token(&claims_with(json!({"exp": now - 10})));
    refused(&gw, "expired 10 s ago, leeway 5", &jwt_query(&expired, &[]), StatusCode::UNAUTHORIZED, "expired").await;
}

#[tokio::test]
async fn rs256_provider_refuses_hs256_signed_with_its_public_key() {
    let rsa = SigningKey::rsa("k1");
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).public_key_file(&rsa).start().await;
    gw.login(&rsa.sign(&claims())).await;
    // The classic confusion: the public key's PEM bytes used as an HMAC secret.
    let confused = sign_hs(rsa.public_pem().as_bytes(), &claims());
    let u = StatusCode::UNAUTHORIZED;
    refused(&gw, "HS256 with the public PEM as secret", &jwt_query(&confused, &[]), u, "algorithm_not_allowed").await;
    let confused_trimmed = sign_hs(rsa.public_pem().trim().as_bytes(), &claims());
    refused(&gw, "same, PEM trimmed", &jwt_query(&confused_trimmed, &[]), u, "algorithm_not_allowed").await;
}

#[tokio::test]
async fn keys_in_the_token_header_are_never_followed() {
    let legit = SigningKey::rsa("legit");
    let jwks = JwksServer::start(&[&legit]).await;
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority()).jwks(&jwks.url(), r#"["RS256"]"#).start().await;
    gw.login(&legit.sign(&claims())).await;
    let attacker = SigningKey::rsa_new("attacker");
    let attacker_jwks = JwksServer::start(&[&attacker]).await;
    let u = StatusCode::UNAUTHORIZED;
    for (case, extra, kid, error) in [
        ("embedded jwk, own kid", json!({"jwk": attacker.jwk()}), "attacker", "unknown_key"),
        ("embedded jwk, legit kid", json!({"jwk": attacker.jwk()}), "legit", "bad_signature"),
        ("jku to the attacker's set", json!({"jku": attacker_jwks.url()}), "attacker", "unknown_key"),
        ("x5u", json!({"x5u": attacker_jwks.url()}), "legit", "bad_signature"),
    ] {
        // Sign by hand so the header carries the extra members.
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let token = sign_with_header(&attacker, &header, &claims());
        refused(&gw, case, &jwt_query(&token, &[]), u, error).await;
    }
    assert_eq!(attacker_jwks.fetches(), 0, "the token's jku was fetched");
}

/// Signs `claims` with `key` under an arbitrary JSON header.
fn sign_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key.sign_message(message.as_bytes());
    format!("{message}.{sig}")
}

#[tokio::test]
async fn one_issuers_key_never_verifies_anothers_tokens() {
    let upstream = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&upstream.authority())
        .raw(&format!(
            "[[providers]]\nid = \"partner\"\nkind = \"jwt\"\nlogin_url = \"https://partner.test/login\"\n\
             issuer = \"partner.test\"\nsecret = \"partner-secret-0123456789abcdefghijkl\"\n\n\
             [[routes]]\npath_prefix = \"/partner/\"\nupstream = \"http://{}\"\nlogin = \"partner\"\n",
            upstream.authority()
        ))
        .start()
        .await;
    let partner_claims = claims_with(json!({"iss": "partner.test"}));
    gw.login(&sign_hs(b"partner-secret-0123456789abcdefghijkl", &partner_claims)).await;
    // Signed with intranet's secret but claiming partner's issuer.
    let crossed = hs_token(&claims_with(json!({"iss": "partner.test"})));
    refused(&gw, "partner iss, intranet key", &jwt_query(&crossed, &[]), StatusCode::UNAUTHORIZED, "bad_signature")
        .await;
    // Naming the other provider explicitly does not help either.
    let crossed = hs_token(&claims());
    let q = jwt_query(&crossed, &[("provider", "partner")]);
    refused(&gw, "intranet token, partner named", &q, StatusCode::UNAUTHORIZED, "bad_signature").await;
}

/// DESIGN §8.1: a correctly signed login token that names a member twice is
/// a failed login: porteiro's JSON parser would keep the last `email`,
/// another the first.
#[tokio::test]
async fn a_login_token_naming_a_member_twice_is_refused() {
    let (_upstream, gw) = gateway().await;
    let header = br#"{"alg":"HS256","typ":"JWT"}"#;
    let u = StatusCode::UNAUTHORIZED;
    // The control: the same hand-assembled token, each member once.
    let once = claims().to_string();
    assert!(once.contains(r#""email":"ana@example.com""#), "{once}");
    let cookie = gw.login(&hs_token_raw(header, once.as_bytes())).await;
    assert_eq!(gw.echo("/", &cookie).await.header("x-forwarded-email"), Some("ana@example.com"));

    let twice = claims()
        .to_string()
        .replace(r#""email":"ana@example.com""#, r#""email":"ana@example.com","email":"mallory@example.com""#);
    let token = hs_token_raw(header, twice.as_bytes());
    refused(&gw, "email twice", &jwt_query(&token, &[]), u, "malformed_token").await;
    let header_twice = br#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#;
    let token = hs_token_raw(header_twice, claims().to_string().as_bytes());
    refused(&gw, "header member twice", &jwt_query(&token, &[]), u, "malformed_token").await;
}
