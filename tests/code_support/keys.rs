//! Signing keys for test tokens: an RSA 2048 key (the `rsa` crate), a P-256
//! key (rcgen, PKCS#8) and an HMAC secret, each with its verification key
//! and its public JWK. Generated once per test binary (or bench).
//!
//! Shared by the tests (`code_support`) and `benches/bearer.rs` (through
//! `#[path]`), so it depends on nothing but the crate's own dependencies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// The HMAC secret of HS256 test tokens (32 bytes, as porteiro advises).
pub const HS_SECRET: &str = "hs256-test-secret-0123456789abcd";

/// A key pair: what signs, what verifies, and the public JWK (no `kid`).
pub struct Keys {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    jwk: Value,
}

impl Keys {
    /// The public key as a JWK with `kid` (and `alg`, `use`).
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// Signs `claims` with this key, `kid` in the header when given.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The RSA 2048 key (RS256), generated on first use.
pub fn rsa() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| rsa_keys(2048))
}

/// An RSA 1024 key (RS256), too small for porteiro to trust.
pub fn rsa_1024() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| rsa_keys(1024))
}

fn rsa_keys(bits: usize) -> Keys {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
    let der = private.to_pkcs1_der().unwrap();
    let n = B64.encode(private.n().to_bytes_be());
    let e = B64.encode(private.e().to_bytes_be());
    Keys {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        decoding: DecodingKey::from_rsa_components(&n, &e).unwrap(),
        jwk: json!({"kty": "RSA", "n": n, "e": e, "alg": "RS256", "use": "sig"}),
    }
}

/// A token signed with `keys` over exactly `header` and `payload` as given
/// (JSON text no serializer would write, such as a repeated member name).
pub fn sign_raw(keys: &Keys, header: &str, payload: &str) -> String {
    let message = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &keys.encoding, keys.alg).unwrap();
    format!("{message}.{signature}")
}

/// The P-256 key (ES256), generated on first use.
pub fn ec() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
        let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..]));
        Keys {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            decoding: DecodingKey::from_ec_components(&x, &y).unwrap(),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256", "use": "sig"}),
        }
    })
}

/// The HMAC key (HS256) of [`HS_SECRET`].
pub fn hs() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        alg: Algorithm::HS256,
        encoding: EncodingKey::from_secret(HS_SECRET.as_bytes()),
        decoding: DecodingKey::from_secret(HS_SECRET.as_bytes()),
        jwk: json!({}),
    })
}

/// An unsigned token (`alg: none`, empty signature).
pub fn unsigned(claims: &Value) -> String {
    format!("{}.{}.", B64.encode(br#"{"alg":"none","typ":"JWT"}"#), B64.encode(claims.to_string()))
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
