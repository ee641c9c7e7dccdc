//! The token settings `jwt` and `bearer` providers share: issuer, keys,
//! algorithms and time rules.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::config::ConfigError;
use crate::config::policy::{MIN_RSA_BITS, url_allowed, weak_rsa};
use crate::config::secret::Secret;
use crate::config::validate::{Ctx, seconds};

/// Adds the token keys to a provider kind's raw table, and
/// `token()` to read them.
macro_rules! raw_with_token {
    ($(#[$meta:meta])* pub struct $name:ident { $(pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $(pub $field: $ty,)*
            pub issuer: Option<Spanned<String>>,
            pub audience: Option<Spanned<String>>,
            pub algorithms: Option<Vec<Spanned<String>>>,
            pub secret: Option<Spanned<String>>,
            pub public_key_file: Option<Spanned<String>>,
            pub jwks_url: Option<Spanned<String>>,
            pub jwks_min_refresh_seconds: Option<Spanned<u64>>,
            pub jwks_max_refresh_seconds: Option<Spanned<u64>>,
            pub leeway_seconds: Option<Spanned<u64>>,
            pub max_token_age_seconds: Option<Spanned<u64>>,
            pub require_exp: Option<bool>,
        }

        impl $name {
            pub fn token(&self) -> $crate::config::provider::token::RawToken<'_> {
                $crate::config::provider::token::RawToken {
                    kind: &self.kind,
                    issuer: &self.issuer,
                    audience: &self.audience,
                    algorithms: &self.algorithms,
                    secret: &self.secret,
                    public_key_file: &self.public_key_file,
                    jwks_url: &self.jwks_url,
                    jwks_min_refresh_seconds: &self.jwks_min_refresh_seconds,
                    jwks_max_refresh_seconds: &self.jwks_max_refresh_seconds,
                    leeway_seconds: &self.leeway_seconds,
                    max_token_age_seconds: &self.max_token_age_seconds,
                    require_exp: &self.require_exp,
                }
            }
        }
    };
}
pub(super) use raw_with_token;

/// The token keys of one provider's raw table.
pub struct RawToken<'a> {
    pub kind: &'a Spanned<String>,
    pub issuer: &'a Option<Spanned<String>>,
    pub audience: &'a Option<Spanned<String>>,
    pub algorithms: &'a Option<Vec<Spanned<String>>>,
    pub secret: &'a Option<Spanned<String>>,
    pub public_key_file: &'a Option<Spanned<String>>,
    pub jwks_url: &'a Option<Spanned<String>>,
    pub jwks_min_refresh_seconds: &'a Option<Spanned<u64>>,
    pub jwks_max_refresh_seconds: &'a Option<Spanned<u64>>,
    pub leeway_seconds: &'a Option<Spanned<u64>>,
    pub max_token_age_seconds: &'a Option<Spanned<u64>>,
    pub require_exp: &'a Option<bool>,
}

/// How tokens of one issuer are verified.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: Option<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub keys: KeyConfig,
    pub leeway_seconds: u64,
    /// Oldest accepted `iat`; `None` when set to 0.
    pub max_token_age_seconds: Option<u64>,
    pub require_exp: bool,
}

#[derive(Debug, Clone)]
pub enum KeyConfig {
    Secret(Secret),
    /// PEM public key, already read and parsed at load.
    PublicKey {
        path: PathBuf,
        pem: Vec<u8>,
    },
    Jwks {
        url: String,
        min_refresh: Duration,
        max_refresh: Duration,
    },
}

/// Issuer, keys, algorithms and time rules shared by token-based kinds.
pub(super) fn token_config(ctx: &mut Ctx, i: usize, raw: RawToken<'_>) -> Result<TokenConfig, ConfigError> {
    use jsonwebtoken::{Algorithm, DecodingKey};

    let key = |k: &str| format!("providers[{i}].{k}");
    let Some(issuer) = &raw.issuer else {
        return Err(ctx.at(key("kind"), raw.kind, "issuer is required (the token's iss must equal it)"));
    };
    let sources = [raw.secret.as_ref(), raw.public_key_file.as_ref(), raw.jwks_url.as_ref()];
    let keys = match sources {
        [Some(s), None, None] => {
            let secret = ctx.secret(&key("secret"), s)?;
            if secret.expose().len() < 32 {
                ctx.warn(
                    &key("secret"),
                    s.span(),
                    "HMAC secrets shorter than 32 bytes are guessable; use a longer one",
                );
            }
            KeyConfig::Secret(secret)
        }
        [None, Some(p), None] => {
            let pem = std::fs::read(p.get_ref())
                .map_err(|e| ctx.at(key("public_key_file"), p, format!("cannot read {}: {e}", p.get_ref())))?;
            KeyConfig::PublicKey { path: PathBuf::from(p.get_ref()), pem }
        }
        [None, None, Some(u)] => {
            url_allowed(u.get_ref()).map_err(|m| ctx.at(key("jwks_url"), u, m))?;
            let min_refresh =
                seconds(ctx, &key("jwks_min_refresh_seconds"), raw.jwks_min_refresh_seconds.as_ref(), 30)?;
            let max_refresh =
                seconds(ctx, &key("jwks_max_refresh_seconds"), raw.jwks_max_refresh_seconds.as_ref(), 86_400)?;
            if max_refresh < min_refresh {
                let span = raw.jwks_max_refresh_seconds.as_ref().map_or_else(|| u.span(), Spanned::span);
                return Err(ctx.error(
                    key("jwks_max_refresh_seconds"),
                    Some(span),
                    "must not be below jwks_min_refresh_seconds",
                ));
            }
            KeyConfig::Jwks { url: u.get_ref().clone(), min_refresh, max_refresh }
        }
        _ => {
            return Err(ctx.at(key("kind"), raw.kind, "set exactly one of secret, public_key_file or jwks_url"));
        }
    };
    // Which algorithm families the key can verify, and the default list.
    let (families, default): (&[&str], &str) = match &keys {
        KeyConfig::Secret(_) => (&["HS"], "HS256"),
        KeyConfig::PublicKey { pem, .. } => {
            if let Ok(rsa) = DecodingKey::from_rsa_pem(pem) {
                if let Some(bits) = weak_rsa(&rsa) {
                    let p = raw.public_key_file.as_ref().unwrap_or(raw.kind);
                    let size = bits.map_or_else(|| "of unreadable size".to_string(), |b| format!("of {b} bits"));
                    return Err(ctx.at(
                        key("public_key_file"),
                        p,
                        format!(
                            "{} is an RSA key {size}; RSA keys under {} bits are refused",
                            p.get_ref(),
                            MIN_RSA_BITS
                        ),
                    ));
                }
                (&["RS", "PS"], "RS256")
            } else if DecodingKey::from_ec_pem(pem).is_ok() {
                (&["ES"], "ES256")
            } else if DecodingKey::from_ed_pem(pem).is_ok() {
                (&["EdDSA"], "EdDSA")
            } else {
                let p = raw.public_key_file.as_ref().unwrap_or(raw.kind);
                return Err(ctx.at(key("public_key_file"), p, "not a PEM RSA, EC or Ed25519 public key"));
            }
        }
        KeyConfig::Jwks { .. } => (&["RS", "PS", "ES", "EdDSA"], "RS256"),
    };
    let algorithms = match &raw.algorithms {
        None => vec![
            default
                .parse::<Algorithm>()
                .map_err(|_| ctx.at(key("kind"), raw.kind, "internal: bad default algorithm"))?,
        ],
        Some(list) if list.is_empty() => return Err(ctx.at(key("kind"), raw.kind, "algorithms must not be empty")),
        Some(list) => {
            let mut out = Vec::new();
            for (j, a) in list.iter().enumerate() {
                let k = format!("providers[{i}].algorithms[{j}]");
                let name = a.get_ref().as_str();
                if name.eq_ignore_ascii_case("none") {
                    return Err(ctx.at(k, a, "\"none\" means unsigned tokens and is never accepted"));
                }
                let alg = name
                    .parse::<Algorithm>()
                    .map_err(|_| ctx.at(k.clone(), a, format!("unknown algorithm {name:?}")))?;
                if !families.iter().any(|f| name.starts_with(f)) {
                    return Err(ctx.at(
                        k,
                        a,
                        format!(
                            "{name} cannot be verified with the configured key (it takes {})",
                            families.join("*, ") + "*"
                        ),
                    ));
                }
                out.push(alg);
            }
            out
        }
    };
    let max_age = raw.max_token_age_seconds.as_ref().map_or(300, |v| *v.get_ref());
    Ok(TokenConfig {
        issuer: issuer.get_ref().clone(),
        audience: raw.audience.as_ref().map(|a| a.get_ref().clone()),
        algorithms,
        keys,
        leeway_seconds: raw.leeway_seconds.as_ref().map_or(60, |v| *v.get_ref()),
        max_token_age_seconds: (max_age > 0).then_some(max_age),
        require_exp: raw.require_exp.unwrap_or(true),
    })
}
