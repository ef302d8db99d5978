//! Host functions a plugin may import that this host does not implement
//! yet: every `proxy_*` function of the ABI is implemented; what is left are
//! Envoy's own extensions. They link (so a plugin that never calls them runs), return
//! `Unimplemented` (12), and are logged once per process when first called.

use ferry_abi::Status;
use wasmtime::{FuncType, Linker, Val, ValType};

use super::MODULE;
use crate::state::HostState;

/// Each unimplemented function with its parameters: `i` = i32, `I` = i64.
/// All return an i32 status.
pub const UNIMPLEMENTED: &[(&str, &str)] = &[
    // Envoy's asynchronous DNS lookup (answered through `envoy_on_resolve_dns`).
    ("envoy_resolve_dns", "iii"),
];

/// Wasm parameter types from a signature string.
pub(crate) fn params_of(signature: &str) -> Vec<ValType> {
    signature.chars().map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 }).collect()
}

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for &(name, signature) in UNIMPLEMENTED {
        let ty = FuncType::new(linker.engine(), params_of(signature), [ValType::I32]);
        linker.func_new(MODULE, name, ty, move |caller, _params, results| {
            let state = caller.data();
            if state.shared.first_unimplemented_call(name) {
                tracing::warn!(
                    target: "wasm",
                    "plugin module {} (vm_id '{}') called {name}, which ferry does not implement yet; \
                     it returns Unimplemented (12). Further calls are not logged.",
                    state.module.origin(),
                    state.module.vm_id(),
                );
            }
            results[0] = Val::I32(Status::Unimplemented.code());
            Ok(())
        })?;
    }
    // Imports of modules built with Emscripten (C++ SDK), as in proxy-wasm-cpp-host.
    linker.func_wrap(MODULE, "emscripten_notify_memory_growth", |_: i32| {})?;
    linker.func_wrap(MODULE, "pthread_equal", |a: i32, b: i32| i32::from(a == b))?;
    Ok(())
}
