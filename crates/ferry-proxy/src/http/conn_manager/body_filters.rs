//! Bodies and trailers through the Wasm filters, chunk by chunk, the way
//! Envoy delivers them.
//!
//! Each chunk read goes to the body callback of each filter in turn
//! (request: filter order; response: reverse). Where the end is flagged
//! follows Envoy's codecs: over HTTP/1.x every chunk has `end_of_stream`
//! false and the end of the message is one more call, with no data and
//! `end_of_stream` true (whatever the framing: content-length, chunked or
//! close); over HTTP/2 the DATA frame that ends the stream has it (an empty
//! last call when the end comes after the data). A filter that continues passes the bytes, as it left
//! them, to the next; one that stops (StopIterationAndBuffer) holds them:
//! the next chunk is added and it sees all it holds again. A stop on the
//! last chunk waits for the plugin to resume the stream. When trailers
//! come, data a filter held goes on to the next filter (whose body callback
//! sees it first), and each filter's trailer callback runs.
//!
//! What passes every filter is collected and sent on once the body ended;
//! at most the listener's buffer limit (`per_connection_buffer_limit_bytes`,
//! 1 MiB by default) is read (a larger request is 413, a larger response 502).

use bytes::Bytes;
use ferry_host::{HeaderMap, HttpStream};
use http_body_util::BodyExt as _;

use super::{Ending, Exchange, go_on};

/// Most of a body the filters may make (a plugin can rewrite each chunk
/// into up to 16 MiB): past it the body is too large (413 / 502), like an
/// incoming body past the buffer limit.
const MAX_FILTERED_BODY: usize = ferry_host::MAX_VALUE_BYTES;
use crate::filter::{FilterStatus, HttpFilter, Side, body_of};
use crate::headers::trailers_map;
use crate::http::rescue::StreamError;

/// Where a side's trailers are in the stream.
fn trailers_of(side: Side, stream: &mut HttpStream) -> &mut HeaderMap {
    match side {
        Side::Request => &mut stream.request_trailers,
        Side::Response => &mut stream.response_trailers,
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
            Side::Request => (0..self.filters.len()).collect(),
            Side::Response => (0..self.filters.len()).rev().collect(),
        }
    }

    /// Reads `body` and runs it through the filters; `Err` with what ends
    /// the stream (a filter answered, reset it, or failed, or the body was
    /// too large or broke off).
    pub(super) async fn filter_body<B>(&mut self, side: Side, mut body: B, http1: bool) -> Result<Filtered, Ending>
    where
        B: http_body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
    {
        let order = self.body_order(side);
        let mut held = vec![Vec::new(); self.filters.len()];
        let mut out = Vec::new();
        let mut total = 0usize;
        loop {
            let frame = match body.frame().await {
                None => {
                    self.chunk_through(side, &order, &mut held, Vec::new(), true, &mut out).await?;
                    return Ok(Filtered { data: out.into(), trailers: None });
                }
                Some(Err(_)) => return Err(Ending::Fail(StreamError::BodyBroken(side))),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    total += data.len();
                    if total > self.conn.http.buffer_limit {
                        return Err(Ending::Fail(StreamError::BodyTooLarge(side)));
                    }
                    let end = body.is_end_stream();
                    // HTTP/1.x: the end of the message comes as a call of its own.
                    self.chunk_through(side, &order, &mut held, data.to_vec(), end && !http1, &mut out).await?;
                    if end {
                        if http1 {
                            self.chunk_through(side, &order, &mut held, Vec::new(), true, &mut out).await?;
                        }
                        return Ok(Filtered { data: out.into(), trailers: None });
                    }
                }
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else { continue };
                    *trailers_of(side, &mut self.stream) = trailers_map(&trailers);
                    self.trailers_through(side, &order, &mut held, &mut out).await?;
                    let trailers = trailers_of(side, &mut self.stream).clone();
                    return Ok(Filtered { data: out.into(), trailers: Some(trailers) });
                }
            }
        }
    }

    /// A body the proxy made (a local reply) through the filters: one call
    /// each, with `end_of_stream` true.
    pub(super) async fn filter_whole_body(&mut self, side: Side, data: Bytes) -> Result<Bytes, Ending> {
        let order = self.body_order(side);
        let mut held = vec![Vec::new(); self.filters.len()];
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
    ) -> Result<(), Ending> {
        let mut data = chunk;
        for &i in order {
            let mut buffer = std::mem::take(&mut held[i]);
            buffer.append(&mut data);
            if buffer.len() > MAX_FILTERED_BODY {
                return Err(Ending::Fail(StreamError::BodyTooLarge(side)));
            }
            *body_of(side, &mut self.stream) = buffer;
            match self.filters[i].body(side, &mut self.stream, end).await {
                FilterStatus::Buffer => {
                    // StopIterationAndBuffer: keep it; the next chunk is added.
                    held[i] = std::mem::take(body_of(side, &mut self.stream));
                    return Ok(());
                }
                status => go_on(status)?,
            }
            data = std::mem::take(body_of(side, &mut self.stream));
        }
        out.append(&mut data);
        if out.len() > MAX_FILTERED_BODY {
            return Err(Ending::Fail(StreamError::BodyTooLarge(side)));
        }
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
    ) -> Result<(), Ending> {
        let mut data: Vec<u8> = Vec::new();
        for &i in order {
            let mut buffer = std::mem::take(&mut held[i]);
            if !data.is_empty() {
                buffer.append(&mut data);
                *body_of(side, &mut self.stream) = buffer;
                // A stop here only buffers: the trailers carry everything on.
                match self.filters[i].body(side, &mut self.stream, false).await {
                    FilterStatus::Buffer => {}
                    status => go_on(status)?,
                }
                buffer = std::mem::take(body_of(side, &mut self.stream));
            }
            // What the filter passes on is what the body holds after its
            // trailer callback (a compressor ends its stream there).
            *body_of(side, &mut self.stream) = buffer;
            go_on(self.filters[i].trailers(side, &mut self.stream).await)?;
            data = std::mem::take(body_of(side, &mut self.stream));
        }
        out.append(&mut data);
        Ok(())
    }
}
