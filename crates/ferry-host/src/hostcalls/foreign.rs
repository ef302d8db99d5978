//! `proxy_call_foreign_function`: named host functions beyond the ABI.
//!
//! ferry offers the ones of Envoy's that mean the same here, with Envoy's
//! argument and result formats: `compress` and `uncompress` (zlib format),
//! `clear_route_cache`, `set_envoy_filter_state` for the filter state keys
//! ferry acts on ([`FILTER_STATE_KEYS`]), and `verify_signature` and `sign`
//! (RSA, see `signatures.rs`), `declare_property`, and the CEL functions
//! `expr_create`, `expr_evaluate` and `expr_delete` (see
//! `crate::attributes`). Any other name is `NotFound`, as in Envoy.

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
    ("declare_property", declare_property),
    ("expr_create", expr_create),
    ("expr_evaluate", expr_evaluate),
    ("expr_delete", expr_delete),
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
    let mut stream = state.attribute_stream_mut().ok_or(Status::BadArgument)?;
    if args.value.len() > crate::limits::MAX_VALUE_BYTES {
        return Err(Status::BadArgument);
    }
    stream.info.filter_state.retain(|(key, _)| *key != args.path);
    stream.info.filter_state.push((args.path, args.value));
    Ok(Vec::new())
}

/// Envoy's `DeclarePropertyArguments`: a property's name, whether it is
/// read-only, its type (bytes, string, flatbuffers, protobuf), its schema
/// and its life span.
#[derive(Clone, PartialEq, prost::Message)]
struct DeclarePropertyArguments {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bool, tag = "2")]
    readonly: bool,
    #[prost(int32, tag = "3")]
    kind: i32,
    #[prost(bytes = "vec", tag = "4")]
    schema: Vec<u8>,
    #[prost(int32, tag = "5")]
    span: i32,
}

/// Declares a property, as Envoy's `declare_property`: a read-only one can
/// be set once per stream. `BadArgument` for arguments that do not decode
/// and for a name declared before. (ferry reads every type back as its
/// bytes, and keeps every value for the stream: see docs/abi-support.md.)
fn declare_property(state: &mut HostState, args: &[u8]) -> Result<Vec<u8>, Status> {
    use prost::Message as _;
    let args = DeclarePropertyArguments::decode(args).map_err(|_| Status::BadArgument)?;
    let name = bytes::Bytes::from(args.name.into_bytes());
    if state.declared.contains_key(&name) || state.declared.len() >= crate::limits::MAX_DECLARED_PROPERTIES {
        return Err(Status::BadArgument);
    }
    state.declared.insert(name, crate::state::DeclaredProperty { readonly: args.readonly });
    Ok(Vec::new())
}

/// The root context of the acting context: expressions belong to it.
fn acting_root(state: &HostState) -> Result<u32, Status> {
    state.acting_context().map(|(_, entry, _)| entry.root_id).ok_or(Status::NotFound)
}

/// A 4-byte little-endian token, as Envoy's `expr_evaluate` and `expr_delete` take.
fn token(args: &[u8]) -> Result<u32, Status> {
    Ok(u32::from_le_bytes(args.try_into().map_err(|_| Status::BadArgument)?))
}

/// Compiles a CEL expression; its token.
fn expr_create(state: &mut HostState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let root = acting_root(state)?;
    Ok(state.expressions.create(root, args)?.to_le_bytes().to_vec())
}

/// Evaluates an expression against the acting context's attributes.
fn expr_evaluate(state: &mut HostState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let token = token(args)?;
    let program = state.expressions.get(acting_root(state)?, token).ok_or(Status::NotFound)?;
    state.with_facts(|facts| crate::attributes::evaluate(&program, facts)).ok_or(Status::NotFound)?
}

/// Forgets an expression.
fn expr_delete(state: &mut HostState, args: &[u8]) -> Result<Vec<u8>, Status> {
    let token = token(args)?;
    let root = acting_root(state)?;
    state.expressions.delete(root, token);
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
