//! How the host reaches a VM on another thread: the embedder gives each
//! thread a mailbox, and the host posts work to it instead of calling in.

use std::fmt;

/// Identifies a compiled plugin module (one per distinct `vm_id`, VM
/// configuration and code). Each thread has at most one VM per key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmKey(pub(crate) u32);

impl VmKey {
    /// A key made outside a [`crate::Host`]: for embedders' tests and
    /// benchmarks that register queues without loading a module. Keys of
    /// loaded modules come from [`crate::Host::load_module`].
    pub fn from_index(index: u32) -> VmKey {
        VmKey(index)
    }

    /// The key's number, unique within one [`crate::Host`].
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for VmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmKey({})", self.0)
    }
}

/// One VM instance on one thread: the module it runs and which instance
/// of it this is. A failed instance is replaced by one with the next
/// generation, so events meant for the old one (a late HTTP call response,
/// a queue notification) can be told apart and dropped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct InstanceId {
    /// The module.
    pub vm_key: VmKey,
    /// 0 for the first instance on a thread, then one more per replacement.
    pub generation: u32,
}

/// "An item was enqueued": deliver `proxy_on_queue_ready(context_id, queue_id)`
/// to VM instance `instance` on the mailbox's thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueReady {
    /// The VM instance that registered the queue last.
    pub instance: InstanceId,
    /// Its root context that gets the callback.
    pub context_id: u32,
    /// The queue that got an item.
    pub queue_id: u32,
}

/// A thread's inbox, implemented by the embedder (a channel into the
/// thread's event loop).
///
/// Posting never runs Wasm: the owning thread handles the message later, in
/// its own turn, so no plugin is ever re-entered from inside a host call.
pub trait ThreadMailbox: Send + Sync + 'static {
    /// Queue `notice` for the thread. If the thread is gone, drop it.
    fn post_queue_ready(&self, notice: QueueReady);
}
