//! Shared helpers for the end-to-end tests.
//!
//! Everything listens on `127.0.0.1:0`, so tests run in parallel and never
//! fight over ports:
//!
//! - [`start_gateway`]: porteiro in-process (the library's `start`), from a
//!   TOML body; the `[server]` table with both listeners on port 0 is added.
//! - [`GatewayProcess`]: the real `porteiro` binary, config in a temp file,
//!   addresses read from its (JSON) log, stderr kept for assertions.
//! - [`FakeUpstream`]: a small fluent hyper server — echoes requests as JSON,
//!   counts streamed bodies, sleeps, serves large bodies, echoes WebSockets,
//!   counts the TCP connections it accepts and sees closed.
//! - [`client`]: a reqwest client that never follows redirects and never
//!   uses a proxy from the environment; [`raw_request`] for requests that
//!   must reach the gateway byte for byte (dot segments, odd header names),
//!   [`raw_exchange`] when even the request line is not UTF-8 or the answer
//!   may be a closed connection.
//! - [`nginx`] and [`tomcat`]: real third-party servers, started privately.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
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
use porteiro::Running;
use porteiro::config::Config;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

pub mod nginx;
pub mod tomcat;

pub const MIB: u64 = 1024 * 1024;

/// How long any single wait in these helpers may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

// === config ===

/// A full config: `[server]` on `127.0.0.1:0` with the admin listener on
/// `127.0.0.1:0`, then `server_extra` (more `[server]` keys), then `body`
/// (routes, session...).
pub fn config(server_extra: &str, body: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n\n{body}\n")
}

/// One public `[[routes]]` entry for every host and path.
pub fn public_route(id: &str, upstream: &str) -> String {
    format!("[[routes]]\nid = \"{id}\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\npublic = true\n")
}

// === in-process gateway ===

/// porteiro started through the library.
pub struct TestGateway {
    pub running: Running,
}

/// Starts porteiro in-process with [`config`]`(server_extra, body)`.
pub async fn start_gateway(server_extra: &str, body: &str) -> TestGateway {
    let text = config(server_extra, body);
    let config = Config::from_toml(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let running = porteiro::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    TestGateway { running }
}

impl TestGateway {
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.running.admin_addr.expect("admin listener configured")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        admin_metrics(self.admin_addr()).await
    }
}

pub async fn admin_metrics(admin: SocketAddr) -> String {
    let resp = client().get(format!("http://{admin}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text
/// exposition, or `None` when the line is absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

// === clients ===

/// A client for tests: never follows redirects, ignores proxy settings from
/// the environment, gives up after [`PATIENCE`].
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().timeout(PATIENCE)
}

pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// One HTTP/1.1 connection that every request is sent on. Shows whether the
/// gateway keeps a connection open across something (a reload): a pooling
/// client would quietly open another one.
pub struct OneConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
}

impl OneConnection {
    pub async fn open(addr: SocketAddr) -> OneConnection {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        OneConnection { sender }
    }

    /// `GET path`; fails if the gateway has closed the connection.
    pub async fn get(&mut self, path: &str) -> (StatusCode, Bytes) {
        self.sender.ready().await.expect("the gateway kept the connection open");
        let req = Request::get(path).header(header::HOST, "app.test").body(http_body_util::Empty::new()).unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

/// An answer read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as what [`FakeUpstream`] echoed.
    pub fn echo(&self) -> Echo {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {} {}", self.status, self.text()))
    }
}

/// Sends a request head made of `head_lines` (joined with CRLF, blank line
/// added) exactly as written, on a new connection, and reads one answer.
/// For requests a normal client would rewrite: dot segments, header names
/// with `_` or `.`, hop-by-hop headers.
pub async fn raw_request(addr: SocketAddr, head_lines: &[&str]) -> RawResponse {
    let mut request = head_lines.join("\r\n");
    request.push_str("\r\n\r\n");
    raw_exchange(addr, request.as_bytes()).await
}

/// Sends `request` (head and body, any bytes) on a new connection and
/// reads one answer.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    tokio::time::timeout(PATIENCE, read_response(&mut stream)).await.expect("raw response in time")
}

/// Sends `request` exactly as given (any bytes) on a new connection and
/// reads until the server closes it, so the request should say
/// `Connection: close`. `None` when the connection closed (or was reset)
/// without an answer or none came within [`PATIENCE`]. The body is kept as
/// received (not de-chunked).
pub async fn raw_exchange_until_close(addr: SocketAddr, request: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf)).await;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(RawResponse { status, headers, body: buf[head_end + 4..].to_vec() })
}

/// Reads one answer off `stream`: its body by Content-Length, else to the
/// end of the stream (a chunked body stays chunked).
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
    match length {
        Some(len) => {
            while body.len() < len {
                let mut chunk = vec![0u8; len - body.len()];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut body).await.unwrap();
        }
    }
    RawResponse { status, headers, body }
}

// === fake upstream ===

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

    pub fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(k, _)| k.as_str()).collect()
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

/// An address nothing listens on: bound, then released.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// === the binary ===

/// Path of the `porteiro` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_porteiro")
}

/// Runs the binary to completion (for `check` and config errors). The
/// environment's `PORTEIRO_CONFIG` is removed so only `args` count.
pub fn run_binary(args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(args)
        .env_remove("PORTEIRO_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A config file in its own temp directory (also handy for cert files).
pub struct ConfigFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { dir, path }
    }

    pub fn rewrite(&self, text: &str) {
        // Write then rename, as config management tools do, so a reload
        // never reads half a file.
        let tmp = self.dir.path().join("gateway.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// [`config`] with JSON logs, which [`GatewayProcess`] parses.
fn process_config(server_extra: &str, body: &str) -> String {
    config(&format!("log_format = \"json\"\n{server_extra}"), body)
}

/// A running `porteiro` process. Killed on drop if still running.
pub struct GatewayProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub config: ConfigFile,
    logs: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Writes [`config`]`(server_extra, body)` (with JSON logs, which this
    /// helper parses) to a temp file and starts `porteiro --config FILE`.
    /// Returns once the listeners are bound.
    pub async fn start(server_extra: &str, body: &str) -> GatewayProcess {
        let text = process_config(server_extra, body);
        let config = ConfigFile::new(&text);
        let mut child = tokio::process::Command::new(binary())
            .args(["--config", config.path_str()])
            .env_remove("PORTEIRO_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        {
            // Keep draining stderr for the whole run, or a chatty gateway
            // would block on a full pipe.
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let mut process =
            GatewayProcess { child, pid, addr: SocketAddr::from(([0, 0, 0, 0], 0)), admin_addr: None, config, logs };
        let line = process.wait_for_log("porteiro listening").await;
        let fields = &serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))["fields"];
        process.addr = fields["addr"].as_str().unwrap().parse().unwrap();
        process.admin_addr =
            fields["admin"].as_str().and_then(|a| a.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok());
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin_addr.expect("admin listener configured");
        format!("http://{admin}{path}")
    }

    /// Replaces the config file as [`GatewayProcess::start`] wrote it (the
    /// process is not told; send `HUP`).
    pub fn rewrite_config(&self, server_extra: &str, body: &str) {
        self.config.rewrite(&process_config(server_extra, body));
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// All stderr lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a stderr line containing `needle` and returns it. Fails
    /// early if the process exits.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_nth_log(needle, 1).await
    }

    /// Waits until `n` stderr lines contain `needle`; returns the n-th.
    pub async fn wait_for_nth_log(&mut self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.logs().into_iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("porteiro exited ({status}) before logging {needle:?}:\n{}", self.logs().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "no log line {needle:?} within {PATIENCE:?}:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (`"TERM"`, `"HUP"`...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status =
            std::process::Command::new("kill").args([format!("-{signal}"), self.pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("porteiro still running after {within:?}:\n{}", self.logs().join("\n")))
            .unwrap()
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
