use super::*;

const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:3000"
public = true
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml")
}

#[test]
fn minimal_config_gets_defaults() {
    let c = load(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.public_url, "http://127.0.0.1:8080");
    assert_eq!(c.server.auth_prefix, "/sso");
    assert_eq!(c.session.validity, Duration::from_secs(900));
    assert_eq!(c.session.cookie_name, "porteiro_session");
    assert_eq!(c.routes[0].access, Access::Public);
    assert_eq!(c.routes[0].id, "*/");
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = MINIMAL.replace("public = true", "public = true\nupstrem = \"x\"");
    let e = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("test.toml:9:1"), "{e}");
    assert!(e.contains("unknown field `upstrem`"), "{e}");
    assert!(e.contains("routes[0]"), "{e}");
}

#[test]
fn bad_upstream_names_key_and_line() {
    let text = MINIMAL.replace("http://127.0.0.1:3000", "ftp://x");
    let e = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(e, "test.toml:7:12: routes[0].upstream: \"ftp://x\": scheme must be http, https, or builtin:whoami");
}

#[test]
fn upstream_with_path_refused() {
    let text = MINIMAL.replace("http://127.0.0.1:3000", "http://127.0.0.1:3000/app");
    assert!(load(&text).is_err());
}

#[test]
fn route_without_access_is_an_error() {
    let text = MINIMAL.replace("public = true", "");
    let e = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("never open by default"), "{e}");
}

#[test]
fn missing_env_secret_names_variable() {
    let text = format!("{MINIMAL}\n[session]\nsecret = \"env:PORTEIRO_TEST_SURELY_UNSET\"\n");
    let e = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("session.secret"), "{e}");
    assert!(e.contains("PORTEIRO_TEST_SURELY_UNSET is not set"), "{e}");
}

#[test]
fn short_session_secret_refused_literal_warned() {
    let text = format!("{MINIMAL}\n[session]\nsecret = \"short\"\n");
    assert!(load(&text).is_err());
    let text = format!("{MINIMAL}\n[session]\nsecret = \"{}\"\n", "k".repeat(32));
    let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings.iter().any(|w| w.contains("literally")), "{:?}", c.warnings);
}

#[test]
fn validity_is_clamped_with_a_warning() {
    for (given, minutes) in [(1, 5), (15, 15), (5000, 1440), (-3, 5)] {
        let text = format!("{MINIMAL}\n[session]\nvalidity_minutes = {given}\n");
        let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.session.validity, Duration::from_secs(minutes * 60), "{given}");
        assert_eq!(c.warnings.iter().any(|w| w.contains("validity_minutes")), given != 15, "{given}");
    }
}

#[test]
fn https_public_url_gets_host_prefixed_cookie() {
    let text = MINIMAL.replace("[server]\n", "[server]\npublic_url = \"https://Help.Example.com/\"\n");
    let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.public_url, "https://help.example.com");
    assert_eq!(c.session.cookie_name, "__Host-porteiro_session");
}

#[test]
fn hosts_and_trusted_proxies_parse() {
    let text = MINIMAL
        .replace("[server]\n", "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n")
        .replace("path_prefix = \"/\"", "host = \"*.Example.com\"\npath_prefix = \"/kb\"");
    let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(c.routes[0].host, Some(HostPattern::Suffix(".example.com".into())));
    let bad = MINIMAL.replace("[server]\n", "[server]\ntrusted_proxies = [\"nope\"]\n");
    assert!(load(&bad).is_err());
}

#[test]
fn syntax_error_has_position() {
    let e = load("[server\nlisten = 1").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("test.toml:1:"), "{e}");
}

#[test]
fn redis_store_is_refused_not_faked() {
    let text = format!("{MINIMAL}\n[session]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n");
    let e = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("session.redis_url") || e.contains("session.store"), "{e}");
    assert!(e.contains("not available"), "{e}");
}
