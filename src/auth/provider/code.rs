//! `kind = "code"`: single-use login codes (Document360 code flow, Engage
//! `custom_sso`). A trusted backend calls `POST /sso/code` with HTTP Basic
//! client credentials and the user's details; it gets an opaque code and
//! sends the browser to `/sso/authorize?code=...`. The code is 256 random
//! bits, lives `code_ttl_seconds`, and is redeemed through the store's atomic
//! `take`, so exactly one redemption wins, across replicas too.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::auth::claims::valid_email;
use crate::auth::identifiers::{Identifiers, Mapping, MappingError};
use crate::auth::session::Identity;
use crate::auth::store::Store;
use crate::config::{CodeConfig, Secret, VALIDITY_MINUTES};
use crate::error::{Class, Reject};

use super::{Ctx, Outcome, Params, Setup, param};

pub struct CodeLogin {
    pub id: String,
    pub login_url: url::Url,
    pub return_param: String,
    pub logout_url: Option<String>,
    pub clients: Vec<(String, Secret)>,
    pub code_ttl: Duration,
    /// Session validity in minutes when the request names none.
    pub default_validity_minutes: i64,
}

/// A minted code's content, kept in the store until redeemed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    pub provider: String,
    pub sub: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub validity_minutes: i64,
}

/// A client request porteiro refuses, naming what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl CodeLogin {
    pub fn build(id: &str, c: &CodeConfig, setup: &Setup) -> Result<CodeLogin, String> {
        Ok(CodeLogin {
            id: id.to_string(),
            login_url: url::Url::parse(&c.login_url).map_err(|e| format!("provider {id}: login_url: {e}"))?,
            return_param: c.return_param.clone(),
            logout_url: c.logout_url.clone(),
            clients: c.clients.clone(),
            code_ttl: c.code_ttl,
            default_validity_minutes: (setup.validity() / 60) as i64,
        })
    }

    pub fn login_location(&self, return_to: &str) -> String {
        let mut url = self.login_url.clone();
        url.query_pairs_mut().append_pair(&self.return_param, return_to);
        url.to_string()
    }

    /// Does `client_id:secret` match one of this provider's clients?
    /// Compares every configured secret in constant time.
    pub fn client_matches(&self, client_id: &str, secret: &str) -> bool {
        let mut ok = false;
        for (id, s) in &self.clients {
            let same = bool::from(s.expose().ct_eq(secret.as_bytes()));
            ok |= id == client_id && same;
        }
        ok
    }

    /// Validates a Document360-style body (or an Engage `user_identifier`)
    /// into the content of a code.
    pub async fn pending(
        &self,
        body: &Value,
        client: &str,
        identifiers: Option<&Identifiers>,
    ) -> Result<Pending, CodeError> {
        let Value::Object(obj) = body else {
            return Err(CodeError::Bad(BadRequest("the body must be a JSON object".into())));
        };
        let validity = match obj.get("tokenValidity") {
            None | Some(Value::Null) => self.default_validity_minutes,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(m) => m.clamp(*VALIDITY_MINUTES.start(), *VALIDITY_MINUTES.end()),
                None => return Err(bad("tokenValidity must be a whole number of minutes")),
            },
            Some(_) => return Err(bad("tokenValidity must be a whole number of minutes")),
        };
        if let Some(identifier) = text(obj, "user_identifier")? {
            let ids = identifiers.ok_or_else(|| {
                bad("user_identifier needs identifier mappings (server.state_dir, or session.store = \"redis\")")
            })?;
            let user = ids
                .lookup(client, &identifier)
                .await
                .map_err(|e| CodeError::Unavailable(e.to_string()))?
                .ok_or(CodeError::UnknownIdentifier)?;
            let email = valid_email(&user).then(|| user.clone());
            return Ok(Pending {
                provider: self.id.clone(),
                sub: user.clone(),
                name: None,
                email,
                username: Some(user),
                groups: Vec::new(),
                validity_minutes: validity,
            });
        }
        let email = text(obj, "emailId")?.ok_or_else(|| bad("emailId is required"))?;
        if !valid_email(&email) {
            return Err(bad("emailId must be a valid email address"));
        }
        let first = text(obj, "firstName")?;
        let last = text(obj, "lastName")?;
        let username = text(obj, "username")?;
        let full = match (&first, &last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.clone()),
            (None, Some(l)) => Some(l.clone()),
            (None, None) => None,
        };
        let groups = match obj.get("readerGroupIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_string).ok_or_else(|| bad("readerGroupIds must be a list of strings")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("readerGroupIds must be a list of strings")),
        };
        Ok(Pending {
            provider: self.id.clone(),
            sub: email.clone(),
            name: full.or_else(|| username.clone()),
            email: Some(email),
            username,
            groups,
            validity_minutes: validity,
        })
    }

    /// Stores `pending` under a fresh code; returns the code.
    pub async fn mint(&self, pending: &Pending, store: &dyn Store) -> Result<String, CodeError> {
        let code = crate::auth::seal::random_id(32);
        let value = serde_json::to_vec(pending).map_err(|e| CodeError::Unavailable(e.to_string()))?;
        store.put(&store_key(&code), value, self.code_ttl).await.map_err(|e| CodeError::Unavailable(e.to_string()))?;
        Ok(code)
    }
}

#[derive(Debug)]
pub enum CodeError {
    Bad(BadRequest),
    UnknownIdentifier,
    Unavailable(String),
}

fn bad(text: &str) -> CodeError {
    CodeError::Bad(BadRequest(text.to_string()))
}

/// An optional string field; any other type names the field.
fn text(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, CodeError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.bytes().any(|b| b < 0x20 || b == 0x7f) => {
            Err(bad(&format!("{name} contains control characters")))
        }
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > 512 => Err(bad(&format!("{name} is too long"))),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(bad(&format!("{name} must be a string"))),
    }
}

fn store_key(code: &str) -> String {
    format!("code:{code}")
}

/// Redeems a code once: the first caller gets its content, every later one
/// (or one after expiry) gets `None`.
pub async fn redeem(code: &str, store: &dyn Store) -> Result<Option<Pending>, String> {
    if code.is_empty() || code.len() > 128 || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(None);
    }
    let Some(raw) = store.take(&store_key(code)).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&raw).ok())
}

impl Pending {
    /// The session identity of a redeemed code, starting at `now`.
    pub fn into_identity(self, now: u64) -> Identity {
        Identity {
            sid: crate::auth::seal::random_id(16),
            provider: self.provider,
            sub: self.sub,
            name: self.name,
            email: self.email,
            username: self.username,
            groups: self.groups,
            claims: Default::default(),
            iat: now,
            exp: now + self.validity_minutes.clamp(*VALIDITY_MINUTES.start(), *VALIDITY_MINUTES.end()) as u64 * 60,
            oidc_sid: None,
            renew_until: None,
            header_values: Default::default(),
        }
    }
}

/// `Authorization: Basic base64(client_id:secret)` -> (client_id, secret).
pub fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// `GET /sso/authorize?code=&redirectUrl=`: a browser redeems a single-use code.
pub async fn authorize(ctx: &Ctx<'_>, q: &Params) -> Outcome {
    let Some(code) = param(q, "code") else {
        return Outcome::failed("-", Class::BadRequest, "missing_code", "The login link carries no code.");
    };
    let pending = match redeem(code, ctx.store).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            let text = "The login code is invalid, expired or already used.";
            return Outcome::failed("-", Class::BadRequest, "invalid_code", text);
        }
        Err(e) => {
            warn!(error = %e, "state store unavailable");
            return Outcome::failed("-", Class::Unavailable, "store_unavailable", "Login state is unavailable.");
        }
    };
    let Some(provider) = ctx.provider(&pending.provider).and_then(|p| p.as_code()) else {
        return Outcome::failed("-", Class::BadRequest, "invalid_code", "The login code's provider is gone.");
    };
    let identity = pending.into_identity(ctx.clock.now());
    if let Err(why) = identity.check_header_safe() {
        return Outcome::failed(&provider.id, Class::BadRequest, "unsafe_claims", why);
    }
    let return_to = param(q, "redirectUrl").or_else(|| param(q, &provider.return_param));
    Outcome::SignedIn {
        provider: provider.id.clone(),
        identity: Box::new(identity),
        return_to: ctx.return_path(return_to),
    }
}

/// `POST /sso/code`: a trusted backend mints a single-use login code.
/// `body` is `None` when it was too large.
pub async fn mint(ctx: &Ctx<'_>, headers: &HeaderMap, body: Option<Bytes>) -> Outcome {
    let (provider, client) = match client(ctx, headers) {
        Ok(c) => c,
        Err(refused) => return Outcome::Unauthenticated(refused),
    };
    let body = match json_body(body) {
        Ok(v) => v,
        Err(refused) => return Outcome::Refused(refused),
    };
    let pending = match provider.pending(&body, &client, ctx.identifiers).await {
        Ok(p) => p,
        Err(CodeError::Bad(BadRequest(why))) => return Outcome::Refused(invalid_request(why)),
        Err(CodeError::UnknownIdentifier) => {
            let text = "no user is mapped to this user_identifier";
            return Outcome::Refused(Reject::new(Class::NotFound, "unknown_identifier", text));
        }
        Err(CodeError::Unavailable(e)) => return Outcome::Refused(unavailable(&e)),
    };
    match provider.mint(&pending, ctx.store).await {
        Ok(code) => {
            info!(provider = %provider.id, client = %client, user = %pending.sub, "login code minted");
            Outcome::Json(json!({ "code": code, "expires_in": provider.code_ttl.as_secs() }))
        }
        Err(CodeError::Unavailable(e)) | Err(CodeError::Bad(BadRequest(e))) => Outcome::Refused(unavailable(&e)),
        Err(CodeError::UnknownIdentifier) => Outcome::Refused(unavailable("unexpected")),
    }
}

/// `POST|GET|DELETE /sso/identifiers`: a client's identifier mappings
/// (Engage "De-Para").
pub async fn identifiers(
    ctx: &Ctx<'_>,
    method: &Method,
    headers: &HeaderMap,
    q: &Params,
    body: Option<Bytes>,
) -> Outcome {
    let (_, client) = match client(ctx, headers) {
        Ok(c) => c,
        Err(refused) => return Outcome::Unauthenticated(refused),
    };
    let Some(ids) = ctx.identifiers else {
        let text = "identifier mappings need server.state_dir or session.store = \"redis\"";
        return Outcome::Refused(Reject::new(Class::NotFound, "not_configured", text));
    };
    if method == Method::POST {
        return match json_body(body) {
            Ok(body) => add_mappings(ids, &client, body).await,
            Err(refused) => Outcome::Refused(refused),
        };
    }
    if method == Method::GET || method == Method::HEAD {
        return match ids.list(&client).await {
            Ok(list) => Outcome::Json(json!(list)),
            Err(e) => Outcome::Refused(unavailable(&e.to_string())),
        };
    }
    let Some(identifier) = param(q, "identifier") else {
        return Outcome::Refused(invalid_request("identifier is required (?identifier=...)".into()));
    };
    match ids.remove(&client, identifier).await {
        Ok(true) => Outcome::Json(json!({ "removed": identifier })),
        Ok(false) => Outcome::Refused(Reject::new(Class::NotFound, "unknown_identifier", "no such mapping")),
        Err(e) => Outcome::Refused(unavailable(&e.to_string())),
    }
}

/// The code provider and client id of a request's HTTP Basic credentials.
fn client<'a>(ctx: &'a Ctx<'_>, headers: &HeaderMap) -> Result<(&'a CodeLogin, String), Reject> {
    let found = basic_credentials(headers).and_then(|(id, secret)| {
        ctx.providers.iter().filter_map(|p| p.as_code()).find(|p| p.client_matches(&id, &secret)).map(|p| (p, id))
    });
    found.ok_or_else(|| {
        warn!("back-channel call with a bad or missing client credential");
        Reject::new(Class::Unauthorized, "invalid_client", "unknown client or wrong secret")
            .challenge("Basic realm=\"porteiro\"")
    })
}

/// A JSON body of at most [`MAX_JSON_BYTES`] (`None`: it was larger).
fn json_body(body: Option<Bytes>) -> Result<Value, Reject> {
    let body = body.ok_or_else(|| Reject::new(Class::TooLarge, "invalid_request", "body larger than 16 KiB"))?;
    crate::auth::json::value(&body)
        .map_err(|_| invalid_request("the body is not valid JSON (or names a member twice)".into()))
}

/// Largest JSON body `/sso/code` and `/sso/identifiers` read.
pub const MAX_JSON_BYTES: usize = 16 * 1024;

fn invalid_request(why: String) -> Reject {
    Reject::new(Class::BadRequest, "invalid_request", why)
}

fn unavailable(why: &str) -> Reject {
    warn!(error = why, "state unavailable");
    Reject::new(Class::Unavailable, "temporarily_unavailable", "login state is unavailable")
}

/// Validates an Engage identifiers array and stores it, all or nothing.
async fn add_mappings(ids: &Identifiers, client: &str, body: Value) -> Outcome {
    let Value::Array(items) = body else {
        let text = "the body must be an array of {user_login, client_application_id, identifier}";
        return Outcome::Refused(invalid_request(text.into()));
    };
    if items.is_empty() || items.len() > 1000 {
        return Outcome::Refused(invalid_request("send between 1 and 1000 mappings".into()));
    }
    let mut mappings = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| match item.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 && !s.bytes().any(|b| b < 0x20) => {
                Some(s.trim().to_string())
            }
            _ => None,
        };
        let mut fields = ["user_login", "client_application_id", "identifier"].map(|n| (n, field(n)));
        if let Some((name, _)) = fields.iter().find(|(_, v)| v.is_none()) {
            return Outcome::Refused(invalid_request(format!("[{i}].{name} must be a non-empty string")));
        }
        let [user_login, client_application_id, identifier] =
            fields.each_mut().map(|(_, v)| v.take().unwrap_or_default());
        let mapping = Mapping { user_login, client_application_id, identifier };
        if mapping.client_application_id != client {
            return Outcome::Refused(invalid_request(format!("[{i}].client_application_id must be your client_id")));
        }
        mappings.push(mapping);
    }
    match ids.add(client, &mappings).await {
        Ok(added) => Outcome::Json(json!({ "added": added, "total": mappings.len() })),
        Err(MappingError::Conflict(identifier)) => Outcome::Refused(Reject::new(
            Class::Conflict,
            "conflict",
            format!("identifier {identifier:?} is already mapped to another user"),
        )),
        Err(MappingError::Storage(e)) => Outcome::Refused(unavailable(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> CodeLogin {
        CodeLogin {
            id: "kb".into(),
            login_url: url::Url::parse("https://app.test/login").unwrap(),
            return_param: "redirectUrl".into(),
            logout_url: None,
            clients: vec![("app1".into(), Secret::new(b"s3cret".to_vec()))],
            code_ttl: Duration::from_secs(60),
            default_validity_minutes: 15,
        }
    }

    #[tokio::test]
    async fn document360_body() {
        let p = provider()
            .pending(
                &json!({"username": "ana.souza", "firstName": "Ana", "lastName": "Souza", "emailId": "ana@x.test",
                        "readerGroupIds": ["g1"], "tokenValidity": 2000}),
                "app1",
                None,
            )
            .await
            .unwrap();
        assert_eq!((p.sub.as_str(), p.name.as_deref(), p.validity_minutes), ("ana@x.test", Some("Ana Souza"), 1440));
        assert_eq!(p.groups, ["g1"]);
        assert_eq!(
            provider()
                .pending(&json!({"emailId": "a@x.test", "tokenValidity": 2}), "app1", None)
                .await
                .unwrap()
                .validity_minutes,
            5
        );
    }

    async fn refusal(v: Value) -> String {
        match provider().pending(&v, "app1", None).await {
            Err(CodeError::Bad(BadRequest(m))) => m,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_bodies_name_the_field() {
        assert!(refusal(json!([])).await.contains("object"));
        assert!(refusal(json!({})).await.contains("emailId"));
        assert!(refusal(json!({"emailId": 5})).await.contains("emailId"));
        assert!(refusal(json!({"emailId": "nope"})).await.contains("emailId"));
        assert!(refusal(json!({"emailId": "a@x.test", "tokenValidity": "15"})).await.contains("tokenValidity"));
        assert!(refusal(json!({"emailId": "a@x.test", "readerGroupIds": "g"})).await.contains("readerGroupIds"));
        assert!(refusal(json!({"emailId": "a@x.test", "firstName": "A\r\nB"})).await.contains("firstName"));
    }

    #[test]
    fn client_credentials() {
        let p = provider();
        assert!(p.client_matches("app1", "s3cret"));
        assert!(!p.client_matches("app1", "wrong"));
        assert!(!p.client_matches("app2", "s3cret"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Basic YXBwMTpzM2NyZXQ="));
        assert_eq!(basic_credentials(&h), Some(("app1".into(), "s3cret".into())));
    }
}
