//! One instance of a plugin module on one thread, and the typed calls into it.
//!
//! Every call into the guest goes through [`enter`], which sets up the call
//! frame the host functions read, arms the callback's deadline, and turns a
//! trap into a [`CallError`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_abi::PeerType;
use wasmtime::{Store, Trap, TypedFunc, WasmParams, WasmResults};

use crate::compiler::Tier;
use crate::cpu_budget::{CpuBudget, thread_cpu_time};
use crate::exports::Exports;
use crate::grpc::{GrpcCommand, GrpcEvent};
use crate::limits::Limits;
use crate::mailbox::{InstanceId, ThreadMailbox};
use crate::module::PluginModule;
use crate::plugin::Plugin;
use crate::shared::SharedState;
use crate::state::{CallFrame, ContextEntry, GrpcKind, HostState, TickRequest};
use crate::stream::{
    Cancelled, HttpCallRequest, HttpCallResponse, HttpStream, Phase, SharedStream, StreamAction, Verdict,
};

/// A callback that failed: it trapped, ran past its deadline, or could not
/// be called.
#[derive(Debug, Clone)]
pub(crate) struct CallError {
    pub function: &'static str,
    pub message: String,
    /// Interrupted at its deadline.
    pub deadline: bool,
}

impl CallError {
    fn new(function: &'static str, message: impl Into<String>) -> Self {
        CallError { function, message: message.into(), deadline: false }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Envoy's wording, so existing log searches keep working.
        write!(f, "Function: {} failed: {}", self.function, self.message)
    }
}

/// A stream callback that returns an action (continue, stop, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCallback {
    /// `proxy_on_request_headers(context, headers, end_of_stream)`.
    RequestHeaders,
    /// `proxy_on_response_headers(context, headers, end_of_stream)`.
    ResponseHeaders,
    /// `proxy_on_request_body(context, body size, end_of_stream)`.
    RequestBody,
    /// `proxy_on_response_body(context, body size, end_of_stream)`.
    ResponseBody,
    /// `proxy_on_request_trailers(context, trailers)`.
    RequestTrailers,
    /// `proxy_on_response_trailers(context, trailers)`.
    ResponseTrailers,
    /// `proxy_on_new_connection(context)`.
    NewConnection,
    /// `proxy_on_downstream_data(context, data size, end_of_stream)`.
    DownstreamData,
    /// `proxy_on_upstream_data(context, data size, end_of_stream)`.
    UpstreamData,
}

impl StreamCallback {
    /// The export's name.
    pub fn name(self) -> &'static str {
        match self {
            StreamCallback::RequestHeaders => "proxy_on_request_headers",
            StreamCallback::ResponseHeaders => "proxy_on_response_headers",
            StreamCallback::RequestBody => "proxy_on_request_body",
            StreamCallback::ResponseBody => "proxy_on_response_body",
            StreamCallback::RequestTrailers => "proxy_on_request_trailers",
            StreamCallback::ResponseTrailers => "proxy_on_response_trailers",
            StreamCallback::NewConnection => "proxy_on_new_connection",
            StreamCallback::DownstreamData => "proxy_on_downstream_data",
            StreamCallback::UpstreamData => "proxy_on_upstream_data",
        }
    }

    /// What the plugin may touch during it (and, for a stream paused in
    /// it, afterwards).
    pub(crate) fn phase(self) -> Phase {
        match self {
            StreamCallback::RequestHeaders => Phase::RequestHeaders,
            StreamCallback::ResponseHeaders => Phase::ResponseHeaders,
            StreamCallback::RequestBody => Phase::RequestBody,
            StreamCallback::ResponseBody => Phase::ResponseBody,
            StreamCallback::RequestTrailers => Phase::RequestTrailers,
            StreamCallback::ResponseTrailers => Phase::ResponseTrailers,
            StreamCallback::NewConnection => Phase::StreamOther,
            StreamCallback::DownstreamData => Phase::DownstreamData,
            StreamCallback::UpstreamData => Phase::UpstreamData,
        }
    }

    /// Its size argument: the number of headers or trailers, or the bytes
    /// of the body or data.
    fn size(self, stream: &HttpStream) -> i32 {
        let size = match self {
            StreamCallback::RequestHeaders => stream.request_headers.len(),
            StreamCallback::ResponseHeaders => stream.response_headers.len(),
            StreamCallback::RequestBody => stream.request_body.len(),
            StreamCallback::ResponseBody => stream.response_body.len(),
            StreamCallback::RequestTrailers => stream.request_trailers.len(),
            StreamCallback::ResponseTrailers => stream.response_trailers.len(),
            StreamCallback::NewConnection => 0,
            StreamCallback::DownstreamData => stream.downstream_data.len(),
            StreamCallback::UpstreamData => stream.upstream_data.len(),
        };
        size as i32
    }
}

/// A VM instance: a store, its instance's exports, and its context ids.
pub(crate) struct Vm {
    store: Store<HostState>,
    /// Which compiler made the code it runs.
    pub(crate) tier: Tier,
    exports: Exports,
    /// The last context id handed out; ids are never 0 (the VM itself) and
    /// skip ids still in use once they wrap.
    last_context_id: u32,
    /// The CPU time a callback, and each start function, may use.
    callback_deadline: Option<Duration>,
    start_deadline: Option<Duration>,
}

impl Vm {
    /// Instantiates `module` and runs its start functions (`_initialize` then
    /// `main`, or `_start`), as proxy-wasm-cpp-host does, each under the
    /// start deadline of `limits`.
    pub(crate) fn instantiate(
        module: &Arc<PluginModule>,
        instance: InstanceId,
        limits: Limits,
        shared: Arc<SharedState>,
        mailbox: Arc<dyn ThreadMailbox>,
    ) -> Result<Vm, CallError> {
        let state = HostState::new(module.spec.clone(), instance, limits.memory_bytes, shared, mailbox);
        let code = module.code();
        let mut store = Store::new(code.pre.module().engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(on_epoch_deadline);
        let (budget, ticks) = CpuBudget::start(limits.start_deadline, store.data().shared.interrupts());
        store.data_mut().cpu_budget = budget;
        store.set_epoch_deadline(ticks);
        let wasm_instance =
            code.pre.instantiate(&mut store).map_err(|e| CallError::new("instantiate", trap_message(&e)))?;
        let exports = Exports::resolve(&wasm_instance, &mut store, module.abi, &module.spec.allowed_capabilities);
        let memory = wasm_instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        store.data_mut().allocator = match module.allocator {
            "proxy_on_memory_allocate" => exports.memory_allocate.clone(),
            _ => exports.malloc.clone(),
        };
        let mut vm = Vm {
            store,
            tier: code.tier,
            exports,
            last_context_id: 0,
            callback_deadline: limits.callback_deadline,
            start_deadline: limits.start_deadline,
        };
        vm.run_start_functions()?;
        Ok(vm)
    }

    fn run_start_functions(&mut self) -> Result<(), CallError> {
        let frame = CallFrame::default;
        if self.call(Deadline::Start, "_initialize", frame(), |e| e.initialize.as_ref(), ())?.is_some() {
            if self.call(Deadline::Start, "main", frame(), |e| e.main.as_ref(), (0, 0))?.is_none() {
                self.call(Deadline::Start, "__main_void", frame(), |e| e.main_void.as_ref(), ())?;
            }
        } else {
            self.call(Deadline::Start, "_start", frame(), |e| e.start.as_ref(), ())?;
        }
        Ok(())
    }

    /// Creates the root context of `plugin` and runs `proxy_on_context_create`,
    /// `proxy_on_vm_start` and `proxy_on_configure` on it (the last two
    /// under the start deadline). Returns its id.
    pub(crate) fn start_root_context(&mut self, plugin: &Arc<Plugin>) -> Result<u32, CallError> {
        let id = self.alloc_context_id();
        let data = self.store.data_mut();
        data.plugins.push(plugin.names.clone());
        data.contexts.insert(id, ContextEntry { plugin: data.plugins.len() - 1, root_id: id });
        let with_config = || CallFrame {
            context_id: id,
            plugin_configuration: Some(plugin.configuration.clone()),
            ..CallFrame::default()
        };
        let arg = id as i32;
        self.call(
            Deadline::Start,
            "proxy_on_context_create",
            with_config(),
            |e| e.on_context_create.as_ref(),
            (arg, 0),
        )?;
        let vm_config_len = plugin.module.spec.vm_configuration.len() as i32;
        let started = self.call(
            Deadline::Start,
            "proxy_on_vm_start",
            with_config(),
            |e| e.on_vm_start.as_ref(),
            (arg, vm_config_len),
        )?;
        if started == Some(0) {
            return Err(CallError::new("proxy_on_vm_start", "the plugin returned false"));
        }
        let config_len = plugin.configuration.len() as i32;
        let configured = self.call(
            Deadline::Start,
            "proxy_on_configure",
            with_config(),
            |e| e.on_configure.as_ref(),
            (arg, config_len),
        )?;
        if configured == Some(0) {
            return Err(CallError::new("proxy_on_configure", "the plugin returned false"));
        }
        Ok(id)
    }

    /// Creates a stream context under `root_id` (`proxy_on_context_create`).
    pub(crate) fn create_stream_context(&mut self, root_id: u32) -> Result<u32, CallError> {
        let plugin = self
            .store
            .data()
            .contexts
            .get(&root_id)
            .map(|e| e.plugin)
            .ok_or_else(|| CallError::new("proxy_on_context_create", format!("no root context {root_id}")))?;
        let id = self.alloc_context_id();
        self.store.data_mut().contexts.insert(id, ContextEntry { plugin, root_id });
        let args = (id as i32, root_id as i32);
        self.call(
            Deadline::Callback,
            "proxy_on_context_create",
            frame(id, Phase::StreamOther),
            |e| e.on_context_create.as_ref(),
            args,
        )?;
        Ok(id)
    }

    /// A stream callback with `stream` lent to the plugin, and what it
    /// decided. A missing export continues.
    pub(crate) fn stream_callback(
        &mut self,
        callback: StreamCallback,
        id: u32,
        stream: &SharedStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let size = callback.size(&stream.borrow());
        let (arg, eos) = (id as i32, end_of_stream as i32);
        let Vm { store, exports: e, callback_deadline, .. } = self;
        // Each export with the arity it has in this module's ABI version.
        let two = |f| two_args(f, (arg, size));
        let call = match callback {
            StreamCallback::RequestHeaders => e
                .on_request_headers
                .as_ref()
                .map(|f| Call::Three(f, (arg, size, eos)))
                .or_else(|| two(&e.on_request_headers_v0_1)),
            StreamCallback::ResponseHeaders => e
                .on_response_headers
                .as_ref()
                .map(|f| Call::Three(f, (arg, size, eos)))
                .or_else(|| two(&e.on_response_headers_v0_1)),
            StreamCallback::RequestBody => e.on_request_body.as_ref().map(|f| Call::Three(f, (arg, size, eos))),
            StreamCallback::ResponseBody => e.on_response_body.as_ref().map(|f| Call::Three(f, (arg, size, eos))),
            StreamCallback::RequestTrailers => two(&e.on_request_trailers),
            StreamCallback::ResponseTrailers => two(&e.on_response_trailers),
            StreamCallback::NewConnection => e.on_new_connection.as_ref().map(|f| Call::One(f, (arg,))),
            StreamCallback::DownstreamData => e.on_downstream_data.as_ref().map(|f| Call::Three(f, (arg, size, eos))),
            StreamCallback::UpstreamData => e.on_upstream_data.as_ref().map(|f| Call::Three(f, (arg, size, eos))),
        };
        let Some(call) = call else { return Ok(Verdict::Continue) };
        let phase = callback.phase();
        let action = with_stream(store, stream, |store| {
            let frame = CallFrame { end_of_stream, ..frame(id, phase) };
            enter(store, callback.name(), frame, *callback_deadline, |s| match call {
                Call::One(f, a) => f.call(s, a),
                Call::Two(f, a) => f.call(s, a),
                Call::Three(f, a) => f.call(s, a),
            })
        })?;
        let outcome = std::mem::take(&mut self.store.data_mut().call.outcome);
        if outcome.closed {
            return Ok(Verdict::Close);
        }
        if let Some(local) = outcome.local_response {
            return Ok(Verdict::LocalResponse(local));
        }
        // Headers: Envoy turns every stop status into "stop all iteration"
        // unless the plugin opted in to plain StopIteration; both mean "wait
        // for resume", and 2 is ContinueAndEndStream. Bodies and data: every
        // status but 0 stops (buffering). A resume asked for during the
        // callback cancels the pause.
        let headers = matches!(phase, Phase::RequestHeaders | Phase::ResponseHeaders);
        let continues = action == 0 || (action == 2 && headers);
        Ok(if continues || outcome.resumed { Verdict::Continue } else { Verdict::Pause(action as u32) })
    }

    /// `proxy_on_downstream_connection_close` (`upstream` false) or
    /// `proxy_on_upstream_connection_close` (`upstream` true).
    pub(crate) fn on_connection_close(
        &mut self,
        id: u32,
        stream: &SharedStream,
        upstream: bool,
        peer: PeerType,
    ) -> Result<(), CallError> {
        let name = if upstream { "proxy_on_upstream_connection_close" } else { "proxy_on_downstream_connection_close" };
        type Select = fn(&Exports) -> Option<&TypedFunc<(i32, i32), ()>>;
        let select: Select = if upstream {
            |e| e.on_upstream_connection_close.as_ref()
        } else {
            |e| e.on_downstream_connection_close.as_ref()
        };
        self.call_with_stream(name, frame(id, Phase::StreamOther), stream, select, (id as i32, peer as i32))?;
        self.store.data_mut().call.outcome = Default::default();
        Ok(())
    }

    /// The end of a network filter's context, in Envoy's order for TCP:
    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub(crate) fn finish_tcp_stream(&mut self, id: u32, stream: &SharedStream) -> Result<(), CallError> {
        let result = self
            .call_done(id, Phase::StreamOther)
            .and_then(|_| self.call_log(id, stream))
            .and_then(|()| self.call_delete(id, Phase::StreamOther));
        self.forget_stream(id);
        result
    }

    /// The end of an HTTP stream, in Envoy's order: `proxy_on_log` (all maps
    /// readable), `proxy_on_done` (its result only matters for root
    /// contexts), then `proxy_on_delete`, after which the id is gone.
    pub(crate) fn finish_http_stream(&mut self, id: u32, stream: &SharedStream) -> Result<(), CallError> {
        let result = self
            .call_log(id, stream)
            .and_then(|()| self.call_done(id, Phase::StreamOther))
            .and_then(|_| self.call_delete(id, Phase::StreamOther));
        self.forget_stream(id);
        result
    }

    /// Forgets a stream context and what it left behind: its parked stream,
    /// and the HTTP and gRPC calls it made (returned, for the embedder to
    /// cancel).
    fn forget_stream(&mut self, id: u32) {
        let data = self.store.data_mut();
        data.contexts.remove(&id);
        data.parked.remove(&id);
        let instance = data.instance;
        data.http_call_tokens.retain(|&token, origin| {
            let ended = *origin == id;
            if ended {
                data.cancelled.push(Cancelled::HttpCall { instance, token });
            }
            !ended
        });
        data.grpc_tokens.retain(|&token, open| {
            let ended = open.origin == id;
            if ended {
                data.cancelled.push(Cancelled::Grpc { instance, token });
            }
            !ended
        });
    }

    /// `proxy_on_log` on context `id` (a stream's, or a root context's for
    /// Envoy's Wasm access logger) with `stream` readable.
    pub(crate) fn call_log(&mut self, id: u32, stream: &SharedStream) -> Result<(), CallError> {
        self.call_with_stream("proxy_on_log", frame(id, Phase::Log), stream, |e| e.on_log.as_ref(), (id as i32,))?;
        Ok(())
    }

    fn call_done(&mut self, id: u32, phase: Phase) -> Result<bool, CallError> {
        let done =
            self.call(Deadline::Callback, "proxy_on_done", frame(id, phase), |e| e.on_done.as_ref(), (id as i32,))?;
        Ok(done != Some(0))
    }

    fn call_delete(&mut self, id: u32, phase: Phase) -> Result<(), CallError> {
        self.call(Deadline::Callback, "proxy_on_delete", frame(id, phase), |e| e.on_delete.as_ref(), (id as i32,))?;
        Ok(())
    }

    /// `proxy_on_queue_ready` on root context `id`, if it exists.
    pub(crate) fn on_queue_ready(&mut self, id: u32, queue_id: u32) -> Result<(), CallError> {
        if !self.is_root_context(id) {
            return Ok(());
        }
        let args = (id as i32, queue_id as i32);
        self.call(
            Deadline::Callback,
            "proxy_on_queue_ready",
            frame(id, Phase::Root),
            |e| e.on_queue_ready.as_ref(),
            args,
        )?;
        Ok(())
    }

    /// `proxy_on_tick` on root context `id`, if it exists.
    pub(crate) fn on_tick(&mut self, id: u32) -> Result<(), CallError> {
        if !self.is_root_context(id) {
            return Ok(());
        }
        self.call(Deadline::Callback, "proxy_on_tick", frame(id, Phase::Root), |e| e.on_tick.as_ref(), (id as i32,))?;
        Ok(())
    }

    /// `proxy_on_http_call_response` on root context `id`: the response's
    /// maps and body are readable during the call; `None` means the call
    /// failed (no headers, as in Envoy).
    pub(crate) fn on_http_call_response(
        &mut self,
        id: u32,
        token: u32,
        response: Option<HttpCallResponse>,
        failure: &str,
    ) -> Result<(), CallError> {
        if self.store.data_mut().http_call_tokens.remove(&token).is_none() || !self.is_root_context(id) {
            return Ok(());
        }
        let counts = response
            .as_ref()
            .map_or((0, 0, 0), |r| (r.headers.len() as i32, r.body.len() as i32, r.trailers.len() as i32));
        let data = self.store.data_mut();
        data.status = match &response {
            Some(_) => (0, Bytes::new()),
            None => (ferry_abi::Status::BrokenConnection as u32, Bytes::copy_from_slice(failure.as_bytes())),
        };
        data.http_call_response = Some(response.unwrap_or_default());
        let args = (id as i32, token as i32, counts.0, counts.1, counts.2);
        let result = self.call(
            Deadline::Callback,
            "proxy_on_http_call_response",
            frame(id, Phase::HttpCallResponse),
            |e| e.on_http_call_response.as_ref(),
            args,
        );
        let data = self.store.data_mut();
        data.http_call_response = None;
        data.status = (0, Bytes::new());
        result.map(drop)
    }

    /// Delivers a gRPC event to root context `id`: the matching
    /// `proxy_on_grpc_*` callback, with the metadata or message readable
    /// during it. A close (and a unary call's message) ends the token.
    pub(crate) fn on_grpc_event(&mut self, id: u32, token: u32, event: GrpcEvent) -> Result<(), CallError> {
        let data = self.store.data_mut();
        let Some(open) = data.grpc_tokens.get_mut(&token) else {
            // Cancelled meanwhile: the plugin hears nothing more of it.
            return Ok(());
        };
        // A call's answer and any close end the exchange on the wire; the
        // plugin may still close or cancel the token in the callback.
        let last = matches!(event, GrpcEvent::Close { .. }) || open.kind == GrpcKind::Call;
        open.remote_closed |= last;
        let result = self.deliver_grpc_event(id, token, event);
        if last {
            self.store.data_mut().release_grpc_token(token);
        }
        result
    }

    /// [`Self::on_grpc_event`]'s callback, if `id` is still a root context.
    fn deliver_grpc_event(&mut self, id: u32, token: u32, event: GrpcEvent) -> Result<(), CallError> {
        if !self.is_root_context(id) {
            return Ok(());
        }
        type Select = fn(&Exports) -> Option<&TypedFunc<(i32, i32, i32), ()>>;
        let (name, select, arg): (&'static str, Select, i32) = match &event {
            GrpcEvent::InitialMetadata(map) => (
                "proxy_on_grpc_receive_initial_metadata",
                |e| e.on_grpc_receive_initial_metadata.as_ref(),
                map.len() as i32,
            ),
            GrpcEvent::Message(message) => {
                ("proxy_on_grpc_receive", |e| e.on_grpc_receive.as_ref(), message.len() as i32)
            }
            GrpcEvent::TrailingMetadata(map) => (
                "proxy_on_grpc_receive_trailing_metadata",
                |e| e.on_grpc_receive_trailing_metadata.as_ref(),
                map.len() as i32,
            ),
            GrpcEvent::Close { status, .. } => ("proxy_on_grpc_close", |e| e.on_grpc_close.as_ref(), *status as i32),
        };
        let data = self.store.data_mut();
        if let GrpcEvent::Close { status, message } = &event {
            data.status = (*status, Bytes::copy_from_slice(message.as_bytes()));
        }
        data.grpc_received = Some(event);
        let result =
            self.call(Deadline::Callback, name, frame(id, Phase::Root), select, (id as i32, token as i32, arg));
        let data = self.store.data_mut();
        data.grpc_received = None;
        data.status = (0, Bytes::new());
        result.map(drop)
    }

    /// Starts shutting the root contexts down, as Envoy does when it stops:
    /// `proxy_on_done` on each; those answering true are deleted at once
    /// (`proxy_on_delete`), the others wait until they call `proxy_done`.
    /// Returns how many wait.
    pub(crate) fn shutdown_roots(&mut self) -> Result<usize, CallError> {
        let mut roots: Vec<u32> =
            self.store.data().contexts.iter().filter(|(id, e)| e.is_root(**id)).map(|(id, _)| *id).collect();
        roots.sort_unstable();
        for id in roots {
            if self.call_done(id, Phase::Root)? {
                self.delete_root(id)?;
            } else {
                self.store.data_mut().pending_done.push(id);
            }
        }
        // A root context may have called proxy_done inside its own proxy_on_done.
        self.delete_done_roots()?;
        Ok(self.store.data().pending_done.len())
    }

    /// Root contexts still waiting to call `proxy_done`.
    pub(crate) fn pending_done(&self) -> usize {
        self.store.data().pending_done.len()
    }

    /// `proxy_on_delete` for the root contexts that called `proxy_done`.
    pub(crate) fn delete_done_roots(&mut self) -> Result<(), CallError> {
        for id in std::mem::take(&mut self.store.data_mut().done_roots) {
            self.delete_root(id)?;
        }
        Ok(())
    }

    fn delete_root(&mut self, id: u32) -> Result<(), CallError> {
        self.call_delete(id, Phase::Root)?;
        let data = self.store.data_mut();
        data.contexts.remove(&id);
        data.expressions.forget_root(id);
        Ok(())
    }

    /// Keeps a stopped stream where callbacks acting on its context find it.
    pub(crate) fn park(&mut self, id: u32, stream: SharedStream, phase: Phase) {
        self.store.data_mut().parked.insert(id, (stream, phase));
    }

    /// The contexts of every parked stream, forgotten (the VM is being discarded).
    pub(crate) fn take_parked(&mut self) -> Vec<u32> {
        self.store.data_mut().parked.drain().map(|(id, _)| id).collect()
    }

    /// Forgets a parked stream (its filter goes on).
    pub(crate) fn unpark(&mut self, id: u32) {
        self.store.data_mut().parked.remove(&id);
    }

    /// What the plugin asked of the embedder since the last call.
    pub(crate) fn take_requests(&mut self) -> Requests {
        let data = self.store.data_mut();
        Requests {
            ticks: std::mem::take(&mut data.tick_requests),
            stream_actions: std::mem::take(&mut data.stream_actions),
            http_calls: std::mem::take(&mut data.http_calls),
            grpc: std::mem::take(&mut data.grpc_commands),
            cancelled: std::mem::take(&mut data.cancelled),
        }
    }

    /// Whether the VM has any pending request for the embedder.
    pub(crate) fn has_requests(&self) -> bool {
        let data = self.store.data();
        !data.tick_requests.is_empty()
            || !data.stream_actions.is_empty()
            || !data.http_calls.is_empty()
            || !data.grpc_commands.is_empty()
            || !data.cancelled.is_empty()
    }

    /// The HTTP and gRPC calls open in this instance, as cancellations: for
    /// the embedder to stop them when the instance is discarded.
    pub(crate) fn open_calls(&self) -> Vec<Cancelled> {
        let data = self.store.data();
        let instance = data.instance;
        let http = data.http_call_tokens.keys().map(|&token| Cancelled::HttpCall { instance, token });
        let grpc = data.grpc_tokens.keys().map(|&token| Cancelled::Grpc { instance, token });
        http.chain(grpc).collect()
    }

    /// Whether any stream context (HTTP stream or TCP connection) is open.
    pub(crate) fn has_stream_contexts(&self) -> bool {
        self.store.data().contexts.iter().any(|(id, e)| !e.is_root(*id))
    }

    fn is_root_context(&self, id: u32) -> bool {
        self.store.data().contexts.get(&id).is_some_and(|e| e.is_root(id))
    }

    #[cfg(test)]
    pub(crate) fn set_last_context_id(&mut self, id: u32) {
        self.last_context_id = id;
    }

    fn alloc_context_id(&mut self) -> u32 {
        let contexts = &self.store.data().contexts;
        loop {
            self.last_context_id = self.last_context_id.wrapping_add(1);
            if self.last_context_id != 0 && !contexts.contains_key(&self.last_context_id) {
                return self.last_context_id;
            }
        }
    }

    /// Calls the export `select` picks, if the module has it, under
    /// `deadline`; `None` if it does not export it.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        deadline: Deadline,
        function: &'static str,
        frame: CallFrame,
        select: impl FnOnce(&Exports) -> Option<&TypedFunc<P, R>>,
        args: P,
    ) -> Result<Option<R>, CallError> {
        let Vm { store, exports, callback_deadline, start_deadline, .. } = self;
        let Some(f) = select(exports) else { return Ok(None) };
        let limit = match deadline {
            Deadline::Callback => *callback_deadline,
            Deadline::Start => *start_deadline,
        };
        enter(store, function, frame, limit, |s| f.call(s, args)).map(Some)
    }

    /// [`Vm::call`] under the callback deadline, with `stream` lent to the plugin.
    fn call_with_stream<P: WasmParams, R: WasmResults>(
        &mut self,
        function: &'static str,
        frame: CallFrame,
        stream: &SharedStream,
        select: impl FnOnce(&Exports) -> Option<&TypedFunc<P, R>>,
        args: P,
    ) -> Result<Option<R>, CallError> {
        self.store.data_mut().stream = Some(stream.clone());
        let result = self.call(Deadline::Callback, function, frame, select, args);
        self.store.data_mut().stream = None;
        result
    }
}

/// Which deadline a call runs under.
#[derive(Clone, Copy)]
enum Deadline {
    /// A callback's.
    Callback,
    /// A start function's (`_initialize`, `proxy_on_vm_start`, ...).
    Start,
}

fn two_args(f: &Option<TypedFunc<(i32, i32), i32>>, args: (i32, i32)) -> Option<Call<'_>> {
    f.as_ref().map(|f| Call::Two(f, args))
}

/// A typed stream callback with its arguments.
enum Call<'a> {
    One(&'a TypedFunc<(i32,), i32>, (i32,)),
    Two(&'a TypedFunc<(i32, i32), i32>, (i32, i32)),
    Three(&'a TypedFunc<(i32, i32, i32), i32>, (i32, i32, i32)),
}

/// What a VM asked of its embedder during a callback.
#[derive(Default)]
pub(crate) struct Requests {
    pub ticks: Vec<TickRequest>,
    pub stream_actions: Vec<(u32, StreamAction)>,
    pub http_calls: Vec<HttpCallRequest>,
    pub grpc: Vec<GrpcCommand>,
    pub cancelled: Vec<Cancelled>,
}

/// Lends `stream` to the store for the duration of `f`.
fn with_stream<R>(
    store: &mut Store<HostState>,
    stream: &SharedStream,
    f: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    store.data_mut().stream = Some(stream.clone());
    let result = f(store);
    store.data_mut().stream = None;
    result
}

/// The store's epoch-deadline callback: interrupts the plugin once its
/// entry used up its CPU budget, or once the process is past draining.
fn on_epoch_deadline(
    mut store: wasmtime::StoreContextMut<'_, HostState>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let now = thread_cpu_time();
    let data = store.data_mut();
    let interrupts = data.shared.interrupts();
    Ok(data.cpu_budget.at_tick(now, interrupts))
}

/// Calls into the guest with `frame` as the call in progress, interrupted
/// once it used `deadline` of CPU time.
fn enter<R>(
    store: &mut Store<HostState>,
    function: &'static str,
    frame: CallFrame,
    deadline: Option<Duration>,
    call: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, CallError> {
    // A local response nobody collected belongs to an earlier call: drop it.
    drop(std::mem::replace(&mut store.data_mut().call, frame));
    let (budget, ticks) = CpuBudget::start(deadline, store.data().shared.interrupts());
    store.data_mut().cpu_budget = budget;
    store.set_epoch_deadline(ticks);
    let result = call(store);
    let data = store.data_mut();
    // Keep a local response for the caller to collect; drop the rest.
    let outcome = std::mem::take(&mut data.call.outcome);
    data.call = CallFrame { outcome, ..CallFrame::default() };
    result.map_err(|e| {
        let data = store.data();
        if e.downcast_ref::<Trap>() != Some(&Trap::Interrupt) {
            CallError::new(function, trap_message(&e))
        } else if data.cpu_budget.interrupted_by(data.shared.interrupts()) {
            CallError::new(function, "interrupted: the process is shutting down")
        } else {
            let limit = deadline.map_or_else(|| "its deadline".to_owned(), |d| format!("its deadline of {d:?}"));
            CallError { function, message: format!("interrupted: ran past {limit} of CPU time"), deadline: true }
        }
    })
}

fn frame(context_id: u32, phase: Phase) -> CallFrame {
    CallFrame { context_id, phase, ..CallFrame::default() }
}

/// A one-paragraph description of a trap: the trap itself first, then the
/// guest backtrace wasmtime attached, if any.
fn trap_message(error: &wasmtime::Error) -> String {
    let mut message = error.root_cause().to_string();
    if let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = trace
            .frames()
            .iter()
            .take(8)
            .map(|f| match f.func_name() {
                Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
                None => format!("func[{}]", f.func_index()),
            })
            .collect();
        if !frames.is_empty() {
            message.push_str(&format!(" (in {})", frames.join(" <- ")));
        }
    }
    message
}
