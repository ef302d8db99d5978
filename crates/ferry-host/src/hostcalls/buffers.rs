//! Buffers: configuration, HTTP bodies, TCP data, HTTP call responses and
//! gRPC messages, each readable in the callbacks Envoy makes it readable in.

use super::{Caller, HostResult, check, ok};
use crate::limits::MAX_VALUE_BYTES;
use crate::memory::{return_bytes, return_copy, slice, split, write_u32};
use crate::state::{Borrowed, HostState};
use ferry_abi::{BufferType, Status};

pub(super) fn proxy_get_buffer_bytes(
    mut caller: Caller<'_>,
    buffer: i32,
    start: i32,
    max_size: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let kind = check!(BufferType::from_raw(buffer as u32).ok_or(Status::BadArgument));
    let len = check!(buffer_of(caller.data(), kind)).len();
    let (start, max_size) = (start as u32 as usize, max_size as u32 as usize);
    if start > len {
        return Ok(Status::BadArgument.code());
    }
    let end = start.saturating_add(max_size).min(len);
    let status = return_bytes(&mut caller, end - start, ptr_out, size_out, |state, dest| {
        let Ok(bytes) = buffer_of(state, kind) else { return false };
        match bytes.get(start..end) {
            Some(bytes) if bytes.len() == dest.len() => {
                dest.copy_from_slice(bytes);
                true
            }
            _ => false,
        }
    })?;
    Ok(status.code())
}

pub(super) fn proxy_set_buffer_bytes(
    mut caller: Caller<'_>,
    buffer: i32,
    start: i32,
    size: i32,
    data_ptr: i32,
    data_len: i32,
) -> HostResult {
    let kind = check!(BufferType::from_raw(buffer as u32).ok_or(Status::BadArgument));
    let (mem, state) = split(&mut caller);
    let data = check!(slice(mem, data_ptr, data_len));
    if !matches!(
        kind,
        BufferType::HttpRequestBody
            | BufferType::HttpResponseBody
            | BufferType::DownstreamData
            | BufferType::UpstreamData
    ) {
        // Configuration and call responses are read-only.
        return Ok(Status::BadArgument.code());
    }
    let mut body = check!(state.writable_body(kind));
    check!(replace(&mut body, start as u32 as usize, size as u32 as usize, data));
    ok()
}

pub(super) fn proxy_get_buffer_status(
    mut caller: Caller<'_>,
    buffer: i32,
    size_out: i32,
    flags_out: i32,
) -> HostResult {
    let kind = check!(BufferType::from_raw(buffer as u32).ok_or(Status::BadArgument));
    let len = check!(buffer_of(caller.data(), kind)).len();
    let (mem, _) = split(&mut caller);
    check!(write_u32(mem, size_out, len as u32));
    check!(write_u32(mem, flags_out, 0));
    ok()
}

/// ABI 0.1.0: the plugin configuration, during `proxy_on_configure`.
pub(super) fn proxy_get_configuration(mut caller: Caller<'_>, ptr_out: i32, size_out: i32) -> HostResult {
    let bytes = check!(buffer_of(caller.data(), BufferType::PluginConfiguration)).to_vec();
    Ok(return_copy(&mut caller, &bytes, ptr_out, size_out)?.code())
}

/// Envoy's edits of a body: replace `size` bytes at the front with `data`
/// (`start` 0; `size` 0 prepends), or append (`start` at or past the end).
/// Anything else is a `BadArgument`, and so is a body that would grow past
/// [`MAX_VALUE_BYTES`].
fn replace(body: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    let kept = if start == 0 { body.len().saturating_sub(size) } else { body.len() };
    if kept.saturating_add(data.len()) > MAX_VALUE_BYTES {
        return Err(Status::BadArgument);
    }
    if start == 0 {
        body.splice(..size.min(body.len()), data.iter().copied());
    } else if start >= body.len() {
        body.extend_from_slice(data);
    } else {
        return Err(Status::BadArgument);
    }
    Ok(())
}

/// The bytes of buffer `kind`, if the callback in progress has it.
fn buffer_of(state: &HostState, kind: BufferType) -> Result<Borrowed<'_, [u8]>, Status> {
    let plain = Borrowed::Plain;
    match kind {
        BufferType::VmConfiguration => Ok(plain(&state.module.vm_configuration)),
        BufferType::PluginConfiguration => {
            state.call.plugin_configuration.as_deref().map(plain).ok_or(Status::NotFound)
        }
        BufferType::HttpCallResponseBody => {
            state.http_call_response.as_ref().map(|r| plain(&r.body[..])).ok_or(Status::NotFound)
        }
        BufferType::GrpcCallMessage => match &state.grpc_received {
            Some(crate::grpc::GrpcEvent::Message(message)) => Ok(plain(message)),
            _ => Err(Status::NotFound),
        },
        BufferType::HttpRequestBody
        | BufferType::HttpResponseBody
        | BufferType::DownstreamData
        | BufferType::UpstreamData => state.readable_body(kind).map(Borrowed::Cell),
        _ => Err(Status::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_edits_replace_the_front_prepend_or_append() {
        let mut body = b"hello world".to_vec();
        replace(&mut body, 0, 5, b"HOWDY").unwrap();
        assert_eq!(body, b"HOWDY world");
        replace(&mut body, 0, 0, b">").unwrap();
        replace(&mut body, 99, 0, b"!").unwrap();
        assert_eq!(body, b">HOWDY world!");
        replace(&mut body, 0, usize::MAX, b"all new").unwrap();
        assert_eq!(body, b"all new");
        assert_eq!(replace(&mut body, 3, 1, b"x"), Err(Status::BadArgument));
    }
}
