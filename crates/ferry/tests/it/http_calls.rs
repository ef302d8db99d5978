//! HTTP calls from plugins, and streams paused until the call answers,
//! against the real binary.

use crate::common;

use common::{Ferry, cluster, direct_route, file_code, free_port, get, listener, plugin, wasm_filter};

/// A `main` listener with the authorizer, an `auth` listener answering
/// `allow` under `/check/allow` and `deny` elsewhere, and its cluster.
fn config(auth_port: u16) -> String {
    let routes = direct_route("/check/allow", "allow") + &direct_route("/check", "deny");
    let filter = wasm_filter("auth", "auth", &file_code(&plugin("http_call_auth_plugin.wasm")));
    format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}",
        listener("main", 0, &direct_route("/", "welcome\n"), &filter),
        listener("auth", auth_port, &routes, ""),
        cluster("auth", ([127, 0, 0, 1], auth_port).into()),
    )
}

/// The single-request behaviour is conformance case `http_call_auth`; here,
/// many paused streams at once on two workers each wait for their own call.
#[test]
fn concurrent_paused_requests_each_wait_for_their_own_call() {
    let ferry = Ferry::start(&config(free_port()), &["--concurrency", "2"]);
    let main = ferry.address("main");
    let clients: Vec<_> = (0..16)
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
fn a_call_with_a_body_and_trailers_to_an_http2_cluster_says_its_length() {
    // Allows only a request whose content-length is its body's, trailers
    // and all, as an HTTP/2 server that needs the length first would.
    let auth = common::hyper_h2_upstream(|request: http::Request<hyper::body::Incoming>| async move {
        let length = request.headers().get("content-length").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let whole = http_body_util::BodyExt::collect(request.into_body()).await.unwrap();
        let trailer = whole.trailers().and_then(|t| t.get("x-check")).is_some();
        let body = whole.to_bytes();
        let verdict = if length.as_deref() == Some("4") && &body[..] == b"ping" && trailer { "allow" } else { "deny" };
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(verdict)))
    });
    let filter = wasm_filter("auth", "auth", &file_code(&plugin("http_call_auth_plugin.wasm")));
    let h2_cluster = cluster("auth", auth)
        .replace("    connect_timeout: 1s\n", "    connect_timeout: 1s\n    http2_protocol_options: {}\n");
    let config = format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{h2_cluster}",
        listener("main", 0, &direct_route("/", "welcome\n"), &filter),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let response = get(ferry.address("main"), "/post/x", &[]);
    assert_eq!((response.status, response.text().as_str()), (200, "welcome\n"));
}
