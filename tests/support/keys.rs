//! Signing keys for test tokens, written once for every test binary and the
//! benches: [`Keys`] is a key pair (what signs, what verifies, the public
//! JWK and PEM) and [`SigningKey`] is one under a `kid`.
//!
//! - shared per binary, generated on first use: [`rsa`] (2048), [`rsa_1024`]
//!   (too small for porteiro), [`ec`] (P-256), [`hs`] ([`HS_SECRET`]);
//! - fresh ones: [`Keys::rsa_fresh`], [`Keys::p256`], [`Keys::p384`],
//!   [`Keys::ed25519`].
//!
//! Shared with `benches/bearer.rs` and `benches/session.rs` (through
//! `#[path]`), so it depends on nothing but the crate's own dependencies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// The HMAC secret of HS256 test tokens (32 bytes, as porteiro advises).
pub const HS_SECRET: &str = "hs256-test-secret-0123456789abcd";

/// A key pair: what signs, what verifies, the public JWK (no `kid`) and the
/// public key as PEM (SubjectPublicKeyInfo; empty for HMAC).
pub struct Keys {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    jwk: Value,
    public_pem: String,
}

impl Keys {
    /// The public key as a JWK with `kid` (and `alg`, `use`).
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `claims` with this key, `kid` in the header when given.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// The base64url signature of `message` (for hand-assembled tokens).
    pub fn sign_message(&self, message: &[u8]) -> String {
        jsonwebtoken::crypto::sign(message, &self.encoding, self.alg).unwrap()
    }

    /// A fresh RSA 2048 key (RS256). RSA generation is the slowest step:
    /// prefer the shared [`rsa`] unless the test needs a second key.
    pub fn rsa_fresh() -> Keys {
        rsa_keys(2048)
    }

    /// A fresh ECDSA P-256 key (ES256).
    pub fn p256() -> Keys {
        ec_keys(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256, "P-256", 32)
    }

    /// A fresh ECDSA P-384 key (ES384).
    pub fn p384() -> Keys {
        ec_keys(&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384, "P-384", 48)
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed25519() -> Keys {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let x = B64.encode(pair.public_key_raw());
        Keys {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            decoding: DecodingKey::from_ed_components(&x).unwrap(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig"}),
            public_pem: pair.public_key_pem(),
        }
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
        public_pem: private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn ec_keys(params: &'static rcgen::SignatureAlgorithm, alg: Algorithm, crv: &str, len: usize) -> Keys {
    let pair = rcgen::KeyPair::generate_for(params).unwrap();
    // Uncompressed SEC1 point: 0x04 || x || y.
    let point = pair.public_key_raw();
    assert_eq!((point.len(), point[0]), (1 + 2 * len, 4), "an uncompressed {crv} point");
    let (x, y) = (B64.encode(&point[1..=len]), B64.encode(&point[1 + len..]));
    Keys {
        alg,
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        decoding: DecodingKey::from_ec_components(&x, &y).unwrap(),
        jwk: json!({"kty": "EC", "crv": crv, "x": x, "y": y, "alg": format!("{alg:?}"), "use": "sig"}),
        public_pem: pair.public_key_pem(),
    }
}

/// A token signed with `keys` over exactly `header` and `payload` as given
/// (JSON text no serializer would write, such as a repeated member name).
pub fn sign_raw(keys: &Keys, header: &str, payload: &str) -> String {
    let message = format!("{}.{}", B64.encode(header), B64.encode(payload));
    format!("{message}.{}", keys.sign_message(message.as_bytes()))
}

/// The P-256 key (ES256), generated on first use.
pub fn ec() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(Keys::p256)
}

/// The HMAC key (HS256) of [`HS_SECRET`].
pub fn hs() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        alg: Algorithm::HS256,
        encoding: EncodingKey::from_secret(HS_SECRET.as_bytes()),
        decoding: DecodingKey::from_secret(HS_SECRET.as_bytes()),
        jwk: json!({}),
        public_pem: String::new(),
    })
}

/// An unsigned token (`alg: none`, empty signature).
pub fn unsigned(claims: &Value) -> String {
    format!("{}.{}.", B64.encode(br#"{"alg":"none","typ":"JWT"}"#), B64.encode(claims.to_string()))
}

/// Unix seconds by the system clock.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A key under a `kid`: what a JWKS publishes and a token header names.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    keys: &'static Keys,
}

impl SigningKey {
    /// `keys` under `kid`. Fresh keys are leaked: a test makes a handful.
    pub fn new(kid: &str, keys: Keys) -> SigningKey {
        SigningKey::shared(kid, Box::leak(Box::new(keys)))
    }

    /// One of the per-binary keys ([`rsa`], [`ec`]...) under `kid`.
    pub fn shared(kid: &str, keys: &'static Keys) -> SigningKey {
        SigningKey { kid: kid.to_string(), keys }
    }

    /// The binary's shared RSA key (RS256) under `kid`.
    pub fn rsa(kid: &str) -> SigningKey {
        SigningKey::shared(kid, rsa())
    }

    /// A fresh RSA key (RS256).
    pub fn rsa_new(kid: &str) -> SigningKey {
        SigningKey::new(kid, Keys::rsa_fresh())
    }

    /// A fresh ECDSA P-256 key (ES256).
    pub fn ec(kid: &str) -> SigningKey {
        SigningKey::new(kid, Keys::p256())
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed(kid: &str) -> SigningKey {
        SigningKey::new(kid, Keys::ed25519())
    }

    pub fn alg(&self) -> Algorithm {
        self.keys.alg
    }

    pub fn keys(&self) -> &'static Keys {
        self.keys
    }

    pub fn jwk(&self) -> Value {
        self.keys.jwk(&self.kid)
    }

    pub fn public_pem(&self) -> &str {
        self.keys.public_pem()
    }

    /// Signs with this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.keys.sign(Some(&self.kid), claims)
    }

    /// Signs with this key but names another `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        self.keys.sign(Some(kid), claims)
    }

    /// Signs `payload` exactly as given, under this key's header.
    pub fn sign_raw(&self, payload: &str) -> String {
        let mut header = Header::new(self.keys.alg);
        header.kid = Some(self.kid.clone());
        sign_raw(self.keys, &serde_json::to_string(&header).unwrap(), payload)
    }

    /// The base64url signature of `message`.
    pub fn sign_message(&self, message: &[u8]) -> String {
        self.keys.sign_message(message)
    }
}
