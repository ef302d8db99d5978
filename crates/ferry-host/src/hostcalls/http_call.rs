//! HTTP calls to a cluster (`proxy_http_call`) and `proxy_get_status`.
//!
//! The host only records the call; the embedder sends it and reports the
//! response, which the plugin gets in `proxy_on_http_call_response` on the
//! root context of the context that made the call (as in Envoy).

use std::time::Duration;

use super::{Caller, HostResult, check, ok};
use crate::headers::HeaderMap;
use crate::limits::{MAX_PENDING_CALLS, MAX_VALUE_BYTES};
use crate::memory::{return_copy, slice, split, write_u32};
use crate::stream::HttpCallRequest;
use bytes::Bytes;
use ferry_abi::{Status, pairs};

pub(super) fn proxy_get_status(mut caller: Caller<'_>, code_out: i32, ptr_out: i32, size_out: i32) -> HostResult {
    let (mem, state) = split(&mut caller);
    let (code, message) = state.status.clone();
    check!(write_u32(mem, code_out, code));
    Ok(return_copy(&mut caller, &message, ptr_out, size_out)?.code())
}

fn map(mem: &[u8], ptr: i32, len: i32) -> Result<HeaderMap, Status> {
    let mut map = HeaderMap::new();
    map.set_all(pairs::decode(slice(mem, ptr, len)?).map_err(|_| Status::BadArgument)?);
    Ok(map)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_http_call(
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
    // A timeout must be milliseconds that fit a positive i32 (Envoy checks
    // it first): a negative one is a plugin's "bogus duration", not "none".
    if timeout_ms < 0 {
        return Ok(Status::BadArgument.code());
    }
    let (mem, state) = split(&mut caller);
    let upstream = String::from_utf8_lossy(check!(slice(mem, upstream_ptr, upstream_len))).into_owned();
    let headers = check!(map(mem, headers_ptr, headers_len));
    let trailers = check!(map(mem, trailers_ptr, trailers_len));
    let body = check!(slice(mem, body_ptr, body_len));
    if body.len() > MAX_VALUE_BYTES {
        return Ok(Status::BadArgument.code());
    }
    let body = Bytes::copy_from_slice(body);
    check!(slice(mem, token_out, 4));
    if !state.shared.knows_upstream(&upstream) {
        return Ok(Status::BadArgument.code());
    }
    if [&b":method"[..], b":path", b":authority"].iter().any(|h| !headers.contains(h)) {
        return Ok(Status::BadArgument.code());
    }
    let Some((origin, entry, _)) = state.acting_context() else { return Ok(Status::BadArgument.code()) };
    if state.open_calls() >= MAX_PENDING_CALLS {
        return Ok(Status::InternalFailure.code());
    }
    let token = next_token(&mut state.last_http_call_token, |t| state.http_call_tokens.contains_key(&t));
    // A call made by a stream context ends with that stream.
    state.http_call_tokens.insert(token, origin);
    state.http_calls.push(HttpCallRequest {
        instance: state.instance,
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

/// The next call token after `last`: never 0, never one still in use.
pub(crate) fn next_token(last: &mut u32, in_use: impl Fn(u32) -> bool) -> u32 {
    loop {
        *last = last.wrapping_add(1);
        if *last != 0 && !in_use(*last) {
            return *last;
        }
    }
}
