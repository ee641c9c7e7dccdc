//! Graceful shutdown of the binary (DESIGN §7, §9): on SIGTERM/SIGINT
//! porteiro reports not-ready at once, keeps serving for
//! `shutdown_delay_seconds`, then stops accepting, lets in-flight requests
//! finish (bounded by `shutdown_grace_seconds`, their answers saying
//! `Connection: close`) and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::{Echo, FakeUpstream, GatewayProcess, client, eventually, public_route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// One HTTP/1.1 keep-alive connection that shows each answer's headers.
struct KeepAlive(hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>);

impl KeepAlive {
    async fn open(addr: SocketAddr) -> KeepAlive {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        KeepAlive(sender)
    }

    async fn get(&mut self, path: &str) -> Response<Bytes> {
        self.0.ready().await.expect("the connection is still open");
        let req = Request::get(path).header(header::HOST, "app.test").body(http_body_util::Empty::new()).unwrap();
        let (parts, body) = self.0.send_request(req).await.unwrap().into_parts();
        Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
    }
}

/// An upstream whose first request is answered only when the test says so
/// (a keep-alive answer: any `Connection: close` porteiro sends is its own).
async fn held_upstream() -> (String, tokio::sync::oneshot::Receiver<()>, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        arrived_tx.send(()).unwrap();
        released.notified().await;
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld").await.unwrap();
        // Kept open, as a keep-alive upstream would.
        let _ = stream.read(&mut buf).await;
    });
    (url, arrived, release)
}

/// A load balancer keeps sending for a few seconds after `/readyz` turns
/// 503: porteiro serves them all through `shutdown_delay_seconds`, new and
/// kept connections alike; then it stops accepting, and the answer in
/// flight on a keep-alive connection says `Connection: close`, so the
/// client opens a new connection instead of sending into a closing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_serving_through_the_delay_then_answers_say_connection_close() {
    let up = FakeUpstream::new("app").start().await;
    let (held_url, arrived, release) = held_upstream().await;
    let routes = format!(
        "[[routes]]\nid = \"held\"\npath_prefix = \"/held\"\nupstream = \"{held_url}\"\npublic = true\n\n{}",
        public_route("app", &up.url())
    );
    let mut gw = GatewayProcess::start("shutdown_delay_seconds = 3", &routes).await;
    let mut kept = KeepAlive::open(gw.addr).await;
    let before = kept.get("/before").await;
    assert_eq!(before.status(), 200);
    assert_eq!(before.headers().get(header::CONNECTION), None);

    gw.signal("TERM");
    let readyz = gw.admin_url("/readyz");
    eventually("/readyz says 503", || async { client().get(&readyz).send().await.unwrap().status() == 503 }).await;
    // The delay: still serving, on a new connection and on the kept one.
    let fresh = client().get(gw.url("/fresh")).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.json::<Echo>().await.unwrap().uri, "/fresh");
    let during = kept.get("/during").await;
    assert_eq!(during.status(), 200);
    assert_eq!(during.headers().get(header::CONNECTION), None, "a plain keep-alive answer during the delay");
    assert!(
        !gw.logs().iter().any(|l| l.contains("stopped accepting")),
        "the delay ended before the test could use it:\n{}",
        gw.logs().join("\n")
    );

    // A request in flight when the delay ends.
    let in_flight = tokio::spawn(async move { kept.get("/held").await });
    arrived.await.unwrap();
    gw.wait_for_log("stopped accepting").await;
    assert!(refused(gw.addr).await, "main listener still accepts after the delay");
    assert!(gw.running(), "exited with a request in flight");
    release.notify_one();
    let held = in_flight.await.unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(held.body().as_ref(), b"held");
    assert_eq!(held.headers().get(header::CONNECTION).map(|v| v.to_str().unwrap()), Some("close"));

    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", gw.logs().join("\n"));
}
