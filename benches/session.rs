//! The per-request cost of authentication: opening a session cookie
//! (`SessionCookies::read`: cookie parsing, XChaCha20-Poly1305 open, JSON,
//! the first time; a lookup of the opened session after that)
//! and verifying a JWT with keys already loaded (`Verifier::verify`:
//! header, signature, claims) for HS256, RS256 and ES256. The RSA and EC
//! verification keys are PEM public keys (`KeySource::Public`), as a
//! `public_key_file` provider loads them; all keys are generated here.
//!
//! `cargo bench --bench session`; each case measures for 2 s.
//! `benches/bearer.rs` covers the bearer cache in front of `verify`;
//! `benches/load.sh` (cases `cookie`, `bearer`) the end-to-end cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "bench code fails loudly")]

#[path = "../tests/support/keys.rs"]
mod keys;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::header::{COOKIE, HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use porteiro::auth::Identity;
use porteiro::auth::session::SessionCookies;
use porteiro::auth::token::{KeySource, Rules, Verifier};
use porteiro::config::{Secret, SessionConfig, StoreKind};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "api://porteiro";

// === session cookie ===

fn session_cookies() -> SessionCookies {
    let config = SessionConfig {
        secret: Some(Secret::new(b"bench-session-secret-0123456789abcdef".to_vec())),
        previous_secrets: vec![],
        validity: Duration::from_secs(15 * 60),
        cookie_name: "porteiro_session".into(),
        cookie_domain: None,
        store: StoreKind::Memory,
        api_keys_per_user: 20,
    };
    SessionCookies::new(&config, true).expect("a session secret is set")
}

/// A typical signed-in user: name, email, three groups, no extra claims.
fn identity(now: u64) -> Identity {
    Identity {
        sid: "3q2-7Wk0nHcYxB5f1mZrLA".into(),
        provider: "intranet".into(),
        sub: "ana.souza".into(),
        name: Some("Ana Souza".into()),
        email: Some("ana.souza@example.com".into()),
        username: None,
        groups: vec!["staff".into(), "helpdesk-agents".into(), "eng-platform".into()],
        claims: BTreeMap::new(),
        iat: now,
        exp: now + 15 * 60,
        oidc_sid: None,
        renew_until: None,
        header_values: Default::default(),
    }
}

fn cookie_open(c: &mut Criterion) {
    let now = keys::now();
    let cookies = session_cookies();
    let who = identity(now);
    let set = cookies.write(&who, &HeaderMap::new()).expect("the identity seals");
    assert_eq!(set.len(), 1, "a typical identity fits one cookie");
    let pair = set[0].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(pair.starts_with("porteiro_session="), "{pair}");
    let mut request = HeaderMap::new();
    request.insert(COOKIE, HeaderValue::from_str(&pair).unwrap());
    assert_eq!(cookies.read(&request, now).as_deref(), Some(&who));

    let mut group = c.benchmark_group("session_cookie");
    // The first request with a cookie: AEAD open and JSON decode (each
    // iteration gets a fresh SessionCookies, so nothing is cached yet).
    group.bench_function("open_3_groups_1_chunk", |b| {
        b.iter_batched(
            session_cookies,
            |fresh| fresh.read(black_box(&request), black_box(now)).expect("the session opens"),
            criterion::BatchSize::SmallInput,
        )
    });
    // Every later request with the same cookie: a lookup of the opened session.
    group.bench_function("reopen_3_groups_1_chunk", |b| {
        b.iter(|| cookies.read(black_box(&request), black_box(now)).expect("the session opens"))
    });
    group.finish();
}

// === JWT verification, keys warm ===

struct Case {
    name: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    source: KeySource,
}

fn rs256() -> Case {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let der = private.to_pkcs1_der().unwrap();
    let pem = private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    Case {
        name: "RS256",
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        source: KeySource::Public(DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap()),
    }
}

fn es256() -> Case {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Case {
        name: "ES256",
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        source: KeySource::Public(DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes()).unwrap()),
    }
}

fn hs256() -> Case {
    Case {
        name: "HS256",
        alg: Algorithm::HS256,
        encoding: EncodingKey::from_secret(keys::HS_SECRET.as_bytes()),
        source: KeySource::Secret(DecodingKey::from_secret(keys::HS_SECRET.as_bytes())),
    }
}

/// `verify` never waits with a secret or a single public key: run it inline.
fn verify(verifier: &Verifier, token: &str, now: u64) -> Value {
    let verified = verifier.verify(token, now).now_or_never().expect("verify completes without waiting");
    let verified = verified.expect("a valid token");
    assert_eq!(verified.sub.as_deref(), Some("svc-bench"));
    Value::Object(verified.claims)
}

fn jwt_verify(c: &mut Criterion) {
    let now = keys::now();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "svc-bench", "email": "svc@example.com",
        "groups": ["staff", "helpdesk-agents", "eng-platform"], "scope": "read write",
        "iat": now, "exp": now + 3600, "jti": "bench-token-1"
    });
    let mut group = c.benchmark_group("jwt_verify_warm");
    for case in [hs256(), rs256(), es256()] {
        let mut header = Header::new(case.alg);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(&header, &claims, &case.encoding).unwrap();
        let rules = Rules {
            issuer: ISSUER.into(),
            audience: Some(AUDIENCE.into()),
            algorithms: vec![case.alg],
            leeway: 60,
            max_age: Some(300),
            require_exp: true,
        };
        let verifier = Verifier::new(case.source, rules);
        verify(&verifier, &token, now);
        group.bench_function(case.name, |b| b.iter(|| verify(&verifier, black_box(&token), black_box(now))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = cookie_open, jwt_verify
}
criterion_main!(benches);
