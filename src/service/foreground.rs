//! Tracks the foreground work that background indexing gives way to: embeddings that requests
//! are waiting for.
//!
//! On a machine whose cores the encoder already keeps busy, graph insertion takes its CPU time
//! from the model, and a bulk load runs as much slower as the insertions cost. Passages that
//! are not in the graph yet are still found (queries scan them exactly), so the indexer can wait
//! while requests wait for the model, within a bound on how much it leaves unindexed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts embeddings in flight and remembers when the last one finished.
#[derive(Debug)]
pub(crate) struct Foreground {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at which the last embedding finished; 0 before any.
    last_done_ms: AtomicU64,
    epoch: Instant,
}

/// Marks one embedding in flight for as long as it lives.
#[derive(Debug)]
pub(crate) struct ForegroundGuard(Arc<Foreground>);

impl Foreground {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Foreground {
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Marks an embedding as started; it counts until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> ForegroundGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ForegroundGuard(self.clone())
    }

    /// Whether an embedding is in flight or finished less than `quiet` ago. The quiet period
    /// bridges the gaps between the requests of a client that sends them one after another, so
    /// that a long index build does not start in a gap of a few milliseconds.
    pub(crate) fn busy(&self, quiet: Duration) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return true;
        }
        let last = self.last_done_ms.load(Ordering::Acquire);
        last != 0 && self.now_ms().saturating_sub(last) < quiet.as_millis() as u64
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "no embedding yet".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

impl Drop for ForegroundGuard {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_while_in_flight_and_for_the_quiet_period_after() {
        let fg = Foreground::new();
        assert!(!fg.busy(Duration::from_secs(60)), "nothing has run yet");
        let a = fg.enter();
        let b = fg.enter();
        assert!(fg.busy(Duration::ZERO));
        drop(a);
        assert!(fg.busy(Duration::ZERO), "one is still in flight");
        drop(b);
        assert!(!fg.busy(Duration::ZERO));
        assert!(fg.busy(Duration::from_secs(60)), "inside the quiet period");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !fg.busy(Duration::from_millis(10)),
            "the quiet period is over"
        );
    }
}
