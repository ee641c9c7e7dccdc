//! JWKS promises README makes for `jwt` and `bearer` providers: `/readyz`
//! answers 503 until every provider's key set has loaded; the refresh
//! follows `Cache-Control: max-age` within `jwks_min_refresh_seconds` ..
//! `jwks_max_refresh_seconds`; a document is capped at 256 KiB and 64 keys
//! and fetched with a 5 s timeout. Expiries are crossed by moving
//! porteiro's clock; the 5 s fetch timeout is real time (a socket timer).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use porteiro::clock::Clock;
use serde_json::{Value, json};
use support::auth::{Conf, FakeUpstream, Gateway, ISSUER, JwksServer, SigningKey, json_error, q, random_id};
use support::{PATIENCE, eventually, metric};

/// Claims valid at porteiro's `clock` (which the tests move ahead).
fn claims_at(clock: &Clock) -> Value {
    let now = clock.now();
    json!({"iss": ISSUER, "sub": "ana", "name": "Ana Souza", "email": "ana@example.com",
           "iat": now, "exp": now + 60, "jti": random_id()})
}

/// Starts `conf` on `clock` without waiting for readiness.
async fn start(conf: &Conf, clock: &Clock) -> Gateway {
    Gateway::start_with_clock(conf.config(), clock.clone()).await
}

/// Moves `clock` ahead `step` at a time until `done` holds (checking each
/// step for up to 40 ms of real time); returns how far it moved. Fails
/// after [`PATIENCE`] of real time.
async fn advance_until<F, Fut>(clock: &Clock, step: Duration, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut moved = Duration::ZERO;
    loop {
        for _ in 0..4 {
            if done().await {
                return moved;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(Instant::now() < deadline, "{what}: not after moving the clock {moved:?}");
        clock.advance(step);
        moved += step;
    }
}

/// A jwt login with `token`: its status, and the JSON error when refused.
async fn login_status(gw: &Gateway, token: &str) -> (StatusCode, Option<String>) {
    let resp = gw.get(&format!("/sso/callback?jwt={token}&redirectUrl=/")).send().await.unwrap();
    let status = resp.status();
    if status == StatusCode::FOUND {
        return (status, None);
    }
    (status, Some(json_error(resp, status).await))
}

#[tokio::test]
async fn readyz_is_503_until_every_jwt_and_bearer_key_set_has_loaded() {
    let upstream = FakeUpstream::new("app").start().await;
    let login_key = SigningKey::ec("login");
    let api_key = SigningKey::ec("api");
    let login_jwks = JwksServer::start(&[&login_key]).await;
    let api_jwks = JwksServer::start(&[&api_key]).await;
    login_jwks.take_down();
    api_jwks.take_down();
    let conf = Conf::new(&upstream.authority()).jwks(&login_jwks.url(), r#"["ES256"]"#).raw(&format!(
        "[[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = {}\njwks_url = {}\nalgorithms = [\"ES256\"]\n\n\
         [[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = \"http://{}\"\nbearer = [\"api\"]\n",
        q(ISSUER),
        q(&api_jwks.url()),
        upstream.authority()
    ));
    let clock = Clock::default();
    let gw = start(&conf, &clock).await;

    // Both sets unreachable: not ready, and logins and API calls answer 503.
    assert_eq!(gw.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        login_status(&gw, &login_key.sign(&claims_at(&clock))).await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("keys_unavailable".into()))
    );
    let api = |token: String| gw.get("/api/x").bearer_auth(token).send();
    assert_eq!(api(api_key.sign(&claims_at(&clock))).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);

    // The login set comes up: loaded on a retry, but the API's is missing.
    login_jwks.bring_up();
    advance_until(&clock, Duration::from_secs(5), "logins work", || async {
        login_status(&gw, &login_key.sign(&claims_at(&clock))).await.0 == StatusCode::FOUND
    })
    .await;
    assert_eq!(gw.readyz().await, StatusCode::SERVICE_UNAVAILABLE, "the bearer provider has no keys yet");

    // Both loaded: ready.
    api_jwks.bring_up();
    advance_until(&clock, Duration::from_secs(5), "ready", || async { gw.readyz().await == StatusCode::OK }).await;
    assert_eq!(api(api_key.sign(&claims_at(&clock))).await.unwrap().status(), StatusCode::OK);
}

/// How much time passes on porteiro's clock after the first fetch before
/// the key set is fetched again, for a server sending `max_age` and the provider's
/// bounds `bounds` (`None`: the defaults, 30 / 86400).
async fn refresh_after(max_age: u64, bounds: Option<(u64, u64)>, step: Duration) -> Duration {
    let upstream = FakeUpstream::new("app").start().await;
    let key = SigningKey::ec("k");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.max_age(max_age);
    let mut conf = Conf::new(&upstream.authority()).jwks(&jwks.url(), r#"["ES256"]"#);
    if let Some((min, max)) = bounds {
        conf = conf
            .provider("jwks_min_refresh_seconds", min.to_string())
            .provider("jwks_max_refresh_seconds", max.to_string());
    }
    let clock = Clock::default();
    let gw = start(&conf, &clock).await;
    eventually("ready", || async { gw.readyz().await == StatusCode::OK }).await;
    assert_eq!(jwks.fetches(), 1);
    // Measured on porteiro's clock, which real time moves too: a slow
    // machine cannot make the refetch look early. It can look up to a few
    // milliseconds early (the refresh task may start waiting just before
    // `/readyz` is seen), hence the callers' one-second tolerance.
    let loaded = clock.instant();
    advance_until(&clock, step, "refetched", || async { jwks.fetches() > 1 }).await;
    clock.instant() - loaded
}

#[tokio::test]
async fn jwks_refresh_follows_max_age_within_the_min_and_max_bounds() {
    // Within the default bounds: max-age itself.
    let after = refresh_after(120, None, Duration::from_secs(5)).await;
    assert!((119..=170).contains(&after.as_secs()), "max-age=120: refetched after {after:?}");
    // Below the default minimum of 30 s: 30 s.
    let after = refresh_after(1, None, Duration::from_secs(5)).await;
    assert!((29..=70).contains(&after.as_secs()), "max-age=1: refetched after {after:?}");
    // A raised minimum.
    let after = refresh_after(60, Some((300, 86400)), Duration::from_secs(20)).await;
    assert!((299..=400).contains(&after.as_secs()), "max-age=60, min 300: refetched after {after:?}");
    // Above a lowered maximum: the maximum.
    let after = refresh_after(10_000_000, Some((30, 600)), Duration::from_secs(30)).await;
    assert!((599..=780).contains(&after.as_secs()), "max-age=1e7, max 600: refetched after {after:?}");
}

#[tokio::test]
async fn a_jwks_document_holds_at_most_64_keys() {
    let upstream = FakeUpstream::new("app").start().await;
    let keys: Vec<SigningKey> = (0..65).map(|i| SigningKey::ec(&format!("k{i:02}"))).collect();
    let jwks = JwksServer::start(&keys.iter().collect::<Vec<_>>()).await;
    // A long minimum: the unknown kid below causes no refetch to wait on.
    let gw = Conf::new(&upstream.authority())
        .jwks(&jwks.url(), r#"["ES256"]"#)
        .provider("jwks_min_refresh_seconds", "3600")
        .start()
        .await;
    let clock = gw.running.app.clock().clone();
    for i in [0, 63] {
        assert_eq!(login_status(&gw, &keys[i].sign(&claims_at(&clock))).await.0, StatusCode::FOUND, "key {i}");
    }
    assert_eq!(
        login_status(&gw, &keys[64].sign(&claims_at(&clock))).await,
        (StatusCode::UNAUTHORIZED, Some("unknown_key".into())),
        "the 65th key is not used"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, r#"porteiro_auth_failures_total{provider="intranet",reason="unknown_key"}"#),
        Some(1.0)
    );
}

/// A key set of `key`, padded with an unknown member to `total` bytes.
fn padded_jwks(key: &SigningKey, total: usize) -> Bytes {
    let head = json!({"keys": [key.jwk()]}).to_string();
    let shell = format!("{},\"padding\":\"\"}}", &head[..head.len() - 1]);
    let padding = "p".repeat(total - shell.len());
    let doc = format!("{},\"padding\":\"{padding}\"}}", &head[..head.len() - 1]);
    assert_eq!(doc.len(), total);
    serde_json::from_str::<Value>(&doc).unwrap();
    Bytes::from(doc)
}

#[tokio::test]
async fn a_jwks_document_over_256_kib_is_refused() {
    let upstream = FakeUpstream::new("app").start().await;
    let key = SigningKey::ec("k");
    let jwks = JwksServer::raw(padded_jwks(&key, 256 * 1024 + 1)).await;
    let clock = Clock::default();
    let gw = start(&Conf::new(&upstream.authority()).jwks(&jwks.url(), r#"["ES256"]"#), &clock).await;
    eventually("fetched twice", || async { !jwks.arrivals().is_empty() }).await;
    advance_until(&clock, Duration::from_secs(1), "fetched twice", || async { jwks.arrivals().len() >= 2 }).await;
    assert_eq!(gw.readyz().await, StatusCode::SERVICE_UNAVAILABLE, "one byte too many");
    assert_eq!(login_status(&gw, &key.sign(&claims_at(&clock))).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // Exactly 256 KiB is fine.
    jwks.set_raw(padded_jwks(&key, 256 * 1024));
    advance_until(&clock, Duration::from_secs(5), "ready", || async { gw.readyz().await == StatusCode::OK }).await;
    assert_eq!(login_status(&gw, &key.sign(&claims_at(&clock))).await.0, StatusCode::FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_fetch_gives_up_after_5_seconds() {
    let upstream = FakeUpstream::new("app").start().await;
    let key = SigningKey::ec("k");
    let jwks = JwksServer::raw(padded_jwks(&key, 1024)).await;
    jwks.hang();
    let clock = Clock::default();
    let gw = start(&Conf::new(&upstream.authority()).jwks(&jwks.url(), r#"["ES256"]"#), &clock).await;
    // The first fetch hangs; porteiro gives up after 5 s and, after its
    // first backoff (0.5 s), asks again on a new request.
    let deadline = Instant::now() + Duration::from_secs(30);
    while jwks.arrivals().len() < 2 {
        assert!(Instant::now() < deadline, "no second fetch within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrivals = jwks.arrivals();
    let gap = arrivals[1] - arrivals[0];
    assert!(gap >= Duration::from_secs(5), "gave up after {gap:?}");
    assert!(gap < Duration::from_secs(15), "gave up only after {gap:?}");
    assert_eq!(gw.readyz().await, StatusCode::SERVICE_UNAVAILABLE);

    // An answering server is loaded on a later attempt.
    jwks.bring_up();
    advance_until(&clock, Duration::from_secs(5), "ready", || async { gw.readyz().await == StatusCode::OK }).await;
    assert_eq!(login_status(&gw, &key.sign(&claims_at(&clock))).await.0, StatusCode::FOUND);
}
