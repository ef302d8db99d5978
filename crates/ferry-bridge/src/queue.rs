//! One bridged queue: its buffer and publisher task (the sending side), its
//! fetch and acknowledgement tasks (the receiving side, started when a
//! plugin here registers the queue), and its shutdown.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ferry_abi::Status;
use ferry_config::BridgedQueue;
use ferry_host::{Host, QueueBounds, QueueLink};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::BridgeStats;
use crate::backend::{BackendError, Incoming, QueueBackend};
use crate::counters::Counters;
use crate::outbound::Outbound;
use crate::pack::{PACK_ITEMS, Pack, unpack};
use crate::recent::{REMEMBERED_IDS, RecentIds};

/// How long one fetch waits for items before asking again.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// How long past its own deadline a call to the broker may take before the
/// bridge gives up on it.
const BROKER_SLACK: Duration = Duration::from_secs(5);

/// Most acknowledgements sent together.
const ACK_BATCH: usize = 4096;

/// How long the publisher, woken by an item after it was idle, lets more
/// items come before it publishes (the timer's resolution: 1 ms).
const PUBLISH_GATHER: Duration = Duration::from_millis(1);

/// How long the acknowledgement task gathers dequeued items before it
/// sends their acknowledgements: one write for many, and the plugin's
/// own work on the item (its log line) is out before the broker forgets it.
const ACK_GATHER: Duration = Duration::from_millis(1);

/// What the acknowledgement task is told.
enum AckMessage {
    /// A plugin dequeued this fetched item.
    Delivered(NonZeroU64),
    /// Everything before this was delivered; answer when it is acknowledged.
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Bridged<B: QueueBackend> {
    config: BridgedQueue,
    pub(crate) backend: B,
    host: Weak<Host>,
    runtime: Handle,
    token: OnceLock<u32>,
    outbound: Outbound,
    counters: Counters,
    /// Fetched messages not yet acknowledged, by receipt.
    held: Mutex<HashMap<NonZeroU64, Held<B::Receipt>>>,
    /// Ids of the items fetched lately, to recognise one handed out again.
    recent: Mutex<RecentIds>,
    /// Fetched and not yet acknowledged (held, or being acknowledged):
    /// what the fetch-ahead window counts.
    unacked: AtomicUsize,
    /// Wakes the fetch task when acknowledgements made room.
    room: Notify,
    next_receipt: AtomicU64,
    acks: mpsc::UnboundedSender<AckMessage>,
    ack_inbox: Mutex<Option<mpsc::UnboundedReceiver<AckMessage>>>,
    receiving: AtomicBool,
    stopping: AtomicBool,
    fetcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A fetched message: acknowledged once a plugin dequeued all its items.
struct Held<R> {
    receipt: R,
    items: usize,
    /// Its items not yet dequeued.
    remaining: usize,
}

/// The host's side of the queue: what `proxy_enqueue_shared_queue` and
/// `proxy_dequeue_shared_queue` reach.
struct Link<B: QueueBackend>(Arc<Bridged<B>>);

impl<B: QueueBackend> QueueLink for Link<B> {
    fn publish(&self, item: &[u8]) -> Result<(), Status> {
        self.0.outbound.push(item, &self.0.counters)
    }

    fn start_receiving(&self) {
        if !self.0.receiving.swap(true, Relaxed) {
            let bridged = self.0.clone();
            let inbox = bridged.ack_inbox.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(inbox) = inbox {
                self.0.runtime.spawn(bridged.clone().acknowledge(inbox));
            }
            let fetcher = self.0.runtime.spawn(bridged.clone().fetch());
            *bridged.fetcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(fetcher);
        }
    }

    fn delivered(&self, receipt: NonZeroU64) {
        let _ = self.0.acks.send(AckMessage::Delivered(receipt));
    }
}

/// Retries with a delay that doubles from 100 ms to 2 s, and says once
/// when something starts failing and once when it works again.
struct Retry {
    what: &'static str,
    delay: Duration,
    failing: bool,
}

impl Retry {
    fn new(what: &'static str) -> Self {
        Retry { what, delay: Duration::from_millis(100), failing: false }
    }

    async fn failed(&mut self, queue: &BridgedQueue, error: impl std::fmt::Display) {
        if !self.failing {
            tracing::warn!(target: "bridge", "queue ({}, {}): {} failed, retrying: {error}", queue.vm_id, queue.name, self.what);
            self.failing = true;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
    }

    fn worked(&mut self, queue: &BridgedQueue) {
        if self.failing {
            tracing::info!(target: "bridge", "queue ({}, {}): {} works again", queue.vm_id, queue.name, self.what);
        }
        self.failing = false;
        self.delay = Duration::from_millis(100);
    }
}

impl<B: QueueBackend> Bridged<B> {
    /// Makes the queue a bridged queue of `host` and starts publishing.
    pub(crate) fn start(
        config: BridgedQueue,
        bounds: QueueBounds,
        backend: B,
        host: &Arc<Host>,
        runtime: &Handle,
    ) -> Arc<Self> {
        let (acks, ack_inbox) = mpsc::unbounded_channel();
        let bridged = Arc::new(Bridged {
            config,
            backend,
            host: Arc::downgrade(host),
            runtime: runtime.clone(),
            token: OnceLock::new(),
            outbound: Outbound::new(bounds),
            counters: Counters::default(),
            held: Mutex::default(),
            recent: Mutex::new(RecentIds::new(REMEMBERED_IDS)),
            unacked: AtomicUsize::new(0),
            room: Notify::new(),
            next_receipt: AtomicU64::new(1),
            acks,
            ack_inbox: Mutex::new(Some(ack_inbox)),
            receiving: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            fetcher: Mutex::new(None),
        });
        let link = Arc::new(Link(bridged.clone()));
        let token = host.shared_queues().bridge(&bridged.config.vm_id, &bridged.config.name, link);
        let _ = bridged.token.set(token);
        runtime.spawn(bridged.clone().publish());
        bridged
    }

    pub(crate) fn stats(&self) -> BridgeStats {
        BridgeStats {
            vm_id: self.config.vm_id.clone(),
            name: self.config.name.clone(),
            stream: self.config.stream.clone(),
            subject: self.config.subject.clone(),
            receiving: self.receiving.load(Relaxed),
            counts: self.counters.snapshot(self.outbound.len() as u64, self.unacked.load(Relaxed) as u64),
        }
    }

    /// The publisher: takes what waits, a batch at a time, packs it into
    /// messages and publishes them until the broker confirms each. A message
    /// that failed goes again, unchanged (same id), before anything newer.
    /// Runs until the process exits.
    async fn publish(self: Arc<Self>) {
        let mut prepared = false;
        let mut retry = Retry::new("publishing");
        let mut failed: VecDeque<Pack> = VecDeque::new();
        loop {
            let batch: Vec<Pack> = if failed.is_empty() {
                self.outbound.take_packs(self.config.publish_batch)
            } else {
                failed.drain(..).collect()
            };
            if batch.is_empty() {
                self.outbound.wake.notified().await;
                // Let a few more items come: one wake-up and one write for
                // many, instead of a thread switch on the workers' core per
                // request.
                tokio::time::sleep(PUBLISH_GATHER).await;
                continue;
            }
            if !prepared {
                if let Err(e) = self.backend.prepare_publishing().await {
                    failed.extend(batch);
                    retry.failed(&self.config, e).await;
                    continue;
                }
                self.outbound.set_max_message(self.backend.max_message());
                prepared = true;
            }
            let items = |packs: &[Pack]| packs.iter().map(|p| u64::from(p.message.items)).sum::<u64>();
            Counters::add(&self.counters.published, items(&batch));
            let messages: Vec<_> = batch.iter().map(|p| p.message.clone()).collect();
            // The backend bounds each confirmation by `publish_timeout`; this
            // bounds the whole batch too, whatever the client library does
            // with requests cut by a reconnection.
            let limit = self.config.publish_timeout + BROKER_SLACK;
            let results = match tokio::time::timeout(limit, self.backend.publish(&messages)).await {
                Ok(results) => results,
                Err(_) => {
                    let timed_out = || Err(BackendError("no confirmation from the broker in time".into()));
                    messages.iter().map(|_| timed_out()).collect()
                }
            };
            let mut first_error = None;
            for (pack, result) in batch.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        Counters::add(&self.counters.acked, u64::from(pack.message.items));
                        self.outbound.stored(&pack);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        Counters::add(&self.counters.retried, u64::from(pack.message.items));
                        failed.push_back(pack);
                    }
                }
            }
            match first_error {
                Some(e) => retry.failed(&self.config, e).await,
                None => retry.worked(&self.config),
            }
        }
    }

    /// The fetch task: keeps up to `fetch_ahead` items fetched and
    /// unacknowledged, each put in the local queue as it arrives.
    async fn fetch(self: Arc<Self>) {
        let Some(&token) = self.token.get() else { return };
        let mut retry = Retry::new("receiving");
        while !self.stopping.load(Relaxed) {
            if let Err(e) = self.backend.prepare_receiving().await {
                retry.failed(&self.config, e).await;
                continue;
            }
            let room = self.config.fetch_ahead.saturating_sub(self.unacked.load(Relaxed));
            if room == 0 {
                let _ = tokio::time::timeout(FETCH_WAIT, self.room.notified()).await;
                continue;
            }
            // A message holds up to PACK_ITEMS items: ask for as many as
            // fit in the room, and at least one.
            let messages = (room / PACK_ITEMS).max(1);
            let Some(host) = self.host.upgrade() else { return };
            let mut again = Vec::new();
            let mut deliver = |incoming: Incoming<B::Receipt>| {
                let items = unpack(&incoming.payload, incoming.items).unwrap_or_else(|| {
                    tracing::warn!(
                        target: "bridge",
                        "queue ({}, {}): a message said it held {} items but does not frame them; delivered as one item",
                        self.config.vm_id, self.config.name, incoming.items
                    );
                    vec![incoming.payload.clone()]
                });
                let count = items.len();
                Counters::add(&self.counters.fetched, count as u64);
                if incoming.redelivered {
                    Counters::add(&self.counters.redelivered, count as u64);
                }
                if let Some(id) = &incoming.id
                    && !self.recent.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
                {
                    Counters::add(&self.counters.duplicates, count as u64);
                    again.push(incoming.receipt);
                    return;
                }
                let receipt = NonZeroU64::new(self.next_receipt.fetch_add(1, Relaxed)).expect("receipts start at 1");
                let held = Held { receipt: incoming.receipt, items: count, remaining: count };
                self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(receipt, held);
                self.unacked.fetch_add(count, Relaxed);
                host.shared_queues().deliver_fetched(token, items.into_iter().map(|item| (item, receipt)).collect());
            };
            // The client library may never end a fetch a reconnection cut;
            // what it had fetched comes back after `ack_wait`.
            let fetched =
                tokio::time::timeout(FETCH_WAIT + BROKER_SLACK, self.backend.fetch(messages, FETCH_WAIT, &mut deliver));
            match fetched.await {
                Ok(Ok(())) => retry.worked(&self.config),
                Ok(Err(e)) => retry.failed(&self.config, e).await,
                Err(_) => retry.failed(&self.config, "no answer from the broker in time").await,
            }
            // Items this process had already: acknowledged, not delivered twice.
            if !again.is_empty() {
                let _ = tokio::time::timeout(BROKER_SLACK, self.backend.ack(again)).await;
            }
        }
    }

    /// The acknowledgement task: acknowledges dequeued items in batches.
    async fn acknowledge(self: Arc<Self>, mut inbox: mpsc::UnboundedReceiver<AckMessage>) {
        while let Some(first) = inbox.recv().await {
            tokio::time::sleep(ACK_GATHER).await;
            let (mut receipts, mut flushed) = (Vec::new(), None);
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    AckMessage::Delivered(receipt) => receipts.push(receipt),
                    AckMessage::Flush(done) => {
                        flushed = Some(done);
                        break;
                    }
                }
                if receipts.len() < ACK_BATCH {
                    next = inbox.try_recv().ok();
                }
            }
            // Each receipt is one dequeued item; a message is acknowledged
            // once all its items are.
            let (mut complete, mut items) = (Vec::new(), 0);
            {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                for receipt in &receipts {
                    let Some(message) = held.get_mut(receipt) else { continue };
                    message.remaining -= 1;
                    if message.remaining == 0
                        && let Some(message) = held.remove(receipt)
                    {
                        items += message.items;
                        complete.push(message.receipt);
                    }
                }
            }
            Counters::add(&self.counters.delivered, receipts.len() as u64);
            if !complete.is_empty() {
                let count = complete.len();
                let acked = match tokio::time::timeout(BROKER_SLACK, self.backend.ack(complete)).await {
                    Ok(result) => result,
                    Err(_) => Err(BackendError("no answer from the broker in time".into())),
                };
                if let Err(e) = acked {
                    // The broker hands them out again after `ack_wait`,
                    // counted as redelivered wherever they land.
                    tracing::warn!(
                        target: "bridge",
                        "queue ({}, {}): {count} acknowledgement(s) lost: {e}",
                        self.config.vm_id, self.config.name
                    );
                }
            }
            self.unacked.fetch_sub(items, Relaxed);
            self.room.notify_one();
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    /// At shutdown: gives back to the broker every fetched item no plugin
    /// dequeued. A message none of whose items was dequeued is returned
    /// whole (another receiver gets it at once); of a message partly
    /// dequeued, the rest is published again as new items and the message
    /// acknowledged once they are stored, so no item comes twice. Anything
    /// the broker does not take by `deadline` is left to `ack_wait`.
    async fn return_undelivered(&self, deadline: tokio::time::Instant, queue: &str) {
        let mut rest: HashMap<NonZeroU64, Vec<bytes::Bytes>> = HashMap::new();
        if let (Some(host), Some(&token)) = (self.host.upgrade(), self.token.get()) {
            for (item, receipt) in host.shared_queues().return_fetched(token) {
                rest.entry(receipt).or_default().push(item);
            }
        }
        let held: Vec<(NonZeroU64, Held<B::Receipt>)> =
            self.held.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        let (mut whole, mut partial, mut returned) = (Vec::new(), Vec::new(), 0);
        for (receipt, message) in held {
            let items = rest.remove(&receipt).unwrap_or_default();
            returned += items.len();
            let republished = message.remaining < message.items
                && items.len() == message.remaining
                && items.iter().all(|item| self.outbound.push(item, &self.counters).is_ok());
            if republished { partial.push(message.receipt) } else { whole.push(message.receipt) }
        }
        if returned == 0 {
            return;
        }
        let nacked = whole.len();
        let result = tokio::time::timeout_at(deadline, self.backend.nack(whole)).await;
        let result = result.unwrap_or_else(|_| Err(BackendError("no answer from the broker in time".into())));
        if let Err(e) = result {
            tracing::warn!(
                target: "bridge",
                "queue {queue}: could not return {nacked} message(s) ({e}); the broker hands them out again after ack_wait"
            );
        }
        if !partial.is_empty() {
            while self.outbound.len() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Stored again: the originals go; not stored: they come back whole.
            if self.outbound.len() == 0 {
                let _ = tokio::time::timeout_at(deadline, self.backend.ack(partial)).await;
            } else {
                let _ = tokio::time::timeout_at(deadline, self.backend.nack(partial)).await;
            }
        }
        Counters::add(&self.counters.returned, returned as u64);
        tracing::info!(target: "bridge", "queue {queue}: returned {returned} undelivered item(s) to the broker");
    }

    /// See [`crate::QueueBridges::shutdown`].
    pub(crate) async fn shutdown(self: Arc<Self>, drain: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        let queue = format!("({}, {})", self.config.vm_id, self.config.name);
        // Receiving side: stop fetching, acknowledge what plugins took,
        // return the rest to the broker.
        self.stopping.store(true, Relaxed);
        self.room.notify_one();
        let fetcher = self.fetcher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(fetcher) = fetcher {
            let _ = fetcher.await;
            let (done, flushed) = oneshot::channel();
            if self.acks.send(AckMessage::Flush(done)).is_ok() {
                let _ = tokio::time::timeout_at(deadline, flushed).await;
            }
            self.return_undelivered(deadline, &queue).await;
        }
        // Sending side: the publisher keeps going until the buffer is empty
        // or the drain timeout ends.
        let waiting = self.outbound.len();
        if waiting > 0 {
            tracing::info!(target: "bridge", "queue {queue}: publishing {waiting} buffered item(s), at most {}s", drain.as_secs_f64());
        }
        while self.outbound.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.outbound.len();
        if left > 0 {
            Counters::add(&self.counters.lost_at_exit, left as u64);
            tracing::warn!(
                target: "bridge",
                "queue {queue}: {left} item(s) not published before the drain timeout ({}s); they are lost",
                drain.as_secs_f64()
            );
        }
    }
}
