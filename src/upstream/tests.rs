//! The pool's own rules, on hand-made connections: which idle connection is
//! handed out, and the one retry. `#[tokio::test]` runs on one thread, so
//! which task runs when is fixed by the order of the test's awaits.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::HOST;
use http_body_util::Empty;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use super::*;

/// An upstream answering `200` to everything; counts accepted connections.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(|_req| async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
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

/// A request as the gateway forwards it. Only hyper makes `Incoming`
/// bodies, so this one is the (empty) body of an answer on a throwaway
/// in-memory connection.
async fn request() -> Request<Incoming> {
    let (client_io, server_io) = tokio::io::duplex(4096);
    let service = service_fn(|_req| async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) });
    tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server_io), service));
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client_io)).await.unwrap();
    tokio::spawn(conn);
    let body = sender.send_request(Request::new(Empty::new())).await.unwrap().into_body();
    Request::builder().uri("/").header(HOST, "up.test").body(body).unwrap()
}

/// A connection to nowhere (an in-memory peer that never answers) and its
/// driver, not yet polled.
async fn idle_connection() -> (SendRequest<Incoming>, http1::Connection<TokioIo<tokio::io::DuplexStream>, Incoming>) {
    let (io, peer) = tokio::io::duplex(4096);
    // The peer half lives as long as the test: an open but silent socket.
    std::mem::forget(peer);
    http1::handshake::<_, Incoming>(TokioIo::new(io)).await.unwrap()
}

#[tokio::test]
async fn an_unsent_request_is_retried_once_on_a_new_connection() {
    let (addr, accepted) = upstream().await;
    let pool = pool_for(addr);

    // An idle connection whose driver the test controls.
    let (mut sender, conn) = idle_connection().await;
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = killed => {}
            _ = conn => {}
        }
    });
    sender.ready().await.unwrap();
    pool.put(sender);

    // It dies as the request is handed to it, before its driver takes the
    // request: hyper hands the request back, and the pool sends it on a new
    // connection.
    // (The request is made first: making it yields, and the driver would
    // see the kill then.)
    let req = request().await;
    kill.send(()).unwrap();
    let (resp, _conn) = pool.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "sent on one new connection");
}

#[tokio::test]
async fn expired_closed_and_busy_idle_connections_are_not_handed_out() {
    let (addr, _) = upstream().await;
    let pool = pool_for(addr);
    let now = Instant::now();
    let mut drivers = Vec::new();

    // Oldest: ready, but idle past the timeout.
    let (mut expired, conn) = idle_connection().await;
    tokio::spawn(conn);
    expired.ready().await.unwrap();
    // Ready: the one to hand out.
    let (mut good, conn) = idle_connection().await;
    tokio::spawn(conn);
    good.ready().await.unwrap();
    // Busy: its driver has not asked for a request (still finishing one).
    let (busy, conn) = idle_connection().await;
    drivers.push(conn);
    // Newest: closed.
    let (closed, conn) = idle_connection().await;
    drop(conn);
    assert!(closed.is_closed());

    {
        let mut idle = pool.lock();
        idle.push_back(Idle { sender: expired, since: now.checked_sub(IDLE_TIMEOUT * 2).unwrap() });
        idle.push_back(Idle { sender: good, since: now });
        idle.push_back(Idle { sender: busy, since: now });
        idle.push_back(Idle { sender: closed, since: now });
    }
    let taken = pool.take_idle().expect("the ready connection");
    assert!(taken.is_ready());
    // The busy one stays for later; the expired and closed ones are gone.
    assert_eq!(pool.lock().len(), 1);
    assert!(pool.take_idle().is_none(), "a busy connection is not handed out");
    assert_eq!(pool.lock().len(), 1);
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let (addr, _) = upstream().await;
    let pool = pool_for(addr);
    let mut drivers = Vec::new();
    for _ in 0..MAX_IDLE + 3 {
        let (sender, conn) = idle_connection().await;
        drivers.push(conn);
        pool.put(sender);
    }
    assert_eq!(pool.lock().len(), MAX_IDLE);
    // A closed connection is not kept at all.
    let (closed, conn) = idle_connection().await;
    drop(conn);
    pool.lock().pop_back();
    pool.put(closed);
    assert_eq!(pool.lock().len(), MAX_IDLE - 1);
}
