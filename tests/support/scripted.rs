//! A raw-TCP upstream scripted byte for byte, for the tests of porteiro's
//! HTTP/1.1 client (`tests/upstream_http1.rs`) and of what reaches an
//! upstream from a client's request (`tests/request_framing.rs`).
//!
//! It can send what no well-behaved server library would (chunk
//! extensions, two lengths, an unsolicited second response) and records
//! exactly what arrived: request heads, de-chunked bodies, trailer sections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::PATIENCE;

/// One request as the scripted upstream read it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which accepted connection (counted from 1) it came on.
    pub connection: usize,
    pub method: String,
    pub target: String,
    /// In arrival order, names lower-case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked; empty until read whole (or never read).
    pub body: Vec<u8>,
    /// A chunked body's trailer section, as received (names lower-case,
    /// values trimmed); empty without one.
    pub trailers: Vec<(String, String)>,
}

impl Received {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The only value of `name`; fails when it came more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} arrived {} times: {all:?}", all.len());
        all.first().copied()
    }
}

/// How a request body is delimited, and how much of it is left.
pub enum Framing {
    Length(u64),
    /// `left` bytes of the current chunk; 0 before a chunk-size line.
    Chunked {
        left: u64,
    },
    Done,
}

impl Framing {
    fn of(headers: &[(String, String)]) -> Framing {
        let te: Vec<&str> = headers.iter().filter(|(k, _)| k == "transfer-encoding").map(|(_, v)| v.as_str()).collect();
        if let Some(last) = te.last() {
            assert!(last.trim().eq_ignore_ascii_case("chunked"), "request transfer-encoding {te:?}");
            return Framing::Chunked { left: 0 };
        }
        match headers.iter().find(|(k, _)| k == "content-length") {
            Some((_, v)) => Framing::Length(v.parse().unwrap_or_else(|_| panic!("request content-length {v:?}"))),
            None => Framing::Done,
        }
    }
}

/// One accepted connection, as a script drives it.
pub struct Conn {
    pub stream: TcpStream,
    buf: BytesMut,
    id: usize,
    log: Arc<Mutex<Vec<Received>>>,
    /// The trailer section of the chunked body read last.
    trailers: Vec<(String, String)>,
}

impl Conn {
    /// Reads more bytes into the buffer; false at EOF or on an error.
    pub async fn fill(&mut self) -> bool {
        self.buf.reserve(64 * 1024);
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    /// One CRLF-terminated line, without the CRLF; `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf.split_to(i + 2);
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads a request head and records the request (body still empty).
    /// Returns its index in the log and how its body is framed; `None` at EOF.
    pub async fn read_head(&mut self) -> Option<(usize, Framing)> {
        let request_line = self.line().await?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad request header line {line:?}"));
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some("HTTP/1.1"), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("bad request line {request_line:?}");
        };
        let framing = Framing::of(&headers);
        let received = Received {
            connection: self.id,
            method: method.into(),
            target: target.into(),
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        let mut log = self.log.lock().unwrap();
        log.push(received);
        Some((log.len() - 1, framing))
    }

    /// The next piece of a request body, de-chunked; `None` at its end (or
    /// at EOF, which [`Conn::read_request`] tells apart).
    pub async fn body_piece(&mut self, framing: &mut Framing) -> Option<Bytes> {
        match framing {
            Framing::Done => None,
            Framing::Length(0) => {
                *framing = Framing::Done;
                None
            }
            Framing::Length(left) => {
                if self.buf.is_empty() && !self.fill().await {
                    return None;
                }
                let n = self.buf.len().min(usize::try_from(*left).unwrap());
                *left -= n as u64;
                Some(self.buf.split_to(n).freeze())
            }
            Framing::Chunked { left } => {
                if *left == 0 {
                    let size_line = self.line().await?;
                    // Chunk extensions (`;name=value`) are allowed and ignored.
                    let size = size_line.split(';').next().unwrap_or_default().trim();
                    let size =
                        u64::from_str_radix(size, 16).unwrap_or_else(|_| panic!("chunk size line {size_line:?}"));
                    if size == 0 {
                        // The trailer section, then the blank line.
                        self.trailers.clear();
                        loop {
                            let line = self.line().await?;
                            if line.is_empty() {
                                break;
                            }
                            let (name, value) =
                                line.split_once(':').unwrap_or_else(|| panic!("bad trailer line {line:?}"));
                            self.trailers.push((name.to_ascii_lowercase(), value.trim().to_string()));
                        }
                        *framing = Framing::Done;
                        return None;
                    }
                    *left = size;
                }
                if self.buf.is_empty() && !self.fill().await {
                    return None;
                }
                let n = self.buf.len().min(usize::try_from(*left).unwrap());
                *left -= n as u64;
                let piece = self.buf.split_to(n).freeze();
                if *left == 0 {
                    let end = self.line().await?;
                    assert!(end.is_empty(), "chunk data not followed by CRLF: {end:?}");
                }
                Some(piece)
            }
        }
    }

    /// Reads a whole request, head and body, and records it; `None` at EOF,
    /// including EOF in the middle of a body.
    pub async fn read_request(&mut self) -> Option<Received> {
        let (index, mut framing) = self.read_head().await?;
        let mut body = Vec::new();
        while let Some(piece) = self.body_piece(&mut framing).await {
            body.extend_from_slice(&piece);
        }
        if !matches!(framing, Framing::Done) {
            return None;
        }
        let mut log = self.log.lock().unwrap();
        log[index].body = body;
        log[index].trailers = std::mem::take(&mut self.trailers);
        Some(log[index].clone())
    }

    /// The request recorded at `index`.
    pub fn received(&self, index: usize) -> Received {
        self.log.lock().unwrap()[index].clone()
    }

    /// Writes `bytes`; false if the gateway has gone.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Sends FIN, then drops the socket.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw-TCP upstream: each accepted connection is handed to the script.
/// Counts connections and records every request head it reads.
pub struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections whose script has ended (and dropped the socket).
    closed: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Received>>>,
}

/// What [`Upstream::replying`] sends for one request.
pub struct Reply {
    pub bytes: Vec<u8>,
    /// Close the connection once `bytes` are out.
    pub close: bool,
}

/// `bytes`, then wait for the next request on the same connection.
pub fn keep(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply { bytes: bytes.into(), close: false }
}

/// `bytes`, then close the connection.
pub fn then_close(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply { bytes: bytes.into(), close: true }
}

/// A `200` with a Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The ordinary answer: `fresh <target>`, so a test sees which request it
/// answers.
pub fn fresh(req: &Received) -> Reply {
    keep(ok(&format!("fresh {}", req.target)))
}

impl Upstream {
    pub async fn start<S, F>(script: S) -> Upstream
    where
        S: Fn(Conn) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (count, ended, shared_log) = (connections.clone(), closed.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst) + 1;
                let run =
                    script(Conn { stream, buf: BytesMut::new(), id, log: shared_log.clone(), trailers: Vec::new() });
                let ended = ended.clone();
                tokio::spawn(async move {
                    run.await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream { addr, connections, closed, log }
    }

    /// Answers requests for `target` with `reply()`, any other with [`fresh`].
    pub async fn special(target: &'static str, reply: impl Fn() -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::replying(move |req| if req.target == target { reply() } else { fresh(req) }).await
    }

    /// Reads whole requests, one after the other on each connection, and
    /// answers each with `answer(request)`.
    pub async fn replying(answer: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Upstream {
        let answer = Arc::new(answer);
        Upstream::start(move |mut conn| {
            let answer = answer.clone();
            async move {
                while let Some(req) = conn.read_request().await {
                    let reply = answer(&req);
                    if !conn.write(&reply.bytes).await || reply.close {
                        break;
                    }
                }
                conn.close().await;
            }
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests whose head has arrived, in order.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the scripts of `n` connections have ended.
    pub async fn wait_for_closed(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.closed.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "{} connections closed, expected {n}",
                self.closed.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
