//! Rate limits per client address (DESIGN §9): the login endpoints, and
//! refused bearer tokens and API keys. Each client address has its own
//! GCRA limiter (`governor`); the limiters live in a bounded cache, so an
//! attacker rotating addresses makes porteiro forget the least recently
//! seen ones, never grow without bound. IPv6 clients are counted per /64,
//! the block one host usually holds. Per replica, reset by a reload.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;

use crate::config::RateLimitConfig;

/// A client idle this long has a full allowance again anyway.
const IDLE: Duration = Duration::from_secs(120);

struct Bucket {
    quota: Quota,
    limiters: Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
}

impl Bucket {
    fn new(per_minute: u32, max_clients: u64) -> Option<Bucket> {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute)?);
        Some(Bucket { quota, limiters: lru(max_clients).time_to_idle(IDLE).build() })
    }

    /// Takes one request from `client`'s allowance; how long to wait when
    /// there is none.
    fn take(&self, client: IpAddr, clock: &DefaultClock) -> Result<(), Duration> {
        let limiter = self.limiters.get_with(client, || Arc::new(RateLimiter::direct(self.quota)));
        limiter.check().map_err(|not_until| not_until.wait_time_from(clock.now()))
    }
}

pub struct RateLimits {
    login: Option<Bucket>,
    failures: Option<Bucket>,
    /// Clients over the failure limit, until when: refused before any
    /// verification.
    blocked: Cache<IpAddr, Instant>,
    clock: DefaultClock,
}

/// A bounded cache that takes every new client and forgets the least
/// recently seen: a limit must hold for a client from its first request
/// (moka's default policy would not keep one-off keys under churn).
fn lru<V: Clone + Send + Sync + 'static>(capacity: u64) -> moka::sync::CacheBuilder<IpAddr, V, Cache<IpAddr, V>> {
    Cache::builder().max_capacity(capacity).eviction_policy(moka::policy::EvictionPolicy::lru())
}

/// The address a limit counts: IPv6 by its /64.
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Whole seconds to wait, at least one (`Retry-After`).
pub fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            login: Bucket::new(config.login_per_minute, config.max_clients),
            failures: Bucket::new(config.failed_auth_per_minute, config.max_clients),
            blocked: lru(config.max_clients).time_to_live(Duration::from_secs(60)).build(),
            clock: DefaultClock::default(),
        }
    }

    /// A request to a login endpoint: allowed, or how long to wait.
    pub fn login(&self, client: IpAddr) -> Result<(), Duration> {
        match &self.login {
            Some(bucket) => bucket.take(key(client), &self.clock),
            None => Ok(()),
        }
    }

    /// A refused credential from `client`; past the limit, `client` is
    /// blocked until its allowance is back.
    pub fn failed(&self, client: IpAddr) {
        if let Some(bucket) = &self.failures {
            if let Err(wait) = bucket.take(key(client), &self.clock) {
                self.blocked.insert(key(client), Instant::now() + wait);
            }
        }
    }

    /// How long `client` must still wait after too many refused credentials.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        self.failures.as_ref()?;
        let until = self.blocked.get(&key(client))?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Client addresses remembered now, per limit (login, failures, blocked).
    pub fn clients(&self) -> [u64; 3] {
        [
            self.login.as_ref().map_or(0, |b| entries(&b.limiters)),
            self.failures.as_ref().map_or(0, |b| entries(&b.limiters)),
            entries(&self.blocked),
        ]
    }
}

fn entries<V: Clone + Send + Sync + 'static>(cache: &Cache<IpAddr, V>) -> u64 {
    cache.run_pending_tasks();
    cache.entry_count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(login: u32, failed: u32) -> RateLimits {
        RateLimits::new(&RateLimitConfig { login_per_minute: login, failed_auth_per_minute: failed, max_clients: 100 })
    }

    #[test]
    fn per_client_allowances() {
        let l = limits(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.login(a).is_ok());
        }
        let wait = l.login(a).unwrap_err();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(l.login(b).is_ok(), "another client is not affected");
        assert!(l.blocked(a).is_none());
        l.failed(a);
        l.failed(a);
        assert!(l.blocked(a).is_none(), "within the allowance");
        l.failed(a);
        assert!(l.blocked(a).is_some_and(|d| d > Duration::from_secs(20)));
        assert!(l.blocked(b).is_none());
        assert!(limits(0, 0).login(a).is_ok() && limits(0, 0).blocked(a).is_none(), "0 is off");
    }

    #[test]
    fn ipv6_counts_per_64_and_memory_is_bounded() {
        let l = limits(1, 1);
        assert!(l.login("2001:db8::1".parse().unwrap()).is_ok());
        assert!(l.login("2001:db8::2:3".parse().unwrap()).is_err(), "same /64");
        assert!(l.login("2001:db8:0:1::1".parse().unwrap()).is_ok(), "another /64");
        for i in 0..10_000u32 {
            let _ = l.login(IpAddr::V4(i.into()));
        }
        assert!(l.clients()[0] <= 100, "{:?}", l.clients());
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after(Duration::from_secs(4)), 4);
    }
}
