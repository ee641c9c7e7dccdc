//! Which URL a forward-auth caller asks about (DESIGN §5).
//!
//! Ingresses name the request they are about to serve in headers of their
//! own: nginx and ingress-nginx `X-Original-URL`; Traefik and Caddy
//! `X-Forwarded-Host` + `X-Forwarded-Uri`; Envoy's `ext_authz` appends the
//! original path to the check request's own (`/sso/auth/<path>`). They also
//! relay the client's headers, so any of these may come from the client.
//! The proxy overwrites the header it sets, never the others; so when a
//! request names its URL more than one way and the names differ, one of
//! them is the client's and the request is refused. A single name is the
//! calling proxy's.

/// The URL named: host (when one is named) and path with query, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedUrl {
    pub host: Option<String>,
    pub path: String,
    pub query: Option<String>,
}

/// Why no URL can be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    /// No header names a URL.
    Missing,
    /// A URL header is not a URL (or not UTF-8, or sent twice).
    Malformed,
    /// Two headers name different URLs.
    Conflict,
}

impl UrlProblem {
    pub fn reason(self) -> &'static str {
        match self {
            UrlProblem::Missing => "no_original_url",
            UrlProblem::Malformed => "bad_original_url",
            UrlProblem::Conflict => "conflicting_original_url",
        }
    }
}

/// The URL `headers` (and, for Envoy, `suffix`: the check request's
/// path-and-query after `{auth_prefix}/auth`) name.
pub fn asked_url(headers: &http::HeaderMap, suffix: Option<&str>) -> Result<AskedUrl, UrlProblem> {
    let mut hosts: Vec<&str> = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    if let Some(original) = one(headers, "x-original-url")? {
        if original.starts_with('/') {
            targets.push(original);
        } else {
            let (host, target) = split_absolute(original).ok_or(UrlProblem::Malformed)?;
            hosts.push(host);
            targets.push(target);
        }
    }
    for name in ["x-forwarded-uri", "x-original-uri"] {
        if let Some(uri) = one(headers, name)? {
            targets.push(uri);
        }
    }
    if let Some(s) = suffix {
        targets.push(s);
    }
    if let Some(h) = one(headers, "x-forwarded-host")? {
        hosts.push(h);
    }
    let target = *targets.first().ok_or(UrlProblem::Missing)?;
    if targets.iter().any(|t| *t != target) || hosts.iter().any(|h| !h.eq_ignore_ascii_case(hosts[0])) {
        return Err(UrlProblem::Conflict);
    }
    if !target.starts_with('/') {
        return Err(UrlProblem::Malformed);
    }
    // The hop to porteiro's own `Host` names the original host only when
    // nothing else does (Envoy keeps the client's `:authority`).
    let host = match hosts.first() {
        Some(h) => Some(*h),
        None => one(headers, "host")?,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    Ok(AskedUrl { host: host.map(str::to_string), path: path.to_string(), query })
}

/// The one value of header `name`: several lines, or one that is empty or
/// not UTF-8, are malformed.
fn one<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, UrlProblem> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(UrlProblem::Malformed);
    }
    match std::str::from_utf8(value.as_bytes()) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s)),
        _ => Err(UrlProblem::Malformed),
    }
}

/// `http[s]://authority[/path][?query]` -> (authority, path-and-query), the
/// path taken as sent (a URL library would resolve it first, and the judged
/// path would then not be the upstream's). The authority is validated by
/// the caller, as any host.
fn split_absolute(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(authority_end);
    if authority.is_empty() || target.starts_with('?') || target.contains('#') {
        return None;
    }
    Some((authority, if target.is_empty() { "/" } else { target }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ask(lines: &[(&'static str, &'static str)], suffix: Option<&str>) -> Result<AskedUrl, UrlProblem> {
        let mut h = http::HeaderMap::new();
        for (n, v) in lines {
            h.append(*n, HeaderValue::from_static(v));
        }
        asked_url(&h, suffix)
    }

    fn url(host: Option<&str>, path: &str, query: Option<&str>) -> Result<AskedUrl, UrlProblem> {
        Ok(AskedUrl { host: host.map(str::to_string), path: path.to_string(), query: query.map(str::to_string) })
    }

    #[test]
    fn each_proxy_style() {
        let nginx = ask(&[("host", "porteiro"), ("x-original-url", "https://kb.test/a/../b?x=1")], None);
        assert_eq!(nginx, url(Some("kb.test"), "/a/../b", Some("x=1")));
        let traefik = ask(&[("x-forwarded-host", "kb.test"), ("x-forwarded-uri", "/r/x")], None);
        assert_eq!(traefik, url(Some("kb.test"), "/r/x", None));
        let envoy = ask(&[("host", "kb.test:8443")], Some("/r/x?y"));
        assert_eq!(envoy, url(Some("kb.test:8443"), "/r/x", Some("y")));
        let relative = ask(&[("host", "kb.test"), ("x-original-url", "/r")], None);
        assert_eq!(relative, url(Some("kb.test"), "/r", None));
    }

    #[test]
    fn a_second_name_must_agree() {
        // Caddy sets X-Forwarded-Uri and relays the client's X-Original-URL.
        let caddy = ask(&[("x-original-url", "/app/x"), ("x-forwarded-uri", "/restricted/x")], None);
        assert_eq!(caddy, Err(UrlProblem::Conflict));
        let host = ask(&[("x-original-url", "http://a.test/x"), ("x-forwarded-host", "b.test")], None);
        assert_eq!(host, Err(UrlProblem::Conflict));
        let envoy = ask(&[("x-forwarded-uri", "/public")], Some("/admin"));
        assert_eq!(envoy, Err(UrlProblem::Conflict));
        let same = ask(
            &[("x-original-url", "http://A.test/x"), ("x-forwarded-host", "a.TEST"), ("x-forwarded-uri", "/x")],
            None,
        );
        assert_eq!(same, url(Some("A.test"), "/x", None));
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(ask(&[("host", "a")], None), Err(UrlProblem::Missing));
        assert_eq!(ask(&[("x-original-url", "ftp://a/x")], None), Err(UrlProblem::Malformed));
        assert_eq!(ask(&[("x-original-url", "https:///x")], None), Err(UrlProblem::Malformed));
        assert_eq!(ask(&[("x-original-url", "x")], None), Err(UrlProblem::Malformed));
        assert_eq!(ask(&[("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/a")], None), Err(UrlProblem::Malformed));
        assert_eq!(ask(&[("x-forwarded-uri", "")], None), Err(UrlProblem::Malformed));
        assert_eq!(ask(&[("x-forwarded-uri", "a/b")], None), Err(UrlProblem::Malformed));
    }
}
