//! Envoy's own counters for what ferry does, under Envoy's names, so the
//! dashboards and alerts written for Envoy read ferry: per connection
//! manager `http.<stat_prefix>.downstream_*`, per cluster
//! `cluster.<name>.upstream_*`. Shared by every worker (atomics, as
//! Envoy's counters are).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// `http.<stat_prefix>.*` of one HTTP connection manager.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// `downstream_cx_total`.
    pub downstream_cx_total: AtomicU64,
    /// `downstream_cx_active` (a gauge).
    pub downstream_cx_active: AtomicI64,
    /// `downstream_rq_total`.
    pub downstream_rq_total: AtomicU64,
    /// `downstream_rq_1xx` … `downstream_rq_5xx`, by the status sent.
    pub downstream_rq_by_class: [AtomicU64; 5],
    /// The counters of the native filters (`compressor.<library>.gzip.response.*`, ...).
    pub filters: Vec<std::sync::Arc<FilterCounters>>,
}

/// Counters a filter keeps under `http.<stat_prefix>.<prefix>.<name>`.
#[derive(Debug)]
pub struct FilterCounters {
    /// e.g. `compressor.text.gzip.response`.
    pub prefix: String,
    names: &'static [&'static str],
    values: Box<[AtomicU64]>,
}

impl FilterCounters {
    /// Counters named `names`, at zero.
    pub(crate) fn new(prefix: String, names: &'static [&'static str]) -> Self {
        FilterCounters { prefix, names, values: names.iter().map(|_| AtomicU64::new(0)).collect() }
    }

    /// Adds `n` to the counter at `index` of the names.
    pub(crate) fn add(&self, index: usize, n: u64) {
        self.values[index].fetch_add(n, Ordering::Relaxed);
    }

    /// Each name and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.names.iter().zip(self.values.iter()).map(|(name, value)| (*name, value.load(Ordering::Relaxed)))
    }

    fn reset(&self) {
        for value in &self.values {
            value.store(0, Ordering::Relaxed);
        }
    }
}

impl HttpStats {
    /// A connection came.
    pub(crate) fn connection_opened(&self) {
        self.downstream_cx_total.fetch_add(1, Ordering::Relaxed);
        self.downstream_cx_active.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection went.
    pub(crate) fn connection_closed(&self) {
        self.downstream_cx_active.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request came.
    pub(crate) fn request(&self) {
        self.downstream_rq_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A response with `status` went back.
    pub(crate) fn response(&self, status: u16) {
        count_class(&self.downstream_rq_by_class, status);
    }

    /// `/reset_counters`: the counters to zero (not the active connections).
    pub(crate) fn reset_counters(&self) {
        for counter in
            [&self.downstream_cx_total, &self.downstream_rq_total].into_iter().chain(&self.downstream_rq_by_class)
        {
            counter.store(0, Ordering::Relaxed);
        }
        for filter in &self.filters {
            filter.reset();
        }
    }
}

/// `listener.<address>.*` of one listener (and, summed, `server.total_connections`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// `downstream_cx_total`.
    pub downstream_cx_total: AtomicU64,
    /// `downstream_cx_active` (a gauge).
    pub downstream_cx_active: AtomicI64,
    /// `downstream_global_cx_overflow`: connections closed at once because
    /// the process-wide cap was reached.
    pub downstream_global_cx_overflow: AtomicU64,
}

impl ListenerStats {
    /// A connection was accepted: counted until the guard is dropped.
    pub(crate) fn accepted(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.downstream_cx_total.fetch_add(1, Ordering::Relaxed);
        self.downstream_cx_active.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// `/reset_counters`.
    pub(crate) fn reset_counters(&self) {
        self.downstream_cx_total.store(0, Ordering::Relaxed);
        self.downstream_global_cx_overflow.store(0, Ordering::Relaxed);
    }
}

/// A connection counted as active on its listener while it lives.
pub(crate) struct OpenConnection(std::sync::Arc<ListenerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.downstream_cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `cluster.<name>.*` of one cluster.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// `upstream_rq_total`: requests sent (proxied and plugins' HTTP calls).
    pub upstream_rq_total: AtomicU64,
    /// `upstream_rq_1xx` … `upstream_rq_5xx`, by the status received.
    pub upstream_rq_by_class: [AtomicU64; 5],
    /// `upstream_rq_timeout`.
    pub upstream_rq_timeout: AtomicU64,
    /// `upstream_cx_connect_fail`.
    pub upstream_cx_connect_fail: AtomicU64,
    /// `upstream_rq_retry`: tries after the first.
    pub upstream_rq_retry: AtomicU64,
    /// `upstream_rq_active` (a gauge): requests waiting for their response headers.
    pub upstream_rq_active: AtomicI64,
    /// `outlier_detection.*`.
    pub outlier: OutlierStats,
    /// `health_check.*`.
    pub health_check: HealthCheckStats,
    /// The circuit breakers' overflow counters.
    pub breakers: BreakerStats,
}

/// `cluster.<name>.*_overflow`: requests the circuit breakers refused.
#[derive(Debug, Default)]
pub struct BreakerStats {
    /// `upstream_rq_pending_overflow`: refused past `max_requests` or `max_pending_requests`.
    pub rq_pending_overflow: AtomicU64,
    /// `upstream_cx_overflow`: every connection `max_connections` allows was busy.
    pub cx_overflow: AtomicU64,
    /// `upstream_rq_retry_overflow`: retries not made past `max_retries`.
    pub rq_retry_overflow: AtomicU64,
}

/// `cluster.<name>.outlier_detection.*` counters.
#[derive(Debug, Default)]
pub struct OutlierStats {
    /// `ejections_detected_consecutive_5xx`.
    pub detected_consecutive_5xx: AtomicU64,
    /// `ejections_enforced_total`.
    pub enforced_total: AtomicU64,
    /// `ejections_enforced_consecutive_5xx`.
    pub enforced_consecutive_5xx: AtomicU64,
    /// `ejections_overflow`: not ejected because `max_ejection_percent` were out.
    pub overflow: AtomicU64,
}

/// `cluster.<name>.health_check.*` counters.
#[derive(Debug, Default)]
pub struct HealthCheckStats {
    /// `attempt`.
    pub attempt: AtomicU64,
    /// `success`.
    pub success: AtomicU64,
    /// `failure`: checks that failed (by status, or the network).
    pub failure: AtomicU64,
    /// `network_failure`: checks that could not connect or timed out.
    pub network_failure: AtomicU64,
}

pub(crate) fn count_class(classes: &[AtomicU64; 5], status: u16) {
    if let Some(class) = (status / 100).checked_sub(1).and_then(|i| classes.get(usize::from(i))) {
        class.fetch_add(1, Ordering::Relaxed);
    }
}

impl ClusterStats {
    /// `/reset_counters`: every counter to zero.
    pub(crate) fn reset_counters(&self) {
        let counters = [
            &self.upstream_rq_total,
            &self.upstream_rq_timeout,
            &self.upstream_cx_connect_fail,
            &self.upstream_rq_retry,
            &self.outlier.detected_consecutive_5xx,
            &self.outlier.enforced_total,
            &self.outlier.enforced_consecutive_5xx,
            &self.outlier.overflow,
            &self.health_check.attempt,
            &self.health_check.success,
            &self.health_check.failure,
            &self.health_check.network_failure,
            &self.breakers.rq_pending_overflow,
            &self.breakers.cx_overflow,
            &self.breakers.rq_retry_overflow,
        ];
        for counter in counters.into_iter().chain(&self.upstream_rq_by_class) {
            counter.store(0, Ordering::Relaxed);
        }
    }
}
