//! Routing and path normalisation (DESIGN §5, §8): no route -> 404; the
//! normalised path both picks the route and is what the upstream receives;
//! encoded slashes and NUL are refused unless a route allows slashes.
//!
//! Paths with dot segments go over a raw socket: HTTP client libraries
//! resolve `..` themselves, which would hide what the gateway does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::net::SocketAddr;

use support::{FakeUpstream, RawResponse, RunningUpstream, client, raw_request, start_gateway};

async fn get(addr: SocketAddr, host: &str, target: &str) -> RawResponse {
    let request_line = format!("GET {target} HTTP/1.1");
    let host_line = format!("Host: {host}");
    raw_request(addr, &[request_line.as_str(), host_line.as_str(), "Accept: application/json", "Connection: close"])
        .await
}

fn error_code(resp: &RawResponse) -> String {
    assert_eq!(resp.header("content-type"), Some("application/json"), "{}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    v["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn unknown_host_gets_404_and_known_host_reaches_upstream() {
    let up = FakeUpstream::new("app").start().await;
    let gw =
        start_gateway("", &format!("[[routes]]\nhost = \"app.test\"\nupstream = \"{}\"\npublic = true\n", up.url()))
            .await;

    let resp = get(gw.addr(), "other.test", "/").await;
    assert_eq!(resp.status, 404);
    assert_eq!(error_code(&resp), "no_route");

    let resp = get(gw.addr(), "APP.test:80", "/page").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.echo().uri, "/page");

    assert_eq!(up.hits(), 1, "the 404 must not reach the upstream");
}

#[tokio::test]
async fn public_route_reaches_upstream_through_a_normal_client() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("", &support::public_route("app", &up.url())).await;
    let resp = client().post(gw.url("/api/items?page=2")).body("hello").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: support::Echo = resp.json().await.unwrap();
    assert_eq!(echo.upstream, "app");
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.uri, "/api/items?page=2");
    assert_eq!(echo.body_bytes, 5);
}

/// `/public/` and `/` go to different upstreams, so a path that would pick
/// the wrong route before normalisation shows up as the wrong upstream.
async fn two_upstreams() -> (RunningUpstream, RunningUpstream, support::Gateway) {
    let public = FakeUpstream::new("public").start().await;
    let root = FakeUpstream::new("root").start().await;
    let gw = start_gateway(
        "",
        &format!(
            r#"
[[routes]]
id = "public"
path_prefix = "/public/"
upstream = "{}"
public = true

[[routes]]
id = "files"
path_prefix = "/files/"
upstream = "{}"
public = true
allow_encoded_slashes = true

[[routes]]
id = "root"
path_prefix = "/"
upstream = "{}"
public = true
"#,
            public.url(),
            root.url(),
            root.url()
        ),
    )
    .await;
    (public, root, gw)
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing_and_sent_upstream_resolved() {
    let (public, _root, gw) = two_upstreams().await;
    for (target, want) in [
        ("/public/../x", "/x"),
        ("/public/%2e%2e/x", "/x"),
        ("/public/%2E%2E/x?q=1", "/x?q=1"),
        ("/public/.%2e/x", "/x"),
        ("/public/./a/../b", "/public/b"),
        ("/public/../../../etc/passwd", "/etc/passwd"),
    ] {
        let resp = get(gw.addr(), "app.test", target).await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        let echo = resp.echo();
        assert_eq!(echo.uri, want, "{target}");
        let expected_upstream = if want.starts_with("/public/") { "public" } else { "root" };
        assert_eq!(echo.upstream, expected_upstream, "{target}");
    }
    assert_eq!(public.hits(), 1, "only /public/./a/../b belongs to /public/");
}

#[tokio::test]
async fn encoded_slash_refused_unless_route_allows_it() {
    let (_public, root, gw) = two_upstreams().await;
    for target in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/public/a%2F..%2Fb"] {
        let resp = get(gw.addr(), "app.test", target).await;
        assert_eq!(resp.status, 400, "{target}: {}", resp.text());
        assert_eq!(error_code(&resp), "encoded_slash", "{target}");
    }
    assert_eq!(root.hits(), 0);

    let resp = get(gw.addr(), "app.test", "/files/a%2Fb").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.echo();
    assert_eq!(echo.upstream, "root");
    assert_eq!(echo.uri, "/files/a%2Fb", "the slash stays encoded upstream");
}

#[tokio::test]
async fn encoded_nul_and_bad_escapes_are_refused() {
    let (public, root, gw) = two_upstreams().await;
    for target in ["/a%00b", "/files/a%00b", "/public/%zz", "/a%2"] {
        let resp = get(gw.addr(), "app.test", target).await;
        assert_eq!(resp.status, 400, "{target}: {}", resp.text());
        assert_eq!(error_code(&resp), "bad_path", "{target}");
    }
    assert_eq!(public.hits() + root.hits(), 0);
}
