//! `envoy.filters.http.compressor` and `envoy.filters.http.decompressor`.
//!
//! Each is a filter of the chain like any other: on the response path,
//! filters after it in the list (closer to the router) see the body as the
//! upstream sent it and filters before it see what it made, as in Envoy.
//! The compressor chooses by the client's `accept-encoding` among every
//! compressor of the chain (highest q-value; `choose_first` breaks ties,
//! then the order of the chain), and compresses only bodies Envoy would:
//! a content type of its list, at least `min_content_length` bytes, no
//! `content-encoding` yet, no `cache-control: no-transform`, a status not
//! listed as uncompressible, and, with `disable_on_etag_header`, no ETag.
//! Each chunk is compressed and flushed as it passes; the stream closes on
//! the last chunk or at the trailers.

use std::sync::Arc;

use bytes::Bytes;
use ferry_config::{CompressDirection, Compressor, Decompressor, Encoding};
use ferry_host::{HeaderMap, HttpStream, LocalResponse, SharedStream};

use super::codec::{Decoder, Encoder};
use super::{FilterContext, FilterStatus, HttpFilter, Side, body_of};
use crate::envoy_stats::FilterCounters;

/// Most a compression filter makes of one body: as much as the filters may
/// hold (see the connection manager's body filters).
const MAX_CODED_BODY: usize = ferry_host::MAX_VALUE_BYTES;

/// Envoy's names for the counters of a compressor direction, in the order
/// of the indexes below.
pub(crate) const COMPRESSOR_STATS: &[&str] = &[
    "compressed",
    "not_compressed",
    "total_uncompressed_bytes",
    "total_compressed_bytes",
    "content_length_too_small",
    "no_accept_header",
    "header_identity",
    "header_compressor_used",
    "header_compressor_overshadowed",
    "header_wildcard",
    "header_not_valid",
    "not_compressed_etag",
];
const COMPRESSED: usize = 0;
const NOT_COMPRESSED: usize = 1;
const UNCOMPRESSED_BYTES: usize = 2;
const COMPRESSED_BYTES: usize = 3;
const TOO_SMALL: usize = 4;
const NO_ACCEPT_HEADER: usize = 5;
const HEADER_IDENTITY: usize = 6;
const HEADER_USED: usize = 7;
const HEADER_OVERSHADOWED: usize = 8;
const HEADER_WILDCARD: usize = 9;
const HEADER_NOT_VALID: usize = 10;
const NOT_COMPRESSED_ETAG: usize = 11;

/// Envoy's names for the counters of a decompressor direction.
pub(crate) const DECOMPRESSOR_STATS: &[&str] =
    &["decompressed", "not_decompressed", "total_uncompressed_bytes", "total_compressed_bytes"];
const DECOMPRESSED: usize = 0;
const NOT_DECOMPRESSED: usize = 1;
const DECODED_BYTES: usize = 2;
const CODED_BYTES: usize = 3;

/// A compressor of a chain, with what it needs to know of the others.
pub struct CompressorPlan {
    pub(crate) config: Compressor,
    /// The encodings of the chain's response compressors, in chain order,
    /// with their `choose_first`; this one is at `position`.
    pub(crate) rivals: Vec<(Encoding, bool)>,
    pub(crate) position: usize,
    /// `compressor.<library>.<gzip|brotli|zstd>.response` and `.request`.
    pub(crate) response_stats: Arc<FilterCounters>,
    pub(crate) request_stats: Arc<FilterCounters>,
}

/// A decompressor of a chain.
pub struct DecompressorPlan {
    pub(crate) config: Decompressor,
    /// `decompressor.<library>.<gzip|brotli|zstd>.request` and `.response`.
    pub(crate) request_stats: Arc<FilterCounters>,
    pub(crate) response_stats: Arc<FilterCounters>,
}

/// The compressor of one stream.
pub(crate) struct CompressorFilter {
    plan: Arc<CompressorPlan>,
    /// The request's `accept-encoding`, read before it may be removed.
    accept_encoding: Option<String>,
    request: Option<Encoder>,
    response: Option<Encoder>,
}

impl CompressorFilter {
    pub(crate) fn new(plan: Arc<CompressorPlan>) -> Self {
        CompressorFilter { plan, accept_encoding: None, request: None, response: None }
    }

    fn stats(&self, side: Side) -> &FilterCounters {
        match side {
            Side::Request => &self.plan.request_stats,
            Side::Response => &self.plan.response_stats,
        }
    }

    fn encoder(&mut self, side: Side) -> &mut Option<Encoder> {
        match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
        }
    }

    /// The server's side of the decision: whether this response may be
    /// compressed at all (then `vary` tells caches it depends on
    /// `accept-encoding`).
    fn response_compressible(&self, direction: &CompressDirection, headers: &HeaderMap) -> bool {
        let config = &self.plan.config;
        let stats = &self.plan.response_stats;
        let status = headers.get(b":status").and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok());
        if status.is_some_and(|s| config.uncompressible_codes.contains(&s)) {
            return false;
        }
        if !content_allowed(direction, headers, stats) {
            return false;
        }
        if config.disable_on_etag && headers.contains(b"etag") {
            stats.add(NOT_COMPRESSED_ETAG, 1);
            return false;
        }
        true
    }

    /// The client's side: whether its `accept-encoding` chooses this
    /// compressor (counting why not).
    fn accepted(&self) -> bool {
        let stats = &self.plan.response_stats;
        let Some(accept) = &self.accept_encoding else {
            stats.add(NO_ACCEPT_HEADER, 1);
            return false;
        };
        match negotiate(accept, &self.plan.rivals) {
            Choice::Chosen { position, wildcard } if position == self.plan.position => {
                stats.add(if wildcard { HEADER_WILDCARD } else { HEADER_USED }, 1);
                true
            }
            Choice::Chosen { .. } => {
                stats.add(HEADER_OVERSHADOWED, 1);
                false
            }
            Choice::Identity => {
                stats.add(HEADER_IDENTITY, 1);
                false
            }
            Choice::None => {
                stats.add(HEADER_NOT_VALID, 1);
                false
            }
        }
    }

    /// Compresses a piece of `side`'s body in place; on the last, ends the stream.
    fn compress(&mut self, side: Side, stream: &mut HttpStream, end: bool) -> FilterStatus {
        let Some(encoder) = self.encoder(side).as_mut() else { return FilterStatus::Continue };
        let plain = std::mem::take(body_of(side, stream));
        let mut result = encoder.encode(&plain);
        if end && let Some(encoder) = self.encoder(side).take() {
            result = result.and_then(|mut out| {
                out.extend(encoder.finish()?);
                Ok(out)
            });
        }
        match result {
            Ok(coded) => {
                let stats = self.stats(side);
                stats.add(UNCOMPRESSED_BYTES, plain.len() as u64);
                stats.add(COMPRESSED_BYTES, coded.len() as u64);
                *body_of(side, stream) = coded;
                FilterStatus::Continue
            }
            Err(error) => {
                tracing::warn!(target: "http", "compressor {}: {error}", self.plan.config.library_name);
                self.encoder(side).take();
                FilterStatus::Respond(local_error(side, "compression failed"))
            }
        }
    }
}

impl HttpFilter for CompressorFilter {
    fn request_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        let stream = &mut *cx.stream.borrow_mut();
        let headers = &mut stream.request_headers;
        self.accept_encoding = headers.joined(b"accept-encoding").map(|v| String::from_utf8_lossy(&v).into_owned());
        let config = &self.plan.config;
        if config.response.is_some() && config.remove_accept_encoding {
            headers.remove(b"accept-encoding");
        }
        if let Some(direction) = &config.request
            && !end_of_stream
        {
            // Envoy compresses a request only when it states its length.
            let stats = &self.plan.request_stats;
            if headers.contains(b"content-length") && content_allowed(direction, headers, stats) {
                match Encoder::new(&config.encoder, MAX_CODED_BODY) {
                    Ok(encoder) => {
                        headers.remove(b"content-length");
                        headers.replace(b"content-encoding", config.encoder.encoding.token().as_bytes());
                        self.request = Some(encoder);
                        stats.add(COMPRESSED, 1);
                    }
                    Err(error) => tracing::warn!(target: "http", "compressor {}: {error}", config.library_name),
                }
            } else {
                stats.add(NOT_COMPRESSED, 1);
            }
        }
        FilterStatus::Continue
    }

    fn response_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        let Some(direction) = &self.plan.config.response else { return FilterStatus::Continue };
        if end_of_stream {
            return FilterStatus::Continue;
        }
        let stream = &mut *cx.stream.borrow_mut();
        let headers = &stream.response_headers;
        let compressible = self.response_compressible(direction, headers);
        let accepted = self.accepted();
        let headers = &mut stream.response_headers;
        if compressible {
            add_vary(headers);
        }
        if !(compressible && accepted) {
            self.plan.response_stats.add(NOT_COMPRESSED, 1);
            return FilterStatus::Continue;
        }
        let config = &self.plan.config;
        let encoder = match Encoder::new(&config.encoder, MAX_CODED_BODY) {
            Ok(encoder) => encoder,
            Err(error) => {
                tracing::warn!(target: "http", "compressor {}: {error}", config.library_name);
                self.plan.response_stats.add(NOT_COMPRESSED, 1);
                return FilterStatus::Continue;
            }
        };
        headers.remove(b"content-length");
        headers.replace(b"content-encoding", config.encoder.encoding.token().as_bytes());
        // The bytes change: a strong validator no longer holds.
        if let Some(etag) = headers.get(b"etag").cloned()
            && !etag.starts_with(b"W/")
        {
            if config.weaken_etag {
                headers.replace(b"etag", &[b"W/", &etag[..]].concat());
            } else {
                headers.remove(b"etag");
            }
        }
        self.response = Some(encoder);
        self.plan.response_stats.add(COMPRESSED, 1);
        FilterStatus::Continue
    }

    fn body(&mut self, side: Side, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        self.compress(side, &mut cx.stream.borrow_mut(), end_of_stream)
    }

    fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> FilterStatus {
        // The body ended without an end flag: the stream closes before the trailers.
        self.compress(side, &mut cx.stream.borrow_mut(), true)
    }

    fn finish(self, _: &SharedStream) {}
}

/// The decompressor of one stream.
pub(crate) struct DecompressorFilter {
    plan: Arc<DecompressorPlan>,
    request: Option<Decoder>,
    response: Option<Decoder>,
}

impl DecompressorFilter {
    pub(crate) fn new(plan: Arc<DecompressorPlan>) -> Self {
        DecompressorFilter { plan, request: None, response: None }
    }

    fn stats(&self, side: Side) -> &FilterCounters {
        match side {
            Side::Request => &self.plan.request_stats,
            Side::Response => &self.plan.response_stats,
        }
    }

    fn decoder(&mut self, side: Side) -> &mut Option<Decoder> {
        match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
        }
    }

    /// Starts decoding `side` if its headers say it is in this coding
    /// (the outermost one), removing that coding and the length.
    fn start(&mut self, side: Side, headers: &mut HeaderMap, end_of_stream: bool) {
        let config = &self.plan.config;
        let (enabled, ignore_no_transform) = match side {
            Side::Request => (config.request, config.ignore_no_transform.0),
            Side::Response => (config.response, config.ignore_no_transform.1),
        };
        if !enabled || end_of_stream {
            return;
        }
        let stats = self.stats(side);
        let token = config.encoding.token();
        let codings = headers.joined(b"content-encoding").map(|v| String::from_utf8_lossy(&v).into_owned());
        let mut codings: Vec<&str> =
            codings.as_deref().map_or_else(Vec::new, |c| c.split(',').map(str::trim).collect());
        let outermost = codings.last().is_some_and(|c| c.eq_ignore_ascii_case(token));
        if !outermost || (!ignore_no_transform && no_transform(headers)) {
            stats.add(NOT_DECOMPRESSED, 1);
            return;
        }
        let decoder = match Decoder::new(config.encoding, MAX_CODED_BODY) {
            Ok(decoder) => decoder,
            Err(error) => {
                tracing::warn!(target: "http", "decompressor {}: {error}", config.library_name);
                stats.add(NOT_DECOMPRESSED, 1);
                return;
            }
        };
        codings.pop();
        if codings.is_empty() {
            headers.remove(b"content-encoding");
        } else {
            headers.replace(b"content-encoding", codings.join(", ").as_bytes());
        }
        headers.remove(b"content-length");
        stats.add(DECOMPRESSED, 1);
        *self.decoder(side) = Some(decoder);
    }

    /// Decodes a piece of `side`'s body in place; on the last, ends the stream.
    fn decompress(&mut self, side: Side, stream: &mut HttpStream, end: bool) -> FilterStatus {
        let Some(decoder) = self.decoder(side).as_mut() else { return FilterStatus::Continue };
        let coded = std::mem::take(body_of(side, stream));
        let mut result = decoder.decode(&coded);
        if end && let Some(decoder) = self.decoder(side).take() {
            result = result.and_then(|mut out| {
                out.extend(decoder.finish()?);
                Ok(out)
            });
        }
        match result {
            Ok(plain) => {
                let stats = self.stats(side);
                stats.add(CODED_BYTES, coded.len() as u64);
                stats.add(DECODED_BYTES, plain.len() as u64);
                *body_of(side, stream) = plain;
                FilterStatus::Continue
            }
            Err(error) => {
                let name = &self.plan.config.library_name;
                tracing::warn!(target: "http", "decompressor {name}: a {side:?} body does not decode: {error}");
                self.decoder(side).take();
                FilterStatus::Respond(local_error(side, "decompression failed"))
            }
        }
    }
}

impl HttpFilter for DecompressorFilter {
    fn request_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        let stream = &mut *cx.stream.borrow_mut();
        let config = &self.plan.config;
        let headers = &mut stream.request_headers;
        if config.response && config.advertise_accept_encoding {
            let token = config.encoding.token();
            match headers.joined(b"accept-encoding") {
                None => headers.replace(b"accept-encoding", token.as_bytes()),
                Some(accept) if !lists_token(&accept, token) => {
                    headers.replace(b"accept-encoding", &[&accept[..], b", ", token.as_bytes()].concat());
                }
                Some(_) => {}
            }
        }
        self.start(Side::Request, &mut stream.request_headers, end_of_stream);
        FilterStatus::Continue
    }

    fn response_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        self.start(Side::Response, &mut cx.stream.borrow_mut().response_headers, end_of_stream);
        FilterStatus::Continue
    }

    fn body(&mut self, side: Side, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        self.decompress(side, &mut cx.stream.borrow_mut(), end_of_stream)
    }

    fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> FilterStatus {
        self.decompress(side, &mut cx.stream.borrow_mut(), true)
    }

    fn finish(self, _: &SharedStream) {}
}

/// What a body that cannot be coded gets: the request is refused (400), a
/// response is not passed on (502).
fn local_error(side: Side, details: &str) -> LocalResponse {
    let (status, body): (u16, &[u8]) = match side {
        Side::Request => (400, b"Bad Request"),
        Side::Response => (502, b"Bad Gateway"),
    };
    LocalResponse {
        status,
        details: details.to_owned(),
        body: Bytes::from_static(body),
        headers: Vec::new(),
        grpc_status: None,
    }
}

/// The checks a compressed message's headers pass in both directions:
/// content type, length, no coding yet, no `no-transform`.
fn content_allowed(direction: &CompressDirection, headers: &HeaderMap, stats: &FilterCounters) -> bool {
    if let Some(content_type) = headers.get(b"content-type") {
        let content_type = String::from_utf8_lossy(content_type);
        let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if !direction.content_types.contains(&media_type) {
            return false;
        }
    }
    // Without a length the body streams: Envoy then compresses whatever its size.
    if let Some(length) =
        headers.get(b"content-length").and_then(|l| std::str::from_utf8(l).ok()?.trim().parse::<u64>().ok())
        && length < u64::from(direction.min_content_length)
    {
        stats.add(TOO_SMALL, 1);
        return false;
    }
    if headers.get(b"content-encoding").is_some_and(|c| !c.eq_ignore_ascii_case(b"identity")) {
        return false;
    }
    !no_transform(headers)
}

/// `cache-control: no-transform`: no proxy may change the coding.
fn no_transform(headers: &HeaderMap) -> bool {
    headers.joined(b"cache-control").is_some_and(|c| lists_token(&c, "no-transform"))
}

/// Whether a comma-separated header lists `token` (parameters aside).
fn lists_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|item| item.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(token))
}

/// Adds `accept-encoding` to `vary`, unless it is there (or `vary: *`).
fn add_vary(headers: &mut HeaderMap) {
    match headers.joined(b"vary") {
        None => headers.replace(b"vary", b"Accept-Encoding"),
        Some(vary) if lists_token(&vary, "accept-encoding") || lists_token(&vary, "*") => {}
        Some(vary) => headers.replace(b"vary", &[&vary[..], b", Accept-Encoding"].concat()),
    }
}

/// What a client's `accept-encoding` chooses among the chain's compressors.
#[derive(Debug, PartialEq)]
enum Choice {
    /// The compressor at `position`; `wildcard` if only `*` named it.
    Chosen { position: usize, wildcard: bool },
    /// `identity` outranks every compressor.
    Identity,
    /// No compressor is acceptable (each at q=0, or not named).
    None,
}

/// Chooses by q-value: a coding named outright takes its own weight, else
/// the weight of `*`; the highest above 0 wins, `choose_first` then chain
/// order breaking ties, unless `identity` is named with a higher weight.
fn negotiate(accept: &str, rivals: &[(Encoding, bool)]) -> Choice {
    let mut named: Vec<(String, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if token.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        named.push((token, q));
    }
    let weight = |token: &str| named.iter().find(|(t, _)| t == token).map(|(_, q)| *q);
    let wildcard = weight("*");
    let mut best: Option<(usize, f32, bool, bool)> = None;
    for (position, (encoding, first)) in rivals.iter().enumerate() {
        let (q, by_wildcard) = match weight(encoding.token()) {
            Some(q) => (q, false),
            None => (wildcard.unwrap_or(0.0), true),
        };
        if q <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, best_q, best_first, _)) => q > best_q || (q == best_q && *first && !best_first),
        };
        if better {
            best = Some((position, q, *first, by_wildcard));
        }
    }
    match best {
        Some((_, q, _, _)) if weight("identity").is_some_and(|identity| identity > q) => Choice::Identity,
        Some((position, _, _, wildcard)) => Choice::Chosen { position, wildcard },
        None if weight("identity").is_some_and(|q| q > 0.0) => Choice::Identity,
        None => Choice::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: &[(Encoding, bool)] = &[(Encoding::Gzip, false), (Encoding::Brotli, false)];

    #[test]
    fn the_highest_weight_wins() {
        assert_eq!(negotiate("gzip;q=0.5, br", CHAIN), Choice::Chosen { position: 1, wildcard: false });
        assert_eq!(negotiate("gzip, br;q=0.9", CHAIN), Choice::Chosen { position: 0, wildcard: false });
    }

    #[test]
    fn a_tie_goes_to_choose_first_then_to_the_chain_order() {
        assert_eq!(negotiate("br, gzip", CHAIN), Choice::Chosen { position: 0, wildcard: false });
        let chain = [(Encoding::Gzip, false), (Encoding::Brotli, true)];
        assert_eq!(negotiate("gzip, br", &chain), Choice::Chosen { position: 1, wildcard: false });
    }

    #[test]
    fn a_named_coding_outweighs_the_wildcard() {
        assert_eq!(negotiate("gzip;q=0, *", CHAIN), Choice::Chosen { position: 1, wildcard: true });
        assert_eq!(negotiate("*;q=0, gzip", CHAIN), Choice::Chosen { position: 0, wildcard: false });
        assert_eq!(negotiate("gzip;q=0, br;q=0, *", CHAIN), Choice::None);
    }

    #[test]
    fn identity_or_nothing() {
        assert_eq!(negotiate("identity", CHAIN), Choice::Identity);
        assert_eq!(negotiate("gzip;q=0.2, identity;q=0.8", CHAIN), Choice::Identity);
        assert_eq!(negotiate("deflate", CHAIN), Choice::None);
    }

    #[test]
    fn vary_is_added_once() {
        let mut headers = HeaderMap::new();
        add_vary(&mut headers);
        add_vary(&mut headers);
        assert_eq!(headers.get(b"vary").map(|v| &v[..]), Some(&b"Accept-Encoding"[..]));
        let mut headers = HeaderMap::new();
        headers.replace(b"vary", b"origin");
        add_vary(&mut headers);
        assert_eq!(headers.get(b"vary").map(|v| &v[..]), Some(&b"origin, Accept-Encoding"[..]));
    }
}
