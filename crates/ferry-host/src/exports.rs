//! The functions a plugin module exports and the host calls (callbacks),
//! declared in one table ([`CALLBACKS`]) from which the typed exports of an
//! instance, the signature check at load and the list the docs test reads
//! are derived.

use ferry_abi::AbiVersion;
use wasmtime::{ExternType, FuncType, Instance, Module, Store, TypedFunc, ValType};

use crate::hostcalls::Param;
use crate::state::HostState;

/// Which ABI versions an export is called with this signature in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abis {
    /// Every version.
    All,
    /// ABI 0.1.0 only.
    V0_1,
    /// ABI 0.2.0 and 0.2.1.
    V0_2,
}

impl Abis {
    fn includes(self, abi: AbiVersion) -> bool {
        match self {
            Abis::All => true,
            Abis::V0_1 => abi == AbiVersion::V0_1_0,
            Abis::V0_2 => abi != AbiVersion::V0_1_0,
        }
    }
}

/// One callback of the table.
#[derive(Clone, Copy, Debug)]
pub struct Callback {
    /// The export name.
    pub name: &'static str,
    /// Parameter types.
    pub params: &'static [Param],
    /// Whether it returns an `i32`.
    pub returns: bool,
    /// The ABI versions it has this signature in.
    pub abis: Abis,
}

macro_rules! param_kind {
    (i32) => {
        Param::I32
    };
}

macro_rules! returns {
    () => {
        false
    };
    (i32) => {
        true
    };
}

macro_rules! result_type {
    () => {
        ()
    };
    (i32) => {
        i32
    };
}

/// Declares the callbacks: `field = "export" (param types) -> result [abis]`.
macro_rules! callbacks {
    ($( $field:ident = $name:literal ( $($param:tt),* ) $(-> $result:tt)? [$abis:ident] ; )*) => {
        /// Every function of a module the host may call, with the signature it calls it with.
        pub const CALLBACKS: &[Callback] = &[
            $( Callback {
                name: $name,
                params: &[ $( param_kind!($param) ),* ],
                returns: returns!($($result)?),
                abis: Abis::$abis,
            }, )*
        ];

        /// The callbacks an instance exports, typed; `None` where it does
        /// not export one (or it is not called in its ABI version).
        pub(crate) struct Exports {
            $( pub(crate) $field: Option<TypedFunc<( $($param,)* ), result_type!($($result)?)>>, )*
        }

        impl Exports {
            /// Looks every callback up once per instance; a `proxy_on_*`
            /// callback that `allowed` does not name is left out.
            pub(crate) fn resolve(
                instance: &Instance,
                store: &mut Store<HostState>,
                abi: AbiVersion,
                allowed: &[String],
            ) -> Self {
                let allows = |name: &str| {
                    !name.starts_with("proxy_on_")
                        || name == "proxy_on_memory_allocate"
                        || crate::capabilities::allows(allowed, name)
                };
                Exports {
                    $( $field: if Abis::$abis.includes(abi) && allows($name) {
                        // Signatures were checked when the module was loaded.
                        instance.get_typed_func(&mut *store, $name).ok()
                    } else {
                        None
                    }, )*
                }
            }
        }
    };
}

callbacks! {
    // Integration: start functions and the allocator.
    initialize = "_initialize" () [All];
    start = "_start" () [All];
    main = "main" (i32, i32) -> i32 [All];
    main_void = "__main_void" () -> i32 [All];
    memory_allocate = "proxy_on_memory_allocate" (i32) -> i32 [All];
    malloc = "malloc" (i32) -> i32 [All];
    // Contexts.
    on_context_create = "proxy_on_context_create" (i32, i32) [All];
    on_vm_start = "proxy_on_vm_start" (i32, i32) -> i32 [All];
    on_configure = "proxy_on_configure" (i32, i32) -> i32 [All];
    on_done = "proxy_on_done" (i32) -> i32 [All];
    on_log = "proxy_on_log" (i32) [All];
    on_delete = "proxy_on_delete" (i32) [All];
    // Root contexts.
    on_tick = "proxy_on_tick" (i32) [All];
    on_queue_ready = "proxy_on_queue_ready" (i32, i32) [All];
    on_http_call_response = "proxy_on_http_call_response" (i32, i32, i32, i32, i32) [All];
    on_grpc_receive_initial_metadata = "proxy_on_grpc_receive_initial_metadata" (i32, i32, i32) [All];
    on_grpc_receive = "proxy_on_grpc_receive" (i32, i32, i32) [All];
    on_grpc_receive_trailing_metadata = "proxy_on_grpc_receive_trailing_metadata" (i32, i32, i32) [All];
    on_grpc_close = "proxy_on_grpc_close" (i32, i32, i32) [All];
    // HTTP streams: header callbacks gained `end_of_stream` in ABI 0.2.0.
    on_request_headers_v0_1 = "proxy_on_request_headers" (i32, i32) -> i32 [V0_1];
    on_request_headers = "proxy_on_request_headers" (i32, i32, i32) -> i32 [V0_2];
    on_response_headers_v0_1 = "proxy_on_response_headers" (i32, i32) -> i32 [V0_1];
    on_response_headers = "proxy_on_response_headers" (i32, i32, i32) -> i32 [V0_2];
    on_request_body = "proxy_on_request_body" (i32, i32, i32) -> i32 [All];
    on_response_body = "proxy_on_response_body" (i32, i32, i32) -> i32 [All];
    on_request_trailers = "proxy_on_request_trailers" (i32, i32) -> i32 [All];
    on_response_trailers = "proxy_on_response_trailers" (i32, i32) -> i32 [All];
    // TCP streams.
    on_new_connection = "proxy_on_new_connection" (i32) -> i32 [All];
    on_downstream_data = "proxy_on_downstream_data" (i32, i32, i32) -> i32 [All];
    on_upstream_data = "proxy_on_upstream_data" (i32, i32, i32) -> i32 [All];
    on_downstream_connection_close = "proxy_on_downstream_connection_close" (i32, i32) [All];
    on_upstream_connection_close = "proxy_on_upstream_connection_close" (i32, i32) [All];
}

/// Checks that the module exports a memory, and that each callback it
/// exports has the signature the host calls it with in `abi`.
pub(crate) fn check(module: &Module, abi: AbiVersion) -> Result<(), String> {
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => return Err("the module exports no memory named `memory`".into()),
    }
    for callback in CALLBACKS.iter().filter(|c| c.abis.includes(abi)) {
        let Some(ty) = module.get_export(callback.name) else { continue };
        let ExternType::Func(func) = ty else {
            return Err(format!("export `{}` is not a function", callback.name));
        };
        if !same_signature(&func, callback) {
            return Err(format!(
                "export `{}` has signature {func} but ABI {abi} calls it as {}",
                callback.name,
                describe(callback)
            ));
        }
    }
    Ok(())
}

fn same_signature(func: &FuncType, callback: &Callback) -> bool {
    let params_match = func.params().len() == callback.params.len()
        && func.params().zip(callback.params).all(|(actual, expected)| match expected {
            Param::I32 => matches!(actual, ValType::I32),
            Param::I64 => matches!(actual, ValType::I64),
        });
    let results_match = match (func.results().len(), callback.returns) {
        (0, false) => true,
        (1, true) => func.results().all(|r| matches!(r, ValType::I32)),
        _ => false,
    };
    params_match && results_match
}

fn describe(callback: &Callback) -> String {
    let params: Vec<&str> = callback.params.iter().map(|p| if *p == Param::I64 { "i64" } else { "i32" }).collect();
    let results = if callback.returns { " (result i32)" } else { "" };
    format!("(func (param {}){results})", params.join(" "))
}
