//! Several replicas sharing one real Redis (`session.store = "redis"`,
//! DESIGN §1, §2.3): single-use codes, the jti replay cache, generic
//! put/take state and revocations hold across replicas; while Redis is down
//! logins that need it fail closed, existing sessions keep working (the
//! per-request revocation check reads local memory only), `/readyz` says
//! 503, and everything works again once Redis is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use porteiro::auth::store::redis::RedisStore;
use porteiro::auth::store::{Revocation, Store};
use serde_json::{Value, json};
use support::auth::{
    COOKIE, Conf, FakeUpstream, Gateway, RunningUpstream, claims, claims_with, hs_token, json_error, q, random_id,
};
use support::eventually_within;
use support::redis::RedisServer;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const CODE_CLIENT: (&str, &str) = ("app1", "app1-secret-0123456789");
/// How long a revocation may take to reach another replica.
const PROPAGATION: Duration = Duration::from_secs(3);

/// A replica: the `intranet` jwt login on `/`, a `kb` code login on `/kb/`,
/// the admin API, all state in the Redis at `redis_url`.
fn replica(upstream: &RunningUpstream, redis_url: &str) -> Conf {
    Conf::new(&upstream.authority())
        .server("admin_token", q(ADMIN_TOKEN))
        .session("store", q("redis"))
        .session("redis_url", q(redis_url))
        .raw(&format!(
            r#"
[[providers]]
id = "kb"
kind = "code"
login_url = "https://app.test/login"
clients = [{{ client_id = "{}", client_secret = "{}" }}]

[[routes]]
id = "kb"
path_prefix = "/kb/"
upstream = "http://{}"
login = "kb"
"#,
            CODE_CLIENT.0,
            CODE_CLIENT.1,
            upstream.authority()
        ))
}

async fn mint(gw: &Gateway) -> reqwest::Response {
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", CODE_CLIENT.0, CODE_CLIENT.1)));
    let body = json!({"username": "ana.souza", "firstName": "Ana", "lastName": "Souza", "emailId": "ana@example.com"});
    gw.client.post(gw.url("/sso/code")).header("authorization", basic).json(&body).send().await.unwrap()
}

async fn mint_code(gw: &Gateway) -> String {
    let resp = mint(gw).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    v["code"].as_str().unwrap().to_string()
}

async fn redeem(gw: &Gateway, code: &str) -> reqwest::Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", code)
        .append_pair("redirectUrl", "/kb/page")
        .finish();
    gw.navigate(&format!("/sso/authorize?{query}")).send().await.unwrap()
}

fn has_session_cookie(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with(&format!("{COOKIE}=")) && !v.to_str().unwrap().contains("Max-Age=0"))
}

/// Does `cookie` still open a session on `gw`?
async fn session_works(gw: &Gateway, cookie: &str) -> bool {
    let resp = gw.get("/").header("cookie", cookie).send().await.unwrap();
    match resp.status() {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("unexpected {other}"),
    }
}

fn store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::new(server.url().as_bytes(), prefix, 1000, porteiro::clock::Clock::default()).unwrap()
}

async fn wait_store_ready(s: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.ready() {
        assert!(Instant::now() < deadline, "the Redis store never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn store_operations_against_a_real_redis() {
    let server = RedisServer::start();
    let a = store(&server, "t:");
    let b = store(&server, "t:");
    wait_store_ready(&a).await;
    let ttl = Duration::from_secs(60);

    // insert_once: the first caller wins, on whichever replica.
    assert!(a.insert_once("jti:1", ttl).await.unwrap());
    assert!(!a.insert_once("jti:1", ttl).await.unwrap());
    assert!(!b.insert_once("jti:1", ttl).await.unwrap());

    // put on one replica, take on the other: exactly once.
    a.put("relay:x", b"attempt".to_vec(), ttl).await.unwrap();
    assert_eq!(b.take("relay:x").await.unwrap(), Some(b"attempt".to_vec()));
    assert_eq!(a.take("relay:x").await.unwrap(), None);
    assert_eq!(b.take("relay:x").await.unwrap(), None);

    // Short TTLs expire in Redis (by Redis's own, real clock: polled, as
    // porteiro's clock does not move them).
    a.put("short", b"v".to_vec(), Duration::from_millis(100)).await.unwrap();
    assert!(a.insert_once("once", Duration::from_millis(100)).await.unwrap());
    eventually_within(Duration::from_secs(10), "the short keys expire in Redis", || async {
        server.command("EXISTS t:short t:once") == ":0\r\n"
    })
    .await;
    assert_eq!(b.take("short").await.unwrap(), None);
    assert!(b.insert_once("once", Duration::from_millis(100)).await.unwrap());

    // Keys live under the prefix; another prefix is another namespace.
    assert!(server.command("EXISTS t:jti:1").contains(":1"));
    let other = store(&server, "other:");
    assert!(other.insert_once("jti:1", ttl).await.unwrap());

    // A revocation reaches the other replica's local mirror.
    a.revoke(Revocation::Email("Ana@Example.com".into()), 100, ttl).await.unwrap();
    assert!(a.is_revoked("s1", "ana", Some("ana@example.com"), 100), "applied locally at once");
    eventually_within(PROPAGATION, "revocation reaches b", || async {
        b.is_revoked("s2", "ana", Some("ANA@example.com"), 99)
    })
    .await;
    assert!(!b.is_revoked("s3", "ana", Some("ana@example.com"), 101), "later sessions stay valid");
    assert!(!other.is_revoked("s2", "ana", Some("ana@example.com"), 99), "other prefix, other revocations");

    // A store started afterwards catches up from the revocation keys.
    let late = store(&server, "t:");
    wait_store_ready(&late).await;
    assert!(late.is_revoked("s4", "x", Some("ana@example.com"), 50));
}

#[tokio::test]
async fn a_code_is_redeemed_once_across_replicas() {
    let server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let a = replica(&upstream, &server.url()).start().await;
    let b = replica(&upstream, &server.url()).start().await;

    // Minted on A, redeemed on B; then refused on both.
    let code = mint_code(&a).await;
    let resp = redeem(&b, &code).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(has_session_cookie(&resp));
    for gw in [&a, &b] {
        let resp = redeem(gw, &code).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }

    // 50 concurrent redemptions over both replicas: exactly one session.
    let code = mint_code(&b).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let gw = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("code", &code)
                .append_pair("redirectUrl", "/kb/page")
                .finish();
            let resp = support::auth::client()
                .get(format!("{gw}/sso/authorize?{query}"))
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            (resp.status(), has_session_cookie(&resp))
        }));
    }
    let mut sessions = 0;
    for t in tasks {
        let (status, cookie) = t.await.unwrap();
        match status {
            StatusCode::FOUND => {
                assert!(cookie);
                sessions += 1;
            }
            StatusCode::BAD_REQUEST => assert!(!cookie),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(sessions, 1);
}

#[tokio::test]
async fn a_jwt_used_on_one_replica_is_refused_on_the_other() {
    let server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let a = replica(&upstream, &server.url()).start().await;
    let b = replica(&upstream, &server.url()).start().await;

    let token = hs_token(&claims());
    a.login(&token).await;
    let resp = b.callback(&token, "/").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Another token with the same jti is a replay too.
    let jti = random_id();
    b.login(&hs_token(&claims_with(json!({"jti": jti})))).await;
    let resp = a.callback(&hs_token(&claims_with(json!({"jti": jti, "name": "Other"}))), "/").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_revoke_on_one_replica_ends_the_session_on_all() {
    let server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let a = replica(&upstream, &server.url()).start().await;
    let b = replica(&upstream, &server.url()).start().await;

    // Sessions are stateless cookies: one from A opens on B.
    let carla = a.login(&hs_token(&claims_with(json!({"userid": "C-7", "email": "carla@example.com"})))).await;
    let ana = b.login(&hs_token(&claims())).await;
    assert!(session_works(&b, &carla).await);

    let resp = a.revoke(ADMIN_TOKEN, json!({"subject": "C-7"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!session_works(&a, &carla).await, "revoked on A at once");
    eventually_within(PROPAGATION, "B refuses the revoked session", || async { !session_works(&b, &carla).await })
        .await;
    assert!(session_works(&a, &ana).await && session_works(&b, &ana).await, "other sessions stay");

    // A replica started after the revocation loads it before saying ready.
    let c = replica(&upstream, &server.url()).start().await;
    assert!(!session_works(&c, &carla).await, "late replica caught up");
    assert!(session_works(&c, &ana).await);

    // Revoked by email on C: A and B follow.
    let resp = c.revoke(ADMIN_TOKEN, json!({"email": "ANA@example.com"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    for gw in [&a, &b] {
        eventually_within(PROPAGATION, "revocation by email", || async { !session_works(gw, &ana).await }).await;
    }
}

#[tokio::test]
async fn redis_down_fails_logins_closed_and_keeps_sessions() {
    let mut server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let a = replica(&upstream, &server.url()).start().await;
    let b = replica(&upstream, &server.url()).start().await;
    let ana = a.login(&hs_token(&claims())).await;
    let code = mint_code(&a).await;
    let bruno = b.login(&hs_token(&claims_with(json!({"userid": "B-1", "email": "bruno@example.com"})))).await;
    let resp = a.revoke(ADMIN_TOKEN, json!({"subject": "B-1"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    eventually_within(PROPAGATION, "revocation reaches B", || async { !session_works(&b, &bruno).await }).await;

    server.stop();
    for gw in [&a, &b] {
        eventually_within(PROPAGATION, "/readyz turns 503", || async {
            gw.readyz().await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
        // Existing sessions keep working, revocations still hold: the
        // per-request check never touches Redis.
        assert!(session_works(gw, &ana).await);
        assert!(!session_works(gw, &bruno).await);
        // Logins that need the store fail closed with 503.
        let resp = mint(gw).await;
        assert_eq!(json_error(resp, StatusCode::SERVICE_UNAVAILABLE).await, "temporarily_unavailable");
        let resp = redeem(gw, &code).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!has_session_cookie(&resp));
        let resp = gw.callback(&hs_token(&claims()), "/").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let resp = gw.revoke(ADMIN_TOKEN, json!({"subject": "nobody"})).await;
        assert_eq!(json_error(resp, StatusCode::SERVICE_UNAVAILABLE).await, "store_unavailable");
    }

    // Back (empty: nothing was persisted): ready again, logins work again.
    server.resume();
    for gw in [&a, &b] {
        eventually_within(Duration::from_secs(10), "/readyz turns 200", || async {
            gw.readyz().await == StatusCode::OK
        })
        .await;
    }
    eventually_within(Duration::from_secs(10), "minting works again", || async {
        mint(&a).await.status() == StatusCode::OK
    })
    .await;
    let code = mint_code(&a).await;
    let resp = redeem(&b, &code).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(has_session_cookie(&resp));
    let token = hs_token(&claims());
    b.login(&token).await;
    assert_eq!(a.callback(&token, "/").await.status(), StatusCode::UNAUTHORIZED);
    // A revocation made now reaches the other replica over the new subscription.
    let resp = b.revoke(ADMIN_TOKEN, json!({"email": "ana@example.com"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    eventually_within(PROPAGATION, "revocation after reconnect", || async { !session_works(&a, &ana).await }).await;
}

#[tokio::test]
async fn starts_while_redis_is_down_and_becomes_ready_when_it_is_up() {
    let mut server = RedisServer::start();
    server.stop();
    let upstream = FakeUpstream::new("app").start().await;
    let running = porteiro::start(replica(&upstream, &server.url()).config()).await.unwrap();
    let admin = format!("http://{}/readyz", running.admin_addr.unwrap());
    let client = support::auth::client();
    // Not ready, and still not while its connection attempts fail (a few
    // looks at most 100 ms apart: nothing shows the attempts themselves).
    for _ in 0..3 {
        assert_eq!(client.get(&admin).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.resume();
    eventually_within(Duration::from_secs(10), "ready once Redis is up", || async {
        client.get(&admin).send().await.unwrap().status() == StatusCode::OK
    })
    .await;
}

/// `/sso/identifiers` as the code client: `method`, `?identifier=`, JSON body.
async fn identifiers(
    gw: &Gateway,
    method: reqwest::Method,
    identifier: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut url = gw.url("/sso/identifiers");
    if let Some(i) = identifier {
        url = format!("{url}?identifier={i}");
    }
    let mut req = gw.client.request(method, url).basic_auth(CODE_CLIENT.0, Some(CODE_CLIENT.1));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn mapping(user: &str, identifier: &str) -> Value {
    json!({"user_login": user, "client_application_id": CODE_CLIENT.0, "identifier": identifier})
}

async fn mint_by_identifier(gw: &Gateway, identifier: &str) -> reqwest::Response {
    let body = json!({ "user_identifier": identifier });
    gw.client.post(gw.url("/sso/code")).basic_auth(CODE_CLIENT.0, Some(CODE_CLIENT.1)).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn identifier_mappings_are_shared_by_replicas() {
    let server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    // No server.state_dir: with the Redis store the mappings live in Redis.
    let a = replica(&upstream, &server.url()).start().await;
    let b = replica(&upstream, &server.url()).start().await;
    let post = reqwest::Method::POST;

    let added = identifiers(&a, post.clone(), None, Some(json!([mapping("ana.souza", "u-1"), mapping("bob", "u-2")])));
    assert_eq!(added.await, (200, json!({"added": 2, "total": 2})));
    let both = json!([
        {"user_login": "ana.souza", "client_application_id": "app1", "identifier": "u-1"},
        {"user_login": "bob", "client_application_id": "app1", "identifier": "u-2"},
    ]);
    assert_eq!(identifiers(&b, reqwest::Method::GET, None, None).await, (200, both.clone()));
    assert!(server.command("EXISTS porteiro:identifiers:app1").contains(":1"));

    // The same mapping again is a no-op; a conflict (with a stored mapping or
    // inside the batch) is 409 and stores nothing of the batch.
    let again = identifiers(&b, post.clone(), None, Some(json!([mapping("ana.souza", "u-1")]))).await;
    assert_eq!(again, (200, json!({"added": 0, "total": 1})));
    let (status, body) =
        identifiers(&b, post.clone(), None, Some(json!([mapping("carol", "u-3"), mapping("eve", "u-1")]))).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("u-1"), "{body}");
    let (status, _) =
        identifiers(&a, post.clone(), None, Some(json!([mapping("carol", "u-4"), mapping("dave", "u-4")]))).await;
    assert_eq!(status, 409);
    assert_eq!(identifiers(&a, reqwest::Method::GET, None, None).await, (200, both));

    // Two replicas racing to map one identifier to different users: one wins.
    let (x, y) = tokio::join!(
        identifiers(&a, post.clone(), None, Some(json!([mapping("xavier", "u-9")]))),
        identifiers(&b, post.clone(), None, Some(json!([mapping("yara", "u-9")]))),
    );
    let mut statuses = [x.0, y.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{x:?} {y:?}");

    // A code by identifier minted on B, redeemed on A.
    let resp = mint_by_identifier(&b, "u-1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let code = resp.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_string();
    let resp = redeem(&a, &code).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(mint_by_identifier(&a, "u-404").await.status(), StatusCode::NOT_FOUND);

    // Removed on A: gone on B.
    let removed = identifiers(&a, reqwest::Method::DELETE, Some("u-1"), None).await;
    assert_eq!(removed, (200, json!({"removed": "u-1"})));
    assert_eq!(identifiers(&b, reqwest::Method::DELETE, Some("u-1"), None).await.0, 404);
    assert_eq!(mint_by_identifier(&b, "u-1").await.status(), StatusCode::NOT_FOUND);

    // Redis down: 503, not a stale answer.
    drop(server);
    let (status, body) = identifiers(&a, reqwest::Method::GET, None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(mint_by_identifier(&b, "u-2").await.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_unanswering_redis_fails_logins_within_the_timeouts() {
    let server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let a = replica(&upstream, &server.url()).start().await;
    let ana = a.login(&hs_token(&claims())).await;

    // Connections stay open but nothing answers (a partition).
    server.freeze(true);
    let started = Instant::now();
    assert_eq!(mint(&a).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(8), "a login never hangs: {:?}", started.elapsed());
    assert!(session_works(&a, &ana).await, "the per-request path never waits on Redis");
    eventually_within(Duration::from_secs(15), "/readyz turns 503", || async {
        a.readyz().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;

    server.freeze(false);
    eventually_within(Duration::from_secs(15), "/readyz turns 200", || async { a.readyz().await == StatusCode::OK })
        .await;
    eventually_within(Duration::from_secs(10), "minting works again", || async {
        mint(&a).await.status() == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn the_session_index_is_shared_by_replicas() {
    let server = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let a = replica(&upstream, &server.url()).start().await;
    let b = replica(&upstream, &server.url()).start().await;
    let on_a = a.login(&hs_token(&claims())).await;
    let on_b = b.login(&hs_token(&claims())).await;

    // Either replica lists both sessions, whichever started them.
    let list = |gw: &Gateway| {
        let url = gw.admin_url("/admin/sessions?email=ana@example.com");
        let client = gw.client.clone();
        async move {
            let resp = client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()["sessions"].as_array().unwrap().clone()
        }
    };
    let sessions = list(&b).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(list(&a).await.len(), 2);
    // The index expires with the sessions in Redis (a TTL on every entry).
    let ttl = server.command(&format!("PTTL porteiro:session:{}", sessions[0]["session_id"].as_str().unwrap()));
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 0 && ttl <= 15 * 60 * 1000, "{ttl}");

    // Ended by id on B: gone from the index, refused on A.
    let first = sessions.iter().find(|s| s["session_id"].is_string()).unwrap()["session_id"].clone();
    let resp = b.revoke(ADMIN_TOKEN, json!({"session_id": first})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(list(&a).await.len(), 1);
    eventually_within(PROPAGATION, "A refuses the session ended on B", || async {
        !session_works(&a, &on_a).await || !session_works(&a, &on_b).await
    })
    .await;
    assert!(session_works(&a, &on_a).await != session_works(&a, &on_b).await, "exactly one ended");
}
