//! The validated configuration: what ferry runs, with Envoy's vocabulary.

use std::path::PathBuf;
use std::time::Duration;

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bootstrap {
    /// `node`, reported to plugins as the `node` property.
    pub node: Node,
    /// `admin.address`, if the admin endpoint is enabled.
    pub admin: Option<SocketAddress>,
    /// `static_resources.listeners`.
    pub listeners: Vec<Listener>,
    /// `static_resources.clusters`.
    pub clusters: Vec<Cluster>,
    /// `bootstrap_extensions` of type `envoy.bootstrap.wasm`.
    pub wasm_services: Vec<WasmService>,
}

/// `node`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
}

/// An IP address and port (`socket_address`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketAddress {
    /// Host: an IP address, or a name for DNS clusters.
    pub address: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.contains(':') {
            write!(f, "[{}]:{}", self.address, self.port)
        } else {
            write!(f, "{}:{}", self.address, self.port)
        }
    }
}

/// A listener with its network filter chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// `name`.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddress,
    /// What it does with connections.
    pub kind: ListenerKind,
}

/// The network filter chain of a listener, by its terminal filter.
#[derive(Clone, Debug, PartialEq)]
pub enum ListenerKind {
    /// `envoy.filters.network.http_connection_manager`.
    Http(HttpConnectionManager),
    /// `envoy.filters.network.tcp_proxy`, after any network Wasm filters.
    Tcp(TcpProxy),
}

/// `TcpProxy` with the network filters before it.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpProxy {
    /// `envoy.filters.network.wasm` filters, in order.
    pub filters: Vec<PluginConfig>,
    /// `cluster`: where connections go (validated to exist).
    pub cluster: String,
    /// `idle_timeout` (default 1 h; zero disables it).
    pub idle_timeout: Option<Duration>,
}

/// `HttpConnectionManager`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConnectionManager {
    /// `route_config`.
    pub route_config: RouteConfig,
    /// `http_filters`, router excluded (it is always last).
    pub http_filters: Vec<HttpFilter>,
    /// `generate_request_id` (default true): add `x-request-id` when absent.
    pub generate_request_id: bool,
    /// `server_name`: the `server` response header.
    pub server_name: String,
}

/// `route_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// `name`.
    pub name: String,
    /// `virtual_hosts`, matched by domain.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A virtual host.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    /// `name`.
    pub name: String,
    /// `domains`: exact, `*`, `*.suffix` or `prefix.*`.
    pub domains: Vec<String>,
    /// `routes`, first match wins.
    pub routes: Vec<Route>,
}

/// A route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// What requests it takes.
    pub matcher: PathMatch,
    /// Whether path matching is case sensitive (default true).
    pub case_sensitive: bool,
    /// What it does with them.
    pub action: RouteAction,
}

/// How a route matches the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// `prefix`: the path starts with it.
    Prefix(String),
    /// `path`: the path (without query) equals it.
    Exact(String),
}

/// What a route does.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    /// `direct_response`: answer from the proxy.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body, if any.
        body: Option<Vec<u8>>,
    },
    /// `route.cluster`: proxy to an upstream cluster.
    Cluster {
        /// Cluster name (validated to exist).
        name: String,
        /// `route.timeout` (default 15 s; zero disables it).
        timeout: Option<Duration>,
    },
}

/// An HTTP filter before the router.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilter {
    /// `envoy.filters.http.wasm`.
    Wasm(PluginConfig),
}

/// `envoy.bootstrap.wasm`: a plugin with no traffic of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct WasmService {
    /// One VM on the main thread (true) or one per worker (false).
    pub singleton: bool,
    /// The plugin.
    pub plugin: PluginConfig,
}

/// `PluginConfig`: one root context in a VM.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    /// `name`.
    pub name: String,
    /// `root_id`.
    pub root_id: String,
    /// `vm_config`.
    pub vm: VmConfig,
    /// `configuration`, as the bytes `proxy_on_configure` reads.
    pub configuration: Vec<u8>,
    /// `fail_open` / `failure_policy`.
    pub fail_open: bool,
    /// `allow_on_headers_stop_iteration`.
    pub allow_on_headers_stop_iteration: bool,
    /// Where this plugin is in the file, for messages.
    pub config_path: String,
}

/// `VmConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct VmConfig {
    /// `vm_id`.
    pub vm_id: String,
    /// `runtime`, as written (ferry always runs wasmtime).
    pub runtime: String,
    /// `code`.
    pub code: Code,
    /// `configuration`, as the bytes `proxy_on_vm_start` reads.
    pub configuration: Vec<u8>,
    /// `environment_variables`: `key_values`, then `host_env_keys` resolved at load.
    pub environment: Vec<(String, String)>,
    /// `environment_variables.host_env_keys`.
    pub host_env_keys: Vec<String>,
}

/// Where a module's code is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// `local.filename`, relative to the working directory.
    File(PathBuf),
    /// `local.inline_bytes` or `local.inline_string`.
    Inline(Vec<u8>),
}

/// An upstream cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// `name`.
    pub name: String,
    /// `connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `type`.
    pub discovery: Discovery,
    /// The endpoints of `load_assignment`, in order.
    pub endpoints: Vec<SocketAddress>,
    /// HTTP/2 (cleartext) to the endpoints, from `HttpProtocolOptions`'
    /// `explicit_http_config.http2_protocol_options` (or the deprecated
    /// `http2_protocol_options`); HTTP/1.1 otherwise.
    pub http2: bool,
}

/// How a cluster finds its endpoints (`type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// `STATIC`: IP addresses.
    Static,
    /// `STRICT_DNS` / `LOGICAL_DNS`: names resolved when connecting.
    Dns,
}
