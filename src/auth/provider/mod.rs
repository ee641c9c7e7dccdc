//! The login methods ("providers"): one file each, owning its flow, its
//! callback and its endpoints. [`Provider`] is the one dispatch over them:
//! built from config ([`build`]), a login begun ([`Provider::begin`]), and
//! each provider's endpoints, which the gateway's endpoint table calls.
//!
//! Endpoints get a [`Ctx`] (what the gateway shares with them) and come to
//! an [`Outcome`]; they never choose status codes (see [`crate::error`]).

pub mod bearer;
pub mod code;
pub mod jwt;
pub mod oidc;
pub mod oidc_logout;
pub mod oidc_refresh;
pub mod saml;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::auth::attempt::LoginStates;
use crate::auth::fetch::Fetcher;
use crate::auth::identifiers::Identifiers;
use crate::auth::jwks::JwksRegistry;
use crate::auth::store::Store;
use crate::auth::{Failure, Identity};
use crate::clock::Clock;
use crate::config::{Config, ProviderConfig, ProviderKind};
use crate::error::{Class, Reject};

/// What building a provider needs besides its own config.
pub struct Setup<'a> {
    pub config: &'a Config,
    /// Claims a session must carry for route headers and allow rules.
    pub keep: &'a [String],
    pub fetcher: &'a Fetcher,
    pub jwks: &'a JwksRegistry,
}

impl Setup<'_> {
    /// Session validity in seconds.
    pub fn validity(&self) -> u64 {
        self.config.session.validity.as_secs()
    }

    /// `{public_url}{auth_prefix}{path}`: an endpoint's absolute URL.
    pub fn endpoint_url(&self, path: &str) -> String {
        format!("{}{}{path}", self.config.server.public_url, self.config.server.auth_prefix)
    }
}

/// Builds the runtime provider for one configured provider.
pub fn build(p: &ProviderConfig, setup: &Setup) -> Result<Provider, String> {
    Ok(match &p.kind {
        ProviderKind::Jwt(c) => Provider::Jwt(jwt::JwtLogin::build(&p.id, c, setup)?),
        ProviderKind::Code(c) => Provider::Code(code::CodeLogin::build(&p.id, c, setup)?),
        ProviderKind::Oidc(c) => Provider::Oidc(Box::new(oidc::OidcLogin::build(&p.id, c, setup))),
        ProviderKind::Saml(c) => Provider::Saml(Box::new(saml::SamlLogin::build(&p.id, c, setup)?)),
        ProviderKind::Bearer(c) => Provider::Bearer(bearer::BearerAuth::build(&p.id, c, setup)?),
    })
}

/// What the gateway shares with a provider's endpoints.
pub struct Ctx<'a> {
    pub providers: &'a [Arc<Provider>],
    pub store: &'a dyn Store,
    /// Login-attempt cookies; `None` without `session.secret`.
    pub states: Option<&'a LoginStates>,
    pub identifiers: Option<&'a Identifiers>,
    pub clock: &'a Clock,
    pub public_url: &'a str,
}

impl Ctx<'_> {
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id() == id).map(|p| &**p)
    }

    /// A return path made safe: on this site, never elsewhere.
    pub fn return_path(&self, asked: Option<&str>) -> String {
        crate::auth::redirect::sanitize(asked, self.public_url)
    }
}

/// What one of porteiro's endpoints comes to; the gateway turns it into an
/// answer (and the session cookie, for [`Outcome::SignedIn`]).
pub enum Outcome {
    /// A login succeeded: start a session and send the browser on.
    SignedIn { provider: String, identity: Box<Identity>, return_to: String },
    /// Send the browser there.
    Redirect(String),
    /// An API answer (`200`).
    Json(serde_json::Value),
    /// A document to serve as is (`200`).
    Document { content_type: &'static str, body: String },
    /// A login refused: logged and counted for `provider` (`-` when not
    /// known), then a page for browsers or JSON.
    LoginFailed { provider: String, failure: Failure },
    /// An API call refused: JSON.
    Refused(Reject),
    /// A client credential refused: counted as an authentication failure,
    /// then JSON.
    Unauthenticated(Reject),
}

impl Outcome {
    /// A login refused for `provider`.
    pub fn failed(provider: &str, class: Class, reason: &'static str, text: impl Into<String>) -> Outcome {
        Outcome::LoginFailed { provider: provider.to_string(), failure: Failure::new(class, reason, text) }
    }
}

/// An [`Outcome`] with the `Set-Cookie` values that go with it whatever it
/// is (a login attempt's cookie set or cleared).
pub struct Reply {
    pub outcome: Outcome,
    pub cookies: Vec<HeaderValue>,
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Reply {
        Reply { outcome, cookies: Vec::new() }
    }
}

/// Query or form parameters, decoded.
pub type Params = [(String, String)];

pub fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One configured login method.
pub enum Provider {
    Jwt(jwt::JwtLogin),
    Code(code::CodeLogin),
    Bearer(bearer::BearerAuth),
    Oidc(Box<oidc::OidcLogin>),
    Saml(Box<saml::SamlLogin>),
}

impl Provider {
    pub fn id(&self) -> &str {
        match self {
            Provider::Jwt(p) => &p.id,
            Provider::Code(p) => &p.id,
            Provider::Bearer(p) => &p.id,
            Provider::Oidc(p) => &p.s.id,
            Provider::Saml(p) => &p.s.id,
        }
    }

    /// Can browsers sign in with it?
    pub fn is_login(&self) -> bool {
        matches!(self, Provider::Jwt(_) | Provider::Code(_) | Provider::Oidc(_) | Provider::Saml(_))
    }

    /// Its logins bind their attempt to the browser with a login-attempt
    /// cookie (`Path={auth_prefix}/`, bounded per browser).
    pub fn binds_browser(&self) -> bool {
        matches!(self, Provider::Oidc(_) | Provider::Saml(_))
    }

    pub fn as_jwt(&self) -> Option<&jwt::JwtLogin> {
        match self {
            Provider::Jwt(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_code(&self) -> Option<&code::CodeLogin> {
        match self {
            Provider::Code(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_oidc(&self) -> Option<&oidc::OidcLogin> {
        match self {
            Provider::Oidc(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_saml(&self) -> Option<&saml::SamlLogin> {
        match self {
            Provider::Saml(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_bearer(&self) -> Option<&bearer::BearerAuth> {
        match self {
            Provider::Bearer(p) => Some(p),
            _ => None,
        }
    }

    /// Keys and metadata are loaded.
    pub fn ready(&self) -> bool {
        match self {
            Provider::Jwt(p) => p.verifier.ready(),
            Provider::Code(_) => true,
            Provider::Bearer(p) => p.verifier.ready(),
            Provider::Oidc(p) => p.ready(),
            Provider::Saml(p) => p.ready(),
        }
    }

    /// Begins a login for a browser that should come back to `return_to`
    /// (a safe path): where to send it, and the login-attempt cookies that
    /// bind the attempt to this browser (OpenID Connect and SAML).
    pub async fn begin(
        &self,
        ctx: &Ctx<'_>,
        headers: &HeaderMap,
        return_to: &str,
        login_hint: Option<&str>,
    ) -> Result<(String, Vec<HeaderValue>), Failure> {
        let no_states = || Failure::new(Class::Internal, "no_session_secret", "Sessions are not configured.");
        match self {
            Provider::Jwt(p) => Ok((p.login_location(return_to), Vec::new())),
            Provider::Code(p) => Ok((p.login_location(return_to), Vec::new())),
            Provider::Oidc(p) => {
                let states = ctx.states.ok_or_else(no_states)?;
                p.begin(states, headers, return_to, login_hint).ok_or_else(|| {
                    Failure::new(
                        Class::Unavailable,
                        "idp_unavailable",
                        "The identity provider is not reachable yet; try again in a moment.",
                    )
                })
            }
            Provider::Saml(p) => p.begin(ctx.states.ok_or_else(no_states)?, headers, return_to, ctx.store).await,
            Provider::Bearer(_) => Err(Failure::new(Class::Unauthorized, "unauthorized", "Sign-in is required.")),
        }
    }

    /// Where a browser goes after porteiro's logout, if the provider has one.
    pub fn logout_url(&self) -> Option<&str> {
        match self {
            Provider::Jwt(p) => p.logout_url.as_deref(),
            Provider::Code(p) => p.logout_url.as_deref(),
            Provider::Oidc(p) => p.s.logout_url.as_deref(),
            Provider::Saml(p) => p.s.logout_url.as_deref(),
            Provider::Bearer(_) => None,
        }
    }
}
