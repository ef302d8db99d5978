//! Request bodies too large to buffer for a Wasm filter, against the real
//! binary (rewriting bodies is conformance case `body_rewrite`).

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
fn a_request_body_too_large_to_buffer_is_413() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let big = vec![b'x'; (1 << 20) + 1];
    let response = request(ferry.address("main"), "POST", "/echo", &[], &big);
    assert_eq!(response.status, 413);
    assert_eq!(get(ferry.address("main"), "/", &[]).status, 200);
}
