//! The Wasm side of one thread: its VMs, the timers of their root contexts,
//! and the inbox through which other threads reach them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferry_host::{Host, Plugin, PluginHandle, QueueReady, ThreadMailbox, TickChange, VmKey, WasmThread};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// A message for a thread's event loop.
#[derive(Debug)]
pub(crate) enum ThreadMessage {
    /// Deliver `proxy_on_queue_ready`.
    QueueReady(QueueReady),
    /// Stop the thread.
    Shutdown,
}

/// A thread's inbox: an unbounded channel into its event loop. Unbounded
/// because a producer must never block or drop an item's notification;
/// each item costs one small message.
pub(crate) struct ChannelMailbox(pub(crate) mpsc::UnboundedSender<ThreadMessage>);

impl ThreadMailbox for ChannelMailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        // A closed channel means the thread is gone: the notification is
        // dropped and the item stays in the queue.
        let _ = self.0.send(ThreadMessage::QueueReady(notice));
    }
}

/// The VMs of this thread and the timers of their root contexts. All calls
/// into Wasm go through [`ThreadWasm::with`], which keeps the timers in step.
pub(crate) struct ThreadWasm {
    vms: RefCell<WasmThread>,
    /// Handle of each plugin of this thread, in plan order.
    handles: Vec<PluginHandle>,
    ticks: RefCell<Ticks>,
    ticks_changed: Notify,
    /// Set while a callback runs, to catch accidental re-entry.
    busy: Cell<bool>,
}

impl ThreadWasm {
    /// VMs for `plugins`, started: root contexts created and configured.
    pub(crate) fn start(
        host: Arc<Host>,
        mailbox: mpsc::UnboundedSender<ThreadMessage>,
        plugins: &[Arc<Plugin>],
    ) -> Result<Rc<ThreadWasm>, ferry_host::StartError> {
        let mut vms = WasmThread::new(host, Arc::new(ChannelMailbox(mailbox)));
        let handles = plugins.iter().map(|p| vms.add_plugin(p.clone())).collect();
        vms.start()?;
        let wasm = Rc::new(ThreadWasm {
            vms: RefCell::new(vms),
            handles,
            ticks: RefCell::default(),
            ticks_changed: Notify::new(),
            busy: Cell::new(false),
        });
        wasm.apply_tick_changes();
        Ok(wasm)
    }

    /// The handle of plugin `index` (an index into the plan's plugin list).
    pub(crate) fn handle(&self, index: usize) -> PluginHandle {
        self.handles[index]
    }

    /// Runs `f` on the VMs. Never call this from inside a callback: host
    /// functions only post messages, they never reach back here.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut WasmThread) -> R) -> R {
        assert!(!self.busy.replace(true), "re-entered the VMs of this thread");
        let result = f(&mut self.vms.borrow_mut());
        self.busy.set(false);
        self.apply_tick_changes();
        result
    }

    fn apply_tick_changes(&self) {
        let changes = self.vms.borrow_mut().take_tick_changes();
        if !changes.is_empty() {
            self.ticks.borrow_mut().apply(changes);
            self.ticks_changed.notify_one();
        }
    }

    /// Handles messages until [`ThreadMessage::Shutdown`] or until every
    /// sender is gone.
    pub(crate) async fn run_inbox(self: Rc<Self>, mut inbox: mpsc::UnboundedReceiver<ThreadMessage>) {
        let mut batch = Vec::with_capacity(256);
        loop {
            if inbox.recv_many(&mut batch, 256).await == 0 {
                return;
            }
            let mut shutdown = false;
            self.with(|vms| {
                for message in batch.drain(..) {
                    match message {
                        ThreadMessage::QueueReady(notice) => vms.on_queue_ready(notice),
                        ThreadMessage::Shutdown => shutdown = true,
                    }
                }
            });
            if shutdown {
                return;
            }
        }
    }

    /// Fires `proxy_on_tick` for root contexts whose period is due, forever.
    pub(crate) async fn run_ticks(self: Rc<Self>) {
        loop {
            let next = self.ticks.borrow().next_due();
            match next {
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = self.ticks_changed.notified() => continue,
                    }
                }
                None => {
                    self.ticks_changed.notified().await;
                    continue;
                }
            }
            let due = self.ticks.borrow_mut().take_due(Instant::now());
            self.with(|vms| {
                for (vm_key, context_id) in due {
                    vms.on_tick(vm_key, context_id);
                }
            });
        }
    }
}

/// Tick timers of root contexts: period and next firing time.
#[derive(Default)]
struct Ticks {
    timers: HashMap<(VmKey, u32), (Duration, Instant)>,
}

impl Ticks {
    fn apply(&mut self, changes: Vec<TickChange>) {
        let now = Instant::now();
        for change in changes {
            let key = (change.vm_key, change.request.context_id);
            if change.request.period_ms == 0 {
                self.timers.remove(&key);
            } else {
                let period = Duration::from_millis(u64::from(change.request.period_ms));
                self.timers.insert(key, (period, now + period));
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.timers.values().map(|&(_, due)| due).min()
    }

    /// The timers due at `now`, rescheduled one period later (or a period
    /// from now if the thread fell behind).
    fn take_due(&mut self, now: Instant) -> Vec<(VmKey, u32)> {
        let mut due = Vec::new();
        for (&key, (period, next)) in &mut self.timers {
            if *next <= now {
                due.push(key);
                *next += *period;
                if *next <= now {
                    *next = now + *period;
                }
            }
        }
        due.sort();
        due
    }
}
