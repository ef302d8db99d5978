//! What plugins enqueued and the broker has not confirmed yet: a bounded
//! buffer between the threads that run plugins (which never wait) and the
//! bridge's publisher task (which may wait on the broker as long as it must).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use ferry_abi::Status;
use ferry_host::{ITEM_OVERHEAD, Overflow, QueueBounds};
use tokio::sync::Notify;

use crate::backend::Outgoing;
use crate::counters::Counters;

/// The buffer of one bridged queue.
pub(crate) struct Outbound {
    state: Mutex<State>,
    /// Wakes the publisher: an item came, or the bridge is stopping.
    pub(crate) wake: Notify,
    bounds: QueueBounds,
    /// Tells this process's message ids from other processes'.
    nonce: u64,
}

#[derive(Default)]
struct State {
    /// Items not yet handed to the publisher, oldest first.
    waiting: VecDeque<Outgoing>,
    /// Items the publisher took and the broker has not confirmed.
    in_flight: usize,
    /// Bytes of both (each item with [`ITEM_OVERHEAD`]).
    bytes: usize,
    next_seq: u64,
}

impl Outbound {
    pub(crate) fn new(bounds: QueueBounds) -> Self {
        Outbound { state: Mutex::default(), wake: Notify::new(), bounds, nonce: fastrand::u64(..) }
    }

    /// Takes one item a plugin enqueued: never blocks on the broker.
    pub(crate) fn push(&self, item: &[u8], counters: &Counters) -> Result<(), Status> {
        let cost = item.len() + ITEM_OVERHEAD;
        let mut state = self.lock();
        if cost > self.bounds.max_bytes {
            Counters::add(&counters.refused, 1);
            return Err(Status::NotFound);
        }
        let full = |s: &State| {
            let items = s.waiting.len() + s.in_flight;
            self.bounds.max_items.is_some_and(|max| items >= max) || s.bytes + cost > self.bounds.max_bytes
        };
        while full(&state) {
            // Only items not yet on their way may make room.
            let oldest = match self.bounds.overflow {
                Overflow::DropOldest => state.waiting.pop_front(),
                Overflow::Refuse => None,
            };
            let Some(oldest) = oldest else {
                Counters::add(&counters.refused, 1);
                return Err(Status::NotFound);
            };
            state.bytes -= oldest.payload.len() + ITEM_OVERHEAD;
            Counters::add(&counters.dropped, 1);
        }
        state.next_seq += 1;
        let id = format!("{:016x}-{}", self.nonce, state.next_seq);
        state.waiting.push_back(Outgoing { id, payload: Bytes::copy_from_slice(item) });
        state.bytes += cost;
        let first = state.waiting.len() == 1;
        drop(state);
        if first {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Up to `max` of the oldest items, now in flight.
    pub(crate) fn take_batch(&self, max: usize) -> Vec<Outgoing> {
        let mut state = self.lock();
        let n = max.min(state.waiting.len());
        state.in_flight += n;
        state.waiting.drain(..n).collect()
    }

    /// The broker confirmed `stored`; `failed` wait again, first in line,
    /// in their order.
    pub(crate) fn settle(&self, stored: &[Outgoing], failed: Vec<Outgoing>) {
        let mut state = self.lock();
        state.in_flight -= stored.len() + failed.len();
        state.bytes -= stored.iter().map(|o| o.payload.len() + ITEM_OVERHEAD).sum::<usize>();
        for item in failed.into_iter().rev() {
            state.waiting.push_front(item);
        }
    }

    /// Items buffered or in flight.
    pub(crate) fn len(&self) -> usize {
        let state = self.lock();
        state.waiting.len() + state.in_flight
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounded(max_items: usize, overflow: Overflow) -> Outbound {
        Outbound::new(QueueBounds { max_items: Some(max_items), overflow, ..QueueBounds::default() })
    }

    #[test]
    fn a_full_buffer_that_refuses_counts_the_refusal_and_keeps_what_it_holds() {
        let (outbound, counters) = (bounded(2, Overflow::Refuse), Counters::default());
        outbound.push(b"1", &counters).unwrap();
        outbound.push(b"2", &counters).unwrap();
        assert_eq!(outbound.push(b"3", &counters), Err(Status::NotFound));
        let batch = outbound.take_batch(10);
        assert_eq!(batch.iter().map(|o| &o.payload[..]).collect::<Vec<_>>(), [b"1", b"2"]);
        // In flight still counts: nothing more fits until the broker confirms.
        assert_eq!(outbound.push(b"3", &counters), Err(Status::NotFound));
        outbound.settle(&batch, Vec::new());
        outbound.push(b"3", &counters).unwrap();
        assert_eq!(counters.snapshot(0, 0).refused, 2);
    }

    #[test]
    fn a_full_buffer_that_drops_the_oldest_never_drops_what_is_in_flight() {
        let (outbound, counters) = (bounded(2, Overflow::DropOldest), Counters::default());
        outbound.push(b"1", &counters).unwrap();
        let in_flight = outbound.take_batch(1);
        outbound.push(b"2", &counters).unwrap();
        outbound.push(b"3", &counters).unwrap();
        assert_eq!(counters.snapshot(0, 0).dropped, 1);
        // The in-flight item failed: it waits again, before the newer one.
        outbound.settle(&[], in_flight);
        let order: Vec<_> = outbound.take_batch(10).into_iter().map(|o| o.payload).collect();
        assert_eq!(order, [Bytes::from_static(b"1"), Bytes::from_static(b"3")]);
    }

    #[test]
    fn ids_are_unique_and_kept_across_retries() {
        let (outbound, counters) = (Outbound::new(QueueBounds::default()), Counters::default());
        outbound.push(b"a", &counters).unwrap();
        outbound.push(b"b", &counters).unwrap();
        let first = outbound.take_batch(10);
        assert_ne!(first[0].id, first[1].id);
        outbound.settle(&[], first.clone());
        let again = outbound.take_batch(10);
        assert_eq!(first.iter().map(|o| &o.id).collect::<Vec<_>>(), again.iter().map(|o| &o.id).collect::<Vec<_>>());
    }
}
