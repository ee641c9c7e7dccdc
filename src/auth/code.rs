//! `kind = "code"`: single-use login codes (Document360 code flow, Engage
//! `custom_sso`). A trusted backend calls `POST /sso/code` with HTTP Basic
//! client credentials and the user's details; it gets an opaque code and
//! sends the browser to `/sso/authorize?code=...`. The code is 256 random
//! bits, lives `code_ttl_seconds`, and is redeemed through the store's atomic
//! `take`, so exactly one redemption wins, across replicas too.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::claims::valid_email;
use super::identifiers::Identifiers;
use super::session::Identity;
use super::store::Store;
use crate::config::{Secret, VALIDITY_MINUTES};

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
        let code = super::seal::random_id(32);
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
            sid: super::seal::random_id(16),
            provider: self.provider,
            sub: self.sub,
            name: self.name,
            email: self.email,
            username: self.username,
            groups: self.groups,
            claims: Default::default(),
            iat: now,
            exp: now + self.validity_minutes.clamp(*VALIDITY_MINUTES.start(), *VALIDITY_MINUTES.end()) as u64 * 60,
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
