//! porteiro under test: [`Gateway`] in-process (`porteiro::start_with_clock`,
//! with a [`Clock`] the test moves past expiries instead of sleeping), or
//! [`GatewayProcess`], the real binary with its config in a temp file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use porteiro::Running;
use porteiro::clock::Clock;
use porteiro::config::Config;

use super::{PATIENCE, client, collect_lines, config, count, failures_series, logins_series};

/// Parses a test config; a bad one fails the test with the text.
pub fn parse_config(text: &str) -> Config {
    Config::from_toml(text, "test.toml").unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"))
}

/// porteiro started in-process.
pub struct Gateway {
    pub running: Running,
    /// The clock porteiro reads: [`Clock::advance`] moves it past an expiry.
    pub clock: Clock,
    /// `http://127.0.0.1:PORT` of the main listener.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin listener, when configured.
    pub admin: Option<String>,
    /// [`client`]: no redirects followed, no cookies kept.
    pub client: reqwest::Client,
}

/// Starts porteiro in-process with [`config`]`(server_extra, body)`; does
/// not wait for readiness.
pub async fn start_gateway(server_extra: &str, body: &str) -> Gateway {
    Gateway::start(parse_config(&config(server_extra, body))).await
}

impl Gateway {
    /// Starts `config` with a clock of its own; does not wait for readiness.
    pub async fn start(config: Config) -> Gateway {
        Gateway::start_with_clock(config, Clock::default()).await
    }

    /// Starts `config` reading time from `clock` (shared by replicas that
    /// must agree on the time).
    pub async fn start_with_clock(config: Config, clock: Clock) -> Gateway {
        let running = porteiro::start_with_clock(config, clock.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        Gateway {
            base: format!("http://{}", running.addr),
            admin: running.admin_addr.map(|a| format!("http://{a}")),
            running,
            clock,
            client: client(),
        }
    }

    /// [`Gateway::start`], then waits until `/readyz` says 200 (key sets
    /// fetched) when there is an admin listener.
    pub async fn start_ready(config: Config) -> Gateway {
        let gw = Gateway::start(config).await;
        gw.wait_ready().await;
        gw
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.running.admin_addr.expect("admin listener configured")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// Moves porteiro's clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The status of `/readyz` on the admin listener.
    pub async fn readyz(&self) -> reqwest::StatusCode {
        self.client.get(self.admin_url("/readyz")).send().await.unwrap().status()
    }

    /// Waits until `/readyz` answers 200; returns at once without an admin
    /// listener.
    pub async fn wait_ready(&self) {
        if self.admin.is_none() {
            return;
        }
        let deadline = Instant::now() + PATIENCE;
        while self.readyz().await != 200 {
            assert!(Instant::now() < deadline, "porteiro not ready within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        admin_metrics(self.admin_addr()).await
    }

    /// A counter's value (see [`count`]).
    pub async fn count(&self, series: &str) -> f64 {
        count(&self.metrics().await, series)
    }

    /// `porteiro_auth_failures_total{provider, reason}`.
    pub async fn failures(&self, provider: &str, reason: &str) -> f64 {
        self.count(&failures_series(provider, reason)).await
    }

    /// `porteiro_logins_total{provider}`.
    pub async fn logins(&self, provider: &str) -> f64 {
        self.count(&logins_series(provider)).await
    }
}

/// The Prometheus text of the admin listener at `admin`.
pub async fn admin_metrics(admin: SocketAddr) -> String {
    let resp = client().get(format!("http://{admin}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

// === the binary ===

/// Path of the `porteiro` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_porteiro")
}

/// The binary as a child process: `RUST_LOG=rust_log`, no
/// `PORTEIRO_CONFIG` from the environment, no stdin, stdout dropped,
/// stderr piped (the logs), killed if the test drops it. Add arguments and
/// spawn.
pub fn porteiro_command(rust_log: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        .env_remove("PORTEIRO_CONFIG")
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the binary to completion (for `check` and config errors). The
/// environment's `PORTEIRO_CONFIG` is removed so only `args` count.
pub fn run_binary(args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(args)
        .env_remove("PORTEIRO_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A config file in its own temp directory (also handy for cert files).
pub struct ConfigFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { dir, path }
    }

    pub fn rewrite(&self, text: &str) {
        // Write then rename, as config management tools do, so a reload
        // never reads half a file.
        let tmp = self.dir.path().join("gateway.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// [`config`] with JSON logs, which [`GatewayProcess`] parses.
fn process_config(server_extra: &str, body: &str) -> String {
    config(&format!("log_format = \"json\"\n{server_extra}"), body)
}

/// A running `porteiro` process. Killed on drop if still running.
pub struct GatewayProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub config: ConfigFile,
    logs: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Writes [`config`]`(server_extra, body)` (with JSON logs, which this
    /// helper parses) to a temp file and starts `porteiro --config FILE`.
    /// Returns once the listeners are bound.
    pub async fn start(server_extra: &str, body: &str) -> GatewayProcess {
        let text = process_config(server_extra, body);
        let config = ConfigFile::new(&text);
        let mut child = porteiro_command("info").args(["--config", config.path_str()]).spawn().unwrap();
        let pid = child.id().unwrap();
        let logs = collect_lines(child.stderr.take().unwrap()).0;
        let mut process =
            GatewayProcess { child, pid, addr: SocketAddr::from(([0, 0, 0, 0], 0)), admin_addr: None, config, logs };
        let line = process.wait_for_log("porteiro listening").await;
        let fields = &serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))["fields"];
        process.addr = fields["addr"].as_str().unwrap().parse().unwrap();
        process.admin_addr =
            fields["admin"].as_str().and_then(|a| a.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok());
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin_addr.expect("admin listener configured");
        format!("http://{admin}{path}")
    }

    /// Replaces the config file as [`GatewayProcess::start`] wrote it (the
    /// process is not told; send `HUP`).
    pub fn rewrite_config(&self, server_extra: &str, body: &str) {
        self.config.rewrite(&process_config(server_extra, body));
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// All stderr lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a stderr line containing `needle` and returns it. Fails
    /// early if the process exits.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_nth_log(needle, 1).await
    }

    /// Waits until `n` stderr lines contain `needle`; returns the n-th.
    pub async fn wait_for_nth_log(&mut self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.logs().into_iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("porteiro exited ({status}) before logging {needle:?}:\n{}", self.logs().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "no log line {needle:?} within {PATIENCE:?}:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (`"TERM"`, `"HUP"`...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status =
            std::process::Command::new("kill").args([format!("-{signal}"), self.pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("porteiro still running after {within:?}:\n{}", self.logs().join("\n")))
            .unwrap()
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
