//! Many idle keep-alive connections at once (`server.max_connections`): the
//! default limit holds 2 000 opened, used and idle connections, and a
//! connection beyond a lowered limit waits in the accept queue until another
//! closes, rather than being dropped. A connection quiet for a second or two
//! is parked (it keeps only its socket) and serves its next request as
//! before, whatever the client had already sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use support::{FakeUpstream, Gateway, OneConnection, PATIENCE, metric, public_route, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 2000;

/// Both tests of this binary may run at once, each holding both ends of
/// CONNECTIONS connections plus upstream ones: raise the soft open-file
/// limit, within the hard one.
fn raise_open_file_limit() {
    let want: u64 = 4 * CONNECTIONS as u64 + 1024;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|cur| cur >= want) {
        return;
    }
    let new = limit.maximum.map_or(want, |max| want.min(max));
    assert!(new >= want, "this test needs {want} open files; the hard limit is {:?}", limit.maximum);
    setrlimit(Resource::Nofile, Rlimit { current: Some(new), maximum: limit.maximum }).unwrap();
}

async fn open_gauge(gw: &Gateway) -> f64 {
    metric(&gw.metrics().await, "porteiro_connections_open").expect("porteiro_connections_open exported")
}

async fn parked_gauge(gw: &Gateway) -> f64 {
    metric(&gw.metrics().await, "porteiro_connections_parked").expect("porteiro_connections_parked exported")
}

/// Waits until `n` connections are parked.
async fn until_parked(gw: &Gateway, n: f64) {
    let parked = tokio::time::timeout(PATIENCE, async {
        while parked_gauge(gw).await != n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(parked.is_ok(), "{} connections parked, not {n}", parked_gauge(gw).await);
}

/// Reads one answer with a `Content-Length` body off a raw socket.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-answer: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8(got).unwrap()
}

/// Opens `n` connections and sends one request on each (at most 100 in
/// flight, so the upstream pool stays small); every answer must be a 200.
async fn open_and_use(addr: SocketAddr, n: usize) -> Vec<OneConnection> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(OneConnection::open(addr).await);
    }
    use_each(&mut conns).await;
    conns
}

async fn use_each(conns: &mut [OneConnection]) {
    for chunk in conns.chunks_mut(100) {
        for (status, _) in join_all(chunk.iter_mut().map(|c| c.get("/"))).await {
            assert_eq!(status, 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_are_opened_used_and_kept_idle_at_once_under_the_default_limit() {
    raise_open_file_limit();
    let up = FakeUpstream::new("app").start().await;
    // The idle timeout (header_read_timeout) well above the test's length;
    // max_connections left at its default.
    let gw = start_gateway("header_read_timeout_seconds = 120", &public_route("app", &up.url())).await;

    let mut conns = open_and_use(gw.addr(), CONNECTIONS).await;
    assert_eq!(open_gauge(&gw).await, CONNECTIONS as f64, "every connection is open at once");
    // All idle at once and none dropped: each answers again on the same
    // connection (OneConnection fails if the gateway closed it).
    use_each(&mut conns).await;
    assert_eq!(open_gauge(&gw).await, CONNECTIONS as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_a_lowered_limit_waits_and_is_served_once_another_closes() {
    raise_open_file_limit();
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway(
        &format!("max_connections = {CONNECTIONS}\nheader_read_timeout_seconds = 120"),
        &public_route("app", &up.url()),
    )
    .await;
    let mut conns = open_and_use(gw.addr(), CONNECTIONS).await;
    assert_eq!(open_gauge(&gw).await, CONNECTIONS as f64);

    // One more: the kernel completes the handshake (accept queue), porteiro
    // does not accept it while the limit is reached, and neither answers nor
    // closes it.
    let mut extra = TcpStream::connect(gw.addr()).await.unwrap();
    extra.write_all(b"GET /waiting HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(700), extra.read(&mut buf)).await;
    assert!(early.is_err(), "the connection beyond max_connections got {early:?} instead of waiting");
    assert_eq!(open_gauge(&gw).await, CONNECTIONS as f64, "accepted beyond max_connections");

    // Closing one of the others makes room: the waiting request is served.
    drop(conns.pop());
    let mut got = Vec::new();
    let answered = tokio::time::timeout(PATIENCE, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = extra.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "no answer once a slot was free: {:?}", String::from_utf8_lossy(&got));
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(up.seen().last().map(|s| s.uri.clone()).as_deref(), Some("/waiting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_are_parked_and_serve_their_next_request() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 120", &public_route("app", &up.url())).await;
    let mut conns = open_and_use(gw.addr(), 50).await;
    assert_eq!(open_gauge(&gw).await, 50.0);
    until_parked(&gw, 50.0).await;

    // Each parked connection answers on the same socket (OneConnection
    // fails if it was closed), and is parked again once quiet.
    use_each(&mut conns).await;
    assert_eq!(open_gauge(&gw).await, 50.0);
    until_parked(&gw, 50.0).await;

    // A connection in steady use is never parked: one request every 300 ms.
    let mut busy = OneConnection::open(gw.addr()).await;
    for _ in 0..10 {
        assert_eq!(busy.get("/busy").await.0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(parked_gauge(&gw).await, 50.0, "a connection in use was parked");
    }
    drop(conns);
    until_parked(&gw, 1.0).await;
}

/// A client that has sent part of its next request when the connection is
/// parked: those bytes were read before parking and must not be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_begun_before_parking_is_read_whole_after() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 120", &public_route("app", &up.url())).await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    // One request and the start of the next in a single write.
    stream.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\nGET /second HTTP/1.1\r\nHo").await.unwrap();
    let first = read_answer(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    // Quiet for longer than it takes to park (1 to 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream.write_all(b"st: app.test\r\nX-Part: 2\r\n\r\n").await.unwrap();
    let second = read_answer(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    let seen = up.seen();
    assert_eq!(seen.iter().map(|s| s.uri.as_str()).collect::<Vec<_>>(), ["/first", "/second"]);
    assert!(seen[1].headers.iter().any(|(k, v)| k == "x-part" && v == "2"), "{:?}", seen[1].headers);

    // And parked with nothing pending, the next request is served too.
    until_parked(&gw, 1.0).await;
    stream.write_all(b"GET /third HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    let third = read_answer(&mut stream).await;
    assert!(third.starts_with("HTTP/1.1 200 "), "{third}");
    assert_eq!(up.seen().last().map(|s| s.uri.clone()).as_deref(), Some("/third"));
}

/// Parking does not stretch the idle timeout: a quiet connection is closed
/// header_read_timeout after its last answer, parked or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_closed_once_idle_for_header_read_timeout() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 3", &public_route("app", &up.url())).await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let answered = std::time::Instant::now();
    until_parked(&gw, 1.0).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf)).await;
    let waited = answered.elapsed();
    assert!(matches!(n, Ok(Ok(0))), "not closed: {n:?}");
    assert!(waited >= Duration::from_millis(2500), "closed after {waited:?}, before the idle timeout");
    assert_eq!(parked_gauge(&gw).await, 0.0);
}

/// An answer sent before the request's body was all read (the upstream did
/// not wait for it): the rest of that body, arriving after the connection
/// was quiet, is never read as a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_an_unread_body_is_never_read_as_a_request() {
    let up = FakeUpstream::new("app").no_content("/early").start().await;
    let gw = start_gateway("header_read_timeout_seconds = 120", &public_route("app", &up.url())).await;
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let first = b"0123456789";
    let head =
        format!("POST /early HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n", first.len() + smuggled.len());
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
    // Quiet for longer than it takes to park, then the rest of the body.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = stream.write_all(smuggled).await;
    let mut buf = [0u8; 4096];
    let after = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    if let Ok(Ok(n)) = after {
        assert_eq!(n, 0, "answered the rest of a body: {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        up.seen().iter().all(|s| s.uri != "/smuggled"),
        "the rest of a body went upstream as a request: {:?}",
        up.seen().iter().map(|s| s.uri.clone()).collect::<Vec<_>>()
    );
    assert_eq!(parked_gauge(&gw).await, 0.0, "a connection with an unread body was parked");
}
