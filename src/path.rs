//! Request path normalisation.
//!
//! The path that picks the route and decides "public or protected" is exactly
//! the path sent upstream. It is normalised once: percent-encoded unreserved
//! characters are decoded (so `%2e%2e` is `..`) and dot segments are removed
//! (RFC 3986 §6.2.2, §5.2.4). Encoded NUL is always refused; encoded `/` and
//! `\` are reported so the route can decide.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path, a bad `%` escape, a NUL or a raw backslash.
    Malformed,
}

/// A normalised path and whether it still holds `%2F` or `%5C`.
#[derive(Debug, PartialEq, Eq)]
pub struct Normalized<'a> {
    pub path: Cow<'a, str>,
    pub encoded_slash: bool,
}

pub fn normalize(path: &str) -> Result<Normalized<'_>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.contains(&b'\\') {
        return Err(PathError::Malformed);
    }
    // Fast path: nothing encoded and no segment that starts with a dot.
    if !bytes.contains(&b'%') && !bytes.windows(2).any(|w| w == b"/.") {
        return Ok(Normalized { path: Cow::Borrowed(path), encoded_slash: false });
    }
    let mut decoded = String::with_capacity(path.len());
    let mut encoded_slash = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b as char);
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
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => decoded.push(c as char),
            c => push_escape(&mut decoded, c),
        }
        i += 3;
    }
    Ok(Normalized { path: Cow::Owned(remove_dot_segments(&decoded)), encoded_slash })
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

fn push_escape(out: &mut String, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(c >> 4) as usize] as char);
    out.push(HEX[(c & 15) as usize] as char);
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
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
        let got = normalize("/a/b.css?x").map(|n| matches!(n.path, Cow::Borrowed(_)));
        assert_eq!(got, Ok(true));
    }

    #[test]
    fn dot_segments_resolved() {
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/public//../admin"), "/public/admin");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/.hidden/x"), "/.hidden/x");
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
    }

    #[test]
    fn encoded_slashes_flagged() {
        assert_eq!(normalize("/a%2fb").map(|n| n.encoded_slash), Ok(true));
        assert_eq!(normalize("/a%5Cb").map(|n| n.encoded_slash), Ok(true));
        assert_eq!(normalize("/a%2eb").map(|n| n.encoded_slash), Ok(false));
    }

    #[test]
    fn malformed_refused() {
        for p in ["/a%00b", "/a%zz", "/a%2", "relative", "", "/a\\b"] {
            assert_eq!(normalize(p), Err(PathError::Malformed), "{p}");
        }
    }
}
