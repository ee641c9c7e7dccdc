//! Giving memory back after a burst. mimalloc keeps what a thread freed
//! until that thread allocates again or collects; a worker that goes idle
//! after ten thousand connections closed would keep their memory for good
//! (a sidecar under a memory limit stays at its peak). So a worker thread
//! that parks after connections have closed collects its heap, at most
//! every [`MIN_GAP`]; one put off because the last was too recent is
//! caught up by [`trailing`], so the last collection after a burst always
//! happens.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Least time between two collections on one worker: under load a worker
/// parks thousands of times a second, and a collection walks its heap.
const MIN_GAP: Duration = Duration::from_millis(250);

/// Connection states ended (closed, or parked): memory to give back.
static FREED: AtomicU64 = AtomicU64::new(0);

/// A collection was put off.
static PUT_OFF: Notify = Notify::const_new();

thread_local! {
    /// `FREED` at this thread's last collection, and when that was.
    static LAST: Cell<(u64, Option<Instant>)> = const { Cell::new((0, None)) };
}

/// A connection's state was dropped.
pub(crate) fn freed() {
    FREED.fetch_add(1, Relaxed);
}

/// Runtime hook (`on_thread_park`): the worker thread has nothing to do.
pub fn on_park() {
    let freed = FREED.load(Relaxed);
    let (seen, at) = LAST.get();
    if freed == seen {
        return;
    }
    let now = Instant::now();
    if at.is_some_and(|at| now.duration_since(at) < MIN_GAP) {
        PUT_OFF.notify_one();
        return;
    }
    LAST.set((freed, Some(now)));
    porteiro_alloc::collect();
}

/// Runs for the life of the runtime: MIN_GAP after a collection was put
/// off, wakes the workers (a spawned task wakes a parked one to take it)
/// so that they park again, and collect.
pub async fn trailing(workers: usize) {
    loop {
        PUT_OFF.notified().await;
        tokio::time::sleep(MIN_GAP).await;
        for _ in 0..workers {
            tokio::spawn(async {});
        }
    }
}
