//! The filters the HTTP connection manager runs a stream through.
//!
//! [`HttpFilter`] is what the stream's pipeline asks of a filter, one piece
//! of a message at a time: each call returns at once with what the filter
//! decided ([`FilterStatus`]), as Envoy's filter callbacks do. A filter that
//! stops is resumed later by a signal from outside (a Proxy-Wasm plugin's
//! `proxy_continue_stream`), which reaches the pipeline, not the filter.
//! [`WasmFilter`] runs a Proxy-Wasm plugin; [`Filter`] is the element of a
//! filter chain, one variant per implementation.

mod codec;
mod compression;
mod header_to_metadata;
mod wasm;

use ferry_host::{HttpStream, InstanceId, LocalResponse, SharedStream};

pub(crate) use compression::{COMPRESSOR_STATS, CompressorFilter, DECOMPRESSOR_STATS, DecompressorFilter};
pub use compression::{CompressorPlan, DecompressorPlan};
pub(crate) use header_to_metadata::HeaderToMetadataFilter;
pub(crate) use wasm::WasmFilter;

use crate::event_loop::SignalSink;

/// Which message a body or trailers belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

impl Side {
    pub(crate) fn index(self) -> usize {
        match self {
            Side::Request => 0,
            Side::Response => 1,
        }
    }
}

/// Where a side's body is in the stream (what the filters read and change).
pub(crate) fn body_of(side: Side, stream: &mut HttpStream) -> &mut Vec<u8> {
    match side {
        Side::Request => &mut stream.request_body,
        Side::Response => &mut stream.response_body,
    }
}

/// What a filter decided about one piece of a message, as Envoy's filter
/// statuses.
#[derive(Debug)]
pub(crate) enum FilterStatus {
    /// Pass it on to the next filter.
    Continue,
    /// Headers: the filters after this one do not see the headers yet;
    /// this one still gets the body and trailers, and a `Continue` from one
    /// of those releases everything held (Envoy's `StopIteration`).
    StopIteration,
    /// Headers: everything after the headers is held without calling this
    /// filter until it resumes (`StopAllIterationAndBuffer` with `buffer`:
    /// past the buffer limit the stream fails; else
    /// `StopAllIterationAndWatermark`: past it the sender is slowed).
    StopAll { buffer: bool },
    /// Body: hold this data; the filter sees all it holds (and what comes
    /// next) on its next call (`StopIterationAndBuffer`).
    Buffer,
    /// Body: hold this data; the filter sees only new data on its next call,
    /// and past the buffer limit the sender is slowed
    /// (`StopIterationAndWatermark`).
    Watermark,
    /// Body: this data goes no further; the filter stops
    /// (`StopIterationNoBuffer`).
    Drop,
    /// Answer the stream with this response instead.
    Respond(LocalResponse),
    /// Reset the stream without a response.
    Reset,
    /// The filter failed and its policy fails the stream (the host logged why).
    Failed,
}

/// What a filter call can use besides the stream: where its plugin's later
/// signals (resume, answer, close) for this stream go.
pub(crate) struct FilterContext<'a> {
    pub(crate) stream: &'a SharedStream,
    /// Present when the chain has a filter that may be resumed from outside.
    pub(crate) signals: Option<&'a SignalSink>,
}

/// A filter of an HTTP stream. Each method sees the stream's maps and
/// bodies (whatever the phase lets it see; a body call finds its data in
/// the side's body, and what it leaves there goes on) and decides.
pub(crate) trait HttpFilter {
    /// The request headers.
    fn request_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus;
    /// The response headers.
    fn response_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus;
    /// A piece of a body (in `stream.request_body` or `stream.response_body`).
    fn body(&mut self, side: Side, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus;
    /// The trailers of a message; the side's body holds what the filter held.
    fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> FilterStatus;
    /// Iteration on `side` went on past this filter after it stopped.
    fn released(&mut self, _side: Side, _stream: &SharedStream) {}
    /// The stream ended: the filter's last look at it.
    fn finish(self, stream: &SharedStream);
}

/// A filter of a chain.
pub(crate) enum Filter {
    /// A Proxy-Wasm plugin (`envoy.filters.http.wasm`).
    Wasm(WasmFilter),
    /// `envoy.filters.http.header_to_metadata`.
    HeaderToMetadata(HeaderToMetadataFilter),
    /// `envoy.filters.http.compressor`.
    Compressor(CompressorFilter),
    /// `envoy.filters.http.decompressor`.
    Decompressor(DecompressorFilter),
}

impl Filter {
    /// The plugin context whose signals this filter receives, if it has one.
    pub(crate) fn signal_key(&self) -> Option<(InstanceId, u32)> {
        match self {
            Filter::Wasm(f) => f.signal_key(),
            _ => None,
        }
    }

    /// Its plugin failed while the stream waited for it: whether the
    /// stream goes on without it (the plugin fails open).
    pub(crate) fn vm_failed(&mut self) -> bool {
        match self {
            Filter::Wasm(f) => f.vm_failed(),
            _ => false,
        }
    }
}

macro_rules! each_filter {
    ($self:ident, $f:ident => $call:expr) => {
        match $self {
            Filter::Wasm($f) => $call,
            Filter::HeaderToMetadata($f) => $call,
            Filter::Compressor($f) => $call,
            Filter::Decompressor($f) => $call,
        }
    };
}

impl HttpFilter for Filter {
    fn request_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        each_filter!(self, f => f.request_headers(cx, end_of_stream))
    }

    fn response_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        each_filter!(self, f => f.response_headers(cx, end_of_stream))
    }

    fn body(&mut self, side: Side, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        each_filter!(self, f => f.body(side, cx, end_of_stream))
    }

    fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> FilterStatus {
        each_filter!(self, f => f.trailers(side, cx))
    }

    fn released(&mut self, side: Side, stream: &SharedStream) {
        each_filter!(self, f => f.released(side, stream))
    }

    fn finish(self, stream: &SharedStream) {
        each_filter!(self, f => f.finish(stream))
    }
}
