//! Criterion benches of the per-request hot paths: route matching, path
//! normalisation and request header rewriting. Each runs once per proxied
//! request, before any byte goes upstream.
//!
//! `cargo bench --bench hot_paths` takes about a minute; pass a filter
//! (`cargo bench --bench hot_paths -- route`) to run one group.
//! End-to-end throughput against nginx is measured by `benches/load.sh`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use porteiro::config::HostPattern;
use porteiro::gateway::IDENTITY_HEADERS;
use porteiro::path::normalize;
use porteiro::proxy::{
    Added, FORWARDING_HEADERS, Forwarding, NEVER_FORWARDED, StripSet, Upgrades, prepare_request_headers,
    remove_hop_by_hop,
};
use porteiro::routes::RouteTable;

/// Short runs: these are regression guards, not publication numbers.
fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(50)
}

// === route matching ===

/// A table shaped like a mid-sized deployment: 20 routes over exact hosts,
/// two wildcard domains and hostless prefixes.
fn route_table() -> RouteTable<usize> {
    let exact = |h: &str| Some(HostPattern::Exact(h.to_string()));
    let suffix = |s: &str| Some(HostPattern::Suffix(s.to_string()));
    let entries: Vec<(Option<HostPattern>, &str)> = vec![
        (exact("kb.example.com"), "/"),
        (exact("kb.example.com"), "/admin"),
        (exact("kb.example.com"), "/api/v2/"),
        (exact("grafana.example.com"), "/"),
        (exact("grafana.example.com"), "/api/live"),
        (exact("git.example.com"), "/"),
        (exact("git.example.com"), "/api/v4/"),
        (exact("ci.example.com"), "/"),
        (exact("wiki.internal.example.org"), "/"),
        (exact("api.example.com"), "/v1"),
        (suffix(".preview.example.com"), "/"),
        (suffix(".preview.example.com"), "/static/"),
        (suffix(".example.com"), "/"),
        (suffix(".example.com"), "/health"),
        (None, "/"),
        (None, "/api"),
        (None, "/api/v1/users"),
        (None, "/static/"),
        (None, "/metrics"),
        (None, "/docs/"),
    ];
    RouteTable::new(entries.into_iter().enumerate().map(|(i, (host, prefix))| (host, prefix.to_string(), i)))
}

fn bench_routes(c: &mut Criterion) {
    let table = route_table();
    let mut g = c.benchmark_group("route_find");
    let cases: [(&str, Option<&str>, &str); 6] = [
        ("exact_host_hit", Some("kb.example.com"), "/admin/users/42"),
        ("exact_host_port_mixed_case", Some("Git.Example.com:8443"), "/api/v4/projects/12/merge_requests"),
        ("wildcard_host_hit", Some("pr-1234.preview.example.com"), "/static/app.3f2a9c.js"),
        ("hostless_prefix_hit", None, "/api/v1/users/42/avatar"),
        ("unknown_host_fallback", Some("other.test"), "/docs/getting-started"),
        // The host has routes but none for this path: falls through to the
        // wildcard, then would to the hostless group.
        ("exact_host_path_miss_fallback", Some("api.example.com"), "/v2/orders"),
    ];
    for (name, host, path) in cases {
        assert!(table.find(host, path).is_some(), "{name} should match");
        g.bench_function(name, |b| b.iter(|| table.find(black_box(host), black_box(path))));
    }
    // A table without a catch-all, so a request can miss outright.
    let no_default = RouteTable::new([
        (Some(HostPattern::Exact("kb.example.com".into())), "/".to_string(), 0usize),
        (None, "/api".to_string(), 1),
        (None, "/static/".to_string(), 2),
    ]);
    g.bench_function("miss_no_catch_all", |b| {
        b.iter(|| no_default.find(black_box(Some("nope.example.com")), black_box("/apix")))
    });
    g.finish();
}

// === path normalisation ===

fn bench_normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("path_normalize");
    let cases = [
        ("clean_short", "/"),
        ("clean_typical", "/api/v4/projects/12/merge_requests/7/diffs"),
        ("clean_long", "/static/js/vendor/react-dom.production.min.3f2a9c1b.js"),
        ("dot_segments", "/public/../admin/./settings/../users"),
        ("encoded_dots", "/public/%2e%2e/admin/%2E/users"),
        ("encoded_other", "/files/caf%c3%a9%20menu/r%C3%A9sum%C3%A9.pdf"),
    ];
    for (name, path) in cases {
        assert!(normalize(path).is_ok(), "{name}");
        g.bench_function(name, |b| b.iter(|| normalize(black_box(path))));
    }
    g.finish();
}

// === request header rewriting ===

/// What a current browser sends on a same-site navigation, plus one forged
/// identity header that must be stripped.
fn browser_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |name: &'static str, value: &'static str| {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    };
    add("host", "kb.example.com");
    add("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");
    add("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
    add("accept-language", "en-GB,en;q=0.7,pt-BR;q=0.3");
    add("accept-encoding", "gzip, deflate, br, zstd");
    add("referer", "https://kb.example.com/articles/42");
    add("cookie", "porteiro_session=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIjKlMnOpQrStUvWxYz; theme=dark");
    add("connection", "keep-alive");
    add("upgrade-insecure-requests", "1");
    add("sec-fetch-dest", "document");
    add("sec-fetch-mode", "navigate");
    add("sec-fetch-site", "same-origin");
    add("x-forwarded-user", "admin");
    h
}

fn strip_untrusted() -> StripSet {
    StripSet::new(IDENTITY_HEADERS.iter().chain(NEVER_FORWARDED.iter()).chain(FORWARDING_HEADERS.iter()).copied())
}

fn bench_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_headers");
    let strip = strip_untrusted();
    let template = browser_request();
    // What the gateway passes: the Host header's value, shared.
    let host = HeaderValue::from_static("kb.example.com");
    let untrusted = Forwarding { peer: IpAddr::from([203, 0, 113, 77]), tls: true, trusted: false };
    let upgrades = Upgrades::new(&["websocket".to_string()]);
    let v6 = Forwarding { peer: "2001:db8:85a3::8a2e:370:7334".parse().unwrap_or(untrusted.peer), ..untrusted };
    {
        let mut h = template.clone();
        let mut added = Added::default();
        prepare_request_headers(&mut h, Some(&host), &untrusted, &strip, &upgrades, &mut added);
        assert!(!h.contains_key("x-forwarded-user"));
        let xff = added.get(&HeaderName::from_static("x-forwarded-for"));
        assert_eq!(xff, Some(&b"203.0.113.77"[..]));
    }
    // Each iteration rewrites a fresh copy, so clone and drop are timed too;
    // the *_clone_only benches time them alone, to subtract. (Cloning outside
    // the timing, with iter_batched, measures cold caches instead: a request
    // just parsed by hyper is hot.)
    for (name, fwd) in [("browser_v4_rewrite_with_clone", untrusted), ("browser_v6_rewrite_with_clone", v6)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut h = template.clone();
                let mut added = Added::with_capacity(12);
                prepare_request_headers(&mut h, black_box(Some(&host)), black_box(&fwd), &strip, &upgrades, &mut added);
                (h, added)
            })
        });
    }
    g.bench_function("browser_clone_only", |b| b.iter(|| black_box(&template).clone()));
    // An upstream's answer (here nginx's) loses its hop-by-hop headers too.
    let mut response = HeaderMap::new();
    for (name, value) in [
        ("server", "nginx/1.22.1"),
        ("date", "Sat, 21 Nov 2026 15:22:14 GMT"),
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5120"),
        ("connection", "keep-alive"),
        ("cache-control", "no-cache"),
    ] {
        response.insert(name, HeaderValue::from_static(value));
    }
    g.bench_function("upstream_response_hop_by_hop_with_clone", |b| {
        b.iter(|| {
            let mut h = response.clone();
            remove_hop_by_hop(&mut h, &upgrades);
            h
        })
    });
    g.bench_function("upstream_response_clone_only", |b| b.iter(|| black_box(&response).clone()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_routes, bench_normalize, bench_headers
}
criterion_main!(benches);
