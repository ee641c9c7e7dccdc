//! The one place a refusal becomes an HTTP answer of porteiro's own. Code
//! anywhere says *what* went wrong as a [`Reject`] (a [`Class`], a short
//! machine word, a sentence for people); only here does that become a
//! status code and a body: an HTML page for browsers, JSON
//! (`{"error", "error_description"}`) for everything else. Every page of
//! porteiro's own comes from [`page`] and carries headers that keep it out
//! of caches and frames.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// What kind of refusal; decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The request cannot be read one way only, or lacks what it needs.
    BadRequest,
    /// No (valid) credential.
    Unauthorized,
    /// A valid identity that may not do this.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    /// A body of a type the endpoint does not take.
    UnsupportedMediaType,
    /// Over a rate limit (the answer says when to try again).
    TooManyRequests,
    /// porteiro or a peer it needs (store, keys, identity provider) is not
    /// available now; trying again may work.
    Unavailable,
    /// A peer answered wrongly.
    BadGateway,
    /// A peer did not answer in time.
    Timeout,
    Internal,
}

impl Class {
    pub fn status(self) -> StatusCode {
        match self {
            Class::BadRequest => StatusCode::BAD_REQUEST,
            Class::Unauthorized => StatusCode::UNAUTHORIZED,
            Class::Forbidden => StatusCode::FORBIDDEN,
            Class::NotFound => StatusCode::NOT_FOUND,
            Class::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Class::Conflict => StatusCode::CONFLICT,
            Class::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Class::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Class::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Class::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Class::BadGateway => StatusCode::BAD_GATEWAY,
            Class::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Class::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refusal: `reason` is a short machine word (`bad_gateway`), `message` a
/// sentence for people. Neither may contain secrets.
#[derive(Debug, Clone)]
pub struct Reject {
    pub class: Class,
    pub reason: &'static str,
    pub message: Cow<'static, str>,
    /// `WWW-Authenticate`, for refusals of a credential.
    pub challenge: Option<Cow<'static, str>>,
}

impl Reject {
    pub fn new(class: Class, reason: &'static str, message: impl Into<Cow<'static, str>>) -> Reject {
        Reject { class, reason, message: message.into(), challenge: None }
    }

    /// With a `WWW-Authenticate` challenge.
    pub fn challenge(mut self, challenge: impl Into<Cow<'static, str>>) -> Reject {
        self.challenge = Some(challenge.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.class.status()
    }

    /// The answer: a page for a browser (`html`), else JSON.
    pub fn answer<B: From<Bytes>>(&self, html: bool) -> Response<B> {
        if html && self.challenge.is_none() {
            let title = self.status().canonical_reason().unwrap_or("Error");
            let heading = escape_html(title);
            let body = format!("<p>{}</p>", escape_html(&self.message));
            let mut resp: Response<B> =
                page(self.status(), &format!("{} {heading}", self.status().as_u16()), &heading, &body);
            resp.extensions_mut().insert(Refused(self.reason));
            resp
        } else {
            self.json()
        }
    }

    /// The JSON answer, whatever the client accepts.
    pub fn json<B: From<Bytes>>(&self) -> Response<B> {
        let mut resp =
            json(self.status(), &serde_json::json!({ "error": self.reason, "error_description": self.message }));
        if let Some(v) = self.challenge.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp.extensions_mut().insert(Refused(self.reason));
        resp
    }
}

/// On an answer made from a [`Reject`]: its reason, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Does the client prefer HTML (a browser navigation)?
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

/// Headers every page of porteiro's own carries.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
}

/// A JSON answer of porteiro's own.
pub fn json<B: From<Bytes>>(status: StatusCode, value: &serde_json::Value) -> Response<B> {
    let mut resp = Response::new(B::from(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    harden(resp.headers_mut());
    resp
}

/// A page of porteiro's own: `title`, a heading and `body`, all already
/// HTML (escape what came from outside with [`escape_html`]).
pub fn page<B: From<Bytes>>(status: StatusCode, title: &str, heading: &str, body: &str) -> Response<B> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}\
         label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em}}button{{margin-top:1em;padding:.5em 1.5em}}\
         .warn{{background:#fff3bf;padding:.6em}}.problem{{color:#b00}}</style></head>\
         <body><h1>{heading}</h1>{body}</body></html>\n"
    );
    let mut resp = Response::new(B::from(Bytes::from(html)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    harden(resp.headers_mut());
    resp
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_gets_escaped_html_api_gets_json() {
        let reject = Reject::new(Class::BadGateway, "bad_gateway", "<script>");
        let resp: Response<Bytes> = reject.answer(true);
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(resp.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(String::from_utf8_lossy(resp.body()).contains("<p>&lt;script&gt;</p>"));
        let resp: Response<Bytes> = Reject::new(Class::BadGateway, "bad_gateway", "upstream down").answer(false);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(body, serde_json::json!({"error": "bad_gateway", "error_description": "upstream down"}));
        assert_eq!(escape_html("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }

    #[test]
    fn accept_decides() {
        let mut h = HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,application/xhtml+xml"));
        assert!(wants_html(&h));
    }
}
