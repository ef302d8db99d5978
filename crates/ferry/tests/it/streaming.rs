//! Real traffic shapes through the streaming pipeline, against the real
//! binary with real clients and servers (hyper, tokio-tungstenite, curl):
//! gigabyte downloads and uploads through filters with bounded memory,
//! server-sent events and gRPC server streams that arrive message by
//! message, a buffering plugin over the limit, WebSocket upgrades, the
//! client's authority and chunked GET bodies on every route kind, and the
//! same answer to the same broken body on every route kind.

use crate::common;

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Ferry, ManagerConfig, cluster, file_code, plugin};
use futures_util::{SinkExt as _, StreamExt as _};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// One gibibyte.
const GIB: u64 = 1 << 30;

/// The byte at `offset` of every test body: a pattern that a shifted or
/// dropped chunk cannot match.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8 ^ ((offset >> 16) as u8)
}

/// A body of `length` pattern bytes, made as it is read, 64 KiB a frame.
struct PatternBody {
    sent: u64,
    length: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent == this.length {
            return Poll::Ready(None);
        }
        let n = (this.length - this.sent).min(64 * 1024);
        let chunk: Vec<u8> = (this.sent..this.sent + n).map(pattern).collect();
        this.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.length - self.sent)
    }
}

/// Reads `body` to its end, checking each byte against the pattern;
/// returns how many bytes came, or where the first wrong one was.
async fn check_pattern<B>(mut body: B) -> Result<u64, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the body broke off after {offset} bytes: {e:?}"))?;
        let Ok(data) = frame.into_data() else { continue };
        for &byte in data.iter() {
            if byte != pattern(offset) {
                return Err(format!("wrong byte at {offset}"));
            }
            offset += 1;
        }
    }
    Ok(offset)
}

/// An HTTP/1.1 upstream on its own thread: `GET /download/<n>` answers `n`
/// pattern bytes; a request with a body is read through (checking the
/// pattern) and answered `ok <n>` or the error.
fn pattern_upstream() -> SocketAddr {
    common::serve_on_thread(|stream| async move {
        let service = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
            let path = request.uri().path().to_owned();
            let body: http_body_util::combinators::BoxBody<Bytes, Infallible> = match path.strip_prefix("/download/") {
                Some(n) => PatternBody { sent: 0, length: n.parse().unwrap() }.boxed(),
                None => {
                    let verdict = match check_pattern(request.into_body()).await {
                        Ok(n) => format!("ok {n}"),
                        Err(e) => e,
                    };
                    http_body_util::Full::new(Bytes::from(verdict)).boxed()
                }
            };
            Ok::<_, Infallible>(http::Response::new(body))
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    })
}

/// A hyper HTTP/1.1 client on a runtime of its own.
fn client<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

async fn connect(address: SocketAddr) -> hyper::client::conn::http1::SendRequest<PatternBody> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// Resident memory of process `pid`, in KiB (`VmRSS`, or `VmHWM` for its peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The filters the gigabyte tests run through, each as its `http_filters` entry.
fn filter(kind: &str) -> String {
    match kind {
        "wasm" => common::wasm_filter_with("count", "count", "count", &file_code(&plugin("body_rewrite_plugin.wasm"))),
        "compressor" => r#"          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  content_type: [application/octet-stream]
              compressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
"#
        .to_owned(),
        "header_to_metadata" => r#"          - name: envoy.filters.http.header_to_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
              request_rules:
              - header: x-tenant
                on_header_present: { metadata_namespace: tenants, key: id, type: STRING }
"#
        .to_owned(),
        other => panic!("no filter {other}"),
    }
}

fn start_with(filters: &str, upstream: SocketAddr, manager: &str) -> Ferry {
    let routes =
        "              - match: { prefix: \"/\" }\n                route: { cluster: upstream, timeout: 0s }\n";
    let clusters = cluster("upstream", upstream);
    let config = ManagerConfig { filters, routes, clusters: &clusters, manager, ..Default::default() }.yaml();
    Ferry::start(&config, &["--concurrency", "1"])
}

/// A gibibyte each way through `kind`, byte-exact, while ferry's memory
/// grows by less than the buffer limit (1 MiB) and 50 MiB.
fn a_gigabyte_each_way_through(kind: &str) {
    let upstream = pattern_upstream();
    let ferry = start_with(&filter(kind), upstream, "");
    let address = ferry.address("main");
    let before = memory_kib(ferry.pid(), "VmRSS:");
    client(async move {
        let mut sender = connect(address).await;
        let request = http::Request::get(format!("/download/{GIB}"))
            .header("host", "test")
            .body(PatternBody { sent: 0, length: 0 })
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(check_pattern(response.into_body()).await, Ok(GIB), "the download");
        let request =
            http::Request::post("/upload").header("host", "test").body(PatternBody { sent: 0, length: GIB }).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, format!("ok {GIB}").as_bytes(), "the upload");
    });
    let peak = memory_kib(ferry.pid(), "VmHWM:");
    let grown = peak.saturating_sub(before);
    assert!(grown < (1 + 50) * 1024, "{kind}: peak RSS grew by {grown} KiB, past the buffer limit + 50 MiB");
    if kind == "wasm" {
        ferry.wait_for(&format!("counted response {GIB} bytes"), Duration::from_secs(10));
        ferry.wait_for(&format!("counted request {GIB} bytes"), Duration::from_secs(10));
    }
}

#[test]
fn a_gigabyte_each_way_through_a_wasm_filter_that_reads_every_chunk() {
    a_gigabyte_each_way_through("wasm");
}

#[test]
fn a_gigabyte_each_way_through_the_compressor() {
    a_gigabyte_each_way_through("compressor");
}

#[test]
fn a_gigabyte_each_way_through_header_to_metadata() {
    a_gigabyte_each_way_through("header_to_metadata");
}

/// The body_rewrite plugin as a filter, in `mode`.
fn body_plugin(mode: &str, allow_stop_iteration: bool) -> String {
    let allow = if allow_stop_iteration { "                allow_on_headers_stop_iteration: true\n" } else { "" };
    format!(
        r#"          - name: {mode}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {mode}
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: {mode} }}
{allow}                vm_config:
                  vm_id: {mode}
                  code: {}
"#,
        file_code(&plugin("body_rewrite_plugin.wasm"))
    )
}

/// An HTTP/1.1 upstream that answers `text/event-stream`: one event, then
/// another a second later, then the end.
fn event_upstream() -> SocketAddr {
    common::serve_on_thread(|stream| async move {
        let service = hyper::service::service_fn(|_request| async move {
            let (frames, receiver) = mpsc::unbounded_channel::<Result<Frame<Bytes>, Infallible>>();
            tokio::spawn(async move {
                let _ = frames.send(Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))));
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = frames.send(Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))));
            });
            let body = http_body_util::StreamBody::new(tokio_stream(receiver));
            let mut response = http::Response::new(body);
            response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    })
}

/// An unbounded receiver as a stream.
fn tokio_stream<T>(mut receiver: mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[test]
fn server_sent_events_reach_the_client_one_by_one_through_a_wasm_filter() {
    let ferry = start_with(&body_plugin("observe", false), event_upstream(), "");
    let address = ferry.address("main");
    let arrivals = client(async move {
        let mut sender = connect(address).await;
        let request = http::Request::get("/events").header("host", "test").body(PatternBody { sent: 0, length: 0 });
        let response = sender.send_request(request.unwrap()).await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        let mut arrivals = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                arrivals.push((String::from_utf8_lossy(&data).into_owned(), Instant::now()));
            }
        }
        arrivals
    });
    let texts: Vec<&str> = arrivals.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["data: first\n\n", "data: second\n\n"], "each event as it came");
    let apart = arrivals[1].1 - arrivals[0].1;
    assert!(apart >= Duration::from_millis(800), "the second event came {apart:?} after the first, not 1 s");
}

/// gRPC over h2c to the test server's `Stream` method, which answers each
/// message as it comes: the client sends a message only once the answer to
/// the one before arrived, so the exchange only ends if each message
/// crosses ferry, both ways, before the next is sent.
#[test]
fn grpc_stream_messages_cross_a_wasm_filter_one_at_a_time() {
    let upstream_cluster = cluster("upstream", common::grpc::grpc_server());
    let routes =
        "              - match: { prefix: \"/\" }\n                route: { cluster: upstream, timeout: 0s }\n";
    let clusters = upstream_cluster.replace(
        "    connect_timeout: 1s\n",
        "    connect_timeout: 1s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n",
    );
    let filters = body_plugin("observe", false);
    let config = ManagerConfig { filters: &filters, routes, clusters: &clusters, ..Default::default() }.yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let address = ferry.address("main");
    let answers = client(async move {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let (messages, receiver) = mpsc::unbounded_channel::<Result<Frame<Bytes>, Infallible>>();
        let request = http::Request::post("http://test/test.Echo/Stream")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::StreamBody::new(tokio_stream(receiver)))
            .unwrap();
        let send = |text: &str| {
            let mut message = vec![0];
            message.extend_from_slice(&(text.len() as u32).to_be_bytes());
            message.extend_from_slice(text.as_bytes());
            messages.send(Ok(Frame::data(Bytes::from(message)))).unwrap();
        };
        send("one");
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await;
        let mut body = response.expect("the response headers came").unwrap().into_body();
        let mut answers = Vec::new();
        for next in ["two", "three", ""] {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
            let data = frame.expect("the answer came before the next message was sent").unwrap().unwrap();
            let data = data.into_data().unwrap();
            answers.push(String::from_utf8_lossy(&data[5..]).into_owned());
            if next.is_empty() {
                drop(messages);
                break;
            }
            send(next);
        }
        let trailers = body.collect().await.unwrap().trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-count"], "3");
        answers
    });
    assert_eq!(answers, ["echo: one", "echo: two", "echo: three"]);
}

#[test]
fn a_plugin_that_holds_a_response_past_the_buffer_limit_gets_500_before_its_headers_went_out() {
    let ferry = start_with(&body_plugin("hold", true), pattern_upstream(), "");
    let small = common::get(ferry.address("main"), "/download/1000", &[]);
    assert_eq!((small.status, small.body.len()), (200, 1000), "held whole, then let through");
    ferry.wait_for("holding a response body of 1000 bytes", Duration::from_secs(10));
    let big = common::get(ferry.address("main"), &format!("/download/{}", 2 << 20), &[]);
    assert_eq!(big.status, 500, "Envoy's answer to a response over the buffer limit");
}

#[test]
fn a_plugin_that_buffers_a_response_past_the_limit_after_its_headers_went_out_resets_it() {
    let ferry = start_with(&body_plugin("rewrite", false), pattern_upstream(), "");
    let small = common::get(ferry.address("main"), "/download/1000", &[]);
    assert_eq!((small.status, small.body.len()), (200, 1000 + " [checked]".len()), "buffered whole, then changed");
    let big = common::get(ferry.address("main"), &format!("/download/{}", 2 << 20), &[]);
    assert_eq!(big.status, 200, "the headers went out before the body grew");
    assert!(!big.complete, "the body is cut: {} bytes came", big.body.len());
}

/// A WebSocket echo server (tokio-tungstenite): each text or binary
/// message comes back; a close is answered.
fn websocket_echo() -> SocketAddr {
    common::serve_on_thread(|stream| async move {
        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
        while let Some(Ok(message)) = socket.next().await {
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                return;
            }
        }
    })
}

/// Ferry in front of the WebSocket echo server with `upgrade_configs`
/// (and `filters`, and `manager` settings).
fn websocket_ferry(filters: &str, manager: &str) -> Ferry {
    let manager = format!("          upgrade_configs: [{{ upgrade_type: websocket }}]\n{manager}");
    start_with(filters, websocket_echo(), &manager)
}

async fn websocket_client(
    address: SocketAddr,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let url = format!("ws://localhost:{}/chat", address.port());
    tokio_tungstenite::client_async(url, stream).await.map(|(socket, _)| socket)
}

/// Text and binary messages both ways, then the close handshake.
fn websocket_exchange(ferry: &Ferry) {
    let address = ferry.address("main");
    client(async move {
        let mut socket = websocket_client(address).await.expect("the upgrade went through");
        for message in [Message::text("hello"), Message::binary(vec![0u8, 1, 2, 255]), Message::text("again")] {
            socket.send(message.clone()).await.unwrap();
            let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(echoed, message);
        }
        socket.close(None).await.unwrap();
        let mut closed = false;
        while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            match message {
                Ok(Message::Close(_)) => closed = true,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break,
            }
        }
        assert!(closed, "the server's close came back through ferry");
    });
}

#[test]
fn a_websocket_client_talks_to_its_server_through_ferry() {
    let ferry = websocket_ferry("", "");
    websocket_exchange(&ferry);
}

#[test]
fn a_websocket_client_talks_to_its_server_through_a_wasm_filter_that_sees_the_upgrade() {
    let ferry = websocket_ferry(&body_plugin("observe", false), "");
    websocket_exchange(&ferry);
    // The filter saw the upgrade request and the 101, then the bytes as bodies.
    ferry.wait_for("framing: request headers end_of_stream=false", Duration::from_secs(10));
    ferry.wait_for("framing: response headers end_of_stream=false", Duration::from_secs(10));
    ferry.wait_for("framing: request body", Duration::from_secs(10));
    ferry.wait_for("framing: response body", Duration::from_secs(10));
}

#[test]
fn an_idle_websocket_is_closed_after_the_stream_idle_timeout() {
    let ferry = websocket_ferry("", "          stream_idle_timeout: 1s\n");
    let address = ferry.address("main");
    let closed_after = client(async move {
        let mut socket = websocket_client(address).await.expect("the upgrade went through");
        socket.send(Message::text("ping")).await.unwrap();
        socket.next().await.unwrap().unwrap();
        let idle = Instant::now();
        // Nothing moves: ferry ends the stream; the client sees its connection end.
        let end =
            tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = socket.next().await {} })
                .await;
        assert!(end.is_ok(), "the idle stream was not closed within 10 s");
        idle.elapsed()
    });
    assert!(closed_after >= Duration::from_millis(900), "closed after {closed_after:?}, before the idle timeout");
}

#[test]
fn an_upgrade_the_configuration_does_not_allow_is_403() {
    let ferry = start_with("", websocket_echo(), "");
    let address = ferry.address("main");
    let refused = client(async move { websocket_client(address).await.err() });
    match refused {
        Some(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
}

/// An upstream that reports, for each request it gets, the body it read
/// whole, or that the body broke off.
fn body_reporting_upstream() -> (SocketAddr, std::sync::mpsc::Receiver<Result<String, String>>) {
    let (reports, received) = std::sync::mpsc::channel();
    let reports = std::sync::Arc::new(std::sync::Mutex::new(reports));
    let address = common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let reports = reports.clone();
        async move {
            let body = request.into_body().collect().await;
            let report = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).map_err(|e| e.to_string());
            let _ = reports.lock().unwrap().send(report);
            http::Response::new(http_body_util::Full::new(Bytes::from_static(b"answered")))
        }
    });
    (address, received)
}

#[test]
fn a_request_a_filter_answers_after_it_went_upstream_is_reset_there_not_ended() {
    let (upstream, reports) = body_reporting_upstream();
    // The filter lets the headers go upstream, holds the body, and answers 403 at its end.
    let ferry = start_with(&body_plugin("rewrite", false), upstream, "");
    let url = format!("http://{}/", ferry.address("main"));
    let refused = curl(&["-H", "transfer-encoding: chunked", "--data-binary", "this is forbidden", &url]);
    // (The local reply runs through the response filters, the plugin's own included, as in Envoy.)
    assert_eq!(refused, "forbidden body\n [checked]");
    let allowed = curl(&["-H", "transfer-encoding: chunked", "--data-binary", "hello", &url]);
    assert_eq!(allowed, "answered [checked]");
    // What the upstream got, up to the allowed body: the refused one (if its
    // headers got there before the answer) only as a body that broke off.
    let mut whole = Vec::new();
    while whole.last().is_none_or(|body| body != "HELLO") {
        let report = reports.recv_timeout(Duration::from_secs(10)).expect("the upstream got the allowed request");
        if let Ok(body) = report {
            whole.push(body);
        }
    }
    assert_eq!(whole, ["HELLO"]);
}

/// A WebSocket listener whose connection manager's `upgrade_configs` are
/// `manager` and whose one route's are `route`.
fn websocket_route_ferry(manager: &str, route: &str) -> Ferry {
    let routes = format!(
        "              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: upstream, upgrade_configs: {route} }}\n"
    );
    let clusters = cluster("upstream", websocket_echo());
    let manager = format!("          upgrade_configs: {manager}\n");
    let config = ManagerConfig { routes: &routes, clusters: &clusters, manager: &manager, ..Default::default() }.yaml();
    Ferry::start(&config, &["--concurrency", "1"])
}

#[test]
fn a_route_may_allow_an_upgrade_the_connection_manager_does_not() {
    let ferry = websocket_route_ferry("[]", "[{ upgrade_type: websocket }]");
    websocket_exchange(&ferry);
}

#[test]
fn a_route_may_refuse_an_upgrade_the_connection_manager_allows() {
    let ferry = websocket_route_ferry("[{ upgrade_type: websocket }]", "[{ upgrade_type: websocket, enabled: false }]");
    let address = ferry.address("main");
    let refused = client(async move { websocket_client(address).await.err() });
    match refused {
        Some(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
}

/// An upstream that answers with the `host` it saw and the body it got.
fn host_echo() -> SocketAddr {
    common::hyper_upstream(|request: http::Request<hyper::body::Incoming>| async move {
        let host = request.headers().get("host").map(|h| h.to_str().unwrap().to_owned()).unwrap_or_default();
        let authority_too = request.uri().authority().is_some_and(|a| a.as_str() != host);
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let text = format!("host={host} other-authority={authority_too} body={}", String::from_utf8_lossy(&body));
        http::Response::new(http_body_util::Full::new(Bytes::from(text)))
    })
}

/// Ferry with two listeners to one upstream: `plain` without filters,
/// `filtered` with a Wasm filter.
fn two_route_kinds(upstream: SocketAddr, routes: &str) -> Ferry {
    let config = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}",
        common::listener("plain", 0, routes, ""),
        common::listener("filtered", 0, routes, &body_plugin("observe", false)),
        cluster("upstream", upstream)
    );
    Ferry::start(&config, &["--concurrency", "1"])
}

const TO_UPSTREAM: &str = "              - match: { prefix: \"/\" }\n                route: { cluster: upstream }\n";

fn curl(args: &[&str]) -> String {
    let output = std::process::Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().unwrap();
    assert!(output.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn an_http2_clients_authority_reaches_the_upstream_as_host_on_every_route_kind() {
    let ferry = two_route_kinds(host_echo(), TO_UPSTREAM);
    for listener in ["plain", "filtered"] {
        let port = ferry.address(listener).port();
        let url = format!("http://virtual.example:{port}/");
        let resolve = format!("virtual.example:{port}:127.0.0.1");
        let answer = curl(&["--http2-prior-knowledge", "--resolve", &resolve, &url]);
        assert_eq!(answer, format!("host=virtual.example:{port} other-authority=false body="), "{listener}");
    }
}

#[test]
fn a_get_with_a_chunked_body_arrives_whole_on_every_route_kind() {
    let ferry = two_route_kinds(host_echo(), TO_UPSTREAM);
    for listener in ["plain", "filtered"] {
        let url = format!("http://localhost:{}/", ferry.address(listener).port());
        let answer = curl(&["-X", "GET", "-H", "Transfer-Encoding: chunked", "--data-binary", "a body", &url]);
        assert!(answer.ends_with("body=a body"), "{listener}: {answer}");
    }
}

/// A chunked request whose second chunk size is not a number.
fn broken_chunked_request(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_same_broken_request_body_gets_the_same_answer_on_every_route_kind() {
    let routes = "              - match: { prefix: \"/retry\" }\n                route: { cluster: upstream, retry_policy: { retry_on: 5xx } }\n".to_owned()
        + TO_UPSTREAM;
    let ferry = two_route_kinds(host_echo(), &routes);
    for (listener, path) in [("plain", "/"), ("filtered", "/"), ("plain", "/retry"), ("filtered", "/retry")] {
        let status = broken_chunked_request(ferry.address(listener), path);
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{listener} {path}");
    }
}

#[test]
fn a_websocket_upgrade_works_on_an_http1_only_listener_too() {
    let ferry = websocket_ferry("", "          codec_type: HTTP1\n");
    websocket_exchange(&ferry);
}

/// A request body a client gives up on: ten bytes of the hundred its
/// `content-length` promised, then, once told to, an error (hyper's client
/// then closes the connection, or resets the HTTP/2 stream).
struct GivesUp {
    sent: bool,
    give_up: tokio::sync::oneshot::Receiver<()>,
}

impl Body for GivesUp {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if !std::mem::replace(&mut this.sent, true) {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"0123456789")))));
        }
        Pin::new(&mut this.give_up).poll(cx).map(|_| Some(Err(std::io::Error::other("the client gives up"))))
    }
}

/// Sends a request whose body the client gives up on, over HTTP/1.1 or
/// h2c, once `give_up` says so.
async fn give_up(address: SocketAddr, http2: bool, give_up: tokio::sync::oneshot::Receiver<()>) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = http::Request::post("/upload")
        .header("host", "test")
        .header("content-length", "100")
        .body(GivesUp { sent: false, give_up })
        .unwrap();
    let answered = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.is_ok()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.is_ok()
    };
    assert!(!answered, "no answer to a request the client gave up on");
}

#[test]
fn a_client_that_leaves_mid_request_gets_no_answer_and_plugins_log_none() {
    let (upstream, _reports) = body_reporting_upstream();
    let ferry = start_with(&body_plugin("observe", false), upstream, "          codec_type: AUTO\n");
    let address = ferry.address("main");
    for (count, http2) in [(1, false), (2, true)] {
        let (tell, told) = tokio::sync::oneshot::channel();
        std::thread::scope(|scope| {
            // The client gives up once the filter saw the ten bytes.
            scope.spawn(|| {
                ferry.wait_for_count("framing: request body 10", count, Duration::from_secs(10));
                tell.send(()).unwrap();
            });
            client(give_up(address, http2, told));
        });
        // As Envoy on a downstream disconnect: no local reply (it was a 400
        // here), so the stream's end shows no response.
        ferry.wait_for_count("at the stream's end", count, Duration::from_secs(10));
        let lines = ferry.lines();
        let done = lines.iter().filter(|l| l.contains("at the stream's end")).nth(count - 1).unwrap();
        assert!(done.ends_with("response status None, response.code bytes None"), "http2 {http2}: {done}");
    }
}
