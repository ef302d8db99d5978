//! Metrics: counters, gauges and histograms, process-wide by name.

use ferry_abi::{MetricType, Status};

use super::{Caller, HostResult, check, ok};
use crate::memory::{slice, split, write_u32, write_u64};

pub(super) fn proxy_define_metric(
    mut caller: Caller<'_>,
    kind: i32,
    name_ptr: i32,
    name_len: i32,
    id_out: i32,
) -> HostResult {
    let kind = check!(MetricType::from_raw(kind as u32).ok_or(Status::BadArgument));
    let (mem, state) = split(&mut caller);
    let name = check!(slice(mem, name_ptr, name_len));
    if name.len() > crate::limits::MAX_LOG_MESSAGE {
        return Ok(Status::BadArgument.code());
    }
    let name = String::from_utf8_lossy(name).into_owned();
    check!(slice(mem, id_out, 4));
    let metric = check!(state.shared.metrics.define(kind, &name));
    let id = state.metric_ids.add(metric);
    check!(write_u32(mem, id_out, id));
    ok()
}

pub(super) fn proxy_increment_metric(caller: Caller<'_>, id: i32, offset: i64) -> HostResult {
    let metric = check!(caller.data().metric_ids.get(id as u32));
    check!(metric.increment(offset));
    ok()
}

pub(super) fn proxy_record_metric(caller: Caller<'_>, id: i32, value: i64) -> HostResult {
    check!(caller.data().metric_ids.get(id as u32)).record(value as u64);
    ok()
}

pub(super) fn proxy_get_metric(mut caller: Caller<'_>, id: i32, value_out: i32) -> HostResult {
    let (mem, state) = split(&mut caller);
    let value = check!(check!(state.metric_ids.get(id as u32)).get());
    check!(write_u64(mem, value_out, value));
    ok()
}
