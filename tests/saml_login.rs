//! SAML 2.0 login (DESIGN 2.5; seed 004, Carol / Clock In with Azure AD or
//! TOTVS Identity) against a real, independently written IdP: pysaml2,
//! started by each test on 127.0.0.1 (tests/saml-idp/idp.py), which reads
//! porteiro's SP metadata and signs with xmlsec1. Every hop is asserted:
//! AuthnRequest by HTTP-Redirect, the IdP's signed Response posted to the
//! ACS, the session cookie, the identity headers upstream, the deep link.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use support::saml::*;

#[tokio::test]
async fn azure_ad_style_login_hop_by_hop() {
    let saml = Setup::new().route("headers = { \"X-Name\" = \"name\" }").start().await;
    let deep = "/timesheets/2024-05?employee=42&view=week";

    // Hop 1: a browser opens a deep link and is sent (through /sso/start)
    // to the IdP's HTTP-Redirect SingleSignOnService with an AuthnRequest.
    // A login-attempt cookie binds the attempt to this browser; it must
    // come back with the IdP's cross-site POST: on a plain-http demo it is
    // a plain cookie (no SameSite, which browsers would read as Lax).
    let begun = saml.begin(deep).await;
    let [attempt] = &begun.set_cookies[..] else { panic!("one attempt cookie: {:?}", begun.set_cookies) };
    assert!(attempt.starts_with(ATTEMPT_COOKIE), "{attempt}");
    for flag in ["HttpOnly", "Path=/sso/", "Max-Age=600"] {
        assert!(attempt.contains(flag), "{flag} missing: {attempt}");
    }
    assert!(!attempt.contains("SameSite") && !attempt.contains("Secure"), "{attempt}");
    assert!(!attempt.contains(&begun.relay_state) && !attempt.contains("timesheets"), "sealed: {attempt}");
    let req = &begun.request_xml;
    assert_eq!(attribute(req, "AuthnRequest", "Destination").as_deref(), Some(saml.idp.sso_url().as_str()));
    assert_eq!(attribute(req, "AuthnRequest", "AssertionConsumerServiceURL"), Some(saml.acs_url()));
    assert_eq!(
        attribute(req, "AuthnRequest", "ProtocolBinding").as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    );
    assert_eq!(text_of(req, "Issuer"), Some(saml.entity_id.clone()));
    // The RelayState is opaque: the deep link waits server-side.
    assert!(!begun.relay_state.contains("timesheets") && begun.relay_state.len() >= 22, "{}", begun.relay_state);
    assert_eq!(saml.upstream.hits(), 0, "nothing reached the app unauthenticated");

    // Hop 2: the IdP signs Carol in and answers with an auto-submitting
    // form (HTTP-POST binding) to the ACS that porteiro's metadata names.
    let answer = saml.idp_answer(&begun, &[]).await;
    assert_eq!(answer.action, saml.acs_url());
    assert_eq!(answer.relay_state, begun.relay_state);
    let xml = answer.xml();
    assert_eq!(attribute(&xml, "Response", "InResponseTo"), Some(begun.request_id()));
    assert_eq!(attribute(&xml, "Response", "Destination"), Some(saml.acs_url()));
    assert_eq!(text_of(&xml, "Audience"), Some(saml.entity_id.clone()));
    assert_eq!(attribute(&xml, "SubjectConfirmationData", "Recipient"), Some(saml.acs_url()));
    // Azure AD's default: the assertion is signed (RSA-SHA256), the
    // Response is not; attributes are named by claim URI, no NameFormat.
    assert_eq!(elements(&xml, "Signature").len(), 1, "{xml}");
    let assertion = &xml[element(&xml, "Assertion").unwrap()];
    assert!(element(assertion, "Signature").is_some(), "the Assertion carries the signature: {xml}");
    assert!(xml.contains("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"), "{xml}");
    assert!(xml.contains(&format!("Name=\"{EMAIL_CLAIM}\">")), "{xml}");

    // Hop 3: the form is posted to the ACS; porteiro starts a session and
    // sends the browser back to the deep link.
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["location"], deep);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    let set_cookie = session_set_cookie(&resp).expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=900"] {
        assert!(set_cookie.contains(flag), "{flag} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http public_url: {set_cookie}");
    let value = session_cookie(&resp).unwrap();
    assert!(!value.contains("carol"), "the cookie is sealed: {value}");
    let cookie = format!("{COOKIE}={value}");

    // Hop 4: the deep link, signed in: the app sees who it is.
    let echo = saml.echo(deep, &cookie).await;
    assert_eq!(echo.uri, deep);
    assert_eq!(echo.header("x-forwarded-email"), Some(USER_EMAIL));
    assert_eq!(echo.header("x-forwarded-user"), Some(USER_EMAIL));
    assert_eq!(echo.header("x-forwarded-groups"), Some(USER_GROUPS));
    assert_eq!(echo.header("x-name"), Some(USER_NAME));
    assert!(echo.header("cookie").is_none_or(|c| !c.contains(COOKIE)), "porteiro's cookie stays with porteiro");

    let me: serde_json::Value = saml
        .client
        .get(saml.url("/sso/userinfo"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], USER_EMAIL);
    assert_eq!(me["name"], USER_NAME);
    assert_eq!(me["provider"], PROVIDER);
    assert_eq!(me["groups"], serde_json::json!(["timekeepers", "backoffice"]));
    assert_eq!(saml.logins().await, 1.0);
}

/// Azure AD can sign the Response, the Assertion, or both ("Signing
/// Option"); TOTVS Identity and others pick one too. All three work, and
/// each signature really is checked (a Response-only signature still
/// covers the assertion).
#[tokio::test]
async fn response_signed_or_both_signed() {
    let saml = Setup::new().start().await;
    for (sign, signatures) in [("response", 1), ("both", 2), ("assertion", 1)] {
        let path = format!("/clock-in?sign={sign}");
        let (_, answer) = saml.answer_for(&path, &[("sign", sign)]).await;
        let xml = answer.xml();
        assert_eq!(elements(&xml, "Signature").len(), signatures, "{sign}: {xml}");
        let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{sign}: {:?}", resp.text().await);
        assert_eq!(resp.headers()["location"], path.as_str());
        let cookie = format!("{COOKIE}={}", session_cookie(&resp).unwrap());
        let echo = saml.echo(&path, &cookie).await;
        assert_eq!(echo.header("x-forwarded-email"), Some(USER_EMAIL), "{sign}");
    }
    assert_eq!(saml.logins().await, 3.0);
}

/// The IdP metadata from `idp_metadata_url` (Azure AD's "App Federation
/// Metadata Url") works like the file.
#[tokio::test]
async fn idp_metadata_from_url() {
    let saml = Setup::new().metadata_url().start().await;
    let cookie = saml.login("/punches", &[]).await;
    let echo = saml.echo("/punches", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some(USER_EMAIL));
}

/// While the IdP metadata URL cannot be fetched, porteiro is not ready and
/// cannot start a login; the SP metadata, which depends on porteiro's
/// settings only, is still served.
#[tokio::test]
async fn not_ready_while_the_idp_metadata_url_is_unreachable() {
    tools();
    let upstream = support::FakeUpstream::new("clockin").start().await;
    // Down, but counting porteiro's attempts.
    let closed = support::DeadEnd::start().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://clockin.example.com\"\n\
         [session]\nsecret = \"saml-test-session-secret-0123456789abcdef\"\n\
         [[providers]]\nid = \"azure\"\nkind = \"saml\"\nidp_metadata_url = \"http://{closed}/federationmetadata.xml\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\nlogin = \"azure\"\n",
        upstream.url()
    );
    let config = porteiro::config::Config::from_toml(&toml, "t.toml").unwrap();
    let running = porteiro::start(config).await.unwrap();
    let c = client();
    let admin = running.admin_addr.unwrap();
    // Not ready after the first fetch failed, nor after the retry failed.
    for attempts in 1..=2 {
        closed.wait_for(attempts).await;
        let ready = c.get(format!("http://{admin}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let resp = c.get(format!("http://{}/x", running.addr)).header("accept", BROWSER).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let start = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(start.starts_with("/sso/start?"), "{start}");
    let resp = c.get(format!("http://{}{start}", running.addr)).header("accept", BROWSER).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("set-cookie").is_none(), "no attempt cookie for a login that did not start");
    assert!(session_cookie(&resp).is_none());
    let md = c.get(format!("http://{}/sso/saml/metadata", running.addr)).send().await.unwrap();
    assert_eq!(md.status(), StatusCode::OK);
    let xml = md.text().await.unwrap();
    assert!(xml.contains("Location=\"https://clockin.example.com/sso/saml/acs\""), "{xml}");
    assert_eq!(upstream.hits(), 0);
}

/// `GET /sso/saml/metadata`: what to paste into Azure AD (Identifier and
/// Reply URL). The test IdP read this very document to learn the ACS.
#[tokio::test]
async fn sp_metadata_names_the_entity_id_and_the_acs() {
    let saml = Setup::new().entity_id("urn:clockin:porteiro").start().await;
    let resp = saml.client.get(saml.url("/sso/saml/metadata")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/samlmetadata+xml");
    let xml = resp.text().await.unwrap();
    assert_eq!(attribute(&xml, "EntityDescriptor", "entityID").as_deref(), Some("urn:clockin:porteiro"));
    assert_eq!(attribute(&xml, "AssertionConsumerService", "Location"), Some(saml.acs_url()));
    assert_eq!(
        attribute(&xml, "AssertionConsumerService", "Binding").as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    );
    assert_eq!(attribute(&xml, "SPSSODescriptor", "AuthnRequestsSigned").as_deref(), Some("false"));
    assert!(!xml.contains("validUntil"), "a pasted copy must not expire: {xml}");

    // The configured entity id is the Issuer of the AuthnRequest and the
    // Audience the IdP answers for, and the login works.
    let (begun, answer) = saml.answer_for("/", &[]).await;
    assert_eq!(text_of(&begun.request_xml, "Issuer").as_deref(), Some("urn:clockin:porteiro"));
    assert_eq!(text_of(&answer.xml(), "Audience").as_deref(), Some("urn:clockin:porteiro"));
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
}

/// With no `email_attribute` the email is the NameID (TOTVS Identity,
/// Azure AD's default NameID); it must be a real address (seed 004: "no
/// fake emails").
#[tokio::test]
async fn email_from_the_name_id() {
    let saml = Setup::new().no_attributes().start().await;
    let md = saml.client.get(saml.url("/sso/saml/metadata")).send().await.unwrap().text().await.unwrap();
    assert!(md.contains("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"), "{md}");
    let cookie = saml.login("/", &[("email", "ana.souza@clockin.example")]).await;
    let echo = saml.echo("/", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some("ana.souza@clockin.example"));
    assert_eq!(echo.header("x-forwarded-user"), Some("ana.souza@clockin.example"));
    assert_eq!(echo.header("x-forwarded-groups"), None, "no groups_attribute, no groups");

    for fake in ["ana.souza", "ana@", "@clockin.example", "ana souza@clockin.example"] {
        let (_, answer) = saml.answer_for("/", &[("email", fake)]).await;
        saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "invalid_email").await;
    }
}

/// Behind a TLS terminator (`public_url` https): the IdP posts to the https
/// ACS and the session cookie is `__Host-` and `Secure`.
#[tokio::test]
async fn behind_tls_the_cookie_is_secure() {
    let saml = Setup::new().public_url("https://clockin.example.com").start().await;
    let (begun, answer) = saml.answer_for("/app/", &[]).await;
    // The login-attempt cookie comes with the IdP's cross-site POST only
    // as SameSite=None, which browsers accept only with Secure.
    let [attempt] = &begun.set_cookies[..] else { panic!("one attempt cookie: {:?}", begun.set_cookies) };
    for flag in ["SameSite=None", "Secure", "HttpOnly", "Path=/sso/"] {
        assert!(attempt.contains(flag), "{flag} missing: {attempt}");
    }
    assert_eq!(
        attribute(&begun.request_xml, "AuthnRequest", "AssertionConsumerServiceURL").as_deref(),
        Some("https://clockin.example.com/sso/saml/acs")
    );
    assert_eq!(answer.action, "https://clockin.example.com/sso/saml/acs");
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-porteiro_session="))
        .expect("a __Host- session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
}

/// Groups from the IdP drive the route's `allow.groups`.
#[tokio::test]
async fn groups_from_the_idp_decide_access() {
    let saml = Setup::new().route("allow = { groups = [\"timekeepers\"] }").start().await;
    let cookie = saml.login("/", &[]).await;
    saml.echo("/", &cookie).await;
    let outsider = saml.login("/", &[("email", "dave@clockin.example"), ("groups", "sales")]).await;
    let resp =
        saml.client.get(saml.url("/")).header("accept", BROWSER).header("cookie", &outsider).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// Azure AD (Entra ID): "Federation Metadata XML" downloaded into
/// `idp_metadata_file`, issuer `https://sts.windows.net/{tenant}/`.
#[tokio::test]
async fn azure_federation_metadata_file() {
    let saml = Setup::new().azure_metadata().start().await;
    let (_, answer) = saml.answer_for("/clock-in/today", &[]).await;
    assert_eq!(text_of(&answer.xml(), "Issuer").as_deref(), Some(AZURE_ISSUER));
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["location"], "/clock-in/today");
    let cookie = format!("{COOKIE}={}", session_cookie(&resp).unwrap());
    let echo = saml.echo("/clock-in/today", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some(USER_EMAIL));
}

/// Every login gets its own unguessable AuthnRequest ID and RelayState.
#[tokio::test]
async fn request_ids_and_relay_states_are_unguessable() {
    let saml = Setup::new().start().await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let begun = saml.begin("/").await;
        let id = begun.request_id();
        // 160 random bits, base64url after an xs:ID-safe prefix.
        assert!(id.starts_with('_') && id.len() >= 27, "{id}");
        assert!(begun.relay_state.len() >= 32, "{}", begun.relay_state);
        assert!(seen.insert(id) && seen.insert(begun.relay_state));
    }
}

/// The ACS takes only the HTTP-POST binding; the metadata is read-only.
#[tokio::test]
async fn saml_endpoints_answer_405_to_other_methods() {
    let saml = Setup::new().start().await;
    let resp = saml.client.get(saml.url("/sso/saml/acs?SAMLResponse=x&RelayState=y")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    assert!(session_cookie(&resp).is_none());
    let resp = saml.client.post(saml.url("/sso/saml/metadata")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
}

/// With `email_attribute` set, the email comes from that attribute, not
/// from the NameID (Azure AD with a persistent or object-ID NameID): the
/// NameID is the user id.
#[tokio::test]
async fn email_from_the_attribute_user_from_the_name_id() {
    let saml = Setup::new().start().await;
    let object_id = "8c2f0c4e-5b7d-4a49-9e57-1d0f3c6b2a11";
    let (_, answer) = saml.answer_for("/", &[("name_id", object_id)]).await;
    assert_eq!(text_of(&answer.xml(), "NameID").as_deref(), Some(object_id));
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    let cookie = format!("{COOKIE}={}", session_cookie(&resp).unwrap());
    let echo = saml.echo("/", &cookie).await;
    assert_eq!(echo.header("x-forwarded-email"), Some(USER_EMAIL));
    assert_eq!(echo.header("x-forwarded-user"), Some(object_id));

    // The attribute is what counts: a NameID that looks like an email does
    // not stand in for a missing or fake email attribute.
    let (_, answer) = saml.answer_for("/", &[("email", "not-an-email"), ("name_id", USER_EMAIL)]).await;
    saml.assert_refused(&answer.saml_response, &answer.relay_state, PROVIDER, "invalid_email").await;
}

/// `sp_key_file` + `sp_cert_file`: porteiro signs its AuthnRequests on the
/// HTTP-Redirect binding (RSA-SHA256 over SAMLRequest, RelayState and
/// SigAlg) and publishes the certificate in its metadata; an IdP that
/// requires signed requests (pysaml2 with want_authn_requests_signed, as
/// Azure AD with "require verification certificates") verifies them with
/// that certificate and signs the user in.
#[tokio::test]
async fn signed_authn_requests_are_verified_by_the_idp() {
    let saml = Setup::new().signed_requests().start().await;

    let md = saml.client.get(saml.url("/sso/saml/metadata")).send().await.unwrap().text().await.unwrap();
    assert_eq!(attribute(&md, "SPSSODescriptor", "AuthnRequestsSigned").as_deref(), Some("true"), "{md}");
    assert_eq!(attribute(&md, "KeyDescriptor", "use").as_deref(), Some("signing"), "{md}");
    let published = text_of(&md, "X509Certificate").expect("the SP certificate in the metadata");
    let cert_pem = std::fs::read_to_string(saml.dir.path().join("sp.crt")).unwrap();
    let cert_b64: String = cert_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(published, cert_b64);

    let deep = "/timesheets/2024-05?employee=42";
    let begun = saml.begin(deep).await;
    let query = begun.location.split_once('?').unwrap().1;
    let names: Vec<&str> = query.split('&').map(|p| p.split_once('=').unwrap().0).collect();
    assert_eq!(names, ["SAMLRequest", "RelayState", "SigAlg", "Signature"], "the binding's order: {query}");
    let sig_alg = url::Url::parse(&begun.location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "SigAlg")
        .map(|(_, v)| v.into_owned());
    assert_eq!(sig_alg.as_deref(), Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"));

    // The IdP verifies the signature and answers; the login completes.
    let answer = saml.idp_answer(&begun, &[]).await;
    let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["location"], deep);
    assert!(session_cookie(&resp).is_some());

    // The signature covers the RelayState: one edited in transit, or a
    // request stripped of its signature, is refused by the IdP.
    let begun = saml.begin("/").await;
    let edited = begun.location.replace(&format!("RelayState={}", begun.relay_state), "RelayState=forged");
    assert_ne!(edited, begun.location);
    let resp = saml.client.get(&edited).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "the IdP must refuse an edited request");
    assert!(resp.text().await.unwrap().contains("IncorrectlySigned"));
    let unsigned = begun.location.split("&SigAlg=").next().unwrap();
    let resp = saml.client.get(unsigned).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "the IdP must refuse an unsigned request");
}

/// The control for the test above: without `sp_key_file` porteiro's
/// requests are unsigned, and an IdP that requires signatures refuses them.
#[tokio::test]
async fn an_idp_that_requires_signed_requests_refuses_unsigned_ones() {
    let saml = Setup::new().idp_wants_signed_requests().start().await;
    let begun = saml.begin("/").await;
    assert!(!begun.location.contains("Signature="), "{}", begun.location);
    let resp = saml.client.get(&begun.location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(resp.text().await.unwrap().contains("IncorrectlySigned"));
}

/// Logins started in several tabs of one browser each finish, in any
/// order. The browser holds at most five attempts (OpenID Connect's bound,
/// shared): a sixth expires the oldest, whose answer is then refused.
#[tokio::test]
async fn parallel_tabs_each_finish_and_attempts_are_bounded() {
    let saml = Setup::new().start().await;
    let mut tabs = Vec::new();
    for i in 0..3 {
        let path = format!("/tab/{i}");
        tabs.push((path.clone(), saml.answer_for(&path, &[]).await.1));
    }
    assert_eq!(saml.browser.cookies().len(), 3);
    for (path, answer) in tabs.iter().rev() {
        let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{path}: {:?}", resp.text().await);
        assert_eq!(resp.headers()["location"], path.as_str());
        let cookie = format!("{COOKIE}={}", session_cookie(&resp).unwrap());
        assert_eq!(saml.echo(path, &cookie).await.uri, path.as_str());
    }
    assert!(saml.browser.cookies().is_empty(), "each ACS answer expired its attempt's cookie");

    let mut begun = Vec::new();
    for i in 0..6 {
        begun.push(saml.begin(&format!("/many/{i}")).await);
    }
    let held = saml.browser.cookies();
    assert_eq!(held.len(), 5, "{held:?}");
    let name_of = |b: &Begun| format!("{ATTEMPT_COOKIE}{}", &b.relay_state[..12]);
    assert!(!held.iter().any(|(n, _)| *n == name_of(&begun[0])), "the oldest went: {held:?}");
    assert!(begun[5].set_cookies.iter().any(|c| c.starts_with(&format!("{}=;", name_of(&begun[0])))));
    let oldest = saml.idp_answer(&begun[0], &[]).await;
    saml.assert_refused(&oldest.saml_response, &oldest.relay_state, PROVIDER, "saml_browser_mismatch").await;
    for b in &begun[1..] {
        let answer = saml.idp_answer(b, &[]).await;
        let resp = saml.post_acs(&answer.saml_response, &answer.relay_state).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
    }
}
