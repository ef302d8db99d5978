//! Errors the host reports to its embedder. Each names the plugin or module
//! and says what to do about it.

use thiserror::Error;

/// A module could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The engine could not be set up (a bug, not bad input).
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),
    /// The code is not a valid Wasm module.
    #[error("{origin}: not a valid Wasm module: {reason}")]
    Compile {
        /// Where the code came from (file name or "inline code").
        origin: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The module's ABI version marker is missing or unknown.
    #[error("{origin}: {reason}")]
    Abi {
        /// Where the code came from.
        origin: String,
        /// What is wrong with the marker.
        reason: ferry_abi::version::AbiVersionError,
    },
    /// The module imports something the host does not provide.
    #[error("{origin}: cannot link the module: {reason}")]
    Link {
        /// Where the code came from.
        origin: String,
        /// wasmtime's message, naming the import.
        reason: String,
    },
    /// An export the host needs is missing or has the wrong signature.
    #[error("{origin}: {reason}")]
    Export {
        /// Where the code came from.
        origin: String,
        /// Which export and what was expected.
        reason: String,
    },
}

/// A plugin failed while starting (`_initialize`, `proxy_on_vm_start`,
/// `proxy_on_configure`), which stops start-up.
#[derive(Debug, Error)]
#[error("plugin '{plugin}' (vm_id '{vm_id}') failed to start: {reason}")]
pub struct StartError {
    /// The plugin's name.
    pub plugin: String,
    /// Its VM's vm_id.
    pub vm_id: String,
    /// What happened.
    pub reason: String,
}

/// A plugin failed during a callback: it trapped, or its VM is down.
#[derive(Debug, Clone, Error)]
#[error("plugin '{plugin}' (vm_id '{vm_id}'): {reason}")]
pub struct PluginFailure {
    /// The plugin's name.
    pub plugin: String,
    /// Its VM's vm_id.
    pub vm_id: String,
    /// What happened, e.g. `Function: proxy_on_request_headers failed: wasm trap: unreachable`.
    pub reason: String,
    /// The plugin's policy lets the stream go on without it (FAIL_OPEN).
    pub fail_open: bool,
}
