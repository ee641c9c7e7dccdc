//! What README promises about identity providers' answers that no other
//! test held. SAML, against the real IdP (pysaml2, tests/saml-idp): a
//! replayed assertion ID, an assertion not valid yet or issued too long
//! ago (the IdP's clock moved with its `shift` knob: samael checks those
//! times against the system clock, not porteiro's), no
//! `AudienceRestriction`, processing instructions, control characters in a
//! header value, encrypted assertions, and a RelayState older than 10
//! minutes (porteiro's clock). OpenID Connect, against the fake IdP of
//! tests/oidc_support: an IdP-initiated answer (code without state),
//! `extra_params` in the authorization request, and a userinfo answer
//! about another `sub`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::FakeUpstream;
use support::oidc::{CALLBACK, PUBLIC_URL, TestIdp, idp_config, start_ready};
use support::saml::*;

// === SAML ===

/// The untouched answer to a login is accepted: the setup is sound, so the
/// refusals come from what the test changed.
async fn saml_control(saml: &Saml) {
    let cookie = saml.login("/timesheets", &[]).await;
    assert_eq!(saml.echo("/timesheets", &cookie).await.header("x-forwarded-email"), Some(USER_EMAIL));
}

#[tokio::test]
async fn saml_an_assertion_id_is_accepted_once() {
    let saml = Setup::new().start().await;
    // The IdP signs a new Response (fresh InResponseTo, fresh signature)
    // carrying an assertion ID it used before, as a replaying or buggy IdP
    // would: everything else is valid, so the ID is the only reason.
    let id = format!("id-replayed-{}", rand::random::<u64>());
    let cookie = saml.login("/", &[("assertion_id", &id)]).await;
    assert!(!cookie.is_empty());
    for sign in ["assertion", "response"] {
        let (_, answer) = saml.answer_for("/", &[("assertion_id", &id), ("sign", sign)]).await;
        assert_eq!(attribute(&answer.xml(), "Assertion", "ID").as_deref(), Some(id.as_str()));
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "assertion_replayed").await;
    }
    // Another ID from the same IdP still signs in.
    saml_control(&saml).await;
}

#[tokio::test]
async fn saml_an_assertion_not_valid_yet_is_refused() {
    let saml = Setup::new().start().await;
    saml_control(&saml).await;
    // The IdP's clock 5 minutes ahead: NotBefore is beyond the 60 s leeway.
    let (_, answer) = saml.answer_for("/", &[("shift", "300")]).await;
    let not_before = attribute(&answer.xml(), "Conditions", "NotBefore").unwrap();
    let not_before = chrono::DateTime::parse_from_rfc3339(&not_before).unwrap();
    assert!(not_before > chrono::Utc::now() + chrono::Duration::seconds(240), "{not_before}");
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "not_yet_valid").await;
    // 30 s ahead is within the leeway.
    let (_, answer) = saml.answer_for("/", &[("shift", "30")]).await;
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn saml_an_assertion_issued_more_than_ten_minutes_ago_is_refused() {
    let saml = Setup::new().start().await;
    saml_control(&saml).await;
    // Issued 11 minutes ago, still inside NotBefore..NotOnOrAfter (a 30
    // minute lifetime): only its age is wrong.
    let (_, answer) = saml.answer_for("/", &[("shift", "-660"), ("lifetime", "30")]).await;
    let xml = answer.xml();
    let until = attribute(&xml, "Conditions", "NotOnOrAfter").unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(&until).unwrap() > chrono::Utc::now(), "{xml}");
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "expired").await;
    // Issued 9 minutes ago: accepted.
    let (_, answer) = saml.answer_for("/", &[("shift", "-540"), ("lifetime", "30")]).await;
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn saml_an_assertion_without_audience_restriction_is_refused() {
    let saml = Setup::new().start().await;
    saml_control(&saml).await;
    for sign in ["assertion", "response"] {
        let (_, answer) = saml.answer_for("/", &[("audience", "none"), ("sign", sign)]).await;
        let xml = answer.xml();
        assert!(element(&xml, "Conditions").is_some(), "{xml}");
        assert!(element(&xml, "AudienceRestriction").is_none(), "{xml}");
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "wrong_audience").await;
    }
}

#[tokio::test]
async fn saml_processing_instructions_are_refused() {
    let saml = Setup::new().start().await;
    saml_control(&saml).await;
    // Before the root element, and inside it.
    let edits: [fn(&str) -> String; 2] = [
        |xml| {
            let root = xml.find("<ns0:Response").unwrap();
            format!("{}<?xml-stylesheet href=\"https://evil.example/x.xsl\"?>{}", &xml[..root], &xml[root..])
        },
        |xml| edit_element(xml, "Issuer", |i| i.replacen('>', "><?evil data?>", 1)),
    ];
    for edit in edits {
        let (_, answer) = saml.answer_for("/", &[]).await;
        let edited = edit(&answer.xml());
        assert_ne!(edited, answer.xml());
        saml.assert_refused(&encode(&edited), &answer.relay_state, PROVIDER, "malformed_response").await;
    }
}

#[tokio::test]
async fn saml_control_characters_in_a_header_value_are_unsafe_claims() {
    let saml = Setup::new().route("headers = { \"X-Name\" = \"name\" }").start().await;
    saml_control(&saml).await;
    // A display name that would split the header it becomes.
    let (_, answer) = saml.answer_for("/", &[("name", "Carol\nX-Forwarded-User: admin")]).await;
    assert!(answer.xml().contains("Carol\nX-Forwarded-User: admin"), "the IdP sent the newline as is");
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "unsafe_claims").await;
}

/// README: encrypted assertions are "refused as `assertion_count`".
#[tokio::test]
async fn saml_encrypted_assertions_are_refused_as_assertion_count() {
    let saml = Setup::new().start().await;
    saml_control(&saml).await;
    // What Azure AD sends with token encryption on: an unsigned Response
    // whose only assertion is an EncryptedAssertion (the signature is inside).
    let (_, answer) = saml.answer_for("/", &[("sign", "assertion")]).await;
    let xml = answer.xml();
    let range = element(&xml, "Assertion").unwrap();
    let encrypted = "<ns1:EncryptedAssertion xmlns:ns1=\"urn:oasis:names:tc:SAML:2.0:assertion\">\
        <xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" \
        Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
        <xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes256-gcm\"/>\
        <xenc:CipherData><xenc:CipherValue>c2VjcmV0IGFzc2VydGlvbg==</xenc:CipherValue></xenc:CipherData>\
        </xenc:EncryptedData></ns1:EncryptedAssertion>";
    let mut edited = xml.clone();
    edited.replace_range(range, encrypted);
    saml.assert_refused(&encode(&edited), &answer.relay_state, PROVIDER, "assertion_count").await;
}

/// porteiro with the SAML test config, but its clock in the test's hands.
/// `public_url` is not the listener, so this second porteiro (on a port of
/// its own) is the same service provider (entity id, ACS) as the first
/// one, which the IdP knows.
async fn saml_with_clock(saml: &Saml, clock: porteiro::clock::Clock) -> porteiro::Running {
    support::Gateway::start_with_clock(support::parse_config(&saml.toml), clock).await.running
}

#[tokio::test]
async fn saml_a_relay_state_older_than_ten_minutes_is_refused() {
    let saml = Setup::new().public_url("http://clockin.test").start().await;
    let clock = porteiro::clock::Clock::default();
    let gw = saml_with_clock(&saml, clock.clone()).await;
    let base = format!("http://{}", gw.addr);
    let browser = attempt_jar();
    let early = saml.begin_at(&base, &browser, "/early").await;
    let late = saml.begin_at(&base, &browser, "/late").await;
    let early_answer = saml.idp_answer(&early, &[]).await;
    let late_answer = saml.idp_answer(&late, &[]).await;

    // 9 minutes on: the attempt still waits (and the assertion, issued by
    // the IdP's real clock, is fresh by samael's).
    clock.advance(Duration::from_secs(9 * 60));
    let (status, cookie, body) = saml.post_acs_at(&base, &browser, &early_answer, BROWSER).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert!(cookie.is_some());

    // 11 minutes on: the other attempt is gone.
    clock.advance(Duration::from_secs(2 * 60));
    let (status, cookie, body) = saml.post_acs_at(&base, &browser, &late_answer, BROWSER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(cookie.is_none());
    let metrics = support::admin_metrics(gw.admin_addr.unwrap()).await;
    assert_eq!(
        support::metric(&metrics, &support::failures_series("-", "unknown_relay_state")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(support::metric(&metrics, &support::logins_series(PROVIDER)), Some(1.0));
}

// === OpenID Connect ===

#[tokio::test]
async fn oidc_an_idp_initiated_answer_without_state_is_refused() {
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start_ready(&idp_config(&idp, &up.url(), "")).await;
    let browser = gw.browser();
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/orders")).await;
    let back = browser.follow(&to_idp).await;
    let genuine = back.location();
    assert!(genuine.as_str().starts_with(CALLBACK), "{genuine}");
    let code = genuine.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();

    // The portal button's link: a valid code, no state (with and without
    // RFC 9207 iss), from a browser with and without a login in progress.
    for url in [format!("{CALLBACK}?code={code}"), format!("{CALLBACK}?code={code}&iss={}", idp.issuer)] {
        for who in [browser.clone(), browser.other_browser()] {
            let page = who.get(&url).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{url}: {}", page.body);
            assert!(!page.sets_session(), "{url}");
        }
    }
    assert!(idp.token_calls().is_empty(), "a code without state was redeemed");
    assert_eq!(gw.logins("idp").await, 0.0);
    assert_eq!(up.hits(), 0);

    // The browser's own answer, with its state, still signs in.
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    assert_eq!(done.location().as_str(), format!("{PUBLIC_URL}/orders"));
}

#[tokio::test]
async fn oidc_extra_params_reach_the_authorization_request() {
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let extra =
        "extra_params = { authenticationRuleId = \"42\", identityProviderId = \"7\", prompt = \"select_account\" }";
    let gw = start_ready(&idp_config(&idp, &up.url(), extra)).await;
    let browser = gw.browser();
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/reservas")).await;
    for (name, value) in [("authenticationRuleId", "42"), ("identityProviderId", "7"), ("prompt", "select_account")] {
        assert_eq!(to_idp.location_param(name).as_deref(), Some(value), "{}", to_idp.location());
    }
    // Next to porteiro's own parameters, which stay as they are.
    assert_eq!(to_idp.location_param("response_type").as_deref(), Some("code"));
    assert_eq!(to_idp.location_param("code_challenge_method").as_deref(), Some("S256"));
    // The IdP received them, and the login completes.
    let done = browser.follow(&browser.follow(&to_idp).await).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    let [call] = &idp.authorize_calls()[..] else { panic!("one authorization request") };
    assert_eq!(call.param("authenticationRuleId"), Some("42"));
    assert_eq!(call.param("identityProviderId"), Some("7"));
    assert_eq!(call.param("prompt"), Some("select_account"));
}

/// A userinfo endpoint answering whatever the test sets.
async fn userinfo_server(answer: Arc<Mutex<Value>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = serde_json::to_vec(&*answer.lock().unwrap()).unwrap();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    format!("http://{addr}/userinfo")
}

#[tokio::test]
async fn oidc_a_userinfo_sub_other_than_the_id_tokens_is_refused() {
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let user = support::oidc::default_user();
    let info = Arc::new(Mutex::new(json!({"sub": user["sub"], "nickname": "aninha"})));
    let userinfo = userinfo_server(info.clone()).await;
    // Explicit endpoints: the fake IdP's, plus this userinfo endpoint.
    let extra = format!(
        "fetch_userinfo = true\nauthorization_endpoint = \"{0}/authorize\"\ntoken_endpoint = \"{0}/token\"\n\
         jwks_uri = \"{0}/jwks\"\nuserinfo_endpoint = \"{userinfo}\"",
        idp.issuer
    );
    let body = format!(
        "{}\n[[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\nlogin = \"idp\"\nheaders = {{ \"X-Nick\" = \"nickname\" }}\n",
        idp.provider("idp", &extra),
        up.url()
    );
    let gw = start_ready(&body).await;

    let login = |browser: support::oidc::Browser| async move {
        let to_idp = browser.start_login(&format!("{PUBLIC_URL}/x")).await;
        let back = browser.follow(&to_idp).await;
        browser.follow(&back).await
    };
    // Same sub: signed in, userinfo's claims merged.
    let browser = gw.browser();
    let done = login(browser.clone()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    let page = browser.get(&format!("{PUBLIC_URL}/x")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.echo().header("x-nick"), Some("aninha"), "userinfo's claims are merged");

    // Another sub: refused.
    *info.lock().unwrap() = json!({"sub": "user-0001-admin", "nickname": "root"});
    let done = login(gw.browser()).await;
    assert_eq!(done.status, StatusCode::UNAUTHORIZED, "{}", done.body);
    assert!(!done.sets_session());
    assert_eq!(gw.failures("idp", "userinfo_sub").await, 1.0);
    // No sub at all: refused the same way.
    *info.lock().unwrap() = json!({"nickname": "root"});
    let done = login(gw.browser()).await;
    assert_eq!(done.status, StatusCode::UNAUTHORIZED, "{}", done.body);
    assert_eq!(gw.failures("idp", "userinfo_sub").await, 2.0);
    assert_eq!(gw.logins("idp").await, 1.0);
}
