//! Envoy's own counters for what ferry does, under Envoy's names, so the
//! dashboards and alerts written for Envoy read ferry: per connection
//! manager `http.<stat_prefix>.downstream_*`, per cluster
//! `cluster.<name>.upstream_*`. Shared by every worker (atomics, as
//! Envoy's counters are).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ferry_host::MetricValue;

/// How the admin endpoint names one stat of a group (under the group's
/// scope, e.g. `cluster.<name>.`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum StatName<'a> {
    /// A stat of its own: `<name>`.
    Plain(&'static str),
    /// One of Envoy's response-code classes: `<stat>_<class>xx`, tagged
    /// with the class.
    Class(&'static str, u8),
    /// A native filter's counter: `<prefix>.<name>`.
    Filter(&'a str, &'static str),
}

/// Declares a group of Envoy stats once. One line per stat gives the
/// struct's field, its `/reset_counters` (counters to zero, gauges kept)
/// and its output (`each`, which the admin endpoint renders as text, JSON
/// and Prometheus). A stat is a `counter "name"`, a `gauge "name"`,
/// Envoy's response classes (`classes "stat"`: `stat_1xx` … `stat_5xx`), a
/// nested `group Type`, or native filters' counters (`filters _`).
macro_rules! envoy_stats {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $kind:ident $arg:tt, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: envoy_stats!(@type $kind $arg), )*
        }

        impl $name {
            /// `/reset_counters`: every counter to zero; gauges keep their value.
            pub(crate) fn reset_counters(&self) {
                $( envoy_stats!(@reset $kind self.$field); )*
            }

            /// Hands each stat's name (under the group's scope) and value to `f`.
            pub(crate) fn each(&self, f: &mut dyn FnMut(StatName<'_>, MetricValue)) {
                $( envoy_stats!(@each $kind $arg self.$field, f); )*
            }
        }
    };
    (@type counter $arg:tt) => { AtomicU64 };
    (@type gauge $arg:tt) => { AtomicI64 };
    (@type classes $arg:tt) => { [AtomicU64; 5] };
    (@type group $arg:tt) => { $arg };
    (@type filters $arg:tt) => { Vec<std::sync::Arc<FilterCounters>> };
    (@reset counter $e:expr) => { $e.store(0, Ordering::Relaxed) };
    (@reset gauge $e:expr) => { () };
    (@reset classes $e:expr) => { $e.iter().for_each(|c| c.store(0, Ordering::Relaxed)) };
    (@reset group $e:expr) => { $e.reset_counters() };
    (@reset filters $e:expr) => { $e.iter().for_each(|filter| filter.reset()) };
    (@each counter $arg:tt $e:expr, $f:ident) => {
        $f(StatName::Plain($arg), MetricValue::Counter($e.load(Ordering::Relaxed)))
    };
    (@each gauge $arg:tt $e:expr, $f:ident) => {
        $f(StatName::Plain($arg), MetricValue::Gauge($e.load(Ordering::Relaxed)))
    };
    (@each classes $arg:tt $e:expr, $f:ident) => {
        for (class, counter) in (1..=5).zip(&$e) {
            $f(StatName::Class($arg, class), MetricValue::Counter(counter.load(Ordering::Relaxed)));
        }
    };
    (@each group $arg:tt $e:expr, $f:ident) => { $e.each($f) };
    (@each filters $arg:tt $e:expr, $f:ident) => {
        for filter in &$e {
            for (name, value) in filter.iter() {
                $f(StatName::Filter(&filter.prefix, name), MetricValue::Counter(value));
            }
        }
    };
}

envoy_stats! {
    /// `http.<stat_prefix>.*` of one HTTP connection manager.
    pub struct HttpStats {
        /// `downstream_cx_total`.
        downstream_cx_total: counter "downstream_cx_total",
        /// `downstream_cx_active`.
        downstream_cx_active: gauge "downstream_cx_active",
        /// `downstream_rq_total`.
        downstream_rq_total: counter "downstream_rq_total",
        /// `downstream_rq_1xx` … `downstream_rq_5xx`, by the status sent.
        downstream_rq_by_class: classes "downstream_rq",
        /// The counters of the native filters (`compressor.<library>.gzip.response.*`, ...).
        filters: filters _,
    }
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
}

envoy_stats! {
    /// `listener.<address>.*` of one listener (and, summed, `server.total_connections`).
    pub struct ListenerStats {
        /// `downstream_cx_total`.
        downstream_cx_total: counter "downstream_cx_total",
        /// `downstream_cx_active`.
        downstream_cx_active: gauge "downstream_cx_active",
        /// `downstream_global_cx_overflow`: connections closed at once because
        /// the process-wide cap was reached.
        downstream_global_cx_overflow: counter "downstream_global_cx_overflow",
    }
}

impl ListenerStats {
    /// A connection was accepted: counted until the guard is dropped.
    pub(crate) fn accepted(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.downstream_cx_total.fetch_add(1, Ordering::Relaxed);
        self.downstream_cx_active.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// A connection counted as active on its listener while it lives.
pub(crate) struct OpenConnection(std::sync::Arc<ListenerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.downstream_cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}

envoy_stats! {
    /// `cluster.<name>.*` of one cluster (its membership and circuit-breaker
    /// gauges come from its endpoints, in `admin/stats.rs`).
    pub struct ClusterStats {
        /// `upstream_rq_total`: requests sent (proxied and plugins' HTTP calls).
        upstream_rq_total: counter "upstream_rq_total",
        /// `upstream_rq_1xx` … `upstream_rq_5xx`, by the status received.
        upstream_rq_by_class: classes "upstream_rq",
        /// `upstream_rq_timeout`.
        upstream_rq_timeout: counter "upstream_rq_timeout",
        /// `upstream_cx_connect_fail`.
        upstream_cx_connect_fail: counter "upstream_cx_connect_fail",
        /// `upstream_rq_retry`: tries after the first.
        upstream_rq_retry: counter "upstream_rq_retry",
        /// `upstream_rq_active`: requests waiting for their response headers.
        upstream_rq_active: gauge "upstream_rq_active",
        /// `outlier_detection.*`.
        outlier: group OutlierStats,
        /// `health_check.*`.
        health_check: group HealthCheckStats,
        /// The circuit breakers' overflow counters.
        breakers: group BreakerStats,
    }
}

envoy_stats! {
    /// `cluster.<name>.*_overflow`: requests the circuit breakers refused.
    pub struct BreakerStats {
        /// `upstream_rq_pending_overflow`: refused past `max_requests` or `max_pending_requests`.
        rq_pending_overflow: counter "upstream_rq_pending_overflow",
        /// `upstream_cx_overflow`: every connection `max_connections` allows was busy.
        cx_overflow: counter "upstream_cx_overflow",
        /// `upstream_rq_retry_overflow`: retries not made past `max_retries`.
        rq_retry_overflow: counter "upstream_rq_retry_overflow",
    }
}

envoy_stats! {
    /// `cluster.<name>.outlier_detection.*` counters.
    pub struct OutlierStats {
        /// `ejections_detected_consecutive_5xx`.
        detected_consecutive_5xx: counter "outlier_detection.ejections_detected_consecutive_5xx",
        /// `ejections_enforced_total`.
        enforced_total: counter "outlier_detection.ejections_enforced_total",
        /// `ejections_enforced_consecutive_5xx`.
        enforced_consecutive_5xx: counter "outlier_detection.ejections_enforced_consecutive_5xx",
        /// `ejections_overflow`: not ejected because `max_ejection_percent` were out.
        overflow: counter "outlier_detection.ejections_overflow",
    }
}

envoy_stats! {
    /// `cluster.<name>.health_check.*` counters.
    pub struct HealthCheckStats {
        /// `attempt`.
        attempt: counter "health_check.attempt",
        /// `success`.
        success: counter "health_check.success",
        /// `failure`: checks that failed (by status, or the network).
        failure: counter "health_check.failure",
        /// `network_failure`: checks that could not connect or timed out.
        network_failure: counter "health_check.network_failure",
    }
}

pub(crate) fn count_class(classes: &[AtomicU64; 5], status: u16) {
    if let Some(class) = (status / 100).checked_sub(1).and_then(|i| classes.get(usize::from(i))) {
        class.fetch_add(1, Ordering::Relaxed);
    }
}
