//! One instance of a plugin module on one thread, and the typed calls into it.
//!
//! Every call into the guest goes through [`Vm::enter`], which sets up the
//! call frame the host functions read, and turns a trap into a [`CallError`].

use std::sync::Arc;

use bytes::Bytes;
use ferry_abi::{AbiVersion, PeerType};
use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::grpc::{GrpcCommand, GrpcEvent};
use crate::host::SharedState;
use crate::mailbox::ThreadMailbox;
use crate::module::PluginModule;
use crate::plugin::Plugin;
use crate::state::{CallFrame, ContextEntry, GrpcKind, HostState, TickRequest};
use crate::stream::{HttpCallRequest, HttpCallResponse, HttpStream, Phase, StreamAction, Verdict};

/// Epoch deadline when no CPU limit applies: never reached.
const NO_DEADLINE: u64 = 1 << 62;

/// A callback that trapped (or could not be called).
#[derive(Debug, Clone)]
pub(crate) struct CallError {
    pub function: &'static str,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Envoy's wording, so existing log searches keep working.
        write!(f, "Function: {} failed: {}", self.function, self.message)
    }
}

/// A header callback, whose arity depends on the ABI version.
enum HeadersCallback {
    V1(TypedFunc<(i32, i32), i32>),
    V2(TypedFunc<(i32, i32, i32), i32>),
}

/// Root context, token, header count, body size, trailer count.
type CallResponseArgs = (i32, i32, i32, i32, i32);

/// The guest exports the host calls, resolved once per instance.
struct Exports {
    on_context_create: Option<TypedFunc<(i32, i32), ()>>,
    on_vm_start: Option<TypedFunc<(i32, i32), i32>>,
    on_configure: Option<TypedFunc<(i32, i32), i32>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_delete: Option<TypedFunc<i32, ()>>,
    on_tick: Option<TypedFunc<i32, ()>>,
    on_queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    on_http_call_response: Option<TypedFunc<CallResponseArgs, ()>>,
    on_grpc_receive_initial_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_grpc_receive: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_grpc_receive_trailing_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_grpc_close: Option<TypedFunc<(i32, i32, i32), ()>>,
    on_request_headers: Option<HeadersCallback>,
    on_response_headers: Option<HeadersCallback>,
    on_request_body: Option<HeadersCallback>,
    on_response_body: Option<HeadersCallback>,
    on_request_trailers: Option<HeadersCallback>,
    on_response_trailers: Option<HeadersCallback>,
    on_new_connection: Option<TypedFunc<i32, i32>>,
    on_downstream_data: Option<HeadersCallback>,
    on_upstream_data: Option<HeadersCallback>,
    on_downstream_connection_close: Option<TypedFunc<(i32, i32), ()>>,
    on_upstream_connection_close: Option<TypedFunc<(i32, i32), ()>>,
}

/// A VM instance: a store, its instance's exports, and its context ids.
pub(crate) struct Vm {
    store: Store<HostState>,
    exports: Exports,
    /// Next context id; ids start at 1 (0 is the VM itself) and are never reused.
    next_context_id: u32,
}

fn func<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    // Signatures were checked when the module was loaded.
    instance.get_typed_func(&mut *store, name).ok()
}

impl Vm {
    /// Instantiates `module` and runs its start functions (`_initialize` then
    /// `main`, or `_start`), as proxy-wasm-cpp-host does.
    pub(crate) fn instantiate(
        engine: &wasmtime::Engine,
        module: &Arc<PluginModule>,
        shared: Arc<SharedState>,
        mailbox: Arc<dyn ThreadMailbox>,
    ) -> Result<Vm, CallError> {
        let mut store = Store::new(engine, HostState::new(module.clone(), shared, mailbox));
        store.epoch_deadline_trap();
        store.set_epoch_deadline(NO_DEADLINE);
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallError { function: "instantiate", message: format!("{e:#}") })?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        store.data_mut().allocator = func(&instance, &mut store, module.allocator);
        let headers = |store: &mut Store<HostState>, name: &str| match module.abi {
            AbiVersion::V0_1_0 => func(&instance, store, name).map(HeadersCallback::V1),
            _ => func(&instance, store, name).map(HeadersCallback::V2),
        };
        let exports = Exports {
            on_context_create: func(&instance, &mut store, "proxy_on_context_create"),
            on_vm_start: func(&instance, &mut store, "proxy_on_vm_start"),
            on_configure: func(&instance, &mut store, "proxy_on_configure"),
            on_done: func(&instance, &mut store, "proxy_on_done"),
            on_log: func(&instance, &mut store, "proxy_on_log"),
            on_delete: func(&instance, &mut store, "proxy_on_delete"),
            on_tick: func(&instance, &mut store, "proxy_on_tick"),
            on_queue_ready: func(&instance, &mut store, "proxy_on_queue_ready"),
            on_http_call_response: func(&instance, &mut store, "proxy_on_http_call_response"),
            on_grpc_receive_initial_metadata: func(&instance, &mut store, "proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: func(&instance, &mut store, "proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: func(&instance, &mut store, "proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: func(&instance, &mut store, "proxy_on_grpc_close"),
            on_request_headers: headers(&mut store, "proxy_on_request_headers"),
            on_response_headers: headers(&mut store, "proxy_on_response_headers"),
            on_request_body: func(&instance, &mut store, "proxy_on_request_body").map(HeadersCallback::V2),
            on_response_body: func(&instance, &mut store, "proxy_on_response_body").map(HeadersCallback::V2),
            // Trailer callbacks take (context, count) in every ABI version.
            on_request_trailers: func(&instance, &mut store, "proxy_on_request_trailers").map(HeadersCallback::V1),
            on_response_trailers: func(&instance, &mut store, "proxy_on_response_trailers").map(HeadersCallback::V1),
            on_new_connection: func(&instance, &mut store, "proxy_on_new_connection"),
            on_downstream_data: func(&instance, &mut store, "proxy_on_downstream_data").map(HeadersCallback::V2),
            on_upstream_data: func(&instance, &mut store, "proxy_on_upstream_data").map(HeadersCallback::V2),
            on_downstream_connection_close: func(&instance, &mut store, "proxy_on_downstream_connection_close"),
            on_upstream_connection_close: func(&instance, &mut store, "proxy_on_upstream_connection_close"),
        };
        let initialize: Option<TypedFunc<(), ()>> = func(&instance, &mut store, "_initialize");
        let main: Option<TypedFunc<(i32, i32), i32>> = func(&instance, &mut store, "main");
        let main_void: Option<TypedFunc<(), i32>> = func(&instance, &mut store, "__main_void");
        let start: Option<TypedFunc<(), ()>> = func(&instance, &mut store, "_start");
        let mut vm = Vm { store, exports, next_context_id: 1 };
        let frame = CallFrame::default;
        if let Some(initialize) = initialize {
            enter(&mut vm.store, "_initialize", frame(), |s| initialize.call(s, ()))?;
            if let Some(main) = main {
                enter(&mut vm.store, "main", frame(), |s| main.call(s, (0, 0)))?;
            } else if let Some(main_void) = main_void {
                enter(&mut vm.store, "__main_void", frame(), |s| main_void.call(s, ()))?;
            }
        } else if let Some(start) = start {
            enter(&mut vm.store, "_start", frame(), |s| start.call(s, ()))?;
        }
        Ok(vm)
    }

    /// Creates the root context of `plugin` and runs `proxy_on_context_create`,
    /// `proxy_on_vm_start` and `proxy_on_configure` on it. Returns its id.
    pub(crate) fn start_root_context(&mut self, plugin: &Arc<Plugin>) -> Result<u32, CallError> {
        let id = self.alloc_context_id();
        let data = self.store.data_mut();
        data.plugins.push(plugin.clone());
        data.contexts.insert(id, ContextEntry { plugin: data.plugins.len() - 1, root_id: id });
        let with_config = || CallFrame {
            context_id: id,
            plugin_configuration: Some(plugin.configuration.clone()),
            ..CallFrame::default()
        };
        if let Some(f) = &self.exports.on_context_create {
            enter(&mut self.store, "proxy_on_context_create", with_config(), |s| f.call(s, (id as i32, 0)))?;
        }
        let vm_config_len = plugin.module.spec.vm_configuration.len() as i32;
        if let Some(f) = &self.exports.on_vm_start {
            let ok =
                enter(&mut self.store, "proxy_on_vm_start", with_config(), |s| f.call(s, (id as i32, vm_config_len)))?;
            if ok == 0 {
                return Err(CallError { function: "proxy_on_vm_start", message: "the plugin returned false".into() });
            }
        }
        let config_len = plugin.configuration.len() as i32;
        if let Some(f) = &self.exports.on_configure {
            let ok =
                enter(&mut self.store, "proxy_on_configure", with_config(), |s| f.call(s, (id as i32, config_len)))?;
            if ok == 0 {
                return Err(CallError { function: "proxy_on_configure", message: "the plugin returned false".into() });
            }
        }
        Ok(id)
    }

    /// Creates a stream context under `root_id` (`proxy_on_context_create`).
    pub(crate) fn create_stream_context(&mut self, root_id: u32) -> Result<u32, CallError> {
        let id = self.alloc_context_id();
        let data = self.store.data_mut();
        let plugin = data.contexts.get(&root_id).map(|e| e.plugin).ok_or_else(|| CallError {
            function: "proxy_on_context_create",
            message: format!("no root context {root_id}"),
        })?;
        data.contexts.insert(id, ContextEntry { plugin, root_id });
        if let Some(f) = &self.exports.on_context_create {
            enter(&mut self.store, "proxy_on_context_create", frame(id, Phase::StreamOther), |s| {
                f.call(s, (id as i32, root_id as i32))
            })?;
        }
        Ok(id)
    }

    /// `proxy_on_request_headers`, with `stream` lent to the plugin.
    pub(crate) fn on_request_headers(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let count = stream.request_headers.len() as i32;
        self.headers_callback(
            "proxy_on_request_headers",
            |e| e.on_request_headers.as_ref(),
            id,
            Phase::RequestHeaders,
            stream,
            count,
            end_of_stream,
        )
    }

    /// `proxy_on_response_headers`, with `stream` lent to the plugin.
    pub(crate) fn on_response_headers(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let count = stream.response_headers.len() as i32;
        self.headers_callback(
            "proxy_on_response_headers",
            |e| e.on_response_headers.as_ref(),
            id,
            Phase::ResponseHeaders,
            stream,
            count,
            end_of_stream,
        )
    }

    /// `proxy_on_request_body` with the whole body (`stream.request_body`)
    /// lent to the plugin.
    pub(crate) fn on_request_body(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let size = stream.request_body.len() as i32;
        self.headers_callback(
            "proxy_on_request_body",
            |e| e.on_request_body.as_ref(),
            id,
            Phase::RequestBody,
            stream,
            size,
            end_of_stream,
        )
    }

    /// `proxy_on_response_body` with `stream.response_body` lent to the plugin.
    pub(crate) fn on_response_body(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let size = stream.response_body.len() as i32;
        self.headers_callback(
            "proxy_on_response_body",
            |e| e.on_response_body.as_ref(),
            id,
            Phase::ResponseBody,
            stream,
            size,
            end_of_stream,
        )
    }

    /// `proxy_on_request_trailers` with `stream.request_trailers` lent to the plugin.
    pub(crate) fn on_request_trailers(&mut self, id: u32, stream: &mut HttpStream) -> Result<Verdict, CallError> {
        let count = stream.request_trailers.len() as i32;
        self.headers_callback(
            "proxy_on_request_trailers",
            |e| e.on_request_trailers.as_ref(),
            id,
            Phase::RequestTrailers,
            stream,
            count,
            true,
        )
    }

    /// `proxy_on_response_trailers` with `stream.response_trailers` lent to the plugin.
    pub(crate) fn on_response_trailers(&mut self, id: u32, stream: &mut HttpStream) -> Result<Verdict, CallError> {
        let count = stream.response_trailers.len() as i32;
        self.headers_callback(
            "proxy_on_response_trailers",
            |e| e.on_response_trailers.as_ref(),
            id,
            Phase::ResponseTrailers,
            stream,
            count,
            true,
        )
    }

    /// `proxy_on_new_connection`, with the connection lent to the plugin.
    pub(crate) fn on_new_connection(&mut self, id: u32, stream: &mut HttpStream) -> Result<Verdict, CallError> {
        let Some(f) = &self.exports.on_new_connection else { return Ok(Verdict::Continue) };
        let action = with_stream(&mut self.store, stream, |store| {
            enter(store, "proxy_on_new_connection", frame(id, Phase::StreamOther), |s| f.call(s, id as i32))
        })?;
        let outcome = std::mem::take(&mut self.store.data_mut().call.outcome);
        Ok(if outcome.closed {
            Verdict::Close
        } else if action == 0 || outcome.resumed {
            Verdict::Continue
        } else {
            Verdict::Pause
        })
    }

    /// `proxy_on_downstream_data` with `stream.downstream_data` lent to the plugin.
    pub(crate) fn on_downstream_data(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let size = stream.downstream_data.len() as i32;
        self.headers_callback(
            "proxy_on_downstream_data",
            |e| e.on_downstream_data.as_ref(),
            id,
            Phase::DownstreamData,
            stream,
            size,
            end_of_stream,
        )
    }

    /// `proxy_on_upstream_data` with `stream.upstream_data` lent to the plugin.
    pub(crate) fn on_upstream_data(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let size = stream.upstream_data.len() as i32;
        self.headers_callback(
            "proxy_on_upstream_data",
            |e| e.on_upstream_data.as_ref(),
            id,
            Phase::UpstreamData,
            stream,
            size,
            end_of_stream,
        )
    }

    /// `proxy_on_downstream_connection_close` (`upstream` false) or
    /// `proxy_on_upstream_connection_close` (`upstream` true).
    pub(crate) fn on_connection_close(
        &mut self,
        id: u32,
        stream: &mut HttpStream,
        upstream: bool,
        peer: PeerType,
    ) -> Result<(), CallError> {
        let (name, f) = if upstream {
            ("proxy_on_upstream_connection_close", &self.exports.on_upstream_connection_close)
        } else {
            ("proxy_on_downstream_connection_close", &self.exports.on_downstream_connection_close)
        };
        let Some(f) = f else { return Ok(()) };
        with_stream(&mut self.store, stream, |store| {
            enter(store, name, frame(id, Phase::StreamOther), |s| f.call(s, (id as i32, peer as i32)))
        })?;
        self.store.data_mut().call.outcome = Default::default();
        Ok(())
    }

    /// The end of a network filter's context, in Envoy's order for TCP:
    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub(crate) fn finish_tcp_stream(&mut self, id: u32, stream: &mut HttpStream) -> Result<(), CallError> {
        let arg = id as i32;
        let result = (|| {
            if let Some(f) = &self.exports.on_done {
                enter(&mut self.store, "proxy_on_done", frame(id, Phase::StreamOther), |s| f.call(s, arg))?;
            }
            if let Some(f) = &self.exports.on_log {
                with_stream(&mut self.store, stream, |store| {
                    enter(store, "proxy_on_log", frame(id, Phase::Log), |s| f.call(s, arg))
                })?;
            }
            if let Some(f) = &self.exports.on_delete {
                enter(&mut self.store, "proxy_on_delete", frame(id, Phase::StreamOther), |s| f.call(s, arg))?;
            }
            Ok(())
        })();
        self.store.data_mut().contexts.remove(&id);
        result
    }

    /// A stream callback that returns an action: headers (with their count)
    /// or bodies and TCP data (with their size).
    #[allow(clippy::too_many_arguments)]
    fn headers_callback(
        &mut self,
        function: &'static str,
        callback: impl FnOnce(&Exports) -> Option<&HeadersCallback>,
        id: u32,
        phase: Phase,
        stream: &mut HttpStream,
        count: i32,
        end_of_stream: bool,
    ) -> Result<Verdict, CallError> {
        let Some(callback) = callback(&self.exports) else { return Ok(Verdict::Continue) };
        let id_arg = id as i32;
        let action = with_stream(&mut self.store, stream, |store| {
            enter(store, function, frame(id, phase), |s| match callback {
                HeadersCallback::V1(f) => f.call(s, (id_arg, count)),
                HeadersCallback::V2(f) => f.call(s, (id_arg, count, end_of_stream as i32)),
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
        // for resume", and 2 is ContinueAndEndStream. Bodies: every status
        // but 0 stops (buffering). A resume asked for during the callback
        // cancels the pause.
        let continues = action == 0 || (action == 2 && matches!(phase, Phase::RequestHeaders | Phase::ResponseHeaders));
        Ok(if continues || outcome.resumed { Verdict::Continue } else { Verdict::Pause })
    }

    /// The end of an HTTP stream, in Envoy's order: `proxy_on_log` (all maps
    /// readable), `proxy_on_done` (its result only matters for root
    /// contexts), then `proxy_on_delete`, after which the id is gone.
    pub(crate) fn finish_http_stream(&mut self, id: u32, stream: &mut HttpStream) -> Result<(), CallError> {
        let result = self.finish_stream_calls(id, stream);
        let data = self.store.data_mut();
        data.contexts.remove(&id);
        data.parked.remove(&id);
        result
    }

    fn finish_stream_calls(&mut self, id: u32, stream: &mut HttpStream) -> Result<(), CallError> {
        let arg = id as i32;
        if let Some(f) = &self.exports.on_log {
            with_stream(&mut self.store, stream, |store| {
                enter(store, "proxy_on_log", frame(id, Phase::Log), |s| f.call(s, arg))
            })?;
        }
        if let Some(f) = &self.exports.on_done {
            enter(&mut self.store, "proxy_on_done", frame(id, Phase::StreamOther), |s| f.call(s, arg))?;
        }
        if let Some(f) = &self.exports.on_delete {
            enter(&mut self.store, "proxy_on_delete", frame(id, Phase::StreamOther), |s| f.call(s, arg))?;
        }
        Ok(())
    }

    /// `proxy_on_queue_ready` on root context `id`, if it exists.
    pub(crate) fn on_queue_ready(&mut self, id: u32, queue_id: u32) -> Result<(), CallError> {
        let Some(f) = &self.exports.on_queue_ready else { return Ok(()) };
        if !self.is_root_context(id) {
            return Ok(());
        }
        enter(&mut self.store, "proxy_on_queue_ready", frame(id, Phase::Root), |s| {
            f.call(s, (id as i32, queue_id as i32))
        })
    }

    /// `proxy_on_tick` on root context `id`, if it exists.
    pub(crate) fn on_tick(&mut self, id: u32) -> Result<(), CallError> {
        let Some(f) = &self.exports.on_tick else { return Ok(()) };
        if !self.is_root_context(id) {
            return Ok(());
        }
        enter(&mut self.store, "proxy_on_tick", frame(id, Phase::Root), |s| f.call(s, id as i32))
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
        if !self.is_root_context(id) {
            return Ok(());
        }
        let Some(f) = &self.exports.on_http_call_response else { return Ok(()) };
        let counts = response
            .as_ref()
            .map_or((0, 0, 0), |r| (r.headers.len() as i32, r.body.len() as i32, r.trailers.len() as i32));
        let data = self.store.data_mut();
        data.status = match &response {
            Some(_) => (0, Bytes::new()),
            None => (ferry_abi::Status::BrokenConnection as u32, Bytes::copy_from_slice(failure.as_bytes())),
        };
        data.http_call_response = Some(response.unwrap_or_default());
        let result = enter(&mut self.store, "proxy_on_http_call_response", frame(id, Phase::HttpCallResponse), |s| {
            f.call(s, (id as i32, token as i32, counts.0, counts.1, counts.2))
        });
        let data = self.store.data_mut();
        data.http_call_response = None;
        data.status = (0, Bytes::new());
        result
    }

    /// Delivers a gRPC event to root context `id`: the matching
    /// `proxy_on_grpc_*` callback, with the metadata or message readable
    /// during it. A close (and a unary call's message) ends the token.
    pub(crate) fn on_grpc_event(&mut self, id: u32, token: u32, event: GrpcEvent) -> Result<(), CallError> {
        let data = self.store.data_mut();
        let Some(&kind) = data.grpc_tokens.get(&token) else {
            // Cancelled meanwhile: the plugin hears nothing more of it.
            return Ok(());
        };
        if matches!(event, GrpcEvent::Close { .. }) || kind == GrpcKind::Call {
            data.grpc_tokens.remove(&token);
        }
        if !self.is_root_context(id) {
            return Ok(());
        }
        let (name, f, arg) = match &event {
            GrpcEvent::InitialMetadata(map) => (
                "proxy_on_grpc_receive_initial_metadata",
                &self.exports.on_grpc_receive_initial_metadata,
                map.len() as i32,
            ),
            GrpcEvent::Message(message) => {
                ("proxy_on_grpc_receive", &self.exports.on_grpc_receive, message.len() as i32)
            }
            GrpcEvent::TrailingMetadata(map) => (
                "proxy_on_grpc_receive_trailing_metadata",
                &self.exports.on_grpc_receive_trailing_metadata,
                map.len() as i32,
            ),
            GrpcEvent::Close { status, .. } => ("proxy_on_grpc_close", &self.exports.on_grpc_close, *status as i32),
        };
        let Some(f) = f else { return Ok(()) };
        let data = self.store.data_mut();
        if let GrpcEvent::Close { status, message } = &event {
            data.status = (*status, Bytes::copy_from_slice(message.as_bytes()));
        }
        data.grpc_received = Some(event);
        let result =
            enter(&mut self.store, name, frame(id, Phase::Root), |s| f.call(s, (id as i32, token as i32, arg)));
        let data = self.store.data_mut();
        data.grpc_received = None;
        data.status = (0, Bytes::new());
        result
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
            let done = match &self.exports.on_done {
                Some(f) => {
                    enter(&mut self.store, "proxy_on_done", frame(id, Phase::Root), |s| f.call(s, id as i32))? != 0
                }
                None => true,
            };
            if done {
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
        if let Some(f) = &self.exports.on_delete {
            enter(&mut self.store, "proxy_on_delete", frame(id, Phase::Root), |s| f.call(s, id as i32))?;
        }
        self.store.data_mut().contexts.remove(&id);
        Ok(())
    }

    /// Keeps a paused stream where callbacks acting on its context find it.
    pub(crate) fn park(&mut self, id: u32, stream: HttpStream, phase: Phase) {
        self.store.data_mut().parked.insert(id, (stream, phase));
    }

    /// Every parked stream, taken out (the VM is being discarded).
    pub(crate) fn take_parked(&mut self) -> Vec<(u32, HttpStream)> {
        self.store.data_mut().parked.drain().map(|(id, (stream, _))| (id, stream)).collect()
    }

    /// Takes a parked stream back.
    pub(crate) fn unpark(&mut self, id: u32) -> Option<HttpStream> {
        self.store.data_mut().parked.remove(&id).map(|(stream, _)| stream)
    }

    /// Stream actions, HTTP calls and gRPC commands asked for since the last call.
    pub(crate) fn take_requests(&mut self) -> (Vec<(u32, StreamAction)>, Vec<HttpCallRequest>, Vec<GrpcCommand>) {
        let data = self.store.data_mut();
        (
            std::mem::take(&mut data.stream_actions),
            std::mem::take(&mut data.http_calls),
            std::mem::take(&mut data.grpc_commands),
        )
    }

    /// Whether the VM has any pending request for the embedder.
    pub(crate) fn has_requests(&self) -> bool {
        let data = self.store.data();
        !data.tick_requests.is_empty()
            || !data.stream_actions.is_empty()
            || !data.http_calls.is_empty()
            || !data.grpc_commands.is_empty()
    }

    /// Tick periods set since the last call.
    pub(crate) fn take_tick_requests(&mut self) -> Vec<TickRequest> {
        std::mem::take(&mut self.store.data_mut().tick_requests)
    }

    fn is_root_context(&self, id: u32) -> bool {
        self.store.data().contexts.get(&id).is_some_and(|e| e.is_root(id))
    }

    fn alloc_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id += 1;
        id
    }
}

/// Lends `stream` to the store for the duration of `f`.
fn with_stream<R>(
    store: &mut Store<HostState>,
    stream: &mut HttpStream,
    f: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    std::mem::swap(&mut store.data_mut().stream, stream);
    let result = f(store);
    std::mem::swap(&mut store.data_mut().stream, stream);
    result
}

/// Calls into the guest with `frame` as the call in progress.
fn enter<R>(
    store: &mut Store<HostState>,
    function: &'static str,
    frame: CallFrame,
    call: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, CallError> {
    // A local response nobody collected belongs to an earlier call: drop it.
    drop(std::mem::replace(&mut store.data_mut().call, frame));
    let result = call(store);
    let data = store.data_mut();
    // Keep a local response for the caller to collect; drop the rest.
    let outcome = std::mem::take(&mut data.call.outcome);
    data.call = CallFrame { outcome, ..CallFrame::default() };
    result.map_err(|e| CallError { function, message: trap_message(&e) })
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
