//! A private Apache Tomcat (Debian's `tomcat10`, run from `CATALINA_HOME`
//! with a `CATALINA_BASE` of its own in a temp dir) serving static files, so
//! tests meet Tomcat's real request-path handling: `;params` stripped before
//! dot segments are resolved, `%`-decoding, `//` merged, encoded `/` refused.
//!
//! - **Listener**: the test binds `127.0.0.1:0` and hands the socket to the
//!   JVM as its stdin; the connector takes it with `useInheritedChannel`
//!   (`System.inheritedChannel()`, the inetd/systemd mechanism). No port
//!   number is ever free in between, and no log needs parsing for it.
//! - **Lifetime**: Tomcat takes seconds to start, so a test binary starts one
//!   and shares it (a `static`, never dropped). A watchdog shell holds the
//!   read end of a pipe whose write end only this process has; when the test
//!   binary exits in any way (end of run, panic, `SIGKILL`) the pipe closes
//!   and the watchdog kills the JVM and removes its directory. The JVM runs
//!   in its own process group with the watchdog ignoring `SIGINT`, so a
//!   Ctrl-C ends the run the same way.
//! - **Missing Tomcat or Java** is an error naming what to install
//!   (`.ci/run` installs `tomcat10`, which brings a Java runtime): the tests
//!   that need it fail, never skip.

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where Debian's `tomcat10` package installs Tomcat.
pub const CATALINA_HOME: &str = "/usr/share/tomcat10";

/// A JVM starting Tomcat on two busy cores takes a few seconds; this is the
/// most a start may take before the test fails.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// One virtual host: its name (matched against `Host`) and the files of its
/// `ROOT` web application, as (path under `ROOT`, content).
pub struct Host<'a> {
    pub name: &'a str,
    pub files: &'a [(&'a str, &'a str)],
}

/// A running Tomcat.
pub struct Tomcat {
    pub addr: SocketAddr,
    java: Child,
    watchdog: Child,
    /// The watchdog's stdin: closing it (or this process ending) stops Tomcat.
    watch: Option<ChildStdin>,
    base: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Tomcat {
    /// Starts Tomcat with `hosts` (the first is the default host, which also
    /// answers requests for unknown names) and waits until it has started.
    /// Debian's global `web.xml` (the default servlet) and
    /// `catalina.properties` are used as they ship.
    pub fn start(hosts: &[Host]) -> Result<Tomcat, String> {
        let home = Path::new(CATALINA_HOME);
        for file in ["bin/bootstrap.jar", "etc/web.xml"] {
            if !home.join(file).is_file() {
                return Err(format!(
                    "Tomcat 10 is not installed ({} is missing): apt-get install tomcat10 (.ci/run installs it)",
                    home.join(file).display()
                ));
            }
        }
        let java = java_binary()?;
        let base = tempfile::Builder::new().prefix("porteiro-tomcat-").tempdir().map_err(|e| e.to_string())?.keep();
        match Tomcat::launch(&java, home, &base, hosts) {
            Ok(tomcat) => Ok(tomcat),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base);
                Err(e)
            }
        }
    }

    fn launch(java: &Path, home: &Path, base: &Path, hosts: &[Host]) -> Result<Tomcat, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        write_base(home, base, addr, hosts)?;
        let mut java = Command::new(java)
            // A short-lived test server: quick JIT, a small heap.
            .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"])
            .arg(format!("-Dcatalina.home={}", home.display()))
            .arg(format!("-Dcatalina.base={}", base.display()))
            .arg(format!("-Djava.io.tmpdir={}", base.join("temp").display()))
            .arg("-cp")
            .arg(format!("{}:{}", home.join("bin/bootstrap.jar").display(), home.join("bin/tomcat-juli.jar").display()))
            .args(["org.apache.catalina.startup.Bootstrap", "start"])
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", java.display()))?;
        let watchdog = Command::new("sh")
            .args(["-c", r#"trap '' INT HUP; while read -r _; do :; done; kill -KILL "$0"; rm -rf "$1""#])
            .arg(java.id().to_string())
            .arg(base)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let _ = java.kill();
                let _ = java.wait();
                return Err(format!("cannot run sh for Tomcat's watchdog: {e}"));
            }
        };
        let watch = watchdog.stdin.take();
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = java.stderr.take() {
            // Keep draining Tomcat's log (java.util.logging to stderr), or
            // it would block on a full pipe.
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let mut tomcat = Tomcat { addr, java, watchdog, watch, base: base.to_path_buf(), logs };
        tomcat.wait_started()?;
        Ok(tomcat)
    }

    /// Waits for "Server startup in"; fails on a `SEVERE` line (a connector
    /// that could not take the inherited socket still lets Tomcat "start").
    fn wait_started(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let logs = self.logs();
            if logs.contains("\nSEVERE:") || logs.starts_with("SEVERE:") {
                return Err(format!("Tomcat reported an error while starting:\n{logs}"));
            }
            if logs.contains("Server startup in") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.java.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("Tomcat exited with {status} while starting:\n{}", self.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!("Tomcat did not start within {START_PATIENCE:?}:\n{logs}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Tomcat's log so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Tomcat {
    /// Only for a Tomcat a test owns; a shared one is stopped by its watchdog.
    fn drop(&mut self) {
        // The watchdog first, so it never signals a pid reused after the
        // JVM is reaped here.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        drop(self.watch.take());
        let _ = self.java.kill();
        let _ = self.java.wait();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `$JAVA_HOME/bin/java`, else `java` on PATH.
fn java_binary() -> Result<PathBuf, String> {
    let from_home = std::env::var_os("JAVA_HOME").map(|h| PathBuf::from(h).join("bin/java"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    from_home.into_iter().chain(std::env::split_paths(&path).map(|dir| dir.join("java"))).find(|p| p.is_file()).ok_or_else(
        || "no Java runtime (java on PATH or in $JAVA_HOME): apt-get install tomcat10, which brings one (.ci/run installs it)".to_string(),
    )
}

/// `CATALINA_BASE`: `conf/` (our `server.xml` and `context.xml`, Debian's
/// `web.xml` and `catalina.properties`), `logs/`, `work/`, `temp/`, and one
/// `hosts/<name>/ROOT` per host.
fn write_base(home: &Path, base: &Path, addr: SocketAddr, hosts: &[Host]) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let conf = base.join("conf");
    for dir in [&conf, &base.join("logs"), &base.join("work"), &base.join("temp")] {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    for file in ["web.xml", "catalina.properties"] {
        let from = home.join("etc").join(file);
        std::fs::copy(&from, conf.join(file)).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    // Skipping the jar scan takes seconds off the start and changes nothing
    // in how requests are mapped.
    std::fs::write(
        conf.join("context.xml"),
        "<Context>\n  <JarScanner scanClassPath=\"false\" scanManifest=\"false\"/>\n</Context>\n",
    )
    .map_err(io)?;
    let default = hosts.first().ok_or("Tomcat needs at least one host")?.name;
    let mut host_xml = String::new();
    for host in hosts {
        assert!(
            host.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
            "host name {:?}",
            host.name
        );
        host_xml.push_str(&format!(
            "      <Host name=\"{0}\" appBase=\"hosts/{0}\" unpackWARs=\"false\" autoDeploy=\"false\"/>\n",
            host.name
        ));
        let root = base.join("hosts").join(host.name).join("ROOT");
        std::fs::create_dir_all(&root).map_err(io)?;
        for (path, content) in host.files {
            let file = root.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&file, content).map_err(io)?;
        }
    }
    // The connector keeps every default that shapes request parsing (as in
    // Debian's server.xml); only the socket is inherited. No shutdown port.
    let server_xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" connectionTimeout="20000" useInheritedChannel="true"/>
    <Engine name="Catalina" defaultHost="{default}">
{host_xml}    </Engine>
  </Service>
</Server>
"#,
        port = addr.port()
    );
    std::fs::write(conf.join("server.xml"), server_xml).map_err(io)
}
