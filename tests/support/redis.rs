//! A real `redis-server` for the shared-store tests, with no persistence,
//! killed on drop. It listens on a unix socket in its own temporary
//! directory (`port 0`: no TCP at all), so no port is ever picked and no two
//! tests can meet; porteiro reaches it as `redis+unix:///.../redis.sock`.
//! A missing `redis-server` fails the test with what to install: these
//! tests never skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer PING.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// One `redis-server` process of a test.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` and waits until it answers.
    pub fn start() -> RedisServer {
        let mut server = RedisServer { child: None, dir: tempfile::tempdir().unwrap() };
        server.resume();
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix:///<dir>/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
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

    /// Starts the server (again) on its socket.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let socket = self.socket();
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
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
                panic!("redis-server on {} exited at start ({status})", socket.display());
            }
            assert!(Instant::now() < deadline, "redis-server on {} never answered PING", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.socket()) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Runs one command over a plain connection (inline protocol: arguments
    /// without spaces) and returns the raw answer.
    pub fn command(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.socket()).unwrap();
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
