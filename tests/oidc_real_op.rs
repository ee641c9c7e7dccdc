//! OpenID Connect login against a real, independently written provider:
//! panva's `oidc-provider` (npm; `tests/oidc-op/op.js`, installed by
//! `.ci/run`), driven hop by hop through its login and consent pages with a
//! cookie jar (DESIGN §2.2, §3, §5; Niara, seed 002).
//!
//! These tests fail, never skip, when Node.js or the npm install is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use support::oidc::{
    Browser, CALLBACK, Gateway, NIARA_CLAIMS, PUBLIC_HOST, PUBLIC_URL, Page, RealOp, SESSION_COOKIE,
    STATE_COOKIE_PREFIX, assert_hardened, link_with_text, niara_headers, niara_required_claims, op_client, start_ready,
};
use support::{FakeUpstream, RunningUpstream};

const CLIENT_ID: &str = "porteiro-niara";
const CLIENT_SECRET: &str = "niara-client-secret-0123456789";

/// One real provider with one confidential client (client_secret_basic,
/// PKCE required), porteiro guarding the whole site with it.
async fn setup(op_options: serde_json::Value, provider_extra: &str) -> (Arc<RealOp>, Gateway, RunningUpstream) {
    let mut options = op_options;
    options["clients"] = json!([op_client(CLIENT_ID, CLIENT_SECRET, "client_secret_basic")]);
    let op = RealOp::start(options).await;
    let up = FakeUpstream::new("niara").start().await;
    let gw = start_ready(&format!(
        r#"
[[providers]]
id = "niara"
kind = "oidc"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{required}
{provider_extra}

[[routes]]
id = "app"
path_prefix = "/"
upstream = "{upstream}"
login = "niara"
{headers}
"#,
        issuer = op.issuer,
        required = niara_required_claims(),
        upstream = up.url(),
        headers = niara_headers(),
    ))
    .await;
    (op, gw, up)
}

/// porteiro's answer to the provider's redirect back: the session starts
/// and the browser goes back to `deep_link`.
async fn callback_succeeds(browser: &Browser, back: &Page, deep_link: &str) -> Page {
    let callback = browser.follow(back).await;
    assert_eq!(callback.status, StatusCode::FOUND, "callback refused: {}", callback.body);
    assert_hardened(&callback);
    assert_eq!(callback.location().as_str(), format!("{PUBLIC_URL}{deep_link}"));
    callback
}

#[tokio::test]
async fn full_login_keeps_the_deep_link_and_forwards_identity_and_niara_claims() {
    let (op, gw, up) = setup(json!({}), "").await;
    let browser = gw.browser();
    let deep_link = "/reservas/2024/busca?destino=S%C3%A3o%20Paulo&adultos=2";

    // Hop 1..n on porteiro: not signed in -> sent to the provider with a
    // fresh login attempt (state cookie), PKCE S256, state and nonce.
    let to_op = browser.start_login(&format!("{PUBLIC_URL}{deep_link}")).await;
    let authorize = to_op.location();
    assert_eq!(authorize.origin().ascii_serialization(), op.issuer);
    assert_eq!(authorize.path(), "/auth");
    let param = |n: &str| to_op.location_param(n).unwrap_or_else(|| panic!("no {n} in {authorize}"));
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("client_id"), CLIENT_ID);
    assert_eq!(param("redirect_uri"), CALLBACK);
    assert_eq!(param("scope"), "openid profile email");
    assert_eq!(param("code_challenge_method"), "S256");
    assert_eq!(param("code_challenge").len(), 43, "base64url SHA-256");
    assert!(param("state").len() >= 22 && param("nonce").len() >= 22, "state and nonce carry >= 128 bits");
    assert_ne!(param("state"), param("nonce"));
    assert!(!authorize.as_str().contains(deep_link), "the return path stays in porteiro's cookie, not the URL");

    // The attempt's cookie: only for porteiro's endpoints, HttpOnly, Lax
    // (the provider's redirect back is a top-level GET), short-lived.
    let states = browser.state_cookies();
    assert_eq!(states.len(), 1, "{states:?}");
    let state = param("state");
    assert_eq!(states[0].name, format!("{STATE_COOKIE_PREFIX}{}", &state[..12]));
    assert_eq!(states[0].path, "/sso/");
    let set = browser.last_set_cookie(&states[0].name).expect("Set-Cookie of the attempt");
    assert_eq!(set.path(), Some("/sso/"));
    assert_eq!(set.http_only(), Some(true));
    assert_eq!(set.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(set.max_age(), Some(cookie::time::Duration::seconds(600)));

    // The provider's own pages: login form, then consent, then back.
    let back = op.sign_in(&browser, &to_op, "ana").await;
    let back_url = back.location();
    assert!(back_url.as_str().starts_with(&format!("{CALLBACK}?")), "{back_url}");
    assert_eq!(back.location_param("state").as_deref(), Some(state.as_str()));
    assert_eq!(back.location_param("iss").as_deref(), Some(op.issuer.as_str()), "RFC 9207 iss");
    assert!(back.location_param("code").is_some());

    // porteiro's callback: session cookie set, attempt cookie cleared,
    // browser sent back to the deep link.
    let callback = callback_succeeds(&browser, &back, deep_link).await;
    let session = callback.set_cookie(SESSION_COOKIE).expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.path(), Some("/"));
    assert_eq!(session.max_age(), Some(cookie::time::Duration::minutes(15)));
    let cleared = callback.set_cookie(&format!("{STATE_COOKIE_PREFIX}{}", &state[..12])).expect("state cookie cleared");
    assert_eq!(cleared.max_age(), Some(cookie::time::Duration::ZERO));
    assert!(browser.state_cookies().is_empty());
    assert_eq!(gw.logins("niara").await, 1.0);

    // The deep link, signed in: the upstream sees who it is, with the
    // Niara agency claims as headers, and never porteiro's cookies.
    let page = browser.get(callback.location().as_str()).await;
    let echo = page.echo();
    assert_eq!(echo.uri, deep_link);
    assert_eq!(echo.header("x-forwarded-user"), Some("ana"));
    assert_eq!(echo.header("x-forwarded-email"), Some("ana.souza@viagens-sj.example.com"));
    assert_eq!(echo.header("x-forwarded-preferred-username"), Some("ana"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("agents,finance"));
    let expected = [
        ("agencyid", "4711"),
        ("agencyname", "Viagens São João Ltda"),
        ("agencybusinessname", "SJ Turismo"),
        ("agencycountry", "BR"),
        ("agencydocument", "12.345.678/0001-90"),
        ("agencybackofficecode", "BO-0042"),
    ];
    assert_eq!(expected.len(), NIARA_CLAIMS.len());
    for (claim, value) in expected {
        assert_eq!(echo.header(&format!("x-{claim}")), Some(value), "header for {claim}");
    }
    let cookies = echo.header("cookie").unwrap_or_default();
    assert!(!cookies.contains(SESSION_COOKIE), "session cookie leaked upstream: {cookies}");
    assert_eq!(up.hits(), 1, "the upstream saw nothing before the login");

    // porteiro's own view of the session.
    let me = browser.get_json(&format!("{PUBLIC_URL}/sso/userinfo")).await;
    assert_eq!(me.status, StatusCode::OK);
    let me = me.json();
    assert_eq!(me["user"], "ana");
    assert_eq!(me["name"], "Ana Souza");
    assert_eq!(me["provider"], "niara");

    // Signed in: no more trips to the provider. Identity headers a client
    // sends itself are replaced, never believed.
    let again = browser
        .get_with(
            &format!("{PUBLIC_URL}/outra/pagina"),
            &[("X-Forwarded-User", "admin"), ("X-Agencyid", "1"), ("x_agencydocument", "forged")],
        )
        .await;
    let echo = again.echo();
    assert_eq!(echo.uri, "/outra/pagina");
    assert_eq!(echo.header("x-forwarded-user"), Some("ana"));
    assert_eq!(echo.header("x-agencyid"), Some("4711"));
    assert_eq!(echo.header("x-agencydocument"), Some("12.345.678/0001-90"));
    assert!(echo.all("x_agencydocument").is_empty(), "{:?}", echo.names());
}

#[tokio::test]
async fn a_missing_required_claim_fails_the_login_and_sets_no_session() {
    let (op, gw, up) = setup(json!({}), "").await;
    let browser = gw.browser();
    let to_op = browser.start_login(&format!("{PUBLIC_URL}/painel")).await;
    // `bruno` has every agency claim but agencydocument.
    let back = op.sign_in(&browser, &to_op, "bruno").await;
    let refused = browser.follow(&back).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.is_html());
    assert_hardened(&refused);
    assert!(refused.body.contains("agencydocument"), "the page names the missing claim: {}", refused.body);
    assert!(!refused.sets_session());
    assert!(!browser.has_session());
    assert_eq!(gw.failures("niara", "missing_claim").await, 1.0);
    // Still not signed in.
    let again = browser.get(&format!("{PUBLIC_URL}/painel")).await;
    assert_eq!(again.status, StatusCode::FOUND);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn custom_claims_come_from_userinfo_when_the_id_token_carries_only_sub() {
    // The provider as the spec has it: with an access token issued, claims
    // of the requested scopes go to userinfo, not the ID token. porteiro
    // fetches them with fetch_userinfo = true.
    let (op, gw, _up) = setup(json!({"conform": true}), "fetch_userinfo = true").await;
    let browser = gw.browser();
    let to_op = browser.start_login(&format!("{PUBLIC_URL}/x")).await;
    let back = op.sign_in(&browser, &to_op, "carla").await;
    let callback = callback_succeeds(&browser, &back, "/x").await;
    let echo = browser.get(callback.location().as_str()).await.echo();
    assert_eq!(echo.header("x-forwarded-user"), Some("carla"));
    assert_eq!(echo.header("x-forwarded-email"), Some("carla@outra-agencia.example.com"));
    assert_eq!(echo.header("x-agencyid"), Some("9001"));
    assert_eq!(echo.header("x-agencycountry"), Some("PT"));
    assert_eq!(echo.header("x-agencydocument"), Some("PT509876543"));
}

#[tokio::test]
async fn without_userinfo_a_conforming_provider_lacks_the_claims() {
    // Same provider, fetch_userinfo off: the ID token has no agency claims,
    // so the login is refused rather than let in without them.
    let (op, gw, _up) = setup(json!({"conform": true}), "").await;
    let browser = gw.browser();
    let to_op = browser.start_login(&format!("{PUBLIC_URL}/x")).await;
    let back = op.sign_in(&browser, &to_op, "carla").await;
    let refused = browser.follow(&back).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.body.contains("agencyid"), "{}", refused.body);
    assert!(!browser.has_session());
}

#[tokio::test]
async fn access_denied_at_the_provider_gives_a_page_with_a_retry_link() {
    let (op, gw, up) = setup(json!({}), "").await;
    let browser = gw.browser();
    let to_op = browser.start_login(&format!("{PUBLIC_URL}/relatorios?mes=3")).await;
    // The user presses the provider's "[ Cancel ]": access_denied.
    let back = op.cancel(&browser, &to_op).await;
    assert_eq!(back.location_param("error").as_deref(), Some("access_denied"));
    let page = browser.follow(&back).await;
    // A bad callback is 401 (DESIGN §6), as for the test IdP's access_denied.
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "a clear 401, never a 500: {}", page.body);
    assert!(page.is_html());
    assert_hardened(&page);
    assert!(page.body.contains("access_denied"), "the page names the error: {}", page.body);
    assert!(!page.sets_session());
    let retry = link_with_text(&page.body, "Try again").unwrap_or_else(|| panic!("no retry link: {}", page.body));
    assert_eq!(retry, "/sso/start?provider=niara&redirectUrl=%2Frelatorios%3Fmes%3D3");
    assert_eq!(gw.failures("niara", "idp_error").await, 1.0);

    // The retry link starts a new login at the same provider, and this
    // time the user signs in and lands where they first wanted to go.
    let retry = browser.get(&format!("{PUBLIC_URL}{retry}")).await;
    let to_op = browser.follow_on(retry, PUBLIC_HOST).await;
    assert_eq!(to_op.location().origin().ascii_serialization(), op.issuer, "{}", to_op.body);
    let back = op.sign_in(&browser, &to_op, "ana").await;
    let callback = callback_succeeds(&browser, &back, "/relatorios?mes=3").await;
    assert_eq!(browser.get(callback.location().as_str()).await.echo().uri, "/relatorios?mes=3");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn login_hint_from_sso_start_reaches_the_provider() {
    let (op, gw, _up) = setup(json!({}), "").await;
    let browser = gw.browser();
    let start = browser.get(&format!("{PUBLIC_URL}/sso/start?provider=niara&redirectUrl=/inicio&login_hint=ana")).await;
    let to_op = browser.follow_on(start, PUBLIC_HOST).await;
    assert_eq!(to_op.status, StatusCode::FOUND, "{}", to_op.body);
    assert_eq!(to_op.location_param("login_hint").as_deref(), Some("ana"));
    // The provider's login form is filled in with the hint.
    let mut page = browser.get(to_op.location().as_str()).await;
    while page.status.is_redirection() {
        page = browser.follow(&page).await;
    }
    assert!(page.body.contains("value=\"ana\""), "{}", page.body);
    let back = op.sign_in(&browser, &to_op, "ana").await;
    callback_succeeds(&browser, &back, "/inicio").await;
}

#[tokio::test]
async fn two_providers_on_two_routes_each_sign_in_against_their_own_provider() {
    // Two independent providers, each with its own client; one takes
    // client_secret_basic, the other client_secret_post.
    let op_a = RealOp::start(json!({
        "clients": [op_client("agency-portal", "portal-secret-aaaaaaaaaaaa", "client_secret_basic")],
        "cookie_prefix": "opa",
    }))
    .await;
    let op_b = RealOp::start(json!({
        "clients": [op_client("backoffice", "backoffice-secret-bbbbbbbbbb", "client_secret_post")],
        "cookie_prefix": "opb",
        "agency_scope": "agency",
    }))
    .await;
    let up_a = FakeUpstream::new("portal").start().await;
    let up_b = FakeUpstream::new("backoffice").start().await;
    let gw = start_ready(&format!(
        r#"
[[providers]]
id = "portal-idp"
kind = "oidc"
issuer = "{a}"
client_id = "agency-portal"
client_secret = "portal-secret-aaaaaaaaaaaa"
required_claims = ["agencyid"]

[[providers]]
id = "backoffice-idp"
kind = "oidc"
issuer = "{b}"
client_id = "backoffice"
client_secret = "backoffice-secret-bbbbbbbbbb"
token_endpoint_auth = "client_secret_post"
scopes = ["openid", "email", "agency"]
{required}

[[routes]]
id = "portal"
path_prefix = "/portal/"
upstream = "{up_a}"
login = "portal-idp"
headers = {{ "X-Agency" = "agencyid" }}

[[routes]]
id = "backoffice"
path_prefix = "/backoffice/"
upstream = "{up_b}"
login = "backoffice-idp"
headers = {{ "X-Agency" = "agencyid", "X-Backoffice-Code" = "agencybackofficecode" }}
"#,
        a = op_a.issuer,
        b = op_b.issuer,
        required = niara_required_claims(),
        up_a = up_a.url(),
        up_b = up_b.url(),
    ))
    .await;
    let browser = gw.browser();

    // Route A -> provider A.
    let to_a = browser.start_login(&format!("{PUBLIC_URL}/portal/home")).await;
    assert_eq!(to_a.location().origin().ascii_serialization(), op_a.issuer);
    assert_eq!(to_a.location_param("client_id").as_deref(), Some("agency-portal"));
    let back = op_a.sign_in(&browser, &to_a, "ana").await;
    let callback = callback_succeeds(&browser, &back, "/portal/home").await;
    let echo = browser.get(callback.location().as_str()).await.echo();
    assert_eq!(echo.upstream, "portal");
    assert_eq!(echo.header("x-forwarded-user"), Some("ana"));
    assert_eq!(echo.header("x-agency"), Some("4711"));

    // A's session does not open route B: B signs in against provider B.
    let to_b = browser.start_login(&format!("{PUBLIC_URL}/backoffice/reservas")).await;
    assert_eq!(to_b.location().origin().ascii_serialization(), op_b.issuer);
    assert_eq!(to_b.location_param("client_id").as_deref(), Some("backoffice"));
    assert_eq!(to_b.location_param("scope").as_deref(), Some("openid email agency"));
    let back = op_b.sign_in(&browser, &to_b, "carla").await;
    let callback = callback_succeeds(&browser, &back, "/backoffice/reservas").await;
    let echo = browser.get(callback.location().as_str()).await.echo();
    assert_eq!(echo.upstream, "backoffice");
    assert_eq!(echo.header("x-forwarded-user"), Some("carla"));
    assert_eq!(echo.header("x-agency"), Some("9001"));
    assert_eq!(echo.header("x-backoffice-code"), Some("BO-9001"));
    assert_eq!(gw.logins("portal-idp").await, 1.0);
    assert_eq!(gw.logins("backoffice-idp").await, 1.0);
    assert_eq!(up_a.hits(), 1);
    assert_eq!(up_b.hits(), 1);
}
