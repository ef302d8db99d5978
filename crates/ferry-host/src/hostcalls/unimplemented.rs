//! Host functions a plugin may import that this host does not implement:
//! every `proxy_*` function of the ABI is implemented; what is left are
//! Envoy's own extensions, marked `[unimplemented]` in the table of
//! [`super::HOST_FUNCTIONS`]. They link (so a plugin that never calls them
//! runs), return `Unimplemented` (12), and are logged once per process
//! when first called. Also here: the few non-proxy imports of modules
//! built with Emscripten.

use ferry_abi::Status;
use wasmtime::Linker;

use super::{Caller, HostResult, MODULE};
use crate::state::HostState;

/// Envoy's asynchronous DNS lookup (answered through `envoy_on_resolve_dns`).
pub(super) fn envoy_resolve_dns(caller: Caller<'_>, _: i32, _: i32, _: i32) -> HostResult {
    Ok(unimplemented(&caller, "envoy_resolve_dns"))
}

fn unimplemented(caller: &Caller<'_>, name: &'static str) -> i32 {
    let state = caller.data();
    if state.shared.first_report(name, "unimplemented") {
        tracing::warn!(
            target: "wasm",
            "plugin module {} (vm_id '{}') called {name}, which ferry does not implement yet; \
             it returns Unimplemented (12). Further calls are not logged.",
            state.module.origin(),
            state.module.vm_id(),
        );
    }
    Status::Unimplemented.code()
}

/// Imports of modules built with Emscripten (C++ SDK), as in proxy-wasm-cpp-host.
pub(super) fn add_compat(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "emscripten_notify_memory_growth", |_: i32| {})?;
    linker.func_wrap(MODULE, "pthread_equal", |a: i32, b: i32| i32::from(a == b))?;
    Ok(())
}
