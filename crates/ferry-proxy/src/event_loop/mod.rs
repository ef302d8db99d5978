//! One event loop per thread: the owner of the thread's VMs, connection
//! pools, timers and pending calls.
//!
//! Connections call into their plugins directly, through
//! [`ThreadLoop::wasm`], for their own stream callbacks. Everything that
//! happens later and elsewhere — a queue notification from another thread,
//! a timer, an HTTP call's response, a gRPC message — arrives as an
//! [`Event`] and is handled by one `match` in [`ThreadLoop::handle_event`]. Each
//! such event names the VM instance it is for, so an event for an instance
//! that was discarded meanwhile is dropped (and counted by the host).
//!
//! What the plugins ask for during any call (timers, HTTP calls, signals
//! to paused streams, restarts) comes back from the host as effects, which
//! [`ThreadLoop::wasm`] hands to the part of the loop that owns them.

mod calls;
mod outbox;
mod streams;
mod timers;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferry_host::{
    GrpcEvent, Host, HttpCallResponse, InstanceId, Plugin, PluginHandle, QueueReady, StartError, WasmThread,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

pub(crate) use outbox::run_outbox;
pub(crate) use streams::{SignalSink, SignalSource};

use crate::health::HealthBoard;
use crate::upstream::{Clusters, Upstreams};
use calls::PendingCalls;
use outbox::ChannelMailbox;
use streams::Streams;
use timers::Timers;

/// A message from another thread.
#[derive(Debug)]
pub(crate) enum ThreadMessage {
    /// Deliver `proxy_on_queue_ready`, once per notice, in order.
    QueueReady(Vec<QueueReady>),
    /// Stop accepting connections and close the open HTTP ones gracefully
    /// (each after the response in flight; HTTP/2 with GOAWAY): the
    /// process is draining before it stops.
    Drain,
    /// Stop the thread: shut its root contexts down, then return.
    Shutdown,
}

/// Where other threads send this thread's messages.
pub(crate) type Inbox = mpsc::UnboundedSender<ThreadMessage>;

/// Everything that reaches a thread's plugins from outside a stream callback.
#[derive(Debug)]
pub(crate) enum Event {
    /// From another thread.
    Message(ThreadMessage),
    /// An HTTP call ended (`Err`: why it failed).
    HttpCallDone { instance: InstanceId, context_id: u32, token: u32, result: Result<HttpCallResponse, String> },
    /// Something happened on a gRPC call or stream.
    Grpc { key: (InstanceId, u32), context_id: u32, event: GrpcEvent },
    /// A gRPC call or stream's task ended.
    GrpcEnded((InstanceId, u32)),
    /// A timer is due.
    TimersDue,
}

/// How this thread's own tasks report to its loop.
pub(crate) type EventSender = mpsc::UnboundedSender<Event>;

/// How long root contexts that deferred their shutdown (`proxy_on_done`
/// false) have to call `proxy_done` before the thread stops anyway.
const ROOT_DONE_GRACE: Duration = Duration::from_secs(2);

/// The owner of one thread's VMs, pools, timers and pending calls.
pub(crate) struct ThreadLoop {
    vms: RefCell<WasmThread>,
    /// Handle of each plugin of this thread, in plan order.
    handles: Vec<PluginHandle>,
    timers: RefCell<Timers>,
    timers_changed: Notify,
    calls: RefCell<PendingCalls>,
    streams: RefCell<Streams>,
    upstreams: Rc<Upstreams>,
    events: EventSender,
    /// Taken by [`ThreadLoop::run`].
    event_receiver: RefCell<Option<mpsc::UnboundedReceiver<Event>>>,
    /// Where this thread reports its plugins' health, for the admin endpoint.
    health: HealthBoard,
    /// Set when the thread starts shutting down: listeners stop accepting.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl ThreadLoop {
    /// VMs for `plugins`, started: root contexts created and configured.
    pub(crate) fn start(
        host: Arc<Host>,
        inbox: Inbox,
        plugins: &[Arc<Plugin>],
        clusters: &Clusters,
        health: HealthBoard,
    ) -> Result<Rc<ThreadLoop>, StartError> {
        let mut vms = WasmThread::new(host, Arc::new(ChannelMailbox(inbox)));
        let handles = plugins.iter().map(|p| vms.add_plugin(p.clone())).collect();
        vms.start()?;
        let (events, event_receiver) = mpsc::unbounded_channel();
        let upstreams = Rc::new(Upstreams::new(clusters));
        let thread = Rc::new(ThreadLoop {
            vms: RefCell::new(vms),
            handles,
            timers: RefCell::default(),
            timers_changed: Notify::new(),
            calls: RefCell::new(PendingCalls::new(upstreams.clone(), events.clone())),
            streams: RefCell::default(),
            upstreams,
            events,
            event_receiver: RefCell::new(Some(event_receiver)),
            health,
            stopping: tokio::sync::watch::Sender::new(false),
        });
        thread.dispatch_effects();
        thread.report_health();
        Ok(thread)
    }

    /// The handle of plugin `index` (an index into the plan's plugin list).
    pub(crate) fn handle(&self, index: usize) -> PluginHandle {
        self.handles[index]
    }

    /// This thread's connection pools.
    pub(crate) fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// This thread's connection pools, for a task that outlives a borrow.
    pub(crate) fn upstreams_handle(&self) -> Rc<Upstreams> {
        self.upstreams.clone()
    }

    /// Runs `f` on the VMs, then hands what the plugins asked for to the
    /// parts of the loop that carry it out. The only way into the VMs; never
    /// called from inside a callback (host functions only record requests).
    pub(crate) fn wasm<R>(&self, f: impl FnOnce(&mut WasmThread) -> R) -> R {
        let result = {
            let mut vms = self.vms.try_borrow_mut().expect("re-entered the VMs of this thread");
            f(&mut vms)
        };
        self.dispatch_effects();
        result
    }

    /// Sends every signal for a stream context to `sink` until
    /// [`ThreadLoop::unsubscribe`]: a TCP connection may be resumed or
    /// closed by its plugins at any time.
    pub(crate) fn subscribe(&self, instance: InstanceId, context_id: u32, sink: SignalSink) {
        self.streams.borrow_mut().subscribe(instance, context_id, sink);
    }

    /// Stops sending signals for a stream context.
    pub(crate) fn unsubscribe(&self, instance: InstanceId, context_id: u32) {
        self.streams.borrow_mut().unsubscribe(instance, context_id);
    }

    /// Resolves once the thread starts shutting down (listeners stop accepting).
    pub(crate) async fn stopping(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|&stopping| stopping).await;
    }

    /// Calls and streams the plugins of this thread have open.
    #[allow(dead_code)]
    pub(crate) fn open_calls(&self) -> usize {
        self.calls.borrow().open()
    }

    /// Hands what the last callbacks asked for to its owner: timers,
    /// signals to paused streams, calls to send or stop, restarts.
    fn dispatch_effects(&self) {
        let effects = self.vms.borrow_mut().take_effects();
        if effects.is_empty() {
            return;
        }
        let retired = effects.retired;
        let health_changed = !retired.is_empty() || effects.code_changed;
        if !effects.ticks.is_empty() || !effects.restarts.is_empty() || !retired.is_empty() {
            let mut timers = self.timers.borrow_mut();
            timers.apply(effects.ticks);
            for at in effects.restarts {
                timers.restart_at(at);
            }
            for &instance in &retired {
                timers.retire(instance);
            }
            self.timers_changed.notify_one();
        }
        let mut streams = self.streams.borrow_mut();
        for signal in effects.stream_signals {
            streams.signal(signal);
        }
        // Streams of a discarded instance that no signal reached (a TCP
        // connection paused before its upstream) learn it now.
        for &instance in &retired {
            streams.retire(instance);
        }
        drop(streams);
        // Calls start before cancellations apply: a call made and cancelled
        // in the same turn (by a stream that ended) is stopped.
        let mut calls = self.calls.borrow_mut();
        for call in effects.http_calls {
            calls.start_http(call);
        }
        for command in effects.grpc {
            calls.grpc(command);
        }
        for cancelled in effects.cancelled {
            calls.cancel(cancelled);
        }
        drop(calls);
        if health_changed {
            self.report_health();
        }
    }

    /// Publishes the health of this thread's plugins.
    fn report_health(&self) {
        let vms = self.vms.borrow();
        self.health.update(vms.plugins());
    }

    /// Runs the loop until [`ThreadMessage::Shutdown`] (or until every
    /// sender is gone), then shuts the root contexts down, going on with
    /// timers and call responses while some defer their end.
    pub(crate) async fn run(self: Rc<Self>, mut inbox: mpsc::UnboundedReceiver<ThreadMessage>) {
        let mut events = self.event_receiver.borrow_mut().take().expect("the loop runs once");
        let mut messages = Vec::with_capacity(256);
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let next_timer = self.timers.borrow().next_due();
            let grace = async {
                match shutdown_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                received = inbox.recv_many(&mut messages, 256), if shutdown_deadline.is_none() => {
                    if received == 0 {
                        Event::Message(ThreadMessage::Shutdown)
                    } else {
                        self.deliver_messages(&mut messages);
                        continue;
                    }
                }
                Some(event) = events.recv() => event,
                () = sleep_until(next_timer) => Event::TimersDue,
                () = self.timers_changed.notified() => continue,
                () = grace => {
                    let left = self.wasm(|vms| vms.pending_shutdown());
                    tracing::warn!(target: "wasm", "{left} root context(s) did not call proxy_done within {ROOT_DONE_GRACE:?} of shutdown");
                    return;
                }
            };
            if let Event::Message(ThreadMessage::Shutdown) = event {
                // No new connections while root contexts finish.
                self.stopping.send_replace(true);
                if self.wasm(WasmThread::begin_shutdown) == 0 {
                    return;
                }
                shutdown_deadline = Some(Instant::now() + ROOT_DONE_GRACE);
                continue;
            }
            self.handle_event(event);
            if shutdown_deadline.is_some() && self.wasm(|vms| vms.pending_shutdown()) == 0 {
                return;
            }
        }
    }

    /// Messages from other threads, in one turn of the VMs; a shutdown
    /// among them is handled after the others.
    fn deliver_messages(&self, messages: &mut Vec<ThreadMessage>) {
        let mut shutdown = false;
        self.wasm(|vms| {
            for message in messages.drain(..) {
                match message {
                    ThreadMessage::QueueReady(notices) => {
                        for notice in notices {
                            vms.on_queue_ready(notice);
                        }
                    }
                    ThreadMessage::Drain => {
                        self.stopping.send_replace(true);
                    }
                    ThreadMessage::Shutdown => shutdown = true,
                }
            }
        });
        if shutdown {
            let _ = self.events.send(Event::Message(ThreadMessage::Shutdown));
        }
    }

    /// The one place events reach the plugins.
    fn handle_event(&self, event: Event) {
        match event {
            Event::Message(ThreadMessage::QueueReady(notices)) => self.wasm(|vms| {
                for notice in notices {
                    vms.on_queue_ready(notice);
                }
            }),
            Event::Message(ThreadMessage::Shutdown | ThreadMessage::Drain) => {}
            Event::HttpCallDone { instance, context_id, token, result } => {
                // A call cancelled meanwhile (its stream ended) is not delivered.
                if !self.calls.borrow_mut().http_done(instance, token) {
                    return;
                }
                let (response, failure) = match result {
                    Ok(response) => (Some(response), String::new()),
                    Err(failure) => (None, failure),
                };
                self.wasm(|vms| vms.on_http_call_response(instance, context_id, token, response, &failure));
            }
            Event::Grpc { key: (instance, token), context_id, event } => {
                self.wasm(|vms| vms.on_grpc_event(instance, context_id, token, event));
            }
            Event::GrpcEnded(key) => self.calls.borrow_mut().grpc_ended(key),
            Event::TimersDue => {
                let now = Instant::now();
                let due = self.timers.borrow_mut().take_due(now);
                self.wasm(|vms| {
                    if due.restart {
                        vms.restart_due(now.into_std());
                    }
                    for (instance, context_id) in due.ticks {
                        vms.on_tick(instance, context_id);
                    }
                });
                if due.restart {
                    self.report_health();
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
