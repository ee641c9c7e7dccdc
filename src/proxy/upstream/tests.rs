//! The pool's own rules, on real loopback connections: which idle
//! connection is handed out, when one goes back, and the one retry.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::proxy::Added;

/// An upstream that answers every request head on a connection with
/// `answer`; counts accepted connections. Request bodies are not read.
async fn upstream(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn pool_for(addr: SocketAddr) -> Arc<Pool> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let authority: Authority = addr.to_string().parse().unwrap();
    Arc::new(Pool::new(&Scheme::HTTP, &authority, &Connector::new(tls, Duration::from_secs(2))))
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::builder().uri(path).header(http::header::HOST, "up.test").body(Empty::new()).unwrap()
}

async fn body_of<B>(resp: Response<UpstreamBody<B>>) -> Bytes
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    resp.into_body().collect().await.unwrap().to_bytes()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn a_connection_goes_back_only_once_its_answer_is_read() {
    let (addr, accepted) = upstream(OK).await;
    let pool = pool_for(addr);
    let resp = pool.send(get("/a"), Added::default()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(pool.lock().len(), 0, "still reading the answer");
    assert_eq!(body_of(resp).await, "ok");
    assert_eq!(pool.lock().len(), 1);
    for _ in 0..3 {
        assert_eq!(body_of(pool.send(get("/b"), Added::default()).await.unwrap()).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // An answer dropped unread closes its connection.
    drop(pool.send(get("/c"), Added::default()).await.unwrap());
    assert_eq!(pool.lock().len(), 0);
    assert_eq!(body_of(pool.send(get("/d"), Added::default()).await.unwrap()).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_not_handed_out() {
    let (addr, accepted) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let pool = pool_for(addr);
    let resp = pool.send(get("/"), Added::default()).await.unwrap();
    body_of(resp).await;
    // A newer idle connection whose peer has closed it: once the event
    // loop has seen that, the pool drops it when picked instead of sending
    // on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (accepted_side, _) = listener.accept().await.unwrap();
    drop(accepted_side);
    // Let the event loop see the close.
    dead.readable().await.unwrap();
    pool.lock().push_back(Idle { conn: Conn::new(Stream::Plain(dead)), since: Instant::now() });
    let taken = pool.take_idle().expect("the older, open connection");
    assert_eq!(pool.lock().len(), 0);
    drop(taken);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expired_connections_are_dropped_and_at_most_max_idle_kept() {
    let (addr, _) = upstream(OK).await;
    let pool = pool_for(addr);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut peers = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(TcpStream::connect(listener.local_addr().unwrap()).await.unwrap());
        peers.push(listener.accept().await.unwrap().0);
    }
    let now = Instant::now();
    {
        let mut idle = pool.lock();
        for (i, c) in conns.into_iter().enumerate() {
            let since = if i == 0 { now.checked_sub(IDLE_TIMEOUT * 2).unwrap() } else { now };
            idle.push_back(Idle { conn: Conn::new(Stream::Plain(c)), since });
        }
    }
    assert!(pool.take_idle().is_some());
    assert_eq!(pool.lock().len(), 1, "the expired one is gone, one left");

    for _ in 0..MAX_IDLE + 3 {
        let c = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        peers.push(listener.accept().await.unwrap().0);
        pool.put(Conn::new(Stream::Plain(c)));
    }
    assert_eq!(pool.lock().len(), MAX_IDLE);
}

/// A pooled connection that dies as a bodiless GET is sent on it: the GET
/// goes again on a new connection. A POST is not sent again.
#[tokio::test]
async fn only_requests_that_cannot_have_been_acted_on_are_retried() {
    let (addr, accepted) = upstream(OK).await;
    let pool = pool_for(addr);

    // A connection that accepts the request and closes without answering,
    // before the event loop could notice anything.
    async fn dying(pool: &Arc<Pool>) -> Arc<AtomicUsize> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let conn = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            if peer.read(&mut buf).await.unwrap_or(0) > 0 {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        pool.lock().push_back(Idle { conn: Conn::new(Stream::Plain(conn)), since: Instant::now() });
        seen
    }

    let seen = dying(&pool).await;
    let resp = pool.send(get("/again"), Added::default()).await.unwrap();
    assert_eq!(body_of(resp).await, "ok");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the dying connection got the GET");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "then a new one");

    let seen = dying(&pool).await;
    // The good connection is older: the dying one, newest, is picked.
    let post = Request::builder().method(Method::POST).uri("/charge").body(Empty::<Bytes>::new()).unwrap();
    assert!(matches!(pool.send(post, Added::default()).await, Err(UpstreamError::Request)));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the POST was not sent again");
}

#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pool = pool_for(listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"hello") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(OK).await.unwrap();
        String::from_utf8(got).unwrap()
    });
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/p")
        .header(http::header::HOST, "up.test")
        .header(http::header::CONTENT_LENGTH, "999")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = pool.send(req, Added::default()).await.unwrap();
    assert_eq!(body_of(resp).await, "ok");
    assert_eq!(server.await.unwrap(), "PUT /p HTTP/1.1\r\nhost: up.test\r\ncontent-length: 5\r\n\r\nhello");
}
