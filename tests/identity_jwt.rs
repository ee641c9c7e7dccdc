//! The signed identity header (DESIGN §4, README "Signed identity
//! header"): on a route with `identity_jwt = true` the upstream gets
//! `X-Porteiro-Jwt-Assertion`, which an independent library (Python PyJWT,
//! tests/jwt-verifier/verify.py, fetching `/sso/jwks.json` from the running
//! gateway) verifies; client copies never reach an upstream; replicas with
//! one config serve one key set; assertions signed before a key rotation
//! still verify after it; the signature is made once per session and
//! audience, not per request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::auth::*;

/// `server.public_url` of the tests: the assertions' `iss`.
const PUBLIC_URL: &str = "http://porteiro.test";
const HEADER: &str = "x-porteiro-jwt-assertion";
/// The bearer provider's HS256 secret.
const API_SECRET: &str = "identity-api-secret-0123456789abcdefgh";
const OTHER_SECRET: &str = "another-session-secret-0123456789abcdef";

// === the independent verifier ===

/// The Python that runs the verifier: `PYTHON`, else `python3`; it must
/// import PyJWT with its crypto extra, or the test fails saying so.
fn python() -> &'static str {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = std::process::Command::new(&python)
            .args(["-c", "import jwt, cryptography"])
            .output()
            .map_err(|e| format!("{python} not found ({e})"))?;
        if !probe.status.success() {
            return Err(format!(
                "{python} cannot import PyJWT and cryptography: {}",
                String::from_utf8_lossy(&probe.stderr).lines().last().unwrap_or("")
            ));
        }
        Ok(python)
    });
    match found {
        Ok(p) => p,
        Err(e) => panic!(
            "the identity header is verified by PyJWT and cannot be: {e}\n\
             Install it as .ci/run does:\n  python3 -m pip install -r tests/jwt-verifier/requirements.txt"
        ),
    }
}

/// What PyJWT said of one assertion.
#[derive(Debug)]
enum Verdict {
    Valid { header: Value, claims: Value },
    Invalid(String),
}

impl Verdict {
    fn claims(&self) -> &Value {
        match self {
            Verdict::Valid { claims, .. } => claims,
            Verdict::Invalid(e) => panic!("PyJWT refused the assertion: {e}"),
        }
    }
}

/// Verifies each `(audience, token)` with PyJWT against the key set at
/// `gw`'s `/sso/jwks.json`, fetched over HTTP by the verifier itself.
async fn pyjwt(gw: &Gateway, tokens: &[(&str, &str)]) -> Vec<Verdict> {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwt-verifier/verify.py"))
        .arg(gw.url("/sso/jwks.json"))
        .arg(PUBLIC_URL);
    for (audience, token) in tokens {
        cmd.arg(audience).arg(token);
    }
    // Straight to 127.0.0.1, whatever proxy the environment names.
    for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("PyJWT in time").unwrap();
    assert!(out.status.success(), "verify.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Verdict> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            match v["ok"].as_bool() {
                Some(true) => Verdict::Valid { header: v["header"].clone(), claims: v["claims"].clone() },
                _ => Verdict::Invalid(v["error"].as_str().unwrap_or_default().to_string()),
            }
        })
        .collect();
    assert_eq!(verdicts.len(), tokens.len());
    verdicts
}

/// The claims of `token` without checking anything (for what PyJWT is not
/// asked about: times on a moved clock).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

// === gateways ===

/// The `intranet` login on `/` with `identity_jwt = true`, also taking
/// bearer tokens of `api`; `/plain/` (same login, no signed identity) and
/// a public `/status/`.
fn conf(upstream: &RunningUpstream) -> Conf {
    let up = upstream.authority();
    Conf::new(&up)
        .server("public_url", q(PUBLIC_URL))
        .route("identity_jwt", "true")
        .route("bearer", r#"["api"]"#)
        .route("public_paths", r#"["/assets/"]"#)
        .raw(&format!(
            r#"
[[providers]]
id = "api"
kind = "bearer"
issuer = "api.test"
audience = "api://helpdesk"
secret = "{API_SECRET}"

[[routes]]
id = "plain"
path_prefix = "/plain/"
upstream = "http://{up}"
login = "intranet"
"#
        ))
        .public_route("/status/", &up)
}

/// A login as the `intranet` provider's user `C-5`.
async fn sign_in(gw: &Gateway) -> String {
    gw.login(&hs_token(&claims_with(json!({"userid": "C-5"})))).await
}

/// What the upstream got for `GET path` with `Host: host`, the session
/// `cookie` and `extra` headers.
async fn upstream_sees(gw: &Gateway, path: &str, host: &str, cookie: &str, extra: &[(&str, &str)]) -> Echo {
    let mut req = gw.get(path).header("host", host);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    Echo::from(resp).await
}

/// The key set as served, parsed.
async fn jwks(gw: &Gateway) -> (reqwest::header::HeaderMap, Value) {
    let resp = gw.get("/sso/jwks.json").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.json().await.unwrap())
}

fn kids(set: &Value) -> Vec<String> {
    set["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

// === tests ===

#[tokio::test]
async fn the_upstream_gets_an_assertion_pyjwt_verifies() {
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up).start().await;
    let cookie = sign_in(&gw).await;
    let echo = upstream_sees(&gw, "/tickets/1", "App.Test:8080", &cookie, &[]).await;
    let token = echo.header(HEADER).expect("the signed identity reached the upstream").to_string();

    let (headers, set) = jwks(&gw).await;
    assert_eq!(headers["content-type"], "application/json");
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("max-age=60"), "{cache}");
    let key = &set["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "no private part is published: {key}");

    // The default audience is the request's host name, without port.
    let verdicts = pyjwt(&gw, &[("app.test", &token), ("other.test", &token)]).await;
    let Verdict::Valid { header, claims } = &verdicts[0] else { panic!("{:?}", verdicts[0]) };
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(claims["iss"], PUBLIC_URL);
    assert_eq!(claims["aud"], "app.test");
    assert_eq!(claims["sub"], "C-5");
    assert_eq!(claims["email"], "ana@example.com");
    assert_eq!(claims["name"], "Ana Souza");
    assert_eq!(claims["groups"], json!(["support", "agents"]));
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(exp > iat && exp - iat <= 300, "valid at most 5 minutes: iat {iat}, exp {exp}");
    assert!(iat.abs_diff(gw.clock.now()) <= 5, "issued now");
    let Verdict::Invalid(why) = &verdicts[1] else { panic!("another audience accepted: {:?}", verdicts[1]) };
    assert!(why.contains("Audience"), "{why}");

    // A route without identity_jwt sends none; nor does a public path (no identity).
    let plain = upstream_sees(&gw, "/plain/x", "app.test", &cookie, &[]).await;
    assert_eq!(plain.header(HEADER), None);
    assert_eq!(plain.header("x-forwarded-user"), Some("C-5"));
    let assets = upstream_sees(&gw, "/assets/a.css", "app.test", "", &[]).await;
    assert_eq!(assets.header(HEADER), None);
}

/// A forged assertion in every spelling an upstream framework folds
/// together never arrives: not beside porteiro's own, not on a route
/// without the header, not on public routes and paths.
#[tokio::test]
async fn client_copies_never_reach_the_upstream() {
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up).start().await;
    let cookie = sign_in(&gw).await;
    let forged = hs_token(&json!({"sub": "admin", "aud": "app.test", "iss": PUBLIC_URL}));
    let mut lines = vec!["GET /tickets/1 HTTP/1.1".to_string(), "Host: app.test".into(), format!("Cookie: {cookie}")];
    for name in ["X-Porteiro-Jwt-Assertion", "x_porteiro_jwt_assertion", "X.Porteiro.Jwt.Assertion"] {
        lines.push(format!("{name}: {forged}"));
    }
    lines.push("Connection: close".into());
    for path in ["/tickets/1", "/plain/x", "/assets/a.css", "/status/x"] {
        let mut lines = lines.clone();
        lines[0] = format!("GET {path} HTTP/1.1");
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let resp = support::raw_request(gw.addr(), &refs).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let echo = resp.echo();
        let copies: Vec<&(String, String)> =
            echo.headers.iter().filter(|(k, _)| k.to_ascii_lowercase().replace(['_', '.'], "-") == HEADER).collect();
        assert!(copies.iter().all(|(_, v)| *v != forged), "{path}: a forged copy arrived: {copies:?}");
        let expected = usize::from(path == "/tickets/1");
        assert_eq!(copies.len(), expected, "{path}: {copies:?}");
    }
}

#[tokio::test]
async fn replicas_with_one_config_serve_one_key_set() {
    let up = FakeUpstream::new("app").start().await;
    let config = conf(&up);
    let (a, b) = (config.start().await, config.start().await);
    let set_a = a.get("/sso/jwks.json").send().await.unwrap().bytes().await.unwrap();
    let set_b = b.get("/sso/jwks.json").send().await.unwrap().bytes().await.unwrap();
    assert_eq!(set_a, set_b, "the same keys, byte for byte");
    // An assertion from one replica verifies with the other's key set.
    let cookie = sign_in(&a).await;
    let echo = upstream_sees(&a, "/x", "app.test", &cookie, &[]).await;
    let token = echo.header(HEADER).unwrap();
    assert_eq!(pyjwt(&b, &[("app.test", token)]).await[0].claims()["sub"], "C-5");
    // Another session secret, another key: not accepted there.
    let other = config.clone().session("secret", q(OTHER_SECRET)).start().await;
    let (_, other_set) = jwks(&other).await;
    assert_ne!(kids(&other_set), kids(&serde_json::from_slice(&set_a).unwrap()));
    let Verdict::Invalid(why) = &pyjwt(&other, &[("app.test", token)]).await[0] else {
        panic!("verified with another replica set's keys")
    };
    assert!(why.contains("kid") || why.contains("key"), "{why}");
}

/// Rotation: the new secret first, the old one in previous_secrets. The
/// key set then holds both keys, new assertions carry the new `kid`, and
/// one signed before the rotation still verifies; once the old secret is
/// dropped, it no longer does.
#[tokio::test]
async fn assertions_signed_before_a_rotation_still_verify() {
    let up = FakeUpstream::new("app").start().await;
    let before = conf(&up);
    let gw = before.start().await;
    let cookie = sign_in(&gw).await;
    let old = upstream_sees(&gw, "/x", "app.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    let (_, old_set) = jwks(&gw).await;

    let rotated = before
        .clone()
        .session("secret", q(OTHER_SECRET))
        .session("previous_secrets", format!("[{}]", q(SESSION_SECRET)));
    gw.running.app.reload(rotated.config()).unwrap();
    let (_, set) = jwks(&gw).await;
    assert_eq!(kids(&set).len(), 2);
    assert_eq!(kids(&set)[1], kids(&old_set)[0], "the previous key is still published");
    // The session (sealed with the old secret) still opens; its assertion
    // is now signed with the new key.
    let new = upstream_sees(&gw, "/x", "app.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    let verdicts = pyjwt(&gw, &[("app.test", &old), ("app.test", &new)]).await;
    let Verdict::Valid { header: old_header, .. } = &verdicts[0] else { panic!("{:?}", verdicts[0]) };
    let Verdict::Valid { header: new_header, .. } = &verdicts[1] else { panic!("{:?}", verdicts[1]) };
    assert_eq!(old_header["kid"].as_str(), Some(kids(&old_set)[0].as_str()));
    assert_eq!(new_header["kid"].as_str(), Some(kids(&set)[0].as_str()));

    // A restart with the new secret alone: the old key is gone.
    let forgotten = before.clone().session("secret", q(OTHER_SECRET)).start().await;
    assert!(matches!(pyjwt(&forgotten, &[("app.test", &old)]).await[0], Verdict::Invalid(_)));
    assert_eq!(pyjwt(&forgotten, &[("app.test", &new)]).await[0].claims()["sub"], "C-5");
}

/// One signature per session and audience: every request gets the same
/// value until 4 of its 5 minutes have passed, then a fresh one.
#[tokio::test]
async fn the_signature_is_made_once_per_session_not_per_request() {
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up).start().await;
    let cookie = sign_in(&gw).await;
    let first = upstream_sees(&gw, "/a", "app.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    let iat = payload(&first)["iat"].as_u64().unwrap();
    let second = upstream_sees(&gw, "/b", "app.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    assert_eq!(second, first, "the same assertion on the next request");
    // Another audience is another assertion.
    let other = upstream_sees(&gw, "/a", "kb.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    assert_ne!(other, first);
    assert_eq!(payload(&other)["aud"], "kb.test");

    gw.advance(Duration::from_secs(200));
    let still = upstream_sees(&gw, "/c", "app.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    assert_eq!(still, first, "reused while it has more than a minute left");
    gw.advance(Duration::from_secs(45));
    let fresh = upstream_sees(&gw, "/d", "app.test", &cookie, &[]).await.header(HEADER).unwrap().to_string();
    assert_ne!(fresh, first, "a new one past the refresh point");
    let claims = payload(&fresh);
    let new_iat = claims["iat"].as_u64().unwrap();
    assert!(new_iat >= iat + 245, "issued at the moved time: {iat} -> {new_iat}");
    assert_eq!(claims["exp"].as_u64().unwrap() - new_iat, 300);
    assert_eq!(
        upstream_sees(&gw, "/e", "app.test", &cookie, &[]).await.header(HEADER),
        Some(fresh.as_str()),
        "and that one is reused in turn"
    );
}

/// Bearer tokens and API keys get the header on the route too; the
/// audience may be fixed by the route.
#[tokio::test]
async fn bearer_tokens_and_api_keys_get_it_too() {
    let up = FakeUpstream::new("app").start().await;
    let state = tempfile::tempdir().unwrap();
    let gw = conf(&up)
        .route("identity_audience", q("helpdesk"))
        .route("api_keys", "true")
        .server("state_dir", q(state.path().to_str().unwrap()))
        .start()
        .await;
    let now = gw.clock.now();
    let token = sign_hs(
        API_SECRET.as_bytes(),
        &json!({"iss": "api.test", "aud": "api://helpdesk", "sub": "svc-billing", "groups": ["billing"],
                "iat": now, "exp": now + 300}),
    );
    let by_token = upstream_sees(&gw, "/api/x", "app.test", "", &[("authorization", &format!("Bearer {token}"))]).await;

    let cookie = sign_in(&gw).await;
    let resp = gw
        .client
        .post(gw.url("/sso/api-keys"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(r#"{"name": "reports"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let key: Value = resp.json().await.unwrap();
    let key = key["key"].as_str().unwrap();
    let by_key = upstream_sees(&gw, "/api/y", "app.test", "", &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(by_key.header("authorization"), None, "the API key itself stays with porteiro");

    let tokens = [by_token.header(HEADER).expect("bearer"), by_key.header(HEADER).expect("API key")];
    let verdicts = pyjwt(&gw, &[("helpdesk", tokens[0]), ("helpdesk", tokens[1])]).await;
    let bearer = verdicts[0].claims();
    assert_eq!((bearer["sub"].as_str(), bearer["aud"].as_str()), (Some("svc-billing"), Some("helpdesk")));
    assert_eq!(bearer["groups"], json!(["billing"]));
    assert_eq!(verdicts[1].claims()["sub"], "C-5");
    assert_eq!(verdicts[1].claims()["email"], "ana@example.com");
}

/// Forward-auth answers carry the assertion for the asked URL's host, for
/// the calling proxy to pass on.
#[tokio::test]
async fn forward_auth_answers_carry_it() {
    let up = FakeUpstream::new("app").start().await;
    let gw = conf(&up).start().await;
    let cookie = sign_in(&gw).await;
    let resp = gw
        .get("/sso/auth")
        .header("x-original-url", "https://Desk.Test/tickets/1")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token = resp.headers()[HEADER].to_str().unwrap().to_string();
    let claims = pyjwt(&gw, &[("desk.test", &token)]).await[0].claims().clone();
    assert_eq!((claims["sub"].as_str(), claims["aud"].as_str()), (Some("C-5"), Some("desk.test")));
    // Not for a route without identity_jwt.
    let resp = gw
        .get("/sso/auth")
        .header("x-original-url", "https://desk.test/plain/1")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(HEADER).is_none());
}

/// Without a route that signs, there is no key set to serve.
#[tokio::test]
async fn no_key_set_without_a_signing_route() {
    let up = FakeUpstream::new("app").start().await;
    let gw = Conf::new(&up.authority()).start().await;
    let resp = gw.get("/sso/jwks.json").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let gw = conf(&up).start().await;
    let resp = gw.client.post(gw.url("/sso/jwks.json")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
}
