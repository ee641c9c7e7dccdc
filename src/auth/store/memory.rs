//! The in-process store: moka caches with a TTL per entry, for one
//! process (and as the Redis store's local revocation mirror).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use super::{Revocation, Store, StoreFuture};
use crate::clock::Clock;

#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

struct PerEntry;

impl Expiry<String, Entry> for PerEntry {
    fn expire_after_create(&self, _key: &String, value: &Entry, created_at: Instant) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        updated_at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(updated_at))
    }
}

/// In-process store: moka caches with a TTL per entry. Revocations live in
/// their own caches, keyed by the bare id, so the per-request check builds
/// no strings.
pub struct MemoryStore {
    entries: Cache<String, Entry>,
    revoked_sessions: Cache<String, Entry>,
    revoked_subjects: Cache<String, Entry>,
    revoked_emails: Cache<String, Entry>,
    /// Set before the first revocation is stored: until then the check is free.
    any_revoked: AtomicBool,
    /// Decides expiry (moka evicts on real time, which lags a moved clock).
    clock: Clock,
}

impl MemoryStore {
    /// `capacity` bounds the number of entries of each kind (replay ids and
    /// login attempts; revocations); past it the least useful are evicted.
    pub fn new(capacity: u64, clock: Clock) -> MemoryStore {
        let cache = || Cache::builder().max_capacity(capacity).expire_after(PerEntry).build();
        MemoryStore {
            entries: cache(),
            revoked_sessions: cache(),
            revoked_subjects: cache(),
            revoked_emails: cache(),
            any_revoked: AtomicBool::new(false),
            clock,
        }
    }

    /// Records a revocation in local memory only: the body of
    /// [`Store::revoke`] here, and the local mirror of a shared store.
    pub(crate) fn record(&self, what: Revocation, now: u64, ttl: Duration) {
        self.any_revoked.store(true, Ordering::SeqCst);
        let entry = Entry { value: now.to_be_bytes().to_vec(), expires: self.clock.instant() + ttl };
        match what {
            // A session id names one session whenever it was issued.
            Revocation::Session(s) => {
                self.revoked_sessions.insert(s, Entry { value: u64::MAX.to_be_bytes().to_vec(), ..entry })
            }
            Revocation::Subject(s) => self.revoked_subjects.insert(s, entry),
            Revocation::Email(e) => self.revoked_emails.insert(e.to_ascii_lowercase(), entry),
        }
    }
}

/// A revocation entry applies to sessions issued at or before its time.
fn revoked_before(cache: &Cache<String, Entry>, key: &str, issued_at: u64, now: Instant) -> bool {
    cache.get(key).is_some_and(|e| {
        e.expires > now && {
            let at = e.value.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
            issued_at <= at
        }
    })
}

impl Store for MemoryStore {
    fn insert_once<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let now = self.clock.instant();
        let fresh = Entry { value: Vec::new(), expires: now + ttl };
        // Atomic per key: exactly one caller finds the id absent (or expired).
        let first = self.entries.entry(key.to_string()).and_compute_with(|held| match held {
            Some(e) if e.value().expires > now => moka::ops::compute::Op::Nop,
            _ => moka::ops::compute::Op::Put(fresh),
        });
        let first = matches!(
            first,
            moka::ops::compute::CompResult::Inserted(_) | moka::ops::compute::CompResult::ReplacedWith(_)
        );
        Box::pin(std::future::ready(Ok(first)))
    }

    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, ()> {
        self.entries.insert(key.to_string(), Entry { value, expires: self.clock.instant() + ttl });
        Box::pin(std::future::ready(Ok(())))
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let value = self.entries.get(key).filter(|e| e.expires > self.clock.instant()).map(|e| e.value);
        Box::pin(std::future::ready(Ok(value)))
    }

    fn take<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let value = self.entries.remove(key).filter(|e| e.expires > self.clock.instant()).map(|e| e.value);
        Box::pin(std::future::ready(Ok(value)))
    }

    fn revoke<'a>(&'a self, what: Revocation, now: u64, ttl: Duration) -> StoreFuture<'a, ()> {
        self.record(what, now, ttl);
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_revoked(&self, session_id: &str, subject: &str, email: Option<&str>, issued_at: u64) -> bool {
        if !self.any_revoked.load(Ordering::SeqCst) {
            return false;
        }
        let now = self.clock.instant();
        revoked_before(&self.revoked_sessions, session_id, issued_at, now)
            || revoked_before(&self.revoked_subjects, subject, issued_at, now)
            || email.is_some_and(|e| {
                if e.bytes().any(|b| b.is_ascii_uppercase()) {
                    revoked_before(&self.revoked_emails, &e.to_ascii_lowercase(), issued_at, now)
                } else {
                    revoked_before(&self.revoked_emails, e, issued_at, now)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn insert_once_and_take_once() {
        let s = MemoryStore::new(100, Clock::default());
        assert!(s.insert_once("jti:a", Duration::from_secs(60)).await.unwrap());
        assert!(!s.insert_once("jti:a", Duration::from_secs(60)).await.unwrap());
        s.put("code:x", b"v".to_vec(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.take("code:x").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.take("code:x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn entries_expire() {
        let s = MemoryStore::new(100, Clock::default());
        s.put("k", b"v".to_vec(), Duration::from_millis(20)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(s.take("k").await.unwrap(), None);
        assert!(s.insert_once("once", Duration::from_millis(20)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(40)).await;
        s.entries.run_pending_tasks();
        assert!(s.insert_once("once", Duration::from_millis(20)).await.unwrap());
    }

    #[tokio::test]
    async fn revocations() {
        let s = MemoryStore::new(100, Clock::default());
        assert!(!s.is_revoked("sid1", "alice", Some("a@x.test"), 100));
        s.revoke(Revocation::Session("sid1".into()), 100, Duration::from_secs(60)).await.unwrap();
        assert!(s.is_revoked("sid1", "alice", None, 100));
        assert!(!s.is_revoked("sid2", "alice", None, 100));
        s.revoke(Revocation::Subject("bob".into()), 200, Duration::from_secs(60)).await.unwrap();
        assert!(s.is_revoked("sid3", "bob", None, 150));
        assert!(!s.is_revoked("sid4", "bob", None, 201), "sessions after the revocation stay valid");
        s.revoke(Revocation::Email("Carol@X.test".into()), 300, Duration::from_secs(60)).await.unwrap();
        assert!(s.is_revoked("sid5", "carol", Some("carol@x.test"), 299));
    }
}
