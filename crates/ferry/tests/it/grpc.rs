//! gRPC calls and streams from a Wasm filter, end to end: a unary call, a
//! failing call (trailers-only status), a timeout, a cancelled call, an
//! unknown cluster, and a bidirectional stream with its metadata.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::grpc::{SlowCalls, grpc_server_with_slow_calls};
use common::{Ferry, cluster, file_code, get, listener, plugin, wasm_filter};

fn start() -> Ferry {
    start_with_slow_calls().0
}

/// [`start`], with what the gRPC server knows of its `Slow` calls.
fn start_with_slow_calls() -> (Ferry, Arc<SlowCalls>) {
    let (grpc, slow_calls) = grpc_server_with_slow_calls();
    let route = "              - match: { prefix: \"/\" }\n                direct_response: { status: 404 }\n";
    let filter = wasm_filter("grpc_client", "grpc_client", &file_code(&plugin("grpc_client_plugin.wasm")));
    let config = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        listener("main", 0, route, &filter),
        cluster("grpc", grpc)
    );
    (Ferry::start(&config, &["--concurrency", "1"]), slow_calls)
}

fn call(address: SocketAddr, path: &str, message: &str) -> (String, String) {
    let response = get(address, path, &[("x-message", message)]);
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    (response.header("x-grpc-status").unwrap_or("-").to_owned(), response.text())
}

#[test]
fn unary_calls_answer_fail_and_time_out() {
    let ferry = start();
    let address = ferry.address("main");
    assert_eq!(call(address, "/unary/Unary", "hello"), ("0".into(), "echo: hello".into()));
    assert_eq!(call(address, "/unary/Fail", "x"), ("5".into(), "nothing here".into()));
    // The call's 500 ms timeout goes to the server, as Envoy sends it.
    assert_eq!(call(address, "/unary/Deadline", "x"), ("0".into(), "echo: 500m".into()));
    let (status, message) = call(address, "/unary/Slow", "x");
    assert_eq!(status, "4", "DEADLINE_EXCEEDED after the 500 ms timeout: {message}");
    let (status, message) = call(address, "/unknown-cluster", "x");
    assert_eq!((status.as_str(), message.as_str()), ("99", "Err(ParseFailure)"));
}

#[test]
fn a_stream_gets_initial_metadata_messages_trailing_metadata_and_close() {
    let ferry = start();
    let (status, report) = call(ferry.address("main"), "/stream", "");
    // Initial metadata: content-type, x-tag and the server's date.
    assert_eq!(status, "0");
    assert_eq!(
        report,
        "initial(3) x-tag=/stream content-type=application/grpc; message echo: one; message echo: two; trailing(2) x-count=2 grpc-status=0; close 0"
    );
}

#[test]
fn a_cancelled_call_reports_nothing() {
    let (ferry, slow_calls) = start_with_slow_calls();
    let address = ferry.address("main");
    assert_eq!(call(address, "/cancel", ""), ("0".into(), "cancelled".into()));
    let line = ferry.wait_for("cancelled", Duration::from_secs(5));
    let token = line.split("grpc call ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    // The Slow answer would come 2 s after the server got the call; nothing
    // may reach the plugin. A later call's round trip (the cancelled call
    // reached the server before it, or never will), then every Slow call the
    // server got answered, then one more round trip: the answer would be in.
    assert_eq!(call(address, "/unary/Unary", "after"), ("0".into(), "echo: after".into()));
    slow_calls.wait_until_answered(Duration::from_secs(10));
    assert_eq!(call(address, "/unary/Unary", "later"), ("0".into(), "echo: later".into()));
    // Its line (the second answer) comes after any the plugin logged before.
    ferry.wait_for_count("answered: status 0", 2, Duration::from_secs(5));
    assert!(
        !ferry.lines().iter().any(|l| l.contains(&format!("grpc call {token} answered"))),
        "{}",
        ferry.lines().join("\n")
    );
    assert_eq!(call(address, "/cancel-stream", ""), ("0".into(), "cancelled stream".into()));
    let line = ferry.wait_for("grpc stream", Duration::from_secs(5));
    let token = line.split("grpc stream ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    // The server keeps serving; the answer to a call made after the cancel
    // comes after any close the cancelled stream would have had.
    assert_eq!(call(address, "/unary/Unary", "again"), ("0".into(), "echo: again".into()));
    ferry.wait_for_count("answered: status 0", 3, Duration::from_secs(5));
    assert!(
        !ferry.lines().iter().any(|l| l.contains(&format!("grpc stream {token} closed"))),
        "{}",
        ferry.lines().join("\n")
    );
}

#[test]
fn a_stream_the_peer_closed_can_still_be_closed_or_cancelled_once() {
    let ferry = start();
    let address = ferry.address("main");
    // As Envoy: the token stays until the plugin is done with it; the
    // second close finds it gone.
    let (status, report) = call(address, "/closed-by-peer/close", "");
    assert_eq!((status.as_str(), report.as_str()), ("5", "close 5; close: Ok(()), again: Err(NotFound)"));
    let (status, report) = call(address, "/closed-by-peer/cancel", "");
    assert_eq!((status.as_str(), report.as_str()), ("5", "close 5; cancel: Ok(()), again: Err(NotFound)"));
    // The plugin's VM is whole: a stream still works.
    assert_eq!(call(address, "/stream", "").0, "0");
}

#[test]
fn a_call_that_cannot_start_fails_through_its_callback() {
    let ferry = start();
    let (status, message) = call(ferry.address("main"), "/bad-method", "");
    assert_ne!(status, "0", "{message}");
    assert_ne!(status, "99", "the call was made, and failed later: {message}");
}
