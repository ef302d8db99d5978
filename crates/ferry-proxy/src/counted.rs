//! A body that counts the bytes read from it (the access log's
//! `%BYTES_RECEIVED%`) and tells the stream's timers how it progresses:
//! when data last moved, and whether the whole request has come.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// How a request's body progresses, for `stream_idle_timeout` and
/// `request_timeout`. Shared with the body, which the upstream client may
/// read on another task.
#[derive(Debug)]
pub(crate) struct Progress {
    started: Instant,
    /// When data last moved, in milliseconds since `started`.
    last_ms: AtomicU64,
    /// The whole request has been read.
    complete: AtomicBool,
    /// The route's own idle timeout in milliseconds: 0 none, `u64::MAX` disabled.
    idle_override_ms: AtomicU64,
}

impl Progress {
    /// A request starting now; `complete` if it has no body.
    pub(crate) fn new(complete: bool) -> Self {
        Progress {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            complete: AtomicBool::new(complete),
            idle_override_ms: AtomicU64::new(0),
        }
    }

    /// Data moved.
    pub(crate) fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// When data last moved.
    pub(crate) fn last_activity(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Whether the whole request has been read.
    pub(crate) fn complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }

    /// The route chose its own idle timeout (`None`: disabled).
    pub(crate) fn override_idle(&self, idle: Option<Duration>) {
        let ms = idle.map_or(u64::MAX, |d| (d.as_millis() as u64).clamp(1, u64::MAX - 1));
        self.idle_override_ms.store(ms, Ordering::Relaxed);
    }

    /// The stream idle timeout: the route's, else the connection manager's `default`.
    pub(crate) fn idle_timeout(&self, default: Option<Duration>) -> Option<Duration> {
        match self.idle_override_ms.load(Ordering::Relaxed) {
            0 => default,
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// `Incoming`, counting its data bytes into a shared counter when there
/// is one (only requests being logged have one), and noting its progress.
pub(crate) struct CountedBody {
    inner: Incoming,
    count: Option<Arc<AtomicU64>>,
    progress: Option<Arc<Progress>>,
    /// Set when reading it failed (the client broke the body off).
    broken: Option<Arc<BodyFault>>,
}

/// How a client's body broke off, once it did: the client left (closed its
/// connection, or reset the stream), or sent something that is not HTTP.
#[derive(Default)]
pub(crate) struct BodyFault(AtomicU8);

/// What a [`BodyFault`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    ClientLeft,
    Malformed,
}

impl BodyFault {
    fn note(&self, error: &(dyn std::error::Error + 'static)) {
        let fault = if client_left(error) { 1 } else { 2 };
        self.0.store(fault, Ordering::Relaxed);
    }

    /// What broke the body, if it broke.
    pub(crate) fn get(&self) -> Option<Fault> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(Fault::ClientLeft),
            _ => Some(Fault::Malformed),
        }
    }
}

/// Whether a client's body failed because the client went away (its
/// connection closed or reset mid-body, or it reset the HTTP/2 stream),
/// rather than because what it sent was malformed: the first gets no
/// answer (as Envoy's downstream disconnect), the second a 400.
pub(crate) fn client_left(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<hyper::Error>()
            && (error.is_incomplete_message() || error.is_canceled())
        {
            return true;
        }
        if let Some(error) = error.downcast_ref::<h2::Error>() {
            return error.is_io() || error.is_go_away() || (error.is_reset() && error.is_remote());
        }
        if let Some(error) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(error.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe);
        }
        next = error.source();
    }
    false
}

impl CountedBody {
    /// Counts what is read of `inner` into `count`, if given, and notes
    /// its progress in `progress`, if given.
    pub(crate) fn new(inner: Incoming, count: Option<Arc<AtomicU64>>, progress: Option<Arc<Progress>>) -> Self {
        CountedBody { inner, count, progress, broken: None }
    }

    /// A flag that tells, once the body went where the proxy no longer
    /// reads it (upstream, as it came), whether it broke off on the way.
    pub(crate) fn watch_errors(&mut self) -> Arc<BodyFault> {
        self.broken.get_or_insert_with(Arc::default).clone()
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(count), Poll::Ready(Some(Ok(frame)))) = (&this.count, &poll)
            && let Some(data) = frame.data_ref()
        {
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if let (Some(broken), Poll::Ready(Some(Err(error)))) = (&this.broken, &poll) {
            broken.note(error);
        }
        if let (Some(progress), Poll::Ready(ready)) = (&this.progress, &poll) {
            progress.touch();
            if ready.is_none() || this.inner.is_end_stream() {
                progress.complete.store(true, Ordering::Relaxed);
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
