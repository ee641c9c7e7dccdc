//! `kind = "jwt"`: its table in the file, its typed settings, its checks.

use serde::Deserialize;
use toml::Spanned;

use super::token::{TokenConfig, raw_with_token, token_config};
use crate::config::validate::{Ctx, absolute_url};
use crate::config::{ConfigError, ServerConfig};

raw_with_token! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawJwt {
        pub id: Spanned<String>,
        pub kind: Spanned<String>,
        pub login_url: Option<Spanned<String>>,
        pub return_param: Option<Spanned<String>>,
        pub logout_url: Option<Spanned<String>>,
        pub groups_claim: Option<Spanned<String>>,
        pub demo_login: Option<Spanned<bool>>,
    }
}

/// `kind = "jwt"`: tokens minted by the customer's login page.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Absolute URL of the "authentication address"; a path (under
    /// `auth_prefix`) for the built-in demo login page.
    pub login_url: String,
    /// Query parameter that carries the return path; default `redirectUrl`.
    pub return_param: String,
    pub logout_url: Option<String>,
    pub token: TokenConfig,
    pub groups_claim: String,
    /// Serve the insecure built-in login page at `{auth_prefix}/demo-login`.
    pub demo_login: bool,
}

pub(super) fn validate(ctx: &mut Ctx, i: usize, raw: &RawJwt, server: &ServerConfig) -> Result<JwtConfig, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let demo_login = raw.demo_login.as_ref().is_some_and(|d| *d.get_ref());
    if demo_login {
        let span = raw.demo_login.as_ref().map(Spanned::span);
        if !server.listen.ip().is_loopback() {
            return Err(ctx.error(
                key("demo_login"),
                span,
                "the demo login page is insecure and only runs on a loopback server.listen",
            ));
        }
        if raw.secret.is_none() {
            return Err(ctx.error(key("demo_login"), span, "the demo login page signs HS256 tokens: set `secret`"));
        }
    }
    let login_url = match (&raw.login_url, demo_login) {
        (Some(u), _) => absolute_url(ctx, &key("login_url"), u)?,
        // porteiro's own page: a path, so the browser stays on the host it
        // came by (and a listener on port 0 is not sent to port 0).
        (None, true) => format!("{}/demo-login", server.auth_prefix),
        (None, false) => {
            return Err(ctx.at(key("kind"), &raw.kind, "a jwt provider needs login_url (the page that mints tokens)"));
        }
    };
    let logout_url = raw.logout_url.as_ref().map(|u| absolute_url(ctx, &key("logout_url"), u)).transpose()?;
    let return_param = match &raw.return_param {
        None => "redirectUrl".to_string(),
        Some(p)
            if !p.get_ref().is_empty()
                && p.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            p.get_ref().clone()
        }
        Some(p) => return Err(ctx.at(key("return_param"), p, "must be a plain query parameter name")),
    };
    let groups_claim = raw.groups_claim.as_ref().map_or_else(|| "groups".to_string(), |g| g.get_ref().clone());
    Ok(JwtConfig {
        login_url,
        return_param,
        logout_url,
        token: token_config(ctx, i, raw.token())?,
        groups_claim,
        demo_login,
    })
}
