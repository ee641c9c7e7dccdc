//! API keys (DESIGN §2.6): long-lived bearer credentials a signed-in user
//! mints for apps and devices. A key is `pk_` and 256 random bits; porteiro
//! keeps only its BLAKE3 hash (a key has full entropy, so a fast
//! cryptographic hash is enough: nothing to brute-force), and finds a key
//! by that hash, so the lookup's timing says nothing about how much of a
//! guess matched.
//!
//! A replica that has seen a key answers from memory: no store round trip
//! per request. Revocation reaches it through the store's revocation
//! mirror, checked on every use like a session's (a key's id is revoked
//! like a session id; revoking its owner by subject or email covers keys
//! made before). Keys known in memory are checked against the records in
//! the background every [`RECHECK`], so one deleted while a replica missed
//! the message is dropped there too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moka::sync::Cache;
use tracing::{info, warn};

use super::Identity;
use super::records::{AddKeyError, KeyRecord, Owner, Records};
use super::store::{Revocation, Store, StoreError};
use crate::clock::Clock;

/// Every key starts with this.
pub const PREFIX: &str = "pk_";
/// Random bytes in a key (256 bits).
const KEY_BYTES: usize = 32;
/// `pk_` and the random bytes in unpadded base64url.
const KEY_LEN: usize = PREFIX.len() + 43;
/// Keys one replica keeps in memory; past it, the least used are read
/// again from the records when next used.
const KNOWN_CAPACITY: u64 = 100_000;
/// How often a key held in memory is checked against the records.
pub const RECHECK: Duration = Duration::from_secs(600);
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: u64 = 60;
/// How long a key's revocation stays in the revocation mirror: far longer
/// than [`RECHECK`], after which no replica holds the key anyway.
pub const REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest key name.
pub const MAX_NAME_CHARS: usize = 100;

/// The answer for a presented key.
pub enum Check {
    /// The key, held in memory: its owner is [`Known::identity`].
    Valid(Arc<Known>),
    /// Not a key porteiro made, revoked, or deleted.
    Unknown(&'static str),
    /// Not in memory and the records cannot be read: fail closed.
    Unavailable,
}

/// A key this replica has seen.
pub struct Known {
    id: String,
    /// The key's hash (what the records find it by).
    hash: [u8; 32],
    /// The owner, as upstreams see them; `sid` is the key's id.
    identity: Arc<Identity>,
    /// When the records last confirmed the key (clock seconds).
    checked: AtomicU64,
    /// When this replica last wrote its `last_used_at`.
    touched: AtomicU64,
    /// Seen revoked: refused from memory from then on, also while the
    /// store is unreachable (revocation is for good).
    revoked: AtomicBool,
}

pub struct ApiKeys {
    records: Records,
    store: Arc<dyn Store>,
    known: Cache<[u8; 32], Arc<Known>>,
    clock: Clock,
}

impl Known {
    /// The key's owner, as upstreams see them; `sid` is the key's id.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }
}

/// What a new key is, shown once.
pub struct Minted {
    pub id: String,
    pub key: String,
    pub name: String,
    pub created_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("at most {0} keys per user")]
    OverLimit(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hash keys are stored and found under.
pub fn hash(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// Is this shaped like a key porteiro makes? (Cheap; says nothing of validity.)
pub fn is_key(token: &str) -> bool {
    token.len() == KEY_LEN
        && token.starts_with(PREFIX)
        && token.bytes().skip(PREFIX.len()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ApiKeys {
    pub fn new(records: Records, store: Arc<dyn Store>, clock: Clock) -> ApiKeys {
        ApiKeys { records, store, known: Cache::builder().max_capacity(KNOWN_CAPACITY).build(), clock }
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    fn revoked(&self, identity: &Identity) -> bool {
        self.store.is_revoked(&identity.sid, &identity.sub, identity.email.as_deref(), identity.iat)
    }

    /// The answer for a presented key from memory alone: `None` when this
    /// replica has not seen it (then [`ApiKeys::check`] asks the records).
    pub fn known(&self, token: &str) -> Option<Check> {
        if !is_key(token) {
            return Some(Check::Unknown("malformed"));
        }
        let known = self.known.get(&hash(token))?;
        if !self.still_valid(&known) {
            return Some(Check::Unknown("revoked"));
        }
        Some(Check::Valid(known))
    }

    /// Whether a key found before still holds: not revoked (here, through
    /// the revocation mirror, or found gone from the records), and its
    /// upkeep (`last_used_at`, the periodic recheck) kept going. What a
    /// connection that keeps presenting the key asks instead of
    /// [`ApiKeys::known`].
    pub fn still_valid(&self, known: &Arc<Known>) -> bool {
        if known.revoked.load(Ordering::Relaxed) || self.revoked(&known.identity) {
            known.revoked.store(true, Ordering::Relaxed);
            return false;
        }
        self.maintain(known, self.clock.now());
        true
    }

    /// Checks a presented key: from memory when this replica has seen it,
    /// else from the records.
    pub async fn check(&self, token: &str) -> Check {
        if let Some(answer) = self.known(token) {
            return answer;
        }
        let hash = hash(token);
        let now = self.clock.now();
        let record = match self.records.key_by_hash(&hash).await {
            Ok(Some(record)) => record,
            Ok(None) => return Check::Unknown("unknown"),
            Err(e) => {
                warn!(error = %e, "API key records unavailable");
                return Check::Unavailable;
            }
        };
        let identity = Arc::new(key_identity(&record));
        let revoked = self.revoked(&identity);
        let known = Arc::new(Known {
            id: record.id.clone(),
            hash,
            identity: identity.clone(),
            checked: AtomicU64::new(now),
            touched: AtomicU64::new(record.last_used_at.unwrap_or(0)),
            revoked: AtomicBool::new(revoked),
        });
        if revoked {
            self.known.insert(hash, known);
            return Check::Unknown("revoked");
        }
        self.maintain(&known, now);
        self.known.insert(hash, known.clone());
        Check::Valid(known)
    }

    /// Off the request path: writes `last_used_at` once a minute, and
    /// checks the key against the records every [`RECHECK`].
    fn maintain(&self, known: &Arc<Known>, now: u64) {
        let touched = known.touched.load(Ordering::Relaxed);
        let touch = now >= touched + TOUCH_EVERY
            && known.touched.compare_exchange(touched, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        let checked = known.checked.load(Ordering::Relaxed);
        let recheck = now >= checked + RECHECK.as_secs()
            && known.checked.compare_exchange(checked, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        if !touch && !recheck {
            return;
        }
        let (records, cache, known) = (self.records.clone(), self.known.clone(), known.clone());
        let (hash, id) = (known.hash, known.id.clone());
        tokio::spawn(async move {
            if touch {
                if let Err(e) = records.touch_key(&hash, &id, now).await {
                    warn!(error = %e, "could not record an API key's use");
                }
            }
            if recheck {
                // Gone from the records: revoked while this replica missed
                // the message (marked too, for connections that hold the
                // key themselves). The store down: keep what is known.
                if let Ok(None) = records.key_by_hash(&hash).await {
                    known.revoked.store(true, Ordering::Relaxed);
                    cache.invalidate(&hash);
                }
            }
        });
    }

    /// Mints a key for `owner` (the identity of the session asking).
    pub async fn mint(&self, owner: &Identity, name: &str, limit: usize) -> Result<Minted, MintError> {
        let mut bytes = [0u8; KEY_BYTES];
        rand::fill(&mut bytes[..]);
        let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let created_at = self.clock.now();
        let id = format!("key_{}", super::seal::random_id(12));
        let mut stored = owner.clone();
        stored.sid = id.clone();
        let record =
            KeyRecord { id: id.clone(), name: name.to_string(), owner: stored, created_at, last_used_at: None };
        match self.records.add_key(&hash(&key), &record, limit).await {
            Ok(()) => {}
            Err(AddKeyError::OverLimit) => return Err(MintError::OverLimit(limit)),
            Err(AddKeyError::Store(e)) => return Err(e.into()),
        }
        info!(provider = %owner.provider, user = %owner.sub, key_id = %id, "API key minted");
        Ok(Minted { id, key, name: name.to_string(), created_at })
    }

    /// The keys of the user `owner` made with its provider.
    pub async fn list(&self, owner: &Identity) -> Result<Vec<KeyRecord>, StoreError> {
        self.records.keys(&Owner::User(super::records::user(owner))).await
    }

    /// Revokes key `id` if `owner` (when given) owns it: deleted from the
    /// records, and revoked on every replica. The record when there was one.
    pub async fn revoke(&self, id: &str, owner: Option<&Identity>) -> Result<Option<KeyRecord>, StoreError> {
        if let Some(owner) = owner {
            let mine = self.list(owner).await?;
            if !mine.iter().any(|k| k.id == id) {
                return Ok(None);
            }
        }
        let Some(record) = self.records.delete_key(id).await? else { return Ok(None) };
        self.store.revoke(Revocation::Session(record.id.clone()), self.clock.now(), REVOCATION_TTL).await?;
        info!(provider = %record.owner.provider, user = %record.owner.sub, key_id = %record.id, "API key revoked");
        Ok(Some(record))
    }

    /// Deletes every key of `owner` (the revocation of the user itself,
    /// made by the caller, stops them on every replica at once).
    pub async fn delete_all(&self, owner: &Owner) -> Result<Vec<KeyRecord>, StoreError> {
        let mut deleted = Vec::new();
        for record in self.records.keys(owner).await? {
            if let Some(r) = self.records.delete_key(&record.id).await? {
                deleted.push(r);
            }
        }
        Ok(deleted)
    }
}

/// The identity a key's requests carry: its owner's, under the key's id,
/// issued when the key was made (a user revoked later revokes it).
fn key_identity(record: &KeyRecord) -> Identity {
    let mut identity = record.owner.clone();
    identity.sid = record.id.clone();
    identity.iat = record.created_at;
    identity.exp = u64::MAX;
    identity
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::MemoryStore;

    fn owner(sub: &str) -> Identity {
        Identity {
            sid: "session-1".into(),
            provider: "intranet".into(),
            sub: sub.into(),
            name: None,
            email: Some(format!("{sub}@example.com")),
            username: None,
            groups: vec!["support".into()],
            claims: Default::default(),
            oidc_sid: None,
            renew_until: None,
            iat: 1,
            exp: 2,
            header_values: Default::default(),
        }
    }

    #[tokio::test]
    async fn mint_use_list_revoke_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::default();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(1000, clock.clone()));
        let keys = ApiKeys::new(Records::open(dir.path()).unwrap(), store, clock.clone());
        let ana = owner("ana");
        let minted = keys.mint(&ana, "phone", 2).await.unwrap();
        assert!(is_key(&minted.key), "{}", minted.key);
        let Check::Valid(known) = keys.check(&minted.key).await else { panic!("a fresh key works") };
        let id = known.identity();
        assert_eq!((id.sub.as_str(), id.sid.as_str()), ("ana", minted.id.as_str()));
        // One character changed: another hash, unknown.
        let mut other = minted.key.clone().into_bytes();
        other[10] = if other[10] == b'A' { b'B' } else { b'A' };
        assert!(matches!(keys.check(std::str::from_utf8(&other).unwrap()).await, Check::Unknown("unknown")));
        keys.mint(&ana, "laptop", 2).await.unwrap();
        assert!(matches!(keys.mint(&ana, "third", 2).await, Err(MintError::OverLimit(2))));
        let listed = keys.list(&ana).await.unwrap();
        let mut names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["laptop", "phone"]);
        // Another user cannot revoke it; its owner can.
        assert!(keys.revoke(&minted.id, Some(&owner("bob"))).await.unwrap().is_none());
        assert!(keys.revoke(&minted.id, Some(&ana)).await.unwrap().is_some());
        assert!(matches!(keys.check(&minted.key).await, Check::Unknown("revoked")));
        assert!(matches!(keys.check(&minted.key).await, Check::Unknown("revoked")), "remembered as revoked");
        keys.known.invalidate_all();
        assert!(matches!(keys.check(&minted.key).await, Check::Unknown("unknown")));
        // The freed slot can be used again.
        keys.mint(&ana, "third", 2).await.unwrap();
    }

    #[test]
    fn key_shape() {
        assert!(!is_key("pk_short"));
        assert!(!is_key(&format!("xk_{}", "A".repeat(43))));
        assert!(!is_key(&format!("pk_{}=", "A".repeat(42))));
        assert!(is_key(&format!("pk_{}", "A".repeat(43))));
    }
}
