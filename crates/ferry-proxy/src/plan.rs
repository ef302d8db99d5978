//! Start-up: turns the validated configuration into what the threads run.
//! Modules are read and compiled here, once, before any thread starts, so
//! a missing or bad plugin stops start-up with a message naming it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_config::{
    Bootstrap, Code, HttpFilter, ListenerKind, PluginConfig, ServerHeaderTransformation, WasmLimits, WasmRuntime,
};
use ferry_host::{
    Backoff, Compilation, FailurePolicy, HoldPolicy, Host, Limits, LoadError, ModuleSpec, Overflow, Plugin,
    QueueBounds, QueueBoundsRule,
};

use crate::access_log::AccessLogger;
use crate::router::RouteTable;
use crate::upstream::Clusters;

/// Why start-up failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A plugin's code could not be read: missing, not a regular file, or
    /// over [`ferry_config::input::MAX_MODULE_BYTES`].
    #[error("{path}: the Wasm module: {reason}")]
    Code {
        /// Config path of the code field.
        path: String,
        /// What is wrong with the file, naming it.
        reason: String,
    },
    /// An access log could not be opened.
    #[error("listener {listener:?}: cannot open access log {sink}: {source}")]
    AccessLog {
        /// The listener whose connection manager has the log.
        listener: String,
        /// Where it writes.
        sink: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A plugin's module could not be loaded.
    #[error("plugin '{plugin}' ({path}): {source}")]
    Load {
        /// The plugin's name.
        plugin: String,
        /// Its place in the configuration.
        path: String,
        /// What went wrong.
        source: LoadError,
    },
    /// A TLS context could not be set up (a certificate, key or CA that
    /// does not parse, or settings rustls refuses).
    #[error("{what}: TLS: {source}")]
    Tls {
        /// The listener or cluster.
        what: String,
        /// Why.
        source: crate::tls::TlsError,
    },
    /// Two listeners (or a listener and the admin endpoint) on one address.
    #[error("{what} has the address {address} of {other}: only one of them could listen on it")]
    SameAddress {
        /// The later one.
        what: String,
        /// The one it clashes with.
        other: String,
        /// The address.
        address: SocketAddr,
    },
    /// An address could not be resolved.
    #[error("{what}: cannot resolve {address}: {reason}")]
    Address {
        /// Which address.
        what: String,
        /// The address as configured.
        address: String,
        /// Why.
        reason: String,
    },
}

/// Process-wide Wasm settings from the command line. Each one given wins
/// over the configuration's `ferry.config.v1.WasmRuntime`; a plugin's own
/// entry there wins over both.
#[derive(Clone, Debug, Default)]
pub struct WasmSettings {
    /// `--wasm-callback-deadline-ms` (zero: none).
    pub callback_deadline: Option<Duration>,
    /// `--wasm-start-deadline-ms` (zero: none).
    pub start_deadline: Option<Duration>,
    /// `--wasm-memory-limit-mb`, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// `--wasm-failure-policy`: the policy of plugins that name none.
    pub failure_policy: Option<ferry_config::FailurePolicy>,
}

/// What the host needs from the configuration (`ferry.config.v1.WasmRuntime`).
pub struct HostRuntime {
    /// When plugins that keep failing are held failed.
    pub hold: HoldPolicy,
    /// Bounds of shared queues: the default, and rules for named queues.
    pub queue_bounds: (QueueBounds, Vec<QueueBoundsRule>),
    /// `compilation`, if set.
    pub compilation: Option<Compilation>,
}

/// Reads [`HostRuntime`] from the configuration.
pub fn host_runtime(config: &Bootstrap) -> HostRuntime {
    let runtime = &config.wasm_runtime;
    let hold =
        runtime.hold_failed.map_or_else(HoldPolicy::default, |h| HoldPolicy { failures: h.failures, window: h.window });
    let defaults = queue_bounds(QueueBounds::default(), runtime.queue_defaults);
    let rules = runtime
        .shared_queues
        .iter()
        .map(|rule| QueueBoundsRule {
            vm_id: rule.vm_id.clone(),
            name: rule.name.clone(),
            bounds: queue_bounds(defaults, Some(rule.bounds)),
        })
        .collect();
    let compilation = runtime.compilation.map(|c| match c {
        ferry_config::Compilation::Tiered => Compilation::Tiered,
        ferry_config::Compilation::Optimizing => Compilation::Optimizing,
        ferry_config::Compilation::Baseline => Compilation::Baseline,
    });
    HostRuntime { hold, queue_bounds: (defaults, rules), compilation }
}

/// `base` with the bounds `config` sets.
fn queue_bounds(base: QueueBounds, config: Option<ferry_config::QueueBounds>) -> QueueBounds {
    let Some(config) = config else { return base };
    QueueBounds {
        max_items: config.max_items.map(|n| n as usize).or(base.max_items),
        max_bytes: config.max_bytes.map_or(base.max_bytes, |n| n as usize),
        overflow: match config.overflow {
            Some(ferry_config::QueueOverflow::Refuse) => Overflow::Refuse,
            Some(ferry_config::QueueOverflow::DropOldest) => Overflow::DropOldest,
            None => base.overflow,
        },
    }
}

/// `limits` with what `config` sets; a zero deadline means none.
fn with_limits(mut limits: Limits, config: &WasmLimits) -> Limits {
    let deadline = |d: Duration| (!d.is_zero()).then_some(d);
    if let Some(d) = config.callback_deadline {
        limits.callback_deadline = deadline(d);
    }
    if let Some(d) = config.start_deadline {
        limits.start_deadline = deadline(d);
    }
    if let Some(bytes) = config.memory_limit_bytes {
        limits.memory_bytes = bytes as usize;
    }
    limits
}

fn host_policy(policy: ferry_config::FailurePolicy) -> FailurePolicy {
    match policy {
        ferry_config::FailurePolicy::FailClosed => FailurePolicy::FailClosed,
        ferry_config::FailurePolicy::FailOpen => FailurePolicy::FailOpen,
        ferry_config::FailurePolicy::FailReload { base_interval, max_interval } => {
            FailurePolicy::FailReload(Backoff { base: base_interval, max: max_interval })
        }
    }
}

/// Everything the threads need, built once.
pub struct Plan {
    /// The Proxy-Wasm host.
    pub host: Arc<Host>,
    /// Listeners to bind.
    pub listeners: Vec<ListenerPlan>,
    /// Singleton services: one VM on the main thread.
    pub main_plugins: Vec<Arc<Plugin>>,
    /// Filters and per-worker services: one VM per worker. Filters refer to
    /// them by index.
    pub worker_plugins: Vec<Arc<Plugin>>,
    /// Upstream clusters.
    pub clusters: Arc<Clusters>,
    /// Admin endpoint address.
    pub admin: Option<SocketAddr>,
    /// `node`, as the admin endpoint reports it.
    pub node: ferry_config::Node,
    /// The configuration as written, for `/config_dump`.
    pub config_source: serde_json::Value,
    /// `stats_config.stats_tags`.
    pub stats_tags: Vec<ferry_config::StatsTag>,
    /// How many downstream connections may be open at once.
    pub connection_cap: Arc<crate::connections::ConnectionCap>,
    /// `ferry.config.v1.QueueBridge`, with each bridged queue's buffer
    /// bounds (the queue's own, else the shared-queue defaults).
    pub queue_bridge: Option<(ferry_config::QueueBridge, Vec<QueueBounds>)>,
}

/// A listener and what it serves.
pub struct ListenerPlan {
    /// `name`.
    pub name: String,
    /// Where to bind.
    pub address: SocketAddr,
    /// Its filter chains, in order (the default chain last).
    pub chains: Arc<[ChainPlan]>,
    /// Envoy's `listener.<address>.*` counters.
    pub(crate) stats: Arc<crate::envoy_stats::ListenerStats>,
}

/// A filter chain: which connections it takes, the TLS it terminates and
/// what runs on them.
pub struct ChainPlan {
    /// `filter_chain_match`.
    pub matcher: ferry_config::ChainMatch,
    /// `default_filter_chain`: taken when no other matches.
    pub is_default: bool,
    /// The TLS it terminates.
    pub(crate) tls: Option<Arc<crate::tls::ServerTls>>,
    /// What runs on its connections.
    pub service: ListenerService,
}

impl ListenerPlan {
    /// Each chain's service.
    pub fn services(&self) -> impl Iterator<Item = &ListenerService> {
        self.chains.iter().map(|c| &c.service)
    }
}

/// The network filter chain of a listener.
#[derive(Clone)]
pub enum ListenerService {
    /// The HTTP connection manager.
    Http(Arc<HttpPlan>),
    /// Network Wasm filters, then `tcp_proxy`.
    Tcp(Arc<TcpPlan>),
}

/// Network Wasm filters in front of a `tcp_proxy`.
pub struct TcpPlan {
    /// Network filters in order, as indexes into [`Plan::worker_plugins`].
    pub filters: Vec<usize>,
    /// The cluster connections go to.
    pub cluster: String,
    /// Close a connection with no data either way for this long.
    pub idle_timeout: Option<std::time::Duration>,
    /// Most data held per direction for a paused filter before that side
    /// is no longer read (`per_connection_buffer_limit_bytes`).
    pub buffer_limit: usize,
    /// `access_log`: each logger writes one line per connection.
    pub(crate) access_logs: Arc<[Arc<AccessLogger>]>,
    /// The listener's facts for plugins (`xds.listener_metadata`, ...).
    pub listener: Arc<ferry_host::ListenerFacts>,
}

/// Opens a listener's access loggers.
fn open_access_logs(listener: &str, logs: &[ferry_config::AccessLog]) -> Result<Arc<[Arc<AccessLogger>]>, PlanError> {
    logs.iter()
        .filter(|log| !matches!(log.sink, ferry_config::AccessLogSink::Wasm(_)))
        .map(|log| {
            AccessLogger::open(log).map_err(|source| PlanError::AccessLog {
                listener: listener.to_owned(),
                sink: format!("{:?}", log.sink),
                source,
            })
        })
        .collect()
}

/// An HTTP filter of a connection manager.
#[derive(Clone)]
pub enum FilterSpec {
    /// A Wasm plugin, as an index into [`Plan::worker_plugins`], and
    /// whether a stop on headers is a plain `StopIteration`
    /// (`allow_on_headers_stop_iteration`).
    Wasm {
        /// The plugin.
        index: usize,
        /// `allow_on_headers_stop_iteration`.
        allow_stop_iteration: bool,
    },
    /// `envoy.filters.http.header_to_metadata`.
    HeaderToMetadata(Arc<ferry_config::HeaderToMetadata>),
    /// `envoy.filters.http.compressor`.
    Compressor(Arc<crate::filter::CompressorPlan>),
    /// `envoy.filters.http.decompressor`.
    Decompressor(Arc<crate::filter::DecompressorPlan>),
}

/// The filters of a connection manager, and the counters the native ones keep.
fn filter_chain(
    filters: &[HttpFilter],
    plugins: &mut PluginSet<'_>,
) -> Result<(Vec<FilterSpec>, Vec<Arc<crate::envoy_stats::FilterCounters>>), PlanError> {
    use crate::envoy_stats::FilterCounters;
    use crate::filter::{COMPRESSOR_STATS, CompressorPlan, DECOMPRESSOR_STATS, DecompressorPlan};
    // Compressors choose among each other by the client's accept-encoding.
    let rivals: Vec<_> = filters
        .iter()
        .filter_map(|f| match f {
            HttpFilter::Compressor(c) if c.response.is_some() => Some((c.encoder.encoding, c.choose_first)),
            _ => None,
        })
        .collect();
    let mut compressors_seen = 0;
    let mut stats = Vec::new();
    let mut counters = |kind: &str, library: &str, encoding: ferry_config::Encoding, names| {
        let pair = ["request", "response"].map(|direction| {
            let prefix = format!("{kind}.{library}.{}.{direction}", encoding.stat_prefix());
            Arc::new(FilterCounters::new(prefix, names))
        });
        stats.extend(pair.iter().cloned());
        pair
    };
    let mut specs = Vec::with_capacity(filters.len());
    for filter in filters {
        specs.push(match filter {
            HttpFilter::Wasm(p) => FilterSpec::Wasm {
                index: plugins.add_worker(p)?,
                allow_stop_iteration: p.allow_on_headers_stop_iteration,
            },
            HttpFilter::HeaderToMetadata(rules) => FilterSpec::HeaderToMetadata(Arc::new(rules.clone())),
            HttpFilter::Compressor(config) => {
                let [request_stats, response_stats] =
                    counters("compressor", &config.library_name, config.encoder.encoding, COMPRESSOR_STATS);
                let position = compressors_seen;
                if config.response.is_some() {
                    compressors_seen += 1;
                }
                FilterSpec::Compressor(Arc::new(CompressorPlan {
                    config: config.clone(),
                    rivals: rivals.clone(),
                    position,
                    response_stats,
                    request_stats,
                }))
            }
            HttpFilter::Decompressor(config) => {
                let [request_stats, response_stats] =
                    counters("decompressor", &config.library_name, config.encoding, DECOMPRESSOR_STATS);
                FilterSpec::Decompressor(Arc::new(DecompressorPlan {
                    config: config.clone(),
                    request_stats,
                    response_stats,
                }))
            }
        });
    }
    Ok((specs, stats))
}

/// An HTTP connection manager.
pub struct HttpPlan {
    /// Routes.
    pub routes: RouteTable,
    /// The HTTP filters before the router, in order.
    pub filters: Vec<FilterSpec>,
    /// Add `x-request-id` when absent.
    pub generate_request_id: bool,
    /// Value of the `server` response header.
    pub server_name: Bytes,
    /// `server_name` as a header value (`None` if it cannot be one).
    pub(crate) server_value: Option<http::HeaderValue>,
    /// When `server_name` replaces or fills in a response's `server`.
    pub server_header_transformation: ServerHeaderTransformation,
    /// `codec_type`: which HTTP versions clients may speak.
    pub codec: ferry_config::Codec,
    /// Timeouts and limits on what clients send.
    pub limits: ferry_config::HttpLimits,
    /// Most of a body read for the filters (`per_connection_buffer_limit_bytes`):
    /// past it a request is answered 413, a response 502.
    pub buffer_limit: usize,
    /// `scheme_header_transformation.scheme_to_overwrite`.
    pub scheme_to_overwrite: Option<&'static str>,
    /// `http2_protocol_options`.
    pub http2: ferry_config::Http2Options,
    /// `use_remote_address` and `xff_num_trusted_hops`: who the client is.
    pub(crate) forwarding: crate::forwarding::Forwarding,
    /// Add `x-envoy-expected-rq-timeout-ms` upstream and
    /// `x-envoy-upstream-service-time` downstream, as Envoy's router.
    pub envoy_headers: bool,
    /// `access_log`: each logger writes one line per request.
    pub(crate) access_logs: Arc<[Arc<AccessLogger>]>,
    /// Wasm access loggers, as indexes into [`Plan::worker_plugins`]: each
    /// root context gets `proxy_on_log` when a stream ends.
    pub wasm_loggers: Vec<usize>,
    /// `stat_prefix` (the listener's name when none is given).
    pub stat_prefix: String,
    /// Envoy's `http.<stat_prefix>.*` counters.
    pub(crate) stats: Arc<crate::envoy_stats::HttpStats>,
    /// The listener's facts for plugins (`xds.listener_metadata`, ...).
    pub listener: Arc<ferry_host::ListenerFacts>,
    /// `upgrade_configs`: the upgrades clients may ask for.
    pub upgrades: Vec<ferry_config::Upgrade>,
}

impl HttpPlan {
    /// Sets `server` on a response as `server_header_transformation` says.
    pub(crate) fn set_server_header(&self, headers: &mut http::HeaderMap) {
        let Some(server) = self.server_value.clone() else { return };
        match self.server_header_transformation {
            ServerHeaderTransformation::Overwrite => {
                headers.insert(http::header::SERVER, server);
            }
            ServerHeaderTransformation::AppendIfAbsent => {
                headers.entry(http::header::SERVER).or_insert(server);
            }
            ServerHeaderTransformation::PassThrough => {}
        }
    }
}

impl Plan {
    /// Loads every module and builds the plan.
    ///
    /// # Errors
    /// A plugin whose code cannot be read or loaded, or an address that
    /// does not resolve.
    pub fn build(config: &Bootstrap, host: Arc<Host>, settings: &WasmSettings) -> Result<Plan, PlanError> {
        let mut plugins =
            PluginSet { host: &host, runtime: &config.wasm_runtime, settings, main: Vec::new(), worker: Vec::new() };
        for service in &config.wasm_services {
            if service.singleton {
                let plugin = plugins.load(&service.plugin)?;
                plugins.main.push(plugin);
            } else {
                plugins.add_worker(&service.plugin)?;
            }
        }
        let clusters = Arc::new(
            Clusters::new(&config.clusters)
                .map_err(|(cluster, source)| PlanError::Tls { what: format!("cluster {cluster:?}"), source })?,
        );
        let mut listeners = Vec::new();
        let mut taken = Vec::new();
        if let Some(admin) = &config.admin {
            taken.push(("the admin endpoint".to_owned(), resolve(&admin.to_string(), "admin")?));
        }
        for listener in &config.listeners {
            let what = format!("listener {:?}", listener.name);
            let address = resolve(&listener.address.to_string(), &what)?;
            if let Some((other, _)) = taken.iter().find(|(_, other)| clashes(*other, address)) {
                return Err(PlanError::SameAddress { what, other: other.clone(), address });
            }
            taken.push((what, address));
            let mut chains = Vec::new();
            for chain in &listener.chains {
                let service = match &chain.kind {
                    ListenerKind::Http(hcm) => {
                        let wasm_loggers = hcm
                            .access_log
                            .iter()
                            .filter_map(|log| match &log.sink {
                                ferry_config::AccessLogSink::Wasm(plugin) => Some(plugins.add_worker(plugin)),
                                _ => None,
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        let (filters, filter_stats) = filter_chain(&hcm.http_filters, &mut plugins)?;
                        ListenerService::Http(Arc::new(HttpPlan {
                            routes: RouteTable::new(&hcm.route_config),
                            filters,
                            generate_request_id: hcm.generate_request_id,
                            server_name: Bytes::from(hcm.server_name.clone()),
                            server_value: http::HeaderValue::from_str(&hcm.server_name).ok(),
                            server_header_transformation: hcm.server_header_transformation,
                            codec: hcm.codec,
                            limits: hcm.limits,
                            buffer_limit: listener.buffer_limit as usize,
                            scheme_to_overwrite: match hcm.scheme_to_overwrite.as_deref() {
                                Some("https") => Some("https"),
                                Some(_) => Some("http"),
                                None => None,
                            },
                            http2: hcm.http2,
                            forwarding: crate::forwarding::Forwarding {
                                use_remote_address: hcm.use_remote_address,
                                xff_num_trusted_hops: hcm.xff_num_trusted_hops,
                            },
                            envoy_headers: !hcm.suppress_envoy_headers,
                            stat_prefix: if hcm.stat_prefix.is_empty() {
                                listener.name.clone()
                            } else {
                                hcm.stat_prefix.clone()
                            },
                            stats: Arc::new(crate::envoy_stats::HttpStats {
                                filters: filter_stats,
                                ..Default::default()
                            }),
                            access_logs: open_access_logs(&listener.name, &hcm.access_log)?,
                            wasm_loggers,
                            listener: crate::xds::listener(listener, chain),
                            upgrades: hcm.upgrades.clone(),
                        }))
                    }
                    ListenerKind::Tcp(proxy) => {
                        let filters =
                            proxy.filters.iter().map(|p| plugins.add_worker(p)).collect::<Result<Vec<_>, _>>()?;
                        ListenerService::Tcp(Arc::new(TcpPlan {
                            filters,
                            cluster: proxy.cluster.clone(),
                            idle_timeout: proxy.idle_timeout,
                            buffer_limit: listener.buffer_limit as usize,
                            access_logs: open_access_logs(&listener.name, &proxy.access_log)?,
                            listener: crate::xds::listener(listener, chain),
                        }))
                    }
                };
                let tls = chain
                    .tls
                    .as_ref()
                    .map(|tls| crate::tls::server(tls).map(Arc::new))
                    .transpose()
                    .map_err(|source| PlanError::Tls { what: format!("listener {:?}", listener.name), source })?;
                chains.push(ChainPlan { matcher: chain.matcher.clone(), is_default: chain.is_default, tls, service });
            }
            listeners.push(ListenerPlan {
                name: listener.name.clone(),
                address,
                chains: chains.into(),
                stats: Arc::default(),
            });
        }
        let admin = config.admin.as_ref().map(|a| resolve(&a.to_string(), "admin.address")).transpose()?;
        let PluginSet { main, worker, .. } = plugins;
        let node = config.node.clone();
        let (config_source, stats_tags) = (config.source.clone(), config.stats_tags.clone());
        Ok(Plan {
            host,
            listeners,
            main_plugins: main,
            worker_plugins: worker,
            clusters,
            admin,
            node,
            config_source,
            stats_tags,
            connection_cap: crate::connections::ConnectionCap::configured_or_default(config.max_downstream_connections),
            queue_bridge: config.queue_bridge.as_ref().map(|bridge| {
                let defaults = queue_bounds(QueueBounds::default(), config.wasm_runtime.queue_defaults);
                let buffers = bridge.queues.iter().map(|q| queue_bounds(defaults, Some(q.buffer))).collect();
                (bridge.clone(), buffers)
            }),
        })
    }
}

/// Whether two listening addresses cannot both be bound: the same port
/// (not 0: any free one) on the same IP, or on any IP and a wildcard.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn resolve(address: &str, what: &str) -> Result<SocketAddr, PlanError> {
    let error = |reason: String| PlanError::Address { what: what.to_owned(), address: address.to_owned(), reason };
    address.to_socket_addrs().map_err(|e| error(e.to_string()))?.next().ok_or_else(|| error("no address".into()))
}

struct PluginSet<'a> {
    host: &'a Arc<Host>,
    runtime: &'a WasmRuntime,
    settings: &'a WasmSettings,
    main: Vec<Arc<Plugin>>,
    worker: Vec<Arc<Plugin>>,
}

impl PluginSet<'_> {
    /// Adds a per-worker plugin, or finds the identical one already added
    /// (same VM, name, root_id, configuration and policy: one root context).
    fn add_worker(&mut self, config: &PluginConfig) -> Result<usize, PlanError> {
        let plugin = self.load(config)?;
        if let Some(i) = self.worker.iter().position(|p| same_plugin(p, &plugin)) {
            return Ok(i);
        }
        self.worker.push(plugin);
        Ok(self.worker.len() - 1)
    }

    fn load(&self, config: &PluginConfig) -> Result<Arc<Plugin>, PlanError> {
        let vm = &config.vm;
        let code_path = format!("{}.vm_config.code.local", config.config_path);
        let (code, origin) = match &vm.code {
            Code::File(file) => {
                let code = ferry_config::input::read_file(file, ferry_config::input::MAX_MODULE_BYTES)
                    .map_err(|reason| PlanError::Code { path: format!("{code_path}.filename"), reason })?;
                (code, file.display().to_string())
            }
            Code::Inline(bytes) => (bytes.clone(), format!("inline code at {code_path}")),
        };
        let mut environment = vm.environment.clone();
        for key in &vm.host_env_keys {
            if let Ok(value) = std::env::var(key) {
                environment.push((key.clone(), value));
            }
        }
        let spec = ModuleSpec {
            vm_id: vm.vm_id.clone(),
            vm_configuration: Bytes::from(vm.configuration.clone()),
            code: Bytes::from(code),
            origin,
            environment,
            allowed_capabilities: vm.allowed_capabilities.clone(),
        };
        let name = if config.name.is_empty() { &config.root_id } else { &config.name };
        let module = self.host.load_module(spec).map_err(|source| PlanError::Load {
            plugin: name.clone(),
            path: config.config_path.clone(),
            source,
        })?;
        let policy = config
            .failure_policy
            .or(self.settings.failure_policy)
            .or(self.runtime.default_failure_policy)
            .map_or_else(FailurePolicy::default, host_policy);
        let limits = self.limits_of(name);
        Ok(Plugin::new(&config.name, &config.root_id, config.configuration.clone(), module, policy, limits))
    }

    /// A plugin's limits: ferry's defaults, then the runtime extension's,
    /// then the command line's, then the plugin's own entry.
    fn limits_of(&self, name: &str) -> Limits {
        let flags = WasmLimits {
            callback_deadline: self.settings.callback_deadline,
            start_deadline: self.settings.start_deadline,
            memory_limit_bytes: self.settings.memory_limit_bytes,
        };
        let mut limits = with_limits(with_limits(Limits::default(), &self.runtime.limits), &flags);
        for entry in self.runtime.plugins.iter().filter(|p| p.name == name) {
            limits = with_limits(limits, &entry.limits);
        }
        limits
    }
}

fn same_plugin(a: &Plugin, b: &Plugin) -> bool {
    a.module.key() == b.module.key()
        && a.name == b.name
        && a.root_id == b.root_id
        && a.configuration == b.configuration
        && a.failure_policy == b.failure_policy
        && a.limits == b.limits
}
