//! Upstream clusters: an endpoint chosen by the cluster's policy among the
//! healthy ones (`hosts.rs`; active checks in `health.rs`), HTTP/1.1 (or
//! HTTP/2 where the cluster says so) with pooled connections per worker;
//! gRPC calls always over HTTP/2.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use crate::envoy_stats::ClusterStats;

use bytes::Bytes;
use ferry_host::{HeaderMap, HttpCallRequest, HttpCallResponse};
use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) mod grpc;
pub(crate) mod health;
pub(crate) mod hosts;
pub(crate) mod reporting;
mod retry;
pub(crate) use retry::BodyRecording;

use hosts::ClusterHosts;

use grpc::ChannelBody;

use crate::headers::{hyper_trailers, response_headers, to_hyper_headers, trailers_map};

/// Clusters as configured; each worker builds its own connection pools from them.
pub struct Clusters {
    clusters: Vec<ferry_config::Cluster>,
    /// Each cluster's endpoints as every worker shares them (health,
    /// ejections, requests in flight) and its `cluster.<name>.*` counters, in order.
    hosts: Vec<Arc<ClusterHosts>>,
    /// Each cluster's TLS client configuration, if it speaks TLS.
    tls: Vec<Option<rustls::ClientConfig>>,
}

impl Clusters {
    /// From the configuration; a TLS context that cannot be set up is an
    /// error naming its cluster.
    pub fn new(clusters: &[ferry_config::Cluster]) -> Result<Self, (String, crate::tls::TlsError)> {
        let tls = clusters
            .iter()
            .map(|c| c.tls.as_ref().map(crate::tls::client).transpose().map_err(|e| (c.name.clone(), e)))
            .collect::<Result<_, _>>()?;
        let hosts = clusters.iter().map(|c| Arc::new(ClusterHosts::new(c, Arc::default()))).collect();
        Ok(Clusters { clusters: clusters.to_vec(), hosts, tls })
    }

    /// Each cluster's name and endpoints (with its counters).
    pub(crate) fn stats(&self) -> impl Iterator<Item = (&str, &ClusterHosts)> {
        self.clusters.iter().zip(&self.hosts).map(|(c, h)| (c.name.as_str(), &**h))
    }

    /// Each cluster with its shared endpoints and TLS, for the health checker.
    pub(crate) fn with_hosts(
        &self,
    ) -> impl Iterator<Item = (&ferry_config::Cluster, &Arc<ClusterHosts>, Option<&rustls::ClientConfig>)> {
        self.clusters.iter().zip(&self.hosts).zip(&self.tls).map(|((c, h), t)| (c, h, t.as_ref()))
    }

    /// Every cluster, in configuration order.
    pub fn all(&self) -> &[ferry_config::Cluster] {
        &self.clusters
    }
}

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no healthy upstream")]
    NoEndpoint,
    #[error("upstream connect error or disconnect/reset before headers. reset reason: connection failure")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("upstream connect error: {0}")]
    TcpConnect(#[source] std::io::Error),
    #[error("upstream request timeout")]
    Timeout,
    #[error("invalid upstream request: {0}")]
    Request(String),
    #[error("upstream connect error or disconnect/reset before headers. reset reason: overflow")]
    Overflow,
}

impl UpstreamError {
    /// Envoy's response flag for it: `UH` no healthy upstream, `UF`
    /// connection failure, `UT` timeout.
    pub(crate) fn flag(&self) -> &'static str {
        match self {
            UpstreamError::NoEndpoint => "UH",
            UpstreamError::Timeout => "UT",
            UpstreamError::Overflow => "UO",
            UpstreamError::Connect(_) | UpstreamError::TcpConnect(_) | UpstreamError::Request(_) => "UF",
        }
    }

    /// The status Envoy answers with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            UpstreamError::Timeout => 504,
            _ => 503,
        }
    }

    /// Envoy's response code details for it.
    pub(crate) fn details(&self) -> &'static str {
        match self {
            UpstreamError::NoEndpoint => "no_healthy_upstream",
            UpstreamError::Timeout => "response_timeout",
            UpstreamError::Overflow => "upstream_reset_before_response_started{overflow}",
            UpstreamError::Connect(_) | UpstreamError::TcpConnect(_) | UpstreamError::Request(_) => {
                "upstream_reset_before_response_started{remote_connection_failure}"
            }
        }
    }
}

/// A request body to an upstream: the downstream's, streamed as it came
/// (no filter sees it); what passes the stream's filters, through a
/// channel (with the client's length when no filter may change it); or
/// one the proxy holds (a retried request's, an HTTP call's), with its
/// trailers.
pub(crate) enum UpstreamBody {
    Streamed(crate::counted::CountedBody),
    /// Ends only with a piece marked `last`: a channel that closes before
    /// it was cut off, and the upstream sees the request reset, never a
    /// shorter body that looks whole.
    /// A retrying route's is recorded as it goes, to be sent again.
    Channel {
        rx: tokio::sync::mpsc::Receiver<BodyPiece>,
        length: Option<u64>,
        ended: bool,
        recording: Option<BodyRecording>,
    },
    Full(Option<Bytes>, Option<http::HeaderMap>),
}

/// How a routed request's body is sent again on a retry.
enum Retries {
    /// Held whole: a copy each time.
    Held,
    /// Streamed on the first try and recorded as it went.
    Recorded(BodyRecording),
}

/// A frame of a request body sent through a channel, and whether it is
/// the body's last (an empty last data frame only ends the body).
pub(crate) struct BodyPiece {
    pub frame: http_body::Frame<Bytes>,
    pub last: bool,
}

/// A request body whose sender went away before its end.
#[derive(Debug, thiserror::Error)]
#[error("the request body was cut off before its end")]
pub(crate) struct BodyCutOff;

/// Errors a request body reports to hyper (which then resets the request).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    /// A copy for another try, if the body is held.
    fn try_clone(&self) -> Option<UpstreamBody> {
        match self {
            UpstreamBody::Full(data, trailers) => Some(UpstreamBody::Full(data.clone(), trailers.clone())),
            UpstreamBody::Streamed(_) | UpstreamBody::Channel { .. } => None,
        }
    }

    /// What sends the body again on a retry, if anything can: a held
    /// body's copy, or a recorded one's replay.
    fn for_retries(&self) -> Option<Retries> {
        match self {
            UpstreamBody::Full(..) => Some(Retries::Held),
            UpstreamBody::Channel { recording: Some(recording), .. } => Some(Retries::Recorded(recording.clone())),
            UpstreamBody::Streamed(_) | UpstreamBody::Channel { .. } => None,
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Streamed(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Channel { ended: true, .. } => std::task::Poll::Ready(None),
            UpstreamBody::Channel { rx, ended, recording, .. } => match rx.poll_recv(cx) {
                std::task::Poll::Ready(Some(BodyPiece { frame, last })) => {
                    *ended = last;
                    if let Some(recording) = recording {
                        recording.record(&frame, last);
                    }
                    let empty_end = last && frame.data_ref().is_some_and(Bytes::is_empty);
                    std::task::Poll::Ready((!empty_end).then_some(Ok(frame)))
                }
                std::task::Poll::Ready(None) => std::task::Poll::Ready(Some(Err(Box::new(BodyCutOff)))),
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
            UpstreamBody::Full(bytes, trailers) => std::task::Poll::Ready(
                bytes
                    .take()
                    .map(http_body::Frame::data)
                    .or_else(|| trailers.take().map(http_body::Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streamed(body) => body.is_end_stream(),
            UpstreamBody::Channel { ended, .. } => *ended,
            UpstreamBody::Full(bytes, trailers) => bytes.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Streamed(body) => body.size_hint(),
            UpstreamBody::Channel { length: Some(length), .. } => http_body::SizeHint::with_exact(*length),
            UpstreamBody::Channel { length: None, .. } => http_body::SizeHint::default(),
            UpstreamBody::Full(bytes, None) => {
                http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            // Not exact: trailers need chunked framing.
            UpstreamBody::Full(_, Some(_)) => http_body::SizeHint::default(),
        }
    }
}

/// How many tries a routed request took, in its response's extensions.
#[derive(Clone, Copy)]
pub(crate) struct Attempts(pub(crate) u32);

/// A `tcp_proxy` connection to an endpoint: TCP, or TLS over it.
pub(crate) type TcpUpstream = Box<dyn Stream>;

/// A byte stream `tcp_proxy` relays: plain TCP, or TLS over it (either side).
pub(crate) trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Stream for T {}

/// What plugins read of a `tcp_proxy` upstream connection.
pub(crate) struct TcpUpstreamFacts {
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) local: Option<std::net::SocketAddr>,
    pub(crate) tls: Option<Arc<ferry_host::TlsFacts>>,
}

/// The endpoint a routed request went to, in the response's extensions:
/// its metadata is the `xds.upstream_host_metadata` attribute.
#[derive(Clone)]
pub(crate) struct UpstreamHost {
    pub(crate) metadata: Arc<ferry_host::Metadata>,
    /// Its host name, if it has one (what `auto_host_rewrite` sends as `host`).
    pub(crate) hostname: Option<Arc<str>>,
}

/// hyper's connector, with TLS for clusters that have it (reporting what
/// each handshake established).
pub(crate) type Connector = reporting::Reporting;

struct Pool {
    client: Client<Connector, UpstreamBody>,
    /// HTTP/2 (prior knowledge, or by ALPN over TLS), for gRPC calls.
    grpc_client: Client<Connector, ChannelBody>,
    /// `https` for a TLS cluster, else `http`.
    scheme: &'static str,
    /// Requests go over HTTP/2 only (no HTTP/1.1 by ALPN).
    http2_only: bool,
    endpoints: Vec<String>,
    /// Each endpoint's metadata, in the same order.
    endpoint_metadata: Vec<Arc<ferry_host::Metadata>>,
    /// Each endpoint's host name, in the same order.
    endpoint_hostnames: Vec<Option<Arc<str>>>,
    /// For `tcp_proxy` to a TLS cluster: its client configuration and `sni`.
    raw_tls: Option<(Arc<rustls::ClientConfig>, Option<rustls::pki_types::ServerName<'static>>)>,
    /// The cluster's client certificate, for the `upstream.*_local_certificate` attributes.
    raw_tls_local: Option<ferry_host::CertificateFacts>,
    /// This worker's round-robin position.
    next: Cell<usize>,
    connect_timeout: Duration,
    /// The endpoints' shared state, and the policy that chooses among them.
    hosts: Arc<ClusterHosts>,
    stats: Arc<ClusterStats>,
    /// The cluster's facts for plugins (`xds.cluster_name`, ...).
    facts: Arc<ferry_host::ClusterFacts>,
}

/// The endpoint chosen for a request.
struct Chosen<'a> {
    index: usize,
    address: &'a str,
    host: UpstreamHost,
}

impl Pool {
    /// The endpoint for the next request, as the cluster's policy chooses
    /// among its healthy endpoints; `NoEndpoint` if there is none.
    fn next_endpoint(&self) -> Result<Chosen<'_>, UpstreamError> {
        let index = self.hosts.choose(&self.next).ok_or(UpstreamError::NoEndpoint)?;
        let host = UpstreamHost {
            metadata: self.endpoint_metadata[index].clone(),
            hostname: self.endpoint_hostnames[index].clone(),
        };
        Ok(Chosen { index, address: &self.endpoints[index], host })
    }
}

/// One worker's connection pools, one per cluster (found by name on every
/// request: a fast hash suits the few, trusted names).
pub(crate) struct Upstreams {
    pools: rustc_hash::FxHashMap<String, Pool>,
}

/// How a route sends a request: its timeout, retries, the router's headers
/// and whether the endpoint becomes the `host`.
pub(crate) struct RouteSend<'a> {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<&'a ferry_config::RetryPolicy>,
    pub(crate) envoy_headers: bool,
    pub(crate) auto_host_rewrite: bool,
}

/// A request on its way upstream, before an endpoint is chosen: what each
/// try of it sends.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) method: http::Method,
    /// `:path`, with the query.
    pub(crate) path: Bytes,
    /// Its headers, `host` (the `:authority`, which an HTTP/1.1 upstream
    /// gets) among them; the connection's own are not.
    pub(crate) headers: http::HeaderMap,
}

impl Outgoing {
    /// The request the plugins' header map describes (pseudo-headers first).
    pub(crate) fn from_map(map: &HeaderMap) -> Result<Self, UpstreamError> {
        let get = |name: &[u8]| map.get(name).cloned().unwrap_or_else(Bytes::new);
        let method = http::Method::from_bytes(&get(b":method")).map_err(|e| UpstreamError::Request(e.to_string()))?;
        let mut headers = http::HeaderMap::with_capacity(map.len());
        if let Ok(host) = http::HeaderValue::from_maybe_shared(get(b":authority")) {
            headers.insert(http::header::HOST, host);
        }
        to_hyper_headers(map, &mut headers);
        Ok(Outgoing { method, path: get(b":path"), headers })
    }

    /// The request hyper parsed, sent on as the plugins' map of it would be
    /// (see `headers::request_headers` and `to_hyper_headers`): the
    /// connection's own headers dropped (`te: trailers` kept), `host` as
    /// `:authority`, `x-forwarded-proto` and `x-request-id` added when
    /// absent. Its headers are taken from `parts`.
    pub(crate) fn from_wire(parts: &mut http::request::Parts, generate_request_id: bool, proto: &'static str) -> Self {
        let mut headers = std::mem::take(&mut parts.headers);
        if !headers.contains_key(http::header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
        {
            headers.insert(http::header::HOST, host);
        }
        // Most requests carry none: one pass over the parsed names first.
        if headers.keys().any(|name| crate::headers::is_hop_by_hop(name.as_str().as_bytes())) {
            let te_trailers =
                headers.get(http::header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
            for name in crate::headers::HOP_BY_HOP {
                headers.remove(*name);
            }
            if te_trailers {
                headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
            }
        }
        // The body's framing is hyper's to choose.
        headers.remove(http::header::CONTENT_LENGTH);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, http::HeaderValue::from_static(proto));
        }
        if generate_request_id {
            crate::headers::add_request_id(&mut headers);
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or(Bytes::from_static(b"/"), |p| Bytes::copy_from_slice(p.as_str().as_bytes()));
        Outgoing { method: parts.method.clone(), path, headers }
    }
}

/// Parsed once, not on every request.
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// Most an HTTP/1.1 upstream connection reads ahead (response heads must fit).
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

impl Upstreams {
    pub(crate) fn new(clusters: &Clusters) -> Self {
        let pools = clusters
            .clusters
            .iter()
            .zip(&clusters.hosts)
            .zip(&clusters.tls)
            .map(|((c, hosts), tls)| {
                let client = cluster_client(c, tls.as_ref());
                let grpc_client = Client::builder(TokioExecutor::new()).http2_only(true).build(connector_for(
                    c,
                    tls.as_ref(),
                    tcp_connector(c),
                    false,
                    true,
                ));
                let endpoints = c.endpoints.iter().map(ToString::to_string).collect();
                let endpoint_metadata = c.endpoint_metadata.iter().map(|m| Arc::new(crate::xds::metadata(m))).collect();
                let pool = Pool {
                    client,
                    grpc_client,
                    scheme: if tls.is_some() { "https" } else { "http" },
                    http2_only: c.http2 && !c.auto_http,
                    endpoints,
                    endpoint_metadata,
                    endpoint_hostnames: c.endpoint_hostnames.iter().map(|h| h.as_deref().map(Arc::from)).collect(),
                    facts: crate::xds::cluster(c),
                    next: Cell::new(0),
                    connect_timeout: c.connect_timeout,
                    hosts: hosts.clone(),
                    stats: hosts.stats.clone(),
                    raw_tls_local: c.tls.as_ref().and_then(crate::tls::own_certificate),
                    raw_tls: tls.as_ref().map(|config| {
                        let sni = c.tls.as_ref().and_then(|t| t.sni.clone());
                        (Arc::new(config.clone()), sni.and_then(|s| rustls::pki_types::ServerName::try_from(s).ok()))
                    }),
                };
                (c.name.clone(), pool)
            })
            .collect();
        Upstreams { pools }
    }

    /// The facts plugins read of `cluster`, if it is configured.
    pub(crate) fn cluster_facts(&self, cluster: &str) -> Option<Arc<ferry_host::ClusterFacts>> {
        self.pools.get(cluster).map(|pool| pool.facts.clone())
    }

    /// Whether `cluster` is configured.
    pub(crate) fn has_cluster(&self, cluster: &str) -> bool {
        self.pools.contains_key(cluster)
    }

    /// Sends `request` with `body` to `cluster` for a route, retrying as
    /// its policy says (a body to retry with must be held:
    /// `UpstreamBody::Full`); `envoy_headers` as the router's (see
    /// [`Self::send_routed`]).
    pub(crate) async fn forward(
        &self,
        cluster: &str,
        route: &RouteSend<'_>,
        request: Outgoing,
        body: UpstreamBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pool = self.pools.get(cluster).ok_or(UpstreamError::NoEndpoint)?;
        let timeout = route.timeout.unwrap_or(DEFAULT_ROUTE_TIMEOUT);
        let deadline = (!timeout.is_zero()).then(|| std::time::Instant::now() + timeout);
        let retries = route.retry.and_then(|_| body.for_retries());
        let retry = route.retry.filter(|_| retries.is_some());
        let attempts = 1 + retry.map_or(0, |r| r.num_retries);
        let (mut body, mut outgoing) = (Some(body), Some(request));
        // The retry in flight, counted against the cluster's `max_retries`.
        let mut _retry = None;
        for attempt in 1..=attempts {
            let Chosen { index, address, host } = pool.next_endpoint()?;
            let last = attempt == attempts;
            let this_body = match (&retries, body.take()) {
                (Some(Retries::Held), Some(held)) if !last => {
                    let copy = held.try_clone();
                    body = Some(held);
                    copy
                }
                (_, Some(first)) => Some(first),
                (Some(Retries::Recorded(recording)), None) => recording.replay(),
                (_, None) => None,
            };
            let this_body = this_body.ok_or_else(|| UpstreamError::Request("no body to send".into()))?;
            let this_request = if last { outgoing.take() } else { outgoing.clone() };
            let this_request = this_request.ok_or_else(|| UpstreamError::Request("no request to send".into()))?;
            let host_name = if route.auto_host_rewrite { host.hostname.as_deref() } else { None };
            let request = build_request(pool.scheme, address, this_request, this_body, host_name)?;
            // Each try gets the per-try timeout, within what is left of the route's.
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let per_try = match (retry.and_then(|r| r.per_try_timeout), left) {
                (Some(per_try), Some(left)) => per_try.min(left),
                (Some(per_try), None) => per_try,
                (None, Some(left)) => left,
                (None, None) => Duration::ZERO,
            };
            if left.is_some_and(|l| l.is_zero()) {
                return Err(UpstreamError::Timeout);
            }
            // Upstream is told the per-try timeout, else the route's (as Envoy).
            let expected = retry.and_then(|r| r.per_try_timeout).unwrap_or(timeout);
            let result = Self::send_routed(pool, index, (per_try, expected), route.envoy_headers, request).await;
            let retriable = retry.is_some_and(|policy| match &result {
                Ok(response) => retry::on_status(policy, response.status().as_u16()),
                Err(error) => retry::on_error(policy, error),
            }) && match &retries {
                // A streamed body is sent again only if it ended within the limit.
                Some(Retries::Recorded(recording)) => recording.replayable(),
                _ => true,
            };
            if retriable && !last {
                // Past `max_retries` in flight, the answer stands.
                if let Some(slot) = pool.hosts.retry_slot() {
                    _retry = Some(slot);
                    pool.stats.upstream_rq_retry.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(retry::backoff(attempt)).await;
                    continue;
                }
            }
            let mut response = result?;
            response.extensions_mut().insert(host);
            response.extensions_mut().insert(Attempts(attempt));
            return Ok(response);
        }
        unreachable!("the last attempt returns")
    }

    /// Sends a routed request within `timeout`. With `envoy_headers` (unless
    /// the router's `suppress_envoy_headers`), as Envoy's router: `expected`
    /// goes upstream as `x-envoy-expected-rq-timeout-ms` (when there is one),
    /// and the response carries `x-envoy-upstream-service-time`, the
    /// milliseconds until its headers came.
    async fn send_routed(
        pool: &Pool,
        index: usize,
        (timeout, expected): (Duration, Duration),
        envoy_headers: bool,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if !envoy_headers {
            return Self::send_request(pool, index, timeout, request).await;
        }
        if !expected.is_zero() {
            request
                .headers_mut()
                .insert("x-envoy-expected-rq-timeout-ms", http::HeaderValue::from(expected.as_millis() as u64));
        }
        let sent = std::time::Instant::now();
        let mut response = Self::send_request(pool, index, timeout, request).await?;
        let service_time = http::HeaderValue::from(sent.elapsed().as_millis() as u64);
        response.headers_mut().insert("x-envoy-upstream-service-time", service_time);
        Ok(response)
    }

    /// Sends a plugin's HTTP call and reads the whole response.
    pub(crate) async fn call(&self, call: &HttpCallRequest) -> Result<HttpCallResponse, UpstreamError> {
        let body = (!call.body.is_empty()).then(|| call.body.clone());
        let trailers = (!call.trailers.is_empty()).then(|| hyper_trailers(&call.trailers).0);
        let timeout = call.timeout.unwrap_or(Duration::ZERO);
        let mut request = Outgoing::from_map(&call.headers)?;
        // A body goes with its length, as Envoy's dispatch sets it — but for
        // one with trailers over HTTP/1.1, which only chunked framing carries.
        let http2 = self.pools.get(&call.upstream).is_some_and(|pool| pool.http2_only);
        let framed_by_length = trailers.is_none() || http2;
        if !call.body.is_empty() && framed_by_length && !request.headers.contains_key(http::header::CONTENT_LENGTH) {
            request.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(call.body.len()));
        }
        let response = self.send(&call.upstream, timeout, request, UpstreamBody::Full(body, trailers)).await?;
        let (parts, body) = response.into_parts();
        // A response larger than a plugin can be handed is a failed call.
        let read = http_body_util::Limited::new(body, ferry_host::MAX_VALUE_BYTES).collect();
        let collected = if timeout.is_zero() {
            read.await
        } else {
            tokio::time::timeout(timeout, read).await.map_err(|_| UpstreamError::Timeout)?
        }
        .map_err(|e| UpstreamError::Request(format!("reading the response: {e}")))?;
        let trailers = collected.trailers().map(trailers_map).unwrap_or_default();
        Ok(HttpCallResponse {
            headers: response_headers(parts.status, &parts.headers),
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// Opens a gRPC exchange (`POST path`, HTTP/2) with the next endpoint of
    /// `cluster`; `metadata` goes as request headers, `body` carries the
    /// length-prefixed messages.
    pub(crate) async fn grpc(
        &self,
        cluster: &str,
        path: &str,
        metadata: &HeaderMap,
        timeout: Option<Duration>,
        body: ChannelBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pool = self.pools.get(cluster).ok_or(UpstreamError::NoEndpoint)?;
        let Chosen { address, .. } = pool.next_endpoint()?;
        let uri = Uri::builder()
            .scheme(pool.scheme)
            .authority(address)
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        let mut request = Request::post(uri).body(body).map_err(|e| UpstreamError::Request(e.to_string()))?;
        to_hyper_headers(metadata, request.headers_mut());
        let headers = request.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        if let Some(timeout) = timeout {
            headers.insert("grpc-timeout", grpc::timeout_header(timeout));
        }
        pool.grpc_client.request(request).await.map_err(UpstreamError::Connect)
    }

    /// A connection to the next endpoint of `cluster` (for `tcp_proxy`):
    /// TCP, with TLS over it if the cluster speaks TLS; its peer, and
    /// which endpoint it is.
    pub(crate) async fn connect_tcp(
        &self,
        cluster: &str,
    ) -> Result<(TcpUpstream, TcpUpstreamFacts, UpstreamHost), UpstreamError> {
        let pool = self.pools.get(cluster).ok_or(UpstreamError::NoEndpoint)?;
        let Chosen { index, address, host } = pool.next_endpoint()?;
        let connect = async {
            let stream = tokio::net::TcpStream::connect(address).await.map_err(UpstreamError::TcpConnect)?;
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().map_err(UpstreamError::TcpConnect)?;
            let mut facts = TcpUpstreamFacts { peer, local: stream.local_addr().ok(), tls: None };
            let Some((config, server_name)) = &pool.raw_tls else {
                return Ok((Box::new(stream) as TcpUpstream, facts));
            };
            // The cluster's `sni`, else the endpoint's host name or address, as Envoy.
            let name = server_name.clone().or_else(|| {
                let host = address.rsplit_once(':').map_or(address, |(h, _)| h).trim_matches(['[', ']']);
                rustls::pki_types::ServerName::try_from(host.to_owned()).ok()
            });
            let name = name.ok_or_else(|| UpstreamError::Request(format!("no TLS server name for {address}")))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream).await;
            let tls = tls.map_err(UpstreamError::TcpConnect)?;
            facts.tls = Some(Arc::new(crate::tls::client_facts(tls.get_ref().1, pool.raw_tls_local.as_ref())));
            Ok((Box::new(tls) as TcpUpstream, facts))
        };
        let result = match tokio::time::timeout(pool.connect_timeout, connect).await {
            Ok(connected) => connected,
            Err(_) => Err(UpstreamError::Timeout),
        };
        // A connection that fails counts against the endpoint, as a 5xx would.
        pool.hosts.record(index, result.is_err());
        let (stream, facts) = result?;
        Ok((stream, facts, host))
    }

    /// One request to the next endpoint of `cluster`; a zero timeout waits forever.
    async fn send(
        &self,
        cluster: &str,
        timeout: Duration,
        request: Outgoing,
        body: UpstreamBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pool = self.pools.get(cluster).ok_or(UpstreamError::NoEndpoint)?;
        let Chosen { index, address, .. } = pool.next_endpoint()?;
        let request = build_request(pool.scheme, address, request, body, None)?;
        Self::send_request(pool, index, timeout, request).await
    }

    /// Sends `request` on the pool to endpoint `index`; a zero timeout waits
    /// forever. The endpoint counts it in flight until the response headers
    /// come, and outlier detection learns whether it failed (a 5xx, or no
    /// answer).
    async fn send_request(
        pool: &Pool,
        index: usize,
        timeout: Duration,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let send = async {
            // Waiting for a connection the circuit breakers allow counts in the timeout.
            let admitted = pool.hosts.admit().await.map_err(|_| UpstreamError::Overflow)?;
            let in_flight = pool.hosts.begin(index);
            let response = pool.client.request(request).await.map_err(UpstreamError::Connect);
            drop((in_flight, admitted));
            response
        };
        let result = if timeout.is_zero() {
            send.await
        } else {
            tokio::time::timeout(timeout, send).await.unwrap_or(Err(UpstreamError::Timeout))
        };
        if matches!(result, Err(UpstreamError::Overflow)) {
            // Never sent: not an upstream request, nothing to learn of the endpoint.
            return result;
        }
        pool.stats.request(result.as_ref().map(|r| r.status().as_u16()));
        pool.hosts.record(index, result.as_ref().map_or(true, |r| r.status().is_server_error()));
        result
    }
}

/// The connector of a cluster: TLS with its client configuration (the
/// `sni` it names, ALPN for the protocols it may speak), or plain TCP.
/// The TCP connector of a cluster's clients.
fn tcp_connector(c: &ferry_config::Cluster) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(c.connect_timeout));
    connector.set_nodelay(true);
    // TLS wraps it: it connects for `https` URLs too.
    connector.enforce_http(false);
    connector
}

/// A client speaking to a cluster's endpoints as it is configured: a TLS
/// cluster HTTP/2 or HTTP/1.1 as configured, or as ALPN says
/// (`auto_config`); a plain one as configured.
pub(crate) fn cluster_client(
    c: &ferry_config::Cluster,
    tls: Option<&rustls::ClientConfig>,
) -> Client<Connector, UpstreamBody> {
    let http2_only = c.http2 && !c.auto_http;
    let connector = connector_for(c, tls, tcp_connector(c), !http2_only || c.auto_http, c.http2 || c.auto_http);
    Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        // A response's body comes in pieces of at most this (hyper's default
        // is ~400 KB): what a stream holds in flight stays small.
        .http1_max_buf_size(UPSTREAM_READ_BUFFER)
        .build(connector)
}

fn connector_for(
    cluster: &ferry_config::Cluster,
    tls: Option<&rustls::ClientConfig>,
    tcp: HttpConnector,
    http1: bool,
    http2: bool,
) -> Connector {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let Some(config) = tls else {
        // Never used for TLS: the scheme of every request is `http`.
        let plain = builder.with_tls_config(plain_config()).https_or_http().enable_all_versions().wrap_connector(tcp);
        return reporting::Reporting::new(plain, None);
    };
    let local = cluster.tls.as_ref().and_then(crate::tls::own_certificate);
    let mut builder = builder.with_tls_config(config.clone()).https_only();
    let sni = cluster.tls.as_ref().and_then(|t| t.sni.clone());
    if let Some(name) = sni.and_then(|s| rustls::pki_types::ServerName::try_from(s).ok()) {
        builder = builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let connector = match (http1, http2) {
        (true, true) => builder.enable_http1().enable_http2().wrap_connector(tcp),
        (false, true) => builder.enable_http2().wrap_connector(tcp),
        _ => builder.enable_http1().wrap_connector(tcp),
    };
    reporting::Reporting::new(connector, local)
}

/// A client configuration for connectors that never speak TLS.
fn plain_config() -> rustls::ClientConfig {
    static PLAIN: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    PLAIN
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .clone()
}

/// A body whose length is not known goes chunked over HTTP/1.1, whatever
/// the method (hyper sends none for a GET unless told).
fn frame_body(request: &mut Request<UpstreamBody>) {
    use http_body::Body as _;
    let body = request.body();
    let length_known =
        body.size_hint().exact().is_some() || request.headers().contains_key(http::header::CONTENT_LENGTH);
    if !body.is_end_stream() && !length_known {
        request.headers_mut().insert(http::header::TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
    }
}

/// The request `outgoing` describes, to `endpoint`; the `host` is
/// `host_name` (`auto_host_rewrite` of an endpoint with a host name), else
/// `:authority`.
fn build_request(
    scheme: &str,
    endpoint: &str,
    outgoing: Outgoing,
    body: UpstreamBody,
    host_name: Option<&str>,
) -> Result<Request<UpstreamBody>, UpstreamError> {
    let Outgoing { method, path, mut headers } = outgoing;
    let path =
        http::uri::PathAndQuery::from_maybe_shared(if path.is_empty() { Bytes::from_static(b"/") } else { path })
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(endpoint)
        .path_and_query(path)
        .build()
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    if let Some(host) = host_name.and_then(|name| http::HeaderValue::from_str(name).ok()) {
        headers.insert(http::header::HOST, host);
    }
    let mut request =
        Request::builder().method(method).uri(uri).body(body).map_err(|e| UpstreamError::Request(e.to_string()))?;
    *request.headers_mut() = headers;
    frame_body(&mut request);
    if let UpstreamBody::Full(_, Some(trailers)) = request.body() {
        // hyper sends only the trailer fields the `trailer` header announces.
        let names: Vec<&str> = trailers.keys().map(http::HeaderName::as_str).collect();
        if let Ok(value) = http::HeaderValue::from_str(&names.join(", ")) {
            request.headers_mut().insert(http::header::TRAILER, value);
        }
    }
    Ok(request)
}

impl crate::envoy_stats::ClusterStats {
    /// A request went to the cluster; what came of it. (Here, not in
    /// `envoy_stats`, which knows nothing of upstream errors.)
    pub(crate) fn request(&self, outcome: Result<u16, &UpstreamError>) {
        use std::sync::atomic::Ordering;
        self.upstream_rq_total.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(status) => crate::envoy_stats::count_class(&self.upstream_rq_by_class, status),
            Err(UpstreamError::Timeout) => {
                self.upstream_rq_timeout.fetch_add(1, Ordering::Relaxed);
            }
            Err(UpstreamError::Connect(e)) if e.is_connect() => {
                self.upstream_cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}
