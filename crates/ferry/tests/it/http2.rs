//! HTTP/2 from clients, against the real binary: h2c with prior knowledge
//! (hyper's HTTP/2 client) on `codec_type` AUTO and HTTP2, plain HTTP/1.1
//! refused by an HTTP2-only listener, gRPC streamed through the proxy with
//! its trailers on both request paths, and `request.protocol` as a plugin
//! reads it.

use crate::common;

use common::Frames;

use std::net::SocketAddr;

use bytes::Bytes;
use common::grpc::grpc_server;
use common::{Ferry, file_code, plugin, wasm_filter};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Frame;

/// A listener with `codec` and `filters`: `/grpc` to the gRPC server over
/// HTTP/2, anything else a direct 200 `hello`.
fn config(codec: &str, filters: &str, grpc: SocketAddr) -> String {
    let manager = format!(
        "          codec_type: {codec}\n          http2_protocol_options: {{ max_concurrent_streams: 100, initial_stream_window_size: 1048576 }}\n"
    );
    let routes = r#"              - match: { prefix: "/test.Echo/" }
                route: { cluster: grpc }
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: hello } }"#;
    let clusters = format!(
        "  - name: grpc\n    connect_timeout: 1s\n    http2_protocol_options: {{}}\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
        grpc.ip(),
        grpc.port()
    );
    common::ManagerConfig { manager: &manager, routes, filters, clusters: &clusters, ..Default::default() }.yaml()
}

/// Runs `f` with an HTTP/2 (prior knowledge) connection to `address`.
fn with_h2<T>(address: SocketAddr, f: impl AsyncFnOnce(hyper::client::conn::http2::SendRequest<Body>) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("an HTTP/2 handshake");
        tokio::spawn(connection);
        f(sender).await
    })
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

/// A gRPC message: flag, length, bytes.
fn framed(message: &str) -> Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.into()
}

#[test]
fn h2c_clients_are_answered_on_auto_and_http2_listeners() {
    let grpc = grpc_server();
    for codec in ["AUTO", "HTTP2"] {
        let ferry = Ferry::start(&config(codec, "", grpc), &["--concurrency", "1"]);
        let main = ferry.address("main");
        let (status, version, body) = with_h2(main, async |mut sender| {
            let request = http::Request::get(format!("http://localhost:{}/", main.port())).body(empty()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            let (status, version) = (response.status(), response.version());
            (status, version, response.into_body().collect().await.unwrap().to_bytes())
        });
        assert_eq!(
            (status, version, &body[..]),
            (http::StatusCode::OK, http::Version::HTTP_2, &b"hello"[..]),
            "{codec}"
        );
    }
    // AUTO still speaks HTTP/1.1.
    let ferry = Ferry::start(&config("AUTO", "", grpc), &["--concurrency", "1"]);
    assert_eq!(common::get(ferry.address("main"), "/", &[]).text(), "hello");
}

#[test]
fn an_http2_only_listener_refuses_http1() {
    let ferry = Ferry::start(&config("HTTP2", "", grpc_server()), &["--concurrency", "1"]);
    let mut stream = std::net::TcpStream::connect(ferry.address("main")).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    use std::io::{Read as _, Write as _};
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn grpc_streams_through_the_proxy_with_trailers_on_both_paths() {
    let grpc = grpc_server();
    let noop = common::noop_filter();
    for filters in ["", noop.as_str()] {
        let ferry = Ferry::start(&config("AUTO", filters, grpc), &["--concurrency", "1"]);
        let main = ferry.address("main");
        let (status, body, trailers) = with_h2(main, async |mut sender| {
            let body = Frames(["one", "two", "three"].map(|m| Frame::data(framed(m))).into()).boxed();
            let request = http::Request::post(format!("http://localhost:{}/test.Echo/Stream", main.port()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(body)
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            (status, collected.to_bytes(), trailers)
        });
        let filtered = !filters.is_empty();
        assert_eq!(status, http::StatusCode::OK, "filter: {filtered}");
        let expected = [framed("echo: one"), framed("echo: two"), framed("echo: three")].concat();
        assert_eq!(body, expected, "filter: {filtered}");
        assert_eq!(trailers.get("grpc-status").unwrap(), "0", "filter: {filtered}");
        assert_eq!(trailers.get("x-count").unwrap(), "3", "filter: {filtered}");
    }
}

#[test]
fn grpc_messages_are_read_and_changed_by_a_wasm_filter_both_ways() {
    let grpc = grpc_server();
    let filter = common::wasm_filter("grpc", "grpc", &common::file_code(&common::plugin("body_rewrite_plugin.wasm")))
        .replace(
            "                name: grpc\n",
            "                name: grpc\n                configuration: { \"@type\": type.googleapis.com/google.protobuf.StringValue, value: grpc }\n",
        );
    let ferry = Ferry::start(&config("AUTO", &filter, grpc), &["--concurrency", "1"]);
    let main = ferry.address("main");
    for path in ["/test.Echo/Stream", "/test.Echo/Unary"] {
        let messages: &[&str] = if path.ends_with("Stream") { &["one", "two", "three"] } else { &["one"] };
        let (status, body, trailers) = with_h2(main, async |mut sender| {
            let frames: std::collections::VecDeque<_> = messages.iter().map(|m| Frame::data(framed(m))).collect();
            let request = http::Request::post(format!("http://localhost:{}{path}", main.port()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Frames(frames).boxed())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            (status, collected.to_bytes(), trailers)
        });
        assert_eq!(status, http::StatusCode::OK, "{path}");
        // The server saw each message with `!`; the client gets each answer with `seen `.
        let expected: Vec<u8> = messages.iter().flat_map(|m| framed(&format!("seen echo: {m}!")).to_vec()).collect();
        assert_eq!(
            body,
            Bytes::from(expected),
            "{path} {:#?}",
            ferry.lines().iter().filter(|l| l.contains("grpc")).collect::<Vec<_>>()
        );
        assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{path}");
    }
}

#[test]
fn plugins_read_the_protocol_as_envoy_names_it() {
    let filter = wasm_filter("attributes", "attributes", &file_code(&plugin("attributes_plugin.wasm")));
    let ferry = Ferry::start(&config("AUTO", &filter, grpc_server()), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let body = with_h2(main, async |mut sender| {
        let request = http::Request::get(format!("http://localhost:{}/", main.port()))
            .header("x-property", "request.protocol")
            .body(empty())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    });
    assert_eq!(&body[..], b"485454502f32", "hex of HTTP/2");
}

#[test]
fn an_http2_request_body_ends_on_its_last_data_frame_an_http1_response_on_a_call_of_its_own() {
    let filter = wasm_filter("body", "body", &file_code(&plugin("body_rewrite_plugin.wasm")));
    let routes = "              - match: { prefix: \"/echo\" }\n                route: { cluster: echo }";
    let clusters = common::cluster("echo", common::echo_server());
    let config = common::ManagerConfig { routes, filters: &filter, clusters: &clusters, ..Default::default() }.yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let main = ferry.address("main");
    let body = with_h2(main, async |mut sender| {
        let frames = Frames(["abc", "def"].map(|m| Frame::data(Bytes::from(m))).into()).boxed();
        let request = http::Request::post(format!("http://localhost:{}/echo", main.port())).body(frames).unwrap();
        let response = sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    });
    assert_eq!(&body[..], b"echo: ABCDEF [checked]");
    ferry.wait_for("response body 12 end_of_stream=true", std::time::Duration::from_secs(10));
    let calls = common::body_calls(&ferry);
    assert_eq!(
        calls,
        [
            "request body 3 end_of_stream=false",
            "request body 6 end_of_stream=true",
            "response body 12 end_of_stream=false",
            "response body 12 end_of_stream=true",
        ]
    );
}

/// RFC 9113 §8.3.1: an HTTP/2 request whose `host` names another entity
/// than its `:authority` is malformed; one that agrees (in any case) is not.
#[test]
fn an_http2_host_header_that_differs_from_the_authority_makes_the_request_malformed() {
    let ferry = Ferry::start(&config("AUTO", "", grpc_server()), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let statuses = with_h2(main, async |mut sender| {
        let mut statuses = Vec::new();
        for host in ["elsewhere.example".to_owned(), format!("LOCALHOST:{}", main.port())] {
            let request = http::Request::get(format!("http://localhost:{}/", main.port()))
                .header("host", host)
                .body(empty())
                .unwrap();
            statuses.push(sender.send_request(request).await.unwrap().status().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [400, 200]);
}
