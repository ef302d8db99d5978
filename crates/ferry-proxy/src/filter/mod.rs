//! The filters the HTTP connection manager runs a stream through.
//!
//! [`HttpFilter`] is what the connection manager asks of a filter, phase by
//! phase; it knows nothing of Wasm. [`WasmFilter`] is the implementation
//! that runs a Proxy-Wasm plugin (and waits out its pauses); [`Filter`] is
//! the element of a filter chain, one variant per implementation.

mod codec;
mod compression;
mod header_to_metadata;
mod wasm;

use ferry_host::{HttpStream, LocalResponse};

pub(crate) use compression::{COMPRESSOR_STATS, CompressorFilter, DECOMPRESSOR_STATS, DecompressorFilter};
pub use compression::{CompressorPlan, DecompressorPlan};
pub(crate) use header_to_metadata::HeaderToMetadataFilter;
pub(crate) use wasm::WasmFilter;

/// Which message a body or trailers belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

/// Where a side's body is in the stream (what the filters read and change).
pub(crate) fn body_of(side: Side, stream: &mut HttpStream) -> &mut Vec<u8> {
    match side {
        Side::Request => &mut stream.request_body,
        Side::Response => &mut stream.response_body,
    }
}

/// What a filter decided in one phase.
#[derive(Debug)]
pub(crate) enum FilterStatus {
    /// Go on with the next filter.
    Continue,
    /// Bodies only: hold this data; the next chunk is added to it.
    Buffer,
    /// Answer the stream with this response instead.
    Respond(LocalResponse),
    /// Reset the stream without a response.
    Reset,
    /// The filter failed and its policy fails the stream (the host logged why).
    Failed,
}

/// A filter of an HTTP stream: each method sees the stream's maps and
/// bodies (whatever the phase lets it see) and decides.
pub(crate) trait HttpFilter {
    /// The request headers.
    async fn request_headers(&mut self, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus;
    /// The response headers.
    async fn response_headers(&mut self, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus;
    /// A piece of a body (in `stream.request_body` or `stream.response_body`),
    /// with what the filter held before.
    async fn body(&mut self, side: Side, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus;
    /// The trailers of a message.
    async fn trailers(&mut self, side: Side, stream: &mut HttpStream) -> FilterStatus;
    /// Gives the stream back if the filter holds it (a stream dropped while
    /// the filter waited).
    fn reclaim(&mut self, stream: &mut HttpStream);
    /// The stream ended: the filter's last look at it.
    fn finish(self, stream: &mut HttpStream);
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

impl HttpFilter for Filter {
    async fn request_headers(&mut self, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus {
        match self {
            Filter::Wasm(f) => f.request_headers(stream, end_of_stream).await,
            Filter::HeaderToMetadata(f) => f.request_headers(stream, end_of_stream).await,
            Filter::Compressor(f) => f.request_headers(stream, end_of_stream).await,
            Filter::Decompressor(f) => f.request_headers(stream, end_of_stream).await,
        }
    }

    async fn response_headers(&mut self, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus {
        match self {
            Filter::Wasm(f) => f.response_headers(stream, end_of_stream).await,
            Filter::HeaderToMetadata(f) => f.response_headers(stream, end_of_stream).await,
            Filter::Compressor(f) => f.response_headers(stream, end_of_stream).await,
            Filter::Decompressor(f) => f.response_headers(stream, end_of_stream).await,
        }
    }

    async fn body(&mut self, side: Side, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus {
        match self {
            Filter::Wasm(f) => f.body(side, stream, end_of_stream).await,
            Filter::HeaderToMetadata(f) => f.body(side, stream, end_of_stream).await,
            Filter::Compressor(f) => f.body(side, stream, end_of_stream).await,
            Filter::Decompressor(f) => f.body(side, stream, end_of_stream).await,
        }
    }

    async fn trailers(&mut self, side: Side, stream: &mut HttpStream) -> FilterStatus {
        match self {
            Filter::Wasm(f) => f.trailers(side, stream).await,
            Filter::HeaderToMetadata(f) => f.trailers(side, stream).await,
            Filter::Compressor(f) => f.trailers(side, stream).await,
            Filter::Decompressor(f) => f.trailers(side, stream).await,
        }
    }

    fn reclaim(&mut self, stream: &mut HttpStream) {
        match self {
            Filter::Wasm(f) => f.reclaim(stream),
            Filter::HeaderToMetadata(f) => f.reclaim(stream),
            Filter::Compressor(f) => f.reclaim(stream),
            Filter::Decompressor(f) => f.reclaim(stream),
        }
    }

    fn finish(self, stream: &mut HttpStream) {
        match self {
            Filter::Wasm(f) => f.finish(stream),
            Filter::HeaderToMetadata(f) => f.finish(stream),
            Filter::Compressor(f) => f.finish(stream),
            Filter::Decompressor(f) => f.finish(stream),
        }
    }
}
