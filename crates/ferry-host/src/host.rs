//! The process-wide host: the compilers (wasmtime engines with every host
//! function linked), the loaded modules, shared queues and shared data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use ferry_abi::LogLevel;
use sha2::{Digest, Sha256};

use crate::compiler::{Compilation, Compilers};
use crate::error::LoadError;
use crate::failure::HoldPolicy;
use crate::mailbox::VmKey;
use crate::metrics::Metrics;
use crate::module::{PluginModule, VmIdHandle};
use crate::shared::SharedState;
use crate::shared_data::SharedData;
use crate::shared_queue::{QueueBounds, QueueBoundsRule, SharedQueues};
use crate::spec::ModuleSpec;

/// Level of the `wasm` logger: plugin log calls below it are dropped before
/// their message is read, and `proxy_get_log_level` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WasmLogLevel {
    /// Log everything from this level up.
    At(LogLevel),
    /// Log nothing (Envoy's `off`, reported to plugins as 6).
    Off,
}

impl WasmLogLevel {
    fn to_raw(self) -> u8 {
        match self {
            WasmLogLevel::At(l) => l as u8,
            WasmLogLevel::Off => 6,
        }
    }
}

/// Settings of the host.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Level of the `wasm` logger.
    pub wasm_log_level: WasmLogLevel,
    /// Directory of wasmtime's compiled-module cache: a module compiled
    /// once is loaded from here on the next start. `None` compiles every time.
    pub module_cache: Option<PathBuf>,
    /// The clusters plugins may call with `proxy_http_call` (others are a
    /// `BadArgument`); `None` accepts any name.
    pub upstreams: Option<Vec<String>>,
    /// The configuration's `node`, which plugins read as `xds.node`.
    pub node: crate::attributes::Node,
    /// When a plugin that keeps failing is held failed.
    pub hold: HoldPolicy,
    /// Bounds of shared queues: the default, and rules for named queues.
    pub queue_bounds: (QueueBounds, Vec<QueueBoundsRule>),
    /// Which compilers make plugin code.
    pub compilation: Compilation,
    /// In tiered mode, how long to wait for optimised code before starting
    /// on baseline code ([`crate::TIER_UP_WAIT`] by default).
    pub tier_up_wait: std::time::Duration,
    /// `stats_config.histogram_bucket_settings`, for plugins' histograms.
    pub histogram_buckets: Vec<crate::metrics::BucketRule>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            wasm_log_level: WasmLogLevel::At(LogLevel::Info),
            module_cache: None,
            upstreams: None,
            node: Default::default(),
            hold: HoldPolicy::default(),
            queue_bounds: Default::default(),
            compilation: Compilation::default(),
            tier_up_wait: crate::compiler::TIER_UP_WAIT,
            histogram_buckets: Vec::new(),
        }
    }
}

/// The Proxy-Wasm host of one process. Cheap to share (`Arc`), safe to use
/// from any thread; VMs themselves live on one thread each (see [`crate::WasmThread`]).
pub struct Host {
    compilers: Compilers,
    pub(crate) shared: Arc<SharedState>,
    modules: Mutex<ModuleCache>,
}

#[derive(Default)]
struct ModuleCache {
    by_digest: HashMap<[u8; 32], Weak<PluginModule>>,
    next_key: u32,
}

impl Host {
    /// Builds the engine and links every host function once.
    ///
    /// # Errors
    /// If wasmtime rejects the engine configuration (a bug, not user input).
    pub fn new(options: HostOptions) -> Result<Arc<Host>, LoadError> {
        let cache = options.module_cache.as_deref().and_then(Compilers::cache);
        let compilers = Compilers::new(options.compilation, options.tier_up_wait, cache, |linker| {
            crate::hostcalls::add_to_linker(linker)?;
            crate::wasi::add_to_linker(linker)
        })?;
        let (default_bounds, bound_rules) = options.queue_bounds;
        let shared = Arc::new(SharedState {
            queues: SharedQueues::with_bounds(default_bounds, bound_rules),
            data: SharedData::default(),
            metrics: Metrics::with_bucket_rules(options.histogram_buckets),
            vm_id_modules: Mutex::default(),
            wasm_log_level: AtomicU8::new(options.wasm_log_level.to_raw()),
            upstreams: options.upstreams.map(|u| u.into_iter().collect()),
            node: options.node,
            reported: Mutex::default(),
            hold: options.hold,
            interrupts: Default::default(),
        });
        Ok(Arc::new(Host { compilers, shared, modules: Mutex::default() }))
    }

    /// Compiles and links a plugin module, or returns the one already loaded
    /// with the same vm_id, VM configuration, environment and code: plugins
    /// whose `vm_config` is identical share one VM per thread.
    ///
    /// # Errors
    /// Code that is not Wasm, has no or an unknown ABI version, lacks an
    /// allocator or memory, or imports what the host does not provide.
    pub fn load_module(&self, spec: ModuleSpec) -> Result<Arc<PluginModule>, LoadError> {
        let digest = vm_digest(&spec);
        if let Some(existing) = self.cached(&digest) {
            return Ok(existing);
        }
        let compiled = self.compilers.compile(&spec)?;
        let mut cache = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have loaded the same code meanwhile.
        if let Some(existing) = cache.by_digest.get(&digest).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let key = VmKey(cache.next_key);
        let vm_id_handle = VmIdHandle::new(self.shared.clone(), spec.vm_id.clone());
        let loaded = Arc::new(PluginModule::new(spec, key, compiled.code, vm_id_handle)?);
        cache.next_key += 1;
        cache.by_digest.insert(digest, Arc::downgrade(&loaded));
        if let Some(optimized) = compiled.optimized_later {
            PluginModule::tier_up_when_ready(&loaded, optimized);
        }
        Ok(loaded)
    }

    /// The shared queues of this process.
    pub fn shared_queues(&self) -> &SharedQueues {
        &self.shared.queues
    }

    /// The metrics plugins defined.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The shared data of this process.
    pub fn shared_data(&self) -> &SharedData {
        &self.shared.data
    }

    /// For a shutdown past its drain time: every plugin callback still
    /// running is interrupted within half a second, even with no deadline,
    /// so no worker stays stuck in a plugin. Callbacks that start later (the
    /// roots' `proxy_on_done` as the threads stop) run under their deadline,
    /// or one second of CPU if they have none.
    pub fn interrupt_plugins(&self) {
        self.shared.interrupts.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes the level of the `wasm` logger.
    pub fn set_wasm_log_level(&self, level: WasmLogLevel) {
        self.shared.wasm_log_level.store(level.to_raw(), Ordering::Relaxed);
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Arc<PluginModule>> {
        let cache = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        cache.by_digest.get(digest).and_then(Weak::upgrade)
    }
}

/// Envoy's vm_key: a hash of the vm_id, the VM configuration and the code.
/// The environment is hashed too, so changing it gives a new VM (Envoy
/// keeps the old one, envoyproxy/envoy#40881).
fn vm_digest(spec: &ModuleSpec) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [spec.vm_id.as_bytes(), &spec.vm_configuration, &spec.code] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (k, v) in &spec.environment {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    // Restrictions change how the module links: not the same VM.
    for capability in &spec.allowed_capabilities {
        h.update((capability.len() as u64).to_le_bytes());
        h.update(capability.as_bytes());
    }
    h.finalize().into()
}

/// A helper for tests and embedders: a module spec from code bytes.
pub fn module_spec(vm_id: &str, code: impl Into<Bytes>, origin: &str) -> ModuleSpec {
    ModuleSpec {
        vm_id: vm_id.to_owned(),
        vm_configuration: Bytes::new(),
        code: code.into(),
        origin: origin.to_owned(),
        environment: Vec::new(),
        allowed_capabilities: Vec::new(),
    }
}
