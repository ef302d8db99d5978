//! Header maps: read and change the maps of the stream in progress.
//!
//! Which map a callback may touch follows Envoy: request headers during
//! `proxy_on_request_headers`, response headers during
//! `proxy_on_response_headers`, and every map read-only in `proxy_on_log`.
//! Outside those, reads of a single value and all writes return
//! `BadArgument`, and reading all pairs returns an empty map.

use ferry_abi::{MapType, Status, pairs};

use super::{Caller, HostResult, check, ok};
use crate::headers::HeaderMap;
use crate::memory::{return_bytes, return_copy, slice, split, write_u32};

fn map_type(raw: i32) -> Result<MapType, Status> {
    MapType::from_raw(raw as u32).ok_or(Status::BadArgument)
}

/// Whether `map` can take `key: value` and stay within 1 MiB (what the
/// host hands back in one `proxy_get_header_map_pairs`); a plugin adding
/// headers in a loop gets `BadArgument` there instead of growing the host.
fn room_for(map: &HeaderMap, key: &[u8], value: &[u8]) -> Result<(), Status> {
    let size = map.byte_size() + key.len() + value.len();
    if size > pairs::MAX_ENCODED_BYTES { Err(Status::BadArgument) } else { Ok(()) }
}

pub(super) fn proxy_get_header_map_pairs(mut caller: Caller<'_>, map: i32, ptr_out: i32, size_out: i32) -> HostResult {
    let map = check!(map_type(map));
    let len = caller.data().readable_map(map).map_or(0, |m| pairs::encoded_len(m.iter()));
    // The allocator cannot change the map (host calls are refused while it
    // runs), so the map still has `len` bytes of encoding when `fill` runs.
    let status = return_bytes(&mut caller, len, ptr_out, size_out, |state, dest| {
        if let Ok(m) = state.readable_map(map) { pairs::encode_into(dest, m.iter()).is_ok() } else { false }
    })?;
    Ok(status.code())
}

pub(super) fn proxy_set_header_map_pairs(mut caller: Caller<'_>, map: i32, ptr: i32, len: i32) -> HostResult {
    let map = check!(map_type(map));
    let (mem, state) = split(&mut caller);
    let encoded = check!(slice(mem, ptr, len));
    let decoded = check!(pairs::decode(encoded).map_err(|_| Status::BadArgument));
    check!(state.writable_map(map)).set_all(decoded);
    ok()
}

pub(super) fn proxy_get_header_map_value(
    mut caller: Caller<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let map = check!(map_type(map));
    let (mem, state) = split(&mut caller);
    let key = check!(slice(mem, key_ptr, key_len));
    let value = check!(check!(state.readable_map(map)).get(key).cloned().ok_or(Status::NotFound));
    Ok(return_copy(&mut caller, &value, ptr_out, size_out)?.code())
}

pub(super) fn proxy_add_header_map_value(
    caller: Caller<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    set_value(caller, map, (key_ptr, key_len), (value_ptr, value_len), HeaderMap::add)
}

pub(super) fn proxy_replace_header_map_value(
    caller: Caller<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    set_value(caller, map, (key_ptr, key_len), (value_ptr, value_len), HeaderMap::replace)
}

/// Adds or replaces one value of a writable map, within its size cap.
fn set_value(
    mut caller: Caller<'_>,
    map: i32,
    key: (i32, i32),
    value: (i32, i32),
    set: fn(&mut HeaderMap, &[u8], &[u8]),
) -> HostResult {
    let map = check!(map_type(map));
    let (mem, state) = split(&mut caller);
    let key = check!(slice(mem, key.0, key.1));
    let value = check!(slice(mem, value.0, value.1));
    let mut map = check!(state.writable_map(map));
    check!(room_for(&map, key, value));
    set(&mut map, key, value);
    ok()
}

pub(super) fn proxy_remove_header_map_value(
    mut caller: Caller<'_>,
    map: i32,
    key_ptr: i32,
    key_len: i32,
) -> HostResult {
    let map = check!(map_type(map));
    let (mem, state) = split(&mut caller);
    let key = check!(slice(mem, key_ptr, key_len));
    check!(state.writable_map(map)).remove(key);
    ok()
}

pub(super) fn proxy_get_header_map_size(mut caller: Caller<'_>, map: i32, size_out: i32) -> HostResult {
    let map = check!(map_type(map));
    let (mem, state) = split(&mut caller);
    let size = check!(state.readable_map(map)).byte_size();
    check!(write_u32(mem, size_out, size as u32));
    ok()
}
