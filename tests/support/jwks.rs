//! [`JwksServer`]: a JWKS endpoint on `127.0.0.1:0` whose document can
//! change at runtime (a key set, or any bytes), that counts fetches and
//! notes when they came, can send `Cache-Control: max-age`, fail with `500`,
//! hold every request unanswered or close every connection unanswered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::keys::SigningKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// Answers `500`.
    Failing,
    /// Holds every request, never answering.
    Hanging,
    /// Closes every connection without an answer.
    Closed,
}

struct State {
    /// What is served, as served.
    document: Mutex<Bytes>,
    fetches: AtomicUsize,
    /// When each request came (hanging ones too).
    arrivals: Mutex<Vec<Instant>>,
    mode: Mutex<Mode>,
    max_age: Mutex<Option<u64>>,
}

/// A running JWKS endpoint, serving its document at [`JwksServer::url`].
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl JwksServer {
    /// Serves `{"keys": [...]}` with the public JWKs of `keys`.
    pub async fn start(keys: &[&SigningKey]) -> JwksServer {
        JwksServer::document(json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })).await
    }

    /// Serves `document` (any JSON, key set or not).
    pub async fn document(document: Value) -> JwksServer {
        JwksServer::raw(Bytes::from(document.to_string())).await
    }

    /// Serves `body` byte for byte.
    pub async fn raw(body: Bytes) -> JwksServer {
        let state = Arc::new(State {
            document: Mutex::new(body),
            fetches: AtomicUsize::new(0),
            arrivals: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Up),
            max_age: Mutex::new(None),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                if *serving.mode.lock().unwrap() == Mode::Closed {
                    drop(stream);
                    continue;
                }
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { state.answer(&req).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// How many requests reached the endpoint (closed connections excluded).
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Requests that arrived (answered or not), by arrival time.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    pub fn add_key(&self, key: &SigningKey) -> &Self {
        let mut document = self.state.document.lock().unwrap();
        let mut set: Value = serde_json::from_slice(&document).expect("a key set");
        set["keys"].as_array_mut().expect("a key set").push(key.jwk());
        *document = Bytes::from(set.to_string());
        drop(document);
        self
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) -> &Self {
        self.set_raw(Bytes::from(json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()))
    }

    /// Serves `body` byte for byte from now on.
    pub fn set_raw(&self, body: Bytes) -> &Self {
        *self.state.document.lock().unwrap() = body;
        self
    }

    /// Sends `Cache-Control: max-age=<seconds>` with the key set.
    pub fn max_age(&self, seconds: u64) -> &Self {
        *self.state.max_age.lock().unwrap() = Some(seconds);
        self
    }

    /// From now on every fetch gets `500`.
    pub fn fail(&self) -> &Self {
        *self.state.mode.lock().unwrap() = Mode::Failing;
        self
    }

    /// From now on connections are closed without an answer.
    pub fn take_down(&self) -> &Self {
        *self.state.mode.lock().unwrap() = Mode::Closed;
        self
    }

    /// From now on requests are held, never answered.
    pub fn hang(&self) -> &Self {
        *self.state.mode.lock().unwrap() = Mode::Hanging;
        self
    }

    pub fn bring_up(&self) -> &Self {
        *self.state.mode.lock().unwrap() = Mode::Up;
        self
    }
}

impl State {
    /// An error closes the connection unanswered (a keep-alive connection
    /// opened before [`JwksServer::take_down`] goes down too).
    async fn answer(&self, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, String> {
        let mode = *self.mode.lock().unwrap();
        if mode == Mode::Closed {
            return Err("taken down".into());
        }
        self.arrivals.lock().unwrap().push(Instant::now());
        if mode == Mode::Hanging {
            std::future::pending::<()>().await;
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if mode == Mode::Failing {
            (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"{\"error\":\"down\"}"))
        } else if req.uri().path() != "/jwks.json" {
            (StatusCode::NOT_FOUND, Bytes::from_static(b"not found"))
        } else {
            (StatusCode::OK, self.document.lock().unwrap().clone())
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        if status == StatusCode::OK {
            resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
            if let Some(age) = *self.max_age.lock().unwrap() {
                resp.headers_mut().insert("cache-control", format!("max-age={age}").parse().unwrap());
            }
        }
        Ok(resp)
    }
}
