//! `POST /sso/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
//! An OpenID provider posts a signed `logout_token` when a user logs out
//! there; porteiro ends that user's sessions of that provider on every
//! replica. The token is checked in [`crate::auth::provider::oidc_logout`];
//! here the request is read and the sessions are ended through the session
//! index and the revocation channel (the store publishes a revocation to
//! every replica, which applies it within a second).
//!
//! Answers: `200` (empty) once the sessions are revoked, even when there
//! were none; `400 {"error": "invalid_request", "error_description"}`
//! otherwise. Both `Cache-Control: no-store`. The token is never logged.

use std::time::Duration;

use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::{info, warn};

use super::Gateway;
use crate::auth::provider::oidc_logout::{self, LogoutOf, Refusal};
use crate::auth::provider::oidc_refresh;
use crate::auth::records::{Owner, SessionEntry};
use crate::auth::store::{Revocation, StoreError};
use crate::config::LONGEST_SESSION_SECONDS;
use crate::error::{self, Class, Reject};
use crate::proxy::Body;

/// The form's content type (Back-Channel Logout §2.5).
const FORM: &str = "application/x-www-form-urlencoded";

impl Gateway {
    /// `POST /sso/backchannel-logout` with a form body carrying one
    /// `logout_token`, at most `max_body` bytes.
    pub(super) async fn backchannel_logout(&self, req: Request<Incoming>, max_body: usize) -> Response<Body> {
        let bad = |text: &str| Refusal { provider: "-".into(), reason: "bad_request", text: text.into() };
        let form_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(FORM));
        if !form_type {
            return self
                .backchannel_refused(bad("Send the logout_token in an application/x-www-form-urlencoded body."));
        }
        let body = match Limited::new(req.into_body(), max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return self.backchannel_refused(bad("The body is too large or cut short.")),
        };
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let mut tokens = form.iter().filter(|(k, _)| k == "logout_token").map(|(_, v)| v.as_str());
        let token = match (tokens.next(), tokens.next()) {
            (Some(t), None) if !t.is_empty() => t,
            _ => return self.backchannel_refused(bad("Send exactly one logout_token.")),
        };
        let logouts = match oidc_logout::verify(&self.ctx(), token).await {
            Ok(l) => l,
            Err(refusal) => return self.backchannel_refused(refusal),
        };
        for logout in &logouts {
            match self.end_sessions(logout).await {
                Ok(ended) => {
                    let by = if logout.sid.is_some() { "sid" } else { "sub" };
                    info!(provider = %logout.provider, user = logout.sub.as_deref().unwrap_or("-"), by, sessions = ended, "back-channel logout");
                    self.shared.metrics.backchannel_logout(&logout.provider, "ok");
                }
                Err(e) => {
                    warn!(provider = %logout.provider, error = %e, "back-channel logout: cannot end the sessions");
                    return self.backchannel_refused(Refusal {
                        provider: logout.provider.clone(),
                        reason: "store_unavailable",
                        text: "Sessions cannot be ended right now.".into(),
                    });
                }
            }
        }
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::OK;
        error::harden(resp.headers_mut());
        resp
    }

    /// `400 {"error": "invalid_request", ...}`, logged and counted with the
    /// precise reason (also the access log's).
    fn backchannel_refused(&self, r: Refusal) -> Response<Body> {
        warn!(provider = %r.provider, reason = r.reason, "back-channel logout refused");
        self.shared.metrics.backchannel_logout(&r.provider, r.reason);
        let mut resp: Response<Body> = Reject::new(Class::BadRequest, "invalid_request", r.text).json();
        // The JSON answer carries `Cache-Control: no-store` already.
        resp.extensions_mut().insert(error::Refused(r.reason));
        resp
    }

    /// Revokes the sessions a logout names: that provider's sessions with
    /// that `sid` (and that `sub`, when the token names both), else every
    /// session of that `sub` at that provider. The index finds them; each
    /// is revoked by its own id, so a `sub` of one provider never ends a
    /// session of another that happens to use the same subject. How many.
    async fn end_sessions(&self, logout: &LogoutOf) -> Result<usize, StoreError> {
        let (shared, now) = (&self.shared, self.shared.clock.now());
        let owner = match (&logout.sid, &logout.sub) {
            (Some(sid), _) => Owner::Sid(sid.clone()),
            (None, Some(sub)) => Owner::Subject(sub.clone()),
            (None, None) => return Ok(0),
        };
        let mut sessions: Vec<SessionEntry> = shared.records.sessions(&owner, now).await?;
        sessions.retain(|s| s.provider == logout.provider && logout.sub.as_ref().is_none_or(|sub| s.subject == *sub));
        // Longer than any session can live, as the admin API's revocations.
        let ttl = Duration::from_secs(LONGEST_SESSION_SECONDS + 300);
        for s in &sessions {
            shared.store.revoke(Revocation::Session(s.id.clone()), now, ttl).await?;
            oidc_refresh::forget(shared.store.as_ref(), &s.id).await;
        }
        if let Err(e) = shared.records.drop_sessions(&sessions).await {
            warn!(provider = %logout.provider, error = %e, "back-channel logout: sessions revoked but still listed");
        }
        Ok(sessions.len())
    }
}
