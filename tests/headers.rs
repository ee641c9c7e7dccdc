//! What the upstream sees (DESIGN §4, §8): forwarding headers set by
//! porteiro, hop-by-hop headers gone, forged forwarding and identity headers
//! never believed, Host preserved or replaced per route.
//!
//! Requests go over a raw socket so header names reach the gateway exactly
//! as written (`X.Forwarded.Groups`, `x_forwarded_email`, `Connection`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use support::{Echo, FakeUpstream, Gateway, raw_request, start_gateway};

/// Every identity header porteiro sets (its defaults, the signed identity
/// of routes with `identity_jwt`, and the route's own `headers` entry
/// below), in canonical spelling.
const IDENTITY: [&str; 9] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-tenant-id",
    "x-porteiro-jwt-assertion",
];

/// How upstream frameworks fold header names together (any case, `_` and
/// `.` read as `-`).
fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

async fn gateway(server_extra: &str, upstream: &str) -> Gateway {
    start_gateway(
        server_extra,
        &format!(
            r#"
[[routes]]
id = "keep"
path_prefix = "/"
upstream = "{upstream}"
public = true
headers = {{ "X-Tenant-Id" = "tenant" }}

[[routes]]
id = "swap"
host = "swap.test"
path_prefix = "/"
upstream = "{upstream}"
public = true
preserve_host = false
"#
        ),
    )
    .await
}

async fn get(gw: &Gateway, host: &str, extra: &[&str]) -> Echo {
    let host_line = format!("Host: {host}");
    let mut lines = vec!["GET /hello?x=1 HTTP/1.1", host_line.as_str()];
    lines.extend_from_slice(extra);
    let resp = raw_request(gw.addr(), &lines).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.echo();
    assert_eq!(echo.uri, "/hello?x=1");
    echo
}

#[tokio::test]
async fn forwarding_headers_are_set() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway("", &up.url()).await;
    let echo = get(&gw, "app.test:8080", &["Connection: close"]).await;
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-host"), Some("app.test:8080"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway("", &up.url()).await;
    let echo = get(
        &gw,
        "app.test",
        &[
            "Connection: keep-alive, X-Secret-Hop",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "X-Secret-Hop: 1",
            "Proxy-Connection: keep-alive",
            "Trailer: X-Checksum",
            // An Upgrade header that `Connection` does not name is not an upgrade.
            "Upgrade: h2c",
            "X-End-To-End: kept",
        ],
    )
    .await;
    for gone in ["connection", "keep-alive", "te", "x-secret-hop", "proxy-connection", "trailer", "upgrade"] {
        assert!(echo.all(gone).is_empty(), "{gone} reached the upstream: {:?}", echo.headers);
    }
    assert_eq!(echo.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn forged_forwarding_headers_from_untrusted_peer_are_replaced() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway("", &up.url()).await;
    let echo = get(
        &gw,
        "app.test",
        &[
            "Connection: close",
            "X-Forwarded-For: 6.6.6.6",
            "x-forwarded-for: 7.7.7.7",
            "X_Forwarded_For: 8.8.8.8",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: evil.example",
            "X-Forwarded-Port: 443",
            "X-Forwarded-Prefix: /evil",
            "X-Real-IP: 6.6.6.6",
            "Forwarded: for=6.6.6.6;proto=https",
        ],
    )
    .await;
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-host"), Some("app.test"));
    for gone in ["x_forwarded_for", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "forwarded"] {
        assert!(echo.all(gone).is_empty(), "{gone} reached the upstream: {:?}", echo.headers);
    }
}

#[tokio::test]
async fn trusted_proxy_chain_is_extended() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway(r#"trusted_proxies = ["127.0.0.1"]"#, &up.url()).await;
    let echo = get(
        &gw,
        "internal:8080",
        &[
            "Connection: close",
            "X-Forwarded-For: 203.0.113.9, 198.51.100.2",
            "X-Forwarded-For: 192.0.2.77",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: public.example",
        ],
    )
    .await;
    assert_eq!(echo.header("x-forwarded-for"), Some("203.0.113.9, 198.51.100.2, 192.0.2.77, 127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some("public.example"));
}

/// Forged identity headers in every spelling, from an untrusted client and
/// from a trusted proxy alike: a proxy in front is trusted for addresses,
/// never for identities.
#[tokio::test]
async fn forged_identity_headers_never_reach_upstream() {
    let up = FakeUpstream::new("app").start().await;
    for server in ["", r#"trusted_proxies = ["127.0.0.1"]"#] {
        let gw = gateway(server, &up.url()).await;
        let echo = get(
            &gw,
            "app.test",
            &[
                "Connection: close",
                "X-Forwarded-User: admin",
                "x-forwarded-user: root",
                "x_forwarded_email: admin@example.com",
                "X.Forwarded.Groups: admins",
                "X-FORWARDED-PREFERRED-USERNAME: admin",
                "X_Forwarded.Preferred_Username: admin",
                "X-Auth-Request-User: admin",
                "x_auth_request_email: admin@example.com",
                "X.Auth.Request.Groups: admins",
                "x_tenant.id: other-tenant",
                "X_Porteiro.Jwt_Assertion: eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
                "X-Harmless: kept",
            ],
        )
        .await;
        let forged: Vec<&str> =
            echo.names().into_iter().filter(|n| IDENTITY.contains(&canonical(n).as_str())).collect();
        assert!(forged.is_empty(), "with [{server}] forged identity headers reached the upstream: {forged:?}");
        assert_eq!(echo.header("x-harmless"), Some("kept"));
    }
}

#[tokio::test]
async fn host_preserved_by_default() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway("", &up.url()).await;
    let echo = get(&gw, "App.Test:8443", &["Connection: close"]).await;
    assert_eq!(echo.header("host"), Some("App.Test:8443"));
}

#[tokio::test]
async fn host_replaced_with_preserve_host_false() {
    let up = FakeUpstream::new("app").start().await;
    let gw = gateway("", &up.url()).await;
    let echo = get(&gw, "swap.test:8443", &["Connection: close"]).await;
    assert_eq!(echo.header("host"), Some(up.addr.to_string().as_str()));
    // The original host is not lost: the upstream can still build links.
    assert_eq!(echo.header("x-forwarded-host"), Some("swap.test:8443"));
}
