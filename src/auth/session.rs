//! The browser session: an [`Identity`] sealed into a cookie.
//!
//! A sealed identity too large for one cookie (big group lists) is split
//! into `name_0`, `name_1`, ... up to [`MAX_CHUNKS`]; an identity that does
//! not fit even then fails the login with a clear error rather than
//! producing cookies browsers would drop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::HeaderValue;
use http::header::{self, HeaderMap};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use super::seal::{Purpose, Sealer};
use crate::config::SessionConfig;

/// Longest cookie value porteiro writes; browsers keep at least 4096 bytes
/// per cookie including name and attributes.
const CHUNK_BYTES: usize = 3800;
/// Most cookies one session may span.
pub const MAX_CHUNKS: usize = 5;

/// Most cookies of the session's own name tried on one request.
const MAX_NAMESAKES: usize = 4;
/// Bytes of sealed cookies (and their identities) kept opened.
const OPENED_BYTES: u64 = 32 * 1024 * 1024;
/// An opened session not seen for this long is forgotten.
const OPENED_IDLE: Duration = Duration::from_secs(10 * 60);

/// Who a signed-in user is, as porteiro carries it in the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Random session id, the handle for revocation.
    pub sid: String,
    /// Provider id that signed the user in.
    pub provider: String,
    /// Stable user id (the token's `userid`/`sub`, else the email).
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Claims kept for header mapping and `allow.claims` (arrays as lists).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<String>>,
    /// The OpenID provider's session id (`sid` claim), for back-channel
    /// logout and the session index.
    #[serde(default, rename = "osid", skip_serializing_if = "Option::is_none")]
    pub oidc_sid: Option<String>,
    /// A refreshable OpenID Connect session (`refresh = true`): until this
    /// time (unix seconds, login + `max_session_minutes`) an expired
    /// session may be renewed with the refresh token kept for it in the
    /// store; the cookie lives as long. `None`: the session ends at `exp`.
    #[serde(default, rename = "ru", skip_serializing_if = "Option::is_none")]
    pub renew_until: Option<u64>,
    /// Unix seconds.
    pub iat: u64,
    pub exp: u64,
    /// Derived: the identity header values, made once per identity, which a
    /// cached session or token shares across all its requests.
    #[serde(skip)]
    pub header_values: HeaderValues,
}

/// The values of the user, email, preferred-username and groups headers,
/// and the signed identity header last made for the identity.
/// Derived data: it takes no part in comparing identities.
#[derive(Default)]
pub struct HeaderValues {
    plain: OnceLock<[Option<HeaderValue>; 4]>,
    /// Kept with the identity a cached session shares across its requests,
    /// so those requests neither hash its claims nor look it up again.
    assertion: Mutex<Option<Arc<Assertion>>>,
}

/// A signed identity header made by one signer (an instance: a reload
/// makes a new one, whose key may differ) for one audience, and when it is
/// due to be made again (unix seconds).
#[derive(Debug)]
pub struct Assertion {
    pub signer: u64,
    pub audience: Box<str>,
    pub value: HeaderValue,
    pub refresh_at: u64,
}

impl HeaderValues {
    fn get(&self, id: &Identity) -> &[Option<HeaderValue>; 4] {
        self.plain.get_or_init(|| {
            let groups = (!id.groups.is_empty()).then(|| id.groups.join(","));
            [Some(id.sub.as_str()), id.email.as_deref(), id.username.as_deref(), groups.as_deref()]
                .map(|v| v.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()))
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Assertion>>> {
        // A value, not an invariant: whatever a panicking holder left is fine.
        self.assertion.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A copy starts without the kept assertion: a copy is made to be changed
/// (an API key's identity from its owner's), and a changed identity must
/// not hand out an assertion of the one it came from.
impl Clone for HeaderValues {
    fn clone(&self) -> HeaderValues {
        HeaderValues { plain: self.plain.clone(), assertion: Mutex::default() }
    }
}

impl Identity {
    /// The signed identity header last made for this identity, if `signer`
    /// made it for `audience` and it is not due at `now`.
    pub fn made_assertion(&self, signer: u64, audience: &str, now: u64) -> Option<HeaderValue> {
        let slot = self.header_values.slot();
        slot.as_ref()
            .filter(|a| a.signer == signer && &*a.audience == audience && now < a.refresh_at)
            .map(|a| a.value.clone())
    }

    /// Keeps `assertion` with the identity (replacing the one before).
    pub fn keep_assertion(&self, assertion: Arc<Assertion>) {
        *self.header_values.slot() = Some(assertion);
    }
}

impl PartialEq for HeaderValues {
    fn eq(&self, _: &HeaderValues) -> bool {
        true
    }
}

impl Eq for HeaderValues {}

impl std::fmt::Debug for HeaderValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderValues")
    }
}

impl Identity {
    /// The user, email, preferred-username and groups (comma-joined) header
    /// values; `None` where absent or not representable.
    pub fn header_values(&self) -> &[Option<HeaderValue>; 4] {
        self.header_values.get(self)
    }
    /// Every value that may become an upstream header must be a clean header
    /// value: no CR, LF, NUL or other control characters.
    pub fn check_header_safe(&self) -> Result<(), &'static str> {
        let clean = |s: &str| !s.bytes().any(|b| b < 0x20 || b == 0x7f);
        let fields = [Some(self.sub.as_str()), self.name.as_deref(), self.email.as_deref(), self.username.as_deref()];
        if !fields.iter().flatten().all(|s| clean(s)) {
            return Err("identity contains control characters");
        }
        if !self.groups.iter().all(|g| clean(g) && !g.contains(',')) {
            return Err("group names contain control characters or commas");
        }
        if !self.claims.values().flatten().all(|v| clean(v)) {
            return Err("claim values contain control characters");
        }
        Ok(())
    }
}

/// Which sessions a read accepts.
#[derive(Clone, Copy)]
enum Wanted {
    /// Not expired.
    Valid,
    /// Expired, but still renewable.
    Renewable,
}

/// Reads and writes the session cookie(s).
pub struct SessionCookies {
    name: String,
    domain: Option<String>,
    secure: bool,
    validity: Duration,
    sealer: Sealer,
    /// Sessions already opened, by their whole sealed value: a browser sends
    /// the same cookie on every request, and a hit skips the AEAD open and
    /// the JSON decode. Only cookies that opened are kept, so garbage cannot
    /// fill it; `exp` is still checked on every hit, and revocation by the
    /// caller.
    opened: Cache<Arc<str>, Arc<Identity>, foldhash::fast::RandomState>,
}

impl SessionCookies {
    /// `None` when no `session.secret` is configured.
    pub fn new(config: &SessionConfig, secure: bool) -> Option<SessionCookies> {
        let secret = config.secret.as_ref()?;
        Some(SessionCookies {
            name: config.cookie_name.clone(),
            domain: config.cookie_domain.clone(),
            secure,
            validity: config.validity,
            sealer: Sealer::new(secret, &config.previous_secrets, Purpose::Session),
            opened: Cache::builder()
                .max_capacity(OPENED_BYTES)
                // The identity's share is roughly its sealed size again.
                .weigher(|sealed: &Arc<str>, _| u32::try_from(sealed.len() * 2).unwrap_or(u32::MAX))
                .time_to_idle(OPENED_IDLE)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Is `cookie` one of ours (the session or one of its chunks)?
    pub fn owns(&self, cookie: &str) -> bool {
        match cookie.strip_prefix(self.name.as_str()) {
            Some("") => true,
            Some(rest) => rest.strip_prefix('_').is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit()),
            None => false,
        }
    }

    /// The identity in the request's cookies, if any, still valid at `now`.
    /// Tampered, truncated, foreign or expired cookies are "no session".
    /// Several cookies may carry the session's name (a sibling subdomain can
    /// set one beside porteiro's): the first that opens wins, so a junk one
    /// cannot shadow a real session.
    pub fn read(&self, headers: &HeaderMap, now: u64) -> Option<Arc<Identity>> {
        self.read_with(headers, now, Wanted::Valid)
    }

    /// An expired identity in the request's cookies that may still be
    /// renewed at `now` (`exp <= now < renew_until`), for a session refresh.
    pub fn read_renewable(&self, headers: &HeaderMap, now: u64) -> Option<Arc<Identity>> {
        self.read_with(headers, now, Wanted::Renewable)
    }

    fn read_with(&self, headers: &HeaderMap, now: u64, wanted: Wanted) -> Option<Arc<Identity>> {
        let mut wholes: [Option<&str>; MAX_NAMESAKES] = [None; MAX_NAMESAKES];
        let mut first: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
        let mut last: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
        for (name, value) in cookie_pairs(headers) {
            if name == self.name {
                if let Some(slot) = wholes.iter_mut().find(|w| w.is_none()) {
                    *slot = Some(value);
                }
            } else if let Some(i) = name
                .strip_prefix(self.name.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| *i < MAX_CHUNKS)
            {
                first[i].get_or_insert(value);
                last[i] = Some(value);
            }
        }
        if let Some(identity) = wholes.iter().map_while(|w| *w).find_map(|sealed| self.open(sealed, now, wanted)) {
            return Some(identity);
        }
        let joined = |chunks: &[Option<&str>; MAX_CHUNKS]| chunks.iter().map_while(|c| *c).collect::<String>();
        let from_first = joined(&first);
        if from_first.is_empty() {
            return None;
        }
        self.open(&from_first, now, wanted).or_else(|| {
            let from_last = joined(&last);
            (from_last != from_first).then(|| self.open(&from_last, now, wanted)).flatten()
        })
    }

    /// One sealed session value, opened (or found already opened).
    fn open(&self, sealed: &str, now: u64, wanted: Wanted) -> Option<Arc<Identity>> {
        let identity = match self.opened.get(sealed) {
            Some(hit) => hit,
            None => {
                let plain = self.sealer.open(self.name.as_bytes(), sealed)?;
                let identity: Arc<Identity> = Arc::new(serde_json::from_slice(&plain).ok()?);
                if identity.exp > now {
                    self.opened.insert(sealed.into(), identity.clone());
                }
                identity
            }
        };
        let fits = match wanted {
            Wanted::Valid => identity.exp > now,
            Wanted::Renewable => identity.exp <= now && identity.renew_until.is_some_and(|until| until > now),
        };
        fits.then_some(identity)
    }

    /// `Set-Cookie` values that store `identity`, and clear chunks the
    /// browser holds that the new session does not use.
    pub fn write(&self, identity: &Identity, request: &HeaderMap) -> Result<Vec<HeaderValue>, &'static str> {
        let plain = serde_json::to_vec(identity).map_err(|_| "cannot encode the session")?;
        let sealed = self.sealer.seal(self.name.as_bytes(), &plain).ok_or("cannot seal the session")?;
        // A refreshable session's cookie outlives the session inside it: it
        // must still be there when the session is due for renewal.
        let max_age = identity.renew_until.unwrap_or(identity.exp).saturating_sub(identity.iat);
        let mut out = Vec::new();
        let held: Vec<String> =
            cookie_pairs(request).filter(|(n, _)| self.owns(n)).map(|(n, _)| n.to_string()).collect();
        let mut written: Vec<String> = Vec::new();
        if sealed.len() <= CHUNK_BYTES {
            out.push(self.set_cookie(&self.name, &sealed, max_age)?);
            written.push(self.name.clone());
        } else {
            let pieces: Vec<&str> =
                sealed.as_bytes().chunks(CHUNK_BYTES).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
            if pieces.len() > MAX_CHUNKS {
                return Err("the identity is too large for a session cookie (too many groups or claims)");
            }
            for (i, piece) in pieces.iter().enumerate() {
                let name = format!("{}_{i}", self.name);
                out.push(self.set_cookie(&name, piece, max_age)?);
                written.push(name);
            }
        }
        for name in held.iter().filter(|n| !written.contains(n)) {
            out.push(self.set_cookie(name, "", 0)?);
        }
        Ok(out)
    }

    /// `Set-Cookie` values that delete every session cookie the browser sent
    /// (or the plain name when it sent none).
    pub fn clear(&self, request: &HeaderMap) -> Vec<HeaderValue> {
        let mut names: Vec<String> =
            cookie_pairs(request).filter(|(n, _)| self.owns(n)).map(|(n, _)| n.to_string()).collect();
        if names.is_empty() {
            names.push(self.name.clone());
        }
        names.iter().filter_map(|n| self.set_cookie(n, "", 0).ok()).collect()
    }

    fn set_cookie(&self, name: &str, value: &str, max_age: u64) -> Result<HeaderValue, &'static str> {
        set_cookie(name, value, "/", self.domain.as_deref(), self.secure, max_age)
            .ok_or("cannot encode the session cookie")
    }
}

/// A `Set-Cookie` value as porteiro writes all its cookies: HttpOnly,
/// SameSite=Lax (the IdP's redirect back is a top-level GET, so Lax cookies
/// come with it), Secure under https.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    domain: Option<&str>,
    secure: bool,
    max_age: u64,
) -> Option<HeaderValue> {
    set_cookie_same_site(name, value, path, domain, secure, max_age, Some(SameSite::Lax))
}

/// [`set_cookie`] with another `SameSite` (`None`: no attribute at all).
pub fn set_cookie_same_site(
    name: &str,
    value: &str,
    path: &str,
    domain: Option<&str>,
    secure: bool,
    max_age: u64,
    same_site: Option<SameSite>,
) -> Option<HeaderValue> {
    let mut c = Cookie::new(name, value);
    c.set_path(path);
    c.set_http_only(true);
    c.set_secure(secure);
    c.set_same_site(same_site);
    c.set_max_age(cookie::time::Duration::seconds(i64::try_from(max_age).unwrap_or(i64::MAX)));
    if let Some(d) = domain {
        c.set_domain(d);
    }
    HeaderValue::from_str(&c.to_string()).ok()
}

/// `(name, value)` of every cookie in every `Cookie` header whose name and
/// value are UTF-8 (porteiro's are ASCII; other cookies may hold anything).
///
/// (`from_utf8` rather than `HeaderValue::to_str`: this runs up to three
/// times per request over a session cookie of several hundred bytes, and
/// `to_str` checks them one by one.)
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_segments(headers).filter_map(|pair| {
        let (n, v) = std::str::from_utf8(pair).ok()?.split_once('=')?;
        Some((n.trim(), v.trim()))
    })
}

/// Every `;`-separated cookie of every `Cookie` line, trimmed, as bytes.
fn cookie_segments(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(header::COOKIE).iter().flat_map(line_segments)
}

/// The cookies of one `Cookie` line, trimmed, empty ones skipped.
fn line_segments(line: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    Segments(Some(line.as_bytes())).map(<[u8]>::trim_ascii).filter(|s| !s.is_empty())
}

/// A `Cookie` line split at `;`. `memchr` rather than `<[u8]>::split`: a
/// session cookie is several hundred bytes, scanned on every request, and a
/// per-byte predicate costs several times more.
struct Segments<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        match memchr::memchr(b';', rest) {
            Some(i) => {
                self.0 = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// The name of a cookie as bytes: before its `=` (the whole, without one).
fn segment_name(segment: &[u8]) -> &[u8] {
    let end = segment.iter().position(|b| *b == b'=').unwrap_or(segment.len());
    segment[..end].trim_ascii()
}

/// Removes the cookies `owned` says are porteiro's from the request's
/// `Cookie` header(s), keeping every other cookie byte for byte, in order.
/// Several `Cookie` lines (HTTP/2 sends each cookie as a "crumb") go
/// upstream as one, joined with `; ` (RFC 9113 §8.2.3).
pub fn strip_cookies(headers: &mut HeaderMap, owned: impl Fn(&str) -> bool) {
    let is_owned = |segment: &[u8]| std::str::from_utf8(segment_name(segment)).is_ok_and(&owned);
    // One lookup of the header for the whole job: this runs on every
    // request of a route with sessions.
    let header::Entry::Occupied(mut entry) = headers.entry(header::COOKIE) else {
        return;
    };
    // Most requests carry one line with none of porteiro's cookies, or
    // only porteiro's: one scan, and neither allocates.
    if entry.iter().nth(1).is_none() {
        let (mut any, mut all) = (false, true);
        for segment in line_segments(entry.get()) {
            if is_owned(segment) {
                any = true;
            } else {
                all = false;
            }
        }
        if !any {
            return;
        }
        if all {
            entry.remove();
            return;
        }
    }
    let mut kept: Vec<u8> = Vec::new();
    for segment in entry.iter().flat_map(line_segments).filter(|s| !is_owned(s)) {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(segment);
    }
    // The bytes all came from valid header values; whatever happens,
    // porteiro's cookies do not stay.
    match HeaderValue::from_bytes(&kept) {
        Ok(v) if !kept.is_empty() => {
            entry.insert(v);
        }
        _ => {
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, StoreKind};

    fn cookies(name: &str) -> SessionCookies {
        let cfg = SessionConfig {
            secret: Some(Secret::new(vec![7u8; 32])),
            previous_secrets: vec![],
            validity: Duration::from_secs(900),
            cookie_name: name.into(),
            cookie_domain: None,
            store: StoreKind::Memory,
            api_keys_per_user: 20,
        };
        SessionCookies::new(&cfg, true).unwrap()
    }

    fn identity(groups: usize) -> Identity {
        Identity {
            sid: "sid".into(),
            provider: "p".into(),
            sub: "u1".into(),
            name: Some("Ana".into()),
            email: Some("ana@example.com".into()),
            username: None,
            groups: (0..groups).map(|i| format!("group-number-{i:05}")).collect(),
            claims: BTreeMap::new(),
            iat: 1000,
            exp: 1900,
            oidc_sid: None,
            renew_until: None,
            header_values: Default::default(),
        }
    }

    /// Turns Set-Cookie values into a Cookie request header.
    fn as_request(set: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<String> = set
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .filter(|p| !p.ends_with('='))
            .collect();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
        h
    }

    /// The opened-session cache answers for the very cookie it opened and
    /// nothing else: expiry still applies, and a cookie edited by one byte
    /// is opened (and refused) afresh.
    #[test]
    fn opened_sessions_are_cached_by_the_whole_cookie() {
        let c = cookies("porteiro_session");
        let set = c.write(&identity(2), &HeaderMap::new()).unwrap();
        let req = as_request(&set);
        let first = c.read(&req, 1500).unwrap();
        let again = c.read(&req, 1500).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second read is the cached session");
        assert_eq!(c.read(&req, 1900), None, "a cached session still expires");
        let mut edited = req[header::COOKIE].to_str().unwrap().as_bytes().to_vec();
        let middle = edited.len() / 2 + 10;
        edited[middle] = if edited[middle] == b'A' { b'B' } else { b'A' };
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_bytes(&edited).unwrap());
        assert_eq!(c.read(&h, 1500), None);
    }

    #[test]
    fn round_trip_with_flags() {
        let c = cookies("__Host-porteiro_session");
        let set = c.write(&identity(2), &HeaderMap::new()).unwrap();
        assert_eq!(set.len(), 1);
        let s = set[0].to_str().unwrap();
        for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=900"] {
            assert!(s.contains(flag), "{s} lacks {flag}");
        }
        assert_eq!(c.read(&as_request(&set), 1500).as_deref(), Some(&identity(2)));
        assert_eq!(c.read(&as_request(&set), 1900), None, "expired");
    }

    /// A refreshable session: the cookie lives until `renew_until`; past
    /// `exp` it is no valid session but a renewable one, and past
    /// `renew_until` neither.
    #[test]
    fn refreshable_sessions_outlive_their_expiry_in_the_cookie() {
        let c = cookies("s");
        let id = Identity { renew_until: Some(5000), ..identity(1) };
        let set = c.write(&id, &HeaderMap::new()).unwrap();
        assert!(set[0].to_str().unwrap().contains("Max-Age=4000"), "{:?}", set[0]);
        let req = as_request(&set);
        assert!(c.read(&req, 1500).is_some() && c.read_renewable(&req, 1500).is_none());
        assert!(c.read(&req, 1900).is_none() && c.read_renewable(&req, 1900).is_some());
        assert!(c.read(&req, 5000).is_none() && c.read_renewable(&req, 5000).is_none());
        // A session without refresh is never renewable.
        let plain = as_request(&c.write(&identity(1), &HeaderMap::new()).unwrap());
        assert!(c.read_renewable(&plain, 1900).is_none());
    }

    #[test]
    fn large_identities_are_chunked_and_bounded() {
        let c = cookies("s");
        let set = c.write(&identity(300), &HeaderMap::new()).unwrap();
        assert!(set.len() > 1 && set.len() <= MAX_CHUNKS, "{}", set.len());
        assert!(set.iter().all(|v| v.len() < 4096));
        assert_eq!(c.read(&as_request(&set), 1500).as_deref(), Some(&identity(300)));
        // A smaller session later clears the chunks the browser still has.
        let small = c.write(&identity(1), &as_request(&set)).unwrap();
        assert_eq!(small.len(), 1 + set.len());
        assert!(small[1..].iter().all(|v| v.to_str().unwrap().contains("Max-Age=0")));
        assert!(c.write(&identity(5000), &HeaderMap::new()).is_err());
    }

    #[test]
    fn tampered_and_foreign_cookies_are_no_session() {
        let c = cookies("s");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("s=garbage; other=1"));
        assert_eq!(c.read(&h, 1500), None);
        let set = c.write(&identity(1), &HeaderMap::new()).unwrap();
        let foreign = cookies("t");
        let mut req = as_request(&set);
        assert_eq!(foreign.read(&req, 1500), None);
        // A value sealed under another cookie name does not open under this one.
        let v = req.remove(header::COOKIE).unwrap();
        let moved = v.to_str().unwrap().replacen("s=", "t=", 1);
        req.insert(header::COOKIE, HeaderValue::from_str(&moved).unwrap());
        assert_eq!(foreign.read(&req, 1500), None);
    }

    #[test]
    fn strip_keeps_other_cookies() {
        let c = cookies("s");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; s=x; s_0=y"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_cookies(&mut h, |n| c.owns(n));
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("s=x"));
        strip_cookies(&mut only, |n| c.owns(n));
        assert!(!only.contains_key(header::COOKIE));
        // A line with a UTF-8 cookie beside porteiro's still loses porteiro's.
        assert_eq!(stripped(&c, &["lang=português; s=x".as_bytes()]), ["lang=português".as_bytes()]);
        // ...and so does one with bytes that are not UTF-8 at all.
        assert_eq!(stripped(&c, &[b"lang=portugu\xeas; s=x; t=\xff"]), [b"lang=portugu\xeas; t=\xff"]);
        // A line without porteiro's cookies is left byte for byte, spaces
        // and empty segments included.
        assert_eq!(stripped(&c, &[b"a=1 ;; b=2;"]), [b"a=1 ;; b=2;"]);
        assert_eq!(stripped(&c, &[b"a=1", b"b=2"]), [b"a=1; b=2"]);
        // Only porteiro's, on one line or several, empty segments beside: no
        // Cookie header left.
        assert!(stripped(&c, &[b" s=x; ; s_1=y ;"]).is_empty());
        assert!(stripped(&c, &[b"s=x", b"s_0=y"]).is_empty());
        // A name that only starts like porteiro's is not porteiro's.
        assert_eq!(stripped(&c, &[b"s=x; sx=1; s_12=2"]), [b"sx=1; s_12=2"]);
    }

    /// The `Cookie` lines left after porteiro's cookies are stripped.
    fn stripped(c: &SessionCookies, lines: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(header::COOKIE, HeaderValue::from_bytes(line).unwrap());
        }
        strip_cookies(&mut h, |n| c.owns(n));
        h.get_all(header::COOKIE).iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    #[test]
    fn cookie_crumbs_go_upstream_as_one_line() {
        let c = cookies("s");
        let mut h = HeaderMap::new();
        for crumb in ["a=1", "b=2", "c"] {
            h.append(header::COOKIE, HeaderValue::from_static(crumb));
        }
        strip_cookies(&mut h, |n| c.owns(n));
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2; c"]);
    }

    #[test]
    fn a_junk_namesake_does_not_shadow_the_session() {
        let c = cookies("porteiro_session");
        let set = c.write(&identity(1), &HeaderMap::new()).unwrap_or_default();
        let real = as_request(&set);
        let real = real[header::COOKIE].to_str().unwrap_or_default().to_string();
        for line in [format!("{real}; porteiro_session=junk"), format!("porteiro_session=junk; {real}")] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(&line).unwrap());
            assert!(c.read(&h, 1_000).is_some(), "{line}");
        }
        let mut junk = HeaderMap::new();
        junk.insert(header::COOKIE, HeaderValue::from_static("porteiro_session=junk; porteiro_session=more"));
        assert!(c.read(&junk, 1_000).is_none());
    }

    /// Found by tests/properties.rs: a `Cookie` line that was not UTF-8 was
    /// skipped, and porteiro's cookie in it went upstream.
    #[test]
    fn strip_works_on_lines_that_are_not_utf8() {
        let c = cookies("s");
        assert_eq!(stripped(&c, &[b"lang=portugu\xe9s; s=x; s_1=y", b"b=2"]), [b"lang=portugu\xe9s; b=2"]);
        assert_eq!(stripped(&c, &[b"s=x; \xff=1"]), [b"\xff=1"]);
    }

    #[test]
    fn control_characters_fail() {
        let mut id = identity(1);
        assert!(id.check_header_safe().is_ok());
        id.name = Some("Ana\r\nX-Forwarded-User: admin".into());
        assert!(id.check_header_safe().is_err());
    }
}
