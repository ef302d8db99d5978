//! One HTTP stream, from the client's request to the response, through the
//! connection manager's filter chain: the one path every request takes,
//! with zero filters or many.
//!
//! ```text
//! client body ─► request chain (filters in order) ─► router ─► upstream
//!                                                    └─► local reply
//! client ◄─ response head + body ◄─ response chain (filters in reverse) ◄─┘
//! ```
//!
//! Every piece of a message goes through the chain as it arrives
//! ([`chain`]); what passes it moves on at once, and the only data held
//! is what a filter chose to hold. Backpressure runs end to end: the
//! pipeline reads from a side only while the other end takes what it
//! sends (the upstream request body and the client's response body are
//! small bounded channels) and no filter holds the buffer limit's worth.
//!
//! A [`Pipeline`] is driven by the connection's request task until the
//! response headers are ready. hyper then sends them; if the response (or
//! the request) is still flowing, the same pipeline goes on in a task of
//! its own that feeds the response body. A response that is whole by then
//! (a local reply, a short upstream body) goes out without that task.

mod chain;
mod request;
mod response;
mod upgrade;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_host::{HttpStream, InstanceId, SharedStream, StreamAction, StreamInfo};
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::access_log::StreamNotes;
use crate::counted::{CountedBody, Progress};
use crate::event_loop::{SignalSink, SignalSource};
use crate::filter::{
    CompressorFilter, DecompressorFilter, Filter, FilterContext, HeaderToMetadataFilter, Side, WasmFilter,
};
use crate::headers::{protocol_name, request_headers};
use crate::http::body::{BoxError, Piece, ResponseBody, StreamFinisher, WasmLoggers};
use crate::http::conn_manager::{ConnContext, StreamReset};
use crate::plan::FilterSpec;
use crate::upstream::BodyPiece;
use chain::{Chain, Halt};
pub(crate) use request::UpstreamCall;

/// Frames that may wait for a side's other end before the pipeline stops
/// reading from that side (besides what the channel to it holds).
const MAX_PENDING_FRAMES: usize = 1;

/// Frames the channels to hyper (the upstream request's body, the
/// client's response body) hold.
const CHANNEL_FRAMES: usize = 2;

thread_local! {
    /// The stream every request on the wire shares (see
    /// [`Pipeline::wire`]): nothing reads or writes it then, so none is made.
    static BLANK_STREAM: SharedStream = ferry_host::share(HttpStream::default());
}

/// Serves one request: the response head once it is ready; the body
/// follows.
pub(crate) async fn serve(
    parts: http::request::Parts,
    body: CountedBody,
    client: SocketAddr,
    conn: Rc<ConnContext>,
    progress: Option<Arc<Progress>>,
) -> Result<Response<ResponseBody>, StreamReset> {
    let mut parts = parts;
    let upgrade = upgrade::requested(&mut parts);
    let mut pipeline = Pipeline::new(parts, client, conn, progress, upgrade.is_some());
    if let Some(upgrade) = &upgrade {
        // Filters see what the upgrade asks for, as in Envoy.
        pipeline
            .stream
            .borrow_mut()
            .request_headers
            .append_lowercase(Bytes::from_static(b"connection"), Bytes::from_static(b"upgrade"));
        tracing::debug!(target: "http", "the request asks for an upgrade to {}", upgrade.kind);
    }
    pipeline.upgrade = upgrade;
    pipeline.start(body);
    pipeline.run(true).await;
    pipeline.respond()
}

/// The state of one stream.
pub(crate) struct Pipeline {
    conn: Rc<ConnContext>,
    /// What plugins see: header maps, bodies, stream facts.
    stream: SharedStream,
    /// The request as hyper parsed it, while no plugin, route or logger
    /// needs the plugins' header maps: the stream then goes as it came,
    /// without building them (its request map is empty; [`Self::wire`]).
    wire: Option<http::request::Parts>,
    /// The headers the request went upstream with, for the access log.
    sent_headers: Option<http::HeaderMap>,
    chain: Chain,
    /// Where stopped plugins' signals for this stream arrive (when the
    /// chain has a Wasm filter).
    signals: Option<(SignalSink, SignalSource)>,
    /// What the access log needs to know of the path the request took.
    notes: StreamNotes,
    /// What the stream's timers watch.
    progress: Option<Arc<Progress>>,
    /// The request is gRPC: local replies take gRPC's form.
    grpc: bool,
    /// The route the request took: its response header changes apply to
    /// whatever answer goes back.
    route: Option<(usize, usize)>,

    /// The client's body, while the pipeline reads it.
    request_source: Option<Source>,
    /// The request side is done with (sent whole, or dropped).
    request_done: bool,
    /// What the router does with what passes the request chain.
    router: request::Router,
    /// The request on its way upstream, until its response headers come.
    upstream_call: Option<UpstreamCall>,
    /// The upstream request's body, while it is sent.
    upstream_tx: Option<mpsc::Sender<BodyPiece>>,
    /// What passed the request chain, waiting for the upstream.
    upstream_pending: VecDeque<BodyPiece>,
    /// The last of the request is in `upstream_pending`.
    upstream_end_queued: bool,

    /// The upstream's response body, while the pipeline reads it.
    response_source: Option<Source>,
    /// The HTTP version the upstream answered in (how its body's end is told).
    upstream_version: http::Version,
    /// The response headers as they went through the chain, once they did
    /// (`Err`: the stream is reset).
    head: Option<Result<response::Head, StreamReset>>,
    /// The response went to hyper: what follows goes through `response_tx`.
    head_sent: bool,
    /// What passed the response chain, waiting for the client.
    response_pending: VecDeque<Frame<Bytes>>,
    /// The whole response passed the chain.
    response_done: bool,
    /// The client's response body, once the head went out.
    response_tx: Option<mpsc::Sender<Piece>>,
    /// The response headers entered the response chain: a local reply can
    /// no longer replace them through it.
    response_begun: bool,
    /// The response was cut after its head went out: the client sees a reset.
    cut: bool,
    /// Whether the client's body, sent upstream as it came, broke off.
    body_broken: Option<Arc<crate::counted::BodyFault>>,

    /// The upgrade the request asks for.
    upgrade: Option<upgrade::Upgrade>,
    /// The connections were upgraded: the stream relays their bytes.
    upgraded: bool,
    /// Whether the stream's end was handled (filters finished, loggers told).
    finished: bool,
}

impl Pipeline {
    fn new(
        parts: http::request::Parts,
        client: SocketAddr,
        conn: Rc<ConnContext>,
        progress: Option<Arc<Progress>>,
        upgrade: bool,
    ) -> Box<Self> {
        let http = conn.http.clone();
        // Nothing looks at the headers' map form: none is built.
        let wire = http.filters.is_empty() && http.wasm_loggers.is_empty() && http.routes.is_plain() && !upgrade;
        let request_headers = if wire {
            ferry_host::HeaderMap::new()
        } else {
            request_headers(&parts, http.generate_request_id, (conn.scheme(), conn.connection_scheme()))
        };
        // What plugins read of the stream (none reads it on the wire).
        let info = if wire {
            StreamInfo::default()
        } else {
            StreamInfo {
                source: Some(client),
                destination: conn.destination,
                connection_id: conn.id,
                start: Some(std::time::SystemTime::now()),
                protocol: protocol_name(parts.version),
                xds: ferry_host::XdsInfo { listener: Some(http.listener.clone()), ..Default::default() },
                tls: conn.tls.clone(),
                ..StreamInfo::default()
            }
        };
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        let stream = if wire {
            BLANK_STREAM.with(Rc::clone)
        } else {
            ferry_host::share(HttpStream { request_headers, info, ..HttpStream::default() })
        };
        let filters: Vec<Filter> = http
            .filters
            .iter()
            .map(|spec| match spec {
                FilterSpec::Wasm { index, allow_stop_iteration } => Filter::Wasm(WasmFilter::new(
                    conn.thread.clone(),
                    conn.thread.handle(*index),
                    *allow_stop_iteration,
                )),
                FilterSpec::HeaderToMetadata(rules) => Filter::HeaderToMetadata(HeaderToMetadataFilter(rules.clone())),
                FilterSpec::Compressor(plan) => Filter::Compressor(CompressorFilter::new(plan.clone())),
                FilterSpec::Decompressor(plan) => Filter::Decompressor(DecompressorFilter::new(plan.clone())),
            })
            .collect();
        let signals = filters.iter().any(|f| matches!(f, Filter::Wasm(_))).then(mpsc::unbounded_channel);
        // Boxed: the stream's state is large, and moves only as a pointer.
        Box::new(Pipeline {
            chain: Chain::new(filters, http.buffer_limit),
            conn,
            stream,
            wire: wire.then_some(parts),
            sent_headers: None,
            signals,
            notes: StreamNotes::default(),
            progress,
            grpc,
            route: None,
            request_source: None,
            request_done: false,
            router: request::Router::Waiting,
            upstream_call: None,
            upstream_tx: None,
            upstream_pending: VecDeque::new(),
            upstream_end_queued: false,
            response_source: None,
            upstream_version: http::Version::HTTP_11,
            head: None,
            head_sent: false,
            response_pending: VecDeque::new(),
            response_done: false,
            response_tx: None,
            response_begun: false,
            cut: false,
            body_broken: None,
            upgrade: None,
            upgraded: false,
            finished: false,
        })
    }

    /// Whether the stream goes as hyper parsed it (see [`Pipeline::wire`]).
    fn wire(&self) -> bool {
        self.wire.is_some()
    }

    /// Runs `f` on the chain with what its filters use.
    fn with_chain<R>(&mut self, f: impl FnOnce(&mut Chain, &FilterContext<'_>) -> R) -> R {
        let signals = self.signals.as_ref().map(|(sink, _)| sink);
        let cx = FilterContext { stream: &self.stream, signals };
        f(&mut self.chain, &cx)
    }

    /// Whether there is nothing left to do.
    fn is_done(&self) -> bool {
        self.request_done && self.response_done && self.response_pending.is_empty()
    }

    /// Drives the stream: until the response headers are ready
    /// (`until_head`), or to its end.
    async fn run(&mut self, until_head: bool) {
        loop {
            if (until_head && self.head.is_some()) || (!until_head && self.is_done()) {
                return;
            }
            let event = self.next_event(until_head).await;
            self.handle(event);
        }
    }

    /// Waits for the next thing that moves the stream on.
    async fn next_event(&mut self, until_head: bool) -> Event {
        // Only the upstream's answer can come (no filter, no body to send):
        // it is awaited alone.
        let alone = self.signals.is_none()
            && self.request_source.is_none()
            && self.upstream_pending.is_empty()
            && self.response_source.is_none()
            && self.response_tx.is_none()
            && until_head;
        if alone && self.upstream_call.is_some() {
            return Event::Upstream(poll_call(&mut self.upstream_call).await);
        }
        let read_request = self.request_source.is_some()
            && self.chain.wants_data(Side::Request)
            && self.upstream_pending.len() < MAX_PENDING_FRAMES;
        let read_response = self.response_source.is_some()
            && self.chain.wants_data(Side::Response)
            && self.response_pending.len() < MAX_PENDING_FRAMES;
        let idle = (!until_head).then(|| self.idle_deadline()).flatten();
        let thread = self.conn.thread.clone();
        let upgraded = self.upgraded;
        let Pipeline {
            signals,
            request_source,
            upstream_call,
            upstream_tx,
            upstream_pending,
            response_source,
            response_pending,
            response_tx,
            ..
        } = self;
        tokio::select! {
            Some(signal) = recv_signal(signals) => Event::Signal(signal),
            result = poll_call(upstream_call), if upstream_call.is_some() => Event::Upstream(result),
            permit = reserve(upstream_tx), if !upstream_pending.is_empty() => match permit {
                Some(permit) => {
                    permit.send(upstream_pending.pop_front().expect("not empty"));
                    Event::UpstreamMoved
                }
                None => Event::UpstreamGone,
            },
            frame = next_frame(response_source), if read_response => Event::ResponseFrame(frame),
            frame = next_frame(request_source), if read_request => Event::RequestFrame(frame),
            permit = reserve(response_tx), if !response_pending.is_empty() => match permit {
                Some(permit) => {
                    permit.send(Piece::Frame(response_pending.pop_front().expect("not empty")));
                    Event::Moved
                }
                None => Event::ClientGone,
            },
            () = closed(response_tx), if response_tx.is_some() => Event::ClientGone,
            () = sleep_until(idle), if idle.is_some() => Event::Idle,
            // A drain ends upgraded streams (the others end with their connection's shutdown).
            () = thread.stopping(), if upgraded => Event::Draining,
        }
    }

    /// When the stream idle timeout cuts a response that stalls, if it has one.
    fn idle_deadline(&self) -> Option<tokio::time::Instant> {
        let idle = self.idle_timeout()?;
        let last = self.progress.as_ref().map(|p| p.last_activity())?;
        Some((last + idle).into())
    }

    /// The stream idle timeout: the route's, else the connection manager's.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        let default = self.conn.http.limits.stream_idle_timeout;
        self.progress.as_ref().map_or(default, |p| p.idle_timeout(default))
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal((key, action)) => self.signal(key, action),
            Event::RequestFrame(frame) => self.request_frame(frame),
            Event::Upstream(result) => self.upstream_answered(result),
            Event::ResponseFrame(frame) => self.response_frame(frame),
            Event::Moved => self.touch(),
            Event::UpstreamMoved => self.upstream_moved(),
            Event::UpstreamGone => self.upstream_gone(),
            Event::ClientGone => self.client_gone(),
            Event::Idle => {
                tracing::debug!(target: "http", "stream idle timeout: the response is cut");
                self.reset_response();
            }
            Event::Draining => self.reset_stream(),
        }
    }

    /// Data moved: the stream is not idle.
    fn touch(&self) {
        if let Some(progress) = &self.progress {
            progress.touch();
        }
    }

    /// A stopped plugin's signal for this stream.
    fn signal(&mut self, key: (InstanceId, u32), action: StreamAction) {
        let Some(index) = self.chain.filters().iter().position(|f| f.signal_key() == Some(key)) else { return };
        match action {
            StreamAction::Resume => {
                let result = self.with_chain(|chain, cx| chain.resume(Side::Request, cx, index));
                self.after_request_chain(result);
            }
            StreamAction::ResumeResponse => {
                let result = self.with_chain(|chain, cx| chain.resume(Side::Response, cx, index));
                self.after_response_chain(result);
            }
            StreamAction::ResumeUpstream => {}
            StreamAction::LocalResponse(response) => {
                if self.chain.is_stopped_at(Side::Response, index) || self.response_started() {
                    self.after_response_chain(Err(Halt::Respond(response)));
                } else {
                    self.after_request_chain(Err(Halt::Respond(response)));
                }
            }
            StreamAction::Close => self.reset_stream(),
            StreamAction::Failed => {
                let fails_open = self.chain.filters_mut()[index].vm_failed();
                for side in [Side::Request, Side::Response] {
                    if !self.chain.is_stopped_at(side, index) {
                        continue;
                    }
                    let result = if fails_open {
                        self.with_chain(|chain, cx| chain.resume(side, cx, index))
                    } else {
                        Err(Halt::Failed)
                    };
                    match side {
                        Side::Request => self.after_request_chain(result),
                        Side::Response => self.after_response_chain(result),
                    }
                }
            }
        }
    }

    /// The client left before its request ended (closed its connection or
    /// reset the stream): nothing answers it, and the stream ends as
    /// Envoy's does on a downstream disconnect — no response, so plugins'
    /// `proxy_on_log` sees none.
    fn client_left(&mut self) {
        tracing::debug!(target: "http", "the client left before its request ended");
        self.notes.flag = Some("DC");
        self.notes.details = Some(std::borrow::Cow::Borrowed("downstream_remote_disconnect"));
        self.upstream_call = None;
        if !self.head_sent && self.head.is_none() {
            self.head = Some(Err(StreamReset));
        }
        self.client_gone();
    }

    /// The client went away: nothing more is sent; the stream ends.
    fn client_gone(&mut self) {
        self.response_tx = None;
        self.response_pending.clear();
        self.response_source = None;
        self.response_done = true;
        self.abandon_request();
    }

    /// Resets the stream: before the response, hyper drops the connection
    /// without one; after, the response is cut.
    fn reset_stream(&mut self) {
        self.abandon_request();
        self.reset_response();
    }

    /// Cuts the response: hyper resets the stream (HTTP/2) or closes the
    /// connection (HTTP/1).
    fn reset_response(&mut self) {
        self.response_source = None;
        self.response_pending.clear();
        if self.head_sent {
            // The pipeline's task tells the client's body once it stops.
            self.cut = true;
        } else {
            self.head = Some(Err(StreamReset));
        }
        self.response_done = true;
        self.abandon_request();
    }

    /// Stops reading the request and sending it upstream.
    fn abandon_request(&mut self) {
        self.request_source = None;
        self.upstream_pending.clear();
        // A body channel closed before its last piece resets the upstream
        // request: it is not taken for a whole, shorter body.
        self.upstream_tx = None;
        self.request_done = true;
    }

    /// The stream's end: each filter's last callbacks, then the Wasm access
    /// loggers.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        for filter in self.chain.take_filters() {
            use crate::filter::HttpFilter as _;
            filter.finish(&self.stream);
        }
        self.wasm_loggers().log(&self.stream);
    }

    fn wasm_loggers(&self) -> WasmLoggers {
        WasmLoggers { thread: self.conn.thread.clone(), loggers: self.conn.http.wasm_loggers.clone() }
    }

    /// What ends the stream when the response body does.
    fn finisher(&mut self) -> StreamFinisher {
        self.finished = true;
        StreamFinisher { filters: self.chain.take_filters(), stream: self.stream.clone(), loggers: self.wasm_loggers() }
    }
}

impl Drop for Pipeline {
    /// A stream dropped before its end (the client left, a timer answered)
    /// still ends its filters.
    fn drop(&mut self) {
        self.finish();
    }
}

/// What moved the stream on.
enum Event {
    Signal(((InstanceId, u32), StreamAction)),
    RequestFrame(Option<Result<Frame<Bytes>, BoxError>>),
    Upstream(Result<Response<Incoming>, crate::upstream::UpstreamError>),
    ResponseFrame(Option<Result<Frame<Bytes>, BoxError>>),
    /// A frame went to the client.
    Moved,
    /// A frame went upstream.
    UpstreamMoved,
    /// The upstream no longer reads the request body.
    UpstreamGone,
    ClientGone,
    Idle,
    Draining,
}

/// Where a direction's data comes from: the client's body, the upstream's,
/// or, once upgraded, a connection.
pub(crate) enum Source {
    Client(CountedBody),
    Upstream(Incoming),
    Upgraded(upgrade::ReadBody),
}

impl http_body::Body for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Source::Client(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into),
            Source::Upstream(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into),
            Source::Upgraded(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Client(body) => body.is_end_stream(),
            Source::Upstream(body) => body.is_end_stream(),
            Source::Upgraded(body) => body.is_end_stream(),
        }
    }
}

async fn recv_signal(signals: &mut Option<(SignalSink, SignalSource)>) -> Option<((InstanceId, u32), StreamAction)> {
    match signals {
        Some((_, receiver)) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_frame<B>(source: &mut Option<B>) -> Option<Result<Frame<Bytes>, B::Error>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    match source {
        Some(body) => body.frame().await,
        None => std::future::pending().await,
    }
}

async fn reserve<T>(tx: &Option<mpsc::Sender<T>>) -> Option<mpsc::Permit<'_, T>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// The upstream's answer; the call is gone once it came.
async fn poll_call(call: &mut Option<UpstreamCall>) -> Result<Response<Incoming>, crate::upstream::UpstreamError> {
    let Some(future) = call.as_mut() else { return std::future::pending().await };
    let result = future.as_mut().await;
    *call = None;
    result
}

async fn closed<T>(tx: &Option<mpsc::Sender<T>>) {
    match tx {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
