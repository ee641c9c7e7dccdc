//! `kind = "jwt"`: a signed token minted by the customer's login page
//! (TomTicket, Document360 JWT). The browser is sent to `login_url` with its
//! return path; the login page redirects back to `/sso/callback?jwt=...`.
//! A token in a URL is replayable, so each one is accepted once.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::claims::{self, ClaimMap};
use crate::auth::session::Identity;
use crate::auth::store::Store;
use crate::auth::token::{TokenError, Verifier};
use crate::config::{Config, JwtConfig, KeyConfig, ProviderKind};
use crate::error::Class;

use super::{Ctx, Outcome, Params, Setup, param};

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
    pub fn build(id: &str, c: &JwtConfig, setup: &Setup) -> Result<JwtLogin, String> {
        // A path is a page of porteiro's own (the demo login page).
        let same_origin = c.login_url.starts_with('/');
        let login_url = match same_origin {
            true => url::Url::parse("http://porteiro.invalid").and_then(|base| base.join(&c.login_url)),
            false => url::Url::parse(&c.login_url),
        }
        .map_err(|e| format!("provider {id}: login_url: {e}"))?;
        Ok(JwtLogin {
            id: id.to_string(),
            login_url,
            same_origin,
            return_param: c.return_param.clone(),
            logout_url: c.logout_url.clone(),
            verifier: Verifier::from_config(id, &c.token, setup.fetcher, setup.jwks)?,
            claims: ClaimMap { groups_claim: c.groups_claim.clone(), keep: setup.keep.to_vec() },
            validity: setup.validity(),
        })
    }

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

/// `GET /sso/callback?jwt=&redirectUrl=`: a login token comes back. The
/// provider is the one named (`provider=`), else the one whose issuer the
/// token claims.
pub async fn callback(ctx: &Ctx<'_>, q: &Params) -> Outcome {
    let Some(token) = param(q, "jwt") else {
        return Outcome::failed("-", Class::BadRequest, "missing_token", "The login answer carries no token.");
    };
    let candidates: Vec<&JwtLogin> = match param(q, "provider") {
        Some(id) => ctx.provider(id).and_then(|p| p.as_jwt()).into_iter().collect(),
        None => {
            let iss = unverified_issuer(token);
            ctx.providers
                .iter()
                .filter_map(|p| p.as_jwt())
                .filter(|p| iss.as_deref() == Some(p.verifier.rules().issuer.as_str()))
                .collect()
        }
    };
    if candidates.is_empty() {
        return Outcome::failed("-", Class::Unauthorized, "unknown_issuer", "No login provider accepts this token.");
    }
    let now = ctx.clock.now();
    let mut last = TokenError::Malformed;
    let mut chosen = None;
    for provider in &candidates {
        match provider.login(token, now, ctx.store).await {
            Ok(identity) => {
                chosen = Some((provider, identity));
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some((provider, identity)) = chosen else {
        let id = candidates.first().map_or("-", |p| p.id.as_str());
        return Outcome::failed(id, last.class(), last.reason(), last.description());
    };
    if let Err(why) = identity.check_header_safe() {
        return Outcome::failed(&provider.id, Class::Unauthorized, "unsafe_claims", why);
    }
    let return_to = param(q, "redirectUrl").or_else(|| param(q, &provider.return_param));
    Outcome::SignedIn {
        provider: provider.id.clone(),
        identity: Box::new(identity),
        return_to: ctx.return_path(return_to),
    }
}

/// The `iss` of a token, read without verifying anything: it only picks
/// which provider's keys will verify the token.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// The insecure built-in login page's signer: it stands in for a
/// customer's "authentication address" in the demo (`demo_login = true`).
pub struct DemoLogin {
    pub provider: String,
    issuer: String,
    key: jsonwebtoken::EncodingKey,
}

impl DemoLogin {
    pub fn from_config(config: &Config) -> Option<DemoLogin> {
        config.providers.iter().find_map(|p| match &p.kind {
            ProviderKind::Jwt(j) if j.demo_login => match &j.token.keys {
                KeyConfig::Secret(s) => Some(DemoLogin {
                    provider: p.id.clone(),
                    issuer: j.token.issuer.clone(),
                    key: jsonwebtoken::EncodingKey::from_secret(s.expose()),
                }),
                _ => None,
            },
            _ => None,
        })
    }

    /// A short-lived HS256 login token, as the customer's login page would
    /// mint it.
    pub fn mint(&self, name: &str, email: &str, groups: &[&str], now: u64) -> Option<String> {
        let claims = serde_json::json!({
            "iss": self.issuer, "name": name, "email": email, "groups": groups,
            "iat": now, "exp": now + 60, "jti": crate::auth::seal::random_id(16),
        });
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &self.key).ok()
    }
}
