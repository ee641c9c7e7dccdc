//! Property tests of the parsers at the trust boundary (DESIGN.md §8.1):
//! the path normaliser, the stripping of porteiro's cookies from what goes
//! upstream, and the `redirectUrl` sanitiser. The fuzz targets in `fuzz/`
//! check the same properties on unstructured input; these run with every
//! `cargo test`, on inputs shaped to reach the interesting cases.

use std::sync::LazyLock;
use std::time::Duration;

use http::header::{COOKIE, HeaderMap, HeaderValue};
use percent_encoding::percent_decode_str;
use porteiro::auth::redirect::sanitize;
use porteiro::auth::session::{SessionCookies, strip_cookies};
use porteiro::canonical::{Target, valid_host};
use porteiro::config::{Secret, SessionConfig, StoreKind};
use porteiro::path::normalize;
use proptest::collection::vec;
use proptest::prelude::*;
use url::Url;

// --- Paths -----------------------------------------------------------------

/// Path pieces that matter to a normaliser: dots plain and encoded, slashes
/// plain and encoded, escapes good and bad, raw and encoded non-ASCII.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("%25".to_string()),
        Just("%7e".to_string()),
        Just("%c3%a9".to_string()),
        Just("%".to_string()),
        Just(";".to_string()),
        Just("é".to_string()),
        "[a-z0-9_~-]{1,3}",
        any::<char>().prop_map(String::from),
    ]
}

fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(path_piece(), 0..12).prop_map(|pieces| format!("/{}", pieces.concat())),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What the normaliser accepts comes out absolute, without dot segments
    /// (plain or encoded), and normalising it again changes nothing.
    #[test]
    fn normalised_paths_are_absolute_dotless_and_stable(input in path_like()) {
        if let Ok(first) = normalize(&input) {
            let out: &str = &first.path;
            prop_assert!(out.starts_with('/'), "{:?} -> {:?}", input, out);
            for segment in out.split('/') {
                let dots = segment.replace("%2e", ".").replace("%2E", ".");
                prop_assert!(dots != "." && dots != "..", "{:?} -> {:?}: {:?}", input, out, segment);
            }
            let again = normalize(out).map(|n| n.path.into_owned());
            prop_assert_eq!(again.as_deref(), Ok(out), "normalising {:?} again", out);
            // Empty segments are merged (a trailing `/` stays).
            prop_assert!(!out.contains("//"), "{:?} -> {:?}", input, out);
            // The path routes are matched on is as dot-free and merged, and
            // holds no `;params`.
            let decision = first.decision();
            prop_assert!(!decision.contains(';') && !decision.contains("//"), "{:?} -> {:?}", input, decision);
            for segment in decision.split('/') {
                prop_assert!(segment != "." && segment != "..", "{:?} -> {:?}", input, decision);
            }
        }
    }
}

// --- Hosts -----------------------------------------------------------------

/// Host text: names, ports, IPv6 literals, and the bytes that must never
/// pass (userinfo, paths, spaces, escapes, non-ASCII).
fn host_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9-]{1,8}",
        Just(".".to_string()),
        Just(":".to_string()),
        "[0-9]{1,6}",
        Just("[::1]".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("@".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just(" ".to_string()),
        Just("%2e".to_string()),
        Just("é".to_string()),
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 1..6).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A host that passes is plain ASCII with nothing an upstream could read
    /// as userinfo, a path or an escape, and its port is a real port.
    #[test]
    fn valid_hosts_hold_nothing_but_a_name_and_a_port(host in host_like()) {
        if valid_host(&host) {
            prop_assert!(host.bytes().all(|b| b.is_ascii_graphic()), "{:?}", host);
            for bad in ['@', '/', '\\', '%', '?', '#', ','] {
                prop_assert!(!host.contains(bad), "{:?}", host);
            }
            let port = match host.rsplit_once(']') {
                Some((_, after)) => after.strip_prefix(':'),
                None => host.split_once(':').map(|(_, p)| p),
            };
            if let Some(port) = port {
                prop_assert!(port.parse::<u16>().is_ok(), "{:?}", host);
            }
        }
    }

    /// The host that chooses the route is, byte for byte, the `Host` the
    /// upstream receives; a `Host` line and an absolute-form target that
    /// disagree are refused.
    #[test]
    fn the_host_judged_is_the_host_sent(host in host_like(), authority in prop::option::of(host_like())) {
        let Ok(value) = HeaderValue::from_str(&host) else { return Ok(()) };
        let uri = match &authority {
            Some(a) => format!("http://{a}/x"),
            None => "/x".to_string(),
        };
        let Ok(req) = http::Request::get(uri.as_str()).header("host", value).body(()) else { return Ok(()) };
        if let Ok(target) = Target::of_request(&req) {
            let judged = target.host().map(str::to_string);
            let (sent, _) = target.into_upstream();
            prop_assert_eq!(judged.as_deref().map(str::as_bytes), sent.as_ref().map(HeaderValue::as_bytes));
            prop_assert!(valid_host(&host) && host.eq_ignore_ascii_case(judged.as_deref().unwrap_or("")), "{:?} {:?}", host, authority);
        }
    }
}

// --- Cookies ---------------------------------------------------------------

const NAMES: [&str; 2] = ["porteiro_session", "__Host-porteiro_session"];

static SESSIONS: LazyLock<[SessionCookies; 2]> = LazyLock::new(|| NAMES.map(session_cookies));

#[expect(clippy::expect_used, reason = "test set-up fails loudly")]
fn session_cookies(name: &str) -> SessionCookies {
    let config = SessionConfig {
        secret: Some(Secret::new(vec![7u8; 32])),
        previous_secrets: vec![],
        validity: Duration::from_secs(900),
        cookie_name: name.into(),
        cookie_domain: None,
        store: StoreKind::Memory,
        api_keys_per_user: 20,
    };
    SessionCookies::new(&config, true).expect("a secret is configured")
}

/// The `name=value` pairs of `Cookie` lines, names and values trimmed of
/// ASCII whitespace as servers do.
fn pairs(lines: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    lines
        .iter()
        .flat_map(|line| line.split(|b| *b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((pair[..eq].trim_ascii().to_vec(), pair[eq + 1..].trim_ascii().to_vec()))
        })
        .collect()
}

/// Whether a name is porteiro's once trimmed as any server might trim it:
/// of ASCII whitespace, or of any Unicode whitespace when it is UTF-8.
fn owned_name(sessions: &SessionCookies, name: &[u8]) -> bool {
    sessions.owns(&String::from_utf8_lossy(name.trim_ascii()))
        || std::str::from_utf8(name).is_ok_and(|n| sessions.owns(n.trim()))
}

/// One of porteiro's cookies: the session or a chunk, spaced as clients do.
fn porteiro_pair(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    ("(_[0-4])?", "[A-Za-z0-9_-]{0,40}", "[ \t]{0,2}")
        .prop_map(move |(chunk, value, pad)| format!("{pad}{name}{chunk}={value}{pad}").into_bytes())
}

/// Any header-value bytes: visible ASCII, space, tab, and obs-text (the
/// bytes over 0x7F, which need not be UTF-8).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t'), Just(b';'), Just(b'=')], 0..40)
}

/// Lines of junk with porteiro's cookies spliced in at pair boundaries.
fn cookie_lines(which: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let piece = prop_oneof![header_bytes(), porteiro_pair(NAMES[which])];
    vec(vec(piece, 1..5), 1..4).prop_map(|lines| lines.into_iter().map(|pieces| pieces.join(&b';')).collect())
}

/// Cookies of the app: names that are not porteiro's, values with any
/// cookie-octet or obs-text byte.
fn app_cookie() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let value_byte = prop_oneof![0x21u8..0x7f, 0x80u8..=0xff].prop_filter("cookie-octet", |b| !b";,\"\\".contains(b));
    ("[a-z][a-z0-9_-]{0,7}", vec(value_byte, 0..12)).prop_map(|(name, value)| (name.into_bytes(), value))
}

fn header_map(lines: &[Vec<u8>]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    headers
}

fn cookie_lines_of(headers: &HeaderMap) -> Vec<&[u8]> {
    headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No `Cookie` line that goes upstream holds a cookie porteiro owns,
    /// whatever else the lines hold, UTF-8 or not.
    #[test]
    fn porteiros_cookies_never_go_upstream(which in 0..2usize, lines in (0..2usize).prop_flat_map(cookie_lines)) {
        let sessions = &SESSIONS[which];
        let mut headers = header_map(&lines);
        strip_cookies(&mut headers, |n| sessions.owns(n));
        for (name, _) in pairs(&cookie_lines_of(&headers)) {
            prop_assert!(
                !owned_name(sessions, &name),
                "{:?} kept in {:?}",
                String::from_utf8_lossy(&name),
                lines.iter().map(|l| String::from_utf8_lossy(l)).collect::<Vec<_>>()
            );
        }
    }

    /// The app's own cookies all go upstream, in order and byte for byte,
    /// whatever lines porteiro's were mixed into.
    #[test]
    fn app_cookies_survive_stripping(
        which in 0..2usize,
        lines in vec(vec((app_cookie(), any::<bool>()), 1..5), 1..4),
    ) {
        let sessions = &SESSIONS[which];
        let mut app = Vec::new();
        let raw: Vec<Vec<u8>> = lines
            .iter()
            .map(|line| {
                let mut out = Vec::new();
                for ((name, value), with_ours) in line {
                    if *with_ours {
                        out.extend_from_slice(format!("{}=x; ", NAMES[which]).as_bytes());
                    }
                    out.extend_from_slice(name);
                    out.push(b'=');
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"; ");
                    app.push((name.clone(), value.clone()));
                }
                out
            })
            .collect();
        let mut headers = header_map(&raw);
        strip_cookies(&mut headers, |n| sessions.owns(n));
        prop_assert_eq!(pairs(&cookie_lines_of(&headers)), app);
    }
}

// --- Redirects -------------------------------------------------------------

const ORIGIN: &str = "https://help.example.com";

/// Pieces of hostile return addresses: other hosts, scheme-relative and
/// backslash forms, escapes (once and twice encoded), controls, spaces.
fn redirect_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(ORIGIN.to_string()),
        Just("https://evil.com".to_string()),
        Just(".evil.com".to_string()),
        Just("@evil.com".to_string()),
        Just("/".to_string()),
        Just("//".to_string()),
        Just("\\".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("%25".to_string()),
        Just("%252F".to_string()),
        Just("%09".to_string()),
        Just("%0d%0a".to_string()),
        Just("%00".to_string()),
        Just("\t".to_string()),
        Just("\r\n".to_string()),
        Just(" ".to_string()),
        Just("javascript:".to_string()),
        "[a-z0-9.=&]{1,4}",
        any::<char>().prop_map(String::from),
    ]
}

fn redirect_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(redirect_piece(), 0..8).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever `redirectUrl` says, the answer sends the browser to a path
    /// on porteiro's own origin, also once the path is decoded again.
    #[test]
    fn redirects_never_leave_the_site(raw in redirect_like()) {
        let out = sanitize(Some(&raw), ORIGIN);
        let b = out.as_bytes();
        prop_assert_eq!(b.first(), Some(&b'/'), "{:?} -> {:?}", raw, out);
        prop_assert!(!matches!(b.get(1), Some(b'/' | b'\\')), "{:?} -> {:?}", raw, out);
        prop_assert!(
            !b.iter().any(|&c| c < b' ' || c == 0x7f || c == b'\\' || c == b' '),
            "{:?} -> {:?}", raw, out
        );
        let base = Url::parse(ORIGIN).expect("the origin parses");
        let mut current = out.clone();
        for _ in 0..4 {
            let joined = base.join(&current).map(|u| u.origin());
            prop_assert_eq!(joined, Ok(base.origin()), "{:?} -> {:?}: {:?}", raw, out, current);
            let decoded = percent_decode_str(&current).decode_utf8_lossy().into_owned();
            if decoded == current {
                break;
            }
            current = decoded;
        }
    }
}
