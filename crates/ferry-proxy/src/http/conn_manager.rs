//! The HTTP connection manager: the one place that walks a request through
//! its phases.
//!
//! ```text
//! decode headers → request filters (in order) → route
//!   → direct response | upstream | local reply (404, plugin, failure)
//!   → response filters (in reverse) → encode → on body end: log, done, delete
//! ```
//!
//! A filter that pauses the stream parks it in its VM and waits until a
//! later callback of the plugin (an HTTP call's response, a tick, a queue)
//! resumes, answers or closes it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_config::RouteAction;
use ferry_host::{
    FailurePolicy, HeaderMap, HttpStream, LocalResponse, PausedAt, PluginHandle, StreamAction, StreamContext,
    StreamInfo, Verdict, VmKey,
};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

mod body_filters;

use body_filters::Side;

use crate::http::body::{ResponseBody, StreamFinisher};
use crate::http::headers::{hyper_trailers, request_headers, response_headers, to_hyper_headers};
use crate::plan::HttpPlan;
use crate::upstream::UpstreamBody;
use crate::worker::WorkerShared;

/// Per-connection state shared by its requests.
pub(crate) struct ConnContext {
    pub(crate) worker: Rc<WorkerShared>,
    pub(crate) http: Arc<HttpPlan>,
    /// The downstream peer.
    pub(crate) source: SocketAddr,
    /// The local address it connected to.
    pub(crate) destination: Option<SocketAddr>,
    /// Unique in the process.
    pub(crate) id: u64,
}

/// The filters' view of one request: the stream's header maps and the
/// plugin contexts created for it.
struct Exchange {
    conn: Rc<ConnContext>,
    stream: HttpStream,
    /// One per filter that saw the request, in filter order.
    contexts: Vec<StreamContext>,
    /// While paused: the VM holding the stream (the last context's).
    parked_in: Option<VmKey>,
}

/// What the filters decided in one direction.
enum Decided {
    /// Every filter continued.
    Continue,
    /// A filter answered, or failed closed.
    Respond(Local),
    /// A filter closed the stream: reset it without a response.
    Reset,
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

/// A response the proxy makes itself.
struct Local {
    status: u16,
    body: Bytes,
    headers: Vec<(Bytes, Bytes)>,
    /// The gRPC status a plugin chose, for a gRPC request.
    grpc_status: Option<u32>,
}

impl Local {
    fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Local { status, body: body.into(), headers: Vec::new(), grpc_status: None }
    }
}

impl From<LocalResponse> for Local {
    fn from(r: LocalResponse) -> Self {
        Local { status: r.status, body: r.body, headers: r.headers, grpc_status: r.grpc_status }
    }
}

/// Handles one request. Every error becomes a response, except a stream
/// a plugin closed.
pub(crate) async fn handle(
    request: Request<Incoming>,
    conn: Rc<ConnContext>,
) -> Result<Response<ResponseBody>, StreamReset> {
    let (parts, body) = request.into_parts();
    if conn.http.filters.is_empty()
        && let Some(response) = answer_without_filters(&parts, &conn)
    {
        return Ok(response);
    }
    let request_headers = request_headers(&parts, conn.http.generate_request_id);
    let info = StreamInfo {
        source: Some(conn.source),
        destination: conn.destination,
        connection_id: conn.id,
        start: Some(std::time::SystemTime::now()),
        protocol: protocol(parts.version),
        ..StreamInfo::default()
    };
    let mut exchange = Exchange {
        conn,
        stream: HttpStream { request_headers, info, ..HttpStream::default() },
        contexts: Vec::new(),
        parked_in: None,
    };
    let reply = match exchange.request_filters(body.is_end_stream()).await {
        Decided::Continue => exchange.route(body).await,
        Decided::Respond(local) => exchange.local_reply(local),
        Decided::Reset => return Err(StreamReset),
    };
    let body = exchange.response_filters(reply).await?;
    Ok(exchange.encode(body))
}

/// Most of a body the proxy reads for filters (see [`body_filters`]): as
/// Envoy's default buffer limit. A larger request is answered 413, a larger
/// response 502.
const MAX_BUFFERED_BODY: usize = 1 << 20;

/// The `request.protocol` property.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The fast path of a connection manager without filters: no plugin sees
/// the request, so a direct response or a 404 needs no header maps at all.
/// `None` for a route to a cluster, which takes the general path.
fn answer_without_filters(parts: &http::request::Parts, conn: &ConnContext) -> Option<Response<ResponseBody>> {
    let authority = parts
        .headers
        .get(http::header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let (status, body) = match conn.http.routes.route(authority.unwrap_or_default(), path.as_bytes()) {
        None => (404, Bytes::new()),
        Some(RouteAction::DirectResponse { status, body }) => {
            (*status, body.clone().map(Bytes::from).unwrap_or_default())
        }
        Some(RouteAction::Cluster { .. }) => return None,
    };
    let mut response = Response::new(ResponseBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // The same headers `Exchange::local_reply` gives plugins: hyper adds the length.
    if !body.is_empty() {
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    }
    if let Ok(server) = http::HeaderValue::from_maybe_shared(conn.http.server_name.clone()) {
        response.headers_mut().insert(http::header::SERVER, server);
    }
    *response.body_mut() = ResponseBody::full(body);
    Some(response)
}

impl Exchange {
    /// Request headers through each filter in order, until one answers,
    /// closes or fails closed. A pause waits for the plugin.
    async fn request_filters(&mut self, end_of_stream: bool) -> Decided {
        let conn = self.conn.clone();
        let wasm = &conn.worker.wasm;
        for &index in &conn.http.filters {
            let handle = wasm.handle(index);
            let verdict = wasm.with(|vms| {
                let context = vms.create_http_stream(handle)?;
                let verdict = vms.on_request_headers(&context, &mut self.stream, end_of_stream);
                self.contexts.push(context);
                verdict
            });
            let decided = match verdict {
                Ok(verdict) => self.follow(verdict, self.contexts.len() - 1, PausedAt::RequestHeaders).await,
                // The host logged the failure; the plugin's policy decides.
                Err(_) => self.failure_policy(handle),
            };
            if !matches!(decided, Decided::Continue) {
                return decided;
            }
        }
        Decided::Continue
    }

    /// What a filter's verdict means for the stream; waits out a pause.
    async fn follow(&mut self, verdict: Verdict, context: usize, at: PausedAt) -> Decided {
        match verdict {
            Verdict::Continue => Decided::Continue,
            Verdict::LocalResponse(response) => Decided::Respond(response.into()),
            Verdict::Close => Decided::Reset,
            Verdict::Pause => self.wait(context, at).await,
        }
    }

    /// Parks the stream in the pausing plugin's VM and waits for the plugin
    /// to resume, answer or close it (or for its VM to fail).
    async fn wait(&mut self, context: usize, at: PausedAt) -> Decided {
        let wasm = self.conn.worker.wasm.clone();
        let handle = self.contexts[context].plugin();
        let vm_key = wasm.with(|vms| vms.plugin(handle).module.key());
        let stream = std::mem::take(&mut self.stream);
        let parked = wasm.with(|vms| vms.park(&self.contexts[context], stream, at));
        if let Some(stream) = parked {
            self.stream = stream;
            return self.failure_policy(handle);
        }
        self.parked_in = Some(vm_key);
        let action = wasm.wait_for(vm_key, self.contexts[context].id()).await.unwrap_or(StreamAction::Failed);
        self.parked_in = None;
        self.stream = wasm.with(|vms| vms.unpark(&self.contexts[context])).unwrap_or_default();
        match action {
            StreamAction::Resume | StreamAction::ResumeUpstream => Decided::Continue,
            StreamAction::Close => Decided::Reset,
            StreamAction::LocalResponse(response) => Decided::Respond(response.into()),
            StreamAction::Failed => self.failure_policy(handle),
        }
    }

    /// Fail closed: 503 with an empty body (Envoy's `wasm_fail_stream`).
    /// Fail open: go on without the plugin.
    fn failure_policy(&self, handle: PluginHandle) -> Decided {
        let wasm = &self.conn.worker.wasm;
        match wasm.with(|vms| vms.plugin(handle).failure_policy) {
            FailurePolicy::FailOpen => Decided::Continue,
            FailurePolicy::FailClosed => Decided::Respond(Local::new(503, Bytes::new())),
        }
    }

    /// Routes on the request headers as the filters left them.
    async fn route(&mut self, body: Incoming) -> Reply {
        let headers = &self.stream.request_headers;
        let authority = headers.get(b":authority").cloned().unwrap_or_default();
        let path = headers.get(b":path").cloned().unwrap_or_default();
        let http = self.conn.http.clone();
        match http.routes.route(&authority, &path) {
            None => self.local_reply(Local::new(404, Bytes::new())),
            Some(RouteAction::DirectResponse { status, body }) => {
                self.local_reply(Local::new(*status, body.clone().map(Bytes::from).unwrap_or_default()))
            }
            Some(RouteAction::Cluster { name, timeout }) => {
                let body = match self.request_body_filters(body).await {
                    Ok(body) => body,
                    Err(Decided::Respond(local)) => return self.local_reply(local),
                    Err(_) => return self.local_reply(Local::new(503, Bytes::new())),
                };
                let worker = self.conn.worker.clone();
                match worker.wasm.upstreams.forward(name, *timeout, &self.stream.request_headers, body).await {
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        self.stream.response_headers = response_headers(parts.status, &parts.headers);
                        // The connector records the peer of each connection (`upstream.address`).
                        self.stream.info.upstream = parts
                            .extensions
                            .get::<hyper_util::client::legacy::connect::HttpInfo>()
                            .map(|i| i.remote_addr());
                        Reply::Upstream(body)
                    }
                    Err(error) => {
                        tracing::debug!(target: "upstream", "cluster {name}: {error}");
                        self.local_reply(Local::new(error.status(), error.to_string()))
                    }
                }
            }
        }
    }

    /// The request body on its way upstream. With no filter it streams;
    /// with filters it goes through them chunk by chunk (see
    /// [`body_filters`]) and is sent as they left it, with its trailers.
    async fn request_body_filters(&mut self, body: Incoming) -> Result<UpstreamBody, Decided> {
        if self.contexts.is_empty() || body.is_end_stream() {
            return Ok(UpstreamBody::Streamed(body));
        }
        let filtered = self.filter_body(Side::Request, body).await?;
        let trailers = filtered.trailers.map(|t| hyper_trailers(&t).0);
        let data = (!filtered.data.is_empty()).then_some(filtered.data);
        Ok(UpstreamBody::Full(data, trailers))
    }

    /// A response the proxy makes, to go through the response filters.
    fn local_reply(&mut self, local: Local) -> Reply {
        Reply::Local(self.local_response(local))
    }

    /// Sets the response headers of a local reply, as Envoy's: `:status`,
    /// the extra headers, then `content-length` and `content-type:
    /// text/plain` when there is a body; returns the body. A gRPC request
    /// gets a gRPC answer instead (see [`Exchange::grpc_local_response`]).
    fn local_response(&mut self, local: Local) -> Bytes {
        let is_grpc =
            self.stream.request_headers.get(b"content-type").is_some_and(|t| t.starts_with(b"application/grpc"));
        if is_grpc {
            return self.grpc_local_response(local);
        }
        let mut map = HeaderMap::with_capacity(3 + local.headers.len());
        let status = StatusCode::from_u16(local.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        map.append_lowercase(Bytes::from_static(b":status"), Bytes::copy_from_slice(status.as_str().as_bytes()));
        for (name, value) in &local.headers {
            map.add(name, value);
        }
        if !local.body.is_empty() {
            if !map.contains(b"content-length") {
                map.append_lowercase(Bytes::from_static(b"content-length"), Bytes::from(local.body.len().to_string()));
            }
            if !map.contains(b"content-type") {
                map.append_lowercase(Bytes::from_static(b"content-type"), Bytes::from_static(b"text/plain"));
            }
        }
        self.stream.response_headers = map;
        local.body
    }

    /// A local reply to a gRPC request, as Envoy makes it: HTTP 200 with no
    /// body, `content-type: application/grpc`, `grpc-status` (the plugin's,
    /// or mapped from the HTTP status) and the body text as `grpc-message`.
    fn grpc_local_response(&mut self, local: Local) -> Bytes {
        let grpc_status = local.grpc_status.unwrap_or(match local.status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => 2,
        });
        let mut map = HeaderMap::with_capacity(4 + local.headers.len());
        map.append_lowercase(Bytes::from_static(b":status"), Bytes::from_static(b"200"));
        for (name, value) in &local.headers {
            map.add(name, value);
        }
        map.replace(b"content-type", b"application/grpc");
        map.replace(b"grpc-status", grpc_status.to_string().as_bytes());
        if !local.body.is_empty() {
            map.replace(b"grpc-message", &local.body);
        }
        self.stream.response_headers = map;
        Bytes::new()
    }

    /// Response headers through the filters that saw the request, in
    /// reverse order. A filter may replace the response, pause or close it.
    async fn response_filters(&mut self, mut reply: Reply) -> Result<ResponseBody, StreamReset> {
        let wasm = self.conn.worker.wasm.clone();
        for i in (0..self.contexts.len()).rev() {
            let end_of_stream = match &reply {
                Reply::Local(body) => body.is_empty(),
                Reply::Upstream(body) => body.is_end_stream(),
            };
            let verdict = wasm.with(|vms| vms.on_response_headers(&self.contexts[i], &mut self.stream, end_of_stream));
            let decided = match verdict {
                Ok(verdict) => self.follow(verdict, i, PausedAt::ResponseHeaders).await,
                Err(_) => self.failure_policy(self.contexts[i].plugin()),
            };
            match decided {
                Decided::Continue => {}
                Decided::Respond(local) => reply = self.local_reply(local),
                Decided::Reset => return Err(StreamReset),
            }
        }
        if self.contexts.is_empty() {
            return Ok(match reply {
                Reply::Local(body) => ResponseBody::full(body),
                Reply::Upstream(body) => ResponseBody::upstream(body),
            });
        }
        // The body (and trailers) through the filters, in reverse order.
        let filtered = match reply {
            Reply::Local(body) => self.filter_whole_body(Side::Response, body).await.map(|data| (data, None)),
            Reply::Upstream(body) => self.filter_body(Side::Response, body).await.map(|f| (f.data, f.trailers)),
        };
        let (body, trailers) = match filtered {
            Ok(filtered) => filtered,
            // Nothing was sent yet: a filter's answer (or a failure) replaces the response.
            Err(Decided::Respond(local)) => (self.local_response(local), None),
            Err(Decided::Reset) => return Err(StreamReset),
            Err(Decided::Continue) => unreachable!("a continue is not an error"),
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
        let headers = &self.stream.response_headers;
        let status = headers
            .get(b":status")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = Response::new(ResponseBody::full(Bytes::new()));
        *response.status_mut() = status;
        to_hyper_headers(headers, response.headers_mut());
        if let Ok(server) = http::HeaderValue::from_maybe_shared(self.conn.http.server_name.clone()) {
            response.headers_mut().insert(http::header::SERVER, server);
        }
        let finisher = StreamFinisher {
            wasm: self.conn.worker.wasm.clone(),
            contexts: std::mem::take(&mut self.contexts),
            stream: std::mem::take(&mut self.stream),
        };
        *response.body_mut() = body.finish_with(finisher);
        response
    }
}

impl Drop for Exchange {
    /// A stream that ends before its response (the client left, or it was
    /// reset) still ends its plugin contexts: log, done, delete.
    fn drop(&mut self) {
        if self.contexts.is_empty() {
            return;
        }
        let wasm = self.conn.worker.wasm.clone();
        if let (Some(vm_key), Some(context)) = (self.parked_in.take(), self.contexts.last()) {
            wasm.forget_waiter(vm_key, context.id());
            if let Some(stream) = wasm.with(|vms| vms.unpark(context)) {
                self.stream = stream;
            }
        }
        let contexts = std::mem::take(&mut self.contexts);
        let stream = &mut self.stream;
        wasm.with(|vms| {
            for context in contexts {
                vms.finish_http_stream(context, stream);
            }
        });
    }
}
