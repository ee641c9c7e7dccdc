//! `porteiro::path::normalize` on any string. What holds for any request
//! path normaliser: it never panics; what it accepts comes out absolute,
//! without `.` or `..` segments (plain or percent-encoded), and normalising
//! that again changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(first) = porteiro::path::normalize(&input) else { return };
    let out: &str = &first.path;
    assert!(out.starts_with('/'), "{input:?} -> {out:?}: not absolute");
    // The input is a path alone (`Uri::path()`): a `?` or `#` in it is a
    // character of its segment, not the start of a query.
    for segment in out.split('/') {
        let dots = segment.replace("%2e", ".").replace("%2E", ".");
        assert!(dots != "." && dots != "..", "{input:?} -> {out:?}: dot segment {segment:?}");
    }
    match porteiro::path::normalize(out) {
        Ok(again) => assert_eq!(again.path, out, "{input:?} -> {out:?}: not idempotent"),
        Err(e) => panic!("{input:?} -> {out:?}: the output is refused ({e:?})"),
    }
});
