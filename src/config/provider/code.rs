//! `kind = "code"`: its table in the file, its typed settings, its checks.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;
use crate::config::secret::Secret;
use crate::config::validate::{Ctx, absolute_url, return_param};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCode {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    pub login_url: Option<Spanned<String>>,
    pub return_param: Option<Spanned<String>>,
    pub logout_url: Option<Spanned<String>>,
    #[serde(default)]
    pub clients: Vec<RawClient>,
    pub code_ttl_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub client_id: Spanned<String>,
    pub client_secret: Spanned<String>,
}

/// `kind = "code"`: single-use codes minted by a trusted backend.
#[derive(Debug, Clone)]
pub struct CodeConfig {
    /// The backend page that mints a code and redirects to `/sso/authorize`.
    pub login_url: String,
    pub return_param: String,
    pub logout_url: Option<String>,
    /// `(client_id, client_secret)`; client ids are unique across providers.
    pub clients: Vec<(String, Secret)>,
    pub code_ttl: Duration,
}

pub(super) fn validate(ctx: &mut Ctx, i: usize, raw: &RawCode) -> Result<CodeConfig, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let Some(login_url) = &raw.login_url else {
        return Err(ctx.at(
            key("kind"),
            &raw.kind,
            "a code provider needs login_url (the backend page that mints codes)",
        ));
    };
    let login_url = absolute_url(ctx, &key("login_url"), login_url)?;
    let logout_url = raw.logout_url.as_ref().map(|u| absolute_url(ctx, &key("logout_url"), u)).transpose()?;
    let return_param = return_param(ctx, &key("return_param"), raw.return_param.as_ref())?;
    if raw.clients.is_empty() {
        return Err(ctx.at(key("clients"), &raw.kind, "a code provider needs at least one client"));
    }
    let mut clients = Vec::new();
    for (j, c) in raw.clients.iter().enumerate() {
        let id = c.client_id.get_ref();
        if id.is_empty() || id.contains(':') {
            return Err(ctx.at(
                format!("providers[{i}].clients[{j}].client_id"),
                &c.client_id,
                "must be non-empty without ':'",
            ));
        }
        let secret = ctx.secret(&format!("providers[{i}].clients[{j}].client_secret"), &c.client_secret)?;
        if secret.expose().len() < 16 {
            return Err(ctx.at(
                format!("providers[{i}].clients[{j}].client_secret"),
                &c.client_secret,
                "must be at least 16 bytes",
            ));
        }
        clients.push((id.clone(), secret));
    }
    let ttl = match &raw.code_ttl_seconds {
        None => 60,
        Some(v) if (1..=600).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => return Err(ctx.at(key("code_ttl_seconds"), v, "must be between 1 and 600")),
    };
    Ok(CodeConfig { login_url, return_param, logout_url, clients, code_ttl: Duration::from_secs(ttl) })
}
