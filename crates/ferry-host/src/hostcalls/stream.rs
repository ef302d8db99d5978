//! Stream control: local responses, resuming and closing streams, the
//! effective context, `proxy_done`.

use super::{Caller, HostResult, check, ok};
use crate::limits::MAX_VALUE_BYTES;
use crate::memory::{slice, split};
use crate::state::HostState;
use crate::stream::{LocalResponse, Phase, StreamAction};
use bytes::Bytes;
use ferry_abi::{Status, StreamType, pairs};

pub(super) fn proxy_continue_stream(mut caller: Caller<'_>, stream: i32) -> HostResult {
    let stream = check!(StreamType::from_raw(stream as u32).ok_or(Status::BadArgument));
    Ok(stream_action(caller.data_mut(), stream, StreamAction::Resume).code())
}

pub(super) fn proxy_close_stream(mut caller: Caller<'_>, stream: i32) -> HostResult {
    let stream = check!(StreamType::from_raw(stream as u32).ok_or(Status::BadArgument));
    Ok(stream_action(caller.data_mut(), stream, StreamAction::Close).code())
}

/// ABI 0.1.0 name of `proxy_continue_stream(HTTP_REQUEST)`.
pub(super) fn proxy_continue_request(mut caller: Caller<'_>) -> HostResult {
    Ok(stream_action(caller.data_mut(), StreamType::HttpRequest, StreamAction::Resume).code())
}

/// ABI 0.1.0 name of `proxy_continue_stream(HTTP_RESPONSE)`.
pub(super) fn proxy_continue_response(mut caller: Caller<'_>) -> HostResult {
    Ok(stream_action(caller.data_mut(), StreamType::HttpResponse, StreamAction::Resume).code())
}

/// Routes are chosen after the request filters ran, on the headers they
/// left: there is never a cached route to clear.
pub(super) fn proxy_clear_route_cache(_: Caller<'_>) -> HostResult {
    ok()
}

pub(super) fn proxy_set_effective_context(mut caller: Caller<'_>, id: i32) -> HostResult {
    let state = caller.data_mut();
    let id = id as u32;
    if !state.contexts.contains_key(&id) {
        return Ok(Status::BadArgument.code());
    }
    state.call.effective_context = Some(id);
    ok()
}

/// Only a root context that deferred its shutdown (proxy_on_done returned
/// false) waits for proxy_done; HTTP and TCP streams finish whatever
/// proxy_on_done returns, as in Envoy. Anything else: NotFound.
pub(super) fn proxy_done(mut caller: Caller<'_>) -> HostResult {
    let state = caller.data_mut();
    let id = state.acting_context_id();
    let Some(at) = state.pending_done.iter().position(|&pending| pending == id) else {
        return Ok(Status::NotFound.code());
    };
    state.pending_done.remove(at);
    state.done_roots.push(id);
    ok()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_send_local_response(
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
    let details = super::log::capped_text(check!(slice(mem, details_ptr, details_len))).into_owned();
    let body = check!(slice(mem, body_ptr, body_len));
    if body.len() > MAX_VALUE_BYTES {
        return Ok(Status::BadArgument.code());
    }
    let body = Bytes::copy_from_slice(body);
    let encoded = check!(slice(mem, headers_ptr, headers_len));
    let headers = check!(pairs::decode(encoded).map_err(|_| Status::BadArgument))
        .into_iter()
        .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
        .collect();
    let status = check!(u16::try_from(status).ok().filter(|s| (100..=999).contains(s)).ok_or(Status::BadArgument));
    let response = LocalResponse { status, details, body, headers, grpc_status: u32::try_from(grpc_status).ok() };
    Ok(answer(state, response).code())
}

/// Routes a decision about the acting stream: into the outcome of its own
/// header callback, or, for a parked stream, to the embedder.
fn answer(state: &mut HostState, response: LocalResponse) -> Status {
    let Some(target) = state.acting_stream_context() else { return Status::BadArgument };
    let in_own_callback = target == state.call.context_id && state.call.phase.is_http_stream_callback();
    if in_own_callback {
        state.call.outcome.local_response = Some(response);
    } else if state.parked.contains_key(&target) {
        state.stream_actions.push((target, StreamAction::LocalResponse(response)));
    } else {
        // Nothing waits for an answer from this stream now.
        return Status::BadArgument;
    }
    Status::Ok
}

/// `proxy_continue_stream` / `proxy_close_stream` for the acting context.
/// As in Envoy, a call from a root context changes nothing and is `Ok`.
/// Unlike Envoy, resuming the upstream direction of a TCP connection works
/// (Envoy answers `Unimplemented`, on which the Rust SDK panics).
fn stream_action(state: &mut HostState, stream: StreamType, action: StreamAction) -> Status {
    let network = matches!(stream, StreamType::Downstream | StreamType::Upstream);
    let Some(target) = state.acting_stream_context() else { return Status::Ok };
    let own_phase = if network {
        matches!(state.call.phase, Phase::DownstreamData | Phase::UpstreamData | Phase::StreamOther)
    } else {
        state.call.phase.is_http_stream_callback()
    };
    if target == state.call.context_id && own_phase {
        match action {
            StreamAction::Close => state.call.outcome.closed = true,
            _ => state.call.outcome.resumed = true,
        }
    } else if network || state.parked.contains_key(&target) {
        // A TCP connection listens for its plugins' signals all its life.
        let action = match (stream, action) {
            (StreamType::Upstream, StreamAction::Resume) => StreamAction::ResumeUpstream,
            (StreamType::HttpResponse, StreamAction::Resume) => StreamAction::ResumeResponse,
            (_, action) => action,
        };
        state.stream_actions.push((target, action));
    }
    Status::Ok
}
