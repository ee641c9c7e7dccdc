//! `kind = "jwt"`: a signed token minted by the customer's login page
//! (TomTicket, Document360 JWT). The browser is sent to `login_url` with its
//! return path; the login page redirects back to `/sso/callback?jwt=...`.
//! A token in a URL is replayable, so each one is accepted once.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::claims::{self, ClaimMap};
use super::session::Identity;
use super::store::Store;
use super::token::{TokenError, Verifier};

pub struct JwtLogin {
    pub id: String,
    /// Where browsers are sent to sign in (the "authentication address").
    pub login_url: url::Url,
    /// `login_url` is a page of porteiro's own: browsers get its path only.
    pub same_origin: bool,
    /// Query parameter carrying the return path to `login_url`.
    pub return_param: String,
    pub logout_url: Option<String>,
    pub verifier: Verifier,
    pub claims: ClaimMap,
    /// Session validity in seconds.
    pub validity: u64,
}

impl JwtLogin {
    /// Where to send a browser that should sign in and come back to `return_to`.
    pub fn login_location(&self, return_to: &str) -> String {
        let mut url = self.login_url.clone();
        url.query_pairs_mut().append_pair(&self.return_param, return_to);
        if self.same_origin {
            return format!("{}?{}", url.path(), url.query().unwrap_or_default());
        }
        url.to_string()
    }

    /// Verifies a login token and turns it into a session identity. The
    /// token is then spent: a second use is refused, across replicas when
    /// the store is shared.
    pub async fn login(&self, token: &str, now: u64, store: &dyn Store) -> Result<Identity, TokenError> {
        let verified = self.verifier.verify(token, now).await?;
        let identity = claims::login_identity(&verified.claims, &self.claims, &self.id, now, self.validity)?;
        let rules = self.verifier.rules();
        // Remember the token until it could no longer pass anyway.
        let until = verified
            .exp
            .unwrap_or(0)
            .max(verified.iat.unwrap_or(now).saturating_add(rules.max_age.unwrap_or(0)))
            .saturating_add(rules.leeway);
        let ttl = Duration::from_secs(until.saturating_sub(now).clamp(1, 24 * 3600));
        let key = match &verified.jti {
            Some(jti) => format!("replay:{}:jti:{jti}", self.id),
            None => format!("replay:{}:sha256:{:x}", self.id, Sha256::digest(token.as_bytes())),
        };
        match store.insert_once(&key, ttl).await {
            Ok(true) => Ok(identity),
            Ok(false) => Err(TokenError::Replayed),
            Err(e) => {
                tracing::warn!(provider = %self.id, error = %e, "replay cache unavailable; login refused");
                Err(TokenError::StoreUnavailable)
            }
        }
    }
}
