//! Bounds-checked access to guest memory, and handing bytes to the guest
//! through its allocator.
//!
//! Every pointer and length a plugin passes is checked here: a bad one
//! yields [`Status::InvalidMemoryAccess`], never a host crash.

use ferry_abi::Status;
use wasmtime::Caller;

use crate::state::HostState;

/// Guest memory and the store data, borrowed together.
pub(crate) fn split<'a>(caller: &'a mut Caller<'_, HostState>) -> (&'a mut [u8], &'a mut HostState) {
    match caller.data().memory {
        Some(memory) => memory.data_and_store_mut(caller),
        // Modules without memory are rejected at load; keep going safely anyway.
        None => (&mut [], caller.data_mut()),
    }
}

/// The `len` bytes at `ptr`.
pub(crate) fn slice(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    let (start, end) = range(ptr, len)?;
    mem.get(start..end).ok_or(Status::InvalidMemoryAccess)
}

/// The `len` bytes at `ptr`, writable.
pub(crate) fn slice_mut(mem: &mut [u8], ptr: i32, len: i32) -> Result<&mut [u8], Status> {
    let (start, end) = range(ptr, len)?;
    mem.get_mut(start..end).ok_or(Status::InvalidMemoryAccess)
}

fn range(ptr: i32, len: i32) -> Result<(usize, usize), Status> {
    // Wasm32 pointers and sizes are unsigned 32-bit values.
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize).ok_or(Status::InvalidMemoryAccess)?;
    Ok((start, end))
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(mem: &mut [u8], ptr: i32, value: u32) -> Result<(), Status> {
    slice_mut(mem, ptr, 4)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(mem: &mut [u8], ptr: i32, value: u64) -> Result<(), Status> {
    slice_mut(mem, ptr, 8)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Reads a little-endian `u32` at `ptr`.
pub(crate) fn read_u32(mem: &[u8], ptr: i32) -> Result<u32, Status> {
    let bytes = slice(mem, ptr, 4)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Hands `len` bytes to the guest: allocates them with the guest's
/// allocator, lets `fill` write them, and stores the address and size at
/// `ptr_out` and `size_out`. Empty data is returned as address 0, size 0,
/// without allocating (as Envoy does).
///
/// While the allocator runs, host calls other than `proxy_log` are refused
/// (see [`crate::hostcalls`]), so what `fill` copies cannot have changed
/// since `len` was measured; `fill` still reports whether it could write
/// exactly `len` bytes, and `InternalFailure` is returned if not.
///
/// Returns `Err` only when the allocator traps, which fails the callback.
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    len: usize,
    ptr_out: i32,
    size_out: i32,
    fill: impl FnOnce(&HostState, &mut [u8]) -> bool,
) -> wasmtime::Result<Status> {
    // Check the out-params first, so a bad pointer does not leak an allocation.
    {
        let (mem, _) = split(caller);
        if slice(mem, ptr_out, 4).is_err() || slice(mem, size_out, 4).is_err() {
            return Ok(Status::InvalidMemoryAccess);
        }
    }
    let Ok(len32) = i32::try_from(len) else { return Ok(Status::InvalidMemoryAccess) };
    let address = if len == 0 {
        0
    } else {
        // Taken out for the call (a `TypedFunc` is costly to clone); the
        // flag refuses host calls the allocator makes.
        let Some(allocator) = caller.data_mut().allocator.take() else {
            return Ok(Status::InternalFailure);
        };
        caller.data_mut().in_allocator = true;
        // The guest may grow its memory here: borrow it only afterwards.
        let address = allocator.call(&mut *caller, (len32,));
        let state = caller.data_mut();
        state.in_allocator = false;
        state.allocator = Some(allocator);
        let address = address?;
        if address == 0 {
            return Ok(Status::InvalidMemoryAccess);
        }
        address
    };
    let (mem, state) = split(caller);
    if len > 0 {
        match slice_mut(mem, address, len32) {
            Ok(dest) => {
                if !fill(state, dest) {
                    return Ok(Status::InternalFailure);
                }
            }
            Err(status) => return Ok(status),
        }
    }
    if write_u32(mem, ptr_out, address as u32).is_err() || write_u32(mem, size_out, len as u32).is_err() {
        return Ok(Status::InvalidMemoryAccess);
    }
    Ok(Status::Ok)
}

/// Hands a copy of `bytes` to the guest (see [`return_bytes`]).
pub(crate) fn return_copy(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_out: i32,
    size_out: i32,
) -> wasmtime::Result<Status> {
    return_bytes(caller, bytes.len(), ptr_out, size_out, |_, dest| {
        dest.copy_from_slice(bytes);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_and_overflowing_ranges_are_invalid_memory_access() {
        let mem = [0u8; 16];
        assert_eq!(slice(&mem, 0, 16).unwrap().len(), 16);
        assert_eq!(slice(&mem, 16, 0).unwrap().len(), 0);
        assert_eq!(slice(&mem, 8, 9), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&mem, -1, 1), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&mem, 1, -1), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&mem, i32::MAX, i32::MAX), Err(Status::InvalidMemoryAccess));
        assert_eq!(read_u32(&mem, 13), Err(Status::InvalidMemoryAccess));
    }
}
