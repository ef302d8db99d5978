//! Turning module bytes into code: wasmtime's optimising compiler
//! (Cranelift), its baseline compiler (Winch), and tiering between them.
//!
//! Cranelift makes the fastest code but takes about a second per two
//! megabytes of Wasm on two cores (a Go module), and a proxy should not
//! wait that long to serve. Tiered compilation starts Cranelift at once;
//! if its code is not ready within [`TIER_UP_WAIT`] (a module cache hit
//! or a small module always is), Winch compiles the module in a fraction of
//! the time, VMs start on that, and each thread moves its VM to Cranelift's
//! code once it is ready (see `WasmThread`: new streams go to a new instance,
//! the old one finishes the streams it has).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmtime::{Cache, CacheConfig, Config, Engine, InstancePre, Linker, Module, OptLevel, Strategy};

use crate::error::LoadError;
use crate::limits::EPOCH_TICK;
use crate::spec::ModuleSpec;
use crate::state::HostState;

/// How the host compiles plugin modules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compilation {
    /// Cranelift only: the fastest code, the slowest start.
    #[default]
    Optimizing,
    /// Winch only: the fastest start; code roughly 10–50 % slower
    /// (more for compute-heavy plugins).
    Baseline,
    /// Start on Winch's code when Cranelift's is not ready within
    /// [`TIER_UP_WAIT`], and move to Cranelift's when it is.
    Tiered,
}

impl Compilation {
    /// The name used on the command line and in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Compilation::Optimizing => "optimizing",
            Compilation::Baseline => "baseline",
            Compilation::Tiered => "tiered",
        }
    }
}

/// Which compiler made a module's current code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Winch's.
    Baseline,
    /// Cranelift's.
    Optimized,
}

impl Tier {
    /// A word for logs and the admin endpoint.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }
}

/// How long tiered compilation waits for the optimising compiler before it
/// starts on baseline code: long enough for a module cache hit and for
/// the typical Rust SDK plugin (tens of milliseconds), short enough that a
/// multi-megabyte module serves within a second.
pub const TIER_UP_WAIT: Duration = Duration::from_millis(200);

/// A compiled module, linked against the host functions: each thread
/// instantiates its VM from it.
pub(crate) struct Code {
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) tier: Tier,
}

/// One wasmtime engine with its linker.
struct Backend {
    engine: Engine,
    linker: Linker<HostState>,
    tier: Tier,
}

impl Backend {
    fn new(
        mut config: Config,
        tier: Tier,
        link: impl Fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
    ) -> Result<Self, LoadError> {
        // Callback deadlines: compiled code checks the engine's epoch,
        // which the epoch ticker advances.
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        link(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        Ok(Backend { engine, linker, tier })
    }

    fn compile(&self, spec: &ModuleSpec) -> Result<Code, LoadError> {
        let module = Module::new(&self.engine, &spec.code)
            .map_err(|e| LoadError::Compile { origin: spec.origin.clone(), reason: format!("{e:#}") })?;
        let link_error = |e: wasmtime::Error| LoadError::Link { origin: spec.origin.clone(), reason: format!("{e:#}") };
        let pre = if spec.allowed_capabilities.is_empty() {
            self.linker.instantiate_pre(&module)
        } else {
            crate::capabilities::restrict(&self.linker, &module, &spec.allowed_capabilities, &spec.origin)
                .and_then(|linker| linker.instantiate_pre(&module))
        }
        .map_err(link_error)?;
        Ok(Code { pre, tier: self.tier })
    }
}

/// The compilers of one host.
pub(crate) struct Compilers {
    mode: Compilation,
    tier_up_wait: Duration,
    optimizing: Arc<Backend>,
    /// Present unless the mode is [`Compilation::Optimizing`].
    baseline: Option<Backend>,
    /// Threads of each compiler in tiered mode. wasmtime compiles
    /// functions in parallel on rayon's global pool by default, where the
    /// baseline compiler would queue behind the optimising one. Here each
    /// has its own, and the optimising one a thread fewer than there are
    /// cores, so that the baseline code, which VMs wait for, comes first.
    tiered_threads: Option<TieredThreads>,
}

struct TieredThreads {
    baseline: rayon::ThreadPool,
    optimizing: Arc<rayon::ThreadPool>,
}

/// What [`Compilers::compile`] gives: code to start on, and the optimised
/// code still on its way when the start is on baseline code.
pub(crate) struct Compiled {
    pub(crate) code: Code,
    pub(crate) optimized_later: Option<mpsc::Receiver<Result<Code, LoadError>>>,
}

impl Compilers {
    /// Builds the engines, links every host function into each, and starts
    /// the epoch ticker. The module cache is used for optimised code only:
    /// baseline code is quick to make and replaced soon.
    pub(crate) fn new(
        mode: Compilation,
        tier_up_wait: Duration,
        cache: Option<Cache>,
        link: impl Fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
    ) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.cranelift_opt_level(OptLevel::Speed);
        config.cache(cache);
        let optimizing = Arc::new(Backend::new(config, Tier::Optimized, &link)?);
        let baseline = match mode {
            Compilation::Optimizing => None,
            Compilation::Baseline | Compilation::Tiered => {
                let mut config = Config::new();
                config.strategy(Strategy::Winch);
                Some(Backend::new(config, Tier::Baseline, &link)?)
            }
        };
        let tiered_threads = match mode {
            Compilation::Tiered => Some(TieredThreads::new()?),
            _ => None,
        };
        let engines = std::iter::once(&optimizing.engine).chain(baseline.as_ref().map(|b| &b.engine));
        spawn_epoch_ticker(engines.map(Engine::weak).collect())?;
        Ok(Compilers { mode, tier_up_wait, optimizing, baseline, tiered_threads })
    }

    /// A wasmtime module cache in `directory`, or `None` (with a warning)
    /// when it cannot be used: a cache is an optimisation.
    pub(crate) fn cache(directory: &std::path::Path) -> Option<Cache> {
        let mut config = CacheConfig::new();
        config.with_directory(directory);
        Cache::new(config)
            .inspect_err(|e| {
                tracing::warn!(
                    target: "wasm",
                    "module cache in {} unavailable, compiling every start: {e:#}",
                    directory.display()
                )
            })
            .ok()
    }

    /// Compiles `spec` as the mode says.
    pub(crate) fn compile(&self, spec: &ModuleSpec) -> Result<Compiled, LoadError> {
        let baseline = match (&self.baseline, self.mode) {
            (Some(baseline), Compilation::Baseline) => {
                return Ok(Compiled { code: baseline.compile(spec)?, optimized_later: None });
            }
            (Some(baseline), Compilation::Tiered) => baseline,
            _ => return Ok(Compiled { code: self.optimizing.compile(spec)?, optimized_later: None }),
        };
        let threads = self.tiered_threads.as_ref().expect("tiered mode has its threads");
        let started = Instant::now();
        let (sender, optimized) = mpsc::channel();
        let backend = self.optimizing.clone();
        let background = spec.clone();
        let pool = threads.optimizing.clone();
        std::thread::Builder::new()
            .name("wasm-compile".into())
            .spawn(move || {
                let _ = sender.send(pool.install(|| backend.compile(&background)));
            })
            .map_err(|e| LoadError::Engine(format!("cannot start a compiler thread: {e}")))?;
        match optimized.recv_timeout(self.tier_up_wait) {
            Ok(code) => return Ok(Compiled { code: code?, optimized_later: None }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(LoadError::Engine("the compiler thread stopped".into()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        match threads.baseline.install(|| baseline.compile(spec)) {
            Ok(code) => {
                tracing::info!(
                    target: "wasm",
                    "module {}: optimised code not ready after {:?}; starting on baseline code (made in {:?})",
                    spec.origin,
                    self.tier_up_wait,
                    started.elapsed().saturating_sub(self.tier_up_wait)
                );
                Ok(Compiled { code, optimized_later: Some(optimized) })
            }
            // Winch does not take every module Cranelift does: wait for it.
            Err(error) => {
                tracing::debug!(target: "wasm", "module {}: no baseline code ({error}); waiting for the optimised code", spec.origin);
                let code = optimized.recv().map_err(|_| LoadError::Engine("the compiler thread stopped".into()))??;
                Ok(Compiled { code, optimized_later: None })
            }
        }
    }
}

impl TieredThreads {
    fn new() -> Result<Self, LoadError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = |name: &'static str, threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |i| format!("wasm-{name}-{i}"))
                .build()
                .map_err(|e| LoadError::Engine(format!("cannot start the {name} compiler's threads: {e}")))
        };
        Ok(TieredThreads {
            baseline: pool("baseline", cores)?,
            optimizing: Arc::new(pool("optimizing", cores.saturating_sub(1).max(1))?),
        })
    }
}

/// Advances every engine's epoch every [`EPOCH_TICK`] for as long as the
/// engines live: the clock every callback deadline is measured on.
fn spawn_epoch_ticker(engines: Vec<wasmtime::EngineWeak>) -> Result<(), LoadError> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in engines.iter().filter_map(wasmtime::EngineWeak::upgrade) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    return;
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))
}
