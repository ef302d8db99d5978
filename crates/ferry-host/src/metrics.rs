//! Plugin-defined metrics (`proxy_define_metric` and friends): process-wide
//! by name, like Envoy's stats, and shown on the admin `/stats` endpoint as
//! `wasmcustom.<name>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_abi::{MetricType, Status};

/// One metric. Counters and gauges are a single number; histograms keep a
/// count, a sum and the extremes of the values recorded.
#[derive(Debug)]
pub struct Metric {
    kind: MetricType,
    value: AtomicU64,
    count: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Metric {
    fn new(kind: MetricType) -> Self {
        Metric {
            kind,
            value: AtomicU64::new(0),
            count: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
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
}

impl Metrics {
    /// The metric `name`, created if new.
    ///
    /// # Errors
    /// [`Status::BadArgument`] if `name` exists with another kind.
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> Result<Arc<Metric>, Status> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        if by_name.len() >= crate::limits::MAX_METRICS && !by_name.contains_key(name) {
            return Err(Status::BadArgument);
        }
        let metric = by_name.entry(name.to_owned()).or_insert_with(|| Arc::new(Metric::new(kind)));
        if metric.kind != kind {
            return Err(Status::BadArgument);
        }
        Ok(metric.clone())
    }

    /// Every metric, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, Arc<Metric>)> {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        by_name.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
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
        assert_eq!(histogram.get(), Err(Status::BadArgument));
        assert_eq!(histogram.increment(1), Err(Status::BadArgument));
        // The same name is the same metric; another kind is refused.
        assert!(Arc::ptr_eq(&metrics.define(MetricType::Counter, "requests").unwrap(), &counter));
        assert_eq!(metrics.define(MetricType::Gauge, "requests").map(|_| ()), Err(Status::BadArgument));
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
