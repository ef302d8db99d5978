//! The VMs of one thread: one instance per module, created at start-up,
//! replaced after a failure as its plugins' policy says, and every call
//! into them.
//!
//! A failure fails only the callback that failed: the instance is discarded
//! (its memory may be corrupt), streams parked in it learn that it failed,
//! and what happens next is decided in one place, [`crate::failure`]: a new
//! instance after a backoff, or the plugin stays failed. Every event the
//! embedder delivers names the instance it is for ([`InstanceId`]); events
//! for an instance that was discarded are dropped and counted.
//!
//! With tiered compilation ([`crate::Compilation::Tiered`]) an instance
//! running baseline code is replaced once its module's optimised code is
//! ready: the next stream (or root context event) starts a new instance on
//! it, and the old one *retires*: it keeps the streams it has, and the
//! events addressed to it, until its last stream ends; then its root
//! contexts are ended and it is dropped.

use std::sync::Arc;
use std::time::Instant;

use crate::compiler::Tier;
use crate::error::{PluginFailure, StartError};
use crate::failure::{FailState, FailurePolicy, Health, PluginStats};
use crate::grpc::{GrpcCommand, GrpcEvent};
use crate::host::Host;
use crate::limits::Limits;
use crate::mailbox::{InstanceId, QueueReady, ThreadMailbox};
use crate::module::PluginModule;
use crate::plugin::Plugin;
use crate::state::TickRequest;
use crate::stream::{Cancelled, HttpCallRequest, HttpCallResponse, SharedStream, StreamAction, StreamSignal, Verdict};
use crate::vm::{CallError, StreamCallback, Vm};

/// A plugin added to a [`WasmThread`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginHandle {
    slot: usize,
    plugin: usize,
}

/// A stream context of one plugin, in one instance of its VM.
#[derive(Debug)]
pub struct StreamContext {
    plugin: PluginHandle,
    id: u32,
    instance: InstanceId,
}

impl StreamContext {
    /// The plugin this context belongs to.
    pub fn plugin(&self) -> PluginHandle {
        self.plugin
    }

    /// The context id the plugin sees.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The VM instance the context lives in.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }
}

/// What the VMs of a thread ask of their embedder, collected after each call.
#[derive(Debug, Default)]
pub struct Effects {
    /// Timers to arm, change or stop.
    pub ticks: Vec<TickChange>,
    /// Paused streams to resume, answer or close.
    pub stream_signals: Vec<StreamSignal>,
    /// HTTP calls to send; report each with [`WasmThread::on_http_call_response`].
    pub http_calls: Vec<HttpCallRequest>,
    /// gRPC calls and streams to open, feed, cancel or close; report what
    /// happens on them with [`WasmThread::on_grpc_event`].
    pub grpc: Vec<GrpcCommand>,
    /// Calls nobody waits for any more (their stream ended): stop them.
    pub cancelled: Vec<Cancelled>,
    /// Instances discarded: stop their timers and every call they made.
    pub retired: Vec<InstanceId>,
    /// Call [`WasmThread::restart_due`] at (or after) each of these times.
    pub restarts: Vec<Instant>,
    /// A VM moved to optimised code: what [`WasmThread::plugins`] reports changed.
    pub code_changed: bool,
}

impl Effects {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
            && self.stream_signals.is_empty()
            && self.http_calls.is_empty()
            && self.grpc.is_empty()
            && self.cancelled.is_empty()
            && self.retired.is_empty()
            && self.restarts.is_empty()
            && !self.code_changed
    }
}

/// A tick period change for the embedder's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickChange {
    /// The VM instance of the root context.
    pub instance: InstanceId,
    /// Root context and period (0 = stop).
    pub request: TickRequest,
}

struct VmSlot {
    module: Arc<PluginModule>,
    plugins: Vec<Arc<Plugin>>,
    /// Root context id of each plugin in the current instance.
    root_ids: Vec<u32>,
    vm: Option<Vm>,
    /// Bumped each time the instance is discarded or replaced.
    generation: u32,
    fail: FailState,
    /// Earlier instances finishing their streams (tiered compilation).
    retiring: Vec<Retiring>,
    /// An instance on the optimised code failed to start: stay on baseline.
    tier_up_failed: bool,
}

/// An instance replaced while it had streams: it serves them, and the
/// events addressed to it, until the last one ends.
struct Retiring {
    generation: u32,
    vm: Vm,
    root_ids: Vec<u32>,
}

impl VmSlot {
    fn instance(&self) -> InstanceId {
        InstanceId { vm_key: self.module.key(), generation: self.generation }
    }

    /// Instance `generation`: the live one or one retiring.
    fn vm_mut(&mut self, generation: u32) -> Option<&mut Vm> {
        if generation == self.generation {
            return self.vm.as_mut();
        }
        self.retiring.iter_mut().find(|r| r.generation == generation).map(|r| &mut r.vm)
    }

    /// The root context ids of instance `generation`.
    fn root_ids(&self, generation: u32) -> &[u32] {
        if generation == self.generation {
            return &self.root_ids;
        }
        self.retiring.iter().find(|r| r.generation == generation).map_or(&[], |r| &r.root_ids)
    }

    /// Whether the live instance runs baseline code and optimised code is ready.
    fn tier_up_due(&self) -> bool {
        !self.tier_up_failed
            && self.vm.as_ref().is_some_and(|vm| vm.tier == Tier::Baseline)
            && self.module.is_optimized()
    }

    /// What a failure means for this VM: its plugins share it, so it is
    /// restarted if any of them wants that (with the first one's backoff).
    fn policy(&self) -> FailurePolicy {
        let reload = self.plugins.iter().map(|p| p.failure_policy).find(|p| matches!(p, FailurePolicy::FailReload(_)));
        reload.unwrap_or(self.plugins[0].failure_policy)
    }

    /// The limits of the instance: plugins that share a VM share its
    /// limits, the most generous of theirs.
    fn limits(&self) -> Limits {
        let mut limits = self.plugins[0].limits;
        for plugin in &self.plugins[1..] {
            let l = plugin.limits;
            limits.memory_bytes = limits.memory_bytes.max(l.memory_bytes);
            limits.callback_deadline = limits.callback_deadline.zip(l.callback_deadline).map(|(a, b)| a.max(b));
            limits.start_deadline = limits.start_deadline.zip(l.start_deadline).map(|(a, b)| a.max(b));
        }
        limits
    }
}

/// All VM instances of one thread. Not `Send`: it stays on its thread.
pub struct WasmThread {
    host: Arc<Host>,
    mailbox: Arc<dyn ThreadMailbox>,
    slots: Vec<VmSlot>,
    effects: Effects,
    /// Set by [`WasmThread::begin_shutdown`]: no new streams, no restarts.
    shutting_down: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl WasmThread {
    /// An empty set of VMs whose queue notifications arrive through `mailbox`.
    pub fn new(host: Arc<Host>, mailbox: Arc<dyn ThreadMailbox>) -> Self {
        WasmThread {
            host,
            mailbox,
            slots: Vec::new(),
            effects: Effects::default(),
            shutting_down: false,
            _not_send: Default::default(),
        }
    }

    /// Adds a plugin; plugins of the same module share one VM here, each
    /// with its own root context, in the order they were added.
    pub fn add_plugin(&mut self, plugin: Arc<Plugin>) -> PluginHandle {
        let key = plugin.module.key();
        let slot = match self.slots.iter().position(|s| s.module.key() == key) {
            Some(slot) => slot,
            None => {
                self.slots.push(VmSlot {
                    module: plugin.module.clone(),
                    plugins: Vec::new(),
                    root_ids: Vec::new(),
                    vm: None,
                    generation: 0,
                    fail: FailState::new(Instant::now()),
                    retiring: Vec::new(),
                    tier_up_failed: false,
                });
                self.slots.len() - 1
            }
        };
        self.slots[slot].plugins.push(plugin);
        PluginHandle { slot, plugin: self.slots[slot].plugins.len() - 1 }
    }

    /// Creates every VM and starts every plugin's root context, each start
    /// function under its plugin's start deadline.
    ///
    /// # Errors
    /// The first plugin whose VM or `proxy_on_vm_start`/`proxy_on_configure`
    /// failed.
    pub fn start(&mut self) -> Result<(), StartError> {
        for slot in 0..self.slots.len() {
            if self.slots[slot].vm.is_none() {
                self.instantiate(slot).map_err(|(plugin, e)| StartError {
                    plugin: plugin.display_name().to_owned(),
                    vm_id: plugin.module.vm_id().to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// The plugin behind `handle`.
    pub fn plugin(&self, handle: PluginHandle) -> &Arc<Plugin> {
        &self.slots[handle.slot].plugins[handle.plugin]
    }

    /// The current instance of the plugin's VM on this thread.
    pub fn instance(&self, handle: PluginHandle) -> InstanceId {
        self.slots[handle.slot].instance()
    }

    /// Where the VM of the plugin behind `handle` stands on this thread.
    pub fn health(&self, handle: PluginHandle) -> Health {
        self.slots[handle.slot].fail.health
    }

    /// Every plugin of this thread with the health of its VM and which
    /// compiler made the code of its live instance (`None`: none is live).
    pub fn plugins(&self) -> impl Iterator<Item = (&Arc<Plugin>, Health, Option<Tier>)> {
        self.slots.iter().flat_map(|slot| {
            let tier = slot.vm.as_ref().map(|vm| vm.tier);
            slot.plugins.iter().map(move |p| (p, slot.fail.health, tier))
        })
    }

    /// Creates a stream context for a new HTTP stream.
    ///
    /// # Errors
    /// The plugin's VM is down (failed, restarting or held failed), or
    /// `proxy_on_context_create` failed.
    pub fn create_http_stream(&mut self, plugin: PluginHandle) -> Result<StreamContext, PluginFailure> {
        if self.shutting_down {
            return Err(failure(self.plugin(plugin), "the thread is shutting down".into()));
        }
        if self.slots[plugin.slot].tier_up_due() {
            self.tier_up(plugin.slot);
        }
        self.ensure_vm(plugin)?;
        let slot = &mut self.slots[plugin.slot];
        let root_id = slot.root_ids[plugin.plugin];
        let instance = slot.instance();
        let vm = slot.vm.as_mut().expect("ensured above");
        let result = vm.create_stream_context(root_id);
        let id = self.after_call(plugin, instance.generation, result)?;
        Ok(StreamContext { plugin, id, instance })
    }

    /// Creates a stream context for a new TCP connection and runs
    /// `proxy_on_new_connection` on it.
    ///
    /// # Errors
    /// As [`WasmThread::create_http_stream`].
    pub fn create_tcp_stream(
        &mut self,
        plugin: PluginHandle,
        connection: &SharedStream,
    ) -> Result<(StreamContext, Verdict), PluginFailure> {
        let context = self.create_http_stream(plugin)?;
        let verdict = self.stream_callback(&context, StreamCallback::NewConnection, connection, false)?;
        Ok((context, verdict))
    }

    /// A stream callback (headers, body, trailers, TCP data) with `stream`
    /// lent to the plugin, and what the plugin decided.
    ///
    /// # Errors
    /// The plugin failed, or its VM was replaced since the context was created.
    pub fn stream_callback(
        &mut self,
        context: &StreamContext,
        callback: StreamCallback,
        stream: &SharedStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        let vm = self.live_vm(context)?;
        let result = vm.stream_callback(callback, context.id, stream, end_of_stream);
        self.after_call(context.plugin, context.instance.generation, result)
    }

    /// `proxy_on_downstream_connection_close` or (`upstream`)
    /// `proxy_on_upstream_connection_close`.
    ///
    /// # Errors
    /// As [`WasmThread::stream_callback`].
    pub fn on_connection_close(
        &mut self,
        context: &StreamContext,
        connection: &SharedStream,
        upstream: bool,
        peer: ferry_abi::PeerType,
    ) -> Result<(), PluginFailure> {
        let vm = self.live_vm(context)?;
        let result = vm.on_connection_close(context.id, connection, upstream, peer);
        self.after_call(context.plugin, context.instance.generation, result)
    }

    /// Ends a network filter's context: `proxy_on_done`, `proxy_on_log`,
    /// `proxy_on_delete` (Envoy's order for TCP). A failure here is logged.
    pub fn finish_tcp_stream(&mut self, context: StreamContext, connection: &SharedStream) {
        let Ok(vm) = self.live_vm(&context) else { return };
        let result = vm.finish_tcp_stream(context.id, connection);
        let _ = self.after_call(context.plugin, context.instance.generation, result);
    }

    /// Ends a stream context: `proxy_on_log`, `proxy_on_done`,
    /// `proxy_on_delete`; the HTTP and gRPC calls it made are cancelled. A
    /// failure here is logged; the response is gone.
    pub fn finish_http_stream(&mut self, context: StreamContext, stream: &SharedStream) {
        let Ok(vm) = self.live_vm(&context) else { return };
        let result = vm.finish_http_stream(context.id, stream);
        let _ = self.after_call(context.plugin, context.instance.generation, result);
    }

    /// Envoy's Wasm access logger: `proxy_on_log` on the plugin's root
    /// context, with `stream` (its headers and properties) readable. A
    /// failure is the plugin's own (its policy applies); the stream has
    /// ended already. While its VM is down, nothing is logged.
    pub fn log_on_root(&mut self, plugin: PluginHandle, stream: &SharedStream) {
        let slot = &mut self.slots[plugin.slot];
        let generation = slot.generation;
        let Some(&root_id) = slot.root_ids(generation).get(plugin.plugin) else { return };
        let Some(vm) = slot.vm_mut(generation) else { return };
        let result = vm.call_log(root_id, stream);
        let _ = self.after_call(plugin, generation, result);
    }

    /// Delivers a queue notification posted to this thread. Dropped (and
    /// counted) if the instance it is for was discarded: the item stays in
    /// the queue, and the next instance is told about it when it registers
    /// the queue again.
    pub fn on_queue_ready(&mut self, notice: QueueReady) {
        self.root_call(notice.instance, notice.context_id, |vm| vm.on_queue_ready(notice.context_id, notice.queue_id));
    }

    /// Runs `proxy_on_tick` on a root context whose timer fired.
    pub fn on_tick(&mut self, instance: InstanceId, context_id: u32) {
        self.root_call(instance, context_id, |vm| vm.on_tick(context_id));
    }

    /// Delivers the response to an HTTP call (`None`: the call failed, and
    /// `failure` says why) to the root context that made it. Dropped if the
    /// instance was replaced or the call cancelled meanwhile.
    pub fn on_http_call_response(
        &mut self,
        instance: InstanceId,
        context_id: u32,
        token: u32,
        response: Option<HttpCallResponse>,
        failure: &str,
    ) {
        self.root_call(instance, context_id, |vm| vm.on_http_call_response(context_id, token, response, failure));
    }

    /// Delivers an event of gRPC call or stream `token` to the root context
    /// that opened it. Dropped if the instance, the context or the token is
    /// gone (a cancelled call hears nothing more).
    pub fn on_grpc_event(&mut self, instance: InstanceId, context_id: u32, token: u32, event: GrpcEvent) {
        self.root_call(instance, context_id, |vm| vm.on_grpc_event(context_id, token, event));
    }

    /// Starts the instances whose restart is due at `now` (see
    /// [`Effects::restarts`]).
    pub fn restart_due(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        for slot in 0..self.slots.len() {
            if let Health::Restarting { at } = self.slots[slot].fail.health
                && at <= now
            {
                let _ = self.restart(slot);
            }
        }
    }

    /// What the VMs asked for since the last call: timers, stream signals,
    /// HTTP calls.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// Starts shutting down every root context of this thread (Envoy's
    /// order): `proxy_on_done` on each, `proxy_on_delete` on those that are
    /// done. Returns how many deferred their end until they call
    /// `proxy_done`; keep running callbacks (ticks, call responses) until
    /// [`WasmThread::pending_shutdown`] is 0.
    pub fn begin_shutdown(&mut self) -> usize {
        if std::mem::replace(&mut self.shutting_down, true) {
            return self.pending_shutdown();
        }
        let mut pending = 0;
        for slot in 0..self.slots.len() {
            let generation = self.slots[slot].generation;
            let Some(vm) = self.slots[slot].vm.as_mut() else { continue };
            let result = vm.shutdown_roots();
            // A failure is logged and the instance is gone: nothing waits in it.
            if let Ok(waiting) = self.after_call(PluginHandle { slot, plugin: 0 }, generation, result) {
                pending += waiting;
            }
        }
        pending
    }

    /// Root contexts still waiting to call `proxy_done`.
    pub fn pending_shutdown(&self) -> usize {
        self.slots.iter().filter_map(|s| s.vm.as_ref()).map(Vm::pending_done).sum()
    }

    /// Keeps a stream stopped in `callback` in its plugin's VM, where
    /// callbacks acting on its context (an HTTP call's response, a tick) can
    /// read and change what that callback could, and resume, answer or
    /// close it. `false` if the plugin's VM is gone (the stream cannot wait
    /// for it).
    #[must_use = "a stream not parked waits for nothing"]
    pub fn park(&mut self, context: &StreamContext, stream: &SharedStream, callback: StreamCallback) -> bool {
        match self.live_vm(context) {
            Ok(vm) => {
                vm.park(context.id, stream.clone(), callback.phase());
                true
            }
            Err(_) => false,
        }
    }

    /// Forgets a parked stream: its filter goes on.
    pub fn unpark(&mut self, context: &StreamContext) {
        if let Ok(vm) = self.live_vm(context) {
            vm.unpark(context.id);
        }
    }

    /// Runs `call` on context `context_id` of `instance`, if that instance
    /// is still live or retiring; counts the event as stale otherwise.
    fn root_call(
        &mut self,
        instance: InstanceId,
        context_id: u32,
        call: impl FnOnce(&mut Vm) -> Result<(), CallError>,
    ) {
        let Some(slot) = self.slots.iter().position(|s| s.module.key() == instance.vm_key) else { return };
        let target = &mut self.slots[slot];
        let plugin = target.root_ids(instance.generation).iter().position(|&id| id == context_id).unwrap_or(0);
        match target.vm_mut(instance.generation) {
            Some(vm) => {
                let result = call(vm);
                let _ = self.after_call(PluginHandle { slot, plugin }, instance.generation, result);
            }
            None => PluginStats::bump(&target.plugins[plugin].stats.stale_events),
        }
        if self.slots[slot].tier_up_due() && !self.shutting_down {
            self.tier_up(slot);
        }
    }

    /// The instance a stream context lives in: the live one or one retiring.
    fn live_vm(&mut self, context: &StreamContext) -> Result<&mut Vm, PluginFailure> {
        let slot = &mut self.slots[context.plugin.slot];
        if slot.vm_mut(context.instance.generation).is_none() {
            let plugin = &slot.plugins[context.plugin.plugin];
            return Err(failure(plugin, "its VM failed and was replaced during this stream".into()));
        }
        Ok(slot.vm_mut(context.instance.generation).expect("checked above"))
    }

    /// Collects what a call into instance `generation` asked for, and turns
    /// a failure into a [`PluginFailure`] that discards the instance.
    fn after_call<T>(
        &mut self,
        handle: PluginHandle,
        generation: u32,
        result: Result<T, CallError>,
    ) -> Result<T, PluginFailure> {
        if generation != self.slots[handle.slot].generation {
            return self.after_retiring_call(handle, generation, result);
        }
        let slot = &mut self.slots[handle.slot];
        // Root contexts that called proxy_done are deleted once the callback returned.
        let result = match (result, slot.vm.as_mut()) {
            (Ok(value), Some(vm)) => vm.delete_done_roots().map(|()| value),
            (result, _) => result,
        };
        let instance = slot.instance();
        match (&result, slot.vm.as_mut()) {
            (Ok(_), Some(vm)) if vm.has_requests() => collect(&mut self.effects, instance, vm),
            // What a failed callback asked for dies with it: no call is
            // started, no stream resumed.
            (Err(_), Some(vm)) => drop(vm.take_requests()),
            _ => {}
        }
        result.map_err(|error| self.discard_vm(handle, &error))
    }

    /// Discards an instance after a failure and decides, by the plugins'
    /// policy, what comes next.
    fn discard_vm(&mut self, handle: PluginHandle, error: &CallError) -> PluginFailure {
        let now = Instant::now();
        let hold = self.host.shared.hold;
        let slot = &mut self.slots[handle.slot];
        let plugin = slot.plugins[handle.plugin].clone();
        let failure = failure(&plugin, error.to_string());
        PluginStats::bump(&plugin.stats.failures);
        if error.deadline {
            PluginStats::bump(&plugin.stats.deadline_exceeded);
        }
        let instance = slot.instance();
        // Streams waiting on this instance learn that it failed.
        if let Some(mut vm) = slot.vm.take() {
            self.effects.cancelled.extend(vm.open_calls());
            for context_id in vm.take_parked() {
                self.effects.stream_signals.push(StreamSignal { instance, context_id, action: StreamAction::Failed });
            }
        }
        self.effects.retired.push(instance);
        slot.generation += 1;
        let policy = slot.policy();
        // A thread that is shutting down starts no new instance.
        let policy = if self.shutting_down { FailurePolicy::FailClosed } else { policy };
        let next = slot.fail.on_failure(now, policy, hold);
        let what = match next {
            _ if self.shutting_down => "the thread is shutting down: no new one starts".to_owned(),
            Health::Restarting { at } => {
                self.effects.restarts.push(at);
                format!("a new one starts in {:?} ({})", at.saturating_duration_since(now), policy.name())
            }
            Health::HeldFailed => {
                for held in &slot.plugins {
                    PluginStats::bump(&held.stats.held_failed);
                }
                format!(
                    "it failed {} times within {:?}: held failed, its streams get 503 until the configuration changes",
                    hold.failures, hold.window
                )
            }
            Health::Failed if policy.fails_open() => {
                "failed for good (FAIL_OPEN): its streams skip it until the configuration changes".to_owned()
            }
            _ => "failed for good (FAIL_CLOSED): its streams get 503 until the configuration changes".to_owned(),
        };
        tracing::error!(target: "wasm", "{failure}; the VM instance on this thread is discarded; {what}");
        failure
    }

    /// [`WasmThread::after_call`] for a retiring instance: a failure ends
    /// it (the live instance is not concerned); once its last stream is
    /// done it is ended.
    fn after_retiring_call<T>(
        &mut self,
        handle: PluginHandle,
        generation: u32,
        result: Result<T, CallError>,
    ) -> Result<T, PluginFailure> {
        let slot = &mut self.slots[handle.slot];
        let Some(index) = slot.retiring.iter().position(|r| r.generation == generation) else {
            return result.map_err(|e| failure(&slot.plugins[handle.plugin], e.to_string()));
        };
        let instance = InstanceId { vm_key: slot.module.key(), generation };
        let vm = &mut slot.retiring[index].vm;
        let result = match result {
            Ok(value) => vm.delete_done_roots().map(|()| value),
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => {
                collect(&mut self.effects, instance, vm);
                if !vm.has_stream_contexts() {
                    self.end_retiring(handle.slot, index);
                }
                Ok(value)
            }
            Err(error) => {
                let mut retiring = slot.retiring.remove(index);
                let plugin = slot.plugins[handle.plugin].clone();
                PluginStats::bump(&plugin.stats.failures);
                if error.deadline {
                    PluginStats::bump(&plugin.stats.deadline_exceeded);
                }
                drop(retiring.vm.take_requests());
                self.effects.cancelled.extend(retiring.vm.open_calls());
                for context_id in retiring.vm.take_parked() {
                    self.effects.stream_signals.push(StreamSignal {
                        instance,
                        context_id,
                        action: StreamAction::Failed,
                    });
                }
                self.effects.retired.push(instance);
                let failure = failure(&plugin, error.to_string());
                tracing::error!(
                    target: "wasm",
                    "{failure}; the retiring VM instance (baseline code) on this thread is discarded"
                );
                Err(failure)
            }
        }
    }

    /// Moves the slot's live instance (baseline code) to the optimised
    /// code: a new instance takes new streams and events, the old one
    /// retires. If the new one fails to start, the old one stays live.
    fn tier_up(&mut self, slot_index: usize) {
        let slot = &mut self.slots[slot_index];
        let Some(old) = slot.vm.take() else { return };
        let old_generation = slot.generation;
        let old_roots = std::mem::take(&mut slot.root_ids);
        slot.generation += 1;
        match self.instantiate(slot_index) {
            Ok(()) => {
                let slot = &mut self.slots[slot_index];
                let streams = old.has_stream_contexts();
                slot.retiring.push(Retiring { generation: old_generation, vm: old, root_ids: old_roots });
                tracing::info!(
                    target: "wasm",
                    "plugin '{}' (vm_id '{}'): VM on this thread moved to optimised code{}",
                    slot.plugins[0].display_name(),
                    slot.module.vm_id(),
                    if streams { "; the baseline instance finishes its streams" } else { "" }
                );
                if !streams {
                    let index = slot.retiring.len() - 1;
                    self.end_retiring(slot_index, index);
                }
                self.effects.code_changed = true;
            }
            Err((plugin, error)) => {
                let slot = &mut self.slots[slot_index];
                slot.vm = Some(old);
                slot.root_ids = old_roots;
                slot.generation = old_generation;
                slot.tier_up_failed = true;
                tracing::warn!(
                    target: "wasm",
                    "plugin '{}' (vm_id '{}'): did not start on optimised code ({error}); staying on baseline code",
                    plugin.display_name(),
                    slot.module.vm_id()
                );
            }
        }
    }

    /// Ends a retiring instance that has no stream left: its root contexts
    /// end as at shutdown (one that defers its end is not waited for), and
    /// what it still had open stops.
    fn end_retiring(&mut self, slot_index: usize, index: usize) {
        let slot = &mut self.slots[slot_index];
        let Retiring { generation, mut vm, .. } = slot.retiring.remove(index);
        let instance = InstanceId { vm_key: slot.module.key(), generation };
        if let Err(error) = vm.shutdown_roots() {
            tracing::debug!(target: "wasm", "retiring VM instance of '{}': {error}", slot.module.vm_id());
        }
        drop(vm.take_requests());
        self.effects.cancelled.extend(vm.open_calls());
        self.effects.retired.push(instance);
    }

    /// Makes sure the plugin's VM is up: starts it if its restart is due.
    fn ensure_vm(&mut self, handle: PluginHandle) -> Result<(), PluginFailure> {
        let slot = &self.slots[handle.slot];
        if slot.vm.is_some() {
            return Ok(());
        }
        let plugin = &slot.plugins[handle.plugin];
        let now = Instant::now();
        match slot.fail.health {
            Health::Restarting { at } if at <= now => {
                // A failed restart is reported as the asking plugin's
                // failure, with its own policy (whichever plugin failed).
                let asking = plugin.clone();
                self.restart(handle.slot).map_err(|f| failure(&asking, f.reason))
            }
            Health::Restarting { at } => {
                PluginStats::bump(&plugin.stats.reload_backoff);
                let wait = at.saturating_duration_since(now);
                Err(failure(plugin, format!("its VM failed; a new instance starts in {wait:?}")))
            }
            Health::HeldFailed => Err(failure(plugin, "held failed after failing too often".into())),
            Health::Failed | Health::Running => Err(failure(plugin, "its VM failed".into())),
        }
    }

    /// Replaces a failed instance with a new one.
    fn restart(&mut self, slot_index: usize) -> Result<(), PluginFailure> {
        // The backoff counts from each attempt, so failing restarts are spaced too.
        self.slots[slot_index].fail.on_attempt(Instant::now());
        match self.instantiate(slot_index) {
            Ok(()) => {
                let slot = &self.slots[slot_index];
                for plugin in &slot.plugins {
                    PluginStats::bump(&plugin.stats.reload_success);
                }
                tracing::info!(
                    target: "wasm",
                    "plugin '{}' (vm_id '{}'): a new VM instance started on this thread",
                    slot.plugins[0].display_name(),
                    slot.module.vm_id()
                );
                Ok(())
            }
            Err((plugin, error)) => {
                PluginStats::bump(&plugin.stats.reload_failure);
                let index = self.slots[slot_index].plugins.iter().position(|p| Arc::ptr_eq(p, &plugin)).unwrap_or(0);
                Err(self.discard_vm(PluginHandle { slot: slot_index, plugin: index }, &error))
            }
        }
    }

    /// Creates the slot's VM and starts each plugin's root context in order.
    fn instantiate(&mut self, slot_index: usize) -> Result<(), (Arc<Plugin>, CallError)> {
        let slot = &mut self.slots[slot_index];
        let first = slot.plugins[0].clone();
        let instance = slot.instance();
        let vm = Vm::instantiate(&slot.module, instance, slot.limits(), self.host.shared.clone(), self.mailbox.clone())
            .map_err(|e| (first, e))?;
        slot.vm = Some(vm);
        let mut root_ids = Vec::with_capacity(slot.plugins.len());
        for plugin in slot.plugins.clone() {
            let vm = self.slots[slot_index].vm.as_mut().expect("set above");
            match vm.start_root_context(&plugin) {
                Ok(id) => root_ids.push(id),
                Err(e) => {
                    // What the failed start asked for dies with it.
                    self.slots[slot_index].vm = None;
                    return Err((plugin, e));
                }
            }
        }
        let slot = &mut self.slots[slot_index];
        slot.root_ids = root_ids;
        slot.fail.on_started(Instant::now());
        let instance = slot.instance();
        if let Some(vm) = slot.vm.as_mut() {
            collect(&mut self.effects, instance, vm);
        }
        Ok(())
    }
}

/// Moves what a VM asked for into the thread's effects.
fn collect(effects: &mut Effects, instance: InstanceId, vm: &mut Vm) {
    let requests = vm.take_requests();
    effects.ticks.extend(requests.ticks.into_iter().map(|request| TickChange { instance, request }));
    effects.grpc.extend(requests.grpc);
    effects.stream_signals.extend(requests.stream_actions.into_iter().map(|(context_id, action)| StreamSignal {
        instance,
        context_id,
        action,
    }));
    effects.http_calls.extend(requests.http_calls);
    effects.cancelled.extend(requests.cancelled);
}

fn failure(plugin: &Plugin, reason: String) -> PluginFailure {
    PluginFailure {
        plugin: plugin.display_name().to_owned(),
        vm_id: plugin.module.vm_id().to_owned(),
        reason,
        fail_open: plugin.failure_policy.fails_open(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostOptions, Limits, module_spec};
    use bytes::Bytes;

    struct NoMailbox;
    impl ThreadMailbox for NoMailbox {
        fn post_queue_ready(&self, _: QueueReady) {}
    }

    #[test]
    fn context_ids_wrap_around_skipping_zero_and_ids_in_use() {
        let host = Host::new(HostOptions::default()).unwrap();
        let wat = r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
            (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))"#;
        let module = host.load_module(module_spec("vm", wat, "test")).unwrap();
        let mut thread = WasmThread::new(host, Arc::new(NoMailbox));
        let handle =
            thread.add_plugin(Plugin::new("p", "", Bytes::new(), module, FailurePolicy::FailClosed, Limits::default()));
        thread.start().unwrap();
        // Root context 1 is alive; a stream context keeps 2.
        let kept = thread.create_http_stream(handle).unwrap();
        assert_eq!(kept.id(), 2);
        thread.slots[0].vm.as_mut().unwrap().set_last_context_id(u32::MAX - 1);
        let ids: Vec<u32> = (0..2).map(|_| thread.create_http_stream(handle).unwrap().id()).collect();
        assert_eq!(ids, [u32::MAX, 3], "0, 1 and 2 are skipped");
    }
}
