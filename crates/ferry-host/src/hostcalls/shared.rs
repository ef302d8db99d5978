//! Shared queues and shared data: process-wide, namespaced by vm_id.

use super::{Caller, HostResult, check, ok};
use crate::limits::MAX_VALUE_BYTES;
use crate::memory::{return_copy, slice, split, write_u32};
use crate::shared_queue::QueueOwner;
use bytes::Bytes;
use ferry_abi::Status;

pub(super) fn proxy_register_shared_queue(
    mut caller: Caller<'_>,
    name_ptr: i32,
    name_len: i32,
    id_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let name = String::from_utf8_lossy(check!(slice(mem, name_ptr, name_len))).into_owned();
    check!(slice(mem, id_out, 4));
    // A stream context registers on behalf of its root context.
    let context_id = state.acting_context().map_or(0, |(_, entry, _)| entry.root_id);
    let owner = QueueOwner { mailbox: state.mailbox.clone(), instance: state.instance, context_id };
    let token = check!(state.shared.queues.register(state.module.vm_id(), &name, owner));
    check!(write_u32(mem, id_out, token));
    ok()
}

pub(super) fn proxy_resolve_shared_queue(
    mut caller: Caller<'_>,
    vm_id_ptr: i32,
    vm_id_len: i32,
    name_ptr: i32,
    name_len: i32,
    id_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let vm_id = String::from_utf8_lossy(check!(slice(mem, vm_id_ptr, vm_id_len)));
    let name = String::from_utf8_lossy(check!(slice(mem, name_ptr, name_len)));
    // An empty vm_id means the caller's own.
    let vm_id = if vm_id.is_empty() { state.module.vm_id() } else { &vm_id };
    let token = check!(state.shared.queues.resolve(vm_id, &name).ok_or(Status::NotFound));
    check!(write_u32(mem, id_out, token));
    ok()
}

pub(super) fn proxy_enqueue_shared_queue(mut caller: Caller<'_>, token: i32, ptr: i32, len: i32) -> HostResult {
    let (mem, state) = split(&mut caller);
    let item = check!(slice(mem, ptr, len));
    check!(state.shared.queues.enqueue(token as u32, item));
    ok()
}

pub(super) fn proxy_dequeue_shared_queue(
    mut caller: Caller<'_>,
    token: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    // Check the out-params before taking the item, so a bad pointer loses nothing.
    check!(slice(mem, ptr_out, 4));
    check!(slice(mem, size_out, 4));
    let item = check!(state.shared.queues.take(token as u32));
    // An item the plugin could not take (its allocator failed) goes back.
    let handed = return_copy(&mut caller, &item.data, ptr_out, size_out);
    let queues = &caller.data().shared.queues;
    if matches!(handed, Ok(Status::Ok)) {
        queues.handed_over(token as u32, &item);
    } else {
        queues.undo_dequeue(token as u32, item);
    }
    Ok(handed?.code())
}

pub(super) fn proxy_get_shared_data(
    mut caller: Caller<'_>,
    key_ptr: i32,
    key_len: i32,
    ptr_out: i32,
    size_out: i32,
    cas_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let key = check!(slice(mem, key_ptr, key_len));
    check!(slice(mem, cas_out, 4));
    let (value, cas) = check!(state.shared.data.get(state.module.vm_id(), key));
    let status = return_copy(&mut caller, &value, ptr_out, size_out)?;
    if status == Status::Ok {
        let (mem, _) = split(&mut caller);
        check!(write_u32(mem, cas_out, cas));
    }
    Ok(status.code())
}

pub(super) fn proxy_set_shared_data(
    mut caller: Caller<'_>,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
    cas: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let key = check!(slice(mem, key_ptr, key_len));
    let value = check!(slice(mem, value_ptr, value_len));
    if key.len() + value.len() > MAX_VALUE_BYTES {
        return Ok(Status::BadArgument.code());
    }
    check!(state.shared.data.set(state.module.vm_id(), key, Bytes::copy_from_slice(value), cas as u32));
    ok()
}
