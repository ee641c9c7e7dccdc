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
    pub providers: Vec<super::provider::RawProvider>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub login_per_minute: Option<Spanned<u64>>,
    pub failed_auth_per_minute: Option<Spanned<u64>>,
    pub max_clients: Option<Spanned<u64>>,
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
    pub shutdown_delay_seconds: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub header_read_timeout_seconds: Option<Spanned<u64>>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub upstream_connect_timeout_seconds: Option<Spanned<u64>>,
    pub upstream_timeout_seconds: Option<Spanned<u64>>,
    pub upstream_ca_file: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub access_log: Option<bool>,
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
    pub api_keys_per_user: Option<Spanned<u64>>,
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
    pub api_keys: Option<Spanned<bool>>,
    pub identity_jwt: Option<Spanned<bool>>,
    pub identity_audience: Option<Spanned<String>>,
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
