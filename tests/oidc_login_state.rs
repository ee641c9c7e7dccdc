//! OpenID Connect login attempts (DESIGN §2.2, §8): `state` is bound to
//! the browser by a cookie per attempt (`porteiro_login_<state prefix>`,
//! `Path=/sso/`) and single use; parallel tabs each finish their own login;
//! a browser holds at most five attempts, the oldest going first. And
//! readiness: `/readyz` says 503 until discovery and keys are loaded, and
//! turns 200 once an IdP that was down comes up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::oidc::{
    Browser, CALLBACK, Gateway, PATIENCE, PUBLIC_URL, Page, STATE_COOKIE_PREFIX, TestIdp, assert_hardened, idp_config,
    start_porteiro, start_ready,
};
use support::{FakeUpstream, RunningUpstream};

async fn setup() -> (TestIdp, Gateway, RunningUpstream) {
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let gw = start_ready(&idp_config(&idp, &up.url(), "")).await;
    (idp, gw, up)
}

/// Starts a login at `path` and returns the IdP's redirect back (the
/// callback URL, not yet visited), and the attempt's state.
async fn begin(browser: &Browser, path: &str) -> (Page, String) {
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}{path}")).await;
    let state = to_idp.location_param("state").unwrap();
    let back = browser.follow(&to_idp).await;
    assert!(back.location().as_str().starts_with(&format!("{CALLBACK}?")), "{}", back.location());
    (back, state)
}

fn state_cookie_name(state: &str) -> String {
    format!("{STATE_COOKIE_PREFIX}{}", &state[..12])
}

/// The callback refused as an unknown or spent state: 400 page, no session.
fn assert_state_refused(page: &Page, text: &str) {
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.is_html());
    assert_hardened(page);
    assert!(page.body.contains(text), "expected {text:?}: {}", page.body);
    assert!(!page.sets_session());
}

#[tokio::test]
async fn a_state_is_single_use() {
    let (idp, gw, up) = setup().await;
    let browser = gw.browser();
    let (back, _) = begin(&browser, "/orders").await;
    // What an attacker (or the back button) could replay: the callback URL
    // with the cookies the browser had then.
    let replayer = browser.snapshot();
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());

    let replay = replayer.follow(&back).await;
    assert_state_refused(&replay, "already used");
    assert!(!replayer.has_session());
    assert_eq!(gw.failures("idp", "state_replayed").await, 1.0);
    assert_eq!(idp.token_calls().len(), 1, "a replayed answer never reaches the token endpoint");

    // The browser that finished the login no longer holds the attempt.
    let again = browser.other_browser();
    let again = again.follow(&back).await;
    assert_state_refused(&again, "not started in this browser");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_state_from_another_browser_is_refused() {
    let (idp, gw, up) = setup().await;
    let victim = gw.browser();
    let (back, _) = begin(&victim, "/orders").await;

    // Login CSRF: the attacker's IdP answer opened in the victim's browser,
    // here the other way round: a browser that never started this login.
    let other = victim.other_browser();
    let page = other.follow(&back).await;
    assert_state_refused(&page, "not started in this browser");
    assert!(!other.has_session());
    assert_eq!(gw.failures("-", "unknown_state").await, 1.0);

    // Even with a login attempt of its own under way.
    let (_, own_state) = begin(&other, "/mine").await;
    let page = other.follow(&back).await;
    assert_state_refused(&page, "not started in this browser");
    assert_eq!(other.state_cookies().len(), 1, "its own attempt is untouched");
    assert_eq!(other.state_cookies()[0].name, state_cookie_name(&own_state));
    assert!(idp.token_calls().is_empty(), "the code was never spent");

    // The browser that did start it still finishes it.
    let done = victim.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.location().as_str(), format!("{PUBLIC_URL}/orders"));
    assert_eq!(victim.get(done.location().as_str()).await.echo().uri, "/orders");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_tampered_or_missing_state_is_refused() {
    let (_idp, gw, _up) = setup().await;
    let browser = gw.browser();
    let (back, state) = begin(&browser, "/orders").await;
    // Same cookie prefix, different state: the sealed cookie says otherwise.
    let mut tampered = back.location();
    let last = if state.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &state[..state.len() - 1]);
    let kept: Vec<(String, String)> = tampered
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" { forged.clone() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(kept);
    let page = browser.get(tampered.as_str()).await;
    assert_state_refused(&page, "not started in this browser");
    assert!(!browser.has_session());

    // A cookie forged for the genuine state is no better than none.
    let forger = browser.other_browser();
    forger.add_cookie(support::oidc::PUBLIC_HOST, &state_cookie_name(&state), "forged-value", "/sso/");
    let page = forger.follow(&back).await;
    assert_state_refused(&page, "not started in this browser");
    assert!(!forger.has_session());

    // And the genuine answer still works.
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
}

#[tokio::test]
async fn logins_in_two_tabs_both_finish() {
    let (_idp, gw, up) = setup().await;
    let browser = gw.browser();
    // Two tabs start before either comes back.
    let (back_1, state_1) = begin(&browser, "/tab/one?x=1").await;
    let (back_2, state_2) = begin(&browser, "/tab/two?y=2").await;
    assert_ne!(state_1, state_2);
    let names: Vec<String> = browser.state_cookies().into_iter().map(|c| c.name).collect();
    assert!(names.contains(&state_cookie_name(&state_1)) && names.contains(&state_cookie_name(&state_2)), "{names:?}");

    // They come back in the other order; each lands on its own page.
    let done_2 = browser.follow(&back_2).await;
    assert_eq!(done_2.status, StatusCode::FOUND, "{}", done_2.body);
    assert_eq!(done_2.location().as_str(), format!("{PUBLIC_URL}/tab/two?y=2"));
    let done_1 = browser.follow(&back_1).await;
    assert_eq!(done_1.status, StatusCode::FOUND, "{}", done_1.body);
    assert_eq!(done_1.location().as_str(), format!("{PUBLIC_URL}/tab/one?x=1"));
    assert!(browser.state_cookies().is_empty(), "both attempts are over");
    assert_eq!(browser.get(done_1.location().as_str()).await.echo().uri, "/tab/one?x=1");
    assert_eq!(browser.get(done_2.location().as_str()).await.echo().uri, "/tab/two?y=2");
    assert_eq!(up.hits(), 2);
    assert_eq!(gw.logins("idp").await, 2.0);
}

#[tokio::test]
async fn a_sixth_attempt_expires_the_oldest() {
    let (_idp, gw, _up) = setup().await;
    let browser = gw.browser();
    // Six tabs of the app opened while signed out (a restored session, say).
    let mut attempts = Vec::new();
    for i in 1..=6 {
        attempts.push(begin(&browser, &format!("/tab/{i}")).await);
        let held = browser.state_cookies().len();
        assert_eq!(held, i.min(5), "after attempt {i} the browser holds {held} attempts");
    }
    // The first attempt's cookie was expired by the sixth start; the rest stay.
    let held: Vec<String> = browser.state_cookies().into_iter().map(|c| c.name).collect();
    assert!(!held.contains(&state_cookie_name(&attempts[0].1)), "the oldest attempt is gone: {held:?}");
    for (_, state) in &attempts[1..] {
        assert!(held.contains(&state_cookie_name(state)), "{held:?}");
    }
    // So its answer is refused, and the newest and the second oldest finish.
    let page = browser.follow(&attempts[0].0).await;
    assert_state_refused(&page, "not started in this browser");
    for i in [5, 1] {
        let done = browser.follow(&attempts[i].0).await;
        assert_eq!(done.status, StatusCode::FOUND, "attempt {}: {}", i + 1, done.body);
        assert_eq!(done.location().as_str(), format!("{PUBLIC_URL}/tab/{}", i + 1));
    }
}

/// Forward auth with `?redirect=true` (Traefik, Caddy) sends a signed-out
/// browser through `/sso/start` too, where it shows the attempt cookies it
/// holds, so those logins are bounded like any other.
#[tokio::test]
async fn forward_auth_logins_start_at_sso_start() {
    let (_idp, gw, _up) = setup().await;
    let browser = gw.browser();
    let auth = format!("{PUBLIC_URL}/sso/auth?redirect=true");
    let page = browser.get_with(&auth, &[("x-original-url", &format!("{PUBLIC_URL}/tickets/1?x=y"))]).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert_eq!(page.location().path(), "/sso/start");
    assert_eq!(page.location_param("provider").as_deref(), Some("idp"));
    assert_eq!(page.location_param("redirectUrl").as_deref(), Some("/tickets/1?x=y"));
    assert!(browser.state_cookies().is_empty(), "no attempt is made before /sso/start");
    for i in 1..=7 {
        let page = browser.get_with(&auth, &[("x-original-url", &format!("{PUBLIC_URL}/r/{i}"))]).await;
        let to_idp = browser.follow(&page).await;
        assert_eq!(to_idp.status, StatusCode::FOUND, "{}", to_idp.body);
        assert!(to_idp.location_param("state").is_some(), "{}", to_idp.location());
    }
    assert_eq!(browser.state_cookies().len(), 5, "the five newest attempts remain");
}

#[tokio::test]
async fn attempts_started_at_sso_start_are_bounded_too() {
    let (_idp, gw, _up) = setup().await;
    let browser = gw.browser();
    let mut states = Vec::new();
    for i in 1..=7 {
        let page = browser.get(&format!("{PUBLIC_URL}/sso/start?provider=idp&redirectUrl=/r/{i}")).await;
        assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
        states.push(page.location_param("state").unwrap());
    }
    let held: Vec<String> = browser.state_cookies().into_iter().map(|c| c.name).collect();
    let expected: Vec<String> = states[2..].iter().map(|s| state_cookie_name(s)).collect();
    let mut held_sorted = held.clone();
    held_sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(held_sorted, expected_sorted, "the five newest attempts remain");
}

#[tokio::test]
async fn readiness_waits_for_an_idp_that_is_down_at_start() {
    // The IdP's address is known and held, but it closes every connection.
    let idp = TestIdp::builder().start_down().await;
    let up = FakeUpstream::new("app").start().await;
    let provider = format!(
        "[[providers]]\nid = \"idp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\nalgorithms = [\"ES256\"]\n\n[[routes]]\npath_prefix = \"/\"\n\
         upstream = \"{}\"\nlogin = \"idp\"\n",
        idp.issuer,
        support::oidc::IDP_CLIENT_ID,
        support::oidc::IDP_CLIENT_SECRET,
        up.url()
    );
    let gw = start_porteiro(&provider).await;
    // Not ready once discovery has failed (rather than after a fixed sleep).
    let deadline = Instant::now() + PATIENCE;
    while idp.refused() == 0 {
        assert!(Instant::now() < deadline, "porteiro never tried discovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.readyz().await, 503, "not ready without discovery");

    // A browser meanwhile gets a clear 503 page, not a broken redirect.
    let browser = gw.browser();
    let page = browser.get(&format!("{PUBLIC_URL}/app")).await;
    let page = browser.follow_on(page, support::oidc::PUBLIC_HOST).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(page.is_html());
    assert!(page.body.contains("not reachable yet"), "{}", page.body);
    assert!(browser.state_cookies().is_empty());
    let start = browser.get(&format!("{PUBLIC_URL}/sso/start?provider=idp")).await;
    assert_eq!(start.status, StatusCode::SERVICE_UNAVAILABLE, "{}", start.body);

    // The IdP comes up: discovery is retried with backoff and succeeds.
    idp.bring_up();
    // Past the longest backoff on porteiro's clock: the retry runs now.
    gw.advance(Duration::from_secs(60));
    let started = Instant::now();
    while gw.readyz().await != 200 {
        assert!(started.elapsed() < PATIENCE, "still not ready {PATIENCE:?} after the IdP came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/app")).await;
    assert!(to_idp.location().as_str().starts_with(&idp.issuer), "{}", to_idp.location());
    let back = browser.follow(&to_idp).await;
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(browser.get(done.location().as_str()).await.echo().uri, "/app");
}
