//! `proxy_call_foreign_function`: named host functions beyond the ABI.
//!
//! ferry offers the ones of Envoy's that mean the same here, with Envoy's
//! argument and result formats: `compress` and `uncompress` (zlib format)
//! and `clear_route_cache`. Envoy's others need what ferry does not have
//! (a CEL engine for `expr_*`, Envoy's typed filter state for
//! `declare_property` and `set_envoy_filter_state`, its crypto library for
//! `sign` and `verify_signature`): they are `NotFound`, as any unknown name.

use std::io::{Read as _, Write as _};

use super::{Caller, HostResult, check};
use crate::limits::MAX_FOREIGN_RESULT;
use crate::memory::{return_copy, slice, split};
use ferry_abi::Status;

/// A foreign function: arguments in, result out.
type ForeignFunction = fn(&[u8]) -> Result<Vec<u8>, Status>;

/// The foreign functions, by name.
const FOREIGN_FUNCTIONS: &[(&str, ForeignFunction)] =
    &[("compress", compress), ("uncompress", uncompress), ("clear_route_cache", clear_route_cache)];

pub(super) fn proxy_call_foreign_function(
    mut caller: Caller<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    results_ptr_out: i32,
    results_size_out: i32,
) -> HostResult {
    let (mem, _) = split(&mut caller);
    let name = check!(slice(mem, name_ptr, name_len));
    let function =
        check!(FOREIGN_FUNCTIONS.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, f)| *f).ok_or(Status::NotFound));
    let result = check!(function(check!(slice(mem, args_ptr, args_len))));
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

/// Routes are chosen after the request filters ran: nothing to clear.
fn clear_route_cache(_: &[u8]) -> Result<Vec<u8>, Status> {
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

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
