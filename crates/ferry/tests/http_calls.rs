//! HTTP calls from plugins, and streams paused until the call answers,
//! against the real binary.

mod common;

use std::net::TcpListener;

use common::{Ferry, cluster, direct_route, file_code, get, go_plugin, listener, plugin, wasm_filter};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `main` listener with the authorizer, an `auth` listener answering
/// `allow` under `/check/allow` and `deny` elsewhere, and the clusters.
fn config(auth_port: u16) -> String {
    config_with(auth_port, &file_code(&plugin("http_call_auth_plugin.wasm")))
}

/// The same with another authorizer module.
fn config_with(auth_port: u16, code: &str) -> String {
    let routes = direct_route("/check/allow", "allow") + &direct_route("/check", "deny");
    let filter = wasm_filter("auth", "auth", code);
    format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        listener("main", 0, &direct_route("/", "welcome\n"), &filter),
        listener("auth", auth_port, &routes, ""),
        cluster("auth", ([127, 0, 0, 1], auth_port).into()),
        cluster("broken", ([127, 0, 0, 1], 1).into()) // nothing listens on port 1
    )
}

#[test]
fn a_paused_request_resumes_when_the_call_allows_it() {
    let ferry = Ferry::start(&config(free_port()), &["--concurrency", "2"]);
    let main = ferry.address("main");
    let allowed = get(main, "/allow/me", &[]);
    assert_eq!((allowed.status, allowed.text().as_str()), (200, "welcome\n"));
    assert_eq!(allowed.header("x-auth"), Some("allowed"), "the plugin changed the parked request's headers");
    // Several at once: each stream waits for its own call.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let path = if i % 2 == 0 { "/allow/x" } else { "/nope" };
                (i, get(main, path, &[]).status)
            })
        })
        .collect();
    for client in clients {
        let (i, status) = client.join().unwrap();
        assert_eq!(status, if i % 2 == 0 { 200 } else { 403 });
    }
}

#[test]
fn a_paused_request_is_answered_by_the_plugin() {
    let ferry = Ferry::start(&config(free_port()), &["--concurrency", "1"]);
    let denied = get(ferry.address("main"), "/other", &[]);
    assert_eq!((denied.status, denied.text().as_str()), (403, "denied\n"));
    assert_eq!(denied.header("x-auth"), Some("denied"));
}

#[test]
fn a_failed_call_reaches_the_plugin_with_no_headers() {
    let ferry = Ferry::start(&config(free_port()), &["--concurrency", "1"]);
    let failed = get(ferry.address("main"), "/broken", &[]);
    assert_eq!((failed.status, failed.text().as_str()), (502, "call failed\n"));
    assert_eq!(failed.header("x-auth"), Some("call-failed"));
    // And the server goes on.
    assert_eq!(get(ferry.address("main"), "/allow/again", &[]).status, 200);
}

/// A plugin written in standard Go against the ABI: metrics, shared data,
/// a shared queue, an HTTP call with pause and resume, headers and bodies.
#[test]
fn a_go_plugin_uses_queues_shared_data_metrics_and_http_calls() {
    let ferry = Ferry::start(&config_with(free_port(), &file_code(&go_plugin("go_abi.wasm"))), &["--concurrency", "1"]);
    let main = ferry.address("main");
    ferry.wait_for("wasm log auth: go abi plugin started", std::time::Duration::from_secs(5));
    let allowed = get(main, "/allow/go", &[]);
    assert_eq!((allowed.status, allowed.text().as_str()), (200, "welcome\n (go)"));
    assert_eq!(allowed.header("x-go-shared"), Some("shared-by-go"));
    assert_eq!(allowed.header("x-go-count"), Some("1"));
    let denied = get(main, "/nope", &[]);
    assert_eq!((denied.status, denied.text().as_str()), (403, "go says no\n (go)"));
    assert_eq!(denied.header("x-go-count"), Some("2"));
    ferry.wait_for("go dequeued /allow/go", std::time::Duration::from_secs(5));
    ferry.wait_for("go dequeued /nope", std::time::Duration::from_secs(5));
}
