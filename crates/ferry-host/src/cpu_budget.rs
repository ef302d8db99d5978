//! Callback deadlines measured in the CPU time the plugin used.
//!
//! A wall-clock deadline blames the plugin for time the OS gave to other
//! threads: under load an honest callback was killed now and then. So the
//! epoch ticker only says *when to look*, and what is compared with the
//! deadline is this thread's CPU clock. Reading that clock is a system
//! call, so a callback does not read it on entry: its budget starts at the
//! first epoch tick it sees (at most one [`EPOCH_TICK`] in), which leaves
//! callbacks shorter than a tick (nearly all) free of any cost.
//!
//! A callback with no deadline is still looked at every half second, so a
//! process shutting down past its drain time can interrupt the callbacks
//! still running then ([`crate::Host::interrupt_plugins`]); callbacks that
//! start afterwards (a root's `proxy_on_done` at shutdown) run under their
//! own deadline, or [`AFTER_INTERRUPT`] if they have none. The store's callback that applies
//! it is `vm::on_epoch_deadline`.

use std::time::Duration;

use wasmtime::UpdateDeadline;

use crate::limits::EPOCH_TICK;

/// Epoch ticks between looks at a callback with no deadline (0.5 s).
const UNLIMITED_LOOK_TICKS: u64 = 100;

/// The CPU time a callback with no deadline gets once the host was asked
/// to interrupt plugins: shutdown callbacks must end too.
pub(crate) const AFTER_INTERRUPT: Duration = Duration::from_secs(1);

/// The CPU time one entry into the plugin may still use.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuBudget {
    /// The most CPU time the entry may use; `None` for no limit.
    limit: Option<Duration>,
    /// This thread's CPU clock at the first tick of the entry.
    since: Option<Duration>,
    /// How many interrupt requests the host had when the entry began: a
    /// later one interrupts it.
    interrupts: u64,
}

impl CpuBudget {
    /// A fresh budget of `limit` for an entry beginning when the host had
    /// had `interrupts` requests to interrupt plugins, and the epoch ticks
    /// until it is first looked at.
    pub(crate) fn start(limit: Option<Duration>, interrupts: u64) -> (CpuBudget, u64) {
        let limit = if interrupts > 0 { limit.or(Some(AFTER_INTERRUPT)) } else { limit };
        let ticks = if limit.is_some() { 1 } else { UNLIMITED_LOOK_TICKS };
        (CpuBudget { limit, since: None, interrupts }, ticks)
    }

    /// Whether an interrupt request came after the entry began.
    pub(crate) fn interrupted_by(&self, interrupts: u64) -> bool {
        interrupts > self.interrupts
    }

    /// Decides, at an epoch tick, whether the entry is over its budget (or
    /// an interrupt request came since it began, the host having had
    /// `interrupts`); if not, when to look again. Wall time passes at least
    /// as fast as CPU time, so the remaining budget in ticks is the earliest
    /// it can run out.
    pub(crate) fn at_tick(&mut self, cpu_now: Duration, interrupts: u64) -> UpdateDeadline {
        if self.interrupted_by(interrupts) {
            return UpdateDeadline::Interrupt;
        }
        let Some(limit) = self.limit else { return UpdateDeadline::Continue(UNLIMITED_LOOK_TICKS) };
        let used = cpu_now.saturating_sub(*self.since.get_or_insert(cpu_now));
        match limit.checked_sub(used) {
            Some(left) if !left.is_zero() => {
                UpdateDeadline::Continue((left.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1))
            }
            _ => UpdateDeadline::Interrupt,
        }
    }
}

/// CPU time the calling thread has used.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(update: UpdateDeadline) -> Option<u64> {
        match update {
            UpdateDeadline::Continue(n) => Some(n),
            _ => None,
        }
    }

    #[test]
    fn the_budget_counts_from_the_first_tick_and_ends_when_used_up() {
        let ms = Duration::from_millis;
        let (mut budget, first) = CpuBudget::start(Some(ms(100)), 0);
        assert_eq!(first, 1);
        // At the first tick, all 100 ms are left: look again in 20 ticks.
        assert_eq!(ticks(budget.at_tick(ms(7), 0)), Some(20));
        // Descheduled: 20 ticks of wall time, only 30 ms of CPU used.
        assert_eq!(ticks(budget.at_tick(ms(37), 0)), Some(14));
        assert_eq!(ticks(budget.at_tick(ms(105), 0)), Some(1));
        assert_eq!(ticks(budget.at_tick(ms(107), 0)), None, "100 ms used: interrupted");
    }

    #[test]
    fn no_limit_is_interrupted_only_by_a_request_made_after_it_began() {
        let (mut budget, first) = CpuBudget::start(None, 0);
        assert_eq!(first, UNLIMITED_LOOK_TICKS);
        assert_eq!(ticks(budget.at_tick(Duration::from_secs(3600), 0)), Some(UNLIMITED_LOOK_TICKS));
        assert_eq!(ticks(budget.at_tick(Duration::from_secs(3601), 1)), None);
        // An entry that begins after the request runs, under a bounded budget.
        let (mut later, first) = CpuBudget::start(None, 1);
        assert_eq!(first, 1);
        assert_eq!(ticks(later.at_tick(Duration::from_millis(10), 1)), Some(200));
        assert_eq!(ticks(later.at_tick(Duration::from_millis(1010), 1)), None);
    }

    #[test]
    fn the_thread_cpu_clock_counts_work_and_not_waiting() {
        let (before, wall) = (thread_cpu_time(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time() - before;
        assert!(slept < Duration::from_millis(25), "{slept:?} of CPU time while asleep");
        let before = thread_cpu_time();
        let mut n = 0u64;
        while thread_cpu_time() - before < Duration::from_millis(5) {
            n = std::hint::black_box(n + 1);
        }
        assert!(wall.elapsed() >= Duration::from_millis(55));
    }
}
