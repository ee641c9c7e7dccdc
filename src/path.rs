//! Request path normalisation (DESIGN §8.1).
//!
//! The path that picks the route and decides "public or protected" is the
//! path sent upstream. It is normalised once, the way the servers behind
//! porteiro read paths, so that none of them can find another path in it:
//! - percent-encoded unreserved characters are decoded (`%2e` is `.`);
//!   other escapes are kept, upper-cased;
//! - empty segments are merged (`//` is `/`: nginx and Tomcat merge them);
//! - dot segments are resolved (RFC 3986 §5.2.4), and a segment whose name
//!   before a `;` is a dot is one too (`..;` is `..` to Tomcat, Jetty and
//!   Spring, which drop `;params` before resolving);
//! - raw bytes outside ASCII are kept exactly as received.
//!
//! Encoded NUL, a raw `\` and bad escapes are refused. Encoded `/` and `\`
//! and any `;` (raw or encoded) are reported for the route to decide: a `;`
//! is refused unless the route sets `allow_semicolons`, and then the route is
//! chosen on the path without its `;params` ([`Normalized::decision`]), as
//! those servers will read it.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path, a bad `%` escape, an encoded NUL or a raw backslash.
    Malformed,
}

/// A normalised path.
#[derive(Debug, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// The path sent upstream.
    pub path: Cow<'a, str>,
    /// It still holds `%2F` or `%5C`.
    pub encoded_slash: bool,
    /// It holds a raw `;` (path parameters).
    pub semicolon: bool,
    /// It holds `%3B`.
    pub encoded_semicolon: bool,
}

impl Normalized<'_> {
    /// The path without `;params`, as servers that drop them read it: what
    /// routes and `public_paths` are matched on. The path itself when it
    /// holds no `;`.
    pub fn decision(&self) -> Cow<'_, str> {
        if !self.semicolon {
            return Cow::Borrowed(self.path.as_ref());
        }
        // `/;x/admin` is `//admin` to them, so `/admin`: a segment that is
        // all parameters is merged like an empty one.
        let segments: Vec<&str> = self.path[1..].split('/').collect();
        let last = segments.len() - 1;
        let mut out = String::with_capacity(self.path.len());
        for (i, seg) in segments.iter().enumerate() {
            let name = segment_name(seg);
            if name.is_empty() && i != last {
                continue;
            }
            out.push('/');
            out.push_str(name);
        }
        Cow::Owned(out)
    }
}

/// Normalises an origin-form path (no query).
pub fn normalize(path: &str) -> Result<Normalized<'_>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    // One pass decides whether anything needs doing: most paths hold no
    // escape, no `;`, no empty or dot segment, and are borrowed as they are.
    let mut semicolon = false;
    let mut slow = false;
    let mut prev = 0u8;
    for &b in bytes {
        match b {
            b'\\' => return Err(PathError::Malformed),
            b'%' => slow = true,
            b';' => semicolon = true,
            b'/' | b'.' if prev == b'/' => slow = true,
            _ => {}
        }
        prev = b;
    }
    if !slow {
        return Ok(Normalized { path: Cow::Borrowed(path), encoded_slash: false, semicolon, encoded_semicolon: false });
    }
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut encoded_slash = false;
    let mut encoded_semicolon = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) else {
            return Err(PathError::Malformed);
        };
        let c = h << 4 | l;
        match c {
            0 => return Err(PathError::Malformed),
            b'/' | b'\\' => {
                encoded_slash = true;
                push_escape(&mut decoded, c);
            }
            b';' => {
                encoded_semicolon = true;
                push_escape(&mut decoded, c);
            }
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => decoded.push(c),
            c => push_escape(&mut decoded, c),
        }
        i += 3;
    }
    // Only ASCII was replaced by ASCII: the bytes are still UTF-8.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::Malformed)?;
    Ok(Normalized { path: Cow::Owned(resolve(&decoded)), encoded_slash, semicolon, encoded_semicolon })
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

fn push_escape(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
}

/// A segment's name: what comes before its first `;`.
fn segment_name(seg: &str) -> &str {
    seg.split_once(';').map_or(seg, |(name, _)| name)
}

/// Merges empty segments and resolves dot segments (RFC 3986 §5.2.4) of an
/// absolute path; a trailing `/` is kept.
fn resolve(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match segment_name(seg) {
            "." => {}
            ".." => {
                out.pop();
            }
            _ if seg.is_empty() => {}
            _ => {
                out.push(seg);
                continue;
            }
        }
        // A dot or empty last segment leaves a directory: `/a/b/..` is `/a/`.
        if i == last {
            out.push("");
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).map(|n| n.path.into_owned()).unwrap_or_else(|_| "ERR".into())
    }

    #[test]
    fn plain_paths_are_borrowed() {
        let got = normalize("/a/b.css").map(|n| matches!(n.path, Cow::Borrowed(_)));
        assert_eq!(got, Ok(true));
        let got = normalize("/a;b/c").map(|n| (matches!(n.path, Cow::Borrowed(_)), n.semicolon));
        assert_eq!(got, Ok((true, true)));
    }

    #[test]
    fn dot_segments_resolved() {
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/.hidden/x"), "/.hidden/x");
        assert_eq!(n("/a/..."), "/a/...");
    }

    #[test]
    fn empty_segments_merged_before_dots() {
        // nginx merges slashes first, so `/public//../admin` is `/admin`.
        assert_eq!(n("/public//../admin"), "/admin");
        assert_eq!(n("//admin/secret"), "/admin/secret");
        assert_eq!(n("///admin//secret//"), "/admin/secret/");
        assert_eq!(n("/.//admin"), "/admin");
        assert_eq!(n("//"), "/");
    }

    #[test]
    fn dot_segments_with_params_are_dot_segments() {
        assert_eq!(n("/x/..;/admin/secret"), "/admin/secret");
        assert_eq!(n("/assets/..;x=1/private"), "/private");
        assert_eq!(n("/a/.;x/b"), "/a/b");
        let norm = normalize("/admin;jsessionid=1/secret").ok();
        assert_eq!(norm.as_ref().map(|n| n.decision().into_owned()), Some("/admin/secret".to_string()));
        assert_eq!(norm.map(|n| n.semicolon), Some(true));
        let decide = |p: &str| normalize(p).map(|n| n.decision().into_owned()).unwrap_or_default();
        assert_eq!(decide("/;x/admin/secret"), "/admin/secret");
        assert_eq!(decide("/;/admin;/"), "/admin/");
    }

    #[test]
    fn encoded_dots_are_dots() {
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E./admin"), "/admin");
        assert_eq!(n("/%7euser"), "/~user");
    }

    #[test]
    fn other_escapes_kept_and_uppercased() {
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(n("/%252e%252e/admin"), "/%252e%252e/admin");
    }

    #[test]
    fn raw_non_ascii_kept_exactly() {
        assert_eq!(n("/café/./x"), "/café/x");
        assert_eq!(n("/ünï//%41"), "/ünï/A");
    }

    #[test]
    fn encoded_slashes_and_semicolons_flagged() {
        assert_eq!(normalize("/a%2fb").map(|n| n.encoded_slash), Ok(true));
        assert_eq!(normalize("/a%5Cb").map(|n| n.encoded_slash), Ok(true));
        assert_eq!(normalize("/a%2eb").map(|n| n.encoded_slash), Ok(false));
        assert_eq!(normalize("/a%3bb").map(|n| (n.encoded_semicolon, n.semicolon)), Ok((true, false)));
    }

    #[test]
    fn malformed_refused() {
        for p in ["/a%00b", "/a%zz", "/a%2", "relative", "", "/a\\b", "*"] {
            assert_eq!(normalize(p), Err(PathError::Malformed), "{p}");
        }
    }

    #[test]
    fn idempotent_on_samples() {
        for p in ["/a//b/../c/./d;x/..;/e", "/%2e%2E/%7e//x/", "/a%2fb/../c", "/;/;/..;"] {
            let once = n(p);
            assert_eq!(n(&once), once, "{p}");
        }
    }
}
