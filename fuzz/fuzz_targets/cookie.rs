//! The session cookie on any `Cookie` lines, UTF-8 or not: reading it never
//! panics, and once porteiro has stripped its cookies from a request no
//! `Cookie` line holds one whose name porteiro owns (the session or one of
//! its chunks), with the name trimmed as any server might trim it.
//!
//! Input: `Cookie` lines separated by `\n`. So that mutations reach the
//! decryption and the chunk joining, `$S` stands for the value of a real
//! session cookie and `$0`..`$4` for the chunks of a real large one.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use http::header::{COOKIE, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use porteiro::auth::session::{Identity, SessionCookies, strip_cookies};
use porteiro::config::{Secret, SessionConfig, StoreKind};

const NAME: &str = "porteiro_session";
const NOW: u64 = 1_700_000_100;

static COOKIES: LazyLock<SessionCookies> = LazyLock::new(|| {
    let config = SessionConfig {
        secret: Some(Secret::new(vec![7u8; 32])),
        previous_secrets: vec![],
        validity: Duration::from_secs(900),
        cookie_name: NAME.into(),
        cookie_domain: None,
        store: StoreKind::Memory,
        api_keys_per_user: 20,
    };
    SessionCookies::new(&config, true).expect("a secret is configured")
});

/// `$S`, then `$0`..`$4`: values of real session cookies.
static SEALED: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let value = |groups: usize| {
        let set = COOKIES.write(&identity(groups), &HeaderMap::new()).expect("the session seals");
        set.iter()
            .map(|v| {
                let pair = v.as_bytes().split(|b| *b == b';').next().unwrap_or_default();
                let eq = pair.iter().position(|b| *b == b'=').map_or(pair.len(), |i| i + 1);
                pair[eq..].to_vec()
            })
            .collect::<Vec<_>>()
    };
    let mut all = value(1);
    let mut chunks = value(300);
    chunks.resize(5, Vec::new());
    all.extend(chunks);
    all
});

fn identity(groups: usize) -> Identity {
    Identity {
        sid: "sid".into(),
        provider: "p".into(),
        sub: "u1".into(),
        name: Some("Ana".into()),
        email: None,
        username: None,
        groups: (0..groups).map(|i| format!("group-number-{i:05}")).collect(),
        claims: BTreeMap::new(),
        iat: NOW - 100,
        exp: NOW + 800,
        oidc_sid: None,
        renew_until: None,
        header_values: Default::default(),
    }
}

fn expand(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let slot = match data.get(i..i + 2) {
            Some(b"$S") => Some(0),
            Some([b'$', d @ b'0'..=b'4']) => Some(usize::from(d - b'0') + 1),
            _ => None,
        };
        match slot {
            Some(s) => {
                out.extend_from_slice(&SEALED[s]);
                i += 2;
            }
            None => {
                out.push(data[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether a `name=value` pair carries one of porteiro's names, trimmed of
/// ASCII whitespace or, when it is UTF-8, of any Unicode whitespace.
fn owned(pair: &[u8]) -> bool {
    let Some(eq) = pair.iter().position(|b| *b == b'=') else { return false };
    let name = &pair[..eq];
    COOKIES.owns(&String::from_utf8_lossy(name.trim_ascii()))
        || std::str::from_utf8(name).is_ok_and(|n| COOKIES.owns(n.trim()))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in expand(data).split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    let _ = COOKIES.read(&headers, NOW);
    let before: Vec<Vec<u8>> = headers.get_all(COOKIE).iter().map(|v| v.as_bytes().to_vec()).collect();
    strip_cookies(&mut headers, |n| COOKIES.owns(n));
    for line in headers.get_all(COOKIE) {
        for pair in line.as_bytes().split(|b| *b == b';') {
            assert!(
                !owned(pair),
                "porteiro's cookie kept: {:?} -> {:?}",
                before.iter().map(|l| String::from_utf8_lossy(l)).collect::<Vec<_>>(),
                String::from_utf8_lossy(line.as_bytes())
            );
        }
    }
});
