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
    /// The `bootstrap_extensions` entry of type `ferry.config.v1.WasmRuntime`
    /// (ferry's own): limits, failure handling and queue bounds.
    pub wasm_runtime: WasmRuntime,
    /// The `bootstrap_extensions` entry of type `ferry.config.v1.QueueBridge`
    /// (ferry's own): shared queues that live in a broker.
    pub queue_bridge: Option<QueueBridge>,
    /// The file as written, as JSON, for the admin endpoint's `/config_dump`.
    pub source: serde_json::Value,
    /// `stats_config.stats_tags`: tags taken out of stat names, in order.
    pub stats_tags: Vec<StatsTag>,
    /// `stats_config.histogram_bucket_settings`: the first whose matcher
    /// takes a histogram's stat name gives its bucket bounds.
    pub histogram_buckets: Vec<HistogramBuckets>,
    /// The overload manager's `global_downstream_max_connections`, if configured.
    pub max_downstream_connections: Option<u64>,
}

/// A `stats_config.histogram_bucket_settings` item.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramBuckets {
    /// `match`: which stat names it applies to.
    pub matcher: HeaderTest,
    /// `buckets`: the upper bounds, ascending.
    pub bounds: Vec<f64>,
}

/// A `stats_config.stats_tags` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsTag {
    /// `tag_name`.
    pub name: String,
    /// Where the value comes from.
    pub value: TagValue,
}

/// How a tag gets its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagValue {
    /// `regex`: the first capture group is taken out of the name; the second
    /// (or the first, when there is one) is the value. Checked to compile.
    Regex(String),
    /// `fixed_value`: every stat gets the tag.
    Fixed(String),
}

/// ferry's extension `ferry.config.v1.WasmRuntime`: what plugins may cost
/// and how failures are handled. Every field is optional; unset fields
/// keep ferry's defaults (or the command line's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WasmRuntime {
    /// Limits of every plugin.
    pub limits: WasmLimits,
    /// Limits of single plugins, by plugin name.
    pub plugins: Vec<PluginLimits>,
    /// The policy of plugins whose configuration names none.
    pub default_failure_policy: Option<FailurePolicy>,
    /// `hold_failed`: when a plugin that keeps failing stops being restarted.
    pub hold_failed: Option<HoldFailed>,
    /// `shared_queue_defaults`: bounds of every shared queue.
    pub queue_defaults: Option<QueueBounds>,
    /// `shared_queues`: bounds of named queues (first match wins).
    pub shared_queues: Vec<QueueRule>,
    /// `compilation`: which compilers make plugin code.
    pub compilation: Option<Compilation>,
}

/// ferry's extension `ferry.config.v1.QueueBridge`: shared queues that live
/// in NATS JetStream, shared by every ferry process that bridges them.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueBridge {
    /// `nats`: the broker.
    pub nats: NatsBroker,
    /// `queues`: the bridged queues.
    pub queues: Vec<BridgedQueue>,
    /// `ready_requires_broker`: `/ready` answers 503 while the broker is unreachable.
    pub ready_requires_broker: bool,
    /// `drain_timeout` (default 5 s): how long a stopping ferry keeps
    /// publishing what it still holds.
    pub drain_timeout: Duration,
}

/// `nats` of `ferry.config.v1.QueueBridge`: how to reach the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsBroker {
    /// `servers` (default `nats://127.0.0.1:4222`); more than one for a cluster.
    pub servers: Vec<String>,
    /// `user`, with `password`.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `token`.
    pub token: Option<String>,
    /// `credentials_file`: a NATS `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// `tls`.
    pub tls: Option<NatsTls>,
    /// `connect_timeout` (default 2 s).
    pub connect_timeout: Duration,
    /// `name`: the connection name the broker shows.
    pub name: Option<String>,
}

/// `tls` of `nats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTls {
    /// `ca_file`: roots that sign the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// `cert_file`: a client certificate.
    pub cert_file: Option<PathBuf>,
    /// `key_file`: its key.
    pub key_file: Option<PathBuf>,
    /// `required`: refuse a broker that does not speak TLS.
    pub required: bool,
}

/// An item of `queues` of `ferry.config.v1.QueueBridge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgedQueue {
    /// `vm_id` of the queue, as plugins resolve it.
    pub vm_id: String,
    /// `name` of the queue.
    pub name: String,
    /// `stream`: the JetStream stream that holds the items (created if missing).
    pub stream: String,
    /// `subject` (default `ferry.queue.<vm_id>.<name>`).
    pub subject: String,
    /// `storage`: FILE (default) or MEMORY.
    pub storage: BridgeStorage,
    /// `duplicate_window` (default 120 s): how long the broker remembers a
    /// message id to drop a retried publish.
    pub duplicate_window: Duration,
    /// `durable`: the consumer shared by every receiver (default `<stream>_receivers`).
    pub durable: String,
    /// `fetch_ahead` (default 256): most items a receiver holds unacknowledged.
    pub fetch_ahead: usize,
    /// `ack_wait` (default 30 s): when the broker hands an unacknowledged item to another receiver.
    pub ack_wait: Duration,
    /// `publish_batch` (default 256): most items published before their acknowledgements are awaited.
    pub publish_batch: usize,
    /// `publish_timeout` (default 5 s): a publish unacknowledged this long is retried.
    pub publish_timeout: Duration,
    /// `buffer`: bounds of what waits for the broker (as a shared queue's bounds).
    pub buffer: QueueBounds,
}

/// `storage` of a bridged queue's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeStorage {
    /// Kept on disk: items survive a broker restart.
    File,
    /// Kept in memory.
    Memory,
}

/// `compilation` of `ferry.config.v1.WasmRuntime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compilation {
    /// `TIERED`: start on baseline code when the optimised code takes
    /// long, move to the optimised code when it is ready.
    Tiered,
    /// `OPTIMIZING`: wait for the optimised code.
    Optimizing,
    /// `BASELINE`: baseline code only.
    Baseline,
}

/// Time and memory a plugin may use; `None` keeps the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WasmLimits {
    /// `callback_deadline` (zero: none).
    pub callback_deadline: Option<Duration>,
    /// `start_deadline` (zero: none).
    pub start_deadline: Option<Duration>,
    /// `memory_limit_bytes`.
    pub memory_limit_bytes: Option<u64>,
}

/// An item of `plugins`: the limits of the plugins named `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginLimits {
    /// A plugin's `name` (or its `root_id` when it has no name).
    pub name: String,
    /// Its limits.
    pub limits: WasmLimits,
}

/// `hold_failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldFailed {
    /// `failures` within `window` hold the plugin failed.
    pub failures: u32,
    /// `window`.
    pub window: Duration,
}

/// How much a shared queue may hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueBounds {
    /// `max_items`.
    pub max_items: Option<u64>,
    /// `max_bytes`.
    pub max_bytes: Option<u64>,
    /// `overflow`.
    pub overflow: Option<QueueOverflow>,
}

/// What a full queue does with one more item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueOverflow {
    /// `REFUSE`: the enqueue fails.
    Refuse,
    /// `DROP_OLDEST`: the oldest items make room.
    DropOldest,
}

/// An item of `shared_queues`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRule {
    /// `vm_id` of the queue.
    pub vm_id: String,
    /// `name` of the queue; `None` for every queue of the vm_id.
    pub name: Option<String>,
    /// Its bounds.
    pub bounds: QueueBounds,
}

/// `node`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.metadata`, a `Struct`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `node.locality`: region, zone, sub-zone.
    pub locality: (String, String, String),
    /// `node.user_agent_name`.
    pub user_agent_name: Option<String>,
}

/// `metadata` (`envoy.config.core.v3.Metadata`): per filter namespace, a
/// `Struct`, which plugins read through the `xds.*_metadata` attributes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// `filter_metadata`.
    pub filter_metadata: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// `typed_filter_metadata` (values of type `google.protobuf.Struct`).
    pub typed_filter_metadata: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
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
    /// `metadata`.
    pub metadata: Metadata,
    /// `traffic_direction`: 0 unspecified, 1 inbound, 2 outbound.
    pub direction: i64,
    /// `filter_chains` in order, then `default_filter_chain` if there is one.
    pub chains: Vec<FilterChain>,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB): the most of a
    /// body held for HTTP filters (past it: 413 or 502), and of data held
    /// for a paused network filter (past it, that side is not read).
    pub buffer_limit: u32,
}

impl Listener {
    /// The first filter chain's handling: what a listener with one chain does.
    pub fn kind(&self) -> &ListenerKind {
        &self.chains[0].kind
    }
}

/// A filter chain of a listener: which connections it takes, the TLS it
/// terminates, and what it does with them.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterChain {
    /// `name`.
    pub name: String,
    /// `filter_chain_match` (empty: every connection).
    pub matcher: ChainMatch,
    /// `transport_socket`: the TLS it terminates, if any.
    pub tls: Option<TlsContext>,
    /// Its network filters' handling.
    pub kind: ListenerKind,
    /// It is the listener's `default_filter_chain`: taken when none matches.
    pub is_default: bool,
}

/// `filter_chain_match`: what the TLS inspector sees of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainMatch {
    /// `server_names`: the SNI, exactly or as `*.suffix` (lower case).
    pub server_names: Vec<String>,
    /// `transport_protocol`: `tls` or `raw_buffer`.
    pub transport_protocol: Option<String>,
}

impl ChainMatch {
    /// Whether it takes every connection.
    pub fn is_empty(&self) -> bool {
        self.server_names.is_empty() && self.transport_protocol.is_none()
    }
}

/// A TLS context: Envoy's `DownstreamTlsContext` or `UpstreamTlsContext`.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsContext {
    /// `common_tls_context.tls_certificates`: chains and keys, PEM.
    pub certificates: Vec<CertificateKey>,
    /// `validation_context.trusted_ca`, PEM: the peer must present a
    /// certificate it signed (for a server, when a client offers one).
    pub trusted_ca: Option<Vec<u8>>,
    /// `alpn_protocols`, in order of preference.
    pub alpn: Vec<String>,
    /// `tls_params.tls_minimum_protocol_version` (TLS 1.2 by default).
    pub min_version: TlsVersion,
    /// `tls_params.tls_maximum_protocol_version` (TLS 1.3 by default).
    pub max_version: TlsVersion,
    /// `tls_params.cipher_suites` for TLS 1.2 (empty: rustls's).
    pub cipher_suites: Vec<String>,
    /// `require_client_certificate` (downstream).
    pub require_client_certificate: bool,
    /// `sni` (upstream).
    pub sni: Option<String>,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone, Debug, PartialEq)]
pub struct CertificateKey {
    /// `certificate_chain`.
    pub chain_pem: Vec<u8>,
    /// `private_key`.
    pub key_pem: Vec<u8>,
}

/// A TLS version rustls speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The network filter chain of a listener, by its terminal filter.
#[derive(Clone, Debug, PartialEq)]
pub enum ListenerKind {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Box<HttpConnectionManager>),
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
    /// `access_log`: one line per connection, for each logger.
    pub access_log: Vec<AccessLog>,
}

/// `HttpConnectionManager`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConnectionManager {
    /// `stat_prefix`: names its stats `http.<stat_prefix>.*`.
    pub stat_prefix: String,
    /// `route_config`.
    pub route_config: RouteConfig,
    /// `http_filters`, router excluded (it is always last).
    pub http_filters: Vec<HttpFilter>,
    /// `generate_request_id` (default true): add `x-request-id` when absent.
    pub generate_request_id: bool,
    /// `server_name`: the `server` response header.
    pub server_name: String,
    /// `server_header_transformation`: what becomes of an upstream's `server`.
    pub server_header_transformation: ServerHeaderTransformation,
    /// `codec_type`: which HTTP versions clients may speak.
    pub codec: Codec,
    /// `scheme_header_transformation.scheme_to_overwrite`: the `:scheme`
    /// plugins see (and the router sends), whatever the connection's.
    pub scheme_to_overwrite: Option<String>,
    /// Timeouts and limits on what clients send.
    pub limits: HttpLimits,
    /// `http2_protocol_options`.
    pub http2: Http2Options,
    /// `use_remote_address`: append the peer's address to `x-forwarded-for`.
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`: how many addresses at the right of
    /// `x-forwarded-for` were added by trusted proxies.
    pub xff_num_trusted_hops: u32,
    /// The router's `suppress_envoy_headers`: no `x-envoy-expected-rq-timeout-ms`
    /// upstream, no `x-envoy-upstream-service-time` downstream.
    pub suppress_envoy_headers: bool,
    /// `access_log`: one line per request, for each logger.
    pub access_log: Vec<AccessLog>,
    /// `upgrade_configs`: the upgrades (WebSocket, ...) clients may ask for.
    pub upgrades: Vec<Upgrade>,
}

/// An upgrade a connection manager or a route allows, or forbids
/// (`upgrade_configs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// `upgrade_type`, lower-cased (`websocket`).
    pub upgrade_type: String,
    /// `enabled` (default true).
    pub enabled: bool,
}

/// What a connection manager lets clients do, with Envoy's names and
/// defaults (`None`: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// `request_headers_timeout` (default none): each request's head must
    /// arrive within this long of the connection starting to read it.
    pub request_headers_timeout: Option<Duration>,
    /// (ferry) A connection that has not sent complete request headers this
    /// long after it was accepted (a TLS handshake included) is closed,
    /// silent ones too: `request_headers_timeout` when it is set (`0s`:
    /// never), else 10 s. Envoy leaves such a connection open for the
    /// `idle_timeout` (1 h).
    pub first_request_timeout: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout` (default 1 h): a
    /// connection with no request in flight for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_connection_duration` (default none).
    pub max_connection_duration: Option<Duration>,
    /// `max_request_headers_kb` (default 60).
    pub max_request_headers_kb: u32,
    /// `common_http_protocol_options.max_headers_count` (default 100).
    pub max_headers_count: u32,
    /// `headers_with_underscores_action`.
    pub underscores: UnderscoreAction,
    /// `http_protocol_options.accept_http_10` (default false).
    pub accept_http_10: bool,
    /// `stream_idle_timeout` (default 5 min): a stream with no data moving
    /// either way for this long ends (408 before its response, else reset).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout` (default none): the whole request must have come
    /// within this long of its start, unless the response began (408).
    pub request_timeout: Option<Duration>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_headers_timeout: None,
            first_request_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(3600)),
            max_connection_duration: None,
            max_request_headers_kb: 60,
            max_headers_count: 100,
            underscores: UnderscoreAction::Allow,
            accept_http_10: false,
            stream_idle_timeout: Some(Duration::from_secs(300)),
            request_timeout: None,
        }
    }
}

/// `headers_with_underscores_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnderscoreAction {
    /// `ALLOW` (the default).
    #[default]
    Allow,
    /// `REJECT_REQUEST`: 400.
    Reject,
    /// `DROP_HEADER`: the header is removed.
    Drop,
}

/// `codec_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// `AUTO`: HTTP/1.1, or HTTP/2 when the client starts with its preface (h2c).
    #[default]
    Auto,
    /// `HTTP1`.
    Http1,
    /// `HTTP2`: HTTP/2 only (prior knowledge).
    Http2,
}

/// `http2_protocol_options`: `None` leaves hyper's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Options {
    /// `max_concurrent_streams`.
    pub max_concurrent_streams: Option<u32>,
    /// `initial_stream_window_size`.
    pub initial_stream_window_size: Option<u32>,
    /// `initial_connection_window_size`.
    pub initial_connection_window_size: Option<u32>,
}

/// An access logger: where lines go and how they look.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    /// Where the lines go.
    pub sink: AccessLogSink,
    /// How a line is made.
    pub format: LogFormat,
    /// `omit_empty_values`: an empty value is left out (JSON) or empty
    /// (text) instead of `-`.
    pub omit_empty_values: bool,
    /// `filter`: which requests are logged (all when `None`).
    pub filter: Option<AccessLogFilter>,
}

/// `envoy.config.accesslog.v3.AccessLogFilter`: whether a request is logged.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessLogFilter {
    /// `status_code_filter`: the response code compared with a value.
    StatusCode(Comparison),
    /// `duration_filter`: the duration in milliseconds compared with a value.
    Duration(Comparison),
    /// `not_health_check_filter`: ferry runs no health checks, so every
    /// request passes.
    NotHealthCheck,
    /// `and_filter`: every filter passes.
    And(Vec<AccessLogFilter>),
    /// `or_filter`: any filter passes.
    Or(Vec<AccessLogFilter>),
    /// `header_filter`: a request header matches.
    Header(HeaderMatcher),
    /// `response_flag_filter`: the response has one of these flags (any
    /// flag when the list is empty).
    ResponseFlag(Vec<String>),
}

/// `ComparisonFilter`: `op` and the value (`default_value` of the runtime value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// `op`.
    pub op: ComparisonOp,
    /// `value.default_value`.
    pub value: u64,
}

/// `ComparisonFilter.Op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonOp {
    /// `EQ`.
    Eq,
    /// `GE`.
    Ge,
    /// `LE`.
    Le,
    /// `NE`.
    Ne,
}

impl Comparison {
    /// Whether `actual` passes.
    pub fn accepts(&self, actual: u64) -> bool {
        match self.op {
            ComparisonOp::Eq => actual == self.value,
            ComparisonOp::Ge => actual >= self.value,
            ComparisonOp::Le => actual <= self.value,
            ComparisonOp::Ne => actual != self.value,
        }
    }
}

/// `envoy.config.route.v3.HeaderMatcher`: a test on one header.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatcher {
    /// `name`, lower case.
    pub name: String,
    /// What the value must be.
    pub test: HeaderTest,
    /// `invert_match`.
    pub invert: bool,
    /// `treat_missing_header_as_empty`: an absent header is tested as "".
    pub missing_as_empty: bool,
}

/// A compiled regular expression (RE2 syntax, as Envoy's `safe_regex`),
/// anchored to match the whole value; equal when written the same.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// What a [`HeaderMatcher`] requires of the header's value. The flag of
/// the string tests is `ignore_case`.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderTest {
    /// `present_match: true` (or no test at all): the header is there.
    Present,
    /// `present_match: false`: the header is absent.
    Absent,
    /// `exact_match`, `string_match.exact`.
    Exact(String, bool),
    /// `prefix_match`, `string_match.prefix`.
    Prefix(String, bool),
    /// `suffix_match`, `string_match.suffix`.
    Suffix(String, bool),
    /// `contains_match`, `string_match.contains`.
    Contains(String, bool),
    /// `safe_regex_match`, `string_match.safe_regex`: the whole value matches.
    Regex(Pattern),
    /// `range_match`: an integer value in `[start, end)`.
    Range(i64, i64),
}

impl HeaderMatcher {
    /// Whether a request with `value` for the header (`None`: absent;
    /// repeated headers joined with `,`) matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (&self.test, value.or(self.missing_as_empty.then_some(""))) {
            (HeaderTest::Absent, value) => value.is_none() != self.invert,
            (_, None) => false,
            (test, Some(value)) => test.accepts(value) != self.invert,
        }
    }
}

impl HeaderTest {
    /// Whether a value that is there passes.
    pub fn accepts(&self, v: &str) -> bool {
        let fold = |ignore_case: bool, s: &str| if ignore_case { s.to_ascii_lowercase() } else { s.to_owned() };
        match self {
            HeaderTest::Absent => false,
            HeaderTest::Present => true,
            HeaderTest::Exact(want, i) => fold(*i, v) == fold(*i, want),
            HeaderTest::Prefix(want, i) => fold(*i, v).starts_with(&fold(*i, want)),
            HeaderTest::Suffix(want, i) => fold(*i, v).ends_with(&fold(*i, want)),
            HeaderTest::Contains(want, i) => fold(*i, v).contains(&fold(*i, want)),
            HeaderTest::Regex(Pattern(re)) => re.is_match(v),
            HeaderTest::Range(start, end) => v.parse::<i64>().is_ok_and(|n| (*start..*end).contains(&n)),
        }
    }
}

/// Where an access logger writes.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessLogSink {
    /// `envoy.access_loggers.file`: appended to a file.
    File(PathBuf),
    /// `envoy.access_loggers.stdout`.
    Stdout,
    /// `envoy.access_loggers.stderr`.
    Stderr,
    /// `envoy.access_loggers.wasm`: the plugin's root context gets
    /// `proxy_on_log` with the stream readable (the format is not used).
    Wasm(Box<PluginConfig>),
}

/// An access log format: text, or a JSON object per line.
#[derive(Clone, Debug, PartialEq)]
pub enum LogFormat {
    /// Text with command operators (a line ends where the format says).
    Text(Vec<FormatPiece>),
    /// `json_format`: each key's value made by its own format; one object per line.
    Json(Vec<(String, Vec<FormatPiece>)>),
}

/// A piece of a format string.
#[derive(Clone, Debug, PartialEq)]
pub enum FormatPiece {
    /// Text as written.
    Text(String),
    /// A command operator, `%NAME%` or `%NAME(args)%`.
    Operator(Operator),
}

/// The command operators ferry's access logs know, with Envoy's meanings.
#[derive(Clone, Debug, PartialEq)]
pub enum Operator {
    /// `%START_TIME%`: when the request began, `2026-01-02T03:04:05.006Z`.
    StartTime,
    /// `%START_TIME(format)%`: when the request began, in a strftime
    /// format (`%f`, `%3f`: fractions of a second; `%s`: Unix seconds).
    StartTimeFormatted(String),
    /// `%DYNAMIC_METADATA(NAMESPACE:KEY:...):Z%`: the stream's dynamic
    /// metadata under a filter namespace, or a value inside it.
    DynamicMetadata {
        /// The filter namespace.
        namespace: String,
        /// The path into its Struct (empty: the whole Struct).
        path: Vec<String>,
        /// `:Z`: at most Z characters.
        max_length: Option<usize>,
    },
    /// `%FILTER_STATE(KEY)%`: filter state set by plugins, as a JSON string
    /// (`KEY:PLAIN`: as it is).
    FilterState {
        /// The key (`wasm.<name>` for `proxy_set_property` values).
        key: String,
        /// `PLAIN`: the value as it is, not quoted.
        plain: bool,
        /// `:Z`: at most Z characters.
        max_length: Option<usize>,
    },
    /// `%REQ(X?Y):Z%`: request header X, else Y, at most Z characters.
    Request(HeaderOperand),
    /// `%RESP(X?Y):Z%`: response header.
    Response(HeaderOperand),
    /// `%PROTOCOL%`: `HTTP/1.1`, ….
    Protocol,
    /// `%RESPONSE_CODE%`: the status sent, 0 when none was.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`: Envoy's short codes (`UF`, `UT`, `UH`, `NR`, `DC`), `-` for none.
    ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`: why the response is what it is, in
    /// Envoy's words (`via_upstream`, `route_not_found`, ...).
    ResponseCodeDetails,
    /// `%BYTES_RECEIVED%`: request body bytes.
    BytesReceived,
    /// `%BYTES_SENT%`: response body bytes.
    BytesSent,
    /// `%DURATION%`: milliseconds from the request's start to the response's end.
    Duration,
    /// `%UPSTREAM_HOST%`: the upstream's address.
    UpstreamHost,
    /// `%UPSTREAM_CLUSTER%`: the cluster routed to.
    UpstreamCluster,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client's address and port.
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`.
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the address the client connected to.
    DownstreamLocalAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`.
    DownstreamLocalAddressWithoutPort,
}

/// The operand of `%REQ(...)%` and `%RESP(...)%`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderOperand {
    /// The header, lower-case (`:path`, `user-agent`, …).
    pub name: String,
    /// The header used when `name` is absent.
    pub alternative: Option<String>,
    /// The most characters shown.
    pub max_length: Option<usize>,
}

/// `server_header_transformation`, as Envoy's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerHeaderTransformation {
    /// `OVERWRITE` (the default): `server` is always `server_name`.
    #[default]
    Overwrite,
    /// `APPEND_IF_ABSENT`: `server_name` only when the response has none.
    AppendIfAbsent,
    /// `PASS_THROUGH`: the response's own `server`, or none.
    PassThrough,
}

/// `route_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// `name`.
    pub name: String,
    /// `virtual_hosts`, matched by domain.
    pub virtual_hosts: Vec<VirtualHost>,
    /// `request_headers_to_add` / `_remove`, `response_headers_to_add` / `_remove`.
    pub headers: HeaderMutations,
}

/// Headers a route, virtual host or route configuration adds and removes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderMutations {
    /// `request_headers_to_add`, in order.
    pub request_add: Vec<HeaderToAdd>,
    /// `request_headers_to_remove`, lower case.
    pub request_remove: Vec<String>,
    /// `response_headers_to_add`, in order.
    pub response_add: Vec<HeaderToAdd>,
    /// `response_headers_to_remove`, lower case.
    pub response_remove: Vec<String>,
}

impl HeaderMutations {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// `HeaderValueOption`: a header to add, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderToAdd {
    /// The name, lower case.
    pub name: String,
    /// The value.
    pub value: String,
    /// `append_action` (or the older `append`).
    pub action: AppendAction,
    /// `keep_empty_value`: an empty value is added (else skipped).
    pub keep_empty_value: bool,
}

/// `HeaderValueOption.HeaderAppendAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    /// `APPEND_IF_EXISTS_OR_ADD` (the default): another value.
    AppendIfExistsOrAdd,
    /// `ADD_IF_ABSENT`: only when the header is not there.
    AddIfAbsent,
    /// `OVERWRITE_IF_EXISTS_OR_ADD`: replaces any value.
    OverwriteIfExistsOrAdd,
    /// `OVERWRITE_IF_EXISTS`: replaces, only when there.
    OverwriteIfExists,
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
    /// `metadata`.
    pub metadata: Metadata,
    /// Its header additions and removals.
    pub headers: HeaderMutations,
}

/// A route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `name`.
    pub name: String,
    /// `metadata`.
    pub metadata: Metadata,
    /// What requests it takes.
    pub matcher: PathMatch,
    /// Whether path matching is case sensitive (default true).
    pub case_sensitive: bool,
    /// `match.headers`: every one must match.
    pub headers: Vec<HeaderMatcher>,
    /// `match.query_parameters`: every one must match.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// What it does with them.
    pub action: RouteAction,
    /// Its header additions and removals.
    pub mutations: HeaderMutations,
}

/// How a route matches the path.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    /// `prefix`: the path starts with it.
    Prefix(String),
    /// `path`: the path (without query) equals it.
    Exact(String),
    /// `safe_regex`: the path (without query) matches it whole.
    Regex(Pattern),
    /// `path_separated_prefix`: the path is the prefix, or the prefix then `/` (or `?`).
    SeparatedPrefix(String),
}

/// `QueryParameterMatcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryParameterMatcher {
    /// `name`.
    pub name: String,
    /// `string_match` (the value), or `None` for `present_match`.
    pub value: Option<HeaderTest>,
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
    /// `route`: proxy to an upstream cluster.
    Forward(Box<Forward>),
    /// `redirect`: answer with a 3xx and a `location`.
    Redirect(Redirect),
}

/// A `route` action: where requests go, and what changes on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// Which cluster.
    pub target: ClusterTarget,
    /// `timeout` (default 15 s; zero disables it).
    pub timeout: Option<Duration>,
    /// `idle_timeout`: the stream idle timeout of requests on this route,
    /// over the connection manager's (`Some(None)`: `0s`, disabled).
    pub idle_timeout: Option<Option<Duration>>,
    /// `prefix_rewrite`: replaces the matched prefix (or exact path).
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: the pattern's matches in the path (not the query)
    /// replaced by the substitution (`\1` for a group).
    pub regex_rewrite: Option<(Pattern, String)>,
    /// `host_rewrite_literal`: the `:authority` sent upstream.
    pub host_rewrite: Option<String>,
    /// `auto_host_rewrite`: the endpoint's address as `:authority`.
    pub auto_host_rewrite: bool,
    /// `retry_policy`.
    pub retry: Option<RetryPolicy>,
    /// `upgrade_configs`: the route's own say on upgrades, over the
    /// connection manager's.
    pub upgrades: Vec<Upgrade>,
}

impl Forward {
    /// A forward to `cluster` with nothing else to it.
    pub fn to(cluster: impl Into<String>, timeout: Option<Duration>) -> Forward {
        Forward {
            target: ClusterTarget::Named(cluster.into()),
            timeout,
            idle_timeout: None,
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
            auto_host_rewrite: false,
            retry: None,
            upgrades: Vec::new(),
        }
    }

    /// The cluster, when the request goes there as it came (no rewrite,
    /// no retry, a named cluster): what the connection manager's fast path takes.
    pub fn plain_cluster(&self) -> Option<&str> {
        let plain = self.prefix_rewrite.is_none()
            && self.regex_rewrite.is_none()
            && self.host_rewrite.is_none()
            && !self.auto_host_rewrite
            && self.retry.is_none()
            && self.idle_timeout.is_none()
            && self.upgrades.is_empty();
        match &self.target {
            ClusterTarget::Named(name) if plain => Some(name),
            _ => None,
        }
    }
}

/// Where a route sends a request.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterTarget {
    /// `cluster`.
    Named(String),
    /// `weighted_clusters`: each cluster and its weight.
    Weighted(Vec<(String, u32)>),
    /// `cluster_header`: the cluster a request header names.
    Header(String),
}

/// `RetryPolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// `retry_on`: `5xx`, `gateway-error`, `connect-failure`, `reset`,
    /// `retriable-4xx`, `retriable-status-codes`, `refused-stream`.
    pub retry_on: Vec<String>,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    /// `per_try_timeout` (default: the route's timeout).
    pub per_try_timeout: Option<Duration>,
    /// `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
}

/// `RedirectAction`.
#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    /// `scheme_redirect`, or `https` for `https_redirect`.
    pub scheme: Option<String>,
    /// `host_redirect`.
    pub host: Option<String>,
    /// `port_redirect`.
    pub port: Option<u16>,
    /// `path_redirect`: the whole path (a `?` in it replaces the query).
    pub path: Option<String>,
    /// `prefix_rewrite`: the matched prefix replaced.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`.
    pub regex_rewrite: Option<(Pattern, String)>,
    /// `response_code`: 301 (default), 302, 303, 307 or 308.
    pub status: u16,
    /// `strip_query`.
    pub strip_query: bool,
}

/// An HTTP filter before the router.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilter {
    /// `envoy.filters.http.wasm`.
    Wasm(Box<PluginConfig>),
    /// `envoy.filters.http.header_to_metadata`.
    HeaderToMetadata(HeaderToMetadata),
    /// `envoy.filters.http.compressor`.
    Compressor(Compressor),
    /// `envoy.filters.http.decompressor`.
    Decompressor(Decompressor),
}

/// A content coding the compression filters speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// The token in `content-encoding` and `accept-encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The library's part of stat names, as Envoy's.
    pub fn stat_prefix(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "brotli",
            Encoding::Zstd => "zstd",
        }
    }
}

/// How a compressor library encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    /// The coding.
    pub encoding: Encoding,
    /// gzip `compression_level` (1–9), brotli `quality` (0–11), zstd
    /// `compression_level` (1–22).
    pub level: i32,
    /// brotli `window_bits` (10–24); unused by the others.
    pub window_bits: u32,
    /// zstd `enable_checksum`.
    pub checksum: bool,
}

/// `envoy.filters.http.compressor`.
#[derive(Clone, Debug, PartialEq)]
pub struct Compressor {
    /// `compressor_library.name`: part of the filter's stat names.
    pub library_name: String,
    /// The library.
    pub encoder: EncoderSettings,
    /// Response compression (on unless disabled).
    pub response: Option<CompressDirection>,
    /// Request compression (off unless `request_direction_config` is given).
    pub request: Option<CompressDirection>,
    /// `disable_on_etag_header`.
    pub disable_on_etag: bool,
    /// `weaken_etag_on_compress`: a strong ETag becomes weak instead of removed.
    pub weaken_etag: bool,
    /// `remove_accept_encoding_header`.
    pub remove_accept_encoding: bool,
    /// `uncompressible_response_codes`.
    pub uncompressible_codes: Vec<u16>,
    /// `choose_first`: wins ties between compressors of the chain.
    pub choose_first: bool,
}

/// `common_config` of a direction that compresses.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressDirection {
    /// `min_content_length` (default 30).
    pub min_content_length: u32,
    /// `content_type`, lower case (Envoy's list when none is given).
    pub content_types: Vec<String>,
}

/// `envoy.filters.http.decompressor`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decompressor {
    /// `decompressor_library.name`: part of the filter's stat names.
    pub library_name: String,
    /// The coding it decodes.
    pub encoding: Encoding,
    /// Request bodies are decoded.
    pub request: bool,
    /// Response bodies are decoded.
    pub response: bool,
    /// `ignore_no_transform_header` of (request, response).
    pub ignore_no_transform: (bool, bool),
    /// `advertise_accept_encoding`: the coding is added to the request's
    /// `accept-encoding` (when responses are decoded).
    pub advertise_accept_encoding: bool,
}

/// `header_to_metadata`'s rules.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderToMetadata {
    /// `request_rules`, on the request headers.
    pub request_rules: Vec<MetadataRule>,
    /// `response_rules`, on the response headers.
    pub response_rules: Vec<MetadataRule>,
}

/// A rule: a header or cookie, what to set when it is there or not, and
/// whether to remove it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataRule {
    /// `header` (lower case) or `cookie`.
    pub source: MetadataSource,
    /// `on_header_present`.
    pub on_present: Option<MetadataValue>,
    /// `on_header_missing` (its `value` is required).
    pub on_missing: Option<MetadataValue>,
    /// `remove`: the header goes once read.
    pub remove: bool,
}

/// `KeyValuePair`: where a value goes in the dynamic metadata, and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataValue {
    /// `metadata_namespace` (default the filter's name).
    pub namespace: String,
    /// `key`.
    pub key: String,
    /// `value`: set instead of the header's.
    pub value: Option<String>,
    /// `regex_value_rewrite` of the header's value.
    pub rewrite: Option<(Pattern, String)>,
    /// `type`.
    pub kind: MetadataKind,
    /// `encode: BASE64`: the value is decoded before it is stored.
    pub base64: bool,
}

/// Where a rule reads its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    /// `header`: a header, lower case.
    Header(String),
    /// `cookie`: a cookie of the `cookie` header, by name.
    Cookie(String),
}

/// `ValueType` of a metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataKind {
    /// `STRING`.
    String,
    /// `NUMBER`: a double (a value that does not parse is not set).
    Number,
    /// `PROTOBUF_VALUE`: a serialized `google.protobuf.Value` (one that
    /// does not parse is not set).
    ProtobufValue,
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
    /// `failure_policy` (or the older `fail_open`); `None` when the
    /// configuration names neither.
    pub failure_policy: Option<FailurePolicy>,
    /// `allow_on_headers_stop_iteration`.
    pub allow_on_headers_stop_iteration: bool,
    /// Where this plugin is in the file, for messages.
    pub config_path: String,
}

/// What a plugin failure means (`failure_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// `FAIL_CLOSED`.
    FailClosed,
    /// `FAIL_OPEN`, or `fail_open: true`.
    FailOpen,
    /// `FAIL_RELOAD`, with `reload_config.backoff`.
    FailReload {
        /// `base_interval` (default 1 s).
        base_interval: Duration,
        /// `max_interval` (default 10 × the base).
        max_interval: Duration,
    },
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
    /// `capability_restriction_config.allowed_capabilities`: the host
    /// functions (`proxy_*`, WASI) and callbacks the module may use. Empty:
    /// no restriction, as in Envoy.
    pub allowed_capabilities: Vec<String>,
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
    /// Each endpoint's `metadata`, in the same order.
    pub endpoint_metadata: Vec<Metadata>,
    /// Each endpoint's host name (`endpoint.hostname`, else the DNS name of
    /// a DNS cluster's endpoint), for `auto_host_rewrite`.
    pub endpoint_hostnames: Vec<Option<String>>,
    /// `metadata`.
    pub metadata: Metadata,
    /// HTTP/2 to the endpoints, from `HttpProtocolOptions`'
    /// `explicit_http_config.http2_protocol_options` (or the deprecated
    /// `http2_protocol_options`); HTTP/1.1 otherwise.
    pub http2: bool,
    /// `transport_socket`: TLS to the endpoints.
    pub tls: Option<TlsContext>,
    /// `auto_config`: HTTP/2 or HTTP/1.1 as the endpoint's ALPN says (needs TLS).
    pub auto_http: bool,
    /// `lb_policy`.
    pub lb_policy: LbPolicy,
    /// `common_lb_config.healthy_panic_threshold`, a percentage (default
    /// 50): below it, every endpoint takes traffic, healthy or not.
    pub panic_threshold: f64,
    /// `health_checks` (one).
    pub health_check: Option<HealthCheck>,
    /// `outlier_detection`.
    pub outlier_detection: Option<OutlierDetection>,
    /// `circuit_breakers` (the `DEFAULT` priority's).
    pub circuit_breakers: CircuitBreakers,
}

/// A cluster's circuit breakers: past them, requests fail at once (503,
/// `UO`) instead of piling up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// `max_connections`: HTTP/1.1 connections busy at once (default 1024).
    pub max_connections: u32,
    /// `max_pending_requests`: requests waiting for one of them (default 1024).
    pub max_pending_requests: u32,
    /// `max_requests`: requests in flight (default 1024).
    pub max_requests: u32,
    /// `max_retries`: retries in flight (default 3).
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3 }
    }
}

/// `lb_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (default).
    RoundRobin,
    /// `LEAST_REQUEST`: of `choice_count` endpoints picked at random, the
    /// one with the fewest requests in flight.
    LeastRequest {
        /// `least_request_lb_config.choice_count` (default 2).
        choice_count: u32,
    },
    /// `RANDOM`.
    Random,
}

/// An active health check of every endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    /// `timeout` of one check.
    pub timeout: Duration,
    /// `interval` between checks of an endpoint.
    pub interval: Duration,
    /// `unhealthy_threshold`: failed checks in a row that mark it unhealthy.
    pub unhealthy_threshold: u32,
    /// `healthy_threshold`: passed checks in a row that mark it healthy
    /// again (its first check passing is enough at start).
    pub healthy_threshold: u32,
    /// What a check does.
    pub kind: HealthCheckKind,
}

/// `http_health_check` or `tcp_health_check`.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthCheckKind {
    /// A GET of `path` (with `host` as its host, else the cluster's name);
    /// a status in one of `expected` (`[start, end)`, default 200) passes.
    Http {
        /// `path`.
        path: String,
        /// `host`.
        host: Option<String>,
        /// `expected_statuses`.
        expected: Vec<(u16, u16)>,
    },
    /// A TCP connect passes.
    Tcp,
}

/// `outlier_detection`: ejection on consecutive 5xx.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (default 5).
    pub consecutive_5xx: u32,
    /// `interval` (default 10 s): how often ejections are reviewed.
    pub interval: Duration,
    /// `base_ejection_time` (default 30 s), times the number of ejections.
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (default 300 s).
    pub max_ejection_time: Duration,
    /// `max_ejection_percent` (default 10; one endpoint may always be ejected).
    pub max_ejection_percent: u32,
    /// `enforcing_consecutive_5xx` (default 100): the chance, in percent,
    /// that a detected outlier is ejected.
    pub enforcing_consecutive_5xx: u32,
}

/// How a cluster finds its endpoints (`type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// `STATIC`: IP addresses.
    Static,
    /// `STRICT_DNS` / `LOGICAL_DNS`: names resolved when connecting.
    Dns,
}
