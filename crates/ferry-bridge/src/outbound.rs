//! What plugins enqueued and the broker has not confirmed yet: a bounded
//! buffer between the threads that run plugins (which never wait) and the
//! bridge's publisher task (which may wait on the broker as long as it must).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use ferry_abi::Status;
use ferry_host::{ITEM_OVERHEAD, Overflow, QueueBounds};
use tokio::sync::Notify;

use crate::counters::Counters;
use crate::pack::{Pack, Waiting, pack};

/// The buffer of one bridged queue.
pub(crate) struct Outbound {
    state: Mutex<State>,
    /// Wakes the publisher: an item came.
    pub(crate) wake: Notify,
    bounds: QueueBounds,
    /// Tells this process's message ids from other processes'.
    nonce: u64,
    /// The largest item the broker takes (its largest message, less room
    /// for headers); larger ones are refused at once rather than retried
    /// for ever.
    max_item: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Items not yet handed to the publisher, oldest first.
    waiting: VecDeque<Waiting>,
    /// Items the publisher took and the broker has not confirmed.
    in_flight: usize,
    /// Bytes of both (each item with [`ITEM_OVERHEAD`]).
    bytes: usize,
    next_seq: u64,
}

/// Room left in a broker message for its headers.
const HEADER_ROOM: usize = 1024;

fn cost(data: &Bytes) -> usize {
    data.len() + ITEM_OVERHEAD
}

impl Outbound {
    pub(crate) fn new(bounds: QueueBounds) -> Self {
        Outbound {
            state: Mutex::default(),
            wake: Notify::new(),
            bounds,
            nonce: fastrand::u64(..),
            max_item: AtomicUsize::new((1 << 20) - HEADER_ROOM),
        }
    }

    /// The broker takes messages of at most `bytes`.
    pub(crate) fn set_max_message(&self, bytes: usize) {
        self.max_item.store(bytes.saturating_sub(HEADER_ROOM), Relaxed);
    }

    /// Takes one item a plugin enqueued: never blocks on the broker.
    pub(crate) fn push(&self, item: &[u8], counters: &Counters) -> Result<(), Status> {
        let cost = item.len() + ITEM_OVERHEAD;
        if cost > self.bounds.max_bytes || item.len() > self.max_item.load(Relaxed) {
            Counters::add(&counters.refused, 1);
            return Err(Status::NotFound);
        }
        let mut state = self.lock();
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
            state.bytes -= self::cost(&oldest.data);
            Counters::add(&counters.dropped, 1);
        }
        state.next_seq += 1;
        let seq = state.next_seq;
        state.waiting.push_back(Waiting { seq, data: Bytes::copy_from_slice(item) });
        state.bytes += cost;
        let first = state.waiting.len() == 1;
        drop(state);
        if first {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Up to `max` of the oldest items, now in flight, packed into messages.
    pub(crate) fn take_packs(&self, max: usize) -> Vec<Pack> {
        let items: Vec<Waiting> = {
            let mut state = self.lock();
            let n = max.min(state.waiting.len());
            state.in_flight += n;
            state.waiting.drain(..n).collect()
        };
        pack(self.nonce, items, cost)
    }

    /// The broker stored `pack`: its items leave the buffer.
    pub(crate) fn stored(&self, pack: &Pack) {
        let mut state = self.lock();
        state.in_flight -= pack.message.items as usize;
        state.bytes -= pack.cost;
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
        let packs = outbound.take_packs(10);
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].message.items, 2);
        // In flight still counts: nothing more fits until the broker confirms.
        assert_eq!(outbound.push(b"3", &counters), Err(Status::NotFound));
        outbound.stored(&packs[0]);
        outbound.push(b"3", &counters).unwrap();
        assert_eq!(counters.snapshot(0, 0).refused, 2);
        assert_eq!(outbound.len(), 1);
    }

    #[test]
    fn a_full_buffer_that_drops_the_oldest_never_drops_what_is_in_flight() {
        let (outbound, counters) = (bounded(2, Overflow::DropOldest), Counters::default());
        outbound.push(b"1", &counters).unwrap();
        let in_flight = outbound.take_packs(1);
        outbound.push(b"2", &counters).unwrap();
        outbound.push(b"3", &counters).unwrap();
        assert_eq!(counters.snapshot(0, 0).dropped, 1);
        assert_eq!(in_flight[0].message.payload, "1");
        let rest = outbound.take_packs(10);
        assert_eq!(crate::pack::unpack(&rest[0].message.payload, rest[0].message.items).unwrap(), ["3"]);
    }

    #[test]
    fn an_item_larger_than_the_broker_takes_is_refused_at_once() {
        let (outbound, counters) = (Outbound::new(QueueBounds::default()), Counters::default());
        outbound.set_max_message(HEADER_ROOM + 10);
        outbound.push(&[0; 10], &counters).unwrap();
        assert_eq!(outbound.push(&[0; 11], &counters), Err(Status::NotFound));
        assert_eq!(counters.snapshot(0, 0).refused, 1);
    }

    #[test]
    fn message_ids_differ_per_pack() {
        let (outbound, counters) = (Outbound::new(QueueBounds::default()), Counters::default());
        outbound.push(b"a", &counters).unwrap();
        let first = outbound.take_packs(10);
        outbound.push(b"b", &counters).unwrap();
        let second = outbound.take_packs(10);
        assert_ne!(first[0].message.id, second[0].message.id);
    }
}
