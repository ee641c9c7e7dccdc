//! Configuration: `gateway.toml` -> raw serde structs -> validated [`Config`].
//!
//! Loading always ends in validation, so a `Config` value is one porteiro can
//! serve with. Every error names the key path and, where the file has it, the
//! line and column.

pub mod policy;
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

/// A validated configuration, ready to serve.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub providers: Vec<ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    /// Things that load but deserve attention (clamped values, literal secrets).
    pub warnings: Vec<String>,
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
    pub jwks_min_refresh: Duration,
    pub jwks_max_refresh: Duration,
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
}

/// `kind = "bearer"`: `Authorization: Bearer <JWT>` from API clients.
#[derive(Debug, Clone)]
pub struct BearerConfig {
    pub token: TokenConfig,
    pub groups_claim: String,
    pub required_scopes: Vec<String>,
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
