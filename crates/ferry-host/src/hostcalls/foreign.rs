//! `proxy_call_foreign_function`: named host functions beyond the ABI.
//!
//! ferry offers the ones of Envoy's that mean the same here, with Envoy's
//! argument and result formats: `compress` and `uncompress` (zlib format),
//! `clear_route_cache`, `set_envoy_filter_state` for the filter state keys
//! ferry acts on ([`FILTER_STATE_KEYS`]), and `verify_signature` and `sign`
//! (RSA, see `signatures.rs`). Envoy's others need what ferry does not have
//! yet (a CEL engine for `expr_*`, typed filter state for
//! `declare_property`): they are `NotFound`, as any unknown name.

use std::io::{Read as _, Write as _};

use super::{Caller, HostResult, check};
use crate::limits::MAX_FOREIGN_RESULT;
use crate::memory::{return_copy, slice, split};
use crate::state::HostState;
use ferry_abi::Status;

/// A foreign function: arguments in, result out; it may change the state
/// of the VM (and of the stream being handled).
type ForeignFunction = fn(&mut HostState, &[u8]) -> Result<Vec<u8>, Status>;

/// The foreign functions, by name.
const FOREIGN_FUNCTIONS: &[(&str, ForeignFunction)] = &[
    ("compress", |_, args| compress(args)),
    ("uncompress", |_, args| uncompress(args)),
    // Routes are chosen after the request filters ran: nothing to clear.
    ("clear_route_cache", |_, _| Ok(Vec::new())),
    ("set_envoy_filter_state", set_envoy_filter_state),
    ("verify_signature", |_, args| super::signatures::verify_signature(args)),
    ("sign", |_, args| super::signatures::sign(args)),
];

/// The filter state keys `set_envoy_filter_state` takes: those ferry acts
/// on. Envoy refuses keys it has no object factory for; so does ferry.
pub const FILTER_STATE_KEYS: &[&str] = &["envoy.tcp_proxy.cluster"];

/// Envoy's `SetEnvoyFilterStateArguments` (protobuf): the key, the value as
/// a string, and the life span of the object (ferry keeps it for the stream).
#[derive(Clone, PartialEq, prost::Message)]
struct SetEnvoyFilterStateArguments {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    value: String,
    #[prost(int32, tag = "3")]
    span: i32,
}

/// Sets filter state on the stream (or connection) being handled, as
/// Envoy's `set_envoy_filter_state`: `SerializationFailure` for arguments
/// that do not decode, `NotFound` for a key ferry does not act on,
/// `BadArgument` outside a stream.
fn set_envoy_filter_state(state: &mut HostState, args: &[u8]) -> Result<Vec<u8>, Status> {
    use prost::Message as _;
    let args = SetEnvoyFilterStateArguments::decode(args).map_err(|_| Status::SerializationFailure)?;
    if !FILTER_STATE_KEYS.contains(&args.path.as_str()) {
        return Err(Status::NotFound);
    }
    let (stream, _) = state.acting_stream_mut().ok_or(Status::BadArgument)?;
    if args.value.len() > crate::limits::MAX_VALUE_BYTES {
        return Err(Status::BadArgument);
    }
    stream.info.filter_state.retain(|(key, _)| *key != args.path);
    stream.info.filter_state.push((args.path, args.value));
    Ok(Vec::new())
}

pub(super) fn proxy_call_foreign_function(
    mut caller: Caller<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    results_ptr_out: i32,
    results_size_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let name = check!(slice(mem, name_ptr, name_len));
    let function =
        check!(FOREIGN_FUNCTIONS.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, f)| *f).ok_or(Status::NotFound));
    let result = check!(function(state, check!(slice(mem, args_ptr, args_len))));
    Ok(return_copy(&mut caller, &result, results_ptr_out, results_size_out)?.code())
}

/// zlib-compresses the arguments (zlib's `compress`).
fn compress(data: &[u8]) -> Result<Vec<u8>, Status> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).map_err(|_| Status::SerializationFailure)?;
    encoder.finish().map_err(|_| Status::SerializationFailure)
}

/// Inflates zlib data (zlib's `uncompress`); anything else, or a result
/// larger than [`MAX_FOREIGN_RESULT`], is a `SerializationFailure`.
fn uncompress(data: &[u8]) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let limit = MAX_FOREIGN_RESULT as u64 + 1;
    flate2::read::ZlibDecoder::new(data).take(limit).read_to_end(&mut out).map_err(|_| Status::SerializationFailure)?;
    if out.len() > MAX_FOREIGN_RESULT {
        return Err(Status::SerializationFailure);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_arguments_decode_from_envoys_protobuf() {
        use prost::Message as _;
        let args = SetEnvoyFilterStateArguments::decode(&b"\x0a\x17envoy.tcp_proxy.cluster\x12\x06second\x18\x02"[..])
            .unwrap();
        assert_eq!((args.path.as_str(), args.value.as_str(), args.span), ("envoy.tcp_proxy.cluster", "second", 2));
        assert!(SetEnvoyFilterStateArguments::decode(&b"\x0a\xff"[..]).is_err());
    }

    #[test]
    fn compress_and_uncompress_round_trip_in_zlib_format() {
        let text = b"hello hello hello hello".repeat(10);
        let packed = compress(&text).unwrap();
        assert_eq!(packed[0], 0x78, "a zlib header");
        assert!(packed.len() < text.len());
        assert_eq!(uncompress(&packed).unwrap(), text);
        assert_eq!(uncompress(b"not zlib"), Err(Status::SerializationFailure));
    }

    #[test]
    fn a_zlib_bomb_stops_at_the_result_cap() {
        let bomb = compress(&vec![0u8; MAX_FOREIGN_RESULT + 1]).unwrap();
        assert!(bomb.len() < 64 * 1024, "a small input");
        assert_eq!(uncompress(&bomb), Err(Status::SerializationFailure));
        let fits = compress(&vec![0u8; 1024]).unwrap();
        assert_eq!(uncompress(&fits).unwrap().len(), 1024);
    }
}
