//! The access log (DESIGN §9): one line per answered request, target
//! `porteiro::access`, written when the answer's head is ready. Fields:
//! `request_id`, `client`, `method`, `host`, `path` (never the query),
//! `status`, `route`, `auth`, `user`, `upstream_ms`, `bytes` (the answer's
//! length when known at that moment: porteiro's own answers and upstream
//! answers with a `Content-Length`; `-` for a streamed chunked answer).
//! Nothing here allocates: values are written by the log formatter.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri, header};
use ipnet::IpNet;

use crate::auth::Identity;

/// How the request was let through, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Auth {
    /// Not decided by a route (porteiro's own endpoints): `public`, or the
    /// answer's refusal reason.
    #[default]
    Undecided,
    Public,
    Session,
    /// An expired session, renewed at its OpenID provider on this request.
    Refreshed,
    Bearer,
    ApiKey,
    Refused(&'static str),
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Undecided | Auth::Public => f.write_str("public"),
            Auth::Session => f.write_str("session"),
            Auth::Refreshed => f.write_str("session_refreshed"),
            Auth::Bearer => f.write_str("bearer"),
            Auth::ApiKey => f.write_str("api_key"),
            Auth::Refused(reason) => write!(f, "refused:{reason}"),
        }
    }
}

/// What the phases learn about a request for its access-log line.
#[derive(Default)]
pub(crate) struct Note<'g> {
    pub route: Option<&'g str>,
    pub auth: Auth,
    pub user: Option<Arc<Identity>>,
    pub upstream: Option<Duration>,
}

/// On a login's answer: who was signed in (not a route's identity).
#[derive(Debug, Clone)]
pub(crate) struct SignedInAs(pub String);

/// The request as the access log shows it, kept before the request moves on.
pub(crate) struct Line {
    pub client: IpAddr,
    pub method: Method,
    pub uri: Uri,
    pub host: Option<http::HeaderValue>,
}

impl Line {
    pub fn of(headers: &HeaderMap, method: &Method, uri: &Uri, client: IpAddr) -> Line {
        Line { client, method: method.clone(), uri: uri.clone(), host: headers.get(header::HOST).cloned() }
    }

    /// Writes the line for `resp`.
    pub fn write<B: http_body::Body>(self, id: &str, resp: &mut http::Response<B>, note: Note<'_>) {
        let refused = resp.extensions_mut().remove::<crate::error::Refused>();
        let signed_in = resp.extensions_mut().remove::<SignedInAs>();
        let auth = match (note.auth, refused) {
            (Auth::Undecided, Some(r)) => Auth::Refused(r.0),
            (auth, _) => auth,
        };
        let user = note.user.as_deref().map(|i| i.sub.as_str()).or(signed_in.as_ref().map(|s| s.0.as_str()));
        // A host of anything but visible ASCII is left out (it was refused,
        // and a space or quote in it would make the line ambiguous).
        let host = self
            .host
            .as_ref()
            .map(|h| h.as_bytes())
            .or_else(|| self.uri.authority().map(|a| a.as_str().as_bytes()))
            .filter(|h| h.iter().all(u8::is_ascii_graphic))
            .and_then(|h| std::str::from_utf8(h).ok());
        tracing::info!(
            target: crate::log_batch::ACCESS_TARGET,
            request_id = id,
            client = %Addr(self.client),
            method = %self.method,
            host = host.unwrap_or("-"),
            path = self.uri.path(),
            status = resp.status().as_u16(),
            route = note.route.unwrap_or("-"),
            auth = %auth,
            user = user.unwrap_or("-"),
            upstream_ms = %Millis(note.upstream),
            bytes = %Dash(resp.body().size_hint().exact()),
        );
    }
}

/// Milliseconds with microsecond precision (rounded), or `-`. Integer
/// digits: formatting a float cost more than the rest of the line's values.
struct Millis(Option<Duration>);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = self.0 else { return f.write_str("-") };
        let micros = (d.as_nanos() + 500) / 1000;
        f.write_str(itoa::Buffer::new().format(micros / 1000))?;
        // Three digits: `micros % 1000` is below 1000.
        let frac = u16::try_from(micros % 1000).unwrap_or(0);
        let digits = [b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

struct Dash(Option<u64>);

impl fmt::Display for Dash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => f.write_str(itoa::Buffer::new().format(n)),
            None => f.write_str("-"),
        }
    }
}

/// An address as `Display` writes it; IPv4 by hand (`Display` spends about
/// a thousand instructions on the four octets).
struct Addr(IpAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let IpAddr::V4(v4) = self.0 else { return fmt::Display::fmt(&self.0, f) };
        let mut buf = itoa::Buffer::new();
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(buf.format(octet))?;
        }
        Ok(())
    }
}

/// The client's address: the peer, or when the peer is a trusted proxy the
/// nearest address in `X-Forwarded-For` that is not one (read right to
/// left, every header line in order). An entry that is not an address ends
/// the walk at the last address believed.
pub(crate) fn client_addr(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = line.to_str() else { return client };
        for entry in text.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else { return client };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", l.parse().unwrap());
        }
        h
    }

    #[test]
    fn values_are_written_as_display_and_float_formatting_would() {
        for ip in ["0.0.0.0", "255.255.255.255", "10.0.99.100", "1.20.109.9", "::ffff:1.2.3.4", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(Addr(ip).to_string(), ip.to_string());
        }
        for nanos in [0u64, 1, 499, 500, 1_499, 1_500, 999_499, 999_500, 1_234_567, 12_345_678_901, 86_400_000_000_000]
        {
            let d = Duration::from_nanos(nanos);
            let float = format!("{:.3}", d.as_secs_f64() * 1000.0);
            let ours = Millis(Some(d)).to_string();
            // Rounded at the microsecond as the float was (ties aside, where
            // the float's binary value decides).
            let (a, b): (f64, f64) = (ours.parse().unwrap(), float.parse().unwrap());
            assert!((a - b).abs() <= 0.001 + 1e-9, "{nanos} ns: {ours} vs {float}");
            assert_eq!(ours.split_once('.').map(|(_, f)| f.len()), Some(3), "{ours}");
        }
        assert_eq!(Millis(Some(Duration::from_micros(1_250))).to_string(), "1.250");
        assert_eq!(Millis(None).to_string(), "-");
        assert_eq!(Dash(Some(1234)).to_string(), "1234");
        assert_eq!(Dash(None).to_string(), "-");
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.1.1.1");
        // An untrusted peer: its own address, whatever it claims.
        assert_eq!(client_addr(&xff(&["1.2.3.4"]), ip("9.9.9.9"), &trusted), ip("9.9.9.9"));
        assert_eq!(client_addr(&xff(&["1.2.3.4"]), proxy, &trusted), ip("1.2.3.4"));
        // A forged left part is not reached past an untrusted hop.
        assert_eq!(client_addr(&xff(&["6.6.6.6, 1.2.3.4, 10.2.2.2"]), proxy, &trusted), ip("1.2.3.4"));
        assert_eq!(client_addr(&xff(&["6.6.6.6", "1.2.3.4, 10.2.2.2"]), proxy, &trusted), ip("1.2.3.4"));
        // Only trusted hops: the leftmost; garbage: the last believed.
        assert_eq!(client_addr(&xff(&["10.3.3.3, 10.2.2.2"]), proxy, &trusted), ip("10.3.3.3"));
        assert_eq!(client_addr(&xff(&["junk, 10.2.2.2"]), proxy, &trusted), ip("10.2.2.2"));
        assert_eq!(client_addr(&HeaderMap::new(), proxy, &trusted), proxy);
        assert_eq!(client_addr(&xff(&["2001:db8::1"]), proxy, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn auth_words() {
        assert_eq!(Auth::Refused("expired").to_string(), "refused:expired");
        assert_eq!(Auth::Undecided.to_string(), "public");
        assert_eq!(Auth::Session.to_string(), "session");
    }
}
