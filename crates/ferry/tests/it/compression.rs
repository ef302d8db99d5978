//! `envoy.filters.http.compressor` and `envoy.filters.http.decompressor`
//! against the real binary: what clients get in each coding, where the
//! filters sit among Wasm filters, Envoy's rules on what is compressed,
//! and their counters.

use crate::common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Ferry, Response, cluster, file_code, plugin, request, wasm_filter};
use http_body_util::Full;

/// What the upstream answers: long enough to compress, and repetitive.
const TEXT: &str = "ferry carries the same words across, again and again; the same words across again.\n";

/// An upstream answering every request with `body` and `headers`; it keeps
/// the `accept-encoding` of the last request.
fn upstream(body: Vec<u8>, headers: &'static [(&'static str, &'static str)]) -> (SocketAddr, Arc<Mutex<String>>) {
    let seen = Arc::new(Mutex::new(String::new()));
    let keep = seen.clone();
    let address = common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let (body, keep) = (body.clone(), keep.clone());
        async move {
            let accept = request.headers().get("accept-encoding").and_then(|v| v.to_str().ok()).unwrap_or("-");
            *keep.lock().unwrap() = accept.to_owned();
            let mut response = http::Response::new(Full::new(Bytes::from(body)));
            for (name, value) in headers {
                response.headers_mut().append(*name, http::HeaderValue::from_static(value));
            }
            response
        }
    });
    (address, seen)
}

/// A compressor filter item with `library` (gzip, brotli or zstd) and the
/// filter's `extra` fields (at the typed config's indentation, column 14).
fn compressor(library: &str, extra: &str) -> String {
    let type_name = match library {
        "gzip" => "Gzip",
        "brotli" => "Brotli",
        _ => "Zstd",
    };
    format!(
        r#"          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
{extra}              compressor_library:
                name: text
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.{library}.compressor.v3.{type_name}
"#
    )
}

/// A decompressor filter item with `library`.
fn decompressor(library: &str) -> String {
    let type_name = if library == "gzip" { "Gzip" } else { "Brotli" };
    format!(
        r#"          - name: envoy.filters.http.decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: upstream
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.{library}.decompressor.v3.{type_name}
"#
    )
}

/// The body-rewriting plugin: appends ` [checked]` to each response body
/// and upper-cases each request body.
fn rewriter() -> String {
    wasm_filter("body", "body", &file_code(&plugin("body_rewrite_plugin.wasm")))
}

/// ferry with `filters` before the router, every path to `upstream`, and
/// an admin endpoint.
fn start(filters: &str, upstream: SocketAddr) -> Ferry {
    let clusters = cluster("app", upstream);
    let config = common::ManagerConfig {
        top: common::ADMIN,
        routes: "              - match: { prefix: \"/\" }\n                route: { cluster: app }\n",
        filters,
        clusters: &clusters,
        ..Default::default()
    }
    .yaml();
    Ferry::start(&config, &["--concurrency", "1"])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The body a client reads, decoded as its `content-encoding` says.
fn decoded(response: &Response) -> String {
    let mut plain = Vec::new();
    match response.header("content-encoding") {
        None => plain = response.body.clone(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&response.body[..]).read_to_end(&mut plain).unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&response.body[..], 4096).read_to_end(&mut plain).unwrap();
        }
        Some("zstd") => plain = zstd::decode_all(&response.body[..]).unwrap(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
    String::from_utf8(plain).unwrap()
}

fn stat(ferry: &Ferry, name: &str) -> String {
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin").port()));
    let text = request(admin, "GET", "/stats", &[], b"").text();
    let line = text.lines().find(|l| l.starts_with(&format!("{name}: ")));
    line.unwrap_or_else(|| panic!("no {name} in\n{text}")).to_owned()
}

#[test]
fn gzip_compresses_the_body_a_wasm_filter_changed() {
    let (address, _) = upstream(TEXT.repeat(4).into_bytes(), &[("content-type", "text/plain; charset=utf-8")]);
    let ferry = start(&(compressor("gzip", "") + &rewriter()), address);
    let response = request(ferry.address("main"), "GET", "/", &[("accept-encoding", "gzip")], b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.header("vary"), Some("Accept-Encoding"));
    assert!(response.body.len() < TEXT.len() * 4, "compressed: {} bytes", response.body.len());
    assert_eq!(decoded(&response), TEXT.repeat(4) + " [checked]", "the plugin ran before the compressor");
    assert_eq!(
        stat(&ferry, "http.main.compressor.text.gzip.response.compressed"),
        "http.main.compressor.text.gzip.response.compressed: 1"
    );
    assert_eq!(
        stat(&ferry, "http.main.compressor.text.gzip.response.header_compressor_used"),
        "http.main.compressor.text.gzip.response.header_compressor_used: 1"
    );
}

#[test]
fn a_gzip_upstream_is_decompressed_for_a_wasm_filter_and_sent_on_in_brotli() {
    let (address, accept_seen) =
        upstream(gzip(TEXT.repeat(4).as_bytes()), &[("content-type", "text/html"), ("content-encoding", "gzip")]);
    let filters = compressor("brotli", "") + &rewriter() + &decompressor("gzip");
    let ferry = start(&filters, address);
    let response = request(ferry.address("main"), "GET", "/", &[("accept-encoding", "br")], b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("br"));
    assert_eq!(decoded(&response), TEXT.repeat(4) + " [checked]", "the plugin saw the decompressed body");
    // The decompressor advertised its coding to the upstream.
    assert_eq!(accept_seen.lock().unwrap().as_str(), "br, gzip");
    assert_eq!(
        stat(&ferry, "http.main.decompressor.upstream.gzip.response.decompressed"),
        "http.main.decompressor.upstream.gzip.response.decompressed: 1"
    );
}

#[test]
fn zstd_is_chosen_when_the_client_weighs_it_highest() {
    let (address, _) = upstream(TEXT.repeat(4).into_bytes(), &[("content-type", "application/json")]);
    let ferry = start(&(compressor("gzip", "") + &compressor("zstd", "")), address);
    let main = ferry.address("main");
    let response = request(main, "GET", "/", &[("accept-encoding", "gzip;q=0.5, zstd")], b"");
    assert_eq!(response.header("content-encoding"), Some("zstd"));
    assert_eq!(decoded(&response), TEXT.repeat(4));
    let response = request(main, "GET", "/", &[("accept-encoding", "zstd;q=0.4, gzip")], b"");
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(decoded(&response), TEXT.repeat(4));
    assert_eq!(
        stat(&ferry, "http.main.compressor.text.zstd.response.header_compressor_overshadowed"),
        "http.main.compressor.text.zstd.response.header_compressor_overshadowed: 1"
    );
}

#[test]
fn a_client_that_accepts_no_coding_gets_the_body_as_it_was_with_vary() {
    let (address, _) = upstream(TEXT.repeat(4).into_bytes(), &[("content-type", "text/plain")]);
    let ferry = start(&compressor("gzip", ""), address);
    let main = ferry.address("main");
    for accept in [None, Some("identity"), Some("gzip;q=0"), Some("deflate")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let response = request(main, "GET", "/", &headers, b"");
        assert_eq!(response.header("content-encoding"), None, "{accept:?}");
        assert_eq!(response.text(), TEXT.repeat(4), "{accept:?}");
        // A cache in front must know the answer depends on accept-encoding.
        assert_eq!(response.header("vary"), Some("Accept-Encoding"), "{accept:?}");
    }
    assert_eq!(
        stat(&ferry, "http.main.compressor.text.gzip.response.no_accept_header"),
        "http.main.compressor.text.gzip.response.no_accept_header: 1"
    );
}

#[test]
fn what_envoy_leaves_uncompressed_stays_so() {
    let cases: [(&'static [(&'static str, &'static str)], &str); 4] = [
        (&[("content-type", "image/png")], "a type off the list"),
        (&[("content-type", "text/plain"), ("cache-control", "no-transform")], "no-transform"),
        (&[("content-type", "text/plain"), ("content-encoding", "br")], "already coded"),
        (&[("content-type", "text/plain"), ("etag", "\"v1\"")], "an ETag with disable_on_etag_header"),
    ];
    for (headers, why) in cases {
        let (address, _) = upstream(TEXT.repeat(4).into_bytes(), headers);
        let ferry = start(&compressor("gzip", "              disable_on_etag_header: true\n"), address);
        let response = request(ferry.address("main"), "GET", "/", &[("accept-encoding", "gzip")], b"");
        assert_eq!(response.status, 200, "{why}");
        assert_ne!(response.header("content-encoding"), Some("gzip"), "{why}");
        assert_eq!(response.body, TEXT.repeat(4).into_bytes(), "{why}");
    }
    // Shorter than min_content_length.
    let (address, _) = upstream(b"short".to_vec(), &[("content-type", "text/plain")]);
    let ferry = start(&compressor("gzip", ""), address);
    let response = request(ferry.address("main"), "GET", "/", &[("accept-encoding", "gzip")], b"");
    assert_eq!((response.header("content-encoding"), response.text().as_str()), (None, "short"));
    assert_eq!(
        stat(&ferry, "http.main.compressor.text.gzip.response.content_length_too_small"),
        "http.main.compressor.text.gzip.response.content_length_too_small: 1"
    );
}

#[test]
fn a_strong_etag_is_dropped_or_weakened_when_the_body_is_compressed() {
    let (address, _) = upstream(TEXT.repeat(4).into_bytes(), &[("content-type", "text/plain"), ("etag", "\"v1\"")]);
    let ferry = start(&compressor("gzip", ""), address);
    let response = request(ferry.address("main"), "GET", "/", &[("accept-encoding", "gzip")], b"");
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.header("etag"), None, "the bytes changed: a strong validator is removed");
    drop(ferry);
    let ferry = start(&compressor("gzip", "              weaken_etag_on_compress: true\n"), address);
    let response = request(ferry.address("main"), "GET", "/", &[("accept-encoding", "gzip")], b"");
    assert_eq!(response.header("etag"), Some("W/\"v1\""));
}

#[test]
fn a_gzip_request_body_is_decompressed_before_a_wasm_filter_reads_it() {
    let (address, _) = (common::echo_server(), ());
    let ferry = start(&(decompressor("gzip") + &rewriter()), address);
    let main = ferry.address("main");
    let body = gzip(b"quiet words from the client");
    let response = request(main, "POST", "/", &[("content-encoding", "gzip")], &body);
    assert_eq!(response.status, 200);
    // The echo server answers what it got: decoded, then upper-cased by the plugin.
    assert_eq!(response.text(), "echo: QUIET WORDS FROM THE CLIENT [checked]");
    // A body that does not decode is refused, and ferry goes on serving.
    let response = request(main, "POST", "/", &[("content-encoding", "gzip")], b"not gzip at all");
    assert_eq!(response.status, 400);
    assert_eq!(request(main, "POST", "/", &[], b"plain").text(), "echo: PLAIN [checked]");
}

#[test]
fn request_compression_sends_the_upstream_a_coded_body() {
    let received = Arc::new(Mutex::new((String::new(), Vec::new())));
    let keep = received.clone();
    let address = common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let keep = keep.clone();
        async move {
            use http_body_util::BodyExt as _;
            let coding = request.headers().get("content-encoding").map_or("-", |v| v.to_str().unwrap()).to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes().to_vec();
            *keep.lock().unwrap() = (coding, body);
            http::Response::new(Full::new(Bytes::from_static(b"ok")))
        }
    });
    let extra = "              request_direction_config: {}\n              response_direction_config: { common_config: { enabled: { default_value: false, runtime_key: off } } }\n";
    let ferry = start(&compressor("gzip", extra), address);
    let body = TEXT.repeat(3);
    let response =
        request(ferry.address("main"), "POST", "/", &[("content-type", "application/json")], body.as_bytes());
    assert_eq!(response.status, 200);
    let (coding, coded) = received.lock().unwrap().clone();
    assert_eq!(coding, "gzip");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&coded[..]).read_to_string(&mut plain).unwrap();
    assert_eq!(plain, body);
}

#[test]
fn a_compressor_without_a_library_names_the_field() {
    let filter = "          - name: envoy.filters.http.compressor\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor\n              content_length: 100\n";
    let config = common::ManagerConfig {
        routes: "              - match: { prefix: \"/\" }\n                direct_response: { status: 200 }\n",
        filters: filter,
        ..Default::default()
    }
    .yaml();
    let path = common::temp_file("compressor_without_library.yaml", &config);
    let (status, _, stderr) = common::run_to_end(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("http_filters[0].typed_config.compressor_library: required"), "{stderr}");
}
