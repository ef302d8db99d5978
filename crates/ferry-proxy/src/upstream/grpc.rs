//! gRPC calls and streams plugins open, over HTTP/2 (cleartext, prior
//! knowledge) to an endpoint of the named cluster.
//!
//! Each call or stream is a task of the thread whose plugin opened it
//! (see `event_loop::calls`). It sends `POST /<service>/<method>` with `content-type: application/grpc`,
//! `te: trailers` and the plugin's initial metadata, then the messages the
//! plugin sends (each with gRPC's 5-byte length prefix), and reports back
//! what Envoy reports: for a unary call the response message, or a close
//! with its status; for a stream the response headers (initial metadata),
//! each message, the trailers (trailing metadata) and a close.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use ferry_host::{GrpcEvent, GrpcOpen, HeaderMap, grpc_status};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;

use super::Upstreams;
use crate::headers::{response_headers, trailers_map};

/// A request body fed by the plugin's `proxy_grpc_send`: ends when the
/// sender is dropped (half close).
pub(crate) struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl ChannelBody {
    pub(crate) fn new(messages: mpsc::UnboundedReceiver<Bytes>) -> Self {
        ChannelBody(messages)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().0.poll_recv(cx).map(|message| message.map(|m| Ok(Frame::data(m))))
    }
}

/// The `grpc-timeout` header for `timeout`: milliseconds, in the next
/// larger unit when they have more than gRPC's 8 digits (as Envoy writes it).
pub(crate) fn timeout_header(timeout: Duration) -> http::HeaderValue {
    const MAX_DIGITS: u128 = 99_999_999;
    let mut value = timeout.as_millis();
    let mut units = ['m', 'S', 'M', 'H'].into_iter();
    let mut unit = units.next().expect("a unit");
    let divisors = [1000, 60, 60];
    for (divisor, next) in divisors.into_iter().zip(units) {
        if value <= MAX_DIGITS {
            break;
        }
        value /= divisor;
        unit = next;
    }
    http::HeaderValue::from_str(&format!("{}{unit}", value.min(MAX_DIGITS))).expect("digits and a unit")
}

/// One message with gRPC's length prefix (uncompressed).
pub(crate) fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Runs a call or stream: sends the request, reports what comes back
/// with `report`, and ends with the close (a unary call that succeeded was
/// reported with its message instead).
pub(crate) async fn run(upstreams: &Upstreams, open: &GrpcOpen, body: ChannelBody, report: impl Fn(GrpcEvent)) {
    let unary = open.message.is_some();
    let exchange = exchange(upstreams, open, body, &report);
    let (status, message) = match open.timeout {
        Some(timeout) => match tokio::time::timeout(timeout, exchange).await {
            Ok(end) => end,
            Err(_) => (grpc_status::DEADLINE_EXCEEDED, "deadline exceeded".to_owned()),
        },
        None => exchange.await,
    };
    if !(unary && status == 0) {
        report(GrpcEvent::Close { status, message });
    }
}

/// The exchange itself; returns the gRPC status and message it ended with.
/// Streams have their metadata and messages reported as they come; a unary
/// call has its one message reported if it succeeded.
async fn exchange(
    upstreams: &Upstreams,
    open: &GrpcOpen,
    body: ChannelBody,
    report: &impl Fn(GrpcEvent),
) -> (u32, String) {
    let unary = open.message.is_some();
    let path = format!("/{}/{}", open.service, open.method);
    let response = match upstreams.grpc(&open.cluster, &path, &open.initial_metadata, open.timeout, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(target: "upstream", "gRPC call to {}: {error}", open.cluster);
            return (grpc_status::UNAVAILABLE, error.to_string());
        }
    };
    let (parts, mut body) = response.into_parts();
    if !parts.status.is_success() {
        return (grpc_status::UNAVAILABLE, format!("upstream answered HTTP {}", parts.status.as_u16()));
    }
    let mut headers = response_headers(parts.status, &parts.headers);
    headers.remove(b":status");
    // A "trailers-only" response carries its status in the headers.
    if let Some(end) = status_of(&headers) {
        return end;
    }
    if !unary {
        report(GrpcEvent::InitialMetadata(headers));
    }
    let mut pending = BytesMut::new();
    let mut unary_message = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return (grpc_status::UNAVAILABLE, error.to_string()),
        };
        match frame.into_data() {
            Ok(data) => {
                pending.extend_from_slice(&data);
                loop {
                    let message = match next_message(&mut pending) {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(too_large) => return (grpc_status::RESOURCE_EXHAUSTED, too_large),
                    };
                    if unary {
                        unary_message = Some(message);
                    } else {
                        report(GrpcEvent::Message(message));
                    }
                }
            }
            Err(frame) => {
                let Ok(trailers) = frame.into_trailers() else { continue };
                let trailers = trailers_map(&trailers);
                let end = status_of(&trailers).unwrap_or((grpc_status::UNKNOWN, "no grpc-status".into()));
                if unary {
                    if end.0 == 0 {
                        match unary_message {
                            Some(message) => report(GrpcEvent::Message(message)),
                            None => return (grpc_status::INTERNAL, "no response message".into()),
                        }
                    }
                } else {
                    report(GrpcEvent::TrailingMetadata(trailers));
                }
                return end;
            }
        }
    }
    (grpc_status::UNKNOWN, "the response ended without a grpc-status".into())
}

/// Largest response message reassembled for a plugin: as much as the host
/// hands a plugin in one value. A larger one ends the call
/// (`RESOURCE_EXHAUSTED`) before it is read, so a peer cannot make the
/// proxy hold an unbounded message.
const MAX_MESSAGE_BYTES: usize = ferry_host::MAX_VALUE_BYTES;

/// The next whole length-prefixed message in `pending`, if there is one;
/// `Err` as soon as a message declares more than [`MAX_MESSAGE_BYTES`].
fn next_message(pending: &mut BytesMut) -> Result<Option<Bytes>, String> {
    if pending.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(format!("a response message of {len} bytes is larger than {MAX_MESSAGE_BYTES}"));
    }
    if pending.len() < 5 + len {
        return Ok(None);
    }
    pending.advance(5);
    Ok(Some(pending.split_to(len).freeze()))
}

/// `grpc-status` and `grpc-message` of a header or trailer map.
fn status_of(map: &HeaderMap) -> Option<(u32, String)> {
    let status = std::str::from_utf8(map.get(b"grpc-status")?).ok()?.trim().parse().ok()?;
    let message = map.get(b"grpc-message").map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
    Some((status, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_length_prefixed_and_split_back() {
        let mut pending = BytesMut::new();
        pending.extend_from_slice(&framed(b"one"));
        pending.extend_from_slice(&framed(b""));
        pending.extend_from_slice(&framed(b"three")[..4]);
        assert_eq!(next_message(&mut pending).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(next_message(&mut pending).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(next_message(&mut pending), Ok(None), "a partial message waits");
        pending.extend_from_slice(&framed(b"three")[4..]);
        assert_eq!(next_message(&mut pending).unwrap().as_deref(), Some(&b"three"[..]));
    }

    #[test]
    fn a_message_declaring_more_than_the_cap_ends_the_call_before_it_is_read() {
        let mut pending = BytesMut::new();
        pending.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, b'x']);
        assert!(next_message(&mut pending).is_err());
        let mut pending = BytesMut::new();
        let at_cap = u32::try_from(MAX_MESSAGE_BYTES).unwrap().to_be_bytes();
        pending.extend_from_slice(&[0, at_cap[0], at_cap[1], at_cap[2], at_cap[3]]);
        assert_eq!(next_message(&mut pending), Ok(None), "at the cap, it waits for the rest");
    }

    #[test]
    fn grpc_timeout_is_milliseconds_until_they_need_more_than_eight_digits() {
        let header = |d| timeout_header(d).to_str().unwrap().to_owned();
        assert_eq!(header(Duration::from_millis(500)), "500m");
        assert_eq!(header(Duration::from_millis(99_999_999)), "99999999m");
        assert_eq!(header(Duration::from_secs(100_000)), "100000S");
        assert_eq!(header(Duration::from_secs(100_000_000 * 60)), "1666666H");
    }
}
