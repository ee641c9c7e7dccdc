//! Upstream failures (DESIGN §6): unreachable -> 502, too slow -> 504, as
//! JSON for API clients and HTML for browsers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use support::{FakeUpstream, client, closed_port, public_route, start_gateway};

#[tokio::test]
async fn upstream_down_is_502_json_for_api_clients() {
    let down = closed_port();
    let gw = start_gateway("", &public_route("app", &format!("http://{down}"))).await;
    let resp = client().get(gw.url("/api/x")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn upstream_down_is_502_html_for_browsers() {
    let down = closed_port();
    let gw = start_gateway("", &public_route("app", &format!("http://{down}"))).await;
    let resp =
        client().get(gw.url("/")).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("Bad Gateway"), "{page}");
    // The upstream's address is an internal detail.
    assert!(!page.contains(&down.to_string()), "{page}");
}

#[tokio::test]
async fn slow_upstream_is_504_after_upstream_timeout() {
    let up = FakeUpstream::new("slow").slow("/", Duration::from_secs(5)).start().await;
    let gw = start_gateway("upstream_timeout_seconds = 1", &public_route("app", &up.url())).await;
    let started = Instant::now();
    let resp = client().get(gw.url("/report")).header("accept", "application/json").send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}, want about 1s"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    assert_eq!(up.hits(), 1);

    let resp = client().get(gw.url("/report")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
}

#[tokio::test]
async fn upstream_errors_are_counted_per_route() {
    let down = closed_port();
    let gw = start_gateway("", &public_route("app", &format!("http://{down}"))).await;
    for _ in 0..2 {
        let resp = client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        support::metric(&metrics, r#"porteiro_requests_total{route="app",class="5xx"}"#),
        Some(2.0),
        "{metrics}"
    );
}
