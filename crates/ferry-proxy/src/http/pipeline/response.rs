//! The response side of a stream: the upstream's response (or a local
//! reply) through the response chain, then to the client: the head as soon
//! as it passed the chain, the body as it comes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::chain::{Halt, Out};
use super::{CHANNEL_FRAMES, MAX_PENDING_FRAMES, Pipeline};
use crate::filter::Side;
use crate::headers::{hyper_trailers, response_headers, to_hyper_headers, trailers_map};
use crate::http::body::{Piece, ResponseBody};
use crate::http::conn_manager::{StreamReset, hyper_response};
use crate::http::rescue::{Local, StreamError, rescue};
use crate::http::routing;
use crate::upstream::UpstreamHost;

/// The response head, as hyper sends it (the body is set when it goes).
pub(crate) type Head = Response<ResponseBody>;

/// Most of a response the pipeline reads before handing hyper its head,
/// when the body is already there (a short upstream body): a response
/// whole by then goes out without a task of its own.
const WHOLE_RESPONSE_BYTES: usize = 64 * 1024;

impl Pipeline {
    /// The upstream answered: its headers go through the response chain.
    pub(super) fn upstream_response(&mut self, mut response: Response<Incoming>) {
        if self.wire() {
            return self.wire_response(response);
        }
        let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        if let Some(upgrade) = self.upgrade.as_mut().filter(|_| switching) {
            upgrade.upstream = Some(hyper::upgrade::on(&mut response));
        }
        let (parts, body) = response.into_parts();
        self.upstream_version = parts.version;
        {
            let stream = &mut *self.stream.borrow_mut();
            stream.response_headers = response_headers(parts.status, &parts.headers);
            // The connector records each connection's addresses and TLS (`upstream.*`).
            let connection = parts.extensions.get::<hyper_util::client::legacy::connect::HttpInfo>();
            stream.info.upstream = connection.map(|i| i.remote_addr());
            stream.info.upstream_local = connection.map(|i| i.local_addr());
            stream.info.upstream_tls =
                parts.extensions.get::<crate::upstream::reporting::UpstreamTls>().map(|t| t.0.clone());
            stream.info.upstream_attempts = parts.extensions.get::<crate::upstream::Attempts>().map(|a| a.0);
            stream.info.xds.upstream_host_metadata = parts.extensions.get::<UpstreamHost>().map(|h| h.metadata.clone());
            if switching && let Some(protocol) = parts.headers.get(http::header::UPGRADE) {
                // Filters see the upgrade the upstream accepted.
                let headers = &mut stream.response_headers;
                headers.append_lowercase(Bytes::from_static(b"connection"), Bytes::from_static(b"upgrade"));
                headers.append_lowercase(Bytes::from_static(b"upgrade"), Bytes::copy_from_slice(protocol.as_bytes()));
            }
        }
        self.notes.details = Some(std::borrow::Cow::Borrowed("via_upstream"));
        // A switch of protocols goes on after its headers.
        let end = body.is_end_stream() && !switching;
        if !body.is_end_stream() {
            self.response_source = Some(super::Source::Upstream(body));
        }
        self.response_headers(end);
    }

    /// The upstream's response as hyper parsed it, to go on as it came
    /// (see [`Pipeline::wire`]): what the map would give, without one — the
    /// connection's own headers dropped, `server` set.
    fn wire_response(&mut self, response: Response<Incoming>) {
        self.response_begun = true;
        self.notes.details = Some(std::borrow::Cow::Borrowed("via_upstream"));
        let (mut parts, body) = response.into_parts();
        if parts.headers.keys().any(|name| crate::headers::is_hop_by_hop(name.as_str().as_bytes())) {
            for name in crate::headers::HOP_BY_HOP {
                parts.headers.remove(*name);
            }
        }
        self.conn.http.set_server_header(&mut parts.headers);
        if !self.conn.http.access_logs.is_empty() {
            self.notes.upstream_host =
                parts.extensions.get::<hyper_util::client::legacy::connect::HttpInfo>().map(|i| i.remote_addr());
        }
        let end = body.is_end_stream();
        if !end {
            self.response_source = Some(super::Source::Upstream(body));
        }
        self.head = Some(Ok(Response::from_parts(parts, ResponseBody::full(Bytes::new()))));
        if end {
            self.response_ended();
        }
    }

    /// A local reply's head and body, straight to hyper (no map: the
    /// stream goes as it came, see [`Pipeline::wire`]).
    fn wire_reply(&mut self, mut local: Local) {
        self.response_begun = true;
        self.notes.flag = local.flag;
        self.notes.details = Some(std::mem::take(&mut local.details));
        if self.grpc {
            // gRPC's form has its own rules: the map's.
            let (headers, _) = local.into_response(true);
            self.head = Some(Ok(hyper_response(&headers, &self.conn.http)));
            return self.response_ended();
        }
        let mut head = Response::new(ResponseBody::full(Bytes::new()));
        *head.status_mut() =
            http::StatusCode::from_u16(local.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = head.headers_mut();
        for (name, value) in &local.headers {
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(name), http::HeaderValue::from_maybe_shared(value.clone()))
            {
                headers.append(name, value);
            }
        }
        if !local.body.is_empty() && !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        }
        self.conn.http.set_server_header(headers);
        // The body goes with the head (nothing in between looks at it).
        *head.body_mut() = ResponseBody::full(local.body);
        self.head = Some(Ok(head));
        self.response_ended();
    }

    /// The response headers (in the stream's map) through the chain, after
    /// the route's response header changes, as Envoy's router makes them.
    fn response_headers(&mut self, end: bool) {
        self.response_begun = true;
        if let Some((host, route)) = self.route {
            let http = self.conn.http.clone();
            let matched = http.routes.at(host, route);
            routing::mutate_response(&mut self.stream.borrow_mut().response_headers, http.routes.mutations(&matched));
        }
        let result = self.with_chain(|chain, cx| chain.headers(Side::Response, cx, end));
        self.after_response_chain(result);
    }

    /// A local reply made on the request's side: the upstream request, if
    /// any, is dropped (hyper resets it), and the reply goes through the
    /// response chain as Envoy's do — or, once the response began, straight
    /// out in its place ([`Self::direct_reply`]).
    pub(super) fn local_reply(&mut self, mut local: Local) {
        self.upstream_call = None;
        self.router = super::request::Router::Local;
        if self.response_begun {
            return self.direct_reply(local);
        }
        if self.wire() {
            return self.wire_reply(local);
        }
        self.response_begun = true;
        self.response_source = None;
        self.notes.flag = local.flag;
        self.notes.details = Some(std::mem::take(&mut local.details));
        let (headers, body) = local.into_response(self.grpc);
        self.stream.borrow_mut().response_headers = headers;
        if let Some((host, route)) = self.route {
            let http = self.conn.http.clone();
            let matched = http.routes.at(host, route);
            routing::mutate_response(&mut self.stream.borrow_mut().response_headers, http.routes.mutations(&matched));
        }
        let result = self.with_chain(|chain, cx| chain.whole(Side::Response, cx, body));
        self.after_response_chain(result);
    }

    /// A local reply made while the response was on its way, before its
    /// headers went to the client: it replaces the response and goes
    /// straight out, as Envoy's direct local replies do.
    fn direct_reply(&mut self, mut local: Local) {
        // Its head went out (or, on the wire, there is no map to build one from).
        if self.head.is_some() || self.head_sent || self.wire() {
            return self.reset_response();
        }
        self.response_source = None;
        self.response_pending.clear();
        self.notes.flag = local.flag;
        self.notes.details = Some(std::mem::take(&mut local.details));
        let (headers, body) = local.into_response(self.grpc);
        self.stream.borrow_mut().response_headers = headers;
        self.head = Some(Ok(self.make_head()));
        if !body.is_empty() {
            self.response_pending.push_back(Frame::data(body));
        }
        self.response_done = true;
    }

    /// A frame of the upstream's body (or its end, or an error).
    pub(super) fn response_frame(&mut self, frame: Option<Result<Frame<Bytes>, super::BoxError>>) {
        self.touch();
        let http1 = self.upstream_version < http::Version::HTTP_2 && !self.upgraded;
        let result = match frame {
            None => {
                self.response_source = None;
                self.with_chain(|chain, cx| chain.data(Side::Response, cx, Bytes::new(), true))
            }
            Some(Err(error)) => {
                tracing::debug!(target: "upstream", "the response body broke off: {error}");
                self.response_source = None;
                return self.response_failed(StreamError::BodyBroken(Side::Response));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = self.response_source.as_ref().is_none_or(|b| b.is_end_stream());
                    if end {
                        self.response_source = None;
                    }
                    // Over HTTP/1.x the end of the message is a call of its own.
                    let result = self.with_chain(|chain, cx| chain.data(Side::Response, cx, data, end && !http1));
                    match result {
                        Ok(mut outs) if end && http1 => {
                            let rest = self.with_chain(|chain, cx| chain.data(Side::Response, cx, Bytes::new(), true));
                            rest.map(|more| {
                                outs.extend(more);
                                outs
                            })
                        }
                        result => result,
                    }
                }
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else { return };
                    self.response_source = None;
                    self.stream.borrow_mut().response_trailers = trailers_map(&trailers);
                    self.with_chain(|chain, cx| chain.trailers(Side::Response, cx))
                }
            },
        };
        self.after_response_chain(result);
    }

    /// What came out of the response chain goes to the client; a halt
    /// replaces the response, or cuts it.
    pub(super) fn after_response_chain(&mut self, result: Result<super::chain::Outs, Halt>) {
        match result {
            Ok(outs) => {
                for out in outs {
                    self.response_out(out);
                }
            }
            Err(halt) => self.response_halted(halt),
        }
    }

    fn response_out(&mut self, out: Out) {
        // A response replaced or cut: what a filter lets go later goes nowhere.
        if self.response_done {
            return;
        }
        match out {
            Out::Headers { end } => {
                self.head = Some(Ok(self.make_head()));
                if end {
                    self.response_ended();
                }
            }
            Out::Data { data, end } => {
                if !data.is_empty() {
                    self.response_pending.push_back(Frame::data(data));
                }
                if end {
                    self.response_ended();
                }
            }
            Out::Trailers => {
                let (trailers, announce) = hyper_trailers(&self.stream.borrow().response_trailers);
                // hyper sends HTTP/1 trailers only when the head announced them.
                if let (Some(announce), Some(Ok(head))) = (announce, &mut self.head)
                    && !self.head_sent
                {
                    head.headers_mut().insert(http::header::TRAILER, announce);
                }
                self.response_pending.push_back(Frame::trailers(trailers));
                self.response_ended();
            }
        }
    }

    /// The whole response passed the chain; the request is no longer needed.
    fn response_ended(&mut self) {
        self.response_done = true;
        self.response_source = None;
        if !self.request_done {
            self.abandon_request();
        }
    }

    fn response_halted(&mut self, halt: Halt) {
        match halt {
            Halt::Respond(response) => self.direct_reply(Local::from(response)),
            Halt::Reset => self.reset_stream(),
            Halt::Failed => self.response_failed(StreamError::PluginFailed),
            Halt::TooLarge => self.response_failed(StreamError::BodyTooLarge(Side::Response)),
        }
    }

    /// The response cannot go on: before its head went out, the client gets
    /// what [`rescue`] says; after, the stream is cut.
    fn response_failed(&mut self, error: StreamError) {
        self.direct_reply(rescue(error));
    }

    /// Whether the response headers have gone through the chain, or are on
    /// their way (a local reply cannot replace them through the chain then).
    pub(super) fn response_started(&self) -> bool {
        self.response_begun
    }

    /// The hyper response for the response map as the filters left it: its
    /// status, its headers in order, then `server`.
    fn make_head(&self) -> Head {
        let stream = self.stream.borrow();
        let mut head = hyper_response(&stream.response_headers, &self.conn.http);
        if head.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(protocol) = stream.response_headers.get(b"upgrade")
            && let Ok(protocol) = http::HeaderValue::from_maybe_shared(protocol.clone())
        {
            head.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
            head.headers_mut().insert(http::header::UPGRADE, protocol);
        }
        // What says the length of a body that is not sent (HEAD, 304) goes as it came.
        if let Some(length) = stream.response_headers.get(b"content-length")
            && (self.is_head_request(&stream) || matches!(head.status().as_u16(), 204 | 304))
            && let Ok(value) = http::HeaderValue::from_maybe_shared(length.clone())
        {
            head.headers_mut().insert(http::header::CONTENT_LENGTH, value);
        }
        head
    }

    fn is_head_request(&self, stream: &ferry_host::HttpStream) -> bool {
        match &self.wire {
            Some(parts) => parts.method == http::Method::HEAD,
            None => stream.request_headers.get(b":method").is_some_and(|m| &m[..] == b"HEAD"),
        }
    }

    /// The response's `content-length` as the filters left it (one that
    /// changes a body's length removes it, as in Envoy): the client's
    /// framing of a body that streams.
    fn declared_length(&self) -> Option<u64> {
        super::request::content_length(&self.stream.borrow().response_headers)
    }

    /// Moves the response on with what is there already: frames of the
    /// upstream's body that came with its headers.
    fn take_ready(&mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut read = 0;
        while !self.response_done && self.response_pending.len() < MAX_PENDING_FRAMES && read < WHOLE_RESPONSE_BYTES {
            let Some(source) = &mut self.response_source else { break };
            match Pin::new(source).poll_frame(&mut cx) {
                Poll::Ready(frame) => {
                    read +=
                        frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref).map_or(0, Bytes::len);
                    self.response_frame(frame);
                }
                Poll::Pending => break,
            }
        }
    }

    /// Hands hyper the response: whole, or with a body the pipeline keeps
    /// feeding from a task of its own.
    pub(super) fn respond(mut self: Box<Self>) -> Result<Head, StreamReset> {
        // With no filter, the upstream's body goes as hyper reads it.
        let passing = self.chain.is_empty()
            && self.request_done
            && matches!(self.response_source, Some(super::Source::Upstream(_)));
        if !passing {
            self.take_ready();
        }
        let mut head = match self.head.take() {
            Some(Ok(head)) => head,
            Some(Err(StreamReset)) | None => return Err(StreamReset),
        };
        if head.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(upgrade) = self.upgrade.take()
        {
            // hyper sends the 101, then hands over the client's connection.
            self.head_sent = true;
            tokio::task::spawn_local(self.relay(upgrade));
            return Ok(head);
        }
        if !self.conn.http.access_logs.is_empty() {
            let mut notes = std::mem::take(&mut self.notes);
            let stream = self.stream.borrow();
            if !self.wire() {
                notes.upstream_host = stream.info.upstream;
            }
            notes.note_filter_state(&stream.info);
            // The headers as they went upstream, else as the request came.
            notes.request_headers = self.sent_headers.take().or_else(|| {
                if self.wire() {
                    return None;
                }
                let mut request = http::HeaderMap::new();
                to_hyper_headers(&stream.request_headers, &mut request);
                Some(request)
            });
            drop(stream);
            head.extensions_mut().insert(notes);
        }
        if self.response_done {
            if !self.request_done {
                self.abandon_request();
            }
            // A body that came with the head (a local reply on the wire) stays.
            let body = if self.response_pending.is_empty() {
                std::mem::replace(head.body_mut(), ResponseBody::full(Bytes::new()))
            } else {
                self.whole_body()
            };
            *head.body_mut() = self.finish_with(body);
            return Ok(head);
        }
        // Nothing for the filters to do with the body: hyper reads it as it comes.
        if self.chain.is_empty()
            && self.request_done
            && self.response_pending.is_empty()
            && matches!(self.response_source, Some(super::Source::Upstream(_)))
            && let Some(super::Source::Upstream(source)) = self.response_source.take()
        {
            let body = ResponseBody::upstream(source, self.idle_timeout());
            *head.body_mut() = self.finish_with(body);
            return Ok(head);
        }
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        *head.body_mut() = ResponseBody::channel(rx, self.declared_length());
        self.response_tx = Some(tx);
        self.head_sent = true;
        tokio::task::spawn_local(async move {
            self.run(false).await;
            // The client's body ends the stream (the filters' last
            // callbacks) once hyper has sent it all; a cut one is reset.
            // (a cut one closes without its end: the body reports an error).
            if let Some(tx) = self.response_tx.take()
                && !self.cut
                && let Err(mpsc::error::SendError(Piece::End(finisher))) = tx.send(Piece::End(self.finisher())).await
            {
                finisher.finish();
            }
        });
        Ok(head)
    }

    /// `body`, ending the stream when it ends, if there is anything to end
    /// (filters, Wasm access loggers).
    fn finish_with(&mut self, body: ResponseBody) -> ResponseBody {
        if self.chain.is_empty() && self.conn.http.wasm_loggers.is_empty() {
            self.finished = true;
            return body;
        }
        body.finish_with(self.finisher())
    }

    /// The response as it is, whole: its data, then its trailers.
    fn whole_body(&mut self) -> ResponseBody {
        // One piece of data (a local reply's body): as it is.
        if self.response_pending.len() == 1 && self.response_pending[0].is_data() {
            let frame = self.response_pending.pop_front().expect("one frame");
            return ResponseBody::full(frame.into_data().unwrap_or_default());
        }
        let mut data = BytesMut::new();
        let mut trailers = None;
        for frame in self.response_pending.drain(..) {
            match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        match trailers {
            Some(trailers) => ResponseBody::with_trailers(data.freeze(), trailers),
            None => ResponseBody::full(data.freeze()),
        }
    }
}
