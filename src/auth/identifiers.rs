//! Engage-style identifier mappings ("De-Para"): a backend that only knows
//! its own user ids registers `identifier -> user_login` once, then asks for
//! login codes by identifier. With the in-process store they are kept in an
//! embedded database (redb) under `server.state_dir`, so they survive
//! restarts; every change is one durable, atomic transaction. With
//! `session.store = "redis"` they live in Redis, one hash per client, so
//! every replica sees the same mappings; a batch is one Lua script, so it is
//! just as atomic (all or nothing, conflicts decided inside Redis).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use redis::aio::ConnectionManager;

/// `"{client_id}\0{identifier}"` -> `user_login`.
const MAPPINGS: TableDefinition<&str, &str> = TableDefinition::new("identifier_mappings");

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    pub user_login: String,
    pub client_application_id: String,
    pub identifier: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("identifier {0:?} is already mapped to another user")]
    Conflict(String),
    #[error("identifier store: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> MappingError {
    MappingError::Storage(e.to_string())
}

fn key(client: &str, identifier: &str) -> String {
    format!("{client}\0{identifier}")
}

/// Where the mappings are kept; cheap to clone.
#[derive(Clone)]
pub struct Identifiers {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redb(Arc<Database>),
    Redis { conn: ConnectionManager, prefix: String },
}

/// Checks a whole batch, then adds it: `KEYS[1]` the client's hash, `ARGV`
/// identifier/user pairs. Answers `{added, ""}` or `{-1, identifier}` on a
/// conflict (with a stored mapping or within the batch), having written nothing.
const ADD_SCRIPT: &str = r#"
local seen = {}
for i = 1, #ARGV, 2 do
  local id, user = ARGV[i], ARGV[i + 1]
  local current = seen[id] or redis.call('HGET', KEYS[1], id)
  if current and current ~= user then return {-1, id} end
  seen[id] = user
end
local added = 0
for i = 1, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return {added, ''}
"#;

impl Identifiers {
    /// Opens (or creates) `dir/identifiers.redb`.
    pub fn open(dir: &Path) -> Result<Identifiers, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("server.state_dir: cannot create {}: {e}", dir.display()))?;
        let path = dir.join("identifiers.redb");
        let db =
            Database::create(&path).map_err(|e| format!("server.state_dir: cannot open {}: {e}", path.display()))?;
        // Create the table so readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(MAPPINGS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(Identifiers { backend: Backend::Redb(Arc::new(db)) })
    }

    /// Mappings in Redis under `prefix` (`{prefix}identifiers:{client}`),
    /// over the shared store's connection.
    pub fn redis(conn: ConnectionManager, prefix: &str) -> Identifiers {
        Identifiers { backend: Backend::Redis { conn, prefix: prefix.to_string() } }
    }

    /// Adds mappings for `client`, all or none: a conflict (an identifier
    /// already mapped to a different user) rejects the whole batch. Adding an
    /// existing identical mapping is a no-op. Returns how many were new.
    pub async fn add(&self, client: &str, mappings: &[Mapping]) -> Result<usize, MappingError> {
        match &self.backend {
            Backend::Redb(db) => {
                let (db, client, mappings) = (db.clone(), client.to_string(), mappings.to_vec());
                blocking(move || redb_add(&db, &client, &mappings)).await
            }
            Backend::Redis { conn, prefix } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(ADD_SCRIPT).arg(1).arg(hash(prefix, client));
                for m in mappings {
                    cmd.arg(&m.identifier).arg(&m.user_login);
                }
                let (added, conflict): (i64, String) = cmd.query_async(&mut conn.clone()).await.map_err(storage)?;
                match usize::try_from(added) {
                    Ok(n) => Ok(n),
                    Err(_) => Err(MappingError::Conflict(conflict)),
                }
            }
        }
    }

    /// The user mapped to `identifier` for `client`.
    pub async fn lookup(&self, client: &str, identifier: &str) -> Result<Option<String>, MappingError> {
        match &self.backend {
            Backend::Redb(db) => {
                let (db, k) = (db.clone(), key(client, identifier));
                blocking(move || {
                    let txn = db.begin_read().map_err(storage)?;
                    let table = txn.open_table(MAPPINGS).map_err(storage)?;
                    Ok(table.get(k.as_str()).map_err(storage)?.map(|v| v.value().to_string()))
                })
                .await
            }
            Backend::Redis { conn, prefix } => redis::cmd("HGET")
                .arg(hash(prefix, client))
                .arg(identifier)
                .query_async(&mut conn.clone())
                .await
                .map_err(storage),
        }
    }

    /// Every mapping of `client`, by identifier.
    pub async fn list(&self, client: &str) -> Result<Vec<Mapping>, MappingError> {
        let pairs: Vec<(String, String)> = match &self.backend {
            Backend::Redb(db) => {
                let (db, client) = (db.clone(), client.to_string());
                blocking(move || redb_list(&db, &client)).await?
            }
            Backend::Redis { conn, prefix } => {
                let mut pairs: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(hash(prefix, client))
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(storage)?;
                pairs.sort();
                pairs
            }
        };
        Ok(pairs
            .into_iter()
            .map(|(identifier, user_login)| Mapping {
                user_login,
                client_application_id: client.to_string(),
                identifier,
            })
            .collect())
    }

    /// Removes one mapping; false when there was none.
    pub async fn remove(&self, client: &str, identifier: &str) -> Result<bool, MappingError> {
        match &self.backend {
            Backend::Redb(db) => {
                let (db, k) = (db.clone(), key(client, identifier));
                blocking(move || {
                    let txn = db.begin_write().map_err(storage)?;
                    let removed = {
                        let mut table = txn.open_table(MAPPINGS).map_err(storage)?;
                        table.remove(k.as_str()).map_err(storage)?.is_some()
                    };
                    txn.commit().map_err(storage)?;
                    Ok(removed)
                })
                .await
            }
            Backend::Redis { conn, prefix } => {
                let removed: i64 = redis::cmd("HDEL")
                    .arg(hash(prefix, client))
                    .arg(identifier)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(storage)?;
                Ok(removed > 0)
            }
        }
    }
}

fn hash(prefix: &str, client: &str) -> String {
    format!("{prefix}identifiers:{client}")
}

/// redb writes are durable (fsync): they run off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MappingError> + Send + 'static,
) -> Result<T, MappingError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| MappingError::Storage("identifier store task failed".into()))?
}

fn redb_add(db: &Database, client: &str, mappings: &[Mapping]) -> Result<usize, MappingError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut added = 0;
    {
        let mut table = txn.open_table(MAPPINGS).map_err(storage)?;
        for m in mappings {
            let k = key(client, &m.identifier);
            let existing = table.get(k.as_str()).map_err(storage)?.map(|v| v.value().to_string());
            match existing {
                Some(user) if user == m.user_login => {}
                Some(_) => return Err(MappingError::Conflict(m.identifier.clone())),
                None => {
                    table.insert(k.as_str(), m.user_login.as_str()).map_err(storage)?;
                    added += 1;
                }
            }
        }
    }
    txn.commit().map_err(storage)?;
    Ok(added)
}

/// `(identifier, user_login)` pairs of `client`, in key order.
fn redb_list(db: &Database, client: &str) -> Result<Vec<(String, String)>, MappingError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(MAPPINGS).map_err(storage)?;
    let start = format!("{client}\0");
    let end = format!("{client}\u{1}");
    let mut out = Vec::new();
    for row in table.range(start.as_str()..end.as_str()).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let identifier = k.value().split_once('\0').map_or("", |(_, i)| i).to_string();
        out.push((identifier, v.value().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(user: &str, id: &str) -> Mapping {
        Mapping { user_login: user.into(), client_application_id: "app1".into(), identifier: id.into() }
    }

    #[tokio::test]
    async fn round_trip_conflict_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Identifiers::open(dir.path()).unwrap();
        assert_eq!(ids.add("app1", &[m("ana", "u-1"), m("bob", "u-2")]).await.unwrap(), 2);
        assert_eq!(ids.add("app1", &[m("ana", "u-1")]).await.unwrap(), 0, "same mapping again is a no-op");
        assert!(matches!(ids.add("app1", &[m("carol", "u-3"), m("eve", "u-1")]).await, Err(MappingError::Conflict(_))));
        assert_eq!(ids.lookup("app1", "u-3").await.unwrap(), None, "a rejected batch adds nothing");
        assert_eq!(ids.lookup("app2", "u-1").await.unwrap(), None, "identifiers are per client");
        assert_eq!(ids.list("app1").await.unwrap().len(), 2);
        drop(ids);
        let reopened = Identifiers::open(dir.path()).unwrap();
        assert_eq!(reopened.lookup("app1", "u-1").await.unwrap().as_deref(), Some("ana"));
        assert!(reopened.remove("app1", "u-1").await.unwrap());
        assert!(!reopened.remove("app1", "u-1").await.unwrap());
    }
}
