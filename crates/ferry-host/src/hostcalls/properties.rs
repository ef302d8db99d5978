//! Properties (`proxy_get_property`): the plugin's own identity so far.

use ferry_abi::Status;
use wasmtime::Linker;

use super::{Caller, HostResult, MODULE, check};
use crate::memory::{return_copy, slice, split};
use crate::state::HostState;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "proxy_get_property",
        |mut caller: Caller<'_>, path_ptr: i32, path_len: i32, ptr_out: i32, size_out: i32| -> HostResult {
            let (mem, state) = split(&mut caller);
            // SDKs join path segments with NUL; a trailing NUL may end the path.
            let path = check!(slice(mem, path_ptr, path_len));
            let path = path.strip_suffix(b"\0").unwrap_or(path);
            let value = check!(property(state, path).ok_or(Status::NotFound));
            Ok(return_copy(&mut caller, value.as_bytes(), ptr_out, size_out)?.code())
        },
    )?;
    Ok(())
}

/// The value of property `path` (segments separated by NUL).
fn property(state: &HostState, path: &[u8]) -> Option<String> {
    let (_, _, plugin) = state.acting_context()?;
    match path {
        b"plugin_name" => Some(plugin.name.clone()),
        b"plugin_root_id" => Some(plugin.root_id.clone()),
        b"plugin_vm_id" => Some(state.module.vm_id().to_owned()),
        _ => None,
    }
}
