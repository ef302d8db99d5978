//! What a configured plugin is, as far as the host cares: a module plus the
//! identity and configuration of one root context in it.

use std::sync::Arc;

use bytes::Bytes;

use crate::failure::{FailurePolicy, PluginStats};
use crate::limits::Limits;
use crate::module::PluginModule;
use crate::spec::PluginNames;

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
    /// Its names as host calls and log lines use them.
    pub(crate) names: Arc<PluginNames>,
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
        let names = Arc::new(PluginNames::new(&name, &root_id, module.vm_id()));
        Arc::new(Plugin {
            name,
            root_id,
            configuration: configuration.into(),
            module,
            failure_policy,
            limits,
            stats: PluginStats::default(),
            names,
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
