//! Stream control: local responses, the effective context, `proxy_done`.

use bytes::Bytes;
use ferry_abi::{Status, pairs};
use wasmtime::Linker;

use super::{Caller, HostResult, MODULE, check, ok};
use crate::memory::{slice, split};
use crate::state::HostState;
use crate::stream::{LocalResponse, Phase};

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "proxy_send_local_response", send_local_response)?;
    linker.func_wrap(MODULE, "proxy_set_effective_context", |mut caller: Caller<'_>, id: i32| -> HostResult {
        let state = caller.data_mut();
        let id = id as u32;
        if !state.contexts.contains_key(&id) {
            return Ok(Status::BadArgument.code());
        }
        state.call.effective_context = Some(id);
        ok()
    })?;
    // No context ever waits for proxy_done here: HTTP streams finish whatever
    // proxy_on_done returns (as in Envoy), and root contexts live as long as
    // the process. So, as in Envoy for a context that is not pending: NotFound.
    linker.func_wrap(MODULE, "proxy_done", |_: Caller<'_>| -> HostResult { Ok(Status::NotFound.code()) })?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut caller: Caller<'_>,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let details = String::from_utf8_lossy(check!(slice(mem, details_ptr, details_len))).into_owned();
    let body = Bytes::copy_from_slice(check!(slice(mem, body_ptr, body_len)));
    let encoded = check!(slice(mem, headers_ptr, headers_len));
    let headers = check!(pairs::decode(encoded).map_err(|_| Status::BadArgument))
        .into_iter()
        .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
        .collect();
    let status = check!(u16::try_from(status).ok().filter(|s| (100..=999).contains(s)).ok_or(Status::BadArgument));
    if !matches!(state.call.phase, Phase::RequestHeaders | Phase::ResponseHeaders) {
        // No stream is waiting for a response in this callback.
        return Ok(Status::BadArgument.code());
    }
    state.call.local_response =
        Some(LocalResponse { status, details, body, headers, grpc_status: u32::try_from(grpc_status).ok() });
    ok()
}
