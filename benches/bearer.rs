//! Bearer token verification, cold vs cached (`BearerAuth::check`), for
//! RS256, ES256 and HS256. "cold_new_token" verifies a token a long-lived
//! `BearerAuth` has never seen (a distinct token per iteration, signed
//! outside the timing); "cold_fresh_auth" is the first check of a freshly
//! built `BearerAuth` (built outside the timing); "cached" asks again about a
//! token already verified, which is a BLAKE3 hash of the token and a cache
//! lookup. The cached path must be far cheaper than the signature check,
//! above all for RSA and ECDSA.
//!
//! `cargo bench --bench bearer`; each case measures for 2 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "bench code fails loudly")]

#[path = "../tests/support/keys.rs"]
mod keys;

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use futures_util::FutureExt;
use jsonwebtoken::Algorithm;
use porteiro::auth::claims::ClaimMap;
use porteiro::auth::provider::bearer::BearerAuth;
use porteiro::auth::token::{KeySource, Rules, Verifier};
use serde_json::json;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "api://porteiro";

fn bearer(k: &keys::Keys) -> BearerAuth {
    let source = match k.alg {
        Algorithm::HS256 => KeySource::Secret(k.decoding.clone()),
        _ => KeySource::Public(k.decoding.clone()),
    };
    let rules = Rules {
        issuer: ISSUER.into(),
        audience: Some(AUDIENCE.into()),
        algorithms: vec![k.alg],
        leeway: 60,
        max_age: None,
        require_exp: true,
    };
    BearerAuth::new(
        "api".into(),
        Verifier::new(source, rules),
        ClaimMap { groups_claim: "groups".into(), keep: vec![] },
        vec!["read".into()],
    )
}

/// `check` never waits with a secret or a single public key: run it inline.
fn check(auth: &BearerAuth, token: &str, now: u64) {
    let accepted = auth.check(token, now).now_or_never().expect("check completes without waiting");
    assert_eq!(accepted.expect("a valid token").identity.sub, "svc-bench");
}

fn verification(c: &mut Criterion) {
    let now = keys::now();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "svc-bench", "email": "svc@example.com",
        "groups": ["ops"], "scope": "read write", "iat": now, "exp": now + 3600
    });
    for (name, k) in [("RS256", keys::rsa()), ("ES256", keys::ec()), ("HS256", keys::hs())] {
        let token = k.sign(Some("k1"), &claims);
        let mut group = c.benchmark_group(format!("bearer_check/{name}"));
        // A token never seen before by a long-lived BearerAuth (signed
        // outside the timing, a distinct jti each).
        let warm = bearer(k);
        let mut n = 0u64;
        // Signing (RSA above all) makes each iteration slow to set up: flat
        // sampling keeps the case within its time.
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("cold_new_token", |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let mut unique = claims.clone();
                    unique["jti"] = json!(format!("t-{n}"));
                    k.sign(Some("k1"), &unique)
                },
                |t| check(&warm, &t, now),
                BatchSize::SmallInput,
            )
        });
        group.sampling_mode(SamplingMode::Auto);
        // The first check of a freshly built BearerAuth (built outside the timing).
        group.bench_function("cold_fresh_auth", |b| {
            b.iter_batched_ref(|| bearer(k), |auth| check(auth, &token, now), BatchSize::SmallInput)
        });
        // The same token again: a SHA-256 and a cache lookup.
        check(&warm, &token, now);
        group.bench_function("cached", |b| b.iter(|| check(&warm, &token, now)));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = verification
}
criterion_main!(benches);
