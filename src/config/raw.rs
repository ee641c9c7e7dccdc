//! The file format: serde structs that mirror `gateway.toml` one to one.
//!
//! Nothing here is validated beyond TOML types; `super::validate` turns these
//! into the runtime [`super::Config`]. Fields that validation may reject are
//! `Spanned`, so errors can point at the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub session: Option<RawSession>,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Spanned<String>,
    pub public_url: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub auth_prefix: Option<Spanned<String>>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub worker_threads: Option<Spanned<u64>>,
    pub shutdown_grace_seconds: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub header_read_timeout_seconds: Option<Spanned<u64>>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub upstream_connect_timeout_seconds: Option<Spanned<u64>>,
    pub upstream_timeout_seconds: Option<Spanned<u64>>,
    pub upstream_ca_file: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub secret: Option<Spanned<String>>,
    #[serde(default)]
    pub previous_secrets: Vec<Spanned<String>>,
    pub validity_minutes: Option<Spanned<i64>>,
    pub cookie_name: Option<Spanned<String>>,
    pub cookie_domain: Option<Spanned<String>>,
    pub store: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<String>>,
    pub redis_prefix: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub id: Spanned<String>,
    pub kind: Spanned<String>,
    pub login_url: Option<Spanned<String>>,
    pub return_param: Option<Spanned<String>>,
    pub logout_url: Option<Spanned<String>>,
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
    pub groups_claim: Option<Spanned<String>>,
    pub demo_login: Option<Spanned<bool>>,
    #[serde(default)]
    pub clients: Vec<RawClient>,
    pub code_ttl_seconds: Option<Spanned<u64>>,
    pub required_scopes: Option<Vec<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    pub scopes: Option<Vec<String>>,
    pub token_endpoint_auth: Option<Spanned<String>>,
    pub required_claims: Option<Vec<String>>,
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    pub fetch_userinfo: Option<bool>,
    pub authorization_endpoint: Option<Spanned<String>>,
    pub token_endpoint: Option<Spanned<String>>,
    pub jwks_uri: Option<Spanned<String>>,
    pub userinfo_endpoint: Option<Spanned<String>>,
    pub idp_metadata_file: Option<Spanned<String>>,
    pub idp_metadata_url: Option<Spanned<String>>,
    pub entity_id: Option<Spanned<String>>,
    pub email_attribute: Option<Spanned<String>>,
    pub name_attribute: Option<Spanned<String>>,
    pub groups_attribute: Option<Spanned<String>>,
    pub sp_key_file: Option<Spanned<String>>,
    pub sp_cert_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub client_id: Spanned<String>,
    pub client_secret: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    pub public: Option<bool>,
    pub login: Option<Spanned<String>>,
    #[serde(default)]
    pub bearer: Vec<Spanned<String>>,
    #[serde(default)]
    pub public_paths: Vec<Spanned<String>>,
    pub allow: Option<RawAllow>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub preserve_host: Option<bool>,
    pub allow_encoded_slashes: Option<bool>,
    pub allow_semicolons: Option<bool>,
    pub upgrades: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    #[serde(default)]
    pub emails: Vec<Spanned<String>>,
    #[serde(default)]
    pub email_domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
}
