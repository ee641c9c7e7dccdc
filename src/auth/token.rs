//! JWT verification shared by the `jwt` login and `bearer` providers.
//!
//! The algorithm comes from the configured key, never from the token: the
//! header's `alg` must be in the allow-list *and* fit the key's family.
//! `jwk`, `jku`, `x5c`, `x5u` headers are never followed; `kid` is only an
//! exact lookup in this provider's own key set. Claims are strictly typed: a
//! registered claim of the wrong type makes the token invalid. A header or
//! payload that names a member twice is malformed ([`super::json`]).

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::fetch::Fetcher;
use super::jwks::{Jwks, JwksRegistry, JwksSettings, KeyError, family};
use crate::config::{KeyConfig, TokenConfig};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. `reason()` is the word logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    TooLong,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    KeysUnavailable,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    TooOld,
    MissingExp,
    MissingClaim(&'static str),
    BadClaim(&'static str),
    Replayed,
    StoreUnavailable,
}

impl TokenError {
    /// Keys or the replay store unavailable: try again; anything else is
    /// the token's fault.
    pub fn class(&self) -> crate::error::Class {
        match self {
            TokenError::KeysUnavailable | TokenError::StoreUnavailable => crate::error::Class::Unavailable,
            _ => crate::error::Class::Unauthorized,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLong => "token_too_long",
            TokenError::Malformed => "malformed_token",
            TokenError::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::TooOld => "too_old",
            TokenError::MissingExp => "missing_exp",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::BadClaim(_) => "bad_claim",
            TokenError::Replayed => "replayed",
            TokenError::StoreUnavailable => "store_unavailable",
        }
    }

    /// A sentence for the client; never contains the token.
    pub fn description(&self) -> String {
        match self {
            TokenError::TooLong => "token too long".into(),
            TokenError::Malformed => "token malformed".into(),
            TokenError::AlgorithmNotAllowed => "token algorithm not allowed".into(),
            TokenError::UnknownKey => "token signed with an unknown key".into(),
            TokenError::KeysUnavailable => "signing keys unavailable".into(),
            TokenError::BadSignature => "token signature invalid".into(),
            TokenError::WrongIssuer => "token issuer not accepted".into(),
            TokenError::WrongAudience => "token audience not accepted".into(),
            TokenError::Expired => "token expired".into(),
            TokenError::NotYetValid => "token not yet valid".into(),
            TokenError::TooOld => "token issued too long ago".into(),
            TokenError::MissingExp => "token has no expiry".into(),
            TokenError::MissingClaim(c) => format!("token lacks the {c} claim"),
            TokenError::BadClaim(c) => format!("token claim {c} has the wrong type or value"),
            TokenError::Replayed => "token already used".into(),
            TokenError::StoreUnavailable => "login state unavailable".into(),
        }
    }
}

/// Where verification keys come from.
pub enum KeySource {
    /// HS256/384/512 shared secret.
    Secret(DecodingKey),
    /// One PEM public key.
    Public(DecodingKey),
    Jwks(Arc<Jwks>),
}

/// Claim rules of one provider.
#[derive(Debug, Clone)]
pub struct Rules {
    pub issuer: String,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: u64,
    /// Oldest accepted `iat`, in seconds; `None` to not check.
    pub max_age: Option<u64>,
    pub require_exp: bool,
}

/// A verified token: its registered claims typed, all claims raw.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub exp: Option<u64>,
    pub iat: Option<u64>,
}

pub struct Verifier {
    keys: KeySource,
    rules: Rules,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

impl Verifier {
    /// The verifier a `jwt` or `bearer` provider's token settings describe.
    pub fn from_config(id: &str, t: &TokenConfig, fetcher: &Fetcher, jwks: &JwksRegistry) -> Result<Verifier, String> {
        let keys = match &t.keys {
            KeyConfig::Secret(s) => KeySource::Secret(DecodingKey::from_secret(s.expose())),
            KeyConfig::PublicKey { pem, path } => KeySource::Public(
                DecodingKey::from_rsa_pem(pem)
                    .or_else(|_| DecodingKey::from_ec_pem(pem))
                    .or_else(|_| DecodingKey::from_ed_pem(pem))
                    .map_err(|e| format!("provider {id}: {}: {e}", path.display()))?,
            ),
            KeyConfig::Jwks { url, min_refresh, max_refresh } => {
                let settings =
                    JwksSettings { min_refresh: *min_refresh, max_refresh: *max_refresh, ..JwksSettings::default() };
                KeySource::Jwks(jwks.get(url, settings, fetcher))
            }
        };
        let rules = Rules {
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            algorithms: t.algorithms.clone(),
            leeway: t.leeway_seconds,
            max_age: t.max_token_age_seconds,
            require_exp: t.require_exp,
        };
        Ok(Verifier::new(keys, rules))
    }

    pub fn new(keys: KeySource, rules: Rules) -> Verifier {
        Verifier { keys, rules }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Keys are loaded (always true but for a JWKS not fetched yet).
    pub fn ready(&self) -> bool {
        match &self.keys {
            KeySource::Jwks(j) => j.ready(),
            _ => true,
        }
    }

    /// Signature and registered claims, at time `now` (unix seconds).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let header = parse_header(token)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let alg = Algorithm::from_str(&header.alg).map_err(|_| TokenError::AlgorithmNotAllowed)?;
        if !self.rules.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let jwk;
        let key = match &self.keys {
            KeySource::Secret(k) | KeySource::Public(k) => k,
            KeySource::Jwks(jwks) => {
                jwk = jwks.key(header.kid.as_deref(), alg).await.map_err(|e| match e {
                    KeyError::Unknown => TokenError::UnknownKey,
                    KeyError::Unavailable => TokenError::KeysUnavailable,
                })?;
                &jwk.key
            }
        };
        if key.family() != family(alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        // The signature over `header.payload`, then the payload, decoded
        // once (jsonwebtoken's `decode` parses header and claims twice each)
        // and refused when a member name repeats.
        let (message, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(TokenError::BadSignature),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::AlgorithmNotAllowed,
                    _ => TokenError::Malformed,
                });
            }
        }
        let payload = message.split_once('.').map_or("", |(_, p)| p);
        let raw = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let claims = super::json::object(&raw).map_err(|_| TokenError::Malformed)?;
        self.check_claims(claims, now)
    }

    fn check_claims(&self, claims: Map<String, Value>, now: u64) -> Result<Verified, TokenError> {
        let r = &self.rules;
        match claims.get("iss") {
            None => return Err(TokenError::MissingClaim("iss")),
            Some(Value::String(iss)) if *iss == r.issuer => {}
            Some(Value::String(_)) => return Err(TokenError::WrongIssuer),
            Some(_) => return Err(TokenError::BadClaim("iss")),
        }
        let aud_ok = |want: &str| match claims.get("aud") {
            None => Err(TokenError::WrongAudience),
            Some(Value::String(a)) => (a == want).then_some(()).ok_or(TokenError::WrongAudience),
            Some(Value::Array(list)) => {
                if !list.iter().all(Value::is_string) {
                    return Err(TokenError::BadClaim("aud"));
                }
                list.iter().any(|a| a == want).then_some(()).ok_or(TokenError::WrongAudience)
            }
            Some(_) => Err(TokenError::BadClaim("aud")),
        };
        if let Some(want) = &r.audience {
            aud_ok(want)?;
        } else if claims.get("aud").is_some_and(|a| !(a.is_string() || a.is_array())) {
            return Err(TokenError::BadClaim("aud"));
        }
        let exp = numeric_date(&claims, "exp")?;
        let nbf = numeric_date(&claims, "nbf")?;
        let iat = numeric_date(&claims, "iat")?;
        let sub = string_claim(&claims, "sub")?;
        let jti = string_claim(&claims, "jti")?;
        match exp {
            Some(exp) if now >= exp.saturating_add(r.leeway) => return Err(TokenError::Expired),
            None if r.require_exp => return Err(TokenError::MissingExp),
            _ => {}
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(r.leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if let Some(iat) = iat {
            if iat > now.saturating_add(r.leeway) {
                return Err(TokenError::NotYetValid);
            }
            if r.max_age.is_some_and(|max| now.saturating_sub(iat) > max.saturating_add(r.leeway)) {
                return Err(TokenError::TooOld);
            }
        }
        Ok(Verified { claims, sub, jti, exp, iat })
    }
}

fn parse_header(token: &str) -> Result<Header, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let raw = URL_SAFE_NO_PAD.decode(h).map_err(|_| TokenError::Malformed)?;
    super::json::from_slice(&raw).map_err(|_| TokenError::Malformed)
}

/// A NumericDate claim: a non-negative JSON number (fractions truncated).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
            _ => Err(TokenError::BadClaim(name)),
        },
        Some(_) => Err(TokenError::BadClaim(name)),
    }
}

/// An optional string claim; any other type is an error.
pub fn string_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::BadClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";
    const NOW: u64 = 1_700_000_000;

    fn verifier() -> Verifier {
        Verifier::new(
            KeySource::Secret(DecodingKey::from_secret(SECRET)),
            Rules {
                issuer: "intranet.test".into(),
                audience: None,
                algorithms: vec![Algorithm::HS256],
                leeway: 60,
                max_age: Some(300),
                require_exp: true,
            },
        )
    }

    fn sign(claims: Value) -> String {
        encode(&JwtHeader::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn good() -> Value {
        json!({"iss": "intranet.test", "exp": NOW + 60, "iat": NOW - 10, "name": "Ana", "email": "ana@x.test"})
    }

    async fn check(claims: Value) -> Result<Verified, TokenError> {
        verifier().verify(&sign(claims), NOW).await
    }

    #[tokio::test]
    async fn accepts_a_good_token() {
        let v = check(good()).await.unwrap();
        assert_eq!(v.exp, Some(NOW + 60));
        assert_eq!(v.claims["name"], "Ana");
    }

    #[tokio::test]
    async fn registered_claims_enforced() {
        let with = |k: &str, v: Value| {
            let mut c = good();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        assert_eq!(check(with("iss", json!("evil"))).await.err(), Some(TokenError::WrongIssuer));
        assert_eq!(check(without("iss")).await.err(), Some(TokenError::MissingClaim("iss")));
        assert_eq!(check(with("exp", json!(NOW - 61))).await.err(), Some(TokenError::Expired));
        assert!(check(with("exp", json!(NOW - 30))).await.is_ok(), "within leeway");
        assert_eq!(check(with("exp", json!("never"))).await.err(), Some(TokenError::BadClaim("exp")));
        assert_eq!(check(without("exp")).await.err(), Some(TokenError::MissingExp));
        assert_eq!(check(with("iat", json!(NOW - 400))).await.err(), Some(TokenError::TooOld));
        assert_eq!(check(with("iat", json!(NOW + 400))).await.err(), Some(TokenError::NotYetValid));
        assert_eq!(check(with("nbf", json!(NOW + 400))).await.err(), Some(TokenError::NotYetValid));
        assert_eq!(check(with("jti", json!(5))).await.err(), Some(TokenError::BadClaim("jti")));
        assert_eq!(check(with("aud", json!(5))).await.err(), Some(TokenError::BadClaim("aud")));
    }

    #[tokio::test]
    async fn wrong_secret_and_algorithms_refused() {
        let other = encode(
            &JwtHeader::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert_eq!(verifier().verify(&other, NOW).await.err(), Some(TokenError::BadSignature));
        let hs512 = encode(&JwtHeader::new(Algorithm::HS512), &good(), &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(verifier().verify(&hs512, NOW).await.err(), Some(TokenError::AlgorithmNotAllowed));
        // alg none: header {"alg":"none"}, empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        assert_eq!(verifier().verify(&none, NOW).await.err(), Some(TokenError::AlgorithmNotAllowed));
        let crit = format!(
            "{}.{}.x",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["exp"]}"#),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        assert_eq!(verifier().verify(&crit, NOW).await.err(), Some(TokenError::Malformed));
    }

    /// A correctly signed token whose header or payload names a member
    /// twice: serde_json would keep the last one, another parser the first.
    #[tokio::test]
    async fn duplicate_member_names_refused() {
        let signed = |header: &str, payload: &str| {
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
            let key = EncodingKey::from_secret(SECRET);
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{message}.{signature}")
        };
        let payload = format!(r#"{{"iss":"intranet.test","exp":{},"name":"Ana","email":"ana@x.test"}}"#, NOW + 60);
        assert!(verifier().verify(&signed(r#"{"alg":"HS256"}"#, &payload), NOW).await.is_ok(), "the control");
        let twice = payload.replace(r#""email":"ana@x.test""#, r#""email":"ana@x.test","email":"eve@x.test""#);
        assert_eq!(
            verifier().verify(&signed(r#"{"alg":"HS256"}"#, &twice), NOW).await.err(),
            Some(TokenError::Malformed)
        );
        let nested = payload.replace(r#""name":"Ana""#, r#""name":"Ana","org":{"id":1,"id":2}"#);
        assert_eq!(
            verifier().verify(&signed(r#"{"alg":"HS256"}"#, &nested), NOW).await.err(),
            Some(TokenError::Malformed)
        );
        let header = r#"{"alg":"HS256","kid":"a","kid":"b"}"#;
        assert_eq!(verifier().verify(&signed(header, &payload), NOW).await.err(), Some(TokenError::Malformed));
    }

    #[tokio::test]
    async fn garbage_and_oversized_refused() {
        for t in ["", "a.b", "a.b.c.d", "!!!.???.***", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"] {
            assert!(verifier().verify(t, NOW).await.is_err(), "{t}");
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verifier().verify(&huge, NOW).await.err(), Some(TokenError::TooLong));
    }
}
