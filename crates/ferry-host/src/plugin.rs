//! What a configured plugin is, as far as the host cares: a module plus the
//! identity and configuration of one root context in it.

use std::sync::Arc;

use bytes::Bytes;

use crate::failure::{FailurePolicy, PluginStats};
use crate::limits::Limits;
use crate::module::PluginModule;

/// A plugin: one root context, with its own configuration, in a VM of `module`.
pub struct Plugin {
    /// The plugin's `name` (may be empty).
    pub name: String,
    /// The plugin's `root_id` (may be empty); the SDKs pick the root context by it.
    pub root_id: String,
    /// Bytes handed to `proxy_on_configure`.
    pub configuration: Bytes,
    /// The compiled module the plugin runs in.
    pub module: Arc<PluginModule>,
    /// What a VM failure means for requests.
    pub failure_policy: FailurePolicy,
    /// Its deadlines and memory limit.
    pub limits: Limits,
    /// Its counters, over all threads.
    pub stats: PluginStats,
    /// Prefix of `proxy_log` lines from the root context: ` <root_id> <vm_id>`.
    pub(crate) root_log_prefix: String,
    /// Prefix of `proxy_log` lines from stream contexts: ` <name> <root_id> <vm_id>`.
    pub(crate) stream_log_prefix: String,
}

impl Plugin {
    /// Describes a plugin running in `module`.
    pub fn new(
        name: impl Into<String>,
        root_id: impl Into<String>,
        configuration: impl Into<Bytes>,
        module: Arc<PluginModule>,
        failure_policy: FailurePolicy,
        limits: Limits,
    ) -> Arc<Self> {
        let name = name.into();
        let root_id = root_id.into();
        let root_log_prefix = log_prefix(&[&root_id, module.vm_id()]);
        let stream_log_prefix = log_prefix(&[&name, &root_id, module.vm_id()]);
        Arc::new(Plugin {
            name,
            root_id,
            configuration: configuration.into(),
            module,
            failure_policy,
            limits,
            stats: PluginStats::default(),
            root_log_prefix,
            stream_log_prefix,
        })
    }

    /// How log lines and errors name this plugin: its name, else its root_id,
    /// else its vm_id.
    pub fn display_name(&self) -> &str {
        [self.name.as_str(), self.root_id.as_str(), self.module.vm_id()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("(unnamed)")
    }
}

/// Envoy's log prefix: each non-empty part preceded by a space.
fn log_prefix(parts: &[&str]) -> String {
    parts.iter().filter(|p| !p.is_empty()).map(|p| format!(" {p}")).collect()
}

#[cfg(test)]
mod tests {
    use super::log_prefix;

    #[test]
    fn log_prefix_drops_empty_parts() {
        assert_eq!(log_prefix(&["", "", "sender"]), " sender");
        assert_eq!(log_prefix(&["name", "", "vm"]), " name vm");
        assert_eq!(log_prefix(&["", ""]), "");
    }
}
