//! Raw structs -> [`Config`]: every check that needs more than TOML types.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Scheme, Uri};
use ipnet::IpNet;
use toml::Spanned;

use super::policy::{MIN_RSA_BITS, url_allowed, weak_rsa};
use super::raw::{RawAllow, RawConfig, RawProvider, RawRoute, RawServer, RawSession};
use super::secret::{self, Resolved, Secret};
use super::{
    Access, AllowRules, BearerConfig, CodeConfig, Config, ConfigError, HostPattern, JwtConfig, KeyConfig, LogFormat,
    OidcConfig, OidcEndpoints, ProviderConfig, ProviderKind, RouteConfig, SamlConfig, SamlMetadata, SamlSigning,
    ServerConfig, SessionConfig, StoreKind, TlsFiles, TokenConfig, TokenEndpointAuth, Upstream, VALIDITY_MINUTES,
};

/// Where errors point: the text (for line numbers) and its name.
struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn error(&self, key: impl Into<String>, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.to_string(),
            position: span.map(|s| line_col(self.text, s.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    fn at<T>(&self, key: impl Into<String>, value: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.error(key, Some(value.span()), message)
    }

    fn warn(&mut self, key: &str, value_span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, value_span.start);
        self.warnings.push(format!("{}:{line}:{col}: {key}: {}", self.origin, message.into()));
    }

    fn secret(&mut self, key: &str, value: &Spanned<String>) -> Result<Secret, ConfigError> {
        match secret::resolve(value.get_ref()) {
            Ok(Resolved::Secret(s)) => Ok(s),
            Ok(Resolved::Literal(s)) => {
                self.warn(
                    key,
                    value.span(),
                    "secret written literally in the config; prefer \"env:NAME\" or \"file:/path\"",
                );
                Ok(s)
            }
            Err(message) => Err(self.at(key, value, message)),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub fn load(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut ctx = Ctx { text, origin, warnings: Vec::new() };
    let de = toml::Deserializer::new(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ctx.error(if key == "." { String::new() } else { key }, inner.span(), inner.message().to_string())
    })?;

    let server = server(&mut ctx, &raw.server)?;
    let session = session(&mut ctx, raw.session.as_ref(), server.public_https)?;
    let mut providers: Vec<ProviderConfig> = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.iter().enumerate() {
        let provider = provider(&mut ctx, i, p, &server)?;
        if providers.iter().any(|q| q.id == provider.id) {
            return Err(ctx.at(
                format!("providers[{i}].id"),
                &p.id,
                format!("duplicate provider id {:?}", provider.id),
            ));
        }
        providers.push(provider);
    }
    let mut client_ids = HashSet::new();
    for (i, p) in raw.providers.iter().enumerate() {
        for (j, c) in p.clients.iter().enumerate() {
            if !client_ids.insert(c.client_id.get_ref().clone()) {
                return Err(ctx.at(
                    format!("providers[{i}].clients[{j}].client_id"),
                    &c.client_id,
                    "duplicate client_id",
                ));
            }
        }
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut route_ids = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let route = route(&mut ctx, i, r, &providers)?;
        if !route_ids.insert(route.id.clone()) {
            return Err(ctx.error(
                format!("routes[{i}].id"),
                r.id.as_ref().map(Spanned::span),
                format!("duplicate route id {:?}", route.id),
            ));
        }
        routes.push(route);
    }
    if routes.is_empty() {
        ctx.warnings.push(format!("{origin}: no [[routes]]: every request will get 404"));
    }
    if let Some(i) = providers.iter().position(|p| p.kind.is_login()) {
        if session.secret.is_none() {
            return Err(ctx.at(
                "session.secret",
                &raw.providers[i].kind,
                "required when a browser login provider is configured (at least 32 bytes, e.g. \"env:PORTEIRO_SESSION_SECRET\")",
            ));
        }
    }
    Ok(Config { server, session, providers, routes, warnings: ctx.warnings })
}

fn socket_addr(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    v.get_ref()
        .parse()
        .map_err(|_| ctx.at(key, v, format!("{:?} is not an address:port such as 127.0.0.1:8080", v.get_ref())))
}

fn seconds(ctx: &Ctx, key: &str, v: Option<&Spanned<u64>>, default: u64) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) if *s.get_ref() == 0 => Err(ctx.at(key, s, "must be at least 1")),
        Some(s) => Ok(Duration::from_secs(*s.get_ref())),
    }
}

fn count(
    ctx: &Ctx,
    key: &str,
    v: Option<&Spanned<u64>>,
    default: usize,
    range: Range<u64>,
) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if !range.contains(s.get_ref()) => {
            Err(ctx.at(key, s, format!("must be between {} and {}", range.start, range.end - 1)))
        }
        Some(s) => usize::try_from(*s.get_ref()).map_err(|_| ctx.at(key, s, "too large")),
    }
}

fn server(ctx: &mut Ctx, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = socket_addr(ctx, "server.listen", &raw.listen)?;
    let admin_listen = raw.admin_listen.as_ref().map(|a| socket_addr(ctx, "server.admin_listen", a)).transpose()?;
    if admin_listen.is_some_and(|a| a == listen && a.port() != 0) {
        return Err(ctx.at(
            "server.admin_listen",
            raw.admin_listen.as_ref().unwrap_or(&raw.listen),
            "must differ from server.listen",
        ));
    }
    let admin_token = match &raw.admin_token {
        None => None,
        Some(t) => {
            let token = ctx.secret("server.admin_token", t)?;
            if token.expose().len() < 16 {
                return Err(ctx.at("server.admin_token", t, "must be at least 16 bytes"));
            }
            Some(token)
        }
    };
    let tls = raw
        .tls
        .as_ref()
        .map(|t| TlsFiles { cert: PathBuf::from(t.cert.get_ref()), key: PathBuf::from(t.key.get_ref()) });
    let (public_url, public_https) = match &raw.public_url {
        Some(v) => public_url(ctx, v)?,
        None => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            (format!("{scheme}://{listen}"), tls.is_some())
        }
    };
    let auth_prefix = match &raw.auth_prefix {
        None => "/sso".to_string(),
        Some(p) => {
            let s = p.get_ref().trim_end_matches('/');
            if !s.starts_with('/')
                || s.len() < 2
                || !s[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            {
                return Err(ctx.at("server.auth_prefix", p, "must be a path such as /sso"));
            }
            s.to_string()
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, t) in raw.trusted_proxies.iter().enumerate() {
        let s = t.get_ref();
        let net = s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
            ctx.at(format!("server.trusted_proxies[{i}]"), t, format!("{s:?} is not an IP address or CIDR range"))
        })?;
        trusted_proxies.push(net);
    }
    let log_format = match raw.log_format.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "text")) => LogFormat::Text,
        Some((_, "json")) => LogFormat::Json,
        Some((v, other)) => {
            return Err(ctx.at("server.log_format", v, format!("{other:?}: expected \"text\" or \"json\"")));
        }
    };
    let max_header_bytes =
        count(ctx, "server.max_header_bytes", raw.max_header_bytes.as_ref(), 64 * 1024, 8192..16 * 1024 * 1024 + 1)?;
    Ok(ServerConfig {
        listen,
        public_url,
        public_https,
        admin_listen,
        admin_token,
        state_dir: raw.state_dir.as_ref().map(|d| PathBuf::from(d.get_ref())),
        auth_prefix,
        tls,
        trusted_proxies,
        worker_threads: count(ctx, "server.worker_threads", raw.worker_threads.as_ref(), 0, 0..1025)?,
        shutdown_grace: seconds(ctx, "server.shutdown_grace_seconds", raw.shutdown_grace_seconds.as_ref(), 30)?,
        max_connections: count(ctx, "server.max_connections", raw.max_connections.as_ref(), 10_000, 1..10_000_001)?,
        header_read_timeout: seconds(
            ctx,
            "server.header_read_timeout_seconds",
            raw.header_read_timeout_seconds.as_ref(),
            10,
        )?,
        max_header_bytes,
        max_headers: count(ctx, "server.max_headers", raw.max_headers.as_ref(), 100, 1..10_001)?,
        upstream_connect_timeout: seconds(
            ctx,
            "server.upstream_connect_timeout_seconds",
            raw.upstream_connect_timeout_seconds.as_ref(),
            5,
        )?,
        upstream_timeout: seconds(ctx, "server.upstream_timeout_seconds", raw.upstream_timeout_seconds.as_ref(), 60)?,
        upstream_ca_file: raw.upstream_ca_file.as_ref().map(|v| PathBuf::from(v.get_ref())),
        log_format,
    })
}

fn public_url(ctx: &Ctx, v: &Spanned<String>) -> Result<(String, bool), ConfigError> {
    let bad = |why: &str| ctx.at("server.public_url", v, format!("{:?}: {why}", v.get_ref()));
    let uri: Uri = v.get_ref().parse().map_err(|_| bad("not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("must start with http:// or https://")),
    };
    let Some(authority) = uri.authority() else {
        return Err(bad("has no host"));
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad("must be scheme://host[:port] only, without a path"));
    }
    let scheme = if https { "https" } else { "http" };
    Ok((format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()), https))
}

fn session(ctx: &mut Ctx, raw: Option<&RawSession>, https: bool) -> Result<SessionConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SessionConfig {
            secret: None,
            previous_secrets: Vec::new(),
            validity: Duration::from_secs(15 * 60),
            cookie_name: default_cookie_name(https, false),
            cookie_domain: None,
            store: StoreKind::Memory,
        });
    };
    let secret = raw.secret.as_ref().map(|s| session_secret(ctx, "session.secret", s)).transpose()?;
    let mut previous_secrets = Vec::new();
    for (i, s) in raw.previous_secrets.iter().enumerate() {
        previous_secrets.push(session_secret(ctx, &format!("session.previous_secrets[{i}]"), s)?);
    }
    let validity_minutes = match &raw.validity_minutes {
        None => 15,
        Some(v) => {
            let m = *v.get_ref();
            let clamped = m.clamp(*VALIDITY_MINUTES.start(), *VALIDITY_MINUTES.end());
            if clamped != m {
                ctx.warn(
                    "session.validity_minutes",
                    v.span(),
                    format!("{m} is outside 5..=1440 minutes; using {clamped}"),
                );
            }
            clamped
        }
    };
    let cookie_domain = raw.cookie_domain.as_ref().map(|d| d.get_ref().trim_start_matches('.').to_ascii_lowercase());
    let cookie_name = match &raw.cookie_name {
        None => default_cookie_name(https, cookie_domain.is_some()),
        Some(n) => {
            let name = n.get_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                return Err(ctx.at("session.cookie_name", n, "use letters, digits, - and _ only"));
            }
            name.clone()
        }
    };
    let store = match raw.store.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "memory")) => {
            // A URL without the store would silently keep state per replica.
            if let Some(u) = &raw.redis_url {
                return Err(ctx.at("session.redis_url", u, "only used with session.store = \"redis\""));
            }
            if let Some(p) = &raw.redis_prefix {
                return Err(ctx.at("session.redis_prefix", p, "only used with session.store = \"redis\""));
            }
            StoreKind::Memory
        }
        Some((s, "redis")) => {
            let Some(u) = &raw.redis_url else {
                return Err(ctx.at("session.store", s, "\"redis\" needs session.redis_url"));
            };
            let url = ctx.secret("session.redis_url", u)?;
            redis_url(url.expose()).map_err(|why| ctx.at("session.redis_url", u, why))?;
            let prefix = match &raw.redis_prefix {
                None => "porteiro:".to_string(),
                Some(p) => {
                    let prefix = p.get_ref();
                    if prefix.is_empty() || prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
                        return Err(ctx.at(
                            "session.redis_prefix",
                            p,
                            "must be non-empty, without spaces or control characters",
                        ));
                    }
                    prefix.clone()
                }
            };
            StoreKind::Redis { url, prefix }
        }
        Some((s, other)) => {
            return Err(ctx.at("session.store", s, format!("{other:?}: expected \"memory\" or \"redis\"")));
        }
    };
    Ok(SessionConfig {
        secret,
        previous_secrets,
        validity: Duration::from_secs(validity_minutes as u64 * 60),
        cookie_name,
        cookie_domain,
        store,
    })
}

/// Checks a Redis URL without echoing it: it may carry a password.
fn redis_url(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8".to_string())?;
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err("must start with redis:// or rediss://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must be redis[s]://[user:password@]host[:port][/db] without a query".into());
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err("the path, when present, is the database number".into());
    }
    Ok(())
}

/// `porteiro_session`, or `__Host-porteiro_session` under HTTPS without a domain.
fn default_cookie_name(https: bool, has_domain: bool) -> String {
    if https && !has_domain { "__Host-porteiro_session".to_string() } else { "porteiro_session".to_string() }
}

fn session_secret(ctx: &mut Ctx, key: &str, v: &Spanned<String>) -> Result<Secret, ConfigError> {
    let s = ctx.secret(key, v)?;
    if s.expose().len() < 32 {
        return Err(ctx.at(key, v, format!("must be at least 32 bytes (it has {})", s.expose().len())));
    }
    Ok(s)
}

fn route(ctx: &mut Ctx, i: usize, raw: &RawRoute, providers: &[ProviderConfig]) -> Result<RouteConfig, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let host =
        match &raw.host {
            None => None,
            Some(h) => Some(host_pattern(h.get_ref()).ok_or_else(|| {
                ctx.at(key("host"), h, "must be a host name such as app.example.com or *.example.com")
            })?),
        };
    let path_prefix = match &raw.path_prefix {
        None => "/".to_string(),
        Some(p) => path(ctx, &key("path_prefix"), p)?,
    };
    let upstream = upstream(ctx, &key("upstream"), &raw.upstream)?;
    let public = raw.public.unwrap_or(false);
    let access = match (public, &raw.login, raw.bearer.is_empty()) {
        (true, None, true) => Access::Public,
        (true, _, _) => {
            let span = raw.login.as_ref().map(Spanned::span).or_else(|| raw.bearer.first().map(Spanned::span));
            return Err(ctx.error(key("public"), span, "a public route names no login or bearer providers"));
        }
        (false, None, true) => {
            return Err(ctx.error(
                format!("routes[{i}]"),
                Some(raw.upstream.span()),
                "route is neither public = true nor names a login or bearer provider (routes are never open by default)",
            ));
        }
        (false, login, _) => {
            let find = |v: &Spanned<String>, k: &str| {
                providers
                    .iter()
                    .find(|p| p.id == *v.get_ref())
                    .ok_or_else(|| ctx.at(key(k), v, format!("unknown provider {:?}", v.get_ref())))
            };
            if let Some(l) = login {
                if !find(l, "login")?.kind.is_login() {
                    return Err(ctx.at(
                        key("login"),
                        l,
                        format!("provider {:?} is not a browser login provider", l.get_ref()),
                    ));
                }
            }
            for b in &raw.bearer {
                if !matches!(find(b, "bearer")?.kind, ProviderKind::Bearer(_)) {
                    return Err(ctx.at(
                        key("bearer"),
                        b,
                        format!("provider {:?} is not a bearer provider", b.get_ref()),
                    ));
                }
            }
            Access::Protected {
                login: login.as_ref().map(|l| l.get_ref().clone()),
                bearer: raw.bearer.iter().map(|b| b.get_ref().clone()).collect(),
            }
        }
    };
    let mut public_paths = Vec::new();
    for (j, p) in raw.public_paths.iter().enumerate() {
        public_paths.push(path(ctx, &format!("routes[{i}].public_paths[{j}]"), p)?);
    }
    let allow = allow(ctx, i, raw.allow.as_ref())?;
    let mut headers = Vec::new();
    for (name, claim) in &raw.headers {
        let h = HeaderName::try_from(name.as_str())
            .map_err(|_| ctx.at(key("headers"), claim, format!("{name:?} is not a valid header name")))?;
        headers.push((h, claim.get_ref().clone()));
    }
    let upgrades = match &raw.upgrades {
        None => vec!["websocket".to_string()],
        Some(list) => {
            let mut out = Vec::new();
            for p in list {
                let name = p.get_ref().to_ascii_lowercase();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                    return Err(ctx.at(key("upgrades"), p, format!("{:?} is not a protocol name", p.get_ref())));
                }
                // An h2c upgrade hands the connection to the upstream as
                // HTTP/2: every later request on it would bypass porteiro.
                if name == "h2c" {
                    return Err(ctx.at(key("upgrades"), p, "h2c is never passed through"));
                }
                out.push(name);
            }
            out
        }
    };
    let id = match &raw.id {
        Some(id) => id.get_ref().clone(),
        None => format!("{}{}", raw.host.as_ref().map_or("*", |h| h.get_ref().as_str()), path_prefix),
    };
    Ok(RouteConfig {
        id,
        host,
        path_prefix,
        upstream,
        access,
        public_paths,
        allow,
        headers,
        preserve_host: raw.preserve_host.unwrap_or(true),
        allow_encoded_slashes: raw.allow_encoded_slashes.unwrap_or(false),
        allow_semicolons: raw.allow_semicolons.unwrap_or(false),
        upgrades,
    })
}

fn provider(ctx: &mut Ctx, i: usize, raw: &RawProvider, server: &ServerConfig) -> Result<ProviderConfig, ConfigError> {
    let key = |k: &str| format!("providers[{i}].{k}");
    let id = raw.id.get_ref();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ctx.at(key("id"), &raw.id, "use letters, digits, -, _ and . only"));
    }
    let kind = match raw.kind.get_ref().as_str() {
        "jwt" => ProviderKind::Jwt(jwt_provider(ctx, i, raw, server)?),
        "code" => ProviderKind::Code(code_provider(ctx, i, raw)?),
        "oidc" => ProviderKind::Oidc(oidc_provider(ctx, i, raw)?),
        "saml" => ProviderKind::Saml(saml_provider(ctx, i, raw, server)?),
        "bearer" => ProviderKind::Bearer(BearerConfig {
            token: token_config(ctx, i, raw)?,
            groups_claim: raw.groups_claim.as_ref().map_or_else(|| "groups".to_string(), |g| g.get_ref().clone()),
            required_scopes: raw.required_scopes.clone().unwrap_or_default(),
        }),
        other => {
            return Err(ctx.at(
                key("kind"),
                &raw.kind,
                format!("unknown kind {other:?}; expected \"jwt\", \"oidc\", \"saml\", \"code\" or \"bearer\""),
            ));
        }
    };
    // Keys that mean nothing for this kind are mistakes, not silent no-ops.
    let kind_name = raw.kind.get_ref().as_str();
    let token_kinds: &[&str] = &["jwt", "bearer"];
    let verifying: &[&str] = &["jwt", "bearer", "oidc"];
    let timed: &[&str] = &["jwt", "bearer", "oidc", "saml"];
    let oidc: &[&str] = &["oidc"];
    let saml: &[&str] = &["saml"];
    let stray: &[(&str, bool, &[&str])] = &[
        ("secret", raw.secret.is_some(), token_kinds),
        ("public_key_file", raw.public_key_file.is_some(), token_kinds),
        ("jwks_url", raw.jwks_url.is_some(), token_kinds),
        ("algorithms", raw.algorithms.is_some(), verifying),
        ("audience", raw.audience.is_some(), verifying),
        ("leeway_seconds", raw.leeway_seconds.is_some(), timed),
        ("max_token_age_seconds", raw.max_token_age_seconds.is_some(), token_kinds),
        ("require_exp", raw.require_exp.is_some(), token_kinds),
        ("groups_claim", raw.groups_claim.is_some(), verifying),
        ("jwks_min_refresh_seconds", raw.jwks_min_refresh_seconds.is_some(), verifying),
        ("jwks_max_refresh_seconds", raw.jwks_max_refresh_seconds.is_some(), verifying),
        ("client_id", raw.client_id.is_some(), oidc),
        ("client_secret", raw.client_secret.is_some(), oidc),
        ("scopes", raw.scopes.is_some(), oidc),
        ("token_endpoint_auth", raw.token_endpoint_auth.is_some(), oidc),
        ("required_claims", raw.required_claims.is_some(), oidc),
        ("extra_params", !raw.extra_params.is_empty(), oidc),
        ("fetch_userinfo", raw.fetch_userinfo.is_some(), oidc),
        ("authorization_endpoint", raw.authorization_endpoint.is_some(), oidc),
        ("token_endpoint", raw.token_endpoint.is_some(), oidc),
        ("jwks_uri", raw.jwks_uri.is_some(), oidc),
        ("userinfo_endpoint", raw.userinfo_endpoint.is_some(), oidc),
        ("idp_metadata_file", raw.idp_metadata_file.is_some(), saml),
        ("idp_metadata_url", raw.idp_metadata_url.is_some(), saml),
        ("entity_id", raw.entity_id.is_some(), saml),
        ("email_attribute", raw.email_attribute.is_some(), saml),
        ("name_attribute", raw.name_attribute.is_some(), saml),
        ("groups_attribute", raw.groups_attribute.is_some(), saml),
        ("sp_key_file", raw.sp_key_file.is_some(), saml),
        ("sp_cert_file", raw.sp_cert_file.is_some(), saml),
        ("clients", !raw.clients.is_empty(), &["code"]),
        ("code_ttl_seconds", raw.code_ttl_seconds.is_some(), &["code"]),
        ("required_scopes", raw.required_scopes.is_some(), &["bearer"]),
        ("demo_login", raw.demo_login.is_some(), &["jwt"]),
        ("issuer", raw.issuer.is_some(), verifying),
        ("login_url", raw.login_url.is_some(), &["jwt", "code"]),
        ("return_param", raw.return_param.is_some(), &["jwt", "code"]),
        ("logout_url", raw.logout_url.is_some(), &["jwt", "code", "oidc", "saml"]),
    ];
    for &(name, set, kinds) in stray {
        if set && !kinds.contains(&kind_name) {
            return Err(ctx.at(key(name), &raw.kind, format!("{name} does not apply to kind = {kind_name:?}")));
        }
    }
    Ok(ProviderConfig { id: id.clone(), kind })
}

fn saml_provider(ctx: &mut Ctx, i: usize, raw: &RawProvider, server: &ServerConfig) -> Result<SamlConfig, ConfigError> {
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
fn saml_signing(ctx: &mut Ctx, i: usize, raw: &RawProvider) -> Result<Option<SamlSigning>, ConfigError> {
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

fn oidc_provider(ctx: &mut Ctx, i: usize, raw: &RawProvider) -> Result<OidcConfig, ConfigError> {
    use jsonwebtoken::Algorithm;

    let key = |k: &str| format!("providers[{i}].{k}");
    fn need<'a>(
        ctx: &Ctx,
        raw: &'a RawProvider,
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
            Some(OidcEndpoints { authorization, token: t.get_ref().clone(), jwks: j.get_ref().clone(), userinfo })
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
        jwks_min_refresh: min,
        jwks_max_refresh: max.max(min),
    })
}

fn code_provider(ctx: &mut Ctx, i: usize, raw: &RawProvider) -> Result<CodeConfig, ConfigError> {
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

fn return_param(ctx: &Ctx, key: &str, v: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    match v {
        None => Ok("redirectUrl".to_string()),
        Some(p)
            if !p.get_ref().is_empty()
                && p.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(p.get_ref().clone())
        }
        Some(p) => Err(ctx.at(key, p, "must be a plain query parameter name")),
    }
}

fn jwt_provider(ctx: &mut Ctx, i: usize, raw: &RawProvider, server: &ServerConfig) -> Result<JwtConfig, ConfigError> {
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
    Ok(JwtConfig { login_url, return_param, logout_url, token: token_config(ctx, i, raw)?, groups_claim, demo_login })
}

/// Issuer, keys, algorithms and time rules shared by token-based kinds.
fn token_config(ctx: &mut Ctx, i: usize, raw: &RawProvider) -> Result<TokenConfig, ConfigError> {
    use jsonwebtoken::{Algorithm, DecodingKey};

    let key = |k: &str| format!("providers[{i}].{k}");
    let Some(issuer) = &raw.issuer else {
        return Err(ctx.at(key("kind"), &raw.kind, "issuer is required (the token's iss must equal it)"));
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
            return Err(ctx.at(key("kind"), &raw.kind, "set exactly one of secret, public_key_file or jwks_url"));
        }
    };
    // Which algorithm families the key can verify, and the default list.
    let (families, default): (&[&str], &str) = match &keys {
        KeyConfig::Secret(_) => (&["HS"], "HS256"),
        KeyConfig::PublicKey { pem, .. } => {
            if let Ok(rsa) = DecodingKey::from_rsa_pem(pem) {
                if let Some(bits) = weak_rsa(&rsa) {
                    let p = raw.public_key_file.as_ref().unwrap_or(&raw.kind);
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
                let p = raw.public_key_file.as_ref().unwrap_or(&raw.kind);
                return Err(ctx.at(key("public_key_file"), p, "not a PEM RSA, EC or Ed25519 public key"));
            }
        }
        KeyConfig::Jwks { .. } => (&["RS", "PS", "ES", "EdDSA"], "RS256"),
    };
    let algorithms = match &raw.algorithms {
        None => vec![
            default
                .parse::<Algorithm>()
                .map_err(|_| ctx.at(key("kind"), &raw.kind, "internal: bad default algorithm"))?,
        ],
        Some(list) if list.is_empty() => return Err(ctx.at(key("kind"), &raw.kind, "algorithms must not be empty")),
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

fn absolute_url(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<String, ConfigError> {
    match url::Url::parse(v.get_ref()) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => Ok(v.get_ref().clone()),
        _ => Err(ctx.at(key, v, format!("{:?} must be an absolute http(s) URL", v.get_ref()))),
    }
}

fn host_pattern(h: &str) -> Option<HostPattern> {
    let h = h.to_ascii_lowercase();
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match h.strip_prefix("*.") {
        Some(rest) if valid(rest) => Some(HostPattern::Suffix(format!(".{rest}"))),
        Some(_) => None,
        None if valid(&h) => Some(HostPattern::Exact(h)),
        None => None,
    }
}

fn path(ctx: &Ctx, key: &str, p: &Spanned<String>) -> Result<String, ConfigError> {
    let s = p.get_ref();
    if !s.starts_with('/')
        || s.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || b == b'\\' || b == b'%')
    {
        return Err(ctx.at(key, p, format!("{s:?} must be a plain path starting with /")));
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(ctx.at(key, p, format!("{s:?} must not contain . or .. segments")));
    }
    Ok(s.clone())
}

fn upstream(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<Upstream, ConfigError> {
    let s = v.get_ref();
    if s == "builtin:whoami" {
        return Ok(Upstream::Whoami);
    }
    let bad = |why: &str| ctx.at(key, v, format!("{s:?}: {why}"));
    let uri: Uri = s.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(bad("scheme must be http, https, or builtin:whoami")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(bad("has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if (uri.path() != "/" && !uri.path().is_empty()) || uri.query().is_some() {
        return Err(bad("must be scheme://host[:port] only; the request path is passed through unchanged"));
    }
    Ok(Upstream::Http { scheme, authority })
}

fn allow(ctx: &Ctx, i: usize, raw: Option<&RawAllow>) -> Result<AllowRules, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AllowRules::default());
    };
    let mut rules = AllowRules::default();
    for (j, e) in raw.emails.iter().enumerate() {
        if !e.get_ref().contains('@') {
            return Err(ctx.at(format!("routes[{i}].allow.emails[{j}]"), e, "not an email address"));
        }
        rules.emails.push(e.get_ref().to_ascii_lowercase());
    }
    for (j, d) in raw.email_domains.iter().enumerate() {
        let domain = d.get_ref().trim_start_matches('@').to_ascii_lowercase();
        if domain.is_empty() || domain.contains('@') {
            return Err(ctx.at(format!("routes[{i}].allow.email_domains[{j}]"), d, "not a domain"));
        }
        rules.email_domains.push(domain);
    }
    rules.groups = raw.groups.iter().map(|g| g.get_ref().clone()).collect();
    rules.claims = raw.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(rules)
}
