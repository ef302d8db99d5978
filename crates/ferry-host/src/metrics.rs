//! Plugin-defined metrics (`proxy_define_metric` and friends): process-wide
//! by name, like Envoy's stats, and shown on the admin `/stats` endpoint as
//! `wasmcustom.<name>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_abi::{MetricType, Status};

/// Upper bounds of the histogram buckets: Envoy's default buckets, so a
/// Prometheus scrape of ferry looks like one of Envoy.
pub const HISTOGRAM_BUCKETS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// The bucket bounds of the histograms whose stat name (`wasmcustom.<name>`)
/// `matches` takes: a `stats_config.histogram_bucket_settings` entry.
#[derive(Clone)]
pub struct BucketRule {
    /// Whether the rule applies to a stat name.
    pub matches: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// The upper bounds, ascending.
    pub bounds: Arc<[f64]>,
}

impl std::fmt::Debug for BucketRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketRule").field("bounds", &self.bounds).finish_non_exhaustive()
    }
}

/// One metric. Counters and gauges are a single number; histograms keep a
/// count, a sum, the extremes and a count per bucket of their bounds
/// ([`HISTOGRAM_BUCKETS`] unless a [`BucketRule`] chose others).
#[derive(Debug)]
pub struct Metric {
    kind: MetricType,
    /// A histogram's bucket bounds.
    bounds: Arc<[f64]>,
    value: AtomicU64,
    count: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    /// Values at most each bucket's bound (and above the previous one); the
    /// last slot holds values above every bound. Empty unless a histogram.
    buckets: Box<[AtomicU64]>,
}

/// A metric's value at one moment, for the admin endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
    /// A histogram.
    Histogram(HistogramValue),
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// The smallest and largest, when any was recorded.
    pub range: Option<(u64, u64)>,
    /// The bucket bounds.
    pub bounds: Arc<[f64]>,
    /// Cumulative count of values at most each of `bounds`.
    pub cumulative: Vec<u64>,
}

impl Metric {
    fn new(kind: MetricType, bounds: Arc<[f64]>) -> Self {
        Metric {
            kind,
            value: AtomicU64::new(0),
            count: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            buckets: match kind {
                MetricType::Histogram => (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                _ => Box::new([]),
            },
            bounds,
        }
    }

    /// The value now, as the admin endpoint shows it.
    pub fn value(&self) -> MetricValue {
        let value = self.value.load(Ordering::Relaxed);
        match self.kind {
            MetricType::Counter => MetricValue::Counter(value),
            MetricType::Gauge => MetricValue::Gauge(value as i64),
            MetricType::Histogram => {
                let count = self.count.load(Ordering::Relaxed);
                let range = (count > 0).then(|| (self.min.load(Ordering::Relaxed), self.max.load(Ordering::Relaxed)));
                let cumulative = self.buckets[..self.bounds.len()]
                    .iter()
                    .scan(0, |total, bucket| {
                        *total += bucket.load(Ordering::Relaxed);
                        Some(*total)
                    })
                    .collect();
                MetricValue::Histogram(HistogramValue {
                    count,
                    sum: value,
                    range,
                    bounds: self.bounds.clone(),
                    cumulative,
                })
            }
        }
    }

    /// What kind of metric this is.
    pub fn kind(&self) -> MetricType {
        self.kind
    }

    /// `proxy_increment_metric`: counters only go up; gauges go both ways;
    /// histograms take `proxy_record_metric` instead.
    pub(crate) fn increment(&self, offset: i64) -> Result<(), Status> {
        match self.kind {
            MetricType::Counter if offset > 0 => {
                self.value.fetch_add(offset as u64, Ordering::Relaxed);
            }
            MetricType::Gauge => {
                self.value.fetch_add(offset as u64, Ordering::Relaxed); // two's complement: adds or subtracts
            }
            _ => return Err(Status::BadArgument),
        }
        Ok(())
    }

    /// `proxy_record_metric`: adds to a counter, sets a gauge, records a
    /// histogram value (as Envoy).
    pub(crate) fn record(&self, value: u64) {
        match self.kind {
            MetricType::Counter => {
                self.value.fetch_add(value, Ordering::Relaxed);
            }
            MetricType::Gauge => self.value.store(value, Ordering::Relaxed),
            MetricType::Histogram => {
                self.value.fetch_add(value, Ordering::Relaxed);
                self.count.fetch_add(1, Ordering::Relaxed);
                self.min.fetch_min(value, Ordering::Relaxed);
                self.max.fetch_max(value, Ordering::Relaxed);
                let bucket = self.bounds.partition_point(|&bound| bound < value as f64);
                self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `proxy_get_metric`: the value of a counter or gauge.
    pub(crate) fn get(&self) -> Result<u64, Status> {
        match self.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            _ => Ok(self.value.load(Ordering::Relaxed)),
        }
    }

    /// The metric's value as the admin endpoint prints it.
    pub fn render(&self) -> String {
        let value = self.value.load(Ordering::Relaxed);
        match self.kind {
            MetricType::Counter => value.to_string(),
            MetricType::Gauge => (value as i64).to_string(),
            MetricType::Histogram => {
                let count = self.count.load(Ordering::Relaxed);
                let (min, max) = if count == 0 {
                    (0, 0)
                } else {
                    (self.min.load(Ordering::Relaxed), self.max.load(Ordering::Relaxed))
                };
                format!("count={count} sum={value} min={min} max={max}")
            }
        }
    }
}

/// All plugin-defined metrics of the process, by name.
#[derive(Default)]
pub struct Metrics {
    by_name: Mutex<BTreeMap<String, Arc<Metric>>>,
    /// Bucket bounds chosen by stat name; the first rule that matches wins.
    bucket_rules: Vec<BucketRule>,
}

impl Metrics {
    /// No metrics yet; histograms get the bounds of the first of `rules`
    /// that matches their stat name, else [`HISTOGRAM_BUCKETS`].
    pub(crate) fn with_bucket_rules(bucket_rules: Vec<BucketRule>) -> Self {
        Metrics { by_name: Mutex::default(), bucket_rules }
    }

    /// The bounds of a histogram named `name` (as a plugin defined it).
    fn bounds_for(&self, name: &str) -> Arc<[f64]> {
        let stat = format!("wasmcustom.{name}");
        match self.bucket_rules.iter().find(|rule| (rule.matches)(&stat)) {
            Some(rule) => rule.bounds.clone(),
            None => Arc::from(&HISTOGRAM_BUCKETS[..]),
        }
    }

    /// The metric `name`, created if new.
    ///
    /// # Errors
    /// [`Status::BadArgument`] if `name` exists with another kind.
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> Result<Arc<Metric>, Status> {
        let name = &sanitize_stat_name(name);
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        if by_name.len() >= crate::limits::MAX_METRICS && !by_name.contains_key(name) {
            return Err(Status::BadArgument);
        }
        let metric = by_name.entry(name.to_owned()).or_insert_with(|| {
            let bounds = if kind == MetricType::Histogram { self.bounds_for(name) } else { Arc::from(&[][..]) };
            Arc::new(Metric::new(kind, bounds))
        });
        if metric.kind != kind {
            return Err(Status::BadArgument);
        }
        Ok(metric.clone())
    }

    /// Sets every counter to zero, as Envoy's `/reset_counters` (gauges and
    /// histograms stay).
    pub fn reset_counters(&self) {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        for metric in by_name.values().filter(|m| m.kind == MetricType::Counter) {
            metric.value.store(0, Ordering::Relaxed);
        }
    }

    /// Every metric, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, Arc<Metric>)> {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A stat name chosen by a plugin, made safe for every admin output: as
/// Envoy, `:` and NUL become `_`; beyond Envoy, so that no name can start a
/// line of its own or break a format, every other control character and
/// whitespace becomes `_` too.
pub fn sanitize_stat_name(name: &str) -> String {
    name.chars().map(|c| if c == ':' || c.is_control() || c.is_whitespace() { '_' } else { c }).collect()
}

/// A VM's metric ids: the kind in the low two bits (as Envoy), an index
/// above them, never 0.
#[derive(Default)]
pub(crate) struct MetricIds {
    metrics: Vec<Arc<Metric>>,
    /// Index of each metric in `metrics`, by address.
    index: rustc_hash::FxHashMap<usize, usize>,
}

impl MetricIds {
    /// The id of `metric` in this VM: the one it already has if the plugin
    /// defined it before, so defining in a loop does not grow the table.
    pub(crate) fn add(&mut self, metric: Arc<Metric>) -> u32 {
        let address = Arc::as_ptr(&metric) as usize;
        let index = *self.index.entry(address).or_insert_with(|| {
            self.metrics.push(metric);
            self.metrics.len() - 1
        });
        ((index as u32 + 1) << 2) | self.metrics[index].kind as u32
    }

    pub(crate) fn get(&self, id: u32) -> Result<&Metric, Status> {
        let index = (id >> 2).checked_sub(1).ok_or(Status::NotFound)? as usize;
        self.metrics.get(index).filter(|m| m.kind as u32 == id & 3).map(|m| &**m).ok_or(Status::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms() {
        let metrics = Metrics::default();
        let counter = metrics.define(MetricType::Counter, "requests").unwrap();
        assert_eq!(counter.increment(0), Err(Status::BadArgument), "counters only go up");
        counter.increment(2).unwrap();
        counter.record(3);
        assert_eq!(counter.get(), Ok(5));
        let gauge = metrics.define(MetricType::Gauge, "active").unwrap();
        gauge.increment(5).unwrap();
        gauge.increment(-7).unwrap();
        assert_eq!(gauge.render(), "-2");
        gauge.record(9);
        assert_eq!(gauge.get(), Ok(9));
        let histogram = metrics.define(MetricType::Histogram, "sizes").unwrap();
        histogram.record(8);
        histogram.record(10);
        assert_eq!(histogram.render(), "count=2 sum=18 min=8 max=10");
        histogram.record(0);
        histogram.record(5_000_000);
        let MetricValue::Histogram(value) = histogram.value() else { panic!("a histogram") };
        assert_eq!((value.count, value.sum, value.range), (4, 5_000_018, Some((0, 5_000_000))));
        // Bounds 0.5, 1, 5, 10, 25, ...: 0 in the first, 8 and 10 by 10, 5,000,000 above all.
        assert_eq!(&value.cumulative[..5], &[1, 1, 1, 3, 3]);
        assert_eq!(value.cumulative.last(), Some(&3));
        assert_eq!(histogram.get(), Err(Status::BadArgument));
        assert_eq!(histogram.increment(1), Err(Status::BadArgument));
        // The same name is the same metric; another kind is refused.
        assert!(Arc::ptr_eq(&metrics.define(MetricType::Counter, "requests").unwrap(), &counter));
        assert_eq!(metrics.define(MetricType::Gauge, "requests").map(|_| ()), Err(Status::BadArgument));
    }

    #[test]
    fn names_cannot_forge_lines_or_break_formats() {
        let metrics = Metrics::default();
        metrics.define(MetricType::Counter, "a\nwasmcustom.forged: 1 x:y\0").unwrap();
        let names: Vec<String> = metrics.snapshot().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, vec!["a_wasmcustom.forged__1_x_y_".to_owned()]);
    }

    #[test]
    fn ids_encode_the_kind_and_unknown_ids_are_not_found() {
        let metrics = Metrics::default();
        let mut ids = MetricIds::default();
        let c = ids.add(metrics.define(MetricType::Counter, "c").unwrap());
        let g = ids.add(metrics.define(MetricType::Gauge, "g").unwrap());
        assert_ne!(c, 0);
        assert_eq!(ids.get(c).unwrap().kind(), MetricType::Counter);
        assert_eq!(ids.get(g).unwrap().kind(), MetricType::Gauge);
        assert_eq!(ids.get(0).map(|_| ()), Err(Status::NotFound));
        assert_eq!(ids.get(c ^ 1).map(|_| ()), Err(Status::NotFound));
        assert_eq!(ids.get(99 << 2).map(|_| ()), Err(Status::NotFound));
    }
}
