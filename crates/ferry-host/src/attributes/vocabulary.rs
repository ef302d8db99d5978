//! The names of Envoy's attributes and where ferry finds each: the stream
//! lent to the callback, the configuration's facts about its listener,
//! route and cluster, the node, the plugin, and values plugins set.

use bytes::Bytes;
use ferry_abi::Status;

use super::{Node, Value};
use crate::facts::TlsFacts;
use crate::headers::HeaderMap;
use crate::stream::HttpStream;

/// What a path is resolved against.
pub(crate) struct Facts<'a> {
    /// The stream of the acting context, if it has one.
    pub stream: Option<&'a HttpStream>,
    pub plugin_name: &'a str,
    pub root_id: &'a str,
    pub vm_id: &'a str,
    pub node: &'a Node,
    /// Values root contexts set (there is no stream to keep them).
    pub root_properties: &'a [(Bytes, Bytes)],
}

/// A group of attributes, read field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    Request,
    Response,
    Connection,
    Upstream,
    Source,
    Destination,
    Xds,
    FilterState,
}

/// The fields of each group, for CEL, which sees a group whole.
const REQUEST: &[&str] = &[
    "path",
    "url_path",
    "host",
    "scheme",
    "method",
    "headers",
    "referer",
    "useragent",
    "time",
    "id",
    "protocol",
    "query",
];
const RESPONSE: &[&str] = &["code", "headers", "trailers", "grpc_status"];
const UPSTREAM: &[&str] = &[
    "address",
    "port",
    "local_address",
    "request_attempt_count",
    "tls_version",
    "subject_local_certificate",
    "subject_peer_certificate",
    "uri_san_local_certificate",
    "uri_san_peer_certificate",
    "dns_san_local_certificate",
    "dns_san_peer_certificate",
    "sha256_peer_certificate_digest",
];
const CONNECTION: &[&str] = &[
    "id",
    "mtls",
    "requested_server_name",
    "tls_version",
    "subject_local_certificate",
    "subject_peer_certificate",
    "uri_san_local_certificate",
    "uri_san_peer_certificate",
    "dns_san_local_certificate",
    "dns_san_peer_certificate",
    "sha256_peer_certificate_digest",
];
const ADDRESS: &[&str] = &["address", "port"];
const XDS: &[&str] = &[
    "node",
    "cluster_name",
    "cluster_metadata",
    "route_name",
    "route_metadata",
    "virtual_host_name",
    "virtual_host_metadata",
    "upstream_host_metadata",
    "listener_metadata",
    "listener_direction",
    "filter_chain_name",
];

/// Names Envoy read at the top level before 1.33 (now under `xds.`);
/// plugins built against older Envoys still use them.
const LEGACY_XDS: &[(&str, &str)] = &[
    ("node", "node"),
    ("cluster_name", "cluster_name"),
    ("cluster_metadata", "cluster_metadata"),
    ("route_name", "route_name"),
    ("route_metadata", "route_metadata"),
    ("upstream_host_metadata", "upstream_host_metadata"),
    ("listener_metadata", "listener_metadata"),
    ("listener_direction", "listener_direction"),
];

/// The value at `path` (segments joined with NUL).
pub(crate) fn resolve(facts: &Facts<'_>, path: &[u8]) -> Result<Value, Status> {
    let segments = super::segments(path);
    let (first, rest) = segments.split_first().ok_or(Status::NotFound)?;
    let mut value = match top(facts, first) {
        Some(value) => value,
        // A value a plugin set, read back under the whole path it was set with.
        None => return set_property(facts, path).map(Value::Bytes).ok_or(Status::NotFound),
    };
    for segment in rest {
        value = match value {
            Value::Group(group) => field(facts, group, segment).ok_or(Status::NotFound)?,
            other => other.descend(segment)?,
        };
    }
    Ok(value)
}

/// The value a top-level name stands for: Envoy's order (`xds`, the
/// stream's groups, the plugin's own names), then the pre-1.33 names.
pub(crate) fn top(facts: &Facts<'_>, name: &[u8]) -> Option<Value> {
    let stream = facts.stream;
    let group = match name {
        b"xds" => Some(Group::Xds),
        b"request" => stream.map(|_| Group::Request),
        b"response" => stream.map(|_| Group::Response),
        b"connection" => stream.map(|_| Group::Connection),
        b"upstream" => stream.map(|_| Group::Upstream),
        b"source" => stream.map(|_| Group::Source),
        b"destination" => stream.map(|_| Group::Destination),
        b"filter_state" => stream.map(|_| Group::FilterState),
        _ => None,
    };
    if let Some(group) = group {
        return Some(Value::Group(group));
    }
    match name {
        b"metadata" => stream.map(|s| s.info.metadata.value()),
        b"plugin_name" => Some(Value::string(facts.plugin_name)),
        b"plugin_root_id" => Some(Value::string(facts.root_id)),
        b"plugin_vm_id" => Some(Value::string(facts.vm_id)),
        b"connection_id" => stream.map(|s| Value::Uint(s.info.connection_id)),
        _ => {
            let (_, field_name) = LEGACY_XDS.iter().find(|(legacy, _)| legacy.as_bytes() == name)?;
            field(facts, Group::Xds, field_name.as_bytes())
        }
    }
}

/// A value set with `proxy_set_property`, by its whole path.
fn set_property(facts: &Facts<'_>, path: &[u8]) -> Option<Vec<u8>> {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    let properties = facts.stream.map_or(facts.root_properties, |s| &s.info.properties[..]);
    properties.iter().find(|(p, _)| **p == *path).map(|(_, v)| v.to_vec())
}

/// A field of a group; `None` when the stream has no such value.
pub(crate) fn field(facts: &Facts<'_>, group: Group, name: &[u8]) -> Option<Value> {
    if group == Group::Xds {
        return xds(facts, name);
    }
    let s = facts.stream?;
    match group {
        Group::Request => request(s, name),
        Group::Response => response(s, name),
        Group::Connection => connection(s, name),
        Group::Upstream => upstream(s, name),
        Group::Source => address(s.info.source?, name),
        Group::Destination => address(s.info.destination?, name),
        Group::FilterState => filter_state(s, name),
        Group::Xds => None,
    }
}

/// A group as one map of the fields the stream has, for CEL.
pub(crate) fn group_map(facts: &Facts<'_>, group: Group) -> Value {
    let names: Vec<Vec<u8>> = match group {
        Group::Request => strings(REQUEST),
        Group::Response => strings(RESPONSE),
        Group::Connection => strings(CONNECTION),
        Group::Upstream => strings(UPSTREAM),
        Group::Source | Group::Destination => strings(ADDRESS),
        Group::Xds => strings(XDS),
        Group::FilterState => facts.stream.map_or_else(Vec::new, filter_state_keys),
    };
    Value::Map(
        names
            .into_iter()
            .filter_map(|name| field(facts, group, &name).map(|value| (Value::String(name), value)))
            .collect(),
    )
}

fn strings(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| n.as_bytes().to_vec()).collect()
}

fn request(s: &HttpStream, name: &[u8]) -> Option<Value> {
    let headers = &s.request_headers;
    if headers.is_empty() {
        return None;
    }
    let header = |name: &[u8]| headers.joined(name).map(Value::String);
    let path = headers.get(b":path");
    match name {
        b"path" => header(b":path"),
        b"url_path" => path.map(|p| Value::string(p.split(|&b| b == b'?').next().unwrap_or(p))),
        b"query" => path.map(|p| {
            let query = p.splitn(2, |&b| b == b'?').nth(1).unwrap_or_default();
            Value::string(query.split(|&b| b == b'#').next().unwrap_or_default())
        }),
        b"host" => header(b":authority"),
        b"scheme" => header(b":scheme"),
        b"method" => header(b":method"),
        b"referer" => header(b"referer"),
        b"useragent" => header(b"user-agent"),
        b"id" => header(b"x-request-id"),
        b"protocol" => (!s.info.protocol.is_empty()).then(|| Value::string(s.info.protocol)),
        b"time" => {
            let since = s.info.start?.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(Value::Timestamp(i64::try_from(since.as_nanos()).ok()?))
        }
        b"headers" => Some(header_map(headers)),
        _ => None,
    }
}

fn response(s: &HttpStream, name: &[u8]) -> Option<Value> {
    let headers = &s.response_headers;
    if headers.is_empty() {
        return None;
    }
    match name {
        b"code" => {
            let status = std::str::from_utf8(headers.get(b":status")?).ok()?.parse::<i64>().ok()?;
            Some(Value::Int(status))
        }
        b"headers" => Some(header_map(headers)),
        b"trailers" => Some(header_map(&s.response_trailers)),
        b"grpc_status" => {
            let status = s.response_trailers.get(b"grpc-status").or_else(|| headers.get(b"grpc-status"))?;
            Some(Value::Int(std::str::from_utf8(status).ok()?.parse().ok()?))
        }
        _ => None,
    }
}

/// `connection.*`: the TLS ones are there only for a TLS connection (the
/// SANs and digest only when the certificate has them), as in Envoy.
fn connection(s: &HttpStream, name: &[u8]) -> Option<Value> {
    let tls = s.info.tls.as_deref();
    let peer = || tls.and_then(|t| t.peer.as_ref());
    match name {
        b"id" => Some(Value::Uint(s.info.connection_id)),
        b"mtls" => Some(Value::Bool(peer().is_some())),
        b"requested_server_name" => Some(Value::string(tls.map_or("", |t| &t.server_name))),
        _ => tls_field(tls, name),
    }
}

/// `upstream.*`: the endpoint the stream went to, its connection, and its
/// TLS when the cluster speaks TLS (the peer is the upstream server, the
/// local certificate ferry's client certificate).
fn upstream(s: &HttpStream, name: &[u8]) -> Option<Value> {
    match name {
        b"address" | b"port" => address(s.info.upstream?, name),
        b"local_address" => Some(Value::string(s.info.upstream_local?.to_string())),
        b"request_attempt_count" => Some(Value::Uint(u64::from(s.info.upstream_attempts?))),
        _ => tls_field(s.info.upstream_tls.as_deref(), name),
    }
}

/// The TLS fields `connection.*` and `upstream.*` share.
fn tls_field(tls: Option<&TlsFacts>, name: &[u8]) -> Option<Value> {
    let peer = || tls.and_then(|t| t.peer.as_ref());
    let local = || tls.and_then(|t| t.local.as_ref());
    let first = |names: Option<&Vec<String>>| names.and_then(|n| n.first()).map(Value::string);
    match name {
        b"tls_version" => tls.map(|t| Value::string(&t.version)),
        b"subject_local_certificate" => local().map(|c| Value::string(&c.subject)),
        b"subject_peer_certificate" => peer().map(|c| Value::string(&c.subject)),
        b"uri_san_local_certificate" => first(local().map(|c| &c.uri_sans)),
        b"uri_san_peer_certificate" => first(peer().map(|c| &c.uri_sans)),
        b"dns_san_local_certificate" => first(local().map(|c| &c.dns_sans)),
        b"dns_san_peer_certificate" => first(peer().map(|c| &c.dns_sans)),
        b"sha256_peer_certificate_digest" => peer().map(|c| Value::string(&c.sha256)),
        _ => None,
    }
}

fn address(address: std::net::SocketAddr, name: &[u8]) -> Option<Value> {
    match name {
        b"address" => Some(Value::string(address.to_string())),
        b"port" => Some(Value::Int(i64::from(address.port()))),
        _ => None,
    }
}

fn xds(facts: &Facts<'_>, name: &[u8]) -> Option<Value> {
    if name == b"node" {
        return Some(facts.node.value());
    }
    let xds = &facts.stream?.info.xds;
    let listener = || xds.listener.as_deref();
    let route = || xds.route.as_deref();
    match name {
        b"cluster_name" => xds.cluster.as_ref().map(|c| Value::string(&c.name)),
        b"cluster_metadata" => xds.cluster.as_ref().map(|c| c.metadata.value()),
        b"route_name" => route().map(|r| Value::string(&r.name)),
        b"route_metadata" => route().map(|r| r.metadata.value()),
        b"virtual_host_name" => route().map(|r| Value::string(&r.virtual_host_name)),
        b"virtual_host_metadata" => route().map(|r| r.virtual_host_metadata.value()),
        b"upstream_host_metadata" => xds.upstream_host_metadata.as_ref().map(|m| m.value()),
        b"listener_metadata" => listener().map(|l| l.metadata.value()),
        b"listener_direction" => listener().map(|l| Value::Int(l.direction)),
        b"filter_chain_name" => Some(Value::string(listener().map_or("", |l| &l.filter_chain_name))),
        _ => None,
    }
}

/// Filter state by key: what `set_envoy_filter_state` set, and what
/// `proxy_set_property` set, under `wasm.<path>`.
fn filter_state(s: &HttpStream, key: &[u8]) -> Option<Value> {
    if let Some(path) = key.strip_prefix(b"wasm.") {
        return s.info.properties.iter().find(|(p, _)| **p == *path).map(|(_, v)| Value::Bytes(v.to_vec()));
    }
    let key = std::str::from_utf8(key).ok()?;
    s.info.filter_state(key).map(Value::string)
}

fn filter_state_keys(s: &HttpStream) -> Vec<Vec<u8>> {
    let wasm = s.info.properties.iter().map(|(p, _)| [&b"wasm."[..], p].concat());
    s.info.filter_state.iter().map(|(k, _)| k.as_bytes().to_vec()).chain(wasm).collect()
}

/// `request.headers.<name>` (or `response.`): the header's values, joined.
pub(crate) fn header(s: &HttpStream, request: bool, name: &[u8]) -> Option<Vec<u8>> {
    if request { &s.request_headers } else { &s.response_headers }.joined(name)
}

/// A header map as Envoy's attribute: one entry per name, repeated values
/// joined with commas, in the order names first appear.
fn header_map(headers: &HeaderMap) -> Value {
    let mut entries: Vec<(Value, Value)> = Vec::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        match entries.iter_mut().find(|(n, _)| matches!(n, Value::String(n) if n == name)) {
            Some((_, Value::String(joined))) => {
                joined.push(b',');
                joined.extend_from_slice(value);
            }
            _ => entries.push((Value::string(name), Value::string(value))),
        }
    }
    Value::Map(entries)
}
