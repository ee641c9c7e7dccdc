//! The one support module of the end-to-end tests (`tests/*.rs` do
//! `mod support;` and use what they need).
//!
//! Every server of the tests binds `127.0.0.1:0` (or a unix socket) and
//! keeps its listener, so tests run in parallel and no port is ever free
//! between being picked and being used:
//!
//! - [`Gateway`] ([`start_gateway`]): porteiro in-process with a
//!   [`porteiro::clock::Clock`] the test moves past expiries;
//!   [`GatewayProcess`]: the real `porteiro` binary (see [`gateway`]).
//! - [`FakeUpstream`]: the upstream fake, echoing requests as JSON
//!   ([`upstream`]); [`scripted`]: a raw-TCP upstream scripted byte for byte.
//! - [`client`]: a reqwest client that never follows redirects and never
//!   uses a proxy from the environment; [`browser::Browser`] adds a cookie
//!   jar; [`raw_request`] and friends for requests that must reach the
//!   gateway byte for byte.
//! - [`keys`] (signing keys), [`jwks`] (a JWKS endpoint), [`auth`] (the
//!   `jwt` login provider), [`code`] (single-use codes), [`oidc`] (OpenID
//!   providers, fake and real), [`saml`] (a pysaml2 IdP), [`redis`] (a
//!   private `redis-server`), [`nginx`] and [`tomcat`].
//! - [`metric`] and [`count`]: Prometheus samples; a metric that is not
//!   exported at all fails the test instead of reading as 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod auth;
pub mod browser;
pub mod code;
pub mod gateway;
pub mod jwks;
pub mod keys;
pub mod nginx;
pub mod oidc;
pub mod redis;
pub mod saml;
pub mod scripted;
pub mod tomcat;
pub mod upstream;

#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use gateway::{
    ConfigFile, Gateway, GatewayProcess, admin_metrics, binary, parse_config, porteiro_command, proc_status_kib,
    run_binary, start_gateway,
};
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use upstream::{
    Echo, FakeUpstream, PATTERN_MAX, RunningUpstream, Seen, pattern, pattern_body, pattern_byte, pattern_spot_check,
};

pub const MIB: u64 = 1024 * 1024;

/// porteiro's session cookie name when `public_url` is plain http (no
/// `__Host-` prefix).
pub const SESSION_COOKIE: &str = "porteiro_session";

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

/// A TOML string literal.
pub fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Unix seconds by the system clock (tokens for a gateway whose clock the
/// test never moves; otherwise use `gateway.clock.now()`).
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

// === child processes ===

/// The lines a child writes to `pipe` (its stderr), collected as they come
/// for as long as it runs: read all along, or a chatty child would block on
/// a full pipe. The task ends when the pipe closes (await it to have every
/// line).
pub fn collect_lines(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> (std::sync::Arc<std::sync::Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncBufReadExt;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

// === waiting ===

/// Polls `check` every 20 ms until it holds; fails after [`PATIENCE`]. For
/// what happens in real time (a connection, a Redis message), not for an
/// expiry: move the gateway's clock for that.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(PATIENCE, what, check).await;
}

/// [`eventually`], failing after `within`.
pub async fn eventually_within<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === metrics ===

/// The value of one sample line (`name{labels} value`) in a Prometheus text
/// exposition, or `None` when the line is absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

/// The `porteiro_auth_failures_total` series of `provider` and `reason`.
pub fn failures_series(provider: &str, reason: &str) -> String {
    format!("porteiro_auth_failures_total{{provider=\"{provider}\",reason=\"{reason}\"}}")
}

/// The `porteiro_logins_total` series of `provider`.
pub fn logins_series(provider: &str) -> String {
    format!("porteiro_logins_total{{provider=\"{provider}\"}}")
}

/// A counter sample: 0 when its family is exported but this label set has
/// not been counted yet (porteiro creates labelled series on first use).
/// Fails the test when the family is not exported at all, or when its other
/// series carry other label names: a renamed metric or label must not read
/// as 0.
pub fn count(text: &str, series: &str) -> f64 {
    if let Some(v) = metric(text, series) {
        return v;
    }
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let family = name.strip_suffix("_total").unwrap_or(name);
    let declared = text.lines().any(|l| l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()) == Some(family));
    assert!(declared, "metric {family} is not exported:\n{text}");
    let label_names = |labels: &str| -> Vec<String> {
        let mut names: Vec<String> =
            labels.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.trim().to_string()).collect();
        names.sort();
        names
    };
    let wanted = label_names(labels.trim_end_matches('}'));
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let other = &line[name.len() + 1..line.rfind('}').unwrap_or(line.len())];
        assert_eq!(label_names(other), wanted, "{series}: {name} is exported with other labels: {line}");
    }
    0.0
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

/// Sends `request` (a whole HTTP/1.1 request written by hand: header names
/// in any case, URLs past what `reqwest` builds) and returns the answer as
/// text, read until the server closes (the request should say
/// `Connection: close`) or [`PATIENCE`] passes. Write errors are ignored:
/// the server may stop reading early.
pub async fn raw_text(addr: SocketAddr, request: &[u8]) -> String {
    String::from_utf8_lossy(&raw_until_close(addr, request).await).into_owned()
}

/// The status code of a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

/// Reads until the server closes, errs, or stays silent for half of
/// [`PATIENCE`] (an answer to a request that kept the connection open is
/// whole by then).
async fn raw_until_close(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(PATIENCE / 2, stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// Sends `request` exactly as given (any bytes) on a new connection and
/// reads until the server closes it, so the request should say
/// `Connection: close`. `None` when the connection closed (or was reset)
/// without an answer or none came within [`PATIENCE`]. The body is kept as
/// received (not de-chunked).
pub async fn raw_exchange_until_close(addr: SocketAddr, request: &[u8]) -> Option<RawResponse> {
    let buf = raw_until_close(addr, request).await;
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

/// An address that refuses connections: a socket bound to `127.0.0.1:0`
/// and kept, but never listening. Holding it keeps the port from being
/// taken by anything else while the test expects refusals.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ClosedPort { addr: socket.local_addr().unwrap(), _socket: socket }
}

/// A server that is down but whose port stays held: it accepts every
/// connection and closes it unanswered, counting them, so a test can wait
/// for porteiro's attempts instead of sleeping through them.
pub struct DeadEnd {
    pub addr: SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Display for DeadEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl DeadEnd {
    pub async fn start() -> DeadEnd {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        DeadEnd { addr, accepted }
    }

    /// Connections accepted (and closed) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` connections have come.
    pub async fn wait_for(&self, n: usize) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.accepted() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} connections to {}, expected {n}",
                self.accepted(),
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
