//! A real nginx for the tests that put porteiro behind it (forward-auth) or in
//! front of it (the differential test).
//!
//! nginx gets its listener from the test instead of binding a port number:
//! the test binds `127.0.0.1:0` and hands the socket over as nginx's stdin,
//! named in the `NGINX` environment variable (the way nginx passes listeners
//! to its new binary on an upgrade). The port is never free in between, so
//! no other process can take it. nginx must be installed (`.ci/run` installs
//! nginx-light); without it the test fails rather than skips.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nginx may take to start its worker.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// The nginx binary: on PATH, or in the sbin directories a non-root PATH
/// often lacks.
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: this test needs a real nginx (apt-get install nginx-light; .ci/run installs it)")
        })
}

/// A running nginx (master and one worker), stopped when dropped (also when
/// the test panics).
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with one `server` on its own `127.0.0.1` port; `server`
    /// is the inside of the `server { }` block after `listen` (locations,
    /// `merge_slashes`...). nginx's defaults apply to everything else.
    pub fn start(server: &str) -> Nginx {
        let binary = binary();
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(&dir, addr, server)).unwrap();
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .env("NGINX", "0;")
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut nginx = Nginx { child, dir, addr };
        nginx.wait_started();
        nginx
    }

    /// Waits for the master to start its worker. Connections made before
    /// that wait in the listener's backlog, so this only catches an nginx
    /// that does not start (a config error) early and with its log.
    fn wait_started(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                panic!("nginx exited with {status}: {stderr}\n{}", self.error_log());
            }
            let log = self.error_log();
            if log.contains("start worker process ") {
                assert!(log.contains("using inherited sockets"), "nginx did not take the test's listener:\n{log}");
                return;
            }
            assert!(Instant::now() < deadline, "nginx did not start within {START_PATIENCE:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn error_log(&self) -> String {
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

fn config(dir: &tempfile::TempDir, addr: SocketAddr, server: &str) -> String {
    let d = dir.path().display();
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
        listen {addr};
{server}
    }}
}}
"#
    )
}
