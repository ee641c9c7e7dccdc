//! The one place an outcome becomes an HTTP answer of porteiro's own:
//! HTML for browsers, JSON (`{"error", "error_description"}`) for everything
//! else, with headers that keep the page out of caches and frames.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

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

/// An error answer: `error` is a short machine word (`bad_gateway`), the
/// description a sentence for people. Neither may contain secrets.
pub fn error(status: StatusCode, error: &str, description: &str, html: bool) -> Response<Body> {
    if html {
        let title = status.canonical_reason().unwrap_or("Error");
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}</style></head>\
             <body><h1>{title}</h1><p>{desc}</p></body></html>\n",
            code = status.as_u16(),
            title = escape_html(title),
            desc = escape_html(description),
        );
        page_response(status, page)
    } else {
        json(status, &serde_json::json!({ "error": error, "error_description": description }))
    }
}

/// A JSON answer of porteiro's own.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    harden(resp.headers_mut());
    resp
}

/// An HTML page of porteiro's own.
pub fn page_response(status: StatusCode, html: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(html));
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
        let resp = error(StatusCode::BAD_GATEWAY, "bad_gateway", "<script>", true);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(resp.headers()[header::X_FRAME_OPTIONS], "DENY");
        let resp = error(StatusCode::BAD_GATEWAY, "bad_gateway", "upstream down", false);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
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
