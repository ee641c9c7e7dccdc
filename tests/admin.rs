//! The admin listener (DESIGN §5): health, readiness (503 while draining),
//! Prometheus metrics that move with the traffic, and nothing of it on the
//! main listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::Duration;

use support::{FakeUpstream, Gateway, client, metric, start_gateway};

const REQUESTS_2XX: &str = r#"porteiro_requests_total{route="app",class="2xx"}"#;
const NO_ROUTE: &str = r#"porteiro_rejected_requests_total{reason="no_route"}"#;

async fn gateway(upstream: &str) -> Gateway {
    start_gateway(
        "",
        &format!("[[routes]]\nid = \"app\"\nhost = \"app.test\"\nupstream = \"{upstream}\"\npublic = true\n"),
    )
    .await
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url()).await;
    for path in ["/healthz", "/readyz"] {
        let resp = client().get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = client().get(gw.admin_url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client().post(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn metrics_count_proxied_and_rejected_requests() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url()).await;
    let before = gw.metrics().await;
    assert_eq!(metric(&before, REQUESTS_2XX), Some(0.0), "{before}");
    assert_eq!(metric(&before, NO_ROUTE), None, "{before}");

    let resp = client().get(gw.url("/page")).header("host", "app.test").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().get(gw.url("/page")).header("host", "elsewhere.test").send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let after = gw.metrics().await;
    assert_eq!(metric(&after, REQUESTS_2XX), Some(1.0), "{after}");
    assert_eq!(metric(&after, NO_ROUTE), Some(1.0), "{after}");
    assert!(after.contains(r#"porteiro_upstream_duration_seconds_count{route="app"} 1"#), "{after}");
}

#[tokio::test]
async fn metrics_are_not_on_the_main_listener() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(&up.url()).await;
    let resp = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("porteiro_requests"), "{body}");
}

/// While draining, `/readyz` says 503 so load balancers stop sending
/// traffic, and the in-flight request still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_draining() {
    let up = FakeUpstream::new("app").slow("/slow", Duration::from_secs(2)).start().await;
    let gw = gateway(&up.url()).await;
    let admin = gw.admin_addr();
    let in_flight = tokio::spawn(client().get(gw.url("/slow")).header("host", "app.test").send());
    up.wait_for_hits(1).await;

    gw.running.shutdown();
    let resp = client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("the admin listener answers while the main listener drains");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "draining\n");
    let resp = client().get(format!("http://{admin}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "alive while draining");

    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("\"/slow\""));

    tokio::time::timeout(Duration::from_secs(5), gw.running.wait()).await.expect("drained in time");
    assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "admin listener closed after the drain");
}
