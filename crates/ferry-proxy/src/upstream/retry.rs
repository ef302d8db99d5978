//! A route's `retry_policy`: which answers and failures are tried again,
//! and how long to wait between tries (Envoy's defaults: 25 ms base,
//! doubling, at most 250 ms, fully jittered).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_config::RetryPolicy;
use http_body::Frame;

use super::{UpstreamBody, UpstreamError};

const BASE_INTERVAL: Duration = Duration::from_millis(25);
const MAX_INTERVAL: Duration = Duration::from_millis(250);

/// Whether an upstream's answer is retried.
pub(super) fn on_status(policy: &RetryPolicy, status: u16) -> bool {
    policy.retry_on.iter().any(|condition| match condition.as_str() {
        "5xx" => (500..600).contains(&status),
        "gateway-error" => matches!(status, 502..=504),
        "retriable-4xx" => status == 409,
        "retriable-status-codes" => policy.retriable_status_codes.contains(&status),
        _ => false,
    })
}

/// Whether a failure to get an answer is retried: a connection that could
/// not be made, was reset, or a try that timed out.
pub(super) fn on_error(policy: &RetryPolicy, error: &UpstreamError) -> bool {
    policy.retry_on.iter().any(|condition| match (condition.as_str(), error) {
        ("5xx" | "gateway-error" | "reset", UpstreamError::Connect(_) | UpstreamError::Timeout) => true,
        ("connect-failure", UpstreamError::Connect(e)) => e.is_connect(),
        ("refused-stream", UpstreamError::Connect(e)) => !e.is_connect(),
        _ => false,
    })
}

/// How long to wait before try `attempt + 1`: a random time below the
/// base interval doubled `attempt - 1` times, capped.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_INTERVAL.saturating_mul(1 << (attempt - 1).min(8)).min(MAX_INTERVAL);
    ceiling.mul_f64(fastrand::f64())
}

/// A copy of a retrying route's request body as it streams upstream, to
/// send again on a retry. As Envoy's router, it holds at most the buffer
/// limit; a body that outgrows it, or that has not ended when a retriable
/// answer comes, is not retried (the answer stands).
#[derive(Clone)]
pub(crate) struct BodyRecording(Arc<Mutex<Recording>>);

struct Recording {
    limit: usize,
    /// The body's declared length: hyper reads no further once it is sent.
    length: Option<u64>,
    /// Data bytes seen.
    seen: u64,
    data: BytesMut,
    trailers: Option<http::HeaderMap>,
    /// The body's last piece was recorded.
    complete: bool,
    /// The body outgrew the limit: what is held is dropped.
    overflowed: bool,
}

impl BodyRecording {
    /// A recording of at most `limit` bytes, of a body of `length`, if known.
    pub(crate) fn new(limit: usize, length: Option<u64>) -> Self {
        BodyRecording(Arc::new(Mutex::new(Recording {
            limit,
            length,
            seen: 0,
            data: BytesMut::new(),
            trailers: None,
            complete: false,
            overflowed: false,
        })))
    }

    /// Records a frame on its way upstream (`last`: the body ends with it).
    pub(super) fn record(&self, frame: &Frame<Bytes>, last: bool) {
        let mut recording = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(data) = frame.data_ref() {
            recording.seen += data.len() as u64;
            if recording.overflowed || recording.data.len() + data.len() > recording.limit {
                recording.overflowed = true;
                recording.data = BytesMut::new();
            } else {
                recording.data.extend_from_slice(data);
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            recording.trailers = Some(trailers.clone());
        }
        let all_there = recording.length == Some(recording.seen);
        recording.complete |= last || frame.is_trailers() || all_there;
    }

    /// Whether the body ended within the limit: it can be sent again.
    pub(super) fn replayable(&self) -> bool {
        let recording = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recording.complete && !recording.overflowed
    }

    /// The whole body again, if it ended within the limit.
    pub(super) fn replay(&self) -> Option<UpstreamBody> {
        let recording = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !recording.complete || recording.overflowed {
            return None;
        }
        let data = (!recording.data.is_empty()).then(|| Bytes::copy_from_slice(&recording.data));
        Some(UpstreamBody::Full(data, recording.trailers.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &[&str], codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            retry_on: retry_on.iter().map(|s| (*s).to_owned()).collect(),
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: codes.to_vec(),
        }
    }

    #[test]
    fn statuses_retried_by_each_condition() {
        assert!(on_status(&policy(&["5xx"], &[]), 500));
        assert!(!on_status(&policy(&["gateway-error"], &[]), 500));
        assert!(on_status(&policy(&["gateway-error"], &[]), 503));
        assert!(on_status(&policy(&["retriable-4xx"], &[]), 409));
        assert!(on_status(&policy(&["retriable-status-codes"], &[418]), 418));
        assert!(!on_status(&policy(&["connect-failure"], &[]), 503));
        assert!(on_error(&policy(&["gateway-error"], &[]), &UpstreamError::Timeout));
        assert!(!on_error(&policy(&["retriable-4xx"], &[]), &UpstreamError::Timeout));
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        for attempt in 1..20 {
            let wait = backoff(attempt);
            assert!(wait <= MAX_INTERVAL);
            assert!(wait <= BASE_INTERVAL.saturating_mul(1 << (attempt - 1).min(8)));
        }
    }

    #[test]
    fn a_recording_replays_a_whole_body_within_the_limit() {
        let recording = BodyRecording::new(8, None);
        recording.record(&Frame::data(Bytes::from_static(b"abcd")), false);
        assert!(recording.replay().is_none(), "not ended yet");
        recording.record(&Frame::data(Bytes::from_static(b"ef")), true);
        let Some(UpstreamBody::Full(Some(data), None)) = recording.replay() else { panic!("a whole body") };
        assert_eq!(&data[..], b"abcdef");
    }

    #[test]
    fn a_recording_of_a_known_length_is_whole_once_it_is_all_there() {
        let recording = BodyRecording::new(8, Some(3));
        recording.record(&Frame::data(Bytes::from_static(b"abc")), false);
        assert!(recording.replay().is_some());
    }

    #[test]
    fn a_recording_past_the_limit_is_not_replayed() {
        let recording = BodyRecording::new(4, None);
        recording.record(&Frame::data(Bytes::from_static(b"abc")), false);
        recording.record(&Frame::data(Bytes::from_static(b"de")), true);
        assert!(recording.replay().is_none());
    }

    #[test]
    fn a_recording_keeps_trailers() {
        let recording = BodyRecording::new(4, None);
        recording.record(&Frame::data(Bytes::from_static(b"ab")), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        recording.record(&Frame::trailers(trailers), false);
        let Some(UpstreamBody::Full(Some(data), Some(trailers))) = recording.replay() else {
            panic!("data and trailers")
        };
        assert_eq!(&data[..], b"ab");
        assert_eq!(trailers["grpc-status"], "0");
    }
}
