//! API keys across two replicas sharing one real Redis (DESIGN §2.6, §3,
//! §5; `session.store = "redis"`): a key minted on replica A works on B
//! with its owner's identity (and never reaches the upstream); revoked on
//! one replica, by its owner or by the admin revoking the user by email, it
//! is refused on the other within one second, and so are that user's
//! sessions, while other users carry on; keys outlive a restart of every
//! replica; while Redis is down a replica still answers the keys it has
//! seen from memory, refuses the others with 503 and cannot mint, and all of
//! it works again once Redis is back, without restarting porteiro; the
//! per-user key limit holds when both replicas mint at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::auth::{Conf, Echo, FakeUpstream, Gateway, RunningUpstream, claims_with, hs_token, q};
use support::redis::RedisServer;
use support::{eventually, eventually_within};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// DESIGN §2.6: a revoked key ends "on every replica within one second".
const WITHIN: Duration = Duration::from_secs(1);
/// The `jwt` provider of [`Conf`].
const PROVIDER: &str = "intranet";

/// A user of the `intranet` provider.
struct User {
    subject: &'static str,
    email: &'static str,
    name: &'static str,
}

const ANA: User = User { subject: "U-ana", email: "ana@example.com", name: "Ana Souza" };
const BRUNO: User = User { subject: "U-bruno", email: "bruno@example.com", name: "Bruno Lima" };

impl User {
    /// A fresh login token (a new `jti` each time: no replay across replicas).
    fn token(&self) -> String {
        hs_token(&claims_with(json!({"userid": self.subject, "email": self.email, "name": self.name})))
    }
}

/// A replica: the `intranet` login on `/` with `api_keys = true`, the admin
/// API, sessions, revocations and keys in `redis`.
fn replica(upstream: &RunningUpstream, redis: &RedisServer) -> Conf {
    Conf::new(&upstream.authority())
        .route("api_keys", "true")
        .server("admin_token", q(ADMIN_TOKEN))
        .session("store", q("redis"))
        .session("redis_url", q(&redis.url()))
}

/// Replicas A and B of `conf`, both ready.
async fn replicas(conf: &Conf) -> (Gateway, Gateway) {
    (conf.start().await, conf.start().await)
}

/// Stops a replica for good: its listeners close, its Redis subscriber ends.
async fn stop(gw: Gateway) {
    let Gateway { running, client, .. } = gw;
    drop(client);
    running.shutdown();
    tokio::time::timeout(Duration::from_secs(10), running.wait()).await.expect("replica stopped in time");
}

/// An answer's status and body text (for failure messages).
async fn answer(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

// === /sso/api-keys ===

/// A minted key: its id and the key itself.
struct Key {
    id: String,
    key: String,
}

/// `POST /sso/api-keys {"name"}` with a session cookie.
async fn mint(gw: &Gateway, cookie: &str, name: &str) -> reqwest::Response {
    gw.client
        .post(gw.url("/sso/api-keys"))
        .header("cookie", cookie)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
}

/// Mints a key, asserting the `201` answer's shape.
async fn mint_key(gw: &Gateway, cookie: &str, name: &str) -> Key {
    let (status, text) = answer(mint(gw, cookie, name).await).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let key = body["key"].as_str().unwrap().to_string();
    let random = key.strip_prefix("pk_").unwrap_or_else(|| panic!("not a pk_ key: {key}"));
    assert!(
        random.len() == 43 && random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not 43 base64url characters: {key}"
    );
    assert_eq!(body["name"], name, "{body}");
    assert!(body["created_at"].as_u64().is_some(), "{body}");
    let id = body["id"].as_str().filter(|id| !id.is_empty()).unwrap_or_else(|| panic!("no id: {body}"));
    Key { id: id.to_string(), key }
}

/// `GET /sso/api-keys` as JSON: the caller's keys.
async fn list_keys(gw: &Gateway, cookie: &str) -> Vec<Value> {
    let (status, text) = answer(gw.get("/sso/api-keys").header("cookie", cookie).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    body["keys"].as_array().unwrap_or_else(|| panic!("no keys list: {body}")).clone()
}

/// The ids of a key listing.
fn ids(keys: &[Value]) -> Vec<&str> {
    keys.iter().map(|k| k["id"].as_str().unwrap()).collect()
}

/// `DELETE /sso/api-keys/{id}` with a session cookie.
async fn delete_key(gw: &Gateway, cookie: &str, id: &str) -> StatusCode {
    gw.client.delete(gw.url(&format!("/sso/api-keys/{id}"))).header("cookie", cookie).send().await.unwrap().status()
}

// === using keys and sessions ===

/// A request with `Authorization: Bearer <key>`.
async fn call(gw: &Gateway, key: &Key) -> reqwest::Response {
    gw.get("/orders/7").bearer_auth(&key.key).send().await.unwrap()
}

/// The key reaches the upstream on `gw` as `user`, and the key itself does not.
async fn assert_works(gw: &Gateway, key: &Key, user: &User) {
    let resp = call(gw, key).await;
    if resp.status() != StatusCode::OK {
        let (status, text) = answer(resp).await;
        panic!("key {} refused on {}: {status} {text}", key.id, gw.base);
    }
    let echo = Echo::from(resp).await;
    assert_eq!(echo.path(), "/orders/7");
    assert_eq!(echo.header("x-forwarded-user"), Some(user.subject));
    assert_eq!(echo.header("x-forwarded-email"), Some(user.email));
    assert_eq!(echo.header("x-forwarded-groups"), Some("support,agents"));
    assert_eq!(echo.header("x-name"), Some(user.name));
    assert_eq!(echo.header("authorization"), None, "the key never reaches the upstream");
}

/// Is the key refused as §2.4 says: `401`, a Bearer challenge with
/// `error="invalid_token"`? Panics on any other answer than 200 or that.
async fn refused(gw: &Gateway, key: &Key) -> bool {
    let resp = call(gw, key).await;
    match resp.status() {
        StatusCode::OK => false,
        StatusCode::UNAUTHORIZED => {
            let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            let challenge = challenge.expect("a WWW-Authenticate challenge");
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            let (_, text) = answer(resp).await;
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"], "invalid_token", "{body}");
            true
        }
        _ => {
            let (status, text) = answer(resp).await;
            panic!("key {}: neither 200 nor 401 but {status} {text}", key.id)
        }
    }
}

async fn assert_refused(gw: &Gateway, key: &Key) {
    assert!(refused(gw, key).await, "key {} still works on {}", key.id, gw.base);
}

/// A JSON answer `503 {"error": "store_unavailable"}`.
async fn assert_store_unavailable(resp: reqwest::Response, what: &str) {
    let (status, text) = answer(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    assert_eq!(body["error"], "store_unavailable", "{what}: {body}");
}

/// Does `cookie` still open a session on `gw` (200), or is it refused (401)?
async fn session_works(gw: &Gateway, cookie: &str) -> bool {
    let resp = gw.get("/orders").header("cookie", cookie).send().await.unwrap();
    match resp.status() {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("session on {}: unexpected {other}", gw.base),
    }
}

// === admin API and metrics ===

/// `GET` an admin API path with the admin token: status and JSON body.
async fn admin_get(gw: &Gateway, path: &str) -> (StatusCode, Value) {
    let resp = gw.client.get(gw.admin_url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let (status, text) = answer(resp).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
}

/// `porteiro_api_keys_total{event}`.
async fn key_events(gw: &Gateway, event: &str) -> f64 {
    gw.count(&format!("porteiro_api_keys_total{{event=\"{event}\"}}")).await
}

/// `porteiro_api_key_refusals_total{reason}`.
async fn key_refusals(gw: &Gateway, reason: &str) -> f64 {
    gw.count(&format!("porteiro_api_key_refusals_total{{reason=\"{reason}\"}}")).await
}

/// `porteiro_admin_actions_total{action}`.
async fn admin_actions(gw: &Gateway, action: &str) -> f64 {
    gw.count(&format!("porteiro_admin_actions_total{{action=\"{action}\"}}")).await
}

// === the tests ===

#[tokio::test]
async fn a_key_minted_on_one_replica_works_on_the_other_and_its_revocation_reaches_both_within_a_second() {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let (a, b) = replicas(&replica(&upstream, &redis)).await;

    // Minted on A with a session from A.
    let ana = a.login(&ANA.token()).await;
    let key = mint_key(&a, &ana, "clock-in mobile").await;

    // Used on B, which never saw it: read from Redis, proxied as Ana.
    assert_works(&b, &key, &ANA).await;
    // And on A, so both replicas now hold it in memory.
    assert_works(&a, &key, &ANA).await;
    assert_works(&b, &key, &ANA).await;
    assert_eq!((key_events(&a, "minted").await, key_events(&b, "minted").await), (1.0, 0.0));
    assert_eq!((key_events(&a, "used").await, key_events(&b, "used").await), (1.0, 2.0));

    // The list, on B with the session from A (a cookie, not replica state):
    // the key's metadata, never the key; its use is recorded off the
    // request path.
    let listed = list_keys(&b, &ana).await;
    assert_eq!(ids(&listed), [key.id.as_str()]);
    assert_eq!(listed[0]["name"], "clock-in mobile");
    assert_eq!(listed[0]["provider"], PROVIDER);
    assert!(!Value::Array(listed.clone()).to_string().contains(&key.key), "the key is shown only once");
    let created = listed[0]["created_at"].as_u64().unwrap();
    eventually("last_used_at is recorded", || async {
        list_keys(&a, &ana).await[0]["last_used_at"].as_u64().is_some_and(|t| t >= created)
    })
    .await;

    // Another user cannot revoke it, on either replica.
    let bruno = b.login(&BRUNO.token()).await;
    assert_eq!(delete_key(&b, &bruno, &key.id).await, StatusCode::NOT_FOUND);
    assert_eq!(delete_key(&a, &bruno, &key.id).await, StatusCode::NOT_FOUND);
    assert_works(&a, &key, &ANA).await;

    assert_eq!(upstream.hits(), 4, "the 4 accepted uses reached the upstream");

    // Ana revokes it on B: refused on B at once, on A within a second,
    // although A answers a key it holds from memory.
    assert_eq!(delete_key(&b, &ana, &key.id).await, StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    assert_refused(&b, &key).await;
    eventually_within(WITHIN, "A refuses the key revoked on B", || async { refused(&a, &key).await }).await;
    let took = revoked.elapsed();
    let hits = upstream.hits();
    // It stays refused, and stays gone from the records.
    assert_refused(&a, &key).await;
    assert_refused(&b, &key).await;
    assert!(list_keys(&a, &ana).await.is_empty());
    assert_eq!(delete_key(&a, &ana, &key.id).await, StatusCode::NOT_FOUND);
    assert_eq!(upstream.hits(), hits, "no refused use reached the upstream");
    assert_eq!(key_events(&b, "revoked").await, 1.0);
    assert_eq!(key_events(&a, "revoked").await, 0.0);
    // Each replica remembers the key as revoked: every refusal says so
    // (A: the poll that saw it refused, then one more; B: two).
    assert_eq!(key_refusals(&a, "revoked").await, 2.0);
    assert_eq!(key_refusals(&b, "revoked").await, 2.0);
    assert_eq!(key_refusals(&a, "unknown").await + key_refusals(&b, "unknown").await, 0.0);
    eprintln!("revocation on B reached A after {took:?}");
}

#[tokio::test]
async fn revoking_a_user_by_email_on_one_replica_ends_their_sessions_and_keys_on_the_other() {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let (a, b) = replicas(&replica(&upstream, &redis)).await;

    // Ana: a session on each replica, a key minted on each, both used on B
    // (so B answers them from memory) and on A.
    let ana_a = a.login(&ANA.token()).await;
    let ana_b = b.login(&ANA.token()).await;
    let ana_keys = [mint_key(&a, &ana_a, "laptop").await, mint_key(&b, &ana_b, "phone").await];
    // Bruno: a session and a key, on B.
    let bruno = b.login(&BRUNO.token()).await;
    let bruno_key = mint_key(&b, &bruno, "bruno's script").await;
    for gw in [&a, &b] {
        for key in &ana_keys {
            assert_works(gw, key, &ANA).await;
        }
        assert_works(gw, &bruno_key, &BRUNO).await;
        assert!(session_works(gw, &ana_a).await && session_works(gw, &ana_b).await && session_works(gw, &bruno).await);
    }

    // The admin API on B sees what both replicas wrote.
    let (status, listed) = admin_get(&b, "/admin/api-keys?email=ana@example.com").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let mut listed_ids: Vec<&str> =
        listed["api_keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    listed_ids.sort_unstable();
    let mut ana_ids: Vec<&str> = ana_keys.iter().map(|k| k.id.as_str()).collect();
    ana_ids.sort_unstable();
    assert_eq!(listed_ids, ana_ids, "{listed}");
    for k in listed["api_keys"].as_array().unwrap() {
        assert_eq!((k["subject"].as_str(), k["email"].as_str()), (Some(ANA.subject), Some(ANA.email)), "{k}");
    }
    let (status, sessions) = admin_get(&b, "/admin/sessions?email=ana@example.com").await;
    assert_eq!(status, StatusCode::OK, "{sessions}");
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2, "{sessions}");

    // Revoked by email on A (the address as the admin typed it).
    let resp = a.revoke(ADMIN_TOKEN, json!({"email": "Ana@Example.com"})).await;
    let (status, text) = answer(resp).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body, json!({"revoked": true, "sessions": 2, "api_keys": 2}));
    let revoked = Instant::now();

    // On A at once; on B, both sessions and both keys within a second.
    for key in &ana_keys {
        assert_refused(&a, key).await;
    }
    assert!(!session_works(&a, &ana_a).await && !session_works(&a, &ana_b).await);
    eventually_within(WITHIN, "B refuses Ana's sessions and keys", || async {
        !session_works(&b, &ana_a).await
            && !session_works(&b, &ana_b).await
            && refused(&b, &ana_keys[0]).await
            && refused(&b, &ana_keys[1]).await
    })
    .await;
    let took = revoked.elapsed();
    for key in &ana_keys {
        assert_refused(&b, key).await;
    }

    // Bruno carries on, on both replicas.
    for gw in [&a, &b] {
        assert_works(gw, &bruno_key, &BRUNO).await;
        assert!(session_works(gw, &bruno).await);
    }

    // Nothing of Ana's is listed any more, by email or subject, on B;
    // Bruno's key is.
    for query in ["email=ana@example.com", "subject=U-ana"] {
        let (status, listed) = admin_get(&b, &format!("/admin/api-keys?{query}")).await;
        assert_eq!((status, listed), (StatusCode::OK, json!({"api_keys": []})), "{query}");
        let (status, sessions) = admin_get(&b, &format!("/admin/sessions?{query}")).await;
        assert_eq!((status, sessions), (StatusCode::OK, json!({"sessions": []})), "{query}");
    }
    let (status, listed) = admin_get(&b, "/admin/api-keys?subject=U-bruno").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["api_keys"][0]["id"], bruno_key.id.as_str(), "{listed}");

    assert_eq!(key_events(&a, "revoked").await, 2.0, "the deleted keys are counted where the admin acted");
    assert_eq!(key_events(&b, "revoked").await, 0.0);
    // B refused each key from memory as revoked, in the poll that saw the
    // revocation and once more after it.
    assert_eq!(key_refusals(&b, "revoked").await, 4.0);
    assert_eq!(admin_actions(&a, "revoke").await, 1.0);
    assert_eq!(admin_actions(&b, "list_api_keys").await, 4.0);
    assert_eq!(admin_actions(&b, "list_sessions").await, 3.0);
    eprintln!("revocation by email on A reached B after {took:?}");
}

#[tokio::test]
async fn keys_outlive_a_restart_of_every_replica() {
    let redis = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let conf = replica(&upstream, &redis);
    let (a, b) = replicas(&conf).await;
    let ana = a.login(&ANA.token()).await;
    let kept = mint_key(&a, &ana, "kept").await;
    let dropped = mint_key(&a, &ana, "dropped").await;
    assert_works(&b, &kept, &ANA).await;
    assert_works(&b, &dropped, &ANA).await;
    assert_eq!(delete_key(&b, &ana, &dropped.id).await, StatusCode::NO_CONTENT);
    assert_refused(&b, &dropped).await;
    let (old_a, old_b) = (a.addr(), b.addr());

    // Both stop; two new replicas start on the same Redis, their memory empty.
    stop(a).await;
    stop(b).await;
    for old in [old_a, old_b] {
        assert!(tokio::net::TcpStream::connect(old).await.is_err(), "{old} still accepts connections");
    }
    let (a, b) = replicas(&conf).await;
    for gw in [&a, &b] {
        assert_works(gw, &kept, &ANA).await;
        assert_refused(gw, &dropped).await;
        assert_eq!(key_events(gw, "used").await, 1.0);
        let refusals = key_refusals(gw, "unknown").await + key_refusals(gw, "revoked").await;
        assert_eq!(refusals, 1.0, "the revoked key, refused once");
    }

    // A new login of the same user lists the old key, and only it.
    let again = b.login(&ANA.token()).await;
    let listed = list_keys(&b, &again).await;
    assert_eq!(ids(&listed), [kept.id.as_str()]);
    assert_eq!(listed[0]["name"], "kept");
    assert_eq!(ids(&list_keys(&a, &again).await), [kept.id.as_str()]);
    // The old session cookie (still valid: sessions are cookies) too.
    assert_eq!(ids(&list_keys(&a, &ana).await), [kept.id.as_str()]);
}

#[tokio::test]
async fn while_redis_is_down_seen_keys_work_others_fail_closed_and_all_recovers_once_it_is_back() {
    let mut redis = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let (a, b) = replicas(&replica(&upstream, &redis)).await;
    let ana = a.login(&ANA.token()).await;
    // k1 used on A only, k2 on B only; k3 used on A, then revoked on A
    // (A still holds it in memory, with the revocation in its mirror).
    let k1 = mint_key(&a, &ana, "k1").await;
    let k2 = mint_key(&a, &ana, "k2").await;
    let k3 = mint_key(&a, &ana, "k3").await;
    assert_works(&a, &k1, &ANA).await;
    assert_works(&b, &k2, &ANA).await;
    assert_works(&a, &k3, &ANA).await;
    assert_eq!(delete_key(&a, &ana, &k3.id).await, StatusCode::NO_CONTENT);
    let never = Key { id: "(never minted)".into(), key: format!("pk_{}", "A".repeat(43)) };
    assert_refused(&a, &never).await;
    let hits = upstream.hits();

    redis.stop();
    for gw in [&a, &b] {
        eventually("/readyz turns 503", || async { gw.readyz().await == StatusCode::SERVICE_UNAVAILABLE }).await;
    }
    // A: the key it has seen still works (from memory, no Redis round trip).
    assert_works(&a, &k1, &ANA).await;
    // k2, minted before the outage but never used on A: A cannot check it.
    assert_store_unavailable(call(&a, &k2).await, "k2 on A").await;
    // Neither can it check a key nobody ever made: 503, not 401.
    assert_store_unavailable(call(&a, &never).await, "an unknown key on A").await;
    // k3, revoked before the outage, stays refused (its revocation is in
    // A's memory), and A remembers it as revoked: 401 every time, never the
    // 503 of a key it cannot check.
    assert_refused(&a, &k3).await;
    assert_refused(&a, &k3).await;
    // B the other way round.
    assert_works(&b, &k2, &ANA).await;
    assert_store_unavailable(call(&b, &k1).await, "k1 on B").await;
    // No minting, listing or revoking without the records; the session
    // itself still works (its check reads memory only).
    assert!(session_works(&a, &ana).await);
    assert_store_unavailable(mint(&a, &ana, "during the outage").await, "mint on A").await;
    assert_store_unavailable(mint(&b, &ana, "during the outage").await, "mint on B").await;
    assert_store_unavailable(a.get("/sso/api-keys").header("cookie", &ana).send().await.unwrap(), "list").await;
    let resp = b.client.delete(b.url(&format!("/sso/api-keys/{}", k1.id))).header("cookie", &ana).send().await.unwrap();
    assert_store_unavailable(resp, "revoke").await;
    assert_eq!(upstream.hits(), hits + 3, "only k1 on A, k2 on B and the session reached the upstream");
    assert_eq!(key_refusals(&a, "unavailable").await, 2.0);
    assert_eq!(key_refusals(&b, "unavailable").await, 1.0);
    assert_eq!(key_events(&a, "minted").await, 3.0);

    // Redis back. The test's redis-server persists nothing, so it comes back
    // empty: the keys minted before are gone from it (the test server's data
    // loss, not porteiro's: a real deployment persists Redis). Recovery is
    // shown with what is made from now on, on the same two replicas.
    redis.resume();
    for gw in [&a, &b] {
        eventually("/readyz turns 200", || async { gw.readyz().await == StatusCode::OK }).await;
    }
    eventually("minting works again", || async { mint(&a, &ana, "probe").await.status() == StatusCode::CREATED }).await;
    let k4 = mint_key(&a, &ana, "k4").await;
    assert_works(&b, &k4, &ANA).await;
    assert_works(&a, &k4, &ANA).await;
    assert_eq!(ids(&list_keys(&b, &ana).await).len(), 2, "probe and k4");
    // The records answer again: an unknown key is 401, not 503.
    assert_refused(&a, &never).await;
    assert_refused(&b, &never).await;
    assert_refused(&a, &k3).await;
    // Revocations travel again, over the replicas' new subscriptions.
    assert_eq!(delete_key(&b, &ana, &k4.id).await, StatusCode::NO_CONTENT);
    eventually_within(WITHIN, "A refuses the key revoked on B after the reconnect", || async {
        refused(&a, &k4).await
    })
    .await;
    assert_refused(&b, &k4).await;
}

#[tokio::test]
async fn the_per_user_key_limit_holds_when_both_replicas_mint_at_once() {
    const LIMIT: usize = 3;
    let redis = RedisServer::start();
    let upstream = FakeUpstream::new("app").start().await;
    let (a, b) = replicas(&replica(&upstream, &redis).session("api_keys_per_user", LIMIT.to_string())).await;

    for user in [&ANA, &BRUNO] {
        let cookie = a.login(&user.token()).await;
        // 6 mints at once, 3 on each replica.
        let mints = (0..2 * LIMIT).map(|i| {
            let gw = if i % 2 == 0 { &a } else { &b };
            let cookie = cookie.clone();
            async move { answer(mint(gw, &cookie, &format!("device {i}")).await).await }
        });
        let answers = futures_util::future::join_all(mints).await;
        let mut minted = Vec::new();
        let mut over = 0;
        for (status, text) in &answers {
            let body: Value = serde_json::from_str(text).unwrap();
            match *status {
                StatusCode::CREATED => minted.push(body["id"].as_str().unwrap().to_string()),
                StatusCode::CONFLICT => {
                    assert_eq!(body["error"], "too_many_keys", "{body}");
                    over += 1;
                }
                other => panic!("{} mint: {other} {body}", user.subject),
            }
        }
        assert_eq!((minted.len(), over), (LIMIT, LIMIT), "{answers:?}");
        minted.sort();
        for gw in [&a, &b] {
            let mut listed: Vec<String> = ids(&list_keys(gw, &cookie).await).into_iter().map(String::from).collect();
            listed.sort();
            assert_eq!(listed, minted, "{}: the keys minted, and only them", user.subject);
        }
    }
    let sum = |x: f64, y: f64| x + y;
    assert_eq!(sum(key_events(&a, "minted").await, key_events(&b, "minted").await), 6.0);
    assert_eq!(sum(key_refusals(&a, "over_limit").await, key_refusals(&b, "over_limit").await), 6.0);

    // A slot freed on B is taken on A, and then the limit holds again.
    let ana = b.login(&ANA.token()).await;
    let first = list_keys(&b, &ana).await[0]["id"].as_str().unwrap().to_string();
    assert_eq!(delete_key(&b, &ana, &first).await, StatusCode::NO_CONTENT);
    mint_key(&a, &ana, "replacement").await;
    let (status, text) = answer(mint(&b, &ana, "one too many").await).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"], "too_many_keys");
}
