//! A keep-alive connection keeps the last credential that passed on it
//! (a session cookie, a bearer token, an API key) so the next request
//! with the same headers on the same route is not authenticated from
//! scratch. What it keeps must never outlive what it stands for: every
//! test here sends all its requests on one connection, and revocation,
//! expiry, another user's credential or another route's rules take
//! effect on the very next request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::auth::{COOKIE, Conf, FakeUpstream, Gateway, JWT_SECRET, claims_with, hs_token, q, sign_hs};
use support::{RawResponse, read_response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// One client connection, kept alive across requests.
struct Conn(TcpStream);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn(TcpStream::connect(addr).await.unwrap())
    }

    /// `GET path` with `headers` (`name: value` lines) on this connection.
    async fn get(&mut self, path: &str, headers: &[&str]) -> RawResponse {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.0.write_all(req.as_bytes()).await.unwrap();
        let resp = tokio::time::timeout(support::PATIENCE, read_response(&mut self.0)).await.expect("an answer");
        assert_ne!(resp.header("connection"), Some("close"), "the connection stays open");
        resp
    }

    /// The user the upstream saw for `GET path` with `headers` (asserting 200).
    async fn user(&mut self, path: &str, headers: &[&str]) -> String {
        let resp = self.get(path, headers).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        resp.echo().header("x-forwarded-user").expect("an identity upstream").to_string()
    }
}

fn cookie_line(cookie: &str) -> String {
    format!("Cookie: {cookie}")
}

#[tokio::test]
async fn a_kept_session_is_rechecked_on_every_request() {
    let upstream = FakeUpstream::new("app").start().await;
    let up = upstream.authority();
    let gw = Conf::new(&up)
        .server("admin_token", q(ADMIN_TOKEN))
        .raw(&format!(
            "[[routes]]\npath_prefix = \"/ops/\"\nupstream = \"http://{up}\"\nlogin = \"intranet\"\n\
             allow = {{ groups = [\"ops\"] }}\n"
        ))
        .start()
        .await;
    let ana = cookie_line(&gw.login(&hs_token(&claims_with(json!({"groups": ["ops"]})))).await);
    let bruno = cookie_line(&gw.login(&hs_token(&claims_with(json!({"email": "bruno@example.com"})))).await);
    let mut conn = Conn::open(gw.addr()).await;

    assert_eq!(conn.user("/tickets", &[&ana]).await, "ana@example.com");
    assert_eq!(conn.user("/tickets", &[&ana]).await, "ana@example.com");
    // Another user's cookie on the same connection is that user.
    assert_eq!(conn.user("/tickets", &[&bruno]).await, "bruno@example.com");
    assert_eq!(conn.user("/ops/board", &[&ana]).await, "ana@example.com");
    // Another route judges by its own rules: Bruno is not in `ops`, also
    // right after passing on `/`.
    assert_eq!(conn.user("/tickets", &[&bruno]).await, "bruno@example.com");
    assert_eq!(conn.get("/ops/board", &[&bruno]).await.status, 403);
    // A tampered copy of a kept cookie is no session.
    let tampered = ana.replace(&format!("{COOKIE}="), &format!("{COOKIE}=A"));
    assert_eq!(conn.user("/tickets", &[&ana]).await, "ana@example.com");
    assert_eq!(conn.get("/tickets", &[&tampered]).await.status, 401);
    // The same cookie beside a bearer-looking Authorization: judged afresh
    // (this route takes no bearer tokens, so the session decides).
    assert_eq!(conn.user("/tickets", &[&ana, "Authorization: Bearer x.y.z"]).await, "ana@example.com");

    // Revoked by the admin: refused on the next request of the connection
    // that just used the session.
    assert_eq!(conn.user("/tickets", &[&ana]).await, "ana@example.com");
    let resp = gw.revoke(ADMIN_TOKEN, json!({"email": "ana@example.com"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(conn.get("/tickets", &[&ana]).await.status, 401);
    assert_eq!(conn.user("/tickets", &[&bruno]).await, "bruno@example.com");

    // Expired: Bruno's session ends on porteiro's clock, kept or not.
    gw.advance(Duration::from_secs(3 * 3600));
    assert_eq!(conn.get("/tickets", &[&bruno]).await.status, 401);
}

#[tokio::test]
async fn a_kept_bearer_token_ends_with_its_verification() {
    let upstream = FakeUpstream::new("api").start().await;
    let up = upstream.authority();
    let gw = Conf::new(&up)
        .raw(&format!(
            "[[providers]]\nid = \"svc\"\nkind = \"bearer\"\nissuer = \"svc.test\"\nsecret = \"{JWT_SECRET}\"\n\
             leeway_seconds = 0\n\n\
             [[routes]]\npath_prefix = \"/api/\"\nupstream = \"http://{up}\"\nbearer = [\"svc\"]\n"
        ))
        .start()
        .await;
    let token = |sub: &str, lifetime: u64| {
        let now = gw.clock.now();
        let claims: Value = json!({"iss": "svc.test", "sub": sub, "iat": now, "exp": now + lifetime});
        format!("Authorization: Bearer {}", sign_hs(JWT_SECRET.as_bytes(), &claims))
    };
    let (billing, reports) = (token("svc-billing", 30), token("svc-reports", 300));
    let mut conn = Conn::open(gw.addr()).await;

    assert_eq!(conn.user("/api/x", &[&billing]).await, "svc-billing");
    assert_eq!(conn.user("/api/x", &[&billing]).await, "svc-billing");
    assert_eq!(conn.user("/api/x", &[&reports]).await, "svc-reports");
    assert_eq!(conn.user("/api/x", &[&billing]).await, "svc-billing");
    // One character changed: not the kept token, and not valid.
    let forged = format!("{}A", &billing[..billing.len() - 1]);
    let forged = if forged == billing { format!("{}B", &billing[..billing.len() - 1]) } else { forged };
    assert_eq!(conn.get("/api/x", &[&forged]).await.status, 401);
    // Past `exp`, on the connection that kept it.
    assert_eq!(conn.user("/api/x", &[&billing]).await, "svc-billing");
    gw.advance(Duration::from_secs(31));
    let resp = conn.get("/api/x", &[&billing]).await;
    assert_eq!(resp.status, 401);
    assert!(resp.header("www-authenticate").is_some_and(|c| c.contains("invalid_token")), "{:?}", resp.headers);
    assert_eq!(conn.user("/api/x", &[&reports]).await, "svc-reports");
}

#[tokio::test]
async fn a_kept_api_key_is_refused_once_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::new("app").start().await;
    let up = upstream.authority();
    let gw = Conf::new(&up)
        .route("api_keys", "true")
        .server("state_dir", q(dir.path().to_str().unwrap()))
        .raw(&format!("[[routes]]\npath_prefix = \"/plain/\"\nupstream = \"http://{up}\"\nlogin = \"intranet\"\n"))
        .start()
        .await;
    let cookie = gw.login(&hs_token(&claims_with(json!({})))).await;
    let mint = |name: &'static str| {
        let gw: &Gateway = &gw;
        let cookie = cookie.clone();
        async move {
            let resp = gw
                .client
                .post(gw.url("/sso/api-keys"))
                .header("cookie", cookie)
                .header("content-type", "application/json")
                .body(json!({ "name": name }).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            resp.json::<Value>().await.unwrap()
        }
    };
    let (phone, laptop) = (mint("phone").await, mint("laptop").await);
    let line = |minted: &Value| format!("Authorization: Bearer {}", minted["key"].as_str().unwrap());
    let (phone_key, laptop_key) = (line(&phone), line(&laptop));
    let mut conn = Conn::open(gw.addr()).await;

    assert_eq!(conn.user("/orders", &[&phone_key]).await, "ana@example.com");
    assert_eq!(conn.user("/orders", &[&phone_key]).await, "ana@example.com");
    // A route without API keys does not take the kept one.
    assert_eq!(conn.get("/plain/x", &[&phone_key]).await.status, 401);
    assert_eq!(conn.user("/orders", &[&phone_key]).await, "ana@example.com");

    // Revoked by its owner: the next request on this connection is refused;
    // the other key goes on.
    let id = phone["id"].as_str().unwrap();
    let del = gw.client.delete(gw.url(&format!("/sso/api-keys/{id}"))).header("cookie", &cookie).send().await;
    assert_eq!(del.unwrap().status(), 204);
    assert_eq!(conn.get("/orders", &[&phone_key]).await.status, 401);
    assert_eq!(conn.user("/orders", &[&laptop_key]).await, "ana@example.com");
    assert_eq!(conn.get("/orders", &[&phone_key]).await.status, 401);
}
