//! The access log (DESIGN §9): one `porteiro::access` line per answered
//! request with the request id, client address (through trusted proxies),
//! method, host, path without its query, status, route, how the request
//! was let through or why not, the user, upstream time and bytes; nothing
//! secret. `server.access_log = false` turns it off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use serde_json::{Value, json};
use support::auth::{ISSUER, JWT_SECRET, SESSION_SECRET, claims, sign_hs};
use support::{FakeUpstream, GatewayProcess, client, q};

const API_SECRET: &str = "access-log-api-secret-0123456789abcdef";

/// A `jwt` login route `/app/`, a bearer route `/api/`, a public route
/// `/`; the test client (127.0.0.1) is a trusted proxy.
async fn gateway(server_extra: &str) -> (GatewayProcess, support::RunningUpstream) {
    let up = FakeUpstream::new("app").start().await;
    let body = format!(
        "[session]\nsecret = {}\n\n\
         [[providers]]\nid = \"intranet\"\nkind = \"jwt\"\nlogin_url = \"https://login.test/\"\nissuer = {}\nsecret = {}\n\n\
         [[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = \"api.test\"\nsecret = {}\n\n\
         [[routes]]\nid = \"app\"\npath_prefix = \"/app/\"\nupstream = {up}\nlogin = \"intranet\"\n\n\
         [[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = {up}\nbearer = [\"api\"]\n\n\
         [[routes]]\nid = \"pub\"\npath_prefix = \"/\"\nupstream = {up}\npublic = true\n",
        q(SESSION_SECRET),
        q(ISSUER),
        q(JWT_SECRET),
        q(API_SECRET),
        up = q(&up.url()),
    );
    let gw = GatewayProcess::start(&format!("trusted_proxies = [\"127.0.0.1\"]\n{server_extra}"), &body).await;
    (gw, up)
}

/// The access-log line of the answer `resp` (found by its request id).
async fn line_of(gw: &mut GatewayProcess, resp: &reqwest::Response) -> Value {
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let needle = format!("\"request_id\":\"{id}\"");
    let line = gw.wait_for_log(&needle).await;
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["target"], "porteiro::access", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    line["fields"].clone()
}

fn access_lines(gw: &GatewayProcess) -> Vec<String> {
    gw.logs().into_iter().filter(|l| l.contains("porteiro::access")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_a_refused_and_a_login_request_each_get_their_line() {
    let (mut gw, _up) = gateway("").await;

    // Proxied on a public route, through a trusted proxy, with a query.
    let resp = client()
        .get(gw.url("/page?token=QUERY-SECRET-0123456789"))
        .header("host", "app.test")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = line_of(&mut gw, &resp).await;
    let bytes = resp.bytes().await.unwrap().len();
    let upstream_ms: f64 = line["upstream_ms"].as_str().unwrap().parse().unwrap();
    assert!(upstream_ms > 0.0, "{line}");
    let expected = json!({
        "request_id": line["request_id"], "client": "203.0.113.9", "method": "GET", "host": "app.test",
        "path": "/page", "status": 200, "route": "pub", "auth": "public", "user": "-",
        "upstream_ms": line["upstream_ms"], "bytes": bytes.to_string(),
    });
    assert_eq!(line, expected);

    // Refused: an expired bearer token, from the test client itself.
    let now = support::now();
    let expired = sign_hs(API_SECRET.as_bytes(), &json!({"iss": "api.test", "sub": "svc", "exp": now - 600}));
    let resp = client().post(gw.url("/api/orders?x=1")).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let line = line_of(&mut gw, &resp).await;
    let body = resp.bytes().await.unwrap().len();
    let expected = json!({
        "request_id": line["request_id"], "client": "127.0.0.1", "method": "POST", "host": gw.addr.to_string(),
        "path": "/api/orders", "status": 401, "route": "api", "auth": "refused:expired", "user": "-",
        "upstream_ms": "-", "bytes": body.to_string(),
    });
    assert_eq!(line, expected);

    // A login: the callback with its token in the query.
    let token = sign_hs(JWT_SECRET.as_bytes(), &claims());
    let resp = client().get(gw.url(&format!("/sso/callback?jwt={token}&redirectUrl=/app/x"))).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let line = line_of(&mut gw, &resp).await;
    let expected = json!({
        "request_id": line["request_id"], "client": "127.0.0.1", "method": "GET", "host": gw.addr.to_string(),
        "path": "/sso/callback", "status": 302, "route": "-", "auth": "public", "user": "ana@example.com",
        "upstream_ms": "-", "bytes": "0",
    });
    assert_eq!(line, expected);

    // With the session: proxied as `session`, the user named.
    let resp = client().get(gw.url("/app/x")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let line = line_of(&mut gw, &resp).await;
    assert_eq!(
        (&line["route"], &line["auth"], &line["user"]),
        (&json!("app"), &json!("session"), &json!("ana@example.com"))
    );
    // Without it, a navigation is sent to log in; a replayed token refused.
    let resp = client().get(gw.url("/app/x")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let line = line_of(&mut gw, &resp).await;
    assert_eq!((&line["route"], &line["auth"]), (&json!("app"), &json!("refused:no_session")));
    let resp = client().get(gw.url(&format!("/sso/callback?jwt={token}"))).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let line = line_of(&mut gw, &resp).await;
    assert_eq!((&line["status"], &line["auth"], &line["user"]), (&json!(401), &json!("refused:replayed"), &json!("-")));

    // Nothing of the query, the token or the cookie in any access line.
    let cookie_value = cookie.split_once('=').unwrap().1;
    for l in access_lines(&gw) {
        for secret in
            ["QUERY-SECRET", "?", &token[token.len() - 20..], &expired[expired.len() - 20..], &cookie_value[..20]]
        {
            assert!(!l.contains(secret), "{secret:?} in {l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_false_turns_it_off() {
    let (mut gw, _up) = gateway("access_log = false").await;
    let resp = client().get(gw.url("/page")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().get(gw.url("/api/x")).bearer_auth("junk").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Every line written: the process has stopped and said so last.
    gw.signal("TERM");
    gw.wait_exit(support::PATIENCE).await;
    gw.wait_for_log("\"stopped\"").await;
    assert!(gw.logs().iter().any(|l| l.contains("bearer token refused")), "{}", gw.logs().join("\n"));
    assert_eq!(access_lines(&gw), Vec::<String>::new());
}
