//! The upstream side: forwarding over porteiro's connection pools
//! ([`crate::proxy::upstream`]), header hygiene on the way in and out, protocol
//! upgrades, and the built-in `whoami` upstream.
//!
//! Bodies are streamed both ways: the client's request body goes upstream as
//! hyper hands it over, the upstream's answer is read from its connection as
//! the client takes it ([`crate::proxy::upstream::UpstreamBody`]).

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tracing::warn;

pub mod body;
pub mod upgrade;
pub mod upstream;

use crate::config::Upstream;
use crate::error::escape_html;
use crate::proxy::upgrade::UpgradeSlot;
pub use crate::proxy::upstream::UpstreamError;
use crate::proxy::upstream::{Connector, HOP_BY_HOP, HOP_BY_HOP_LENGTHS, Pool};
pub use body::Body;

/// What the proxy needs to know about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding {
    pub peer: IpAddr,
    /// The client reached porteiro over TLS.
    pub tls: bool,
    /// The peer is a trusted proxy: its `X-Forwarded-*` headers are kept.
    pub trusted: bool,
}

/// Header names porteiro sets itself, matched in every spelling an upstream
/// framework might fold together: any case, `_` or `.` for `-`.
#[derive(Debug, Clone)]
pub struct StripSet {
    names: Vec<Vec<u8>>,
    /// Bit `n % 64` is set when a name is `n` bytes long: most of a
    /// request's headers are skipped on their length alone.
    lengths: u64,
}

/// Headers that describe a client's path through proxies; believed only from
/// trusted proxies.
pub const FORWARDING_HEADERS: [&str; 8] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-real-ip",
    "forwarded",
];

/// Headers never forwarded, whoever sends them: IIS and Symfony let
/// `X-Original-URL` / `X-Rewrite-URL` override the path that was judged, and
/// `HTTP2-Settings` belongs to the `h2c` upgrade, which is never passed.
pub const NEVER_FORWARDED: [&str; 3] = ["x-original-url", "x-rewrite-url", "http2-settings"];

/// The upgrade protocols a route passes through (lower-case names).
#[derive(Debug, Clone)]
pub struct Upgrades(Vec<Vec<u8>>);

impl Upgrades {
    pub fn new(names: &[String]) -> Upgrades {
        Upgrades(names.iter().map(|n| n.to_ascii_lowercase().into_bytes()).collect())
    }

    /// Does every protocol in these `Upgrade` values (`name[/version]`, comma
    /// separated) pass? An upgrade to anything else is not an upgrade at all:
    /// the request goes upstream without it.
    fn allow<'a>(&self, values: impl Iterator<Item = &'a HeaderValue>) -> bool {
        let mut any = false;
        for value in values {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() {
                    continue;
                }
                let name = token.split(|b| *b == b'/').next().unwrap_or(token).trim_ascii();
                if !self.0.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                    return false;
                }
                any = true;
            }
        }
        any
    }
}

impl StripSet {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> StripSet {
        let mut names: Vec<Vec<u8>> = names.into_iter().map(|n| canonical(n.as_bytes())).collect();
        names.sort();
        names.dedup();
        let lengths = names.iter().fold(0, |bits, n| bits | length_bit(n.len()));
        StripSet { names, lengths }
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        self.lengths & length_bit(name.len()) != 0
            && self
                .names
                .iter()
                .any(|n| n.len() == name.len() && n.iter().zip(name).all(|(a, b)| *a == canonical_byte(*b)))
    }

    /// Removes every header in the set (all values, all spellings).
    pub fn strip(&self, headers: &mut HeaderMap) {
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            if self.matches(name.as_str().as_bytes()) {
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// The headers porteiro adds to a request it forwards (forwarding, request
/// id, identity), already in wire form (`name: value\r\n` each), written to
/// the upstream after the client's own. Every client copy of them was
/// stripped, so they are not inserted into the client's header map: each
/// insert hashes the name and probes, and the map outgrows the client's
/// headers and rehashes all of them. Kept as bytes, they cost one buffer:
/// no value is cloned, built or dropped per header.
#[derive(Debug, Default)]
pub struct Added {
    wire: Vec<u8>,
}

/// Room for a typical added header (an address, a request id, an email).
const ADDED_LINE: usize = 48;

impl Added {
    /// Room for about `n` headers.
    pub fn with_capacity(n: usize) -> Added {
        Added { wire: Vec::with_capacity(n * ADDED_LINE) }
    }

    /// Adds a header; the name must be one the request was stripped of.
    /// Framing headers are porteiro's to write from the body it sends, never
    /// an added one's.
    pub fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.push_with(name, |wire| wire.extend_from_slice(value.as_bytes()));
    }

    /// Adds a header whose value `write` appends; it must append only bytes
    /// a [`HeaderValue`] may hold (no CR, LF or NUL).
    fn push_with(&mut self, name: &HeaderName, write: impl FnOnce(&mut Vec<u8>)) {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return;
        }
        self.wire.extend_from_slice(name.as_str().as_bytes());
        self.wire.extend_from_slice(b": ");
        write(&mut self.wire);
        self.wire.extend_from_slice(b"\r\n");
    }

    /// The headers in wire form, one `name: value\r\n` each.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Each header's name and value, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.wire.split(|b| *b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            // Names hold no colon; the first ": " ends the name.
            let at = line.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&line[..at]).ok()?;
            Some((name, line.get(at + 2..).unwrap_or_default()))
        })
    }

    /// The value of `name`, if added.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name.as_str()).map(|(_, v)| v)
    }
}

fn length_bit(len: usize) -> u64 {
    1 << (len % 64)
}

fn canonical_byte(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

fn canonical(name: &[u8]) -> Vec<u8> {
    name.iter().map(|b| canonical_byte(*b)).collect()
}

/// Bit of `Upgrade` in the mask `remove_hop_by_hop` builds; bits 0..8 are
/// the entries of [`HOP_BY_HOP`], bit 0 being `Connection`.
const UPGRADE_BIT: u16 = 1 << HOP_BY_HOP.len();

/// Removes hop-by-hop headers and those named in `Connection` from a
/// client's request. Returns true when it asks for a protocol upgrade that
/// `upgrades` allows, in which case `Connection: upgrade` and `Upgrade` are
/// kept; any other `Upgrade` is dropped. (Answers lose
/// theirs as they are parsed: [`crate::proxy::upstream`].)
///
/// Runs on every proxied request. It first notes which hop-by-hop names are
/// present in one pass over the names; most requests have none, or only
/// `Connection`, so this spares a hash lookup per name in the list.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrades: &Upgrades) -> bool {
    let mut present: u16 = 0;
    for name in headers.keys() {
        if HOP_BY_HOP_LENGTHS & length_bit(name.as_str().len()) == 0 {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if name == header::UPGRADE {
            present |= UPGRADE_BIT;
        }
    }
    if present == 0 {
        return false;
    }
    let mut upgrade = false;
    if present & 1 != 0 {
        // Every `Connection` line counts: a client may split the list. Read
        // as bytes: the usual value is a lone `keep-alive` or `close`.
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    // (`Keep-Alive` is removed below with the other hop-by-hop
                    // headers: skipping it spares building, and allocating, a
                    // header name per message.)
                    if let Ok(name) = HeaderName::from_bytes(token) {
                        listed.push(name);
                    }
                }
            }
        }
        for name in listed {
            if name != header::UPGRADE {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    // Nothing above removes `Upgrade`, so the mask still tells.
    upgrade &= present & UPGRADE_BIT != 0 && upgrades.allow(headers.get_all(header::UPGRADE).iter());
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & UPGRADE_BIT != 0 {
        headers.remove(header::UPGRADE);
    }
    upgrade
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The forwarding headers porteiro sets on every forwarded request
/// (extending a trusted proxy's): stripped from every client's request.
pub const SET_FORWARDING: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Rewrites a client's request headers for the upstream: hop-by-hop gone,
/// headers porteiro sets stripped (forwarding headers too, unless the peer is
/// trusted), then `X-Forwarded-For/-Proto/-Host` added. `host` is the host the
/// client asked for (Host or :authority). Returns whether the request asks for
/// an upgrade.
///
/// Runs on every proxied request: it allocates nothing of its own but, from
/// trusted proxies, the joined prior chain (the added headers go into
/// `added`'s buffer).
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    host: Option<&HeaderValue>,
    fwd: &Forwarding,
    strip: &StripSet,
    upgrades: &Upgrades,
    added: &mut Added,
) -> bool {
    let upgrade = remove_hop_by_hop(headers, upgrades);
    let prior_for = if fwd.trusted { joined(headers, &X_FORWARDED_FOR) } else { None };
    let prior_proto = if fwd.trusted { headers.get(X_FORWARDED_PROTO).cloned() } else { None };
    let prior_host = if fwd.trusted { headers.get(X_FORWARDED_HOST).cloned() } else { None };
    // (Both sets hold the three X-Forwarded-* set below: read first from a
    // trusted proxy, replaced by what follows.)
    strip.strip(headers);

    added.push_with(&X_FORWARDED_FOR, |wire| {
        if let Some(prior) = prior_for {
            wire.extend_from_slice(prior.as_bytes());
            wire.extend_from_slice(b", ");
        }
        push_ip(wire, fwd.peer);
    });
    match prior_proto {
        Some(proto) => added.push(&X_FORWARDED_PROTO, &proto),
        None => added.push_with(&X_FORWARDED_PROTO, |wire| {
            wire.extend_from_slice(if fwd.tls { b"https" } else { b"http" });
        }),
    }
    if let Some(h) = prior_host.as_ref().or(host) {
        added.push(&X_FORWARDED_HOST, h);
    }
    upgrade
}

/// Appends `ip` as text. IPv4 is written by hand: `Display` spends about a
/// thousand instructions on the four octets, a third of this function's cost.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b".");
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10].map(|d| b'0' + d);
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                out.extend_from_slice(&digits[skip..]);
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let s = v.to_str().ok()?;
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_string()),
        }
    }
    out
}

/// Where one route sends its traffic.
#[derive(Clone)]
pub enum Target {
    /// An upstream server, through its connection pool.
    Http(Arc<Pool>),
    Whoami,
}

/// Forwards requests to upstreams; one per gateway.
pub struct Proxy {
    connector: Connector,
    timeout: Duration,
    /// One connection pool per distinct upstream, shared by its routes.
    pools: Vec<Arc<Pool>>,
}

/// Upstream client settings.
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub tls: rustls::ClientConfig,
}

impl Proxy {
    pub fn new(settings: ProxySettings) -> Proxy {
        let connector = Connector::new(settings.tls, settings.connect_timeout);
        Proxy { connector, timeout: settings.timeout, pools: Vec::new() }
    }

    /// Where a route's requests go: `upstream`'s connection pool, shared
    /// with every route to the same `scheme://authority`.
    pub fn target(&mut self, upstream: &Upstream) -> Target {
        let (scheme, authority) = match upstream {
            Upstream::Http { scheme, authority } => (scheme, authority),
            Upstream::Whoami => return Target::Whoami,
        };
        let pool = match self.pools.iter().find(|p| p.is_for(scheme, authority)) {
            Some(pool) => pool.clone(),
            None => {
                let pool = Arc::new(Pool::new(scheme, authority, &self.connector));
                self.pools.push(pool.clone());
                pool
            }
        };
        Target::Http(pool)
    }

    /// Sends `req` (headers already prepared, `Host` set) to `upstream` and
    /// streams the answer back. `rewritten` is the normalised path when it
    /// differs from the request's. Returns the response and how long the
    /// upstream took to answer its head (connecting included).
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        added: Added,
        upstream: &Arc<Pool>,
        rewritten: Option<String>,
        upgrade: bool,
    ) -> Result<(Response<Body>, Duration), UpstreamError> {
        // Origin form (`/path?query`). An HTTP/1.1 client's URI already is,
        // unless the path was normalised; HTTP/2 and absolute-form URIs carry
        // a scheme and authority to drop.
        match rewritten {
            Some(mut path) => {
                if let Some(q) = req.uri().query() {
                    path.push('?');
                    path.push_str(q);
                }
                let pq = PathAndQuery::try_from(path).map_err(|_| UpstreamError::Request)?;
                *req.uri_mut() = Uri::from(pq);
            }
            None if req.uri().scheme().is_some() || req.uri().authority().is_some() => {
                let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(pq);
            }
            None => {}
        }
        // The listener puts a slot in every HTTP/1.1 request that asks to
        // upgrade; without one (HTTP/2) nothing is switched.
        let client_upgrade = if upgrade { req.extensions_mut().remove::<UpgradeSlot>() } else { None };

        let started = Instant::now();
        // The deadline from `started`: one clock read less per request.
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        // Boxed (under 1 KiB: mimalloc's fast path): every future above it
        // is copied as the request moves through porteiro, and is smaller
        // by this much.
        let mut resp = match Box::pin(tokio::time::timeout_at(deadline, upstream.send(req, added))).await {
            Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            Ok(result) => result?,
        };
        let elapsed = started.elapsed();

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // An upstream may not switch protocols nobody asked for.
            let (Some(client_side), Some(upstream_side)) = (client_upgrade, resp.body_mut().take_upgraded()) else {
                return Err(UpstreamError::Request);
            };
            client_side.fill(upstream_side);
            return Ok((resp.map(|_| Body::empty()), elapsed));
        }
        Ok((resp.map(Body::from), elapsed))
    }
}

/// The rustls client config for `https` upstreams: system roots plus an
/// optional CA file.
pub fn upstream_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("server.upstream_ca_file: cannot read {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("server.upstream_ca_file: no certificates in {}", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("server.upstream_ca_file: bad certificate in {}: {e}", path.display()))?;
        }
    } else if added == 0 {
        warn!("no system CA certificates found: https upstreams will fail unless server.upstream_ca_file is set");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The built-in `whoami` upstream: shows the request as an upstream would
/// receive it. Identity headers (those in `identity`) are highlighted.
pub fn whoami(req: &Request<Incoming>, added: &Added, path: &str, identity: &StripSet) -> Response<Body> {
    let json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    let query = req.uri().query();
    let headers: Vec<(&str, String, bool)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .chain(added.iter())
        .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned(), identity.matches(k.as_bytes())))
        .collect();
    let mut resp = if json {
        let list: Vec<serde_json::Value> = headers.iter().map(|(k, v, _)| serde_json::json!([k, v])).collect();
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "path": path,
            "query": query,
            "version": format!("{:?}", req.version()),
            "headers": list,
        });
        let mut r = Response::new(Body::full(body.to_string()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    } else {
        let mut rows = String::new();
        for (k, v, id) in &headers {
            let class = if *id { " class=\"id\"" } else { "" };
            rows.push_str(&format!("<tr{class}><th>{}</th><td>{}</td></tr>\n", escape_html(k), escape_html(v)));
        }
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>porteiro whoami</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}\
             th{{text-align:left;padding-right:1em;font-family:monospace}}td{{font-family:monospace;word-break:break-all}}\
             tr.id{{background:#fff3bf}}</style></head><body>\
             <h1>whoami</h1><p>What an upstream behind porteiro receives. Identity headers set by porteiro are highlighted.</p>\
             <p><code>{} {}{}</code></p><table>\n{rows}</table></body></html>\n",
            escape_html(req.method().as_str()),
            escape_html(path),
            query.map(|q| format!("?{}", escape_html(q))).unwrap_or_default(),
        );
        let mut r = Response::new(Body::full(page));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        r
    };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(trusted: bool) -> Forwarding {
        Forwarding { peer: IpAddr::from([10, 0, 0, 7]), tls: false, trusted }
    }

    fn ws() -> Upgrades {
        Upgrades::new(&["websocket".to_string()])
    }

    fn strip() -> StripSet {
        StripSet::new(FORWARDING_HEADERS.iter().copied().chain(["x-forwarded-user", "x-forwarded-email"]))
    }

    /// As the gateway strips a trusted proxy's request: what porteiro sets.
    fn strip_trusted() -> StripSet {
        StripSet::new(SET_FORWARDING.iter().copied().chain(["x-forwarded-user", "x-forwarded-email"]))
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(!remove_hop_by_hop(&mut h, &ws()));
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
    }

    #[test]
    fn hop_by_hop_removed_without_connection_header() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(!remove_hop_by_hop(&mut h, &ws()));
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);

        let mut none = HeaderMap::new();
        none.insert(header::HOST, HeaderValue::from_static("a.test"));
        assert!(!remove_hop_by_hop(&mut none, &ws()));
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn every_connection_line_counts() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-second-line"));
        h.insert("x-second-line", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, &ws());
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
    }

    #[test]
    fn the_length_prefilter_passes_every_hop_by_hop_name() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            assert_ne!(HOP_BY_HOP_LENGTHS & length_bit(name.as_str().len()), 0, "{name}");
        }
        let set = strip();
        for name in FORWARDING_HEADERS.iter().chain(&["x-forwarded-user", "x-forwarded-email"]) {
            assert!(set.matches(name.as_bytes()), "{name}");
            assert!(set.matches(name.to_ascii_uppercase().replace('-', "_").as_bytes()), "{name}");
        }
        for other in ["host", "accept-language", "x-forwarded-fox", "x-forwarded-for-", ""] {
            assert!(!set.matches(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn connection_close_is_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Close"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(!remove_hop_by_hop(&mut h, &ws()));
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
    }

    #[test]
    fn upgrade_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(remove_hop_by_hop(&mut h, &ws()));
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn only_listed_upgrades_pass() {
        let ask = |upgrade: &'static str, allowed: &Upgrades| {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, HTTP2-Settings"));
            h.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
            let passed = remove_hop_by_hop(&mut h, allowed);
            (passed, h.contains_key(header::UPGRADE), h.contains_key(header::CONNECTION))
        };
        assert_eq!(ask("h2c", &ws()), (false, false, false));
        assert_eq!(ask("websocket, h2c", &ws()), (false, false, false));
        assert_eq!(ask("WebSocket", &ws()), (true, true, true));
        assert_eq!(ask("", &ws()), (false, false, false));
        let tls = Upgrades::new(&["websocket".to_string(), "tls".to_string()]);
        assert_eq!(ask("TLS/1.2, websocket", &tls), (true, true, true));
        assert_eq!(ask("TLS/1.2", &ws()), (false, false, false));
    }

    #[test]
    fn untrusted_peer_cannot_forge_forwarding_or_identity() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x_forwarded_user", HeaderValue::from_static("admin"));
        h.insert("X.Forwarded.Email", HeaderValue::from_static("admin@x"));
        h.append("x-forwarded-user", HeaderValue::from_static("a"));
        h.append("x-forwarded-user", HeaderValue::from_static("b"));
        let mut added = Added::default();
        let host = HeaderValue::from_static("app.test");
        prepare_request_headers(&mut h, Some(&host), &fwd(false), &strip(), &ws(), &mut added);
        for name in SET_FORWARDING {
            assert!(!h.contains_key(name), "{name}: the client's copy is gone");
        }
        assert_eq!(added.get(&X_FORWARDED_FOR).unwrap(), b"10.0.0.7");
        assert_eq!(added.get(&X_FORWARDED_PROTO).unwrap(), b"http");
        assert_eq!(added.get(&X_FORWARDED_HOST).unwrap(), b"app.test");
        assert_eq!(added.iter().count(), 3);
        assert!(!h.contains_key("x_forwarded_user"));
        assert!(!h.contains_key("x.forwarded.email"));
        assert!(!h.contains_key("x-forwarded-user"));
    }

    #[test]
    fn added_headers_are_kept_in_wire_form() {
        let mut added = Added::with_capacity(4);
        added.push(&HeaderName::from_static("x-request-id"), &HeaderValue::from_static("abc"));
        // A value may hold colons and ": "; only the name ends at the first.
        added.push(&HeaderName::from_static("x-forwarded-user"), &HeaderValue::from_static("urn:a: b"));
        // Framing is porteiro's to write, from the body it sends.
        added.push(&header::CONTENT_LENGTH, &HeaderValue::from_static("5"));
        added.push(&header::TRANSFER_ENCODING, &HeaderValue::from_static("chunked"));
        added.push(&HeaderName::from_static("x-forwarded-groups"), &HeaderValue::from_static(""));
        assert_eq!(added.wire(), b"x-request-id: abc\r\nx-forwarded-user: urn:a: b\r\nx-forwarded-groups: \r\n");
        let all: Vec<(&str, &[u8])> = added.iter().collect();
        assert_eq!(
            all,
            [("x-request-id", &b"abc"[..]), ("x-forwarded-user", b"urn:a: b"), ("x-forwarded-groups", b"")]
        );
        assert_eq!(added.get(&HeaderName::from_static("x-forwarded-user")), Some(&b"urn:a: b"[..]));
        assert_eq!(added.get(&header::CONTENT_LENGTH), None);
        assert_eq!(Added::default().iter().count(), 0);
    }

    #[test]
    fn ip_text_matches_display() {
        let ips: [IpAddr; 6] = [
            IpAddr::from([0, 0, 0, 0]),
            IpAddr::from([255, 255, 255, 255]),
            IpAddr::from([10, 0, 99, 100]),
            IpAddr::from([1, 20, 109, 9]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]),
            IpAddr::from([0x2001u16, 0xdb8, 0, 0, 0, 0, 0, 7]),
        ];
        for ip in ips {
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(&out[..], ip.to_string().as_bytes());
        }
    }

    #[test]
    fn ipv6_peer_in_forwarded_for() {
        let mut h = HeaderMap::new();
        let fwd = Forwarding { peer: "2001:db8::7".parse().unwrap_or(IpAddr::from([0; 4])), tls: true, trusted: false };
        let mut added = Added::default();
        prepare_request_headers(&mut h, None, &fwd, &strip(), &ws(), &mut added);
        assert_eq!(added.get(&X_FORWARDED_FOR).unwrap(), b"2001:db8::7");
        assert_eq!(added.get(&X_FORWARDED_PROTO).unwrap(), b"https");
        assert!(added.get(&X_FORWARDED_HOST).is_none());
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("public.example"));
        h.insert("x-forwarded-port", HeaderValue::from_static("443"));
        let mut added = Added::default();
        let host = HeaderValue::from_static("internal:8080");
        prepare_request_headers(&mut h, Some(&host), &fwd(true), &strip_trusted(), &ws(), &mut added);
        assert_eq!(added.get(&X_FORWARDED_FOR).unwrap(), b"1.2.3.4, 5.6.7.8, 10.0.0.7");
        assert_eq!(added.get(&X_FORWARDED_PROTO).unwrap(), b"https");
        assert_eq!(added.get(&X_FORWARDED_HOST).unwrap(), b"public.example");
        // Replaced, not sent twice; the proxy's other forwarding headers stay.
        for name in SET_FORWARDING {
            assert!(!h.contains_key(name), "{name}");
        }
        assert_eq!(h["x-forwarded-port"], "443");
    }
}
