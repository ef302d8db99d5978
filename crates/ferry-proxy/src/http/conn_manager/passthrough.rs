//! The connection manager without filters: no plugin sees the request, so
//! it is routed and sent on as hyper parsed it, without building the
//! header maps plugins see (and converting them back).
//!
//! What the client and the upstream see is what the general path gives
//! them: the same local replies, `x-forwarded-proto` and `x-request-id`
//! added upstream when absent, connection-level headers dropped both
//! ways, and `server` on the response.

use bytes::Bytes;
use ferry_config::RouteAction;
use http::Response;
use http::header::{self, HeaderValue};
use hyper_util::client::legacy::connect::HttpInfo;

use super::{ConnContext, hyper_response};
use crate::access_log::StreamNotes;
use crate::counted::CountedBody;
use crate::headers::{HOP_BY_HOP, add_request_id};
use crate::http::body::ResponseBody;
use crate::http::rescue::{Local, Rescue, StreamError, rescue};
use crate::upstream::UpstreamBody;

/// Answers one request.
pub(super) async fn handle(
    parts: http::request::Parts,
    body: CountedBody,
    conn: &ConnContext,
) -> Response<ResponseBody> {
    let grpc = parts.headers.get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let local = match route(&parts, conn) {
        Routed::Local(local) => local,
        Routed::Cluster(cluster, timeout) => match forward(parts, body, conn, cluster, timeout).await {
            Ok(response) => return response,
            Err(error) => match rescue(error) {
                Rescue::Reply(local) => local,
                // Only plugins reset streams; none is on this path.
                Rescue::Reset => Local::new(503, Bytes::new()),
            },
        },
    };
    local_reply(local, grpc, conn)
}

/// Where the route table sends a request.
enum Routed<'a> {
    Local(Local),
    Cluster(&'a str, Option<std::time::Duration>),
}

fn route<'a>(parts: &http::request::Parts, conn: &'a ConnContext) -> Routed<'a> {
    let Some(matched) = conn.http.routes.route(parts) else { return Routed::Local(Local::no_route()) };
    match &matched.route.action {
        RouteAction::DirectResponse { status, body } => {
            Routed::Local(Local::new(*status, body.clone().map(Bytes::from).unwrap_or_default()))
        }
        RouteAction::Forward(forward) => match forward.plain_cluster() {
            Some(cluster) => Routed::Cluster(cluster, forward.timeout),
            None => unplain(),
        },
        RouteAction::Redirect(_) => unplain(),
    }
}

/// The connection manager takes this path only for plain route tables
/// (`RouteTable::is_plain`); anything else here is a bug, answered 500.
fn unplain<'a>() -> Routed<'a> {
    debug_assert!(false, "a route that is not plain on the fast path");
    Routed::Local(Local::new(500, Bytes::new()))
}

/// The response to a local reply: the head `Local::into_response` gives,
/// built for hyper directly (hyper adds the length).
pub(super) fn local_reply(local: Local, grpc: bool, conn: &ConnContext) -> Response<ResponseBody> {
    let flag = local.flag;
    let mut response = local_response(local, grpc, conn);
    if !conn.http.access_logs.is_empty() {
        response.extensions_mut().insert(StreamNotes { flag, ..StreamNotes::default() });
    }
    response
}

fn local_response(local: Local, grpc: bool, conn: &ConnContext) -> Response<ResponseBody> {
    if grpc {
        let (headers, body) = local.into_response(true);
        let mut response = hyper_response(&headers, &conn.http);
        *response.body_mut() = ResponseBody::full(body);
        return response;
    }
    let mut response = Response::new(ResponseBody::full(local.body.clone()));
    *response.status_mut() =
        http::StatusCode::from_u16(local.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if !local.body.is_empty() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    for (name, value) in &local.headers {
        if let (Ok(name), Ok(value)) =
            (header::HeaderName::from_bytes(name), HeaderValue::from_maybe_shared(value.clone()))
        {
            response.headers_mut().append(name, value);
        }
    }
    conn.http.set_server_header(response.headers_mut());
    response
}

/// Sends the request to `cluster` and streams the upstream's response back.
async fn forward(
    mut parts: http::request::Parts,
    body: CountedBody,
    conn: &ConnContext,
    cluster: &str,
    timeout: Option<std::time::Duration>,
) -> Result<Response<ResponseBody>, StreamError> {
    prepare_upstream_headers(&mut parts.headers, conn.http.generate_request_id, conn.connection_scheme());
    let logged = (!conn.http.access_logs.is_empty()).then(|| parts.headers.clone());
    let upstreams = conn.thread.upstreams();
    let envoy_headers = conn.http.envoy_headers;
    let response = upstreams
        .forward_parts(cluster, timeout, envoy_headers, parts, UpstreamBody::Streamed(body))
        .await
        .map_err(|error| {
            tracing::debug!(target: "upstream", "cluster {cluster}: {error}");
            StreamError::Upstream(error)
        })?;
    let (mut head, body) = response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    conn.http.set_server_header(&mut head.headers);
    if let Some(request_headers) = logged {
        // The connector records the peer of each connection.
        let upstream_host = head.extensions.get::<HttpInfo>().map(HttpInfo::remote_addr);
        let cluster = Some(cluster.to_owned());
        head.extensions.insert(StreamNotes {
            upstream_host,
            cluster,
            flag: None,
            request_headers: Some(request_headers),
            ..StreamNotes::default()
        });
    }
    Ok(Response::from_parts(head, ResponseBody::upstream(body, conn.http.limits.stream_idle_timeout)))
}

/// The request headers as the general path sends them upstream:
/// connection-level headers dropped (`te: trailers` kept), then
/// `x-forwarded-proto` and `x-request-id` added when absent.
fn prepare_upstream_headers(headers: &mut http::HeaderMap, generate_request_id: bool, scheme: &'static str) {
    let te_trailers = headers.get(header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    remove_hop_by_hop(headers);
    // hyper frames the body itself.
    headers.remove(header::CONTENT_LENGTH);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if generate_request_id {
        add_request_id(headers);
    }
}

/// Parsed once, not on every request.
const X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");

/// Drops the headers that describe one connection, not the message.
fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    // Most messages carry none: one pass over the names (already parsed)
    // spares each of them six lookups by name.
    if !headers.keys().any(|name| crate::headers::is_hop_by_hop(name.as_str().as_bytes())) {
        return;
    }
    for name in HOP_BY_HOP {
        if headers.contains_key(*name) {
            headers.remove(*name);
        }
    }
}
