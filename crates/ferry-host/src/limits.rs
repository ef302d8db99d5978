//! What one plugin may cost the process: time per callback, linear memory
//! per instance, and the size of every host-side allocation whose size a
//! guest chooses.
//!
//! The first three are settings ([`Limits`]); the caps below are fixed and
//! named, so docs/operations.md can list them and a test can hit each.

use std::time::Duration;

/// Longest `proxy_log` message or `fd_write` line printed; the rest is cut
/// and the line says so.
pub const MAX_LOG_MESSAGE: usize = 64 * 1024;

/// Largest value a plugin can hand the host in one call: a header value, a
/// body it sets, a property, a shared-data value, a queue item, a local
/// response body, an HTTP call or gRPC message body. Larger is `BadArgument`
/// (queue items: `NotFound`, see [`crate::SharedQueues`]).
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// Largest result of a foreign function (`uncompress` of a zlib bomb stops
/// here with `SerializationFailure`).
pub const MAX_FOREIGN_RESULT: usize = 16 << 20;

/// Most bytes all shared-data values of one vm_id may hold together; a set
/// that would pass it is `BadArgument`.
pub const MAX_SHARED_DATA_BYTES: usize = 256 << 20;

/// Most bytes all shared queues of one vm_id may hold together: each waiting
/// item ([`crate::ITEM_OVERHEAD`] plus its length) and each queue (its name
/// plus [`crate::QUEUE_OVERHEAD`]). Past it an enqueue is refused and a
/// registration fails with `InternalFailure`, whatever the queues' own
/// bounds: a plugin registering queue after queue cannot take the
/// process's memory.
pub const MAX_QUEUED_BYTES_PER_VM_ID: usize = 1 << 30;

/// Most metrics a process holds; defining more is `BadArgument`.
pub const MAX_METRICS: usize = 65_536;

/// Most HTTP calls and gRPC calls or streams one VM instance may have open
/// at once; more is `InternalFailure` (which the SDKs report as an error).
pub const MAX_PENDING_CALLS: usize = 4096;

/// Most CEL expressions (`expr_create`) one VM instance holds at once;
/// more is `BadArgument`.
pub const MAX_EXPRESSIONS: usize = 1024;

/// Most properties one VM instance may declare (`declare_property`); more
/// is `BadArgument`.
pub const MAX_DECLARED_PROPERTIES: usize = 4096;

/// Most table elements an instance may have (function tables of large Go
/// modules run to tens of thousands).
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Granularity of the callback deadline: the epoch advances this often,
/// and at each advance a callback in progress has its CPU time looked at.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits on one plugin's VM instance, per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most CPU time one callback may use before it is interrupted (the
    /// time the OS gave other threads does not count); `None` for no limit.
    pub callback_deadline: Option<Duration>,
    /// Most CPU time `_initialize`/`_start`, `proxy_on_vm_start` and
    /// `proxy_on_configure` may use, each.
    pub start_deadline: Option<Duration>,
    /// Most linear memory the instance may have, in bytes; growing past it
    /// fails (`memory.grow` returns -1).
    pub memory_bytes: usize,
}

impl Default for Limits {
    /// 1 s of CPU time per callback: an honest heavy callback (a tokenizer
    /// loading its vocabulary takes 200–360 ms) finishes, a `loop {}` still
    /// fails its request within a second or so (Envoy has no limit). 10 s
    /// per start function, 1 GiB of memory (as Envoy's hosts).
    fn default() -> Self {
        Limits {
            callback_deadline: Some(Duration::from_secs(1)),
            start_deadline: Some(Duration::from_secs(10)),
            memory_bytes: 1 << 30,
        }
    }
}
