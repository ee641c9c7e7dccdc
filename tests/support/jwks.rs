//! [`JwksServer`]: a JWKS endpoint on `127.0.0.1:0` whose key set can change
//! at runtime, that counts fetches, can send `Cache-Control: max-age`, fail
//! with `500` or close every connection unanswered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Closes every connection without an answer.
    Closed,
}

struct State {
    document: Mutex<Value>,
    fetches: AtomicUsize,
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

    /// Serves `document` as given (any JSON, key set or not).
    pub async fn document(document: Value) -> JwksServer {
        let state = Arc::new(State {
            document: Mutex::new(document),
            fetches: AtomicUsize::new(0),
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
                        async move { state.answer(&req) }
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

    pub fn add_key(&self, key: &SigningKey) -> &Self {
        let mut document = self.state.document.lock().unwrap();
        document["keys"].as_array_mut().expect("a key set").push(key.jwk());
        drop(document);
        self
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) -> &Self {
        *self.state.document.lock().unwrap() = json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() });
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

    pub fn bring_up(&self) -> &Self {
        *self.state.mode.lock().unwrap() = Mode::Up;
        self
    }
}

impl State {
    /// An error closes the connection unanswered (a keep-alive connection
    /// opened before [`JwksServer::take_down`] goes down too).
    fn answer(&self, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, String> {
        let mode = *self.mode.lock().unwrap();
        if mode == Mode::Closed {
            return Err("taken down".into());
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if mode == Mode::Failing {
            (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"{\"error\":\"down\"}"))
        } else if req.uri().path() != "/jwks.json" {
            (StatusCode::NOT_FOUND, Bytes::from_static(b"not found"))
        } else {
            (StatusCode::OK, Bytes::from(self.document.lock().unwrap().to_string()))
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
