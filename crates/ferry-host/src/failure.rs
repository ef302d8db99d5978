//! The one place that decides what a plugin failure means: the failure
//! policies (Envoy's `failure_policy`), when a failed VM instance is started
//! again, and when a plugin that keeps failing is held failed.
//!
//! A VM instance fails when a callback traps (a Wasm trap, a callback past
//! its deadline, a panic of the plugin) or when starting it fails. Its
//! plugins then follow their policy:
//!
//! | policy | the stream that failed | later streams | the instance |
//! | --- | --- | --- | --- |
//! | `FailClosed` | 503 | 503 until the configuration changes | never restarted |
//! | `FailOpen` | goes on without the plugin | skip the plugin | never restarted |
//! | `FailReload` | 503 | 503 while it restarts | restarted after a backoff; held failed after too many failures |
//!
//! The backoff is measured from the last start, as Envoy's FAIL_RELOAD: an
//! instance that ran longer than the backoff is replaced at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a VM failure means for a plugin (Envoy's `failure_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// FAIL_CLOSED: every stream gets 503 from the failure on, until the
    /// configuration changes.
    FailClosed,
    /// FAIL_OPEN: the plugin is skipped from the failure on (the stream that
    /// failed goes on without it).
    FailOpen,
    /// FAIL_RELOAD: a new instance replaces the failed one after a backoff;
    /// streams get 503 until it runs.
    FailReload(Backoff),
}

impl Default for FailurePolicy {
    /// ferry's default when a configuration names none: reload, with
    /// Envoy's default backoff (see docs/host-differences.md).
    fn default() -> Self {
        FailurePolicy::FailReload(Backoff::default())
    }
}

impl FailurePolicy {
    /// Whether streams go on without the plugin once it failed.
    pub fn fails_open(self) -> bool {
        matches!(self, FailurePolicy::FailOpen)
    }

    /// The name used in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload(_) => "FAIL_RELOAD",
        }
    }
}

/// Time between restarts of a failing instance (`reload_config.backoff`):
/// `base` after the first failure, doubling with each failure in the hold
/// window, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// `base_interval` (Envoy's default 1 s).
    pub base: Duration,
    /// `max_interval` (default 10 × base, as Envoy's `BackoffStrategy`).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(1), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// The delay after `failures` recent failures (1 = the first).
    fn delay(self, failures: usize) -> Duration {
        let doublings = failures.saturating_sub(1).min(20) as u32;
        self.base.saturating_mul(1 << doublings).min(self.max.max(self.base))
    }
}

/// When a plugin that keeps failing stops being restarted: after `failures`
/// failures within `window`, it is held failed (its streams get 503) until
/// the configuration changes. A ferry extension; Envoy restarts forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldPolicy {
    /// Failures that hold the plugin failed.
    pub failures: u32,
    /// Within this long.
    pub window: Duration,
}

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy { failures: 5, window: Duration::from_secs(60) }
    }
}

/// Where a plugin's VM instance on one thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Running,
    /// Failed; a new instance starts at this time.
    Restarting {
        /// When.
        at: Instant,
    },
    /// Failed for good (FAIL_CLOSED or FAIL_OPEN), until the configuration changes.
    Failed,
    /// Failed too often (FAIL_RELOAD): no more restarts until the configuration changes.
    HeldFailed,
}

impl Health {
    /// A word for logs and the admin endpoint.
    pub fn name(self) -> &'static str {
        match self {
            Health::Running => "running",
            Health::Restarting { .. } => "restarting",
            Health::Failed => "failed",
            Health::HeldFailed => "held_failed",
        }
    }
}

/// The failure history of one VM instance slot on one thread.
#[derive(Debug)]
pub(crate) struct FailState {
    started_at: Instant,
    recent: VecDeque<Instant>,
    pub(crate) health: Health,
}

impl FailState {
    pub(crate) fn new(now: Instant) -> Self {
        FailState { started_at: now, recent: VecDeque::new(), health: Health::Running }
    }

    /// Records a failure at `now` and decides what comes next.
    pub(crate) fn on_failure(&mut self, now: Instant, policy: FailurePolicy, hold: HoldPolicy) -> Health {
        while self.recent.front().is_some_and(|&t| now.duration_since(t) > hold.window) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.health = match policy {
            FailurePolicy::FailReload(_) if self.recent.len() >= hold.failures.max(1) as usize => Health::HeldFailed,
            FailurePolicy::FailReload(backoff) => {
                let earliest = self.started_at + backoff.delay(self.recent.len());
                Health::Restarting { at: earliest.max(now) }
            }
            FailurePolicy::FailClosed | FailurePolicy::FailOpen => Health::Failed,
        };
        self.health
    }

    /// A new instance is being started at `now` (it may still fail): the
    /// next backoff counts from here.
    pub(crate) fn on_attempt(&mut self, now: Instant) {
        self.started_at = now;
    }

    /// A new instance started at `now`.
    pub(crate) fn on_started(&mut self, now: Instant) {
        self.started_at = now;
        self.health = Health::Running;
    }
}

/// Counters of one plugin, summed over threads (admin `/stats`, as
/// `wasm.<plugin>.<name>`).
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Callbacks that failed (traps, deadlines, panics).
    pub failures: AtomicU64,
    /// Of those, callbacks interrupted at their deadline.
    pub deadline_exceeded: AtomicU64,
    /// Instances restarted (Envoy's `vm_reload_success`).
    pub reload_success: AtomicU64,
    /// Restarts that failed (Envoy's `vm_reload_failure`).
    pub reload_failure: AtomicU64,
    /// Streams refused while the instance waited to restart (Envoy's `vm_reload_backoff`).
    pub reload_backoff: AtomicU64,
    /// Threads on which the plugin is held failed now.
    pub held_failed: AtomicU64,
    /// Events for an instance that no longer exists (a late HTTP call
    /// response, gRPC message, tick or queue notification), dropped.
    pub stale_events: AtomicU64,
}

impl PluginStats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the counters to zero (`held_failed`, a count of threads now, stays).
    pub fn reset_counters(&self) {
        for counter in [
            &self.failures,
            &self.deadline_exceeded,
            &self.reload_success,
            &self.reload_failure,
            &self.reload_backoff,
            &self.stale_events,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Every counter with its name, for `/stats`.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("failures", get(&self.failures)),
            ("deadline_exceeded", get(&self.deadline_exceeded)),
            ("vm_reload_success", get(&self.reload_success)),
            ("vm_reload_failure", get(&self.reload_failure)),
            ("vm_reload_backoff", get(&self.reload_backoff)),
            ("held_failed", get(&self.held_failed)),
            ("stale_events", get(&self.stale_events)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn reload() -> FailurePolicy {
        FailurePolicy::FailReload(Backoff { base: SECOND, max: 4 * SECOND })
    }

    #[test]
    fn an_instance_that_ran_longer_than_the_backoff_restarts_at_once() {
        let start = Instant::now();
        let mut state = FailState::new(start);
        let now = start + 30 * SECOND;
        assert_eq!(state.on_failure(now, reload(), HoldPolicy::default()), Health::Restarting { at: now });
    }

    #[test]
    fn repeated_failures_back_off_doubling_up_to_the_maximum_then_hold() {
        let hold = HoldPolicy { failures: 5, window: 60 * SECOND };
        let mut now = Instant::now();
        let mut state = FailState::new(now);
        let mut delays = Vec::new();
        for _ in 0..4 {
            now += Duration::from_millis(10);
            let Health::Restarting { at } = state.on_failure(now, reload(), hold) else { panic!("not restarting") };
            delays.push(at - now + Duration::from_millis(10));
            state.on_started(now);
        }
        assert_eq!(delays, [SECOND, 2 * SECOND, 4 * SECOND, 4 * SECOND]);
        assert_eq!(state.on_failure(now + SECOND, reload(), hold), Health::HeldFailed);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let hold = HoldPolicy { failures: 2, window: 10 * SECOND };
        let start = Instant::now();
        let mut state = FailState::new(start);
        assert!(matches!(state.on_failure(start, reload(), hold), Health::Restarting { .. }));
        assert!(matches!(state.on_failure(start + 11 * SECOND, reload(), hold), Health::Restarting { .. }));
        assert_eq!(state.on_failure(start + 12 * SECOND, reload(), hold), Health::HeldFailed);
    }

    #[test]
    fn failed_restart_attempts_are_spaced_by_the_backoff_too() {
        let hold = HoldPolicy { failures: 10, window: 60 * SECOND };
        let start = Instant::now();
        let mut state = FailState::new(start);
        // Ran long, failed: restart at once.
        let first = start + 30 * SECOND;
        assert_eq!(state.on_failure(first, reload(), hold), Health::Restarting { at: first });
        // The restart attempt fails right away: the next one waits 2 s from it.
        state.on_attempt(first);
        let failed = first + Duration::from_millis(5);
        assert_eq!(state.on_failure(failed, reload(), hold), Health::Restarting { at: first + 2 * SECOND });
    }

    #[test]
    fn closed_and_open_policies_never_restart() {
        let mut state = FailState::new(Instant::now());
        assert_eq!(state.on_failure(Instant::now(), FailurePolicy::FailClosed, HoldPolicy::default()), Health::Failed);
        assert_eq!(state.on_failure(Instant::now(), FailurePolicy::FailOpen, HoldPolicy::default()), Health::Failed);
    }
}
