//! The configuration's facts that plugins read as Envoy's `xds.*`
//! attributes: the node, and the metadata and names of listeners, routes,
//! virtual hosts, clusters and endpoints, converted once at start-up into
//! the host's protobuf form and shared by every stream.

use std::sync::Arc;

use ferry_host::{ClusterFacts, ListenerFacts, Locality, Metadata, Node, RouteFacts};
use prost_types::value::Kind;

/// The node as plugins see it (`xds.node`). `user_agent_name` is the
/// configuration's, or "ferry".
pub fn node(node: &ferry_config::Node) -> Node {
    let (region, zone, sub_zone) = node.locality.clone();
    let has_locality = !(region.is_empty() && zone.is_empty() && sub_zone.is_empty());
    Node {
        id: node.id.clone(),
        cluster: node.cluster.clone(),
        metadata: (!node.metadata.is_empty()).then(|| structure(&node.metadata)),
        locality: has_locality.then_some(Locality { region, zone, sub_zone }),
        user_agent_name: node.user_agent_name.clone().unwrap_or_else(|| "ferry".into()),
        user_agent_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A listener's facts, as a connection on `chain` sees them.
pub(crate) fn listener(listener: &ferry_config::Listener, chain: &ferry_config::FilterChain) -> Arc<ListenerFacts> {
    Arc::new(ListenerFacts {
        metadata: metadata(&listener.metadata),
        direction: listener.direction,
        filter_chain_name: chain.name.clone(),
    })
}

/// A route's facts, with its virtual host's.
pub(crate) fn route(route: &ferry_config::Route, host: &ferry_config::VirtualHost) -> Arc<RouteFacts> {
    Arc::new(RouteFacts {
        name: route.name.clone(),
        metadata: metadata(&route.metadata),
        virtual_host_name: host.name.clone(),
        virtual_host_metadata: metadata(&host.metadata),
    })
}

/// A cluster's facts.
pub(crate) fn cluster(cluster: &ferry_config::Cluster) -> Arc<ClusterFacts> {
    Arc::new(ClusterFacts { name: cluster.name.clone(), metadata: metadata(&cluster.metadata) })
}

/// `Metadata` in the host's protobuf form.
pub(crate) fn metadata(metadata: &ferry_config::Metadata) -> Metadata {
    let typed = metadata.typed_filter_metadata.iter().map(|(name, fields)| {
        use prost::Message as _;
        let any = prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: structure(fields).encode_to_vec(),
        };
        (name.clone(), any)
    });
    Metadata {
        filter_metadata: metadata
            .filter_metadata
            .iter()
            .map(|(name, fields)| (name.clone(), structure(fields)))
            .collect(),
        typed_filter_metadata: typed.collect(),
    }
}

/// A JSON object as a `google.protobuf.Struct`.
fn structure(fields: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: fields.iter().map(|(k, v)| (k.clone(), value(v))).collect() }
}

fn value(value: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(prost_types::ListValue { values: items.iter().map(self::value).collect() }),
        J::Object(fields) => Kind::StructValue(structure(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}
