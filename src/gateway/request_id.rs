//! `X-Request-Id` (DESIGN §4): one id per request, the same in the
//! upstream's request, the client's answer and every log line about it.
//! A trusted proxy's id is kept when it is sane; anything else a client
//! sends is replaced by a new one (128 random bits as 32 hex digits).

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use rand::Rng;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept from a trusted proxy.
pub const MAX_LEN: usize = 128;

/// The request's id: the one a trusted proxy sent, when there is exactly
/// one and it is 1 to [`MAX_LEN`] visible ASCII characters; else a new one.
pub fn choose(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(v), None) = (sent.next(), sent.next()) {
            if sane(v.as_bytes()) {
                return v.clone();
            }
        }
    }
    generate()
}

fn sane(v: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&v.len()) && v.iter().all(|b| b.is_ascii_graphic())
}

/// 128 bits from the thread's generator as 32 lower-case hex digits, written
/// into a stack buffer: no formatting machinery per request.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::rng().random();
    let mut out = [0u8; 32];
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn generated(v: &HeaderValue) -> bool {
        v.len() == 32 && v.as_bytes().iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }

    #[test]
    fn kept_only_from_a_trusted_proxy_and_only_when_sane() {
        assert_eq!(choose(&with(&[b"edge-42"]), true), "edge-42");
        assert!(generated(&choose(&with(&[b"edge-42"]), false)));
        let longest = vec![b'a'; MAX_LEN];
        assert_eq!(choose(&with(&[&longest]), true).as_bytes(), &longest[..]);
        let too_long = [b'a'; MAX_LEN + 1];
        for bad in [&too_long[..], b"", b"has space", b"tab\there", "caf\u{e9}".as_bytes()] {
            assert!(generated(&choose(&with(&[bad]), true)), "{bad:?}");
        }
        assert!(generated(&choose(&with(&[b"one", b"two"]), true)));
        assert!(generated(&choose(&HeaderMap::new(), true)));
    }

    #[test]
    fn generated_ids_differ() {
        let (a, b) = (generate(), generate());
        assert!(generated(&a) && generated(&b));
        assert_ne!(a, b);
    }
}
