//! Authentication: login methods ("providers"), the session cookie, keys and
//! shared state. One module per login method behind the [`Provider`] enum.

pub mod claims;
pub mod fetch;
pub mod jwks;
pub mod jwt;
pub mod redirect;
pub mod seal;
pub mod session;
pub mod store;
pub mod token;

pub use session::Identity;

/// One configured login method.
pub enum Provider {
    Jwt(jwt::JwtLogin),
}

impl Provider {
    pub fn id(&self) -> &str {
        match self {
            Provider::Jwt(p) => &p.id,
        }
    }

    /// Can browsers sign in with it?
    pub fn is_login(&self) -> bool {
        match self {
            Provider::Jwt(_) => true,
        }
    }

    pub fn as_jwt(&self) -> Option<&jwt::JwtLogin> {
        match self {
            Provider::Jwt(p) => Some(p),
        }
    }

    /// Keys and metadata are loaded.
    pub fn ready(&self) -> bool {
        match self {
            Provider::Jwt(p) => p.verifier.ready(),
        }
    }

    /// Where a browser goes to sign in, coming back to `return_to` (a path).
    pub fn login_location(&self, return_to: &str) -> String {
        match self {
            Provider::Jwt(p) => p.login_location(return_to),
        }
    }

    /// Where a browser goes after porteiro's logout, if the provider has one.
    pub fn logout_url(&self) -> Option<&str> {
        match self {
            Provider::Jwt(p) => p.logout_url.as_deref(),
        }
    }
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
