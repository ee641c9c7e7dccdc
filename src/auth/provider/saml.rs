//! `kind = "saml"`: SAML 2.0 Web SSO as a service provider (Carol / Clock
//! In with Azure AD or TOTVS Identity). AuthnRequest by HTTP-Redirect, signed
//! Response by HTTP-POST to `/sso/saml/acs`.
//!
//! Signature checking and canonicalisation are xmlsec's (through samael):
//! only the content the IdP's signature covers is used, which defeats
//! signature wrapping. On top of samael's checks (Destination, Recipient,
//! InResponseTo, Issuer, NotBefore/NotOnOrAfter, Audience when present)
//! porteiro requires: exactly one assertion, an AudienceRestriction naming
//! this SP, no DOCTYPE and no comments (the NameID comment-injection trick),
//! a single use of each assertion ID, and an email that is a real address.
//! The login attempt is kept server-side keyed by an opaque RelayState,
//! because the IdP's POST is cross-site and Lax cookies do not come with it.
//! It is also bound to the browser that started it (login CSRF: an
//! attacker's own Response must not sign a victim in): a sealed
//! login-attempt cookie ([`LoginStates`], `SameSite=None` under https)
//! carries a random value the server-side attempt must match.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use samael::crypto::AllowedSignatureAlgorithm;
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{EntityDescriptor, HTTP_POST_BINDING, IndexedEndpoint, KeyDescriptor, SpSsoDescriptor};
use samael::schema::Assertion;
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};
use samael::traits::ToXml;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::auth::Failure;
use crate::auth::attempt::{ATTEMPT_SECONDS, AttemptCookie, Comeback, LoginStates};
use crate::auth::claims::valid_email;
use crate::auth::fetch::Fetcher;
use crate::auth::seal::random_id;
use crate::auth::session::Identity;
use crate::auth::store::Store;
use crate::config::{SamlConfig, SamlMetadata, SamlSigning};

use crate::error::{Class, Reject};

use super::{Ctx, Outcome, Params, Reply, Setup, param};

/// How long a login attempt may take.
/// Largest SAMLResponse accepted (decoded).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const EMAIL_NAME_ID: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Where IdP metadata comes from.
#[derive(Debug, Clone)]
pub enum MetadataSource {
    /// Read at load.
    Inline(String),
    /// Fetched (and refreshed) from a URL.
    Url(String),
}

pub struct SamlSettings {
    pub id: String,
    pub metadata: MetadataSource,
    pub entity_id: String,
    pub acs_url: String,
    pub email_attribute: Option<String>,
    pub name_attribute: Option<String>,
    pub groups_attribute: Option<String>,
    pub logout_url: Option<String>,
    pub leeway: Duration,
    /// Session validity in seconds.
    pub validity: u64,
    /// Signs AuthnRequests (and is published in the SP metadata) when set.
    pub signing: Option<SamlSigning>,
}

pub struct SamlLogin {
    pub s: SamlSettings,
    sp: Arc<ArcSwapOption<ServiceProvider>>,
    _alive: Arc<()>,
}

/// A login attempt, stored under its RelayState until the ACS takes it.
#[derive(Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    request_id: String,
    return_to: String,
    /// The value the starting browser's cookie holds (empty in attempts
    /// stored before there was one: those are refused).
    #[serde(default)]
    binding: String,
}

/// The login-attempt cookie of a SAML login: which attempt, and the value
/// that ties it to the browser.
#[derive(Serialize, Deserialize)]
struct BrowserBinding {
    /// Provider id.
    p: String,
    /// The RelayState.
    state: String,
    /// The binding value, also in the server-side attempt.
    b: String,
    /// Created, unix seconds and nanoseconds.
    t: u64,
    ns: u64,
}

impl AttemptCookie for BrowserBinding {
    fn state(&self) -> &str {
        &self.state
    }

    fn created(&self) -> u64 {
        self.t
    }
}

/// A refused SAML step. The reason decides the class: the store, the IdP's
/// metadata or porteiro itself not ready is `Unavailable`; an answer that
/// is not this browser's sign-in is `BadRequest` (as OpenID Connect's
/// unknown state); everything wrong with the assertion is `Unauthorized`.
fn fail(reason: &'static str, text: impl Into<String>) -> Failure {
    let class = match reason {
        "store_unavailable" | "idp_unavailable" | "idp_unusable" | "authn_request" | "internal" => Class::Unavailable,
        "unknown_relay_state" | "saml_browser_mismatch" | "missing_response" => Class::BadRequest,
        "response_too_large" => Class::TooLarge,
        _ => Class::Unauthorized,
    };
    Failure::new(class, reason, text)
}

/// Builds samael's service provider for one IdP's metadata.
fn build_sp(s: &SamlSettings, xml: &str) -> Result<ServiceProvider, String> {
    let idp: EntityDescriptor = xml.parse().map_err(|e| format!("IdP metadata is not SAML metadata: {e}"))?;
    let leeway = chrono::Duration::seconds(i64::try_from(s.leeway.as_secs()).unwrap_or(60));
    let sp = ServiceProviderBuilder::default()
        .entity_id(s.entity_id.clone())
        .metadata_url(s.entity_id.clone())
        .acs_url(s.acs_url.clone())
        .slo_url(None::<String>)
        .idp_metadata(idp)
        .allow_idp_initiated(false)
        .max_clock_skew(leeway)
        .max_issue_delay(chrono::Duration::seconds(ATTEMPT_SECONDS as i64))
        .allowed_signature_algorithms(Some(vec![
            AllowedSignatureAlgorithm::RsaSha256,
            AllowedSignatureAlgorithm::RsaSha384,
            AllowedSignatureAlgorithm::RsaSha512,
            AllowedSignatureAlgorithm::EcdsaSha256,
            AllowedSignatureAlgorithm::EcdsaSha384,
            AllowedSignatureAlgorithm::EcdsaSha512,
        ]))
        .build()
        .map_err(|e| format!("cannot set up the service provider: {e}"))?;
    match sp.idp_signing_certs() {
        Ok(Some(certs)) if !certs.is_empty() => Ok(sp),
        _ => Err("the IdP metadata has no signing certificate".into()),
    }
}

/// The SP's metadata: entity id and the ACS (HTTP-POST). Built here rather
/// than by samael's `ServiceProvider::metadata`, which insists on a
/// SingleLogoutService (porteiro has none, so it refused to build any
/// metadata at all) and stamps a `validUntil` two days ahead (a copy pasted
/// into an IdP would go stale).
fn sp_metadata(s: &SamlSettings) -> EntityDescriptor {
    let sp = SpSsoDescriptor {
        protocol_support_enumeration: Some(PROTOCOL.to_string()),
        authn_requests_signed: Some(s.signing.is_some()),
        want_assertions_signed: Some(true),
        key_descriptors: s.signing.as_ref().map(|signing| {
            vec![KeyDescriptor {
                key_use: Some("signing".to_string()),
                key_info: KeyInfo {
                    id: None,
                    x509_data: Some(X509Data { certificates: vec![STANDARD.encode(&signing.cert_der)] }),
                },
                encryption_methods: None,
            }]
        }),
        // With no email attribute the email is the NameID: ask for that format.
        name_id_formats: s.email_attribute.is_none().then(|| vec![EMAIL_NAME_ID.to_string()]),
        assertion_consumer_services: vec![IndexedEndpoint {
            binding: HTTP_POST_BINDING.to_string(),
            location: s.acs_url.clone(),
            index: 0,
            is_default: Some(true),
            ..IndexedEndpoint::default()
        }],
        ..SpSsoDescriptor::default()
    };
    EntityDescriptor {
        entity_id: Some(s.entity_id.clone()),
        sp_sso_descriptors: Some(vec![sp]),
        ..EntityDescriptor::default()
    }
}

impl SamlLogin {
    pub fn build(id: &str, m: &SamlConfig, setup: &Setup) -> Result<SamlLogin, String> {
        SamlLogin::start(
            SamlSettings {
                id: id.to_string(),
                metadata: match &m.metadata {
                    SamlMetadata::File { xml, .. } => MetadataSource::Inline(xml.clone()),
                    SamlMetadata::Url(u) => MetadataSource::Url(u.clone()),
                },
                entity_id: m.entity_id.clone(),
                acs_url: setup.endpoint_url("/saml/acs"),
                email_attribute: m.email_attribute.clone(),
                name_attribute: m.name_attribute.clone(),
                groups_attribute: m.groups_attribute.clone(),
                logout_url: m.logout_url.clone(),
                leeway: Duration::from_secs(m.leeway_seconds),
                validity: setup.validity(),
                signing: m.signing.clone(),
            },
            setup.fetcher.clone(),
        )
        .map_err(|e| format!("provider {id}: {e}"))
    }

    /// Creates the provider; metadata from a URL is fetched in the background
    /// (retried with backoff, refreshed hourly).
    pub fn start(settings: SamlSettings, fetcher: Fetcher) -> Result<SamlLogin, String> {
        let sp = Arc::new(ArcSwapOption::empty());
        let alive = Arc::new(());
        match &settings.metadata {
            MetadataSource::Inline(xml) => sp.store(Some(Arc::new(build_sp(&settings, xml)?))),
            MetadataSource::Url(url) => {
                tokio::spawn(metadata_loop(
                    url.clone(),
                    SettingsCopy::of(&settings),
                    fetcher,
                    Arc::downgrade(&sp),
                    Arc::downgrade(&alive),
                ));
            }
        }
        Ok(SamlLogin { s: settings, sp, _alive: alive })
    }

    pub fn ready(&self) -> bool {
        self.sp.load().is_some()
    }

    /// The SP metadata XML to paste into the IdP. It depends on porteiro's
    /// settings only, so it is served before the IdP's metadata is loaded.
    pub fn metadata_xml(&self) -> Option<String> {
        sp_metadata(&self.s).to_string().ok()
    }

    /// Begins a login: the IdP URL (AuthnRequest by HTTP-Redirect) with an
    /// opaque RelayState whose attempt waits in the store, and the
    /// `Set-Cookie` values that bind the attempt to this browser.
    pub async fn begin(
        &self,
        states: &LoginStates,
        request_headers: &HeaderMap,
        return_to: &str,
        store: &dyn Store,
    ) -> Result<(String, Vec<HeaderValue>), Failure> {
        let sp = self
            .sp
            .load_full()
            .ok_or_else(|| fail("idp_unavailable", "The identity provider's metadata is not loaded yet."))?;
        let idp_url = sp
            .sso_binding_location(REDIRECT_BINDING)
            .ok_or_else(|| fail("idp_unusable", "The identity provider offers no HTTP-Redirect sign-in."))?;
        let mut request = sp.make_authentication_request(&idp_url).map_err(|e| fail("authn_request", e.to_string()))?;
        // samael's IDs carry 32 random bits; the ID is what the answer's
        // InResponseTo must match, so make it unguessable like the
        // RelayState. An xs:ID must not start with a digit or '-'.
        request.id = format!("_{}", random_id(20));
        let relay = random_id(24);
        let binding = BrowserBinding {
            p: self.s.id.clone(),
            state: relay.clone(),
            b: random_id(24),
            t: states.clock.now(),
            ns: states.clock.now_nanos(),
        };
        let cookies = states
            .store(&binding, request_headers, Comeback::CrossSitePost)
            .ok_or_else(|| fail("internal", "Cannot write the login-attempt cookie."))?;
        let attempt = Attempt {
            provider: self.s.id.clone(),
            request_id: request.id.clone(),
            return_to: return_to.to_string(),
            binding: binding.b,
        };
        let value = serde_json::to_vec(&attempt).map_err(|e| fail("internal", e.to_string()))?;
        store.put(&relay_key(&relay), value, Duration::from_secs(ATTEMPT_SECONDS)).await.map_err(|e| {
            warn!(error = %e, "login state store unavailable; SAML login not started");
            fail("store_unavailable", "Login state is unavailable.")
        })?;
        let url = request
            .redirect(&relay)
            .map_err(|e| fail("authn_request", e.to_string()))?
            .ok_or_else(|| fail("authn_request", "Cannot encode the AuthnRequest."))?;
        let url = match &self.s.signing {
            None => url.to_string(),
            Some(signing) => sign_redirect(&idp_url, &url, &relay, signing)?,
        };
        Ok((url, cookies))
    }

    /// Checks a posted SAMLResponse for the attempt its RelayState names,
    /// posted by the browser that started it. Returns the identity and the
    /// return path.
    pub async fn finish(
        &self,
        attempt: Attempt,
        posted: Posted<'_>,
        store: &dyn Store,
        now: u64,
    ) -> Result<(Identity, String), Failure> {
        if attempt.provider != self.s.id {
            return Err(fail("unknown_relay_state", "This sign-in answer belongs to another provider."));
        }
        // Before anything of the Response is looked at: whoever posts it
        // must hold the cookie this attempt set.
        let cookie = posted.states.open::<BrowserBinding>(posted.relay_state, posted.headers);
        let bound = cookie.is_some_and(|c| {
            c.p == attempt.provider
                && !attempt.binding.is_empty()
                && bool::from(c.b.as_bytes().ct_eq(attempt.binding.as_bytes()))
        });
        if !bound {
            warn!(provider = %self.s.id, "SAML answer posted by a browser that did not start this sign-in");
            return Err(fail(
                "saml_browser_mismatch",
                "This sign-in was not started in this browser, or it took too long.",
            ));
        }
        let saml_response = posted.saml_response;
        let sp = self
            .sp
            .load_full()
            .ok_or_else(|| fail("idp_unavailable", "The identity provider's metadata is not loaded."))?;
        let xml = decode(saml_response)?;
        precheck(&xml)?;
        let assertion = sp.parse_xml_response(&xml, Some(&[attempt.request_id.as_str()])).map_err(|e| {
            warn!(provider = %self.s.id, error = %e, "SAML response refused");
            refusal(&e)
        })?;
        self.check_audience(&assertion)?;
        let until = assertion
            .conditions
            .as_ref()
            .and_then(|c| c.not_on_or_after)
            .map_or(ATTEMPT_SECONDS, |t| u64::try_from(t.timestamp()).unwrap_or(0).saturating_sub(now))
            .clamp(60, 24 * 3600);
        match store
            .insert_once(
                &format!("saml-assertion:{}:{}", self.s.id, assertion.id),
                Duration::from_secs(until + self.s.leeway.as_secs()),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(fail("assertion_replayed", "This sign-in answer was already used.")),
            Err(e) => {
                warn!(error = %e, "assertion replay cache unavailable; login refused");
                return Err(fail("store_unavailable", "Login state is unavailable."));
            }
        }
        let identity = self.identity(&assertion, now)?;
        info!(provider = %self.s.id, user = %identity.sub, "SAML assertion accepted");
        Ok((identity, attempt.return_to))
    }

    /// An AudienceRestriction naming this SP is required, not optional.
    fn check_audience(&self, a: &Assertion) -> Result<(), Failure> {
        let ok = a
            .conditions
            .as_ref()
            .and_then(|c| c.audience_restrictions.as_ref())
            .is_some_and(|rs| !rs.is_empty() && rs.iter().all(|r| r.audience.contains(&self.s.entity_id)));
        if ok { Ok(()) } else { Err(fail("wrong_audience", "The sign-in answer is meant for another service.")) }
    }

    fn identity(&self, a: &Assertion, now: u64) -> Result<Identity, Failure> {
        let name_id = a.subject.as_ref().and_then(|s| s.name_id.as_ref()).map(|n| n.value.trim().to_string());
        let email = match &self.s.email_attribute {
            Some(attr) => attribute(a, attr).into_iter().next(),
            None => name_id.clone(),
        };
        let email = email
            .filter(|e| valid_email(e))
            .ok_or_else(|| fail("invalid_email", "The identity provider sent no valid email address."))?;
        let name = self.s.name_attribute.as_deref().and_then(|n| attribute(a, n).into_iter().next());
        let groups = self.s.groups_attribute.as_deref().map(|g| attribute(a, g)).unwrap_or_default();
        let identity = Identity {
            sid: random_id(16),
            provider: self.s.id.clone(),
            sub: name_id.filter(|n| !n.is_empty()).unwrap_or_else(|| email.clone()),
            name,
            email: Some(email),
            username: None,
            groups,
            claims: Default::default(),
            iat: now,
            exp: now + self.s.validity,
            oidc_sid: None,
            renew_until: None,
            header_values: Default::default(),
        };
        identity.check_header_safe().map_err(|why| fail("unsafe_claims", why))?;
        Ok(identity)
    }
}

/// Values of the attribute with this Name (Azure AD sends no NameFormat).
fn attribute(a: &Assertion, name: &str) -> Vec<String> {
    a.attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
        .filter(|attr| attr.name.as_deref() == Some(name))
        .flat_map(|attr| attr.values.iter().filter_map(|v| v.value.as_ref().map(|s| s.trim().to_string())))
        .collect()
}

/// What the browser posted to the ACS, with what it was posted with.
pub struct Posted<'a> {
    pub saml_response: &'a str,
    pub relay_state: &'a str,
    /// The request's headers (its cookies).
    pub headers: &'a HeaderMap,
    pub states: &'a LoginStates,
}

/// The reason (logged, counted in `auth_failures`) and the browser's text
/// for a response samael refused.
fn refusal(e: &samael::service_provider::Error) -> Failure {
    use samael::service_provider::Error as E;
    match e {
        E::FailedToValidateSignature => {
            fail("bad_signature", "The sign-in answer is not signed by the identity provider.")
        }
        E::AssertionExpired { .. }
        | E::ResponseExpired { .. }
        | E::AssertionConditionExpired { .. }
        | E::AssertionSubjectConfirmationExpired { .. } => fail("expired", "The sign-in answer has expired."),
        E::AssertionConditionExpiredBefore { .. } | E::AssertionSubjectConfirmationExpiredBefore { .. } => {
            fail("not_yet_valid", "The sign-in answer is not valid yet; check the clocks.")
        }
        E::AssertionConditionAudienceRestrictionFailed { .. } => {
            fail("wrong_audience", "The sign-in answer is meant for another service.")
        }
        E::DestinationValidationError { .. } | E::AssertionRecipientMismatch { .. } => {
            fail("wrong_recipient", "The sign-in answer is addressed to another service.")
        }
        E::AssertionInResponseToInvalid { .. } | E::ResponseInResponseToInvalid { .. } => {
            fail("wrong_request", "The sign-in answer belongs to another sign-in.")
        }
        E::AssertionIssuerMismatch { .. } | E::ResponseIssuerMismatch { .. } => {
            fail("wrong_issuer", "The sign-in answer comes from another identity provider.")
        }
        E::ResponseBadStatusCode { .. } => fail("idp_refused", "The identity provider did not sign you in."),
        _ => fail("invalid_response", "The sign-in answer is not valid for this service."),
    }
}

/// The HTTP-Redirect binding's signature (SAML bindings 3.4.4.1): RSA-SHA256
/// over exactly `SAMLRequest=..&RelayState=..&SigAlg=..` as sent, whatever
/// query the IdP's own URL already carries (samael's `signed_redirect` signs
/// the whole query, which such an IdP would not verify).
fn sign_redirect(idp_url: &str, unsigned: &url::Url, relay: &str, signing: &SamlSigning) -> Result<String, Failure> {
    use openssl::hash::MessageDigest;
    use openssl::sign::Signer;

    let request = unsigned
        .query_pairs()
        .find(|(k, _)| k == "SAMLRequest")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| fail("authn_request", "Cannot encode the AuthnRequest."))?;
    let signed_part = form_urlencoded::Serializer::new(String::new())
        .append_pair("SAMLRequest", &request)
        .append_pair("RelayState", relay)
        .append_pair("SigAlg", RSA_SHA256)
        .finish();
    let signature = Signer::new(MessageDigest::sha256(), &signing.key)
        .and_then(|mut signer| {
            signer.update(signed_part.as_bytes())?;
            signer.sign_to_vec()
        })
        .map_err(|e| fail("authn_request", format!("cannot sign the AuthnRequest: {e}")))?;
    let signature =
        form_urlencoded::Serializer::new(String::new()).append_pair("Signature", &STANDARD.encode(signature)).finish();
    let joint = if idp_url.contains('?') { '&' } else { '?' };
    Ok(format!("{idp_url}{joint}{signed_part}&{signature}"))
}

fn relay_key(relay: &str) -> String {
    format!("saml-relay:{relay}")
}

/// Takes (once) the attempt a RelayState names.
pub async fn take_attempt(relay: &str, store: &dyn Store) -> Result<Attempt, Failure> {
    let unknown =
        || fail("unknown_relay_state", "This sign-in was not started here, was already used, or took too long.");
    if relay.is_empty() || relay.len() > 80 {
        return Err(unknown());
    }
    let raw = store.take(&relay_key(relay)).await.map_err(|e| {
        warn!(error = %e, "login state store unavailable; SAML answer refused");
        fail("store_unavailable", "Login state is unavailable.")
    })?;
    raw.and_then(|r| serde_json::from_slice(&r).ok()).ok_or_else(unknown)
}

fn decode(saml_response: &str) -> Result<String, Failure> {
    use base64::Engine;
    let compact: String = saml_response.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_RESPONSE_BYTES * 4 / 3 + 4 {
        return Err(fail("response_too_large", "The sign-in answer is too large."));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| fail("malformed_response", "The sign-in answer is not base64."))?;
    String::from_utf8(bytes).map_err(|_| fail("malformed_response", "The sign-in answer is not UTF-8 XML."))
}

/// Refuses what a genuine IdP never sends and attacks rely on: DTDs,
/// comments (a comment splits a NameID's text without breaking the
/// signature), processing instructions after the declaration, and more
/// than one assertion.
fn precheck(xml: &str) -> Result<(), Failure> {
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err(fail("malformed_response", "The sign-in answer carries a DTD."));
    }
    if xml.contains("<!--") {
        return Err(fail("malformed_response", "The sign-in answer carries XML comments."));
    }
    let body = xml.trim_start().strip_prefix("<?xml").map_or(xml, |rest| rest.split_once("?>").map_or("", |(_, b)| b));
    if body.contains("<?") {
        return Err(fail("malformed_response", "The sign-in answer carries processing instructions."));
    }
    let assertions = count_elements(xml, "Assertion") + count_elements(xml, "EncryptedAssertion");
    if assertions == 0 {
        // An IdP that did not sign the user in (cancelled, refused, no
        // access) answers a status and no assertion. The status is not
        // verified: it only names the refusal, which happens regardless.
        let codes: Vec<&str> = start_tags(xml, "StatusCode")
            .filter_map(|tag| tag.split_once(" Value=\"").and_then(|(_, v)| v.split('"').next()))
            .map(|v| v.rsplit(':').next().unwrap_or(v))
            .filter(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_alphanumeric()))
            .collect();
        if codes.first().is_some_and(|c| *c != "Success") {
            return Err(fail(
                "idp_refused",
                format!("The identity provider did not sign you in ({}).", codes.join(", ")),
            ));
        }
    }
    // Encrypted assertions are not supported (README): refused by name
    // here, not later as a signature that cannot be checked.
    if assertions != 1 || count_elements(xml, "EncryptedAssertion") > 0 {
        return Err(fail("assertion_count", "The sign-in answer must carry exactly one unencrypted assertion."));
    }
    Ok(())
}

/// Start tags (the text after `<`, up to `>`) whose local name is `local`,
/// with or without a prefix.
fn start_tags<'a>(xml: &'a str, local: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    xml.match_indices('<').filter_map(move |(i, _)| {
        let tag = &xml[i + 1..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let name_end = tag.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(tag.len());
        let name = &tag[..name_end];
        (!name.starts_with('/') && name.rsplit(':').next() == Some(local)).then_some(tag)
    })
}

fn count_elements(xml: &str, local: &str) -> usize {
    start_tags(xml, local).count()
}

/// What the metadata task needs of the settings (they are not `Clone`).
struct SettingsCopy {
    id: String,
    entity_id: String,
    acs_url: String,
    leeway: Duration,
}

impl SettingsCopy {
    fn of(s: &SamlSettings) -> SettingsCopy {
        SettingsCopy { id: s.id.clone(), entity_id: s.entity_id.clone(), acs_url: s.acs_url.clone(), leeway: s.leeway }
    }

    fn settings(&self) -> SamlSettings {
        SamlSettings {
            id: self.id.clone(),
            metadata: MetadataSource::Inline(String::new()),
            entity_id: self.entity_id.clone(),
            acs_url: self.acs_url.clone(),
            email_attribute: None,
            name_attribute: None,
            groups_attribute: None,
            logout_url: None,
            leeway: self.leeway,
            validity: 0,
            signing: None,
        }
    }
}

async fn metadata_loop(
    url: String,
    s: SettingsCopy,
    fetcher: Fetcher,
    slot: Weak<ArcSwapOption<ServiceProvider>>,
    alive: Weak<()>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if alive.strong_count() == 0 {
            return;
        }
        let result = fetcher
            .get(&url, Duration::from_secs(5), 1024 * 1024)
            .await
            .map_err(|e| e.to_string())
            .and_then(|f| String::from_utf8(f.body.to_vec()).map_err(|e| e.to_string()))
            .and_then(|xml| build_sp(&s.settings(), &xml));
        let wait = match result {
            Ok(sp) => {
                let Some(slot) = slot.upgrade() else { return };
                slot.store(Some(Arc::new(sp)));
                info!(provider = %s.id, "SAML IdP metadata loaded");
                backoff = Duration::from_millis(500);
                Duration::from_secs(3600)
            }
            Err(e) => {
                warn!(provider = %s.id, error = %e, retry_in = ?backoff, "SAML IdP metadata failed");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// `POST /sso/saml/acs`: the IdP's signed Response (HTTP-POST binding).
/// `body` is `None` when it was too large. The attempt is spent whatever
/// the outcome, and its cookie cleared.
pub async fn acs(ctx: &Ctx<'_>, headers: &HeaderMap, body: Option<Bytes>) -> Reply {
    let Some(body) = body else {
        return Outcome::failed("-", Class::TooLarge, "response_too_large", "The sign-in answer is too large.").into();
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let (Some(response), relay) = (param(&form, "SAMLResponse"), param(&form, "RelayState").unwrap_or("")) else {
        let text = "The sign-in answer carries no SAMLResponse.";
        return Outcome::failed("-", Class::BadRequest, "missing_response", text).into();
    };
    let attempt = match take_attempt(relay, ctx.store).await {
        Ok(a) => a,
        Err(failure) => {
            // A replayed or stale answer: its attempt cookie, if any, is of no use.
            let cookies = ctx.states.and_then(|s| s.clear(relay, Comeback::CrossSitePost)).into_iter().collect();
            return Reply { outcome: Outcome::LoginFailed { provider: "-".into(), failure }, cookies };
        }
    };
    let Some(provider) = ctx.provider(&attempt.provider).and_then(|p| p.as_saml()) else {
        return Outcome::failed("-", Class::BadRequest, "unknown_relay_state", "This sign-in's provider is gone.")
            .into();
    };
    let id = provider.s.id.clone();
    let Some(states) = ctx.states else {
        let text = "This sign-in was not started in this browser.";
        return Outcome::failed(&id, Class::BadRequest, "saml_browser_mismatch", text).into();
    };
    let posted = Posted { saml_response: response, relay_state: relay, headers, states };
    let outcome = match provider.finish(attempt, posted, ctx.store, ctx.clock.now()).await {
        Ok((identity, return_to)) => Outcome::SignedIn { provider: id, identity: Box::new(identity), return_to },
        Err(failure) => Outcome::LoginFailed { provider: id, failure },
    };
    Reply { outcome, cookies: states.clear(relay, Comeback::CrossSitePost).into_iter().collect() }
}

/// `GET /sso/saml/metadata[?provider=]`: the SP metadata to paste into the IdP.
pub fn metadata(ctx: &Ctx<'_>, q: &Params) -> Outcome {
    let mut saml = ctx.providers.iter().filter_map(|p| p.as_saml());
    let chosen = match param(q, "provider") {
        Some(id) => ctx.provider(id).and_then(|p| p.as_saml()),
        None => match (saml.next(), saml.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        },
    };
    match chosen.map(|p| p.metadata_xml()) {
        Some(Some(body)) => Outcome::Document { content_type: "application/samlmetadata+xml", body },
        Some(None) => Outcome::Refused(Reject::new(Class::Internal, "internal", "The SP metadata cannot be written.")),
        None => {
            Outcome::Refused(Reject::new(Class::NotFound, "unknown_provider", "Name a SAML provider with ?provider=."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prechecks() {
        let one = r#"<?xml version="1.0"?><samlp:Response><saml:Assertion ID="a"></saml:Assertion></samlp:Response>"#;
        assert!(precheck(one).is_ok());
        let two = r#"<samlp:Response><saml:Assertion ID="a"/><Assertion ID="b"></Assertion></samlp:Response>"#;
        assert_eq!(precheck(two).err().map(|f| f.reason), Some("assertion_count"));
        let none = r#"<samlp:Response></samlp:Response>"#;
        assert_eq!(precheck(none).err().map(|f| f.reason), Some("assertion_count"));
        let comment = r#"<samlp:Response><saml:Assertion><saml:NameID>a@x.io<!---->.evil.io</saml:NameID></saml:Assertion></samlp:Response>"#;
        assert_eq!(precheck(comment).err().map(|f| f.reason), Some("malformed_response"));
        let dtd = r#"<!DOCTYPE x [<!ENTITY e "x">]><samlp:Response><saml:Assertion/></samlp:Response>"#;
        assert_eq!(precheck(dtd).err().map(|f| f.reason), Some("malformed_response"));
        assert_eq!(count_elements("<a:AssertionX/><Assertion/></Assertion>", "Assertion"), 1);
        let cancelled = r#"<samlp:Response><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"/></samlp:StatusCode></samlp:Status></samlp:Response>"#;
        let refused = precheck(cancelled).err();
        assert_eq!(refused.as_ref().map(|f| f.reason), Some("idp_refused"));
        assert!(refused.is_some_and(|f| f.text.contains("(Responder, AuthnFailed)")));
        let success_without = r#"<samlp:Response><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:Response>"#;
        assert_eq!(precheck(success_without).err().map(|f| f.reason), Some("assertion_count"));
    }

    fn settings(email_attribute: Option<&str>) -> SamlSettings {
        SamlSettings {
            id: "azure".into(),
            metadata: MetadataSource::Inline(String::new()),
            entity_id: "https://clockin.example.com/sso/saml/metadata".into(),
            acs_url: "https://clockin.example.com/sso/saml/acs".into(),
            email_attribute: email_attribute.map(str::to_string),
            name_attribute: None,
            groups_attribute: None,
            logout_url: None,
            leeway: Duration::from_secs(60),
            validity: 900,
            signing: None,
        }
    }

    /// The signature covers only SAMLRequest, RelayState and SigAlg, as
    /// sent, even when the IdP's URL carries a query of its own.
    #[test]
    fn redirect_signature_over_the_binding_parameters_only() {
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::sign::Verifier;

        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let signing = SamlSigning { key: key.clone(), cert_der: Vec::new() };
        let idp = "https://accounts.example.com/o/saml2/idp?idpid=C01";
        let unsigned = url::Url::parse(&format!("{idp}&SAMLRequest=fZ%2Bx%2F%3D&RelayState=r-1")).unwrap();
        let url = sign_redirect(idp, &unsigned, "r-1", &signing).unwrap();
        let signed_part = "SAMLRequest=fZ%2Bx%2F%3D&RelayState=r-1&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256";
        assert!(url.starts_with(&format!("{idp}&{signed_part}&Signature=")), "{url}");
        let signature = url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "Signature")
            .map(|(_, v)| STANDARD.decode(v.as_bytes()).unwrap())
            .unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &key).unwrap();
        verifier.update(signed_part.as_bytes()).unwrap();
        assert!(verifier.verify(&signature).unwrap());
        let mut verifier = Verifier::new(MessageDigest::sha256(), &key).unwrap();
        verifier.update(format!("idpid=C01&{signed_part}").as_bytes()).unwrap();
        assert!(!verifier.verify(&signature).unwrap(), "the IdP's own parameters are not signed");
    }

    #[test]
    fn sp_metadata_without_logout_or_expiry() {
        let xml = sp_metadata(&settings(None)).to_string().unwrap_or_default();
        assert!(xml.contains(r#"entityID="https://clockin.example.com/sso/saml/metadata""#), "{xml}");
        assert!(xml.contains(r#"Location="https://clockin.example.com/sso/saml/acs""#), "{xml}");
        assert!(xml.contains(HTTP_POST_BINDING), "{xml}");
        assert!(xml.contains(EMAIL_NAME_ID), "{xml}");
        assert!(!xml.contains("validUntil"), "{xml}");
        assert!(!xml.contains("SingleLogoutService"), "{xml}");
        let with_attribute = sp_metadata(&settings(Some("mail"))).to_string().unwrap_or_default();
        assert!(!with_attribute.contains("NameIDFormat"), "{with_attribute}");
    }
}
