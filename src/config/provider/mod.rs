//! `[[providers]]`: one file per login method, each with its table in the
//! file (`RawX`), its typed settings (`XConfig`) and its checks. The kind is
//! read first, then the table is read as that kind's, straight from the
//! TOML (so every value keeps its position for errors, and a key another
//! kind takes is refused by name).

pub mod bearer;
pub mod code;
pub mod jwt;
pub mod oidc;
pub mod saml;
pub mod token;

use std::cell::RefCell;
use std::collections::VecDeque;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::config::validate::Ctx;
use crate::config::{BearerConfig, CodeConfig, ConfigError, JwtConfig, OidcConfig, SamlConfig, ServerConfig};

/// One `[[providers]]` entry.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub kind: ProviderKind,
}

#[derive(Debug, Clone)]
pub enum ProviderKind {
    Jwt(JwtConfig),
    Code(CodeConfig),
    Bearer(BearerConfig),
    Oidc(OidcConfig),
    Saml(SamlConfig),
}

impl ProviderKind {
    /// Can browsers sign in with it (may a route name it as `login`)?
    pub fn is_login(&self) -> bool {
        matches!(self, ProviderKind::Jwt(_) | ProviderKind::Code(_) | ProviderKind::Oidc(_) | ProviderKind::Saml(_))
    }
}

/// One `[[providers]]` table, read as its kind's.
#[derive(Debug)]
pub enum RawProvider {
    Jwt(jwt::RawJwt),
    Code(code::RawCode),
    Oidc(oidc::RawOidc),
    Saml(saml::RawSaml),
    Bearer(bearer::RawBearer),
    /// No such kind: only `id` and `kind` are read, for the error.
    Unknown(RawUnknown),
}

#[derive(Debug, Deserialize)]
pub struct RawUnknown {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
}

thread_local! {
    /// The `kind` of each `[[providers]]` table, in order, while the file is
    /// read (see [`read_kinds_first`]).
    static KINDS: RefCell<VecDeque<Option<String>>> = const { RefCell::new(VecDeque::new()) };
}

/// Reads `text`'s provider kinds, then runs `read` (which deserializes the
/// file): each `[[providers]]` table is read as its kind's.
pub(in crate::config) fn read_kinds_first<T>(text: &str, read: impl FnOnce() -> T) -> T {
    #[derive(Deserialize)]
    struct Head {
        kind: Option<String>,
    }
    #[derive(Deserialize)]
    struct Heads {
        #[serde(default)]
        providers: Vec<Head>,
    }
    // A file that does not parse is reported by `read`, with its position.
    let kinds = toml::from_str::<Heads>(text).map(|h| h.providers).unwrap_or_default();
    KINDS.with(|k| *k.borrow_mut() = kinds.into_iter().map(|h| h.kind).collect());
    let out = read();
    KINDS.with(|k| k.borrow_mut().clear());
    out
}

impl<'de> Deserialize<'de> for RawProvider {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<RawProvider, D::Error> {
        let kind = KINDS.with(|k| k.borrow_mut().pop_front()).flatten();
        Ok(match kind.as_deref() {
            Some("jwt") => RawProvider::Jwt(jwt::RawJwt::deserialize(de)?),
            Some("code") => RawProvider::Code(code::RawCode::deserialize(de)?),
            Some("oidc") => RawProvider::Oidc(oidc::RawOidc::deserialize(de)?),
            Some("saml") => RawProvider::Saml(saml::RawSaml::deserialize(de)?),
            Some("bearer") => RawProvider::Bearer(bearer::RawBearer::deserialize(de)?),
            _ => RawProvider::Unknown(RawUnknown::deserialize(de)?),
        })
    }
}

impl RawProvider {
    pub fn id(&self) -> &Spanned<String> {
        match self {
            RawProvider::Jwt(r) => &r.id,
            RawProvider::Code(r) => &r.id,
            RawProvider::Oidc(r) => &r.id,
            RawProvider::Saml(r) => &r.id,
            RawProvider::Bearer(r) => &r.id,
            RawProvider::Unknown(r) => &r.id,
        }
    }

    pub fn kind(&self) -> &Spanned<String> {
        match self {
            RawProvider::Jwt(r) => &r.kind,
            RawProvider::Code(r) => &r.kind,
            RawProvider::Oidc(r) => &r.kind,
            RawProvider::Saml(r) => &r.kind,
            RawProvider::Bearer(r) => &r.kind,
            RawProvider::Unknown(r) => &r.kind,
        }
    }
}

/// A key the provider's kind does not take, as serde words it (`unknown
/// field `x`, expected one of ...`), said in the config's terms.
pub(in crate::config) fn stray_key_message(message: &str, kind: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, expected) = rest.split_once('`')?;
    let takes = expected.trim_start_matches(", expected one of ").replace('`', "");
    Some(format!("{name} does not apply to kind = {kind:?} (it takes {takes})"))
}

/// Checks one provider table and types it.
pub(in crate::config) fn validate(
    ctx: &mut Ctx,
    i: usize,
    raw: &RawProvider,
    server: &ServerConfig,
) -> Result<ProviderConfig, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let (id, kind) = (raw.id(), raw.kind());
    if id.get_ref().is_empty() || !id.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ctx.at(key("id"), id, "use letters, digits, -, _ and . only"));
    }
    let settings = match raw {
        RawProvider::Jwt(r) => ProviderKind::Jwt(jwt::validate(ctx, i, r, server)?),
        RawProvider::Code(r) => ProviderKind::Code(code::validate(ctx, i, r)?),
        RawProvider::Oidc(r) => ProviderKind::Oidc(oidc::validate(ctx, i, r)?),
        RawProvider::Saml(r) => ProviderKind::Saml(saml::validate(ctx, i, r, server)?),
        RawProvider::Bearer(r) => ProviderKind::Bearer(bearer::validate(ctx, i, r)?),
        RawProvider::Unknown(_) => {
            return Err(ctx.at(
                key("kind"),
                kind,
                format!(
                    "unknown kind {:?}; expected \"jwt\", \"oidc\", \"saml\", \"code\" or \"bearer\"",
                    kind.get_ref()
                ),
            ));
        }
    };
    Ok(ProviderConfig { id: id.get_ref().clone(), kind: settings })
}
