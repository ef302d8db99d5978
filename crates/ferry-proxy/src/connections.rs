//! Downstream connections as a resource: the process-wide cap (the
//! overload manager's `global_downstream_max_connections`, or ferry's
//! default from the file-descriptor limit), and each HTTP connection's
//! activity, which its idle timeout watches.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many downstream connections may be open at once, over all
/// listeners and workers.
#[derive(Debug)]
pub struct ConnectionCap {
    max: Option<u64>,
    open: AtomicU64,
    /// Of the open ones, those serving HTTP: a drain waits for them.
    http: AtomicU64,
}

/// An HTTP connection, counted while it is served.
pub(crate) struct HttpConnection<'a>(&'a ConnectionCap);

impl Drop for HttpConnection<'_> {
    fn drop(&mut self) {
        self.0.http.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted connection, counted against the cap while it lives.
pub(crate) struct CountedConnection(Arc<ConnectionCap>);

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionCap {
    /// A cap of `max` connections (`None`: none).
    pub fn new(max: Option<u64>) -> Arc<ConnectionCap> {
        Arc::new(ConnectionCap { max, open: AtomicU64::new(0), http: AtomicU64::new(0) })
    }

    /// The configured cap, else ferry's default: half the process's
    /// file-descriptor limit (the other half is for upstream connections,
    /// files and the runtime), so that the descriptors never run out under
    /// a flood of connections and the ones already open keep being served.
    pub fn configured_or_default(configured: Option<u64>) -> Arc<ConnectionCap> {
        ConnectionCap::new(configured.or_else(|| open_files_limit().map(|limit| (limit / 2).max(64))))
    }

    /// Counts an HTTP connection while the guard lives.
    pub(crate) fn serving_http(&self) -> HttpConnection<'_> {
        self.http.fetch_add(1, Ordering::Relaxed);
        HttpConnection(self)
    }

    /// Downstream connections open now: all, and those serving HTTP.
    pub(crate) fn open(&self) -> (u64, u64) {
        (self.open.load(Ordering::Relaxed), self.http.load(Ordering::Relaxed))
    }

    /// The cap, if there is one.
    pub fn max(&self) -> Option<u64> {
        self.max
    }

    /// Counts a new connection, or `None` when the cap is reached (the
    /// connection is then closed at once, as Envoy's overload manager does).
    pub(crate) fn admit(self: &Arc<Self>) -> Option<CountedConnection> {
        let admitted = self.open.fetch_add(1, Ordering::Relaxed) < self.max.unwrap_or(u64::MAX);
        let counted = CountedConnection(self.clone());
        admitted.then_some(counted)
    }
}

/// The soft limit on open files (`Max open files` in `/proc/self/limits`).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What an HTTP connection is doing, for its idle timeout: requests in
/// flight, and when the last one began or ended.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: Cell<u32>,
    last: Cell<Instant>,
    /// When the connection was accepted.
    accepted: Instant,
    /// Whether any request's headers arrived.
    asked: Cell<bool>,
}

/// A request in flight on its connection.
pub(crate) struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
        self.0.last.set(Instant::now());
    }
}

impl Activity {
    /// A connection accepted at `accepted`, with no request yet.
    pub(crate) fn since(accepted: Instant) -> Self {
        Activity { in_flight: Cell::new(0), last: Cell::new(Instant::now()), accepted, asked: Cell::new(false) }
    }

    /// Returns if the connection sent no complete request headers within
    /// `timeout` of its accept; never returns once one arrived.
    pub(crate) async fn no_request_within(&self, timeout: Duration) {
        tokio::time::sleep_until((self.accepted + timeout).into()).await;
        if self.asked.get() {
            std::future::pending::<()>().await;
        }
    }

    /// A request began; it ends when the guard is dropped.
    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.asked.set(true);
        self.in_flight.set(self.in_flight.get() + 1);
        self.last.set(Instant::now());
        InFlight(self)
    }

    /// Returns once the connection has had no request in flight for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            let since = self.last.get().elapsed();
            if self.in_flight.get() == 0 && since >= timeout {
                return;
            }
            tokio::time::sleep(timeout.saturating_sub(since).max(Duration::from_millis(100))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_its_maximum_and_frees_on_drop() {
        let cap = ConnectionCap::new(Some(2));
        let (a, b) = (cap.admit(), cap.admit());
        assert!(a.is_some() && b.is_some());
        assert!(cap.admit().is_none(), "the third is refused");
        drop(a);
        assert!(cap.admit().is_some(), "a closed connection frees its place");
        assert!(ConnectionCap::new(None).admit().is_some());
    }

    #[test]
    fn the_default_cap_comes_from_the_descriptor_limit() {
        let limit = open_files_limit().expect("Linux says");
        assert_eq!(ConnectionCap::configured_or_default(None).max(), Some((limit / 2).max(64)));
        assert_eq!(ConnectionCap::configured_or_default(Some(10)).max(), Some(10));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let activity = Activity::since(Instant::now());
        let request = activity.begin();
        let idle = activity.idle_for(Duration::from_secs(5));
        tokio::pin!(idle);
        assert!(tokio::time::timeout(Duration::from_secs(60), idle.as_mut()).await.is_err(), "busy");
        drop(request);
        let started = tokio::time::Instant::now();
        idle.await;
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_connection_that_asked_nothing_is_due_at_its_first_request_timeout_and_one_that_asked_never() {
        let silent = Activity::since(Instant::now());
        let started = tokio::time::Instant::now();
        silent.no_request_within(Duration::from_secs(10)).await;
        assert!(started.elapsed() >= Duration::from_secs(10));
        let asked = Activity::since(Instant::now());
        drop(asked.begin());
        let never = asked.no_request_within(Duration::from_secs(10));
        assert!(tokio::time::timeout(Duration::from_secs(3600), never).await.is_err());
    }
}
