//! The response body, which ends the stream's filters when it is
//! done: fully sent, or dropped because the client went away. It is held
//! in memory, read from the upstream as it comes (no filter looks at it),
//! or fed by the stream's pipeline through a small channel. A body
//! streamed from upstream that stalls past the stream's idle timeout is
//! cut (the client sees the stream reset), as Envoy's
//! `stream_idle_timeout` does once a response has begun.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use ferry_host::SharedStream;
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
    pub(crate) stream: SharedStream,
    /// Wasm access loggers, told after the filters.
    pub(crate) loggers: WasmLoggers,
}

impl StreamFinisher {
    pub(crate) fn finish(mut self) {
        for filter in self.filters.drain(..) {
            filter.finish(&self.stream);
        }
        self.loggers.log(&self.stream);
    }
}

/// The Wasm access loggers of a connection manager, on this thread.
pub(crate) struct WasmLoggers {
    pub(crate) thread: Rc<ThreadLoop>,
    pub(crate) loggers: Vec<usize>,
}

impl WasmLoggers {
    /// `proxy_on_log` on each logger's root context with `stream` readable.
    pub(crate) fn log(&self, stream: &SharedStream) {
        for &index in &self.loggers {
            let handle = self.thread.handle(index);
            self.thread.wasm(|vms| vms.log_on_root(handle, stream));
        }
    }
}

/// Errors a response body reports to hyper (which then resets the stream).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the pipeline sends down a body channel.
///
/// The body ends only with [`Piece::End`]: a channel that closes without
/// it was cut off, and the client sees the stream reset, never a shorter
/// body that looks whole.
pub(crate) enum Piece {
    Frame(Frame<Bytes>),
    /// The response is whole: the stream ends when hyper has sent it.
    End(StreamFinisher),
}

/// A response body whose pipeline went away before its end.
#[derive(Debug, thiserror::Error)]
#[error("the response was cut off before its end")]
pub(crate) struct ResponseCutOff;

enum Content {
    Full(Option<Bytes>),
    /// A body and trailers held in memory: framed chunked.
    WithTrailers(Option<Bytes>, Option<http::HeaderMap>),
    Upstream(Incoming),
    /// Fed by the stream's pipeline; its length, when known.
    Channel(tokio::sync::mpsc::Receiver<Piece>, Option<u64>),
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
    /// The body ended (its end or its trailers went out).
    ended: bool,
}

impl ResponseBody {
    /// A body held in memory.
    pub(crate) fn full(bytes: Bytes) -> Self {
        let content = Content::Full(if bytes.is_empty() { None } else { Some(bytes) });
        ResponseBody { content, idle: None, finisher: None, log: None, sent: 0, ended: false }
    }

    /// A body and trailers held in memory.
    pub(crate) fn with_trailers(bytes: Bytes, trailers: http::HeaderMap) -> Self {
        let content = Content::WithTrailers((!bytes.is_empty()).then_some(bytes), Some(trailers));
        ResponseBody { content, idle: None, finisher: None, log: None, sent: 0, ended: false }
    }

    /// A body streamed from upstream, cut if nothing comes for `idle`.
    pub(crate) fn upstream(body: Incoming, idle: Option<std::time::Duration>) -> Self {
        let idle = idle.map(|after| IdleTimer { after, last: tokio::time::Instant::now(), timer: None });
        ResponseBody { content: Content::Upstream(body), idle, finisher: None, log: None, sent: 0, ended: false }
    }

    /// A body the stream's pipeline feeds through `pieces`; `length`, if
    /// known, goes to the client as its `content-length`.
    pub(crate) fn channel(pieces: tokio::sync::mpsc::Receiver<Piece>, length: Option<u64>) -> Self {
        ResponseBody {
            content: Content::Channel(pieces, length),
            idle: None,
            finisher: None,
            log: None,
            sent: 0,
            ended: false,
        }
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
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let poll = match &mut this.content {
            Content::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Content::WithTrailers(bytes, trailers) => {
                Poll::Ready(bytes.take().map(Frame::data).or_else(|| trailers.take().map(Frame::trailers)).map(Ok))
            }
            Content::Channel(..) if this.ended => Poll::Ready(None),
            Content::Channel(pieces, _) => match pieces.poll_recv(cx) {
                Poll::Ready(Some(Piece::Frame(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Piece::End(finisher))) => {
                    this.finisher = Some(finisher);
                    Poll::Ready(None)
                }
                Poll::Ready(None) => Poll::Ready(Some(Err(Box::new(ResponseCutOff) as Self::Error))),
                Poll::Pending => Poll::Pending,
            },
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
                this.ended |= frame.is_trailers();
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.finish();
            }
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Full(bytes) => bytes.is_none(),
            Content::WithTrailers(bytes, trailers) => bytes.is_none() && trailers.is_none(),
            Content::Upstream(body) => body.is_end_stream(),
            Content::Channel(..) => self.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Content::WithTrailers(..) => SizeHint::default(),
            Content::Upstream(body) => body.size_hint(),
            Content::Channel(_, Some(length)) => SizeHint::with_exact(*length),
            Content::Channel(_, None) => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops reading after trailers: the stream's end may still wait in the channel.
        if let Content::Channel(pieces, _) = &mut self.content {
            while let Ok(piece) = pieces.try_recv() {
                if let Piece::End(finisher) = piece {
                    self.finisher = Some(finisher);
                }
            }
        }
        self.finish();
        if let Some(entry) = self.log.take() {
            // Ended: sent to the end, or never polled because it was empty.
            let completed = self.ended || self.is_end_stream();
            entry.finish(self.sent, completed);
        }
    }
}
