//! HTTP/1.1 framing for the upstream client (RFC 9112): request heads out,
//! response heads and chunked bodies in. Bytes in, bytes out; the sockets
//! are the parent module's.
//!
//! Strict where leniency would let an upstream desynchronise a pooled
//! connection: a bad or conflicting `Content-Length`, a chunk line without
//! CRLF, a head over [`MAX_HEAD`] are errors, and any message whose end is
//! not certain leaves its connection out of the pool.
//!
//! A `Transfer-Encoding` other than a lone `chunked` is refused as well.
//! porteiro sends upstreams no `TE`, so a server may not use any other
//! transfer coding with it (RFC 9112 §6.1, RFC 9110 §10.1.4); and such a
//! body could not be passed on: de-chunked, a `gzip` transfer coding
//! would reach the client as bytes with nothing saying how to decode them,
//! and HTTP/2 clients have no transfer codings at all. nginx refuses them
//! the same way ("upstream sent unknown Transfer-Encoding", `502`).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Largest response head accepted (status line and header lines).
pub const MAX_HEAD: usize = 64 * 1024;

/// Most header lines accepted in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// Largest trailer section of a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// Most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 32;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies drop.
/// `Upgrade` is one too, except on a message that upgrades.
pub static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Bit `n % 64` is set when a name in [`HOP_BY_HOP`], or `Upgrade`, is `n`
/// bytes long (2, 7, 10, 16, 17, 18, 19): other names are passed over on
/// their length.
pub const HOP_BY_HOP_LENGTHS: u64 = {
    let lengths = [2, 7, 10, 16, 17, 18, 19];
    let mut bits = 0;
    let mut i = 0;
    while i < lengths.len() {
        bits |= 1 << lengths[i];
        i += 1;
    }
    bits
};

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP_LENGTHS & (1 << (name.as_str().len() % 64)) != 0
        && (*name == header::UPGRADE || HOP_BY_HOP.contains(name))
}

/// Why an upstream's answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed response head")]
    Head,
    #[error("response head larger than {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    #[error("invalid or conflicting content-length")]
    ContentLength,
    #[error("transfer-encoding other than a lone chunked")]
    TransferEncoding,
    #[error("malformed chunked body")]
    Chunk,
}

/// How a request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header.
    None,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// `end_stream`: the body is known to be empty; `exact`: its length when
    /// known. Methods that normally carry a body say `content-length: 0`
    /// when they carry none, which some servers require.
    pub fn of(method: &Method, end_stream: bool, exact: Option<u64>) -> RequestFraming {
        if end_stream {
            return if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                RequestFraming::Length(0)
            } else {
                RequestFraming::None
            };
        }
        exact.map_or(RequestFraming::Chunked, RequestFraming::Length)
    }
}

/// Writes a request head into `out` (cleared first). The client's own
/// framing headers are replaced by `framing`'s; the rest go as they are
/// (`HeaderName`/`HeaderValue` cannot hold CR or LF).
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: &crate::proxy::Added,
    framing: RequestFraming,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added.wire());
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A common field name, as 8-byte words to compare a field with at once.
struct Common {
    name: HeaderName,
    len: usize,
    /// The name's lower-case bytes, zero-padded.
    words: [u64; 3],
    /// 0x20 in each byte that is a letter: the only bit a field may have
    /// otherwise there (its upper case).
    letters: [u64; 3],
}

const fn common(text: &str, name: HeaderName) -> Common {
    let bytes = text.as_bytes();
    assert!(bytes.len() <= 24);
    let mut words = [0u64; 3];
    let mut letters = [0u64; 3];
    let mut i = 0;
    while i < bytes.len() {
        words[i / 8] |= (bytes[i] as u64) << (8 * (i % 8));
        if bytes[i].is_ascii_lowercase() {
            letters[i / 8] |= 0x20 << (8 * (i % 8));
        }
        i += 1;
    }
    Common { name, len: bytes.len(), words, letters }
}

/// The field names upstreams send most.
static COMMON_FIELDS: [Common; 16] = [
    common("date", header::DATE),
    common("server", header::SERVER),
    common("content-type", header::CONTENT_TYPE),
    common("content-length", header::CONTENT_LENGTH),
    common("connection", header::CONNECTION),
    common("cache-control", header::CACHE_CONTROL),
    common("set-cookie", header::SET_COOKIE),
    common("location", header::LOCATION),
    common("vary", header::VARY),
    common("etag", header::ETAG),
    common("last-modified", header::LAST_MODIFIED),
    common("content-encoding", header::CONTENT_ENCODING),
    common("transfer-encoding", header::TRANSFER_ENCODING),
    common("expires", header::EXPIRES),
    common("accept-ranges", header::ACCEPT_RANGES),
    common("x-content-type-options", header::X_CONTENT_TYPE_OPTIONS),
];

/// A response field's name. The common ones are matched here, in any case,
/// a word at a time: http's general parse (lower-casing into a buffer, then
/// a search of every standard name) costs several times as much, on every
/// field of every answer. Anything else takes the general way; `None` for
/// no valid name.
fn field_name(bytes: &[u8]) -> Option<HeaderName> {
    if bytes.len() <= 24 {
        let mut padded = [0u8; 24];
        padded[..bytes.len()].copy_from_slice(bytes);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&padded[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let words = [word(0), word(1), word(2)];
        // Equal but for the case bit of letters: the same name.
        let same = |c: &Common| (0..3).all(|i| (words[i] ^ c.words[i]) & !c.letters[i] == 0);
        if let Some(c) = COMMON_FIELDS.iter().find(|c| c.len == bytes.len() && same(c)) {
            return Some(c.name.clone());
        }
    }
    HeaderName::from_bytes(bytes).ok()
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// None at all: `HEAD`, `1xx`, `204`, `304`, or a zero length.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyKind,
    /// The connection may carry another request once this body has ended.
    pub reusable: bool,
}

/// Parses the response head at the start of `input`: `Ok(None)` while it is
/// incomplete, else the head and its length in bytes. Header values share
/// `input`'s memory. `head_request`: the answer is to `HEAD`, so it has no body.
///
/// The head comes back without its hop-by-hop fields, nor those its
/// `Connection` names, except on a `101`, whose `Connection` and `Upgrade`
/// the client needs.
pub fn parse_response_head(input: &Bytes, head_request: bool) -> Result<Option<(usize, Head)>, ParseError> {
    // Uninitialised: filling 100 empty fields costs more than the parse.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, input, &mut fields);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => return Err(ParseError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadTooLarge),
        Err(_) => return Err(ParseError::Head),
    };
    if len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
    }
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(ParseError::Head)?;
    let version = if resp.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;

    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    // The Content-Length value kept is the upstream's own bytes, unless it
    // came as a list (`5, 5`) or on several lines: then it goes out once.
    let mut length_as_sent = true;
    let mut transfer_encoding = false;
    // HTTP/1.0 keep-alive is an opt-in few servers still use: not pooled.
    let mut close = version == Version::HTTP_10;
    // Fields `Connection` names as hop-by-hop (rare).
    let mut listed: Vec<HeaderName> = Vec::new();
    for field in resp.headers.iter() {
        let name = field_name(field.name.as_bytes()).ok_or(ParseError::Head)?;
        if name == header::CONTENT_LENGTH {
            let n = parse_content_length(field.value).ok_or(ParseError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::ContentLength);
            }
            if length.is_some() || field.value.contains(&b',') {
                length_as_sent = false;
            }
            if length.is_some() {
                continue;
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // One `chunked`, nothing else (see the module docs); a second
            // line would make a list, `chunked` applied twice at best.
            if transfer_encoding || !field.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ParseError::TransferEncoding);
            }
            transfer_encoding = true;
        } else if name == header::CONNECTION {
            for token in field.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"upgrade") {
                    listed.extend(HeaderName::from_bytes(token).ok());
                }
            }
        }
        if !switching && is_hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(input.slice_ref(field.value)).map_err(|_| ParseError::Head)?;
        headers.append(name, value);
    }
    for name in listed {
        headers.remove(name);
    }
    if let (Some(n), false) = (length, length_as_sent) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }

    let body = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        BodyKind::Empty
    } else if transfer_encoding {
        BodyKind::Chunked
    } else {
        match length {
            Some(0) => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::Close,
        }
    };
    if transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), but a
        // message with both may be a smuggling attempt: answer it, then
        // close the connection.
        if length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            close = true;
        }
        if version == Version::HTTP_10 {
            close = true;
        }
    }
    let reusable = !close && body != BodyKind::Close;
    Ok(Some((len, Head { status, headers, body, reusable })))
}

/// Whether `buf` may hold a whole response head: it has an empty line, or
/// is too long for one (the parser then says so).
pub fn may_hold_head(buf: &[u8]) -> bool {
    buf.len() > MAX_HEAD || has_empty_line(buf)
}

/// A line end followed by an empty line, however the lines end.
fn has_empty_line(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

/// A Content-Length value: digits only; a list of equal values (`5, 5`)
/// counts as one.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// What the chunked decoder made of its input so far.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// More bytes are needed; nothing was consumed past a whole element.
    NeedMore,
}

/// Decodes a chunked body (RFC 9112 §7.1) incrementally.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Whether `buf` may hold the element the decoder waits for: without
    /// it, [`decode`](Self::decode) would only say `NeedMore` again.
    pub fn may_hold_element(&self, buf: &[u8]) -> bool {
        match self.state {
            ChunkState::Size => buf.len() >= MAX_CHUNK_LINE || buf.contains(&b'\n'),
            ChunkState::DataEnd => buf.len() >= 2,
            ChunkState::Trailers => {
                buf.len() > MAX_TRAILERS || buf.starts_with(b"\r\n") || buf.starts_with(b"\n") || has_empty_line(buf)
            }
            ChunkState::Data(_) | ChunkState::Done => true,
        }
    }

    /// Consumes what it can from the front of `input`.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Chunk, ParseError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let window = &input[..input.len().min(MAX_CHUNK_LINE)];
                    let Some(end) = window.iter().position(|b| *b == b'\n') else {
                        return if input.len() >= MAX_CHUNK_LINE {
                            Err(ParseError::Chunk)
                        } else {
                            Ok(Chunk::NeedMore)
                        };
                    };
                    let size = parse_chunk_line(&input[..end])?;
                    input.advance(end + 1);
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if input.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let data = input.split_to(take);
                    let left = left - take as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                    return Ok(Chunk::Data(data));
                }
                ChunkState::DataEnd => {
                    if input.len() < 2 {
                        return Ok(Chunk::NeedMore);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(ParseError::Chunk);
                    }
                    input.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                    let (len, trailers) = match httparse::parse_headers(input, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut map = HeaderMap::new();
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ParseError::Chunk)?;
                                let value = HeaderValue::from_bytes(f.value).map_err(|_| ParseError::Chunk)?;
                                map.append(name, value);
                            }
                            (len, map)
                        }
                        Ok(httparse::Status::Partial) if input.len() > MAX_TRAILERS => return Err(ParseError::Chunk),
                        Ok(httparse::Status::Partial) => return Ok(Chunk::NeedMore),
                        Err(_) => return Err(ParseError::Chunk),
                    };
                    input.advance(len);
                    self.state = ChunkState::Done;
                    if !trailers.is_empty() {
                        return Ok(Chunk::Trailers(trailers));
                    }
                }
                ChunkState::Done => return Ok(Chunk::End),
            }
        }
    }
}

/// `line` is a chunk-size line up to (not including) its LF: hex digits,
/// optional extensions (ignored), then CR.
fn parse_chunk_line(line: &[u8]) -> Result<u64, ParseError> {
    let line = line.strip_suffix(b"\r").ok_or(ParseError::Chunk)?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // 15 hex digits keep the size within u64 with room to spare.
    if digits == 0 || digits > 15 {
        return Err(ParseError::Chunk);
    }
    let rest = &line[digits..];
    if !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) || rest.contains(&b'\r') {
        return Err(ParseError::Chunk);
    }
    let size = line[..digits].iter().fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n << 4 | u64::from(v)
    });
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry's words spell its own name (a text given for another
    /// name would otherwise go unnoticed: http's parse finds every name).
    #[test]
    fn common_fields_spell_their_names() {
        for c in &COMMON_FIELDS {
            let bytes: Vec<u8> = c.words.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(&bytes[..c.len], c.name.as_str().as_bytes());
            assert!(bytes[c.len..].iter().all(|b| *b == 0), "{}: padded with zeros", c.name);
            let letters: Vec<u8> = c.letters.iter().flat_map(|w| w.to_le_bytes()).collect();
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(letters[i], if b.is_ascii_lowercase() { 0x20 } else { 0 }, "{} at {i}", c.name);
            }
        }
    }

    #[test]
    fn common_field_names_match_the_general_parse() {
        for c in &COMMON_FIELDS {
            let (text, name) = (c.name.as_str(), &c.name);
            assert_eq!(HeaderName::from_bytes(text.as_bytes()).ok().as_ref(), Some(name), "{text}");
            let upper = text.to_ascii_uppercase();
            let mixed: String =
                text.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
            for variant in [text.to_string(), upper, mixed] {
                assert_eq!(field_name(variant.as_bytes()).as_ref(), Some(name), "{variant}");
            }
            // Same length, one byte off: not this name.
            let mut off = text.as_bytes().to_vec();
            off[0] = b'_';
            assert_ne!(field_name(&off).as_ref(), Some(name));
        }
        assert_eq!(field_name(b"X-Custom"), Some(HeaderName::from_static("x-custom")));
        assert_eq!(field_name(b"bad name"), None);
        assert_eq!(field_name(b""), None);
    }

    proptest::proptest! {
        #[test]
        fn field_names_agree_with_http(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30)) {
            proptest::prop_assert_eq!(field_name(&bytes), HeaderName::from_bytes(&bytes).ok());
        }

        #[test]
        fn near_common_names_agree_with_http(i in 0..COMMON_FIELDS.len(), at in 0..24usize, byte in proptest::prelude::any::<u8>()) {
            let mut near = COMMON_FIELDS[i].name.as_str().as_bytes().to_vec();
            let at = at % near.len();
            near[at] = byte;
            proptest::prop_assert_eq!(field_name(&near), HeaderName::from_bytes(&near).ok());
        }

        #[test]
        fn cased_common_names_agree_with_http(i in 0..COMMON_FIELDS.len(), mask in proptest::prelude::any::<u32>()) {
            let cased: Vec<u8> = COMMON_FIELDS[i].name.as_str().bytes().enumerate()
                .map(|(k, b)| if mask >> (k % 32) & 1 == 1 { b.to_ascii_uppercase() } else { b })
                .collect();
            proptest::prop_assert_eq!(field_name(&cased), HeaderName::from_bytes(&cased).ok());
        }
    }

    fn head(text: &str, head_request: bool) -> Result<Option<(usize, Head)>, ParseError> {
        parse_response_head(&Bytes::from(text.to_string()), head_request)
    }

    fn complete(text: &str) -> Head {
        head(text, false).unwrap().unwrap().1
    }

    #[test]
    fn request_head_replaces_the_client_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("up.test"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut added = crate::proxy::Added::default();
        added.push(&HeaderName::from_static("x-request-id"), &HeaderValue::from_static("abc"));
        // A framing header among porteiro's own is dropped all the same.
        added.push(&header::TRANSFER_ENCODING, &HeaderValue::from_static("chunked"));
        added.push(&HeaderName::from_static("x-forwarded-user"), &HeaderValue::from_static("ana"));
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::POST, "/p?q=1", &h, &added, RequestFraming::Length(12));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: up.test\r\nx-a: 1\r\nx-a: 2\r\n\
             x-request-id: abc\r\nx-forwarded-user: ana\r\ncontent-length: 12\r\n\r\n"
        );
        let none = crate::proxy::Added::default();
        encode_request_head(&mut out, &Method::GET, "/", &HeaderMap::new(), &none, RequestFraming::Chunked);
        assert_eq!(out, b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn request_framing_by_method_and_body() {
        assert_eq!(RequestFraming::of(&Method::GET, true, Some(0)), RequestFraming::None);
        assert_eq!(RequestFraming::of(&Method::POST, true, Some(0)), RequestFraming::Length(0));
        assert_eq!(RequestFraming::of(&Method::PUT, false, Some(7)), RequestFraming::Length(7));
        assert_eq!(RequestFraming::of(&Method::POST, false, None), RequestFraming::Chunked);
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_fail() {
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le", false).unwrap().is_none());
        let big = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&big, false).unwrap_err(), ParseError::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).unwrap_err(), ParseError::HeadTooLarge);
        assert_eq!(head("hello\r\n\r\n", false).unwrap_err(), ParseError::Head);
    }

    #[test]
    fn body_kinds() {
        let h = complete("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!((h.body, h.reusable), (BodyKind::Length(2), true));
        assert_eq!(h.headers["content-length"], "2");
        let (len, h) = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", true).unwrap().unwrap();
        assert_eq!((len, h.body, h.reusable), (38, BodyKind::Empty, true));
        for status in [100, 103, 204, 304] {
            let h = complete(&format!("HTTP/1.1 {status} X\r\ncontent-length: 5\r\n\r\n"));
            assert_eq!(h.body, BodyKind::Empty, "{status}");
        }
        let h = complete("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked \r\n\r\n");
        assert_eq!((h.body, h.reusable), (BodyKind::Chunked, true));
        let h = complete("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.body, h.reusable), (BodyKind::Close, false));
        let h = complete("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 1\r\n\r\n");
        assert_eq!((h.body, h.reusable), (BodyKind::Length(1), false));
        let h = complete("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n");
        assert_eq!((h.body, h.reusable), (BodyKind::Length(1), false));
    }

    #[test]
    fn transfer_encoding_beats_content_length_and_ends_the_connection() {
        let h = complete("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.body, h.reusable), (BodyKind::Chunked, false));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn hop_by_hop_fields_go_except_on_101() {
        let text = "HTTP/1.1 200 OK\r\nconnection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\nx-hop: 1\r\n\
                    upgrade: h2c\r\ntrailer: x-sum\r\nx-keep: 1\r\ncontent-length: 0\r\n\r\n";
        let h = complete(text);
        let mut names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-keep"]);
        assert!(h.reusable);
        let h = complete("HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n");
        assert_eq!(h.headers["connection"], "Upgrade");
        assert_eq!(h.headers["upgrade"], "websocket");
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::CONTENT_LENGTH));
    }

    #[test]
    fn content_length_must_be_digits_and_agree() {
        for bad in ["abc", "-1", "+5", "5 5", "", "1, 2", "99999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(head(&text, false).unwrap_err(), ParseError::ContentLength, "{bad:?}");
        }
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n";
        assert_eq!(head(text, false).unwrap_err(), ParseError::ContentLength);
    }

    #[test]
    fn repeated_equal_content_lengths_become_one() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5,5\r\ncontent-length: 5\r\n\r\n",
        ] {
            let h = complete(text);
            assert_eq!(h.body, BodyKind::Length(5), "{text:?}");
            let values: Vec<_> = h.headers.get_all(header::CONTENT_LENGTH).iter().collect();
            assert_eq!(values, ["5"], "{text:?}");
        }
        // A lone value keeps the upstream's bytes.
        let h = complete("HTTP/1.1 200 OK\r\ncontent-length: 007\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(7));
        assert_eq!(h.headers[header::CONTENT_LENGTH], "007");
    }

    #[test]
    fn transfer_codings_other_than_a_lone_chunked_are_refused() {
        for te in [
            "gzip, chunked",
            "chunked, gzip",
            "gzip",
            "identity",
            "chunked, chunked",
            "chunked\r\ntransfer-encoding: chunked",
            "gzip\r\ntransfer-encoding: chunked",
            "chunked;q=1",
            "",
        ] {
            for status in ["200 OK", "204 No Content"] {
                let text = format!("HTTP/1.1 {status}\r\ntransfer-encoding: {te}\r\n\r\n");
                assert_eq!(head(&text, false).unwrap_err(), ParseError::TransferEncoding, "{te:?} on {status}");
            }
        }
    }

    #[test]
    fn header_values_keep_their_bytes_and_order() {
        let text = b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nx-obs: caf\xe9\r\n\r\n";
        let (_, h) = parse_response_head(&Bytes::from_static(text), false).unwrap().unwrap();
        let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.headers["x-obs"].as_bytes(), b"caf\xe9");
    }

    fn decode_all(wire: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ParseError> {
        let mut dec = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut input = Bytes::new();
        let mut rest = wire;
        loop {
            match dec.decode(&mut input)? {
                Chunk::Data(d) => body.extend_from_slice(&d),
                Chunk::Trailers(t) => trailers = Some(t),
                Chunk::End => return Ok((body, trailers)),
                Chunk::NeedMore => {
                    if rest.is_empty() {
                        return Err(ParseError::Chunk);
                    }
                    let n = split.min(rest.len());
                    let mut joined = input.to_vec();
                    joined.extend_from_slice(&rest[..n]);
                    input = Bytes::from(joined);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\nA \r\n0123456789\r\n0\r\nx-sum: 42\r\n\r\n";
        for split in [1, 2, 3, 7, 64] {
            let (body, trailers) = decode_all(wire, split).unwrap();
            assert_eq!(body, b"hello, world0123456789", "split {split}");
            assert_eq!(trailers.unwrap()["x-sum"], "42");
        }
        let (body, trailers) = decode_all(b"0\r\n\r\n", 1).unwrap();
        assert!(body.is_empty() && trailers.is_none());
    }

    /// The readers only parse once these say an element may be complete:
    /// they must say so whenever the parser would find one.
    #[test]
    fn completeness_checks_never_hold_back_a_whole_element() {
        let heads = ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok", "HTTP/1.1 204 No\n\n"];
        for text in heads {
            for end in 0..=text.len() {
                let prefix = &text.as_bytes()[..end];
                if head(&text[..end], false).is_ok_and(|h| h.is_some()) {
                    assert!(may_hold_head(prefix), "{:?}", &text[..end]);
                }
            }
        }
        let wire = b"5;ext=1\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n";
        for trailers in [&wire[..], b"3\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\n\n"] {
            // Bytes arrive one at a time; the decoder sees them only once
            // its check passes, as the reader does it.
            let mut dec = ChunkedDecoder::default();
            let mut pending = Vec::new();
            let mut body = Vec::new();
            let mut ended = false;
            for &b in trailers {
                pending.push(b);
                if !dec.may_hold_element(&pending) {
                    continue;
                }
                let mut input = Bytes::from(std::mem::take(&mut pending));
                loop {
                    match dec.decode(&mut input).unwrap() {
                        Chunk::Data(d) => body.extend_from_slice(&d),
                        Chunk::Trailers(_) => {}
                        Chunk::End => ended = true,
                        // What is left is the start of the next element.
                        Chunk::NeedMore => break,
                    }
                    if ended {
                        break;
                    }
                }
                pending = input.to_vec();
            }
            assert!(ended, "{:?}", String::from_utf8_lossy(trailers));
            assert!(body == b"hello" || body == b"abc");
        }
    }

    #[test]
    fn malformed_chunks_fail() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"g\r\n",
            b"\r\n",
            b"5x\r\nhello\r\n",
            b"1000000000000000\r\n",
        ] {
            assert_eq!(decode_all(bad, 64).unwrap_err(), ParseError::Chunk, "{:?}", String::from_utf8_lossy(bad));
        }
        let long_line = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(decode_all(&long_line, MAX_CHUNK_LINE * 2).unwrap_err(), ParseError::Chunk);
    }
}
