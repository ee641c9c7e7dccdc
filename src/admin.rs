//! Admin API on the admin listener: `POST /admin/revoke`.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::auth::store::Revocation;
use crate::config::VALIDITY_MINUTES;
use crate::error::{self, Class, Reject};
use crate::gateway::Gateway;
use crate::proxy::body::Body;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    session_id: Option<String>,
    subject: Option<String>,
    email: Option<String>,
}

fn refuse(
    class: Class,
    reason: &'static str,
    description: impl Into<std::borrow::Cow<'static, str>>,
) -> Response<Body> {
    Reject::new(class, reason, description).json()
}

/// `POST /admin/revoke` with `Authorization: Bearer <server.admin_token>` and
/// one of `{"session_id"}`, `{"subject"}`, `{"email"}`. Subject and email
/// revocations end every session of that user issued until now.
pub async fn revoke(gateway: &Gateway, req: Request<Incoming>) -> Response<Body> {
    let Some(token) = &gateway.admin_token else {
        return refuse(Class::NotFound, "disabled", "Set server.admin_token to use the admin API.");
    };
    if req.method() != Method::POST {
        return refuse(Class::MethodNotAllowed, "method_not_allowed", "Use POST.");
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(token.expose())) {
        warn!("admin API: bad or missing token");
        return Reject::new(Class::Unauthorized, "unauthorized", "A valid admin token is required.")
            .challenge("Bearer realm=\"porteiro-admin\"")
            .json();
    }
    let Ok(body) = Limited::new(req.into_body(), 4096).collect().await.map(|b| b.to_bytes()) else {
        return refuse(Class::TooLarge, "too_large", "Body too large.");
    };
    let what = match serde_json::from_slice::<RevokeRequest>(&body) {
        Ok(RevokeRequest { session_id: Some(s), subject: None, email: None }) => Revocation::Session(s),
        Ok(RevokeRequest { session_id: None, subject: Some(s), email: None }) => Revocation::Subject(s),
        Ok(RevokeRequest { session_id: None, subject: None, email: Some(e) }) => Revocation::Email(e),
        _ => {
            return refuse(Class::BadRequest, "invalid_request", "Send exactly one of session_id, subject, email.");
        }
    };
    // Longer than any session can live.
    let ttl = Duration::from_secs(*VALIDITY_MINUTES.end() as u64 * 60 + 300);
    match gateway.shared.store.revoke(what.clone(), gateway.shared.clock.now(), ttl).await {
        Ok(()) => {
            info!(revocation = ?what, "admin API: sessions revoked");
            error::json(StatusCode::OK, &json!({ "revoked": true }))
        }
        Err(e) => refuse(Class::Unavailable, "store_unavailable", e.to_string()),
    }
}
