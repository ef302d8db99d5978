//! Shared queues that live in a broker, shared by a fleet of ferry
//! processes (a ferry extension: `ferry.config.v1.QueueBridge`).
//!
//! Plugins do not change. A sender resolves (`vm_id`, name) and enqueues;
//! for a bridged queue the item goes into a bounded buffer here and the
//! bridge's own runtime publishes it, in batches, with an id the broker
//! uses to drop a retried duplicate. A receiver registers the queue; the
//! bridge then fetches items from the consumer every receiver of the fleet
//! shares (each item to one of them), at most `fetch_ahead` unacknowledged,
//! into the local queue, where `proxy_on_queue_ready` tells the plugin as
//! for a local item; a dequeued item is acknowledged to the broker.
//!
//! Threads that run plugins never wait for the broker: they only touch the
//! buffer's lock and wake the publisher. The broker's side is a
//! [`QueueBackend`]; NATS JetStream is the one built (`nats.rs`).

mod backend;
mod counters;
mod nats;
mod outbound;
mod pack;
mod queue;
mod recent;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_config::QueueBridge;
use ferry_host::{Host, QueueBounds};

pub use backend::{BackendError, Incoming, Outgoing, QueueBackend};
pub use counters::BridgeCounts;

use queue::Bridged;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The bridge's runtime could not be made.
    #[error("queue bridge: {0}")]
    Io(#[from] std::io::Error),
    /// The broker's settings are unusable (a credentials file that does not parse).
    #[error("queue bridge: {0}")]
    Backend(#[from] BackendError),
}

/// One bridged queue as `/stats` and the admin endpoint show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeStats {
    /// The queue's vm_id.
    pub vm_id: String,
    /// The queue's name.
    pub name: String,
    /// The JetStream stream.
    pub stream: String,
    /// The subject items are published on.
    pub subject: String,
    /// Whether a plugin here registered it (so items are fetched for it).
    pub receiving: bool,
    /// Its counters.
    pub counts: BridgeCounts,
}

/// A bridged queue whatever its backend, as the process handles it.
trait AnyBridge: Send + Sync {
    fn stats(&self) -> BridgeStats;
    fn connected(&self) -> bool;
    fn shutdown(self: Arc<Self>, drain: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl<B: QueueBackend> AnyBridge for Bridged<B> {
    fn stats(&self) -> BridgeStats {
        Bridged::stats(self)
    }
    fn connected(&self) -> bool {
        self.backend.connected()
    }
    fn shutdown(self: Arc<Self>, drain: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(Bridged::shutdown(self, drain))
    }
}

/// Every bridged queue of the process, and the runtime (one thread,
/// `ferry-bridge`) that talks to the broker.
pub struct QueueBridges {
    runtime: Option<tokio::runtime::Runtime>,
    queues: Vec<Arc<dyn AnyBridge>>,
    ready_requires_broker: bool,
    drain_timeout: Duration,
}

impl QueueBridges {
    /// Connects to the broker (in the background: a broker that is down is
    /// retried, and items wait) and makes each queue of `config` a bridged
    /// queue of `host`, its buffer bounded by `buffers` (one per queue, in
    /// order). Call it before any plugin runs, outside any async runtime.
    ///
    /// # Errors
    /// The runtime cannot be made, or the broker's settings are unusable.
    pub fn start(config: &QueueBridge, buffers: &[QueueBounds], host: &Arc<Host>) -> Result<Self, BridgeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-bridge")
            .enable_all()
            .build()?;
        let client = runtime.block_on(nats::connect(&config.nats))?;
        // The JetStream contexts start tasks of their own on creation.
        let _entered = runtime.enter();
        let mut queues: Vec<Arc<dyn AnyBridge>> = Vec::new();
        for (queue, bounds) in config.queues.iter().zip(buffers) {
            let backend = nats::JetStreamQueue::new(client.clone(), queue.clone());
            let bridged = Bridged::start(queue.clone(), *bounds, backend, host, runtime.handle());
            queues.push(bridged);
        }
        tracing::info!(
            target: "bridge",
            "{} shared queue(s) bridged to NATS JetStream at {}",
            queues.len(),
            config.nats.servers.join(", ")
        );
        Ok(QueueBridges {
            runtime: Some(runtime),
            queues,
            ready_requires_broker: config.ready_requires_broker,
            drain_timeout: config.drain_timeout,
        })
    }

    /// Whether the broker is reachable now.
    pub fn connected(&self) -> bool {
        self.queues.first().is_some_and(|q| q.connected())
    }

    /// Whether the process counts as ready: always, unless
    /// `ready_requires_broker` is set and the broker is unreachable.
    pub fn ready(&self) -> bool {
        !self.ready_requires_broker || self.connected()
    }

    /// Every bridged queue with its counters.
    pub fn stats(&self) -> Vec<BridgeStats> {
        self.queues.iter().map(|q| q.stats()).collect()
    }

    /// At exit, once no plugin runs any more: returns what was fetched and
    /// not delivered to the broker (another receiver gets it at once),
    /// acknowledges what was delivered, and keeps publishing what is
    /// buffered for at most the drain timeout. What is left then is
    /// counted and logged. May be awaited from any runtime.
    pub async fn shutdown(&self) {
        let Some(runtime) = &self.runtime else { return };
        let drain = self.drain_timeout;
        let stops: Vec<_> = self.queues.iter().map(|q| runtime.spawn(q.clone().shutdown(drain))).collect();
        for stop in stops {
            let _ = stop.await;
        }
    }
}

impl Drop for QueueBridges {
    fn drop(&mut self) {
        // Dropped on the main thread's runtime, where waiting is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
