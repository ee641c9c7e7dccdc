//! `redirectUrl` sanitising on any string: the result is a same-origin path
//! however it is read. It starts with `/` but not `//` or `/\`, holds no
//! control character, backslash or space, and joined onto porteiro's public
//! URL by a WHATWG URL parser (the `url` crate) it stays on that origin, also
//! after each of up to three percent-decodings (the browser or the app may
//! decode it again).

#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use url::Url;

/// Public URLs as `server.public_url` validation leaves them.
const ORIGINS: [&str; 4] =
    ["https://help.example.com", "http://127.0.0.1:8080", "https://[::1]:8443", "http://xn--caf-dma.example.com"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let public_url = ORIGINS[usize::from(pick) % ORIGINS.len()];
    let raw = String::from_utf8_lossy(rest);
    // `None` (no parameter) as well as every string.
    let raw = (pick & 0x80 == 0).then_some(raw.as_ref());
    let out = porteiro::auth::redirect::sanitize(raw, public_url);

    let b = out.as_bytes();
    assert!(b.first() == Some(&b'/'), "{raw:?} -> {out:?}: not a path");
    assert!(!matches!(b.get(1), Some(b'/' | b'\\')), "{raw:?} -> {out:?}: scheme-relative");
    assert!(
        !b.iter().any(|&c| c < b' ' || c == 0x7f || c == b'\\' || c == b' '),
        "{raw:?} -> {out:?}: control character, backslash or space"
    );
    let base = Url::parse(public_url).expect("the public URLs parse");
    let mut current = out.clone();
    for _ in 0..4 {
        let joined = base.join(&current);
        assert!(
            joined.as_ref().is_ok_and(|u| u.origin() == base.origin()),
            "{raw:?} -> {out:?}: {current:?} joins to {joined:?}"
        );
        let decoded = percent_decode_str(&current).decode_utf8_lossy().into_owned();
        if decoded == current {
            break;
        }
        current = decoded;
    }
});
