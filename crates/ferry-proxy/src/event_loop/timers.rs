//! A thread's timers: the tick periods of its root contexts, and when
//! failed VM instances are due to restart.

use std::collections::HashMap;
use std::time::Duration;

use ferry_host::{InstanceId, TickChange};
use tokio::time::Instant;

/// What is due now.
#[derive(Debug, Default)]
pub(crate) struct Due {
    /// Root contexts whose tick fires, in a stable order.
    pub(crate) ticks: Vec<(InstanceId, u32)>,
    /// Whether a restart is due.
    pub(crate) restart: bool,
}

#[derive(Default)]
pub(crate) struct Timers {
    /// Period and next firing time of each root context's tick.
    ticks: HashMap<(InstanceId, u32), (Duration, Instant)>,
    /// When failed instances restart.
    restarts: Vec<Instant>,
}

impl Timers {
    pub(crate) fn apply(&mut self, changes: Vec<TickChange>) {
        let now = Instant::now();
        for change in changes {
            let key = (change.instance, change.request.context_id);
            if change.request.period_ms == 0 {
                self.ticks.remove(&key);
            } else {
                let period = Duration::from_millis(u64::from(change.request.period_ms));
                self.ticks.insert(key, (period, now + period));
            }
        }
    }

    pub(crate) fn restart_at(&mut self, at: std::time::Instant) {
        self.restarts.push(Instant::from_std(at));
    }

    /// Stops the timers of a discarded instance.
    pub(crate) fn retire(&mut self, instance: InstanceId) {
        self.ticks.retain(|(i, _), _| *i != instance);
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.ticks.values().map(|&(_, due)| due).chain(self.restarts.iter().copied()).min()
    }

    /// What is due at `now`; ticks are rescheduled one period later (or a
    /// period from now if the thread fell behind).
    pub(crate) fn take_due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        for (&key, (period, next)) in &mut self.ticks {
            if *next <= now {
                due.ticks.push(key);
                *next += *period;
                if *next <= now {
                    *next = now + *period;
                }
            }
        }
        due.ticks.sort();
        let before = self.restarts.len();
        self.restarts.retain(|&at| at > now);
        due.restart = self.restarts.len() < before;
        due
    }
}
