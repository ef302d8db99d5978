//! The multi-queue example (examples/shared_queue_multi), end to end: one
//! receiver VM with three root contexts, one queue each; the sender as an
//! HTTP filter (request and response headers) and as a network filter in
//! front of a tcp_proxy to the admin endpoint (a hash of each upstream chunk).

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Ferry, free_port, get, plugin, repo_root};

/// The example's configuration on free ports, with absolute module paths.
fn multi_config(admin_port: u16) -> String {
    std::fs::read_to_string(repo_root().join("examples/shared_queue_multi/envoy.yaml"))
        .unwrap()
        .replace("port_value: 18000", "port_value: 0")
        .replace("port_value: 18001", "port_value: 0")
        // The admin endpoint and the tcp_proxy's cluster, which points at it.
        .replace("port_value: 8001", &format!("port_value: {admin_port}"))
        .replace(
            "./target/wasm32-wasip1/release/shared_queue_multi_receiver.wasm",
            plugin("shared_queue_multi_receiver.wasm").to_str().unwrap(),
        )
        .replace(
            "./target/wasm32-wasip1/release/shared_queue_multi_sender.wasm",
            plugin("shared_queue_multi_sender.wasm").to_str().unwrap(),
        )
}

/// The items logged after `marker` in log lines containing it.
fn items(lines: &[String], marker: &str) -> Vec<String> {
    lines.iter().filter_map(|l| l.split_once(marker).map(|(_, item)| item.to_owned())).collect()
}

fn fnv1a_128(data: &[u8]) -> u128 {
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for &byte in data {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013b);
    }
    hash
}

#[test]
fn three_queues_on_one_receiver_vm_get_http_headers_and_tcp_hashes() {
    let ferry = Ferry::start(&multi_config(free_port()), &["--concurrency", "2"]);
    let lines = ferry.lines();
    for (id, queue) in [(1, "http_request_headers"), (2, "http_response_headers"), (3, "tcp_data_hashes")] {
        let line = format!("queue \"{queue}\" registered as queueID={id} by contextID={id}");
        assert!(lines.iter().any(|l| l.contains(&line)), "missing {line:?}");
    }
    let configured: Vec<String> = items(&lines, "wasm log sender: contextID=");
    assert_eq!(configured.iter().filter(|c| *c == "1 is configured for http").count(), 2, "{configured:?}");
    assert_eq!(configured.iter().filter(|c| *c == "2 is configured for tcp").count(), 2, "{configured:?}");

    // HTTP: request headers on one queue, response headers on another.
    let response = get(ferry.address("http"), "/", &[("Host", "localhost:18000"), ("User-Agent", "curl/7.68.0")]);
    assert_eq!((response.status, response.text().as_str()), (200, "example body\n"));
    ferry.wait_for_count("dequeued data from http_response_headers(queueID=2)", 3, Duration::from_secs(10));
    let lines = ferry.lines();
    let request_items = items(&lines, "dequeued data from http_request_headers(queueID=1): ");
    assert_eq!(request_items[0], r#"{"key": ":authority","value": "localhost:18000"}"#);
    assert!(request_items.contains(&r#"{"key": "user-agent","value": "curl/7.68.0"}"#.to_owned()));
    assert_eq!(request_items, items(&lines, "wasm log sender: enqueued data: "), "each request header once, in order");
    let response_items = items(&lines, "dequeued data from http_response_headers(queueID=2): ");
    assert_eq!(response_items[0], r#"{"key": ":status","value": "200"}"#);
    assert!(response_items.contains(&r#"{"key": "content-length","value": "13"}"#.to_owned()));
    assert!(lines.iter().all(|l| !l.contains("dequeued data from") || l.contains("receiver: (contextID=")));

    // TCP: through the tcp_proxy to the admin endpoint; each upstream chunk's hash is queued.
    let mut client = TcpStream::connect(ferry.address("tcp")).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    assert!(reply.ends_with(b"LIVE\n"), "the admin endpoint answered: {}", String::from_utf8_lossy(&reply));
    ferry.wait_for("dequeued data from tcp_data_hashes(queueID=3)", Duration::from_secs(10));
    let sent_hashes = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("wasm log sender: (contextID=") && !l.contains("{\"key\""))
            .filter_map(|l| l.split("enqueued data: ").nth(1).map(str::to_owned))
            .collect()
    };
    // Each chunk the client got went through the sender first, so the
    // queue's count of enqueued hashes is final now; wait until the
    // receiver took that many and both sides' lines are in.
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin address").port()));
    let queue_count = |stat: &str| -> usize {
        let name = format!("ferry.shared_queue.receiver.tcp_data_hashes.{stat}: ");
        let stats = get(admin, "/stats", &[]).text();
        let value = stats.lines().find_map(|l| l.strip_prefix(&name).map(str::to_owned));
        value.unwrap_or_else(|| panic!("no {name:?} in /stats:\n{stats}")).parse().unwrap()
    };
    let enqueued = queue_count("enqueued");
    assert!(enqueued >= 1, "the reply's chunks were hashed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = ferry.lines();
        let received = items(&lines, "dequeued data from tcp_data_hashes(queueID=3): ").len();
        if queue_count("dequeued") >= enqueued && received >= enqueued && sent_hashes(&lines).len() >= enqueued {
            break lines;
        }
        assert!(Instant::now() < deadline, "{enqueued} hash(es) enqueued; not all dequeued and logged within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let sent = sent_hashes(&lines);
    let received = items(&lines, "dequeued data from tcp_data_hashes(queueID=3): ");
    assert_eq!(sent.len(), enqueued, "one line per hash enqueued: {sent:?}");
    assert_eq!(received, sent, "every hash is dequeued once, in order");
    assert!(sent.iter().all(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit())), "{sent:?}");
    if let [only] = sent.as_slice() {
        assert_eq!(*only, format!("{:032x}", fnv1a_128(&reply)), "one chunk: its FNV-1a 128 hash");
    }
    assert_eq!(ferry.stop().code(), Some(0));
}
