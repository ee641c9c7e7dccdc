//! A real `redis-server` for the shared-store tests (`tests/redis_store.rs`),
//! on `127.0.0.1` with no persistence, killed on drop.
//!
//! The one server of the tests whose port is picked before it binds:
//! porteiro's `session.redis_url` takes only `redis://` and `rediss://`
//! (no unix socket), and `redis-server` cannot inherit a listening socket.
//! So a port is picked by binding `127.0.0.1:0` and releasing it, and a
//! start that loses the port to another process in between is retried on
//! another one (bounded).
//! A missing `redis-server` fails the test with what to install: these
//! tests never skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer PING.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// Ports tried before giving up (see the module doc).
const START_TRIES: usize = 5;

/// One `redis-server` process of a test.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        let mut dir = tempfile::tempdir().unwrap();
        for _ in 0..START_TRIES {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = RedisServer { port, child: None, dir };
            match server.try_resume() {
                Ok(()) => return server,
                // Someone took the port between its release and redis-server's bind.
                Err(lost) => {
                    eprintln!("{lost}; trying another port");
                    dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
                }
            }
        }
        panic!("redis-server could not bind a free port in {START_TRIES} tries");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: clients see their connections
    /// reset). Its data is gone: nothing is persisted.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay
    /// open but nothing answers, as in a network partition.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("redis-server running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        // The shell's own `kill`: no procps package needed.
        let status = Command::new("sh").args(["-c", &format!("kill {signal} {pid}")]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        self.try_resume().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server on its port; `Err` when it exits at once (the port
    /// is taken).
    fn try_resume(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server already running");
        let port = self.port.to_string();
        let spawned = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; the shared-store tests need it (Debian: apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_PATIENCE;
        while !self.answers_ping() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("redis-server on port {} exited at start ({status})", self.port));
            }
            assert!(Instant::now() < deadline, "redis-server on port {} never answered PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Runs one command over a plain connection (inline protocol: arguments
    /// without spaces) and returns the raw answer.
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
