//! HTTP calls to a cluster (`proxy_http_call`) and `proxy_get_status`.
//!
//! The host only records the call; the embedder sends it and reports the
//! response, which the plugin gets in `proxy_on_http_call_response` on the
//! root context of the context that made the call (as in Envoy).

use std::time::Duration;

use bytes::Bytes;
use ferry_abi::{Status, pairs};
use wasmtime::Linker;

use super::{Caller, HostResult, MODULE, check, ok};
use crate::headers::HeaderMap;
use crate::memory::{return_copy, slice, split, write_u32};
use crate::state::HostState;
use crate::stream::HttpCallRequest;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "proxy_http_call", http_call)?;
    linker.func_wrap(
        MODULE,
        "proxy_get_status",
        |mut caller: Caller<'_>, code_out: i32, ptr_out: i32, size_out: i32| -> HostResult {
            let (mem, state) = split(&mut caller);
            let (code, message) = state.status.clone();
            check!(write_u32(mem, code_out, code));
            Ok(return_copy(&mut caller, &message, ptr_out, size_out)?.code())
        },
    )?;
    Ok(())
}

fn map(mem: &[u8], ptr: i32, len: i32) -> Result<HeaderMap, Status> {
    let mut map = HeaderMap::new();
    map.set_all(pairs::decode(slice(mem, ptr, len)?).map_err(|_| Status::BadArgument)?);
    Ok(map)
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut caller: Caller<'_>,
    upstream_ptr: i32,
    upstream_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let upstream = String::from_utf8_lossy(check!(slice(mem, upstream_ptr, upstream_len))).into_owned();
    let headers = check!(map(mem, headers_ptr, headers_len));
    let trailers = check!(map(mem, trailers_ptr, trailers_len));
    let body = Bytes::copy_from_slice(check!(slice(mem, body_ptr, body_len)));
    check!(slice(mem, token_out, 4));
    if !state.shared.knows_upstream(&upstream) {
        return Ok(Status::BadArgument.code());
    }
    if [&b":method"[..], b":path", b":authority"].iter().any(|h| !headers.contains(h)) {
        return Ok(Status::BadArgument.code());
    }
    let Some((_, entry, _)) = state.acting_context() else { return Ok(Status::BadArgument.code()) };
    state.last_http_call_token = state.last_http_call_token.wrapping_add(1).max(1);
    let token = state.last_http_call_token;
    state.http_calls.push(HttpCallRequest {
        vm_key: state.module.key,
        context_id: entry.root_id,
        token,
        upstream,
        headers,
        body,
        trailers,
        timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u32 as u64)),
    });
    check!(write_u32(mem, token_out, token));
    ok()
}
