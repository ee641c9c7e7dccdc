//! porteiro's HTTP/1.1 client toward upstreams, seen from both ends: how it
//! reads a response's framing (RFC 9112 §6), which answers it refuses, how it
//! frames the requests it sends, and when it may reuse a connection.
//!
//! The upstream here is scripted byte for byte over raw TCP
//! (`tests/scripted_upstream`), so it can send what no well-behaved server
//! library would (chunk extensions, two lengths, an unsolicited second
//! response) and record exactly what arrived. The tests
//! assert what any correct HTTP/1.1 proxy must do, not how one client library
//! happens to do it: they must hold for whatever client porteiro uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use support::scripted::{Upstream, find, fresh, keep, ok, then_close};
use support::{Gateway, MIB, PATTERN_MAX, client, client_builder, pattern, pattern_body, public_route, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether `bytes`, found at `offset` of a body, are [`pattern`] there,
/// every byte of them.
fn is_pattern(offset: u64, bytes: &[u8]) -> bool {
    bytes
        .chunks(PATTERN_MAX)
        .enumerate()
        .all(|(i, piece)| piece == &pattern(offset + (i * PATTERN_MAX) as u64, piece.len())[..])
}

async fn gateway(up: &Upstream) -> Gateway {
    start_gateway("", &public_route("app", &up.url())).await
}

/// `GET path` through the gateway: status and whole body.
async fn get(c: &reqwest::Client, gw: &Gateway, path: &str) -> (u16, Bytes) {
    let resp = c.get(gw.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap())
}

/// Asserts `path` is answered by the upstream's [`fresh`] reply.
async fn assert_fresh(c: &reqwest::Client, gw: &Gateway, path: &str) {
    let (status, body) = get(c, gw, path).await;
    assert_eq!((status, &body[..]), (200, format!("fresh {path}").as_bytes()), "{}", String::from_utf8_lossy(&body));
}

// === response framing ===

/// RFC 9112 §7.1: chunk sizes are hex in either case, chunk extensions
/// (`;name=value`, quoted or not) are ignored, and the body ends at the
/// last chunk; the connection is reusable right after it.
#[tokio::test]
async fn chunked_response_with_extensions() {
    let up = Upstream::special("/chunked", || {
        keep(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
             5;ext=1\r\nhello\r\n\
             1 ; name=\"quoted value\"\r\n,\r\n\
             A\r\n 01234567\n\r\n\
             0000b\r\n and more.\n\r\n\
             0\r\n\r\n",
        )
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    for round in 0..2 {
        let (status, body) = get(&c, &gw, "/chunked").await;
        assert_eq!(
            (status, &body[..]),
            (200, &b"hello, 01234567\n and more.\n"[..]),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_fresh(&c, &gw, &format!("/after/{round}")).await;
    }
    assert_eq!(up.received().len(), 4);
    assert_eq!(up.connections(), 1, "a chunked answer read to its end leaves the connection reusable");
}

/// The upstream's chunked answer with a trailer section after the last chunk.
const WITH_TRAILERS: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
                             5;ext=1\r\nhello\r\n6\r\n world\r\n\
                             0\r\nx-checksum: abc\r\nx-other: 1\r\n\r\n";

/// RFC 9112 §7.1.2: a trailer section may follow the last chunk; the body
/// is exactly the chunks' data, and the trailer lines are read off the wire
/// (not left there to be taken for the next answer).
#[tokio::test]
async fn chunked_response_with_trailers() {
    let up = Upstream::special("/trailers", || keep(WITH_TRAILERS)).await;
    let gw = gateway(&up).await;
    let c = client();
    for round in 0..2 {
        let (status, body) = get(&c, &gw, "/trailers").await;
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]), "{}", String::from_utf8_lossy(&body));
        assert_fresh(&c, &gw, &format!("/after/{round}")).await;
    }
    assert_eq!(up.received().len(), 4);
}

/// After a trailer section the chunked body has ended like any other: the
/// connection goes back to the pool.
#[tokio::test]
async fn a_chunked_response_with_trailers_leaves_the_connection_reusable() {
    let up = Upstream::special("/trailers", || keep(WITH_TRAILERS)).await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, body) = get(&c, &gw, "/trailers").await;
    assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
    assert_fresh(&c, &gw, "/after").await;
    assert_eq!(up.connections(), 1, "the connection was not reused after a trailer section");
}

/// An answer trickling in a byte at a time (head, chunk lines, trailers)
/// is read as if it came whole, and leaves the connection reusable.
#[tokio::test]
async fn an_answer_arriving_byte_by_byte_is_read_whole() {
    let up = Upstream::start(|mut conn| async move {
        conn.stream.set_nodelay(true).unwrap();
        while let Some(req) = conn.read_request().await {
            let reply = if req.target == "/trickle" { WITH_TRAILERS.as_bytes().to_vec() } else { ok("fresh") };
            for byte in reply {
                if !conn.write(&[byte]).await {
                    return;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, body) = get(&c, &gw, "/trickle").await;
    assert_eq!((status, &body[..]), (200, &b"hello world"[..]), "{}", String::from_utf8_lossy(&body));
    let (status, body) = get(&c, &gw, "/next").await;
    assert_eq!((status, &body[..]), (200, &b"fresh"[..]));
    assert_eq!(up.connections(), 1);
}

/// RFC 9112 §6.3 (7): without Content-Length or Transfer-Encoding the body
/// runs to the close of the connection, which can then not be reused.
#[tokio::test]
async fn close_delimited_response_is_read_to_the_end() {
    const SIZE: usize = 200 * 1024;
    let up = Upstream::replying(|_| {
        let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n".to_vec();
        bytes.extend_from_slice(&pattern(0, SIZE));
        then_close(bytes)
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    for round in 1..=2 {
        let (status, body) = get(&c, &gw, &format!("/file/{round}")).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), SIZE);
        assert!(is_pattern(0, &body), "body corrupted");
        assert_eq!(up.connections(), round, "each close-delimited answer costs its connection");
    }
    let on: Vec<usize> = up.received().iter().map(|r| r.connection).collect();
    assert_eq!(on, [1, 2]);
}

/// RFC 9112 §9.3: an HTTP/1.0 answer without `keep-alive` means the server
/// closes; the connection is not one to send another request on.
#[tokio::test]
async fn http_1_0_response_is_not_reused() {
    let up = Upstream::replying(|req| {
        keep(format!("HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{}", req.target.len(), req.target))
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    for (round, path) in [(1, "/one"), (2, "/two")] {
        let (status, body) = get(&c, &gw, path).await;
        assert_eq!((status, &body[..]), (200, path.as_bytes()));
        assert_eq!(up.connections(), round, "an HTTP/1.0 connection without keep-alive was reused");
    }
}

/// RFC 9110 §15.2: 1xx answers before the final one are interim; the client
/// gets the final answer and the connection stays usable.
#[tokio::test]
async fn informational_responses_before_the_final_one() {
    let up = Upstream::special("/hints", || {
        let mut bytes = b"HTTP/1.1 100 Continue\r\n\r\n\
                          HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n"
            .to_vec();
        bytes.extend_from_slice(&ok("final"));
        keep(bytes)
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, body) = get(&c, &gw, "/hints").await;
    assert_eq!((status, &body[..]), (200, &b"final"[..]));
    assert_fresh(&c, &gw, "/next").await;
    assert_eq!(up.connections(), 1);
}

/// RFC 9112 §6.3 (1): answers to HEAD, and 304s, end at their head whatever
/// Content-Length says; waiting for those bytes would hang, and the
/// connection is reusable right away.
#[tokio::test]
async fn head_and_304_answers_have_no_body() {
    let up = Upstream::replying(|req| match (req.method.as_str(), req.target.as_str()) {
        ("HEAD", _) => keep("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\n"),
        (_, "/cached") => keep("HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 10\r\n\r\n"),
        _ => fresh(req),
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();

    let resp = c.head(gw.url("/doc")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The length a GET would have, passed on.
    assert_eq!(resp.headers().get("content-length").map(|v| v.as_bytes()), Some(&b"10"[..]));
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_fresh(&c, &gw, "/doc").await;

    let resp = c.get(gw.url("/cached")).header("if-none-match", "\"v1\"").send().await.unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], "\"v1\"");
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_fresh(&c, &gw, "/after").await;

    assert_eq!(up.received().len(), 4);
    assert_eq!(up.connections(), 1, "bodiless answers leave the connection reusable");
}

/// RFC 9112 §6.3 (5): an invalid Content-Length (not digits, or two values
/// that differ) is an unrecoverable framing error: 502, and that connection
/// is dropped, never reused nor the request retried.
#[tokio::test]
async fn invalid_content_length_is_502() {
    const BAD: [&str; 5] = ["abc", "+5", "-1", "5\r\ncontent-length: 6", "5, 6"];
    let up = Upstream::replying(|req| match req.target.strip_prefix("/bad/") {
        Some(i) => {
            let value = BAD[i.parse::<usize>().unwrap()];
            keep(format!("HTTP/1.1 200 OK\r\ncontent-length: {value}\r\n\r\nhello!"))
        }
        None => fresh(req),
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    for (i, value) in BAD.iter().enumerate() {
        let (status, body) = get(&c, &gw, &format!("/bad/{i}")).await;
        assert_eq!(status, 502, "content-length {value:?}: {}", String::from_utf8_lossy(&body));
        assert_fresh(&c, &gw, &format!("/ok/{i}")).await;
        // Each bad answer cost its connection: the first, then the one
        // `/ok` left idle.
        assert_eq!(up.connections(), i + 2, "content-length {value:?}: the connection was reused");
    }
    assert_eq!(up.received().len(), 2 * BAD.len(), "a request was retried");
}

/// RFC 9112 §6.3 (5): equal values of a Content-Length repeated (two
/// lines, or a list) frame the body like one; the client gets them as one
/// `content-length` line (DESIGN §8.1), not a list some clients refuse.
#[tokio::test]
async fn repeated_equal_content_lengths_go_out_as_one() {
    const SENT: [&str; 3] = ["5\r\ncontent-length: 5", "5, 5", "5,5\r\nx-between: 1\r\ncontent-length: 5"];
    let up = Upstream::replying(|req| match req.target.strip_prefix("/twice/") {
        Some(i) => {
            keep(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\nhello", SENT[i.parse::<usize>().unwrap()]))
        }
        None => fresh(req),
    })
    .await;
    let gw = gateway(&up).await;
    for (i, sent) in SENT.iter().enumerate() {
        // Read to the close, the head's lines as they came.
        let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
        let request = format!("GET /twice/{i} HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let lengths: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim())
            .collect();
        assert!(head.starts_with("HTTP/1.1 200 "), "sent {sent:?}: {answer:?}");
        assert_eq!((lengths, body), (vec!["5"], "hello"), "sent {sent:?}");
    }
}

/// A `Transfer-Encoding` other than a lone `chunked` (DESIGN §8.1): porteiro
/// sends upstreams no `TE`, so no other transfer coding may come back
/// (RFC 9112 §6.1), and de-chunking one would hand the client bytes it
/// cannot decode (gzip with no header saying so). 502, like nginx, and the
/// connection is dropped.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_502() {
    const CODINGS: [&str; 5] = [
        "gzip, chunked",
        "chunked, gzip",
        "gzip\r\ntransfer-encoding: chunked",
        "chunked\r\ntransfer-encoding: chunked",
        "identity",
    ];
    let gzipped = gzip(b"hello world");
    let chunked_gzip = chunked(&gzipped);
    let up = Upstream::replying(move |req| match req.target.strip_prefix("/coded/") {
        Some(i) => {
            let te = CODINGS[i.parse::<usize>().unwrap()];
            let mut bytes =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: {te}\r\n\r\n").into_bytes();
            bytes.extend_from_slice(&chunked_gzip);
            keep(bytes)
        }
        None => fresh(req),
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    for (i, te) in CODINGS.iter().enumerate() {
        let (status, body) = get(&c, &gw, &format!("/coded/{i}")).await;
        assert_eq!(status, 502, "transfer-encoding {te:?}: {:?}", String::from_utf8_lossy(&body));
        assert_fresh(&c, &gw, &format!("/ok/{i}")).await;
        assert_eq!(up.connections(), i + 2, "transfer-encoding {te:?}: the connection was reused");
    }
}

/// A content coding is the application's business, end to end: a chunked
/// `content-encoding: gzip` answer reaches the client with its header and
/// its bytes as they were, decodable.
#[tokio::test]
async fn a_gzip_content_coding_passes_through() {
    let gzipped = gzip(b"hello world");
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-encoding: gzip\r\n\
                       transfer-encoding: chunked\r\n\r\n"
        .to_vec();
    answer.extend_from_slice(&chunked(&gzipped));
    let up = Upstream::replying(move |_| keep(answer.clone())).await;
    let gw = gateway(&up).await;
    let resp = client().get(gw.url("/zipped")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-encoding").map(|v| v.as_bytes()), Some(&b"gzip"[..]));
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, gzipped);
    use std::io::Read as _;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text, "hello world");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// `data` as a chunked body in two chunks, last chunk included.
fn chunked(data: &[u8]) -> Vec<u8> {
    let (a, b) = data.split_at(data.len() / 2);
    let mut out = Vec::new();
    for piece in [a, b] {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// RFC 9112 §6.3 (3): with both Transfer-Encoding and Content-Length the
/// chunked coding wins; the client gets the de-chunked body, framed by the
/// gateway, never cut or padded to the upstream's Content-Length.
#[tokio::test]
async fn chunked_wins_over_content_length() {
    let up = Upstream::special("/both", || {
        keep("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\nB\r\nhello world\r\n0\r\n\r\n")
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let resp = c.get(gw.url("/both")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let length = resp.headers().get("content-length").map(|v| v.to_str().unwrap().to_string());
    let body = resp.bytes().await;
    assert!(
        matches!(&body, Ok(b) if &b[..] == b"hello world"),
        "content-length sent to the client {length:?}, body {body:?}"
    );
    assert!(matches!(length.as_deref(), None | Some("11")), "content-length sent to the client {length:?}");
}

/// RFC 9112 §6.3 (3): a response with both Transfer-Encoding and
/// Content-Length may be a response-splitting attempt; the connection it
/// came on is not reused.
#[tokio::test]
async fn a_response_with_both_lengths_is_not_reused() {
    let up = Upstream::special("/both", || {
        keep("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 11\r\n\r\nB\r\nhello world\r\n0\r\n\r\n")
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, body) = get(&c, &gw, "/both").await;
    assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
    assert_fresh(&c, &gw, "/next").await;
    assert_eq!(up.connections(), 2, "the connection was reused after a response with both lengths");
}

// === answers that are not HTTP, or not whole ===

/// An upstream answering `/huge` with a head of one `x-huge` header of
/// `bytes` bytes; `fresh` answers to anything else.
async fn huge_head_upstream(bytes: usize) -> Upstream {
    Upstream::special("/huge", move || {
        let mut head = b"HTTP/1.1 200 OK\r\nx-huge: ".to_vec();
        head.resize(head.len() + bytes, b'h');
        head.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
        keep(head)
    })
    .await
}

/// A response head has to fit a bounded buffer: one far past any sane size
/// is a 502, not memory spent, and the gateway goes on serving.
#[tokio::test]
async fn oversized_response_head_is_502() {
    let up = huge_head_upstream(MIB as usize).await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, _) = get(&c, &gw, "/huge").await;
    assert_eq!(status, 502);
    assert_fresh(&c, &gw, "/next").await;
    assert_eq!(up.connections(), 2);
}

/// Response heads get the bound request heads get (`max_header_bytes`,
/// 64 KiB by default): one just past it is a 502.
#[tokio::test]
async fn response_head_over_64_kib_is_502() {
    let up = huge_head_upstream(65 * 1024).await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, _) = get(&c, &gw, "/huge").await;
    assert_eq!(status, 502);
    assert_fresh(&c, &gw, "/next").await;
}

/// Bytes that are not an HTTP/1.1 status line are a 502; the connection
/// they came on is dropped.
#[tokio::test]
async fn garbage_instead_of_a_response_is_502() {
    const GARBAGE: [&str; 3] =
        ["hello\r\n\r\n", "HTTP/1.1 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"];
    let up = Upstream::replying(|req| match req.target.strip_prefix("/garbage/") {
        Some(i) => keep(GARBAGE[i.parse::<usize>().unwrap()]),
        None => fresh(req),
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    for (i, garbage) in GARBAGE.iter().enumerate() {
        let (status, _) = get(&c, &gw, &format!("/garbage/{i}")).await;
        assert_eq!(status, 502, "{garbage:?}");
        assert_fresh(&c, &gw, &format!("/ok/{i}")).await;
        assert_eq!(up.connections(), i + 2, "{garbage:?}: the connection was reused");
    }
}

/// RFC 9112 §8: a body cut short by the upstream closing is incomplete, and
/// the client must be able to tell: it never gets it as a whole answer.
#[tokio::test]
async fn upstream_closing_mid_body_is_not_a_complete_answer() {
    let up = Upstream::special("/cut", || {
        let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[b'x'; 50]);
        then_close(bytes)
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    match c.get(gw.url("/cut")).send().await {
        // The body failed before the gateway's answer went out: it cut the
        // client's connection with nothing sent.
        Err(e) => assert!(e.is_request(), "{e:?}"),
        Ok(resp) => check_cut_answer(resp).await,
    }
    // A new client: the gateway may have cut the last one's connection.
    assert_fresh(&client(), &gw, "/next").await;
    assert_eq!(up.connections(), 2);
}

async fn check_cut_answer(resp: reqwest::Response) {
    match resp.status().as_u16() {
        // The head went out before the body was cut: the client's read
        // must fail (the gateway cuts its connection too).
        200 => {
            let body = resp.bytes().await;
            assert!(body.is_err(), "a truncated body read as complete: {body:?}");
        }
        // Or the gateway noticed before answering.
        502 => {}
        other => panic!("status {other}"),
    }
}

/// What [`post_while_answered`] read back.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// POSTs `len` bytes to `path` on a raw connection: the body is written in
/// the background while the answer is read, and write errors are ignored —
/// a client library may report its failed upload instead of the answer that
/// caused it, which would hide what the gateway sent. `None` when the
/// connection ended without a whole answer; fails after 5 s.
async fn post_while_answered(addr: SocketAddr, path: &str, len: u64) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nhost: app.test\r\ncontent-length: {len}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let upload = tokio::spawn(async move {
        let mut sent = 0;
        while sent < len {
            let n = (64 * 1024).min(len - sent);
            if writer.write_all(&pattern(sent, n as usize)).await.is_err() {
                return;
            }
            sent += n;
        }
    });
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok())?;
                let length: usize =
                    head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap())?;
                if buf.len() >= end + 4 + length {
                    return Some(Answer { status, body: buf[end + 4..end + 4 + length].to_vec() });
                }
            }
            match reader.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), read).await.expect("an answer within 5 s");
    upload.abort();
    answer
}

/// An upstream that answers `/upload` with `413` and `connection: close`
/// as soon as it has the head. `linger`: then it stops writing and reads
/// what comes until the gateway is done, as servers do before closing
/// (RFC 9112 §9.6); without, it closes at once, the body unread (its kernel
/// then resets the connection). Other requests get [`fresh`].
async fn early_answer_upstream(linger: bool) -> Upstream {
    Upstream::start(move |mut conn| async move {
        while let Some((index, mut framing)) = conn.read_head().await {
            let req = conn.received(index);
            if req.target == "/upload" {
                let _ = conn
                    .write(b"HTTP/1.1 413 Content Too Large\r\ncontent-type: text/plain\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large")
                    .await;
                if linger {
                    let _ = conn.stream.shutdown().await;
                    while conn.body_piece(&mut framing).await.is_some() {}
                }
                return;
            }
            while conn.body_piece(&mut framing).await.is_some() {}
            if !conn.write(&fresh(&req).bytes).await {
                return;
            }
        }
    })
    .await
}

/// An upstream may answer before reading the whole request body (RFC 9112
/// §9.5: a client keeps watching for an answer while it sends): the client
/// gets that answer, not a 502, and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_response_reaches_the_client() {
    let up = early_answer_upstream(true).await;
    let gw = gateway(&up).await;
    for _ in 0..3 {
        let answer = post_while_answered(gw.addr(), "/upload", 8 * MIB).await.expect("an answer to the upload");
        assert_eq!((answer.status, &answer.body[..]), (413, &b"too large"[..]), "{answer:?}");
    }
    assert_fresh(&client(), &gw, "/next").await;
}

/// The same early answer from an upstream that resets the connection right
/// after it: whether the answer is read before the reset is up to the
/// kernels, so the client may get the 413 or a 502 — but an answer, soon,
/// and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_response_then_reset_never_hangs() {
    let up = early_answer_upstream(false).await;
    let gw = gateway(&up).await;
    for _ in 0..3 {
        let answer = post_while_answered(gw.addr(), "/upload", 8 * MIB).await.expect("an answer to the upload");
        assert!(matches!(answer.status, 413 | 502), "{answer:?}");
    }
    assert_fresh(&client(), &gw, "/next").await;
}

// === bodies both ways ===

/// Request and response bodies stream at the same time (RFC 9112 §9.5: a
/// server may answer as the request body arrives): the upstream echoes the
/// upload as it reads it, and the client sends its second half only once it
/// has the first half back — any buffering of either body deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_flow_at_the_same_time() {
    const SIZE: u64 = 16 * MIB;
    const CHUNK: u64 = 64 * 1024;
    let up = Upstream::start(|mut conn| async move {
        let Some((_, mut framing)) = conn.read_head().await else { return };
        if !conn
            .write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
        {
            return;
        }
        while let Some(piece) = conn.body_piece(&mut framing).await {
            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
            chunk.extend_from_slice(&piece);
            chunk.extend_from_slice(b"\r\n");
            if !conn.write(&chunk).await {
                return;
            }
        }
        let _ = conn.write(b"0\r\n\r\n").await;
        conn.close().await;
    })
    .await;
    let gw = gateway(&up).await;

    let (echoed_tx, echoed_rx) = tokio::sync::watch::channel(0u64);
    let upload = futures_util::stream::unfold((0u64, echoed_rx), |(offset, mut echoed)| async move {
        if offset >= SIZE {
            return None;
        }
        if offset == SIZE / 2 {
            // The first half must come back before the second goes out.
            echoed.wait_for(|n| *n >= SIZE / 2).await.unwrap();
        }
        let len = CHUNK.min(SIZE - offset);
        Some((Ok::<_, Infallible>(pattern(offset, len as usize)), (offset + len, echoed)))
    });
    let c = client_builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut resp = c.post(gw.url("/echo")).body(reqwest::Body::wrap_stream(upload)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        assert!(is_pattern(received, &chunk), "echo differs in the {} bytes at {received}", chunk.len());
        received += chunk.len() as u64;
        echoed_tx.send_replace(received);
    }
    assert_eq!(received, SIZE);
    let seen = up.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
}

/// Requests are framed toward the upstream as RFC 9112 §6 asks: a known
/// length as Content-Length, an unknown one chunked, no body with neither.
#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream() {
    let up = Upstream::replying(fresh).await;
    let gw = gateway(&up).await;
    let c = client();

    let fixed = pattern(7, 100_000);
    let resp = c.post(gw.url("/fixed")).body(fixed.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    const STREAMED: u64 = 300_000;
    let resp = c.put(gw.url("/streamed")).body(pattern_body(STREAMED)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    assert_fresh(&c, &gw, "/none").await;

    let seen = up.received();
    assert_eq!(seen.len(), 3);
    let (fixed_req, streamed, none) = (&seen[0], &seen[1], &seen[2]);
    assert_eq!((fixed_req.method.as_str(), fixed_req.target.as_str()), ("POST", "/fixed"));
    assert_eq!(fixed_req.header("content-length"), Some("100000"));
    assert_eq!(fixed_req.header("transfer-encoding"), None);
    assert!(fixed_req.body == fixed[..], "fixed-length body corrupted ({} bytes)", fixed_req.body.len());

    assert_eq!((streamed.method.as_str(), streamed.target.as_str()), ("PUT", "/streamed"));
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(streamed.header("content-length"), None);
    assert_eq!(streamed.body.len() as u64, STREAMED);
    assert!(is_pattern(0, &streamed.body), "chunked body corrupted");

    assert_eq!((none.method.as_str(), none.target.as_str()), ("GET", "/none"));
    assert_eq!(none.header("content-length"), None);
    assert_eq!(none.header("transfer-encoding"), None);
    assert!(none.body.is_empty());
    assert_eq!(up.connections(), 1);
}

// === connection reuse ===

/// Response splitting: bytes after a complete response, before any request
/// asked for them, are no answer to the next request. That request gets its
/// own answer from the upstream, never the smuggled `EVIL` one.
#[tokio::test]
async fn unsolicited_second_response_is_not_served_to_the_next_request() {
    let up = Upstream::replying(|req| {
        if req.target.starts_with("/split") {
            let mut bytes = ok("GOOD");
            bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nEVIL");
            keep(bytes)
        } else {
            fresh(req)
        }
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    // Several rounds: the stray bytes may be noticed at different times.
    for round in 0..10 {
        let (status, body) = get(&c, &gw, &format!("/split/{round}")).await;
        assert_eq!((status, &body[..]), (200, &b"GOOD"[..]));
        assert_fresh(&c, &gw, &format!("/next/{round}")).await;
    }
    let seen = up.received();
    assert_eq!(seen.len(), 20, "every request reached the upstream");
    for pair in seen.chunks(2) {
        assert_ne!(
            pair[0].connection, pair[1].connection,
            "{} went on the connection {} left stray bytes on",
            pair[1].target, pair[0].target
        );
    }
}

/// A `101 Switching Protocols` to a request that asked for no upgrade is no
/// valid answer: 502, and that connection (now in an unknown protocol) is
/// dropped.
#[tokio::test]
async fn unsolicited_switching_protocols_is_502() {
    let up = Upstream::special("/switch", || {
        keep("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let (status, _) = get(&c, &gw, "/switch").await;
    assert_eq!(status, 502);
    assert_fresh(&c, &gw, "/next").await;
    assert_eq!(up.connections(), 2);
}

// === header values ===

/// Response header values pass through untouched: repeated `set-cookie`
/// lines each kept and in order, obs-text bytes (RFC 9110 §5.5) as they
/// are, and a long value whole.
#[tokio::test]
async fn response_header_values_pass_through_untouched() {
    let long = "v".repeat(8 * 1024);
    let mut answer = b"HTTP/1.1 200 OK\r\n\
                       set-cookie: a=1; Path=/\r\n\
                       x-between: 1\r\n\
                       set-cookie: b=2; HttpOnly\r\n\
                       set-cookie: c=3\r\n\
                       x-obs: caf\xe9 \xff\x80 end\r\n"
        .to_vec();
    answer.extend_from_slice(format!("x-long: {long}\r\ncontent-length: 2\r\n\r\nok").as_bytes());
    let up = Upstream::replying(move |_| keep(answer.clone())).await;
    let gw = gateway(&up).await;
    let resp = client().get(gw.url("/headers")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers();
    let cookies: Vec<&[u8]> = headers.get_all("set-cookie").iter().map(|v| v.as_bytes()).collect();
    assert_eq!(cookies, [&b"a=1; Path=/"[..], b"b=2; HttpOnly", b"c=3"]);
    assert_eq!(headers.get("x-obs").map(|v| v.as_bytes()), Some(&b"caf\xe9 \xff\x80 end"[..]));
    assert_eq!(headers.get("x-long").map(|v| v.as_bytes()), Some(long.as_bytes()));
    assert_eq!(headers.get("x-between").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(&resp.bytes().await.unwrap()[..], b"ok");
}
