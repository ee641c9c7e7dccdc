//! Engage-style identifier mappings ("De-Para"): a backend that only knows
//! its own user ids registers `identifier -> user_login` once, then asks for
//! login codes by identifier. Kept in an embedded database (redb) under
//! `server.state_dir`, so they survive restarts; every change is one durable,
//! atomic transaction.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

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

#[derive(Clone)]
pub struct Identifiers {
    db: Arc<Database>,
}

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
        Ok(Identifiers { db: Arc::new(db) })
    }

    /// Adds mappings for `client`, all or none: a conflict (an identifier
    /// already mapped to a different user) rejects the whole batch. Adding an
    /// existing identical mapping is a no-op. Returns how many were new.
    pub fn add(&self, client: &str, mappings: &[Mapping]) -> Result<usize, MappingError> {
        let txn = self.db.begin_write().map_err(storage)?;
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

    /// The user mapped to `identifier` for `client`.
    pub fn lookup(&self, client: &str, identifier: &str) -> Result<Option<String>, MappingError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(MAPPINGS).map_err(storage)?;
        Ok(table.get(key(client, identifier).as_str()).map_err(storage)?.map(|v| v.value().to_string()))
    }

    /// Every mapping of `client`.
    pub fn list(&self, client: &str) -> Result<Vec<Mapping>, MappingError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(MAPPINGS).map_err(storage)?;
        let start = format!("{client}\0");
        let end = format!("{client}\u{1}");
        let mut out = Vec::new();
        for row in table.range(start.as_str()..end.as_str()).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let identifier = k.value().split_once('\0').map_or("", |(_, i)| i).to_string();
            out.push(Mapping {
                user_login: v.value().to_string(),
                client_application_id: client.to_string(),
                identifier,
            });
        }
        Ok(out)
    }

    /// Removes one mapping; false when there was none.
    pub fn remove(&self, client: &str, identifier: &str) -> Result<bool, MappingError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = {
            let mut table = txn.open_table(MAPPINGS).map_err(storage)?;
            let k = key(client, identifier);
            table.remove(k.as_str()).map_err(storage)?.is_some()
        };
        txn.commit().map_err(storage)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(user: &str, id: &str) -> Mapping {
        Mapping { user_login: user.into(), client_application_id: "app1".into(), identifier: id.into() }
    }

    #[test]
    fn round_trip_conflict_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Identifiers::open(dir.path()).unwrap();
        assert_eq!(ids.add("app1", &[m("ana", "u-1"), m("bob", "u-2")]).unwrap(), 2);
        assert_eq!(ids.add("app1", &[m("ana", "u-1")]).unwrap(), 0, "same mapping again is a no-op");
        assert!(matches!(ids.add("app1", &[m("carol", "u-3"), m("eve", "u-1")]), Err(MappingError::Conflict(_))));
        assert_eq!(ids.lookup("app1", "u-3").unwrap(), None, "a rejected batch adds nothing");
        assert_eq!(ids.lookup("app2", "u-1").unwrap(), None, "identifiers are per client");
        assert_eq!(ids.list("app1").unwrap().len(), 2);
        drop(ids);
        let reopened = Identifiers::open(dir.path()).unwrap();
        assert_eq!(reopened.lookup("app1", "u-1").unwrap().as_deref(), Some("ana"));
        assert!(reopened.remove("app1", "u-1").unwrap());
        assert!(!reopened.remove("app1", "u-1").unwrap());
    }
}
