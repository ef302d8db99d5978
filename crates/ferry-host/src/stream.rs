//! The data of one stream that plugins can see and change (an HTTP exchange,
//! or a TCP connection passing a network filter), and what a plugin can
//! decide about the stream.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use crate::headers::HeaderMap;

/// A stream as the embedder shares it with the host: lent to each callback
/// of its filters, and kept by a VM while one of its filters is stopped
/// there, so that the plugin's other callbacks (an HTTP call's response, a
/// tick) can read and change it. The embedder never holds a borrow across
/// a call into a VM.
pub type SharedStream = Rc<RefCell<HttpStream>>;

/// A [`SharedStream`] of `stream`.
pub fn share(stream: HttpStream) -> SharedStream {
    Rc::new(RefCell::new(stream))
}

/// Header maps and bodies of one HTTP stream, or the data of one TCP
/// connection (`downstream_data`, `upstream_data`; no header maps). The
/// embedder owns it and lends it to each plugin callback; the host decides per callback which maps a plugin may
/// read or write (as Envoy: request headers in `on_request_headers`,
/// response headers in `on_response_headers`, all of them read-only in `on_log`).
#[derive(Clone, Debug, Default)]
pub struct HttpStream {
    /// Request headers, pseudo-headers first.
    pub request_headers: HeaderMap,
    /// Request trailers.
    pub request_trailers: HeaderMap,
    /// Response headers, `:status` first. Empty until the response starts.
    pub response_headers: HeaderMap,
    /// Response trailers.
    pub response_trailers: HeaderMap,
    /// The request body a body callback sees (`HTTP_REQUEST_BODY`).
    pub request_body: Vec<u8>,
    /// The response body a body callback sees (`HTTP_RESPONSE_BODY`).
    pub response_body: Vec<u8>,
    /// Bytes from the client a network filter sees (`DOWNSTREAM_DATA`).
    pub downstream_data: Vec<u8>,
    /// Bytes from the upstream a network filter sees (`UPSTREAM_DATA`).
    pub upstream_data: Vec<u8>,
    /// What the embedder knows about the stream, for properties.
    pub info: StreamInfo,
}

/// Facts about a stream that plugins read as properties (`source.address`,
/// `request.time`, ...), and the values plugins set with `proxy_set_property`.
#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    /// The downstream peer.
    pub source: Option<std::net::SocketAddr>,
    /// The local address the connection came in on.
    pub destination: Option<std::net::SocketAddr>,
    /// A number unique to the downstream connection within the process.
    pub connection_id: u64,
    /// When the request's headers arrived.
    pub start: Option<std::time::SystemTime>,
    /// `HTTP/1.0`, `HTTP/1.1`, ...; empty for a TCP connection.
    pub protocol: &'static str,
    /// The upstream host the stream was sent to (`upstream.address`), once chosen.
    pub upstream: Option<std::net::SocketAddr>,
    /// Values set with `proxy_set_property` by any plugin of the stream,
    /// by path (segments joined with NUL).
    pub properties: Vec<(Bytes, Bytes)>,
    /// Envoy filter state set with the `set_envoy_filter_state` foreign
    /// function, by key (e.g. `envoy.tcp_proxy.cluster`).
    pub filter_state: Vec<(String, String)>,
    /// Where the configuration sends the stream (`xds.*` attributes).
    pub xds: crate::facts::XdsInfo,
    /// The stream's dynamic metadata (the `metadata` attribute).
    pub metadata: crate::facts::Metadata,
    /// What the downstream TLS handshake established, for a TLS connection.
    pub tls: Option<std::sync::Arc<crate::facts::TlsFacts>>,
    /// The local address of the upstream connection (`upstream.local_address`).
    pub upstream_local: Option<std::net::SocketAddr>,
    /// What the upstream TLS handshake established, when the cluster speaks TLS.
    pub upstream_tls: Option<std::sync::Arc<crate::facts::TlsFacts>>,
    /// Tries made upstream (`upstream.request_attempt_count`), once sent.
    pub upstream_attempts: Option<u32>,
}

impl StreamInfo {
    /// The filter state value under `key`, if a plugin set one.
    pub fn filter_state(&self, key: &str) -> Option<&str> {
        self.filter_state.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A response a plugin asked for with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response code details, for logs.
    pub details: String,
    /// Body.
    pub body: Bytes,
    /// Extra headers, in order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// A gRPC status to send, if any.
    pub grpc_status: Option<u32>,
}

/// What a stream callback decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the next filter.
    Continue,
    /// Stop iteration, with the action the plugin returned (never 0): for
    /// headers Envoy's `FilterHeadersStatus` (1 StopIteration, 3
    /// StopAllIterationAndBuffer, 4 StopAllIterationAndWatermark), for
    /// bodies its `FilterDataStatus` (1 StopIterationAndBuffer, 2
    /// StopIterationAndWatermark, 3 StopIterationNoBuffer), for trailers
    /// and TCP data StopIteration. The embedder reads it as Envoy does.
    Pause(u32),
    /// Answer with this response instead.
    LocalResponse(LocalResponse),
    /// Reset the stream (`proxy_close_stream`).
    Close,
}

/// What a plugin asked for a stream from outside that stream's own header
/// callback: typically from `proxy_on_http_call_response`, after
/// `proxy_set_effective_context` made the stream's context the acting one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamAction {
    /// `proxy_continue_stream(HTTP_REQUEST)` (or `DOWNSTREAM`): the request
    /// goes on from where it stopped (for a TCP connection: the client's
    /// direction).
    Resume,
    /// `proxy_continue_stream(HTTP_RESPONSE)`: the response goes on from
    /// where it stopped.
    ResumeResponse,
    /// `proxy_continue_stream(UPSTREAM)`: a TCP connection's upstream
    /// direction goes on.
    ResumeUpstream,
    /// `proxy_close_stream`: reset the stream.
    Close,
    /// `proxy_send_local_response`: answer with this.
    LocalResponse(LocalResponse),
    /// Not the plugin's: its VM failed while the stream waited. The stream
    /// can be taken back with `unpark`; the plugin's failure policy applies.
    Failed,
}

/// A [`StreamAction`] for stream context `context_id` of VM instance `instance`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSignal {
    /// The VM instance.
    pub instance: crate::InstanceId,
    /// The stream context.
    pub context_id: u32,
    /// What to do.
    pub action: StreamAction,
}

/// An HTTP call a plugin made with `proxy_http_call`: the embedder sends it
/// and reports back with [`crate::WasmThread::on_http_call_response`].
#[derive(Clone, Debug)]
pub struct HttpCallRequest {
    /// The VM instance that made the call: the response goes back there,
    /// or nowhere if it was replaced meanwhile.
    pub instance: crate::InstanceId,
    /// The root context that gets `proxy_on_http_call_response`.
    pub context_id: u32,
    /// The call's token, as the plugin knows it.
    pub token: u32,
    /// The cluster to send it to.
    pub upstream: String,
    /// Request headers, `:method`, `:path` and `:authority` among them.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// `None`: no timeout.
    pub timeout: Option<std::time::Duration>,
}

/// A call the host no longer waits for: its stream ended, or its instance
/// was discarded. The embedder stops it; a response that still arrives is
/// dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cancelled {
    /// An HTTP call.
    HttpCall {
        /// The instance that made it.
        instance: crate::InstanceId,
        /// Its token.
        token: u32,
    },
    /// A gRPC call or stream.
    Grpc {
        /// The instance that opened it.
        instance: crate::InstanceId,
        /// Its token.
        token: u32,
    },
}

/// The answer to an HTTP call.
#[derive(Clone, Debug, Default)]
pub struct HttpCallResponse {
    /// Response headers, `:status` first.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
    /// Response trailers.
    pub trailers: HeaderMap,
}

/// Which callback is running, which decides what a plugin may touch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A root-context callback or VM start: no stream data.
    #[default]
    Root,
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_request_trailers`.
    RequestTrailers,
    /// `proxy_on_response_trailers`.
    ResponseTrailers,
    /// `proxy_on_log`: every map readable, none writable.
    Log,
    /// Stream callbacks with no map of their own (`proxy_on_done`, ...).
    StreamOther,
    /// `proxy_on_http_call_response`: the call's response maps and body.
    HttpCallResponse,
    /// `proxy_on_downstream_data`: the client's bytes.
    DownstreamData,
    /// `proxy_on_upstream_data`: the upstream's bytes.
    UpstreamData,
}

impl Phase {
    /// A callback of an HTTP stream that can pause, answer or close it.
    pub(crate) fn is_http_stream_callback(self) -> bool {
        matches!(
            self,
            Phase::RequestHeaders
                | Phase::ResponseHeaders
                | Phase::RequestBody
                | Phase::ResponseBody
                | Phase::RequestTrailers
                | Phase::ResponseTrailers
        )
    }
}
