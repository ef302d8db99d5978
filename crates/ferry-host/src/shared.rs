//! What every VM of the process shares, whatever its thread: queues,
//! shared data, metrics, the node, the log level and interrupt requests.
//! Store data reaches it through an `Arc`; `Host` builds it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use ferry_abi::LogLevel;

use crate::failure::HoldPolicy;
use crate::metrics::Metrics;
use crate::shared_data::SharedData;
use crate::shared_queue::SharedQueues;

/// State every VM of the process shares, whatever its thread.
pub(crate) struct SharedState {
    pub(crate) queues: SharedQueues,
    pub(crate) data: SharedData,
    pub(crate) metrics: Metrics,
    /// Modules loaded per vm_id: when the count drops to 0 the vm_id's
    /// queues and data are deleted (see `module::VmIdHandle`).
    pub(crate) vm_id_modules: Mutex<HashMap<String, usize>>,
    pub(crate) wasm_log_level: AtomicU8,
    /// Clusters `proxy_http_call` may name; `None` accepts any.
    pub(crate) upstreams: Option<HashSet<String>>,
    /// The configuration's `node` (the `xds.node` attribute).
    pub(crate) node: crate::attributes::Node,
    /// Problems already logged, so each is logged once per process.
    pub(crate) reported: Mutex<HashSet<(&'static str, &'static str)>>,
    /// When a plugin that keeps failing is held failed.
    pub(crate) hold: HoldPolicy,
    /// Requests to interrupt every callback running (past the drain time at
    /// shutdown): a callback that began before the last one is interrupted.
    pub(crate) interrupts: std::sync::atomic::AtomicU64,
}

impl SharedState {
    /// How many interrupt requests there have been.
    pub(crate) fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }

    /// Whether a plugin log line at `level` is printed.
    pub(crate) fn log_enabled(&self, level: LogLevel) -> bool {
        (level as u8) >= self.wasm_log_level.load(Ordering::Relaxed)
    }

    /// The raw level `proxy_get_log_level` reports.
    pub(crate) fn wasm_log_level_raw(&self) -> u8 {
        self.wasm_log_level.load(Ordering::Relaxed)
    }

    /// Whether `proxy_http_call` may send to `name`.
    pub(crate) fn knows_upstream(&self, name: &str) -> bool {
        self.upstreams.as_ref().is_none_or(|u| u.contains(name))
    }

    /// True the first time `problem` is reported for `function`, so each
    /// is logged once per process.
    pub(crate) fn first_report(&self, function: &'static str, problem: &'static str) -> bool {
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).insert((function, problem))
    }
}
