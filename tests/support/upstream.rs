//! [`FakeUpstream`]: a small fluent hyper server (HTTP/1.1) that echoes
//! requests as JSON ([`Echo`]), counts streamed bodies, sleeps, serves large
//! bodies, echoes WebSockets, and counts the TCP connections it accepts and
//! sees closed. The one upstream fake of every test binary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::PATIENCE;

/// What the fake upstream does for a path prefix.
#[derive(Clone)]
enum Reply {
    /// Reads (and counts) the request body, answers with an [`Echo`] JSON.
    Echo,
    /// Sleeps, then echoes.
    Slow(Duration),
    /// Streams `n` bytes of [`pattern_byte`]s, with a Content-Length.
    Download(u64),
    /// Answers a WebSocket upgrade and echoes every message back.
    WebSocketEcho,
    /// `204 No Content`.
    NoContent,
    /// Echoes with `Connection: close` (and hyper then closes).
    Close,
}

/// A fluent fake upstream:
///
/// ```ignore
/// let up = FakeUpstream::new("app").slow("/slow", Duration::from_secs(2)).start().await;
/// ```
///
/// Paths are matched by longest prefix; anything unmatched is echoed.
pub struct FakeUpstream {
    name: String,
    replies: Vec<(String, Reply)>,
}

/// A running [`FakeUpstream`].
pub struct RunningUpstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

/// What [`FakeUpstream`] answers to an echoed request.
#[derive(Debug, Deserialize)]
pub struct Echo {
    /// The upstream's name, to tell which one answered.
    pub upstream: String,
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub version: String,
    /// In arrival order, names lower-case, repeated names kept.
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
    /// Every body chunk passed [`pattern_spot_check`] (only meaningful for
    /// bodies made of [`pattern`]).
    pub pattern_ok: bool,
}

impl Echo {
    /// The only value of `name`; fails when the header came more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} arrived {} times: {all:?}", all.len());
        all.first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// Header names in arrival order (a repeated name is listed again).
    pub fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The path as received (without the query).
    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(self.uri.as_str(), |(p, _)| p)
    }

    /// The query as received, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.split_once('?').map(|(_, q)| q)
    }

    /// Reads an answer that must be an echo.
    pub async fn from(resp: reqwest::Response) -> Echo {
        let bytes = resp.bytes().await.unwrap();
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", String::from_utf8_lossy(&bytes)))
    }
}

/// The byte at `offset` of every body the fake upstream serves or the tests
/// upload: a repeating 0..=250 ramp, so a shifted or dropped chunk shows.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// `len` bytes (at most [`PATTERN_MAX`]) of the pattern starting at
/// `offset`: a zero-copy slice of one shared buffer, so producing 100 MiB
/// costs next to nothing even in a debug build.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    static BUFFER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    assert!(len <= PATTERN_MAX);
    let buffer = BUFFER.get_or_init(|| (0..(PATTERN_MAX + 251) as u64).map(pattern_byte).collect());
    let start = (offset % 251) as usize;
    buffer.slice(start..start + len)
}

/// The longest slice [`pattern`] hands out.
pub const PATTERN_MAX: usize = 256 * 1024;

/// Whether `chunk`, found at `offset` of a body, holds the pattern there —
/// checked at both ends only, which is enough to catch lost, repeated or
/// shifted chunks without reading every byte.
pub fn pattern_spot_check(offset: u64, chunk: &[u8]) -> bool {
    match (chunk.first(), chunk.last()) {
        (Some(first), Some(last)) => {
            *first == pattern_byte(offset) && *last == pattern_byte(offset + chunk.len() as u64 - 1)
        }
        _ => true,
    }
}

/// A request body of `total` pattern bytes, produced as the client sends it.
pub fn pattern_body(total: u64) -> reqwest::Body {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::iter((0..total.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        Ok::<_, Infallible>(pattern(start, CHUNK.min(total - start) as usize))
    }));
    reqwest::Body::wrap_stream(chunks)
}

type UpBody = BoxBody<Bytes, Infallible>;

impl FakeUpstream {
    pub fn new(name: &str) -> FakeUpstream {
        FakeUpstream { name: name.to_string(), replies: Vec::new() }
    }

    /// Requests under `prefix` wait `delay` before being echoed (and before
    /// reading the request body, so a client must be held back meanwhile).
    pub fn slow(mut self, prefix: &str, delay: Duration) -> Self {
        self.replies.push((prefix.into(), Reply::Slow(delay)));
        self
    }

    /// Requests under `prefix` get `bytes` bytes of [`pattern`].
    pub fn download(mut self, prefix: &str, bytes: u64) -> Self {
        self.replies.push((prefix.into(), Reply::Download(bytes)));
        self
    }

    /// Requests under `prefix` are WebSocket upgrades, echoed.
    pub fn websocket_echo(mut self, prefix: &str) -> Self {
        self.replies.push((prefix.into(), Reply::WebSocketEcho));
        self
    }

    /// Requests under `prefix` get `204 No Content`.
    pub fn no_content(mut self, prefix: &str) -> Self {
        self.replies.push((prefix.into(), Reply::NoContent));
        self
    }

    /// Requests under `prefix` are echoed with `Connection: close`.
    pub fn closing(mut self, prefix: &str) -> Self {
        self.replies.push((prefix.into(), Reply::Close));
        self
    }

    pub async fn start(mut self) -> RunningUpstream {
        self.replies.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let shared =
            Arc::new(Shared { name: self.name.clone(), replies: self.replies, hits: hits.clone(), seen: seen.clone() });
        let (accepted_in, closed_in) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted_in.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                let closed = closed_in.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RunningUpstream { addr, name: self.name, hits, seen, accepted, closed }
    }
}

struct Shared {
    name: String,
    replies: Vec<(String, Reply)>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Shared {
    async fn answer(&self, req: Request<Incoming>) -> Response<UpBody> {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let uri = req.uri().path_and_query().map_or_else(|| req.uri().to_string(), ToString::to_string);
        self.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            uri: uri.clone(),
            headers: headers.clone(),
        });
        self.hits.fetch_add(1, Ordering::SeqCst);
        let reply = self
            .replies
            .iter()
            .find(|(p, _)| req.uri().path().starts_with(p.as_str()))
            .map_or(Reply::Echo, |(_, r)| r.clone());
        match reply {
            Reply::Echo => self.echo(req, uri, headers).await,
            Reply::Slow(delay) => {
                tokio::time::sleep(delay).await;
                self.echo(req, uri, headers).await
            }
            Reply::Download(n) => download(n),
            Reply::WebSocketEcho => websocket_echo(req),
            Reply::NoContent => text(StatusCode::NO_CONTENT, String::new()),
            Reply::Close => {
                let mut resp = self.echo(req, uri, headers).await;
                resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
                resp
            }
        }
    }

    async fn echo(&self, req: Request<Incoming>, uri: String, headers: Vec<(String, String)>) -> Response<UpBody> {
        let method = req.method().to_string();
        let version = format!("{:?}", req.version());
        // Count the body frame by frame: nothing is kept, so a 100 MiB
        // upload costs the fake nothing.
        let mut body = req.into_body();
        let mut body_bytes = 0u64;
        let mut pattern_ok = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        pattern_ok &= pattern_spot_check(body_bytes, d);
                        body_bytes += d.len() as u64;
                    }
                }
                Err(e) => {
                    return text(StatusCode::BAD_REQUEST, format!("body error: {e}"));
                }
            }
        }
        let json = serde_json::json!({
            "upstream": self.name,
            "method": method,
            "uri": uri,
            "version": version,
            "headers": headers,
            "body_bytes": body_bytes,
            "pattern_ok": pattern_ok,
        });
        let mut resp = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
        resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        resp
    }
}

fn text(status: StatusCode, body: String) -> Response<UpBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp
}

fn download(total: u64) -> Response<UpBody> {
    const CHUNK: u64 = 64 * 1024;
    // Chunks are made lazily, one at a time, as the gateway pulls them.
    let frames = futures_util::stream::iter((0..total.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        let len = CHUNK.min(total - start) as usize;
        Ok::<_, Infallible>(Frame::data(pattern(start, len)))
    }));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut().insert(header::CONTENT_LENGTH, http::HeaderValue::from(total));
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
    resp
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<UpBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a websocket request".into());
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, http::HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap());
    resp
}

impl RunningUpstream {
    /// `http://127.0.0.1:port`, as a route's `upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far (counted when the head arrives).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections that have ended (closed by either side).
    pub fn closed_connections(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have ended.
    pub async fn wait_for_closed(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.closed_connections() < n {
            assert!(
                Instant::now() < deadline,
                "upstream {}: {} connections closed, expected {n}",
                self.name,
                self.closed_connections()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for_hits(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.hits() < n {
            assert!(Instant::now() < deadline, "upstream {} saw {} requests, expected {n}", self.name, self.hits());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
