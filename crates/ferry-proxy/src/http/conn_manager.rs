//! The HTTP connection manager: the one place that walks a request through
//! its phases.
//!
//! ```text
//! decode headers → request filters (in order) → route
//!   → direct response | upstream | local reply (404, plugin, failure)
//!   → response filters (in reverse) → encode → on body end: log, done, delete
//! ```

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_config::RouteAction;
use ferry_host::{
    FailurePolicy, HeaderMap, HttpStream, LocalResponse, PluginFailure, PluginHandle, StreamContext, Verdict,
};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::http::body::{ResponseBody, StreamFinisher};
use crate::http::headers::{request_headers, response_headers, to_hyper_headers};
use crate::plan::HttpPlan;
use crate::worker::WorkerShared;

/// Per-connection state shared by its requests.
pub(crate) struct ConnContext {
    pub(crate) worker: Rc<WorkerShared>,
    pub(crate) http: Arc<HttpPlan>,
}

/// The filters' view of one request: the stream's header maps and the
/// plugin contexts created for it.
struct Exchange {
    conn: Rc<ConnContext>,
    stream: HttpStream,
    /// One per filter that saw the request, in filter order.
    contexts: Vec<StreamContext>,
}

/// What the request filters decided.
enum Decoded {
    /// Every filter continued: route the request.
    Continue,
    /// A filter answered, or failed closed.
    Respond(Local),
    /// A filter paused the request.
    Paused,
}

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
}

impl Local {
    fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Local { status, body: body.into(), headers: Vec::new() }
    }
}

impl From<LocalResponse> for Local {
    fn from(r: LocalResponse) -> Self {
        Local { status: r.status, body: r.body, headers: r.headers }
    }
}

/// Handles one request. Never fails: every error becomes a response.
pub(crate) async fn handle(
    request: Request<Incoming>,
    conn: Rc<ConnContext>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = request.into_parts();
    if conn.http.filters.is_empty()
        && let Some(response) = answer_without_filters(&parts, &conn)
    {
        return Ok(response);
    }
    let request_headers = request_headers(&parts, conn.http.generate_request_id);
    let mut exchange =
        Exchange { conn, stream: HttpStream { request_headers, ..HttpStream::default() }, contexts: Vec::new() };
    let reply = match exchange.request_filters(body.is_end_stream()) {
        Decoded::Continue => exchange.route(body).await,
        Decoded::Respond(local) => exchange.local_reply(local),
        // Nothing can resume a stream yet (proxy_continue_stream is not
        // implemented), so, as in Envoy when no plugin resumes it, the
        // request waits until the client gives up.
        Decoded::Paused => std::future::pending().await,
    };
    let body = exchange.response_filters(reply);
    Ok(exchange.encode(body))
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
    /// pauses or fails closed.
    fn request_filters(&mut self, end_of_stream: bool) -> Decoded {
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
            match verdict {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::LocalResponse(response)) => return Decoded::Respond(response.into()),
                Ok(Verdict::Pause) => return Decoded::Paused,
                Err(failure) => {
                    if let Some(local) = self.on_failure(handle, &failure) {
                        return Decoded::Respond(local);
                    }
                }
            }
        }
        Decoded::Continue
    }

    /// Fail closed: 503 with an empty body (Envoy's `wasm_fail_stream`).
    /// Fail open: go on without the plugin.
    fn on_failure(&self, handle: PluginHandle, _failure: &PluginFailure) -> Option<Local> {
        let wasm = &self.conn.worker.wasm;
        match wasm.with(|vms| vms.plugin(handle).failure_policy) {
            FailurePolicy::FailOpen => None,
            FailurePolicy::FailClosed => Some(Local::new(503, Bytes::new())),
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
                let worker = self.conn.worker.clone();
                match worker.upstreams.forward(name, *timeout, &self.stream.request_headers, body).await {
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        self.stream.response_headers = response_headers(parts.status, &parts.headers);
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

    /// Response headers of a local reply: `:status`, the extra headers,
    /// then `content-length` and `content-type: text/plain` when there is a
    /// body, as Envoy's local replies.
    fn local_reply(&mut self, local: Local) -> Reply {
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
        Reply::Local(local.body)
    }

    /// Response headers through the filters that saw the request, in
    /// reverse order. A filter may replace the response.
    fn response_filters(&mut self, mut reply: Reply) -> ResponseBody {
        let wasm = self.conn.worker.wasm.clone();
        for i in (0..self.contexts.len()).rev() {
            let end_of_stream = match &reply {
                Reply::Local(body) => body.is_empty(),
                Reply::Upstream(body) => body.is_end_stream(),
            };
            let verdict = wasm.with(|vms| vms.on_response_headers(&self.contexts[i], &mut self.stream, end_of_stream));
            let replacement = match verdict {
                Ok(Verdict::Continue) => None,
                Ok(Verdict::LocalResponse(response)) => Some(Local::from(response)),
                Ok(Verdict::Pause) => {
                    tracing::debug!(target: "http", "a plugin paused the response; resuming is not implemented yet");
                    None
                }
                Err(failure) => self.on_failure(self.contexts[i].plugin(), &failure),
            };
            if let Some(local) = replacement {
                reply = self.local_reply(local);
            }
        }
        match reply {
            Reply::Local(body) => ResponseBody::full(body),
            Reply::Upstream(body) => ResponseBody::upstream(body),
        }
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
