//! The one place where a stream's failure becomes what the client gets.
//!
//! | failure | before the response | response on its way, headers not sent | headers sent |
//! | --- | --- | --- | --- |
//! | a plugin failed (FAIL_CLOSED, FAIL_RELOAD, held failed) | 503 `wasm_fail_stream` | 503 | reset |
//! | a plugin closed the stream (`proxy_close_stream`) | reset | reset | reset |
//! | upstream unreachable / reset before its headers | 503 with Envoy's text | - | - |
//! | upstream timeout (`route.timeout`) | 504 `response_timeout` | - | - |
//! | a filter buffered more than the buffer limit | 413 `request_payload_too_large` | 500 `response_payload_too_large` | reset |
//! | request body broke off | 400 `http1.codec_error` | - | - |
//! | response body broke off | - | 502 | reset |
//!
//! Replies made before the response began go through the response filters,
//! as Envoy's local replies do; one made while the response is on its way
//! replaces it directly (Envoy's direct local reply). A gRPC request gets
//! each reply in gRPC's form.

use std::borrow::Cow;

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
    /// Envoy's response code details for it (`%RESPONSE_CODE_DETAILS%`).
    pub(crate) details: Cow<'static, str>,
}

impl Local {
    pub(crate) fn new(status: u16, body: impl Into<Bytes>, details: &'static str) -> Self {
        Local {
            status,
            body: body.into(),
            headers: Vec::new(),
            grpc_status: None,
            flag: None,
            details: Cow::Borrowed(details),
        }
    }

    /// A route's `direct_response`.
    pub(crate) fn direct(status: u16, body: Bytes) -> Self {
        Local::new(status, body, "direct_response")
    }

    /// No route matched: 404, Envoy's `NR`.
    pub(crate) fn no_route() -> Self {
        Local { flag: Some("NR"), ..Local::new(404, Bytes::new(), "route_not_found") }
    }

    /// The route's cluster is not there (a `cluster_header` naming none, or
    /// an unknown one): Envoy's default `cluster_not_found_response_code`,
    /// 503, and its `NC` flag.
    pub(crate) fn no_cluster() -> Self {
        Local { flag: Some("NC"), ..Local::new(503, Bytes::new(), "cluster_not_found") }
    }

    /// A route's `redirect`: the status and `location`, no body.
    pub(crate) fn redirect(status: u16, location: String) -> Self {
        Local {
            headers: vec![(Bytes::from_static(b"location"), Bytes::from(location))],
            ..Local::new(status, Bytes::new(), "direct_response")
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
    /// A plugin's (or a filter's) answer; its details as Envoy keeps them,
    /// with spaces made underscores.
    fn from(r: ferry_host::LocalResponse) -> Self {
        let details = if r.details.contains(char::is_whitespace) {
            Cow::Owned(r.details.replace(char::is_whitespace, "_"))
        } else {
            Cow::Owned(r.details)
        };
        Local { status: r.status, body: r.body, headers: r.headers, grpc_status: r.grpc_status, flag: None, details }
    }
}

/// What the client gets for `error`.
pub(crate) fn rescue(error: StreamError) -> Local {
    let reply = |status, details| Local::new(status, Bytes::new(), details);
    match error {
        // Envoy's `wasm_fail_stream`: 503 with an empty body.
        StreamError::PluginFailed => reply(503, "wasm_fail_stream"),
        StreamError::Upstream(error) => {
            let mut local =
                Local { flag: Some(error.flag()), ..Local::new(error.status(), error.to_string(), error.details()) };
            if matches!(error, UpstreamError::Overflow) {
                // As Envoy's router says a circuit breaker refused the request.
                local.headers.push((Bytes::from_static(b"x-envoy-overloaded"), Bytes::from_static(b"true")));
            }
            local
        }
        StreamError::BodyTooLarge(Side::Request) => {
            Local::new(413, Bytes::from_static(b"Payload Too Large"), "request_payload_too_large")
        }
        StreamError::BodyBroken(Side::Request) => reply(400, "http1.codec_error"),
        // Before the response headers went out (after, the stream is cut).
        StreamError::BodyTooLarge(Side::Response) => reply(500, "response_payload_too_large"),
        StreamError::BodyBroken(Side::Response) => reply(502, "upstream_reset_after_response_started{remote_reset}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: StreamError) -> Option<u16> {
        Some(rescue(error).status)
    }

    #[test]
    fn each_failure_gets_its_answer() {
        assert_eq!(status(StreamError::PluginFailed), Some(503));
        assert_eq!(status(StreamError::Upstream(UpstreamError::Timeout)), Some(504));
        assert_eq!(status(StreamError::Upstream(UpstreamError::NoEndpoint)), Some(503));
        assert_eq!(status(StreamError::BodyTooLarge(Side::Request)), Some(413));
        assert_eq!(status(StreamError::BodyBroken(Side::Request)), Some(400));
        assert_eq!(status(StreamError::BodyTooLarge(Side::Response)), Some(500));
        assert_eq!(status(StreamError::BodyBroken(Side::Response)), Some(502));
    }
}
