//! `kind = "bearer"`: its table in the file, its typed settings, its checks.

use serde::Deserialize;
use toml::Spanned;

use super::token::{TokenConfig, raw_with_token, token_config};
use crate::config::ConfigError;
use crate::config::validate::Ctx;

raw_with_token! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawBearer {
        pub id: Spanned<String>,
        pub kind: Spanned<String>,
        pub groups_claim: Option<Spanned<String>>,
        pub required_scopes: Option<Vec<String>>,
    }
}

/// `kind = "bearer"`: `Authorization: Bearer <JWT>` from API clients.
#[derive(Debug, Clone)]
pub struct BearerConfig {
    pub token: TokenConfig,
    pub groups_claim: String,
    pub required_scopes: Vec<String>,
}

pub(super) fn validate(ctx: &mut Ctx, i: usize, raw: &RawBearer) -> Result<BearerConfig, ConfigError> {
    Ok(BearerConfig {
        token: token_config(ctx, i, raw.token())?,
        groups_claim: raw.groups_claim.as_ref().map_or_else(|| "groups".to_string(), |g| g.get_ref().clone()),
        required_scopes: raw.required_scopes.clone().unwrap_or_default(),
    })
}
