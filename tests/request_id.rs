//! `X-Request-Id` (DESIGN §4): kept from a trusted proxy when sane, else
//! generated (128 random bits, 32 hex digits); the same value reaches the
//! upstream, comes back to the client on every answer (porteiro's own
//! refusals too) and is a field of every log line about the request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use serde_json::Value;
use support::{Echo, FakeUpstream, Gateway, GatewayProcess, client, public_route, start_gateway};

fn generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A public route to `up` and a bearer-only route `/api/`; the test client
/// (127.0.0.1) is a trusted proxy when `trusted`.
async fn gateway(up: &str, trusted: bool) -> Gateway {
    let trust = if trusted { "trusted_proxies = [\"127.0.0.1\"]" } else { "" };
    start_gateway(trust, &routes(up)).await
}

fn routes(up: &str) -> String {
    format!(
        "[[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = \"api.test\"\nsecret = \"{}\"\n\n\
         [[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{up}\"\nbearer = [\"api\"]\n\n{}",
        "request-id-api-secret-0123456789abcdef",
        public_route("app", up)
    )
}

/// The id an answer carries, and the one its upstream saw.
async fn ids(resp: reqwest::Response) -> (String, String) {
    assert_eq!(resp.status(), 200);
    let answered = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let echo = Echo::from(resp).await;
    (answered, echo.header("x-request-id").unwrap().to_string())
}

#[tokio::test]
async fn a_trusted_proxys_id_is_kept_upstream_and_in_the_answer() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url(), true).await;
    let resp = gw.client.get(gw.url("/page")).header("x-request-id", "edge-7f3a:42").send().await.unwrap();
    assert_eq!(ids(resp).await, ("edge-7f3a:42".to_string(), "edge-7f3a:42".to_string()));
    let longest = "r".repeat(128);
    let resp = gw.client.get(gw.url("/page")).header("x-request-id", &longest).send().await.unwrap();
    assert_eq!(ids(resp).await, (longest.clone(), longest));
}

#[tokio::test]
async fn a_trusted_proxys_insane_id_is_replaced() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url(), true).await;
    for bad in ["r".repeat(129), "two words".to_string(), "tab\there".to_string()] {
        let resp = gw.client.get(gw.url("/page")).header("x-request-id", &bad).send().await.unwrap();
        let (answered, upstream) = ids(resp).await;
        assert!(generated(&answered), "{bad:?} -> {answered:?}");
        assert_eq!(answered, upstream);
    }
    // Two ids in one request: neither is believed.
    let resp = gw
        .client
        .get(gw.url("/page"))
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .send()
        .await
        .unwrap();
    let (answered, upstream) = ids(resp).await;
    assert!(generated(&answered));
    assert_eq!(answered, upstream);
}

#[tokio::test]
async fn a_clients_id_is_replaced_and_one_is_generated_otherwise() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url(), false).await;
    let resp = gw.client.get(gw.url("/page")).header("x-request-id", "client-chosen-id").send().await.unwrap();
    let (answered, upstream) = ids(resp).await;
    assert!(generated(&answered), "{answered}");
    assert_eq!(answered, upstream);
    let (first, _) = ids(gw.client.get(gw.url("/page")).send().await.unwrap()).await;
    let (second, _) = ids(gw.client.get(gw.url("/page")).send().await.unwrap()).await;
    assert!(generated(&first) && generated(&second));
    assert_ne!(first, second);
    assert_ne!(first, answered);
}

#[tokio::test]
async fn porteiros_own_answers_carry_the_id() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url(), true).await;
    let cases = [
        gw.client.get(gw.url("/api/x")).header("x-request-id", "refused-1").send(), // 401, no token
        gw.client.get(gw.url("/sso/userinfo")).header("x-request-id", "refused-2").send(), // 401, endpoint
        gw.client.get(gw.url("/page;jsessionid=1")).header("x-request-id", "refused-3").send(), // 400
    ];
    let mut statuses = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let resp = case.await.unwrap();
        statuses.push(resp.status().as_u16());
        assert_eq!(resp.headers()["x-request-id"], format!("refused-{}", i + 1).as_str(), "{}", resp.status());
    }
    assert_eq!(statuses, [401, 401, 400]);
    assert_eq!(up.hits(), 0);
}

/// Every log line about a request carries its id (the `request` span's
/// field), the same as in the answer.
#[tokio::test]
async fn log_lines_about_a_request_carry_its_id() {
    let up = FakeUpstream::new("app").start().await;
    let mut gw = GatewayProcess::start("", &routes(&up.url())).await;
    let resp = client().get(gw.url("/api/x")).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(generated(&id));
    let line = gw.wait_for_log("bearer token refused").await;
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["id"], id.as_str(), "{line}");
}
