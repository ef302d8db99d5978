//! The data a VM's store carries: what host functions need to know about the
//! VM, its contexts and the callback in progress.

use std::cell::{Ref, RefMut};
use std::sync::Arc;

use bytes::Bytes;
use ferry_abi::{BufferType, MapType, Status};
use rustc_hash::FxHashMap;
use wasmtime::{Memory, StoreLimits, StoreLimitsBuilder, TypedFunc};

use crate::grpc::{GrpcCommand, GrpcEvent};
use crate::headers::HeaderMap;
use crate::limits::{MAX_PENDING_CALLS, MAX_TABLE_ELEMENTS};
use crate::mailbox::{InstanceId, ThreadMailbox};
use crate::metrics::MetricIds;
use crate::shared::SharedState;
use crate::spec::{ModuleSpec, PluginNames};
use crate::stream::{
    Cancelled, HttpCallRequest, HttpCallResponse, HttpStream, LocalResponse, Phase, SharedStream, StreamAction,
};

/// A context known to the VM.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextEntry {
    /// Index of its plugin in [`HostState::plugins`].
    pub plugin: usize,
    /// Its root context (itself for a root context).
    pub root_id: u32,
}

impl ContextEntry {
    pub(crate) fn is_root(&self, id: u32) -> bool {
        self.root_id == id
    }
}

/// State of the callback in progress.
#[derive(Default)]
pub(crate) struct CallFrame {
    /// The context the host called into.
    pub context_id: u32,
    /// Set by `proxy_set_effective_context`: host calls act on it instead.
    pub effective_context: Option<u32>,
    pub phase: Phase,
    /// The callback's `end_of_stream` (body callbacks): in the last one, a
    /// message without trailers may be given some (Envoy's
    /// `addDecodedTrailers` / `addEncodedTrailers`).
    pub end_of_stream: bool,
    /// The plugin configuration, readable during start and configure only.
    pub plugin_configuration: Option<Bytes>,
    /// What the plugin decided about the stream it was called for.
    pub outcome: CallOutcome,
}

/// Decisions a plugin makes about the stream of its own header callback,
/// collected when the callback returns.
#[derive(Default)]
pub(crate) struct CallOutcome {
    /// `proxy_send_local_response`.
    pub local_response: Option<LocalResponse>,
    /// `proxy_continue_stream` (a pause returned afterwards is void).
    pub resumed: bool,
    /// `proxy_close_stream`.
    pub closed: bool,
}

/// A tick period a root context asked for: the embedder arms a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickRequest {
    /// The root context to call `proxy_on_tick` on.
    pub context_id: u32,
    /// Period in milliseconds; 0 stops the timer.
    pub period_ms: u32,
}

/// The store data of one VM instance.
pub struct HostState {
    pub(crate) module: Arc<ModuleSpec>,
    /// Which instance this is, for what it asks of the embedder.
    pub(crate) instance: InstanceId,
    /// Memory and table limits (wasmtime's store limiter).
    pub(crate) limits: StoreLimits,
    /// Set while the guest's allocator runs: host calls are refused then.
    pub(crate) in_allocator: bool,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) mailbox: Arc<dyn ThreadMailbox>,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<(i32,), i32>>,
    pub(crate) plugins: Vec<Arc<PluginNames>>,
    /// Context ids are small sequential numbers: a fast, non-keyed hash suits them.
    pub(crate) contexts: FxHashMap<u32, ContextEntry>,
    pub(crate) call: CallFrame,
    /// The CPU time the entry into the plugin in progress may still use.
    pub(crate) cpu_budget: crate::cpu_budget::CpuBudget,
    /// The stream lent to the callback in progress (none in a root
    /// context's own callbacks).
    pub(crate) stream: Option<SharedStream>,
    pub(crate) tick_requests: Vec<TickRequest>,
    /// Metrics this VM defined, by id.
    pub(crate) metric_ids: MetricIds,
    /// Streams waiting for their plugin to resume them, with the phase they
    /// paused in: a callback acting on their context (through
    /// `proxy_set_effective_context`) reads and changes them.
    pub(crate) parked: FxHashMap<u32, (SharedStream, Phase)>,
    /// Stream actions asked for during the callback in progress.
    pub(crate) stream_actions: Vec<(u32, StreamAction)>,
    /// HTTP calls made during the callback in progress.
    pub(crate) http_calls: Vec<HttpCallRequest>,
    pub(crate) last_http_call_token: u32,
    /// HTTP calls not answered yet, by token: the context that made each
    /// (a stream's calls end with it).
    pub(crate) http_call_tokens: FxHashMap<u32, u32>,
    /// The response being delivered by `proxy_on_http_call_response`.
    pub(crate) http_call_response: Option<HttpCallResponse>,
    /// What `proxy_get_status` reports: a status code and a message.
    pub(crate) status: (u32, Bytes),
    /// Values root contexts set with `proxy_set_property`.
    pub(crate) root_properties: Vec<(Bytes, Bytes)>,
    /// Properties declared with Envoy's `declare_property`, by name.
    pub(crate) declared: FxHashMap<Bytes, DeclaredProperty>,
    /// CEL expressions compiled with Envoy's `expr_create`.
    pub(crate) expressions: crate::attributes::Expressions,
    /// gRPC calls and streams asked for during the callback in progress.
    pub(crate) grpc_commands: Vec<GrpcCommand>,
    /// Open gRPC calls and streams, by token.
    pub(crate) grpc_tokens: FxHashMap<u32, OpenGrpc>,
    pub(crate) last_grpc_token: u32,
    /// What a gRPC callback in progress delivers (metadata or a message).
    pub(crate) grpc_received: Option<GrpcEvent>,
    /// Root contexts that answered `proxy_on_done` with false at shutdown:
    /// they finish when they call `proxy_done`.
    pub(crate) pending_done: Vec<u32>,
    /// Root contexts that called `proxy_done` during the callback in
    /// progress; `proxy_on_delete` follows once it returns.
    pub(crate) done_roots: Vec<u32>,
    /// Calls no longer waited for (their stream ended), for the embedder to stop.
    pub(crate) cancelled: Vec<Cancelled>,
}

/// A property declared with `declare_property`: how it may be set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeclaredProperty {
    /// Set once per stream; a second set is `BadArgument`.
    pub readonly: bool,
}

/// A unary call or a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrpcKind {
    Call,
    Stream,
}

/// An open gRPC call or stream: its kind and the context that opened it.
///
/// As in Envoy, a token outlives the exchange until the plugin is done
/// with it: a call's during its last callback, a stream's after the peer
/// closed it until the plugin closes or cancels it too (both get `Ok`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenGrpc {
    pub kind: GrpcKind,
    pub origin: u32,
    /// The plugin closed its side of the stream.
    pub local_closed: bool,
    /// The exchange is over on the wire (the peer closed, or a call's
    /// answer is being delivered): nothing more is sent for it.
    pub remote_closed: bool,
}

impl OpenGrpc {
    pub(crate) fn new(kind: GrpcKind, origin: u32) -> Self {
        OpenGrpc { kind, origin, local_closed: false, remote_closed: false }
    }
}

impl HostState {
    pub(crate) fn new(
        module: Arc<ModuleSpec>,
        instance: InstanceId,
        memory_bytes: usize,
        shared: Arc<SharedState>,
        mailbox: Arc<dyn ThreadMailbox>,
    ) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .tables(16)
            .trap_on_grow_failure(false)
            .build();
        HostState {
            module,
            instance,
            limits,
            in_allocator: false,
            shared,
            mailbox,
            memory: None,
            allocator: None,
            plugins: Vec::new(),
            contexts: FxHashMap::default(),
            call: CallFrame::default(),
            cpu_budget: Default::default(),
            stream: None,
            tick_requests: Vec::new(),
            metric_ids: MetricIds::default(),
            parked: FxHashMap::default(),
            stream_actions: Vec::new(),
            http_calls: Vec::new(),
            last_http_call_token: 0,
            http_call_tokens: FxHashMap::default(),
            http_call_response: None,
            status: (0, Bytes::new()),
            root_properties: Vec::new(),
            declared: FxHashMap::default(),
            expressions: Default::default(),
            grpc_commands: Vec::new(),
            grpc_tokens: FxHashMap::default(),
            last_grpc_token: 0,
            grpc_received: None,
            pending_done: Vec::new(),
            done_roots: Vec::new(),
            cancelled: Vec::new(),
        }
    }

    /// After the last event of a gRPC exchange was delivered: a call's token
    /// ends; a stream's ends once the plugin closed its side too (Envoy
    /// keeps it until then; at most [`MAX_PENDING_CALLS`] such are kept,
    /// the oldest let go first).
    pub(crate) fn release_grpc_token(&mut self, token: u32) {
        let Some(open) = self.grpc_tokens.get(&token) else { return };
        if open.kind == GrpcKind::Call || open.local_closed {
            self.grpc_tokens.remove(&token);
            return;
        }
        let mut closed: Vec<u32> =
            self.grpc_tokens.iter().filter(|(_, open)| open.remote_closed).map(|(&token, _)| token).collect();
        if closed.len() > MAX_PENDING_CALLS {
            closed.sort_unstable();
            let oldest = closed.len() - MAX_PENDING_CALLS;
            for token in &closed[..oldest] {
                self.grpc_tokens.remove(token);
            }
        }
    }

    /// HTTP and gRPC calls open now (a stream the peer closed no longer counts).
    pub(crate) fn open_calls(&self) -> usize {
        self.http_call_tokens.len() + self.grpc_tokens.values().filter(|open| !open.remote_closed).count()
    }

    /// The context host calls act on: the effective one if set, else the current one.
    pub(crate) fn acting_context_id(&self) -> u32 {
        self.call.effective_context.unwrap_or(self.call.context_id)
    }

    /// The acting context and its plugin, if it is a known context.
    pub(crate) fn acting_context(&self) -> Option<(u32, ContextEntry, &Arc<PluginNames>)> {
        let id = self.acting_context_id();
        let entry = *self.contexts.get(&id)?;
        Some((id, entry, &self.plugins[entry.plugin]))
    }

    /// The `proxy_log` prefix of the acting context: Envoy prints
    /// ` <root_id> <vm_id>` for root contexts and ` <name> <root_id> <vm_id>`
    /// for stream contexts.
    pub(crate) fn log_prefix(&self) -> &str {
        match self.acting_context() {
            Some((id, entry, plugin)) if entry.is_root(id) => &plugin.root_log_prefix,
            Some((_, _, plugin)) => &plugin.stream_log_prefix,
            // VM start (`_initialize`): no context yet.
            None => "",
        }
    }

    /// The stream the acting context may see, and the phase that decides
    /// how: the stream lent to the callback, or a parked stream whose
    /// context was made the effective one. `None` too if the stream is
    /// borrowed elsewhere (a callback of another context of the same
    /// stream acting on it).
    pub(crate) fn acting_stream(&self) -> Option<(Ref<'_, HttpStream>, Phase)> {
        let (cell, phase) = self.acting_cell()?;
        Some((cell.try_borrow().ok()?, phase))
    }

    pub(crate) fn acting_stream_mut(&self) -> Option<(RefMut<'_, HttpStream>, Phase)> {
        let (cell, phase) = self.acting_cell()?;
        Some((cell.try_borrow_mut().ok()?, phase))
    }

    fn acting_cell(&self) -> Option<(&SharedStream, Phase)> {
        let acting = self.acting_context_id();
        if acting == self.call.context_id {
            return Some((self.stream.as_ref()?, self.call.phase));
        }
        self.parked.get(&acting).map(|(stream, phase)| (stream, *phase))
    }

    /// The header map `map` if this callback may read it.
    pub(crate) fn readable_map(&self, map: MapType) -> Result<Borrowed<'_, HeaderMap>, Status> {
        match (map, &self.grpc_received) {
            (MapType::GrpcCallInitialMetadata, Some(GrpcEvent::InitialMetadata(m)))
            | (MapType::GrpcCallTrailingMetadata, Some(GrpcEvent::TrailingMetadata(m))) => {
                return Ok(Borrowed::Plain(m));
            }
            _ => {}
        }
        if let (Phase::HttpCallResponse, Some(response)) = (self.call.phase, &self.http_call_response) {
            match map {
                MapType::HttpCallResponseHeaders => return Ok(Borrowed::Plain(&response.headers)),
                MapType::HttpCallResponseTrailers => return Ok(Borrowed::Plain(&response.trailers)),
                _ => {}
            }
        }
        let at_end = self.at_body_end();
        let (s, phase) = self.acting_stream().ok_or(Status::BadArgument)?;
        let select: fn(&HttpStream) -> &HeaderMap = match (phase, map) {
            (Phase::RequestHeaders | Phase::Log, MapType::HttpRequestHeaders) => |s| &s.request_headers,
            (Phase::ResponseHeaders | Phase::Log, MapType::HttpResponseHeaders) => |s| &s.response_headers,
            (Phase::RequestTrailers | Phase::Log, MapType::HttpRequestTrailers) => |s| &s.request_trailers,
            (Phase::ResponseTrailers | Phase::Log, MapType::HttpResponseTrailers) => |s| &s.response_trailers,
            (Phase::RequestBody, MapType::HttpRequestTrailers) if at_end => |s| &s.request_trailers,
            (Phase::ResponseBody, MapType::HttpResponseTrailers) if at_end => |s| &s.response_trailers,
            _ => return Err(Status::BadArgument),
        };
        Ok(Borrowed::Cell(Ref::map(s, select)))
    }

    /// The header map `map` if this callback may change it.
    pub(crate) fn writable_map(&self, map: MapType) -> Result<RefMut<'_, HeaderMap>, Status> {
        let at_end = self.at_body_end();
        let (s, phase) = self.acting_stream_mut().ok_or(Status::BadArgument)?;
        let select: fn(&mut HttpStream) -> &mut HeaderMap = match (phase, map) {
            (Phase::RequestHeaders, MapType::HttpRequestHeaders) => |s| &mut s.request_headers,
            (Phase::ResponseHeaders, MapType::HttpResponseHeaders) => |s| &mut s.response_headers,
            (Phase::RequestTrailers, MapType::HttpRequestTrailers) => |s| &mut s.request_trailers,
            (Phase::ResponseTrailers, MapType::HttpResponseTrailers) => |s| &mut s.response_trailers,
            (Phase::RequestBody, MapType::HttpRequestTrailers) if at_end => |s| &mut s.request_trailers,
            (Phase::ResponseBody, MapType::HttpResponseTrailers) if at_end => |s| &mut s.response_trailers,
            _ => return Err(Status::BadArgument),
        };
        Ok(RefMut::map(s, select))
    }

    /// Whether this is the last body callback of the stream it was called
    /// for (not one acting on another stream): its trailers may be added.
    fn at_body_end(&self) -> bool {
        self.call.end_of_stream && self.acting_context_id() == self.call.context_id
    }

    /// The body a body callback (or a callback acting on a stream parked in
    /// one) may read.
    pub(crate) fn readable_body(&self, kind: BufferType) -> Result<Ref<'_, [u8]>, Status> {
        let (s, phase) = self.acting_stream().ok_or(Status::NotFound)?;
        let select = body_selector(phase, kind).ok_or(Status::NotFound)?;
        Ok(Ref::map(s, |s| &select(s)[..]))
    }

    /// The body a body callback may change.
    pub(crate) fn writable_body(&self, kind: BufferType) -> Result<RefMut<'_, Vec<u8>>, Status> {
        let (s, phase) = self.acting_stream_mut().ok_or(Status::NotFound)?;
        let select = body_selector_mut(phase, kind).ok_or(Status::NotFound)?;
        Ok(RefMut::map(s, select))
    }

    /// Whether the acting context is a stream that can be answered or
    /// resumed: the one in its header callback, or a parked one.
    pub(crate) fn acting_stream_context(&self) -> Option<u32> {
        let (id, entry, _) = self.acting_context()?;
        (!entry.is_root(id)).then_some(id)
    }
}

/// A value borrowed from the host's own state, or from a shared stream.
pub(crate) enum Borrowed<'a, T: ?Sized> {
    Plain(&'a T),
    Cell(Ref<'a, T>),
}

impl<T: ?Sized> std::ops::Deref for Borrowed<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Borrowed::Plain(value) => value,
            Borrowed::Cell(value) => value,
        }
    }
}

/// Which body of a stream a callback in `phase` reads as buffer `kind`. In
/// the trailers callback the body is what the filter held (as Envoy's
/// buffered body), e.g. the whole of a gRPC request.
fn body_selector(phase: Phase, kind: BufferType) -> Option<fn(&HttpStream) -> &Vec<u8>> {
    Some(match (phase, kind) {
        (Phase::RequestBody | Phase::RequestTrailers, BufferType::HttpRequestBody) => |s| &s.request_body,
        (Phase::ResponseBody | Phase::ResponseTrailers, BufferType::HttpResponseBody) => |s| &s.response_body,
        (Phase::DownstreamData, BufferType::DownstreamData) => |s| &s.downstream_data,
        (Phase::UpstreamData, BufferType::UpstreamData) => |s| &s.upstream_data,
        _ => return None,
    })
}

/// [`body_selector`], for changing the body.
fn body_selector_mut(phase: Phase, kind: BufferType) -> Option<fn(&mut HttpStream) -> &mut Vec<u8>> {
    Some(match (phase, kind) {
        (Phase::RequestBody | Phase::RequestTrailers, BufferType::HttpRequestBody) => |s| &mut s.request_body,
        (Phase::ResponseBody | Phase::ResponseTrailers, BufferType::HttpResponseBody) => |s| &mut s.response_body,
        (Phase::DownstreamData, BufferType::DownstreamData) => |s| &mut s.downstream_data,
        (Phase::UpstreamData, BufferType::UpstreamData) => |s| &mut s.upstream_data,
        _ => return None,
    })
}
