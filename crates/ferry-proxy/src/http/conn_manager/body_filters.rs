//! Bodies and trailers through the Wasm filters, chunk by chunk, the way
//! Envoy delivers them.
//!
//! Each chunk read goes to the body callback of each filter in turn
//! (request: filter order; response: reverse), with `end_of_stream` on the
//! last one (an empty last call when the end comes after the data, as with
//! chunked encoding). A filter that continues passes the bytes, as it left
//! them, to the next; one that stops (StopIterationAndBuffer) holds them:
//! the next chunk is added and it sees all it holds again. A stop on the
//! last chunk waits for the plugin to resume the stream. When trailers
//! come, data a filter held goes on to the next filter (whose body callback
//! sees it first), and each filter's trailer callback runs.
//!
//! What passes every filter is collected and sent on once the body ended;
//! at most [`MAX_BUFFERED_BODY`] bytes are read (a larger request is 413, a
//! larger response 502).

use bytes::Bytes;
use ferry_host::{HeaderMap, HttpStream, PausedAt, PluginFailure, Verdict};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::{Decided, Exchange, Local, MAX_BUFFERED_BODY};
use crate::http::headers::trailers_map;

/// Which message a body belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Request,
    Response,
}

impl Side {
    fn body(self, stream: &mut HttpStream) -> &mut Vec<u8> {
        match self {
            Side::Request => &mut stream.request_body,
            Side::Response => &mut stream.response_body,
        }
    }

    fn trailers(self, stream: &mut HttpStream) -> &mut HeaderMap {
        match self {
            Side::Request => &mut stream.request_trailers,
            Side::Response => &mut stream.response_trailers,
        }
    }

    fn paused_in_body(self) -> PausedAt {
        match self {
            Side::Request => PausedAt::RequestBody,
            Side::Response => PausedAt::ResponseBody,
        }
    }

    fn paused_in_trailers(self) -> PausedAt {
        match self {
            Side::Request => PausedAt::RequestTrailers,
            Side::Response => PausedAt::ResponseTrailers,
        }
    }

    /// The status to answer when the body is too large or breaks off.
    fn failure_status(self, too_large: bool) -> u16 {
        match (self, too_large) {
            (Side::Request, true) => 413,
            (Side::Request, false) => 400,
            (Side::Response, _) => 502,
        }
    }
}

/// A body as the filters left it, and its trailers if it had any.
pub(super) struct Filtered {
    pub(super) data: Bytes,
    pub(super) trailers: Option<HeaderMap>,
}

impl Exchange {
    /// The filters a side's body goes through, in order.
    fn body_order(&self, side: Side) -> Vec<usize> {
        match side {
            Side::Request => (0..self.contexts.len()).collect(),
            Side::Response => (0..self.contexts.len()).rev().collect(),
        }
    }

    /// Reads `body` and runs it through the filters; `Err` with what ends
    /// the stream (a filter answered, reset it, or failed closed).
    pub(super) async fn filter_body(&mut self, side: Side, mut body: Incoming) -> Result<Filtered, Decided> {
        let order = self.body_order(side);
        let mut held = vec![Vec::new(); self.contexts.len()];
        let mut out = Vec::new();
        let mut total = 0usize;
        loop {
            let failed = |too_large| Decided::Respond(Local::new(side.failure_status(too_large), Bytes::new()));
            let frame = match body.frame().await {
                None => {
                    self.chunk_through(side, &order, &mut held, Vec::new(), true, &mut out).await?;
                    return Ok(Filtered { data: out.into(), trailers: None });
                }
                Some(Err(_)) => return Err(failed(false)),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    total += data.len();
                    if total > MAX_BUFFERED_BODY {
                        return Err(failed(true));
                    }
                    let end = body.is_end_stream();
                    self.chunk_through(side, &order, &mut held, data.to_vec(), end, &mut out).await?;
                    if end {
                        return Ok(Filtered { data: out.into(), trailers: None });
                    }
                }
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else { continue };
                    *side.trailers(&mut self.stream) = trailers_map(&trailers);
                    self.trailers_through(side, &order, &mut held, &mut out).await?;
                    let trailers = side.trailers(&mut self.stream).clone();
                    return Ok(Filtered { data: out.into(), trailers: Some(trailers) });
                }
            }
        }
    }

    /// A body the proxy made (a local reply) through the filters: one call
    /// each, with `end_of_stream` true.
    pub(super) async fn filter_whole_body(&mut self, side: Side, data: Bytes) -> Result<Bytes, Decided> {
        let order = self.body_order(side);
        let mut held = vec![Vec::new(); self.contexts.len()];
        let mut out = Vec::new();
        self.chunk_through(side, &order, &mut held, data.to_vec(), true, &mut out).await?;
        Ok(out.into())
    }

    /// One chunk through the filters in `order`; what passes them all is
    /// appended to `out`.
    async fn chunk_through(
        &mut self,
        side: Side,
        order: &[usize],
        held: &mut [Vec<u8>],
        chunk: Vec<u8>,
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Decided> {
        let mut data = chunk;
        for &i in order {
            let mut buffer = std::mem::take(&mut held[i]);
            buffer.append(&mut data);
            *side.body(&mut self.stream) = buffer;
            let verdict = self.body_callback(side, i, end);
            if matches!(verdict, Ok(Verdict::Pause)) && !end {
                // StopIterationAndBuffer: keep it; the next chunk is added.
                held[i] = std::mem::take(side.body(&mut self.stream));
                return Ok(());
            }
            self.decided(verdict, i, side.paused_in_body()).await?;
            data = std::mem::take(side.body(&mut self.stream));
        }
        out.append(&mut data);
        Ok(())
    }

    /// The trailers through the filters in `order`. Data a filter held goes
    /// on first; a filter that has not seen it gets it in its body callback.
    async fn trailers_through(
        &mut self,
        side: Side,
        order: &[usize],
        held: &mut [Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Result<(), Decided> {
        let mut data: Vec<u8> = Vec::new();
        for &i in order {
            let mut buffer = std::mem::take(&mut held[i]);
            if !data.is_empty() {
                buffer.append(&mut data);
                *side.body(&mut self.stream) = buffer;
                let verdict = self.body_callback(side, i, false);
                // A stop here only buffers: the trailers carry everything on.
                if !matches!(verdict, Ok(Verdict::Pause)) {
                    self.decided(verdict, i, side.paused_in_body()).await?;
                }
                buffer = std::mem::take(side.body(&mut self.stream));
            }
            let verdict = {
                let wasm = self.conn.worker.wasm.clone();
                let context = &self.contexts[i];
                let stream = &mut self.stream;
                wasm.with(|vms| match side {
                    Side::Request => vms.on_request_trailers(context, stream),
                    Side::Response => vms.on_response_trailers(context, stream),
                })
            };
            self.decided(verdict, i, side.paused_in_trailers()).await?;
            data = buffer;
        }
        out.append(&mut data);
        Ok(())
    }

    /// The body callback of filter `i` on the body the stream holds now.
    fn body_callback(&mut self, side: Side, i: usize, end: bool) -> Result<Verdict, PluginFailure> {
        let wasm = self.conn.worker.wasm.clone();
        let context = &self.contexts[i];
        let stream = &mut self.stream;
        wasm.with(|vms| match side {
            Side::Request => vms.on_request_body(context, stream, end),
            Side::Response => vms.on_response_body(context, stream, end),
        })
    }

    /// A verdict waited out: `Err` with what ends the stream.
    async fn decided(
        &mut self,
        verdict: Result<Verdict, PluginFailure>,
        i: usize,
        at: PausedAt,
    ) -> Result<(), Decided> {
        let decided = match verdict {
            Ok(verdict) => self.follow(verdict, i, at).await,
            Err(_) => self.failure_policy(self.contexts[i].plugin()),
        };
        match decided {
            Decided::Continue => Ok(()),
            other => Err(other),
        }
    }
}
