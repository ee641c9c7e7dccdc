//! The canonical request (DESIGN §8.1 "One request, one meaning"): the host
//! and path porteiro decides on, computed once at the start of the request
//! path. Route choice, `public_paths`, `allow` rules, forward-auth and the
//! request the upstream receives are all derived from a [`Target`]; nothing
//! later re-reads the raw `Host` or request target to decide.
//!
//! A request whose host or path could be read two ways is refused here
//! (`400`), never fixed up in a way the upstream might not share.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Request, Version};

use crate::path::{self, Normalized};

/// Why a request has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An HTTP/1.1 request without `Host`.
    NoHost,
    /// Several `Host` lines.
    SeveralHosts,
    /// A `Host` (or authority) that is not a plain `host[:port]`.
    BadHost,
    /// An absolute-form target or `:authority` naming another host than `Host`.
    HostMismatch,
    /// A path that is not a normalisable absolute path.
    BadPath,
}

impl Refusal {
    /// The reason logged and counted (`rejected_total{reason}`).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoHost => "no_host",
            Refusal::SeveralHosts => "several_hosts",
            Refusal::BadHost => "bad_host",
            Refusal::HostMismatch => "host_mismatch",
            Refusal::BadPath => "bad_path",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoHost => "The request has no Host header.",
            Refusal::SeveralHosts => "The request has several Host headers.",
            Refusal::BadHost => "The request's host is malformed.",
            Refusal::HostMismatch => "The request names two different hosts.",
            Refusal::BadPath => "The request path is malformed.",
        }
    }
}

/// The host and path a request is judged on, and sent upstream with.
#[derive(Debug)]
pub struct Target<'a> {
    /// `host[:port]` as received, validated. Routes match it ignoring case,
    /// port and a trailing dot.
    host: Option<&'a str>,
    /// The same host as a header value, for `Host` and `X-Forwarded-Host`.
    host_value: Option<HeaderValue>,
    norm: Normalized<'a>,
    query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The canonical form of a request from a client: its host is the
    /// absolute-form target's (or HTTP/2 `:authority`'s) authority, else its
    /// one `Host` line; the two must agree when both are present.
    pub fn of_request<B>(req: &'a Request<B>) -> Result<Target<'a>, Refusal> {
        let mut lines = req.headers().get_all(header::HOST).iter();
        let host_line = lines.next();
        if lines.next().is_some() {
            return Err(Refusal::SeveralHosts);
        }
        let host_header = match host_line {
            Some(v) => Some(std::str::from_utf8(v.as_bytes()).ok().filter(|h| valid_host(h)).ok_or(Refusal::BadHost)?),
            None => None,
        };
        let (host, host_value) = match req.uri().authority() {
            Some(authority) => {
                let a = authority.as_str();
                if !valid_host(a) {
                    return Err(Refusal::BadHost);
                }
                if host_header.is_some_and(|h| !h.eq_ignore_ascii_case(a)) {
                    return Err(Refusal::HostMismatch);
                }
                // The Host line's bytes when there is one (they are the
                // same name): no copy.
                let value = match host_line {
                    Some(v) => Some(v.clone()),
                    None => Some(HeaderValue::from_str(a).map_err(|_| Refusal::BadHost)?),
                };
                (Some(a), value)
            }
            None if host_header.is_none() && req.version() == Version::HTTP_11 => return Err(Refusal::NoHost),
            None => (host_header, host_line.cloned()),
        };
        let norm = path::normalize(req.uri().path()).map_err(|_| Refusal::BadPath)?;
        Ok(Target { host, host_value, norm, query: req.uri().query() })
    }

    /// The canonical form of a URL named by other means (a forward-auth
    /// caller's headers), under the same rules.
    pub fn of_parts(host: Option<&'a str>, path: &'a str, query: Option<&'a str>) -> Result<Target<'a>, Refusal> {
        let host_value = match host {
            Some(h) if valid_host(h) => Some(HeaderValue::from_str(h).map_err(|_| Refusal::BadHost)?),
            Some(_) => return Err(Refusal::BadHost),
            None => None,
        };
        let norm = path::normalize(path).map_err(|_| Refusal::BadPath)?;
        Ok(Target { host, host_value, norm, query })
    }

    pub fn host(&self) -> Option<&str> {
        self.host
    }

    /// The normalised path: the one sent upstream.
    pub fn path(&self) -> &str {
        &self.norm.path
    }

    /// The path routes and `public_paths` are matched on: [`Target::path`]
    /// without `;params` (see [`crate::path`]).
    pub fn decision_path(&self) -> Cow<'_, str> {
        self.norm.decision()
    }

    pub fn query(&self) -> Option<&str> {
        self.query
    }

    /// The path holds `%2F` or `%5C`.
    pub fn encoded_slash(&self) -> bool {
        self.norm.encoded_slash
    }

    /// The path holds `;` or `%3B`.
    pub fn semicolon(&self) -> bool {
        self.norm.semicolon || self.norm.encoded_semicolon
    }

    /// `path?query` to come back to after a login.
    pub fn return_path(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path()),
            None => self.path().to_string(),
        }
    }

    /// What the upstream receives: the host (for `Host` and
    /// `X-Forwarded-Host`) and the normalised path when it differs from the
    /// request's own.
    pub fn into_upstream(self) -> (Option<HeaderValue>, Option<String>) {
        let rewritten = match self.norm.path {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        };
        (self.host_value, rewritten)
    }
}

/// Is `s` a plain `host[:port]`: a name of letters, digits, `-`, `.`, `_`
/// and `~`, or a bracketed IPv6 literal, then an optional decimal port? No
/// userinfo, path, whitespace, `\`, `%` or bytes outside ASCII.
pub fn valid_host(s: &str) -> bool {
    let (name_ok, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inner, port)) => {
                (!inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'), port)
            }
            None => return false,
        },
        None => {
            let (name, port) = s.find(':').map_or((s, ""), |i| s.split_at(i));
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            (ok, port)
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            (1..=5).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u32>().is_ok_and(|p| p <= 65535)
        }
    };
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(lines: &[(&str, &[u8])], uri: &str, version: Version) -> Result<(Option<String>, String), Refusal> {
        let mut b = Request::builder().uri(uri).version(version);
        for (n, v) in lines {
            b = b.header(*n, HeaderValue::from_bytes(v).unwrap_or(HeaderValue::from_static("x")));
        }
        let req = b.body(()).map_err(|_| Refusal::BadPath)?;
        let t = Target::of_request(&req)?;
        Ok((t.host().map(str::to_string), t.path().to_string()))
    }

    #[test]
    fn hosts() {
        for ok in ["a", "example.com", "Example.COM.", "a-b_c.d:8080", "[::1]", "[::1]:443", "127.0.0.1:1", "x:65535"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "", ":80", "a:", "a:65536", "a:123456", "a:8o", "u@a", "a/b", "a\\b", "a b", "a\tb", "ä.com", "a%2e",
            "[::1", "[]", "[::1]x", "[::1]:", "a:1:2", "[g::1]",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn host_rules() {
        let h11 = Version::HTTP_11;
        assert_eq!(target(&[("host", b"a.test")], "/x", h11), Ok((Some("a.test".into()), "/x".into())));
        assert_eq!(target(&[], "/x", h11), Err(Refusal::NoHost));
        assert_eq!(target(&[], "/x", Version::HTTP_10), Ok((None, "/x".into())));
        assert_eq!(target(&[("host", b"a.test"), ("host", b"a.test")], "/x", h11), Err(Refusal::SeveralHosts));
        assert_eq!(target(&[("host", b"a.test\xff")], "/x", h11), Err(Refusal::BadHost));
        assert_eq!(target(&[("host", b"admin.test")], "http://public.test/x", h11), Err(Refusal::HostMismatch));
        assert_eq!(
            target(&[("host", b"PUBLIC.test")], "http://public.test/x", h11),
            Ok((Some("public.test".into()), "/x".into()))
        );
        assert_eq!(target(&[], "http://u@public.test/x", h11), Err(Refusal::BadHost));
        assert_eq!(target(&[("host", b"a")], "/a/%00", h11), Err(Refusal::BadPath));
        assert_eq!(target(&[("host", b"a")], "//admin//x", h11), Ok((Some("a".into()), "/admin/x".into())));
    }
}
