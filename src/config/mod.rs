//! Configuration: `gateway.toml` -> raw serde structs -> validated [`Config`].
//!
//! Loading always ends in validation, so a `Config` value is one porteiro can
//! serve with. Every error names the key path and, where the file has it, the
//! line and column.

pub mod policy;
pub mod provider;
mod raw;
mod secret;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;

pub use secret::Secret;

/// Shortest and longest session validity in minutes (Document360's rule).
pub const VALIDITY_MINUTES: std::ops::RangeInclusive<i64> = 5..=1440;

/// Shortest and longest `max_session_minutes` of a refreshable OpenID
/// Connect session (30 days at most).
pub const MAX_SESSION_MINUTES: std::ops::RangeInclusive<i64> = 5..=43_200;

/// The longest any session can live, refreshed or not, in seconds: what a
/// revocation must outlast.
pub const LONGEST_SESSION_SECONDS: u64 = *MAX_SESSION_MINUTES.end() as u64 * 60;

/// A validated configuration, ready to serve.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub providers: Vec<ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    pub rate_limit: RateLimitConfig,
    /// Things that load but deserve attention (clamped values, literal secrets).
    pub warnings: Vec<String>,
}

/// `[rate_limit]`: per client address, per replica. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests to the login endpoints per minute (also the burst).
    pub login_per_minute: u32,
    /// Refused bearer tokens and API keys per minute (also the burst).
    pub failed_auth_per_minute: u32,
    /// Client addresses remembered per limit; past it the least recently
    /// seen are forgotten, so memory stays bounded.
    pub max_clients: u64,
}

/// `[server]`: listeners, limits and upstream client settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where browsers reach porteiro; default `http(s)://{listen}`. No trailing slash.
    pub public_url: String,
    pub public_https: bool,
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for `POST /admin/revoke`; the endpoint is off without it.
    pub admin_token: Option<Secret>,
    /// Where durable state lives (identifier mappings).
    pub state_dir: Option<PathBuf>,
    /// Prefix of porteiro's own endpoints; default `/sso`. No trailing slash.
    pub auth_prefix: String,
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Runtime worker threads; 0 means one per core.
    pub worker_threads: usize,
    pub shutdown_grace: Duration,
    /// After `SIGTERM`, how long porteiro keeps serving (with `/readyz`
    /// already 503) before it stops accepting; default 0.
    pub shutdown_delay: Duration,
    pub max_connections: usize,
    /// Time to receive a request head; on HTTP/1.1 keep-alive connections it
    /// also bounds the wait for the next request.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub upstream_connect_timeout: Duration,
    /// Time from sending the request upstream to its response head.
    pub upstream_timeout: Duration,
    pub upstream_ca_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// One `porteiro::access` log line per answered request; default on.
    pub access_log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[session]`: the browser session cookie.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub secret: Option<Secret>,
    pub previous_secrets: Vec<Secret>,
    /// Clamped to [`VALIDITY_MINUTES`].
    pub validity: Duration,
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub store: StoreKind,
    /// Most live API keys per user (subject).
    pub api_keys_per_user: usize,
}

/// Where single-use and revocation state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In-process (moka): one replica needs nothing else.
    Memory,
    /// Shared by replicas through one Redis (`session.store = "redis"`).
    Redis {
        /// `redis://` or `rediss://` URL; may carry a password, so a secret.
        url: Secret,
        /// Prepended to every key and the revocation channel (default `porteiro:`).
        prefix: String,
    },
}

pub use provider::bearer::BearerConfig;
pub use provider::code::CodeConfig;
pub use provider::jwt::JwtConfig;
pub use provider::oidc::{OidcConfig, OidcEndpoints, TokenEndpointAuth};
pub use provider::saml::{SamlConfig, SamlMetadata, SamlSigning};
pub use provider::token::{KeyConfig, TokenConfig};
pub use provider::{ProviderConfig, ProviderKind};

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Name used in metrics and logs; default `{host or *}{path_prefix}`.
    pub id: String,
    pub host: Option<HostPattern>,
    /// Always starts with `/`.
    pub path_prefix: String,
    pub upstream: Upstream,
    pub access: Access,
    pub public_paths: Vec<String>,
    pub allow: AllowRules,
    /// Extra identity headers: header name -> claim name.
    pub headers: Vec<(HeaderName, String)>,
    pub preserve_host: bool,
    pub allow_encoded_slashes: bool,
    /// `;` in paths passes (path parameters of Java servers); routes are
    /// then matched on the path without them.
    pub allow_semicolons: bool,
    /// Upgrade protocols passed through, lower-case; default `["websocket"]`.
    pub upgrades: Vec<String>,
    /// Users signed in with the route's login provider may mint API keys,
    /// and those keys are accepted here (DESIGN §2.6).
    pub api_keys: bool,
    /// `identity_jwt = true`: the upstream gets `X-Porteiro-Jwt-Assertion`,
    /// a signed JWT of the identity (DESIGN §4), for this audience.
    pub identity_jwt: Option<IdentityAudience>,
}

/// The `aud` of a route's signed identity header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAudience {
    /// No `identity_audience`: the request's host name, without port.
    RequestHost,
    /// `identity_audience = "..."`.
    Fixed(String),
}

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Public,
    Protected { login: Option<String>, bearer: Vec<String> },
}

#[derive(Debug, Clone, Default)]
pub struct AllowRules {
    pub emails: Vec<String>,
    pub email_domains: Vec<String>,
    pub groups: Vec<String>,
    pub claims: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Lower-case host name without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any depth of subdomain.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Http {
        scheme: Scheme,
        authority: Authority,
    },
    /// `builtin:whoami`: answers with what an upstream would have received.
    Whoami,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn from_path(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            position: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, &origin)
    }

    /// Validates TOML text; `origin` names it in errors (a path, or "test").
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        validate::load(text, origin)
    }
}

/// A configuration that cannot be served, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    /// Dotted key path such as `routes[1].upstream`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
