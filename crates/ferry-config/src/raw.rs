//! Serde mirrors of the Envoy v3 messages ferry reads, field for field.
//!
//! Every struct denies unknown fields, so a field ferry does not know is an
//! error that names its path. Fields that change nothing for ferry (stat
//! prefixes, runtime names, access log paths of the admin) are listed as
//! `Ignored` so they are accepted. `Any` fields stay YAML values and are
//! decoded by `@type` in [`crate::convert`].

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_norway::Value;

/// A field accepted and ignored.
pub(crate) type Ignored = Option<IgnoredAny>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bootstrap {
    #[serde(default)]
    pub node: Option<Node>,
    #[serde(default)]
    pub static_resources: StaticResources,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub bootstrap_extensions: Vec<TypedExtension>,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub layered_runtime: Ignored,
    #[serde(default)]
    pub stats_flush_interval: Ignored,
    #[serde(default)]
    pub stats_config: Option<StatsConfig>,
    #[serde(default)]
    pub watchdog: Ignored,
    #[serde(default)]
    pub watchdogs: Ignored,
    #[serde(default)]
    pub overload_manager: Option<OverloadManager>,
}

/// `envoy.config.overload.v3.OverloadManager`: ferry reads its downstream
/// connection limit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverloadManager {
    #[serde(default)]
    pub refresh_interval: Ignored,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub resource_monitors: Vec<TypedExtension>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub actions: Vec<Value>,
}

/// `DownstreamConnectionsConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DownstreamConnectionsConfig {
    pub max_active_downstream_connections: u64,
}

/// `envoy.config.metrics.v3.StatsConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsConfig {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub stats_tags: Vec<TagSpecifier>,
    /// Envoy's default extractors name tags in Envoy's own stat names;
    /// ferry's own stats carry their tags already, so this changes nothing.
    #[serde(default)]
    pub use_all_default_tags: Option<bool>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub histogram_bucket_settings: Vec<HistogramBucketSettings>,
}

/// `envoy.config.metrics.v3.HistogramBucketSettings`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistogramBucketSettings {
    #[serde(rename = "match")]
    pub matcher: RawStringMatcher,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub buckets: Vec<f64>,
    /// The size of Envoy's internal histogram (circllhist): nothing to size here.
    #[serde(default)]
    pub bins: Ignored,
}

/// `envoy.config.metrics.v3.TagSpecifier`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagSpecifier {
    pub tag_name: String,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub fixed_value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Node {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub locality: Option<Locality>,
    #[serde(default)]
    pub user_agent_name: Option<String>,
}

/// `envoy.config.core.v3.Locality`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Locality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub sub_zone: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaticResources {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub listeners: Vec<Listener>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub clusters: Vec<Cluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub address: Address,
    #[serde(default)]
    pub access_log_path: Ignored,
    #[serde(default)]
    pub access_log: Ignored,
    #[serde(default)]
    pub profile_path: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Address {
    pub socket_address: SocketAddress,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SocketAddress {
    pub address: String,
    pub port_value: u16,
    #[serde(default, deserialize_with = "crate::enums::socket_protocol")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub ipv4_compat: Ignored,
}

/// A named extension with its typed configuration (listener filters,
/// HTTP filters, bootstrap extensions).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TypedExtension {
    pub name: String,
    #[serde(default)]
    pub typed_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    #[serde(default)]
    pub name: String,
    pub address: Address,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub filter_chains: Vec<FilterChain>,
    #[serde(default)]
    pub default_filter_chain: Option<FilterChain>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub listener_filters: Vec<TypedExtension>,
    #[serde(default)]
    pub listener_filters_timeout: Ignored,
    #[serde(default)]
    pub continue_on_listener_filters_timeout: Ignored,
    #[serde(default)]
    pub stat_prefix: Ignored,
    #[serde(default, deserialize_with = "crate::enums::traffic_direction")]
    pub traffic_direction: Option<i64>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub per_connection_buffer_limit_bytes: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterChain {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub filters: Vec<TypedExtension>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub transport_socket: Option<RawTransportSocket>,
    #[serde(default)]
    pub filter_chain_match: Option<FilterChainMatch>,
}

/// `FilterChainMatch`: the fields ferry matches on, and those it refuses
/// (named, so the error says which).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterChainMatch {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub server_names: Vec<String>,
    #[serde(default)]
    pub transport_protocol: Option<String>,
    #[serde(default)]
    pub application_protocols: Option<Value>,
    #[serde(default)]
    pub destination_port: Option<Value>,
    #[serde(default)]
    pub prefix_ranges: Option<Value>,
    #[serde(default)]
    pub direct_source_prefix_ranges: Option<Value>,
    #[serde(default)]
    pub source_type: Option<Value>,
    #[serde(default)]
    pub source_prefix_ranges: Option<Value>,
    #[serde(default)]
    pub source_ports: Option<Value>,
    #[serde(default)]
    pub address_suffix: Option<Value>,
    #[serde(default)]
    pub suffix_len: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpConnectionManager {
    #[serde(default)]
    pub stat_prefix: Option<String>,
    #[serde(default, deserialize_with = "crate::enums::codec_type")]
    pub codec_type: Option<String>,
    #[serde(default)]
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub route_config: Value,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub http_filters: Vec<TypedExtension>,
    #[serde(default)]
    pub generate_request_id: Option<bool>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default, deserialize_with = "crate::enums::server_header_transformation")]
    pub server_header_transformation: Option<String>,
    #[serde(default)]
    pub use_remote_address: Option<bool>,
    #[serde(default)]
    pub xff_num_trusted_hops: Option<u32>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub access_log: Vec<AccessLog>,
    #[serde(default)]
    pub request_headers_timeout: Option<String>,
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub max_request_headers_kb: Option<u32>,
    #[serde(default)]
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    #[serde(default)]
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    #[serde(default)]
    pub scheme_header_transformation: Option<SchemeHeaderTransformation>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub upgrade_configs: Vec<UpgradeConfig>,
}

/// `HttpConnectionManager.UpgradeConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeConfig {
    pub upgrade_type: String,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub filters: Vec<TypedExtension>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `envoy.config.core.v3.SchemeHeaderTransformation`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SchemeHeaderTransformation {
    #[serde(default)]
    pub scheme_to_overwrite: Option<String>,
    #[serde(default)]
    pub match_upstream: Option<bool>,
}

/// `envoy.config.core.v3.HttpProtocolOptions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommonHttpProtocolOptions {
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub max_connection_duration: Option<String>,
    #[serde(default)]
    pub max_headers_count: Option<u32>,
    #[serde(default, deserialize_with = "crate::enums::headers_with_underscores_action")]
    pub headers_with_underscores_action: Option<String>,
}

/// `envoy.config.core.v3.Http1ProtocolOptions`, the fields ferry takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http1ProtocolOptions {
    #[serde(default)]
    pub accept_http_10: Option<bool>,
}

/// `envoy.config.core.v3.Http2ProtocolOptions`, the fields ferry applies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http2ProtocolOptions {
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    #[serde(default)]
    pub initial_stream_window_size: Option<u32>,
    #[serde(default)]
    pub initial_connection_window_size: Option<u32>,
}

/// `envoy.config.accesslog.v3.AccessLog`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLog {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub typed_config: Option<Value>,
    #[serde(default)]
    pub filter: Option<Value>,
}

/// `FileAccessLog`, `StdoutAccessLog` and `StderrAccessLog` in one: the
/// conversion checks which fields each may have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamAccessLog {
    #[serde(default)]
    pub path: Option<String>,
    /// `FileAccessLog.format`, deprecated: a text format.
    #[serde(default)]
    pub format: Option<String>,
    /// `FileAccessLog.json_format`, deprecated.
    #[serde(default)]
    pub json_format: Option<serde_norway::Mapping>,
    #[serde(default)]
    pub log_format: Option<SubstitutionFormatString>,
}

/// `envoy.config.core.v3.SubstitutionFormatString`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubstitutionFormatString {
    #[serde(default)]
    pub text_format: Option<String>,
    #[serde(default)]
    pub text_format_source: Option<DataSource>,
    #[serde(default)]
    pub json_format: Option<serde_norway::Mapping>,
    #[serde(default)]
    pub omit_empty_values: Option<bool>,
    #[serde(default)]
    pub content_type: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataSource {
    #[serde(default)]
    pub inline_string: Option<String>,
    #[serde(default)]
    pub inline_bytes: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    pub name: String,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "crate::enums::discovery_type")]
    pub discovery_type: Option<String>,
    #[serde(default, deserialize_with = "crate::enums::lb_policy")]
    pub lb_policy: Option<String>,
    #[serde(default)]
    pub load_assignment: Option<LoadAssignment>,
    #[serde(default)]
    pub dns_lookup_family: Ignored,
    /// Deprecated form of `HttpProtocolOptions.explicit_http_config.http2_protocol_options`.
    #[serde(default)]
    pub http2_protocol_options: Option<Value>,
    #[serde(default)]
    pub typed_extension_protocol_options: Option<serde_norway::Mapping>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub transport_socket: Option<RawTransportSocket>,
    #[serde(default)]
    pub least_request_lb_config: Option<Value>,
    #[serde(default)]
    pub common_lb_config: Option<Value>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub health_checks: Vec<Value>,
    #[serde(default)]
    pub outlier_detection: Option<Value>,
    #[serde(default)]
    pub circuit_breakers: Option<Value>,
    #[serde(default)]
    pub per_connection_buffer_limit_bytes: Ignored,
}

/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpProtocolOptions {
    #[serde(default)]
    pub explicit_http_config: Option<ExplicitHttpConfig>,
    #[serde(default)]
    pub auto_config: Option<Value>,
    #[serde(default)]
    pub use_downstream_protocol_config: Option<Value>,
    #[serde(default)]
    pub common_http_protocol_options: Ignored,
    #[serde(default)]
    pub upstream_http_protocol_options: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExplicitHttpConfig {
    #[serde(default)]
    pub http_protocol_options: Option<Value>,
    #[serde(default)]
    pub http2_protocol_options: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadAssignment {
    #[serde(default)]
    pub cluster_name: Ignored,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub endpoints: Vec<LocalityEndpoints>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalityEndpoints {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub lb_endpoints: Vec<LbEndpoint>,
    #[serde(default)]
    pub locality: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LbEndpoint {
    pub endpoint: Endpoint,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub address: Address,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TcpProxy {
    #[serde(default)]
    pub stat_prefix: Ignored,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<Value>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub access_log: Vec<AccessLog>,
    #[serde(default)]
    pub max_connect_attempts: Ignored,
}

/// `envoy.extensions.wasm.v3.WasmService`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WasmService {
    pub config: PluginConfig,
    #[serde(default)]
    pub singleton: bool,
}

/// `envoy.extensions.filters.{http,network}.wasm.v3.Wasm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WasmFilter {
    pub config: PluginConfig,
}

/// `envoy.extensions.wasm.v3.PluginConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub root_id: String,
    pub vm_config: VmConfig,
    #[serde(default)]
    pub configuration: Option<Value>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub failure_policy: Option<String>,
    #[serde(default)]
    pub reload_config: Option<ReloadConfig>,
    #[serde(default)]
    pub allow_on_headers_stop_iteration: Option<bool>,
}

/// `envoy.extensions.wasm.v3.ReloadConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReloadConfig {
    #[serde(default)]
    pub backoff: Option<BackoffStrategy>,
}

/// `envoy.config.core.v3.BackoffStrategy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackoffStrategy {
    pub base_interval: String,
    #[serde(default)]
    pub max_interval: Option<String>,
}

/// ferry's `ferry.config.v1.WasmRuntime`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WasmRuntime {
    #[serde(default)]
    pub callback_deadline: Option<String>,
    #[serde(default)]
    pub start_deadline: Option<String>,
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub plugins: Vec<PluginLimits>,
    #[serde(default)]
    pub default_failure_policy: Option<String>,
    #[serde(default)]
    pub hold_failed: Option<HoldFailed>,
    #[serde(default)]
    pub shared_queue_defaults: Option<QueueBounds>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub shared_queues: Vec<QueueRule>,
    #[serde(default)]
    pub compilation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginLimits {
    pub name: String,
    #[serde(default)]
    pub callback_deadline: Option<String>,
    #[serde(default)]
    pub start_deadline: Option<String>,
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldFailed {
    pub failures: u32,
    pub window: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueBounds {
    #[serde(default)]
    pub max_items: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub overflow: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueRule {
    pub vm_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub max_items: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub overflow: Option<String>,
}

/// `envoy.extensions.wasm.v3.VmConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VmConfig {
    #[serde(default)]
    pub vm_id: String,
    #[serde(default)]
    pub runtime: String,
    pub code: AsyncDataSource,
    #[serde(default)]
    pub configuration: Option<Value>,
    #[serde(default)]
    pub allow_precompiled: Ignored,
    #[serde(default)]
    pub nack_on_code_cache_miss: Ignored,
    #[serde(default)]
    pub environment_variables: Option<EnvironmentVariables>,
    #[serde(default)]
    pub capability_restriction_config: Option<CapabilityRestrictionConfig>,
}

/// `envoy.extensions.wasm.v3.CapabilityRestrictionConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CapabilityRestrictionConfig {
    /// Capability names, each with a `SanitizationConfig` (which has no fields).
    #[serde(default)]
    pub allowed_capabilities: std::collections::BTreeMap<String, SanitizationConfig>,
}

/// `envoy.extensions.wasm.v3.SanitizationConfig`: empty.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SanitizationConfig {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AsyncDataSource {
    #[serde(default)]
    pub local: Option<DataSource>,
    #[serde(default)]
    pub remote: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentVariables {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    pub host_env_keys: Vec<String>,
    #[serde(default)]
    pub key_values: indexmap_like::OrderedMap,
}

/// A YAML mapping of strings kept in document order.
pub(crate) mod indexmap_like {
    use serde::{Deserialize, Deserializer};

    #[derive(Default)]
    pub(crate) struct OrderedMap(pub Vec<(String, String)>);

    impl<'de> Deserialize<'de> for OrderedMap {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let map = serde_norway::Mapping::deserialize(d)?;
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                    return Err(serde::de::Error::custom("key_values must map strings to strings"));
                };
                out.push((k.to_owned(), v.to_owned()));
            }
            Ok(OrderedMap(out))
        }
    }
}

/// `envoy.extensions.filters.http.router.v3.Router`: no field changes anything yet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Router {
    #[serde(default)]
    pub suppress_envoy_headers: Option<bool>,
}

/// `envoy.type.matcher.v3.StringMatcher`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStringMatcher {
    #[serde(default)]
    pub(crate) exact: Option<String>,
    #[serde(default)]
    pub(crate) prefix: Option<String>,
    #[serde(default)]
    pub(crate) suffix: Option<String>,
    #[serde(default)]
    pub(crate) contains: Option<String>,
    #[serde(default)]
    pub(crate) safe_regex: Option<RawRegex>,
    #[serde(default)]
    pub(crate) ignore_case: bool,
}

/// `envoy.type.matcher.v3.RegexMatcher`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegex {
    pub(crate) regex: String,
    #[serde(default)]
    pub(crate) google_re2: Ignored,
}

/// `envoy.config.core.v3.TransportSocket`: its `typed_config` is read by `tls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTransportSocket {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) typed_config: Option<Value>,
}
