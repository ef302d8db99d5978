//! What ferry lets clients do, tried as attacks against the real binary:
//! slow headers (slowloris) against `request_headers_timeout`, idle and
//! old connections against `idle_timeout` and `max_connection_duration`,
//! large headers, underscores, duplicate `Host`, HTTP/1.0, a flood of
//! connections against the overload manager's connection cap, and
//! requests and responses that stall against `request_timeout` and
//! `stream_idle_timeout`.

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Ferry, request, stat};

/// A listener with `manager` lines added to its connection manager, a
/// direct route `/` and a route `/slow` to an upstream that answers after
/// 1.5 s; `bootstrap` added at the top.
fn config(manager: &str, bootstrap: &str) -> String {
    let slow = common::hyper_upstream(|request: http::Request<hyper::body::Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let seen = request.headers().keys().map(|k| k.as_str()).collect::<Vec<_>>().join(",");
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(seen)))
    });
    let routes = r#"              - match: { prefix: "/slow" }
                route: { cluster: slow }
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: ok } }"#;
    let top = format!("{bootstrap}{}", common::ADMIN);
    let clusters = common::cluster("slow", slow);
    common::ManagerConfig { top: &top, manager, routes, clusters: &clusters, ..Default::default() }.yaml()
}

/// Waits (up to 10 s) until `check` holds for the stat `name`.
fn wait_for_stat(ferry: &Ferry, name: &str, what: &str, check: impl Fn(i64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = stat(ferry, name);
        if check(value) {
            return;
        }
        assert!(Instant::now() < deadline, "gave up waiting until {what} ({name}: {value})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads until the peer closes; how long that took (`None`: still open after `wait`).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < wait {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn slowloris_is_closed_at_the_request_headers_timeout() {
    let ferry = Ferry::start(&config("          request_headers_timeout: 1s\n", ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let mut slow = TcpStream::connect(main).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    // One header byte every 200 ms, never the end of the head.
    let mut closed = None;
    while started.elapsed() < Duration::from_secs(8) {
        if slow.write_all(b"X").is_err() {
            closed = Some(started.elapsed());
            break;
        }
        if let Some(after) = closed_within(&mut slow, Duration::from_millis(200)) {
            closed = Some(started.elapsed().max(after));
            break;
        }
    }
    let closed = closed.expect("the slow client was cut off");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    assert_eq!(request(main, "GET", "/", &[], b"").text(), "ok", "others are served");
}

/// With no `request_headers_timeout` configured, a connection that never
/// completes its request headers is closed 10 s after accept (ferry's
/// edge-safe default), whether it sends nothing at all or a head that never
/// ends; one that asked is not.
#[test]
fn connections_without_complete_request_headers_are_closed_10_to_15_seconds_after_accept() {
    let ferry = Ferry::start(&config("", ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let started = Instant::now();
    let mut silent = TcpStream::connect(main).unwrap();
    let mut partial = TcpStream::connect(main).unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut asked = TcpStream::connect(main).unwrap();
    asked.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let partial_closed = std::thread::spawn(move || closed_within(&mut partial, Duration::from_secs(20)));
    let closed = closed_within(&mut silent, Duration::from_secs(20)).map(|_| started.elapsed());
    let closed = closed.expect("the silent connection is closed");
    assert!((Duration::from_secs(10)..Duration::from_secs(15)).contains(&closed), "silent: closed after {closed:?}");
    let closed = partial_closed.join().unwrap().map(|_| started.elapsed()).expect("the partial head is cut off");
    assert!((Duration::from_secs(10)..Duration::from_secs(15)).contains(&closed), "partial: closed after {closed:?}");
    // The connection that asked still has its keep-alive after the others went.
    asked.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 256];
    assert!(asked.read(&mut answer).unwrap() > 0);
    asked.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let n = asked.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
}

/// `request_headers_timeout: 0s` is Envoy's behaviour: a silent connection
/// stays open (for the idle timeout).
#[test]
fn request_headers_timeout_0s_leaves_a_silent_connection_open_as_envoy_does() {
    let defaulted = Ferry::start(&config("", ""), &["--concurrency", "1"]);
    let envoys = Ferry::start(&config("          request_headers_timeout: 0s\n", ""), &["--concurrency", "1"]);
    let mut closes = TcpStream::connect(defaulted.address("main")).unwrap();
    let mut stays = TcpStream::connect(envoys.address("main")).unwrap();
    assert!(closed_within(&mut closes, Duration::from_secs(20)).is_some(), "the defaulted one closes first");
    stays.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stays.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 256];
    let n = stays.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
}

#[test]
fn a_malformed_chunk_size_is_a_400() {
    let ferry = Ferry::start(&config("", ""), &["--concurrency", "1"]);
    let mut client = TcpStream::connect(ferry.address("main")).unwrap();
    client
        .write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn idle_connections_close_but_not_while_a_request_is_in_flight() {
    let manager = "          common_http_protocol_options: { idle_timeout: 1s }\n";
    let ferry = Ferry::start(&config(manager, ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let mut idle = TcpStream::connect(main).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let closed = closed_within(&mut idle, Duration::from_secs(6)).expect("an idle keep-alive connection is closed");
    assert!(closed >= Duration::from_millis(900), "not before the timeout: {closed:?}");
    // The upstream takes 1.5 s, longer than the idle timeout: the request still gets its answer.
    assert_eq!(request(main, "GET", "/slow", &[], b"").status, 200);
}

#[test]
fn connections_end_at_the_max_connection_duration() {
    let manager = "          common_http_protocol_options: { max_connection_duration: 1s }\n";
    let ferry = Ferry::start(&config(manager, ""), &["--concurrency", "1"]);
    let mut busy = TcpStream::connect(ferry.address("main")).unwrap();
    let started = Instant::now();
    let mut answered = 0;
    // Keep asking, one request every 100 ms, until the proxy closes.
    let closed = loop {
        if busy.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            break started.elapsed();
        }
        match closed_within(&mut busy, Duration::from_millis(100)) {
            Some(_) => break started.elapsed(),
            None => answered += 1,
        }
        assert!(started.elapsed() < Duration::from_secs(8), "never closed");
    };
    assert!(answered >= 5, "served until then: {answered}");
    assert!((Duration::from_millis(900)..Duration::from_secs(4)).contains(&closed), "{closed:?}");
}

#[test]
fn what_the_codec_refuses() {
    let manager = "          common_http_protocol_options: { headers_with_underscores_action: REJECT_REQUEST }\n";
    let ferry = Ferry::start(&config(manager, ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    assert_eq!(request(main, "GET", "/", &[("x_tenant", "a")], b"").status, 400, "underscores rejected");
    let hosts = [("host", "a.example"), ("host", "b.example")];
    assert_eq!(request(main, "GET", "/", &hosts, b"").status, 400, "two Host headers");
    let huge = "a".repeat(70 * 1024);
    assert_eq!(request(main, "GET", "/", &[("x-big", &huge)], b"").status, 431, "over max_request_headers_kb (60)");
    let mut old = TcpStream::connect(main).unwrap();
    old.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = old.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 426") || answer.starts_with("HTTP/1.1 426"), "{answer}");
    // Dropped instead of refused, and HTTP/1.0 accepted when asked.
    let manager = "          common_http_protocol_options: { headers_with_underscores_action: DROP_HEADER }\n          http_protocol_options: { accept_http_10: true }\n";
    let ferry = Ferry::start(&config(manager, ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let seen = request(main, "GET", "/slow", &[("x_tenant", "a"), ("x-kept", "1")], b"").text();
    assert!(seen.contains("x-kept") && !seen.contains("x_tenant"), "{seen}");
    let mut old = TcpStream::connect(main).unwrap();
    old.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = old.read_to_string(&mut answer);
    assert!(answer.contains(" 200 ") && answer.ends_with("ok"), "{answer}");
}

#[test]
fn a_flood_of_connections_past_the_cap_leaves_the_open_ones_served() {
    let bootstrap = r#"overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 20
"#;
    let ferry = Ferry::start(&config("", bootstrap), &["--concurrency", "1"]);
    let main = ferry.address("main");
    // One kept-alive connection in use, then a flood up to and past the cap.
    let mut health = TcpStream::connect(main).unwrap();
    let ask = |stream: &mut TcpStream| -> bool {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_ok() && {
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buffer = [0u8; 1024];
            matches!(stream.read(&mut buffer), Ok(n) if n > 0 && buffer[..n].starts_with(b"HTTP/1.1 200"))
        }
    };
    assert!(ask(&mut health));
    let flood: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(main).ok()).collect();
    let refused = flood.into_iter().filter_map(|mut s| closed_within(&mut s, Duration::from_millis(50))).count();
    assert!(refused >= 180, "connections past the cap are closed at once: {refused} of 200");
    assert!(ask(&mut health), "the connection already open is still served");
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin").port()));
    let stats = request(admin, "GET", "/stats?filter=overflow", &[], b"").text();
    let overflow: u64 = stats
        .lines()
        .find_map(|l| l.split_once("downstream_global_cx_overflow: ").map(|(_, v)| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(overflow >= 180, "{stats}");
    // Each refusal is counted; the log says why, at most once a second.
    let line = ferry.wait_for("refused a connection from", Duration::from_secs(5));
    assert!(line.contains("the cap of 20 open connections is reached"), "{line}");
    let logged = ferry.lines().iter().filter(|l| l.contains("refused a connection")).count();
    assert!(logged <= 3, "{logged} lines for one burst of refusals");
    // Once the flood is gone, new connections are let in again.
    wait_for_stat(&ferry, "server.total_connections", "only the kept-alive connection is open", |n| n == 1);
    assert_eq!(request(main, "GET", "/", &[], b"").status, 200);
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_and_takes_no_new_connections() {
    let ferry = Ferry::start(&config("", ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let in_flight = std::thread::spawn(move || request(main, "GET", "/slow", &[], b""));
    wait_for_stat(&ferry, "cluster.slow.upstream_rq_active", "the request is in flight", |n| n == 1);
    let _ = std::process::Command::new("kill").args(["-TERM", &ferry.pid().to_string()]).status();
    ferry.wait_for("draining 1 HTTP connection(s)", Duration::from_secs(5));
    let refused = TcpStream::connect(main).map(|mut s| closed_within(&mut s, Duration::from_secs(2)).is_some());
    assert!(refused.unwrap_or(true), "no new connection is served while draining");
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200, "the upstream's answer, 1.5 s later, still reaches the client");
    let (status, log) = ferry.stop_with_log();
    assert!(status.success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("draining 1 HTTP connection(s)")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("cut")), "{log:#?}");
}

#[test]
fn past_the_drain_time_requests_are_cut_and_counted() {
    let ferry = Ferry::start(&config("", ""), &["--concurrency", "1", "--drain-time-s", "0"]);
    let main = ferry.address("main");
    let mut stream = TcpStream::connect(main).unwrap();
    stream.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_for_stat(&ferry, "cluster.slow.upstream_rq_active", "the request is in flight", |n| n == 1);
    let (status, log) = ferry.stop_with_log();
    assert!(status.success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("drain time over: 1 HTTP connection(s) cut")), "{log:#?}");
    assert!(closed_within(&mut stream, Duration::from_secs(2)).is_some());
}

#[test]
fn a_request_body_that_never_finishes_is_408_at_the_request_timeout() {
    let ferry = Ferry::start(&config("          request_timeout: 1s\n", ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let mut slow = TcpStream::connect(main).unwrap();
    slow.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("request timeout") {
        let n = slow.read(&mut buffer).expect("an answer before 5 s");
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900), "at the timeout, not before");
    // A request that came whole is not cut while the upstream takes longer than the timeout.
    let response = request(main, "POST", "/slow", &[], b"whole");
    assert_eq!(response.status, 200);
}

#[test]
fn a_stream_with_nothing_moving_is_408_before_its_response_and_cut_after() {
    // An upstream that answers its headers and a first piece, then stalls.
    let stalling = common::hyper_streaming_upstream(b"first piece".to_vec());
    let routes = r#"              - match: { prefix: "/slow" }
                route: { cluster: slow, timeout: 0s }
              - match: { prefix: "/stalling" }
                route: { cluster: stalling, timeout: 0s }"#;
    let slow = common::hyper_upstream(|_request| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"late")))
    });
    let clusters = format!("{}{}", common::cluster("slow", slow), common::cluster("stalling", stalling));
    let config = common::ManagerConfig {
        top: common::ADMIN,
        manager: "          stream_idle_timeout: 1s\n",
        routes,
        clusters: &clusters,
        ..Default::default()
    }
    .yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let main = ferry.address("main");
    let started = Instant::now();
    let response = request(main, "GET", "/slow", &[], b"");
    assert_eq!((response.status, response.text().as_str()), (408, "stream timeout"));
    assert!(started.elapsed() < Duration::from_millis(2500), "at the idle timeout, not the upstream's answer");
    // Once the response began, a stall cuts it: the client never gets the whole body.
    let mut stream = TcpStream::connect(main).unwrap();
    stream.write_all(b"GET /stalling HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(5));
    assert!(closed.is_some_and(|after| after >= Duration::from_millis(900)), "cut after about 1 s: {closed:?}");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_1_gb_upload_to_a_paused_filter_waits_in_the_client_not_in_ferry() {
    // The authorizer pauses each request on a call to a cluster that never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let filter = common::wasm_filter("auth", "auth", &common::file_code(&common::plugin("http_call_auth_plugin.wasm")));
    let address = silent.local_addr().unwrap();
    let clusters = format!("{}{}", common::cluster("broken", address), common::cluster("auth", address));
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: auth }\n";
    let config = common::ManagerConfig { filters: &filter, routes, clusters: &clusters, ..Default::default() }.yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let before = rss_kib(ferry.pid());
    let mut upload = TcpStream::connect(ferry.address("main")).unwrap();
    upload.write_all(b"POST /broken/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n").unwrap();
    upload.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut written = 0usize;
    while written < 1 << 30 {
        match upload.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    let after = rss_kib(ferry.pid());
    assert!(written < 256 << 20, "{} MiB went in while the filter was paused", written >> 20);
    let grown = after.saturating_sub(before);
    assert!(grown < (1 + 50) * 1024, "RSS grew by {grown} KiB: more than the buffer limit + 50 MiB");
}

#[test]
fn a_route_sets_its_own_stream_idle_timeout() {
    let slow = common::hyper_upstream(|_request| async move {
        tokio::time::sleep(Duration::from_millis(3000)).await;
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"late")))
    });
    // The connection manager allows 2 s; one route 0.5 s, another none at all.
    let routes = r#"              - match: { prefix: "/short" }
                route: { cluster: slow, timeout: 0s, idle_timeout: 0.5s }
              - match: { prefix: "/patient" }
                route: { cluster: slow, timeout: 0s, idle_timeout: 0s }"#;
    let clusters = common::cluster("slow", slow);
    let config = common::ManagerConfig {
        manager: "          stream_idle_timeout: 2s\n",
        routes,
        clusters: &clusters,
        ..Default::default()
    }
    .yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let main = ferry.address("main");
    let started = Instant::now();
    let short = request(main, "GET", "/short", &[], b"");
    assert_eq!((short.status, short.text().as_str()), (408, "stream timeout"));
    assert!(started.elapsed() < Duration::from_millis(1800), "the route's 0.5 s, not the manager's 2 s");
    let patient = request(main, "GET", "/patient", &[], b"");
    assert_eq!((patient.status, patient.text().as_str()), (200, "late"), "idle_timeout: 0s disables it");
}
