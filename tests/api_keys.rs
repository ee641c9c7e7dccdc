//! API keys (DESIGN §2.6, README "API keys (Carol / Clock In)") and the
//! session index (§3, §5) on one porteiro: a signed-in user mints a key
//! that keeps working after the session ends and until it is revoked; the
//! hostile ways in (cross-site and non-JSON mints, foreign origins, keys of
//! another provider, altered keys, a key as a cookie, the key past the
//! limit) are refused; lists never carry key material; keys and the
//! session index survive a restart with `state_dir`; the admin API lists
//! sessions and ends them by id or by the OpenID provider's `sid`. The
//! two-replica Redis cases are in tests/api_keys_replicas.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::auth::{
    COOKIE, Conf, FakeUpstream, Gateway, JWT_SECRET, Jar, RunningUpstream, claims, claims_with, hs_token, json_error,
    q, sign_hs,
};
use support::{Echo, GatewayProcess, eventually};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const PARTNER_SECRET: &str = "partner-jwt-secret-0123456789abcdefgh";

/// The `intranet` jwt login on `/` with API keys, a `partner` jwt login on
/// `/partner/` with API keys, and `/plain/` (intranet, no API keys); keys
/// in `state_dir`.
fn conf(upstream: &RunningUpstream, state_dir: &std::path::Path) -> Conf {
    let up = upstream.authority();
    Conf::new(&up)
        .route("api_keys", "true")
        .server("admin_token", q(ADMIN_TOKEN))
        .server("state_dir", q(state_dir.to_str().unwrap()))
        .raw(&format!(
            r#"
[[providers]]
id = "partner"
kind = "jwt"
login_url = "https://login.partner.test/sso"
issuer = "partner.test"
secret = "{PARTNER_SECRET}"

[[routes]]
id = "partner"
path_prefix = "/partner/"
upstream = "http://{up}"
login = "partner"
api_keys = true

[[routes]]
id = "plain"
path_prefix = "/plain/"
upstream = "http://{up}"
login = "intranet"
"#
        ))
}

async fn mint_with(gw: &Gateway, cookie: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
    let mut req = gw.client.post(gw.url("/sso/api-keys")).header("cookie", cookie).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Mints a key named `name`; asserts the `201` and returns its JSON.
async fn mint(gw: &Gateway, cookie: &str, name: &str) -> Value {
    let body = json!({ "name": name }).to_string();
    let resp = mint_with(gw, cookie, &[("content-type", "application/json")], &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.unwrap()
}

async fn with_key(gw: &Gateway, path: &str, key: &str) -> reqwest::Response {
    gw.get(path).bearer_auth(key).send().await.unwrap()
}

async fn list(gw: &Gateway, cookie: &str) -> (StatusCode, String) {
    let resp = gw.get("/sso/api-keys").header("cookie", cookie).send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let resp = gw.client.get(gw.admin_url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_key_works_after_the_session_ends_until_it_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up, dir.path()).start().await;
    let cookie = gw.login(&hs_token(&claims())).await;

    let minted = mint(&gw, &cookie, "clock-in mobile").await;
    let key = minted["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pk_") && key.len() == 46, "{key}");
    assert_eq!(minted["name"], "clock-in mobile");
    assert!(minted["id"].as_str().unwrap().starts_with("key_"));
    assert!(minted["created_at"].as_u64().unwrap() >= support::now() - 5);

    // The key reaches the upstream as its owner, and is not passed on.
    let resp = with_key(&gw, "/orders", &key).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = Echo::from(resp).await;
    assert_eq!(echo.header("x-forwarded-user"), Some("ana@example.com"));
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    assert_eq!(echo.header("x-forwarded-groups"), Some("support,agents"));
    assert_eq!(echo.header("x-name"), Some("Ana Souza"));
    assert_eq!(echo.header("authorization"), None, "the key never reaches the upstream");

    // The session ends (logout), then a day passes: the key still works.
    let out = gw.get("/sso/logout").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(gw.get("/orders").header("cookie", &cookie).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    gw.advance(Duration::from_secs(2 * 24 * 3600));
    assert_eq!(with_key(&gw, "/orders", &key).await.status(), StatusCode::OK);

    // The owner signs in again, lists and revokes it.
    let cookie = gw.login(&hs_token(&support::auth::claims_at(gw.clock.now()))).await;
    let (status, body) = list(&gw, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(listed["keys"][0]["id"], minted["id"]);
    assert_eq!(listed["keys"][0]["provider"], "intranet");
    assert!(listed["keys"][0]["last_used_at"].as_u64().is_some(), "the use was recorded: {body}");
    assert!(!body.contains(&key) && !body.contains(&key[3..]), "no key material in the list");

    let id = minted["id"].as_str().unwrap();
    let del = gw.client.delete(gw.url(&format!("/sso/api-keys/{id}"))).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let resp = with_key(&gw, "/orders", &key).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(up.hits(), 2, "only the two accepted requests reached the upstream");

    assert_eq!(gw.count("porteiro_api_keys_total{event=\"minted\"}").await, 1.0);
    assert_eq!(gw.count("porteiro_api_keys_total{event=\"used\"}").await, 2.0);
    assert_eq!(gw.count("porteiro_api_keys_total{event=\"revoked\"}").await, 1.0);
    assert_eq!(gw.count("porteiro_api_key_refusals_total{reason=\"revoked\"}").await, 1.0);
}

#[tokio::test]
async fn hostile_mints_and_uses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up, dir.path()).start().await;
    let cookie = gw.login(&hs_token(&claims())).await;
    let json_type = ("content-type", "application/json");
    let body = json!({"name": "x"}).to_string();

    // No session.
    let resp = gw.client.post(gw.url("/sso/api-keys")).header(json_type.0, json_type.1).body(body.clone());
    assert_eq!(json_error(resp.send().await.unwrap(), StatusCode::UNAUTHORIZED).await, "unauthorized");
    // What a cross-site HTML form can send: never JSON.
    for ct in ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"] {
        let resp = mint_with(&gw, &cookie, &[("content-type", ct)], "name=x").await;
        assert_eq!(json_error(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE).await, "json_required", "{ct}");
    }
    // A foreign origin, or a browser saying the request is cross-site.
    let evil = [json_type, ("origin", "https://evil.test")];
    assert_eq!(json_error(mint_with(&gw, &cookie, &evil, &body).await, StatusCode::FORBIDDEN).await, "cross_origin");
    let cross = [json_type, ("sec-fetch-site", "cross-site")];
    assert_eq!(json_error(mint_with(&gw, &cookie, &cross, &body).await, StatusCode::FORBIDDEN).await, "cross_origin");
    assert_eq!(gw.count("porteiro_api_key_refusals_total{reason=\"cross_origin\"}").await, 2.0);
    // porteiro's own page posts with its own origin: accepted.
    let own = format!("http://{}", gw.addr());
    let resp = mint_with(&gw, &cookie, &[json_type, ("origin", &own), ("sec-fetch-site", "same-origin")], &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let first: Value = resp.json().await.unwrap();
    // Bodies that are not exactly {"name": "..."}.
    for bad in [r#"{"name":"a","name":"b"}"#, r#"{"name":"a","admin":true}"#, r#"{"name":""}"#, r#"{"name":5}"#, "[]"] {
        let resp = mint_with(&gw, &cookie, &[json_type], bad).await;
        assert_eq!(json_error(resp, StatusCode::BAD_REQUEST).await, "invalid_request", "{bad}");
    }
    let long = json!({"name": "n".repeat(101)}).to_string();
    assert_eq!(mint_with(&gw, &cookie, &[json_type], &long).await.status(), StatusCode::BAD_REQUEST);

    let key = mint(&gw, &cookie, "phone").await["key"].as_str().unwrap().to_string();
    assert_eq!(with_key(&gw, "/a", &key).await.status(), StatusCode::OK);
    // One character changed: unknown.
    let mut altered = key.clone().into_bytes();
    altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert_eq!(with_key(&gw, "/a", &altered).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(with_key(&gw, "/a", &key[..40]).await.status(), StatusCode::UNAUTHORIZED);
    // Another login provider's application does not take it...
    let resp = with_key(&gw, "/partner/x", &key).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gw.count("porteiro_api_key_refusals_total{reason=\"wrong_provider\"}").await, 1.0);
    // ...nor a route of the same provider without api_keys (a session is needed there).
    assert_eq!(with_key(&gw, "/plain/x", &key).await.status(), StatusCode::UNAUTHORIZED);
    // A partner user's key works on the partner's application only.
    let partner_token = sign_hs(PARTNER_SECRET.as_bytes(), &claims_with(json!({"iss": "partner.test"})));
    let partner = gw.login(&partner_token).await;
    let partner_key = mint(&gw, &partner, "partner app").await["key"].as_str().unwrap().to_string();
    assert_eq!(with_key(&gw, "/partner/x", &partner_key).await.status(), StatusCode::OK);
    assert_eq!(with_key(&gw, "/x", &partner_key).await.status(), StatusCode::UNAUTHORIZED);
    // The partner session (same user name, another provider) sees none of intranet's keys.
    let (_, partner_list) = list(&gw, &partner).await;
    assert_eq!(serde_json::from_str::<Value>(&partner_list).unwrap()["keys"].as_array().unwrap().len(), 1);

    // A key is no session cookie.
    let as_cookie = format!("{COOKIE}={key}");
    let nav = gw.navigate("/a").header("cookie", &as_cookie).send().await.unwrap();
    assert_eq!(nav.status(), StatusCode::FOUND, "a browser is sent to log in");
    assert_eq!(gw.get("/a").header("cookie", &as_cookie).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let on_mint = mint_with(&gw, &as_cookie, &[json_type], &body).await;
    assert_eq!(on_mint.status(), StatusCode::UNAUTHORIZED);

    // Another user cannot revoke it, nor can a foreign origin.
    let bob = gw.login(&hs_token(&claims_with(json!({"email": "bob@example.com", "name": "Bob"})))).await;
    let (_, listed) = list(&gw, &cookie).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let phone = listed["keys"].as_array().unwrap().iter().find(|k| k["name"] == "phone").unwrap();
    let id = phone["id"].as_str().unwrap().to_string();
    let del = |c: &str, origin: Option<&str>| {
        let mut req = gw.client.delete(gw.url(&format!("/sso/api-keys/{id}"))).header("cookie", c.to_string());
        if let Some(o) = origin {
            req = req.header("origin", o.to_string());
        }
        req.send()
    };
    assert_eq!(del(&bob, None).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(del(&cookie, Some("https://evil.test")).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(with_key(&gw, "/a", &key).await.status(), StatusCode::OK, "still alive");

    // The limit: 20 live keys per user (two minted above), the 21st refused.
    let mut keys = vec![first["key"].as_str().unwrap().to_string(), key.clone()];
    for i in 3..=20 {
        keys.push(mint(&gw, &cookie, &format!("device {i}")).await["key"].as_str().unwrap().to_string());
    }
    let over = mint_with(&gw, &cookie, &[json_type], &body).await;
    assert_eq!(json_error(over, StatusCode::CONFLICT).await, "too_many_keys");
    // Lists and the page never carry key material.
    let (_, json_list) = list(&gw, &cookie).await;
    let page = gw.navigate("/sso/api-keys").header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let admin = admin_get(&gw, "/admin/api-keys?email=ana@example.com").await.to_string();
    assert_eq!(serde_json::from_str::<Value>(&json_list).unwrap()["keys"].as_array().unwrap().len(), 20);
    for k in &keys {
        for text in [&json_list, &page, &admin] {
            assert!(!text.contains(&k[3..]), "key material listed");
        }
    }
}

#[tokio::test]
async fn the_page_lists_creates_and_revokes_with_its_own_script_only() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up, dir.path()).start().await;

    // Without a session a browser picks one of the two logins with API
    // keys, signs in, and comes back to the page.
    let resp = gw.navigate("/sso/api-keys").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let choice = resp.text().await.unwrap();
    let start = "/sso/start?provider=intranet&amp;redirectUrl=%2Fsso%2Fapi-keys";
    assert!(choice.contains(start) && choice.contains("provider=partner"), "{choice}");
    let resp = gw.navigate(&start.replace("&amp;", "&")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let to = support::auth::location(&resp);
    assert!(to.starts_with(support::auth::LOGIN_URL), "{to}");
    assert!(to.contains("redirectUrl=%2Fsso%2Fapi-keys"), "{to}");

    let cookie = gw.login(&hs_token(&claims())).await;
    mint(&gw, &cookie, "<b>tablet</b>").await;
    let resp = gw.navigate("/sso/api-keys").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    let page = resp.text().await.unwrap();
    assert!(page.contains("&lt;b&gt;tablet&lt;/b&gt;") && !page.contains("<b>tablet"), "names are escaped");
    assert!(page.contains("data-id=\"key_") && page.contains("id=\"create\"") && page.contains("id=\"copy\""));
    // The one inline script is allowed by its hash, and nothing else is.
    let script = page.split("<script>").nth(1).and_then(|s| s.split("</script>").next()).unwrap();
    let hash = STANDARD.encode(Sha256::digest(script.as_bytes()));
    assert!(csp.contains(&format!("script-src 'sha256-{hash}'")), "{csp}");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(page.matches("<script").count(), 1);
    // The script parses (Node, which the OpenID provider tests need anyway).
    let file = tempfile::NamedTempFile::with_suffix(".js").unwrap();
    std::fs::write(file.path(), script).unwrap();
    let checked = std::process::Command::new("node").arg("--check").arg(file.path()).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
}

/// Logs in on a porteiro process as the default user; the Cookie header value.
async fn process_login(p: &GatewayProcess) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("jwt", &hs_token(&claims()))
        .append_pair("redirectUrl", "/")
        .finish();
    let resp = support::client()
        .get(p.url(&format!("/sso/callback?{query}")))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let jar = Jar::default();
    jar.absorb(&resp);
    jar.header()
}

#[tokio::test]
async fn keys_and_the_session_index_survive_a_restart_with_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::new("app").start().await;
    let body = format!(
        "[session]\nsecret = \"{}\"\n\n[[providers]]\nid = \"intranet\"\nkind = \"jwt\"\n\
         login_url = \"https://login.test/\"\nissuer = \"{}\"\nsecret = \"{JWT_SECRET}\"\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\nlogin = \"intranet\"\napi_keys = true\n",
        support::auth::SESSION_SECRET,
        support::auth::ISSUER,
        up.url()
    );
    let server = format!("admin_token = \"{ADMIN_TOKEN}\"\nstate_dir = {}", q(dir.path().to_str().unwrap()));
    let client = support::client();
    let mint_on = |p: &GatewayProcess, cookie: &str, name: &str| {
        client
            .post(p.url("/sso/api-keys"))
            .header("cookie", cookie.to_string())
            .header("content-type", "application/json")
            .body(json!({ "name": name }).to_string())
            .send()
    };

    let mut first = GatewayProcess::start(&server, &body).await;
    let cookie = process_login(&first).await;
    let kept: Value = mint_on(&first, &cookie, "kept").await.unwrap().json().await.unwrap();
    let gone: Value = mint_on(&first, &cookie, "gone").await.unwrap().json().await.unwrap();
    let del = client
        .delete(first.url(&format!("/sso/api-keys/{}", gone["id"].as_str().unwrap())))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(20)).await.success());

    let second = GatewayProcess::start(&server, &body).await;
    let get = |key: &str| client.get(second.url("/x")).bearer_auth(key.to_string()).send();
    assert_eq!(get(kept["key"].as_str().unwrap()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(gone["key"].as_str().unwrap()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The session from before the restart is still indexed, and still opens.
    let sessions: Value = client
        .get(second.admin_url("/admin/sessions?email=ana@example.com"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1, "{sessions}");
    let listed: Value =
        client.get(second.url("/sso/api-keys")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = listed["keys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kept"]);
}

#[tokio::test]
async fn admins_list_sessions_and_end_them_by_id_or_user_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up, dir.path()).start().await;
    let first = gw.login(&hs_token(&claims())).await;
    let second = gw.login(&hs_token(&claims())).await;
    let bob = gw.login(&hs_token(&claims_with(json!({"email": "bob@example.com"})))).await;
    let key = mint(&gw, &first, "phone").await["key"].as_str().unwrap().to_string();
    let bob_key = mint(&gw, &bob, "bob's").await["key"].as_str().unwrap().to_string();

    let listed = admin_get(&gw, "/admin/sessions?email=ANA@example.com").await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    assert_eq!(sessions[0]["provider"], "intranet");
    assert_eq!(sessions[0]["subject"], "ana@example.com");
    assert!(sessions[0]["expires_at"].as_u64().unwrap() > sessions[0]["created_at"].as_u64().unwrap());
    let by_subject = admin_get(&gw, "/admin/sessions?subject=ana@example.com").await;
    assert_eq!(by_subject, listed);

    // One session by its id: that one ends, the other stays.
    let id = sessions[0]["session_id"].as_str().unwrap().to_string();
    let resp = gw.revoke(ADMIN_TOKEN, json!({"session_id": id})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let works = |c: &str| {
        let c = c.to_string();
        let gw = &gw;
        async move { gw.get("/x").header("cookie", c).send().await.unwrap().status() == StatusCode::OK }
    };
    let (first_works, second_works) = (works(&first).await, works(&second).await);
    assert!(first_works != second_works, "exactly one of the two sessions ended");
    assert_eq!(admin_get(&gw, "/admin/sessions?email=ana@example.com").await["sessions"].as_array().unwrap().len(), 1);

    // The user by email: every session and key, not bob's.
    let resp = gw.revoke(ADMIN_TOKEN, json!({"email": "ana@example.com"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!((answer["sessions"].as_u64(), answer["api_keys"].as_u64()), (Some(1), Some(1)), "{answer}");
    assert!(!works(&first).await && !works(&second).await);
    assert_eq!(with_key(&gw, "/x", &key).await.status(), StatusCode::UNAUTHORIZED);
    assert!(works(&bob).await);
    assert_eq!(with_key(&gw, "/x", &bob_key).await.status(), StatusCode::OK);
    assert!(admin_get(&gw, "/admin/sessions?email=ana@example.com").await["sessions"].as_array().unwrap().is_empty());
    assert!(admin_get(&gw, "/admin/api-keys?email=ana@example.com").await["api_keys"].as_array().unwrap().is_empty());

    // A key by the admin.
    let bob_keys = admin_get(&gw, "/admin/api-keys?subject=bob@example.com").await;
    let bob_id = bob_keys["api_keys"][0]["id"].as_str().unwrap().to_string();
    let url = gw.admin_url(&format!("/admin/api-keys/{bob_id}"));
    let del = gw.client.delete(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    assert_eq!(with_key(&gw, "/x", &bob_key).await.status(), StatusCode::UNAUTHORIZED);
    let again = gw.client.delete(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // The admin API wants its token, the right method, and one user.
    let no_token = gw.client.get(gw.admin_url("/admin/sessions?email=a@b")).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let wrong = gw.client.post(gw.admin_url("/admin/sessions")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    let two = gw.client.get(gw.admin_url("/admin/sessions?email=a@b&subject=c")).bearer_auth(ADMIN_TOKEN);
    assert_eq!(two.send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(gw.count("porteiro_admin_actions_total{action=\"unauthorized\"}").await, 1.0);
    assert!(gw.count("porteiro_admin_actions_total{action=\"list_sessions\"}").await >= 4.0);
}

#[tokio::test]
async fn an_openid_providers_sid_ends_the_sessions_it_started() {
    use support::oidc::{PUBLIC_URL, SESSION_SECRET, TestIdp, default_user, idp_config};
    let idp = TestIdp::builder().start().await;
    let up = FakeUpstream::new("app").start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC_URL}\"\n\
         admin_token = \"{ADMIN_TOKEN}\"\n\n[session]\nsecret = \"{SESSION_SECRET}\"\n\n{}",
        idp_config(&idp, &up.url(), "")
    );
    let gw = Gateway::start_ready(support::parse_config(&text)).await;
    let sign_in = |sid: &'static str| {
        let (idp, gw) = (&idp, &gw);
        async move {
            let mut user = default_user();
            user["sid"] = json!(sid);
            idp.set_user(user);
            let browser = gw.browser();
            let to_idp = browser.start_login(&format!("{PUBLIC_URL}/orders")).await;
            let back = browser.follow(&to_idp).await;
            let done = browser.follow(&back).await;
            assert!(done.sets_session(), "{}", done.body);
            browser
        }
    };
    let one = sign_in("op-session-1").await;
    let two = sign_in("op-session-2").await;
    let listed = admin_get(&gw, "/admin/sessions?subject=user-4711-ana").await;
    let mut sids: Vec<&str> =
        listed["sessions"].as_array().unwrap().iter().map(|s| s["sid"].as_str().unwrap()).collect();
    sids.sort();
    assert_eq!(sids, ["op-session-1", "op-session-2"], "{listed}");
    assert_eq!(listed["sessions"][0]["provider"], "idp");

    let resp = gw.revoke(ADMIN_TOKEN, json!({"sid": "op-session-1"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["sessions"], 1);
    let status = |b: &support::browser::Browser| {
        let b = b.snapshot();
        async move { b.get_json(&format!("{PUBLIC_URL}/orders")).await.status }
    };
    assert_eq!(status(&one).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&two).await, StatusCode::OK);
    // An unknown sid ends nothing.
    let resp = gw.revoke(ADMIN_TOKEN, json!({"sid": "op-session-9"})).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["sessions"], 0);
    eventually("the other session still works", || async { status(&two).await == StatusCode::OK }).await;
}
