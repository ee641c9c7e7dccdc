//! Login attempts bound to the browser that started them (OpenID Connect
//! and SAML): one cookie per attempt, named after its state, sealed with a
//! key of their own, sent only to porteiro's endpoints, at most
//! [`MAX_ATTEMPTS`] per browser.

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::auth::seal::{Purpose, Sealer};
use crate::auth::session::{cookie_pairs, set_cookie_same_site};
use crate::clock::Clock;
use crate::config::Secret;

/// Most login attempts (state cookies) one browser holds at once.
pub const MAX_ATTEMPTS: usize = 5;
/// How long a login attempt may take, in seconds.
pub const ATTEMPT_SECONDS: u64 = 600;

/// Login-attempt cookies: one per attempt, named after its state, sealed
/// with a key of their own, sent only to porteiro's endpoints. They bind an
/// attempt to the browser that started it, for OpenID Connect (the whole
/// attempt rides in the cookie) and SAML (the cookie holds a value the
/// server-side attempt must match). Both count towards [`MAX_ATTEMPTS`].
pub struct LoginStates {
    sealer: Sealer,
    secure: bool,
    path: String,
    /// Dates attempts and decides their freshness.
    pub clock: Clock,
}

const STATE_COOKIE: &str = "porteiro_login_";

/// What a login-attempt cookie holds, whatever the login method.
pub trait AttemptCookie: Serialize + serde::de::DeserializeOwned {
    /// The state (OpenID Connect) or RelayState (SAML) naming the attempt.
    fn state(&self) -> &str;
    /// Created, unix seconds.
    fn created(&self) -> u64;
}

/// What every attempt cookie carries: its provider, state and creation
/// time; the rest is the login method's.
#[derive(Serialize, Deserialize)]
struct Owner {
    p: String,
    state: String,
    t: u64,
}

impl AttemptCookie for Owner {
    fn state(&self) -> &str {
        &self.state
    }

    fn created(&self) -> u64 {
        self.t
    }
}

/// The creation time every attempt cookie carries; the rest is ignored.
#[derive(Deserialize)]
struct Created {
    t: u64,
    #[serde(default)]
    ns: u64,
}

/// Which requests bring an attempt cookie back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comeback {
    /// A top-level GET navigation (the OpenID Connect redirect): `SameSite=Lax`.
    Navigation,
    /// The IdP's cross-site form POST (SAML HTTP-POST binding): Lax cookies
    /// stay behind, so `SameSite=None` (which browsers take only with
    /// `Secure`); on a plain-http demo, no `SameSite` attribute at all.
    CrossSitePost,
}

impl LoginStates {
    pub fn new(secret: &Secret, previous: &[Secret], secure: bool, auth_prefix: &str, clock: Clock) -> LoginStates {
        LoginStates {
            sealer: Sealer::new(secret, previous, Purpose::LoginState),
            secure,
            path: format!("{auth_prefix}/"),
            clock,
        }
    }

    fn name(state: &str) -> String {
        format!("{STATE_COOKIE}{}", &state[..state.len().min(12)])
    }

    fn cookie(&self, name: &str, value: &str, max_age: u64, comeback: Comeback) -> Option<HeaderValue> {
        let same_site = match comeback {
            Comeback::Navigation => Some(cookie::SameSite::Lax),
            Comeback::CrossSitePost if self.secure => Some(cookie::SameSite::None),
            Comeback::CrossSitePost => None,
        };
        set_cookie_same_site(name, value, &self.path, None, self.secure, max_age, same_site)
    }

    /// The `Set-Cookie` values that start `attempt`: its cookie, and the
    /// expiry of the oldest attempts beyond [`MAX_ATTEMPTS`] (unreadable
    /// ones first).
    pub fn store<T: AttemptCookie>(
        &self,
        attempt: &T,
        request: &HeaderMap,
        comeback: Comeback,
    ) -> Option<Vec<HeaderValue>> {
        let name = Self::name(attempt.state());
        let plain = serde_json::to_vec(attempt).ok()?;
        let sealed = self.sealer.seal(name.as_bytes(), &plain)?;
        let mut out = vec![self.cookie(&name, &sealed, ATTEMPT_SECONDS, comeback)?];
        let mut held: Vec<((u64, u64), String)> = cookie_pairs(request)
            .filter(|(n, _)| n.starts_with(STATE_COOKIE) && *n != name)
            .map(|(n, v)| {
                let created = self
                    .sealer
                    .open(n.as_bytes(), v)
                    .and_then(|p| serde_json::from_slice::<Created>(&p).ok())
                    .map_or((0, 0), |c| (c.t, c.ns));
                (created, n.to_string())
            })
            .collect();
        held.sort();
        let excess = (held.len() + 1).saturating_sub(MAX_ATTEMPTS);
        for (_, n) in held.iter().take(excess) {
            out.extend(self.cookie(n, "", 0, comeback));
        }
        Some(out)
    }

    /// The attempt `state` names, if this browser holds its cookie, the
    /// cookie opens, and the attempt is fresh.
    pub fn open<T: AttemptCookie>(&self, state: &str, request: &HeaderMap) -> Option<T> {
        let name = Self::name(state);
        // Several cookies of this name (one tossed in from a sibling
        // domain): the one that opens counts.
        cookie_pairs(request).filter(|(n, _)| *n == name).find_map(|(_, value)| {
            let attempt: T = serde_json::from_slice(&self.sealer.open(name.as_bytes(), value)?).ok()?;
            let fresh = self.clock.now().saturating_sub(attempt.created()) <= ATTEMPT_SECONDS;
            (fresh && bool::from(attempt.state().as_bytes().ct_eq(state.as_bytes()))).then_some(attempt)
        })
    }

    /// The provider id of the attempt `state` names, if this browser holds it.
    pub fn provider_of(&self, state: &str, request: &HeaderMap) -> Option<String> {
        self.open::<Owner>(state, request).map(|a| a.p)
    }

    /// The `Set-Cookie` that ends the attempt of `state`; `None` for a state
    /// porteiro never makes (a client's bytes never reach a cookie name).
    pub fn clear(&self, state: &str, comeback: Comeback) -> Option<HeaderValue> {
        let ours = !state.is_empty() && state.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ours.then(|| self.cookie(&Self::name(state), "", 0, comeback))?
    }
}
