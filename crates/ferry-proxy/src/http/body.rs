//! The response body, which ends the stream's filters when it is
//! done: fully sent, or dropped because the client went away. A body
//! streamed from upstream that stalls past the stream's idle timeout is
//! cut (the client sees the stream reset), as Envoy's
//! `stream_idle_timeout` does once a response has begun.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use ferry_host::HttpStream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::Entry;
use std::rc::Rc;

use crate::event_loop::ThreadLoop;
use crate::filter::{Filter, HttpFilter};

/// Ends each filter of a stream (for a plugin: `proxy_on_log`,
/// `proxy_on_done`, `proxy_on_delete`), once.
pub(crate) struct StreamFinisher {
    pub(crate) filters: Vec<Filter>,
    pub(crate) stream: HttpStream,
    /// Wasm access loggers, told after the filters.
    pub(crate) loggers: WasmLoggers,
}

impl StreamFinisher {
    fn finish(mut self) {
        for filter in self.filters.drain(..) {
            filter.finish(&mut self.stream);
        }
        self.loggers.log(&mut self.stream);
    }
}

/// The Wasm access loggers of a connection manager, on this thread.
pub(crate) struct WasmLoggers {
    pub(crate) thread: Rc<ThreadLoop>,
    pub(crate) loggers: Vec<usize>,
}

impl WasmLoggers {
    /// `proxy_on_log` on each logger's root context with `stream` readable.
    pub(crate) fn log(&self, stream: &mut HttpStream) {
        for &index in &self.loggers {
            let handle = self.thread.handle(index);
            self.thread.wasm(|vms| vms.log_on_root(handle, stream));
        }
    }
}

enum Content {
    Full(Option<Bytes>),
    /// A body and trailers held in memory: framed chunked.
    WithTrailers(Option<Bytes>, Option<http::HeaderMap>),
    Upstream(Incoming),
}

/// A stalled upstream body: nothing came for `after`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream response stalled for {after:?} (stream_idle_timeout)")]
pub(crate) struct Stalled {
    after: std::time::Duration,
}

/// The idle timer of a streamed body, armed only while the body waits.
struct IdleTimer {
    after: std::time::Duration,
    /// When data last came (or the body began).
    last: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A response body: in memory or streamed from upstream.
pub(crate) struct ResponseBody {
    content: Content,
    /// For a streamed body with a `stream_idle_timeout`.
    idle: Option<IdleTimer>,
    finisher: Option<StreamFinisher>,
    /// The access-log entry, written when the body ends.
    log: Option<Box<Entry>>,
    /// Data bytes sent so far.
    sent: u64,
}

impl ResponseBody {
    /// A body held in memory.
    pub(crate) fn full(bytes: Bytes) -> Self {
        let content = Content::Full(if bytes.is_empty() { None } else { Some(bytes) });
        ResponseBody { content, idle: None, finisher: None, log: None, sent: 0 }
    }

    /// A body and trailers held in memory.
    pub(crate) fn with_trailers(bytes: Bytes, trailers: http::HeaderMap) -> Self {
        let content = Content::WithTrailers((!bytes.is_empty()).then_some(bytes), Some(trailers));
        ResponseBody { content, idle: None, finisher: None, log: None, sent: 0 }
    }

    /// A body streamed from upstream, cut if nothing comes for `idle`.
    pub(crate) fn upstream(body: Incoming, idle: Option<std::time::Duration>) -> Self {
        let idle = idle.map(|after| IdleTimer { after, last: tokio::time::Instant::now(), timer: None });
        ResponseBody { content: Content::Upstream(body), idle, finisher: None, log: None, sent: 0 }
    }

    /// Ends the stream's plugin contexts when this body ends.
    pub(crate) fn finish_with(mut self, finisher: StreamFinisher) -> Self {
        self.finisher = Some(finisher);
        self
    }

    /// Logs the request when this body ends.
    pub(crate) fn log_with(mut self, entry: Entry) -> Self {
        self.log = Some(Box::new(entry));
        self
    }

    fn finish(&mut self) {
        if let Some(finisher) = self.finisher.take() {
            finisher.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let poll = match &mut this.content {
            Content::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Content::WithTrailers(bytes, trailers) => {
                Poll::Ready(bytes.take().map(Frame::data).or_else(|| trailers.take().map(Frame::trailers)).map(Ok))
            }
            Content::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    if let Some(idle) = &mut this.idle {
                        idle.last = tokio::time::Instant::now();
                    }
                    Poll::Ready(frame.map(|f| f.map_err(Into::into)))
                }
                Poll::Pending => {
                    let mut stalled = None;
                    if let Some(idle) = &mut this.idle {
                        let deadline = idle.last + idle.after;
                        let timer = idle.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if timer.deadline() != deadline {
                            timer.as_mut().reset(deadline);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            stalled = Some(idle.after);
                        }
                    }
                    match stalled {
                        Some(after) => {
                            tracing::debug!(target: "http", "stream idle timeout: the response is cut");
                            Poll::Ready(Some(Err(Box::new(Stalled { after }) as Self::Error)))
                        }
                        None => Poll::Pending,
                    }
                }
            },
        };
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Full(bytes) => bytes.is_none(),
            Content::WithTrailers(bytes, trailers) => bytes.is_none() && trailers.is_none(),
            Content::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Content::WithTrailers(..) => SizeHint::default(),
            Content::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
        if let Some(entry) = self.log.take() {
            // Ended: sent to the end, or never polled because it was empty.
            let completed = self.is_end_stream();
            entry.finish(self.sent, completed);
        }
    }
}
