//! README: "Logs never contain tokens, cookies or secrets." For each kind
//! of login (jwt, code, oidc, saml, bearer) the real binary runs a whole
//! login and a few hostile requests with `RUST_LOG=debug`; then its stderr
//! is searched for every secret, token, code, cookie value, state and SAML
//! message the test saw or configured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};
use support::{ConfigFile, PATIENCE, client};

const SESSION_SECRET: &str = "hygiene-session-secret-S3SS10N-0123456789";
const ADMIN_TOKEN: &str = "hygiene-admin-token-ADM1N-0123456789";

/// The binary, logging JSON at debug level to a pipe the test reads.
struct Proc {
    child: tokio::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Reads stderr until the process closes it.
    reader: tokio::task::JoinHandle<()>,
    _config: ConfigFile,
}

impl Proc {
    /// `text` must have `[server]` first; JSON logs are switched on here.
    async fn start(text: &str) -> Proc {
        assert!(text.starts_with("[server]\n"), "{text}");
        let config = ConfigFile::new(&text.replacen("[server]\n", "[server]\nlog_format = \"json\"\n", 1));
        let mut child = support::porteiro_command("debug").args(["--config", config.path_str()]).spawn().unwrap();
        let (logs, reader) = support::collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + PATIENCE;
        let listening = loop {
            if let Some(l) = logs.lock().unwrap().iter().find(|l| l.contains("porteiro listening")) {
                break l.clone();
            }
            assert!(Instant::now() < deadline, "not listening:\n{}", logs.lock().unwrap().join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let fields = &serde_json::from_str::<Value>(&listening).unwrap()["fields"];
        let addr = fields["addr"].as_str().unwrap().parse().unwrap();
        let admin = fields["admin"].as_str().unwrap().strip_prefix("Some(").unwrap().strip_suffix(')').unwrap();
        let p = Proc { child, addr, admin: admin.parse().unwrap(), logs, reader, _config: config };
        let ready = format!("http://{}/readyz", p.admin);
        while !client().get(&ready).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            assert!(Instant::now() < deadline, "not ready:\n{}", p.logs.lock().unwrap().join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the process (so every line is written) and checks that no
    /// log line, access-log lines included, contains any of `secrets`, nor
    /// a 12-character piece of one, and that no access-log line carries a
    /// query string.
    async fn assert_clean(mut self, secrets: &[String]) {
        // Every line: SIGTERM lets porteiro flush its log writer; then the
        // process is gone and its stderr read to the end.
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("exited in time").unwrap();
        assert_eq!(status.code(), Some(0));
        tokio::time::timeout(PATIENCE, &mut self.reader).await.expect("stderr closed").unwrap();
        let logs = self.logs.lock().unwrap().join("\n");
        assert!(logs.lines().count() > 5, "too few log lines to mean anything:\n{logs}");
        let access: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "porteiro::access")
            .collect();
        assert!(access.len() >= 3, "too few access-log lines:\n{logs}");
        for line in &access {
            let path = line["fields"]["path"].as_str().unwrap();
            assert!(!path.contains('?') && !line.to_string().contains("redirectUrl"), "a query is logged: {line}");
        }
        for secret in secrets {
            assert!(secret.len() >= 12, "too short to search for: {secret:?}");
            let pieces: Vec<&str> = (0..=secret.len() - 12).step_by(6).map(|i| &secret[i..i + 12]).collect();
            for piece in pieces {
                let hit = logs.lines().find(|l| l.contains(piece));
                assert!(hit.is_none(), "{piece:?} (of {secret:?}) is in the logs:\n{}", hit.unwrap_or_default());
            }
        }
    }
}

/// The secret parts of a JWT: the whole token, and its signature.
fn jwt_secrets(token: &str) -> Vec<String> {
    vec![token.to_string(), token.rsplit('.').next().unwrap().to_string()]
}

/// Values of every cookie `resp` sets.
fn cookie_values(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().unwrap().split(';').next().unwrap().split_once('=').map(|(_, v)| v.to_string()))
        .filter(|v| v.len() >= 12)
        .collect()
}

fn server(extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN_TOKEN}\"\n{extra}\n\n\
         [session]\nsecret = \"{SESSION_SECRET}\"\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_login_and_hostile_tokens_leave_no_secret_in_the_logs() {
    let up = support::FakeUpstream::new("app").start().await;
    let jwt_secret = "hygiene-jwt-secret-J3T-0123456789abcdef";
    let gw = Proc::start(&format!(
        "{}[[providers]]\nid = \"intranet\"\nkind = \"jwt\"\nlogin_url = \"https://login.test/\"\nissuer = \"{}\"\n\
         secret = \"{jwt_secret}\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\nlogin = \"intranet\"\n",
        server(""),
        support::auth::ISSUER,
        up.url()
    ))
    .await;
    let mut secrets = vec![jwt_secret.to_string(), SESSION_SECRET.to_string(), ADMIN_TOKEN.to_string()];
    let sign = |claims: &Value| support::auth::sign_hs(jwt_secret.as_bytes(), claims);
    let token = sign(&support::auth::claims());
    let now = support::auth::now();
    let hostile = [
        token.clone(),                                                                           // replayed
        sign(&support::auth::claims_with(json!({"iat": now - 500, "exp": now - 400}))),          // expired
        support::auth::sign_hs(b"wrong-secret-0123456789abcdefghijk", &support::auth::claims()), // forged
        sign(&support::auth::claims_with(json!({"iss": "evil.test"}))),                          // wrong issuer
        format!("{}.{}", &token[..token.len() / 2], "x".repeat(40)),                             // malformed
    ];
    let callback = |t: String| client().get(gw.url(&format!("/sso/callback?jwt={t}&redirectUrl=/x"))).send();
    let resp = callback(token.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cookies = cookie_values(resp.headers());
    assert!(!cookies.is_empty());
    let cookie = format!("{}={}", support::auth::COOKIE, cookies[0]);
    assert_eq!(client().get(gw.url("/x")).header("cookie", &cookie).send().await.unwrap().status(), StatusCode::OK);
    for t in &hostile {
        assert_eq!(callback(t.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED, "{t}");
    }
    // A tampered cookie, a wrong admin token, a logout.
    let tampered = format!("{cookie}AAAA");
    assert_eq!(
        client().get(gw.url("/x")).header("cookie", &tampered).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong_admin = "Bearer not-the-admin-token-0123456789";
    let resp = client()
        .post(format!("http://{}/admin/revoke", gw.admin))
        .header("authorization", wrong_admin)
        .json(&json!({"email": "x@y.z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client()
        .post(format!("http://{}/admin/revoke", gw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": "ana@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    client().get(gw.url("/sso/logout")).header("cookie", &cookie).send().await.unwrap();

    secrets.extend(hostile.iter().flat_map(|t| jwt_secrets(t)));
    secrets.extend(cookies);
    secrets.push("not-the-admin-token-0123456789".into());
    gw.assert_clean(&secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_login_and_hostile_calls_leave_no_secret_in_the_logs() {
    let up = support::FakeUpstream::new("app").start().await;
    let client_secret = "hygiene-client-secret-C0DE-0123456789";
    let gw = Proc::start(&format!(
        "{}[[providers]]\nid = \"kb\"\nkind = \"code\"\nlogin_url = \"https://app.test/login\"\n\
         clients = [{{ client_id = \"app1\", client_secret = \"{client_secret}\" }}]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\nlogin = \"kb\"\n",
        server(""),
        up.url()
    ))
    .await;
    let body = json!({"username": "ana", "firstName": "Ana", "lastName": "Souza", "emailId": "ana@example.com"});
    let mint =
        |secret: &'static str| client().post(gw.url("/sso/code")).basic_auth("app1", Some(secret)).json(&body).send();
    let code = mint(client_secret).await.unwrap().json::<Value>().await.unwrap()["code"].as_str().unwrap().to_string();
    let redeem = |code: String| client().get(gw.url(&format!("/sso/authorize?code={code}&redirectUrl=/kb"))).send();
    let resp = redeem(code.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cookies = cookie_values(resp.headers());
    assert!(!cookies.is_empty());
    // The same code again, a made-up one, a wrong client secret.
    assert_eq!(redeem(code.clone()).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let made_up = "MadeUpCodeValue0123456789abcdefghijkl".to_string();
    assert_eq!(redeem(made_up.clone()).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let wrong = "wrong-client-secret-W0NG-0123456789";
    assert_eq!(mint(wrong).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let mut secrets =
        vec![client_secret.to_string(), SESSION_SECRET.into(), ADMIN_TOKEN.into(), code, made_up, wrong.into()];
    secrets.extend(cookies);
    gw.assert_clean(&secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_calls_leave_no_token_in_the_logs() {
    let up = support::FakeUpstream::new("app").start().await;
    let api_secret = "hygiene-api-secret-B3AR3R-0123456789";
    let gw = Proc::start(&format!(
        "{}[[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = \"api.test\"\nsecret = \"{api_secret}\"\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\nbearer = [\"api\"]\n",
        server(""),
        up.url()
    ))
    .await;
    let now = support::auth::now();
    let claims = |exp: u64| json!({"iss": "api.test", "sub": "svc-1", "exp": exp});
    let good = support::auth::sign_hs(api_secret.as_bytes(), &claims(now + 60));
    let expired = support::auth::sign_hs(api_secret.as_bytes(), &claims(now - 600));
    let forged = support::auth::sign_hs(b"forged-secret-0123456789abcdefghij", &claims(now + 60));
    let call = |auth: String| client().get(gw.url("/x")).header("authorization", auth).send();
    assert_eq!(call(format!("Bearer {good}")).await.unwrap().status(), StatusCode::OK);
    for bad in [&expired, &forged] {
        assert_eq!(call(format!("Bearer {bad}")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let basic = "Basic aHlnaWVuZS11c2VyOmh5Z2llbmUtcGFzc3dvcmQtMDEyMzQ1";
    assert_eq!(call(basic.into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let junk = "Bearer junk-token-with-no-dots-0123456789";
    assert_eq!(call(junk.into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let mut secrets = vec![api_secret.to_string(), basic.into(), junk.into()];
    for t in [&good, &expired, &forged] {
        secrets.extend(jwt_secrets(t));
    }
    gw.assert_clean(&secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_login_and_hostile_answers_leave_no_secret_in_the_logs() {
    use support::oidc::{Browser, CALLBACK, PUBLIC_URL, TestIdp};
    let idp = TestIdp::builder().start().await;
    let up = support::FakeUpstream::new("app").start().await;
    let gw = Proc::start(&format!(
        "{}{}",
        server(&format!("public_url = \"{PUBLIC_URL}\"")),
        support::oidc::idp_config(&idp, &up.url(), "")
    ))
    .await;
    let browser = Browser::new(gw.addr);
    let to_idp = browser.start_login(&format!("{PUBLIC_URL}/orders")).await;
    let state = to_idp.location_param("state").unwrap();
    let back = browser.follow(&to_idp).await;
    let code = back.location().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let replay = browser.snapshot();
    let done = browser.follow(&back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(done.sets_session());
    // The answer again, a forged state, and a code without state.
    assert_eq!(replay.follow(&back).await.status, StatusCode::BAD_REQUEST);
    let forged = browser.get(&format!("{CALLBACK}?code={code}&state=ForgedState0123456789abcdef")).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert_eq!(browser.get(&format!("{CALLBACK}?code={code}")).await.status, StatusCode::BAD_REQUEST);
    // Back-channel logout: a hostile logout token (a nonce), then a good one.
    let logout = |extra: Value| {
        let mut claims = json!({
            "iss": idp.issuer, "aud": idp.client_id(), "iat": support::now(), "jti": "hygiene-jti-0123456789",
            "sub": "user-4711-ana", "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        idp.signing_key().sign(&claims)
    };
    let (hostile, good) = (logout(json!({"nonce": "hygiene-nonce-0123456789"})), logout(json!({})));
    for (token, status) in [(&hostile, StatusCode::BAD_REQUEST), (&good, StatusCode::OK)] {
        let resp = client()
            .post(gw.url("/sso/backchannel-logout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("logout_token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
    }

    let mut secrets = vec![support::oidc::IDP_CLIENT_SECRET.to_string(), SESSION_SECRET.into(), code, state];
    // Each token's payload and signature (the header is any ES256 token's).
    for token in [&hostile, &good] {
        secrets.extend(token.split('.').skip(1).map(str::to_string));
    }
    secrets.extend(replay.cookies(support::oidc::PUBLIC_HOST).into_iter().map(|c| c.value).filter(|v| v.len() >= 12));
    secrets.extend(browser.cookies(support::oidc::PUBLIC_HOST).into_iter().map(|c| c.value).filter(|v| v.len() >= 12));
    // The nonce and PKCE challenge the IdP received.
    let call = &idp.authorize_calls()[0];
    secrets.extend(["nonce", "code_challenge"].iter().map(|p| call.param(p).unwrap().to_string()));
    gw.assert_clean(&secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saml_login_and_hostile_answers_leave_no_secret_in_the_logs() {
    use support::saml::{BROWSER, Jar, Setup, attempt_jar};
    // The IdP reads the SP metadata from the in-process porteiro Setup
    // starts; the binary is the same SP (same public_url) on its own port.
    let saml = Setup::new().public_url("http://clockin.test").start().await;
    // Its config listens on port 0 already.
    let gw = Proc::start(&saml.toml).await;
    let c = support::saml::client();
    let post = |browser: &Jar, response: &str, relay: &str| {
        let mut req = c
            .post(gw.url("/sso/saml/acs"))
            .header("accept", BROWSER)
            .form(&[("SAMLResponse", response), ("RelayState", relay)]);
        if let Some(cookies) = browser.header_if_any() {
            req = req.header("cookie", cookies);
        }
        req.send()
    };
    let browser = attempt_jar();
    let begun = saml.begin_at(&gw.url(""), &browser, "/timesheets").await;
    let attempt_cookies: Vec<String> = browser.cookies().into_iter().map(|(_, v)| v).collect();
    let answer = saml.idp_answer(&begun, &[]).await;
    let resp = post(&browser, &answer.saml_response, &answer.relay_state).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap());
    let cookies = cookie_values(resp.headers());
    // The same answer again; a tampered one on a fresh login.
    assert_eq!(
        post(&browser, &answer.saml_response, &answer.relay_state).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let other = saml.begin_at(&gw.url(""), &browser, "/").await;
    let second = saml.idp_answer(&other, &[]).await;
    let evil = support::saml::encode(&second.xml().replace(support::saml::USER_EMAIL, "mallory@clockin.example"));
    assert_eq!(post(&browser, &evil, &second.relay_state).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let session_secret =
        saml.toml.lines().find_map(|l| l.strip_prefix("secret = ")).unwrap().trim_matches('"').to_string();
    let mut secrets = vec![session_secret, answer.relay_state.clone(), second.relay_state.clone()];
    // The posted messages, and pieces of their signatures.
    for msg in [&answer.saml_response, &evil] {
        secrets.push(msg[msg.len() / 2..msg.len() / 2 + 40].to_string());
    }
    for xml in [answer.xml(), second.xml()] {
        secrets.push(
            support::saml::text_of(&xml, "SignatureValue").unwrap().trim().replace(['\n', '\r'], "")[..40].to_string(),
        );
    }
    secrets.extend(attempt_cookies);
    secrets.extend(cookies);
    gw.assert_clean(&secrets).await;
}
