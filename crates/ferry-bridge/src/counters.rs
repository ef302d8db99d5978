//! The counters of one bridged queue, kept with atomics: plugins' threads
//! add to them (enqueue), the bridge's runtime too, and `/stats` reads them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one bridged queue since start.
#[derive(Default, Debug)]
pub struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) fetched: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) returned: AtomicU64,
    pub(crate) lost_at_exit: AtomicU64,
}

/// A snapshot of [`Counters`], with the gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeCounts {
    /// Publishes sent to the broker (retries included).
    pub published: u64,
    /// Items the broker confirmed it stored.
    pub acked: u64,
    /// Publishes that failed or timed out; the item waited and went again.
    pub retried: u64,
    /// Items waiting for the broker now: buffered or unconfirmed (a gauge).
    pub waiting: u64,
    /// Items dropped from a full buffer to make room (`DROP_OLDEST`).
    pub dropped: u64,
    /// Enqueues refused by a full buffer (`REFUSE`).
    pub refused: u64,
    /// Items fetched for this process's receiver.
    pub fetched: u64,
    /// Fetched items a plugin dequeued (each acknowledged to the broker).
    pub delivered: u64,
    /// Fetched items the broker had handed out before: possible duplicates.
    pub redelivered: u64,
    /// Fetched items this process had already fetched (same id): dropped,
    /// acknowledged, not delivered again.
    pub duplicates: u64,
    /// Items fetched here but returned to the broker undelivered (shutdown).
    pub returned: u64,
    /// Items fetched and not yet acknowledged (a gauge, at most `fetch_ahead`).
    pub held: u64,
    /// Items still waiting for the broker when the drain timeout ended.
    pub lost_at_exit: u64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, waiting: u64, held: u64) -> BridgeCounts {
        BridgeCounts {
            published: self.published.load(Relaxed),
            acked: self.acked.load(Relaxed),
            retried: self.retried.load(Relaxed),
            waiting,
            dropped: self.dropped.load(Relaxed),
            refused: self.refused.load(Relaxed),
            fetched: self.fetched.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            returned: self.returned.load(Relaxed),
            held,
            lost_at_exit: self.lost_at_exit.load(Relaxed),
        }
    }
}
