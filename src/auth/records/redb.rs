//! Records in redb: a file under `server.state_dir` (every change one
//! durable transaction), or memory for the session index of one process.
//! Index tables map `"{kind}\0{value}\0{id}"` to the record, so a user's
//! records are one range read.

use std::path::Path;
use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{AddKeyError, KeyRecord, Owner, SessionEntry, decode, encode, hex};
use crate::auth::store::StoreError;

/// Session id -> entry (JSON).
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// `"{kind}\0{value}\0{session id}"` -> expiry.
const SESSION_OWNERS: TableDefinition<&str, u64> = TableDefinition::new("session_owners");
/// `"{expiry as 16 hex digits}\0{session id}"`: expired sessions are one range.
const SESSION_EXPIRY: TableDefinition<&str, u64> = TableDefinition::new("session_expiry");
/// Key hash (hex) -> record (JSON).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// Key id -> key hash (hex).
const KEY_IDS: TableDefinition<&str, &str> = TableDefinition::new("api_key_ids");
/// `"{kind}\0{value}\0{key id}"` -> key hash (hex).
const KEY_OWNERS: TableDefinition<&str, &str> = TableDefinition::new("api_key_owners");
/// Key id -> last use (unix seconds), apart from the record.
const KEY_USED: TableDefinition<&str, u64> = TableDefinition::new("api_key_used");

/// Expired sessions removed per login, so no one login pays for a backlog.
const PURGE_BATCH: usize = 256;

#[derive(Clone)]
pub struct RedbRecords {
    db: Arc<Database>,
    durable: bool,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("records: {e}"))
}

fn index_key(kind: &str, value: &str, id: &str) -> String {
    format!("{kind}\0{value}\0{id}")
}

/// The range of index keys of one owner.
fn owner_range(owner: &Owner) -> (String, String) {
    let (kind, value) = owner.parts();
    (format!("{kind}\0{value}\0"), format!("{kind}\0{value}\u{1}"))
}

fn session_owners(entry: &SessionEntry) -> impl Iterator<Item = String> + '_ {
    let subject = Some(index_key("subject", &entry.subject, &entry.id));
    let email = entry.email.as_ref().map(|e| index_key("email", e, &entry.id));
    let sid = entry.sid.as_ref().map(|s| index_key("sid", s, &entry.id));
    [subject, email, sid].into_iter().flatten()
}

fn key_owners(record: &KeyRecord) -> impl Iterator<Item = String> + '_ {
    let user = Some(index_key("user", &super::user(&record.owner), &record.id));
    let subject = Some(index_key("subject", &record.owner.sub, &record.id));
    let email = record.owner.email.as_ref().map(|e| index_key("email", &e.to_ascii_lowercase(), &record.id));
    [user, subject, email].into_iter().flatten()
}

fn expiry_key(entry: &SessionEntry) -> String {
    format!("{:016x}\0{}", entry.expires, entry.id)
}

/// redb commits are durable (fsync): they run off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| StoreError("records: task failed".into()))?
}

impl RedbRecords {
    pub fn in_memory() -> Result<RedbRecords, String> {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| format!("session index: {e}"))?;
        RedbRecords::with(db, false)
    }

    pub fn open(dir: &Path) -> Result<RedbRecords, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("server.state_dir: cannot create {}: {e}", dir.display()))?;
        let path = dir.join("records.redb");
        let db =
            Database::create(&path).map_err(|e| format!("server.state_dir: cannot open {}: {e}", path.display()))?;
        RedbRecords::with(db, true)
    }

    fn with(db: Database, durable: bool) -> Result<RedbRecords, String> {
        // Every table exists before the first reader looks for it.
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        (|| {
            txn.open_table(SESSIONS)?;
            txn.open_table(SESSION_OWNERS)?;
            txn.open_table(SESSION_EXPIRY)?;
            txn.open_table(KEYS)?;
            txn.open_table(KEY_IDS)?;
            txn.open_table(KEY_OWNERS)?;
            txn.open_table(KEY_USED)?;
            Ok::<_, redb::TableError>(())
        })()
        .map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(RedbRecords { db: Arc::new(db), durable })
    }

    pub fn durable(&self) -> bool {
        self.durable
    }

    pub async fn add_session(&self, entry: &SessionEntry, now: u64) -> Result<(), StoreError> {
        let (db, entry) = (self.db.clone(), entry.clone());
        blocking(move || {
            let txn = db.begin_write().map_err(storage)?;
            purge_expired(&txn, now)?;
            {
                txn.open_table(SESSIONS)
                    .map_err(storage)?
                    .insert(entry.id.as_str(), encode(&entry).as_slice())
                    .map_err(storage)?;
                let mut owners = txn.open_table(SESSION_OWNERS).map_err(storage)?;
                for k in session_owners(&entry) {
                    owners.insert(k.as_str(), entry.expires).map_err(storage)?;
                }
                txn.open_table(SESSION_EXPIRY)
                    .map_err(storage)?
                    .insert(expiry_key(&entry).as_str(), 0)
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    pub async fn sessions(&self, owner: &Owner) -> Result<Vec<SessionEntry>, StoreError> {
        let (db, (start, end)) = (self.db.clone(), owner_range(owner));
        blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let owners = txn.open_table(SESSION_OWNERS).map_err(storage)?;
            let sessions = txn.open_table(SESSIONS).map_err(storage)?;
            let mut out = Vec::new();
            for row in owners.range(start.as_str()..end.as_str()).map_err(storage)? {
                let (k, _) = row.map_err(storage)?;
                let id = k.value().rsplit('\0').next().unwrap_or("").to_string();
                if let Some(v) = sessions.get(id.as_str()).map_err(storage)? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionEntry>, StoreError> {
        let (db, id) = (self.db.clone(), id.to_string());
        blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let sessions = txn.open_table(SESSIONS).map_err(storage)?;
            sessions.get(id.as_str()).map_err(storage)?.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    pub async fn drop_sessions(&self, entries: &[SessionEntry]) -> Result<(), StoreError> {
        let (db, entries) = (self.db.clone(), entries.to_vec());
        blocking(move || {
            let txn = db.begin_write().map_err(storage)?;
            for e in &entries {
                remove_session(&txn, e)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    pub async fn add_key(&self, hash: &[u8; 32], record: &KeyRecord, limit: usize) -> Result<(), AddKeyError> {
        let (db, hash, record) = (self.db.clone(), hex(hash), record.clone());
        let result = blocking(move || {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut owners = txn.open_table(KEY_OWNERS).map_err(storage)?;
                let (start, end) = owner_range(&Owner::User(super::user(&record.owner)));
                let held = owners.range(start.as_str()..end.as_str()).map_err(storage)?.count();
                if held >= limit {
                    return Ok(false);
                }
                for k in key_owners(&record) {
                    owners.insert(k.as_str(), hash.as_str()).map_err(storage)?;
                }
                txn.open_table(KEYS)
                    .map_err(storage)?
                    .insert(hash.as_str(), encode(&record).as_slice())
                    .map_err(storage)?;
                txn.open_table(KEY_IDS).map_err(storage)?.insert(record.id.as_str(), hash.as_str()).map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(true)
        })
        .await?;
        if result { Ok(()) } else { Err(AddKeyError::OverLimit) }
    }

    pub async fn key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let (db, hash) = (self.db.clone(), hex(hash));
        blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let keys = txn.open_table(KEYS).map_err(storage)?;
            let used = txn.open_table(KEY_USED).map_err(storage)?;
            read_key(&keys, &used, &hash)
        })
        .await
    }

    pub async fn keys(&self, owner: &Owner) -> Result<Vec<KeyRecord>, StoreError> {
        let (db, (start, end)) = (self.db.clone(), owner_range(owner));
        blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let owners = txn.open_table(KEY_OWNERS).map_err(storage)?;
            let keys = txn.open_table(KEYS).map_err(storage)?;
            let used = txn.open_table(KEY_USED).map_err(storage)?;
            let mut out = Vec::new();
            for row in owners.range(start.as_str()..end.as_str()).map_err(storage)? {
                let (_, hash) = row.map_err(storage)?;
                if let Some(record) = read_key(&keys, &used, hash.value())? {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn delete_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let (db, id) = (self.db.clone(), id.to_string());
        blocking(move || {
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let Some(hash) = txn
                    .open_table(KEY_IDS)
                    .map_err(storage)?
                    .remove(id.as_str())
                    .map_err(storage)?
                    .map(|h| h.value().to_string())
                else {
                    return Ok(None);
                };
                let record = txn
                    .open_table(KEYS)
                    .map_err(storage)?
                    .remove(hash.as_str())
                    .map_err(storage)?
                    .map(|v| decode::<KeyRecord>(v.value()));
                let record = record.transpose()?;
                txn.open_table(KEY_USED).map_err(storage)?.remove(id.as_str()).map_err(storage)?;
                if let Some(r) = &record {
                    let mut owners = txn.open_table(KEY_OWNERS).map_err(storage)?;
                    for k in key_owners(r) {
                        owners.remove(k.as_str()).map_err(storage)?;
                    }
                }
                record
            };
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }

    pub async fn touch_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        let (db, id) = (self.db.clone(), id.to_string());
        blocking(move || {
            let txn = db.begin_write().map_err(storage)?;
            // Only a key that still exists: a use racing its revocation
            // leaves nothing behind.
            if txn.open_table(KEY_IDS).map_err(storage)?.get(id.as_str()).map_err(storage)?.is_some() {
                txn.open_table(KEY_USED).map_err(storage)?.insert(id.as_str(), at).map_err(storage)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }
}

fn read_key(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    used: &impl ReadableTable<&'static str, u64>,
    hash: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    let Some(v) = keys.get(hash).map_err(storage)? else { return Ok(None) };
    let mut record: KeyRecord = decode(v.value())?;
    record.last_used_at = used.get(record.id.as_str()).map_err(storage)?.map(|t| t.value());
    Ok(Some(record))
}

fn remove_session(txn: &WriteTransaction, entry: &SessionEntry) -> Result<(), StoreError> {
    txn.open_table(SESSIONS).map_err(storage)?.remove(entry.id.as_str()).map_err(storage)?;
    let mut owners = txn.open_table(SESSION_OWNERS).map_err(storage)?;
    for k in session_owners(entry) {
        owners.remove(k.as_str()).map_err(storage)?;
    }
    txn.open_table(SESSION_EXPIRY).map_err(storage)?.remove(expiry_key(entry).as_str()).map_err(storage)?;
    Ok(())
}

/// Removes up to [`PURGE_BATCH`] sessions expired by `now`.
fn purge_expired(txn: &WriteTransaction, now: u64) -> Result<(), StoreError> {
    let end = format!("{now:016x}\u{1}");
    let expired: Vec<String> = {
        let expiry = txn.open_table(SESSION_EXPIRY).map_err(storage)?;
        let mut rows = Vec::new();
        for row in expiry.range(..end.as_str()).map_err(storage)?.take(PURGE_BATCH) {
            rows.push(row.map_err(storage)?.0.value().to_string());
        }
        rows
    };
    for row in expired {
        let id = row.split_once('\0').map_or("", |(_, id)| id);
        let entry = txn.open_table(SESSIONS).map_err(storage)?.get(id).map_err(storage)?.map(|v| decode(v.value()));
        match entry.transpose()? {
            Some(e) => remove_session(txn, &e)?,
            // No entry behind the row: the row alone goes.
            None => {
                txn.open_table(SESSION_EXPIRY).map_err(storage)?.remove(row.as_str()).map_err(storage)?;
            }
        }
    }
    Ok(())
}
