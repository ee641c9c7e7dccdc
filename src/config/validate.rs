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

use super::provider;
use super::raw::{RawAllow, RawConfig, RawRateLimit, RawRoute, RawServer, RawSession};
use super::secret::{self, Resolved, Secret};
use super::{
    Access, AllowRules, Config, ConfigError, HostPattern, IdentityAudience, LogFormat, ProviderConfig, ProviderKind,
    RateLimitConfig, RouteConfig, ServerConfig, SessionConfig, StoreKind, TlsFiles, Upstream, VALIDITY_MINUTES,
};

/// Where errors point: the text (for line numbers) and its name.
pub(in crate::config) struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    pub(in crate::config) fn error(
        &self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin: self.origin.to_string(),
            position: span.map(|s| line_col(self.text, s.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(in crate::config) fn at<T>(
        &self,
        key: impl Into<String>,
        value: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(key, Some(value.span()), message)
    }

    pub(in crate::config) fn warn(&mut self, key: &str, value_span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, value_span.start);
        self.warnings.push(format!("{}:{line}:{col}: {key}: {}", self.origin, message.into()));
    }

    pub(in crate::config) fn secret(&mut self, key: &str, value: &Spanned<String>) -> Result<Secret, ConfigError> {
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
    let read = || serde_path_to_error::deserialize::<_, RawConfig>(toml::Deserializer::new(text));
    let raw = provider::read_kinds_first(text, read).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // A key of another provider kind (or none): say which kind it is.
        let stray = key.strip_prefix("providers[").and_then(|rest| {
            let i: usize = rest.split(']').next()?.parse().ok()?;
            let kind = toml::from_str::<toml::Table>(text).ok()?;
            let kind = kind.get("providers")?.get(i)?.get("kind")?.as_str()?.to_string();
            provider::stray_key_message(inner.message(), &kind)
        });
        let message = stray.unwrap_or_else(|| inner.message().to_string());
        ctx.error(if key == "." { String::new() } else { key }, inner.span(), message)
    })?;

    let server = server(&mut ctx, &raw.server)?;
    let session = session(&mut ctx, raw.session.as_ref(), server.public_https)?;
    let mut providers: Vec<ProviderConfig> = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.iter().enumerate() {
        let provider = provider::validate(&mut ctx, i, p, &server)?;
        if providers.iter().any(|q| q.id == provider.id) {
            return Err(ctx.at(
                format!("providers[{i}].id"),
                p.id(),
                format!("duplicate provider id {:?}", provider.id),
            ));
        }
        providers.push(provider);
    }
    let mut client_ids = HashSet::new();
    for (i, p) in raw.providers.iter().enumerate() {
        let clients = match p {
            provider::RawProvider::Code(c) => &c.clients[..],
            _ => &[],
        };
        for (j, c) in clients.iter().enumerate() {
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
        let route = route(&mut ctx, i, r, &providers, server.state_dir.as_deref(), &session.store)?;
        if !route_ids.insert(route.id.clone()) {
            return Err(ctx.error(
                format!("routes[{i}].id"),
                r.id.as_ref().map(Spanned::span),
                format!("duplicate route id {:?}", route.id),
            ));
        }
        routes.push(route);
    }
    // The signing key of the identity header is derived from the session
    // secret (README, "Signed identity header").
    if session.secret.is_none() {
        let signed = raw
            .routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.identity_jwt.as_ref().filter(|v| *v.get_ref()).map(|v| (i, v)));
        if let Some((i, v)) = signed {
            return Err(ctx.at(
                format!("routes[{i}].identity_jwt"),
                v,
                "the signing key is derived from session.secret: set it (at least 32 bytes, e.g. \"env:PORTEIRO_SESSION_SECRET\")",
            ));
        }
    }
    if routes.is_empty() {
        ctx.warnings.push(format!("{origin}: no [[routes]]: every request will get 404"));
    }
    if let Some(i) = providers.iter().position(|p| p.kind.is_login()) {
        if session.secret.is_none() {
            return Err(ctx.at(
                "session.secret",
                raw.providers[i].kind(),
                "required when a browser login provider is configured (at least 32 bytes, e.g. \"env:PORTEIRO_SESSION_SECRET\")",
            ));
        }
    }
    let rate_limit = rate_limit(&ctx, raw.rate_limit.as_ref())?;
    Ok(Config { server, session, providers, routes, rate_limit, warnings: ctx.warnings })
}

fn socket_addr(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    v.get_ref()
        .parse()
        .map_err(|_| ctx.at(key, v, format!("{:?} is not an address:port such as 127.0.0.1:8080", v.get_ref())))
}

pub(in crate::config) fn seconds(
    ctx: &Ctx,
    key: &str,
    v: Option<&Spanned<u64>>,
    default: u64,
) -> Result<Duration, ConfigError> {
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
        // 0 is allowed: stop accepting at once, as without the key.
        shutdown_delay: Duration::from_secs(count(
            ctx,
            "server.shutdown_delay_seconds",
            raw.shutdown_delay_seconds.as_ref(),
            0,
            0..3601,
        )? as u64),
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
        access_log: raw.access_log.unwrap_or(true),
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
            api_keys_per_user: API_KEYS_PER_USER,
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
        api_keys_per_user: count(
            ctx,
            "session.api_keys_per_user",
            raw.api_keys_per_user.as_ref(),
            API_KEYS_PER_USER,
            1..10_001,
        )?,
    })
}

/// `[rate_limit]`: defaults no person reaches (a login takes a handful of
/// requests; a script with a wrong token retries far slower).
fn rate_limit(ctx: &Ctx, raw: Option<&RawRateLimit>) -> Result<RateLimitConfig, ConfigError> {
    let per_minute = |key: &str, v: Option<&Spanned<u64>>, default: usize| -> Result<u32, ConfigError> {
        let n = count(ctx, key, v, default, 0..1_000_001)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    };
    Ok(RateLimitConfig {
        login_per_minute: per_minute(
            "rate_limit.login_per_minute",
            raw.and_then(|r| r.login_per_minute.as_ref()),
            300,
        )?,
        failed_auth_per_minute: per_minute(
            "rate_limit.failed_auth_per_minute",
            raw.and_then(|r| r.failed_auth_per_minute.as_ref()),
            120,
        )?,
        max_clients: count(
            ctx,
            "rate_limit.max_clients",
            raw.and_then(|r| r.max_clients.as_ref()),
            100_000,
            100..100_000_001,
        )? as u64,
    })
}

/// Default most live API keys per user.
const API_KEYS_PER_USER: usize = 20;

/// Checks a Redis URL without echoing it: it may carry a password.
fn redis_url(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8".to_string())?;
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    // A unix socket (a sidecar Redis): `redis+unix:///path/to/redis.sock`.
    if matches!(url.scheme(), "redis+unix" | "unix") {
        if url.host_str().is_some_and(|h| !h.is_empty()) || url.path().len() < 2 {
            return Err("a unix socket URL is redis+unix:///absolute/path/to/redis.sock".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a unix socket URL takes no query".into());
        }
        return Ok(());
    }
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err("must start with redis://, rediss:// or redis+unix://".into());
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

fn route(
    ctx: &mut Ctx,
    i: usize,
    raw: &RawRoute,
    providers: &[ProviderConfig],
    state_dir: Option<&std::path::Path>,
    store: &StoreKind,
) -> Result<RouteConfig, ConfigError> {
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
    let api_keys = match &raw.api_keys {
        Some(v) if *v.get_ref() => {
            match &access {
                Access::Protected { login: Some(_), .. } => {}
                _ => {
                    return Err(ctx.at(
                        key("api_keys"),
                        v,
                        "API keys are minted by users of a login provider: the route needs login = \"...\"",
                    ));
                }
            }
            if state_dir.is_none() && store == &StoreKind::Memory {
                return Err(ctx.at(
                    key("api_keys"),
                    v,
                    "API keys must survive restarts: set server.state_dir, or session.store = \"redis\"",
                ));
            }
            true
        }
        _ => false,
    };
    let identity_jwt = identity_jwt(ctx, i, raw, &access, host.as_ref())?;
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
        api_keys,
        identity_jwt,
    })
}

/// `identity_jwt` and `identity_audience` of route `i`: only on a route
/// with an identity to sign; the audience a plain name or URL.
fn identity_jwt(
    ctx: &mut Ctx,
    i: usize,
    raw: &RawRoute,
    access: &Access,
    host: Option<&HostPattern>,
) -> Result<Option<IdentityAudience>, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let on = match &raw.identity_jwt {
        Some(v) if *v.get_ref() => {
            if *access == Access::Public {
                return Err(ctx.at(key("identity_jwt"), v, "a public route has no identity to sign"));
            }
            Some(v)
        }
        _ => None,
    };
    let Some(on) = on else {
        if let Some(a) = &raw.identity_audience {
            return Err(ctx.at(key("identity_audience"), a, "only used with identity_jwt = true"));
        }
        return Ok(None);
    };
    match &raw.identity_audience {
        Some(a) => {
            let aud = a.get_ref();
            if aud.is_empty() || aud.len() > 1024 || aud.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(ctx.at(
                    key("identity_audience"),
                    a,
                    "must be a name or URL without spaces or control characters, at most 1024 bytes",
                ));
            }
            Ok(Some(IdentityAudience::Fixed(aud.clone())))
        }
        None => {
            // The request's host is the client's to choose where the route
            // does not fix it: any host that reaches the route gets an
            // assertion for itself.
            if !matches!(host, Some(HostPattern::Exact(_))) {
                ctx.warn(
                    &key("identity_jwt"),
                    on.span(),
                    "the audience is the request's host name, which this route (no exact host) takes from the \
                     client: set identity_audience to the application's name",
                );
            }
            Ok(Some(IdentityAudience::RequestHost))
        }
    }
}

pub(in crate::config) fn return_param(
    ctx: &Ctx,
    key: &str,
    v: Option<&Spanned<String>>,
) -> Result<String, ConfigError> {
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

pub(in crate::config) fn absolute_url(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<String, ConfigError> {
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
