//! OpenID Connect callbacks that must fail, against a test IdP written here
//! (`support::oidc::TestIdp`) that misbehaves on demand: ID token signature,
//! `alg`, `iss`, `aud`/`azp`, `nonce`, `exp`/`iat`, claim types and
//! required claims (DESIGN §2.2, §6, §8; Niara, seed 002); RFC 9207 `iss`
//! mix-ups; token endpoint errors, timeouts and huge answers; the IdP's
//! own `error=access_denied`.
//!
//! Every refusal answers the documented status with a short HTML page
//! (JSON for scripts), is counted under its reason, and sets no session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use support::oidc::{
    AuthorizeReply, Browser, CALLBACK, Gateway, IDP_CLIENT_ID, IDP_CLIENT_SECRET, IssParam, PUBLIC_HOST, PUBLIC_URL,
    Page, STATE_COOKIE_PREFIX, TestIdp, TokenReply, assert_hardened, idp_config, link_with_text, now, start_ready,
};
use support::{FakeUpstream, RunningUpstream};

struct Setup {
    idp: TestIdp,
    gw: Gateway,
    up: RunningUpstream,
}

/// A test IdP, and porteiro guarding `/` with it (Niara claims required
/// and forwarded; `provider_extra`: more provider keys).
async fn setup_with(iss_supported: bool, provider_extra: &str) -> Setup {
    let idp = TestIdp::builder().iss_supported(iss_supported).start().await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start_ready(&idp_config(&idp, &up.url(), provider_extra)).await;
    Setup { idp, gw, up }
}

async fn setup() -> Setup {
    setup_with(false, "").await
}

/// Navigates to `path`, goes to the IdP, and returns the IdP's redirect
/// back to porteiro's callback (not followed yet).
async fn to_callback(browser: &Browser, path: &str) -> Page {
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}{path}")).await;
    let back = browser.follow(&to_idp).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    assert!(back.location().as_str().starts_with(&format!("{CALLBACK}?")), "{}", back.location());
    back
}

/// A whole login with the IdP answering its token request with `reply`:
/// the callback's answer.
async fn login_with(s: &Setup, reply: TokenReply) -> (Browser, Page) {
    s.idp.set_token(reply);
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/app/page?id=7").await;
    let page = browser.follow(&back).await;
    (browser, page)
}

/// The callback refused the login: `status`, a hardened HTML page saying
/// `text`, one failure counted as `reason`, the attempt's cookie cleared,
/// no session — and the app still asks for a login.
async fn assert_refused(s: &Setup, browser: &Browser, page: &Page, status: StatusCode, reason: &str, text: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(page.is_html(), "a page for the browser: {:?}", page.header("content-type"));
    assert_hardened(page);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.body.contains(text), "expected {text:?} in {}", page.body);
    assert!(!page.body.contains("eyJ"), "no token on the page: {}", page.body);
    assert!(!page.sets_session(), "a refused login sets no session");
    assert!(!browser.has_session());
    assert!(browser.state_cookies().is_empty(), "the attempt is over: {:?}", browser.state_cookies());
    assert_eq!(s.gw.failures("idp", reason).await, 1.0, "counted as {reason}:\n{}", s.gw.metrics().await);
    assert_eq!(s.gw.logins("idp").await, 0.0);
    let again = browser.get(&format!("{PUBLIC_URL}/app/page?id=7")).await;
    assert_eq!(again.status, StatusCode::FOUND, "still signed out");
    assert_eq!(s.up.hits(), 0, "the app saw nothing");
}

async fn refused(reply: TokenReply, status: StatusCode, reason: &str, text: &str) {
    let s = setup().await;
    let (browser, page) = login_with(&s, reply).await;
    assert_refused(&s, &browser, &page, status, reason, text).await;
}

// === the good path, as the test IdP checks it ===

#[tokio::test]
async fn a_good_login_sends_pkce_and_basic_auth_and_forwards_the_claims() {
    let s = setup().await;
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/app/page?id=7").await;
    let page = browser.follow(&back).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_eq!(page.location().as_str(), format!("{PUBLIC_URL}/app/page?id=7"));
    assert!(page.sets_session());

    let authorize = &s.idp.authorize_calls()[0];
    let token = &s.idp.token_calls()[0];
    assert_eq!(authorize.param("redirect_uri"), Some(CALLBACK));
    assert_eq!(token.param("grant_type"), Some("authorization_code"));
    assert_eq!(token.param("redirect_uri"), Some(CALLBACK));
    assert_eq!(token.param("code"), back.location_param("code").as_deref());
    // client_secret_basic, id and secret form-encoded first (RFC 6749 §2.3.1).
    assert_eq!(token.basic_auth, Some((IDP_CLIENT_ID.to_string(), IDP_CLIENT_SECRET.to_string())));
    assert_eq!(token.param("client_secret"), None);
    // The IdP checked S256(code_verifier) == code_challenge, or it would
    // have refused the code; the verifier is never in the browser's URLs.
    let verifier = token.param("code_verifier").unwrap();
    assert!(verifier.len() >= 43);
    assert!(!authorize.params.iter().any(|(_, v)| v == verifier));

    let echo = browser.get(page.location().as_str()).await.echo();
    assert_eq!(echo.header("x-forwarded-user"), Some("user-4711-ana"));
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@agencia.example.com"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("agents,finance"));
    assert_eq!(echo.header("x-agencyid"), Some("4711"));
    assert_eq!(echo.header("x-agencyname"), Some("Viagens Ana Ltda"));
    assert_eq!(echo.header("x-agencybusinessname"), Some("Ana Turismo"));
    assert_eq!(echo.header("x-agencycountry"), Some("BR"));
    assert_eq!(echo.header("x-agencydocument"), Some("12.345.678/0001-90"));
    assert_eq!(echo.header("x-agencybackofficecode"), Some("BO-0042"));
}

#[tokio::test]
async fn client_secret_post_sends_the_secret_in_the_form() {
    let s = setup_with(false, "token_endpoint_auth = \"client_secret_post\"").await;
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/").await;
    let page = browser.follow(&back).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    let token = &s.idp.token_calls()[0];
    assert_eq!(token.basic_auth, None);
    assert_eq!(token.param("client_id"), Some(IDP_CLIENT_ID));
    assert_eq!(token.param("client_secret"), Some(IDP_CLIENT_SECRET));
}

#[tokio::test]
async fn explicit_endpoints_work_without_discovery() {
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let endpoints = format!(
        "authorization_endpoint = \"{i}/authorize\"\ntoken_endpoint = \"{i}/token\"\njwks_uri = \"{i}/jwks\"",
        i = idp.issuer
    );
    let gw = start_ready(&idp_config(&idp, &up.url(), &endpoints)).await;
    let browser = gw.browser();
    let back = to_callback(&browser, "/x").await;
    let page = browser.follow(&back).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_eq!(browser.get(page.location().as_str()).await.echo().uri, "/x");
}

// === the ID token ===

/// DESIGN §8.1: a correctly signed ID token that names a member twice is
/// refused, whichever value porteiro's JSON parser would have kept.
#[tokio::test]
async fn an_id_token_naming_a_member_twice_is_refused() {
    let reply = TokenReply::Twice("email", json!("mallory@example.com"));
    refused(reply, StatusCode::UNAUTHORIZED, "malformed_token", "ID token malformed").await;
}

#[tokio::test]
async fn signed_with_another_key_is_refused() {
    refused(TokenReply::OtherKey, StatusCode::UNAUTHORIZED, "bad_signature", "ID token signature invalid").await;
}

#[tokio::test]
async fn a_key_of_a_family_not_allowed_is_refused() {
    // ES384, with a key the IdP's JWKS does publish: not in `algorithms`.
    refused(TokenReply::Es384, StatusCode::UNAUTHORIZED, "algorithm_not_allowed", "algorithm not allowed").await;
}

#[tokio::test]
async fn hs256_keyed_with_the_public_keys_is_refused() {
    refused(TokenReply::Hs256, StatusCode::UNAUTHORIZED, "algorithm_not_allowed", "algorithm not allowed").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    refused(TokenReply::AlgNone, StatusCode::UNAUTHORIZED, "algorithm_not_allowed", "algorithm not allowed").await;
}

#[tokio::test]
async fn another_issuer_in_the_id_token_is_refused() {
    let reply = TokenReply::Patch(json!({"iss": "http://127.0.0.1:1"}));
    refused(reply, StatusCode::UNAUTHORIZED, "wrong_issuer", "issuer not accepted").await;
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let reply = TokenReply::Patch(json!({"aud": "another-client"}));
    refused(reply, StatusCode::UNAUTHORIZED, "wrong_audience", "audience not accepted").await;
}

#[tokio::test]
async fn several_audiences_need_azp_naming_this_client() {
    let reply = TokenReply::Patch(json!({"aud": [IDP_CLIENT_ID, "another-client"]}));
    refused(reply, StatusCode::UNAUTHORIZED, "wrong_audience", "audience not accepted").await;
}

#[tokio::test]
async fn azp_of_another_client_is_refused() {
    let reply = TokenReply::Patch(json!({"aud": [IDP_CLIENT_ID, "another-client"], "azp": "another-client"}));
    refused(reply, StatusCode::UNAUTHORIZED, "wrong_audience", "audience not accepted").await;
}

#[tokio::test]
async fn configured_audience_must_be_in_aud() {
    // `audience` adds a second audience the ID token must name.
    let s = setup_with(false, "audience = \"niara-api\"").await;
    let (browser, page) = login_with(&s, TokenReply::Good).await;
    assert_refused(&s, &browser, &page, StatusCode::UNAUTHORIZED, "wrong_audience", "audience not accepted").await;
}

#[tokio::test]
async fn configured_audience_with_azp_is_accepted() {
    let s = setup_with(false, "audience = \"niara-api\"").await;
    let reply = TokenReply::Patch(json!({"aud": [IDP_CLIENT_ID, "niara-api"], "azp": IDP_CLIENT_ID}));
    let (browser, page) = login_with(&s, reply).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert!(browser.has_session());
}

#[tokio::test]
async fn nonce_of_another_login_is_refused() {
    let reply = TokenReply::Patch(json!({"nonce": "a-nonce-from-another-sign-in"}));
    refused(reply, StatusCode::UNAUTHORIZED, "nonce_mismatch", "not issued for this sign-in").await;
}

#[tokio::test]
async fn missing_nonce_is_refused() {
    let reply = TokenReply::Patch(json!({"nonce": null}));
    refused(reply, StatusCode::UNAUTHORIZED, "missing_claim", "lacks the nonce claim").await;
}

#[tokio::test]
async fn expired_id_token_is_refused() {
    // Past the 60 s default leeway.
    let reply = TokenReply::Patch(json!({"exp": now() - 120, "iat": now() - 400}));
    refused(reply, StatusCode::UNAUTHORIZED, "expired", "token expired").await;
}

#[tokio::test]
async fn id_token_issued_long_ago_is_refused() {
    let reply = TokenReply::Patch(json!({"iat": now() - 3600}));
    refused(reply, StatusCode::UNAUTHORIZED, "too_old", "issued too long ago").await;
}

#[tokio::test]
async fn id_token_without_iat_is_refused() {
    let reply = TokenReply::Patch(json!({"iat": null}));
    refused(reply, StatusCode::UNAUTHORIZED, "missing_claim", "lacks the iat claim").await;
}

#[tokio::test]
async fn id_token_without_sub_is_refused() {
    let reply = TokenReply::Patch(json!({"sub": null}));
    refused(reply, StatusCode::UNAUTHORIZED, "missing_claim", "lacks the sub claim").await;
}

#[tokio::test]
async fn a_claim_of_the_wrong_type_is_refused() {
    let reply = TokenReply::Patch(json!({"email": 5}));
    refused(reply, StatusCode::UNAUTHORIZED, "bad_claim", "claim email has the wrong type").await;
}

#[tokio::test]
async fn an_empty_required_claim_is_missing() {
    let reply = TokenReply::Patch(json!({"agencybackofficecode": "  "}));
    refused(reply, StatusCode::UNAUTHORIZED, "missing_claim", "lacks the agencybackofficecode claim").await;
}

#[tokio::test]
async fn an_absent_required_claim_is_refused() {
    let reply = TokenReply::Patch(json!({"agencyid": null}));
    refused(reply, StatusCode::UNAUTHORIZED, "missing_claim", "lacks the agencyid claim").await;
}

#[tokio::test]
async fn a_claim_that_would_inject_a_header_is_refused() {
    let reply = TokenReply::Patch(json!({"agencyname": "Ana\r\nX-Forwarded-User: admin"}));
    refused(reply, StatusCode::UNAUTHORIZED, "unsafe_claims", "control characters").await;
}

// === the token endpoint ===

#[tokio::test]
async fn token_endpoint_error_is_a_bad_gateway() {
    refused(TokenReply::Status(500), StatusCode::BAD_GATEWAY, "code_refused", "refused the code (server_error)").await;
}

#[tokio::test]
async fn token_answer_without_id_token_is_a_bad_gateway() {
    refused(TokenReply::NoIdToken, StatusCode::BAD_GATEWAY, "no_id_token", "sent no ID token").await;
}

#[tokio::test]
async fn huge_token_answer_is_cut_off() {
    let reply = TokenReply::Huge { bytes: 1024 * 1024, content_length: true };
    refused(reply, StatusCode::BAD_GATEWAY, "token_too_large", "too large").await;
}

#[tokio::test]
async fn huge_streamed_token_answer_is_cut_off() {
    let reply = TokenReply::Huge { bytes: 1024 * 1024, content_length: false };
    refused(reply, StatusCode::BAD_GATEWAY, "token_too_large", "too large").await;
}

#[tokio::test]
async fn a_token_endpoint_that_never_answers_is_a_gateway_timeout() {
    // porteiro gives the token endpoint 10 s. (Named to sort early: the test
    // harness starts tests in name order, and this one mostly waits.)
    let s = setup().await;
    s.idp.set_token(TokenReply::Sleep(Duration::from_secs(30)));
    let browser = Browser::patient(s.gw.addr(), Duration::from_secs(30));
    let back = to_callback(&browser, "/app/page?id=7").await;
    let started = Instant::now();
    let page = browser.follow(&back).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(20), "answered after {took:?}");
    assert_refused(&s, &browser, &page, StatusCode::GATEWAY_TIMEOUT, "token_timeout", "did not answer in time").await;
}

#[tokio::test]
async fn token_endpoint_down_is_a_bad_gateway() {
    // Explicit endpoints: the token endpoint is a port nothing listens on.
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let closed = support::closed_port();
    let endpoints = format!(
        "authorization_endpoint = \"{i}/authorize\"\ntoken_endpoint = \"http://{closed}/token\"\njwks_uri = \"{i}/jwks\"",
        i = idp.issuer
    );
    let gw = start_ready(&idp_config(&idp, &up.url(), &endpoints)).await;
    let s = Setup { idp, gw, up };
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/app/page?id=7").await;
    let page = browser.follow(&back).await;
    assert_refused(&s, &browser, &page, StatusCode::BAD_GATEWAY, "token_unreachable", "unreachable").await;
}

// === the authorization response ===

#[tokio::test]
async fn iss_of_another_provider_in_the_answer_is_refused_before_the_code_is_spent() {
    // RFC 9207 mix-up: the answer names another issuer.
    let s = setup_with(true, "").await;
    s.idp.set_iss_param(IssParam::Other("http://127.0.0.1:1".into()));
    let (browser, page) = login_with(&s, TokenReply::Good).await;
    assert_refused(&s, &browser, &page, StatusCode::UNAUTHORIZED, "issuer_mismatch", "another identity provider").await;
    assert!(s.idp.token_calls().is_empty(), "the code never went to a token endpoint");
}

#[tokio::test]
async fn iss_is_checked_even_when_discovery_does_not_promise_it() {
    let s = setup_with(false, "").await;
    s.idp.set_iss_param(IssParam::Other("http://127.0.0.1:1".into()));
    let (browser, page) = login_with(&s, TokenReply::Good).await;
    assert_refused(&s, &browser, &page, StatusCode::UNAUTHORIZED, "issuer_mismatch", "another identity provider").await;
    assert!(s.idp.token_calls().is_empty());
}

#[tokio::test]
async fn iss_promised_but_missing_is_refused() {
    let s = setup_with(true, "").await;
    s.idp.set_iss_param(IssParam::Omit);
    let (browser, page) = login_with(&s, TokenReply::Good).await;
    assert_refused(&s, &browser, &page, StatusCode::UNAUTHORIZED, "issuer_missing", "does not name").await;
    assert!(s.idp.token_calls().is_empty());
}

#[tokio::test]
async fn iss_promised_and_present_is_accepted() {
    let s = setup_with(true, "").await;
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/").await;
    assert_eq!(back.location_param("iss").as_deref(), Some(s.idp.issuer.as_str()));
    let page = browser.follow(&back).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert!(browser.has_session());
}

#[tokio::test]
async fn an_answer_without_code_is_refused() {
    let s = setup().await;
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/app/page?id=7").await;
    let mut without_code = back.location();
    let kept: Vec<(String, String)> = without_code
        .query_pairs()
        .filter(|(k, _)| k != "code")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    without_code.query_pairs_mut().clear().extend_pairs(kept);
    let page = browser.get(without_code.as_str()).await;
    assert_refused(&s, &browser, &page, StatusCode::BAD_REQUEST, "missing_code", "carries no code").await;
}

#[tokio::test]
async fn access_denied_gives_a_page_naming_the_error_with_a_retry_link() {
    let s = setup().await;
    s.idp.set_authorize(AuthorizeReply::Error("access_denied", "The user said no"));
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/app/page?id=7").await;
    assert_eq!(back.location_param("error").as_deref(), Some("access_denied"));
    let page = browser.follow(&back).await;
    assert_refused(&s, &browser, &page, StatusCode::UNAUTHORIZED, "idp_error", "access_denied").await;
    assert!(page.body.contains("The user said no"), "{}", page.body);
    let retry = link_with_text(&page.body, "Try again").unwrap();
    assert_eq!(retry, "/sso/start?provider=idp&redirectUrl=%2Fapp%2Fpage%3Fid%3D7");
    assert!(s.idp.token_calls().is_empty());

    // The retry link starts a fresh attempt at the same IdP, which now
    // lets the user in, back to the page first asked for.
    s.idp.set_authorize(AuthorizeReply::Code);
    let start = browser.get(&format!("{PUBLIC_URL}{retry}")).await;
    let to_idp = browser.follow_on(start, PUBLIC_HOST).await;
    assert!(to_idp.location().as_str().starts_with(&s.idp.issuer), "{}", to_idp.location());
    let back = browser.follow(&to_idp).await;
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.location().as_str(), format!("{PUBLIC_URL}/app/page?id=7"));
    assert_eq!(browser.get(done.location().as_str()).await.echo().uri, "/app/page?id=7");
}

#[tokio::test]
async fn access_denied_for_a_script_is_json() {
    let s = setup().await;
    s.idp.set_authorize(AuthorizeReply::Error("access_denied", "no"));
    let browser = s.gw.browser();
    let back = to_callback(&browser, "/app").await;
    let page = browser.get_json(back.location().as_str()).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.header("content-type"), Some("application/json"));
    let body = page.json();
    assert_eq!(body["error"], "idp_error");
    assert!(body["error_description"].as_str().unwrap().contains("access_denied"), "{body}");
    assert!(page.header("link").unwrap().contains("/sso/start?provider=idp"));
    assert!(!page.sets_session());
    // Cleared attempt cookie.
    assert!(page.set_cookies().iter().any(|c| c.name().starts_with(STATE_COOKIE_PREFIX) && c.value().is_empty()));
}
