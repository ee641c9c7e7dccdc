//! Upgrades pass through (DESIGN §4): a WebSocket handshake reaches the
//! upstream, which answers 101, and messages flow both ways afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use futures_util::{SinkExt, StreamExt};
use support::{FakeUpstream, PATIENCE, public_route, start_gateway};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let up = FakeUpstream::new("ws").websocket_echo("/ws").start().await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;

    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", gw.addr())).await.unwrap();
    assert_eq!(resp.status(), 101);

    let big = "x".repeat(200 * 1024);
    let messages = [
        Message::Text("hello".into()),
        Message::Binary((0..=255u8).collect()),
        Message::Text(big),
        Message::Text("last".into()),
    ];
    for msg in &messages {
        ws.send(msg.clone()).await.unwrap();
        let echoed = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("echo in time")
            .expect("connection still open")
            .unwrap();
        assert_eq!(&echoed, msg);
    }
    // Several in flight at once, answered in order.
    for i in 0..20 {
        ws.send(Message::Text(format!("burst {i}"))).await.unwrap();
    }
    for i in 0..20 {
        let echoed = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::Text(format!("burst {i}")));
    }
    ws.close(None).await.unwrap();

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let header = |name: &str| seen[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_ascii_lowercase());
    assert_eq!(header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(header("connection").as_deref(), Some("upgrade"));
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert!(header("sec-websocket-key").is_some());
}

/// An upgrade asked on a keep-alive connection that was parked (quiet, it
/// kept only its socket): the tunnel works as on a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_on_a_connection_that_was_parked() {
    use http_body_util::Empty;
    use hyper::Request;
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let up = FakeUpstream::new("ws").websocket_echo("/ws").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 120", &public_route("app", &up.url())).await;
    let stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let plain = Request::get("/plain").header("host", "app.test").body(Empty::new()).unwrap();
    assert_eq!(sender.send_request(plain).await.unwrap().status(), 200);

    // Quiet until porteiro parks it.
    let parked = tokio::time::timeout(PATIENCE, async {
        while support::metric(&gw.metrics().await, "porteiro_connections_parked") != Some(1.0) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(parked.is_ok(), "the connection was not parked");

    sender.ready().await.expect("the parked connection is still open");
    let upgrade = Request::get("/ws/chat")
        .header("host", "app.test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(upgrade).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    for text in ["after parking", "still there"] {
        ws.send(Message::Text(text.into())).await.unwrap();
        let echoed = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::Text(text.into()));
    }
    ws.close(None).await.unwrap();
}
