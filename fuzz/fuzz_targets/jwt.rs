//! Token verification on any input never panics.
//!
//! The first byte picks the rules and the mode. Raw mode: the rest is the
//! token. Signed mode: the rest is `header JSON \n payload JSON`, which the
//! target encodes and signs with the provider's secret, so that the claim
//! checks behind the signature are reached too.

#![no_main]

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use libfuzzer_sys::fuzz_target;
use porteiro::auth::token::{KeySource, Rules, Verifier};

const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let verifier = Verifier::new(
        KeySource::Secret(DecodingKey::from_secret(SECRET)),
        Rules {
            issuer: "intranet.test".into(),
            audience: (mode & 2 != 0).then(|| "helpdesk".into()),
            algorithms: vec![Algorithm::HS256, Algorithm::HS512],
            leeway: u64::from(mode >> 4) * 30,
            max_age: (mode & 4 != 0).then_some(300),
            require_exp: mode & 8 != 0,
        },
    );
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, payload) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let key = EncodingKey::from_secret(SECRET);
        let Ok(signature) = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256) else { return };
        format!("{signed}.{signature}")
    };
    // A shared secret needs no key fetch: verification finishes in one poll.
    let mut verify = pin!(verifier.verify(&token, NOW));
    match verify.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => drop(result),
        Poll::Pending => panic!("verification with a shared secret waited"),
    }
});
