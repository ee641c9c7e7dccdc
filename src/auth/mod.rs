//! Authentication: login methods ("providers"), the session cookie, keys and
//! shared state. One module per login method behind the [`Provider`] enum.

pub mod api_keys;
pub mod attempt;
pub mod claims;
pub mod fetch;
pub mod identifiers;
pub mod identity_jwt;
pub mod json;
pub mod jwks;
pub mod provider;
pub mod records;
pub mod redirect;
pub mod seal;
pub mod session;
pub mod store;
pub mod token;

pub use provider::Provider;
pub use session::Identity;

use crate::error::{Class, Reject};

/// Why a login step failed: what kind of refusal, a reason word, a
/// sentence for people, and where the user may try again when known.
#[derive(Debug)]
pub struct Failure {
    pub class: Class,
    pub reason: &'static str,
    pub text: String,
    pub retry: Option<String>,
}

impl Failure {
    pub fn new(class: Class, reason: &'static str, text: impl Into<String>) -> Failure {
        Failure { class, reason, text: text.into(), retry: None }
    }

    pub fn reject(&self) -> Reject {
        Reject::new(self.class, self.reason, self.text.clone())
    }
}
