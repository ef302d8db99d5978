//! The HTTP connection manager: what hyper hands it for each request.
//!
//! Each request is first checked as Envoy's codec checks it, told who the
//! client is, given its access-log entry and its stream timers; then it
//! goes through its stream's [`pipeline`] (filters, router, upstream,
//! response), which every request takes.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_host::HeaderMap;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::access_log::{Entry, StreamNotes};
use crate::counted::{CountedBody, Progress};
use crate::event_loop::ThreadLoop;
use crate::headers::to_hyper_headers;
use crate::http::body::ResponseBody;
use crate::http::pipeline;
use crate::http::rescue::Local;
use crate::http::stream_timers;
use crate::plan::HttpPlan;

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

/// A plugin closed the stream (`proxy_close_stream`): hyper drops the
/// connection without an answer, as a reset.
#[derive(Debug, thiserror::Error)]
#[error("a plugin closed the stream")]
pub(crate) struct StreamReset;

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
    let work = pipeline::serve(parts, body, client, conn.clone(), progress.clone());
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
                Ok(local_response(stream_timers::reply(expired), grpc, &conn))
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
/// HTTP/1.0 unless `accept_http_10` (426), a second `Host` (400), an
/// HTTP/2 `host` naming another entity than `:authority` (400: malformed,
/// RFC 9113 §8.3.1), a header
/// name with `_` under `headers_with_underscores_action: REJECT_REQUEST`
/// (400; `DROP_HEADER` removes them).
fn admissible(parts: &mut http::request::Parts, limits: &ferry_config::HttpLimits) -> Result<(), StatusCode> {
    if parts.version == http::Version::HTTP_10 && !limits.accept_http_10 {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    if parts.headers.get_all(http::header::HOST).iter().count() > 1 {
        return Err(StatusCode::BAD_REQUEST);
    }
    if parts.version == http::Version::HTTP_2
        && let (Some(authority), Some(host)) = (parts.uri.authority(), parts.headers.get(http::header::HOST))
        && !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
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

/// A hyper response (with an empty body) from a response map: status from
/// `:status`, the headers in order, then `server`.
pub(crate) fn hyper_response(headers: &HeaderMap, http: &HttpPlan) -> Response<ResponseBody> {
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

/// A local reply made outside a stream's pipeline (a stream timer's),
/// straight to the client.
fn local_response(mut local: Local, grpc: bool, conn: &ConnContext) -> Response<ResponseBody> {
    let flag = local.flag;
    let details = Some(std::mem::take(&mut local.details));
    let (headers, body) = local.into_response(grpc);
    let mut response = hyper_response(&headers, &conn.http);
    *response.body_mut() = ResponseBody::full(body);
    if !conn.http.access_logs.is_empty() {
        response.extensions_mut().insert(StreamNotes { flag, details, ..StreamNotes::default() });
    }
    response
}
