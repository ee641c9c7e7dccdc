//! Claims -> [`Identity`]: strictly typed, header-safe.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::session::Identity;
use super::token::{TokenError, string_claim};

/// Which claims make an identity, per provider.
#[derive(Debug, Clone)]
pub struct ClaimMap {
    pub groups_claim: String,
    /// Extra claims kept in the session (for route `headers` and `allow.claims`).
    pub keep: Vec<String>,
}

/// Builds the identity of a `jwt` login token (TomTicket's claims): `name`
/// required; `email` or `userid` required; `create` kept as a claim.
pub fn login_identity(
    claims: &Map<String, Value>,
    map: &ClaimMap,
    provider: &str,
    now: u64,
    validity: u64,
) -> Result<Identity, TokenError> {
    let name =
        string_claim(claims, "name")?.filter(|n| !n.trim().is_empty()).ok_or(TokenError::MissingClaim("name"))?;
    let email = string_claim(claims, "email")?;
    if email.as_deref().is_some_and(|e| !valid_email(e)) {
        return Err(TokenError::BadClaim("email"));
    }
    let userid = match claims.get("userid") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(_) => return Err(TokenError::BadClaim("userid")),
    };
    if !matches!(claims.get("create"), None | Some(Value::Bool(_))) {
        return Err(TokenError::BadClaim("create"));
    }
    let sub = match (&userid, &email) {
        (Some(u), _) => u.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => return Err(TokenError::MissingClaim("email or userid")),
    };
    let username = string_claim(claims, "preferred_username")?.or(userid);
    let mut keep = map.keep.clone();
    keep.push("create".into());
    Ok(Identity {
        sid: super::seal::random_id(16),
        provider: provider.to_string(),
        sub,
        name: Some(name),
        email,
        username,
        groups: groups(claims, &map.groups_claim)?,
        claims: kept_claims(claims, &keep),
        iat: now,
        exp: now + validity,
        oidc_sid: None,
        renew_until: None,
        header_values: Default::default(),
    })
}

/// A list-of-strings claim (a single string counts as a list of one).
pub fn groups(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, TokenError> {
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            items.iter().map(|g| g.as_str().map(str::to_string).ok_or(TokenError::BadClaim("groups"))).collect()
        }
        Some(_) => Err(TokenError::BadClaim("groups")),
    }
}

/// Scalar or list-of-scalar claims named in `keep`, as strings.
pub fn kept_claims(claims: &Map<String, Value>, keep: &[String]) -> BTreeMap<String, Vec<String>> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    keep.iter()
        .filter_map(|k| {
            let v = claims.get(k)?;
            let values = match v {
                Value::Array(items) => items.iter().filter_map(scalar).collect(),
                other => vec![scalar(other)?],
            };
            Some((k.clone(), values))
        })
        .collect()
}

/// A plausible email address: one `@`, non-empty local part, a dotted
/// domain, no spaces or controls.
pub fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else { return false };
    !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !local.contains('@')
        && e.bytes().all(|b| b > b' ' && b != 0x7f && b != b'<' && b != b'>' && b != b',' && b != b';')
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map() -> ClaimMap {
        ClaimMap { groups_claim: "groups".into(), keep: vec!["dept".into()] }
    }

    fn id(v: Value) -> Result<Identity, TokenError> {
        login_identity(v.as_object().unwrap(), &map(), "p", 100, 900)
    }

    #[test]
    fn tomticket_claims() {
        let i = id(json!({"name": "Ana", "email": "ana@x.test", "userid": "C-1", "create": true, "dept": ["a", 2], "groups": ["g1"]})).unwrap();
        assert_eq!(i.sub, "C-1");
        assert_eq!(i.email.as_deref(), Some("ana@x.test"));
        assert_eq!(i.claims["create"], ["true"]);
        assert_eq!(i.claims["dept"], ["a", "2"]);
        assert_eq!(i.groups, ["g1"]);
        assert_eq!((i.iat, i.exp), (100, 1000));
        assert_eq!(id(json!({"name": "Ana", "email": "ana@x.test"})).unwrap().sub, "ana@x.test");
        assert_eq!(id(json!({"name": "Ana", "userid": 42})).unwrap().sub, "42");
    }

    #[test]
    fn missing_and_mistyped_claims() {
        assert_eq!(id(json!({"email": "a@x.test"})).err(), Some(TokenError::MissingClaim("name")));
        assert_eq!(id(json!({"name": "Ana"})).err(), Some(TokenError::MissingClaim("email or userid")));
        assert_eq!(id(json!({"name": "Ana", "email": 5})).err(), Some(TokenError::BadClaim("email")));
        assert_eq!(id(json!({"name": "Ana", "email": "not-an-email"})).err(), Some(TokenError::BadClaim("email")));
        assert_eq!(id(json!({"name": 1, "email": "a@x.test"})).err(), Some(TokenError::BadClaim("name")));
        assert_eq!(
            id(json!({"name": "A", "email": "a@x.test", "create": "yes"})).err(),
            Some(TokenError::BadClaim("create"))
        );
        assert_eq!(
            id(json!({"name": "A", "email": "a@x.test", "groups": [1]})).err(),
            Some(TokenError::BadClaim("groups"))
        );
    }

    #[test]
    fn emails() {
        for ok in ["a@x.io", "first.last+tag@sub.example.com"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in ["", "a", "@x.io", "a@", "a@x", "a b@x.io", "a@x.io\r\n", "a@@x.io", "a@.x.io", "<a@x.io>"] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
