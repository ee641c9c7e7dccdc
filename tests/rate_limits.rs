//! Rate limits per client address (DESIGN §9, README "Rate limits"): the
//! login endpoints and refused credentials answer `429` with `Retry-After`
//! past their limit while other clients carry on; a client over the
//! failure limit is refused before any verification; the memory the
//! limits take stays bounded whatever the number of client addresses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use support::auth::{Conf, FakeUpstream, Gateway, claims, hs_token};

/// `rate_limit` keys, the jwt login on `/`, a bearer provider `api` (HS256)
/// on `/api/`, the main listener's peer (127.0.0.1) a trusted proxy so
/// tests can speak for other client addresses with `X-Forwarded-For`.
fn conf(upstream: &str, limits: &str) -> Conf {
    Conf::new(upstream).server("trusted_proxies", r#"["127.0.0.1/32"]"#).raw(&format!(
        r#"
[[providers]]
id = "api"
kind = "bearer"
issuer = "api.test"
audience = "helpdesk"
algorithms = ["HS256"]
secret = "{API_SECRET}"

[[routes]]
path_prefix = "/api/"
upstream = "http://{upstream}"
bearer = ["api"]

[rate_limit]
{limits}
"#
    ))
}

const API_SECRET: &str = "rate-limit-api-secret-0123456789abcdef";

/// A valid token, a new one each call (its `jti` differs).
fn api_token() -> String {
    let now = support::now();
    let claims = json!({"iss": "api.test", "aud": "helpdesk", "sub": "svc", "iat": now, "exp": now + 600,
                        "jti": support::auth::random_id()});
    support::auth::sign_hs(API_SECRET.as_bytes(), &claims)
}

async fn callback_from(gw: &Gateway, client: &str, html: bool) -> reqwest::Response {
    let mut req = gw.get("/sso/callback?jwt=not-a-token").header("x-forwarded-for", client);
    if html {
        req = req.header("accept", "text/html");
    }
    req.send().await.unwrap()
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn login_endpoints_answer_429_past_the_limit_and_other_clients_carry_on() {
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up.authority(), "login_per_minute = 5").start().await;
    for _ in 0..5 {
        assert_eq!(callback_from(&gw, "198.51.100.7", false).await.status(), StatusCode::UNAUTHORIZED);
    }
    let over = callback_from(&gw, "198.51.100.7", false).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&over);
    assert!((1..=12).contains(&wait), "one request back every 12 s: {wait}");
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // Every login endpoint shares the allowance; a browser gets a page.
    let page = gw.navigate("/sso/start?provider=intranet").header("x-forwarded-for", "198.51.100.7");
    let page = page.send().await.unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(page.headers().contains_key("retry-after"));
    assert!(page.text().await.unwrap().contains("Too many sign-in requests"));
    // Another client is unaffected.
    assert_eq!(callback_from(&gw, "198.51.100.8", false).await.status(), StatusCode::UNAUTHORIZED);
    // Proxied requests are not login requests.
    let session = gw.login(&hs_token(&claims())).await;
    let proxied = gw.get("/x").header("cookie", &session).header("x-forwarded-for", "198.51.100.7");
    assert_eq!(proxied.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(gw.count("porteiro_rate_limited_total{bucket=\"login\"}").await, 2.0);
}

#[tokio::test]
async fn refused_credentials_past_the_limit_are_refused_before_verification() {
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up.authority(), "failed_auth_per_minute = 3").start().await;
    let call = |client: &'static str, token: String| {
        let req = gw.get("/api/orders").bearer_auth(token).header("x-forwarded-for", client);
        async move { req.send().await.unwrap() }
    };
    // A good token, used before the attack: answered from the cache after.
    let good = api_token();
    assert_eq!(call("203.0.113.9", good.clone()).await.status(), StatusCode::OK);
    for i in 0..4 {
        let resp = call("203.0.113.9", format!("bad.token.{i}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let over = call("203.0.113.9", "bad.token.5".into()).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=20).contains(&retry_after(&over)));
    // A new token from that client is not even verified now...
    assert_eq!(call("203.0.113.9", api_token()).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...a token verified before still works, and other clients are unaffected.
    assert_eq!(call("203.0.113.9", good).await.status(), StatusCode::OK);
    assert_eq!(call("203.0.113.10", api_token()).await.status(), StatusCode::OK);
    assert_eq!(call("203.0.113.10", "bad".into()).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gw.count("porteiro_rate_limited_total{bucket=\"failed_auth\"}").await, 2.0);
    // Only the refused and malformed tokens were counted as failures, never the 429s.
    let metrics = gw.metrics().await;
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("porteiro_auth_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 5.0, "{metrics}");
}

#[tokio::test]
async fn the_limits_memory_stays_bounded_over_100_000_client_addresses() {
    let up = FakeUpstream::new("app").start().await;
    let gw =
        conf(&up.authority(), "login_per_minute = 2\nfailed_auth_per_minute = 2\nmax_clients = 1000").start().await;
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let (client, url) = (gw.client.clone(), gw.url("/sso/start?provider=nobody"));
            tokio::spawn(async move {
                for i in 0..6250u32 {
                    let n = t * 6250 + i;
                    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n);
                    let resp = client.get(&url).header("x-forwarded-for", ip.to_string()).send().await.unwrap();
                    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{ip}: one request each, never limited");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let [login, failures, blocked] = gw.running.app.rate_limited_clients();
    assert!(login <= 1000, "{login} client addresses remembered, at most 1000");
    assert!(login >= 500, "the limit remembers recent clients: {login}");
    assert_eq!((failures, blocked), (0, 0));
    // The most recent client is still limited: 2 allowed, the 3rd waits.
    let last = "10.1.134.159";
    for expected in [StatusCode::BAD_REQUEST, StatusCode::TOO_MANY_REQUESTS] {
        let resp = gw.get("/sso/start?provider=nobody").header("x-forwarded-for", last).send().await.unwrap();
        assert_eq!(resp.status(), expected);
    }
}
