//! Authentication: login methods ("providers"), the session cookie, keys and
//! shared state. One module per login method behind the [`Provider`] enum.

pub mod bearer;
pub mod claims;
pub mod code;
pub mod fetch;
pub mod identifiers;
pub mod json;
pub mod jwks;
pub mod jwt;
pub mod oidc;
pub mod redirect;
pub mod redis_store;
pub mod saml;
pub mod seal;
pub mod session;
pub mod store;
pub mod token;

pub use session::Identity;

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

    /// Where a browser goes to sign in, coming back to `return_to` (a path).
    /// `None` for API-only providers, and for OpenID Connect and SAML, whose
    /// logins also record an attempt (see their `begin`).
    pub fn login_location(&self, return_to: &str) -> Option<String> {
        match self {
            Provider::Jwt(p) => Some(p.login_location(return_to)),
            Provider::Code(p) => Some(p.login_location(return_to)),
            Provider::Bearer(_) | Provider::Oidc(_) | Provider::Saml(_) => None,
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
