//! The signed identity header (DESIGN §4): `X-Porteiro-Jwt-Assertion`, an
//! ES256 JWT of who is calling, for routes with `identity_jwt = true`, and
//! the key set an application verifies it with (`{auth_prefix}/jwks.json`).
//!
//! The signing key is derived from `session.secret` (HKDF-SHA256, its own
//! info string, so it is independent of every other key porteiro derives):
//! every replica with the same config signs with the same key and publishes
//! the same key set, with nothing new to distribute. Each of
//! `session.previous_secrets` publishes its key too, so assertions signed
//! before a rotation keep verifying until they expire.
//!
//! Signing is not per request: an assertion is kept per identity and
//! audience and reused until [`REFRESH_AFTER`] seconds of its
//! [`LIFETIME`] have passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hkdf::Hkdf;
use http::{HeaderName, HeaderValue};
use moka::sync::Cache;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Identity;
use super::session::Assertion;
use crate::config::Secret;

/// The header's name.
pub const HEADER: &str = "x-porteiro-jwt-assertion";
/// [`HEADER`], made at compile time.
pub static HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);
/// Seconds from an assertion's `iat` to its `exp`.
pub const LIFETIME: u64 = 300;
/// Seconds after its `iat` an assertion is still handed out: an upstream
/// always receives one with at least `LIFETIME - REFRESH_AFTER` (60 s) left.
pub const REFRESH_AFTER: u64 = 240;
/// Bytes of assertions kept (each several hundred bytes).
const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// HKDF info of the signing key; a counter byte follows (see [`derive`]).
const INFO: &[u8] = b"porteiro/v1/identity-jwt-es256";

/// One key pair, with what the key set says of it.
struct Key {
    kid: String,
    signing: SigningKey,
    /// The public key as a JWK (`kty`, `crv`, `x`, `y`, `kid`, `use`, `alg`).
    jwk: serde_json::Value,
}

/// An assertion made earlier, and until when (clock seconds) it is reused.
#[derive(Clone)]
struct Made {
    value: HeaderValue,
    refresh_at: u64,
}

/// Signs identity assertions with the current key; publishes the current
/// and previous keys.
pub struct IdentitySigner {
    issuer: String,
    current: Key,
    /// `{"keys": [...]}`, current key first.
    jwks: Bytes,
    /// The header (base64url) every assertion starts with.
    header_b64: String,
    made: Cache<[u8; 32], Made>,
    /// Tells this signer's assertions apart from an earlier configuration's
    /// (identities outlive reloads in the bearer and API-key caches).
    instance: u64,
}

/// Signers made so far: the next one's [`IdentitySigner::instance`].
static SIGNERS: AtomicU64 = AtomicU64::new(0);

/// The claims of an assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    groups: &'a [String],
    iat: u64,
    exp: u64,
}

impl IdentitySigner {
    /// `issuer` is `server.public_url`; `current` signs, and `previous`
    /// keys are published beside it.
    pub fn new(issuer: &str, current: &Secret, previous: &[Secret]) -> IdentitySigner {
        let current = key(current);
        let mut keys = vec![current.jwk.clone()];
        for secret in previous {
            let k = key(secret);
            if !keys.iter().any(|j| j["kid"] == k.jwk["kid"]) {
                keys.push(k.jwk);
            }
        }
        let jwks = Bytes::from(serde_json::json!({ "keys": keys }).to_string());
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": current.kid });
        IdentitySigner {
            issuer: issuer.to_string(),
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            current,
            jwks,
            instance: SIGNERS.fetch_add(1, Ordering::Relaxed),
            made: Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_, m: &Made| u32::try_from(m.value.len() + 64).unwrap_or(u32::MAX))
                // A bound on memory only: reuse is decided on porteiro's
                // clock, by `refresh_at`.
                .time_to_live(Duration::from_secs(LIFETIME))
                .build(),
        }
    }

    /// The key set, as served at `{auth_prefix}/jwks.json`.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The `kid` new assertions carry.
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// The assertion of `id` for `audience` at `now` (unix seconds): the one
    /// made earlier while it is fresh enough, else a new one. `None` only
    /// when it cannot be encoded (never for identities that passed login).
    pub fn assertion(&self, id: &Identity, audience: &str, now: u64) -> Option<HeaderValue> {
        // A session's later requests: kept with its (cached) identity.
        if let Some(value) = id.made_assertion(self.instance, audience, now) {
            return Some(value);
        }
        // The same identity opened again (another replica's cookie, a
        // cache eviction): found by its claims.
        let key = cache_key(id, audience);
        let made = match self.made.get(&key) {
            Some(made) if now < made.refresh_at => made,
            _ => {
                let value = self.sign(id, audience, now)?;
                let made = Made { value, refresh_at: now.saturating_add(REFRESH_AFTER) };
                self.made.insert(key, made.clone());
                made
            }
        };
        id.keep_assertion(Arc::new(Assertion {
            signer: self.instance,
            audience: audience.into(),
            value: made.value.clone(),
            refresh_at: made.refresh_at,
        }));
        Some(made.value)
    }

    /// A new assertion, valid for [`LIFETIME`] from `now`.
    fn sign(&self, id: &Identity, audience: &str, now: u64) -> Option<HeaderValue> {
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: &id.sub,
            email: id.email.as_deref(),
            name: id.name.as_deref(),
            preferred_username: id.username.as_deref(),
            groups: &id.groups,
            iat: now,
            exp: now.saturating_add(LIFETIME),
        };
        let payload = serde_json::to_vec(&claims).ok()?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 90);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        // Deterministic ECDSA (RFC 6979); `r || s` is the JWS form (RFC 7518 §3.4).
        let signature: Signature = self.current.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        HeaderValue::try_from(token).ok()
    }
}

/// The key pair derived from `secret`, with its JWK.
fn key(secret: &Secret) -> Key {
    let signing = derive(secret);
    let point = signing.verifying_key().to_encoded_point(false);
    let coordinate = |c: Option<&p256::FieldBytes>| URL_SAFE_NO_PAD.encode(c.map(|c| c.as_slice()).unwrap_or_default());
    let (x, y) = (coordinate(point.x()), coordinate(point.y()));
    // RFC 7638 thumbprint: the required members in lexicographic order.
    let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256",
    });
    Key { kid, signing, jwk }
}

/// A P-256 private key from `secret`: HKDF-SHA256 (salt `porteiro`, as
/// porteiro's other derived keys), info [`INFO`] and a counter byte, taking
/// the first output that is a valid scalar (in `1..n`; the first fails with
/// probability about 2^-32).
fn derive(secret: &Secret) -> SigningKey {
    let hkdf = Hkdf::<Sha256>::new(Some(b"porteiro"), secret.expose());
    let mut counter = 0u8;
    loop {
        let mut bytes = [0u8; 32];
        let info = [INFO, &[counter]].concat();
        // HKDF-Expand cannot fail for a 32-byte output.
        let _ = hkdf.expand(&info, &mut bytes);
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return key;
        }
        // 256 outputs in a row out of range: never, in practice; wrapping
        // round keeps this total without a panic.
        counter = counter.wrapping_add(1);
    }
}

/// What an assertion depends on, hashed: the audience and every identity
/// field it carries, so a session whose claims change (a renewal) gets a
/// new one. `sid` keeps sessions apart; bearer identities (no `sid`) with
/// the same claims share one, which is the same assertion anyway.
fn cache_key(id: &Identity, audience: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for field in [Some(audience), Some(id.sid.as_str()), Some(id.provider.as_str()), Some(id.sub.as_str())]
        .into_iter()
        .chain([id.email.as_deref(), id.name.as_deref(), id.username.as_deref()])
        .chain(id.groups.iter().map(|g| Some(g.as_str())))
    {
        match field {
            // Length-prefixed, so no two lists of fields hash alike.
            Some(v) => {
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
            // Distinct from `Some("")`: no field is `u64::MAX` bytes long.
            None => {
                h.update(&u64::MAX.to_le_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;

    fn secret(c: u8) -> Secret {
        Secret::new(vec![c; 32])
    }

    fn identity(sid: &str) -> Identity {
        Identity {
            sid: sid.into(),
            provider: "intranet".into(),
            sub: "u-1".into(),
            name: Some("Ana Souza".into()),
            email: Some("ana@example.com".into()),
            username: None,
            groups: vec!["support".into(), "agents".into()],
            claims: BTreeMap::new(),
            oidc_sid: None,
            iat: 1_000,
            exp: 2_000,
            renew_until: None,
            header_values: Default::default(),
        }
    }

    fn keys(signer: &IdentitySigner) -> Vec<serde_json::Value> {
        let set: serde_json::Value = serde_json::from_slice(&signer.jwks()).unwrap();
        set["keys"].as_array().unwrap().clone()
    }

    /// Verifies `token` with the key set's key of its `kid`, at `now`.
    fn verify(signer: &IdentitySigner, token: &str, audience: &str) -> serde_json::Value {
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwk = keys(signer).into_iter().find(|k| k["kid"] == kid.as_str()).unwrap();
        let key = DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[audience]);
        v.set_issuer(&["https://sso.test"]);
        // The tests sign at made-up times.
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).unwrap().claims
    }

    #[test]
    fn the_key_is_the_secrets_and_previous_keys_are_published() {
        let a = IdentitySigner::new("https://sso.test", &secret(1), &[]);
        let again = IdentitySigner::new("https://sso.test", &secret(1), &[]);
        assert_eq!(a.jwks(), again.jwks(), "the same secret, the same key set");
        let rotated = IdentitySigner::new("https://sso.test", &secret(2), &[secret(1)]);
        assert_ne!(rotated.kid(), a.kid());
        let kids: Vec<_> = keys(&rotated).iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
        assert_eq!(kids, [rotated.kid(), a.kid()], "current key first, then the previous one");
        // Nothing private is published.
        assert!(keys(&a).iter().all(|k| k.get("d").is_none()));
    }

    #[test]
    fn assertions_verify_and_carry_the_identity() {
        let s = IdentitySigner::new("https://sso.test", &secret(1), &[]);
        let token = s.assertion(&identity("s1"), "app.test", 10_000).unwrap();
        let claims = verify(&s, token.to_str().unwrap(), "app.test");
        assert_eq!(claims["sub"], "u-1");
        assert_eq!(claims["email"], "ana@example.com");
        assert_eq!(claims["name"], "Ana Souza");
        assert_eq!(claims["groups"], serde_json::json!(["support", "agents"]));
        assert_eq!((claims["iat"].as_u64(), claims["exp"].as_u64()), (Some(10_000), Some(10_000 + LIFETIME)));
        assert!(claims.get("preferred_username").is_none());
        // An assertion signed before a rotation verifies against the key set after it.
        let rotated = IdentitySigner::new("https://sso.test", &secret(2), &[secret(1)]);
        assert_eq!(verify(&rotated, token.to_str().unwrap(), "app.test")["sub"], "u-1");
    }

    #[test]
    fn assertions_are_reused_until_their_refresh_time() {
        let s = IdentitySigner::new("https://sso.test", &secret(1), &[]);
        let id = identity("s1");
        let first = s.assertion(&id, "app.test", 10_000).unwrap();
        assert_eq!(s.assertion(&id, "app.test", 10_000 + REFRESH_AFTER - 1), Some(first.clone()));
        let other_audience = s.assertion(&id, "other.test", 10_001).unwrap();
        assert_ne!(other_audience, first);
        let mut renewed = identity("s1");
        renewed.groups.push("ops".into());
        assert_ne!(s.assertion(&renewed, "app.test", 10_001), Some(first.clone()), "claims changed");
        let later = s.assertion(&id, "app.test", 10_000 + REFRESH_AFTER).unwrap();
        assert_ne!(later, first);
        assert_eq!(verify(&s, later.to_str().unwrap(), "app.test")["iat"], 10_000 + REFRESH_AFTER);
    }

    #[test]
    fn an_identity_keeps_its_assertion_and_a_new_signer_makes_its_own() {
        let s = IdentitySigner::new("https://sso.test", &secret(1), &[]);
        let id = identity("s1");
        let first = s.assertion(&id, "app.test", 10_000).unwrap();
        // Kept with the identity: found without the signer's cache.
        s.made.invalidate_all();
        assert_eq!(s.assertion(&id, "app.test", 10_001), Some(first.clone()));
        // A copy (made to be changed) does not carry it.
        assert!(id.clone().made_assertion(s.instance, "app.test", 10_001).is_none());
        // A reload's signer, whose key may differ, never hands out the
        // earlier signer's assertion.
        let reloaded = IdentitySigner::new("https://sso.test", &secret(2), &[]);
        let second = reloaded.assertion(&id, "app.test", 10_002).unwrap();
        assert_ne!(second, first);
        let kid = jsonwebtoken::decode_header(second.to_str().unwrap()).unwrap().kid;
        assert_eq!(kid.as_deref(), Some(reloaded.kid()));
        // Another audience is not the kept one's.
        assert!(id.made_assertion(reloaded.instance, "other.test", 10_002).is_none());
        assert!(id.made_assertion(reloaded.instance, "app.test", 10_002 + REFRESH_AFTER).is_none(), "due");
    }

    #[test]
    fn cache_keys_tell_fields_apart() {
        let mut a = identity("s1");
        let mut b = identity("s1");
        a.groups = vec!["ab".into()];
        b.groups = vec!["a".into(), "b".into()];
        assert_ne!(cache_key(&a, "x"), cache_key(&b, "x"));
        b.groups = vec!["ab".into()];
        b.email = None;
        a.email = Some(String::new());
        assert_ne!(cache_key(&a, "x"), cache_key(&b, "x"));
    }
}
