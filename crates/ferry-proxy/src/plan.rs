//! Start-up: turns the validated configuration into what the threads run.
//! Modules are read and compiled here, once, before any thread starts, so
//! a missing or bad plugin stops start-up with a message naming it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use bytes::Bytes;
use ferry_config::{Bootstrap, Code, HttpFilter, ListenerKind, PluginConfig};
use ferry_host::{FailurePolicy, Host, LoadError, ModuleSpec, Plugin};

use crate::http::router::RouteTable;
use crate::upstream::Clusters;

/// Why start-up failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A plugin's code could not be read.
    #[error("{path}: cannot read Wasm module {file:?}: {reason}")]
    Code {
        /// Config path of the code field.
        path: String,
        /// The file.
        file: String,
        /// The I/O error.
        reason: std::io::Error,
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
}

/// A listener and what it serves.
pub struct ListenerPlan {
    /// `name`.
    pub name: String,
    /// Where to bind.
    pub address: SocketAddr,
    /// What runs on its connections.
    pub service: ListenerService,
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
}

/// An HTTP connection manager.
pub struct HttpPlan {
    /// Routes.
    pub routes: RouteTable,
    /// Wasm filters in order, as indexes into [`Plan::worker_plugins`].
    pub filters: Vec<usize>,
    /// Add `x-request-id` when absent.
    pub generate_request_id: bool,
    /// Value of the `server` response header.
    pub server_name: Bytes,
}

impl Plan {
    /// Loads every module and builds the plan.
    ///
    /// # Errors
    /// A plugin whose code cannot be read or loaded, or an address that
    /// does not resolve.
    pub fn build(config: &Bootstrap, host: Arc<Host>) -> Result<Plan, PlanError> {
        let mut plugins = PluginSet { host: &host, main: Vec::new(), worker: Vec::new() };
        for service in &config.wasm_services {
            if service.singleton {
                let plugin = plugins.load(&service.plugin)?;
                plugins.main.push(plugin);
            } else {
                plugins.add_worker(&service.plugin)?;
            }
        }
        let clusters = Arc::new(Clusters::new(&config.clusters));
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let address = resolve(&listener.address.to_string(), &format!("listener {:?}", listener.name))?;
            let service = match &listener.kind {
                ListenerKind::Http(hcm) => {
                    let filters = hcm
                        .http_filters
                        .iter()
                        .map(|HttpFilter::Wasm(p)| plugins.add_worker(p))
                        .collect::<Result<Vec<_>, _>>()?;
                    ListenerService::Http(Arc::new(HttpPlan {
                        routes: RouteTable::new(&hcm.route_config),
                        filters,
                        generate_request_id: hcm.generate_request_id,
                        server_name: Bytes::from(hcm.server_name.clone()),
                    }))
                }
                ListenerKind::Tcp(proxy) => {
                    let filters = proxy.filters.iter().map(|p| plugins.add_worker(p)).collect::<Result<Vec<_>, _>>()?;
                    ListenerService::Tcp(Arc::new(TcpPlan {
                        filters,
                        cluster: proxy.cluster.clone(),
                        idle_timeout: proxy.idle_timeout,
                    }))
                }
            };
            listeners.push(ListenerPlan { name: listener.name.clone(), address, service });
        }
        let admin = config.admin.as_ref().map(|a| resolve(&a.to_string(), "admin.address")).transpose()?;
        let PluginSet { main, worker, .. } = plugins;
        Ok(Plan { host, listeners, main_plugins: main, worker_plugins: worker, clusters, admin })
    }
}

fn resolve(address: &str, what: &str) -> Result<SocketAddr, PlanError> {
    let error = |reason: String| PlanError::Address { what: what.to_owned(), address: address.to_owned(), reason };
    address.to_socket_addrs().map_err(|e| error(e.to_string()))?.next().ok_or_else(|| error("no address".into()))
}

struct PluginSet<'a> {
    host: &'a Arc<Host>,
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
                let code = std::fs::read(file).map_err(|reason| PlanError::Code {
                    path: format!("{code_path}.filename"),
                    file: file.display().to_string(),
                    reason,
                })?;
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
        };
        let name = if config.name.is_empty() { &config.root_id } else { &config.name };
        let module = self.host.load_module(spec).map_err(|source| PlanError::Load {
            plugin: name.clone(),
            path: config.config_path.clone(),
            source,
        })?;
        let policy = if config.fail_open { FailurePolicy::FailOpen } else { FailurePolicy::FailClosed };
        Ok(Plugin::new(&config.name, &config.root_id, config.configuration.clone(), module, policy))
    }
}

fn same_plugin(a: &Plugin, b: &Plugin) -> bool {
    a.module.key() == b.module.key()
        && a.name == b.name
        && a.root_id == b.root_id
        && a.configuration == b.configuration
        && a.failure_policy == b.failure_policy
}
