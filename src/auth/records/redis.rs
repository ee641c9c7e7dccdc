//! Records in Redis, shared by every replica. A session is a hash
//! `{prefix}session:{id}` expiring with the session; an API key a hash
//! `{prefix}apikey:{key hash}` (the record, and its last use apart);
//! `{prefix}apikey-id:{id}` finds a key's hash from its id. Each owner
//! (`subject`, `email`; for keys also `user`, the provider and subject the
//! limit counts; for sessions the OpenID `sid`) has a set of
//! members: `{prefix}sessions:{kind}:{value}`, `{prefix}apikeys:{kind}:{value}`.
//! Every change is one script, so it happens whole or not at all; the
//! per-user key limit is decided inside it.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{AddKeyError, KeyRecord, Owner, SessionEntry, decode, encode, hex};
use crate::auth::store::StoreError;

/// `KEYS[1]` the session, `KEYS[2..]` its owners' sets; `ARGV` the entry,
/// its time to live (ms), its id. An owner set lives as long as its
/// longest-lived session. (`PTTL` is -1 on a set without one yet.)
static ADD_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HSET', KEYS[1], 'r', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[3])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
"#,
    )
});

/// `KEYS[1]` the key's hash, `KEYS[2]` its id, `KEYS[3]` the owner's set
/// (provider and subject: the limit counts there), then the subject and
/// email sets;
/// `ARGV` the record, the key hash, the limit. 0 when over the limit.
static ADD_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[2]) end
return 1
"#,
    )
});

/// `KEYS[1]` the id, `KEYS[2]` the key, `KEYS[3..]` the owner sets; `ARGV[1]`
/// the key hash. Deletes only what `KEYS[1]` still names.
static DELETE_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
return 1
"#,
    )
});

/// A use of a key that still exists.
static TOUCH_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'used', ARGV[1]) end
return 1
"#,
    )
});

#[derive(Clone)]
pub struct RedisRecords {
    conn: ConnectionManager,
    prefix: String,
}

fn storage(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisRecords {
    pub fn new(conn: ConnectionManager, prefix: &str) -> RedisRecords {
        RedisRecords { conn, prefix: prefix.to_string() }
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn set(&self, what: &str, kind: &str, value: &str) -> String {
        format!("{}{what}:{kind}:{value}", self.prefix)
    }

    fn session_sets(&self, e: &SessionEntry) -> Vec<String> {
        let mut sets = vec![self.set("sessions", "subject", &e.subject)];
        sets.extend(e.email.iter().map(|m| self.set("sessions", "email", m)));
        sets.extend(e.sid.iter().map(|s| self.set("sessions", "sid", s)));
        sets
    }

    fn key(&self, hash: &str) -> String {
        format!("{}apikey:{hash}", self.prefix)
    }

    fn key_id(&self, id: &str) -> String {
        format!("{}apikey-id:{id}", self.prefix)
    }

    /// The user's set (provider and subject) first: the limit is counted there.
    fn key_sets(&self, r: &KeyRecord) -> Vec<String> {
        let mut sets =
            vec![self.set("apikeys", "user", &super::user(&r.owner)), self.set("apikeys", "subject", &r.owner.sub)];
        sets.extend(r.owner.email.iter().map(|m| self.set("apikeys", "email", &m.to_ascii_lowercase())));
        sets
    }

    pub async fn add_session(&self, entry: &SessionEntry, now: u64) -> Result<(), StoreError> {
        // Redis expires it on its own time: the session's remaining life.
        let ttl_ms = entry.expires.saturating_sub(now).max(1).saturating_mul(1000);
        let mut script = ADD_SESSION.prepare_invoke();
        script.key(self.session_key(&entry.id));
        for set in self.session_sets(entry) {
            script.key(set);
        }
        script.arg(encode(entry)).arg(ttl_ms).arg(&entry.id);
        script.invoke_async::<i64>(&mut self.conn.clone()).await.map_err(storage)?;
        Ok(())
    }

    pub async fn sessions(&self, owner: &Owner) -> Result<Vec<SessionEntry>, StoreError> {
        let (kind, value) = owner.parts();
        let set = self.set("sessions", kind, value);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(&set).query_async(&mut conn).await.map_err(storage)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGET").arg(self.session_key(id)).arg("r");
        }
        let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await.map_err(storage)?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            match value {
                Some(v) => out.push(decode(&v)?),
                None => gone.push(id),
            }
        }
        // Sessions that expired leave their id in the set until a listing
        // like this one notices.
        if !gone.is_empty() {
            let _: Result<(), _> = redis::cmd("SREM").arg(&set).arg(gone).query_async(&mut conn).await;
        }
        Ok(out)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionEntry>, StoreError> {
        let value: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.session_key(id))
            .arg("r")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(storage)?;
        value.map(|v| decode(&v)).transpose()
    }

    pub async fn drop_sessions(&self, entries: &[SessionEntry]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for e in entries {
            pipe.cmd("DEL").arg(self.session_key(&e.id)).ignore();
            for set in self.session_sets(e) {
                pipe.cmd("SREM").arg(set).arg(&e.id).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(storage)
    }

    pub async fn add_key(&self, hash: &[u8; 32], record: &KeyRecord, limit: usize) -> Result<(), AddKeyError> {
        let hash = hex(hash);
        let mut script = ADD_KEY.prepare_invoke();
        script.key(self.key(&hash));
        script.key(self.key_id(&record.id));
        for set in self.key_sets(record) {
            script.key(set);
        }
        script.arg(encode(record)).arg(&hash).arg(limit);
        match script.invoke_async::<i64>(&mut self.conn.clone()).await.map_err(storage)? {
            1 => Ok(()),
            _ => Err(AddKeyError::OverLimit),
        }
    }

    async fn read_key(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let (record, used): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key(hash))
            .arg("r")
            .arg("used")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(storage)?;
        let Some(record) = record else { return Ok(None) };
        let mut record: KeyRecord = decode(&record)?;
        record.last_used_at = used;
        Ok(Some(record))
    }

    pub async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        self.read_key(&hex(hash)).await
    }

    pub async fn keys(&self, owner: &Owner) -> Result<Vec<KeyRecord>, StoreError> {
        let (kind, value) = owner.parts();
        let hashes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.set("apikeys", kind, value))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(storage)?;
        let mut out = Vec::with_capacity(hashes.len());
        for hash in &hashes {
            if let Some(record) = self.read_key(hash).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub async fn delete_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let hash: Option<String> =
            redis::cmd("GET").arg(self.key_id(id)).query_async(&mut conn).await.map_err(storage)?;
        let Some(hash) = hash else { return Ok(None) };
        let Some(record) = self.read_key(&hash).await? else { return Ok(None) };
        let mut script = DELETE_KEY.prepare_invoke();
        script.key(self.key_id(id));
        script.key(self.key(&hash));
        for set in self.key_sets(&record) {
            script.key(set);
        }
        script.arg(&hash);
        let deleted: i64 = script.invoke_async(&mut conn).await.map_err(storage)?;
        Ok((deleted == 1).then_some(record))
    }

    pub async fn touch_key(&self, hash: &[u8; 32], at: u64) -> Result<(), StoreError> {
        let mut script = TOUCH_KEY.prepare_invoke();
        script.key(self.key(&hex(hash)));
        script.arg(at);
        script.invoke_async::<i64>(&mut self.conn.clone()).await.map_err(storage)?;
        Ok(())
    }
}
