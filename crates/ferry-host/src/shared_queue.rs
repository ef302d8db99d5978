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

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferry_abi::Status;

use crate::mailbox::{QueueReady, ThreadMailbox, VmKey};

/// Who is told about new items: a root context of a VM on some thread.
#[derive(Clone)]
pub struct QueueOwner {
    /// The mailbox of the owner's thread.
    pub mailbox: Arc<dyn ThreadMailbox>,
    /// The owner's VM on that thread.
    pub vm_key: VmKey,
    /// The owner's root context.
    pub context_id: u32,
}

struct Queue {
    vm_id: String,
    items: VecDeque<Bytes>,
    owner: QueueOwner,
}

#[derive(Default)]
struct Registry {
    tokens: HashMap<(String, String), u32>,
    queues: FxHashMap<u32, Queue>,
    last_token: u32,
    totals: QueueTotals,
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
}

/// All shared queues of one process.
#[derive(Default)]
pub struct SharedQueues {
    registry: Mutex<Registry>,
}

impl SharedQueues {
    /// Creates the queue `(vm_id, name)` or takes over an existing one, and
    /// returns its token (`proxy_register_shared_queue`).
    pub fn register(&self, vm_id: &str, name: &str, owner: QueueOwner) -> u32 {
        let mut reg = self.lock();
        let key = (vm_id.to_owned(), name.to_owned());
        if let Some(&token) = reg.tokens.get(&key) {
            if let Some(queue) = reg.queues.get_mut(&token) {
                queue.owner = owner;
            }
            return token;
        }
        let token = reg.next_free_token();
        reg.tokens.insert(key, token);
        reg.queues.insert(token, Queue { vm_id: vm_id.to_owned(), items: VecDeque::new(), owner });
        token
    }

    /// The token of queue `(vm_id, name)`, if registered (`proxy_resolve_shared_queue`;
    /// the caller substitutes its own vm_id for an empty one).
    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock().tokens.get(&(vm_id.to_owned(), name.to_owned())).copied()
    }

    /// Appends `item` and posts one notification to the owner
    /// (`proxy_enqueue_shared_queue`).
    ///
    /// # Errors
    /// [`Status::NotFound`] for an unknown token.
    pub fn enqueue(&self, token: u32, item: Bytes) -> Result<(), Status> {
        let owner = {
            let mut reg = self.lock();
            let queue = reg.queues.get_mut(&token).ok_or(Status::NotFound)?;
            queue.items.push_back(item);
            let owner = queue.owner.clone();
            reg.totals.enqueued += 1;
            owner
        };
        // The lock is released: the owner's thread may be dequeuing right now.
        owner.mailbox.post_queue_ready(QueueReady {
            vm_key: owner.vm_key,
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
        let mut reg = self.lock();
        let queue = reg.queues.get_mut(&token).ok_or(Status::NotFound)?;
        let item = queue.items.pop_front().ok_or(Status::Empty)?;
        reg.totals.dequeued += 1;
        Ok(item)
    }

    /// Items enqueued and dequeued since start, and waiting now.
    pub fn totals(&self) -> QueueTotals {
        let reg = self.lock();
        let waiting = reg.queues.values().map(|q| q.items.len() as u64).sum();
        QueueTotals { waiting, ..reg.totals }
    }

    /// Number of items waiting in queue `token`, if it exists.
    pub fn len(&self, token: u32) -> Option<usize> {
        self.lock().queues.get(&token).map(|q| q.items.len())
    }

    /// Deletes every queue of `vm_id`, items included: called when the last
    /// module of that vm_id is unloaded.
    pub fn remove_vm_id(&self, vm_id: &str) {
        let mut reg = self.lock();
        reg.tokens.retain(|(id, _), _| id != vm_id);
        reg.queues.retain(|_, q| q.vm_id != vm_id);
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registry {
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

    fn owner(mailbox: &Arc<RecordingMailbox>, vm: u32, context_id: u32) -> QueueOwner {
        QueueOwner { mailbox: mailbox.clone(), vm_key: VmKey(vm), context_id }
    }

    #[test]
    fn tokens_start_at_one_and_differ_per_name_and_vm_id() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let a = queues.register("receiver", "http_headers", owner(&mb, 0, 1));
        let b = queues.register("receiver", "other", owner(&mb, 0, 1));
        let c = queues.register("sender", "http_headers", owner(&mb, 1, 1));
        assert_eq!((a, b, c), (1, 2, 3));
    }

    #[test]
    fn re_registering_returns_the_same_token_keeps_items_and_moves_notifications() {
        let queues = SharedQueues::default();
        let first = Arc::new(RecordingMailbox::default());
        let second = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&first, 0, 1));
        queues.enqueue(token, Bytes::from_static(b"kept")).unwrap();
        assert_eq!(queues.register("receiver", "q", owner(&second, 7, 3)), token);
        queues.enqueue(token, Bytes::from_static(b"new")).unwrap();
        // The first owner heard of the first item only; the last registrant of the second.
        assert_eq!(first.take(), [QueueReady { vm_key: VmKey(0), context_id: 1, queue_id: token }]);
        assert_eq!(second.take(), [QueueReady { vm_key: VmKey(7), context_id: 3, queue_id: token }]);
        assert_eq!(queues.dequeue(token).unwrap(), "kept");
        assert_eq!(queues.dequeue(token).unwrap(), "new");
    }

    #[test]
    fn resolve_finds_registered_queues_only() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.resolve("receiver", "q"), None);
        let token = queues.register("receiver", "q", owner(&mb, 0, 1));
        assert_eq!(queues.resolve("receiver", "q"), Some(token));
        assert_eq!(queues.resolve("sender", "q"), None);
    }

    #[test]
    fn unknown_tokens_are_not_found_and_an_empty_queue_is_empty() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.enqueue(1, Bytes::new()), Err(Status::NotFound));
        assert_eq!(queues.dequeue(1), Err(Status::NotFound));
        let token = queues.register("receiver", "q", owner(&mb, 0, 1));
        assert_eq!(queues.dequeue(token), Err(Status::Empty));
        assert_eq!(queues.dequeue(0), Err(Status::NotFound));
    }

    #[test]
    fn one_notification_per_item_posted_not_delivered_inline_and_fifo() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1));
        for i in 0..5u8 {
            queues.enqueue(token, Bytes::from(vec![i])).unwrap();
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
        let token = queues.register(
            "receiver",
            "q",
            QueueOwner { mailbox: Arc::new(ClosedMailbox), vm_key: VmKey(0), context_id: 1 },
        );
        queues.enqueue(token, Bytes::from_static(b"a")).unwrap();
        queues.enqueue(token, Bytes::from_static(b"b")).unwrap();
        assert_eq!(queues.len(token), Some(2));
        // A new owner can still drain them.
        let mb = Arc::new(RecordingMailbox::default());
        assert_eq!(queues.register("receiver", "q", owner(&mb, 0, 1)), token);
        assert_eq!(queues.dequeue(token).unwrap(), "a");
        assert_eq!(queues.dequeue(token).unwrap(), "b");
    }

    #[test]
    fn removing_a_vm_id_deletes_its_queues_and_tokens_are_not_reused() {
        let queues = SharedQueues::default();
        let mb = Arc::new(RecordingMailbox::default());
        let gone = queues.register("receiver", "q", owner(&mb, 0, 1));
        let kept = queues.register("other", "q", owner(&mb, 1, 1));
        queues.enqueue(gone, Bytes::from_static(b"x")).unwrap();
        queues.remove_vm_id("receiver");
        assert_eq!(queues.resolve("receiver", "q"), None);
        assert_eq!(queues.dequeue(gone), Err(Status::NotFound));
        assert_eq!(queues.enqueue(gone, Bytes::new()), Err(Status::NotFound));
        assert_eq!(queues.resolve("other", "q"), Some(kept));
        let fresh = queues.register("receiver", "q", owner(&mb, 0, 1));
        assert!(fresh != gone && fresh != kept);
    }

    #[test]
    fn concurrent_enqueues_from_many_threads_lose_nothing() {
        let queues = Arc::new(SharedQueues::default());
        let mb = Arc::new(RecordingMailbox::default());
        let token = queues.register("receiver", "q", owner(&mb, 0, 1));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let queues = queues.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u16 {
                        let mut item = vec![t];
                        item.extend_from_slice(&i.to_le_bytes());
                        queues.enqueue(token, Bytes::from(item)).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(mb.take().len(), 4000);
        assert_eq!(queues.totals(), QueueTotals { enqueued: 4000, dequeued: 0, waiting: 4000 });
        // Each thread's items come out in the order that thread put them in.
        let mut next = [0u16; 4];
        while let Ok(item) = queues.dequeue(token) {
            let t = item[0] as usize;
            assert_eq!(u16::from_le_bytes([item[1], item[2]]), next[t]);
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
        assert_eq!(queues.totals(), QueueTotals { enqueued: 4000, dequeued: 4000, waiting: 0 });
    }
}
