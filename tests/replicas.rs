//! OpenID Connect and SAML logins across replicas sharing one real Redis
//! (README "Several replicas"): an OIDC state and a SAML RelayState started
//! on replica A complete on B, a SAML assertion ID used on A is refused as
//! replayed on B, and with Redis stopped the OIDC callback and the SAML ACS
//! fail closed (`503`, `store_unavailable`). The code, jwt and revocation
//! cases are in tests/redis_store.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::StatusCode;
use support::oidc::{Browser as OidcBrowser, CALLBACK, Gateway, PUBLIC_HOST, PUBLIC_URL, TestIdp, idp_config};
use support::redis::RedisServer;
use support::saml::{BROWSER, PROVIDER, Saml, Setup, attempt_jar};
use support::{FakeUpstream, eventually, failures_series, logins_series, metric};

/// The `[session]` keys of a replica on `redis`.
fn redis_session(redis: &RedisServer) -> String {
    format!("store = \"redis\"\nredis_url = \"{}\"\n", redis.url())
}

// === OpenID Connect ===

/// An OIDC replica on `redis`: `start_porteiro` puts the body right after
/// its `[session]` table, so the store keys land there.
async fn oidc_replica(idp: &TestIdp, upstream: &str, redis: &RedisServer) -> Gateway {
    let p =
        support::oidc::start_porteiro(&format!("{}\n{}", redis_session(redis), idp_config(idp, upstream, ""))).await;
    p.wait_ready().await;
    p
}

/// `browser`'s cookies, in a browser that reaches `other` as PUBLIC_HOST:
/// the same browser, sent to another replica by the load balancer.
fn same_browser_on(browser: &OidcBrowser, other: &Gateway) -> OidcBrowser {
    let moved = other.browser();
    for c in browser.cookies(PUBLIC_HOST) {
        moved.add_cookie(PUBLIC_HOST, &c.name, &c.value, &c.path);
    }
    moved
}

#[tokio::test]
async fn oidc_a_login_started_on_one_replica_completes_on_another_once() {
    let redis = RedisServer::start();
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let a = oidc_replica(&idp, &up.url(), &redis).await;
    let b = oidc_replica(&idp, &up.url(), &redis).await;

    let on_a = a.browser();
    let to_idp = on_a.start_login(&format!("{PUBLIC_URL}/orders/7")).await;
    let back = on_a.follow(&to_idp).await;
    assert!(back.location().as_str().starts_with(CALLBACK), "{}", back.location());
    // A replayed answer, kept for later: the same browser, cookies and all.
    let replay_on_a = on_a.snapshot();

    let on_b = same_browser_on(&on_a, &b);
    let done = on_b.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    assert_eq!(done.location().as_str(), format!("{PUBLIC_URL}/orders/7"));
    assert_eq!(b.logins("idp").await, 1.0);

    // The state was spent in Redis: A refuses it even with its cookie.
    let again = replay_on_a.follow(&back).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(!again.sets_session());
    assert_eq!(a.failures("idp", "state_replayed").await, 1.0);
    assert_eq!(a.logins("idp").await, 0.0);
}

#[tokio::test]
async fn oidc_callback_fails_closed_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let gw = oidc_replica(&idp, &up.url(), &redis).await;
    let browser = gw.browser();
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/orders")).await;
    let back = browser.follow(&to_idp).await;
    let keep = browser.snapshot();

    redis.stop();
    eventually("/readyz turns 503", || async { gw.readyz().await == 503 }).await;
    let page = browser.follow(&back).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(!page.sets_session());
    assert_eq!(gw.failures("idp", "store_unavailable").await, 1.0, "{}", gw.metrics().await);
    let json = keep.snapshot().get_json(back.location().as_str()).await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE, "{}", json.body);
    assert_eq!(json.json()["error"], "store_unavailable", "{}", json.body);
    assert_eq!(gw.logins("idp").await, 0.0);
    assert_eq!(up.hits(), 0);
}

// === SAML ===

/// `http://` and the address of a replica's listener.
fn base(replica: &porteiro::Running) -> String {
    format!("http://{}", replica.addr)
}

/// A replica of `saml`'s service provider on `redis`, listening on a port of
/// its own (`public_url` names no listener, so all replicas are one SP).
async fn saml_replica(saml: &Saml, redis: &RedisServer) -> porteiro::Running {
    assert!(saml.toml.contains("[session]\n"), "{}", saml.toml);
    // The config listens on port 0: this replica gets a port of its own.
    let text = saml.toml.replace("[session]\n", &format!("[session]\n{}", redis_session(redis)));
    let config = porteiro::config::Config::from_toml(&text, "saml-replica.toml").unwrap();
    let running = porteiro::start(config).await.unwrap();
    let ready = format!("http://{}/readyz", running.admin_addr.unwrap());
    eventually("replica ready", || async {
        saml.client.get(&ready).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    running
}

async fn replica_metrics(replica: &porteiro::Running) -> String {
    support::admin_metrics(replica.admin_addr.unwrap()).await
}

#[tokio::test]
async fn saml_a_login_started_on_one_replica_completes_on_another_and_its_assertion_id_is_spent_on_all() {
    let redis = RedisServer::start();
    let saml = Setup::new().public_url("http://clockin.test").start().await;
    let a = saml_replica(&saml, &redis).await;
    let b = saml_replica(&saml, &redis).await;

    // Started on A, the IdP posts back to B.
    let browser = attempt_jar();
    let begun = saml.begin_at(&base(&a), &browser, "/timesheets").await;
    let id = format!("id-shared-{}", rand::random::<u64>());
    let answer = saml.idp_answer(&begun, &[("assertion_id", &id)]).await;
    let (status, cookie, body) = saml.post_acs_at(&base(&b), &browser, &answer, BROWSER).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert!(cookie.is_some());
    // And the RelayState is spent on A too.
    let (status, cookie, body) = saml.post_acs_at(&base(&a), &browser, &answer, BROWSER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(cookie.is_none());
    assert_eq!(metric(&replica_metrics(&a).await, &failures_series("-", "unknown_relay_state")), Some(1.0));

    // The same assertion ID, newly signed for a login on B: replayed.
    let browser = attempt_jar();
    let begun = saml.begin_at(&base(&b), &browser, "/").await;
    let again = saml.idp_answer(&begun, &[("assertion_id", &id)]).await;
    let (status, cookie, body) = saml.post_acs_at(&base(&a), &browser, &again, BROWSER).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(cookie.is_none());
    let metrics = replica_metrics(&a).await;
    assert_eq!(metric(&metrics, &failures_series(PROVIDER, "assertion_replayed")), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, &logins_series(PROVIDER)), None, "{metrics}");
}

#[tokio::test]
async fn saml_acs_fails_closed_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let saml = Setup::new().public_url("http://clockin.test").start().await;
    let gw = saml_replica(&saml, &redis).await;
    let browser = attempt_jar();
    let html = saml.begin_at(&base(&gw), &browser, "/timesheets").await;
    let json = saml.begin_at(&base(&gw), &browser, "/api").await;
    let html = saml.idp_answer(&html, &[]).await;
    let json = saml.idp_answer(&json, &[]).await;

    redis.stop();
    let ready = format!("http://{}/readyz", gw.admin_addr.unwrap());
    eventually("/readyz turns 503", || async {
        saml.client.get(&ready).send().await.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    let (status, cookie, body) = saml.post_acs_at(&base(&gw), &browser, &html, BROWSER).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(cookie.is_none());
    assert!(body.contains("Sign-in failed"), "{body}");
    let (status, cookie, body) = saml.post_acs_at(&base(&gw), &browser, &json, "application/json").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(cookie.is_none());
    let error: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(error["error"], "store_unavailable", "{body}");
    let metrics = replica_metrics(&gw).await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("porteiro_auth_failures_total{") && l.contains("reason=\"store_unavailable\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(counted, 2.0, "{metrics}");
    assert_eq!(saml.upstream.hits(), 0);
}
