//! The process-wide shared-queue registry, with proxy-wasm-cpp-host's semantics:
//!
//! - a queue is named by `(vm_id, name)` and gets a token (its id) that starts
//!   at 1, is never 0, and is not reused while the queue exists;
//! - registering an existing queue returns the same token and keeps its items,
//!   and the registrant becomes the one notified (last registrant wins);
//! - each enqueued item posts exactly one notification to the owner's thread,
//!   after the registry lock is released, never inside the enqueue call;
//! - anyone holding a token may enqueue or dequeue; dequeue is FIFO;
//! - if the owner is gone the notification is dropped and the items stay.
//!
//! A queue may also be *bridged* (a ferry extension, see `ferry-bridge`):
//! it lives in a broker, shared by a fleet of processes. Its token resolves
//! before any local plugin registers it; what plugins enqueue goes to the
//! bridge's [`QueueLink`] instead of the local items; what the bridge fetches
//! for a local registrant arrives through [`SharedQueues::deliver_fetched`]
//! and is acknowledged through the link once a plugin dequeued it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferry_abi::Status;

use crate::limits::{MAX_QUEUED_BYTES_PER_VM_ID, MAX_VALUE_BYTES};
use crate::mailbox::{InstanceId, QueueReady, ThreadMailbox};

/// Who is told about new items: a root context of a VM instance on some thread.
#[derive(Clone)]
pub struct QueueOwner {
    /// The mailbox of the owner's thread.
    pub mailbox: Arc<dyn ThreadMailbox>,
    /// The owner's VM instance on that thread.
    pub instance: InstanceId,
    /// The owner's root context.
    pub context_id: u32,
}

impl QueueOwner {
    /// Whether `self` replaces `other`: a new instance of the same VM on the
    /// same thread (the old one failed and was restarted).
    fn restarts(&self, other: &QueueOwner) -> bool {
        let same_thread = std::ptr::addr_eq(Arc::as_ptr(&self.mailbox), Arc::as_ptr(&other.mailbox));
        same_thread && self.instance.vm_key == other.instance.vm_key && self.instance != other.instance
    }
}

/// The far side of a bridged queue: implemented by the bridge, called with
/// the registry's lock held, so no method may call back into [`SharedQueues`]
/// or block.
pub trait QueueLink: Send + Sync {
    /// Takes an item a plugin enqueued, to publish later.
    ///
    /// # Errors
    /// [`Status::NotFound`] when the bridge's outbound buffer refuses it.
    fn publish(&self, item: &[u8]) -> Result<(), Status>;
    /// A plugin of this process registered the queue: start fetching items
    /// for it. Called on every registration.
    fn start_receiving(&self);
    /// A plugin took the fetched item with this receipt: acknowledge it.
    fn delivered(&self, receipt: NonZeroU64);
}

/// What a full queue does with one more item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// The enqueue fails with `NotFound` (the one status every SDK reports
    /// as an error without crashing the plugin); the items kept are untouched.
    #[default]
    Refuse,
    /// The oldest items are dropped to make room.
    DropOldest,
}

/// What one waiting item costs the host beyond its bytes (its place in the
/// queue and its notification), counted against `max_bytes` so that empty
/// items cannot grow a queue for free.
pub const ITEM_OVERHEAD: usize = 64;

/// What one queue costs the host beyond its name, counted against
/// [`MAX_QUEUED_BYTES_PER_VM_ID`].
pub const QUEUE_OVERHEAD: usize = 256;

/// How much one queue may hold (a ferry extension: Envoy's queues are unbounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBounds {
    /// Most items waiting; `None` for no limit (as Envoy).
    pub max_items: Option<usize>,
    /// Most bytes waiting (each item counts its length plus
    /// [`ITEM_OVERHEAD`]): a safety net against a producer whose consumer is
    /// gone, on by default.
    pub max_bytes: usize,
    /// What happens to an item past either bound.
    pub overflow: Overflow,
}

impl Default for QueueBounds {
    /// No item limit, 256 MiB, refuse.
    fn default() -> Self {
        QueueBounds { max_items: None, max_bytes: 256 << 20, overflow: Overflow::Refuse }
    }
}

/// The bounds of the queue `(vm_id, name)`, where a configuration sets them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueBoundsRule {
    /// The queue's vm_id.
    pub vm_id: String,
    /// The queue's name; `None` for every queue of the vm_id.
    pub name: Option<String>,
    /// Its bounds.
    pub bounds: QueueBounds,
}

struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Item>,
    bytes: usize,
    /// `None` for a bridged queue no local plugin registered.
    owner: Option<QueueOwner>,
    bounds: QueueBounds,
    counts: QueueCounts,
    /// Set for a bridged queue.
    link: Option<Arc<dyn QueueLink>>,
}

/// One waiting item.
struct Item {
    data: Bytes,
    /// How the bridge acknowledges an item it fetched; `None` for local items.
    receipt: Option<NonZeroU64>,
}

/// An item a plugin is taking, before it is handed over.
pub(crate) struct Taken {
    /// The item.
    pub data: Bytes,
    receipt: Option<NonZeroU64>,
}

/// Counters of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Items enqueued.
    pub enqueued: u64,
    /// Items dequeued.
    pub dequeued: u64,
    /// Items dropped to make room (`DropOldest`).
    pub dropped: u64,
    /// Enqueues refused (`Refuse`, or an item larger than any bound allows).
    pub refused: u64,
}

/// One queue as `/stats` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Its vm_id.
    pub vm_id: String,
    /// Its name.
    pub name: String,
    /// Items waiting now.
    pub depth: u64,
    /// Bytes waiting now.
    pub bytes: u64,
    /// Its counters since it was registered.
    pub counts: QueueCounts,
}

struct Registry {
    tokens: HashMap<(String, String), u32>,
    queues: FxHashMap<u32, Queue>,
    last_token: u32,
    totals: QueueTotals,
    rules: Vec<QueueBoundsRule>,
    default_bounds: QueueBounds,
    /// Bytes held by each vm_id's queues, and the most they may hold
    /// ([`MAX_QUEUED_BYTES_PER_VM_ID`]; tests lower it).
    vm_bytes: FxHashMap<String, usize>,
    vm_budget: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            tokens: HashMap::new(),
            queues: FxHashMap::default(),
            last_token: 0,
            totals: QueueTotals::default(),
            rules: Vec::new(),
            default_bounds: QueueBounds::default(),
            vm_bytes: FxHashMap::default(),
            vm_budget: MAX_QUEUED_BYTES_PER_VM_ID,
        }
    }
}

/// Items that went through all queues since start: for accounting under
/// load (the admin `/stats` endpoint shows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Items enqueued.
    pub enqueued: u64,
    /// Items dequeued.
    pub dequeued: u64,
    /// Items waiting now.
    pub waiting: u64,
    /// Items dropped to make room.
    pub dropped: u64,
    /// Enqueues refused.
    pub refused: u64,
}

/// All shared queues of one process.
#[derive(Default)]
pub struct SharedQueues {
    registry: Mutex<Registry>,
}

impl SharedQueues {
    /// Queues bounded by `rules` (first match wins), others by `default`.
    pub fn with_bounds(default: QueueBounds, rules: Vec<QueueBoundsRule>) -> Self {
        let registry = Registry { rules, default_bounds: default, ..Registry::default() };
        SharedQueues { registry: Mutex::new(registry) }
    }

    /// Creates the queue `(vm_id, name)` or takes over an existing one, and
    /// returns its token (`proxy_register_shared_queue`).
    ///
    /// A new instance of the VM that owned the queue (the old one failed)
    /// is told once per item that waited meanwhile: the notifications sent
    /// to the failed instance were dropped, and each item still gets one.
    ///
    /// # Errors
    /// [`Status::InternalFailure`] when a new queue would take the vm_id's
    /// queues past [`MAX_QUEUED_BYTES_PER_VM_ID`].
    pub fn register(&self, vm_id: &str, name: &str, owner: QueueOwner) -> Result<u32, Status> {
        let (token, missed) = {
            let mut reg = self.lock();
            let key = (vm_id.to_owned(), name.to_owned());
            if let Some(&token) = reg.tokens.get(&key) {
                let queue = reg.queues.get_mut(&token).expect("a token names a queue");
                let restarted = queue.owner.as_ref().is_some_and(|old| owner.restarts(old));
                let missed = if restarted { queue.items.len() } else { 0 };
                queue.owner = Some(owner.clone());
                if let Some(link) = &queue.link {
                    link.start_receiving();
                }
                (token, missed)
            } else {
                let cost = name.len() + QUEUE_OVERHEAD;
                if reg.vm_used(vm_id) + cost > reg.vm_budget {
                    return Err(Status::InternalFailure);
                }
                (reg.create(vm_id, name, Some(owner.clone()), None), 0)
            }
        };
        for _ in 0..missed {
            owner.mailbox.post_queue_ready(QueueReady {
                instance: owner.instance,
                context_id: owner.context_id,
                queue_id: token,
            });
        }
        Ok(token)
    }

    /// Makes `(vm_id, name)` a bridged queue (at start-up, before any plugin
    /// runs): it resolves at once, and its items go through `link`.
    pub fn bridge(&self, vm_id: &str, name: &str, link: Arc<dyn QueueLink>) -> u32 {
        let mut reg = self.lock();
        let key = (vm_id.to_owned(), name.to_owned());
        if let Some(&token) = reg.tokens.get(&key) {
            reg.queues.get_mut(&token).expect("a token names a queue").link = Some(link);
            return token;
        }
        reg.create(vm_id, name, None, Some(link))
    }

    /// Appends what the bridge fetched for queue `token`, each item with its
    /// receipt, and posts one notification per item to the registrant.
    /// Fetched items are not subject to the queue's bounds: the bridge's
    /// fetch-ahead window bounds them. Returns false (and keeps nothing)
    /// when the queue is gone.
    pub fn deliver_fetched(&self, token: u32, fetched: Vec<(Bytes, NonZeroU64)>) -> bool {
        let count = fetched.len();
        let owner = {
            let mut reg = self.lock();
            let reg = &mut *reg;
            let Some(queue) = reg.queues.get_mut(&token) else { return false };
            let mut added = 0;
            for (data, receipt) in fetched {
                added += data.len() + ITEM_OVERHEAD;
                queue.items.push_back(Item { data, receipt: Some(receipt) });
            }
            queue.bytes += added;
            *reg.vm_bytes.entry(queue.vm_id.clone()).or_default() += added;
            queue.owner.clone()
        };
        if let Some(owner) = owner {
            for _ in 0..count {
                owner.mailbox.post_queue_ready(QueueReady {
                    instance: owner.instance,
                    context_id: owner.context_id,
                    queue_id: token,
                });
            }
        }
        true
    }

    /// Takes back from queue `token` every fetched item no plugin dequeued
    /// (at shutdown, so the bridge can return them to the broker), with
    /// their receipts, in queue order.
    pub fn return_fetched(&self, token: u32) -> Vec<(Bytes, NonZeroU64)> {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let Some(queue) = reg.queues.get_mut(&token) else { return Vec::new() };
        let mut returned = Vec::new();
        let mut freed = 0;
        queue.items.retain(|item| match item.receipt {
            Some(receipt) => {
                returned.push((item.data.clone(), receipt));
                freed += item.data.len() + ITEM_OVERHEAD;
                false
            }
            None => true,
        });
        queue.bytes -= freed;
        if let Some(used) = reg.vm_bytes.get_mut(queue.vm_id.as_str()) {
            *used = used.saturating_sub(freed);
        }
        returned
    }

    /// The token of queue `(vm_id, name)`, if registered (`proxy_resolve_shared_queue`;
    /// the caller substitutes its own vm_id for an empty one).
    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock().tokens.get(&(vm_id.to_owned(), name.to_owned())).copied()
    }

    /// Appends a copy of `item` and posts one notification to the owner
    /// (`proxy_enqueue_shared_queue`). A full queue refuses it or drops its
    /// oldest items, as its bounds say.
    ///
    /// # Errors
    /// [`Status::NotFound`] for an unknown token, a refused item, or one
    /// larger than [`MAX_VALUE_BYTES`], the queue's byte bound or what its
    /// vm_id's queues may still hold ([`MAX_QUEUED_BYTES_PER_VM_ID`]).
    pub fn enqueue(&self, token: u32, item: &[u8]) -> Result<(), Status> {
        let owner = {
            let mut reg = self.lock();
            let reg = &mut *reg;
            let queue = reg.queues.get_mut(&token).ok_or(Status::NotFound)?;
            if let Some(link) = &queue.link {
                // Bridged: the item leaves for the broker; nothing waits here.
                return match link.publish(item) {
                    Ok(()) => {
                        queue.counts.enqueued += 1;
                        reg.totals.enqueued += 1;
                        Ok(())
                    }
                    Err(status) => {
                        queue.counts.refused += 1;
                        reg.totals.refused += 1;
                        Err(status)
                    }
                };
            }
            let mut no_entry = 0;
            // Registration made the entry; a lookup, not an allocation, per item.
            let vm_bytes = reg.vm_bytes.get_mut(queue.vm_id.as_str()).unwrap_or(&mut no_entry);
            let (dropped_before, bytes_before) = (queue.counts.dropped, queue.bytes);
            let cost = item.len() + ITEM_OVERHEAD;
            if *vm_bytes + cost > reg.vm_budget || !queue.make_room(item.len()) {
                queue.counts.refused += 1;
                reg.totals.refused += 1;
                return Err(Status::NotFound);
            }
            queue.items.push_back(Item { data: Bytes::copy_from_slice(item), receipt: None });
            queue.bytes += cost;
            *vm_bytes = *vm_bytes + queue.bytes - bytes_before;
            queue.counts.enqueued += 1;
            let owner = queue.owner.clone().expect("a queue that is not bridged has a registrant");
            let dropped = queue.counts.dropped - dropped_before;
            reg.totals.enqueued += 1;
            reg.totals.dropped += dropped;
            owner
        };
        // The lock is released: the owner's thread may be dequeuing right now.
        owner.mailbox.post_queue_ready(QueueReady {
            instance: owner.instance,
            context_id: owner.context_id,
            queue_id: token,
        });
        Ok(())
    }

    /// Takes the oldest item (`proxy_dequeue_shared_queue`).
    ///
    /// # Errors
    /// [`Status::NotFound`] for an unknown token, [`Status::Empty`] when
    /// there is no item.
    pub fn dequeue(&self, token: u32) -> Result<Bytes, Status> {
        let taken = self.take(token)?;
        self.handed_over(token, &taken);
        Ok(taken.data)
    }

    /// Takes the oldest item, to be confirmed by [`SharedQueues::handed_over`]
    /// or put back by [`SharedQueues::undo_dequeue`].
    pub(crate) fn take(&self, token: u32) -> Result<Taken, Status> {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let queue = reg.queues.get_mut(&token).ok_or(Status::NotFound)?;
        let item = queue.items.pop_front().ok_or(Status::Empty)?;
        let cost = item.data.len() + ITEM_OVERHEAD;
        queue.bytes -= cost;
        queue.counts.dequeued += 1;
        reg.totals.dequeued += 1;
        if let Some(used) = reg.vm_bytes.get_mut(queue.vm_id.as_str()) {
            *used = used.saturating_sub(cost);
        }
        Ok(Taken { data: item.data, receipt: item.receipt })
    }

    /// The plugin has the item: a fetched one is acknowledged to the broker.
    pub(crate) fn handed_over(&self, token: u32, taken: &Taken) {
        let Some(receipt) = taken.receipt else { return };
        let reg = self.lock();
        if let Some(link) = reg.queues.get(&token).and_then(|q| q.link.as_ref()) {
            link.delivered(receipt);
        }
    }

    /// Puts back at the front an item [`SharedQueues::take`] took but
    /// could not hand over (the plugin's allocator failed): nothing is lost.
    pub(crate) fn undo_dequeue(&self, token: u32, taken: Taken) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let Some(queue) = reg.queues.get_mut(&token) else { return };
        let cost = taken.data.len() + ITEM_OVERHEAD;
        queue.bytes += cost;
        queue.items.push_front(Item { data: taken.data, receipt: taken.receipt });
        if let Some(used) = reg.vm_bytes.get_mut(queue.vm_id.as_str()) {
            *used += cost;
        }
        queue.counts.dequeued -= 1;
        reg.totals.dequeued -= 1;
    }

    /// Items enqueued and dequeued since start, and waiting now.
    pub fn totals(&self) -> QueueTotals {
        let reg = self.lock();
        let waiting = reg.queues.values().map(|q| q.items.len() as u64).sum();
        QueueTotals { waiting, ..reg.totals }
    }

    /// Every queue with its depth and counters, by vm_id and name.
    pub fn stats(&self) -> Vec<QueueStats> {
        let reg = self.lock();
        let mut all: Vec<QueueStats> = reg
            .queues
            .values()
            .map(|q| QueueStats {
                vm_id: q.vm_id.clone(),
                name: q.name.clone(),
                depth: q.items.len() as u64,
                bytes: q.bytes as u64,
                counts: q.counts,
            })
            .collect();
        all.sort_by(|a, b| (&a.vm_id, &a.name).cmp(&(&b.vm_id, &b.name)));
        all
    }

    /// Number of items waiting in queue `token`, if it exists.
    pub fn len(&self, token: u32) -> Option<usize> {
        self.lock().queues.get(&token).map(|q| q.items.len())
    }

    /// Deletes every queue of `vm_id`, items included: called when the last
    /// module of that vm_id is unloaded. Bridged queues stay (other plugins
    /// still publish to them), without a registrant.
    pub fn remove_vm_id(&self, vm_id: &str) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        reg.queues.retain(|_, q| q.vm_id != vm_id || q.link.is_some());
        let queues = &mut reg.queues;
        reg.tokens.retain(|(id, _), token| id != vm_id || queues.contains_key(token));
        for queue in queues.values_mut().filter(|q| q.vm_id == vm_id) {
            queue.owner = None;
        }
        if !queues.values().any(|q| q.vm_id == vm_id) {
            reg.vm_bytes.remove(vm_id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Queue {
    /// Whether an item of `len` bytes may go in, after dropping the oldest
    /// items if the queue drops rather than refuses.
    fn make_room(&mut self, len: usize) -> bool {
        let cost = len + ITEM_OVERHEAD;
        if len > MAX_VALUE_BYTES || cost > self.bounds.max_bytes {
            return false;
        }
        let full = |q: &Queue| {
            q.bounds.max_items.is_some_and(|max| q.items.len() >= max) || q.bytes + cost > q.bounds.max_bytes
        };
        if !full(self) {
            return true;
        }
        if self.bounds.overflow == Overflow::Refuse || self.bounds.max_items == Some(0) {
            return false;
        }
        while full(self) {
            let Some(oldest) = self.items.pop_front() else { break };
            self.bytes -= oldest.data.len() + ITEM_OVERHEAD;
            self.counts.dropped += 1;
        }
        true
    }
}

impl Registry {
    /// A new empty queue, its cost counted against its vm_id, and its token.
    fn create(&mut self, vm_id: &str, name: &str, owner: Option<QueueOwner>, link: Option<Arc<dyn QueueLink>>) -> u32 {
        *self.vm_bytes.entry(vm_id.to_owned()).or_default() += name.len() + QUEUE_OVERHEAD;
        let token = self.next_free_token();
        let bounds = self.bounds_of(vm_id, name);
        self.tokens.insert((vm_id.to_owned(), name.to_owned()), token);
        let queue = Queue {
            vm_id: vm_id.to_owned(),
            name: name.to_owned(),
            items: VecDeque::new(),
            bytes: 0,
            owner,
            bounds,
            counts: QueueCounts::default(),
            link,
        };
        self.queues.insert(token, queue);
        token
    }

    /// The next token after the last one handed out, skipping 0 and tokens
    /// still in use (they only repeat after 2^32 registrations).
    fn next_free_token(&mut self) -> u32 {
        loop {
            self.last_token = self.last_token.wrapping_add(1);
            if self.last_token != 0 && !self.queues.contains_key(&self.last_token) {
                return self.last_token;
            }
        }
    }

    fn vm_used(&self, vm_id: &str) -> usize {
        self.vm_bytes.get(vm_id).copied().unwrap_or(0)
    }

    fn bounds_of(&self, vm_id: &str, name: &str) -> QueueBounds {
        self.rules
            .iter()
            .find(|r| r.vm_id == vm_id && r.name.as_deref().is_none_or(|n| n == name))
            .map_or(self.default_bounds, |r| r.bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A mailbox that records what was posted and lets the test decide when
    /// to deliver it.
    #[derive(Default)]
    struct RecordingMailbox {
        posted: StdMutex<Vec<QueueReady>>,
    }

    impl ThreadMailbox for RecordingMailbox {
        fn post_queue_ready(&self, notice: QueueReady) {
            self.posted.lock().unwrap().push(notice);
        }
    }

    impl RecordingMailbox {
        fn take(&self) -> Vec<QueueReady> {
            std::mem::take(&mut self.posted.lock().unwrap())
        }
    }

    fn instance(vm: u32, generation: u32) -> InstanceId {
        InstanceId { vm_key: crate::mailbox::VmKey(vm), generation }
    }

    fn owner(mailbox: &Arc<RecordingMailbox>, vm: u32, context_id: u32) -> QueueOwner {
        QueueOwner { mailbox: mailbox.clone(), instance: instance(vm, 0), context_id }
    }

    #[test]
    fn tokens_start_at_one_and_differ_per_name_and_vm_id() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let a = queues.register("receiver", "http_headers", owner(&mb, 0, 1)).unwrap();
        let b = queues.register("receiver", "other", owner(&mb, 0, 1)).unwrap();
        let c = queues.register("sender", "http_headers", owner(&mb, 1, 1)).unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
    }

    #[test]
    fn re_registering_returns_the_same_token_keeps_items_and_moves_notifications() {
        let queues = SharedQueues::default();
        let first = Arc::new(RecordingMailbox::default());
        let second = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&first, 0, 1)).unwrap();
        queues.enqueue(token, b"kept").unwrap();
        assert_eq!(queues.register("receiver", "q", owner(&second, 7, 3)).unwrap(), token);
        queues.enqueue(token, b"new").unwrap();
        // The first owner heard of the first item only; the last registrant of the second.
        assert_eq!(first.take(), [QueueReady { instance: instance(0, 0), context_id: 1, queue_id: token }]);
        assert_eq!(second.take(), [QueueReady { instance: instance(7, 0), context_id: 3, queue_id: token }]);
        assert_eq!(queues.dequeue(token).unwrap(), "kept");
        assert_eq!(queues.dequeue(token).unwrap(), "new");
    }

    #[test]
    fn resolve_finds_registered_queues_only() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.resolve("receiver", "q"), None);
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        assert_eq!(queues.resolve("receiver", "q"), Some(token));
        assert_eq!(queues.resolve("sender", "q"), None);
    }

    #[test]
    fn unknown_tokens_are_not_found_and_an_empty_queue_is_empty() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.enqueue(1, b""), Err(Status::NotFound));
        assert_eq!(queues.dequeue(1), Err(Status::NotFound));
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        assert_eq!(queues.dequeue(token), Err(Status::Empty));
        assert_eq!(queues.dequeue(0), Err(Status::NotFound));
    }

    #[test]
    fn one_notification_per_item_posted_not_delivered_inline_and_fifo() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        for i in 0..5u8 {
            queues.enqueue(token, &[i]).unwrap();
        }
        // Five posts, one per item; nothing was dequeued on the owner's behalf.
        assert_eq!(mb.take().len(), 5);
        assert_eq!(queues.len(token), Some(5));
        for i in 0..5u8 {
            assert_eq!(queues.dequeue(token).unwrap(), Bytes::from(vec![i]));
        }
    }

    #[test]
    fn owner_gone_drops_the_notification_and_keeps_items() {
        /// A mailbox whose thread has exited.
        struct ClosedMailbox;
        impl ThreadMailbox for ClosedMailbox {
            fn post_queue_ready(&self, _: QueueReady) {}
        }
        let queues = SharedQueues::default();
        let token = queues
            .register(
                "receiver",
                "q",
                QueueOwner { mailbox: Arc::new(ClosedMailbox), instance: instance(0, 0), context_id: 1 },
            )
            .unwrap();
        queues.enqueue(token, b"a").unwrap();
        queues.enqueue(token, b"b").unwrap();
        assert_eq!(queues.len(token), Some(2));
        // A new owner can still drain them.
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap(), token);
        assert_eq!(queues.dequeue(token).unwrap(), "a");
        assert_eq!(queues.dequeue(token).unwrap(), "b");
    }

    #[test]
    fn removing_a_vm_id_deletes_its_queues_and_tokens_are_not_reused() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let gone = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        let kept = queues.register("other", "q", owner(&mb, 1, 1)).unwrap();
        queues.enqueue(gone, b"x").unwrap();
        queues.remove_vm_id("receiver");
        assert_eq!(queues.resolve("receiver", "q"), None);
        assert_eq!(queues.dequeue(gone), Err(Status::NotFound));
        assert_eq!(queues.enqueue(gone, b""), Err(Status::NotFound));
        assert_eq!(queues.resolve("other", "q"), Some(kept));
        let fresh = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        assert!(fresh != gone && fresh != kept);
    }

    #[test]
    fn concurrent_enqueues_from_many_threads_lose_nothing() {
        let queues = Arc::new(SharedQueues::default());
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let queues = queues.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u16 {
                        let mut item = vec![t];
                        item.extend_from_slice(&i.to_le_bytes());
                        queues.enqueue(token, &item).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(mb.take().len(), 4000);
        assert_eq!(
            queues.totals(),
            QueueTotals { enqueued: 4000, dequeued: 0, waiting: 4000, ..QueueTotals::default() }
        );
        // Each thread's items come out in the order that thread put them in.
        let mut next = [0u16; 4];
        while let Ok(item) = queues.dequeue(token) {
            let t = item[0] as usize;
            assert_eq!(u16::from_le_bytes([item[1], item[2]]), next[t]);
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
        assert_eq!(
            queues.totals(),
            QueueTotals { enqueued: 4000, dequeued: 4000, waiting: 0, ..QueueTotals::default() }
        );
    }

    fn bounded(max_items: usize, overflow: Overflow) -> SharedQueues {
        let bounds = QueueBounds { max_items: Some(max_items), overflow, ..QueueBounds::default() };
        let rule = QueueBoundsRule { vm_id: "receiver".into(), name: Some("q".into()), bounds };
        SharedQueues::with_bounds(QueueBounds::default(), vec![rule])
    }

    #[test]
    fn a_full_queue_that_refuses_keeps_its_items_and_counts_the_refusal() {
        let queues = bounded(2, Overflow::Refuse);
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        queues.enqueue(token, b"1").unwrap();
        queues.enqueue(token, b"2").unwrap();
        assert_eq!(queues.enqueue(token, b"3"), Err(Status::NotFound));
        assert_eq!(mb.take().len(), 2, "no notification for a refused item");
        assert_eq!(queues.dequeue(token).unwrap(), "1");
        queues.enqueue(token, b"3").unwrap();
        let stats = &queues.stats()[0];
        assert_eq!((stats.depth, stats.counts.refused, stats.counts.enqueued), (2, 1, 3));
        // Other queues of the vm_id are not bounded by the rule.
        let other = queues.register("receiver", "other", owner(&mb, 0, 1)).unwrap();
        for _ in 0..10 {
            queues.enqueue(other, b"x").unwrap();
        }
    }

    #[test]
    fn a_full_queue_that_drops_the_oldest_keeps_the_newest() {
        let queues = bounded(2, Overflow::DropOldest);
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        for item in [b"1", b"2", b"3", b"4"] {
            queues.enqueue(token, item).unwrap();
        }
        assert_eq!(queues.dequeue(token).unwrap(), "3");
        assert_eq!(queues.dequeue(token).unwrap(), "4");
        assert_eq!(queues.dequeue(token), Err(Status::Empty));
        assert_eq!(queues.totals().dropped, 2);
        assert_eq!(queues.stats()[0].counts.dropped, 2);
    }

    #[test]
    fn the_byte_bound_counts_each_item_with_its_overhead() {
        let bounds = QueueBounds { max_bytes: 2 * (5 + ITEM_OVERHEAD), ..QueueBounds::default() };
        let queues = SharedQueues::with_bounds(bounds, Vec::new());
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("any", "q", owner(&mb, 0, 1)).unwrap();
        queues.enqueue(token, b"12345").unwrap();
        queues.enqueue(token, b"67890").unwrap();
        assert_eq!(queues.enqueue(token, b""), Err(Status::NotFound), "even an empty item costs room");
        assert_eq!(queues.enqueue(token, &[0; 2 * (5 + ITEM_OVERHEAD)]), Err(Status::NotFound));
        assert_eq!(queues.stats()[0].bytes, 2 * (5 + ITEM_OVERHEAD) as u64);
        // A dequeue that could not be handed over puts the item back first.
        let item = queues.take(token).unwrap();
        queues.undo_dequeue(token, item);
        assert_eq!(queues.dequeue(token).unwrap(), "12345");
        assert_eq!(queues.totals().dequeued, 1);
    }

    #[test]
    fn a_restarted_owner_is_told_once_per_item_that_waited() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        queues.enqueue(token, b"a").unwrap();
        queues.enqueue(token, b"b").unwrap();
        // The notifications went to instance 0, which failed before handling them.
        assert_eq!(mb.take().len(), 2);
        let restarted = QueueOwner { mailbox: mb.clone(), instance: instance(0, 1), context_id: 1 };
        assert_eq!(queues.register("receiver", "q", restarted.clone()).unwrap(), token);
        assert_eq!(mb.take(), [QueueReady { instance: instance(0, 1), context_id: 1, queue_id: token }; 2]);
        // Registering again from the same instance tells nothing new.
        queues.register("receiver", "q", restarted).unwrap();
        assert!(mb.take().is_empty());
        // Nor does another VM taking the queue over.
        queues.register("receiver", "q", owner(&mb, 5, 1)).unwrap();
        assert!(mb.take().is_empty());
    }

    #[test]
    fn the_queues_of_one_vm_id_share_a_byte_budget_and_others_are_not_touched() {
        let queues = SharedQueues::default();
        let budget = 2 * QUEUE_OVERHEAD + 2 + 3 * (100 + ITEM_OVERHEAD);
        queues.lock().vm_budget = budget;
        let mb = Arc::new(RecordingMailbox::default());
        let a = queues.register("hog", "a", owner(&mb, 0, 1)).unwrap();
        let b = queues.register("hog", "b", owner(&mb, 0, 1)).unwrap();
        for token in [a, b, a] {
            queues.enqueue(token, &[0; 100]).unwrap();
        }
        // Full: neither queue takes more, and no new queue is registered...
        assert_eq!(queues.enqueue(b, &[0; 100]), Err(Status::NotFound));
        assert_eq!(queues.register("hog", "c", owner(&mb, 0, 1)), Err(Status::InternalFailure));
        assert_eq!(queues.stats().iter().map(|q| q.counts.refused).sum::<u64>(), 1);
        // ...another vm_id has its own budget...
        let other = queues.register("other", "a", owner(&mb, 1, 1)).unwrap();
        queues.enqueue(other, &[0; 100]).unwrap();
        // ...and a dequeue makes room again.
        queues.dequeue(a).unwrap();
        queues.enqueue(b, &[0; 100]).unwrap();
        assert_eq!(queues.enqueue(b, &[0; 1]), Err(Status::NotFound));
    }

    /// A bridge that records what the host asked of it.
    #[derive(Default)]
    struct RecordingLink {
        published: StdMutex<Vec<Bytes>>,
        receiving: std::sync::atomic::AtomicUsize,
        delivered: StdMutex<Vec<NonZeroU64>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl QueueLink for RecordingLink {
        fn publish(&self, item: &[u8]) -> Result<(), Status> {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Status::NotFound);
            }
            self.published.lock().unwrap().push(Bytes::copy_from_slice(item));
            Ok(())
        }
        fn start_receiving(&self) {
            self.receiving.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn delivered(&self, receipt: NonZeroU64) {
            self.delivered.lock().unwrap().push(receipt);
        }
    }

    fn receipt(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    #[test]
    fn a_bridged_queue_resolves_before_registration_and_publishes_what_is_enqueued() {
        let queues = SharedQueues::default();
        let link = Arc::new(RecordingLink::default());
        let token = queues.bridge("receiver", "q", link.clone());
        assert_eq!(queues.resolve("receiver", "q"), Some(token));
        queues.enqueue(token, b"one").unwrap();
        assert_eq!(*link.published.lock().unwrap(), [Bytes::from_static(b"one")]);
        assert_eq!(queues.len(token), Some(0), "nothing waits locally");
        link.refuse.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(queues.enqueue(token, b"two"), Err(Status::NotFound));
        let counts = queues.stats()[0].counts;
        assert_eq!((counts.enqueued, counts.refused), (1, 1));
    }

    #[test]
    fn fetched_items_notify_the_registrant_and_are_acknowledged_once_handed_over() {
        let queues = SharedQueues::default();
        let link = Arc::new(RecordingLink::default());
        let token = queues.bridge("receiver", "q", link.clone());
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap(), token);
        assert_eq!(link.receiving.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(queues.deliver_fetched(
            token,
            vec![(Bytes::from_static(b"a"), receipt(1)), (Bytes::from_static(b"b"), receipt(2))]
        ));
        assert_eq!(mb.take().len(), 2);
        // An item the plugin could not take goes back and is not acknowledged.
        let taken = queues.take(token).unwrap();
        queues.undo_dequeue(token, taken);
        assert!(link.delivered.lock().unwrap().is_empty());
        assert_eq!(queues.dequeue(token).unwrap(), "a");
        assert_eq!(*link.delivered.lock().unwrap(), [receipt(1)]);
        // What no plugin took is returned, with its receipt, at shutdown.
        assert_eq!(queues.return_fetched(token), [(Bytes::from_static(b"b"), receipt(2))]);
        assert_eq!(queues.dequeue(token), Err(Status::Empty));
        assert_eq!(queues.stats()[0].bytes, 0);
    }

    #[test]
    fn a_bridged_queue_outlives_its_receivers_vm() {
        let queues = SharedQueues::default();
        let link = Arc::new(RecordingLink::default());
        let token = queues.bridge("receiver", "q", link.clone());
        let mb = Arc::new(RecordingMailbox::default());
        queues.register("receiver", "q", owner(&mb, 0, 1)).unwrap();
        queues.remove_vm_id("receiver");
        assert_eq!(queues.resolve("receiver", "q"), Some(token));
        queues.enqueue(token, b"still published").unwrap();
        assert_eq!(link.published.lock().unwrap().len(), 1);
    }
}
