//! `kind = "saml"`: its table in the file, its typed settings, its checks.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::config::policy::url_allowed;
use crate::config::validate::{Ctx, absolute_url};
use crate::config::{ConfigError, ServerConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSaml {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    pub idp_metadata_file: Option<Spanned<String>>,
    pub idp_metadata_url: Option<Spanned<String>>,
    pub entity_id: Option<Spanned<String>>,
    pub email_attribute: Option<Spanned<String>>,
    pub name_attribute: Option<Spanned<String>>,
    pub groups_attribute: Option<Spanned<String>>,
    pub sp_key_file: Option<Spanned<String>>,
    pub sp_cert_file: Option<Spanned<String>>,
    pub leeway_seconds: Option<Spanned<u64>>,
    pub logout_url: Option<Spanned<String>>,
}

/// `kind = "saml"`: SAML 2.0 Web SSO as a service provider.
#[derive(Debug, Clone)]
pub struct SamlConfig {
    pub metadata: SamlMetadata,
    /// SP entity id; default `{public_url}{auth_prefix}/saml/metadata`.
    pub entity_id: String,
    /// Attribute (by Name) holding the email; `None` means the NameID.
    pub email_attribute: Option<String>,
    pub name_attribute: Option<String>,
    pub groups_attribute: Option<String>,
    pub logout_url: Option<String>,
    pub leeway_seconds: u64,
    /// The SP key pair that signs AuthnRequests, when configured.
    pub signing: Option<SamlSigning>,
}

/// An RSA key (>= 2048 bits) and its certificate, checked to match at load.
#[derive(Clone)]
pub struct SamlSigning {
    pub key: openssl::pkey::PKey<openssl::pkey::Private>,
    /// The certificate, DER, as SP metadata publishes it.
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for SamlSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlSigning").field("key", &"<redacted>").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum SamlMetadata {
    /// Read at load: (path, XML).
    File {
        path: PathBuf,
        xml: String,
    },
    Url(String),
}

pub(super) fn validate(
    ctx: &mut Ctx,
    i: usize,
    raw: &RawSaml,
    server: &ServerConfig,
) -> Result<SamlConfig, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let metadata = match (&raw.idp_metadata_file, &raw.idp_metadata_url) {
        (Some(f), None) => {
            let xml = std::fs::read_to_string(f.get_ref())
                .map_err(|e| ctx.at(key("idp_metadata_file"), f, format!("cannot read {}: {e}", f.get_ref())))?;
            SamlMetadata::File { path: PathBuf::from(f.get_ref()), xml }
        }
        (None, Some(u)) => {
            url_allowed(u.get_ref()).map_err(|m| ctx.at(key("idp_metadata_url"), u, m))?;
            SamlMetadata::Url(u.get_ref().clone())
        }
        _ => return Err(ctx.at(key("kind"), &raw.kind, "set exactly one of idp_metadata_file or idp_metadata_url")),
    };
    let attr = |v: &Option<Spanned<String>>| v.as_ref().map(|a| a.get_ref().clone()).filter(|a| !a.is_empty());
    Ok(SamlConfig {
        metadata,
        entity_id: raw.entity_id.as_ref().map_or_else(
            || format!("{}{}/saml/metadata", server.public_url, server.auth_prefix),
            |e| e.get_ref().clone(),
        ),
        email_attribute: attr(&raw.email_attribute),
        name_attribute: attr(&raw.name_attribute),
        groups_attribute: attr(&raw.groups_attribute),
        logout_url: raw.logout_url.as_ref().map(|u| absolute_url(ctx, &key("logout_url"), u)).transpose()?,
        leeway_seconds: raw.leeway_seconds.as_ref().map_or(60, |v| *v.get_ref()),
        signing: saml_signing(ctx, i, raw)?,
    })
}

/// `sp_key_file` + `sp_cert_file`: the pair that signs AuthnRequests. RSA
/// only: RSA-SHA256 is what every IdP verifies on the HTTP-Redirect binding.
fn saml_signing(ctx: &mut Ctx, i: usize, raw: &RawSaml) -> Result<Option<SamlSigning>, ConfigError> {
    use openssl::pkey::{Id, PKey};
    use openssl::x509::X509;

    let key = |k: &str| format!("providers[{i}].{k}");
    let (key_file, cert_file) = match (&raw.sp_key_file, &raw.sp_cert_file) {
        (None, None) => return Ok(None),
        (Some(k), Some(c)) => (k, c),
        (Some(k), None) => return Err(ctx.at(key("sp_key_file"), k, "sp_key_file needs sp_cert_file")),
        (None, Some(c)) => return Err(ctx.at(key("sp_cert_file"), c, "sp_cert_file needs sp_key_file")),
    };
    let read = |ctx: &Ctx, name: &str, f: &Spanned<String>| {
        std::fs::read(f.get_ref()).map_err(|e| ctx.at(key(name), f, format!("cannot read {}: {e}", f.get_ref())))
    };
    let pem = read(ctx, "sp_key_file", key_file)?;
    let pkey = PKey::private_key_from_pem(&pem)
        .map_err(|_| ctx.at(key("sp_key_file"), key_file, "not a PEM private key (PKCS#8 or PKCS#1)"))?;
    if pkey.id() != Id::RSA || pkey.bits() < 2048 {
        return Err(ctx.at(key("sp_key_file"), key_file, "the SP signing key must be RSA, at least 2048 bits"));
    }
    let cert_pem = read(ctx, "sp_cert_file", cert_file)?;
    let cert =
        X509::from_pem(&cert_pem).map_err(|_| ctx.at(key("sp_cert_file"), cert_file, "not a PEM certificate"))?;
    let matches = cert.public_key().is_ok_and(|public| public.public_eq(&pkey));
    if !matches {
        return Err(ctx.at(key("sp_cert_file"), cert_file, "the certificate is not for the key in sp_key_file"));
    }
    let cert_der = cert.to_der().map_err(|e| ctx.at(key("sp_cert_file"), cert_file, e.to_string()))?;
    Ok(Some(SamlSigning { key: pkey, cert_der }))
}
