//! The upstream connection pool: keep-alive connections are reused, and
//! never when they cannot be (closed by the upstream, `Connection: close`,
//! an answer the client did not read to its end).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use support::scripted::{Upstream, ok};
use support::{FakeUpstream, MIB, client, public_route, start_gateway};

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;
    let c = client();
    for i in 0..20 {
        let resp = if i % 4 == 3 {
            c.post(gw.url(&format!("/upload/{i}"))).body(vec![7u8; 10_000]).send().await.unwrap()
        } else {
            c.get(gw.url(&format!("/page/{i}"))).send().await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        let echo: support::Echo = resp.json().await.unwrap();
        assert!(echo.uri.ends_with(&format!("/{i}")), "{}", echo.uri);
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(up.connections(), 1, "every request after the first reuses the connection");
}

#[tokio::test]
async fn empty_answers_return_the_connection_to_the_pool() {
    let up = FakeUpstream::new("app").no_content("/nothing").start().await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;
    let c = client();
    let resp = c.get(gw.url("/a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    // HEAD: the upstream announces a length but sends no body.
    let resp = c.head(gw.url("/a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = c.get(gw.url("/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let resp = c.delete(gw.url("/nothing/1")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let resp = c.get(gw.url("/b")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(up.hits(), 5);
    assert_eq!(up.connections(), 1, "HEAD and 204 answers leave the connection reusable");
}

#[tokio::test]
async fn connection_close_answers_are_not_reused() {
    let up = FakeUpstream::new("app").closing("/bye").start().await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;
    let c = client();
    for i in 1..=3 {
        let resp = c.get(gw.url("/bye")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("connection").is_none(), "a hop-by-hop header: {:?}", resp.headers());
        let echo: support::Echo = resp.json().await.unwrap();
        assert_eq!(echo.uri, "/bye");
        assert_eq!(up.connections(), i, "a connection the upstream closes is not reused");
    }
    // Pooling goes on for answers without it.
    for _ in 0..3 {
        let resp = c.get(gw.url("/stay")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(up.connections(), 4);
}

#[tokio::test]
async fn a_body_the_client_drops_midway_costs_that_connection_only() {
    let up = FakeUpstream::new("app").download("/big", 64 * MIB).start().await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;

    // A client that reads a little of a large answer, then goes away.
    let quitter = client();
    let mut resp = quitter.get(gw.url("/big")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.chunk().await.unwrap().unwrap().is_empty());
    drop(resp);
    drop(quitter);
    // The rest of that answer is still on the wire: the gateway closes the
    // connection rather than pooling it.
    up.wait_for_closed(1).await;

    let c = client();
    for _ in 0..3 {
        let resp = c.get(gw.url("/small")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(up.connections(), 2, "one new connection, then reused");
    assert_eq!(up.closed_connections(), 1);
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_loses_no_request() {
    // The upstream answers three requests on a connection, then closes it
    // while porteiro holds it idle in its pool, as a server's keep-alive
    // timeout does. Counted rather than timed, so a slow machine neither
    // sees a close between the back-to-back requests nor misses one.
    let up = Upstream::start(|mut conn| async move {
        for _ in 0..3 {
            if conn.read_request().await.is_none() || !conn.write(&ok("ok\n")).await {
                return;
            }
        }
        conn.close().await;
    })
    .await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;
    let c = client();
    for round in 1..=3 {
        // Back to back: the connection is still open and reused...
        for _ in 0..3 {
            let resp = c.get(gw.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.text().await.unwrap(), "ok\n");
        }
        assert_eq!(up.connections(), round);
        // ...then the upstream closes it: the next request must not be
        // lost on the closed connection.
        up.wait_for_closed(round).await;
    }
    assert_eq!(up.received().len(), 9);
}

/// Once a request may have reached the upstream it is not sent again: the
/// upstream might have acted on it. The client gets a 502.
#[tokio::test]
async fn a_request_the_upstream_may_have_received_is_not_retried() {
    // Answers the first request on each connection; reads the second, then
    // closes the connection unanswered.
    let up = Upstream::start(|mut conn| async move {
        if conn.read_request().await.is_none() || !conn.write(&ok("ok\n")).await {
            return;
        }
        let _ = conn.read_request().await;
    })
    .await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;
    let c = client();
    let resp = c.get(gw.url("/first")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = c.post(gw.url("/charge")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(up.received().len(), 2, "the second request went upstream once");
    assert_eq!(up.connections(), 1);
    // The gateway goes on with a new connection.
    let resp = c.get(gw.url("/third")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.connections(), 2);
}
