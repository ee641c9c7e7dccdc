//! Outbound HTTP for key sets and identity-provider documents: bounded in
//! time and size, redirects never followed, `https` except on loopback.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad URL")]
    Url,
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// A fetched document and how long it may be cached (`Cache-Control: max-age`).
pub struct Fetched {
    pub status: StatusCode,
    pub body: Bytes,
    pub max_age: Option<Duration>,
}

#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Fetcher {
    pub fn new(tls: rustls::ClientConfig) -> Fetcher {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Fetcher { client }
    }

    /// `GET url`; only a 200 answer is a success.
    pub async fn get(&self, url: &str, timeout: Duration, max_bytes: usize) -> Result<Fetched, FetchError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("porteiro/", env!("CARGO_PKG_VERSION")))
            .body(Full::default())
            .map_err(|_| FetchError::Url)?;
        let fetched = self.send(req, timeout, max_bytes).await?;
        if fetched.status != StatusCode::OK {
            return Err(FetchError::Status(fetched.status));
        }
        Ok(fetched)
    }

    /// Sends `req` and reads the answer (any status) within the bounds.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Fetched, FetchError> {
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| FetchError::Request(e.to_string()))?;
            let status = resp.status();
            let max_age = resp.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
            if resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n > max_bytes)
            {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let body = Limited::new(resp.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(max_bytes)
                    } else {
                        FetchError::Request(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Fetched { status, body, max_age })
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| FetchError::Timeout(timeout))?
    }
}

fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.eq_ignore_ascii_case("max-age").then(|| v.trim().parse().ok().map(Duration::from_secs))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(max_age("no-cache"), None);
    }
}
