//! Admin API on the admin listener, behind `Authorization: Bearer
//! <server.admin_token>`:
//! - `POST /admin/revoke` with one of `{"session_id"}`, `{"subject"}`,
//!   `{"email"}`, `{"sid"}` (an OpenID provider's session id);
//! - `GET /admin/sessions?subject=|email=`: the live sessions of a user;
//! - `GET /admin/api-keys?subject=|email=`: a user's API keys (never a key);
//! - `DELETE /admin/api-keys/{id}`: revokes one key.
//!
//! Every action is logged (what was asked, never the admin token) and
//! counted in `porteiro_admin_actions_total`.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::auth::provider::oidc_refresh;
use crate::auth::records::{Owner, SessionEntry};
use crate::auth::store::{Revocation, StoreError};
use crate::config::LONGEST_SESSION_SECONDS;
use crate::error::{self, Class, Reject};
use crate::gateway::Gateway;
use crate::proxy::body::Body;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    session_id: Option<String>,
    subject: Option<String>,
    email: Option<String>,
    sid: Option<String>,
}

fn refuse(
    class: Class,
    reason: &'static str,
    description: impl Into<std::borrow::Cow<'static, str>>,
) -> Response<Body> {
    Reject::new(class, reason, description).json()
}

fn unavailable(e: &StoreError) -> Response<Body> {
    warn!(error = %e, "admin API: store unavailable");
    refuse(Class::Unavailable, "store_unavailable", "The session store is unavailable; try again.")
}

/// Answers a request for `/admin/...`; `None` for a path that is not the
/// admin API's.
pub async fn handle(gateway: &Gateway, req: Request<Incoming>) -> Option<Response<Body>> {
    let path = req.uri().path().to_string();
    let (allow, action) = match path.as_str() {
        "/admin/revoke" => ("POST", "revoke"),
        "/admin/sessions" => ("GET", "list_sessions"),
        "/admin/api-keys" => ("GET", "list_api_keys"),
        p if p.strip_prefix("/admin/api-keys/").is_some_and(|id| !id.is_empty() && !id.contains('/')) => {
            ("DELETE", "revoke_api_key")
        }
        _ => return None,
    };
    let Some(token) = &gateway.admin_token else {
        return Some(refuse(Class::NotFound, "disabled", "Set server.admin_token to use the admin API."));
    };
    if req.method().as_str() != allow {
        let mut resp = refuse(Class::MethodNotAllowed, "method_not_allowed", format!("Use {allow}."));
        resp.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static(allow));
        return Some(resp);
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(token.expose())) {
        warn!(action, "admin API: bad or missing token");
        gateway.metrics().admin_action("unauthorized");
        return Some(
            Reject::new(Class::Unauthorized, "unauthorized", "A valid admin token is required.")
                .challenge("Bearer realm=\"porteiro-admin\"")
                .json(),
        );
    }
    gateway.metrics().admin_action(action);
    Some(match (action, req.method()) {
        ("revoke", &Method::POST) => revoke(gateway, req).await,
        ("list_sessions", _) => list_sessions(gateway, &req).await,
        ("list_api_keys", _) => list_api_keys(gateway, &req).await,
        _ => {
            let id = path.strip_prefix("/admin/api-keys/").unwrap_or_default();
            revoke_api_key(gateway, id).await
        }
    })
}

/// The user named by `?subject=` or `?email=` (exactly one).
fn owner_of(req: &Request<Incoming>) -> Option<Owner> {
    let q: Vec<(String, String)> =
        req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    match q.as_slice() {
        [(k, v)] if k == "subject" && !v.is_empty() => Some(Owner::Subject(v.clone())),
        [(k, v)] if k == "email" && !v.is_empty() => Some(Owner::Email(v.to_ascii_lowercase())),
        _ => None,
    }
}

fn session_json(s: &SessionEntry) -> serde_json::Value {
    json!({
        "session_id": s.id,
        "provider": s.provider,
        "subject": s.subject,
        "email": s.email,
        "sid": s.sid,
        "created_at": s.created,
        "expires_at": s.expires,
    })
}

async fn list_sessions(gateway: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let Some(owner) = owner_of(req) else {
        return refuse(Class::BadRequest, "invalid_request", "Name the user with ?subject= or ?email=.");
    };
    match gateway.shared.records.sessions(&owner, gateway.shared.clock.now()).await {
        Ok(sessions) => {
            info!(user = ?owner, sessions = sessions.len(), "admin API: sessions listed");
            error::json(StatusCode::OK, &json!({ "sessions": sessions.iter().map(session_json).collect::<Vec<_>>() }))
        }
        Err(e) => unavailable(&e),
    }
}

async fn list_api_keys(gateway: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let Some(owner) = owner_of(req) else {
        return refuse(Class::BadRequest, "invalid_request", "Name the user with ?subject= or ?email=.");
    };
    match gateway.shared.records.keys(&owner).await {
        Ok(keys) => {
            info!(user = ?owner, keys = keys.len(), "admin API: API keys listed");
            let keys: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "id": k.id,
                        "name": k.name,
                        "provider": k.owner.provider,
                        "subject": k.owner.sub,
                        "email": k.owner.email,
                        "created_at": k.created_at,
                        "last_used_at": k.last_used_at,
                    })
                })
                .collect();
            error::json(StatusCode::OK, &json!({ "api_keys": keys }))
        }
        Err(e) => unavailable(&e),
    }
}

async fn revoke_api_key(gateway: &Gateway, id: &str) -> Response<Body> {
    match gateway.shared.api_keys.revoke(id, None).await {
        Ok(Some(record)) => {
            gateway.metrics().api_key("revoked");
            info!(key_id = %record.id, user = %record.owner.sub, "admin API: API key revoked");
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Ok(None) => refuse(Class::NotFound, "not_found", "No API key with this id."),
        Err(e) => unavailable(&e),
    }
}

/// `POST /admin/revoke`. Subject and email revocations end every session of
/// that user issued until now, and delete their API keys; `sid` ends the
/// sessions an OpenID provider's session started.
async fn revoke(gateway: &Gateway, req: Request<Incoming>) -> Response<Body> {
    let Ok(body) = Limited::new(req.into_body(), 4096).collect().await.map(|b| b.to_bytes()) else {
        return refuse(Class::TooLarge, "too_large", "Body too large.");
    };
    let asked = match crate::auth::json::from_slice::<RevokeRequest>(&body) {
        Ok(r) => r,
        Err(_) => {
            return refuse(
                Class::BadRequest,
                "invalid_request",
                "Send exactly one of session_id, subject, email, sid.",
            );
        }
    };
    let (shared, now) = (&gateway.shared, gateway.shared.clock.now());
    // Longer than any session can live.
    let ttl = Duration::from_secs(LONGEST_SESSION_SECONDS + 300);
    let (mut revocations, owner) = match asked {
        RevokeRequest { session_id: Some(s), subject: None, email: None, sid: None } => {
            (vec![Revocation::Session(s)], None)
        }
        RevokeRequest { session_id: None, subject: Some(s), email: None, sid: None } => {
            (vec![Revocation::Subject(s.clone())], Some(Owner::Subject(s)))
        }
        RevokeRequest { session_id: None, subject: None, email: Some(e), sid: None } => {
            (vec![Revocation::Email(e.clone())], Some(Owner::Email(e.to_ascii_lowercase())))
        }
        RevokeRequest { session_id: None, subject: None, email: None, sid: Some(s) } => {
            (Vec::new(), Some(Owner::Sid(s)))
        }
        _ => {
            return refuse(
                Class::BadRequest,
                "invalid_request",
                "Send exactly one of session_id, subject, email, sid.",
            );
        }
    };
    // The index: which sessions this ends (and, by `sid`, which to revoke).
    let sessions = match &owner {
        Some(o) => match shared.records.sessions(o, now).await {
            Ok(s) => s,
            Err(e) => return unavailable(&e),
        },
        None => match &revocations[..] {
            [Revocation::Session(id)] => match shared.records.session(id).await {
                Ok(s) => s.into_iter().collect(),
                Err(e) => return unavailable(&e),
            },
            _ => Vec::new(),
        },
    };
    if matches!(owner, Some(Owner::Sid(_))) {
        revocations.extend(sessions.iter().map(|s| Revocation::Session(s.id.clone())));
    }
    for what in &revocations {
        if let Err(e) = shared.store.revoke(what.clone(), now, ttl).await {
            return unavailable(&e);
        }
    }
    let keys = match &owner {
        Some(o @ (Owner::Subject(_) | Owner::Email(_))) => match shared.api_keys.delete_all(o).await {
            Ok(k) => k.len(),
            Err(e) => return unavailable(&e),
        },
        _ => 0,
    };
    if let Err(e) = shared.records.drop_sessions(&sessions).await {
        warn!(error = %e, "admin API: sessions revoked but still listed");
    }
    // Refresh tokens go with their sessions.
    for s in &sessions {
        oidc_refresh::forget(shared.store.as_ref(), &s.id).await;
    }
    for _ in 0..keys {
        gateway.metrics().api_key("revoked");
    }
    info!(revocation = ?revocations, sessions = sessions.len(), api_keys = keys, "admin API: revoked");
    error::json(StatusCode::OK, &json!({ "revoked": true, "sessions": sessions.len(), "api_keys": keys }))
}
