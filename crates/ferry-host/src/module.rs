//! A compiled plugin module: code, ABI version, and a pre-linked template
//! from which each thread instantiates its VM cheaply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};

use ferry_abi::AbiVersion;

use crate::compiler::{Code, Tier};
use crate::error::LoadError;
use crate::mailbox::VmKey;
use crate::shared::SharedState;
use crate::spec::ModuleSpec;

/// A module loaded once per process and instantiated once per thread.
pub struct PluginModule {
    pub(crate) key: VmKey,
    pub(crate) spec: Arc<ModuleSpec>,
    pub(crate) abi: AbiVersion,
    /// The code new instances start from: baseline code until the
    /// optimised code replaces it (tiered compilation), then for good.
    code: Mutex<Arc<Code>>,
    /// Set once `code` is optimised: read on every new stream.
    optimized: AtomicBool,
    pub(crate) allocator: &'static str,
    /// Keeps the vm_id's queues and data alive while this module is loaded.
    _vm_id: VmIdHandle,
}

impl PluginModule {
    pub(crate) fn new(spec: ModuleSpec, key: VmKey, code: Code, vm_id: VmIdHandle) -> Result<Self, LoadError> {
        let module = code.pre.module();
        let origin = || spec.origin.clone();
        let abi = AbiVersion::detect(module.exports().map(|e| e.name()))
            .map_err(|reason| LoadError::Abi { origin: origin(), reason })?;
        crate::exports::check(module, abi).map_err(|reason| LoadError::Export { origin: origin(), reason })?;
        let allocator = ["proxy_on_memory_allocate", "malloc"]
            .into_iter()
            .find(|name| module.get_export(name).is_some())
            .ok_or_else(|| LoadError::Export {
                origin: origin(),
                reason: "the module exports no allocator (proxy_on_memory_allocate or malloc)".into(),
            })?;
        let optimized = AtomicBool::new(code.tier == Tier::Optimized);
        Ok(PluginModule {
            key,
            spec: Arc::new(spec),
            abi,
            code: Mutex::new(Arc::new(code)),
            optimized,
            allocator,
            _vm_id: vm_id,
        })
    }

    /// Installs the optimised code when the compiler thread delivers it, if
    /// the module is still loaded then. Threads move their VMs to it as
    /// they take new streams (see `WasmThread`).
    pub(crate) fn tier_up_when_ready(module: &Arc<Self>, optimized: mpsc::Receiver<Result<Code, LoadError>>) {
        let module: Weak<Self> = Arc::downgrade(module);
        let spawned = std::thread::Builder::new().name("wasm-tier-up".into()).spawn(move || {
            let Ok(result) = optimized.recv() else { return };
            let Some(module) = module.upgrade() else { return };
            match result {
                Ok(code) => {
                    *module.code.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(code);
                    module.optimized.store(true, Ordering::Release);
                    tracing::info!(
                        target: "wasm",
                        "module {}: optimised code ready; VMs move to it at their next stream or event",
                        module.spec.origin
                    );
                }
                Err(error) => tracing::warn!(
                    target: "wasm",
                    "module {}: optimised compilation failed, staying on baseline code: {error}",
                    module.spec.origin
                ),
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(target: "wasm", "cannot wait for optimised code, staying on baseline code: {error}");
        }
    }

    /// The code a new instance starts from.
    pub(crate) fn code(&self) -> Arc<Code> {
        self.code.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the current code is the optimising compiler's.
    pub fn is_optimized(&self) -> bool {
        self.optimized.load(Ordering::Acquire)
    }

    /// The key that identifies this module's VMs.
    pub fn key(&self) -> VmKey {
        self.key
    }

    /// `vm_config.vm_id`.
    pub fn vm_id(&self) -> &str {
        &self.spec.vm_id
    }

    /// The ABI version the module speaks.
    pub fn abi_version(&self) -> AbiVersion {
        self.abi
    }

    /// Where the code came from.
    pub fn origin(&self) -> &str {
        &self.spec.origin
    }
}

/// One per loaded module; the last one of a vm_id to go deletes that
/// vm_id's shared queues and shared data, as when Envoy unloads the last
/// VM of a vm_id.
pub(crate) struct VmIdHandle {
    shared: Arc<SharedState>,
    vm_id: String,
}

impl VmIdHandle {
    pub(crate) fn new(shared: Arc<SharedState>, vm_id: String) -> Self {
        *shared.vm_id_modules.lock().unwrap_or_else(|e| e.into_inner()).entry(vm_id.clone()).or_default() += 1;
        VmIdHandle { shared, vm_id }
    }
}

impl Drop for VmIdHandle {
    fn drop(&mut self) {
        let mut counts = self.shared.vm_id_modules.lock().unwrap_or_else(|e| e.into_inner());
        let Some(count) = counts.get_mut(&self.vm_id) else { return };
        *count -= 1;
        if *count == 0 {
            counts.remove(&self.vm_id);
            drop(counts);
            self.shared.queues.remove_vm_id(&self.vm_id);
            self.shared.data.remove_vm_id(&self.vm_id);
        }
    }
}
