//! Hostile SAML responses (DESIGN 2.5, 6, 8). Each case starts from a
//! Response the real IdP (pysaml2, tests/saml-idp/idp.py) signed for a
//! fresh login, then changes one thing — by editing the XML after signing,
//! as an attacker holding a genuine response would, or by asking the IdP
//! for an answer a misconfigured or foreign party would produce — and posts
//! it with that login's own RelayState, so the change is the only reason to
//! refuse. Every refusal must be a 4xx with no session cookie, nothing sent
//! upstream, and the expected reason counted in `auth_failures`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use support::saml::*;

const MALLORY: &str = "mallory@clockin.example";

/// A fresh login answered by the IdP with `knobs`, edited by `edit`, then
/// posted: it must be refused for `reason`.
async fn refused_after_edit(saml: &Saml, knobs: &[(&str, &str)], reason: &str, edit: impl FnOnce(&str) -> String) {
    let (_, answer) = saml.answer_for("/timesheets", knobs).await;
    let edited = edit(&answer.xml());
    assert_ne!(edited, answer.xml(), "the edit changed nothing");
    saml.assert_refused(&encode(&edited), &answer.relay_state, PROVIDER, reason).await;
}

/// The untouched answer to the same kind of login is accepted: the setup
/// itself is sound, so the refusals below come from the edits.
async fn control(saml: &Saml, knobs: &[(&str, &str)]) {
    let cookie = saml.login("/timesheets", knobs).await;
    let echo = saml.echo("/timesheets", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some(USER_EMAIL));
}

#[tokio::test]
async fn signature_removed() {
    let saml = Setup::new().start().await;
    for sign in ["assertion", "response", "both"] {
        control(&saml, &[("sign", sign)]).await;
        refused_after_edit(&saml, &[("sign", sign)], "bad_signature", |xml| remove_elements(xml, "Signature")).await;
    }
    // With both signed, dropping only the assertion's signature breaks the
    // Response's digest, which covered it.
    refused_after_edit(&saml, &[("sign", "both")], "bad_signature", |xml| {
        edit_element(xml, "Assertion", |a| remove_elements(a, "Signature"))
    })
    .await;
    // An IdP that signs nothing is refused too.
    let (_, answer) = saml.answer_for("/", &[("sign", "none")]).await;
    assert!(element(&answer.xml(), "Signature").is_none());
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "bad_signature").await;
}

#[tokio::test]
async fn assertion_edited_after_signing() {
    let saml = Setup::new().start().await;
    for sign in ["assertion", "response", "both"] {
        // Become someone else: NameID and email attribute.
        refused_after_edit(&saml, &[("sign", sign)], "bad_signature", |xml| replace_all(xml, USER_EMAIL, MALLORY))
            .await;
        // Join a group.
        refused_after_edit(&saml, &[("sign", sign)], "bad_signature", |xml| {
            replace_all(xml, ">backoffice<", ">administrators<")
        })
        .await;
        // Stretch the validity.
        refused_after_edit(&saml, &[("sign", sign)], "bad_signature", |xml| {
            let until = attribute(xml, "Conditions", "NotOnOrAfter").unwrap();
            replace_all(xml, &until, "2099-01-01T00:00:00Z")
        })
        .await;
    }
    // The assertion's signature is intact but the Response around it was
    // signed too and no longer matches: an edit of the Response's own
    // (signed) attributes.
    refused_after_edit(&saml, &[("sign", "response")], "bad_signature", |xml| {
        let id = attribute(xml, "Response", "IssueInstant").unwrap();
        replace_all(xml, &format!("IssueInstant=\"{id}\""), "IssueInstant=\"2099-01-01T00:00:00Z\"")
    })
    .await;
}

/// XML signature wrapping: an unsigned assertion for another user next to
/// (or around) the genuinely signed one, hoping the signature check looks
/// at one and the identity is read from the other.
#[tokio::test]
async fn second_unsigned_assertion_xsw() {
    let saml = Setup::new().start().await;
    for sign in ["assertion", "response", "both"] {
        let knobs = [("sign", sign)];
        // Before the signed assertion.
        refused_after_edit(&saml, &knobs, "assertion_count", |xml| {
            let at = element(xml, "Assertion").unwrap().start;
            let mut out = xml.to_string();
            out.insert_str(at, &evil_assertion(xml, MALLORY));
            out
        })
        .await;
        // After it.
        refused_after_edit(&saml, &knobs, "assertion_count", |xml| {
            let at = element(xml, "Assertion").unwrap().end;
            let mut out = xml.to_string();
            out.insert_str(at, &evil_assertion(xml, MALLORY));
            out
        })
        .await;
        // The signed one tucked inside the evil one (its Advice), the evil
        // one where the signed one was.
        refused_after_edit(&saml, &knobs, "assertion_count", |xml| {
            let range = element(xml, "Assertion").unwrap();
            let signed = xml[range.clone()].to_string();
            let evil = evil_assertion(xml, MALLORY);
            let close = evil.rfind("</").unwrap();
            let prefix = &evil[1..evil.find(':').unwrap()];
            let wrapped = format!("{}<{prefix}:Advice>{signed}</{prefix}:Advice>{}", &evil[..close], &evil[close..]);
            let mut out = xml.to_string();
            out.replace_range(range, &wrapped);
            out
        })
        .await;
    }
    // The signed Response's assertion moved into an unsigned wrapper
    // Response (Extensions), an evil assertion in the outer one.
    refused_after_edit(&saml, &[("sign", "response")], "assertion_count", |xml| {
        let response = element(xml, "Response").unwrap();
        let inner = xml[response.clone()].to_string();
        let evil = evil_assertion(xml, MALLORY);
        let open_end = inner.find('>').unwrap() + 1;
        let outer_open = inner[..open_end].replace("ID=\"", "ID=\"wrap-");
        let close = inner.rfind("</").unwrap();
        let wrapper = format!("{outer_open}<ns0:Extensions>{inner}</ns0:Extensions>{evil}{}", &inner[close..]);
        let mut out = xml.to_string();
        out.replace_range(response, &wrapper);
        out
    })
    .await;
}

/// The comment trick: an attacker who owns
/// carol@clockin.example.evil.example gets a genuine signed assertion, then
/// puts a comment in the NameID. Exclusive canonicalisation ignores
/// comments, so the signature still holds; a parser that reads the first
/// text node would see carol@clockin.example.
#[tokio::test]
async fn comment_injected_into_name_id() {
    let saml = Setup::new().no_attributes().start().await;
    let attacker = format!("{USER_EMAIL}.evil.example");
    for sign in ["assertion", "response"] {
        let knobs = [("sign", sign), ("email", attacker.as_str())];
        refused_after_edit(&saml, &knobs, "malformed_response", |xml| {
            edit_element(xml, "NameID", |n| replace_all(n, &attacker, &format!("{USER_EMAIL}<!---->.evil.example")))
        })
        .await;
    }
    // A comment anywhere else is refused the same way.
    refused_after_edit(&saml, &[], "malformed_response", |xml| {
        edit_element(xml, "Issuer", |i| i.replacen('>', "><!-- hello -->", 1))
    })
    .await;
    // As is a DTD (entity expansion, external entities).
    refused_after_edit(&saml, &[], "malformed_response", |xml| {
        xml.replacen("<ns0:Response", "<!DOCTYPE r [<!ENTITY e \"x\">]><ns0:Response", 1)
    })
    .await;
}

/// The IdP answers for another service provider: the signature is genuine,
/// the Audience is not porteiro's entity id.
#[tokio::test]
async fn wrong_audience() {
    let saml = Setup::new().entity_id("https://clockin.example.com/saml").start().await;
    for sign in ["assertion", "response"] {
        let (_, answer) =
            saml.answer_for("/", &[("sign", sign), ("audience", "https://backoffice.example.com/saml")]).await;
        assert_eq!(text_of(&answer.xml(), "Audience").as_deref(), Some("https://backoffice.example.com/saml"));
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "wrong_audience").await;
    }
    // An entity id that merely starts like porteiro's is another audience.
    let (_, answer) = saml.answer_for("/", &[("audience", "https://clockin.example.com/saml/other")]).await;
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "wrong_audience").await;
}

/// NotOnOrAfter in the past, with no leeway.
#[tokio::test]
async fn expired() {
    let saml = Setup::new().leeway(0).start().await;
    control(&saml, &[]).await;
    for sign in ["assertion", "response"] {
        let (_, answer) = saml.answer_for("/", &[("sign", sign), ("lifetime", "-1")]).await;
        let xml = answer.xml();
        let until = attribute(&xml, "Conditions", "NotOnOrAfter").unwrap();
        let until = chrono::DateTime::parse_from_rfc3339(&until).unwrap();
        assert!(until < chrono::Utc::now(), "{xml}");
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "expired").await;
    }
}

/// A response is good for one login, once.
#[tokio::test]
async fn replayed_response() {
    let saml = Setup::new().start().await;
    let (_, answer) = saml.answer_for("/first", &[]).await;
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(session_cookie(&resp).is_some());

    // The same POST again (a back button, a captured form): the attempt it
    // answered is gone.
    saml.assert_refused(&answer.saml_response, &answer.relay_state, "-", "unknown_relay_state").await;
    // With the RelayState of a new login: it answers another request.
    let fresh = saml.begin("/second").await;
    saml.assert_refused(&answer.saml_response, &fresh.relay_state, PROVIDER, "wrong_request").await;
    // That attempt is used up by the refusal (a RelayState is single use,
    // whatever comes with it): its own genuine answer is now refused too.
    let own = saml.idp_answer(&fresh, &[]).await;
    saml.assert_refused(&own.saml_response, &own.relay_state, "-", "unknown_relay_state").await;
    // Without a RelayState (IdP-initiated): porteiro never asked.
    saml.assert_refused(&answer.saml_response, "", "-", "unknown_relay_state").await;
    // A new login works.
    let cookie = saml.login("/third", &[]).await;
    saml.echo("/third", &cookie).await;
}

/// Login CSRF (DESIGN 2.5): Mallory starts a login in her own browser,
/// lets the IdP sign her in, and has a victim's browser post her genuine
/// Response and RelayState to the ACS (an auto-submitting form on any
/// site). The victim must not end up signed in as Mallory: the attempt is
/// bound to the browser that started it.
#[tokio::test]
async fn a_response_posted_by_another_browser_is_refused() {
    let saml = Setup::new().start().await;
    let mallory = attempt_jar();

    // A victim with no login-attempt cookie at all.
    let victim = attempt_jar();
    let begun = saml.begin_in(&mallory, "/timesheets").await;
    let answer = saml.idp_answer(&begun, &[("email", MALLORY)]).await;
    saml.assert_refused_in(&victim, &answer.saml_response, &answer.relay_state, PROVIDER, "saml_browser_mismatch")
        .await;
    // The RelayState was spent by the refusal: Mallory cannot use it either.
    saml.assert_refused_in(&mallory, &answer.saml_response, &answer.relay_state, "-", "unknown_relay_state").await;

    // A victim in the middle of a login of their own: they hold a genuine
    // attempt cookie, for their own RelayState.
    let victim = attempt_jar();
    let own = saml.begin_in(&victim, "/my-timesheets").await;
    let begun = saml.begin_in(&mallory, "/timesheets").await;
    let answer = saml.idp_answer(&begun, &[("email", MALLORY)]).await;
    saml.assert_refused_in(&victim, &answer.saml_response, &answer.relay_state, PROVIDER, "saml_browser_mismatch")
        .await;

    // Nor does a genuine cookie of the victim's renamed to the name of
    // Mallory's attempt (a cookie is sealed to its name).
    let begun = saml.begin_in(&mallory, "/timesheets").await;
    let answer = saml.idp_answer(&begun, &[("email", MALLORY)]).await;
    let (victims_name, victims_value) = victim.cookies().into_iter().next().unwrap();
    let (mallorys_name, _) =
        mallory.cookies().into_iter().find(|(n, _)| begun.relay_state.starts_with(&n[ATTEMPT_COOKIE.len()..])).unwrap();
    assert_ne!(victims_name, mallorys_name);
    victim.set(&mallorys_name, &victims_value);
    saml.assert_refused_in(&victim, &answer.saml_response, &answer.relay_state, PROVIDER, "saml_browser_mismatch")
        .await;

    // The victim's own login is untouched and completes as the victim.
    let answer = saml.idp_answer(&own, &[]).await;
    let resp = saml.post_acs_in(&victim, &answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["location"], "/my-timesheets");
    let cookie = format!("{COOKIE}={}", session_cookie(&resp).unwrap());
    assert_eq!(saml.echo("/my-timesheets", &cookie).await.header("x-forwarded-email"), Some(USER_EMAIL));

    // And Mallory, in her own browser, signs in as herself.
    let begun = saml.begin_in(&mallory, "/timesheets").await;
    let answer = saml.idp_answer(&begun, &[("email", MALLORY)]).await;
    let resp = saml.post_acs_in(&mallory, &answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    let cookie = format!("{COOKIE}={}", session_cookie(&resp).unwrap());
    assert_eq!(saml.echo("/timesheets", &cookie).await.header("x-forwarded-email"), Some(MALLORY));
}

/// The browser that started a login may finish it once: a second POST of
/// the same answer is refused even when the browser sends the attempt
/// cookie again (a client that ignored its expiry).
#[tokio::test]
async fn the_relay_state_is_single_use_even_with_its_cookie() {
    let saml = Setup::new().start().await;
    let begun = saml.begin("/first").await;
    let kept = saml.browser.cookies();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let answer = saml.idp_answer(&begun, &[]).await;
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    assert!(session_cookie(&resp).is_some());
    assert!(saml.browser.cookies().is_empty(), "the ACS expires the attempt's cookie");
    let (name, value) = &kept[0];
    saml.browser.set(name, value);
    saml.assert_refused(&answer.saml_response, &answer.relay_state, "-", "unknown_relay_state").await;
}

/// Login A's response posted with login B's RelayState.
#[tokio::test]
async fn in_response_to_another_login() {
    let saml = Setup::new().start().await;
    for sign in ["assertion", "response"] {
        let a = saml.begin("/a").await;
        let b = saml.begin("/b").await;
        let answer_a = saml.idp_answer(&a, &[("sign", sign)]).await;
        assert_eq!(attribute(&answer_a.xml(), "SubjectConfirmationData", "InResponseTo"), Some(a.request_id()));
        saml.assert_refused(&answer_a.saml_response, &b.relay_state, PROVIDER, "wrong_request").await;
        // B's attempt was used up by the refusal; A's still waits and takes
        // its own answer.
        let resp = saml.post_acs(&answer_a.saml_response, &a.relay_state).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{sign}");
        assert_eq!(resp.headers()["location"], "/a");
    }
}

/// A response addressed to another service's ACS (Destination and
/// Recipient), signed by the right IdP for the right login.
#[tokio::test]
async fn response_for_another_acs() {
    let saml = Setup::new().start().await;
    let elsewhere = format!("{}/other-app/saml/acs", saml.base);
    for sign in ["assertion", "response", "both"] {
        let (_, answer) = saml.answer_for("/", &[("sign", sign), ("destination", &elsewhere)]).await;
        let xml = answer.xml();
        assert_eq!(attribute(&xml, "SubjectConfirmationData", "Recipient").as_deref(), Some(elsewhere.as_str()));
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "wrong_recipient").await;
    }
}

/// Signed, but not by the key in the IdP metadata; signed with SHA-1;
/// signed by the right key for another issuer.
#[tokio::test]
async fn wrong_key_weak_algorithm_or_other_issuer() {
    let saml = Setup::new().start().await;
    for sign in ["assertion", "response"] {
        let (_, answer) = saml.answer_for("/", &[("sign", sign), ("signer", "alt")]).await;
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "bad_signature").await;
        let (_, answer) = saml.answer_for("/", &[("sign", sign), ("alg", "sha1")]).await;
        assert!(answer.xml().contains("http://www.w3.org/2000/09/xmldsig#rsa-sha1"));
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "bad_signature").await;
    }
    let (_, answer) = saml.answer_for("/", &[("issuer", "https://sts.windows.net/another-tenant/")]).await;
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "wrong_issuer").await;
}

/// The IdP did not sign the user in (cancelled, refused): its error
/// Response carries a status and no assertion, and the refusal names it.
#[tokio::test]
async fn idp_error_status() {
    let saml = Setup::new().start().await;
    for sign in ["none", "response"] {
        let (_, answer) = saml.answer_for("/", &[("status", "authn_failed"), ("sign", sign)]).await;
        let xml = answer.xml();
        assert!(element(&xml, "Assertion").is_none() && xml.contains("status:AuthnFailed"), "{xml}");
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "idp_refused").await;
    }
}

/// Garbage where a SAMLResponse should be.
#[tokio::test]
async fn malformed_posts() {
    let saml = Setup::new().start().await;
    let begun = saml.begin("/").await;
    saml.assert_refused("not base64 !!", &begun.relay_state, PROVIDER, "malformed_response").await;
    let begun = saml.begin("/").await;
    saml.assert_refused(&encode("<nope/>"), &begun.relay_state, PROVIDER, "assertion_count").await;
    let resp = saml.client.post(saml.url("/sso/saml/acs")).form(&[("RelayState", "x")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(session_cookie(&resp).is_none());
    let huge = "A".repeat(2 * 1024 * 1024);
    let resp = saml.post_acs(&huge, &saml.begin("/").await.relay_state).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(session_cookie(&resp).is_none());
}
