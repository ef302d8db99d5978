//! What the embedder tells the host about a stream's surroundings: the
//! configuration's listener, route and cluster (`xds.*`), TLS handshakes
//! and metadata. Plain data, a leaf: streams carry it, `attributes` reads
//! it.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost_types::{Any, Struct};

/// `envoy.config.core.v3.Metadata`: data for filters and plugins, by
/// filter namespace, on listeners, routes, virtual hosts, clusters and
/// endpoints (and per stream, as dynamic metadata).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// `filter_metadata`.
    #[prost(btree_map = "string, message", tag = "1")]
    pub filter_metadata: BTreeMap<String, Struct>,
    /// `typed_filter_metadata`.
    #[prost(btree_map = "string, message", tag = "2")]
    pub typed_filter_metadata: BTreeMap<String, Any>,
}

/// What the configuration says about where a stream goes: the facts
/// behind Envoy's `xds.*` attributes, shared by every stream they apply to.
#[derive(Clone, Debug, Default)]
pub struct XdsInfo {
    /// The listener (and filter chain) the connection came in on.
    pub listener: Option<Arc<ListenerFacts>>,
    /// The route (and virtual host) the request matched.
    pub route: Option<Arc<RouteFacts>>,
    /// The cluster the stream is sent to.
    pub cluster: Option<Arc<ClusterFacts>>,
    /// The metadata of the endpoint the stream was sent to.
    pub upstream_host_metadata: Option<Arc<Metadata>>,
}

/// A listener's facts.
#[derive(Clone, Debug, Default)]
pub struct ListenerFacts {
    /// `metadata`.
    pub metadata: Metadata,
    /// `traffic_direction`: 0 unspecified, 1 inbound, 2 outbound.
    pub direction: i64,
    /// The filter chain's `name`.
    pub filter_chain_name: String,
}

/// A route's facts.
#[derive(Clone, Debug, Default)]
pub struct RouteFacts {
    /// The route's `name`.
    pub name: String,
    /// The route's `metadata`.
    pub metadata: Metadata,
    /// Its virtual host's `name`.
    pub virtual_host_name: String,
    /// Its virtual host's `metadata`.
    pub virtual_host_metadata: Metadata,
}

/// A cluster's facts.
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    /// `name`.
    pub name: String,
    /// `metadata`.
    pub metadata: Metadata,
}

/// What a downstream TLS handshake established (the `connection.*` TLS
/// attributes).
#[derive(Clone, Debug, Default)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The SNI the client asked for (empty if none).
    pub server_name: String,
    /// The client's certificate, if it presented one.
    pub peer: Option<CertificateFacts>,
    /// The proxy's own certificate.
    pub local: Option<CertificateFacts>,
}

/// What plugins read of a certificate.
#[derive(Clone, Debug, Default)]
pub struct CertificateFacts {
    /// The subject, RFC 2253 (`CN=client,O=Example`).
    pub subject: String,
    /// URI subject alternative names.
    pub uri_sans: Vec<String>,
    /// DNS subject alternative names.
    pub dns_sans: Vec<String>,
    /// SHA-256 of the DER encoding, lower-case hex.
    pub sha256: String,
}
