//! Buffers: the VM and plugin configuration (bodies and call responses come
//! with the data path that produces them).

use bytes::Bytes;
use ferry_abi::{BufferType, Status};
use wasmtime::Linker;

use super::{Caller, HostResult, MODULE, check, ok};
use crate::memory::{return_copy, split, write_u32};
use crate::state::HostState;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_>, buffer: i32, start: i32, max_size: i32, ptr_out: i32, size_out: i32| -> HostResult {
            let kind = check!(BufferType::from_raw(buffer as u32).ok_or(Status::BadArgument));
            let bytes = check!(buffer_of(caller.data(), kind));
            let (start, max_size) = (start as u32 as usize, max_size as u32 as usize);
            if start > bytes.len() {
                return Ok(Status::BadArgument.code());
            }
            let end = start.saturating_add(max_size).min(bytes.len());
            Ok(return_copy(&mut caller, &bytes[start..end], ptr_out, size_out)?.code())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proxy_get_buffer_status",
        |mut caller: Caller<'_>, buffer: i32, size_out: i32, flags_out: i32| -> HostResult {
            let kind = check!(BufferType::from_raw(buffer as u32).ok_or(Status::BadArgument));
            let len = check!(buffer_of(caller.data(), kind)).len();
            let (mem, _) = split(&mut caller);
            check!(write_u32(mem, size_out, len as u32));
            check!(write_u32(mem, flags_out, 0));
            ok()
        },
    )?;
    // ABI 0.1.0: the plugin configuration, during proxy_on_configure.
    linker.func_wrap(
        MODULE,
        "proxy_get_configuration",
        |mut caller: Caller<'_>, ptr_out: i32, size_out: i32| -> HostResult {
            let bytes = check!(buffer_of(caller.data(), BufferType::PluginConfiguration));
            Ok(return_copy(&mut caller, &bytes, ptr_out, size_out)?.code())
        },
    )?;
    Ok(())
}

/// The bytes of buffer `kind`, if the callback in progress has it.
fn buffer_of(state: &HostState, kind: BufferType) -> Result<Bytes, Status> {
    match kind {
        BufferType::VmConfiguration => Ok(state.module.spec.vm_configuration.clone()),
        BufferType::PluginConfiguration => state.call.plugin_configuration.clone().ok_or(Status::NotFound),
        BufferType::HttpCallResponseBody => {
            state.http_call_response.as_ref().map(|r| r.body.clone()).ok_or(Status::NotFound)
        }
        _ => Err(Status::NotFound),
    }
}
