//! From the serde mirror ([`crate::raw`]) to the model ([`crate::model`]):
//! `@type` dispatch, defaults, and every check that needs more than one field.
//! Each error carries the field path it is about.

use std::time::Duration;

use crate::ConfigError;
use crate::decode::{decode, duration, err, join, unpack_any};
use crate::model::*;
use crate::plugin_config::{failure_policy_named, plugin_config};
use crate::raw;

const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const HTTP_WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const WASM_SERVICE: &str = "envoy.extensions.wasm.v3.WasmService";
/// ferry's own bootstrap extension (docs/operations.md).
const WASM_RUNTIME: &str = "ferry.config.v1.WasmRuntime";
const QUEUE_BRIDGE: &str = "ferry.config.v1.QueueBridge";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HEADER_TO_METADATA: &str = "envoy.extensions.filters.http.header_to_metadata.v3.Config";
const COMPRESSOR: &str = "envoy.extensions.filters.http.compressor.v3.Compressor";
const DECOMPRESSOR: &str = "envoy.extensions.filters.http.decompressor.v3.Decompressor";

/// Names that mean "router" without a typed config.
const ROUTER_NAMES: [&str; 2] = ["envoy.filters.http.router", "envoy.router"];

/// Converts the whole file.
pub(crate) fn bootstrap(raw: raw::Bootstrap) -> Result<Bootstrap, ConfigError> {
    let node = match raw.node {
        Some(n) => Node {
            id: n.id,
            cluster: n.cluster,
            metadata: match n.metadata {
                Some(value) => crate::metadata::structure(value, "node.metadata")?,
                None => Default::default(),
            },
            locality: n.locality.map(|l| (l.region, l.zone, l.sub_zone)).unwrap_or_default(),
            user_agent_name: n.user_agent_name,
        },
        None => Node::default(),
    };
    let admin = raw.admin.map(|a| socket_address(a.address, "admin.address")).transpose()?;
    let clusters = raw
        .static_resources
        .clusters
        .into_iter()
        .enumerate()
        .map(|(i, c)| cluster(c, &format!("static_resources.clusters[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in clusters.iter().enumerate() {
        if clusters[..i].iter().any(|other| other.name == c.name) {
            return Err(err(
                format!("static_resources.clusters[{i}].name"),
                format!("duplicate cluster name {:?}", c.name),
            ));
        }
    }
    let listeners = raw
        .static_resources
        .listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| listener(l, &format!("static_resources.listeners[{i}]"), &clusters))
        .collect::<Result<Vec<_>, _>>()?;
    // Envoy refuses a second listener of the same name (an unnamed one gets a
    // generated name, so only given names can clash).
    for (i, l) in listeners.iter().enumerate() {
        if !l.name.is_empty() && listeners[..i].iter().any(|other| other.name == l.name) {
            return Err(err(
                format!("static_resources.listeners[{i}].name"),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
    }
    let mut wasm_services = Vec::new();
    let mut wasm_runtime: Option<WasmRuntime> = None;
    let mut queue_bridge = None;
    for (i, extension) in raw.bootstrap_extensions.into_iter().enumerate() {
        let path = format!("bootstrap_extensions[{i}]");
        match bootstrap_extension(extension, &path)? {
            Extension::Service(service) => wasm_services.push(service),
            Extension::Runtime(_) if wasm_runtime.is_some() => {
                return Err(err(path, format!("a second {WASM_RUNTIME}; give it once")));
            }
            Extension::Runtime(runtime) => wasm_runtime = Some(runtime),
            Extension::Bridge(_) if queue_bridge.is_some() => {
                return Err(err(path, format!("a second {QUEUE_BRIDGE}; give it once")));
            }
            Extension::Bridge(bridge) => queue_bridge = Some(bridge),
        }
    }
    let wasm_runtime = wasm_runtime.unwrap_or_default();
    let (stats_tags, histogram_buckets) = match raw.stats_config {
        Some(mut config) => {
            let buckets = histogram_buckets(std::mem::take(&mut config.histogram_bucket_settings))?;
            (stats_tags(config)?, buckets)
        }
        None => (Vec::new(), Vec::new()),
    };
    let max_downstream_connections = match raw.overload_manager {
        Some(manager) => overload_manager(manager)?,
        None => None,
    };
    let source = serde_json::Value::Null;
    Ok(Bootstrap {
        node,
        admin,
        listeners,
        clusters,
        wasm_services,
        wasm_runtime,
        queue_bridge,
        source,
        stats_tags,
        histogram_buckets,
        max_downstream_connections,
    })
}

/// `stats_config.histogram_bucket_settings`: a matcher and its bounds, each
/// greater than zero and given once (Envoy's rules), kept in ascending order.
fn histogram_buckets(settings: Vec<raw::HistogramBucketSettings>) -> Result<Vec<HistogramBuckets>, ConfigError> {
    let mut all = Vec::new();
    for (i, setting) in settings.into_iter().enumerate() {
        let path = format!("stats_config.histogram_bucket_settings[{i}]");
        let _ = setting.bins;
        let matcher = crate::matchers::string_matcher(setting.matcher, &join(&path, "match"))?;
        let mut bounds = setting.buckets;
        if bounds.is_empty() {
            return Err(err(join(&path, "buckets"), "at least one bucket bound is required"));
        }
        if let Some(bad) = bounds.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
            return Err(err(join(&path, "buckets"), format!("{bad} is not a bound greater than zero")));
        }
        bounds.sort_by(f64::total_cmp);
        if bounds.windows(2).any(|w| w[0] == w[1]) {
            return Err(err(join(&path, "buckets"), "each bound may be given once"));
        }
        all.push(HistogramBuckets { matcher, bounds });
    }
    Ok(all)
}

const DOWNSTREAM_CONNECTIONS: &str =
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig";

/// `overload_manager`: its `global_downstream_max_connections` monitor.
/// Actions (load shedding by memory and the like) are not supported.
fn overload_manager(raw: raw::OverloadManager) -> Result<Option<u64>, ConfigError> {
    if !raw.actions.is_empty() {
        return Err(err("overload_manager.actions", "overload actions are not supported yet"));
    }
    let mut max = None;
    for (i, monitor) in raw.resource_monitors.into_iter().enumerate() {
        let at = format!("overload_manager.resource_monitors[{i}]");
        let typed = monitor.typed_config.ok_or_else(|| err(&at, "typed_config is required"))?;
        let any = unpack_any(typed, &join(&at, "typed_config"))?;
        if any.type_name != DOWNSTREAM_CONNECTIONS {
            return Err(err(
                join(&any.path, "@type"),
                format!("resource monitor {} is not supported; ferry reads {DOWNSTREAM_CONNECTIONS}", any.type_name),
            ));
        }
        let config: raw::DownstreamConnectionsConfig = decode(any.fields, &any.path)?;
        max = Some(config.max_active_downstream_connections);
    }
    Ok(max)
}

/// `stats_config.stats_tags`, each a regex that compiles or a fixed value.
fn stats_tags(config: raw::StatsConfig) -> Result<Vec<StatsTag>, ConfigError> {
    let _ = config.use_all_default_tags;
    let mut tags = Vec::new();
    for (i, tag) in config.stats_tags.into_iter().enumerate() {
        let path = format!("stats_config.stats_tags[{i}]");
        let value = match (tag.regex, tag.fixed_value) {
            (Some(regex), None) => {
                let compiled = regex::Regex::new(&regex).map_err(|e| err(join(&path, "regex"), e.to_string()))?;
                if compiled.captures_len() < 2 {
                    return Err(err(join(&path, "regex"), "needs a capture group: the part of the name to take out"));
                }
                TagValue::Regex(regex)
            }
            (None, Some(fixed)) => TagValue::Fixed(fixed),
            _ => return Err(err(path, "exactly one of regex or fixed_value")),
        };
        tags.push(StatsTag { name: tag.tag_name, value });
    }
    Ok(tags)
}

fn socket_address(raw: raw::Address, path: &str) -> Result<SocketAddress, ConfigError> {
    let s = raw.socket_address;
    if let Some(protocol) = s.protocol.filter(|p| p != "TCP") {
        return Err(err(join(path, "socket_address.protocol"), format!("{protocol} is not supported; only TCP")));
    }
    Ok(SocketAddress { address: s.address, port: s.port_value })
}

/// Listener filters ferry knows: the TLS inspector (ferry inspects the
/// first bytes whenever a chain matches on them, with or without it).
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const TLS_INSPECTOR_NAMES: [&str; 2] = ["envoy.filters.listener.tls_inspector", "envoy.listener.tls_inspector"];

fn listener(raw: raw::Listener, path: &str, clusters: &[Cluster]) -> Result<Listener, ConfigError> {
    let address = socket_address(raw.address, &join(path, "address"))?;
    let metadata = crate::metadata::metadata(raw.metadata, &join(path, "metadata"))?;
    for (i, filter) in raw.listener_filters.into_iter().enumerate() {
        let at = join(path, &format!("listener_filters[{i}]"));
        let known = match filter.typed_config {
            Some(typed) => unpack_any(typed, &join(&at, "typed_config"))?.type_name == TLS_INSPECTOR,
            None => TLS_INSPECTOR_NAMES.contains(&filter.name.as_str()),
        };
        if !known {
            return Err(err(
                at,
                format!("listener filter {:?} is not supported; ferry has the TLS inspector", filter.name),
            ));
        }
    }
    if raw.filter_chains.is_empty() && raw.default_filter_chain.is_none() {
        return Err(err(join(path, "filter_chains"), "expected at least one filter chain"));
    }
    let mut chains = Vec::new();
    for (i, chain) in raw.filter_chains.into_iter().enumerate() {
        chains.push(filter_chain(chain, &join(path, &format!("filter_chains[{i}]")), clusters, false)?);
    }
    if let Some(chain) = raw.default_filter_chain {
        chains.push(filter_chain(chain, &join(path, "default_filter_chain"), clusters, true)?);
    }
    // Two chains that match the same connections: Envoy refuses them too.
    for (i, chain) in chains.iter().enumerate().filter(|(_, c)| !c.is_default) {
        if chains[..i].iter().any(|other| !other.is_default && other.matcher == chain.matcher) {
            return Err(err(
                join(path, &format!("filter_chains[{i}].filter_chain_match")),
                "matches the same connections as an earlier filter chain",
            ));
        }
    }
    let buffer_limit = match raw.per_connection_buffer_limit_bytes {
        Some(0) => return Err(err(join(path, "per_connection_buffer_limit_bytes"), "must be more than 0")),
        Some(limit) => limit,
        None => 1 << 20,
    };
    Ok(Listener {
        name: raw.name,
        address,
        metadata,
        direction: raw.traffic_direction.unwrap_or(0),
        chains,
        buffer_limit,
    })
}

/// `filter_chain_match`: server names and transport protocol; other fields are an error.
fn chain_match(raw: Option<raw::FilterChainMatch>, path: &str) -> Result<ChainMatch, ConfigError> {
    let Some(raw) = raw else { return Ok(ChainMatch::default()) };
    let refused = [
        (raw.application_protocols.is_some(), "application_protocols"),
        (raw.destination_port.is_some(), "destination_port"),
        (raw.prefix_ranges.is_some(), "prefix_ranges"),
        (raw.direct_source_prefix_ranges.is_some(), "direct_source_prefix_ranges"),
        (raw.source_type.is_some(), "source_type"),
        (raw.source_prefix_ranges.is_some(), "source_prefix_ranges"),
        (raw.source_ports.is_some(), "source_ports"),
        (raw.address_suffix.is_some() || raw.suffix_len.is_some(), "address_suffix"),
    ];
    if let Some((_, field)) = refused.iter().find(|(set, _)| *set) {
        return Err(err(join(path, field), "not supported yet; ferry matches server_names and transport_protocol"));
    }
    let transport_protocol = match raw.transport_protocol.as_deref() {
        None | Some("") => None,
        Some(p @ ("tls" | "raw_buffer")) => Some(p.to_owned()),
        Some(other) => {
            return Err(err(join(path, "transport_protocol"), format!("{other:?} is not tls or raw_buffer")));
        }
    };
    let mut server_names = Vec::new();
    for (i, name) in raw.server_names.into_iter().enumerate() {
        let name = name.to_ascii_lowercase();
        let wildcard_ok = !name.contains('*') || (name.starts_with("*.") && !name[2..].contains('*'));
        if name.is_empty() || !wildcard_ok {
            return Err(err(join(path, &format!("server_names[{i}]")), "a host name, or *.suffix"));
        }
        server_names.push(name);
    }
    Ok(ChainMatch { server_names, transport_protocol })
}

fn filter_chain(
    chain: raw::FilterChain,
    path: &str,
    clusters: &[Cluster],
    is_default: bool,
) -> Result<FilterChain, ConfigError> {
    // Filter chain metadata has no attribute of its own; it is checked all the same.
    crate::metadata::metadata(chain.metadata, &join(path, "metadata"))?;
    let matcher = chain_match(chain.filter_chain_match, &join(path, "filter_chain_match"))?;
    let tls = match chain.transport_socket {
        Some(socket) => crate::tls::transport_socket(socket, &join(path, "transport_socket"), true)?,
        None => None,
    };
    let build =
        |kind| FilterChain { name: chain.name.clone(), matcher: matcher.clone(), tls: tls.clone(), kind, is_default };
    let path = join(path, "filters");
    if chain.filters.is_empty() {
        return Err(err(&path, "no network filters: the last one must be the HTTP connection manager or tcp_proxy"));
    }
    let count = chain.filters.len();
    let mut wasm_filters = Vec::new();
    for (i, filter) in chain.filters.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(typed) = filter.typed_config else {
            return Err(err(join(&at, "typed_config"), format!("missing for filter {:?}", filter.name)));
        };
        let any = unpack_any(typed, &join(&at, "typed_config"))?;
        let is_last = i + 1 == count;
        match (any.type_name.as_str(), is_last) {
            (NETWORK_WASM, false) => {
                let config: raw::WasmFilter = decode(any.fields, &any.path)?;
                wasm_filters.push(plugin_config(config.config, &join(&any.path, "config"))?);
            }
            (HCM, true) if wasm_filters.is_empty() => {
                let hcm = http_connection_manager(decode(any.fields, &any.path)?, &any.path, clusters)?;
                return Ok(build(ListenerKind::Http(Box::new(hcm))));
            }
            (HCM, true) => {
                return Err(err(
                    &at,
                    "network Wasm filters in front of the HTTP connection manager are not supported; \
                     use envoy.filters.http.wasm inside it",
                ));
            }
            (TCP_PROXY, true) => {
                let proxy = tcp_proxy(decode(any.fields, &any.path)?, &any.path, clusters, wasm_filters)?;
                return Ok(build(ListenerKind::Tcp(proxy)));
            }
            (NETWORK_WASM, true) => {
                return Err(err(at, "a network Wasm filter cannot be last: end the chain with tcp_proxy"));
            }
            (HCM | TCP_PROXY, false) => {
                return Err(err(at, format!("{} must be the last network filter", filter.name)));
            }
            (other, _) => {
                return Err(err(
                    join(&any.path, "@type"),
                    format!(
                        "network filter {other} ({:?}) is not supported; ferry runs {HCM}, {TCP_PROXY} and {NETWORK_WASM}",
                        filter.name
                    ),
                ));
            }
        }
    }
    unreachable!("the last filter always returns")
}

fn tcp_proxy(
    raw: raw::TcpProxy,
    path: &str,
    clusters: &[Cluster],
    filters: Vec<PluginConfig>,
) -> Result<TcpProxy, ConfigError> {
    if raw.weighted_clusters.is_some() {
        return Err(err(join(path, "weighted_clusters"), "not supported; name one cluster"));
    }
    let Some(cluster) = raw.cluster else {
        return Err(err(join(path, "cluster"), "required"));
    };
    if !clusters.iter().any(|c| c.name == cluster) {
        return Err(err(join(path, "cluster"), format!("unknown cluster {cluster:?}")));
    }
    let idle_timeout = match raw.idle_timeout {
        Some(t) => Some(duration(&t, &join(path, "idle_timeout"))?).filter(|d| !d.is_zero()),
        None => Some(Duration::from_secs(3600)),
    };
    let mut access_log = Vec::new();
    for (i, log) in raw.access_log.into_iter().enumerate() {
        let at = format!("{path}.access_log[{i}]");
        let log = crate::access_log::access_log(log, &at)?;
        if matches!(log.sink, AccessLogSink::Wasm(_)) {
            return Err(err(at, "the Wasm access logger is not supported on tcp_proxy yet"));
        }
        access_log.push(log);
    }
    Ok(TcpProxy { filters, cluster, idle_timeout, access_log })
}

/// A connection manager's timeouts and limits, with Envoy's defaults; a
/// zero duration disables a timeout.
fn http_limits(raw: &raw::HttpConnectionManager, path: &str) -> Result<HttpLimits, ConfigError> {
    let timeout = |value: &Option<String>, at: String| -> Result<Option<Option<Duration>>, ConfigError> {
        value.as_ref().map(|t| duration(t, &at).map(|d| (!d.is_zero()).then_some(d))).transpose()
    };
    let mut limits = HttpLimits::default();
    if let Some(t) = timeout(&raw.request_headers_timeout, join(path, "request_headers_timeout"))? {
        limits.request_headers_timeout = t;
        limits.first_request_timeout = t;
    }
    if let Some(t) = timeout(&raw.stream_idle_timeout, join(path, "stream_idle_timeout"))? {
        limits.stream_idle_timeout = t;
    }
    if let Some(t) = timeout(&raw.request_timeout, join(path, "request_timeout"))? {
        limits.request_timeout = t;
    }
    if let Some(kb) = raw.max_request_headers_kb {
        if !(1..=8192).contains(&kb) {
            return Err(err(join(path, "max_request_headers_kb"), "must be between 1 and 8192"));
        }
        limits.max_request_headers_kb = kb;
    }
    if let Some(common) = &raw.common_http_protocol_options {
        let at = join(path, "common_http_protocol_options");
        if let Some(t) = timeout(&common.idle_timeout, join(&at, "idle_timeout"))? {
            limits.idle_timeout = t;
        }
        if let Some(t) = timeout(&common.max_connection_duration, join(&at, "max_connection_duration"))? {
            limits.max_connection_duration = t;
        }
        if let Some(count) = common.max_headers_count {
            limits.max_headers_count = count.max(1);
        }
        limits.underscores = match common.headers_with_underscores_action.as_deref() {
            None | Some("ALLOW") => UnderscoreAction::Allow,
            Some("REJECT_REQUEST") => UnderscoreAction::Reject,
            Some("DROP_HEADER") => UnderscoreAction::Drop,
            Some(other) => {
                return Err(err(join(&at, "headers_with_underscores_action"), format!("{other} is not an action")));
            }
        };
    }
    if let Some(http1) = &raw.http_protocol_options {
        limits.accept_http_10 = http1.accept_http_10.unwrap_or(false);
    }
    Ok(limits)
}

fn http_connection_manager(
    raw: raw::HttpConnectionManager,
    path: &str,
    clusters: &[Cluster],
) -> Result<HttpConnectionManager, ConfigError> {
    let limits = http_limits(&raw, path)?;
    let scheme_to_overwrite = match &raw.scheme_header_transformation {
        Some(t) => {
            let at = join(path, "scheme_header_transformation");
            match (&t.scheme_to_overwrite, t.match_upstream.unwrap_or(false)) {
                (Some(_), true) => return Err(err(at, "give scheme_to_overwrite or match_upstream, not both")),
                (Some(scheme), false) if scheme == "http" || scheme == "https" => Some(scheme.clone()),
                (Some(other), false) => {
                    return Err(err(join(&at, "scheme_to_overwrite"), format!("{other:?} is not http or https")));
                }
                // The upstream always gets its own connection's scheme in ferry.
                (None, _) => None,
            }
        }
        None => None,
    };
    let codec = match raw.codec_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("AUTO") => Codec::Auto,
        Some("HTTP1") => Codec::Http1,
        Some("HTTP2") => Codec::Http2,
        Some(other) => {
            return Err(err(join(path, "codec_type"), format!("{other} is not supported; use AUTO, HTTP1 or HTTP2")));
        }
    };
    let http2 = match raw.http2_protocol_options {
        Some(o) => {
            let at = join(path, "http2_protocol_options");
            let window = |size: Option<u32>, field: &str| match size {
                // Envoy's bounds: 65535 to 2^31 - 1.
                Some(size) if !(65_535..=0x7fff_ffff).contains(&size) => {
                    Err(err(join(&at, field), format!("{size} is not between 65535 and 2147483647")))
                }
                size => Ok(size),
            };
            Http2Options {
                max_concurrent_streams: o.max_concurrent_streams,
                initial_stream_window_size: window(o.initial_stream_window_size, "initial_stream_window_size")?,
                initial_connection_window_size: window(
                    o.initial_connection_window_size,
                    "initial_connection_window_size",
                )?,
            }
        }
        None => Http2Options::default(),
    };
    let route_config = crate::routes::route_config(raw.route_config, &join(path, "route_config"), clusters)?;
    let filters_path = join(path, "http_filters");
    let count = raw.http_filters.len();
    let mut http_filters = Vec::new();
    let mut suppress_envoy_headers = false;
    for (i, f) in raw.http_filters.into_iter().enumerate() {
        let at = format!("{filters_path}[{i}]");
        let is_last = i + 1 == count;
        match http_filter(f, &at)? {
            HttpFilterItem::Filter(filter) if !is_last => http_filters.push(*filter),
            HttpFilterItem::Router(router) if is_last => {
                suppress_envoy_headers = router.suppress_envoy_headers.unwrap_or(false);
            }
            HttpFilterItem::Filter(_) => {
                return Err(err(at, "the last HTTP filter must be the router (envoy.filters.http.router)"));
            }
            HttpFilterItem::Router(_) => return Err(err(at, "the router must be the last HTTP filter")),
        }
    }
    let server_header_transformation = match raw.server_header_transformation.as_deref() {
        None | Some("OVERWRITE") => ServerHeaderTransformation::Overwrite,
        Some("APPEND_IF_ABSENT") => ServerHeaderTransformation::AppendIfAbsent,
        Some("PASS_THROUGH") => ServerHeaderTransformation::PassThrough,
        Some(other) => {
            return Err(err(
                join(path, "server_header_transformation"),
                format!("{other:?} is not one of OVERWRITE, APPEND_IF_ABSENT, PASS_THROUGH"),
            ));
        }
    };
    let mut upgrades = Vec::new();
    for (i, u) in raw.upgrade_configs.into_iter().enumerate() {
        let at = format!("{path}.upgrade_configs[{i}]");
        if !u.filters.is_empty() {
            return Err(err(
                join(&at, "filters"),
                "a filter chain of its own for upgrades is not supported: upgrades run the connection manager's http_filters",
            ));
        }
        upgrades
            .push(Upgrade { upgrade_type: u.upgrade_type.to_ascii_lowercase(), enabled: u.enabled.unwrap_or(true) });
    }
    if count == 0 {
        return Err(err(filters_path, "no HTTP filters: the router (envoy.filters.http.router) is required"));
    }
    Ok(HttpConnectionManager {
        stat_prefix: raw.stat_prefix.unwrap_or_default(),
        route_config,
        http_filters,
        generate_request_id: raw.generate_request_id.unwrap_or(true),
        server_name: raw.server_name.unwrap_or_else(|| "ferry".to_owned()),
        server_header_transformation,
        codec,
        scheme_to_overwrite,
        limits,
        http2,
        use_remote_address: raw.use_remote_address.unwrap_or(false),
        xff_num_trusted_hops: raw.xff_num_trusted_hops.unwrap_or(0),
        suppress_envoy_headers,
        access_log: raw
            .access_log
            .into_iter()
            .enumerate()
            .map(|(i, log)| crate::access_log::access_log(log, &format!("{path}.access_log[{i}]")))
            .collect::<Result<_, _>>()?,
        upgrades,
    })
}

/// An item of `http_filters`: a filter, or the router with its options.
enum HttpFilterItem {
    Filter(Box<HttpFilter>),
    Router(raw::Router),
}

fn http_filter(raw: raw::TypedExtension, path: &str) -> Result<HttpFilterItem, ConfigError> {
    let Some(typed) = raw.typed_config else {
        if ROUTER_NAMES.contains(&raw.name.as_str()) {
            return Ok(HttpFilterItem::Router(raw::Router { suppress_envoy_headers: None }));
        }
        return Err(err(join(path, "typed_config"), format!("missing for HTTP filter {:?}", raw.name)));
    };
    let any = unpack_any(typed, &join(path, "typed_config"))?;
    match any.type_name.as_str() {
        ROUTER => Ok(HttpFilterItem::Router(decode(any.fields, &any.path)?)),
        HTTP_WASM => {
            let filter: raw::WasmFilter = decode(any.fields, &any.path)?;
            let plugin = plugin_config(filter.config, &join(&any.path, "config"))?;
            Ok(HttpFilterItem::Filter(Box::new(HttpFilter::Wasm(Box::new(plugin)))))
        }
        HEADER_TO_METADATA => Ok(HttpFilterItem::Filter(Box::new(HttpFilter::HeaderToMetadata(
            crate::header_to_metadata::config(any.fields, &any.path)?,
        )))),
        COMPRESSOR => Ok(HttpFilterItem::Filter(Box::new(HttpFilter::Compressor(crate::compression::compressor(
            any.fields, &any.path,
        )?)))),
        DECOMPRESSOR => Ok(HttpFilterItem::Filter(Box::new(HttpFilter::Decompressor(
            crate::compression::decompressor(any.fields, &any.path)?,
        )))),
        other => Err(err(join(&any.path, "@type"), format!("HTTP filter {other} ({:?}) is not supported", raw.name))),
    }
}

fn cluster(raw: raw::Cluster, path: &str) -> Result<Cluster, ConfigError> {
    let connect_timeout = match raw.connect_timeout {
        Some(t) => duration(&t, &join(path, "connect_timeout"))?,
        None => Duration::from_secs(5),
    };
    let discovery = match raw.discovery_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("STATIC") => Discovery::Static,
        Some("STRICT_DNS" | "LOGICAL_DNS") => Discovery::Dns,
        Some(other) => {
            return Err(err(
                join(path, "type"),
                format!("{other} is not supported; use STATIC, STRICT_DNS or LOGICAL_DNS"),
            ));
        }
    };
    let lb_policy = crate::balancing::policy(raw.lb_policy.as_deref(), raw.least_request_lb_config, path)?;
    let panic_threshold = crate::balancing::panic_threshold(raw.common_lb_config, path)?;
    let health_check = crate::balancing::health_checks(raw.health_checks, path)?;
    let outlier_detection = crate::balancing::outlier_detection(raw.outlier_detection, path)?;
    let circuit_breakers = crate::balancing::circuit_breakers(raw.circuit_breakers, path)?;
    let mut endpoints = Vec::new();
    let mut endpoint_metadata = Vec::new();
    let mut endpoint_hostnames = Vec::new();
    for (i, locality) in raw.load_assignment.map(|l| l.endpoints).unwrap_or_default().into_iter().enumerate() {
        for (j, lb) in locality.lb_endpoints.into_iter().enumerate() {
            let lb_path = format!("{path}.load_assignment.endpoints[{i}].lb_endpoints[{j}]");
            endpoint_metadata.push(crate::metadata::metadata(lb.metadata, &join(&lb_path, "metadata"))?);
            let at = join(&lb_path, "endpoint.address");
            let hostname = lb.endpoint.hostname.filter(|h| !h.is_empty());
            let address = socket_address(lb.endpoint.address, &at)?;
            // Envoy's host name of an endpoint: its `hostname`, else the
            // name a DNS cluster resolves; a static address has none.
            endpoint_hostnames
                .push(hostname.or_else(|| (discovery == Discovery::Dns).then(|| address.address.clone())));
            if discovery == Discovery::Static && address.address.parse::<std::net::IpAddr>().is_err() {
                return Err(err(
                    join(&at, "socket_address.address"),
                    format!("{:?} is not an IP address (STATIC cluster)", address.address),
                ));
            }
            endpoints.push(address);
        }
    }
    let mut http2 = raw.http2_protocol_options.is_some();
    let mut auto_config = None;
    for (key, value) in raw.typed_extension_protocol_options.unwrap_or_default() {
        let key = key.as_str().unwrap_or_default().to_owned();
        let at = join(path, &format!("typed_extension_protocol_options.{key}"));
        let any = unpack_any(value, &at)?;
        if any.type_name != HTTP_PROTOCOL_OPTIONS {
            return Err(err(
                join(&any.path, "@type"),
                format!("{} is not supported; ferry reads {HTTP_PROTOCOL_OPTIONS}", any.type_name),
            ));
        }
        let options: raw::HttpProtocolOptions = decode(any.fields, &any.path)?;
        if options.use_downstream_protocol_config.is_some() {
            return Err(err(
                join(&any.path, "use_downstream_protocol_config"),
                "not supported yet; use explicit_http_config or auto_config",
            ));
        }
        if options.auto_config.is_some() {
            auto_config = Some(join(&any.path, "auto_config"));
        }
        if let Some(explicit) = options.explicit_http_config {
            http2 = explicit.http2_protocol_options.is_some();
            let _ = explicit.http_protocol_options;
        }
    }
    let metadata = crate::metadata::metadata(raw.metadata, &join(path, "metadata"))?;
    let tls = match raw.transport_socket {
        Some(socket) => crate::tls::transport_socket(socket, &join(path, "transport_socket"), false)?,
        None => None,
    };
    if let (Some(at), None) = (&auto_config, &tls) {
        return Err(err(at, "chooses the protocol by ALPN, which needs TLS: add a transport_socket"));
    }
    let auto_http = auto_config.is_some();
    Ok(Cluster {
        name: raw.name,
        connect_timeout,
        discovery,
        endpoints,
        endpoint_metadata,
        endpoint_hostnames,
        http2,
        metadata,
        tls,
        auto_http,
        lb_policy,
        panic_threshold,
        health_check,
        outlier_detection,
        circuit_breakers,
    })
}

/// A bootstrap extension ferry runs.
enum Extension {
    Service(WasmService),
    Runtime(WasmRuntime),
    Bridge(QueueBridge),
}

fn bootstrap_extension(raw: raw::TypedExtension, path: &str) -> Result<Extension, ConfigError> {
    let Some(typed) = raw.typed_config else {
        return Err(err(join(path, "typed_config"), format!("missing for bootstrap extension {:?}", raw.name)));
    };
    let any = unpack_any(typed, &join(path, "typed_config"))?;
    match any.type_name.as_str() {
        WASM_SERVICE => {
            let service: raw::WasmService = decode(any.fields, &any.path)?;
            let plugin = plugin_config(service.config, &join(&any.path, "config"))?;
            Ok(Extension::Service(WasmService { singleton: service.singleton, plugin }))
        }
        WASM_RUNTIME => Ok(Extension::Runtime(wasm_runtime(decode(any.fields, &any.path)?, &any.path)?)),
        QUEUE_BRIDGE => Ok(Extension::Bridge(crate::queue_bridge::queue_bridge(any.fields, &any.path)?)),
        other => Err(err(
            join(&any.path, "@type"),
            format!(
                "bootstrap extension {other} is not supported; ferry runs {WASM_SERVICE}, {WASM_RUNTIME} and {QUEUE_BRIDGE}"
            ),
        )),
    }
}

fn wasm_runtime(raw: raw::WasmRuntime, path: &str) -> Result<WasmRuntime, ConfigError> {
    let limits = wasm_limits(raw.callback_deadline, raw.start_deadline, raw.memory_limit_bytes, path)?;
    let plugins = raw
        .plugins
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("{path}.plugins[{i}]");
            let limits = wasm_limits(p.callback_deadline, p.start_deadline, p.memory_limit_bytes, &at)?;
            Ok(PluginLimits { name: p.name, limits })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let default_failure_policy = raw
        .default_failure_policy
        .map(|name| failure_policy_named(&name, None, &join(path, "default_failure_policy"), path))
        .transpose()?;
    let hold_failed = raw
        .hold_failed
        .map(|h| {
            let at = join(path, "hold_failed");
            if h.failures == 0 {
                return Err(err(join(&at, "failures"), "must be at least 1"));
            }
            Ok(HoldFailed { failures: h.failures, window: duration(&h.window, &join(&at, "window"))? })
        })
        .transpose()?;
    let queue_defaults = raw
        .shared_queue_defaults
        .map(|b| queue_bounds(b.max_items, b.max_bytes, b.overflow, &join(path, "shared_queue_defaults")))
        .transpose()?;
    let shared_queues = raw
        .shared_queues
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let at = format!("{path}.shared_queues[{i}]");
            let bounds = queue_bounds(q.max_items, q.max_bytes, q.overflow, &at)?;
            Ok(QueueRule { vm_id: q.vm_id, name: q.name, bounds })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let compilation = raw
        .compilation
        .map(|name| match name.as_str() {
            "TIERED" => Ok(Compilation::Tiered),
            "OPTIMIZING" => Ok(Compilation::Optimizing),
            "BASELINE" => Ok(Compilation::Baseline),
            other => Err(err(
                join(path, "compilation"),
                format!("unknown compilation {other} (expected TIERED, OPTIMIZING or BASELINE)"),
            )),
        })
        .transpose()?;
    Ok(WasmRuntime { limits, plugins, default_failure_policy, hold_failed, queue_defaults, shared_queues, compilation })
}

fn wasm_limits(
    callback_deadline: Option<String>,
    start_deadline: Option<String>,
    memory_limit_bytes: Option<u64>,
    path: &str,
) -> Result<WasmLimits, ConfigError> {
    let callback_deadline = callback_deadline.map(|d| duration(&d, &join(path, "callback_deadline"))).transpose()?;
    let start_deadline = start_deadline.map(|d| duration(&d, &join(path, "start_deadline"))).transpose()?;
    if let Some(bytes) = memory_limit_bytes
        && !(1 << 16..=1 << 32).contains(&bytes)
    {
        return Err(err(
            join(path, "memory_limit_bytes"),
            format!(
                "{bytes} is not between 65536 (one Wasm page) and 4294967296 (4 GiB, all a wasm32 module can address)"
            ),
        ));
    }
    Ok(WasmLimits { callback_deadline, start_deadline, memory_limit_bytes })
}

fn queue_bounds(
    max_items: Option<u64>,
    max_bytes: Option<u64>,
    overflow: Option<String>,
    path: &str,
) -> Result<QueueBounds, ConfigError> {
    let overflow = overflow
        .map(|o| match o.as_str() {
            "REFUSE" => Ok(QueueOverflow::Refuse),
            "DROP_OLDEST" => Ok(QueueOverflow::DropOldest),
            other => {
                Err(err(join(path, "overflow"), format!("unknown overflow {other} (expected REFUSE or DROP_OLDEST)")))
            }
        })
        .transpose()?;
    Ok(QueueBounds { max_items, max_bytes, overflow })
}
