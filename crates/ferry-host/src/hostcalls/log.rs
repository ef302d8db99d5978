//! Logging, log level, time and tick period.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Caller, HostResult, check, ok};
use crate::limits::MAX_LOG_MESSAGE;
use crate::memory::{slice, split, write_u32, write_u64};
use crate::state::TickRequest;
use ferry_abi::{LogLevel, Status};

pub(super) fn proxy_get_log_level(mut caller: Caller<'_>, out: i32) -> HostResult {
    let (mem, state) = split(&mut caller);
    let level = state.shared.wasm_log_level_raw();
    check!(write_u32(mem, out, u32::from(level)));
    ok()
}

pub(super) fn proxy_get_current_time_nanoseconds(mut caller: Caller<'_>, out: i32) -> HostResult {
    let (mem, _) = split(&mut caller);
    check!(write_u64(mem, out, now_nanos()));
    ok()
}

pub(super) fn proxy_set_tick_period_milliseconds(mut caller: Caller<'_>, period: i32) -> HostResult {
    let state = caller.data_mut();
    let Some((_, entry, _)) = state.acting_context() else { return Ok(Status::BadArgument.code()) };
    state.tick_requests.push(TickRequest { context_id: entry.root_id, period_ms: period as u32 });
    ok()
}

pub(super) fn proxy_log(mut caller: Caller<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    let level = check!(LogLevel::from_raw(level as u32).ok_or(Status::BadArgument));
    let (mem, state) = split(&mut caller);
    let message = check!(slice(mem, ptr, len));
    if state.shared.log_enabled(level) {
        emit(level, state.log_prefix(), &capped_text(message));
    }
    ok()
}

/// Prints one plugin log line on the `wasm` logger, worded as Envoy does.
pub(crate) fn emit(level: LogLevel, prefix: &str, message: &str) {
    match level {
        LogLevel::Trace => tracing::trace!(target: "wasm", "wasm log{prefix}: {message}"),
        LogLevel::Debug => tracing::debug!(target: "wasm", "wasm log{prefix}: {message}"),
        LogLevel::Info => tracing::info!(target: "wasm", "wasm log{prefix}: {message}"),
        LogLevel::Warn => tracing::warn!(target: "wasm", "wasm log{prefix}: {message}"),
        LogLevel::Error => tracing::error!(target: "wasm", "wasm log{prefix}: {message}"),
        LogLevel::Critical => tracing::error!(target: "wasm", critical = true, "wasm log{prefix}: {message}"),
    }
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A log message as text, cut at [`MAX_LOG_MESSAGE`] bytes (the line says so).
pub(crate) fn capped_text(message: &[u8]) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LOG_MESSAGE {
        return String::from_utf8_lossy(message);
    }
    let mut text = String::from_utf8_lossy(&message[..MAX_LOG_MESSAGE]).into_owned();
    text.push_str(&format!("... ({} more bytes not logged)", message.len() - MAX_LOG_MESSAGE));
    text.into()
}
