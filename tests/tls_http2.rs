//! HTTPS and HTTP/2 on the client side (DESIGN §7 `server.tls`): ALPN
//! offers h2, streams are multiplexed on one connection, bodies cross from
//! HTTP/2 to the HTTP/1.1 upstream, and the upstream learns the scheme.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use reqwest::Version;
use support::{Echo, FakeUpstream, Gateway, MIB, RunningUpstream, client_builder, metric, public_route, start_gateway};

const HOST: &str = "gateway.test";

/// A gateway serving HTTPS with a fresh self-signed certificate for
/// [`HOST`], and a client that trusts only that certificate and resolves
/// [`HOST`] to the gateway.
async fn tls_gateway() -> (RunningUpstream, Gateway, reqwest::ClientBuilder, tempfile::TempDir) {
    let up = FakeUpstream::new("app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
    let cert_path = dir.path().join("gateway.crt");
    let key_path = dir.path().join("gateway.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let gw = start_gateway(
        &format!("tls = {{ cert = \"{}\", key = \"{}\" }}", cert_path.display(), key_path.display()),
        &public_route("app", &up.url()),
    )
    .await;
    let client = client_builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve(HOST, gw.addr())
        .https_only(true);
    (up, gw, client, dir)
}

fn url(gw: &Gateway, path: &str) -> String {
    format!("https://{HOST}:{}{path}", gw.addr().port())
}

#[tokio::test]
async fn http2_over_tls_by_alpn() {
    let (up, gw, client, _dir) = tls_gateway().await;
    let client = client.build().unwrap();
    let resp = client.get(url(&gw, "/hello?a=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.upstream, "app");
    assert_eq!(echo.uri, "/hello?a=1");
    // The upstream speaks HTTP/1.1 and needs a Host built from :authority.
    assert_eq!(echo.version, "HTTP/1.1");
    let authority = format!("{HOST}:{}", gw.addr().port());
    assert_eq!(echo.header("host"), Some(authority.as_str()));
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some(authority.as_str()));
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn http2_request_body_streams_to_http1_upstream() {
    let (_up, gw, client, _dir) = tls_gateway().await;
    let client = client.build().unwrap();
    let body = vec![7u8; MIB as usize];
    let resp = client.put(url(&gw, "/upload")).body(body).send().await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.method, "PUT");
    assert_eq!(echo.body_bytes, MIB);
}

#[tokio::test]
async fn concurrent_requests_share_one_http2_connection() {
    let (_up, gw, client, _dir) = tls_gateway().await;
    let client = client.build().unwrap();
    // One request first: until ALPN has said "h2", the client cannot know it
    // may multiplex and would open a connection per request.
    let resp = client.get(url(&gw, "/first")).send().await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let requests = (0..20).map(|i| {
        let client = client.clone();
        let url = url(&gw, &format!("/item/{i}"));
        async move {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.version(), Version::HTTP_2);
            let echo: Echo = resp.json().await.unwrap();
            assert_eq!(echo.uri, format!("/item/{i}"));
        }
    });
    futures_util::future::join_all(requests).await;
    let metrics = gw.metrics().await;
    assert_eq!(metric(&metrics, "porteiro_connections_total"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"porteiro_requests_total{route="app",class="2xx"}"#), Some(21.0), "{metrics}");
}

#[tokio::test]
async fn http1_over_tls_still_works() {
    let (_up, gw, client, _dir) = tls_gateway().await;
    let client = client.http1_only().build().unwrap();
    let resp = client.get(url(&gw, "/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_11);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn cleartext_http2_with_prior_knowledge() {
    let up = FakeUpstream::new("app").start().await;
    let gw = start_gateway("", &public_route("app", &up.url())).await;
    let client = client_builder().http2_prior_knowledge().build().unwrap();
    let resp = client.get(gw.url("/h2c")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.uri, "/h2c");
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
}
