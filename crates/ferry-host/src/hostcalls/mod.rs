//! The `proxy_*` host functions, one module per ABI area, all declared in
//! one table ([`HOST_FUNCTIONS`]) from which the linker and the lists the
//! docs and the hostile-plugin suite read are derived.
//!
//! Each function is a thin shim: check enum arguments, read guest memory
//! (bounds-checked), act on the store's [`HostState`], write results back
//! through the guest's allocator, return a [`Status`]. A host function only
//! traps when the guest's own allocator traps.
//!
//! While the guest's allocator runs (the host is handing it bytes), only
//! `proxy_log` may be called: every other `proxy_*` function returns
//! `InternalFailure`, so nothing the host is reading can change under it
//! (proxy-wasm-cpp-host restricts the allocator the same way).

mod buffers;
mod foreign;
mod grpc;
mod headers;
mod http_call;
pub(crate) mod log;
mod metrics;
mod properties;
mod shared;
mod signatures;
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

/// A Wasm value type of a host function parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `i32`: pointers, sizes, enums, ids.
    I32,
    /// `i64`: metric values.
    I64,
}

/// Whether the host implements a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented.
    Implemented,
    /// Links, returns `Unimplemented` (12) and is logged once per process.
    Unimplemented,
}

/// One host function of the table: its name and parameters (every one
/// returns an `i32` status).
#[derive(Clone, Copy, Debug)]
pub struct HostFunction {
    /// The import name, in module `env`.
    pub name: &'static str,
    /// Parameter types, in order.
    pub params: &'static [Param],
    /// Whether it is implemented.
    pub support: Support,
}

macro_rules! param_kind {
    (i32) => {
        Param::I32
    };
    (i64) => {
        Param::I64
    };
}

/// Declares the host functions: `name(arg: type, ...) => function` links
/// `function` as `env.name`, behind the allocator guard; `[allocator]`
/// marks one the guest's allocator may call; `[unimplemented]` one that
/// only answers `Unimplemented`.
macro_rules! host_functions {
    ($( $name:ident ( $($arg:ident : $ty:tt),* ) $([$flag:ident])? => $path:path ; )*) => {
        /// Every host function of module `env`, in one table.
        pub const HOST_FUNCTIONS: &[HostFunction] = &[
            $( HostFunction {
                name: stringify!($name),
                params: &[ $( param_kind!($ty) ),* ],
                support: host_functions!(@support $($flag)?),
            }, )*
        ];

        /// Links every host function into `linker`.
        pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            $(
                linker.func_wrap(MODULE, stringify!($name), |caller: Caller<'_>, $($arg: $ty),*| -> HostResult {
                    if !host_functions!(@allocator $($flag)?) && caller.data().in_allocator {
                        return Ok(refused_in_allocator(&caller, stringify!($name)));
                    }
                    $path(caller, $($arg),*)
                })?;
            )*
            unimplemented::add_compat(linker)
        }
    };
    (@support unimplemented) => { Support::Unimplemented };
    (@support $other:ident) => { Support::Implemented };
    (@support) => { Support::Implemented };
    (@allocator allocator) => { true };
    (@allocator $other:ident) => { false };
    (@allocator) => { false };
}

host_functions! {
    proxy_log(level: i32, message: i32, size: i32) [allocator] => log::proxy_log;
    proxy_get_log_level(level_out: i32) => log::proxy_get_log_level;
    proxy_get_current_time_nanoseconds(time_out: i32) => log::proxy_get_current_time_nanoseconds;
    proxy_set_tick_period_milliseconds(period: i32) => log::proxy_set_tick_period_milliseconds;
    proxy_get_buffer_bytes(buffer: i32, start: i32, max_size: i32, ptr_out: i32, size_out: i32) => buffers::proxy_get_buffer_bytes;
    proxy_set_buffer_bytes(buffer: i32, start: i32, size: i32, data: i32, data_size: i32) => buffers::proxy_set_buffer_bytes;
    proxy_get_buffer_status(buffer: i32, size_out: i32, flags_out: i32) => buffers::proxy_get_buffer_status;
    proxy_get_configuration(ptr_out: i32, size_out: i32) => buffers::proxy_get_configuration;
    proxy_get_header_map_pairs(map: i32, ptr_out: i32, size_out: i32) => headers::proxy_get_header_map_pairs;
    proxy_set_header_map_pairs(map: i32, pairs: i32, size: i32) => headers::proxy_set_header_map_pairs;
    proxy_get_header_map_value(map: i32, key: i32, key_size: i32, ptr_out: i32, size_out: i32) => headers::proxy_get_header_map_value;
    proxy_add_header_map_value(map: i32, key: i32, key_size: i32, value: i32, value_size: i32) => headers::proxy_add_header_map_value;
    proxy_replace_header_map_value(map: i32, key: i32, key_size: i32, value: i32, value_size: i32) => headers::proxy_replace_header_map_value;
    proxy_remove_header_map_value(map: i32, key: i32, key_size: i32) => headers::proxy_remove_header_map_value;
    proxy_get_header_map_size(map: i32, size_out: i32) => headers::proxy_get_header_map_size;
    proxy_register_shared_queue(name: i32, name_size: i32, id_out: i32) => shared::proxy_register_shared_queue;
    proxy_resolve_shared_queue(vm_id: i32, vm_id_size: i32, name: i32, name_size: i32, id_out: i32) => shared::proxy_resolve_shared_queue;
    proxy_enqueue_shared_queue(id: i32, value: i32, value_size: i32) => shared::proxy_enqueue_shared_queue;
    proxy_dequeue_shared_queue(id: i32, ptr_out: i32, size_out: i32) => shared::proxy_dequeue_shared_queue;
    proxy_get_shared_data(key: i32, key_size: i32, ptr_out: i32, size_out: i32, cas_out: i32) => shared::proxy_get_shared_data;
    proxy_set_shared_data(key: i32, key_size: i32, value: i32, value_size: i32, cas: i32) => shared::proxy_set_shared_data;
    proxy_get_property(path: i32, path_size: i32, ptr_out: i32, size_out: i32) => properties::proxy_get_property;
    proxy_set_property(path: i32, path_size: i32, value: i32, value_size: i32) => properties::proxy_set_property;
    proxy_send_local_response(status: i32, details: i32, details_size: i32, body: i32, body_size: i32, headers: i32, headers_size: i32, grpc_status: i32) => stream::proxy_send_local_response;
    proxy_set_effective_context(context_id: i32) => stream::proxy_set_effective_context;
    proxy_done() => stream::proxy_done;
    proxy_continue_stream(stream_type: i32) => stream::proxy_continue_stream;
    proxy_close_stream(stream_type: i32) => stream::proxy_close_stream;
    proxy_continue_request() => stream::proxy_continue_request;
    proxy_continue_response() => stream::proxy_continue_response;
    proxy_clear_route_cache() => stream::proxy_clear_route_cache;
    proxy_define_metric(kind: i32, name: i32, name_size: i32, id_out: i32) => metrics::proxy_define_metric;
    proxy_increment_metric(id: i32, offset: i64) => metrics::proxy_increment_metric;
    proxy_record_metric(id: i32, value: i64) => metrics::proxy_record_metric;
    proxy_get_metric(id: i32, value_out: i32) => metrics::proxy_get_metric;
    proxy_http_call(upstream: i32, upstream_size: i32, headers: i32, headers_size: i32, body: i32, body_size: i32, trailers: i32, trailers_size: i32, timeout_ms: i32, token_out: i32) => http_call::proxy_http_call;
    proxy_get_status(code_out: i32, ptr_out: i32, size_out: i32) => http_call::proxy_get_status;
    proxy_call_foreign_function(name: i32, name_size: i32, args: i32, args_size: i32, ptr_out: i32, size_out: i32) => foreign::proxy_call_foreign_function;
    proxy_grpc_call(upstream: i32, upstream_size: i32, service: i32, service_size: i32, method: i32, method_size: i32, metadata: i32, metadata_size: i32, message: i32, message_size: i32, timeout_ms: i32, token_out: i32) => grpc::proxy_grpc_call;
    proxy_grpc_stream(upstream: i32, upstream_size: i32, service: i32, service_size: i32, method: i32, method_size: i32, metadata: i32, metadata_size: i32, token_out: i32) => grpc::proxy_grpc_stream;
    proxy_grpc_send(token: i32, message: i32, message_size: i32, end_stream: i32) => grpc::proxy_grpc_send;
    proxy_grpc_cancel(token: i32) => grpc::proxy_grpc_cancel;
    proxy_grpc_close(token: i32) => grpc::proxy_grpc_close;
    envoy_resolve_dns(address: i32, address_size: i32, token_out: i32) [unimplemented] => unimplemented::envoy_resolve_dns;
}

/// A host call from inside the guest's allocator: refused, logged once per process.
fn refused_in_allocator(caller: &Caller<'_>, function: &'static str) -> i32 {
    let state = caller.data();
    if state.shared.first_report(function, "allocator") {
        tracing::error!(
            target: "wasm",
            "plugin module {} (vm_id '{}') called {function} from its memory allocator; \
             it returns InternalFailure (only proxy_log is allowed there). Further calls are not logged.",
            state.module.origin(),
            state.module.vm_id(),
        );
    }
    Status::InternalFailure.code()
}

/// Names of the `proxy_*` functions this host implements, for docs and tests.
pub fn implemented() -> impl Iterator<Item = &'static str> {
    HOST_FUNCTIONS.iter().filter(|f| f.support == Support::Implemented).map(|f| f.name)
}

/// Names of the host functions that link but are not implemented.
pub fn unimplemented() -> impl Iterator<Item = &'static str> {
    HOST_FUNCTIONS.iter().filter(|f| f.support == Support::Unimplemented).map(|f| f.name)
}
