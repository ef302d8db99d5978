//! The Proxy-Wasm host: runs plugins on wasmtime and implements the ABI.
//!
//! This crate knows nothing about sockets or HTTP libraries. Its embedder
//! (the proxy, or a test harness) gives it module bytes and plugin
//! configurations, lends it header maps for the duration of a callback, and
//! delivers cross-thread messages through a [`ThreadMailbox`].
//!
//! - [`Host`]: one per process. Compilers (engines and linkers), loaded
//!   modules, shared queues and shared data.
//! - [`PluginModule`]: a compiled module (one per distinct `vm_config`).
//! - [`Plugin`]: a root context's identity and configuration in a module.
//! - [`WasmThread`]: the VM instances of one thread and every call into them.

mod attributes;
mod capabilities;
mod compiler;
mod cpu_budget;
mod error;
mod exports;
mod facts;
mod failure;
mod grpc;
mod headers;
mod host;
mod hostcalls;
mod limits;
mod mailbox;
mod memory;
mod metrics;
mod module;
mod plugin;
mod shared;
mod shared_data;
mod shared_queue;
mod spec;
mod state;
mod stream;
mod thread;
mod vm;
mod wasi;

pub use attributes::{Locality, Node};
pub use compiler::{Compilation, TIER_UP_WAIT, Tier};
pub use error::{LoadError, PluginFailure, StartError};
pub use exports::{Abis, CALLBACKS, Callback};
pub use facts::{CertificateFacts, ClusterFacts, ListenerFacts, Metadata, RouteFacts, TlsFacts, XdsInfo};
pub use failure::{Backoff, FailurePolicy, Health, HoldPolicy, PluginStats};
pub use grpc::{GrpcCommand, GrpcEvent, GrpcOpen, status as grpc_status};
pub use headers::HeaderMap;
pub use host::{Host, HostOptions, WasmLogLevel, module_spec};
pub use hostcalls::{HOST_FUNCTIONS, HostFunction, Param, Support, implemented, unimplemented};
pub use limits::{
    EPOCH_TICK, Limits, MAX_DECLARED_PROPERTIES, MAX_EXPRESSIONS, MAX_FOREIGN_RESULT, MAX_LOG_MESSAGE, MAX_METRICS,
    MAX_PENDING_CALLS, MAX_QUEUED_BYTES_PER_VM_ID, MAX_SHARED_DATA_BYTES, MAX_TABLE_ELEMENTS, MAX_VALUE_BYTES,
};
pub use mailbox::{InstanceId, QueueReady, ThreadMailbox, VmKey};
pub use metrics::{BucketRule, HISTOGRAM_BUCKETS, HistogramValue, Metric, MetricValue, Metrics, sanitize_stat_name};
pub use module::PluginModule;
pub use plugin::Plugin;
pub use shared_data::SharedData;
pub use shared_queue::{
    ITEM_OVERHEAD, Overflow, QUEUE_OVERHEAD, QueueBounds, QueueBoundsRule, QueueCounts, QueueLink, QueueOwner,
    QueueStats, QueueTotals, SharedQueues,
};
pub use spec::ModuleSpec;
pub use state::{HostState, TickRequest};
pub use stream::{
    Cancelled, HttpCallRequest, HttpCallResponse, HttpStream, LocalResponse, SharedStream, StreamAction, StreamInfo,
    StreamSignal, Verdict, share,
};
pub use thread::{Effects, PluginHandle, StreamContext, TickChange, WasmThread};
pub use vm::StreamCallback;
