//! The one place where a stream's failure becomes what the client gets.
//!
//! | failure | request phases | response phases |
//! | --- | --- | --- |
//! | a plugin failed (FAIL_CLOSED, FAIL_RELOAD, held failed) | 503, empty body | 503, empty body |
//! | a plugin closed the stream (`proxy_close_stream`) | reset | reset |
//! | upstream unreachable / reset before its headers | 503 with Envoy's text | - |
//! | upstream timeout (`route.timeout`) | 504 | - |
//! | request body over the buffer limit | 413 | - |
//! | request body broke off | 400 | - |
//! | response body over the buffer limit, or broke off | - | 502 |
//!
//! Replies made here go through the response filters that saw the request
//! when the failure came before the response phase, as Envoy's local
//! replies do; a failure in the response phase answers directly. A gRPC
//! request gets each reply in gRPC's form (see `conn_manager`). Once a
//! response streams without filters, an upstream failure can only reset
//! the stream (hyper does that).

use bytes::Bytes;
use ferry_host::HeaderMap;
use http::StatusCode;

use crate::filter::Side;
use crate::upstream::UpstreamError;

/// Why a stream cannot go on.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// A filter's plugin failed, and its policy fails the stream.
    PluginFailed,
    /// A filter closed the stream.
    PluginClosed,
    /// The upstream could not answer.
    Upstream(UpstreamError),
    /// A body larger than what the proxy buffers for filters.
    BodyTooLarge(Side),
    /// A body that broke off before its end.
    BodyBroken(Side),
}

/// A response the proxy makes itself.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(Bytes, Bytes)>,
    /// The gRPC status a plugin chose, for a gRPC request.
    pub(crate) grpc_status: Option<u32>,
    /// Envoy's response flag for why the proxy answered (access logs).
    pub(crate) flag: Option<&'static str>,
}

impl Local {
    pub(crate) fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Local { status, body: body.into(), headers: Vec::new(), grpc_status: None, flag: None }
    }

    /// No route matched: 404, Envoy's `NR`.
    pub(crate) fn no_route() -> Self {
        Local { flag: Some("NR"), ..Local::new(404, Bytes::new()) }
    }

    /// The route's cluster is not there (a `cluster_header` naming none, or
    /// an unknown one): Envoy's default `cluster_not_found_response_code`,
    /// 503, and its `NC` flag.
    pub(crate) fn no_cluster() -> Self {
        Local { flag: Some("NC"), ..Local::new(503, Bytes::new()) }
    }

    /// A route's `redirect`: the status and `location`, no body.
    pub(crate) fn redirect(status: u16, location: String) -> Self {
        Local {
            headers: vec![(Bytes::from_static(b"location"), Bytes::from(location))],
            ..Local::new(status, Bytes::new())
        }
    }
}

impl Local {
    /// The response map (`:status` first) and body of this reply, as
    /// Envoy makes it: the reply's headers, then `content-length` and
    /// `content-type: text/plain` when there is a body. A gRPC request gets
    /// gRPC's form instead: HTTP 200 with no body, `content-type:
    /// application/grpc`, `grpc-status` (the plugin's, or mapped from the
    /// HTTP status) and the body text as `grpc-message`.
    pub(crate) fn into_response(self, grpc: bool) -> (HeaderMap, Bytes) {
        if grpc {
            return (self.grpc_headers(), Bytes::new());
        }
        let mut map = HeaderMap::with_capacity(3 + self.headers.len());
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        map.append_lowercase(Bytes::from_static(b":status"), Bytes::copy_from_slice(status.as_str().as_bytes()));
        for (name, value) in &self.headers {
            map.add(name, value);
        }
        if !self.body.is_empty() {
            if !map.contains(b"content-length") {
                map.append_lowercase(Bytes::from_static(b"content-length"), Bytes::from(self.body.len().to_string()));
            }
            if !map.contains(b"content-type") {
                map.append_lowercase(Bytes::from_static(b"content-type"), Bytes::from_static(b"text/plain"));
            }
        }
        (map, self.body)
    }

    fn grpc_headers(&self) -> HeaderMap {
        let grpc_status = self.grpc_status.unwrap_or(match self.status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => 2,
        });
        let mut map = HeaderMap::with_capacity(4 + self.headers.len());
        map.append_lowercase(Bytes::from_static(b":status"), Bytes::from_static(b"200"));
        for (name, value) in &self.headers {
            map.add(name, value);
        }
        map.replace(b"content-type", b"application/grpc");
        map.replace(b"grpc-status", grpc_status.to_string().as_bytes());
        if !self.body.is_empty() {
            map.replace(b"grpc-message", &self.body);
        }
        map
    }
}

impl From<ferry_host::LocalResponse> for Local {
    fn from(r: ferry_host::LocalResponse) -> Self {
        Local { status: r.status, body: r.body, headers: r.headers, grpc_status: r.grpc_status, flag: None }
    }
}

/// What the client gets.
#[derive(Debug)]
pub(crate) enum Rescue {
    /// This response.
    Reply(Local),
    /// A reset: the connection closes without a response.
    Reset,
}

/// What the client gets for `error`.
pub(crate) fn rescue(error: StreamError) -> Rescue {
    let reply = |status| Rescue::Reply(Local::new(status, Bytes::new()));
    match error {
        // Envoy's `wasm_fail_stream`: 503 with an empty body.
        StreamError::PluginFailed => reply(503),
        StreamError::PluginClosed => Rescue::Reset,
        StreamError::Upstream(error) => {
            let mut local = Local { flag: Some(error.flag()), ..Local::new(error.status(), error.to_string()) };
            if matches!(error, UpstreamError::Overflow) {
                // As Envoy's router says a circuit breaker refused the request.
                local.headers.push((Bytes::from_static(b"x-envoy-overloaded"), Bytes::from_static(b"true")));
            }
            Rescue::Reply(local)
        }
        StreamError::BodyTooLarge(Side::Request) => reply(413),
        StreamError::BodyBroken(Side::Request) => reply(400),
        StreamError::BodyTooLarge(Side::Response) | StreamError::BodyBroken(Side::Response) => reply(502),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: StreamError) -> Option<u16> {
        match rescue(error) {
            Rescue::Reply(local) => Some(local.status),
            Rescue::Reset => None,
        }
    }

    #[test]
    fn each_failure_gets_its_answer() {
        assert_eq!(status(StreamError::PluginFailed), Some(503));
        assert_eq!(status(StreamError::PluginClosed), None);
        assert_eq!(status(StreamError::Upstream(UpstreamError::Timeout)), Some(504));
        assert_eq!(status(StreamError::Upstream(UpstreamError::NoEndpoint)), Some(503));
        assert_eq!(status(StreamError::BodyTooLarge(Side::Request)), Some(413));
        assert_eq!(status(StreamError::BodyBroken(Side::Request)), Some(400));
        assert_eq!(status(StreamError::BodyTooLarge(Side::Response)), Some(502));
        assert_eq!(status(StreamError::BodyBroken(Side::Response)), Some(502));
    }
}
