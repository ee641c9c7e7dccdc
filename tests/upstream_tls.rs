//! `https` upstreams: the certificate is checked against
//! `server.upstream_ca_file`, the name goes out as SNI, only HTTP/1.1 is
//! offered by ALPN, and connections are pooled as plain ones are. IPv6
//! literal upstreams (`[::1]`) work with and without TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{client, public_route, start_gateway};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the upstream saw of one TLS handshake.
#[derive(Debug, Clone, PartialEq)]
struct Hello {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// An upstream answering `200 up` on `bind`, over TLS with a fresh
/// certificate for `names` when given, in clear otherwise.
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hellos: Arc<Mutex<Vec<Hello>>>,
    /// The certificate (PEM), for `upstream_ca_file`.
    cert_pem: String,
}

impl Upstream {
    async fn start(bind: &str, names: Option<&[&str]>) -> Upstream {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let (acceptor, cert_pem) = match names {
            Some(names) => {
                let cert =
                    rcgen::generate_simple_self_signed(names.iter().map(ToString::to_string).collect::<Vec<_>>())
                        .unwrap();
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
                let mut config =
                    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .unwrap()
                        .with_no_client_auth()
                        .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
                        .unwrap();
                // h2 first: the gateway must not get it, since it offers only http/1.1.
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                (Some(TlsAcceptor::from(Arc::new(config))), cert.cert.pem())
            }
            None => (None, String::new()),
        };
        let (conns, seen) = (connections.clone(), hellos.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"up"))))
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else { return };
                            let (_, session) = tls.get_ref();
                            seen.lock().unwrap().push(Hello {
                                sni: session.server_name().map(ToString::to_string),
                                alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                            });
                            let _ = http.serve_connection(TokioIo::new(tls), service).await;
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Upstream { addr, connections, hellos, cert_pem }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn hellos(&self) -> Vec<Hello> {
        self.hellos.lock().unwrap().clone()
    }

    /// `upstream_ca_file = ...` for `[server]`, the file written to `dir`.
    fn ca_file(&self, dir: &tempfile::TempDir) -> String {
        let path = dir.path().join("upstream-ca.pem");
        std::fs::write(&path, &self.cert_pem).unwrap();
        format!("upstream_ca_file = \"{}\"", path.display())
    }
}

async fn get_three(gw: &support::Gateway) {
    let c = client();
    for _ in 0..3 {
        let resp = c.get(gw.url("/")).header("accept", "application/json").send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "up");
    }
}

#[tokio::test]
async fn https_upstream_by_name_gets_sni_http11_and_pooling() {
    let up = Upstream::start("127.0.0.1:0", Some(&["localhost"])).await;
    let dir = tempfile::tempdir().unwrap();
    // `localhost` may resolve to ::1 first, where nothing listens: the
    // next address is tried.
    let route = public_route("app", &format!("https://localhost:{}", up.addr.port()));
    let gw = start_gateway(&up.ca_file(&dir), &route).await;
    get_three(&gw).await;
    assert_eq!(up.connections(), 1);
    assert_eq!(up.hellos(), [Hello { sni: Some("localhost".into()), alpn: Some(b"http/1.1".to_vec()) }]);
}

#[tokio::test]
async fn https_upstream_by_ipv6_literal() {
    let up = Upstream::start("[::1]:0", Some(&["::1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let route = public_route("app", &format!("https://[::1]:{}", up.addr.port()));
    let gw = start_gateway(&up.ca_file(&dir), &route).await;
    get_three(&gw).await;
    assert_eq!(up.connections(), 1);
    // No SNI for an address; the certificate's IP entry is what is checked.
    assert_eq!(up.hellos(), [Hello { sni: None, alpn: Some(b"http/1.1".to_vec()) }]);
}

#[tokio::test]
async fn plain_upstream_by_ipv6_literal() {
    let up = Upstream::start("[::1]:0", None).await;
    let gw = start_gateway("", &public_route("app", &format!("http://[::1]:{}", up.addr.port()))).await;
    get_three(&gw).await;
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn an_upstream_certificate_not_trusted_is_502() {
    let up = Upstream::start("127.0.0.1:0", Some(&["localhost"])).await;
    let route = public_route("app", &format!("https://localhost:{}", up.addr.port()));
    // No upstream_ca_file: the self-signed certificate is nobody's.
    let gw = start_gateway("", &route).await;
    let resp = client().get(gw.url("/")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
}
