//! What of a client's request reaches the upstream when the request is
//! not an ordinary one (DESIGN §4, §8.1): request trailers never do (over
//! HTTP/1.1 or HTTP/2), a body that breaks HTTP/1.1 framing is the client's
//! fault (`400`, never `502`), and `CONNECT` is `405`.
//!
//! Clients are raw sockets and the `h2` crate, which send what ordinary
//! client libraries would not; the upstream is the byte-scripted one of
//! `tests/scripted_upstream`, which records trailer sections and sees
//! exactly where a request body ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use support::scripted::{Framing, Received, Upstream, fresh};
use support::{
    Gateway, GatewayProcess, PATIENCE, admin_metrics, client, metric, public_route, raw_exchange, raw_request,
    read_response, start_gateway,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

async fn gateway(up: &Upstream) -> Gateway {
    start_gateway("", &public_route("app", &up.url())).await
}

/// The request reached the upstream whole, as its chunked body, with an
/// empty trailer section and no trace of the trailers in its head.
fn assert_arrived_without_trailers(up: &Upstream) {
    let seen = up.received();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req: &Received = &seen[0];
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/upload"));
    assert_eq!(req.header("transfer-encoding"), Some("chunked"));
    assert_eq!(String::from_utf8_lossy(&req.body), "hello world");
    assert!(req.trailers.is_empty(), "trailers went upstream: {:?}", req.trailers);
    for name in ["x-forwarded-user", "x-checksum", "trailer"] {
        assert_eq!(req.header(name), None, "{name} in the upstream request's head");
    }
}

// === trailers ===

/// An HTTP/1.1 chunked request with a trailer section: the upstream gets
/// the body and the end of the chunks, never the trailer fields, which many
/// servers merge into the headers after porteiro's checks.
#[tokio::test]
async fn http1_request_trailers_are_not_forwarded() {
    let up = Upstream::replying(fresh).await;
    let gw = gateway(&up).await;
    let request = "POST /upload HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\
                   trailer: x-forwarded-user, x-checksum\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\nx-forwarded-user: admin\r\nx-checksum: 42\r\n\r\n";
    let resp = raw_exchange(gw.addr(), request.as_bytes()).await;
    assert_eq!((resp.status, resp.text()), (200, "fresh /upload".to_string()));
    assert_arrived_without_trailers(&up);
}

/// The same over HTTP/2 (cleartext, prior knowledge): a HEADERS frame with
/// END_STREAM after the DATA frames holds the trailers.
#[tokio::test]
async fn http2_request_trailers_are_not_forwarded() {
    let up = Upstream::replying(fresh).await;
    let gw = gateway(&up).await;
    let mut h2 = h2_client(&gw).await;
    let req = Request::post("http://app.test/upload").body(()).unwrap();
    let (answer, mut stream) = h2.send_request(req, false).unwrap();
    stream.send_data(Bytes::from_static(b"hello"), false).unwrap();
    stream.send_data(Bytes::from_static(b" world"), false).unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-forwarded-user", HeaderValue::from_static("admin"));
    trailers.insert("x-checksum", HeaderValue::from_static("42"));
    stream.send_trailers(trailers).unwrap();
    let resp = tokio::time::timeout(PATIENCE, answer).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        body.flow_control().release_capacity(data.len()).unwrap();
        text.extend_from_slice(&data);
    }
    assert_eq!(String::from_utf8_lossy(&text), "fresh /upload");
    assert_arrived_without_trailers(&up);
}

/// An HTTP/2 connection to the gateway's cleartext listener.
async fn h2_client(gw: &Gateway) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    h2
}

// === a request body that breaks HTTP framing ===

/// What the watching upstream saw of a request body.
#[derive(Debug)]
enum Seen {
    /// A piece of the body arrived.
    Piece,
    /// The body ended: `whole` when its end came (the last chunk), false
    /// when the connection ended first.
    End { whole: bool, body: Vec<u8> },
}

/// An upstream that reports each piece of a request body as it reads it,
/// then how the body ended. Under `/early` it answers (a chunked `200`,
/// first chunk `early`) as soon as it has the head, and ends that answer
/// once the request body has ended either way; elsewhere it answers whole
/// bodies with [`fresh`] and closes on cut ones.
async fn watching_upstream() -> (Upstream, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Upstream::start(move |mut conn| {
        let tx = tx.clone();
        async move {
            while let Some((index, mut framing)) = conn.read_head().await {
                let req = conn.received(index);
                let early = req.target.starts_with("/early");
                if early {
                    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
                                 5\r\nearly\r\n";
                    if !conn.write(head).await {
                        return;
                    }
                }
                let mut body = Vec::new();
                while let Some(piece) = conn.body_piece(&mut framing).await {
                    body.extend_from_slice(&piece);
                    let _ = tx.send(Seen::Piece);
                }
                let whole = matches!(framing, Framing::Done);
                let _ = tx.send(Seen::End { whole, body });
                if early {
                    let _ = conn.write(b"0\r\n\r\n").await;
                    return;
                }
                if !whole || !conn.write(&fresh(&req).bytes).await {
                    return;
                }
            }
        }
    })
    .await;
    (up, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE, rx.recv()).await.expect("the upstream saw something in time").unwrap()
}

/// Waits for the upstream's word on how the body ended.
async fn body_end(rx: &mut mpsc::UnboundedReceiver<Seen>) -> (bool, Vec<u8>) {
    loop {
        if let Seen::End { whole, body } = next_seen(rx).await {
            return (whole, body);
        }
    }
}

/// Reads on until the gateway closes the connection; what came meanwhile.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    rest
}

const CHUNKED_HEAD: &[u8] = b"POST /upload HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n";

/// A malformed chunk size (`zz`) in the client's body: `400`, not `502`,
/// logged as the client's error and counted as a `4xx` and a refusal, never
/// as an upstream failure. The head (and the chunks before the bad one) may
/// have gone upstream already: the upstream then sees its connection end
/// mid-body, never the last chunk, and that connection is not reused.
/// hyper closes the client's connection after the `400`.
#[tokio::test]
async fn a_malformed_chunk_from_the_client_is_400() {
    let (up, mut seen) = watching_upstream().await;
    let mut gw = GatewayProcess::start("", &public_route("app", &up.url())).await;

    // The bad chunk in the same packet as the head.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(&[CHUNKED_HEAD, b"5\r\nhello\r\nzz\r\n"].concat()).await.unwrap();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut stream)).await.unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(json["error"], "bad_request_body");
    assert!(read_to_close(&mut stream).await.is_empty());
    let (whole, body) = body_end(&mut seen).await;
    assert!(!whole, "the upstream got a whole body: {:?}", String::from_utf8_lossy(&body));

    // The bad chunk once the upstream is reading the body.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(&[CHUNKED_HEAD, b"5\r\nhello\r\n"].concat()).await.unwrap();
    assert!(matches!(next_seen(&mut seen).await, Seen::Piece));
    stream.write_all(b"zz\r\n").await.unwrap();
    let resp = tokio::time::timeout(PATIENCE, read_response(&mut stream)).await.unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(read_to_close(&mut stream).await.is_empty());
    let (whole, body) = body_end(&mut seen).await;
    assert_eq!((whole, &body[..]), (false, &b"hello"[..]));

    // Each cut exchange cost its upstream connection.
    let resp = client().get(gw.url("/next")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "fresh /next");
    assert_eq!(up.connections(), 3, "an upstream connection was reused after a cut request body");

    let line = gw.wait_for_nth_log("request body malformed or cut short", 2).await;
    assert!(line.contains("\"level\":\"INFO\""), "{line}");
    assert!(line.contains("chunk size"), "the log line says what was wrong: {line}");
    let logs = gw.logs();
    assert!(!logs.iter().any(|l| l.contains("upstream failed")), "{}", logs.join("\n"));
    let metrics = admin_metrics(gw.admin_addr.unwrap()).await;
    assert_eq!(metric(&metrics, r#"porteiro_requests_total{route="app",class="4xx"}"#), Some(2.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"porteiro_requests_total{route="app",class="5xx"}"#), Some(0.0), "{metrics}");
    assert_eq!(
        metric(&metrics, r#"porteiro_rejected_requests_total{reason="bad_request_body"}"#),
        Some(2.0),
        "{metrics}"
    );
}

/// The bad chunk after the upstream's answer began: its status is already
/// with the client, so no `400` can replace it. The answer goes on; the
/// upstream is told at once that the request will not be completed (it
/// sees its connection's end mid-body, never the last chunk) rather than
/// left waiting for the rest; the client's connection closes after the
/// answer, and the upstream connection is not reused.
#[tokio::test]
async fn a_malformed_chunk_after_the_upstream_answered() {
    let (up, mut seen) = watching_upstream().await;
    let gw = gateway(&up).await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let head = b"POST /early HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    stream.write_all(head).await.unwrap();
    assert!(matches!(next_seen(&mut seen).await, Seen::Piece));
    // The answer's head and first chunk reach the client first.
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("early") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&answer));
    stream.write_all(b"zz\r\n").await.unwrap();

    let (whole, body) = body_end(&mut seen).await;
    assert_eq!((whole, &body[..]), (false, &b"hello"[..]), "the upstream did not see the request cut");
    answer.extend_from_slice(&read_to_close(&mut stream).await);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.ends_with("0\r\n\r\n"), "the upstream's answer reached its end: {answer:?}");

    let resp = client().get(gw.url("/next")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "fresh /next");
    assert_eq!(up.connections(), 2, "the upstream connection was reused after a cut request body");
}

// === CONNECT ===

/// `CONNECT` asks for a tunnel, not an application's page: `405` with
/// `Allow`, over HTTP/1.1 and HTTP/2, before any route or upstream.
#[tokio::test]
async fn connect_is_405() {
    let up = Upstream::replying(fresh).await;
    let gw = gateway(&up).await;
    let resp = raw_request(gw.addr(), &["CONNECT example.com:443 HTTP/1.1", "host: example.com:443"]).await;
    assert_eq!(resp.status, 405, "{}", resp.text());
    let allow = resp.header("allow").expect("an Allow header").to_string();
    let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    assert!(methods.contains(&"GET") && methods.contains(&"POST"), "{allow}");
    assert!(!methods.iter().any(|m| m.eq_ignore_ascii_case("connect")), "{allow}");

    let mut h2 = h2_client(&gw).await;
    let req = Request::builder().method(Method::CONNECT).uri("example.com:443").body(()).unwrap();
    let (answer, _stream) = h2.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(PATIENCE, answer).await.unwrap().unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));

    assert_eq!(up.connections(), 0, "CONNECT reached the upstream");
    let metrics = gw.metrics().await;
    assert_eq!(metric(&metrics, r#"porteiro_rejected_requests_total{reason="connect"}"#), Some(2.0), "{metrics}");
}
