//! [`Browser`]: the test browser, and [`Jar`], the cookie jar of tests that
//! carry cookies hop by hop themselves.
//!
//! [`Browser`]: A cookie jar and a [`client_builder`]
//! client (never follows a redirect, never uses a proxy from the
//! environment): every hop is a call, every `Set-Cookie` is kept per host
//! and path as a browser would (cookies ignore ports; `Path` is honoured).
//! [`PUBLIC_HOST`] resolves to porteiro's real (port 0) address, so a
//! `public_url` naming it is known before porteiro starts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode, header};
use serde_json::Value;

use super::{Echo, SESSION_COOKIE, client_builder};

/// The host name porteiro is published under in the browser tests.
pub const PUBLIC_HOST: &str = "porteiro.test";

/// One stored cookie.
#[derive(Debug, Clone)]
pub struct StoredCookie {
    /// Host only, no port: browsers share cookies across ports.
    pub host: String,
    pub name: String,
    pub value: String,
    pub path: String,
    pub secure: bool,
}

/// A browser: a cookie jar and a client that never follows redirects.
/// Navigations send `Accept: text/html`, as browsers do.
#[derive(Clone)]
pub struct Browser {
    client: reqwest::Client,
    jar: Arc<Mutex<Vec<StoredCookie>>>,
    /// Every `Set-Cookie` received, in order.
    received: Arc<Mutex<Vec<String>>>,
}

/// One answer, with the URL it answered.
#[derive(Debug)]
pub struct Page {
    pub url: url::Url,
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

const NAVIGATION_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

impl Browser {
    /// A browser for which [`PUBLIC_HOST`] is `porteiro` (any port in the
    /// URL is replaced by porteiro's real one: public URLs carry none).
    pub fn new(porteiro: SocketAddr) -> Browser {
        Browser::with_client(client_builder().resolve(PUBLIC_HOST, porteiro))
    }

    /// Same, with a longer patience (for answers that are slow on purpose).
    pub fn patient(porteiro: SocketAddr, timeout: Duration) -> Browser {
        Browser::with_client(client_builder().resolve(PUBLIC_HOST, porteiro).timeout(timeout))
    }

    fn with_client(builder: reqwest::ClientBuilder) -> Browser {
        Browser { client: builder.build().unwrap(), jar: Arc::default(), received: Arc::default() }
    }

    /// Another browser with a copy of this one's cookies (as they are now).
    pub fn snapshot(&self) -> Browser {
        Browser {
            client: self.client.clone(),
            jar: Arc::new(Mutex::new(self.jar.lock().unwrap().clone())),
            received: Arc::default(),
        }
    }

    /// Another browser with an empty jar.
    pub fn other_browser(&self) -> Browser {
        Browser { client: self.client.clone(), jar: Arc::default(), received: Arc::default() }
    }

    /// A top-level navigation.
    pub async fn get(&self, url: &str) -> Page {
        self.send(Method::GET, url, None, Some(NAVIGATION_ACCEPT)).await
    }

    /// A navigation with extra request headers (forged ones, say).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Page {
        self.send_with(Method::GET, url, None, Some(NAVIGATION_ACCEPT), headers).await
    }

    /// A script's request (`Accept: application/json`).
    pub async fn get_json(&self, url: &str) -> Page {
        self.send(Method::GET, url, None, Some("application/json")).await
    }

    /// A form submission.
    pub async fn post_form(&self, url: &str, form: &[(String, String)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.send(Method::POST, url, Some(body), Some(NAVIGATION_ACCEPT)).await
    }

    /// Follows one redirect `page` answered with.
    pub async fn follow(&self, page: &Page) -> Page {
        assert!(
            page.status.is_redirection(),
            "expected a redirect from {}, got {}: {}",
            page.url,
            page.status,
            page.body
        );
        self.get(page.location().as_str()).await
    }

    /// Follows redirects while they stay on `host`; returns the first
    /// answer that is not such a redirect (a page, or a redirect elsewhere).
    pub async fn follow_on(&self, page: Page, host: &str) -> Page {
        let mut page = page;
        for _ in 0..10 {
            if !page.status.is_redirection() || page.location().host_str() != Some(host) {
                return page;
            }
            page = self.follow(&page).await;
        }
        panic!("more than 10 redirects on {host}");
    }

    async fn send(&self, method: Method, url: &str, form: Option<String>, accept: Option<&str>) -> Page {
        self.send_with(method, url, form, accept, &[]).await
    }

    /// Any request: `form` as an `application/x-www-form-urlencoded` body,
    /// `accept` and `extra` as request headers.
    pub async fn send_with(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
        accept: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Page {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
        let mut req = self.client.request(method, parsed.clone());
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(cookies) = self.cookie_header(&parsed) {
            req = req.header(header::COOKIE, cookies);
        }
        if let Some(body) = form {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        for value in headers.get_all(header::SET_COOKIE) {
            self.store(&parsed, value.to_str().unwrap());
        }
        let body = resp.text().await.unwrap_or_else(|e| panic!("{url}: body: {e}"));
        Page { url: parsed, status, headers, body }
    }

    /// RFC 6265 §5.4, as far as these tests need: host-only cookies, path
    /// match, `Secure` only over https; longer paths first.
    fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let host = url.host_str()?;
        let path = url.path();
        let mut matching: Vec<StoredCookie> = self
            .jar
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.host == host && path_matches(&c.path, path) && (!c.secure || url.scheme() == "https"))
            .cloned()
            .collect();
        if matching.is_empty() {
            return None;
        }
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        Some(matching.iter().map(|c| format!("{}={}", c.name, c.value)).collect::<Vec<_>>().join("; "))
    }

    /// The last `Set-Cookie` this browser received for `name`.
    pub fn last_set_cookie(&self, name: &str) -> Option<cookie::Cookie<'static>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|raw| cookie::Cookie::parse(raw.clone()).unwrap())
            .find(|c| c.name() == name)
    }

    fn store(&self, url: &url::Url, set_cookie: &str) {
        self.received.lock().unwrap().push(set_cookie.to_string());
        let c = cookie::Cookie::parse(set_cookie.to_string())
            .unwrap_or_else(|e| panic!("bad Set-Cookie {set_cookie:?}: {e}"));
        let host = url.host_str().unwrap().to_string();
        let path = match c.path() {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => default_path(url.path()),
        };
        let expired = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
            || c.expires_datetime().is_some_and(|t| t <= cookie::time::OffsetDateTime::now_utc());
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|s| !(s.host == host && s.name == c.name() && s.path == path));
        if !expired {
            jar.push(StoredCookie {
                host,
                name: c.name().to_string(),
                value: c.value().to_string(),
                path,
                secure: c.secure().unwrap_or(false),
            });
        }
    }

    /// Puts a cookie in the jar as if `host` had set it.
    pub fn add_cookie(&self, host: &str, name: &str, value: &str, path: &str) {
        self.jar.lock().unwrap().push(StoredCookie {
            host: host.into(),
            name: name.into(),
            value: value.into(),
            path: path.into(),
            secure: false,
        });
    }

    /// The cookies held for `host` (any path).
    pub fn cookies(&self, host: &str) -> Vec<StoredCookie> {
        self.jar.lock().unwrap().iter().filter(|c| c.host == host).cloned().collect()
    }
}

fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => request_path[..i].to_string(),
    }
}

impl Page {
    /// `Location`, resolved against this page's URL.
    pub fn location(&self) -> url::Url {
        let loc = self
            .headers
            .get(header::LOCATION)
            .unwrap_or_else(|| panic!("no Location from {} ({}): {}", self.url, self.status, self.body));
        self.url.join(loc.to_str().unwrap()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `Set-Cookie` of this answer for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<cookie::Cookie<'static>> {
        self.set_cookies().into_iter().find(|c| c.name() == name)
    }

    pub fn set_cookies(&self) -> Vec<cookie::Cookie<'static>> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| cookie::Cookie::parse(v.to_str().unwrap().to_string()).unwrap())
            .collect()
    }

    /// Whether this answer starts a porteiro session.
    pub fn sets_session(&self) -> bool {
        self.set_cookies().iter().any(|c| c.name().starts_with(SESSION_COOKIE) && !c.value().is_empty())
    }

    /// The decoded query parameter `name` of `Location`.
    pub fn location_param(&self, name: &str) -> Option<String> {
        self.location().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The upstream's echo (see `support::FakeUpstream`).
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, StatusCode::OK, "{}: {}", self.url, self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }

    pub fn is_html(&self) -> bool {
        self.header("content-type").is_some_and(|t| t.starts_with("text/html"))
    }
}

/// A cookie jar kept by hand, by name only (no host, path or expiry time:
/// for tests that talk to one porteiro and assert every hop): `Set-Cookie`
/// in, `Cookie` out. [`Jar::only`] keeps the names with a prefix and
/// ignores the others.
#[derive(Debug, Default)]
pub struct Jar {
    only: Option<&'static str>,
    /// `(name, value)`, oldest first.
    cookies: Mutex<Vec<(String, String)>>,
}

impl Clone for Jar {
    fn clone(&self) -> Jar {
        Jar { only: self.only, cookies: Mutex::new(self.cookies()) }
    }
}

impl Jar {
    /// A jar that keeps only the cookies whose name starts with `prefix`.
    pub fn only(prefix: &'static str) -> Jar {
        Jar { only: Some(prefix), cookies: Mutex::default() }
    }

    /// Takes in the cookies a response sets, and drops those it expires
    /// (`Max-Age` 0 or less, or an empty value).
    pub fn absorb(&self, resp: &reqwest::Response) {
        for line in resp.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()) {
            let mut parts = line.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            if self.only.is_some_and(|prefix| !name.starts_with(prefix)) {
                continue;
            }
            let max_age = parts.filter_map(|a| a.split_once('=')).find(|(k, _)| k.eq_ignore_ascii_case("Max-Age"));
            let expired = max_age.is_some_and(|(_, v)| v.parse::<i64>().unwrap_or(0) <= 0) || value.is_empty();
            let mut jar = self.cookies.lock().unwrap();
            jar.retain(|(n, _)| n != name);
            if !expired {
                jar.push((name.to_string(), value.to_string()));
            }
        }
    }

    /// Sets (or replaces) a cookie, as the app, a tampering user or a
    /// sibling domain could.
    pub fn set(&self, name: &str, value: &str) {
        let mut jar = self.cookies.lock().unwrap();
        jar.retain(|(n, _)| n != name);
        jar.push((name.to_string(), value.to_string()));
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    /// The cookies held, `(name, value)`, oldest first.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.cookies.lock().unwrap().clone()
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.lock().unwrap().is_empty()
    }

    /// The `Cookie` header value (empty when the jar is).
    pub fn header(&self) -> String {
        self.cookies.lock().unwrap().iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// The `Cookie` header value, or `None` when there is nothing to send.
    pub fn header_if_any(&self) -> Option<String> {
        Some(self.header()).filter(|h| !h.is_empty())
    }
}
