//! `kind = "oidc"`: its table in the file, its typed settings, its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;
use crate::config::policy::url_allowed;
use crate::config::secret::Secret;
use crate::config::validate::{Ctx, absolute_url, seconds};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    pub issuer: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    pub scopes: Option<Vec<String>>,
    pub token_endpoint_auth: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    pub required_claims: Option<Vec<String>>,
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    pub fetch_userinfo: Option<bool>,
    pub authorization_endpoint: Option<Spanned<String>>,
    pub token_endpoint: Option<Spanned<String>>,
    pub jwks_uri: Option<Spanned<String>>,
    pub userinfo_endpoint: Option<Spanned<String>>,
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub leeway_seconds: Option<Spanned<u64>>,
    pub groups_claim: Option<Spanned<String>>,
    pub logout_url: Option<Spanned<String>>,
    pub end_session_endpoint: Option<Spanned<String>>,
    pub logout_at_provider: Option<bool>,
    pub jwks_min_refresh_seconds: Option<Spanned<u64>>,
    pub jwks_max_refresh_seconds: Option<Spanned<u64>>,
    pub refresh: Option<Spanned<bool>>,
    pub max_session_minutes: Option<Spanned<i64>>,
}

/// `kind = "oidc"`: OpenID Connect Authorization Code flow with PKCE.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Exactly as the provider's discovery document states it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub token_endpoint_auth: TokenEndpointAuth,
    /// Extra audience the ID token must carry, besides client_id.
    pub audience: Option<String>,
    pub required_claims: Vec<String>,
    /// Fixed extra authorization parameters (`prompt`, Niara's `authenticationRuleId`...).
    pub extra_params: Vec<(String, String)>,
    pub fetch_userinfo: bool,
    /// Explicit endpoints instead of discovery.
    pub endpoints: Option<OidcEndpoints>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway_seconds: u64,
    pub groups_claim: String,
    pub logout_url: Option<String>,
    /// `/sso/logout` also ends the session at the provider (RP-Initiated
    /// Logout) when it has an end-session endpoint. Default true.
    pub logout_at_provider: bool,
    pub jwks_min_refresh: Duration,
    pub jwks_max_refresh: Duration,
    /// `refresh = true`: an expired session is renewed at the token
    /// endpoint with the refresh token the provider gave at login, instead
    /// of a new login. Default false.
    pub refresh: bool,
    /// With `refresh`: the longest a session may be renewed after its
    /// login (the cookie's `Max-Age`). Default 1440 minutes, within
    /// [`crate::config::MAX_SESSION_MINUTES`].
    pub max_session: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct OidcEndpoints {
    pub authorization: String,
    pub token: String,
    pub jwks: String,
    pub userinfo: Option<String>,
    /// RP-Initiated Logout: where `/sso/logout` sends the browser.
    pub end_session: Option<String>,
}

pub(super) fn validate(ctx: &mut Ctx, i: usize, raw: &RawOidc) -> Result<OidcConfig, ConfigError> {
    use jsonwebtoken::Algorithm;

    let key = |k: &str| format!("providers[{i}].{k}");
    fn need<'a>(
        ctx: &Ctx,
        raw: &'a RawOidc,
        i: usize,
        v: &'a Option<Spanned<String>>,
        name: &str,
    ) -> Result<&'a Spanned<String>, ConfigError> {
        v.as_ref()
            .ok_or_else(|| ctx.at(format!("providers[{i}].kind"), &raw.kind, format!("an oidc provider needs {name}")))
    }
    let issuer = need(ctx, raw, i, &raw.issuer, "issuer")?;
    url_allowed(issuer.get_ref()).map_err(|m| ctx.at(key("issuer"), issuer, m))?;
    let client_id = need(ctx, raw, i, &raw.client_id, "client_id")?.get_ref().clone();
    let secret_ref = need(ctx, raw, i, &raw.client_secret, "client_secret")?;
    let client_secret = ctx.secret(&key("client_secret"), secret_ref)?;
    let token_endpoint_auth = match raw.token_endpoint_auth.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "client_secret_basic")) => TokenEndpointAuth::ClientSecretBasic,
        Some((_, "client_secret_post")) => TokenEndpointAuth::ClientSecretPost,
        Some((v, other)) => {
            return Err(ctx.at(
                key("token_endpoint_auth"),
                v,
                format!("{other:?}: expected client_secret_basic or client_secret_post"),
            ));
        }
    };
    let scopes = raw.scopes.clone().unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ctx.at(key("kind"), &raw.kind, "scopes must include \"openid\""));
    }
    let endpoints = match (&raw.authorization_endpoint, &raw.token_endpoint, &raw.jwks_uri) {
        (None, None, None) => None,
        (Some(a), Some(t), Some(j)) => {
            let authorization = absolute_url(ctx, &key("authorization_endpoint"), a)?;
            url_allowed(t.get_ref()).map_err(|m| ctx.at(key("token_endpoint"), t, m))?;
            url_allowed(j.get_ref()).map_err(|m| ctx.at(key("jwks_uri"), j, m))?;
            let userinfo = match &raw.userinfo_endpoint {
                Some(u) => {
                    url_allowed(u.get_ref()).map_err(|m| ctx.at(key("userinfo_endpoint"), u, m))?;
                    Some(u.get_ref().clone())
                }
                None => None,
            };
            let end_session = raw
                .end_session_endpoint
                .as_ref()
                .map(|e| absolute_url(ctx, &key("end_session_endpoint"), e))
                .transpose()?;
            Some(OidcEndpoints {
                authorization,
                token: t.get_ref().clone(),
                jwks: j.get_ref().clone(),
                userinfo,
                end_session,
            })
        }
        _ => {
            return Err(ctx.at(
                key("kind"),
                &raw.kind,
                "set all of authorization_endpoint, token_endpoint and jwks_uri, or none (discovery)",
            ));
        }
    };
    if endpoints.is_none() && raw.userinfo_endpoint.is_some() {
        return Err(ctx.at(
            key("kind"),
            &raw.kind,
            "userinfo_endpoint goes with explicit endpoints; discovery finds it otherwise",
        ));
    }
    if let (None, Some(e)) = (&endpoints, &raw.end_session_endpoint) {
        return Err(ctx.at(
            key("end_session_endpoint"),
            e,
            "end_session_endpoint goes with explicit endpoints; discovery finds it otherwise",
        ));
    }
    let algorithms =
        match &raw.algorithms {
            None => vec![Algorithm::RS256],
            Some(list) => {
                let mut out = Vec::new();
                for (j, a) in list.iter().enumerate() {
                    let k = format!("providers[{i}].algorithms[{j}]");
                    match a.get_ref().parse::<Algorithm>() {
                        Ok(alg) if !a.get_ref().starts_with("HS") => out.push(alg),
                        _ => return Err(ctx.at(
                            k,
                            a,
                            format!(
                                "{:?}: ID tokens are verified with the provider's public keys (RS*, PS*, ES*, EdDSA)",
                                a.get_ref()
                            ),
                        )),
                    }
                }
                out
            }
        };
    let refresh = raw.refresh.as_ref().is_some_and(|r| *r.get_ref());
    let max_session_minutes = match &raw.max_session_minutes {
        None => 1440,
        Some(m) if !refresh => {
            return Err(ctx.at(key("max_session_minutes"), m, "max_session_minutes goes with refresh = true"));
        }
        Some(m) if !crate::config::MAX_SESSION_MINUTES.contains(m.get_ref()) => {
            let range = &crate::config::MAX_SESSION_MINUTES;
            return Err(ctx.at(
                key("max_session_minutes"),
                m,
                format!("must be between {} and {} minutes", range.start(), range.end()),
            ));
        }
        Some(m) => *m.get_ref(),
    };
    let min = seconds(ctx, &key("jwks_min_refresh_seconds"), raw.jwks_min_refresh_seconds.as_ref(), 30)?;
    let max = seconds(ctx, &key("jwks_max_refresh_seconds"), raw.jwks_max_refresh_seconds.as_ref(), 86_400)?;
    Ok(OidcConfig {
        issuer: issuer.get_ref().clone(),
        client_id,
        client_secret,
        scopes,
        token_endpoint_auth,
        audience: raw.audience.as_ref().map(|a| a.get_ref().clone()),
        required_claims: raw.required_claims.clone().unwrap_or_default(),
        extra_params: raw.extra_params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        fetch_userinfo: raw.fetch_userinfo.unwrap_or(false),
        endpoints,
        algorithms,
        leeway_seconds: raw.leeway_seconds.as_ref().map_or(60, |v| *v.get_ref()),
        groups_claim: raw.groups_claim.as_ref().map_or_else(|| "groups".to_string(), |g| g.get_ref().clone()),
        logout_url: raw.logout_url.as_ref().map(|u| absolute_url(ctx, &key("logout_url"), u)).transpose()?,
        logout_at_provider: raw.logout_at_provider.unwrap_or(true),
        jwks_min_refresh: min,
        jwks_max_refresh: max.max(min),
        refresh,
        max_session: Duration::from_secs(max_session_minutes.unsigned_abs() * 60),
    })
}
