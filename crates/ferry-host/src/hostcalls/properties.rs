//! Properties (`proxy_get_property` / `proxy_set_property`): Envoy's
//! attributes of the stream, the connection, the node and the plugin, and
//! values plugins set themselves.
//!
//! Encodings follow Envoy: strings as their bytes, integers as 8-byte
//! little-endian, booleans as one byte, times as nanoseconds since the epoch,
//! header maps in the pairs encoding. A path is its segments joined by NUL.

use super::{Caller, HostResult, check, ok};
use crate::headers::HeaderMap;
use crate::limits::MAX_VALUE_BYTES;
use crate::memory::{return_copy, slice, split};
use crate::state::HostState;
use crate::stream::HttpStream;
use bytes::Bytes;
use ferry_abi::{Status, pairs};

pub(super) fn proxy_get_property(
    mut caller: Caller<'_>,
    path_ptr: i32,
    path_len: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let path = normalize(check!(slice(mem, path_ptr, path_len)));
    let value = check!(property(state, path).ok_or(Status::NotFound));
    Ok(return_copy(&mut caller, &value, ptr_out, size_out)?.code())
}

pub(super) fn proxy_set_property(
    mut caller: Caller<'_>,
    path_ptr: i32,
    path_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let path = normalize(check!(slice(mem, path_ptr, path_len)));
    let value = check!(slice(mem, value_ptr, value_len));
    let properties = match state.acting_stream_mut() {
        Some((stream, _)) => &mut stream.info.properties,
        None => &mut state.root_properties,
    };
    // All values set on one stream (or root context) together stay under
    // MAX_VALUE_BYTES: a plugin setting properties in a loop gets BadArgument.
    let held: usize = properties.iter().filter(|(p, _)| p != path).map(|(p, v)| p.len() + v.len()).sum();
    if held + path.len() + value.len() > MAX_VALUE_BYTES {
        return Ok(Status::BadArgument.code());
    }
    let (path, value) = (Bytes::copy_from_slice(path), Bytes::copy_from_slice(value));
    match properties.iter_mut().find(|(p, _)| *p == path) {
        Some(entry) => entry.1 = value,
        None => properties.push((path, value)),
    }
    ok()
}

/// SDKs may end a path with a NUL.
fn normalize(path: &[u8]) -> &[u8] {
    path.strip_suffix(b"\0").unwrap_or(path)
}

fn int(value: i64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

fn text(value: impl AsRef<[u8]>) -> Vec<u8> {
    value.as_ref().to_vec()
}

fn map(headers: &HeaderMap) -> Vec<u8> {
    pairs::encode(headers.iter())
}

/// The value of property `path`, if it has one here.
fn property(state: &HostState, path: &[u8]) -> Option<Vec<u8>> {
    let (_, _, plugin) = state.acting_context()?;
    let segments: Vec<&[u8]> = path.split(|&b| b == 0).collect();
    let stream = state.acting_stream().map(|(stream, _)| stream);
    let known = match segments.as_slice() {
        [b"plugin_name"] => Some(text(&plugin.name)),
        [b"plugin_root_id"] => Some(text(&plugin.root_id)),
        [b"plugin_vm_id"] => Some(text(state.module.vm_id())),
        [b"node", b"id"] => Some(text(&state.shared.node.0)),
        [b"node", b"cluster"] => Some(text(&state.shared.node.1)),
        [b"request", rest @ ..] => stream.and_then(|s| request(s, rest)),
        [b"response", rest @ ..] => stream.and_then(|s| response(s, rest)),
        [b"source" | b"destination", field] => stream.and_then(|s| {
            let address = if segments[0] == b"source" { s.info.source } else { s.info.destination }?;
            match *field {
                b"address" => Some(text(address.to_string())),
                b"port" => Some(int(i64::from(address.port()))),
                _ => None,
            }
        }),
        [b"upstream", field] => stream.and_then(|s| {
            let address = s.info.upstream?;
            match *field {
                b"address" => Some(text(address.to_string())),
                b"port" => Some(int(i64::from(address.port()))),
                _ => None,
            }
        }),
        [b"connection", b"id"] => stream.map(|s| s.info.connection_id.to_le_bytes().to_vec()),
        [b"connection", b"mtls"] => stream.map(|_| vec![0]),
        _ => None,
    };
    known.or_else(|| {
        let properties = stream.map_or(&state.root_properties, |s| &s.info.properties);
        properties.iter().find(|(p, _)| **p == *path).map(|(_, v)| v.to_vec())
    })
}

fn request(s: &HttpStream, field: &[&[u8]]) -> Option<Vec<u8>> {
    let headers = &s.request_headers;
    let header = |name: &[u8]| headers.get(name).map(text);
    let path = headers.get(b":path");
    match field {
        [b"path"] => header(b":path"),
        [b"url_path"] => path.map(|p| text(p.split(|&b| b == b'?').next().unwrap_or(p))),
        [b"query"] => path.map(|p| text(p.splitn(2, |&b| b == b'?').nth(1).unwrap_or_default())),
        [b"host"] => header(b":authority"),
        [b"scheme"] => header(b":scheme"),
        [b"method"] => header(b":method"),
        [b"referer"] => header(b"referer"),
        [b"useragent"] => header(b"user-agent"),
        [b"id"] => header(b"x-request-id"),
        [b"protocol"] => Some(text(s.info.protocol)),
        [b"time"] => {
            let since = s.info.start?.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(int(since.as_nanos() as i64))
        }
        [b"headers"] => Some(map(headers)),
        [b"headers", name] => header(name),
        _ => None,
    }
}

fn response(s: &HttpStream, field: &[&[u8]]) -> Option<Vec<u8>> {
    let headers = &s.response_headers;
    if headers.is_empty() {
        return None;
    }
    match field {
        [b"code"] => {
            let status = std::str::from_utf8(headers.get(b":status")?).ok()?.parse::<i64>().ok()?;
            Some(int(status))
        }
        [b"headers"] => Some(map(headers)),
        [b"headers", name] => headers.get(name).map(text),
        [b"trailers"] => Some(map(&s.response_trailers)),
        _ => None,
    }
}
