//! The health of every plugin's VM on every thread, for the admin endpoint
//! (`/plugins`): threads publish it when it changes, the admin reads it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferry_host::{Health, Plugin};

/// One plugin on one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    vm_id: String,
    policy: &'static str,
    health: &'static str,
}

/// Shared by all threads.
#[derive(Clone, Default)]
pub(crate) struct HealthBoard(Arc<Mutex<BTreeMap<(String, String), Entry>>>);

impl HealthBoard {
    /// Records the health of this thread's plugins.
    pub(crate) fn update<'a>(&self, plugins: impl Iterator<Item = (&'a Arc<Plugin>, Health)>) {
        let thread = std::thread::current().name().unwrap_or("main").to_owned();
        let mut board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (plugin, health) in plugins {
            let entry = Entry {
                vm_id: plugin.module.vm_id().to_owned(),
                policy: plugin.failure_policy.name(),
                health: health.name(),
            };
            board.insert((thread.clone(), plugin.display_name().to_owned()), entry);
        }
    }

    /// One line per plugin and thread:
    /// `<plugin> thread=<thread> vm_id=<vm_id> policy=<policy> state=<state>`.
    pub(crate) fn render(&self) -> String {
        let board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<String> = board
            .iter()
            .map(|((thread, plugin), e)| {
                format!("{plugin} thread={thread} vm_id={} policy={} state={}\n", e.vm_id, e.policy, e.health)
            })
            .collect();
        lines.sort();
        lines.concat()
    }
}
