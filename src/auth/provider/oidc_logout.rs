//! OpenID Connect logout, both ways:
//!
//! - **RP-Initiated Logout 1.0**: when the provider's discovery document
//!   lists an `end_session_endpoint` (and `logout_at_provider` is not
//!   off), `/sso/logout` sends the browser there with `client_id`,
//!   `post_logout_redirect_uri` = `{public_url}{auth_prefix}/logout/done`,
//!   `state` = the provider's id (which `logout_url` to go on to, nothing
//!   secret) and `id_token_hint`. The ID token is kept for that in the
//!   shared store under the session's id, not in the cookie (a signed
//!   token of 1 to 2 KB would make every cookie that much larger), for as
//!   long as the session lives, and taken once at logout.
//! - **Back-Channel Logout 1.0**: the provider posts a `logout_token` to
//!   `/sso/backchannel-logout`. [`verify`] checks it as §2.6 of that spec
//!   says and names the sessions to end (by `sid`, else `sub`); the gateway
//!   ends them on every replica.
//!
//! Which provider a logout token is for is read from its own `iss` and
//! `aud` (the URL is the same for every provider); it is then verified
//! with that provider's keys and rules only, so one provider's keys never
//! verify a token naming another.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use tracing::warn;

use super::Ctx;
use super::oidc::{OidcLogin, Resolved};
use crate::auth::session::Identity;
use crate::auth::store::Store;
use crate::auth::token::{KeySource, MAX_TOKEN_BYTES, Rules, TokenError, Verifier, string_claim};

/// `{auth_prefix}` + this: the `post_logout_redirect_uri` to register.
pub const LOGOUT_DONE: &str = "/logout/done";

/// The `events` member a logout token must carry (Back-Channel Logout §2.4).
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Largest `POST /sso/backchannel-logout` body: one token, form-encoded
/// (a JWT's characters need no escaping), and a little room.
pub const MAX_BODY_BYTES: usize = MAX_TOKEN_BYTES + 1024;

/// Oldest `iat` a logout token may have (plus the provider's leeway):
/// providers send it the moment the user logs out, and a token kept for
/// later is a replay.
pub const MAX_TOKEN_AGE: u64 = 300;

/// The store key of a session's ID token (for `id_token_hint`).
fn hint_key(session_id: &str) -> String {
    format!("oidc-id-token:{session_id}")
}

/// After a login: keeps the ID token for the logout at the provider, when
/// there will be one. Best effort: without it the logout goes there with
/// `client_id` alone.
pub(super) async fn keep_id_token(
    provider: &OidcLogin,
    resolved: &Resolved,
    store: &dyn Store,
    identity: &Identity,
    id_token: &str,
) {
    if !provider.s.logout_at_provider || resolved.end_session_endpoint.is_none() {
        return;
    }
    // A refreshable session may live until `renew_until` (and each refresh
    // keeps the new ID token here again).
    let until = identity.renew_until.unwrap_or(identity.exp);
    let ttl = Duration::from_secs(until.saturating_sub(identity.iat).max(1));
    if let Err(e) = store.put(&hint_key(&identity.sid), id_token.as_bytes().to_vec(), ttl).await {
        warn!(provider = %provider.s.id, error = %e, "cannot keep the ID token; logout at the provider goes without id_token_hint");
    }
}

/// Where `/sso/logout` sends the browser of a session of `provider`: its
/// end-session endpoint with the RP-Initiated Logout parameters, or `None`
/// (no endpoint, or `logout_at_provider = false`). Spends the kept ID
/// token.
pub async fn end_session_url(provider: &OidcLogin, store: &dyn Store, identity: &Identity) -> Option<String> {
    if !provider.s.logout_at_provider {
        return None;
    }
    let resolved = provider.resolved()?;
    let mut url = url::Url::parse(resolved.end_session_endpoint.as_deref()?).ok()?;
    let hint = match store.take(&hint_key(&identity.sid)).await {
        Ok(hint) => hint.and_then(|h| String::from_utf8(h).ok()),
        Err(e) => {
            warn!(provider = %provider.s.id, error = %e, "cannot read the kept ID token; logging out without id_token_hint");
            None
        }
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &provider.s.client_id)
            .append_pair("post_logout_redirect_uri", &provider.s.post_logout_redirect_uri)
            .append_pair("state", &provider.s.id);
        if let Some(hint) = &hint {
            q.append_pair("id_token_hint", hint);
        }
    }
    Some(url.to_string())
}

/// Whose sessions a verified logout token ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutOf {
    /// The provider (porteiro's id) that sent it.
    pub provider: String,
    /// The provider's session id; when present, only its sessions end.
    pub sid: Option<String>,
    pub sub: Option<String>,
}

/// A refused logout token: `reason` is counted and logged, `text` goes
/// back in `error_description`. `provider` is `-` until one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub provider: String,
    pub reason: &'static str,
    pub text: String,
}

impl Refusal {
    fn new(provider: &str, reason: &'static str, text: impl Into<String>) -> Refusal {
        Refusal { provider: provider.to_string(), reason, text: text.into() }
    }

    fn token(provider: &str, e: TokenError) -> Refusal {
        Refusal::new(provider, e.reason(), format!("logout {}", e.description()))
    }
}

/// The payload, read before verification only to choose the provider.
fn peek(token: &str) -> Result<Map<String, Value>, Refusal> {
    let malformed = || Refusal::token("-", TokenError::Malformed);
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::token("-", TokenError::TooLong));
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let raw = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    crate::auth::json::object(&raw).map_err(|_| malformed())
}

fn names_audience(claims: &Map<String, Value>, client_id: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a == client_id),
        _ => false,
    }
}

/// `POST /sso/backchannel-logout`'s `logout_token`, checked as OpenID
/// Connect Back-Channel Logout 1.0 §2.6 says, and its `jti` spent once
/// (across replicas with a shared store). One entry per provider the
/// token is for: the OpenID providers whose `issuer` is its `iss` and whose
/// `client_id` is in its `aud` (normally exactly one).
pub async fn verify(ctx: &Ctx<'_>, token: &str) -> Result<Vec<LogoutOf>, Refusal> {
    let peeked = peek(token)?;
    let iss = match peeked.get("iss") {
        Some(Value::String(iss)) => iss.as_str(),
        Some(_) => return Err(Refusal::token("-", TokenError::BadClaim("iss"))),
        None => return Err(Refusal::token("-", TokenError::MissingClaim("iss"))),
    };
    let by_issuer: Vec<&OidcLogin> =
        ctx.providers.iter().filter_map(|p| p.as_oidc()).filter(|o| o.s.issuer == iss).collect();
    if by_issuer.is_empty() {
        return Err(Refusal::token("-", TokenError::WrongIssuer));
    }
    let candidates: Vec<&OidcLogin> =
        by_issuer.iter().copied().filter(|o| names_audience(&peeked, &o.s.client_id)).collect();
    if candidates.is_empty() {
        let only = if by_issuer.len() == 1 { by_issuer[0].s.id.as_str() } else { "-" };
        return Err(Refusal::token(only, TokenError::WrongAudience));
    }
    let now = ctx.clock.now();
    let mut out = Vec::with_capacity(candidates.len());
    for provider in candidates {
        let (logout, jti) = check(provider, token, now).await?;
        spend(provider, ctx.store, &jti).await?;
        out.push(logout);
    }
    Ok(out)
}

/// The checks of §2.6 with `provider`'s keys and rules; the logout and its
/// `jti`.
async fn check(provider: &OidcLogin, token: &str, now: u64) -> Result<(LogoutOf, String), Refusal> {
    let id = provider.s.id.as_str();
    let refuse = |e: TokenError| Refusal::token(id, e);
    let resolved = provider
        .resolved()
        .ok_or_else(|| Refusal::new(id, "idp_unavailable", "the provider's keys are not loaded yet"))?;
    // §2.6 steps 3 and 4: the provider's keys (`alg` from the allow-list,
    // never `none`), `iss`, `aud`, `iat` (and `exp` when present) as for an
    // ID token. Duplicate member names make the token malformed.
    let rules = Rules {
        issuer: provider.s.issuer.clone(),
        audience: Some(provider.s.client_id.clone()),
        algorithms: provider.s.algorithms.clone(),
        leeway: provider.s.leeway,
        max_age: Some(MAX_TOKEN_AGE),
        require_exp: false,
    };
    let verified =
        Verifier::new(KeySource::Jwks(resolved.jwks.clone()), rules).verify(token, now).await.map_err(refuse)?;
    let c = &verified.claims;
    if verified.iat.is_none() {
        return Err(refuse(TokenError::MissingClaim("iat")));
    }
    // Several audiences: the authorized party must be us, as for ID tokens.
    if let Some(Value::Array(aud)) = c.get("aud") {
        if aud.len() > 1 && c.get("azp").and_then(Value::as_str) != Some(provider.s.client_id.as_str()) {
            return Err(refuse(TokenError::WrongAudience));
        }
    }
    if c.get("azp").is_some_and(|azp| azp.as_str() != Some(provider.s.client_id.as_str())) {
        return Err(refuse(TokenError::BadClaim("azp")));
    }
    // Step 5: a logout token, not an ID token or any other JWT of this
    // provider: the back-channel logout event, as a JSON object...
    let event = match c.get("events") {
        None => return Err(refuse(TokenError::MissingClaim("events"))),
        Some(Value::Object(events)) => events.get(BACKCHANNEL_EVENT),
        Some(_) => return Err(refuse(TokenError::BadClaim("events"))),
    };
    match event {
        Some(Value::Object(_)) => {}
        Some(_) => return Err(refuse(TokenError::BadClaim("events"))),
        None => return Err(Refusal::new(id, "not_a_logout_token", "the token has no back-channel logout event")),
    }
    // ... and step 8: no `nonce` (an ID token always has one for porteiro).
    if c.contains_key("nonce") {
        return Err(Refusal::new(id, "nonce_present", "a logout token must not carry a nonce"));
    }
    // Step 6: whose sessions. Step 7: `jti`, spent below.
    let sid = string_claim(c, "sid").map_err(refuse)?.filter(|s| !s.is_empty());
    let sub = verified.sub.clone().filter(|s| !s.is_empty());
    if sid.is_none() && sub.is_none() {
        return Err(Refusal::new(id, "no_sid_nor_sub", "the logout token names neither a sid nor a sub"));
    }
    let jti = verified.jti.clone().filter(|j| !j.is_empty()).ok_or_else(|| refuse(TokenError::MissingClaim("jti")))?;
    Ok((LogoutOf { provider: id.to_string(), sid, sub }, jti))
}

/// Step 7: a logout token is accepted once. Its `jti` is remembered for
/// as long as its `iat` could still pass, so a replay is either seen here
/// or too old.
async fn spend(provider: &OidcLogin, store: &dyn Store, jti: &str) -> Result<(), Refusal> {
    let id = provider.s.id.as_str();
    let ttl = Duration::from_secs(MAX_TOKEN_AGE + 2 * provider.s.leeway + 60);
    match store.insert_once(&format!("backchannel-logout:{id}:jti:{jti}"), ttl).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::token(id, TokenError::Replayed)),
        Err(e) => {
            warn!(provider = id, error = %e, "replay store unavailable; back-channel logout refused");
            Err(Refusal::new(id, "store_unavailable", "sessions cannot be ended right now; try again"))
        }
    }
}
