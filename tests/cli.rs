//! The binary's configuration handling (DESIGN §7): errors name the key and
//! `file:line:col` and stop porteiro before it serves; `porteiro check`
//! validates the committed demo config; `porteiro dev-cert` writes a usable
//! certificate; logs are coloured only on a terminal (DESIGN §9).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::process::{Command, Output, Stdio};

use support::{ConfigFile, binary, run_binary};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs both `porteiro --config F` (serve) and `porteiro check --config F`
/// on `text`; both must fail without serving, with the same message.
fn refused(text: &str) -> (ConfigFile, String) {
    let file = ConfigFile::new(text);
    let serve = run_binary(&["--config", file.path_str()]);
    let check = run_binary(&["check", "--config", file.path_str()]);
    for (what, out) in [("serve", &serve), ("check", &check)] {
        assert!(!out.status.success(), "{what} accepted a bad config: {}", stderr(out));
        assert!(!stderr(out).contains("porteiro listening"), "{what} started serving: {}", stderr(out));
    }
    assert_eq!(stderr(&serve), stderr(&check));
    (file, stderr(&serve))
}

#[test]
fn unknown_key_names_the_key_and_its_line_and_column() {
    let (file, err) = refused(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\n  upstrem = \"http://127.0.0.1:2\"\n",
    );
    assert!(err.contains(&format!("{}:7:3:", file.path.display())), "{err}");
    assert!(err.contains("routes[0].upstrem"), "{err}");
    assert!(err.contains("unknown field `upstrem`"), "{err}");
}

#[test]
fn unknown_key_in_server_table() {
    let (file, err) = refused("[server]\nlisten = \"127.0.0.1:0\"\nlisten_port = 8080\n");
    assert!(err.contains(&format!("{}:3:1: server.listen_port:", file.path.display())), "{err}");
}

#[test]
fn bad_upstream_url_names_the_route_key() {
    let (file, err) = refused(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"ftp://127.0.0.1:3000\"\npublic = true\n",
    );
    assert!(err.contains(&format!("{}:5:12: routes[0].upstream:", file.path.display())), "{err}");
    assert!(err.contains("ftp://127.0.0.1:3000"), "{err}");
}

#[test]
fn unset_secret_variable_is_named() {
    const VAR: &str = "PORTEIRO_TEST_SURELY_UNSET_SECRET";
    assert!(std::env::var_os(VAR).is_none());
    let (_file, err) = refused(&format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[session]\nsecret = \"env:{VAR}\"\n"));
    assert!(err.contains("session.secret"), "{err}");
    assert!(err.contains(VAR), "{err}");
    assert!(err.contains("not set"), "{err}");
}

#[test]
fn route_without_access_is_refused() {
    let (_file, err) = refused("[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"http://127.0.0.1:1\"\n");
    assert!(err.contains("routes[0]"), "{err}");
    assert!(err.contains("never open by default"), "{err}");
}

#[test]
fn check_names_the_redis_store_without_its_url() {
    let file = ConfigFile::new(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[session]\nstore = \"redis\"\n\
         redis_url = \"redis://:hunter2-password@127.0.0.1:6379\"\nredis_prefix = \"kb:\"\n\n\
         [[routes]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\n",
    );
    let out = run_binary(&["check", "--config", file.path_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("store      redis, prefix kb:\n"), "{text}");
    assert!(!text.contains("hunter2") && !stderr(&out).contains("hunter2"), "{text}");
    // Without the store, the URL is an error that names the key and line.
    let (_file, err) = refused(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[session]\nredis_url = \"redis://:hunter2@h\"\n\n\
         [[routes]]\nupstream = \"http://127.0.0.1:1\"\npublic = true\n",
    );
    assert!(err.contains(":5:") && err.contains("session.redis_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn check_accepts_the_committed_demo_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let out = run_binary(&["check", "--config", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("{path}: OK\n")), "{text}");
    assert!(text.contains("providers  1\n  intranet jwt     issuer=intranet.example.com"), "{text}");
    assert!(text.contains("routes     2\n"), "{text}");
    assert!(text.contains("  */status/ -> builtin:whoami  [public]"), "{text}");
    assert!(text.contains("  */ -> builtin:whoami  [login=intranet]"), "{text}");
}

#[test]
fn dev_cert_writes_a_certificate_the_gateway_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let out = run_binary(&["dev-cert", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let crt = out_dir.join("gateway.crt");
    let key = out_dir.join("gateway.key");
    assert!(std::fs::read_to_string(&crt).unwrap().contains("BEGIN CERTIFICATE"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
    }
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        crt.display(),
        key.display()
    );
    let config = porteiro::config::Config::from_toml(&text, "test.toml").unwrap();
    porteiro::App::new(config).unwrap_or_else(|e| panic!("dev cert unusable: {e}"));
}

/// A config whose main listener cannot be bound because the returned
/// listener holds its port: porteiro starts logging, logs the failure as an
/// error and exits at once, with no signal needed to stop it.
fn config_failing_to_bind() -> (std::net::TcpListener, ConfigFile) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = ConfigFile::new(&format!(
        "[server]\nlisten = \"{}\"\n\n[[routes]]\nupstream = \"builtin:whoami\"\npublic = true\n",
        held.local_addr().unwrap()
    ));
    (held, file)
}

#[test]
fn logs_written_to_a_file_carry_no_colour_escapes() {
    let (_held, config) = config_failing_to_bind();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("stderr.log");
    let status = Command::new(binary())
        .args(["--config", config.path_str()])
        .env_remove("PORTEIRO_CONFIG")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .status()
        .unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The tracing line itself, not only the plain `error:` summary.
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("server.listen")), "{log}");
    assert!(!log.contains('\x1b'), "colour escapes in a log file: {log:?}");
}

#[test]
fn logs_written_to_a_terminal_are_coloured() {
    let (_held, config) = config_failing_to_bind();
    // util-linux `script` runs the binary on a pseudo-terminal and copies
    // what it writes there to its own stdout.
    let command = format!("{} --config {}", binary(), config.path_str());
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("PORTEIRO_CONFIG")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = stdout(&out);
    assert!(!out.status.success(), "{screen}");
    let line = screen.lines().find(|l| l.contains("server.listen") && l.contains("ERROR")).unwrap_or_else(|| {
        panic!("no error line on the terminal: {screen:?}");
    });
    assert!(line.contains('\x1b'), "no colour on a terminal: {line:?}");
}

/// DESIGN §8.1: an RSA `public_key_file` under 2048 bits is a config error
/// that names the key, its line and the size, in either PEM form; a
/// 2048-bit key is fine.
#[test]
fn an_rsa_public_key_file_under_2048_bits_is_refused() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let dir = tempfile::tempdir().unwrap();
    let config = |bits: usize, pkcs1: bool| {
        let public = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap().to_public_key();
        let pem = match pkcs1 {
            true => public.to_pkcs1_pem(LineEnding::LF).unwrap(),
            false => public.to_public_key_pem(LineEnding::LF).unwrap(),
        };
        let path = dir.path().join(format!("idp-{bits}-{pkcs1}.pem"));
        std::fs::write(&path, pem).unwrap();
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[providers]]\nid = \"api\"\nkind = \"bearer\"\n\
             issuer = \"https://idp.test\"\npublic_key_file = \"{}\"\n\n\
             [[routes]]\nupstream = \"http://127.0.0.1:1\"\nbearer = [\"api\"]\n",
            path.display()
        )
    };
    for pkcs1 in [false, true] {
        let (file, err) = refused(&config(1024, pkcs1));
        assert!(err.contains(&format!("{}:8:", file.path.display())), "{err}");
        assert!(err.contains("providers[0].public_key_file"), "{err}");
        assert!(err.contains("an RSA key of 1024 bits") && err.contains("under 2048 bits"), "{err}");
    }
    let fine = ConfigFile::new(&config(2048, false));
    let out = run_binary(&["check", "--config", fine.path_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}
