//! The Wasm side of one thread: its VMs, the timers of their root contexts,
//! and the inbox through which other threads reach them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferry_host::{
    GrpcCommand, Host, HttpCallRequest, Plugin, PluginHandle, QueueReady, StreamAction, ThreadMailbox, TickChange,
    VmKey, WasmThread,
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::grpc::GrpcCalls;
use crate::upstream::{Clusters, Upstreams};
use tokio::time::Instant;

/// A message for a thread's event loop.
#[derive(Debug)]
pub(crate) enum ThreadMessage {
    /// Deliver `proxy_on_queue_ready`, once per notice, in order.
    QueueReady(Vec<QueueReady>),
    /// Stop the thread.
    Shutdown,
}

type Inbox = mpsc::UnboundedSender<ThreadMessage>;

/// Where a TCP connection receives its plugins' signals: (context id, action).
pub(crate) type SignalSink = mpsc::UnboundedSender<(u32, StreamAction)>;

/// How long root contexts that deferred their shutdown (`proxy_on_done`
/// false) have to call `proxy_done` before the thread stops anyway.
const ROOT_DONE_GRACE: Duration = Duration::from_secs(2);

/// Most notifications a thread holds before sending them anyway.
const MAX_PENDING_NOTIFICATIONS: usize = 1024;

/// Queue notifications posted on this thread, not sent yet.
///
/// Sending one message per item would wake the owner's thread once per
/// item: eight wake-ups (and, on a shared core, eight context switches) for
/// one request of the shared_queue example. Instead, posts collect here and
/// a task of this thread sends them, one message per destination, once the
/// tasks that are ready now have run. Each item still gets exactly one
/// `proxy_on_queue_ready`, later and on the owner's thread.
#[derive(Default)]
struct Outbox {
    /// Wakes this thread's sending task; `None` on threads without one,
    /// which send at once.
    sender_task: Option<Rc<Notify>>,
    pending: Vec<(Inbox, Vec<QueueReady>)>,
    count: usize,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

impl Outbox {
    fn take(&mut self) -> Vec<(Inbox, Vec<QueueReady>)> {
        self.count = 0;
        std::mem::take(&mut self.pending)
    }
}

fn send(batches: Vec<(Inbox, Vec<QueueReady>)>) {
    for (inbox, batch) in batches {
        // A closed channel means the thread is gone: the notification is
        // dropped and the item stays in the queue.
        let _ = inbox.send(ThreadMessage::QueueReady(batch));
    }
}

/// A thread's inbox: an unbounded channel into its event loop. Unbounded
/// because a producer must never block or drop an item's notification.
pub(crate) struct ChannelMailbox(pub(crate) Inbox);

impl ThreadMailbox for ChannelMailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        let full = OUTBOX.with(|outbox| {
            let mut outbox = outbox.borrow_mut();
            let Some(task) = outbox.sender_task.clone() else {
                return Some(vec![(self.0.clone(), vec![notice])]);
            };
            match outbox.pending.iter_mut().find(|(inbox, _)| inbox.same_channel(&self.0)) {
                Some((_, batch)) => batch.push(notice),
                None => outbox.pending.push((self.0.clone(), vec![notice])),
            }
            outbox.count += 1;
            if outbox.count == 1 {
                task.notify_one();
            }
            (outbox.count >= MAX_PENDING_NOTIFICATIONS).then(|| outbox.take())
        });
        if let Some(batches) = full {
            send(batches);
        }
    }
}

/// This thread's sending task: sends what the outbox holds whenever it gets
/// a turn. Runs until the thread's runtime stops.
pub(crate) async fn run_outbox() {
    let task = Rc::new(Notify::new());
    OUTBOX.with(|outbox| outbox.borrow_mut().sender_task = Some(task.clone()));
    loop {
        task.notified().await;
        send(OUTBOX.with(|outbox| outbox.borrow_mut().take()));
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
    /// Paused streams waiting for their plugin, by VM and context id.
    waiters: RefCell<HashMap<(VmKey, u32), oneshot::Sender<StreamAction>>>,
    /// TCP connections listening to their plugins' signals, by VM and context id.
    subscribers: RefCell<HashMap<(VmKey, u32), SignalSink>>,
    /// HTTP calls plugins made, for the calls task to send.
    calls: RefCell<Vec<HttpCallRequest>>,
    /// gRPC commands plugins gave, for the calls task to carry out in order.
    grpc_commands: RefCell<Vec<GrpcCommand>>,
    calls_made: Notify,
    /// Open gRPC calls and streams.
    pub(crate) grpc: RefCell<GrpcCalls>,
    /// This thread's connection pools (HTTP calls, and the router's upstreams).
    pub(crate) upstreams: Rc<Upstreams>,
    /// Set while a callback runs, to catch accidental re-entry.
    busy: Cell<bool>,
}

impl ThreadWasm {
    /// VMs for `plugins`, started: root contexts created and configured.
    pub(crate) fn start(
        host: Arc<Host>,
        mailbox: Inbox,
        plugins: &[Arc<Plugin>],
        clusters: &Clusters,
    ) -> Result<Rc<ThreadWasm>, ferry_host::StartError> {
        let mut vms = WasmThread::new(host, Arc::new(ChannelMailbox(mailbox)));
        let handles = plugins.iter().map(|p| vms.add_plugin(p.clone())).collect();
        vms.start()?;
        let wasm = Rc::new(ThreadWasm {
            vms: RefCell::new(vms),
            handles,
            ticks: RefCell::default(),
            ticks_changed: Notify::new(),
            waiters: RefCell::default(),
            subscribers: RefCell::default(),
            calls: RefCell::default(),
            grpc_commands: RefCell::default(),
            calls_made: Notify::new(),
            grpc: RefCell::default(),
            upstreams: Rc::new(Upstreams::new(clusters)),
            busy: Cell::new(false),
        });
        wasm.apply_effects();
        tokio::task::spawn_local(wasm.clone().run_calls());
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
        self.apply_effects();
        result
    }

    /// Carries out what the last callbacks asked for: timers, signals to
    /// paused streams, HTTP calls.
    fn apply_effects(&self) {
        let effects = self.vms.borrow_mut().take_effects();
        if effects.is_empty() {
            return;
        }
        if !effects.ticks.is_empty() {
            self.ticks.borrow_mut().apply(effects.ticks);
            self.ticks_changed.notify_one();
        }
        for signal in effects.stream_signals {
            let key = (signal.vm_key, signal.context_id);
            // No waiter: the client went away meanwhile.
            if let Some(waiter) = self.waiters.borrow_mut().remove(&key) {
                let _ = waiter.send(signal.action);
            } else if let Some(subscriber) = self.subscribers.borrow().get(&key) {
                let _ = subscriber.send((signal.context_id, signal.action));
            }
        }
        if !effects.http_calls.is_empty() || !effects.grpc.is_empty() {
            self.calls.borrow_mut().extend(effects.http_calls);
            self.grpc_commands.borrow_mut().extend(effects.grpc);
            self.calls_made.notify_one();
        }
    }

    /// Waits for the plugin of a paused stream to resume, answer or close it.
    pub(crate) fn wait_for(&self, vm_key: VmKey, context_id: u32) -> oneshot::Receiver<StreamAction> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert((vm_key, context_id), tx);
        rx
    }

    /// Sends every signal for a stream context to `sink` until [`ThreadWasm::unsubscribe`]:
    /// a TCP connection may be resumed or closed by its plugins at any time.
    pub(crate) fn subscribe(&self, vm_key: VmKey, context_id: u32, sink: SignalSink) {
        self.subscribers.borrow_mut().insert((vm_key, context_id), sink);
    }

    /// Stops sending signals for a stream context.
    pub(crate) fn unsubscribe(&self, vm_key: VmKey, context_id: u32) {
        self.subscribers.borrow_mut().remove(&(vm_key, context_id));
    }

    /// Forgets a waiter (its stream ended without a signal).
    pub(crate) fn forget_waiter(&self, vm_key: VmKey, context_id: u32) {
        self.waiters.borrow_mut().remove(&(vm_key, context_id));
    }

    /// Sends the HTTP calls plugins make, each in its own task, and delivers
    /// each response to the root context that made the call; carries out
    /// gRPC commands in the order they were given.
    async fn run_calls(self: Rc<Self>) {
        loop {
            self.calls_made.notified().await;
            let commands = std::mem::take(&mut *self.grpc_commands.borrow_mut());
            for command in commands {
                let mut grpc = self.grpc.borrow_mut();
                match command {
                    GrpcCommand::Open(open) => grpc.open(&self, open),
                    GrpcCommand::Send { vm_key, token, message, end_stream } => {
                        grpc.send((vm_key, token), &message, end_stream);
                    }
                    GrpcCommand::Close { vm_key, token } => grpc.close((vm_key, token)),
                    GrpcCommand::Cancel { vm_key, token } => grpc.cancel((vm_key, token)),
                }
            }
            let calls = std::mem::take(&mut *self.calls.borrow_mut());
            for call in calls {
                let wasm = self.clone();
                tokio::task::spawn_local(async move {
                    let result = wasm.upstreams.call(&call).await;
                    let (response, failure) = match result {
                        Ok(response) => (Some(response), String::new()),
                        Err(error) => {
                            tracing::debug!(target: "upstream", "HTTP call to {}: {error}", call.upstream);
                            (None, error.to_string())
                        }
                    };
                    wasm.with(|vms| {
                        vms.on_http_call_response(call.vm_key, call.context_id, call.token, response, &failure)
                    });
                });
            }
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
                        ThreadMessage::QueueReady(notices) => {
                            for notice in notices {
                                vms.on_queue_ready(notice);
                            }
                        }
                        ThreadMessage::Shutdown => shutdown = true,
                    }
                }
            });
            if shutdown {
                return;
            }
        }
    }

    /// Shuts the root contexts of this thread down: `proxy_on_done` on each,
    /// then waits (at most [`ROOT_DONE_GRACE`], with timers and calls still
    /// running) for those that deferred to call `proxy_done`.
    pub(crate) async fn shutdown_roots(&self) {
        if self.with(WasmThread::begin_shutdown) == 0 {
            return;
        }
        let deadline = Instant::now() + ROOT_DONE_GRACE;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.with(|vms| vms.pending_shutdown()) == 0 {
                return;
            }
        }
        let left = self.with(|vms| vms.pending_shutdown());
        tracing::warn!(target: "wasm", "{left} root context(s) did not call proxy_done within {ROOT_DONE_GRACE:?} of shutdown");
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
