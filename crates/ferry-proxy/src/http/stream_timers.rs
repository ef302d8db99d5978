//! A stream's own timers, as Envoy's connection manager keeps them:
//! `stream_idle_timeout` (no data moving either way) and `request_timeout`
//! (the whole request not in yet). Until the response begins they race the
//! request's handling, and the first to expire answers 408; once the
//! response streams, the idle timer lives in its body (see `body.rs`).

use std::time::Instant;

use bytes::Bytes;
use ferry_config::HttpLimits;

use crate::counted::Progress;
use crate::http::rescue::Local;

/// Which timer expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// `stream_idle_timeout`.
    Idle,
    /// `request_timeout`.
    Request,
}

/// Whether a stream under `limits` may have a timer at all (`route_idle`:
/// some route sets its own idle timeout).
pub(crate) fn any(limits: &HttpLimits, route_idle: bool) -> bool {
    limits.stream_idle_timeout.is_some() || limits.request_timeout.is_some() || route_idle
}

/// Resolves when one of the stream's timers expires (never, if none can).
pub(crate) async fn expiry(limits: &HttpLimits, progress: &Progress) -> Expired {
    loop {
        let request =
            limits.request_timeout.filter(|_| !progress.complete()).map(|t| (progress.started() + t, Expired::Request));
        let idle =
            progress.idle_timeout(limits.stream_idle_timeout).map(|t| (progress.last_activity() + t, Expired::Idle));
        let Some((deadline, which)) = [request, idle].into_iter().flatten().min_by_key(|(at, _)| *at) else {
            return std::future::pending().await;
        };
        if deadline <= Instant::now() {
            return which;
        }
        // Data may move meanwhile: look again when this deadline comes.
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// The reply to an expired stream, as Envoy's: 408, with the `SI` flag for
/// an idle stream.
pub(crate) fn reply(expired: Expired) -> Local {
    match expired {
        Expired::Idle => {
            Local { flag: Some("SI"), ..Local::new(408, Bytes::from_static(b"stream timeout"), "stream_idle_timeout") }
        }
        Expired::Request => Local::new(408, Bytes::from_static(b"request timeout"), "request_overall_timeout"),
    }
}
