//! The HTTP connection manager: the one place that walks a request through
//! its phases.
//!
//! ```text
//! decode headers → request filters (in order) → route
//!   → direct response | upstream | local reply (404, plugin)
//!   → response filters (in reverse) → encode → on body end: filters finish
//! ```
//!
//! Filters are [`HttpFilter`]s; what a Proxy-Wasm plugin does (pausing,
//! failing by its policy) stays inside [`WasmFilter`]. Every failure
//! becomes what the client gets in one function, [`rescue`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_config::RouteAction;
use ferry_host::{HeaderMap, HttpStream, StreamInfo};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

mod body_filters;
mod passthrough;

use crate::access_log::{Entry, StreamNotes};
use crate::counted::{CountedBody, Progress};
use crate::event_loop::ThreadLoop;
use crate::filter::{
    CompressorFilter, DecompressorFilter, Filter, FilterStatus, HeaderToMetadataFilter, HttpFilter, Side, WasmFilter,
};
use crate::headers::{hyper_trailers, protocol_name, request_headers, response_headers, to_hyper_headers};
use crate::http::body::{ResponseBody, StreamFinisher, WasmLoggers};
use crate::http::rescue::{Local, Rescue, StreamError, rescue};
use crate::http::routing;
use crate::http::stream_timers;
use crate::plan::FilterSpec;
use crate::plan::HttpPlan;
use crate::upstream::{RouteSend, UpstreamBody, UpstreamHost};

/// Per-connection state shared by its requests.
pub(crate) struct ConnContext {
    pub(crate) thread: Rc<ThreadLoop>,
    pub(crate) http: Arc<HttpPlan>,
    /// The downstream peer.
    pub(crate) source: SocketAddr,
    /// The local address it connected to.
    pub(crate) destination: Option<SocketAddr>,
    /// Unique in the process.
    pub(crate) id: u64,
    /// Requests in flight, for the idle timeout.
    pub(crate) activity: crate::connections::Activity,
    /// What the TLS handshake established, on a TLS connection.
    pub(crate) tls: Option<Arc<ferry_host::TlsFacts>>,
}

impl ConnContext {
    /// `https` on a TLS connection, else `http`: `x-forwarded-proto`.
    pub(crate) fn connection_scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `:scheme`: the connection's, unless `scheme_header_transformation` says which.
    pub(crate) fn scheme(&self) -> &'static str {
        self.http.scheme_to_overwrite.unwrap_or_else(|| self.connection_scheme())
    }
}

/// The filters' view of one request: the stream's header maps and the
/// filters that saw it.
struct Exchange {
    conn: Rc<ConnContext>,
    stream: HttpStream,
    /// One per filter that saw the request, in filter order.
    filters: Vec<Filter>,
    /// What the access log needs to know of the path the request took.
    notes: StreamNotes,
    /// Whether the stream went to the response body (which tells the Wasm
    /// access loggers when it ends); if not, dropping the exchange does.
    logged: bool,
    /// The route the request took (virtual host and route index): its
    /// response header changes apply to whatever answer goes back.
    route: Option<(usize, usize)>,
    /// The HTTP version the upstream answered in (how its body's end is told).
    upstream_version: http::Version,
    /// What the stream's timers watch; a route may set its own idle timeout there.
    progress: Option<Arc<Progress>>,
}

/// Why the filters ended a direction early.
enum Ending {
    /// A filter answered.
    Respond(Local),
    /// The stream cannot go on.
    Fail(StreamError),
}

/// `Ok` if a filter lets the stream go on, else how it ends.
fn go_on(status: FilterStatus) -> Result<(), Ending> {
    match status {
        FilterStatus::Continue | FilterStatus::Buffer => Ok(()),
        FilterStatus::Respond(response) => Err(Ending::Respond(response.into())),
        FilterStatus::Reset => Err(Ending::Fail(StreamError::PluginClosed)),
        // The host logged the failure.
        FilterStatus::Failed => Err(Ending::Fail(StreamError::PluginFailed)),
    }
}

/// A plugin closed the stream (`proxy_close_stream`): hyper drops the
/// connection without an answer, as a reset.
#[derive(Debug, thiserror::Error)]
#[error("a plugin closed the stream")]
pub(crate) struct StreamReset;

/// The response body before response filters run.
enum Reply {
    /// Made by the proxy (direct response, 404, plugin response, failure).
    Local(Bytes),
    /// Streamed from upstream.
    Upstream(Incoming),
}

/// Handles one request. Every failure becomes a response, except a reset.
/// With access logs configured, the request is logged when its response
/// body ends.
pub(crate) async fn handle(
    request: Request<Incoming>,
    conn: Rc<ConnContext>,
) -> Result<Response<ResponseBody>, StreamReset> {
    let _in_flight = conn.activity.begin();
    let (mut parts, body) = request.into_parts();
    conn.http.stats.request();
    if let Err(status) = admissible(&mut parts, &conn.http.limits) {
        conn.http.stats.response(status.as_u16());
        return Ok(bare_reply(status, parts.version));
    }
    // The client as the connection manager trusts it: the peer, or an
    // address from `x-forwarded-for` (see `forwarding`).
    let client = conn.http.forwarding.apply(&mut parts.headers, conn.source);
    let logs = &conn.http.access_logs;
    let addresses = (client, conn.destination);
    let generate_id = conn.http.generate_request_id;
    let entry = (!logs.is_empty()).then(|| Entry::begin(logs.clone(), &parts, addresses, generate_id));
    let limits = &conn.http.limits;
    let timed = stream_timers::any(limits, conn.http.routes.has_idle_timeouts());
    let progress = timed.then(|| Arc::new(Progress::new(body.is_end_stream())));
    let body = CountedBody::new(body, entry.as_ref().map(|e| e.received.clone()), progress.clone());
    let grpc =
        parts.headers.get(http::header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let work = async {
        if conn.http.filters.is_empty() && conn.http.wasm_loggers.is_empty() && conn.http.routes.is_plain() {
            // No plugin sees the request, no route changes it: it goes on as hyper parsed it.
            Ok(passthrough::handle(parts, body, &conn).await)
        } else {
            filtered(parts, body, client, conn.clone(), progress.clone()).await
        }
    };
    // Pinned where it is: the select below then moves a reference, not the
    // whole request's state machine.
    let mut work = std::pin::pin!(work);
    let result = match &progress {
        None => work.await,
        Some(progress) => tokio::select! {
            biased;
            result = &mut work => result,
            // The request's handling (and its filters) is dropped: the timer answers.
            expired = stream_timers::expiry(limits, progress) => {
                tracing::debug!(target: "http", "{expired:?} timeout before the response: 408");
                Ok(passthrough::local_reply(stream_timers::reply(expired), grpc, &conn))
            }
        },
    };
    if let Ok(response) = &result {
        conn.http.stats.response(response.status().as_u16());
    }
    let Some(mut entry) = entry else { return result };
    match result {
        Ok(response) => {
            let (mut head, body) = response.into_parts();
            let notes = head.extensions.remove::<StreamNotes>().unwrap_or_default();
            entry.response(head.status.as_u16(), &head.headers, notes);
            Ok(Response::from_parts(head, body.log_with(entry)))
        }
        Err(reset) => {
            entry.finish(0, false);
            Err(reset)
        }
    }
}

/// What the codec refuses before anything else sees a request, as Envoy's:
/// HTTP/1.0 unless `accept_http_10` (426), a second `Host` (400), a header
/// name with `_` under `headers_with_underscores_action: REJECT_REQUEST`
/// (400; `DROP_HEADER` removes them).
fn admissible(parts: &mut http::request::Parts, limits: &ferry_config::HttpLimits) -> Result<(), StatusCode> {
    if parts.version == http::Version::HTTP_10 && !limits.accept_http_10 {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    if parts.headers.get_all(http::header::HOST).iter().count() > 1 {
        return Err(StatusCode::BAD_REQUEST);
    }
    let underscored = |headers: &http::HeaderMap| headers.keys().any(|name| name.as_str().contains('_'));
    match limits.underscores {
        ferry_config::UnderscoreAction::Allow => {}
        ferry_config::UnderscoreAction::Reject if underscored(&parts.headers) => return Err(StatusCode::BAD_REQUEST),
        ferry_config::UnderscoreAction::Reject => {}
        ferry_config::UnderscoreAction::Drop => {
            let names: Vec<http::HeaderName> =
                parts.headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
            for name in names {
                parts.headers.remove(name);
            }
        }
    }
    Ok(())
}

/// A reply with a status only (and `connection: close` for HTTP/1: the
/// codec gives up on a client that sent a request it refuses).
fn bare_reply(status: StatusCode, version: http::Version) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::new()));
    *response.status_mut() = status;
    if version < http::Version::HTTP_2 {
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

/// The general path: the request through the Wasm filters.
async fn filtered(
    parts: http::request::Parts,
    body: CountedBody,
    client: SocketAddr,
    conn: Rc<ConnContext>,
    progress: Option<Arc<Progress>>,
) -> Result<Response<ResponseBody>, StreamReset> {
    let request_headers =
        request_headers(&parts, conn.http.generate_request_id, (conn.scheme(), conn.connection_scheme()));
    let info = StreamInfo {
        source: Some(client),
        destination: conn.destination,
        connection_id: conn.id,
        start: Some(std::time::SystemTime::now()),
        protocol: protocol_name(parts.version),
        xds: ferry_host::XdsInfo { listener: Some(conn.http.listener.clone()), ..Default::default() },
        tls: conn.tls.clone(),
        ..StreamInfo::default()
    };
    let stream = HttpStream { request_headers, info, ..HttpStream::default() };
    let mut exchange = Exchange {
        conn,
        stream,
        filters: Vec::new(),
        notes: StreamNotes::default(),
        logged: false,
        route: None,
        upstream_version: http::Version::HTTP_11,
        progress,
    };
    let reply = match exchange.request_path(body).await {
        Ok(reply) => reply,
        Err(error) => match rescue(error) {
            Rescue::Reply(local) => exchange.local_reply(local),
            Rescue::Reset => return Err(StreamReset),
        },
    };
    let body = match exchange.response_filters(reply).await {
        Ok(body) => body,
        // Nothing was sent yet: the rescue's reply replaces the response.
        Err(error) => match rescue(error) {
            Rescue::Reply(local) => ResponseBody::full(exchange.local_response(local)),
            Rescue::Reset => return Err(StreamReset),
        },
    };
    Ok(exchange.encode(body))
}

impl Exchange {
    /// The request filters, then the route: a reply to send back through
    /// the response filters.
    async fn request_path(&mut self, body: CountedBody) -> Result<Reply, StreamError> {
        // Plugins read the route and cluster from the first callback on, as
        // in Envoy, which chooses the route before its filters run.
        let http = self.conn.http.clone();
        if let Some(matched) = http.routes.route(&self.stream.request_headers) {
            self.stream.info.xds.route = Some(matched.facts.clone());
            if let RouteAction::Forward(forward) = &matched.route.action
                && let ferry_config::ClusterTarget::Named(name) = &forward.target
            {
                self.stream.info.xds.cluster = self.conn.thread.upstreams().cluster_facts(name);
            }
        }
        match self.request_filters(body.is_end_stream()).await {
            Ok(()) => self.route(body).await,
            Err(Ending::Respond(local)) => Ok(self.local_reply(local)),
            Err(Ending::Fail(error)) => Err(error),
        }
    }

    /// Request headers through each filter in order, until one answers,
    /// closes or fails the stream.
    async fn request_filters(&mut self, end_of_stream: bool) -> Result<(), Ending> {
        let conn = self.conn.clone();
        for spec in &conn.http.filters {
            // In the list before it runs: a stream dropped while the filter
            // waits still ends it.
            self.filters.push(match spec {
                FilterSpec::Wasm(index) => {
                    Filter::Wasm(WasmFilter::new(conn.thread.clone(), conn.thread.handle(*index)))
                }
                FilterSpec::HeaderToMetadata(rules) => Filter::HeaderToMetadata(HeaderToMetadataFilter(rules.clone())),
                FilterSpec::Compressor(plan) => Filter::Compressor(CompressorFilter::new(plan.clone())),
                FilterSpec::Decompressor(plan) => Filter::Decompressor(DecompressorFilter::new(plan.clone())),
            });
            let filter = self.filters.last_mut().expect("pushed above");
            go_on(filter.request_headers(&mut self.stream, end_of_stream).await)?;
        }
        Ok(())
    }

    /// Routes on the request headers as the filters left them (which may
    /// choose another route than before the filters, as Envoy's
    /// `clear_route_cache`), then carries out the route's action.
    async fn route(&mut self, body: CountedBody) -> Result<Reply, StreamError> {
        let http = self.conn.http.clone();
        let Some(matched) = http.routes.route(&self.stream.request_headers) else {
            return Ok(self.local_reply(Local::no_route()));
        };
        self.route = Some(matched.index);
        self.stream.info.xds.route = Some(matched.facts.clone());
        let forward = match &matched.route.action {
            RouteAction::DirectResponse { status, body } => {
                let body = body.clone().map(Bytes::from).unwrap_or_default();
                return Ok(self.local_reply(Local::new(*status, body)));
            }
            RouteAction::Redirect(redirect) => {
                let header = |name: &[u8]| {
                    String::from_utf8_lossy(self.stream.request_headers.get(name).map_or(&b""[..], |v| v)).into_owned()
                };
                let location =
                    routing::redirect_location(redirect, matched.route, &header(b":authority"), &header(b":path"));
                return Ok(self.local_reply(Local::redirect(redirect.status, location)));
            }
            RouteAction::Forward(forward) => forward,
        };
        let thread = self.conn.thread.clone();
        let chosen = routing::choose_cluster(&forward.target, &self.stream.request_headers);
        let Some((cluster, facts)) = chosen.and_then(|c| thread.upstreams().cluster_facts(&c).map(|f| (c, f))) else {
            return Ok(self.local_reply(Local::no_cluster()));
        };
        self.stream.info.xds.cluster = Some(facts);
        self.notes.cluster = Some(cluster.clone());
        if let (Some(progress), Some(idle)) = (&self.progress, forward.idle_timeout) {
            progress.override_idle(idle);
        }
        let mut body = match self.request_body_filters(body).await {
            Ok(body) => body,
            Err(Ending::Respond(local)) => return Ok(self.local_reply(local)),
            Err(Ending::Fail(error)) => return Err(error),
        };
        if forward.retry.is_some() {
            // A retried request is sent again: its body is held.
            body = match hold(body, http.buffer_limit).await {
                Ok(body) => body,
                Err(local) => return Ok(self.local_reply(local)),
            };
        }
        // The router's changes, after every filter, as Envoy's.
        let headers = &mut self.stream.request_headers;
        let path = String::from_utf8_lossy(headers.get(b":path").map_or(&b""[..], |p| p)).into_owned();
        let rewritten = routing::rewrite_path(
            matched.route,
            &path,
            forward.prefix_rewrite.as_deref(),
            forward.regex_rewrite.as_ref(),
        );
        if let Some(rewritten) = rewritten {
            if http.envoy_headers {
                headers.replace(b"x-envoy-original-path", path.as_bytes());
            }
            headers.replace(b":path", rewritten.as_bytes());
        }
        if let Some(host) = &forward.host_rewrite {
            headers.replace(b":authority", host.as_bytes());
        }
        routing::mutate_request(headers, http.routes.mutations(&matched));
        let send = RouteSend {
            timeout: forward.timeout,
            retry: forward.retry.as_ref(),
            envoy_headers: http.envoy_headers,
            auto_host_rewrite: forward.auto_host_rewrite,
        };
        let response =
            thread.upstreams().forward(&cluster, &send, &self.stream.request_headers, body).await.map_err(|error| {
                tracing::debug!(target: "upstream", "cluster {cluster}: {error} ({:?})", std::error::Error::source(&error));
                StreamError::Upstream(error)
            })?;
        let (parts, body) = response.into_parts();
        self.upstream_version = parts.version;
        self.stream.response_headers = response_headers(parts.status, &parts.headers);
        // The connector records each connection's addresses and TLS (`upstream.*`).
        let connection = parts.extensions.get::<hyper_util::client::legacy::connect::HttpInfo>();
        self.stream.info.upstream = connection.map(|i| i.remote_addr());
        self.stream.info.upstream_local = connection.map(|i| i.local_addr());
        self.stream.info.upstream_tls =
            parts.extensions.get::<crate::upstream::reporting::UpstreamTls>().map(|t| t.0.clone());
        self.stream.info.upstream_attempts = parts.extensions.get::<crate::upstream::Attempts>().map(|a| a.0);
        self.stream.info.xds.upstream_host_metadata =
            parts.extensions.get::<UpstreamHost>().map(|h| h.metadata.clone());
        Ok(Reply::Upstream(body))
    }

    /// The request body on its way upstream. With no filter it streams;
    /// with filters it goes through them chunk by chunk (see
    /// [`body_filters`]) and is sent as they left it, with its trailers.
    async fn request_body_filters(&mut self, body: CountedBody) -> Result<UpstreamBody, Ending> {
        if self.filters.is_empty() || body.is_end_stream() {
            return Ok(UpstreamBody::Streamed(body));
        }
        let http1 = self.stream.info.protocol != "HTTP/2";
        let filtered = self.filter_body(Side::Request, body, http1).await?;
        let trailers = filtered.trailers.map(|t| hyper_trailers(&t).0);
        let data = (!filtered.data.is_empty()).then_some(filtered.data);
        Ok(UpstreamBody::Full(data, trailers))
    }

    /// A response the proxy makes, to go through the response filters.
    fn local_reply(&mut self, local: Local) -> Reply {
        Reply::Local(self.local_response(local))
    }

    /// Sets the response headers of a local reply (see
    /// [`Local::into_response`]); returns its body.
    fn local_response(&mut self, local: Local) -> Bytes {
        let grpc = is_grpc(&self.stream.request_headers);
        self.notes.flag = local.flag;
        let (headers, body) = local.into_response(grpc);
        self.stream.response_headers = headers;
        body
    }

    /// Response headers through the filters that saw the request, in
    /// reverse order, then the body and trailers. A filter may replace the
    /// response, pause or close it.
    async fn response_filters(&mut self, mut reply: Reply) -> Result<ResponseBody, StreamError> {
        // The route's response headers go on whatever answer it gave, as
        // Envoy's router finalizes its responses and local replies.
        if let Some((host, route)) = self.route {
            let http = self.conn.http.clone();
            let matched = http.routes.at(host, route);
            routing::mutate_response(&mut self.stream.response_headers, http.routes.mutations(&matched));
        }
        for i in (0..self.filters.len()).rev() {
            let end_of_stream = match &reply {
                Reply::Local(body) => body.is_empty(),
                Reply::Upstream(body) => body.is_end_stream(),
            };
            match go_on(self.filters[i].response_headers(&mut self.stream, end_of_stream).await) {
                Ok(()) => {}
                Err(Ending::Respond(local)) => reply = self.local_reply(local),
                Err(Ending::Fail(error)) => return Err(error),
            }
        }
        let ended = match &reply {
            Reply::Local(body) => body.is_empty(),
            Reply::Upstream(body) => body.is_end_stream(),
        };
        // A response that ended on its headers has no body calls, as in Envoy.
        if self.filters.is_empty() || ended {
            return Ok(match reply {
                Reply::Local(body) => ResponseBody::full(body),
                Reply::Upstream(body) => ResponseBody::upstream(body, self.idle_timeout()),
            });
        }
        // The body (and trailers) through the filters, in reverse order.
        let filtered = match reply {
            Reply::Local(body) => self.filter_whole_body(Side::Response, body).await.map(|data| (data, None)),
            Reply::Upstream(body) => {
                let http1 = self.upstream_version < http::Version::HTTP_2;
                self.filter_body(Side::Response, body, http1).await.map(|f| (f.data, f.trailers))
            }
        };
        let (body, trailers) = match filtered {
            Ok(filtered) => filtered,
            // Nothing was sent yet: a filter's answer replaces the response.
            Err(Ending::Respond(local)) => (self.local_response(local), None),
            Err(Ending::Fail(error)) => return Err(error),
        };
        let Some(trailers) = trailers else { return Ok(ResponseBody::full(body)) };
        let (trailers, announce) = hyper_trailers(&trailers);
        if let Some(announce) = announce {
            self.stream.response_headers.replace(b"trailer", announce.as_bytes());
        }
        Ok(ResponseBody::with_trailers(body, trailers))
    }

    /// The hyper response: status from `:status`, the headers as the plugins
    /// left them, then `server`. The body ends the plugin contexts when done.
    fn encode(mut self, body: ResponseBody) -> Response<ResponseBody> {
        let mut response = hyper_response(&self.stream.response_headers, &self.conn.http);
        if !self.conn.http.access_logs.is_empty() {
            let mut notes = std::mem::take(&mut self.notes);
            notes.upstream_host = self.stream.info.upstream;
            notes.note_filter_state(&self.stream.info);
            let mut request = http::HeaderMap::new();
            to_hyper_headers(&self.stream.request_headers, &mut request);
            notes.request_headers = Some(request);
            response.extensions_mut().insert(notes);
        }
        let finisher = StreamFinisher {
            filters: std::mem::take(&mut self.filters),
            stream: std::mem::take(&mut self.stream),
            loggers: self.wasm_loggers(),
        };
        self.logged = true;
        *response.body_mut() = body.finish_with(finisher);
        response
    }
}

impl Exchange {
    /// The stream idle timeout: the route's, else the connection manager's.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        let default = self.conn.http.limits.stream_idle_timeout;
        self.progress.as_ref().map_or(default, |p| p.idle_timeout(default))
    }

    fn wasm_loggers(&self) -> WasmLoggers {
        WasmLoggers { thread: self.conn.thread.clone(), loggers: self.conn.http.wasm_loggers.clone() }
    }
}

/// A hyper response (with an empty body) from a response map: status from
/// `:status`, the headers in order, then `server`.
pub(super) fn hyper_response(headers: &HeaderMap, http: &HttpPlan) -> Response<ResponseBody> {
    let status = headers
        .get(b":status")
        .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(ResponseBody::full(Bytes::new()));
    *response.status_mut() = status;
    to_hyper_headers(headers, response.headers_mut());
    http.set_server_header(response.headers_mut());
    response
}

/// Whether a request is gRPC (its local replies then take gRPC's form).
fn is_grpc(request_headers: &HeaderMap) -> bool {
    request_headers.get(b"content-type").is_some_and(|t| t.starts_with(b"application/grpc"))
}

impl Drop for Exchange {
    /// A stream that ends before its response (the client left, or it was
    /// reset) still ends its filters, with the stream back from a filter
    /// that held it.
    fn drop(&mut self) {
        let mut filters = std::mem::take(&mut self.filters);
        for filter in &mut filters {
            filter.reclaim(&mut self.stream);
        }
        for filter in filters {
            filter.finish(&mut self.stream);
        }
        if !self.logged {
            self.wasm_loggers().log(&mut self.stream);
        }
    }
}

/// Reads a body that streams into memory, to send it more than once (a
/// route that retries); past `limit` (the listener's buffer limit) the
/// request is answered 413, as a body too large for the filters.
async fn hold(body: UpstreamBody, limit: usize) -> Result<UpstreamBody, Local> {
    use http_body_util::BodyExt as _;
    let UpstreamBody::Streamed(streamed) = body else { return Ok(body) };
    match http_body_util::Limited::new(streamed, limit).collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            Ok(UpstreamBody::Full((!data.is_empty()).then_some(data), trailers))
        }
        Err(_) => Err(Local::new(413, "Payload Too Large")),
    }
}
