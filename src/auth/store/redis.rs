//! The shared store for several replicas (`session.store = "redis"`).
//!
//! Single-use state is decided by Redis itself, atomically: `SET NX PX` for
//! "first time?", `GETDEL` for "take it once". Revocations are written under
//! their own keys (with the session lifetime as TTL) and published on a
//! channel; every replica keeps a local mirror (the revocation caches of a
//! [`MemoryStore`]) fed by a subscriber task, so [`Store::is_revoked`] — run
//! on every request — never waits on the network. After every (re)connect the
//! subscriber first loads all revocation keys (SCAN), so a message missed
//! while disconnected is caught up.
//!
//! The URL may carry a password: it is never logged, and errors are built
//! from the Redis error kind and text, which do not contain it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Value};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use crate::clock::Clock;

use super::{MemoryStore, Revocation, Store, StoreError, StoreFuture};

/// How long one connection attempt or one command may take before the
/// caller gets a [`StoreError`] (a login then fails closed, it never hangs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The subscriber's wait between reconnect attempts grows to this.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often the subscriber checks that Redis still answers: a connection
/// that hangs without closing (a network partition) still turns `/readyz`
/// to 503 within about this plus [`RESPONSE_TIMEOUT`].
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys asked for per SCAN step during catch-up.
const SCAN_COUNT: usize = 500;

/// Redis-backed [`Store`]. Cheap to share behind an `Arc`; dropping it stops
/// the subscriber task.
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    mirror: Arc<MemoryStore>,
    /// The subscriber is connected and has caught up: revocations are current.
    live: Arc<AtomicBool>,
    _stop: DropGuard,
}

/// Key and channel names under the configured prefix.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn entry(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn revoked(&self, kind: &str, id: &str) -> String {
        format!("{}revoked:{kind}:{id}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// `SCAN MATCH` pattern of every revocation key: the prefix is the
    /// operator's, so glob characters in it are escaped.
    fn revoked_pattern(&self) -> String {
        let mut p = String::with_capacity(self.prefix.len() + 10);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push_str("revoked:*");
        p
    }
}

fn store_error(e: &RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

/// The wire form of a revocation, in keys and messages.
fn kind_and_id(what: &Revocation) -> (&'static str, String) {
    match what {
        Revocation::Session(s) => ("session", s.clone()),
        Revocation::Subject(s) => ("subject", s.clone()),
        Revocation::Email(e) => ("email", e.to_ascii_lowercase()),
    }
}

fn revocation(kind: &str, id: String) -> Option<Revocation> {
    match kind {
        "session" => Some(Revocation::Session(id)),
        "subject" => Some(Revocation::Subject(id)),
        "email" => Some(Revocation::Email(id)),
        _ => None,
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Connects lazily: porteiro starts (and says not ready) while Redis is
    /// down. Needs a Tokio runtime for the subscriber task. `capacity` bounds
    /// the local revocation mirror like [`MemoryStore::new`].
    pub fn new(url: &[u8], prefix: &str, capacity: u64, clock: Clock) -> Result<RedisStore, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("session.store = \"redis\" needs a Tokio runtime".into());
        }
        let url = std::str::from_utf8(url).map_err(|_| "session.redis_url: not UTF-8".to_string())?;
        // The error text of a bad URL could quote it; say only what was wrong.
        let client = Client::open(url).map_err(|e| format!("session.redis_url: unusable ({:?})", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Few, quick retries: a caller waiting on a login should get an
            // answer; the manager reconnects again on the next command.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("session.store: cannot set up Redis ({:?})", e.kind()))?;
        let keys = Keys { prefix: prefix.to_string() };
        let mirror = Arc::new(MemoryStore::new(capacity, clock));
        let live = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        tokio::spawn(
            Follower { client, conn: conn.clone(), keys: keys.clone(), mirror: mirror.clone(), live: live.clone() }
                .run(stop.clone()),
        );
        Ok(RedisStore { conn, keys, mirror, live, _stop: stop.drop_guard() })
    }
}

impl RedisStore {
    /// The shared connection (it reconnects by itself), for other shared
    /// state such as identifier mappings.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

impl Store for RedisStore {
    fn insert_once<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(self.keys.entry(key))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            Ok(set.is_some())
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("SET")
                .arg(self.keys.entry(key))
                .arg(value)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| store_error(&e))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("GET").arg(self.keys.entry(key)).query_async(&mut conn).await.map_err(|e| store_error(&e))
        })
    }

    fn take<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // GETDEL is one command: across replicas exactly one caller gets the value.
            redis::cmd("GETDEL").arg(self.keys.entry(key)).query_async(&mut conn).await.map_err(|e| store_error(&e))
        })
    }

    fn revoke<'a>(&'a self, what: Revocation, now: u64, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (kind, id) = kind_and_id(&what);
            let ms = millis(ttl);
            // This replica applies it at once, whatever Redis says: a logout
            // or an admin revoke must hold here even before the message loops back.
            self.mirror.record(what, now, ttl);
            let mut conn = self.conn.clone();
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(self.keys.revoked(kind, &id))
                .arg(now)
                .arg("PX")
                .arg(ms)
                .ignore()
                .cmd("PUBLISH")
                .arg(self.keys.channel())
                .arg(format!("{kind}\n{now}\n{ms}\n{id}"))
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| store_error(&e))
        })
    }

    fn is_revoked(&self, session_id: &str, subject: &str, email: Option<&str>, issued_at: u64) -> bool {
        self.mirror.is_revoked(session_id, subject, email, issued_at)
    }

    fn ready(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

// === impl Follower ===

/// The subscriber task: keeps the revocation mirror current.
struct Follower {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    mirror: Arc<MemoryStore>,
    live: Arc<AtomicBool>,
}

impl Follower {
    async fn run(self, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.follow() => outcome,
            };
            let was_live = self.live.swap(false, Ordering::Relaxed);
            match outcome {
                Ok(()) => warn!("redis store: subscription closed; reconnecting"),
                Err(e) if was_live => warn!(error = %e, "redis store: connection lost; reconnecting"),
                Err(e) => warn!(error = %e, "redis store: cannot connect; retrying"),
            }
            delay = if was_live { Duration::from_millis(100) } else { (delay * 2).min(MAX_RETRY_DELAY) };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection's life: subscribe, catch up, then apply messages until
    /// the connection closes.
    async fn follow(&self) -> Result<(), StoreError> {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub());
        let mut pubsub = connect
            .await
            .map_err(|_| StoreError("redis: connection timed out".into()))?
            .map_err(|e| store_error(&e))?;
        pubsub.subscribe(self.keys.channel()).await.map_err(|e| store_error(&e))?;
        // Subscribed before the scan: a revocation made meanwhile is either
        // in the scan or arrives as a message, never lost between the two.
        let loaded = self.catch_up().await?;
        self.live.store(true, Ordering::Relaxed);
        info!(revocations = loaded, "redis store: connected");
        let mut messages = pubsub.into_on_message();
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    match std::str::from_utf8(msg.get_payload_bytes()).ok().and_then(parse_message) {
                        Some((what, at, ttl)) => self.mirror.record(what, at, ttl),
                        None => warn!("redis store: ignoring a malformed revocation message"),
                    }
                }
                _ = health.tick() => {
                    redis::cmd("PING").query_async::<()>(&mut self.conn.clone()).await.map_err(|e| store_error(&e))?;
                }
            }
        }
    }

    /// Loads every current revocation key into the mirror.
    async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = self.keys.revoked_pattern();
        let strip = format!("{}revoked:", self.keys.prefix);
        let mut cursor: u64 = 0;
        let mut loaded = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error(&e))?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
                }
                let values: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|e| store_error(&e))?;
                for (key, pair) in keys.iter().zip(values.chunks(2)) {
                    let [at, ttl] = pair else { continue };
                    let at = redis::from_redis_value_ref::<Option<u64>>(at).ok().flatten();
                    let ttl = redis::from_redis_value_ref::<i64>(ttl).ok().and_then(|t| u64::try_from(t).ok());
                    let what = key
                        .strip_prefix(strip.as_str())
                        .and_then(|rest| rest.split_once(':'))
                        .and_then(|(kind, id)| revocation(kind, id.to_string()));
                    // Gone meanwhile (no value, or no TTL left): nothing to mirror.
                    if let (Some(what), Some(at), Some(ttl)) = (what, at, ttl.filter(|t| *t > 0)) {
                        self.mirror.record(what, at, Duration::from_millis(ttl));
                        loaded += 1;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(loaded);
            }
        }
    }
}

/// `kind \n issued-before \n ttl-ms \n id`; the id is last, so it may hold anything.
fn parse_message(text: &str) -> Option<(Revocation, u64, Duration)> {
    let mut parts = text.splitn(4, '\n');
    let kind = parts.next()?;
    let at = parts.next()?.parse().ok()?;
    let ttl = parts.next()?.parse().ok()?;
    let what = revocation(kind, parts.next()?.to_string())?;
    Some((what, at, Duration::from_millis(ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (kind, id) = kind_and_id(&Revocation::Email("A@X.test".into()));
        let text = format!("{kind}\n42\n1000\n{id}");
        assert_eq!(parse_message(&text), Some((Revocation::Email("a@x.test".into()), 42, Duration::from_secs(1))));
        assert_eq!(
            parse_message("subject\n1\n5\nodd\nsubject"),
            Some((Revocation::Subject("odd\nsubject".into()), 1, Duration::from_millis(5)))
        );
        assert_eq!(parse_message("other\n1\n5\nx"), None);
        assert_eq!(parse_message("session\nx\n5\nx"), None);
    }

    #[test]
    fn scan_pattern_escapes_the_prefix() {
        assert_eq!(Keys { prefix: "p:".into() }.revoked_pattern(), "p:revoked:*");
        assert_eq!(Keys { prefix: "a*[b]:".into() }.revoked_pattern(), "a\\*\\[b\\]:revoked:*");
    }
}
