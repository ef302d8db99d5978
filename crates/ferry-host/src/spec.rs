//! What identifies a module and a plugin, as plain data: the parts of
//! Envoy's `vm_config` that make a VM (`ModuleSpec`) and the names a plugin
//! goes by (`PluginNames`). A leaf, so the store's state can name them
//! without depending on compiled modules.

use bytes::Bytes;

/// What to load: the parts of Envoy's `vm_config` that make a VM.
#[derive(Clone, Debug)]
pub struct ModuleSpec {
    /// `vm_config.vm_id`: the namespace of shared queues and shared data.
    pub vm_id: String,
    /// `vm_config.configuration`, handed to `proxy_on_vm_start`.
    pub vm_configuration: Bytes,
    /// The Wasm binary (or text: wasmtime accepts WAT).
    pub code: Bytes,
    /// Where the code came from, for messages.
    pub origin: String,
    /// Environment variables the plugin sees through WASI.
    pub environment: Vec<(String, String)>,
    /// `capability_restriction_config.allowed_capabilities`: the host
    /// functions and callbacks it may use (empty: all; see `capabilities`).
    pub allowed_capabilities: Vec<String>,
}

impl ModuleSpec {
    /// `vm_config.vm_id`.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// Where the code came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// The names of one plugin, as its host calls and log lines use them.
#[derive(Debug)]
pub(crate) struct PluginNames {
    /// The plugin's `name` (may be empty).
    pub name: String,
    /// The plugin's `root_id` (may be empty).
    pub root_id: String,
    /// Prefix of `proxy_log` lines from the root context: ` <root_id> <vm_id>`.
    pub root_log_prefix: String,
    /// Prefix of `proxy_log` lines from stream contexts: ` <name> <root_id> <vm_id>`.
    pub stream_log_prefix: String,
}

impl PluginNames {
    /// The names of plugin `name` with `root_id` in `vm_id`.
    pub(crate) fn new(name: &str, root_id: &str, vm_id: &str) -> Self {
        PluginNames {
            name: name.to_owned(),
            root_id: root_id.to_owned(),
            root_log_prefix: log_prefix(&[root_id, vm_id]),
            stream_log_prefix: log_prefix(&[name, root_id, vm_id]),
        }
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
