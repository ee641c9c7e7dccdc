//! porteiro as the forward-auth target of a real nginx (`auth_request`), the
//! way DESIGN 1 deploys it behind an existing ingress: nginx asks
//! `/sso/auth`, turns a 401 into its own redirect to `/sso/start`, proxies
//! `/sso/` to porteiro, and hands the user to the app in a header.
//!
//! nginx must be installed (`.ci/run` installs nginx-light); without it this
//! test fails rather than skips, so a green run always means it ran.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod auth_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auth_support::*;
use reqwest::StatusCode;

/// The nginx binary: on PATH, or in the sbin directories a non-root PATH
/// often lacks.
fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: the forward-auth test needs a real nginx with auth_request \
                 (apt-get install nginx-light; .ci/run installs it)"
            )
        })
}

/// A port free a moment ago, for nginx's `listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running nginx, stopped when dropped (also when the test panics).
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx in front of `porteiro` (forward-auth) and `upstream`.
    fn start(porteiro: &str, upstream: &str) -> Nginx {
        let binary = nginx_binary();
        let mut last_error = String::new();
        // The free port may be taken again before nginx binds it: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), port, porteiro, upstream)).unwrap();
            let child = Command::new(&binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut nginx = Nginx { child, dir, port };
            match nginx.wait_listening() {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited with {status}: {stderr}\n{log}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("nginx did not listen within 10 s".into())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its worker; SIGKILL if it hangs.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx configuration of DESIGN 1's forward-auth deployment.
fn config(dir: &Path, port: u16, porteiro: &str, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /sso/auth;
            auth_request_set $user $upstream_http_x_auth_request_user;
            auth_request_set $email $upstream_http_x_auth_request_email;
            proxy_set_header X-Forwarded-User $user;
            proxy_set_header X-Forwarded-Email $email;
            proxy_pass http://{upstream};
            error_page 401 = @login;
        }}
        location = /sso/auth {{
            internal;
            proxy_pass http://{porteiro}/sso/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}
        location /sso/ {{
            proxy_pass http://{porteiro};
        }}
        location @login {{
            return 302 /sso/start?redirectUrl=$request_uri;
        }}
    }}
}}
"#
    )
}

/// The path and query of a Location, absolute or not.
fn path_of(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_porteiro() {
    let upstream = EchoUpstream::start().await;
    let gw = Conf::new(&upstream.authority()).start().await;
    let nginx = Nginx::start(&gw.running.addr.to_string(), &upstream.authority());
    let client = client();
    let get = |path: &str| client.get(nginx.url(path)).header("accept", "text/html");

    // Not signed in: porteiro answers nginx's subrequest 401, nginx sends
    // the browser to /sso/start with the original path.
    let resp = get("/tickets/1?x=y").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND, "nginx error log:\n{}", nginx.error_log());
    assert_eq!(path_of(&location(&resp)), "/sso/start?redirectUrl=/tickets/1?x=y");
    assert_eq!(upstream.hits(), 0);
    // A client's own X-Forwarded-User does not get it in.
    let resp = get("/tickets/1").header("x-forwarded-user", "admin").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(upstream.hits(), 0);

    // /sso/start (through nginx) sends the browser on to the login page.
    let resp = get("/sso/start?redirectUrl=/tickets/1?x=y").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let login = location(&resp);
    assert!(login.starts_with(LOGIN_URL), "{login}");
    assert_eq!(query_of(&login), [("redirectUrl".to_string(), "/tickets/1?x=y".to_string())]);

    // The login page's callback, through nginx: the session cookie is minted.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("jwt", &hs_token(&claims_with(serde_json::json!({"userid": "C-9"}))))
        .append_pair("redirectUrl", "/tickets/1?x=y")
        .finish();
    let resp = get(&format!("/sso/callback?{query}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), "/tickets/1?x=y");
    let mut jar = Jar::default();
    jar.absorb(&resp);
    assert!(jar.get(COOKIE).is_some(), "{:?}", set_cookies(&resp));

    // Signed in: nginx lets the request through with the user porteiro named,
    // over whatever the client claimed.
    let resp = get("/tickets/1?x=y").header("cookie", jar.header()).header("x-forwarded-user", "admin").send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "nginx error log:\n{}", nginx.error_log());
    let echo = Echo::from(resp).await;
    assert_eq!(echo.path(), "/tickets/1");
    assert_eq!(echo.query(), Some("x=y"));
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("C-9"));
    assert_eq!(echo.header("x-forwarded-email").as_deref(), Some("ana@example.com"));
    assert_eq!(upstream.hits(), 1);

    // Logout through nginx; the old cookie no longer gets past auth_request.
    let resp = get("/sso/logout").header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get("/tickets/1").header("cookie", jar.header()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(upstream.hits(), 1);
}
