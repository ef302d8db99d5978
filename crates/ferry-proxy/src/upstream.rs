//! Upstream clusters: round-robin over the configured endpoints, HTTP/1.1
//! with pooled connections per worker.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ferry_host::HeaderMap;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::headers::to_hyper_headers;

/// Clusters as configured; each worker builds its own connection pools from them.
pub struct Clusters {
    clusters: Vec<ferry_config::Cluster>,
}

impl Clusters {
    /// From the configuration.
    pub fn new(clusters: &[ferry_config::Cluster]) -> Self {
        Clusters { clusters: clusters.to_vec() }
    }
}

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no healthy upstream")]
    NoEndpoint,
    #[error("upstream connect error or disconnect/reset before headers. reset reason: connection failure")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("upstream request timeout")]
    Timeout,
    #[error("invalid upstream request: {0}")]
    Request(String),
}

impl UpstreamError {
    /// The status Envoy answers with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            UpstreamError::Timeout => 504,
            _ => 503,
        }
    }
}

struct Pool {
    client: Client<HttpConnector, Incoming>,
    endpoints: Vec<String>,
    next: Cell<usize>,
}

/// One worker's connection pools, one per cluster.
pub(crate) struct Upstreams {
    pools: HashMap<String, Pool>,
}

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

impl Upstreams {
    pub(crate) fn new(clusters: &Clusters) -> Self {
        let pools = clusters
            .clusters
            .iter()
            .map(|c| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(c.connect_timeout));
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let endpoints = c.endpoints.iter().map(ToString::to_string).collect();
                (c.name.clone(), Pool { client, endpoints, next: Cell::new(0) })
            })
            .collect();
        Upstreams { pools }
    }

    /// Sends the request described by `headers` and `body` to `cluster`.
    pub(crate) async fn forward(
        &self,
        cluster: &str,
        timeout: Option<Duration>,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pool = self.pools.get(cluster).ok_or(UpstreamError::NoEndpoint)?;
        if pool.endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoint);
        }
        let index = pool.next.get() % pool.endpoints.len();
        pool.next.set(index + 1);
        let request = build_request(&pool.endpoints[index], headers, body)?;
        let response = pool.client.request(request);
        let timeout = timeout.unwrap_or(DEFAULT_ROUTE_TIMEOUT);
        let result = if timeout.is_zero() {
            response.await
        } else {
            tokio::time::timeout(timeout, response).await.map_err(|_| UpstreamError::Timeout)?
        };
        result.map_err(UpstreamError::Connect)
    }
}

fn build_request(endpoint: &str, headers: &HeaderMap, body: Incoming) -> Result<Request<Incoming>, UpstreamError> {
    let get = |name: &[u8]| headers.get(name).cloned().unwrap_or_else(Bytes::new);
    let path = get(b":path");
    let uri = Uri::builder()
        .scheme("http")
        .authority(endpoint)
        .path_and_query(if path.is_empty() { &b"/"[..] } else { &path[..] })
        .build()
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    let method = http::Method::from_bytes(&get(b":method")).map_err(|e| UpstreamError::Request(e.to_string()))?;
    let mut request =
        Request::builder().method(method).uri(uri).body(body).map_err(|e| UpstreamError::Request(e.to_string()))?;
    let authority = get(b":authority");
    if let Ok(host) = http::HeaderValue::from_maybe_shared(authority) {
        request.headers_mut().insert(http::header::HOST, host);
    }
    to_hyper_headers(headers, request.headers_mut());
    Ok(request)
}
