//! Helpers for the SAML end-to-end tests (`tests/saml_*.rs`).
//!
//! The identity provider is real and written by others: pysaml2 (PyPI),
//! driven by the small HTTP wrapper `tests/saml-idp/idp.py`, signing with the
//! `xmlsec1` binary. Each test gets its own IdP process, its own key pairs
//! (made with the `openssl` command in a temp directory) and its own
//! porteiro, all on `127.0.0.1`, each binding port 0 and keeping it:
//!
//! 1. the IdP starts and says its URL;
//! 2. porteiro starts with the IdP's metadata, from a file or its URL, and
//!    `public_url` = `http://porteiro.test` (the ACS URL derives from it;
//!    the tests post to the real listener whatever it names);
//! 3. the IdP is told (on its stdin) porteiro's real `/sso/saml/metadata`
//!    URL, the SP metadata it reads when the first AuthnRequest comes, as
//!    an administrator pastes it into Azure AD.
//!
//! [`Saml`] then walks a login hop by hop with a client that never follows
//! redirects: [`Saml::begin`] (protected page -> 302 to `/sso/start` -> 302
//! to the IdP), [`Saml::idp_answer`] (the IdP's auto-submitting form),
//! [`Saml::post_acs`] (the form's POST to porteiro). An [`attempt_jar`] keeps
//! the login-attempt cookies porteiro sets for `/sso/` (each test's default
//! one is [`Saml::browser`]; the `_in` variants take another one). The
//! XML helpers at the bottom edit a signed Response the way an attacker
//! would.
//!
//! Missing tools (python3, pysaml2, xmlsec1, openssl) fail the test with
//! what to install: these tests never skip. `PYTHON` names another
//! interpreter (a virtualenv's) than `python3` on PATH.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]
#![allow(dead_code, reason = "each test binary uses a different part of the helpers")]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::browser::Jar;
#[allow(unused_imports, reason = "re-exported for the test binaries that use them")]
pub use super::{Echo, FakeUpstream, Gateway, RunningUpstream, SESSION_COOKIE as COOKIE, client_builder, parse_config};

/// Azure AD (Entra ID) claim names, as the test IdP sends them.
pub const EMAIL_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";
pub const NAME_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
pub const GROUPS_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups";

/// The IdP's fixed user.
pub const USER_EMAIL: &str = "carol@clockin.example";
pub const USER_NAME: &str = "Carol Clock";
pub const USER_GROUPS: &str = "timekeepers,backoffice";

/// The provider id in every test config.
pub const PROVIDER: &str = "azure";
const SESSION_SECRET: &str = "saml-test-session-secret-0123456789abcdef";

/// How long the IdP may take to start or answer (Python, pysaml2 and
/// xmlsec1 on two busy cores).
const PATIENCE: Duration = Duration::from_secs(20);

/// `server.public_url` of the tests: the ACS URL derives from it, and
/// nothing needs to resolve it (the tests post to porteiro's listener).
pub const PUBLIC_URL: &str = "http://porteiro.test";

// === tools ===

/// The programs the tests need, found once per test binary.
pub struct Tools {
    pub python: String,
    pub xmlsec1: PathBuf,
}

/// Finds python3 with pysaml2, xmlsec1 and openssl, or fails the test with
/// what to install.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    match TOOLS.get_or_init(find_tools) {
        Ok(t) => t,
        Err(e) => panic!(
            "the SAML end-to-end tests need a real IdP and cannot run: {e}\n\
             Install it as .ci/run does:\n  \
             apt-get install xmlsec1 openssl python3-pip\n  \
             python3 -m pip install -r tests/saml-idp/requirements.txt"
        ),
    }
}

fn find_tools() -> Result<Tools, String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import saml2, sys; sys.stdout.write(saml2.__version__)"])
        .output()
        .map_err(|e| format!("{python} not found ({e})"))?;
    if !probe.status.success() {
        return Err(format!(
            "{python} cannot import pysaml2 (saml2): {}",
            String::from_utf8_lossy(&probe.stderr).lines().last().unwrap_or("")
        ));
    }
    let xmlsec1 = which("xmlsec1").ok_or("the xmlsec1 binary is not on PATH (Debian package xmlsec1)")?;
    which("openssl").ok_or("the openssl binary is not on PATH (Debian package openssl)")?;
    Ok(Tools { python, xmlsec1 })
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// A self-signed RSA-2048 key pair (the IdP's or the SP's), written to `dir`.
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}.porteiro.test"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    (key, cert)
}

// === the IdP ===

/// pysaml2 behind `tests/saml-idp/idp.py`. Killed on drop; it also exits by
/// itself when its standard input closes.
pub struct Idp {
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    entity_id: Option<String>,
    cert: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Idp {
    /// Starts the IdP with a fresh key pair (and a second one it signs with
    /// on `signer=alt`); [`Idp::read_sp_metadata_from`] says where the SP
    /// metadata is. Its entity id is its metadata URL unless `entity_id`
    /// says otherwise. With `want_signed_requests` it refuses AuthnRequests
    /// that are not signed by the key in the SP's metadata.
    pub async fn start(dir: &Path, entity_id: Option<&str>, want_signed_requests: bool) -> Idp {
        let tools = tools();
        let (key, cert) = key_pair(dir, "idp");
        let (alt_key, alt_cert) = key_pair(dir, "stranger");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/saml-idp/idp.py");
        let mut child = tokio::process::Command::new(&tools.python)
            .arg(&script)
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--alt-key")
            .arg(&alt_key)
            .arg("--alt-cert")
            .arg(&alt_cert)
            .arg("--xmlsec")
            .arg(&tools.xmlsec1)
            .args(entity_id.map(|e| ["--entity-id", e]).into_iter().flatten())
            .args(want_signed_requests.then_some("--want-signed-requests"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let log = super::collect_lines(child.stderr.take().unwrap()).0;
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(PATIENCE, stdout.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("the test IdP did not start:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let started: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let url = started["url"].as_str().unwrap().to_string();
        let stdin = child.stdin.take().unwrap();
        Idp { child, stdin, stdout, url, entity_id: entity_id.map(str::to_string), cert, log }
    }

    /// Tells the IdP where porteiro's SP metadata is (one JSON line on its
    /// stdin) and waits for its acknowledgement, so no AuthnRequest can
    /// arrive before it knows.
    pub async fn read_sp_metadata_from(&mut self, url: &str) {
        let line = format!("{}\n", serde_json::json!({ "sp_metadata_url": url }));
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let ack = tokio::time::timeout(PATIENCE, self.stdout.next_line()).await;
        match ack {
            Ok(Ok(Some(ack))) => assert!(ack.contains(url), "the IdP answered {ack:?}"),
            _ => panic!("the IdP did not take the SP metadata URL:\n{}", self.log()),
        }
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/metadata", self.url)
    }

    /// The IdP's entity id (by default pysaml2's is its metadata URL).
    pub fn entity_id(&self) -> String {
        self.entity_id.clone().unwrap_or_else(|| self.metadata_url())
    }

    /// The signing certificate, base64 DER as metadata carries it.
    pub fn cert_base64(&self) -> String {
        read(&self.cert).lines().filter(|l| !l.starts_with("-----")).collect()
    }

    pub fn sso_url(&self) -> String {
        format!("{}/sso/redirect", self.url)
    }

    /// What the IdP wrote to stderr (its request log and errors).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub async fn metadata(&self) -> String {
        let resp = client().get(self.metadata_url()).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.unwrap()
    }
}

// === porteiro with one saml provider ===

/// How a test wants porteiro set up; [`Setup::start`] starts everything.
#[derive(Clone, Debug)]
pub struct Setup {
    azure_metadata: bool,
    metadata_from_url: bool,
    entity_id: Option<String>,
    leeway: Option<u64>,
    attributes: bool,
    public_url: Option<String>,
    route_extra: String,
    sp_signing: bool,
    idp_wants_signed: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// IdP metadata from a file; email, name and groups from the Azure AD
    /// claims; default leeway and entity id; one protected route `/`.
    pub fn new() -> Setup {
        Setup {
            azure_metadata: false,
            metadata_from_url: false,
            entity_id: None,
            leeway: None,
            attributes: true,
            public_url: None,
            route_extra: String::new(),
            sp_signing: false,
            idp_wants_signed: false,
        }
    }

    /// The IdP plays an Azure AD tenant: issuer `https://sts.windows.net/
    /// {tenant}/`, and `idp_metadata_file` is shaped like Azure AD's
    /// Federation Metadata XML (WS-Federation role descriptors, a metadata
    /// signature, several endpoints) around the IdP's certificate and SSO URL.
    pub fn azure_metadata(mut self) -> Setup {
        self.azure_metadata = true;
        self
    }

    /// `idp_metadata_url` instead of `idp_metadata_file`.
    pub fn metadata_url(mut self) -> Setup {
        self.metadata_from_url = true;
        self
    }

    pub fn entity_id(mut self, id: &str) -> Setup {
        self.entity_id = Some(id.into());
        self
    }

    pub fn leeway(mut self, seconds: u64) -> Setup {
        self.leeway = Some(seconds);
        self
    }

    /// No `email_attribute`/`name_attribute`/`groups_attribute`: the email
    /// is the NameID.
    pub fn no_attributes(mut self) -> Setup {
        self.attributes = false;
        self
    }

    /// A `public_url` other than `http://127.0.0.1:PORT` (a TLS terminator
    /// in front); the tests still talk to the plain listener.
    pub fn public_url(mut self, url: &str) -> Setup {
        self.public_url = Some(url.into());
        self
    }

    /// porteiro signs its AuthnRequests (`sp_key_file`, `sp_cert_file`: a
    /// fresh RSA pair) and the IdP requires signed requests.
    pub fn signed_requests(mut self) -> Setup {
        self.sp_signing = true;
        self.idp_wants_signed = true;
        self
    }

    /// The IdP requires signed AuthnRequests, whether or not porteiro signs.
    pub fn idp_wants_signed_requests(mut self) -> Setup {
        self.idp_wants_signed = true;
        self
    }

    /// More keys for the protected route (`allow = {...}`).
    pub fn route(mut self, toml: &str) -> Setup {
        self.route_extra.push_str(toml);
        self.route_extra.push('\n');
        self
    }

    pub async fn start(self) -> Saml {
        tools();
        let dir = tempfile::tempdir().unwrap();
        let entity_id = self.azure_metadata.then_some(AZURE_ISSUER);
        let mut idp = Idp::start(dir.path(), entity_id, self.idp_wants_signed).await;
        let upstream = FakeUpstream::new("clockin").start().await;
        let public_url = self.public_url.clone().unwrap_or_else(|| PUBLIC_URL.into());
        let toml = self.toml(&public_url, &idp, dir.path(), &upstream).await;
        let gateway = Gateway::start(parse_config(&toml)).await;
        let base = gateway.base.clone();
        idp.read_sp_metadata_from(&format!("{base}/sso/saml/metadata")).await;
        let admin = gateway.admin.clone().unwrap();
        let entity_id = self.entity_id.clone().unwrap_or_else(|| format!("{public_url}/sso/saml/metadata"));
        let saml = Saml {
            dir,
            idp,
            gateway,
            upstream,
            base,
            admin,
            public_url,
            entity_id,
            toml,
            client: client(),
            browser: attempt_jar(),
        };
        saml.wait_ready().await;
        saml
    }

    async fn toml(&self, public_url: &str, idp: &Idp, dir: &Path, up: &RunningUpstream) -> String {
        let q = |s: &str| toml::Value::String(s.into()).to_string();
        let metadata = if self.metadata_from_url {
            format!("idp_metadata_url = {}", q(&idp.metadata_url()))
        } else {
            let file = dir.join("idp-metadata.xml");
            let xml = if self.azure_metadata {
                azure_federation_metadata(&idp.entity_id(), &idp.cert_base64(), &idp.sso_url())
            } else {
                idp.metadata().await
            };
            std::fs::write(&file, xml).unwrap();
            format!("idp_metadata_file = {}", q(file.to_str().unwrap()))
        };
        let mut provider = format!("id = {}\nkind = \"saml\"\n{metadata}\n", q(PROVIDER));
        if self.attributes {
            provider.push_str(&format!(
                "email_attribute = {}\nname_attribute = {}\ngroups_attribute = {}\n",
                q(EMAIL_CLAIM),
                q(NAME_CLAIM),
                q(GROUPS_CLAIM)
            ));
        }
        if let Some(e) = &self.entity_id {
            provider.push_str(&format!("entity_id = {}\n", q(e)));
        }
        if let Some(l) = self.leeway {
            provider.push_str(&format!("leeway_seconds = {l}\n"));
        }
        if self.sp_signing {
            let (key, cert) = key_pair(dir, "sp");
            provider.push_str(&format!(
                "sp_key_file = {}\nsp_cert_file = {}\n",
                q(key.to_str().unwrap()),
                q(cert.to_str().unwrap())
            ));
        }
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = {}\n\n\
             [session]\nsecret = {}\n\n[[providers]]\n{provider}\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = {}\nlogin = {}\n{}",
            q(public_url),
            q(SESSION_SECRET),
            q(&up.url()),
            q(PROVIDER),
            self.route_extra
        )
    }
}

/// The issuer of the Azure AD tenant the IdP plays in [`Setup::azure_metadata`].
pub const AZURE_ISSUER: &str = "https://sts.windows.net/6f1c2b1e-3d5a-4c7e-9b0a-2f8d4e6a1c3b/";

/// A document shaped like Azure AD's Federation Metadata XML (WS-Federation
/// 1.2 extending SAML metadata): an `ID`, an enveloped metadata signature
/// (porteiro does not check it: the file or the https URL is trusted), two
/// `RoleDescriptor`s with `xsi:type` and `fed:` children, then the
/// IDPSSODescriptor with the signing key, SingleLogoutService and the
/// SingleSignOnService for both bindings.
pub fn azure_federation_metadata(entity_id: &str, cert_b64: &str, sso_url: &str) -> String {
    let key = format!(
        "<KeyDescriptor use=\"signing\"><KeyInfo xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><X509Data>\
         <X509Certificate>{cert_b64}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
    );
    let claims = [EMAIL_CLAIM, NAME_CLAIM, GROUPS_CLAIM]
        .iter()
        .map(|c| {
            format!(
                "<auth:ClaimType Uri=\"{c}\" xmlns:auth=\"http://docs.oasis-open.org/wsfed/authorization/200706\">\
                 <auth:DisplayName>claim</auth:DisplayName></auth:ClaimType>"
            )
        })
        .collect::<String>();
    format!(
        r##"<?xml version="1.0" encoding="utf-8"?><EntityDescriptor ID="_0b9e6a4c-52d1-4b8e-9f3a-7c1d2e5f8a90" entityID="{entity_id}" xmlns="urn:oasis:names:tc:SAML:2.0:metadata"><Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo><CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><Reference URI="#_0b9e6a4c-52d1-4b8e-9f3a-7c1d2e5f8a90"><Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></Transforms><DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue>AAAA</DigestValue></Reference></SignedInfo><SignatureValue>AAAA</SignatureValue><KeyInfo><X509Data><X509Certificate>{cert_b64}</X509Certificate></X509Data></KeyInfo></Signature><RoleDescriptor xsi:type="fed:SecurityTokenServiceType" protocolSupportEnumeration="http://docs.oasis-open.org/wsfed/federation/200706" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:fed="http://docs.oasis-open.org/wsfed/federation/200706">{key}<fed:ClaimTypesOffered>{claims}</fed:ClaimTypesOffered><fed:SecurityTokenServiceEndpoint><wsa:EndpointReference xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>{sso_url}/wsfed</wsa:Address></wsa:EndpointReference></fed:SecurityTokenServiceEndpoint><fed:PassiveRequestorEndpoint><wsa:EndpointReference xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>{sso_url}/wsfed</wsa:Address></wsa:EndpointReference></fed:PassiveRequestorEndpoint></RoleDescriptor><RoleDescriptor xsi:type="fed:ApplicationServiceType" protocolSupportEnumeration="http://docs.oasis-open.org/wsfed/federation/200706" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:fed="http://docs.oasis-open.org/wsfed/federation/200706">{key}<fed:TargetScopes><wsa:EndpointReference xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>{entity_id}</wsa:Address></wsa:EndpointReference></fed:TargetScopes><fed:ApplicationServiceEndpoint><wsa:EndpointReference xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>{sso_url}/wsfed</wsa:Address></wsa:EndpointReference></fed:ApplicationServiceEndpoint><fed:PassiveRequestorEndpoint><wsa:EndpointReference xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>{sso_url}/wsfed</wsa:Address></wsa:EndpointReference></fed:PassiveRequestorEndpoint></RoleDescriptor><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key}<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso_url}/logout"/><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso_url}"/><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{sso_url}/post"/></IDPSSODescriptor></EntityDescriptor>"##
    )
}

/// A client that never follows redirects and keeps no cookies, patient
/// with the IdP.
pub fn client() -> reqwest::Client {
    client_builder().timeout(PATIENCE).build().unwrap()
}

/// A browser's Accept header.
pub const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// One browser's login-attempt cookies (`porteiro_login_*`, `Path=/sso/`),
/// as it would send them to porteiro's `/sso/` endpoints. Only those: the
/// session cookie is handed around explicitly by the tests (what the SAML
/// tests assert hop by hop).
pub fn attempt_jar() -> Jar {
    Jar::only(ATTEMPT_COOKIE)
}

/// The name prefix of porteiro's login-attempt cookies.
pub const ATTEMPT_COOKIE: &str = "porteiro_login_";

/// porteiro, its IdP and its upstream, for one test.
pub struct Saml {
    pub dir: tempfile::TempDir,
    pub idp: Idp,
    pub gateway: Gateway,
    pub upstream: RunningUpstream,
    /// `http://127.0.0.1:PORT`, porteiro's listener.
    pub base: String,
    pub admin: String,
    pub public_url: String,
    pub entity_id: String,
    pub toml: String,
    pub client: reqwest::Client,
    /// The jar of [`Saml::begin`], [`Saml::post_acs`] and friends.
    pub browser: Jar,
}

/// Hop 1's outcome: where porteiro sent the browser.
#[derive(Debug, Clone)]
pub struct Begun {
    /// The IdP URL with `SAMLRequest` and `RelayState`.
    pub location: String,
    pub relay_state: String,
    /// The AuthnRequest, inflated.
    pub request_xml: String,
    /// The `Set-Cookie` lines of the redirect to the IdP.
    pub set_cookies: Vec<String>,
}

impl Begun {
    /// The AuthnRequest's `ID`.
    pub fn request_id(&self) -> String {
        attribute(&self.request_xml, "AuthnRequest", "ID").unwrap()
    }
}

/// Hop 2's outcome: the IdP's auto-submitting form.
#[derive(Debug, Clone)]
pub struct Answer {
    pub action: String,
    /// Base64, as posted.
    pub saml_response: String,
    pub relay_state: String,
}

impl Answer {
    /// The Response XML.
    pub fn xml(&self) -> String {
        decode(&self.saml_response)
    }
}

impl Saml {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn acs_url(&self) -> String {
        format!("{}/sso/saml/acs", self.public_url)
    }

    async fn wait_ready(&self) {
        self.gateway.wait_ready().await;
    }

    /// Hop 1: a browser opens `path` and is sent to the IdP with an
    /// AuthnRequest (HTTP-Redirect) and an opaque RelayState.
    pub async fn begin(&self, path: &str) -> Begun {
        self.begin_in(&self.browser, path).await
    }

    /// [`Saml::begin`] in `browser`: the app's path sends it to
    /// `/sso/start` (where its login-attempt cookies come along), which
    /// sends it to the IdP and sets this attempt's cookie.
    pub async fn begin_in(&self, browser: &Jar, path: &str) -> Begun {
        let resp = self.client.get(self.url(path)).header("accept", BROWSER).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap_or_default());
        assert!(session_cookie(&resp).is_none(), "no session before the IdP answers");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let start = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(start.starts_with("/sso/start?"), "{start}");
        let mut req = self.client.get(self.url(&start)).header("accept", BROWSER);
        if let Some(cookies) = browser.header_if_any() {
            req = req.header("cookie", cookies);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap_or_default());
        assert!(session_cookie(&resp).is_none(), "no session before the IdP answers");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        browser.absorb(&resp);
        let set_cookies =
            resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&format!("{}?", self.idp.sso_url())), "{location}");
        let query: Vec<(String, String)> =
            url::Url::parse(&location).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let request = get("SAMLRequest").unwrap_or_else(|| panic!("no SAMLRequest in {location}"));
        let relay_state = get("RelayState").unwrap_or_else(|| panic!("no RelayState in {location}"));
        Begun { location, relay_state, request_xml: inflate(&request), set_cookies }
    }

    /// Hop 1 on another porteiro serving this SP (a replica, one on a
    /// clock of its own) at `base`, in `jar`: straight to `/sso/start`
    /// with `redirectUrl=path`. Returns the IdP URL and the RelayState.
    pub async fn begin_at(&self, base: &str, jar: &Jar, path: &str) -> Begun {
        let url = format!("{base}/sso/start?redirectUrl={path}");
        let resp = self.client.get(url).header("accept", BROWSER).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{}", resp.text().await.unwrap_or_default());
        jar.absorb(&resp);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let relay_state = url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "RelayState")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no RelayState in {location}"));
        Begun { location, relay_state, request_xml: String::new(), set_cookies: Vec::new() }
    }

    /// Hop 3 on the porteiro at `base`, from `jar`, accepting `accept`:
    /// the status, the session cookie set (if any) and the body.
    pub async fn post_acs_at(
        &self,
        base: &str,
        jar: &Jar,
        answer: &Answer,
        accept: &str,
    ) -> (StatusCode, Option<String>, String) {
        let mut req = self
            .client
            .post(format!("{base}/sso/saml/acs"))
            .header("accept", accept)
            .form(&[("SAMLResponse", answer.saml_response.as_str()), ("RelayState", answer.relay_state.as_str())]);
        if let Some(cookies) = jar.header_if_any() {
            req = req.header("cookie", cookies);
        }
        let resp = req.send().await.unwrap();
        jar.absorb(&resp);
        let status = resp.status();
        let cookie = session_cookie(&resp);
        (status, cookie, resp.text().await.unwrap())
    }

    /// Hop 2: the browser follows the redirect to the IdP, which signs the
    /// user in (a fixed user: there is no login page) and answers with its
    /// auto-submitting form. `knobs` are extra query parameters for the
    /// test IdP (`sign=response`, `audience=...`: see idp.py).
    pub async fn idp_answer(&self, begun: &Begun, knobs: &[(&str, &str)]) -> Answer {
        let mut url = url::Url::parse(&begun.location).unwrap();
        for (k, v) in knobs {
            url.query_pairs_mut().append_pair(k, v);
        }
        let resp = self.client.get(url).header("accept", BROWSER).send().await.unwrap();
        let status = resp.status();
        let page = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "the IdP refused: {page}\n{}", self.idp.log());
        let action = form_attr(&page, "action").unwrap_or_else(|| panic!("no form action: {page}"));
        let saml_response = input_value(&page, "SAMLResponse").unwrap_or_else(|| panic!("no SAMLResponse: {page}"));
        let relay_state = input_value(&page, "RelayState").unwrap_or_else(|| panic!("no RelayState: {page}"));
        Answer { action, saml_response, relay_state }
    }

    /// Hop 3: the browser submits the IdP's form to porteiro's ACS (to the
    /// listener, whatever host `public_url` names).
    pub async fn post_acs(&self, saml_response: &str, relay_state: &str) -> reqwest::Response {
        self.post_acs_in(&self.browser, saml_response, relay_state).await
    }

    /// [`Saml::post_acs`] from `browser`, with the cookies it holds.
    pub async fn post_acs_in(&self, browser: &Jar, saml_response: &str, relay_state: &str) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/sso/saml/acs"))
            .header("accept", BROWSER)
            .form(&[("SAMLResponse", saml_response), ("RelayState", relay_state)]);
        if let Some(cookies) = browser.header_if_any() {
            req = req.header("cookie", cookies);
        }
        let resp = req.send().await.unwrap();
        browser.absorb(&resp);
        resp
    }

    /// A fresh login started at `path` and answered by the IdP with `knobs`.
    pub async fn answer_for(&self, path: &str, knobs: &[(&str, &str)]) -> (Begun, Answer) {
        let begun = self.begin(path).await;
        let answer = self.idp_answer(&begun, knobs).await;
        assert_eq!(answer.relay_state, begun.relay_state, "the IdP echoes RelayState");
        (begun, answer)
    }

    /// A whole login that must succeed; returns the `Cookie` header value.
    pub async fn login(&self, path: &str, knobs: &[(&str, &str)]) -> String {
        let (_, answer) = self.answer_for(path, knobs).await;
        let resp = self.post_acs(&answer.saml_response, &answer.relay_state).await;
        let status = resp.status();
        let cookie = session_cookie(&resp);
        assert_eq!(status, StatusCode::FOUND, "login refused: {}", resp.text().await.unwrap_or_default());
        let cookie = cookie.expect("a session cookie");
        format!("{COOKIE}={cookie}")
    }

    /// `path` as a signed-in browser; the request must reach the upstream.
    pub async fn echo(&self, path: &str, cookie: &str) -> Echo {
        let resp =
            self.client.get(self.url(path)).header("accept", BROWSER).header("cookie", cookie).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap_or_default());
        resp.json().await.unwrap()
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.gateway.metrics().await
    }

    /// `auth_failures` for this provider (`-` when the provider was not known
    /// yet, as for an unknown RelayState) and `reason`.
    pub async fn failures(&self, provider: &str, reason: &str) -> f64 {
        self.gateway.failures(provider, reason).await
    }

    pub async fn logins(&self) -> f64 {
        self.gateway.logins(PROVIDER).await
    }

    /// Posts `saml_response` with `relay_state` and asserts the refusal: the
    /// documented status for `reason` ([`refusal_status`]), no session cookie, nothing sent upstream, no login counted, and
    /// exactly one more failure counted for `reason` (so this mutation, and
    /// nothing else, is what was refused).
    pub async fn assert_refused(&self, saml_response: &str, relay_state: &str, provider: &str, reason: &str) {
        self.assert_refused_in(&self.browser, saml_response, relay_state, provider, reason).await;
    }

    /// [`Saml::assert_refused`] for a POST from `browser`.
    pub async fn assert_refused_in(
        &self,
        browser: &Jar,
        saml_response: &str,
        relay_state: &str,
        provider: &str,
        reason: &str,
    ) {
        let failures = self.failures(provider, reason).await;
        let logins = self.logins().await;
        let hits = self.upstream.hits();
        let resp = self.post_acs_in(browser, saml_response, relay_state).await;
        let status = resp.status();
        let cookies: Vec<String> =
            resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let no_store = resp.headers().get("cache-control").is_some_and(|v| v == "no-store");
        let body = resp.text().await.unwrap();
        assert_eq!(status, refusal_status(reason), "{reason}: {body}");
        assert!(no_store, "{reason}: the refusal is not cached");
        assert!(!cookies.iter().any(|c| c.contains(COOKIE)), "{reason}: a session cookie was set: {cookies:?}");
        assert!(body.contains("Sign-in failed"), "{reason}: a short HTML page for browsers: {body}");
        assert!(!body.contains("..</p>"), "{reason}: one full stop: {body}");
        assert_eq!(
            self.failures(provider, reason).await,
            failures + 1.0,
            "refused, but not for {reason}: {body}\n{}",
            self.metrics().await
        );
        assert_eq!(self.logins().await, logins, "{reason}: no login counted");
        assert_eq!(self.upstream.hits(), hits, "{reason}: nothing went upstream");
    }
}

/// The status README's table of SAML refusals gives `reason`.
pub fn refusal_status(reason: &str) -> StatusCode {
    match reason {
        "unknown_relay_state" | "saml_browser_mismatch" => StatusCode::BAD_REQUEST,
        "response_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// The value of the session cookie a response sets, if any.
pub fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let pair = v.split(';').next()?;
        let (name, value) = pair.split_once('=')?;
        (name.trim() == COOKIE && !value.is_empty()).then(|| value.to_string())
    })
}

/// The whole `Set-Cookie` line of the session cookie.
pub fn session_set_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().starts_with(&format!("{COOKIE}=")) || v.contains(&format!("-{COOKIE}=")))
        .map(str::to_string)
}

// === encodings ===

pub fn decode(b64: &str) -> String {
    String::from_utf8(STANDARD.decode(b64.trim()).unwrap()).unwrap()
}

pub fn encode(xml: &str) -> String {
    STANDARD.encode(xml)
}

/// An HTTP-Redirect binding message: base64 of raw DEFLATE.
fn inflate(b64: &str) -> String {
    let raw = STANDARD.decode(b64).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(raw.as_slice()).read_to_string(&mut xml).unwrap();
    xml
}

fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn form_attr(page: &str, name: &str) -> Option<String> {
    let form = &page[page.find("<form")?..];
    let tag = &form[..form.find('>')?];
    quoted_after(tag, &format!("{name}=\""))
}

fn input_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\""))?;
    let start = page[..at].rfind("<input")?;
    let tag = &page[start..start + page[start..].find('>')?];
    quoted_after(tag, "value=\"")
}

fn quoted_after(tag: &str, prefix: &str) -> Option<String> {
    let from = tag.find(prefix)? + prefix.len();
    let len = tag[from..].find('"')?;
    Some(unescape_html(&tag[from..from + len]))
}

// === XML surgery, as an attacker does it: on the text, after signing ===

/// The byte range of the first element whose local name is `local` (any
/// prefix), start tag to matching end tag. Elements of that name are not
/// nested in the messages the tests edit.
pub fn element(xml: &str, local: &str) -> Option<std::ops::Range<usize>> {
    elements(xml, local).into_iter().next()
}

/// The byte ranges of every element whose local name is `local`.
pub fn elements(xml: &str, local: &str) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = xml[from..].find('<') {
        let start = from + rel;
        let tag = &xml[start + 1..];
        let name_len = tag.find(|c: char| c.is_whitespace() || c == '>' || c == '/').unwrap_or(tag.len());
        let name = &tag[..name_len];
        if !name.starts_with(['/', '?', '!']) && name.rsplit(':').next() == Some(local) {
            let open_end = start + xml[start..].find('>').unwrap() + 1;
            let end = if xml[..open_end].ends_with("/>") {
                open_end
            } else {
                let close = format!("</{name}>");
                open_end + xml[open_end..].find(&close).unwrap() + close.len()
            };
            found.push(start..end);
            from = end;
        } else {
            from = start + 1;
        }
    }
    found
}

/// `xml` without the elements whose local name is `local`.
pub fn remove_elements(xml: &str, local: &str) -> String {
    let mut out = xml.to_string();
    for range in elements(xml, local).into_iter().rev() {
        out.replace_range(range, "");
    }
    out
}

/// The value of `attr` on the first element named `local`.
pub fn attribute(xml: &str, local: &str, attr: &str) -> Option<String> {
    let range = element(xml, local)?;
    let el = &xml[range];
    let tag = &el[..el.find('>')?];
    quoted_after(tag, &format!(" {attr}=\""))
}

/// The text of the first element named `local`.
pub fn text_of(xml: &str, local: &str) -> Option<String> {
    let range = element(xml, local)?;
    let el = &xml[range];
    let inner = &el[el.find('>')? + 1..];
    Some(inner[..inner.rfind("</")?].to_string())
}

/// The first element named `local`, with `f` applied to it.
pub fn edit_element(xml: &str, local: &str, f: impl FnOnce(&str) -> String) -> String {
    let range = element(xml, local).unwrap_or_else(|| panic!("no {local} in {xml}"));
    let mut out = xml.to_string();
    let edited = f(&xml[range.clone()]);
    out.replace_range(range, &edited);
    out
}

/// `xml` with `from` replaced by `to` everywhere; fails if `from` is absent.
pub fn replace_all(xml: &str, from: &str, to: &str) -> String {
    assert!(xml.contains(from), "{from:?} not in {xml}");
    xml.replace(from, to)
}

/// The signed assertion made into an attacker's unsigned one: signature
/// dropped, another ID, another user.
pub fn evil_assertion(xml: &str, email: &str) -> String {
    let signed = &xml[element(xml, "Assertion").unwrap()];
    let id = attribute(signed, "Assertion", "ID").unwrap();
    let evil = remove_elements(signed, "Signature").replace(&id, "id-evil-assertion");
    replace_all(&evil, USER_EMAIL, email)
}

/// Reads a file to a string (for messages).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
