//! Time as porteiro sees it: the system's, plus an offset that only tests
//! move ([`Clock::advance`]). Everything that expires (sessions, tokens,
//! codes, login attempts, replay ids, revocations, key refreshes) reads this
//! clock, so a test can jump past an expiry instead of sleeping through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Milliseconds added to the system's time; 0 outside tests.
    offset_ms: AtomicU64,
    /// Wakes [`Clock::sleep`]ers when the offset moves.
    moved: Notify,
}

impl Clock {
    /// Unix time in seconds.
    pub fn now(&self) -> u64 {
        let system = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        system + self.offset().as_secs()
    }

    /// Unix time in nanoseconds (orders events within one second).
    pub fn now_nanos(&self) -> u64 {
        let system = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + self.offset();
        u64::try_from(system.as_nanos()).unwrap_or(u64::MAX)
    }

    /// A monotonic instant, moved by the same offset.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Waits until `deadline` (an [`instant`](Clock::instant)) has passed,
    /// waking early when the clock is moved past it.
    pub async fn sleep_until(&self, deadline: Instant) {
        loop {
            let moved = self.inner.moved.notified();
            let now = self.instant();
            if now >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(deadline - now) => {}
                () = moved => {}
            }
        }
    }

    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.instant() + duration).await;
    }

    /// Moves the clock forward. For tests: a production process never calls
    /// it, and the clock never goes back.
    #[doc(hidden)]
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.inner.moved.notify_waiters();
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.inner.offset_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_reading() {
        let clock = Clock::default();
        let (secs, instant) = (clock.now(), clock.instant());
        clock.advance(Duration::from_secs(120));
        assert!(clock.now() >= secs + 120);
        assert!(clock.instant() >= instant + Duration::from_secs(120));
    }

    #[tokio::test]
    async fn a_sleeper_wakes_when_the_clock_jumps_past_its_deadline() {
        let clock = Clock::default();
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(3600)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(3601));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
    }
}
