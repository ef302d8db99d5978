//! The request side of a stream: the client's body through the request
//! chain, then the router, which answers locally or sends the request
//! upstream as it passes the chain.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use ferry_config::RouteAction;
use http::Response;
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::chain::{Halt, Out};
use super::{CHANNEL_FRAMES, Pipeline};
use crate::counted::{CountedBody, Fault};
use crate::filter::Side;
use crate::headers::{hyper_trailers, trailers_map};
use crate::http::rescue::{Local, StreamError, rescue};
use crate::http::routing;
use crate::upstream::{BodyPiece, BodyRecording, Outgoing, RouteSend, UpstreamBody, UpstreamError};

/// A request on its way upstream, until its response headers come.
pub(crate) type UpstreamCall = Pin<Box<dyn Future<Output = Result<Response<Incoming>, UpstreamError>>>>;

/// What the router does with what passes the request chain.
pub(super) enum Router {
    /// The request headers have not passed the chain yet.
    Waiting,
    /// Going upstream: what passes the chain is queued for the upstream.
    Upstream,
    /// Answered here: what passes the chain goes nowhere.
    Local,
}

impl Pipeline {
    /// Starts the stream: the request headers through the chain; the body
    /// follows as it comes.
    pub(super) fn start(&mut self, body: CountedBody) {
        // Plugins read the route and cluster from the first callback on, as
        // in Envoy, which chooses the route before its filters run.
        let http = self.conn.http.clone();
        if !self.chain.is_empty() {
            let mut stream = self.stream.borrow_mut();
            if let Some(matched) = http.routes.route(&stream.request_headers) {
                stream.info.xds.route = Some(matched.facts.clone());
                if let RouteAction::Forward(forward) = &matched.route.action
                    && let ferry_config::ClusterTarget::Named(name) = &forward.target
                {
                    stream.info.xds.cluster = self.conn.thread.upstreams().cluster_facts(name);
                }
            }
        }
        // An upgrade goes on after its headers: the bytes after the 101
        // are its body (an HTTP body of its own is not read).
        let end = body.is_end_stream() && self.upgrade.is_none();
        if !body.is_end_stream() && self.upgrade.is_none() {
            self.request_source = Some(super::Source::Client(body));
        }
        let result = self.with_chain(|chain, cx| chain.headers(Side::Request, cx, end));
        self.after_request_chain(result);
    }

    /// A frame of the client's body (or its end, or an error).
    pub(super) fn request_frame(&mut self, frame: Option<Result<Frame<Bytes>, super::BoxError>>) {
        self.touch();
        // Over HTTP/1.x the end of a message is a call of its own (an
        // upgraded connection's bytes have no message framing).
        let http1 = self.stream.borrow().info.protocol != "HTTP/2" && !self.upgraded;
        let result = match frame {
            // The body ended without an end flag on its last data.
            None => {
                self.request_source = None;
                self.with_chain(|chain, cx| chain.data(Side::Request, cx, Bytes::new(), true))
            }
            Some(Err(error)) => {
                if crate::counted::client_left(&*error) {
                    return self.client_left();
                }
                tracing::debug!(target: "http", "the request body broke off: {error}");
                return self.request_failed(StreamError::BodyBroken(Side::Request));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = self.request_source.as_ref().is_none_or(|b| b.is_end_stream());
                    if end {
                        self.request_source = None;
                    }
                    // Over HTTP/1.x the end of the message is a call of its own
                    // (see `body_framing.yaml`).
                    let result = self.with_chain(|chain, cx| chain.data(Side::Request, cx, data, end && !http1));
                    match result {
                        Ok(mut outs) if end && http1 => {
                            let rest = self.with_chain(|chain, cx| chain.data(Side::Request, cx, Bytes::new(), true));
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
                    self.request_source = None;
                    self.stream.borrow_mut().request_trailers = trailers_map(&trailers);
                    self.with_chain(|chain, cx| chain.trailers(Side::Request, cx))
                }
            },
        };
        self.after_request_chain(result);
    }

    /// What came out of the request chain goes to the router; a halt ends
    /// the request.
    pub(super) fn after_request_chain(&mut self, result: Result<super::chain::Outs, Halt>) {
        match result {
            Ok(outs) => {
                for out in outs {
                    self.route_out(out);
                }
            }
            Err(halt) => self.request_halted(halt),
        }
    }

    fn request_halted(&mut self, halt: Halt) {
        self.abandon_request();
        match halt {
            Halt::Respond(response) => self.local_reply(Local::from(response)),
            Halt::Reset => self.reset_stream(),
            Halt::Failed => self.request_failed(StreamError::PluginFailed),
            Halt::TooLarge => self.request_failed(StreamError::BodyTooLarge(Side::Request)),
        }
    }

    /// The request cannot go on: the client gets what [`rescue`] says.
    pub(super) fn request_failed(&mut self, error: StreamError) {
        self.abandon_request();
        self.local_reply(rescue(error));
    }

    fn route_out(&mut self, out: Out) {
        match out {
            // Routed once; a request answered here sends nothing upstream.
            Out::Headers { end } if matches!(self.router, Router::Waiting) => self.route(end),
            Out::Headers { .. } => {}
            _ if matches!(self.router, Router::Local) => {}
            Out::Data { data, end } => self.upstream_frame(Frame::data(data), end),
            Out::Trailers => {
                let (trailers, _) = hyper_trailers(&self.stream.borrow().request_trailers);
                self.upstream_frame(Frame::trailers(trailers), true);
            }
        }
    }

    /// Routes on the request headers as the filters left them (which may
    /// choose another route than before the filters, as Envoy's
    /// `clear_route_cache`), then carries out the route's action.
    fn route(&mut self, end: bool) {
        let http = self.conn.http.clone();
        let matched = match &self.wire {
            Some(parts) => http.routes.route(parts),
            None => http.routes.route(&self.stream.borrow().request_headers),
        };
        if let Some(upgrade) = &self.upgrade {
            let route = match matched.as_ref().map(|m| &m.route.action) {
                Some(RouteAction::Forward(forward)) => &forward.upgrades[..],
                _ => &[],
            };
            if !super::upgrade::allowed(&upgrade.kind, &http.upgrades, route) {
                return self.answer(Local::new(403, Bytes::new(), "upgrade_failed"));
            }
        }
        let Some(matched) = matched else { return self.answer(Local::no_route()) };
        self.route = Some(matched.index);
        if !self.wire() {
            self.stream.borrow_mut().info.xds.route = Some(matched.facts.clone());
        }
        let forward = match &matched.route.action {
            RouteAction::DirectResponse { status, body } => {
                let body = body.clone().map(Bytes::from).unwrap_or_default();
                return self.answer(Local::direct(*status, body));
            }
            RouteAction::Redirect(redirect) => {
                let location = {
                    let stream = self.stream.borrow();
                    let header = |name: &[u8]| {
                        String::from_utf8_lossy(stream.request_headers.get(name).map_or(&b""[..], |v| v)).into_owned()
                    };
                    routing::redirect_location(redirect, matched.route, &header(b":authority"), &header(b":path"))
                };
                return self.answer(Local::redirect(redirect.status, location));
            }
            RouteAction::Forward(forward) => forward,
        };
        let thread = self.conn.thread.clone();
        // A plain route names its cluster; the others read the map.
        let chosen = routing::choose_cluster(&forward.target, &self.stream.borrow().request_headers);
        let Some((cluster, facts)) = chosen.and_then(|c| thread.upstreams().cluster_facts(&c).map(|f| (c, f))) else {
            return self.answer(Local::no_cluster());
        };
        if !http.access_logs.is_empty() {
            self.notes.cluster = Some(cluster.clone().into_owned());
        }
        // A named cluster is found again from the route; another choice goes along.
        let cluster = match &forward.target {
            ferry_config::ClusterTarget::Named(_) => None,
            _ => Some(cluster.into_owned()),
        };
        if let (Some(progress), Some(idle)) = (&self.progress, forward.idle_timeout) {
            progress.override_idle(idle);
        }
        if !self.wire() {
            let stream = &mut *self.stream.borrow_mut();
            stream.info.xds.cluster = Some(facts);
            // The router's changes, after every filter, as Envoy's.
            let headers = &mut stream.request_headers;
            let path = String::from_utf8_lossy(headers.get(b":path").map_or(&b""[..], |p| p)).into_owned();
            let rewritten = routing::rewrite_path(
                matched.route,
                &path,
                forward.prefix_rewrite.as_deref(),
                forward.regex_rewrite.as_ref(),
            );
            if let Some(rewritten) = rewritten {
                if http.envoy_headers {
                    headers.replace(b"x-envoy-original-path", path.as_bytes());
                }
                headers.replace(b":path", rewritten.as_bytes());
            }
            if let Some(host) = &forward.host_rewrite {
                headers.replace(b":authority", host.as_bytes());
            }
            routing::mutate_request(headers, http.routes.mutations(&matched));
        }
        if end {
            self.request_done = true;
            self.router = Router::Upstream;
            return self.send_upstream(cluster, matched.index, UpstreamBody::Full(None, None));
        }
        if self.upgrade.is_some() {
            // The upgrade request goes without a body; once both sides
            // answered 101, their connections carry the rest.
            self.request_source = None;
            self.router = Router::Upstream;
            return self.send_upstream(cluster, matched.index, UpstreamBody::Full(None, None));
        }
        self.router = Router::Upstream;
        let retries = forward.retry.is_some();
        let body = match self.request_source.take() {
            // No filter sees the body: it goes upstream as it comes.
            Some(super::Source::Client(mut source)) if self.chain.is_empty() && !retries => {
                self.request_done = true;
                self.body_broken = Some(source.watch_errors());
                UpstreamBody::Streamed(source)
            }
            source => {
                self.request_source = source;
                self.upstream_channel(retries)
            }
        };
        self.send_upstream(cluster, matched.index, body);
    }

    /// A body channel for the upstream request, fed with what passes the
    /// chain. Its length is the `content-length` the filters left, as in
    /// Envoy (a filter that changes a body's length removes it). A route
    /// that `retries` records the body as it goes, to send it again.
    fn upstream_channel(&mut self, retries: bool) -> UpstreamBody {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        self.upstream_tx = Some(tx);
        let length = content_length(&self.stream.borrow().request_headers);
        let recording = retries.then(|| BodyRecording::new(self.conn.http.buffer_limit, length));
        UpstreamBody::Channel { rx, length, ended: false, recording }
    }

    /// The request as it goes upstream: the map as the filters and the
    /// router left it, or hyper's, with the same changes.
    fn outgoing(&mut self) -> Result<Outgoing, UpstreamError> {
        let mut outgoing = match &mut self.wire {
            Some(parts) => {
                let http = &self.conn.http;
                Outgoing::from_wire(parts, http.generate_request_id, self.conn.connection_scheme())
            }
            None => Outgoing::from_map(&self.stream.borrow().request_headers)?,
        };
        if let Some(upgrade) = &self.upgrade
            && let Ok(protocol) = http::HeaderValue::from_str(&upgrade.kind)
        {
            // What asks for the upgrade goes along (connection-level headers do not otherwise).
            outgoing.headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
            outgoing.headers.insert(http::header::UPGRADE, protocol);
        }
        if !self.conn.http.access_logs.is_empty() {
            self.sent_headers = Some(outgoing.headers.clone());
        }
        Ok(outgoing)
    }

    /// Starts the request to `cluster` (`None`: the one the route names,
    /// or chose by weight) for the route at `index`, with the request
    /// headers as they are now.
    fn send_upstream(&mut self, cluster: Option<String>, index: (usize, usize), body: UpstreamBody) {
        let upstreams = self.conn.thread.upstreams_handle();
        let http = self.conn.http.clone();
        let outgoing = self.outgoing();
        self.upstream_call = Some(Box::pin(async move {
            let outgoing = outgoing?;
            let matched = http.routes.at(index.0, index.1);
            let RouteAction::Forward(forward) = &matched.route.action else {
                unreachable!("only forwarding routes send upstream")
            };
            let cluster = match (&cluster, &forward.target) {
                (Some(chosen), _) => chosen.as_str(),
                (None, ferry_config::ClusterTarget::Named(name)) => name.as_str(),
                (None, _) => unreachable!("only a named cluster is found again"),
            };
            let send = RouteSend {
                timeout: forward.timeout,
                retry: forward.retry.as_ref(),
                envoy_headers: http.envoy_headers,
                auto_host_rewrite: forward.auto_host_rewrite,
            };
            upstreams.forward(cluster, &send, outgoing, body).await.map_err(|error| {
                tracing::debug!(target: "upstream", "cluster {cluster}: {error} ({:?})", std::error::Error::source(&error));
                error
            })
        }));
    }

    /// The router answers the request itself: what follows of the request
    /// is not read.
    fn answer(&mut self, local: Local) {
        self.abandon_request();
        self.local_reply(local);
    }

    /// A frame that passed the request chain, for the upstream.
    fn upstream_frame(&mut self, frame: Frame<Bytes>, end: bool) {
        match &mut self.router {
            Router::Upstream => {
                self.upstream_pending.push_back(BodyPiece { frame, last: end });
                if end {
                    self.upstream_end_queued = true;
                }
                self.upstream_moved();
            }
            Router::Waiting | Router::Local => {}
        }
    }

    /// A frame went upstream; once the last did, the request is sent.
    pub(super) fn upstream_moved(&mut self) {
        if self.upstream_pending.is_empty() && self.upstream_end_queued {
            self.upstream_tx = None;
            self.request_done = true;
        }
    }

    /// The upstream no longer reads the request body (it answered and
    /// closed, or failed): the rest of the request goes nowhere.
    pub(super) fn upstream_gone(&mut self) {
        self.abandon_request();
    }

    /// The upstream answered the request's headers (or failed to).
    pub(super) fn upstream_answered(&mut self, result: Result<Response<Incoming>, UpstreamError>) {
        // Answered here already.
        if self.response_begun {
            return;
        }
        match result {
            Ok(response) => self.upstream_response(response),
            // A body that broke off on its way is the client's fault, not the upstream's.
            Err(_) if self.request_broke() == Some(Fault::ClientLeft) => self.client_left(),
            Err(_) if self.request_broke().is_some() => self.request_failed(StreamError::BodyBroken(Side::Request)),
            Err(error) => self.request_failed(StreamError::Upstream(error)),
        }
    }

    /// Whether the client's body, sent upstream as it came, broke off.
    fn request_broke(&self) -> Option<Fault> {
        self.body_broken.as_ref().and_then(|broken| broken.get())
    }
}

/// A message's `content-length`, if it has a valid one.
pub(super) fn content_length(headers: &ferry_host::HeaderMap) -> Option<u64> {
    std::str::from_utf8(headers.get(b"content-length")?).ok()?.trim().parse().ok()
}
