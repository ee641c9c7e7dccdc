//! Graceful shutdown of the binary (DESIGN §7): on SIGTERM/SIGINT porteiro
//! stops accepting, reports not-ready, lets in-flight requests finish
//! (bounded by `shutdown_grace_seconds`) and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Echo, FakeUpstream, GatewayProcess, client, public_route};

async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let up = FakeUpstream::new("app").slow("/slow", Duration::from_secs(2)).start().await;
    let mut gw = GatewayProcess::start("", &public_route("app", &up.url())).await;
    let addr = gw.addr;
    let started = Instant::now();
    let in_flight = tokio::spawn(client().get(gw.url("/slow")).send());
    up.wait_for_hits(1).await;

    gw.signal("TERM");
    gw.wait_for_log("stopped accepting").await;
    // Draining: no new connections, probes told to stop sending traffic,
    // and the process waits for the request.
    assert!(refused(addr).await, "main listener still accepts while draining");
    let readyz = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(gw.running(), "exited with a request in flight");

    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.uri, "/slow");
    assert!(started.elapsed() >= Duration::from_secs(2));

    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", gw.logs().join("\n"));
    assert!(refused(addr).await, "main listener accepts after exit");
}

#[tokio::test]
async fn sigint_when_idle_exits_0_promptly() {
    let up = FakeUpstream::new("app").start().await;
    let mut gw = GatewayProcess::start("", &public_route("app", &up.url())).await;
    // The client keeps its connection open (idle, keep-alive): that must
    // not hold the shutdown up.
    let client = client();
    let resp = client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    gw.signal("INT");
    // Within 3 s, a tenth of the default 30 s grace, and without waiting the
    // grace out for the idle connection: shown by the log rather than by a
    // sub-second window a busy machine can miss.
    let status = gw.wait_exit(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(0), "{}", gw.logs().join("\n"));
    assert!(
        !gw.logs().iter().any(|l| l.contains("shutdown grace expired")),
        "the idle connection held the shutdown up: {}",
        gw.logs().join("\n")
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_drain() {
    let up = FakeUpstream::new("app").slow("/stuck", Duration::from_secs(30)).start().await;
    let mut gw = GatewayProcess::start("shutdown_grace_seconds = 1", &public_route("app", &up.url())).await;
    let in_flight = tokio::spawn(client().get(gw.url("/stuck")).send());
    up.wait_for_hits(1).await;
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", gw.logs().join("\n"));
    assert!(took >= Duration::from_millis(900), "exited after {took:?}, before the grace period");
    assert!(gw.logs().iter().any(|l| l.contains("shutdown grace expired")), "{}", gw.logs().join("\n"));
    // The abandoned request fails rather than hanging.
    assert!(in_flight.await.unwrap().is_err());
}
