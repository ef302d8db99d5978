//! Request and response trailers through a Wasm filter, end to end: chunked
//! messages with trailers in both directions, the body callbacks'
//! `end_of_stream` false when trailers follow, trailers read and changed by
//! the plugin, and a stream paused in its request trailers and resumed.

use crate::common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::{Ferry, cluster, file_code, listener, plugin, read_chunked, read_head, wasm_filter};

/// What the upstream received: body and trailer lines (lower-cased names).
struct Received {
    body: Vec<u8>,
    trailers: Vec<String>,
}

/// An upstream that reads one chunked request with trailers per connection,
/// reports it, and answers `world` with trailers `x-upstream-trailer: 1`
/// and `x-secret: s`.
fn trailer_upstream() -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let head = read_head(&mut reader);
            assert!(head.iter().any(|l| l == "transfer-encoding: chunked"), "chunked request: {head:?}");
            let (body, trailers) = read_chunked(&mut reader);
            let _ = tx.send(Received { body, trailers });
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-upstream-trailer, x-secret\r\nConnection: close\r\n\r\n5\r\nworld\r\n0\r\nx-upstream-trailer: 1\r\nx-secret: s\r\n\r\n",
            );
        }
    });
    (address, rx)
}

fn start(upstream: SocketAddr) -> Ferry {
    let route = "              - match: { prefix: \"/\" }\n                route: { cluster: upstream }\n";
    let filter = wasm_filter("trailers", "trailers", &file_code(&plugin("trailers_plugin.wasm")));
    let config = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        listener("main", 0, route, &filter),
        cluster("upstream", upstream)
    );
    Ferry::start(&config, &["--concurrency", "1"])
}

/// Sends a chunked POST with `trailers` (announced in a `Trailer` header,
/// as HTTP/1.1 senders do); returns the response head, body and trailers.
fn post_with_trailers(address: SocketAddr, trailers: &str) -> (Vec<String>, Vec<u8>, Vec<String>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let names: Vec<&str> = trailers.lines().filter_map(|l| l.split_once(':')).map(|(n, _)| n).collect();
    let names = names.join(", ");
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: {names}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n{trailers}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    assert_eq!(head[0], "http/1.1 200 ok", "{head:?}");
    assert!(head.iter().any(|l| l == "transfer-encoding: chunked"), "chunked response: {head:?}");
    let (body, trailers) = read_chunked(&mut reader);
    (head, body, trailers)
}

#[test]
fn trailers_reach_the_plugin_both_ways_and_its_changes_reach_the_other_side() {
    let (upstream, received) = trailer_upstream();
    let ferry = start(upstream);
    let (head, body, trailers) = post_with_trailers(ferry.address("main"), "x-checksum: abc\r\nx-secret: s\r\n");
    let got = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got.body, b"hello");
    assert_eq!(got.trailers, ["x-checksum: abc", "x-plugin-trailer: seen"], "x-secret removed, one added");
    assert_eq!(body, b"world");
    assert_eq!(trailers, ["x-upstream-trailer: 1", "x-secret: s", "x-response-trailer: added"]);
    assert!(head.iter().any(|l| l.starts_with("trailer: ") && l.contains("x-response-trailer")), "{head:?}");
    ferry.wait_for("response trailers", Duration::from_secs(10));
    let log: Vec<String> =
        ferry.lines().iter().filter_map(|l| l.split_once("trailers: ").map(|(_, m)| m.to_owned())).collect();
    assert_eq!(
        log,
        [
            "request body 5 bytes, end_of_stream=false",
            r#"request trailers (2): [("x-checksum", "abc"), ("x-secret", "s")]"#,
            "response body 5 bytes, end_of_stream=false",
            r#"response trailers (2): [("x-upstream-trailer", "1"), ("x-secret", "s")]"#,
        ]
    );
}

#[test]
fn a_stream_paused_in_its_request_trailers_goes_on_when_resumed() {
    let (upstream, received) = trailer_upstream();
    let ferry = start(upstream);
    let (_, body, _) = post_with_trailers(ferry.address("main"), "x-stop: yes\r\n");
    assert_eq!(body, b"world");
    let got = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got.trailers, ["x-stop: yes", "x-plugin-trailer: seen"]);
    let pausing = ferry.wait_for("pausing", Duration::from_secs(10));
    let id = pausing.split("pausing ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    ferry.wait_for(&format!("resumed {id} from a tick"), Duration::from_secs(10));
}
