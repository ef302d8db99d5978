//! Request bodies through a Wasm filter chunk by chunk, and bodies too
//! large to buffer, against the real binary (rewriting bodies is
//! conformance case `body_rewrite`).

use crate::common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    Ferry, cluster, direct_route, echo_server, file_code, get, listener, plugin, read_head, request, wasm_filter,
};

/// `/echo` proxies to an echo server, everything else answers directly;
/// the body-rewriting plugin runs on both.
fn config() -> String {
    let filter = wasm_filter("body", "body", &file_code(&plugin("body_rewrite_plugin.wasm")));
    let routes = "              - match: { prefix: \"/echo\" }\n                route: { cluster: echo }\n".to_owned()
        + &direct_route("/", "direct\n");
    format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        listener("main", 0, &routes, &filter),
        cluster("echo", echo_server())
    )
}

#[test]
fn a_request_body_too_large_to_buffer_is_413() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let big = vec![b'x'; (1 << 20) + 1];
    let response = request(ferry.address("main"), "POST", "/echo", &[], &big);
    assert_eq!(response.status, 413);
    assert_eq!(get(ferry.address("main"), "/", &[]).status, 200);
}

/// A chunked body arriving in three pieces: the plugin sees each piece added
/// to what it holds (it returns StopIterationAndBuffer until the end), then
/// the whole body with end_of_stream, as Envoy delivers it; the upstream
/// gets the body as the plugin left it. The response (content-length) is
/// one chunk with end_of_stream false, then the end on its own.
#[test]
fn a_chunked_body_reaches_the_filter_piece_by_piece_and_is_buffered_until_the_end() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let mut stream = TcpStream::connect(ferry.address("main")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    for (piece, held) in [("abc", 3), ("def", 6), ("ghi", 9)] {
        stream.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes()).unwrap();
        ferry.wait_for(&format!("request body {held} end_of_stream=false"), Duration::from_secs(10));
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    assert_eq!(head[0], "http/1.1 200 ok", "{head:?}");
    let length: usize = head.iter().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
    let mut body = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut body).unwrap();
    assert_eq!(String::from_utf8_lossy(&body), "echo: ABCDEFGHI [checked]");
    // Log lines are written by a background thread: wait for the last one.
    ferry.wait_for("response body 15 end_of_stream=true", Duration::from_secs(10));
    let calls = common::body_calls(&ferry);
    assert_eq!(
        calls,
        [
            "request body 3 end_of_stream=false",
            "request body 6 end_of_stream=false",
            "request body 9 end_of_stream=false",
            "request body 9 end_of_stream=true",
            // The upstream's response has a content-length: over HTTP/1.1,
            // Envoy's codec ends it with a call of its own, where the
            // buffering plugin sees all it holds again.
            "response body 15 end_of_stream=false",
            "response body 15 end_of_stream=true",
        ]
    );
}

#[test]
fn per_connection_buffer_limit_bytes_sets_how_much_the_filters_may_hold() {
    let config = config().replacen(
        "    filter_chains:\n",
        "    per_connection_buffer_limit_bytes: 1024\n    filter_chains:\n",
        1,
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let main = ferry.address("main");
    let small = request(main, "POST", "/echo", &[], &[b'x'; 1000]);
    assert_eq!(small.status, 200, "under the limit");
    let large = request(main, "POST", "/echo", &[], &[b'x'; 2000]);
    assert_eq!(large.status, 413, "past the listener's limit, not Envoy's 1 MiB default");
}
