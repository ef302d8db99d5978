//! The `proxy_*` host functions, one module per ABI area, all linked under
//! the import module `env` by [`add_to_linker`].
//!
//! Each function is a thin shim: check enum arguments, read guest memory
//! (bounds-checked), act on the store's [`HostState`], write results back
//! through the guest's allocator, return a [`Status`]. A host function only
//! traps when the guest's own allocator traps.

mod buffers;
mod foreign;
mod grpc;
mod headers;
mod http_call;
pub(crate) mod log;
mod metrics;
mod properties;
mod shared;
mod stream;
mod unimplemented;

use ferry_abi::Status;
use wasmtime::Linker;

use crate::state::HostState;

/// The import module of every `proxy_*` function.
pub(crate) const MODULE: &str = "env";

/// Caller type of every host function.
pub(crate) type Caller<'a> = wasmtime::Caller<'a, HostState>;

/// Returns the status from the enclosing host function when `$e` is an error.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(status) => return Ok(ferry_abi::Status::code(status)),
        }
    };
}
pub(crate) use check;

/// Result of a host function: a status for the guest, or a trap.
pub(crate) type HostResult = wasmtime::Result<i32>;

pub(crate) fn ok() -> HostResult {
    Ok(Status::Ok.code())
}

/// Links every `proxy_*` function (all ABI versions) into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add(linker)?;
    metrics::add(linker)?;
    buffers::add(linker)?;
    headers::add(linker)?;
    http_call::add(linker)?;
    shared::add(linker)?;
    properties::add(linker)?;
    stream::add(linker)?;
    foreign::add(linker)?;
    grpc::add(linker)?;
    unimplemented::add(linker)?;
    Ok(())
}

/// Names of the `proxy_*` functions this host implements, for docs and tests.
pub const IMPLEMENTED: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_configuration",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_size",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_get_property",
    "proxy_send_local_response",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    "proxy_http_call",
    "proxy_get_status",
    "proxy_set_property",
    "proxy_set_buffer_bytes",
    "proxy_call_foreign_function",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
];

pub use unimplemented::UNIMPLEMENTED;
pub(crate) use unimplemented::params_of;
