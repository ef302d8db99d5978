//! Converting between hyper's messages and the header maps plugins see.

use bytes::Bytes;
use ferry_host::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;

/// Request headers as Envoy's connection manager presents them to filters:
/// `:authority`, `:path`, `:method`, `:scheme`, then the request's own
/// headers in wire order (without `host`, which became `:authority`, and
/// without the connection-level headers Envoy removes), then
/// `x-forwarded-proto` and `x-request-id` when absent. (`x-forwarded-for`
/// is already as `forwarding` left it.)
pub(crate) fn request_headers(
    parts: &Parts,
    generate_request_id: bool,
    (scheme, forwarded_proto): (&'static str, &'static str),
) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(parts.headers.len() + 6);
    let authority = parts
        .headers
        .get(header::HOST)
        .map(|h| Bytes::copy_from_slice(h.as_bytes()))
        .or_else(|| parts.uri.authority().map(|a| Bytes::copy_from_slice(a.as_str().as_bytes())))
        .unwrap_or_default();
    map.append_lowercase(Bytes::from_static(b":authority"), authority);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    map.append_lowercase(Bytes::from_static(b":path"), Bytes::copy_from_slice(path.as_bytes()));
    map.append_lowercase(Bytes::from_static(b":method"), method_bytes(&parts.method));
    map.append_lowercase(Bytes::from_static(b":scheme"), Bytes::from_static(scheme.as_bytes()));
    for (name, value) in &parts.headers {
        if name == header::HOST || is_connection_header(name.as_str().as_bytes()) {
            continue;
        }
        map.append_lowercase(name_bytes(name), Bytes::copy_from_slice(value.as_bytes()));
    }
    if !map.contains(b"x-forwarded-proto") {
        map.append_lowercase(Bytes::from_static(b"x-forwarded-proto"), Bytes::from_static(forwarded_proto.as_bytes()));
    }
    if generate_request_id && !map.contains(b"x-request-id") {
        map.append_lowercase(Bytes::from_static(b"x-request-id"), new_request_id());
    }
    map
}

/// A new `x-request-id` value: a random (v4) UUID, as Envoy's.
/// The random bits come from the thread's fast generator: a request id
/// needs to be unique, not secret.
fn new_request_id() -> Bytes {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let random = fastrand::u128(..).to_le_bytes();
    uuid::Builder::from_random_bytes(random).into_uuid().hyphenated().encode_lower(&mut text);
    Bytes::copy_from_slice(&text)
}

/// Adds a new `x-request-id` to a request that has none.
pub(crate) fn add_request_id(headers: &mut http::HeaderMap) {
    if !headers.contains_key(&X_REQUEST_ID)
        && let Ok(id) = HeaderValue::from_maybe_shared(new_request_id())
    {
        headers.insert(X_REQUEST_ID, id);
    }
}

/// Parsed once, not on every request.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The protocol as Envoy names it (`request.protocol`, `%PROTOCOL%`).
pub(crate) fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn method_bytes(method: &http::Method) -> Bytes {
    match *method {
        http::Method::GET => Bytes::from_static(b"GET"),
        http::Method::POST => Bytes::from_static(b"POST"),
        http::Method::PUT => Bytes::from_static(b"PUT"),
        http::Method::HEAD => Bytes::from_static(b"HEAD"),
        http::Method::DELETE => Bytes::from_static(b"DELETE"),
        _ => Bytes::copy_from_slice(method.as_str().as_bytes()),
    }
}

/// Header names are shared, not copied, for the common ones.
fn name_bytes(name: &HeaderName) -> Bytes {
    const COMMON: &[HeaderName] = &[
        header::USER_AGENT,
        header::ACCEPT,
        header::ACCEPT_ENCODING,
        header::ACCEPT_LANGUAGE,
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::COOKIE,
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
    ];
    const COMMON_STR: &[&str] = &[
        "user-agent",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-length",
        "connection",
        "cookie",
        "authorization",
        "cache-control",
    ];
    match COMMON.iter().position(|c| c == name) {
        Some(i) => Bytes::from_static(COMMON_STR[i].as_bytes()),
        None => Bytes::copy_from_slice(name.as_str().as_bytes()),
    }
}

/// Headers that describe one connection, not the message: never forwarded
/// to the other side. The first four are also stripped before filters see
/// a request, as Envoy does.
pub(crate) const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"];

/// Headers about the downstream connection that Envoy strips before
/// filters see the request.
fn is_connection_header(name: &[u8]) -> bool {
    HOP_BY_HOP[..4].iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `name` is one of [`HOP_BY_HOP`].
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Copies a plugin-visible map into hyper headers: pseudo-headers, framing
/// headers (hyper derives them from the body) and invalid entries are
/// skipped.
pub(crate) fn to_hyper_headers(map: &HeaderMap, out: &mut http::HeaderMap) {
    out.reserve(map.len());
    for (name, value) in map.entries() {
        // `te: trailers` says the client takes trailers: passed on, as Envoy does.
        let te_trailers = name.eq_ignore_ascii_case(b"te") && value.eq_ignore_ascii_case(b"trailers");
        if name.starts_with(b":")
            || (is_hop_by_hop(name) && !te_trailers)
            || name.eq_ignore_ascii_case(b"content-length")
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_maybe_shared(value.clone()))
        else {
            tracing::debug!(target: "http", "dropping a header a plugin made invalid");
            continue;
        };
        out.append(name, value);
    }
}

/// Trailers as plugins see them, in order.
pub(crate) fn trailers_map(trailers: &http::HeaderMap) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(trailers.len());
    for (name, value) in trailers {
        map.append_lowercase(name_bytes(name), Bytes::copy_from_slice(value.as_bytes()));
    }
    map
}

/// Trailers as plugins left them, for hyper, with the `trailer` header that
/// must announce them (hyper sends only announced trailer fields).
pub(crate) fn hyper_trailers(map: &HeaderMap) -> (http::HeaderMap, Option<HeaderValue>) {
    let mut trailers = http::HeaderMap::new();
    to_hyper_headers(map, &mut trailers);
    let mut names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    names.dedup();
    let announce = HeaderValue::from_str(&names.join(", ")).ok().filter(|_| !names.is_empty());
    (trailers, announce)
}

/// The response header map for a response with `status` and hyper headers:
/// `:status` first, then the headers in order.
pub(crate) fn response_headers(status: http::StatusCode, headers: &http::HeaderMap) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len() + 1);
    map.append_lowercase(Bytes::from_static(b":status"), Bytes::copy_from_slice(status.as_str().as_bytes()));
    for (name, value) in headers {
        if is_hop_by_hop(name.as_str().as_bytes()) {
            continue;
        }
        map.append_lowercase(name_bytes(name), Bytes::copy_from_slice(value.as_bytes()));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
    }

    fn names(map: &HeaderMap) -> Vec<String> {
        map.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect()
    }

    #[test]
    fn pseudo_headers_first_then_wire_order_then_added_headers() {
        let request = http::Request::get("/a?b=1")
            .header("host", "localhost:18000")
            .header("user-agent", "curl/7.68.0")
            .header("accept", "*/*")
            .header("x-custom", "1")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let map = request_headers(&parts(request), true, ("http", "http"));
        assert_eq!(
            names(&map),
            [
                ":authority",
                ":path",
                ":method",
                ":scheme",
                "user-agent",
                "accept",
                "x-custom",
                "x-forwarded-proto",
                "x-request-id"
            ]
        );
        assert_eq!(&map.get(b":authority").unwrap()[..], b"localhost:18000");
        assert_eq!(&map.get(b":path").unwrap()[..], b"/a?b=1");
        let id = std::str::from_utf8(map.get(b"x-request-id").unwrap()).unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }

    #[test]
    fn existing_forwarded_proto_and_request_id_are_kept() {
        let request = http::Request::get("/")
            .header("x-request-id", "abc")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        let map = request_headers(&parts(request), true, ("http", "http"));
        assert_eq!(&map.get(b"x-request-id").unwrap()[..], b"abc");
        assert_eq!(&map.get(b"x-forwarded-proto").unwrap()[..], b"https");
        assert_eq!(map.len(), 6);
    }

    #[test]
    fn no_request_id_when_generation_is_off() {
        let map = request_headers(&parts(http::Request::get("/").body(()).unwrap()), false, ("http", "http"));
        assert!(!map.contains(b"x-request-id"));
    }
}
