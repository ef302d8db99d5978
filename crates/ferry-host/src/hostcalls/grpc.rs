//! gRPC calls and streams (`proxy_grpc_call`, `_stream`, `_send`, `_cancel`,
//! `_close`). The host checks the arguments, hands out tokens and records
//! the commands; the embedder speaks HTTP/2 and reports events back.

use std::time::Duration;

use super::http_call::next_token;
use super::{Caller, HostResult, check, ok};
use crate::grpc::{GrpcCommand, GrpcOpen};
use crate::headers::HeaderMap;
use crate::limits::{MAX_PENDING_CALLS, MAX_VALUE_BYTES};
use crate::memory::{slice, split, write_u32};
use crate::state::{GrpcKind, OpenGrpc};
use bytes::Bytes;
use ferry_abi::{Status, pairs};

pub(super) fn proxy_grpc_send(
    mut caller: Caller<'_>,
    token: i32,
    message_ptr: i32,
    message_len: i32,
    end_stream: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let message = check!(slice(mem, message_ptr, message_len).and_then(capped));
    let token = token as u32;
    match state.grpc_tokens.get(&token) {
        None => return Ok(Status::NotFound.code()),
        // A unary call took its one message when it was made.
        Some(open) if open.kind == GrpcKind::Call => return Ok(Status::BadArgument.code()),
        // The peer closed the stream: the message goes nowhere (as in Envoy).
        Some(open) if open.remote_closed => return ok(),
        Some(_) => {}
    }
    let message = Bytes::copy_from_slice(message);
    let instance = state.instance;
    state.grpc_commands.push(GrpcCommand::Send { instance, token, message, end_stream: end_stream != 0 });
    ok()
}

pub(super) fn proxy_grpc_cancel(mut caller: Caller<'_>, token: i32) -> HostResult {
    let state = caller.data_mut();
    let token = token as u32;
    let Some(open) = state.grpc_tokens.remove(&token) else { return Ok(Status::NotFound.code()) };
    if !open.remote_closed {
        state.grpc_commands.push(GrpcCommand::Cancel { instance: state.instance, token });
    }
    ok()
}

pub(super) fn proxy_grpc_close(mut caller: Caller<'_>, token: i32) -> HostResult {
    let state = caller.data_mut();
    let token = token as u32;
    let instance = state.instance;
    let Some(open) = state.grpc_tokens.get_mut(&token) else { return Ok(Status::NotFound.code()) };
    match (open.kind, open.remote_closed) {
        // Over on the wire: the plugin is done with it now.
        (_, true) => {
            state.grpc_tokens.remove(&token);
        }
        // As Envoy: closing a unary call cancels it.
        (GrpcKind::Call, false) => {
            state.grpc_tokens.remove(&token);
            state.grpc_commands.push(GrpcCommand::Cancel { instance, token });
        }
        // Half-closes the stream; the token lives on until the peer closes too.
        (GrpcKind::Stream, false) => {
            open.local_closed = true;
            state.grpc_commands.push(GrpcCommand::Close { instance, token });
        }
    }
    ok()
}

/// A message a plugin hands in: at most [`MAX_VALUE_BYTES`].
fn capped(bytes: &[u8]) -> Result<&[u8], Status> {
    if bytes.len() > MAX_VALUE_BYTES { Err(Status::BadArgument) } else { Ok(bytes) }
}

/// The cluster a gRPC call goes to: a cluster name, or (as Envoy accepts
/// too) a serialized `GrpcService` whose `envoy_grpc.cluster_name` names it.
fn cluster_name(upstream: &[u8]) -> Option<String> {
    if let Ok(name) = std::str::from_utf8(upstream)
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic())
    {
        return Some(name.to_owned());
    }
    // GrpcService { envoy_grpc: 1 { cluster_name: 1 } }, both length-delimited.
    let envoy_grpc = length_delimited_field(upstream, 1)?;
    let name = length_delimited_field(envoy_grpc, 1)?;
    String::from_utf8(name.to_vec()).ok()
}

/// The first length-delimited field `number` of a protobuf message, skipping
/// other fields; `None` for anything malformed.
fn length_delimited_field(mut message: &[u8], number: u64) -> Option<&[u8]> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                varint(&mut message)?;
            }
            1 => message = message.get(8..)?,
            5 => message = message.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                let value = message.get(..len)?;
                message = &message[len..];
                if key >> 3 == number {
                    return Some(value);
                }
            }
            _ => return None,
        }
    }
    None
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The arguments `proxy_grpc_call` and `proxy_grpc_stream` share.
struct OpenArgs {
    upstream: (i32, i32),
    service: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
}

/// Checks and records a call (`message` set) or a stream, and writes its
/// token to `token_out`.
fn open(
    caller: &mut Caller<'_>,
    args: OpenArgs,
    message: Option<(i32, i32)>,
    timeout_ms: i32,
    token_out: i32,
) -> Result<(), Status> {
    let (mem, state) = split(caller);
    let upstream = slice(mem, args.upstream.0, args.upstream.1)?;
    let service = String::from_utf8_lossy(slice(mem, args.service.0, args.service.1)?).into_owned();
    let method = String::from_utf8_lossy(slice(mem, args.method.0, args.method.1)?).into_owned();
    let mut initial_metadata = HeaderMap::new();
    initial_metadata
        .set_all(pairs::decode(slice(mem, args.metadata.0, args.metadata.1)?).map_err(|_| Status::BadArgument)?);
    let message =
        message.map(|(ptr, len)| slice(mem, ptr, len).and_then(capped).map(Bytes::copy_from_slice)).transpose()?;
    slice(mem, token_out, 4)?;
    let cluster = cluster_name(upstream).filter(|c| state.shared.knows_upstream(c)).ok_or(Status::ParseFailure)?;
    let (origin, entry, _) = state.acting_context().ok_or(Status::BadArgument)?;
    if state.open_calls() >= MAX_PENDING_CALLS {
        return Err(Status::InternalFailure);
    }
    let token = next_token(&mut state.last_grpc_token, |t| state.grpc_tokens.contains_key(&t));
    let kind = if message.is_some() { GrpcKind::Call } else { GrpcKind::Stream };
    state.grpc_tokens.insert(token, OpenGrpc::new(kind, origin));
    state.grpc_commands.push(GrpcCommand::Open(GrpcOpen {
        instance: state.instance,
        context_id: entry.root_id,
        token,
        cluster,
        service,
        method,
        initial_metadata,
        message,
        timeout: (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms as u32))),
    }));
    write_u32(mem, token_out, token)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_grpc_call(
    mut caller: Caller<'_>,
    upstream_ptr: i32,
    upstream_len: i32,
    service_ptr: i32,
    service_len: i32,
    method_ptr: i32,
    method_len: i32,
    metadata_ptr: i32,
    metadata_len: i32,
    message_ptr: i32,
    message_len: i32,
    timeout_ms: i32,
    token_out: i32,
) -> HostResult {
    let args = OpenArgs {
        upstream: (upstream_ptr, upstream_len),
        service: (service_ptr, service_len),
        method: (method_ptr, method_len),
        metadata: (metadata_ptr, metadata_len),
    };
    check!(open(&mut caller, args, Some((message_ptr, message_len)), timeout_ms, token_out));
    ok()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_grpc_stream(
    mut caller: Caller<'_>,
    upstream_ptr: i32,
    upstream_len: i32,
    service_ptr: i32,
    service_len: i32,
    method_ptr: i32,
    method_len: i32,
    metadata_ptr: i32,
    metadata_len: i32,
    token_out: i32,
) -> HostResult {
    let args = OpenArgs {
        upstream: (upstream_ptr, upstream_len),
        service: (service_ptr, service_len),
        method: (method_ptr, method_len),
        metadata: (metadata_ptr, metadata_len),
    };
    check!(open(&mut caller, args, None, 0, token_out));
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_named_plainly_or_by_a_grpc_service_message() {
        assert_eq!(cluster_name(b"backend").as_deref(), Some("backend"));
        // GrpcService { envoy_grpc { cluster_name: "backend" } }, with a timeout field (3) before it.
        let mut proto = vec![0x1a, 0x02, 0x08, 0x05, 0x0a, 0x09, 0x0a, 0x07];
        proto.extend_from_slice(b"backend");
        assert_eq!(cluster_name(&proto).as_deref(), Some("backend"));
        assert_eq!(cluster_name(&[0x0a, 0x05, 0x0a]), None);
        assert_eq!(cluster_name(b""), None);
    }
}
