//! Session refresh (`refresh = true` on an `oidc` provider): an expired
//! session is renewed at the token endpoint (`grant_type=refresh_token`)
//! on the request that finds it expired, instead of a new login.
//!
//! **Where the refresh token rests.** In the shared store (memory, or
//! Redis for replicas), under the porteiro session's id, sealed with
//! XChaCha20-Poly1305 under a key HKDF derives from `session.secret` for
//! this purpose alone ([`Purpose::RefreshToken`]), bound to the session id.
//! Not in the cookie: a provider that rotates refresh tokens makes each one
//! single use, so the current token must be in one place every replica
//! sees, and a browser that held on to an old cookie must not hold a token.
//! The record also names its *generation*: the `exp` of the session it
//! renews. It is removed with the session (logout, revocation, back-channel
//! logout, a refused refresh).
//!
//! **Exactly one refresh per expired session, with no lock that can
//! expire.** A session's generation `g` (its `exp`) is refreshed by whoever
//! first records the claim `oidc-refresh-claim:{sid}:{g}` (`SET NX`, kept
//! as long as the session may live: it is not a lock that runs out, it
//! says "generation `g` is spent"). The winner refreshes, stores the new
//! token under the new generation, and publishes the *result*
//! (`oidc-refresh-result:{sid}:{g}`: the new identity, or "ended"). Every
//! other request on that generation, on any replica, waits for that result
//! and answers with it: the same new session, one call at the provider.
//! Within one replica, requests racing on a session also share one future
//! (a single-flight map), so they do not even poll the store. The refresh
//! runs in its own task: a client that hangs up does not cancel a refresh
//! others wait for. When the provider is unreachable the winner gives the
//! claim back (the token is untouched) and the request gets `503`; a
//! winner that dies mid-refresh leaves a spent claim and no result, and
//! the waiters end the session after [`RESULT_WAIT`] (the token's fate at
//! the provider is unknown).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::Provider;
use super::oidc::{MAX_TOKEN_RESPONSE, OidcLogin, TOKEN_TIMEOUT};
use crate::auth::fetch::FetchError;
use crate::auth::seal::{Purpose, Sealer};
use crate::auth::session::Identity;
use crate::auth::store::Store;
use crate::config::Secret;

/// How long a request waits for a refresh another replica started: longer
/// than that refresh can take (the token endpoint's timeout, and the
/// store's round trips).
pub const RESULT_WAIT: Duration = Duration::from_secs(TOKEN_TIMEOUT.as_secs() + 10);
/// How often a waiting request looks for the result.
const POLL: Duration = Duration::from_millis(50);
/// How long a refresh's outcome is shared with requests of this replica
/// that come later with the old cookie (the store keeps it longer).
const FLIGHT_MEMORY: Duration = Duration::from_secs(60);
/// How long "the provider is unreachable" is shared with waiters.
const UNAVAILABLE_MEMORY: Duration = Duration::from_secs(5);

/// What came of renewing a session.
#[derive(Clone)]
pub enum Renewal {
    /// The new session: same id, claims from the new ID token.
    Renewed(Arc<Identity>),
    /// The provider refused (`invalid_grant`, another `sub`...), or the
    /// session cannot be renewed: it ends. The reason, for logs and metrics.
    Ended(&'static str),
    /// The provider or the store cannot answer now: `503`, the session stays.
    Unavailable(&'static str),
}

/// One renewal as the request that asked sees it.
pub struct Asked {
    pub renewal: Renewal,
    /// This request's task did the work (asked the provider, or waited for
    /// another replica's result): the one that counts it. False for the
    /// requests of this replica that joined it.
    pub led: bool,
    /// The result came from another replica's refresh.
    pub joined: bool,
}

/// A refresh's outcome as the store shares it between replicas.
#[derive(Serialize, Deserialize)]
enum Shared {
    Renewed(Box<Identity>),
    Ended(String),
    Unavailable,
}

/// The refresh token record. No `Debug`: it holds a secret.
#[derive(Serialize, Deserialize)]
struct TokenRecord {
    /// The generation it renews: the `exp` of the session it belongs to.
    g: u64,
    /// The refresh token.
    t: String,
}

/// A provider's refresh machinery: the sealing key and the single-flight map.
pub struct Refresher {
    sealer: Sealer,
    /// `max_session_minutes` in seconds.
    max_session: u64,
    flights: Cache<String, Arc<OnceCell<(Renewal, bool)>>>,
}

fn token_key(sid: &str) -> String {
    format!("oidc-refresh-token:{sid}")
}

fn claim_key(sid: &str, generation: u64) -> String {
    format!("oidc-refresh-claim:{sid}:{generation}")
}

fn result_key(sid: &str, generation: u64) -> String {
    format!("oidc-refresh-result:{sid}:{generation}")
}

/// What the sealed token is bound to (the AEAD's associated data).
fn token_aad(sid: &str) -> Vec<u8> {
    format!("refresh-token:{sid}").into_bytes()
}

fn result_aad(sid: &str, generation: u64) -> Vec<u8> {
    format!("refresh-result:{sid}:{generation}").into_bytes()
}

/// Seconds left until `until`, at least one.
fn ttl(until: u64, now: u64) -> Duration {
    Duration::from_secs(until.saturating_sub(now).max(1))
}

impl Refresher {
    pub fn new(secret: &Secret, previous: &[Secret], max_session: u64) -> Refresher {
        Refresher {
            sealer: Sealer::new(secret, previous, Purpose::RefreshToken),
            max_session,
            flights: Cache::builder().max_capacity(100_000).time_to_live(FLIGHT_MEMORY).build(),
        }
    }

    /// After a login: keeps the refresh token the provider gave (if it gave
    /// one) and makes the session renewable until login +
    /// `max_session_minutes`. Without a token, or when it cannot be kept,
    /// the session simply ends at `exp`.
    pub(super) async fn keep(
        &self,
        provider: &OidcLogin,
        store: &dyn Store,
        identity: &mut Identity,
        token: Option<&str>,
        now: u64,
    ) {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            info!(provider = %provider.s.id, "the provider gave no refresh token; the session will not be renewed");
            return;
        };
        let until = now + self.max_session;
        match self.put_token(store, &identity.sid, identity.exp, token, until, now).await {
            Ok(()) => identity.renew_until = Some(until),
            Err(e) => {
                warn!(provider = %provider.s.id, error = %e, "cannot keep the refresh token; the session will not be renewed")
            }
        }
    }

    async fn put_token(
        &self,
        store: &dyn Store,
        sid: &str,
        generation: u64,
        token: &str,
        until: u64,
        now: u64,
    ) -> Result<(), String> {
        let record = serde_json::to_vec(&TokenRecord { g: generation, t: token.to_string() })
            .map_err(|_| "cannot encode the refresh token".to_string())?;
        let sealed = self.sealer.seal(&token_aad(sid), &record).ok_or("cannot seal the refresh token")?;
        store.put(&token_key(sid), sealed.into_bytes(), ttl(until, now)).await.map_err(|e| e.to_string())
    }

    async fn token(&self, store: &dyn Store, sid: &str) -> Result<Option<TokenRecord>, String> {
        let Some(sealed) = store.get(&token_key(sid)).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let plain = std::str::from_utf8(&sealed).ok().and_then(|s| self.sealer.open(&token_aad(sid), s));
        Ok(plain.and_then(|p| serde_json::from_slice(&p).ok()))
    }

    async fn publish(&self, store: &dyn Store, sid: &str, generation: u64, shared: &Shared, keep: Duration) {
        let sealed = serde_json::to_vec(shared).ok().and_then(|p| self.sealer.seal(&result_aad(sid, generation), &p));
        let Some(sealed) = sealed else { return };
        if let Err(e) = store.put(&result_key(sid, generation), sealed.into_bytes(), keep).await {
            warn!(error = %e, "cannot share a session refresh's outcome; other replicas will end the session");
        }
    }

    async fn result(&self, store: &dyn Store, sid: &str, generation: u64) -> Result<Option<Shared>, String> {
        let Some(sealed) = store.get(&result_key(sid, generation)).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let plain = std::str::from_utf8(&sealed).ok().and_then(|s| self.sealer.open(&result_aad(sid, generation), s));
        Ok(plain.and_then(|p| serde_json::from_slice(&p).ok()))
    }
}

/// Removes a session's refresh token (logout, revocation, back-channel
/// logout). Best effort: a revoked session is never renewed anyway, and the
/// record expires with the session.
pub async fn forget(store: &dyn Store, sid: &str) {
    if let Err(e) = store.take(&token_key(sid)).await {
        warn!(error = %e, "cannot remove a session's refresh token; it expires with the session");
    }
}

/// Renews `expired` (a session of `provider` past `exp`, before
/// `renew_until`, not revoked). Requests racing on one session share one
/// renewal, on this replica and across replicas.
pub async fn renew(provider: &Arc<Provider>, store: &Arc<dyn Store>, expired: Arc<Identity>) -> Asked {
    let Some(refresher) = provider.as_oidc().and_then(|o| o.refresher.as_ref()) else {
        return Asked { renewal: Renewal::Ended("refresh_off"), led: true, joined: false };
    };
    let key = format!("{}:{}", expired.sid, expired.exp);
    let flight = refresher.flights.get_with(key.clone(), || Arc::new(OnceCell::new()));
    let led = AtomicBool::new(false);
    let work = {
        let (provider, store) = (provider.clone(), store.clone());
        // Its own task: the refresh goes on (and others get its result)
        // when the request that started it is cancelled.
        async move {
            tokio::spawn(async move { attempt(&provider, store.as_ref(), &expired).await })
                .await
                .unwrap_or((Renewal::Unavailable("refresh_failed"), false))
        }
    };
    let led_ref = &led;
    let (renewal, joined) = flight
        .get_or_init(|| async move {
            led_ref.store(true, Ordering::Relaxed);
            work.await
        })
        .await
        .clone();
    let led = led.load(Ordering::Relaxed);
    // "Unavailable" is not remembered: the next request tries again.
    if led && matches!(renewal, Renewal::Unavailable(_)) {
        refresher.flights.invalidate(&key);
    }
    Asked { renewal, led, joined }
}

/// One renewal: claim the generation, or wait for whoever did. The bool:
/// the result came from another replica.
async fn attempt(provider: &Provider, store: &dyn Store, expired: &Identity) -> (Renewal, bool) {
    let Some(oidc) = provider.as_oidc() else { return (Renewal::Ended("refresh_off"), false) };
    let Some(r) = oidc.refresher.as_ref() else { return (Renewal::Ended("refresh_off"), false) };
    let now = oidc.s.clock.now();
    let (sid, generation) = (expired.sid.as_str(), expired.exp);
    let until = expired.renew_until.unwrap_or(now);
    match store.insert_once(&claim_key(sid, generation), ttl(until, now)).await {
        Ok(true) => {}
        Ok(false) => return (wait_for_result(oidc, r, store, sid, generation).await, true),
        Err(e) => {
            warn!(provider = %oidc.s.id, error = %e, "session refresh: store unavailable");
            return (Renewal::Unavailable("store_unavailable"), false);
        }
    }
    let record = match r.token(store, sid).await {
        Ok(Some(record)) if record.g == generation => record,
        Ok(_) => {
            // Gone (logged out, expired) or of another generation: nothing
            // this session can be renewed with.
            r.publish(store, sid, generation, &Shared::Ended("no_refresh_token".into()), ttl(until, now)).await;
            return (Renewal::Ended("no_refresh_token"), false);
        }
        Err(e) => {
            warn!(provider = %oidc.s.id, error = %e, "session refresh: store unavailable");
            give_back(store, sid, generation).await;
            return (Renewal::Unavailable("store_unavailable"), false);
        }
    };
    match refresh(oidc, expired, &record.t, now).await {
        Ok((identity, rotated, id_token)) => {
            let token = rotated.as_deref().unwrap_or(&record.t);
            if let Err(e) = r.put_token(store, sid, identity.exp, token, until, now).await {
                // The provider may have rotated the token already: without
                // the new one the session cannot be renewed again.
                warn!(provider = %oidc.s.id, error = %e, "session refresh: cannot keep the new refresh token");
                r.publish(store, sid, generation, &Shared::Ended("store_unavailable".into()), ttl(until, now)).await;
                return (Renewal::Ended("store_unavailable"), false);
            }
            if let Some(resolved) = oidc.resolved() {
                super::oidc_logout::keep_id_token(oidc, &resolved, store, &identity, &id_token).await;
            }
            // Kept as long as a request with the old cookie may still come.
            r.publish(
                store,
                sid,
                generation,
                &Shared::Renewed(Box::new(identity.clone())),
                ttl(identity.exp + 60, now),
            )
            .await;
            (Renewal::Renewed(Arc::new(identity)), false)
        }
        Err(Refused::Ended(reason)) => {
            forget(store, sid).await;
            r.publish(store, sid, generation, &Shared::Ended(reason.into()), ttl(until, now)).await;
            (Renewal::Ended(reason), false)
        }
        Err(Refused::Unavailable(reason)) => {
            r.publish(store, sid, generation, &Shared::Unavailable, UNAVAILABLE_MEMORY).await;
            give_back(store, sid, generation).await;
            (Renewal::Unavailable(reason), false)
        }
    }
}

/// The provider could not be asked: the generation is not spent (the token
/// was not used up), a later request may try again.
async fn give_back(store: &dyn Store, sid: &str, generation: u64) {
    if let Err(e) = store.take(&claim_key(sid, generation)).await {
        warn!(error = %e, "session refresh: cannot release the claim; the session ends at its next request");
    }
}

/// Waits for the outcome of the refresh another replica (or an earlier
/// request) claimed.
async fn wait_for_result(oidc: &OidcLogin, r: &Refresher, store: &dyn Store, sid: &str, generation: u64) -> Renewal {
    let deadline = tokio::time::Instant::now() + RESULT_WAIT;
    loop {
        match r.result(store, sid, generation).await {
            Ok(Some(Shared::Renewed(identity))) => return Renewal::Renewed(Arc::new(*identity)),
            Ok(Some(Shared::Ended(_))) => return Renewal::Ended("ended_elsewhere"),
            Ok(Some(Shared::Unavailable)) => return Renewal::Unavailable("idp_unavailable"),
            Ok(None) => {}
            Err(e) => {
                warn!(provider = %oidc.s.id, error = %e, "session refresh: store unavailable");
                return Renewal::Unavailable("store_unavailable");
            }
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(provider = %oidc.s.id, "session refresh: a refresh claimed elsewhere never finished; the session ends");
            return Renewal::Ended("abandoned");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why the provider did not renew.
enum Refused {
    Ended(&'static str),
    Unavailable(&'static str),
}

/// The refresh grant at the token endpoint; the new identity (same
/// session id and `renew_until`), the rotated refresh token if any, and
/// the new ID token.
async fn refresh(
    oidc: &OidcLogin,
    expired: &Identity,
    token: &str,
    now: u64,
) -> Result<(Identity, Option<String>, String), Refused> {
    let resolved = oidc.resolved().ok_or(Refused::Unavailable("idp_unavailable"))?;
    let scope = oidc.s.scopes.join(" ");
    let grant = [("grant_type", "refresh_token"), ("refresh_token", token), ("scope", scope.as_str())];
    let req = oidc.token_post(&resolved, &grant).map_err(|_| Refused::Unavailable("token_request"))?;
    let fetched = oidc.fetcher.send(req, TOKEN_TIMEOUT, MAX_TOKEN_RESPONSE).await.map_err(|e| {
        warn!(provider = %oidc.s.id, error = %e, "session refresh: token endpoint failed");
        match e {
            FetchError::Timeout(_) => Refused::Unavailable("token_timeout"),
            _ => Refused::Unavailable("token_unreachable"),
        }
    })?;
    let body = crate::auth::json::object(&fetched.body);
    if fetched.status != StatusCode::OK {
        let error = body.as_ref().ok().and_then(|b| b.get("error")).and_then(Value::as_str).unwrap_or("unknown");
        warn!(provider = %oidc.s.id, status = fetched.status.as_u16(), error, "session refresh refused by the provider");
        // RFC 6749 §5.2: `invalid_grant` is the grant itself (revoked,
        // expired, user disabled); anything else is the provider's or the
        // client's trouble, not a reason to end the user's session.
        return Err(if fetched.status.is_client_error() && error == "invalid_grant" {
            Refused::Ended("invalid_grant")
        } else {
            Refused::Unavailable("refresh_refused")
        });
    }
    let tokens = body.map_err(|_| Refused::Unavailable("token_response"))?;
    let Some(id_token) = tokens.get("id_token").and_then(Value::as_str) else {
        warn!(provider = %oidc.s.id, "session refresh: the provider sent no ID token");
        return Err(Refused::Ended("no_id_token"));
    };
    let mut claims = oidc.verify_id_token(&resolved, id_token, None, now).await.map_err(|f| {
        warn!(provider = %oidc.s.id, reason = f.reason, "session refresh: ID token refused");
        Refused::Ended("id_token_refused")
    })?;
    // OpenID Connect Core §12.2: the same user, or no renewal.
    if claims.get("sub").and_then(Value::as_str) != Some(expired.sub.as_str()) {
        warn!(provider = %oidc.s.id, user = %expired.sub, "session refresh: the ID token names another subject");
        return Err(Refused::Ended("sub_changed"));
    }
    if oidc.s.fetch_userinfo {
        let access = tokens.get("access_token").and_then(Value::as_str);
        oidc.merge_userinfo(&resolved, access, &mut claims).await.map_err(|_| Refused::Unavailable("userinfo"))?;
    }
    let mut identity = oidc.identity(&claims, now).map_err(|f| {
        warn!(provider = %oidc.s.id, reason = f.reason, "session refresh: claims refused");
        Refused::Ended("claims_refused")
    })?;
    identity.sid.clone_from(&expired.sid);
    identity.renew_until = expired.renew_until;
    if let Some(until) = identity.renew_until {
        identity.exp = identity.exp.min(until);
    }
    if identity.oidc_sid.is_none() {
        identity.oidc_sid.clone_from(&expired.oidc_sid);
    }
    let rotated = tokens.get("refresh_token").and_then(Value::as_str).map(str::to_string);
    Ok((identity, rotated, id_token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::MemoryStore;
    use crate::clock::Clock;

    /// The token rests sealed, bound to its session: the store never holds
    /// it in the clear, and a record moved to another session does not open.
    #[tokio::test]
    async fn tokens_rest_sealed_and_bound_to_their_session() {
        let r = Refresher::new(&Secret::new(vec![3u8; 32]), &[], 3600);
        let store = MemoryStore::new(100, Clock::default());
        r.put_token(&store, "s1", 42, "rt-secret-value", 5000, 1000).await.unwrap();
        let raw = store.get(&token_key("s1")).await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("rt-secret-value"));
        let back = r.token(&store, "s1").await.unwrap().unwrap();
        assert_eq!((back.g, back.t.as_str()), (42, "rt-secret-value"));
        store.put(&token_key("s2"), raw, Duration::from_secs(60)).await.unwrap();
        assert!(r.token(&store, "s2").await.unwrap().is_none(), "bound to s1");
        forget(&store, "s1").await;
        assert!(r.token(&store, "s1").await.unwrap().is_none());
    }
}
