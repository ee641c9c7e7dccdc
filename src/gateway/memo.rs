//! The credential a connection last proved, kept on the connection.
//!
//! A browser's keep-alive connection sends the same session cookie with
//! every request, an API client the same `Authorization` header. Opening
//! the cookie, or hashing the token to find its verification, is most of
//! what authenticating a request costs; so each connection keeps the last
//! credential that passed, with the identity it proved. A request on the
//! same connection and route whose `Authorization` and `Cookie` headers are
//! byte for byte the same skips that work and re-checks only what can
//! change since: expiry and revocation of a session, the end of a bearer
//! token's verification, revocation of an API key (and its upkeep). Any
//! other request is judged afresh, and a pass replaces what was kept.
//!
//! One slot per connection: a connection a proxy shares between users
//! keeps the last one's, which costs a miss, never a wrong answer (the
//! bytes are compared whole, not a hash of them, and in constant time: on
//! such a connection the kept bytes are another user's credential).
//! Credentials over [`MAX_KEPT`] bytes are not kept.

use std::sync::{Arc, Mutex};

use http::header::{self, HeaderMap};

use crate::auth::Identity;
use crate::auth::api_keys::Known;

/// Most bytes of `Cookie` and `Authorization` a connection keeps (a session
/// split into several cookies is larger; it is judged afresh each time).
pub const MAX_KEPT: usize = 8 * 1024;

/// What one connection keeps (nothing until a credential passes on it).
#[derive(Default)]
pub struct ConnMemo(Mutex<Option<Kept>>);

struct Kept {
    /// The gateway instance and its route the credential passed on (a
    /// reload makes a new instance, whose routes may differ).
    gateway: u64,
    route: usize,
    authorization: Option<Box<[u8]>>,
    cookie: Option<Box<[u8]>>,
    identity: Arc<Identity>,
    proof: Proof,
}

/// How the kept identity was proved, and so what to re-check.
#[derive(Clone)]
pub(crate) enum Proof {
    /// A session cookie: still before `exp`, and not revoked.
    Session,
    /// A bearer token whose verification holds until then (unix seconds).
    Bearer { until: u64 },
    /// An API key (see [`crate::auth::api_keys::ApiKeys::still_valid`]).
    ApiKey(Arc<Known>),
}

/// The credential headers of a request, as a memo compares them: absent
/// when it has several `Cookie` lines (HTTP/2 splits them; judged afresh).
/// `Authorization` is the one line [`crate::auth::provider::bearer::credential`]
/// found (a request with several is refused before).
pub(crate) struct Presented<'h> {
    authorization: Option<&'h [u8]>,
    cookie: Option<&'h [u8]>,
}

impl<'h> Presented<'h> {
    pub(crate) fn of(headers: &'h HeaderMap) -> Option<Presented<'h>> {
        let mut cookies = headers.get_all(header::COOKIE).iter();
        let cookie = cookies.next().map(|v| v.as_bytes());
        if cookies.next().is_some() {
            return None;
        }
        let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        Some(Presented { authorization, cookie })
    }
}

impl ConnMemo {
    /// The identity and proof kept for exactly these credentials on this
    /// route, to be re-checked by the caller.
    pub(crate) fn recall(
        &self,
        gateway: u64,
        route: usize,
        presented: &Presented<'_>,
    ) -> Option<(Arc<Identity>, Proof)> {
        // Concurrent HTTP/2 streams do not wait for each other: a busy
        // slot is a miss.
        let kept = self.0.try_lock().ok()?;
        let kept = kept.as_ref()?;
        let same = kept.gateway == gateway
            && kept.route == route
            && same_secret(kept.authorization.as_deref(), presented.authorization)
            && same_secret(kept.cookie.as_deref(), presented.cookie);
        same.then(|| (kept.identity.clone(), kept.proof.clone()))
    }

    /// Keeps a credential that passed on this route.
    pub(crate) fn keep(
        &self,
        gateway: u64,
        route: usize,
        presented: &Presented<'_>,
        identity: &Arc<Identity>,
        proof: Proof,
    ) {
        let size = presented.authorization.map_or(0, <[u8]>::len) + presented.cookie.map_or(0, <[u8]>::len);
        if size > MAX_KEPT {
            return;
        }
        let Ok(mut slot) = self.0.try_lock() else { return };
        *slot = Some(Kept {
            gateway,
            route,
            authorization: presented.authorization.map(Box::from),
            cookie: presented.cookie.map(Box::from),
            identity: identity.clone(),
            proof,
        });
    }

    /// Drops what is kept (a kept credential found no longer valid).
    pub(crate) fn forget(&self) {
        if let Ok(mut slot) = self.0.try_lock() {
            *slot = None;
        }
    }
}

/// Whether a kept header and a presented one are the same: present in
/// both or neither, and then the same bytes, compared in constant time.
fn same_secret(kept: Option<&[u8]>, presented: Option<&[u8]>) -> bool {
    match (kept, presented) {
        (None, None) => true,
        (Some(k), Some(p)) => constant_time_eq::constant_time_eq(k, p),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn identity(sub: &str) -> Arc<Identity> {
        let fields = serde_json::json!({"provider": "p", "sub": sub, "iat": 1, "exp": 2, "sid": "s"});
        Arc::new(serde_json::from_value(fields).unwrap())
    }

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_same_bytes_on_the_same_route_and_gateway_are_recalled() {
        let memo = ConnMemo::default();
        let ana = headers(&[("cookie", "s=ana"), ("authorization", "Bearer t")]);
        let seen = Presented::of(&ana).unwrap();
        assert!(memo.recall(1, 10, &seen).is_none(), "nothing kept yet");
        memo.keep(1, 10, &seen, &identity("ana"), Proof::Session);
        let (id, _) = memo.recall(1, 10, &Presented::of(&ana).unwrap()).unwrap();
        assert_eq!(id.sub, "ana");
        assert!(memo.recall(2, 10, &seen).is_none(), "another gateway (a reload)");
        assert!(memo.recall(1, 11, &seen).is_none(), "another route");
        for other in [
            headers(&[("cookie", "s=anb"), ("authorization", "Bearer t")]),
            headers(&[("cookie", "s=ana")]),
            headers(&[("authorization", "Bearer t")]),
            headers(&[("cookie", "s=ana"), ("authorization", "Bearer u")]),
        ] {
            assert!(memo.recall(1, 10, &Presented::of(&other).unwrap()).is_none(), "{other:?}");
        }
        memo.forget();
        assert!(memo.recall(1, 10, &seen).is_none(), "forgotten");
    }

    #[test]
    fn large_credentials_are_not_kept() {
        let memo = ConnMemo::default();
        let big = format!("s={}", "a".repeat(MAX_KEPT));
        let h = headers(&[("cookie", &big)]);
        memo.keep(1, 10, &Presented::of(&h).unwrap(), &identity("ana"), Proof::Session);
        assert!(memo.recall(1, 10, &Presented::of(&h).unwrap()).is_none());
        let fits = format!("s={}", "a".repeat(MAX_KEPT - 2));
        let h = headers(&[("cookie", &fits)]);
        memo.keep(1, 10, &Presented::of(&h).unwrap(), &identity("ana"), Proof::Session);
        assert!(memo.recall(1, 10, &Presented::of(&h).unwrap()).is_some());
    }

    #[test]
    fn several_cookie_lines_are_never_kept() {
        assert!(Presented::of(&headers(&[("cookie", "a=1"), ("cookie", "s=ana")])).is_none());
        assert!(Presented::of(&headers(&[])).is_some());
    }
}
