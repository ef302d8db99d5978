//! Request and response bodies through a Wasm filter, against the real binary.

mod common;

use common::{Ferry, cluster, direct_route, echo_server, file_code, get, listener, plugin, request, wasm_filter};

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
fn a_filter_rewrites_the_request_body_upstream_sees_and_the_response_body() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let response = request(ferry.address("main"), "POST", "/echo", &[], b"hello body");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "echo: HELLO BODY [checked]");
    assert_eq!(response.header("content-length"), Some("26"), "the length follows the rewritten body");
}

#[test]
fn a_filter_answers_from_the_body_phase() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let response = request(ferry.address("main"), "POST", "/echo", &[], b"this is forbidden");
    assert_eq!((response.status, response.text().as_str()), (403, "forbidden body\n [checked]"));
    assert_eq!(response.header("x-body"), Some("refused"));
}

#[test]
fn direct_responses_and_bodiless_requests_go_through_the_response_body_filter() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let response = get(ferry.address("main"), "/", &[]);
    assert_eq!((response.status, response.text().as_str()), (200, "direct\n [checked]"));
    let echoed = get(ferry.address("main"), "/echo", &[]);
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "echo:  [checked]"));
}

#[test]
fn a_request_body_too_large_to_buffer_is_413() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let big = vec![b'x'; (1 << 20) + 1];
    let response = request(ferry.address("main"), "POST", "/echo", &[], &big);
    assert_eq!(response.status, 413);
    assert_eq!(get(ferry.address("main"), "/", &[]).status, 200);
}
