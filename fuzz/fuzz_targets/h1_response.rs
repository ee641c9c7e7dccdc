//! An upstream's HTTP/1.1 answer, read as porteiro's upstream client reads
//! it: never a panic, and the same bytes arriving in any sizes of reads give
//! the same outcome as arriving at once (the heads, the body bytes, the
//! trailers, how it ended and what was left after it).
//!
//! One difference is allowed: bytes that break the framing and are never
//! followed by the end of their element (a head's empty line, a trailer
//! section's) are a parse error when they arrive at once, but "the upstream
//! closed mid-answer" when the reader was still waiting for that end. Both
//! fail the answer (502) and the connection, so both count as one outcome.
//!
//! Input: a flags byte (bit 0: the answer is to `HEAD`; bits 1-2: the
//! largest read), two bytes seeding the read sizes, then the wire bytes.

#![no_main]

use bytes::{Buf, Bytes};
use libfuzzer_sys::fuzz_target;
use porteiro::fuzzing::{BodyKind, Chunk, ChunkedDecoder, may_hold_head, parse_response_head};

/// The reads, in order; then the end of the stream.
struct Reads<'a> {
    wire: &'a [u8],
    sizes: Option<(u32, usize)>,
}

impl<'a> Reads<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.wire.is_empty() {
            return None;
        }
        let n = match &mut self.sizes {
            None => self.wire.len(),
            Some((state, max)) => {
                // xorshift32: cheap, and the same seed gives the same reads.
                *state ^= *state << 13;
                *state ^= *state >> 17;
                *state ^= *state << 5;
                1 + *state as usize % *max
            }
        };
        let (read, rest) = self.wire.split_at(n.min(self.wire.len()));
        self.wire = rest;
        Some(read)
    }
}

/// The reader's buffer: what was read and not consumed yet.
struct Conn<'a> {
    reads: Reads<'a>,
    input: Bytes,
}

impl Conn<'_> {
    /// Reads more, as the client does: bytes after an unfinished element
    /// are gathered until `enough` says it may be complete. `false` at the
    /// end of the stream.
    fn fill(&mut self, enough: impl Fn(&[u8]) -> bool) -> bool {
        let mut buf = self.input.to_vec();
        let gathering = !buf.is_empty();
        loop {
            let Some(read) = self.reads.next() else {
                self.input = Bytes::from(buf);
                return false;
            };
            buf.extend_from_slice(read);
            if !gathering || enough(&buf) {
                self.input = Bytes::from(buf);
                return true;
            }
        }
    }

    fn rest(mut self) -> Vec<u8> {
        let mut rest = self.input.to_vec();
        while let Some(read) = self.reads.next() {
            rest.extend_from_slice(read);
        }
        rest
    }
}

/// Everything observable about one answer, as text to compare.
fn read(wire: &[u8], head_request: bool, sizes: Option<(u32, usize)>) -> Vec<String> {
    let mut conn = Conn { reads: Reads { wire, sizes }, input: Bytes::new() };
    let mut seen = Vec::new();
    let head = loop {
        if !conn.input.is_empty() {
            match parse_response_head(&conn.input, head_request) {
                Ok(Some((len, head))) => {
                    assert!(len <= conn.input.len(), "head length {len} past the input");
                    conn.input.advance(len);
                    seen.push(format!("head {len}: {head:?}"));
                    if head.status.is_informational() && head.status != 101 {
                        continue;
                    }
                    break head;
                }
                Ok(None) => {}
                Err(_) => {
                    seen.push("no head".into());
                    return seen;
                }
            }
        }
        if !conn.fill(may_hold_head) {
            seen.push("no head".into());
            return seen;
        }
    };
    let mut body = Vec::new();
    match head.body {
        BodyKind::Empty => {}
        BodyKind::Length(mut left) => loop {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(conn.input.len());
            body.extend_from_slice(&conn.input.split_to(n));
            left -= n as u64;
            if left == 0 {
                break;
            }
            if !conn.fill(|_| true) {
                seen.push(format!("ended {left} bytes short"));
                break;
            }
        },
        BodyKind::Close => {
            let rest = conn.rest();
            seen.push(format!("body {:?}", String::from_utf8_lossy(&rest)));
            return seen;
        }
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                let before = conn.input.len();
                match decoder.decode(&mut conn.input) {
                    Ok(Chunk::Data(data)) => {
                        assert!(!data.is_empty(), "an empty data chunk");
                        body.extend_from_slice(&data);
                    }
                    Ok(Chunk::Trailers(trailers)) => {
                        seen.push(format!("trailers {trailers:?}"));
                        break;
                    }
                    Ok(Chunk::End) => break,
                    Ok(Chunk::NeedMore) => {
                        assert!(conn.input.len() <= before, "the decoder grew its input");
                        if !conn.fill(|b| decoder.may_hold_element(b)) {
                            seen.push(format!("chunks failed after {:?}", String::from_utf8_lossy(&body)));
                            return seen;
                        }
                    }
                    Err(_) => {
                        seen.push(format!("chunks failed after {:?}", String::from_utf8_lossy(&body)));
                        return seen;
                    }
                }
            }
        }
    }
    seen.push(format!("body {:?}", String::from_utf8_lossy(&body)));
    seen.push(format!("left {:?}", String::from_utf8_lossy(&conn.rest())));
    seen
}

fuzz_target!(|data: &[u8]| {
    let [flags, s0, s1, wire @ ..] = data else { return };
    let head_request = flags & 1 != 0;
    let max = [1, 7, 64, 4096][usize::from(flags >> 1 & 3)];
    // xorshift32 needs a non-zero state.
    let seed = (u32::from(*s0) << 8 | u32::from(*s1)) | 1 << 16;
    let whole = read(wire, head_request, None);
    let split = read(wire, head_request, Some((seed, max)));
    assert_eq!(whole, split, "read whole vs. in reads of at most {max} bytes");
});
