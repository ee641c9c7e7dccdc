//! A cached JSON Web Key Set.
//!
//! Fetched at start (retried with backoff until it succeeds; readiness waits
//! for it), refreshed after the document's `Cache-Control: max-age` clamped
//! to `[min_refresh, max_refresh]`. A token with an unknown `kid` triggers one
//! refresh, single-flight and at most once per `min_refresh`, so a flood of
//! random kids costs at most one fetch per interval. A failed fetch keeps the
//! last good keys. RSA keys under 2048 bits are ignored (with a warning).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tracing::{debug, info, warn};

use super::fetch::Fetcher;
use crate::clock::Clock;
use crate::config::policy;

/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one document.
pub const MAX_KEYS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub fetch_timeout: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// One usable verification key.
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one: tokens must then use exactly it.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    /// Can this key verify a token signed with `alg`?
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == family(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    /// Bumped on every successful fetch.
    generation: u64,
}

pub struct Jwks {
    url: String,
    settings: JwksSettings,
    fetcher: Fetcher,
    keys: ArcSwap<KeySet>,
    /// Serialises fetches (single flight).
    fetching: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    loaded: AtomicBool,
    clock: Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No key with that `kid` (or no single fitting key without one).
    Unknown,
    /// The key set could never be fetched.
    Unavailable,
}

impl Jwks {
    /// Creates the cache and starts its refresh task; the task ends when the
    /// last `Arc` is dropped (a reload that no longer uses this URL).
    pub fn start(url: String, settings: JwksSettings, fetcher: Fetcher, clock: Clock) -> Arc<Jwks> {
        let jwks = Arc::new(Jwks {
            url,
            settings,
            fetcher,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetching: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            loaded: AtomicBool::new(false),
            clock,
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&jwks)));
        jwks
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn settings(&self) -> JwksSettings {
        self.settings
    }

    /// Keys have been fetched at least once.
    pub fn ready(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// The key for a token's `kid` and `alg`, refreshing once (rate-limited)
    /// when the kid is unknown.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, KeyError> {
        let seen = {
            let set = self.keys.load();
            if let Some(k) = find(&set.keys, kid, alg) {
                return Ok(k);
            }
            set.generation
        };
        if !self.may_refresh_now() {
            return Err(if self.ready() { KeyError::Unknown } else { KeyError::Unavailable });
        }
        let _guard = self.fetching.lock().await;
        // Someone else refreshed while we waited: look again before fetching.
        if self.keys.load().generation == seen {
            debug!(url = %self.url, "unknown kid: refreshing key set");
            let _ = self.fetch_locked().await;
        }
        let set = self.keys.load();
        find(&set.keys, kid, alg).ok_or(if self.ready() { KeyError::Unknown } else { KeyError::Unavailable })
    }

    /// True (and the attempt recorded) when no fetch was attempted within
    /// `min_refresh`.
    fn may_refresh_now(&self) -> bool {
        let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if self.clock.instant().saturating_duration_since(t) < self.settings.min_refresh => false,
            _ => {
                *last = Some(self.clock.instant());
                true
            }
        }
    }

    /// Fetches now; returns how long the answer may be cached.
    async fn refresh(&self) -> Result<Option<Duration>, String> {
        let _guard = self.fetching.lock().await;
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.clock.instant());
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<Option<Duration>, String> {
        let fetched = self
            .fetcher
            .get(&self.url, self.settings.fetch_timeout, MAX_JWKS_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let keys = parse(&fetched.body)?;
        if keys.is_empty() {
            return Err("the key set has no usable signing keys".into());
        }
        let generation = self.keys.load().generation + 1;
        info!(url = %self.url, keys = keys.len(), "key set loaded");
        self.keys.store(Arc::new(KeySet { keys, generation }));
        self.loaded.store(true, Ordering::Relaxed);
        Ok(fetched.max_age)
    }
}

fn find(keys: &[Arc<Key>], kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg)).cloned(),
        None => {
            let mut fitting = keys.iter().filter(|k| k.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        }
    }
}

/// Parses a JWKS document into verification keys, skipping encryption keys
/// and keys porteiro cannot use.
pub fn parse(body: &[u8]) -> Result<Vec<Arc<Key>>, String> {
    // Parse entries one by one so a single odd key does not void the set.
    #[derive(serde::Deserialize)]
    struct Loose {
        keys: Vec<serde_json::Value>,
    }
    let loose: Loose = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for value in loose.keys.into_iter().take(MAX_KEYS) {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(j) => j,
            Err(e) => {
                debug!(error = %e, "skipping a key porteiro cannot read");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match signing_alg(a) {
                Some(a) => Some(a),
                None => continue,
            },
        };
        match DecodingKey::from_jwk(&jwk) {
            // A symmetric key in a public key set would let anyone who reads
            // the set forge tokens.
            Ok(key) if key.family() == jsonwebtoken::AlgorithmFamily::Hmac => {
                warn!("ignoring a symmetric (oct) key in a JWKS document");
            }
            Ok(key) => match policy::weak_rsa(&key) {
                Some(bits) => {
                    let kid = jwk.common.key_id.as_deref().unwrap_or("-");
                    warn!(
                        kid,
                        bits = bits.unwrap_or(0),
                        "ignoring an RSA key under {} bits in a JWKS document",
                        policy::MIN_RSA_BITS
                    );
                }
                None => keys.push(Arc::new(Key { kid: jwk.common.key_id.clone(), alg, key })),
            },
            Err(e) => debug!(error = %e, "skipping an unusable key"),
        }
    }
    Ok(keys)
}

/// The key family an algorithm needs.
pub fn family(alg: Algorithm) -> AlgorithmFamily {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
        _ => AlgorithmFamily::Rsa,
    }
}

fn signing_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Keeps the key set fresh while anyone holds the cache.
async fn refresh_loop(jwks: Weak<Jwks>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(j) = jwks.upgrade() else { return };
        let wait = match j.refresh().await {
            Ok(max_age) => {
                backoff = Duration::from_millis(500);
                max_age.unwrap_or(Duration::from_secs(3600)).clamp(j.settings.min_refresh, j.settings.max_refresh)
            }
            Err(e) => {
                if j.ready() {
                    warn!(url = %j.url, error = %e, "key set refresh failed; keeping the last good keys");
                } else {
                    warn!(url = %j.url, error = %e, retry_in = ?backoff, "key set fetch failed");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60)).min(j.settings.max_refresh);
                wait
            }
        };
        let clock = j.clock.clone();
        drop(j);
        clock.sleep(wait).await;
    }
}

/// Reuses key caches across reloads: same URL and settings, same cache.
pub struct JwksRegistry {
    caches: Mutex<HashMap<String, Weak<Jwks>>>,
    clock: Clock,
}

impl JwksRegistry {
    pub fn new(clock: Clock) -> JwksRegistry {
        JwksRegistry { caches: Mutex::default(), clock }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn get(&self, url: &str, settings: JwksSettings, fetcher: &Fetcher) -> Arc<Jwks> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|_, w| w.strong_count() > 0);
        if let Some(j) = caches.get(url).and_then(Weak::upgrade).filter(|j| j.settings == settings) {
            return j;
        }
        let j = Jwks::start(url.to_string(), settings, fetcher.clone(), self.clock.clone());
        caches.insert(url.to_string(), Arc::downgrade(&j));
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn rsa_jwk(kid: &str, modulus_bytes: usize) -> serde_json::Value {
        // An odd modulus with its top bit set: exactly modulus_bytes * 8 bits.
        let mut n = vec![0xC5u8; modulus_bytes];
        n[modulus_bytes - 1] = 0x01;
        serde_json::json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"})
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_ignored_the_rest_loads() {
        let doc = serde_json::json!({"keys": [rsa_jwk("small", 128), rsa_jwk("big", 256), rsa_jwk("bigger", 512)]});
        let keys = parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap_or("")).collect();
        assert_eq!(kids, ["big", "bigger"]);
    }
}
