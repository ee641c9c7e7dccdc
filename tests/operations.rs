//! README "Operations" and "Configuration" promises no other test held,
//! mostly against the real binary: `SIGHUP` keeps sessions, replay state
//! and key caches, re-reads TLS certificates, and lets an in-flight request
//! finish on the old config; the config file is found through
//! `$PORTEIRO_CONFIG` or `./gateway.toml`; `porteiro dev-cert --host`
//! makes a certificate for that host; `porteiro_logins_total` and
//! `porteiro_auth_failures_total` count `jwt`, `code` and `bearer` logins
//! with their exact labels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};
use support::auth::{COOKIE, Conf, ISSUER, JwksServer, SigningKey, claims, claims_with, q, random_id};
use support::{FakeUpstream, GatewayProcess, PATIENCE, binary, client, client_builder, metric};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SESSION_SECRET: &str = "operations-session-secret-0123456789";

/// `[session]`, a `jwt` provider `intranet` on the JWKS at `jwks` (ES256),
/// and a protected route `/` to `upstream`; `extra` appended.
fn jwks_body(jwks: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[session]\nsecret = {}\n\n[[providers]]\nid = \"intranet\"\nkind = \"jwt\"\nlogin_url = \"https://login.test/\"\n\
         issuer = {}\njwks_url = {}\nalgorithms = [\"ES256\"]\n\n\
         [[routes]]\nid = \"app\"\npath_prefix = \"/\"\nupstream = {}\nlogin = \"intranet\"\n\n{extra}",
        q(SESSION_SECRET),
        q(ISSUER),
        q(jwks),
        q(upstream)
    )
}

/// `GET /sso/callback?jwt=` as an API client: the status, the session
/// `Cookie` value when one is set, and the JSON error otherwise.
async fn callback(base: &str, token: &str) -> (StatusCode, Option<String>, Option<String>) {
    let resp = client().get(format!("{base}/sso/callback?jwt={token}&redirectUrl=/")).send().await.unwrap();
    let status = resp.status();
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{COOKIE}=")));
    let error = if status.is_client_error() || status.is_server_error() {
        resp.json::<Value>().await.ok().and_then(|v| v["error"].as_str().map(str::to_string))
    } else {
        None
    };
    (status, cookie, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_sessions_replay_state_and_key_caches() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let up = FakeUpstream::new("app").start().await;
    let mut gw = GatewayProcess::start("", &jwks_body(&jwks.url(), &up.url(), "")).await;
    let base = gw.url("");

    let used = key.sign(&claims());
    let (status, cookie, _) = callback(&base, &used).await;
    assert_eq!(status, StatusCode::FOUND);
    let cookie = cookie.expect("a session");
    assert_eq!(jwks.fetches(), 1);

    // A changed config (one more route) is loaded; the key server is gone.
    jwks.take_down();
    let status_route = format!(
        "[[routes]]\nid = \"status\"\npath_prefix = \"/status/\"\nupstream = {}\npublic = true\n",
        q(&up.url())
    );
    gw.rewrite_config("", &jwks_body(&jwks.url(), &up.url(), &status_route));
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    let resp = client().get(gw.url("/status/x")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the new route is live");

    // The session opened before the reload still opens.
    let resp = client().get(gw.url("/x")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echo: support::Echo = resp.json().await.unwrap();
    assert_eq!(echo.header("x-forwarded-email"), Some("ana@example.com"));
    // The token used before the reload is still spent.
    assert_eq!(callback(&base, &used).await, (StatusCode::UNAUTHORIZED, None, Some("replayed".into())));
    // The keys fetched before the reload still verify, with the key server down.
    let (status, cookie, error) = callback(&base, &key.sign(&claims())).await;
    assert_eq!(status, StatusCode::FOUND, "{error:?}");
    assert!(cookie.is_some());
    assert_eq!(jwks.fetches(), 1, "the reload fetched the key set again");
    assert!(gw.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_store_and_listeners_chosen_at_start() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let up = FakeUpstream::new("app").start().await;
    let body = jwks_body(&jwks.url(), &up.url(), "");
    let mut gw = GatewayProcess::start("", &body).await;
    let base = gw.url("");
    let used = key.sign(&claims());
    assert_eq!(callback(&base, &used).await.0, StatusCode::FOUND);

    // A reload naming a Redis store (unreachable) and other listen addresses.
    let redis = support::closed_port();
    let moved = support::closed_port();
    let text = body.replace(
        &format!("secret = {}\n", q(SESSION_SECRET)),
        &format!("secret = {}\nstore = \"redis\"\nredis_url = \"redis://{redis}\"\n", q(SESSION_SECRET)),
    );
    assert_ne!(text, body);
    gw.config.rewrite(&format!(
        "[server]\nlisten = \"{moved}\"\nadmin_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n\n{text}\n"
    ));
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    let logs = gw.logs().join("\n");
    assert!(logs.contains("session.store / session.redis_url / session.redis_prefix changed"), "{logs}");
    assert!(logs.contains("server.listen / server.admin_listen changed"), "{logs}");
    // Still on the in-process store, and on the old address: ready, the
    // spent token still spent, new logins work.
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(callback(&base, &used).await, (StatusCode::UNAUTHORIZED, None, Some("replayed".into())));
    assert_eq!(callback(&base, &key.sign(&claims())).await.0, StatusCode::FOUND);
}

/// A self-signed certificate and key for `host`, written to `dir` as
/// `gateway.crt` / `gateway.key` (write, then rename); the certificate's PEM.
fn write_cert(dir: &std::path::Path, host: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    for (name, text) in [("gateway.crt", cert.cert.pem()), ("gateway.key", cert.key_pair.serialize_pem())] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert.cert.pem()
}

/// A client trusting only `pem`, reaching `addr` as `host`.
fn tls_client(pem: &str, host: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    client_builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .resolve(host, addr)
        .https_only(true)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_tls_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path(), "one.test");
    let tls = format!(
        "tls = {{ cert = {}, key = {} }}",
        q(dir.path().join("gateway.crt").to_str().unwrap()),
        q(dir.path().join("gateway.key").to_str().unwrap())
    );
    let mut gw = GatewayProcess::start(&tls, &support::public_route("app", "builtin:whoami")).await;
    let port = gw.addr.port();
    let old = tls_client(&first, "one.test", gw.addr);
    assert_eq!(old.get(format!("https://one.test:{port}/")).send().await.unwrap().status(), StatusCode::OK);

    // New files at the same paths, the config file untouched: SIGHUP.
    let second = write_cert(dir.path(), "two.test");
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    let new = tls_client(&second, "two.test", gw.addr);
    assert_eq!(new.get(format!("https://two.test:{port}/")).send().await.unwrap().status(), StatusCode::OK);
    // A new connection trusting only the old certificate is refused now.
    let fresh_old = tls_client(&first, "one.test", gw.addr);
    assert!(
        fresh_old.get(format!("https://one.test:{port}/")).send().await.is_err(),
        "still serving the old certificate"
    );
}

/// An upstream that takes one request, says so, and answers `old` only
/// when told to.
async fn held_upstream() -> (String, tokio::sync::oneshot::Receiver<()>, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        arrived_tx.send(()).unwrap();
        released.notified().await;
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nold").await.unwrap();
    });
    (url, arrived, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_lets_an_in_flight_request_finish_on_the_old_config() {
    let (old_url, arrived, release) = held_upstream().await;
    let new = FakeUpstream::new("new").start().await;
    let mut gw = GatewayProcess::start("", &support::public_route("app", &old_url)).await;
    let url = gw.url("/report");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::timeout(PATIENCE, arrived).await.unwrap().unwrap();

    // While the old upstream holds the request, the route moves.
    gw.rewrite_config("", &support::public_route("app", &new.url()));
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    let resp = client().get(gw.url("/after")).send().await.unwrap();
    let echo: support::Echo = resp.json().await.unwrap();
    assert_eq!(echo.upstream, "new");

    // The request that was in flight ends as it began.
    release.notify_one();
    let resp = tokio::time::timeout(PATIENCE, in_flight).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "old");
    assert_eq!(new.seen().iter().filter(|s| s.uri == "/report").count(), 0);
}

// === config file discovery and dev-cert ===

/// Runs `porteiro ARGS` in `dir` with `PORTEIRO_CONFIG` as given.
fn run_in(dir: &std::path::Path, args: &[&str], env: Option<&std::path::Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(binary());
    cmd.args(args).current_dir(dir).env_remove("PORTEIRO_CONFIG").env_remove("RUST_LOG");
    if let Some(path) = env {
        cmd.env("PORTEIRO_CONFIG", path);
    }
    cmd.output().unwrap()
}

const GOOD: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n\n\
                    [[routes]]\npath_prefix = \"/\"\nupstream = \"builtin:whoami\"\npublic = true\n";
const BROKEN: &str = "[server]\nlisten = \"127.0.0.1:0\"\nnot_a_key = 1\n";

#[test]
fn the_config_file_is_found_through_the_environment_or_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let other = elsewhere.path().join("other.toml");
    std::fs::write(&other, GOOD).unwrap();
    let broken = elsewhere.path().join("broken.toml");
    std::fs::write(&broken, BROKEN).unwrap();

    // Nothing anywhere: ./gateway.toml is what is missing.
    let out = run_in(cwd.path(), &["check"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.toml"), "{}", String::from_utf8_lossy(&out.stderr));

    // ./gateway.toml.
    std::fs::write(cwd.path().join("gateway.toml"), GOOD).unwrap();
    let out = run_in(cwd.path(), &["check"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gateway.toml: OK\n"));

    // $PORTEIRO_CONFIG wins over ./gateway.toml (broken here, to tell).
    std::fs::write(cwd.path().join("gateway.toml"), BROKEN).unwrap();
    let out = run_in(cwd.path(), &["check"], Some(&other));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{}: OK\n", other.display())));

    // --config wins over $PORTEIRO_CONFIG.
    let out = run_in(cwd.path(), &["check", "--config", other.to_str().unwrap()], Some(&broken));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_in(cwd.path(), &["check", "--config", broken.to_str().unwrap()], Some(&other));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_a_key"));
}

#[tokio::test]
async fn porteiro_without_arguments_serves_the_gateway_toml_of_its_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("gateway.toml"), GOOD).unwrap();
    let mut child = support::porteiro_command("info").current_dir(cwd.path()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("porteiro listening") {
                return line;
            }
        }
        panic!("porteiro exited without listening");
    })
    .await
    .expect("porteiro listening");
    let fields: Value = serde_json::from_str(&listening).unwrap();
    let addr = fields["fields"]["addr"].as_str().unwrap().to_string();
    let resp = client().get(format!("http://{addr}/anything")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn dev_cert_host_makes_a_certificate_for_that_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_binary(&["dev-cert", "--out", dir.path().to_str().unwrap(), "--host", "helpdesk.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crt = dir.path().join("gateway.crt");
    let tls = format!(
        "tls = {{ cert = {}, key = {} }}",
        q(crt.to_str().unwrap()),
        q(dir.path().join("gateway.key").to_str().unwrap())
    );
    let gw = support::start_gateway(&tls, &support::public_route("app", "builtin:whoami")).await;
    // A client trusting only this certificate accepts it for helpdesk.test.
    let pem = std::fs::read_to_string(&crt).unwrap();
    let c = tls_client(&pem, "helpdesk.test", gw.addr());
    let resp = c.get(format!("https://helpdesk.test:{}/", gw.addr().port())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // And not for a host it was not made for.
    let c = tls_client(&pem, "other.test", gw.addr());
    assert!(c.get(format!("https://other.test:{}/", gw.addr().port())).send().await.is_err());
}

// === login metrics ===

const CODE_CLIENT: (&str, &str) = ("app1", "app1-secret-0123456789");
const API_SECRET: &str = "api-bearer-secret-0123456789abcdef";

fn api_token(changes: Value) -> String {
    let mut c = json!({"iss": "api.test", "sub": "svc-1", "exp": support::auth::now() + 60, "scope": "read"});
    for (k, v) in changes.as_object().unwrap() {
        c[k] = v.clone();
    }
    support::auth::sign_hs(API_SECRET.as_bytes(), &c)
}

#[tokio::test]
async fn logins_and_auth_failures_are_counted_per_provider_and_reason() {
    let upstream = FakeUpstream::new("app").start().await;
    let up = upstream.authority();
    let gw = Conf::new(&up)
        .raw(&format!(
            "[[providers]]\nid = \"kb\"\nkind = \"code\"\nlogin_url = \"https://app.test/login\"\n\
             clients = [{{ client_id = \"{}\", client_secret = \"{}\" }}]\n\n\
             [[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = \"api.test\"\nsecret = \"{API_SECRET}\"\n\
             required_scopes = [\"read\"]\n\n\
             [[routes]]\nid = \"kb\"\npath_prefix = \"/kb/\"\nupstream = \"http://{up}\"\nlogin = \"kb\"\n\n\
             [[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = \"http://{up}\"\nbearer = [\"api\"]\n",
            CODE_CLIENT.0, CODE_CLIENT.1
        ))
        .start()
        .await;
    let m = || async { support::admin_metrics(gw.running.admin_addr.unwrap()).await };
    let logins = |text: &str, provider: &str| metric(text, &support::logins_series(provider));
    let failures = |text: &str, provider: &str, reason: &str| metric(text, &support::failures_series(provider, reason));

    // jwt: one login, then an expired token, a replayed one, a bad signature.
    let token = support::auth::hs_token(&claims());
    gw.login(&token).await;
    let now = support::auth::now();
    for bad in [
        support::auth::hs_token(&claims_with(json!({"iat": now - 200, "exp": now - 100}))),
        token,
        support::auth::sign_hs(b"another-secret-0123456789abcdefgh", &claims_with(json!({"jti": random_id()}))),
    ] {
        assert_eq!(gw.callback(&bad, "/").await.status(), StatusCode::UNAUTHORIZED);
    }

    // code: one login, the same code again, a wrong client.
    let body = json!({"username": "ana", "firstName": "Ana", "lastName": "Souza", "emailId": "ana@example.com"});
    let mint = |secret: &'static str| {
        gw.client.post(gw.url("/sso/code")).basic_auth(CODE_CLIENT.0, Some(secret)).json(&body).send()
    };
    let code = mint(CODE_CLIENT.1).await.unwrap().json::<Value>().await.unwrap()["code"].as_str().unwrap().to_string();
    for expected in [StatusCode::FOUND, StatusCode::BAD_REQUEST] {
        let resp = gw.navigate(&format!("/sso/authorize?code={code}&redirectUrl=/kb/")).send().await.unwrap();
        assert_eq!(resp.status(), expected);
    }
    assert_eq!(mint("wrong-secret-0123456789").await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // bearer: a good token (twice: cached), an expired one, a bad
    // signature, a missing scope.
    let api = |token: String| gw.get("/api/x").bearer_auth(token).send();
    let good = api_token(json!({}));
    for _ in 0..2 {
        assert_eq!(api(good.clone()).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(api(api_token(json!({"exp": now - 100}))).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let forged = support::auth::sign_hs(
        b"not-the-api-secret-0123456789abcd",
        &json!({"iss": "api.test", "sub": "x", "exp": now + 60}),
    );
    assert_eq!(api(forged).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api(api_token(json!({"scope": "write"}))).await.unwrap().status(), StatusCode::FORBIDDEN);

    let text = m().await;
    assert_eq!(logins(&text, "intranet"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "intranet", "expired"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "intranet", "replayed"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "intranet", "bad_signature"), Some(1.0), "{text}");
    assert_eq!(logins(&text, "kb"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "-", "invalid_code"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "-", "invalid_client"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "api", "expired"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "api", "bad_signature"), Some(1.0), "{text}");
    assert_eq!(failures(&text, "api", "insufficient_scope"), Some(1.0), "{text}");
    // A bearer token opens no session: not a login.
    assert_eq!(logins(&text, "api"), None, "{text}");
    // Nothing else was refused.
    let refusals: f64 = text
        .lines()
        .filter(|l| l.starts_with("porteiro_auth_failures_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(refusals, 8.0, "{text}");
}
