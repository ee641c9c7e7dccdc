//! `kind = "bearer"`: API clients send `Authorization: Bearer <JWT>`,
//! verified on every request like `jwt` tokens (without the single-use rule:
//! access tokens are meant to be reused). Verification results are cached,
//! keyed by a hash of the token, bounded in size, and never outlive the
//! token's `exp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use serde_json::Value;

use crate::auth::claims::{self, ClaimMap};
use crate::auth::session::Identity;
use crate::auth::token::{TokenError, Verifier, string_claim};
use crate::config::BearerConfig;

use super::Setup;

/// A verified token's identity and until when it holds.
#[derive(Clone)]
pub struct Accepted {
    pub identity: Arc<Identity>,
    pub scopes: Arc<Vec<String>>,
    /// Unix seconds after which the token is refused (exp + leeway).
    pub until: u64,
}

struct UntilExp;

impl Expiry<[u8; 32], Accepted> for UntilExp {
    // Eviction only: `check` compares `until` with porteiro's clock itself.
    fn expire_after_create(&self, _k: &[u8; 32], v: &Accepted, _at: Instant) -> Option<Duration> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Some(Duration::from_secs(v.until.saturating_sub(now)))
    }
}

pub struct BearerAuth {
    pub id: String,
    pub verifier: Verifier,
    pub claims: ClaimMap,
    /// All must be granted by `scope`/`scp`, else 403 insufficient_scope.
    pub required_scopes: Vec<String>,
    cache: Cache<[u8; 32], Accepted>,
}

/// Most verification results kept per provider.
const CACHE_ENTRIES: u64 = 100_000;
/// Tokens without `exp` are re-verified at least this often.
const MAX_CACHE_SECONDS: u64 = 300;

impl BearerAuth {
    pub fn build(id: &str, c: &BearerConfig, setup: &Setup) -> Result<BearerAuth, String> {
        Ok(BearerAuth::new(
            id.to_string(),
            Verifier::from_config(id, &c.token, setup.fetcher, setup.jwks)?,
            ClaimMap { groups_claim: c.groups_claim.clone(), keep: setup.keep.to_vec() },
            c.required_scopes.clone(),
        ))
    }

    pub fn new(id: String, verifier: Verifier, claims: ClaimMap, required_scopes: Vec<String>) -> BearerAuth {
        let cache = Cache::builder().max_capacity(CACHE_ENTRIES).expire_after(UntilExp).build();
        BearerAuth { id, verifier, claims, required_scopes, cache }
    }

    /// Verifies `token` at `now`, from the cache when it was seen before.
    pub async fn check(&self, token: &str, now: u64) -> Result<Accepted, TokenError> {
        let key = cache_key(token);
        match self.cached(&key, now) {
            Some(hit) => Ok(hit),
            None => self.verify(&key, token, now).await,
        }
    }

    /// The verification of a token seen before (by its [`cache_key`]), if
    /// it still holds at `now`.
    pub fn cached(&self, key: &[u8; 32], now: u64) -> Option<Accepted> {
        let hit = self.cache.get(key)?;
        if now < hit.until {
            return Some(hit);
        }
        // Past `until`: verified afresh, so the refusal names the real reason.
        self.cache.invalidate(key);
        None
    }

    /// Verifies a token not in the cache, and caches the result.
    pub async fn verify(&self, key: &[u8; 32], token: &str, now: u64) -> Result<Accepted, TokenError> {
        let verified = self.verifier.verify(token, now).await?;
        let c = &verified.claims;
        let email = string_claim(c, "email")?;
        if email.as_deref().is_some_and(|e| !claims::valid_email(e)) {
            return Err(TokenError::BadClaim("email"));
        }
        let sub = verified.sub.clone().or_else(|| email.clone()).ok_or(TokenError::MissingClaim("sub"))?;
        let rules = self.verifier.rules();
        let leeway = rules.leeway;
        let mut until = match verified.exp {
            Some(exp) => exp.saturating_add(leeway).min(now + MAX_CACHE_SECONDS),
            None => now + MAX_CACHE_SECONDS,
        };
        // Nor past `max_token_age` (fresh verification refuses once
        // now - iat > max_age + leeway).
        if let (Some(max_age), Some(iat)) = (rules.max_age, verified.iat) {
            until = until.min(iat.saturating_add(max_age).saturating_add(leeway).saturating_add(1));
        }
        let identity = Identity {
            sid: String::new(),
            provider: self.id.clone(),
            sub,
            name: string_claim(c, "name")?,
            email,
            username: string_claim(c, "preferred_username")?,
            groups: claims::groups(c, &self.claims.groups_claim)?,
            claims: claims::kept_claims(c, &self.claims.keep),
            iat: verified.iat.unwrap_or(now),
            exp: verified.exp.unwrap_or(until),
            oidc_sid: None,
            renew_until: None,
            header_values: Default::default(),
        };
        identity.check_header_safe().map_err(|_| TokenError::BadClaim("identity"))?;
        let accepted = Accepted { identity: Arc::new(identity), scopes: Arc::new(scopes(c)), until };
        self.cache.insert(*key, accepted.clone());
        Ok(accepted)
    }

    /// The required scopes this token lacks.
    pub fn missing_scopes(&self, accepted: &Accepted) -> Vec<&str> {
        self.required_scopes.iter().filter(|s| !accepted.scopes.contains(s)).map(String::as_str).collect()
    }
}

/// OAuth scopes: `scope` (space-separated string) or `scp` (list or string).
fn scopes(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => split(s),
        (_, Some(Value::String(s))) => split(s),
        (_, Some(Value::Array(items))) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// What a request's `Authorization` header says (DESIGN §8.1). On a route
/// with bearer providers, anything but [`Credential::Absent`] makes the
/// request an API call: it gets the token checked or a 401, never a login
/// redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Absent,
    /// More than one `Authorization` header: which one counts depends on
    /// who reads them, so the request is refused (400).
    Several,
    /// `Bearer <token>`; whether the token is in RFC 6750's `b64token`
    /// syntax is for [`well_formed`] to say.
    Bearer(&'a str),
    /// No bearer token offered: another scheme (`Basic ...`), no scheme at
    /// all, or `Bearer` with nothing after it. A bare challenge answers
    /// (RFC 6750 §3.1).
    NoToken,
    /// A value that is not UTF-8: refused as a malformed token.
    Malformed,
}

impl<'a> Credential<'a> {
    /// The token to verify; `Err(None)` when no bearer token was offered
    /// (a bare challenge), `Err(Some(_))` when the offered one is unusable.
    pub fn token(self) -> Result<&'a str, Option<TokenError>> {
        match self {
            Credential::Bearer(token) => Ok(token),
            Credential::Malformed => Err(Some(TokenError::Malformed)),
            Credential::Absent | Credential::Several | Credential::NoToken => Err(None),
        }
    }
}

/// The verification cache's key for a token: a cryptographic hash, so that
/// no token can be made to share another's entry; BLAKE3 because this runs
/// on every request, and SHA-256 without the CPU's SHA extensions costs
/// microseconds.
pub fn cache_key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Reads the request's `Authorization` header(s). The token's characters
/// are not checked here: a token found in a verification cache passed
/// [`well_formed`] when it was verified, so only a new one is checked (on
/// every request, the scan would cost more than the cache lookup).
pub fn credential(headers: &http::HeaderMap) -> Credential<'_> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = all.next() else { return Credential::Absent };
    if all.next().is_some() {
        return Credential::Several;
    }
    let Ok(value) = std::str::from_utf8(value.as_bytes()) else { return Credential::Malformed };
    // RFC 9110 §11.4: scheme, one or more spaces, then the credentials.
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let token = rest.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Credential::NoToken;
    }
    Credential::Bearer(token)
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub fn well_formed(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::{KeySource, Rules};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"bearer-test-secret-32-bytes-long";

    fn auth() -> BearerAuth {
        let verifier = Verifier::new(
            KeySource::Secret(DecodingKey::from_secret(SECRET)),
            Rules {
                issuer: "https://login.test".into(),
                audience: Some("api".into()),
                algorithms: vec![Algorithm::HS256],
                leeway: 0,
                max_age: None,
                require_exp: true,
            },
        );
        BearerAuth::new(
            "api".into(),
            verifier,
            ClaimMap { groups_claim: "groups".into(), keep: vec![] },
            vec!["read".into()],
        )
    }

    fn token(exp: u64, scope: &str) -> String {
        let claims = json!({"iss": "https://login.test", "aud": "api", "sub": "svc-1", "exp": exp, "scope": scope});
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[tokio::test]
    async fn cached_result_never_outlives_exp() {
        let a = auth();
        let t = token(1000, "read write");
        let ok = a.check(&t, 900).await.unwrap();
        assert_eq!(ok.identity.sub, "svc-1");
        assert!(a.missing_scopes(&ok).is_empty());
        assert!(a.check(&t, 950).await.is_ok(), "served from cache");
        assert_eq!(a.check(&t, 1000).await.err(), Some(TokenError::Expired), "cached but expired");
        assert_eq!(a.check(&t, 1001).await.err(), Some(TokenError::Expired), "and still");
        let narrow = a.check(&token(1000, "write"), 900).await.unwrap();
        assert_eq!(a.missing_scopes(&narrow), ["read"]);
    }

    #[tokio::test]
    async fn cached_result_never_outlives_max_token_age() {
        let rules = Rules { max_age: Some(60), ..auth().verifier.rules().clone() };
        let verifier = Verifier::new(KeySource::Secret(DecodingKey::from_secret(SECRET)), rules);
        let a =
            BearerAuth::new("api".into(), verifier, ClaimMap { groups_claim: "groups".into(), keep: vec![] }, vec![]);
        let claims = json!({"iss": "https://login.test", "aud": "api", "sub": "svc-1", "iat": 900, "exp": 5000});
        let t = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(a.check(&t, 900).await.is_ok());
        assert!(a.check(&t, 960).await.is_ok(), "60 s old: cached and still young enough");
        assert_eq!(a.check(&t, 961).await.err(), Some(TokenError::TooOld), "cached but too old");
    }

    #[test]
    fn authorization_headers() {
        use http::header::AUTHORIZATION;
        let read = |values: &[&'static str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(AUTHORIZATION, http::HeaderValue::from_static(v));
            }
            credential(&h).token().map(str::to_string)
        };
        assert_eq!(read(&["bearer abc"]), Ok("abc".into()));
        assert_eq!(read(&["Bearer  eyJ.eyJ.sig_-~+/=="]), Ok("eyJ.eyJ.sig_-~+/==".into()));
        assert_eq!(read(&[]), Err(None));
        for no_token in ["Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer", "Bearer ", "abc", "", " Bearer abc"] {
            assert_eq!(read(&[no_token]), Err(None), "{no_token:?}");
        }
        for malformed in ["Bearer a b", "Bearer a,b", "Bearer ==="] {
            let token = read(&[malformed]).unwrap();
            assert!(!well_formed(&token), "{malformed:?}");
        }
        assert!(well_formed("eyJ.eyJ.sig_-~+/=="));
        assert!(!well_formed("é"));
        let mut h = http::HeaderMap::new();
        h.insert(AUTHORIZATION, http::HeaderValue::from_bytes(b"Bearer \xff").unwrap());
        assert_eq!(credential(&h), Credential::Malformed);
        let mut h = http::HeaderMap::new();
        h.append(AUTHORIZATION, http::HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, http::HeaderValue::from_static("Bearer a"));
        assert_eq!(credential(&h), Credential::Several);
    }
}
