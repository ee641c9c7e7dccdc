//! Durable records: the index of live sessions and the API keys.
//!
//! Both are written off the request path (at login, when a key is minted or
//! revoked) and read by the admin API; API keys are also read the first
//! time a replica meets one ([`crate::auth::api_keys`] keeps it in memory
//! after that). Three places to keep them, chosen at start:
//! - one process without `state_dir`: redb in memory (sessions only: API
//!   keys need one of the two below, which the config enforces);
//! - `server.state_dir`: redb in `records.redb`, one durable transaction per
//!   change, so the index and the keys survive restarts;
//! - `session.store = "redis"`: Redis, shared by every replica, each change
//!   one atomic script.

mod redb;
mod redis;

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Identity;
use super::store::StoreError;

/// One live session, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// porteiro's session id (the `session_id` of `/admin/revoke`).
    pub id: String,
    pub provider: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The OpenID provider's session id (`sid` claim), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
}

impl SessionEntry {
    pub fn of(identity: &Identity) -> SessionEntry {
        SessionEntry {
            id: identity.sid.clone(),
            provider: identity.provider.clone(),
            subject: identity.sub.clone(),
            email: identity.email.as_ref().map(|e| e.to_ascii_lowercase()),
            sid: identity.oidc_sid.clone(),
            created: identity.iat,
            // A refreshable session is listed (and can be ended) for as
            // long as it may be renewed.
            expires: identity.renew_until.unwrap_or(identity.exp),
        }
    }
}

/// One API key as stored: never the key itself, only its hash (the lookup
/// key of the storage, not a field here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// The owner: the identity of the session that minted the key (its
    /// `provider` is the login provider the key belongs to).
    pub owner: Identity,
    pub created_at: u64,
    /// Written at most once a minute per key; not part of the record's
    /// own write, so a use never rewrites it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
}

/// Whose records: a subject, an email address (lower-cased), (sessions
/// only) an OpenID provider's session id, or (keys only) one user of one
/// login provider ([`user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Subject(String),
    Email(String),
    Sid(String),
    User(String),
}

/// A user of one login provider: subjects are the provider's namespace.
pub fn user(identity: &Identity) -> String {
    format!("{}\u{1f}{}", identity.provider, identity.sub)
}

impl Owner {
    /// `kind` names the index: `subject`, `email`, `sid`.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Owner::Subject(s) => ("subject", s),
            Owner::Email(e) => ("email", e),
            Owner::Sid(s) => ("sid", s),
            Owner::User(u) => ("user", u),
        }
    }
}

/// Where the records are; cheap to clone.
#[derive(Clone)]
pub enum Records {
    Redb(redb::RedbRecords),
    Redis(redis::RedisRecords),
}

impl Records {
    /// The session index in memory: one process, API keys not available.
    pub fn in_memory() -> Result<Records, String> {
        Ok(Records::Redb(redb::RedbRecords::in_memory()?))
    }

    /// `dir/records.redb`, created when missing.
    pub fn open(dir: &Path) -> Result<Records, String> {
        Ok(Records::Redb(redb::RedbRecords::open(dir)?))
    }

    /// In Redis under `prefix`, over the shared store's connection.
    pub fn redis(conn: ::redis::aio::ConnectionManager, prefix: &str) -> Records {
        Records::Redis(redis::RedisRecords::new(conn, prefix))
    }

    /// Can API keys be kept here (they must survive a restart)?
    pub fn durable(&self) -> bool {
        match self {
            Records::Redb(r) => r.durable(),
            Records::Redis(_) => true,
        }
    }

    /// Adds a session to the index until it expires (`now` drops expired ones).
    pub async fn add_session(&self, entry: &SessionEntry, now: u64) -> Result<(), StoreError> {
        match self {
            Records::Redb(r) => r.add_session(entry, now).await,
            Records::Redis(r) => r.add_session(entry, now).await,
        }
    }

    /// The live sessions of `owner`, oldest first.
    pub async fn sessions(&self, owner: &Owner, now: u64) -> Result<Vec<SessionEntry>, StoreError> {
        let mut found = match self {
            Records::Redb(r) => r.sessions(owner).await?,
            Records::Redis(r) => r.sessions(owner).await?,
        };
        found.retain(|s| s.expires > now);
        found.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(found)
    }

    /// One session of the index, by porteiro's session id.
    pub async fn session(&self, id: &str) -> Result<Option<SessionEntry>, StoreError> {
        match self {
            Records::Redb(r) => r.session(id).await,
            Records::Redis(r) => r.session(id).await,
        }
    }

    /// Drops sessions from the index (they were revoked).
    pub async fn drop_sessions(&self, sessions: &[SessionEntry]) -> Result<(), StoreError> {
        if sessions.is_empty() {
            return Ok(());
        }
        match self {
            Records::Redb(r) => r.drop_sessions(sessions).await,
            Records::Redis(r) => r.drop_sessions(sessions).await,
        }
    }

    /// Adds a key under `hash` unless its owner (that user of that login
    /// provider) already has `limit` keys. One atomic change.
    pub async fn add_key(&self, hash: &[u8; 32], record: &KeyRecord, limit: usize) -> Result<(), AddKeyError> {
        match self {
            Records::Redb(r) => r.add_key(hash, record, limit).await,
            Records::Redis(r) => r.add_key(hash, record, limit).await,
        }
    }

    /// The key whose hash is `hash`.
    pub async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        match self {
            Records::Redb(r) => r.key_by_hash(hash).await,
            Records::Redis(r) => r.key_by_hash(hash).await,
        }
    }

    /// The keys of `owner` (subject or email), oldest first.
    pub async fn keys(&self, owner: &Owner) -> Result<Vec<KeyRecord>, StoreError> {
        let mut found = match (self, owner) {
            (_, Owner::Sid(_)) => Vec::new(),
            (Records::Redb(r), _) => r.keys(owner).await?,
            (Records::Redis(r), _) => r.keys(owner).await?,
        };
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    /// Deletes the key `id`; its record when there was one.
    pub async fn delete_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        match self {
            Records::Redb(r) => r.delete_key(id).await,
            Records::Redis(r) => r.delete_key(id).await,
        }
    }

    /// Records a use of the key `id` whose hash is `hash` (callers write
    /// it at most once a minute per key).
    pub async fn touch_key(&self, hash: &[u8; 32], id: &str, at: u64) -> Result<(), StoreError> {
        match self {
            Records::Redb(r) => r.touch_key(id, at).await,
            Records::Redis(r) => r.touch_key(hash, at).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddKeyError {
    #[error("the user has the most keys allowed")]
    OverLimit,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("unreadable record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn hex(hash: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    s
}
