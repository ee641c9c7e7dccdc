//! Shared single-use and revocation state: replayed token ids, login
//! attempts, single-use codes, revocations. [`memory::MemoryStore`] (moka)
//! serves one process; [`redis::RedisStore`] implements the same trait for
//! replicas.
//!
//! Every operation that decides "first time or not" is atomic in the store
//! itself (`insert_once`, `take`), so exactly one caller wins a race.

pub mod memory;
pub mod redis;

pub use memory::MemoryStore;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One session.
    Session(String),
    /// Every session of a subject issued before now.
    Subject(String),
    /// Every session of an email address issued before now.
    Email(String),
}

pub trait Store: Send + Sync + 'static {
    /// Records `key` for `ttl` if it is not there yet. True for the first
    /// caller only.
    fn insert_once<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool>;

    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, ()>;

    /// The value under `key`, leaving it there.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Removes and returns the value: at most one caller gets it.
    fn take<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Revokes sessions for `ttl` (the longest a session can live).
    fn revoke<'a>(&'a self, what: Revocation, now: u64, ttl: Duration) -> StoreFuture<'a, ()>;

    /// Is a session revoked? Answers from local memory, never the network:
    /// it runs on every request.
    fn is_revoked(&self, session_id: &str, subject: &str, email: Option<&str>, issued_at: u64) -> bool;

    /// Can the store serve logins now? Feeds `/readyz`; memory always can.
    fn ready(&self) -> bool {
        true
    }
}
