//! Network Wasm filters in front of `tcp_proxy`, end to end against the real
//! binary with a TCP echo upstream: held partial data, rewritten bytes, the
//! close callbacks and their peer types, the end-of-context order, a plugin
//! closing the connection, and a plugin failing.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Ferry, cluster, file_code, plugin, tcp_echo_server, tcp_listener};

/// FAIL_RELOAD with a backoff short enough that the next connection gets a
/// new instance.
const RELOAD: &str =
    "            failure_policy: FAIL_RELOAD\n            reload_config: { backoff: { base_interval: 0.01s } }\n";
const OPEN: &str = "            failure_policy: FAIL_OPEN\n";

fn start(fail_open: bool) -> Ferry {
    let echo = tcp_echo_server();
    let code = file_code(&plugin("tcp_filter_plugin.wasm"));
    let config = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        tcp_listener("tcp_filter", 0, &code, if fail_open { OPEN } else { RELOAD }, "echo"),
        cluster("echo", echo)
    );
    Ferry::start(&config, &["--concurrency", "1"])
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// The messages the plugin logged for context `id`, in order.
fn events(ferry: &Ferry, id: &str) -> Vec<String> {
    let prefix = format!("[{id}] ");
    ferry.lines().iter().filter_map(|l| l.split_once(&prefix).map(|(_, m)| m.to_owned())).collect()
}

/// The context id the plugin logged for the connection from `client`.
fn context_of(ferry: &Ferry, client: &TcpStream) -> String {
    let line =
        ferry.wait_for(&format!("new connection from {}", client.local_addr().unwrap()), Duration::from_secs(10));
    line.split('[').next_back().unwrap().split(']').next().unwrap().to_owned()
}

#[test]
fn data_is_held_until_a_whole_line_then_rewritten_and_the_context_ends_in_order() {
    let ferry = start(false);
    let mut client = connect(ferry.address("tcp_filter"));
    let id = context_of(&ferry, &client);
    client.write_all(b"hel").unwrap();
    ferry.wait_for(&format!("[{id}] downstream 3 bytes"), Duration::from_secs(10));
    client.write_all(b"lo\n").unwrap();
    let mut echoed = [0u8; 6];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"HELLO\n", "the upstream saw one whole, upper-cased line");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the echo: {rest:?}");
    ferry.wait_for(&format!("[{id}] log"), Duration::from_secs(10));
    let upstream = ferry.lines().iter().find_map(|l| l.split("upstream 6 bytes from ").nth(1).map(str::to_owned));
    let upstream = upstream.expect("an upstream chunk of 6 bytes");
    assert!(upstream.starts_with("127.0.0.1:"), "upstream.address is the echo server: {upstream}");
    assert_eq!(
        events(&ferry, &id),
        [
            format!("new connection from {}", client.local_addr().unwrap()),
            "downstream 3 bytes, end_of_stream=false".into(),
            "downstream 6 bytes, end_of_stream=false".into(),
            format!("upstream 6 bytes from {upstream}"),
            "downstream 0 bytes, end_of_stream=true".into(),
            format!("upstream 0 bytes from {}, end_of_stream=true", upstream.split(',').next().unwrap()),
            "upstream close, peer 0".into(),
            // The client ended its side first; the proxy's passing the
            // upstream's end on closed it: local, as Envoy reports.
            "downstream close, peer 1".into(),
            "done".into(),
            "log".into(),
        ]
    );
}

/// Writes `data` and ends the side of `stream` in one TCP segment (TCP_CORK
/// holds the data until the FIN joins it), so the reader gets both at once.
fn write_with_end(stream: &TcpStream, data: &[u8]) {
    socket2::SockRef::from(stream).set_tcp_cork(true).unwrap();
    (&*stream).write_all(data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
}

/// An upstream that greets each connection with `banner` and its end, in
/// one segment, and then only reads.
fn banner_server(banner: &'static [u8]) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                write_with_end(&stream, banner);
                let _ = std::io::copy(&mut &stream, &mut std::io::sink());
            });
        }
    });
    address
}

fn start_with_upstream(upstream: SocketAddr) -> Ferry {
    let code = file_code(&plugin("tcp_filter_plugin.wasm"));
    let config = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        tcp_listener("tcp_filter", 0, &code, RELOAD, "echo"),
        cluster("echo", upstream)
    );
    Ferry::start(&config, &["--concurrency", "1"])
}

/// Envoy hands a side's last data and its end to the filters in one call
/// when they arrive together, both ways.
#[test]
fn data_that_arrives_with_its_sides_end_is_delivered_with_end_of_stream_true() {
    let ferry = start_with_upstream(banner_server(b"welcome\n"));
    let mut client = connect(ferry.address("tcp_filter"));
    let id = context_of(&ferry, &client);
    let mut banner = Vec::new();
    client.read_to_end(&mut banner).unwrap();
    assert_eq!(banner, b"welcome\n");
    ferry.wait_for(&format!("[{id}] upstream close"), Duration::from_secs(10));
    write_with_end(&client, b"bye\n");
    ferry.wait_for(&format!("[{id}] log"), Duration::from_secs(10));
    let events = events(&ferry, &id);
    let upstream = events.iter().find(|e| e.starts_with("upstream 8 bytes")).expect("the banner");
    assert!(upstream.ends_with("end_of_stream=true"), "{events:#?}");
    assert!(events.contains(&"downstream 4 bytes, end_of_stream=true".to_owned()), "{events:#?}");
    assert!(!events.iter().any(|e| e.contains(" 0 bytes")), "no separate empty end: {events:#?}");
}

/// The upstream ended first and the client last: the client closed the
/// connection (remote); the upstream's end is reported with an unknown peer.
#[test]
fn when_the_client_ends_last_the_connection_close_is_remote() {
    let ferry = start_with_upstream(banner_server(b"welcome\n"));
    let mut client = connect(ferry.address("tcp_filter"));
    let id = context_of(&ferry, &client);
    let mut banner = Vec::new();
    client.read_to_end(&mut banner).unwrap();
    ferry.wait_for(&format!("[{id}] upstream close, peer 0"), Duration::from_secs(10));
    client.shutdown(Shutdown::Write).unwrap();
    ferry.wait_for(&format!("[{id}] log"), Duration::from_secs(10));
    let events = events(&ferry, &id);
    assert!(events.contains(&"downstream close, peer 2".to_owned()), "{events:#?}");
}

#[test]
fn a_plugin_closing_the_connection_closes_it_before_the_upstream_sees_data() {
    let ferry = start(false);
    let mut client = connect(ferry.address("tcp_filter"));
    let id = context_of(&ferry, &client);
    client.write_all(b"close\n").unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no echo: the data never reached the upstream");
    ferry.wait_for(&format!("[{id}] log"), Duration::from_secs(10));
    let events = events(&ferry, &id);
    assert!(events.contains(&"downstream close, peer 1".to_owned()), "the proxy closed it: {events:?}");
    assert!(!events.iter().any(|e| e.starts_with("upstream")), "{events:?}");
}

#[test]
fn a_failing_plugin_closes_only_its_connection_when_it_fails_closed() {
    let ferry = start(false);
    let address = ferry.address("tcp_filter");
    let mut failing = connect(address);
    failing.write_all(b"trap\n").unwrap();
    let mut rest = Vec::new();
    let _ = failing.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the connection closed without an echo");
    let error = ferry.wait_for("proxy_on_downstream_data failed", Duration::from_secs(10));
    assert!(error.contains("tcp_filter"), "the error names the plugin: {error}");
    // After the backoff a new instance is there for the next connection.
    ferry.wait_for("a new VM instance started", Duration::from_secs(5));
    let mut next = connect(address);
    next.write_all(b"still here\n").unwrap();
    let mut echoed = [0u8; 11];
    next.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"STILL HERE\n", "a fresh instance serves the next connection");
}

#[test]
fn a_failing_plugin_is_skipped_when_it_fails_open() {
    let ferry = start(true);
    let mut client = connect(ferry.address("tcp_filter"));
    client.write_all(b"trap\n").unwrap();
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"trap\n", "the data passes unchanged without the plugin");
}

#[test]
fn held_data_goes_on_when_the_client_ends_its_side() {
    let ferry = start(false);
    let mut client = connect(ferry.address("tcp_filter"));
    let id = context_of(&ferry, &client);
    client.write_all(b"hel").unwrap();
    ferry.wait_for(&format!("[{id}] downstream 3 bytes, end_of_stream=false"), Duration::from_secs(10));
    // No newline: the plugin holds "hel" until the end of the client's side.
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"HEL", "the held bytes went on, rewritten, and the upstream saw the end");
    ferry.wait_for(&format!("[{id}] downstream 3 bytes, end_of_stream=true"), Duration::from_secs(10));
}

#[test]
fn data_a_filter_holds_is_bounded_and_the_client_waits() {
    let ferry = start(false);
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", ferry.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    let mut client = connect(ferry.address("tcp_filter"));
    // No newline: the plugin holds everything. ferry holds at most the
    // buffer limit (1 MiB) and then stops reading, so a 1 GB upload's
    // writes stop going through.
    client.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    while written < 1 << 30 {
        match client.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(written < 16 << 20, "{written} bytes went in: the held buffer grew without bound");
    let grown = rss().saturating_sub(before);
    assert!(grown < (1 + 50) * 1024, "RSS grew by {grown} KiB: more than the buffer limit + 50 MiB");
}

/// A network filter that sends each connection to the cluster `second`
/// with Envoy's `set_envoy_filter_state` foreign function
/// (`envoy.tcp_proxy.cluster`, arguments as protobuf), and logs the status.
const CHOOSE_CLUSTER: &str = r#"(module
  (import "env" "proxy_call_foreign_function"
    (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "set_envoy_filter_state")
  (data (i32.const 200) "\0a\17envoy.tcp_proxy.cluster\12\06second")
  (data (i32.const 300) "status 0123456789")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_new_connection") (param i32) (result i32)
    (local $status i32)
    (local.set $status
      (call $foreign (i32.const 100) (i32.const 22) (i32.const 200) (i32.const 33) (i32.const 400) (i32.const 404)))
    ;; log "status <digit>"
    (i32.store8 (i32.const 307) (i32.add (i32.const 48) (local.get $status)))
    (drop (call $log (i32.const 2) (i32.const 300) (i32.const 8)))
    i32.const 0))"#;

#[test]
fn a_filter_chooses_the_cluster_with_set_envoy_filter_state() {
    let code = format!("{{ local: {{ inline_string: {CHOOSE_CLUSTER:?} }} }}");
    // The listener's own cluster goes nowhere; the filter's choice echoes.
    let closed = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let config = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        tcp_listener("chooser", 0, &code, "", "first"),
        cluster("first", closed),
        cluster("second", tcp_echo_server()),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let mut client = TcpStream::connect(ferry.address("chooser")).unwrap();
    client.write_all(b"ping").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"ping", "the connection went to the cluster the filter chose");
    ferry.wait_for("status 0", Duration::from_secs(10));
}

#[test]
fn per_connection_buffer_limit_bytes_bounds_what_a_paused_filter_is_given() {
    let echo = tcp_echo_server();
    let code = file_code(&plugin("tcp_filter_plugin.wasm"));
    let listener = tcp_listener("tcp_filter", 0, &code, RELOAD, "echo").replacen(
        "    filter_chains:\n",
        "    per_connection_buffer_limit_bytes: 4096\n    filter_chains:\n",
        1,
    );
    let ferry = Ferry::start(
        &format!("static_resources:\n  listeners:\n{listener}  clusters:\n{}", cluster("echo", echo)),
        &["--concurrency", "1"],
    );
    let mut client = connect(ferry.address("tcp_filter"));
    client.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // No newline: the plugin holds all it is given.
    let chunk = vec![b'x'; 8 * 1024];
    for _ in 0..64 {
        if client.write_all(&chunk).is_err() {
            break;
        }
    }
    let id = context_of(&ferry, &client);
    let largest = || {
        events(&ferry, &id)
            .iter()
            .filter_map(|e| e.strip_prefix("downstream ")?.split(' ').next()?.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    };
    // Once the filter holds 4096 bytes ferry stops reading. Then a line on
    // another connection goes through the same worker and back: a larger
    // call for the first connection would have come before it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while largest() < 4096 {
        assert!(Instant::now() < deadline, "the filter was never given 4096 bytes: {:?}", events(&ferry, &id));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut other = connect(ferry.address("tcp_filter"));
    let other_id = context_of(&ferry, &other);
    other.write_all(b"ping\n").unwrap();
    let mut echoed = [0u8; 5];
    other.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"PING\n");
    ferry.wait_for(&format!("[{other_id}] upstream 5 bytes"), Duration::from_secs(10));
    let largest = largest();
    // Reading stops once 4096 bytes are held; one more read (16 KiB) may land.
    assert!((4096..4096 + 16 * 1024).contains(&largest), "the filter was given {largest} bytes at once");
}
