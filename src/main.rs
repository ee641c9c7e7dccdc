//! The `porteiro` binary: CLI, logging, runtime, signals.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use porteiro::config::{Access, Config, IdentityAudience, LogFormat, ProviderKind, Upstream};
use tracing::{error, info, warn};

/// Small, short-lived allocations (header maps, buffers, futures) are most
/// of what a proxied request allocates; mimalloc serves them from per-thread
/// pages, cheaper than glibc's malloc. Built without transparent huge pages
/// (Cargo.toml): with them, every partly used 2 MiB of heap was resident
/// whole (2 000 idle connections: 100 MiB RSS instead of 63 MiB).
#[global_allocator]
static ALLOCATOR: porteiro_alloc::Allocator = porteiro_alloc::Allocator;

#[derive(Parser)]
#[command(name = "porteiro", version, about = "Single sign-on gateway in front of web apps and APIs")]
struct Cli {
    /// Configuration file [default: $PORTEIRO_CONFIG, else ./gateway.toml]
    #[arg(long, global = true, env = "PORTEIRO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print a summary, without serving.
    Check,
    /// Write a self-signed certificate and key for local HTTPS.
    DevCert {
        /// Directory to write gateway.crt and gateway.key into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Host names and IP addresses the certificate is valid for.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.clone().unwrap_or_else(|| PathBuf::from("gateway.toml"));
    match cli.command {
        Some(Command::DevCert { out, hosts }) => match porteiro::devcert::write(&out, &hosts) {
            Ok((crt, key)) => {
                println!("wrote {} and {}", crt.display(), key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Check) => match Config::from_path(&path) {
            Ok(config) => {
                for w in &config.warnings {
                    eprintln!("warning: {w}");
                }
                print_summary(&path, &config);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        None => match Config::from_path(&path) {
            Ok(config) => {
                // Kept to the end: dropping it writes out what is queued,
                // the error below included.
                let _logging = init_logging(config.server.log_format);
                match serve(path, config) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        error!("{e:#}");
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Logs to stderr through a writer thread: the request path only queues a
/// formatted line (the access log's among them) and never waits on stderr.
/// Lines written while the queue is full (a stderr that stopped reading)
/// are dropped rather than block. The guard flushes the queue when dropped:
/// keep it until the end.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour escapes help a person at a terminal and litter a file, a pipe
    // or journald with `\x1b[...m` sequences.
    let ansi = std::io::stderr().is_terminal();
    // Messages waiting for the writer thread: a runtime worker's batch of
    // lines (at most porteiro::log_batch::BATCH_BYTES) or one line from
    // another thread. The default, 128 000, is a channel of 5 MiB made
    // resident at start (a third of porteiro's idle memory); 1 024 batches
    // are seconds of access log at any rate, far more than the writer falls
    // behind, and at most 8 MiB (beyond, lines are dropped rather than slow
    // a request).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1_024)
        .lossy(true)
        .finish(std::io::stderr());
    let writer = porteiro::log_batch::Batched::new(writer);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        // The same text, written without tracing-subscriber's styling layer
        // (src/log_text.rs).
        LogFormat::Text => builder.fmt_fields(porteiro::log_text::Fields).with_timer(porteiro::log_text::Clock).init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

fn serve(path: PathBuf, config: Config) -> anyhow::Result<()> {
    for w in &config.warnings {
        warn!("{w}");
    }
    let workers = match config.server.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = match workers {
        // One worker: a current-thread runtime avoids cross-thread hand-offs.
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    // A worker that goes idle gives back what it freed (porteiro::memory)
    // and hands the log lines it gathered to the writer thread
    // (porteiro::log_batch).
    let runtime = builder
        .enable_all()
        .on_thread_unpark(porteiro::log_batch::on_unpark)
        .on_thread_park(|| {
            porteiro::log_batch::on_park();
            porteiro::memory::on_park();
        })
        .on_thread_stop(porteiro::log_batch::on_park)
        .build()
        .context("cannot start the async runtime")?;
    runtime.spawn(porteiro::memory::trailing(workers));
    let result = runtime.block_on(run(path, config));
    // The current-thread runtime's worker is this thread: it gathers no
    // more lines (the runtime's teardown logs line by line), and what it
    // gathered goes now.
    porteiro::log_batch::on_park();
    result
}

async fn run(path: PathBuf, config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let running = porteiro::start(config).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // App::reload counts its own outcome; only a file that does
                // not load is counted here.
                let reloaded = match Config::from_path(&path) {
                    Err(e) => {
                        running.app.metrics().reload(false);
                        Err(e.to_string())
                    }
                    Ok(c) => {
                        let warnings = c.warnings.clone();
                        running.app.reload(c).map_err(|e| e.to_string()).map(|()| warnings)
                    }
                };
                match reloaded {
                    Ok(warnings) => {
                        warnings.iter().for_each(|w| warn!("{w}"));
                        info!(config = %path.display(), "configuration reloaded");
                    }
                    Err(e) => {
                        error!(config = %path.display(), "reload refused, still serving the previous configuration: {e}");
                    }
                }
            }
        }
    }
    info!("shutting down");
    running.shutdown();
    // A second signal skips what is left of server.shutdown_delay_seconds.
    let stop = running.stop_token();
    let wait = running.wait();
    tokio::pin!(wait);
    tokio::select! {
        () = &mut wait => {}
        _ = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } } => {
            info!("second signal: stop accepting now");
            stop.cancel();
            wait.await;
        }
    }
    info!("stopped");
    Ok(())
}

fn print_summary(path: &std::path::Path, config: &Config) {
    let s = &config.server;
    println!("{}: OK", path.display());
    println!(
        "listen     {} ({}){}",
        s.listen,
        if s.tls.is_some() { "https" } else { "http" },
        s.admin_listen.map(|a| format!(", admin {a}")).unwrap_or_default()
    );
    println!("public_url {}", s.public_url);
    println!("session    {} min, cookie {}", config.session.validity.as_secs() / 60, config.session.cookie_name);
    // The Redis URL may carry a password: only the prefix is shown.
    match &config.session.store {
        porteiro::config::StoreKind::Memory => println!("store      memory"),
        porteiro::config::StoreKind::Redis { prefix, .. } => println!("store      redis, prefix {prefix}"),
    }
    println!("providers  {}", config.providers.len());
    for p in &config.providers {
        let detail = match &p.kind {
            ProviderKind::Jwt(j) => {
                format!(
                    "jwt     issuer={} login_url={}{}",
                    j.token.issuer,
                    j.login_url,
                    if j.demo_login { " (demo login)" } else { "" }
                )
            }
            ProviderKind::Code(c) => format!("code    login_url={} clients={}", c.login_url, c.clients.len()),
            ProviderKind::Bearer(b) => format!("bearer  issuer={}", b.token.issuer),
            ProviderKind::Oidc(o) => format!("oidc    issuer={} client_id={}", o.issuer, o.client_id),
            ProviderKind::Saml(m) => format!("saml    entity_id={}", m.entity_id),
        };
        println!("  {} {detail}", p.id);
    }
    println!("routes     {}", config.routes.len());
    for r in &config.routes {
        let upstream = match &r.upstream {
            Upstream::Http { scheme, authority } => format!("{scheme}://{authority}"),
            Upstream::Whoami => "builtin:whoami".to_string(),
        };
        let access = match &r.access {
            Access::Public => "public".to_string(),
            Access::Protected { login, bearer } => {
                let mut parts = Vec::new();
                if let Some(l) = login {
                    parts.push(format!("login={l}"));
                }
                if !bearer.is_empty() {
                    parts.push(format!("bearer={}", bearer.join(",")));
                }
                parts.join(" ")
            }
        };
        let signed = match &r.identity_jwt {
            None => String::new(),
            Some(IdentityAudience::RequestHost) => " identity_jwt".to_string(),
            Some(IdentityAudience::Fixed(aud)) => format!(" identity_jwt aud={aud}"),
        };
        let host = r.id.strip_suffix(&r.path_prefix).unwrap_or("*");
        println!("  {host}{} -> {upstream}  [{access}{signed}]", r.path_prefix);
    }
}
