//! `vm_config.capability_restriction_config`: which host functions and
//! callbacks a module may use, as proxy-wasm-cpp-host enforces it.
//!
//! An empty list restricts nothing. Otherwise a `proxy_*` host function or
//! a WASI function the list does not name still links, but as a stub: it
//! logs `Attempted call to restricted ... capability: <name>` and answers
//! `InternalFailure` (WASI: `ENOTCAPABLE`, 76); and a `proxy_on_*`
//! callback it does not name is never called, as if not exported. The
//! allocator and the start functions are always available.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_abi::Status;
use wasmtime::{ExternType, Linker, Module, Val};

use crate::state::HostState;

/// WASI's "capability insufficient" error number.
const ENOTCAPABLE: i32 = 76;

/// The import modules a restriction applies to, and whether each is WASI.
fn restricted_module(module: &str) -> Option<bool> {
    match module {
        crate::hostcalls::MODULE => Some(false),
        "wasi_snapshot_preview1" | "wasi_unstable" => Some(true),
        _ => None,
    }
}

/// Whether `allowed` (empty: everything) lets a module use `name`.
pub(crate) fn allows(allowed: &[String], name: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a == name)
}

/// `linker`, with each import of `module` that `allowed` does not name
/// replaced by a stub. Each stub logs its first call (per process, at
/// error level), then answers quietly.
pub(crate) fn restrict(
    linker: &Linker<HostState>,
    module: &Module,
    allowed: &[String],
    origin: &str,
) -> wasmtime::Result<Linker<HostState>> {
    let mut restricted = linker.clone();
    restricted.allow_shadowing(true);
    for import in module.imports() {
        let (Some(wasi), ExternType::Func(ty)) = (restricted_module(import.module()), import.ty()) else { continue };
        let name = import.name();
        if (!wasi && !name.starts_with("proxy_")) || allows(allowed, name) {
            continue;
        }
        let kind = if wasi { "WASI" } else { "proxy-wasm" };
        let message = format!("Attempted call to restricted {kind} capability: {name} (plugin module {origin})");
        let logged = Arc::new(AtomicBool::new(false));
        let answer = if wasi { ENOTCAPABLE } else { Status::InternalFailure.code() };
        restricted.func_new(import.module(), name, ty.clone(), move |_, _, results| {
            if !logged.swap(true, Ordering::Relaxed) {
                tracing::error!(target: "wasm", "{message}; further calls are not logged");
            }
            if let Some(result) = results.first_mut() {
                *result = Val::I32(answer);
            }
            Ok(())
        })?;
    }
    Ok(restricted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_allows_everything_and_a_list_only_what_it_names() {
        assert!(allows(&[], "proxy_log"));
        let list = ["proxy_log".to_owned(), "fd_write".to_owned()];
        assert!(allows(&list, "proxy_log") && allows(&list, "fd_write"));
        assert!(!allows(&list, "proxy_http_call"));
    }
}
