//! A cluster's endpoints as every worker sees them: each one's requests in
//! flight, its active health check result and its ejection by outlier
//! detection, shared by the workers (atomics), and the choice of an
//! endpoint by the cluster's `lb_policy` among the healthy ones.
//!
//! As in Envoy, when fewer than `healthy_panic_threshold` percent of the
//! endpoints are healthy the cluster is in panic: every endpoint takes
//! traffic, healthy or not (better some answers than none).
//!
//! The cluster's circuit breakers live here too: requests in flight
//! (`max_requests`), busy HTTP/1.1 connections (`max_connections`, one per
//! request in flight) with the requests waiting for one
//! (`max_pending_requests`), and retries (`max_retries`).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_config::{CircuitBreakers, LbPolicy, OutlierDetection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::envoy_stats::ClusterStats;

/// One endpoint's shared state.
#[derive(Debug, Default)]
pub(crate) struct Host {
    /// Requests sent to it whose response headers have not come yet.
    active: AtomicUsize,
    /// 5xx answers (and connection failures) in a row.
    consecutive_5xx: AtomicU32,
    /// Until when it is ejected, in milliseconds since the cluster's epoch
    /// (0: never ejected, or back in).
    ejected_until_ms: AtomicU64,
    /// How many times it was ejected: the next ejection lasts that many
    /// times `base_ejection_time`.
    times_ejected: AtomicU32,
    /// The active health check marks it unhealthy.
    check_failed: AtomicBool,
    /// Check results of the same kind in a row (passes while failed,
    /// failures while healthy).
    check_streak: AtomicU32,
    /// No check has finished yet (the first pass marks it healthy at once).
    never_checked: AtomicBool,
}

/// A cluster's endpoints, their state and how one is chosen.
#[derive(Debug)]
pub(crate) struct ClusterHosts {
    hosts: Vec<Host>,
    policy: LbPolicy,
    panic_threshold: f64,
    outlier: Option<OutlierDetection>,
    /// Health checks or outlier detection can take endpoints out.
    tracked: bool,
    /// What `ejected_until_ms` counts from.
    epoch: Instant,
    pub(crate) stats: Arc<ClusterStats>,
    breakers: CircuitBreakers,
    /// HTTP/1.1 clusters: a permit for each connection that may be busy.
    connections: Option<Arc<Semaphore>>,
    /// Requests waiting for a connection.
    pending: AtomicUsize,
    /// Retries in flight.
    retries: AtomicUsize,
}

/// A circuit breaker was open: the request fails at once.
#[derive(Debug)]
pub(crate) struct Overflow;

/// A request let through the circuit breakers: holds its connection slot
/// until dropped.
pub(crate) struct Admitted {
    _connection: Option<OwnedSemaphorePermit>,
}

/// A retry in flight, counted against `max_retries` until dropped.
pub(crate) struct RetrySlot {
    hosts: Arc<ClusterHosts>,
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.hosts.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request waiting for a connection, counted until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request in flight to an endpoint: counted until dropped.
pub(crate) struct InFlight {
    hosts: Arc<ClusterHosts>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.hosts.hosts[self.index].active.fetch_sub(1, Ordering::Relaxed);
        self.hosts.stats.upstream_rq_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterHosts {
    pub(crate) fn new(cluster: &ferry_config::Cluster, stats: Arc<ClusterStats>) -> Self {
        let checked = cluster.health_check.is_some();
        let hosts = cluster
            .endpoints
            .iter()
            .map(|_| Host {
                // With active checks an endpoint is unhealthy until its first check passes, as in Envoy.
                check_failed: AtomicBool::new(checked),
                never_checked: AtomicBool::new(true),
                ..Host::default()
            })
            .collect();
        ClusterHosts {
            hosts,
            policy: cluster.lb_policy,
            panic_threshold: cluster.panic_threshold,
            outlier: cluster.outlier_detection.clone(),
            tracked: checked || cluster.outlier_detection.is_some(),
            epoch: Instant::now(),
            stats,
            breakers: cluster.circuit_breakers,
            connections: (!cluster.http2 || cluster.auto_http)
                .then(|| Arc::new(Semaphore::new(cluster.circuit_breakers.max_connections as usize))),
            pending: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }

    /// Lets a request through the circuit breakers, or refuses it: past
    /// `max_requests` in flight; on HTTP/1.1, when every connection
    /// `max_connections` allows is busy it waits for one, unless
    /// `max_pending_requests` already wait. Counted as Envoy counts them.
    pub(crate) async fn admit(&self) -> Result<Admitted, Overflow> {
        let stats = &self.stats;
        if stats.upstream_rq_active.load(Ordering::Relaxed) >= i64::from(self.breakers.max_requests) {
            stats.breakers.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow);
        }
        let Some(connections) = &self.connections else { return Ok(Admitted { _connection: None }) };
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            return Ok(Admitted { _connection: Some(permit) });
        }
        stats.breakers.cx_overflow.fetch_add(1, Ordering::Relaxed);
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.breakers.max_pending_requests as usize {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            stats.breakers.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow);
        }
        let _waiting = Waiting(&self.pending);
        let permit = connections.clone().acquire_owned().await.map_err(|_| Overflow)?;
        Ok(Admitted { _connection: Some(permit) })
    }

    /// A slot for one more retry, unless `max_retries` are in flight.
    pub(crate) fn retry_slot(self: &Arc<Self>) -> Option<RetrySlot> {
        if self.retries.fetch_add(1, Ordering::Relaxed) >= self.breakers.max_retries as usize {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            self.stats.breakers.rq_retry_overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot { hosts: self.clone() })
    }

    /// Which circuit breakers are open now: requests, connections, pending, retries.
    pub(crate) fn breakers_open(&self) -> [bool; 4] {
        let active = self.stats.upstream_rq_active.load(Ordering::Relaxed);
        [
            active >= i64::from(self.breakers.max_requests),
            self.connections.as_ref().is_some_and(|c| c.available_permits() == 0),
            self.pending.load(Ordering::Relaxed) >= self.breakers.max_pending_requests as usize,
            self.retries.load(Ordering::Relaxed) >= self.breakers.max_retries as usize,
        ]
    }

    /// How many endpoints there are.
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn ejected(&self, host: &Host, now_ms: u64) -> bool {
        host.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    fn healthy(&self, host: &Host, now_ms: u64) -> bool {
        !host.check_failed.load(Ordering::Relaxed) && !self.ejected(host, now_ms)
    }

    /// Endpoints healthy now (`membership_healthy`).
    pub(crate) fn healthy_count(&self) -> usize {
        let now = self.now_ms();
        self.hosts.iter().filter(|h| self.healthy(h, now)).count()
    }

    /// Endpoints ejected now (`outlier_detection.ejections_active`).
    pub(crate) fn ejected_count(&self) -> usize {
        let now = self.now_ms();
        self.hosts.iter().filter(|h| self.ejected(h, now)).count()
    }

    /// The endpoint for the next request, by the policy, among the healthy
    /// ones (all of them in panic); `cursor` is the worker's round-robin
    /// position. `None` when the cluster has no endpoint to send to.
    pub(crate) fn choose(&self, cursor: &Cell<usize>) -> Option<usize> {
        let total = self.hosts.len();
        if total == 0 {
            return None;
        }
        // Without checks or outlier detection every endpoint is healthy:
        // no per-request scan.
        let (count, all) = if self.tracked {
            let now = self.now_ms();
            let healthy = self.hosts.iter().filter(|h| self.healthy(h, now)).count();
            let panic = (healthy as f64) * 100.0 < self.panic_threshold * total as f64;
            if panic { (total, true) } else { (healthy, false) }
        } else {
            (total, true)
        };
        if count == 0 {
            return None;
        }
        // The k-th candidate: every endpoint, or the k-th healthy one.
        let now = if all { 0 } else { self.now_ms() };
        let nth = |k: usize| {
            if all { k } else { (0..total).filter(|&i| self.healthy(&self.hosts[i], now)).nth(k).unwrap_or(0) }
        };
        Some(match self.policy {
            LbPolicy::RoundRobin => {
                let at = cursor.get();
                cursor.set(at.wrapping_add(1));
                nth(at % count)
            }
            LbPolicy::Random => nth(fastrand::usize(..count)),
            LbPolicy::LeastRequest { choice_count } => (0..choice_count)
                .map(|_| nth(fastrand::usize(..count)))
                .min_by_key(|&i| self.hosts[i].active.load(Ordering::Relaxed))
                .expect("choice_count is at least 2"),
        })
    }

    /// Counts a request to endpoint `index` as in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>, index: usize) -> InFlight {
        self.hosts[index].active.fetch_add(1, Ordering::Relaxed);
        self.stats.upstream_rq_active.fetch_add(1, Ordering::Relaxed);
        InFlight { hosts: self.clone(), index }
    }

    /// What came of a request to endpoint `index`: a 5xx (or a connection
    /// failure or timeout, which Envoy counts as 5xx too) or not. Enough 5xx
    /// in a row eject the endpoint, if outlier detection is on.
    pub(crate) fn record(&self, index: usize, failed: bool) {
        let Some(outlier) = &self.outlier else { return };
        let host = &self.hosts[index];
        if !failed {
            host.consecutive_5xx.store(0, Ordering::Relaxed);
            return;
        }
        let streak = host.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < outlier.consecutive_5xx {
            return;
        }
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        let stats = &self.stats;
        stats.outlier.detected_consecutive_5xx.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        if self.ejected(host, now) || fastrand::u32(0..100) >= outlier.enforcing_consecutive_5xx {
            return;
        }
        // At most max_ejection_percent of the endpoints, but always one.
        let allowed = (self.hosts.len() * outlier.max_ejection_percent as usize / 100).max(1);
        if self.ejected_count() >= allowed {
            stats.outlier.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let times = host.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let longest = outlier.max_ejection_time.max(outlier.base_ejection_time);
        let length = outlier.base_ejection_time.saturating_mul(times).min(longest);
        host.ejected_until_ms.store(now + length.as_millis() as u64, Ordering::Relaxed);
        stats.outlier.enforced_total.fetch_add(1, Ordering::Relaxed);
        stats.outlier.enforced_consecutive_5xx.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "upstream", "outlier detection: endpoint {index} ejected for {length:?} after {streak} 5xx in a row");
    }

    /// An active health check of endpoint `index` passed or failed.
    /// Returns whether its health changed.
    pub(crate) fn checked(&self, index: usize, passed: bool, check: &ferry_config::HealthCheck) -> bool {
        let host = &self.hosts[index];
        let first = host.never_checked.swap(false, Ordering::Relaxed);
        let failed = host.check_failed.load(Ordering::Relaxed);
        if passed != failed {
            // It stays as it is: a pass while healthy, a failure while failed.
            host.check_streak.store(0, Ordering::Relaxed);
            return false;
        }
        let streak = host.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if passed { check.healthy_threshold } else { check.unhealthy_threshold };
        // At start, one passing check is enough.
        if streak >= threshold || (passed && first) {
            host.check_failed.store(!passed, Ordering::Relaxed);
            host.check_streak.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Gives back the ejection multiplier of endpoints that stayed in for
    /// a whole `interval`, as Envoy's interval timer does.
    pub(crate) fn review(&self) {
        let Some(outlier) = &self.outlier else { return };
        let now = self.now_ms();
        let interval = outlier.interval.as_millis() as u64;
        for host in &self.hosts {
            let until = host.ejected_until_ms.load(Ordering::Relaxed);
            if until <= now.saturating_sub(interval) && host.times_ejected.load(Ordering::Relaxed) > 0 {
                let _ = host.times_ejected.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1));
            }
        }
    }

    /// How often [`Self::review`] runs.
    pub(crate) fn review_interval(&self) -> Option<Duration> {
        self.outlier.as_ref().map(|o| o.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(endpoints: usize, policy: LbPolicy, outlier: Option<OutlierDetection>) -> ferry_config::Cluster {
        let yaml = format!(
            "static_resources:\n  clusters:\n  - name: c\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n{}",
            (0..endpoints)
                .map(|i| format!("        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n", 1000 + i))
                .collect::<String>()
        );
        let mut cluster = ferry_config::from_yaml(&yaml).unwrap().clusters.remove(0);
        cluster.lb_policy = policy;
        cluster.outlier_detection = outlier;
        cluster
    }

    fn outlier() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            enforcing_consecutive_5xx: 100,
        }
    }

    #[test]
    fn round_robin_takes_each_in_turn() {
        let hosts = ClusterHosts::new(&cluster(3, LbPolicy::RoundRobin, None), Arc::default());
        let cursor = Cell::new(0);
        let picks: Vec<usize> = (0..6).map(|_| hosts.choose(&cursor).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let hosts =
            Arc::new(ClusterHosts::new(&cluster(2, LbPolicy::LeastRequest { choice_count: 2 }, None), Arc::default()));
        let _busy: Vec<InFlight> = (0..5).map(|_| hosts.begin(0)).collect();
        let cursor = Cell::new(0);
        let to_idle = (0..200).filter(|_| hosts.choose(&cursor) == Some(1)).count();
        // Two random picks: both land on the busy one a quarter of the time.
        assert!(to_idle > 120, "{to_idle} of 200 to the idle endpoint");
    }

    #[test]
    fn consecutive_5xx_eject_and_the_others_take_the_traffic() {
        let hosts = ClusterHosts::new(&cluster(2, LbPolicy::RoundRobin, Some(outlier())), Arc::default());
        for _ in 0..2 {
            hosts.record(0, true);
        }
        hosts.record(0, false);
        hosts.record(0, true);
        assert_eq!(hosts.ejected_count(), 0, "a success in between starts the count again");
        for _ in 0..3 {
            hosts.record(0, true);
        }
        assert_eq!(hosts.ejected_count(), 1);
        let cursor = Cell::new(0);
        assert!((0..4).all(|_| hosts.choose(&cursor) == Some(1)));
        // Half may be ejected at most: the second is kept in.
        for _ in 0..3 {
            hosts.record(1, true);
        }
        assert_eq!(hosts.ejected_count(), 1);
        assert_eq!(hosts.stats.outlier.overflow.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn below_the_panic_threshold_every_endpoint_takes_traffic() {
        let mut config =
            cluster(3, LbPolicy::RoundRobin, Some(OutlierDetection { max_ejection_percent: 100, ..outlier() }));
        config.panic_threshold = 50.0;
        let hosts = ClusterHosts::new(&config, Arc::default());
        for _ in 0..3 {
            hosts.record(0, true);
        }
        let cursor = Cell::new(0);
        let picks: Vec<usize> = (0..4).map(|_| hosts.choose(&cursor).unwrap()).collect();
        assert!(!picks.contains(&0), "2 of 3 healthy (67 %): the ejected one is skipped");
        for _ in 0..3 {
            hosts.record(1, true);
        }
        let picks: Vec<usize> = (0..3).map(|_| hosts.choose(&cursor).unwrap()).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "1 of 3 healthy (33 %): panic, all take traffic");
    }

    #[test]
    fn health_checks_need_their_thresholds_except_the_first_pass() {
        let mut config = cluster(1, LbPolicy::RoundRobin, None);
        let check = ferry_config::HealthCheck {
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
            kind: ferry_config::HealthCheckKind::Tcp,
        };
        config.health_check = Some(check.clone());
        let hosts = ClusterHosts::new(&config, Arc::default());
        assert_eq!(hosts.healthy_count(), 0, "unhealthy until checked");
        assert!(hosts.checked(0, true, &check), "the first pass marks it healthy");
        assert!(!hosts.checked(0, false, &check));
        assert!(hosts.checked(0, false, &check), "two failures mark it unhealthy");
        assert!(!hosts.checked(0, true, &check) && !hosts.checked(0, true, &check));
        assert!(hosts.checked(0, true, &check), "then three passes");
        assert_eq!(hosts.healthy_count(), 1);
    }
}
