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
fn shutdown_delay_defaults_to_0_and_is_bounded() {
    assert_eq!(load(MINIMAL).map(|c| c.server.shutdown_delay).ok(), Some(Duration::ZERO));
    let five =
        MINIMAL.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8080\"\nshutdown_delay_seconds = 5");
    assert_eq!(load(&five).map(|c| c.server.shutdown_delay).ok(), Some(Duration::from_secs(5)));
    let long = five.replace("= 5", "= 3601");
    let e = load(&long).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(e, "test.toml:4:26: server.shutdown_delay_seconds: must be between 0 and 3600");
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

fn session_err(body: &str) -> String {
    load(&format!("{MINIMAL}\n[session]\n{body}")).err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn redis_store_takes_url_and_prefix() {
    let c = load(&format!("{MINIMAL}\n[session]\nstore = \"redis\"\nredis_url = \"redis://:pw@127.0.0.1:6379/2\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let StoreKind::Redis { url, prefix } = &c.session.store else { panic!("{:?}", c.session.store) };
    assert_eq!(url.expose(), b"redis://:pw@127.0.0.1:6379/2");
    assert_eq!(prefix, "porteiro:");
    assert!(!format!("{:?}", c.session).contains("pw@"), "the URL is a secret");
    let c = load(&format!(
        "{MINIMAL}\n[session]\nstore = \"redis\"\nredis_url = \"rediss://r.example:6380\"\nredis_prefix = \"kb:\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&c.session.store, StoreKind::Redis { prefix, .. } if prefix == "kb:"));
    let c =
        load(&format!("{MINIMAL}\n[session]\nstore = \"redis\"\nredis_url = \"redis+unix:///run/redis/redis.sock\"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&c.session.store, StoreKind::Redis { url, .. } if url.expose() == b"redis+unix:///run/redis/redis.sock")
    );
}

#[test]
fn redis_url_from_a_file() {
    // `set_var` is unsafe in edition 2024 (and unsafe is forbidden), so the
    // secret comes from a file; both forms go through `secret::resolve`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis-url");
    std::fs::write(&path, "redis://127.0.0.1:1\n").unwrap();
    let text = format!("{MINIMAL}\n[session]\nstore = \"redis\"\nredis_url = \"file:{}\"\n", path.display());
    let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&c.session.store, StoreKind::Redis { url, .. } if url.expose() == b"redis://127.0.0.1:1"));
}

#[test]
fn redis_settings_must_go_together() {
    let e = session_err("store = \"redis\"\n");
    assert!(e.contains("session.store") && e.contains("redis_url") && e.contains(":11:"), "{e}");
    let e = session_err("redis_url = \"redis://127.0.0.1\"\n");
    assert!(e.contains("session.redis_url") && e.contains("only used with"), "{e}");
    let e = session_err("store = \"memory\"\nredis_prefix = \"x:\"\n");
    assert!(e.contains("session.redis_prefix"), "{e}");
    let e = session_err("store = \"disk\"\n");
    assert!(e.contains("session.store") && e.contains("\"redis\""), "{e}");
}

#[test]
fn bad_redis_urls_are_refused_without_echoing_them() {
    for (url, why) in [
        ("http://:hunter2@127.0.0.1", "redis://"),
        ("redis://:hunter2@", "host"),
        ("redis://:hunter2@h/x", "database"),
        ("redis://:hunter2@h?db=1", "query"),
        ("redis+unix://hunter2/redis.sock", "redis+unix:///absolute"),
        ("redis+unix:///run/redis.sock?hunter2=1", "query"),
    ] {
        let e = session_err(&format!("store = \"redis\"\nredis_url = \"{url}\"\n"));
        assert!(e.contains("session.redis_url") && e.contains(why), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let e = session_err("store = \"redis\"\nredis_url = \"redis://h\"\nredis_prefix = \"a b\"\n");
    assert!(e.contains("session.redis_prefix"), "{e}");
}

mod saml_signing {
    use std::path::Path;

    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};

    use super::*;

    const IDP_METADATA: &str = r#"<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example/"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/></IDPSSODescriptor></EntityDescriptor>"#;

    fn cert_for(key: &PKey<Private>) -> Vec<u8> {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "sp.porteiro.test").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    fn rsa(bits: u32) -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
    }

    /// A saml provider with `extra` keys, the files written to `dir`.
    fn config(dir: &Path, extra: &str) -> String {
        let metadata = dir.join("idp.xml");
        std::fs::write(&metadata, IDP_METADATA).unwrap();
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n\n[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n\
             [[providers]]\nid = \"azure\"\nkind = \"saml\"\nidp_metadata_file = \"{}\"\n{extra}\n\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"builtin:whoami\"\nlogin = \"azure\"\n",
            metadata.display()
        )
    }

    fn write_pair(dir: &Path, key: &PKey<Private>, cert: &[u8]) -> String {
        let (k, c) = (dir.join("sp.key"), dir.join("sp.crt"));
        std::fs::write(&k, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(&c, cert).unwrap();
        format!("sp_key_file = \"{}\"\nsp_cert_file = \"{}\"", k.display(), c.display())
    }

    fn error(text: &str) -> String {
        load(text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_matching_rsa_pair_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa(2048);
        let cert = cert_for(&key);
        let c = load(&config(dir.path(), &write_pair(dir.path(), &key, &cert))).unwrap_or_else(|e| panic!("{e}"));
        let ProviderKind::Saml(saml) = &c.providers[0].kind else { panic!("a saml provider") };
        let signing = saml.signing.as_ref().expect("signing configured");
        assert_eq!(signing.cert_der, X509::from_pem(&cert).unwrap().to_der().unwrap());
        assert!(!format!("{signing:?}").contains("PRIVATE"), "the key never shows in Debug");
        let unsigned = load(&config(dir.path(), "")).unwrap_or_else(|e| panic!("{e}"));
        let ProviderKind::Saml(saml) = &unsigned.providers[0].kind else { panic!("a saml provider") };
        assert!(saml.signing.is_none());
    }

    #[test]
    fn half_a_pair_names_the_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = error(&config(dir.path(), "sp_key_file = \"/nonexistent/sp.key\""));
        assert!(e.contains("providers[0].sp_key_file: sp_key_file needs sp_cert_file"), "{e}");
        assert!(e.contains("test.toml:11:"), "{e}");
        let e = error(&config(dir.path(), "sp_cert_file = \"/nonexistent/sp.crt\""));
        assert!(e.contains("providers[0].sp_cert_file: sp_cert_file needs sp_key_file"), "{e}");
    }

    #[test]
    fn unreadable_or_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e =
            error(&config(dir.path(), "sp_key_file = \"/nonexistent/sp.key\"\nsp_cert_file = \"/nonexistent/sp.crt\""));
        assert!(e.contains("providers[0].sp_key_file: cannot read /nonexistent/sp.key"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = error(&config(dir.path(), &format!("sp_key_file = \"{0}\"\nsp_cert_file = \"{0}\"", junk.display())));
        assert!(e.contains("providers[0].sp_key_file: not a PEM private key"), "{e}");
        let key = rsa(2048);
        let keys = write_pair(dir.path(), &key, b"not a certificate");
        let e = error(&config(dir.path(), &keys));
        assert!(e.contains("providers[0].sp_cert_file: not a PEM certificate"), "{e}");
    }

    #[test]
    fn a_certificate_of_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = cert_for(&rsa(2048));
        let e = error(&config(dir.path(), &write_pair(dir.path(), &rsa(2048), &other)));
        assert!(e.contains("providers[0].sp_cert_file: the certificate is not for the key in sp_key_file"), "{e}");
    }

    #[test]
    fn weak_or_non_rsa_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = rsa(1024);
        let e = error(&config(dir.path(), &write_pair(dir.path(), &short, &cert_for(&short))));
        assert!(e.contains("must be RSA, at least 2048 bits"), "{e}");
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let e = error(&config(dir.path(), &write_pair(dir.path(), &ec, &cert_for(&ec))));
        assert!(e.contains("providers[0].sp_key_file: the SP signing key must be RSA"), "{e}");
    }

    #[test]
    fn only_saml_providers_take_an_sp_key() {
        let text = MINIMAL.replace(
            "[[routes]]",
            "[[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = \"https://id.example\"\n\
             secret = \"0123456789abcdef0123456789abcdef\"\nsp_key_file = \"k\"\n\n[[routes]]",
        );
        let e = error(&text);
        assert!(e.contains("sp_key_file does not apply to kind = \"bearer\""), "{e}");
    }
}

#[test]
fn api_keys_need_a_login_and_durable_storage() {
    let base = r#"
[server]
listen = "127.0.0.1:8080"
STATE

[session]
secret = "0123456789abcdef0123456789abcdef"
LIMIT

[[providers]]
id = "intranet"
kind = "jwt"
login_url = "https://login.test/"
issuer = "intranet.test"
secret = "0123456789abcdef0123456789abcdef"

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:3000"
login = "intranet"
api_keys = true
"#;
    let text = base.replace("STATE", "").replace("LIMIT", "");
    let e = load(&text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("test.toml:21:12: routes[0].api_keys: API keys must survive restarts"), "{e}");
    let c = load(&base.replace("STATE", "state_dir = \"/tmp/x\"").replace("LIMIT", "")).unwrap();
    assert!(c.routes[0].api_keys);
    assert_eq!(c.session.api_keys_per_user, 20);
    let c = load(&base.replace("STATE", "state_dir = \"/tmp/x\"").replace("LIMIT", "api_keys_per_user = 3")).unwrap();
    assert_eq!(c.session.api_keys_per_user, 3);
    let e = load(&base.replace("STATE", "state_dir = \"/tmp/x\"").replace("LIMIT", "api_keys_per_user = 0"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("session.api_keys_per_user: must be between 1 and 10000"), "{e}");
    let bearer_only = base
        .replace("STATE", "state_dir = \"/tmp/x\"")
        .replace("LIMIT", "")
        .replace("login = \"intranet\"", "bearer = [\"api\"]")
        .replace("[[routes]]", "[[providers]]\nid = \"api\"\nkind = \"bearer\"\nissuer = \"https://i.test\"\njwks_url = \"https://i.test/jwks\"\naudience = \"a\"\nalgorithms = [\"RS256\"]\n\n[[routes]]");
    let e = load(&bearer_only).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("routes[0].api_keys: API keys are minted by users of a login provider"), "{e}");
}

#[test]
fn rate_limits_have_generous_defaults_and_checked_values() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(
        c.rate_limit,
        RateLimitConfig { login_per_minute: 300, failed_auth_per_minute: 120, max_clients: 100_000 }
    );
    let c = load(&format!("{MINIMAL}\n[rate_limit]\nlogin_per_minute = 0\nmax_clients = 500\n")).unwrap();
    assert_eq!((c.rate_limit.login_per_minute, c.rate_limit.max_clients), (0, 500));
    let e = load(&format!("{MINIMAL}\n[rate_limit]\nmax_clients = 5\n")).err().map(|e| e.to_string()).unwrap();
    assert!(e.starts_with("test.toml:11:15: rate_limit.max_clients: must be between 100 and"), "{e}");
    let e = load(&format!("{MINIMAL}\n[rate_limit]\nlogins = 5\n")).err().map(|e| e.to_string()).unwrap();
    assert!(e.contains("unknown field `logins`"), "{e}");
}

/// A config with one OIDC provider `op` (discovery) and `extra` keys in its table.
fn oidc_provider(extra: &str) -> String {
    format!(
        "{MINIMAL}\n[session]\nsecret = \"a-session-secret-of-32-bytes-or-more\"\n\n\
         [[providers]]\nid = \"op\"\nkind = \"oidc\"\nissuer = \"https://op.example.com\"\n\
         client_id = \"c\"\nclient_secret = \"s\"\n{extra}\n"
    )
}

fn oidc_of(c: &Config) -> OidcConfig {
    match &c.providers[0].kind {
        ProviderKind::Oidc(o) => o.clone(),
        _ => panic!("an oidc provider"),
    }
}

#[test]
fn oidc_logout_settings() {
    let (provider, oidc) = (oidc_provider, oidc_of);
    let c = load(&provider("")).unwrap_or_else(|e| panic!("{e}"));
    assert!(oidc(&c).logout_at_provider, "on by default");
    let c = load(&provider("logout_at_provider = false")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!oidc(&c).logout_at_provider);
    // With discovery, the end-session endpoint is discovered, not set.
    let e = load(&provider("end_session_endpoint = \"https://op.example.com/logout\""))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("providers[0].end_session_endpoint") && e.contains("explicit endpoints"), "{e}");
    let explicit = "authorization_endpoint = \"https://op.example.com/auth\"\n\
                    token_endpoint = \"https://op.example.com/token\"\njwks_uri = \"https://op.example.com/jwks\"\n";
    let c = load(&provider(&format!("{explicit}end_session_endpoint = \"https://op.example.com/logout\"")))
        .unwrap_or_else(|e| panic!("{e}"));
    let end = oidc(&c).endpoints.and_then(|e| e.end_session);
    assert_eq!(end.as_deref(), Some("https://op.example.com/logout"));
    let e = load(&provider(&format!("{explicit}end_session_endpoint = \"/logout\"")))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("end_session_endpoint") && e.contains("absolute"), "{e}");
}

#[test]
fn identity_jwt_needs_an_identity_and_the_session_secret() {
    let base = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "https://sso.example.com"

[[providers]]
id = "api"
kind = "bearer"
issuer = "https://i.test"
jwks_url = "https://i.test/jwks"
audience = "a"
algorithms = ["RS256"]

[[routes]]
host = "app.example.com"
path_prefix = "/"
upstream = "http://127.0.0.1:3000"
bearer = ["api"]
ROUTE

SESSION
"#;
    let with = |session: &str, route: &str| base.replace("SESSION", session).replace("ROUTE", route);
    let c = load(&with("", "")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.routes[0].identity_jwt, None, "off by default");
    let e = load(&with("", "identity_jwt = true")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.starts_with("test.toml:19:16: routes[0].identity_jwt: the signing key is derived from session.secret"),
        "{e}"
    );
    let literal = format!("[session]\nsecret = \"{}\"", "k".repeat(32));
    let c = load(&with(&literal, "identity_jwt = true")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.routes[0].identity_jwt, Some(IdentityAudience::RequestHost));
    assert!(!c.warnings.iter().any(|w| w.contains("identity_jwt")), "an exact host: {:?}", c.warnings);
    let c = load(&with(&literal, "identity_jwt = true\nidentity_audience = \"helpdesk\"")).unwrap();
    assert_eq!(c.routes[0].identity_jwt, Some(IdentityAudience::Fixed("helpdesk".into())));
    // Without an exact host the client picks the default audience: a warning.
    let any_host = with(&literal, "identity_jwt = true").replace("host = \"app.example.com\"\n", "");
    let c = load(&any_host).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("routes[0].identity_jwt: the audience is")), "{:?}", c.warnings);
    let e = load(&with(&literal, "identity_audience = \"helpdesk\"")).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(e, "test.toml:19:21: routes[0].identity_audience: only used with identity_jwt = true");
    let e = load(&with(&literal, "identity_jwt = true\nidentity_audience = \"two words\""))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("test.toml:20:21: routes[0].identity_audience: must be a name or URL"), "{e}");
    let public = with(&literal, "identity_jwt = true").replace("bearer = [\"api\"]", "public = true");
    let e = load(&public).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(e, "test.toml:19:16: routes[0].identity_jwt: a public route has no identity to sign");
    let e = load(&with(&literal, "identity_jwt = \"yes\"")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("routes[0].identity_jwt") && e.contains("test.toml:19"), "{e}");
}

#[test]
fn oidc_refresh_settings() {
    let (provider, oidc) = (oidc_provider, oidc_of);
    let c = load(&provider("")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!oidc(&c).refresh, "off by default");
    let c = load(&provider("refresh = true")).unwrap_or_else(|e| panic!("{e}"));
    assert!(oidc(&c).refresh);
    assert_eq!(oidc(&c).max_session, Duration::from_secs(1440 * 60), "a day by default");
    let c = load(&provider("refresh = true\nmax_session_minutes = 600")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(oidc(&c).max_session, Duration::from_secs(600 * 60));
    let e = load(&provider("refresh = true\nmax_session_minutes = 1")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("test.toml:20:23: providers[0].max_session_minutes: must be between 5 and 43200"), "{e}");
    let e = load(&provider("max_session_minutes = 600")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("providers[0].max_session_minutes: max_session_minutes goes with refresh = true"), "{e}");
    let e = load(&provider("refresh = \"yes\"")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("refresh"), "{e}");
}
