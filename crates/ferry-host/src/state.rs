//! The data a VM's store carries: what host functions need to know about the
//! VM, its contexts and the callback in progress.

use std::sync::Arc;

use bytes::Bytes;
use ferry_abi::{MapType, Status};
use rustc_hash::FxHashMap;
use wasmtime::{Memory, TypedFunc};

use crate::headers::HeaderMap;
use crate::host::SharedState;
use crate::mailbox::ThreadMailbox;
use crate::metrics::MetricIds;
use crate::module::PluginModule;
use crate::plugin::Plugin;
use crate::stream::{HttpStream, LocalResponse, Phase};

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
    /// The plugin configuration, readable during start and configure only.
    pub plugin_configuration: Option<Bytes>,
    /// Set by `proxy_send_local_response`.
    pub local_response: Option<LocalResponse>,
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
    pub(crate) module: Arc<PluginModule>,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) mailbox: Arc<dyn ThreadMailbox>,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    pub(crate) plugins: Vec<Arc<Plugin>>,
    /// Context ids are small sequential numbers: a fast, non-keyed hash suits them.
    pub(crate) contexts: FxHashMap<u32, ContextEntry>,
    pub(crate) call: CallFrame,
    /// The stream lent to the callback in progress.
    pub(crate) stream: HttpStream,
    pub(crate) tick_requests: Vec<TickRequest>,
    /// Metrics this VM defined, by id.
    pub(crate) metric_ids: MetricIds,
}

impl HostState {
    pub(crate) fn new(module: Arc<PluginModule>, shared: Arc<SharedState>, mailbox: Arc<dyn ThreadMailbox>) -> Self {
        HostState {
            module,
            shared,
            mailbox,
            memory: None,
            allocator: None,
            plugins: Vec::new(),
            contexts: FxHashMap::default(),
            call: CallFrame::default(),
            stream: HttpStream::default(),
            tick_requests: Vec::new(),
            metric_ids: MetricIds::default(),
        }
    }

    /// The context host calls act on: the effective one if set, else the current one.
    pub(crate) fn acting_context_id(&self) -> u32 {
        self.call.effective_context.unwrap_or(self.call.context_id)
    }

    /// The acting context and its plugin, if it is a known context.
    pub(crate) fn acting_context(&self) -> Option<(u32, ContextEntry, &Arc<Plugin>)> {
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

    /// The header map `map` if this callback may read it.
    pub(crate) fn readable_map(&self, map: MapType) -> Result<&HeaderMap, Status> {
        let s = &self.stream;
        match (self.call.phase, map) {
            (Phase::RequestHeaders | Phase::Log, MapType::HttpRequestHeaders) => Ok(&s.request_headers),
            (Phase::ResponseHeaders | Phase::Log, MapType::HttpResponseHeaders) => Ok(&s.response_headers),
            (Phase::Log, MapType::HttpResponseTrailers) => Ok(&s.response_trailers),
            _ => Err(Status::BadArgument),
        }
    }

    /// The header map `map` if this callback may change it.
    pub(crate) fn writable_map(&mut self, map: MapType) -> Result<&mut HeaderMap, Status> {
        let s = &mut self.stream;
        match (self.call.phase, map) {
            (Phase::RequestHeaders, MapType::HttpRequestHeaders) => Ok(&mut s.request_headers),
            (Phase::ResponseHeaders, MapType::HttpResponseHeaders) => Ok(&mut s.response_headers),
            _ => Err(Status::BadArgument),
        }
    }
}
