//! The route table, compiled once at load: (host, path) -> route.
//!
//! Host first, path second, as nginx does: routes for the exact host are
//! tried, then `*.suffix` routes (longest suffix first), then routes without
//! a host. Within a group the longest matching `path_prefix` wins. A prefix
//! matches on segment boundaries: `/api` matches `/api` and `/api/x`, not
//! `/apix`; a prefix ending in `/` matches everything below it.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::HostPattern;

pub struct RouteTable<R> {
    exact: HashMap<String, Vec<(String, R)>>,
    suffix: Vec<(String, Vec<(String, R)>)>,
    any: Vec<(String, R)>,
}

impl<R> RouteTable<R> {
    /// Builds the table; entries keep their relative order among equal prefixes
    /// (the first configured wins).
    pub fn new(entries: impl IntoIterator<Item = (Option<HostPattern>, String, R)>) -> RouteTable<R> {
        let mut exact: HashMap<String, Vec<(String, R)>> = HashMap::new();
        let mut suffix: Vec<(String, Vec<(String, R)>)> = Vec::new();
        let mut any = Vec::new();
        for (host, prefix, route) in entries {
            match host {
                None => any.push((prefix, route)),
                Some(HostPattern::Exact(h)) => exact.entry(h).or_default().push((prefix, route)),
                Some(HostPattern::Suffix(s)) => match suffix.iter_mut().find(|(x, _)| *x == s) {
                    Some((_, group)) => group.push((prefix, route)),
                    None => suffix.push((s, vec![(prefix, route)])),
                },
            }
        }
        let by_prefix_len = |g: &mut Vec<(String, R)>| g.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        exact.values_mut().for_each(by_prefix_len);
        suffix.iter_mut().for_each(|(_, g)| by_prefix_len(g));
        suffix.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        by_prefix_len(&mut any);
        RouteTable { exact, suffix, any }
    }

    /// The route for a request. `host` is the Host header or :authority, with
    /// or without port, any case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&R> {
        if let Some(host) = host.map(normalize_host) {
            if let Some(r) = self.exact.get(host.as_ref()).and_then(|g| in_group(g, path)) {
                return Some(r);
            }
            for (suffix, group) in &self.suffix {
                if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                    if let Some(r) = in_group(group, path) {
                        return Some(r);
                    }
                }
            }
        }
        in_group(&self.any, path)
    }
}

fn in_group<'a, R>(group: &'a [(String, R)], path: &str) -> Option<&'a R> {
    group.iter().find(|(prefix, _)| prefix_matches(prefix, path)).map(|(_, r)| r)
}

/// Segment-aware prefix match (see the module docs).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// Lower-case host without port or trailing dot; borrows when already clean.
/// A host as routes match it: without port or trailing dot, lower-case
/// (an IPv6 literal without its brackets).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let h = without_port.strip_suffix('.').unwrap_or(without_port);
    if h.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(h.to_ascii_lowercase()) } else { Cow::Borrowed(h) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        RouteTable::new([
            (None, "/".to_string(), "default"),
            (None, "/status/".to_string(), "status"),
            (None, "/api".to_string(), "api"),
            (Some(HostPattern::Exact("kb.example.com".into())), "/".to_string(), "kb"),
            (Some(HostPattern::Exact("kb.example.com".into())), "/admin".to_string(), "kb-admin"),
            (Some(HostPattern::Suffix(".example.com".into())), "/".to_string(), "wild"),
            (Some(HostPattern::Suffix(".eu.example.com".into())), "/".to_string(), "eu"),
            (Some(HostPattern::Exact("only-api.test".into())), "/v1".to_string(), "only-api"),
        ])
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.find(None, "/status/x"), Some(&"status"));
        assert_eq!(t.find(None, "/status"), Some(&"default"));
        assert_eq!(t.find(None, "/api"), Some(&"api"));
        assert_eq!(t.find(None, "/api/v1"), Some(&"api"));
        assert_eq!(t.find(None, "/apix"), Some(&"default"));
    }

    #[test]
    fn host_before_path() {
        let t = table();
        assert_eq!(t.find(Some("KB.example.com:443"), "/admin/x"), Some(&"kb-admin"));
        assert_eq!(t.find(Some("kb.example.com."), "/status/x"), Some(&"kb"));
        assert_eq!(t.find(Some("x.example.com"), "/"), Some(&"wild"));
        assert_eq!(t.find(Some("a.b.eu.example.com"), "/"), Some(&"eu"));
        assert_eq!(t.find(Some("example.com"), "/"), Some(&"default"));
        assert_eq!(t.find(Some("[::1]:8080"), "/api"), Some(&"api"));
    }

    #[test]
    fn host_group_without_match_falls_back() {
        let t = table();
        assert_eq!(t.find(Some("only-api.test"), "/other"), Some(&"default"));
        let empty: RouteTable<()> = RouteTable::new([]);
        assert_eq!(empty.find(Some("x"), "/"), None);
    }
}
