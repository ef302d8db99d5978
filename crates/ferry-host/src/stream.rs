//! The data of one HTTP stream that plugins can see and change, and what a
//! plugin can decide about the stream.

use bytes::Bytes;

use crate::headers::HeaderMap;

/// Header maps of one HTTP stream. The embedder owns it and lends it to each
/// plugin callback; the host decides per callback which maps a plugin may
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

/// What a header callback decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the next filter.
    Continue,
    /// Stop here until the plugin resumes the stream.
    Pause,
    /// Answer with this response instead.
    LocalResponse(LocalResponse),
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
    /// `proxy_on_log`: every map readable, none writable.
    Log,
    /// Stream callbacks with no map of their own (`proxy_on_done`, ...).
    StreamOther,
}
