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
