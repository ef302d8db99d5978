//! What a broker must offer to carry shared queues: the one trait a new
//! backend (Redis Streams, Kafka) implements. The bridge does the rest —
//! buffering, batching, retries, the fetch-ahead window, counters and
//! shutdown — the same way for every backend.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

/// Why the broker did not do what was asked. The bridge retries; the
/// message is for the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// One message on its way to the broker: one item, or several packed.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Unique per message and kept across retries, so the broker can drop
    /// a publish it already stored.
    pub id: String,
    /// The item as the plugin enqueued it, or the packed items.
    pub payload: Bytes,
    /// How many items it holds; the backend carries it beside the payload
    /// when more than one.
    pub items: u32,
}

/// One message fetched for this process's receiver.
pub struct Incoming<R> {
    /// The item as a plugin enqueued it somewhere in the fleet, or several packed.
    pub payload: Bytes,
    /// How many items it holds (1 unless the publisher said more).
    pub items: u32,
    /// The id it was published with ([`Outgoing::id`]), if the broker kept it.
    pub id: Option<String>,
    /// Whether the broker handed it out before (to a receiver that did not
    /// acknowledge it in time): a possible duplicate, counted.
    pub redelivered: bool,
    /// How to acknowledge or return it.
    pub receipt: R,
}

/// One bridged queue as a broker holds it. Every method is called from the
/// bridge's own runtime, never from a thread that runs plugins.
pub trait QueueBackend: Send + Sync + 'static {
    /// What acknowledges one fetched item.
    type Receipt: Send + 'static;

    /// Whether the broker is reachable now.
    fn connected(&self) -> bool;

    /// The largest message the broker takes, in bytes.
    fn max_message(&self) -> usize;

    /// Makes sure the broker can store the queue's items (creates what is
    /// missing). Called before publishing until it succeeds once.
    fn prepare_publishing(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Publishes `batch`, all at once, then waits for the broker to confirm
    /// each item; one result per item, in order. An item that fails is
    /// published again later with the same id.
    fn publish(&self, batch: &[Outgoing]) -> impl Future<Output = Vec<Result<(), BackendError>>> + Send;

    /// Makes sure the consumer shared by the fleet's receivers exists.
    /// Called before fetching until it succeeds once.
    fn prepare_receiving(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Fetches at most `max` items, waiting at most `wait` for them, and
    /// hands each to `deliver` as it arrives.
    fn fetch(
        &self,
        max: usize,
        wait: Duration,
        deliver: &mut (dyn FnMut(Incoming<Self::Receipt>) + Send),
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Acknowledges items a plugin dequeued; returns once the
    /// acknowledgements are on their way (written to the broker's connection).
    fn ack(&self, receipts: Vec<Self::Receipt>) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Returns items no plugin dequeued, so another receiver gets them now.
    fn nack(&self, receipts: Vec<Self::Receipt>) -> impl Future<Output = Result<(), BackendError>> + Send;
}
