//! The health of every plugin's VM on every thread, for the admin endpoint
//! (`/plugins`): threads publish it when it changes, the admin reads it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ferry_host::{Health, Plugin, Tier};

/// One plugin on one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    vm_id: String,
    policy: &'static str,
    health: &'static str,
    /// Which compiler made the live instance's code (`-`: none is live).
    code: &'static str,
}

/// Shared by all threads.
#[derive(Clone, Default)]
pub(crate) struct HealthBoard(Arc<Mutex<BTreeMap<(String, String), Entry>>>);

impl HealthBoard {
    /// Records the health of this thread's plugins.
    pub(crate) fn update<'a>(&self, plugins: impl Iterator<Item = (&'a Arc<Plugin>, Health, Option<Tier>)>) {
        let thread = std::thread::current().name().unwrap_or("main").to_owned();
        let mut board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (plugin, health, tier) in plugins {
            let entry = Entry {
                vm_id: plugin.module.vm_id().to_owned(),
                policy: plugin.failure_policy.name(),
                health: health.name(),
                code: tier.map_or("-", Tier::name),
            };
            board.insert((thread.clone(), plugin.display_name().to_owned()), entry);
        }
    }

    /// One line per plugin and thread:
    /// `<plugin> thread=<thread> vm_id=<vm_id> policy=<policy> state=<state> code=<code>`.
    pub(crate) fn render(&self) -> String {
        let board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<String> = board
            .iter()
            .map(|((thread, plugin), e)| {
                format!(
                    "{plugin} thread={thread} vm_id={} policy={} state={} code={}\n",
                    e.vm_id, e.policy, e.health, e.code
                )
            })
            .collect();
        lines.sort();
        lines.concat()
    }
}
