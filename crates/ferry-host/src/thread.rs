//! The VMs of one thread: one instance per module, created at start-up,
//! rebuilt after a failure, and every call into them.
//!
//! A trap fails only the callback that trapped: the instance is discarded
//! (its memory may be corrupt) and the next callback that needs it gets a
//! fresh one, started like the first. Streams that had contexts in the old
//! instance see their plugin as failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{PluginFailure, StartError};
use crate::grpc::{GrpcCommand, GrpcEvent};
use crate::host::Host;
use crate::mailbox::{QueueReady, ThreadMailbox, VmKey};
use crate::module::PluginModule;
use crate::plugin::Plugin;
use crate::state::TickRequest;
use crate::stream::{HttpCallRequest, HttpCallResponse, HttpStream, PausedAt, StreamAction, StreamSignal, Verdict};
use crate::vm::{CallError, Vm};

/// How long a VM that failed to restart stays down before the next try.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

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
    generation: u64,
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
}

impl Effects {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty() && self.stream_signals.is_empty() && self.http_calls.is_empty() && self.grpc.is_empty()
    }
}

/// A tick period change for the embedder's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickChange {
    /// The VM of the root context.
    pub vm_key: VmKey,
    /// Root context and period (0 = stop).
    pub request: TickRequest,
}

struct VmSlot {
    module: Arc<PluginModule>,
    plugins: Vec<Arc<Plugin>>,
    /// Root context id of each plugin in the current instance.
    root_ids: Vec<u32>,
    vm: Option<Vm>,
    /// Bumped each time the instance is discarded.
    generation: u64,
    restart_after: Option<Instant>,
}

/// All VM instances of one thread. Not `Send`: it stays on its thread.
pub struct WasmThread {
    host: Arc<Host>,
    mailbox: Arc<dyn ThreadMailbox>,
    slots: Vec<VmSlot>,
    effects: Effects,
    /// Streams that were parked in a VM when it was discarded, by VM,
    /// context id and generation, until their exchange takes them back.
    orphans: HashMap<(VmKey, u32, u64), HttpStream>,
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
            orphans: HashMap::new(),
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
                    restart_after: None,
                });
                self.slots.len() - 1
            }
        };
        self.slots[slot].plugins.push(plugin);
        PluginHandle { slot, plugin: self.slots[slot].plugins.len() - 1 }
    }

    /// Creates every VM and starts every plugin's root context.
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

    /// Creates a stream context for a new HTTP stream.
    ///
    /// # Errors
    /// The plugin's VM is down and could not be restarted, or it trapped.
    pub fn create_http_stream(&mut self, plugin: PluginHandle) -> Result<StreamContext, PluginFailure> {
        self.create_stream(plugin)
    }

    /// Creates a stream context for a new TCP connection and runs
    /// `proxy_on_new_connection` on it.
    ///
    /// # Errors
    /// As [`WasmThread::create_http_stream`].
    pub fn create_tcp_stream(
        &mut self,
        plugin: PluginHandle,
        connection: &mut HttpStream,
    ) -> Result<(StreamContext, Verdict), PluginFailure> {
        let context = self.create_stream(plugin)?;
        let verdict = self.stream_call(&context, |vm, id| vm.on_new_connection(id, connection))?;
        Ok((context, verdict))
    }

    /// `proxy_on_downstream_data` with `connection.downstream_data`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_downstream_data(
        &mut self,
        context: &StreamContext,
        connection: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_downstream_data(id, connection, end_of_stream))
    }

    /// `proxy_on_upstream_data` with `connection.upstream_data`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_upstream_data(
        &mut self,
        context: &StreamContext,
        connection: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_upstream_data(id, connection, end_of_stream))
    }

    /// `proxy_on_downstream_connection_close` or (`upstream`)
    /// `proxy_on_upstream_connection_close`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_connection_close(
        &mut self,
        context: &StreamContext,
        connection: &mut HttpStream,
        upstream: bool,
        peer: ferry_abi::PeerType,
    ) -> Result<(), PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_connection_close(id, connection, upstream, peer))
    }

    /// Ends a network filter's context: `proxy_on_done`, `proxy_on_log`,
    /// `proxy_on_delete` (Envoy's order for TCP). A failure here is logged.
    pub fn finish_tcp_stream(&mut self, context: StreamContext, connection: &mut HttpStream) {
        let Ok(vm) = self.live_vm(&context) else { return };
        let result = vm.finish_tcp_stream(context.id, connection);
        let _ = self.after_call(context.plugin, result);
    }

    fn create_stream(&mut self, plugin: PluginHandle) -> Result<StreamContext, PluginFailure> {
        self.ensure_vm(plugin)?;
        let slot = &mut self.slots[plugin.slot];
        let root_id = slot.root_ids[plugin.plugin];
        let generation = slot.generation;
        let vm = slot.vm.as_mut().expect("ensured above");
        let result = vm.create_stream_context(root_id);
        let id = self.after_call(plugin, result)?;
        Ok(StreamContext { plugin, id, generation })
    }

    /// `proxy_on_request_headers` for `stream`.
    ///
    /// # Errors
    /// The plugin trapped, or its VM was restarted since the context was created.
    pub fn on_request_headers(
        &mut self,
        context: &StreamContext,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_request_headers(id, stream, end_of_stream))
    }

    /// `proxy_on_response_headers` for `stream`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_response_headers(
        &mut self,
        context: &StreamContext,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_response_headers(id, stream, end_of_stream))
    }

    /// `proxy_on_request_body` with `stream.request_body`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_request_body(
        &mut self,
        context: &StreamContext,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_request_body(id, stream, end_of_stream))
    }

    /// `proxy_on_response_body` with `stream.response_body`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_response_body(
        &mut self,
        context: &StreamContext,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_response_body(id, stream, end_of_stream))
    }

    /// `proxy_on_request_trailers` with `stream.request_trailers`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_request_trailers(
        &mut self,
        context: &StreamContext,
        stream: &mut HttpStream,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_request_trailers(id, stream))
    }

    /// `proxy_on_response_trailers` with `stream.response_trailers`.
    ///
    /// # Errors
    /// As [`WasmThread::on_request_headers`].
    pub fn on_response_trailers(
        &mut self,
        context: &StreamContext,
        stream: &mut HttpStream,
    ) -> Result<Verdict, PluginFailure> {
        self.stream_call(context, |vm, id| vm.on_response_trailers(id, stream))
    }

    /// Ends a stream context: `proxy_on_log`, `proxy_on_done`,
    /// `proxy_on_delete`. A failure here is logged; the response is gone.
    pub fn finish_http_stream(&mut self, context: StreamContext, stream: &mut HttpStream) {
        let Ok(vm) = self.live_vm(&context) else { return };
        let result = vm.finish_http_stream(context.id, stream);
        let _ = self.after_call(context.plugin, result);
    }

    /// Delivers a queue notification posted to this thread. Dropped if the
    /// VM or context is gone; the item stays in the queue.
    pub fn on_queue_ready(&mut self, notice: QueueReady) {
        let Some(handle) = self.root_handle(notice.vm_key, notice.context_id) else { return };
        let Some(vm) = self.slots[handle.slot].vm.as_mut() else { return };
        let result = vm.on_queue_ready(notice.context_id, notice.queue_id);
        let _ = self.after_call(handle, result);
    }

    /// Runs `proxy_on_tick` on a root context whose timer fired.
    pub fn on_tick(&mut self, vm_key: VmKey, context_id: u32) {
        let Some(handle) = self.root_handle(vm_key, context_id) else { return };
        let Some(vm) = self.slots[handle.slot].vm.as_mut() else { return };
        let result = vm.on_tick(context_id);
        let _ = self.after_call(handle, result);
    }

    /// What the VMs asked for since the last call: timers, stream signals,
    /// HTTP calls.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// Delivers the response to an HTTP call (`None`: the call failed, and
    /// `failure` says why) to the root context that made it.
    pub fn on_http_call_response(
        &mut self,
        vm_key: VmKey,
        context_id: u32,
        token: u32,
        response: Option<HttpCallResponse>,
        failure: &str,
    ) {
        let Some(handle) = self.root_handle(vm_key, context_id) else { return };
        let Some(vm) = self.slots[handle.slot].vm.as_mut() else { return };
        let result = vm.on_http_call_response(context_id, token, response, failure);
        let _ = self.after_call(handle, result);
    }

    /// Starts shutting down every root context of this thread (Envoy's
    /// order): `proxy_on_done` on each, `proxy_on_delete` on those that are
    /// done. Returns how many deferred their end until they call
    /// `proxy_done`; keep running callbacks (ticks, call responses) until
    /// [`WasmThread::pending_shutdown`] is 0.
    pub fn begin_shutdown(&mut self) -> usize {
        let mut pending = 0;
        for slot in 0..self.slots.len() {
            let Some(vm) = self.slots[slot].vm.as_mut() else { continue };
            let result = vm.shutdown_roots();
            // A failure is logged and the instance is gone: nothing waits in it.
            if let Ok(waiting) = self.after_call(PluginHandle { slot, plugin: 0 }, result) {
                pending += waiting;
            }
        }
        pending
    }

    /// Root contexts still waiting to call `proxy_done`.
    pub fn pending_shutdown(&self) -> usize {
        self.slots.iter().filter_map(|s| s.vm.as_ref()).map(Vm::pending_done).sum()
    }

    /// Delivers an event of gRPC call or stream `token` to the root context
    /// that opened it. Dropped if the VM, the context or the token is gone
    /// (a cancelled call hears nothing more).
    pub fn on_grpc_event(&mut self, vm_key: VmKey, context_id: u32, token: u32, event: GrpcEvent) {
        let Some(handle) = self.root_handle(vm_key, context_id) else { return };
        let Some(vm) = self.slots[handle.slot].vm.as_mut() else { return };
        let result = vm.on_grpc_event(context_id, token, event);
        let _ = self.after_call(handle, result);
    }

    /// Keeps a paused stream in its plugin's VM, where callbacks acting on
    /// its context (an HTTP call's response, a tick) can read and change it.
    /// Gives the stream back if the plugin's VM is gone.
    #[must_use = "a stream given back was not parked"]
    pub fn park(&mut self, context: &StreamContext, stream: HttpStream, at: PausedAt) -> Option<HttpStream> {
        match self.live_vm(context) {
            Ok(vm) => {
                vm.park(context.id, stream, at.phase());
                None
            }
            Err(_) => Some(stream),
        }
    }

    /// Takes a parked stream back (`None` if its VM was discarded meanwhile).
    pub fn unpark(&mut self, context: &StreamContext) -> Option<HttpStream> {
        match self.live_vm(context) {
            Ok(vm) => vm.unpark(context.id),
            Err(_) => {
                let vm_key = self.slots[context.plugin.slot].module.key();
                self.orphans.remove(&(vm_key, context.id, context.generation))
            }
        }
    }

    /// The plugin whose root context is `context_id` in VM `vm_key`.
    fn root_handle(&self, vm_key: VmKey, context_id: u32) -> Option<PluginHandle> {
        let slot = self.slots.iter().position(|s| s.module.key() == vm_key)?;
        let plugin = self.slots[slot].root_ids.iter().position(|&id| id == context_id)?;
        Some(PluginHandle { slot, plugin })
    }

    /// Runs `call` on the live VM of a stream context, then collects what it
    /// asked for and turns a trap into a failure.
    fn stream_call<T>(
        &mut self,
        context: &StreamContext,
        call: impl FnOnce(&mut Vm, u32) -> Result<T, CallError>,
    ) -> Result<T, PluginFailure> {
        let vm = self.live_vm(context)?;
        let result = call(vm, context.id);
        self.after_call(context.plugin, result)
    }

    fn live_vm(&mut self, context: &StreamContext) -> Result<&mut Vm, PluginFailure> {
        let slot = &mut self.slots[context.plugin.slot];
        match slot.vm.as_mut() {
            Some(vm) if slot.generation == context.generation => Ok(vm),
            _ => {
                let plugin = &slot.plugins[context.plugin.plugin];
                Err(failure(plugin, "its VM failed and was restarted during this stream".into()))
            }
        }
    }

    /// Collects tick changes after a call, and turns a trap into a failure
    /// that discards the instance.
    fn after_call<T>(&mut self, handle: PluginHandle, result: Result<T, CallError>) -> Result<T, PluginFailure> {
        let slot = &mut self.slots[handle.slot];
        // Root contexts that called proxy_done are deleted once the callback returned.
        let result = match (result, slot.vm.as_mut()) {
            (Ok(value), Some(vm)) => vm.delete_done_roots().map(|()| value),
            (result, _) => result,
        };
        if let Some(vm) = slot.vm.as_mut().filter(|vm| vm.has_requests()) {
            collect(&mut self.effects, slot.module.key(), vm);
        }
        result.map_err(|error| self.discard_vm(handle, &error))
    }

    /// Drops a VM instance after a trap; the next callback builds a new one.
    fn discard_vm(&mut self, handle: PluginHandle, error: &CallError) -> PluginFailure {
        let slot = &mut self.slots[handle.slot];
        let plugin = &slot.plugins[handle.plugin];
        let failure = failure(plugin, error.to_string());
        tracing::error!(target: "wasm", "{failure}; the VM instance on this thread is discarded and will be recreated");
        let vm_key = slot.module.key();
        // Streams waiting on this instance learn that it failed.
        if let Some(mut vm) = slot.vm.take() {
            for (context_id, stream) in vm.take_parked() {
                self.orphans.insert((vm_key, context_id, slot.generation), stream);
                self.effects.stream_signals.push(StreamSignal { vm_key, context_id, action: StreamAction::Failed });
            }
        }
        slot.generation += 1;
        // The old instance's timers stop; the new one sets its own.
        for &context_id in &slot.root_ids {
            self.effects.ticks.push(TickChange { vm_key, request: TickRequest { context_id, period_ms: 0 } });
        }
        failure
    }

    /// Makes sure the plugin's VM is up, restarting it if it failed (at most
    /// once per [`RESTART_BACKOFF`] while restarts keep failing).
    fn ensure_vm(&mut self, handle: PluginHandle) -> Result<(), PluginFailure> {
        let slot = &self.slots[handle.slot];
        if slot.vm.is_some() {
            return Ok(());
        }
        let plugin = &slot.plugins[handle.plugin];
        if slot.restart_after.is_some_and(|t| Instant::now() < t) {
            return Err(failure(plugin, "its VM failed and could not be restarted yet".into()));
        }
        match self.instantiate(handle.slot) {
            Ok(()) => Ok(()),
            Err((plugin, error)) => {
                let failure = failure(&plugin, error.to_string());
                tracing::error!(target: "wasm", "{failure}; restarting its VM failed, next try in {RESTART_BACKOFF:?}");
                self.slots[handle.slot].restart_after = Some(Instant::now() + RESTART_BACKOFF);
                Err(failure)
            }
        }
    }

    /// Creates the slot's VM and starts each plugin's root context in order.
    fn instantiate(&mut self, slot_index: usize) -> Result<(), (Arc<Plugin>, CallError)> {
        let slot = &mut self.slots[slot_index];
        let first = slot.plugins[0].clone();
        let mut vm = Vm::instantiate(self.host.engine(), &slot.module, self.host.shared.clone(), self.mailbox.clone())
            .map_err(|e| (first, e))?;
        let mut root_ids = Vec::with_capacity(slot.plugins.len());
        for plugin in &slot.plugins {
            let id = vm.start_root_context(plugin).map_err(|e| (plugin.clone(), e))?;
            root_ids.push(id);
        }
        collect(&mut self.effects, slot.module.key(), &mut vm);
        slot.root_ids = root_ids;
        slot.vm = Some(vm);
        slot.restart_after = None;
        Ok(())
    }
}

/// Moves what a VM asked for into the thread's effects.
fn collect(effects: &mut Effects, vm_key: VmKey, vm: &mut Vm) {
    effects.ticks.extend(vm.take_tick_requests().into_iter().map(|request| TickChange { vm_key, request }));
    let (actions, calls, grpc) = vm.take_requests();
    effects.grpc.extend(grpc);
    effects.stream_signals.extend(actions.into_iter().map(|(context_id, action)| StreamSignal {
        vm_key,
        context_id,
        action,
    }));
    effects.http_calls.extend(calls);
}

fn failure(plugin: &Plugin, reason: String) -> PluginFailure {
    PluginFailure { plugin: plugin.display_name().to_owned(), vm_id: plugin.module.vm_id().to_owned(), reason }
}
