//! Proxying without filters (the connection manager's fast path, which
//! builds no header maps): what the upstream and the client see is what
//! the general path gives them.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Ferry, cluster, request};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

/// What the upstream saw of each request: its headers and body.
type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

/// A hyper upstream that records each request and answers 200 `hello`,
/// with `x-upstream: yes` and its own `server` header.
fn upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let address = common::hyper_upstream(move |request: http::Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            record.lock().unwrap().push((parts.headers, body));
            let mut response = http::Response::new(Full::new(Bytes::from_static(b"hello")));
            response.headers_mut().insert("x-upstream", http::HeaderValue::from_static("yes"));
            response.headers_mut().insert("server", http::HeaderValue::from_static("upstream"));
            response
        }
    });
    (address, seen)
}

fn config(upstream: SocketAddr) -> String {
    config_with(upstream, Options::default())
}

/// What a test changes in [`config`].
#[derive(Default, Clone, Copy)]
struct Options {
    /// Lines added to the connection manager's config.
    manager: &'static str,
    /// The router's typed config (after `- name: envoy.filters.http.router`).
    router: &'static str,
    /// Put a Wasm filter (that does nothing) before the router: the general path.
    filter: bool,
}

fn config_with(upstream: SocketAddr, options: Options) -> String {
    let filter = if options.filter { common::noop_filter() } else { String::new() };
    format!(
        r#"static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/down" }}
                route: {{ cluster: down }}
              - match: {{ prefix: "/slow" }}
                route: {{ cluster: up, timeout: 2.5s }}
              - match: {{ prefix: "/local" }}
                direct_response: {{ status: 200 }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
{}          http_filters:
{}          - name: envoy.filters.http.router
{}
  clusters:
{}{}"#,
        options.manager,
        filter,
        options.router,
        cluster("up", upstream),
        cluster("down", SocketAddr::from(([127, 0, 0, 1], common::free_port())))
    )
}

#[test]
fn requests_go_upstream_with_envoys_added_headers_and_without_connection_headers() {
    let (address, seen) = upstream();
    let ferry = Ferry::start(&config(address), &["--concurrency", "1"]);
    let response = request(
        ferry.address("main"),
        "POST",
        "/echo?x=1",
        &[("x-custom", "1"), ("connection", "keep-alive"), ("keep-alive", "timeout=5")],
        b"the body",
    );
    assert_eq!((response.status, response.text().as_str()), (200, "hello"));
    assert_eq!(response.header("x-upstream"), Some("yes"));
    assert_eq!(response.header("server"), Some("ferry"));
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen[0];
    assert_eq!(body, "the body");
    assert_eq!(headers.get("x-custom").unwrap(), "1");
    assert_eq!(headers.get("x-forwarded-proto").unwrap(), "http");
    let id = headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert!(headers.get("keep-alive").is_none(), "hop-by-hop headers stay on their connection");
    assert!(headers.get("host").unwrap().to_str().unwrap().starts_with("localhost:"), "the client's host");
}

#[test]
fn an_unreachable_upstream_is_envoys_503_and_grpc_requests_get_it_as_grpc() {
    let (address, _) = upstream();
    let ferry = Ferry::start(&config(address), &["--concurrency", "1"]);
    let failed = request(ferry.address("main"), "GET", "/down", &[], b"");
    assert_eq!(failed.status, 503);
    assert!(failed.text().starts_with("upstream connect error"), "{}", failed.text());
    assert_eq!(failed.header("content-type"), Some("text/plain"));
    let grpc = request(ferry.address("main"), "POST", "/down", &[("content-type", "application/grpc")], b"");
    assert_eq!(grpc.status, 200);
    assert_eq!(grpc.header("grpc-status"), Some("14"), "UNAVAILABLE");
    assert!(grpc.header("grpc-message").is_some_and(|m| m.starts_with("upstream connect error")));
}

/// Both ways through the connection manager: without filters (the fast
/// path) and with a Wasm filter (the general path).
const PATHS: [bool; 2] = [false, true];

#[test]
fn the_router_adds_envoys_timeout_and_service_time_headers_unless_suppressed() {
    for filter in PATHS {
        let (address, seen) = upstream();
        let ferry =
            Ferry::start(&config_with(address, Options { filter, ..Options::default() }), &["--concurrency", "1"]);
        let response = request(ferry.address("main"), "GET", "/", &[], b"");
        assert_eq!(response.status, 200);
        let service_time = response.header("x-envoy-upstream-service-time").expect("service time");
        assert!(service_time.parse::<u64>().is_ok(), "{service_time}");
        request(ferry.address("main"), "GET", "/slow", &[], b"");
        let seen = seen.lock().unwrap();
        // Envoy's default route timeout, then the route's own.
        assert_eq!(seen[0].0.get("x-envoy-expected-rq-timeout-ms").unwrap(), "15000", "filter: {filter}");
        assert_eq!(seen[1].0.get("x-envoy-expected-rq-timeout-ms").unwrap(), "2500", "filter: {filter}");
    }
    let router = "            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n              suppress_envoy_headers: true";
    for filter in PATHS {
        let (address, seen) = upstream();
        let config = config_with(address, Options { filter, router, ..Options::default() });
        let ferry = Ferry::start(&config, &["--concurrency", "1"]);
        let response = request(ferry.address("main"), "GET", "/", &[], b"");
        assert_eq!(response.header("x-envoy-upstream-service-time"), None, "filter: {filter}");
        assert!(seen.lock().unwrap()[0].0.get("x-envoy-expected-rq-timeout-ms").is_none(), "filter: {filter}");
    }
}

#[test]
fn use_remote_address_appends_the_peer_to_x_forwarded_for() {
    for filter in PATHS {
        let (address, seen) = upstream();
        let manager = "          use_remote_address: true\n";
        let ferry = Ferry::start(
            &config_with(address, Options { filter, manager, ..Options::default() }),
            &["--concurrency", "1"],
        );
        request(ferry.address("main"), "GET", "/", &[("x-forwarded-for", "203.0.113.9")], b"");
        request(ferry.address("main"), "GET", "/", &[], b"");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1", "filter: {filter}");
        assert_eq!(seen[1].0.get("x-forwarded-for").unwrap(), "127.0.0.1", "filter: {filter}");
    }
    // Off by default, as in Envoy: the header goes on as the client sent it.
    let (address, seen) = upstream();
    let ferry = Ferry::start(&config(address), &["--concurrency", "1"]);
    request(ferry.address("main"), "GET", "/", &[("x-forwarded-for", "203.0.113.9")], b"");
    assert_eq!(seen.lock().unwrap()[0].0.get("x-forwarded-for").unwrap(), "203.0.113.9");
}

#[test]
fn trusted_hops_external_clients_and_internal_ones_as_envoy_tells_them_apart() {
    let manager = "          use_remote_address: true\n          xff_num_trusted_hops: 1\n";
    for filter in PATHS {
        let (address, seen) = upstream();
        let config = config_with(address, Options { filter, manager, ..Options::default() });
        let ferry = Ferry::start(&config, &["--concurrency", "1"]);
        // From behind one trusted proxy: an external client, whose router headers go.
        let forwarded = [("x-forwarded-for", "192.0.2.10, 203.0.113.1"), ("x-envoy-retry-on", "5xx")];
        request(ferry.address("main"), "GET", "/", &forwarded, b"");
        // Straight from loopback, nothing forwarded: an internal client.
        request(ferry.address("main"), "GET", "/", &[("x-envoy-retry-on", "5xx")], b"");
        let seen = seen.lock().unwrap();
        let external = &seen[0].0;
        assert_eq!(external.get("x-forwarded-for").unwrap(), "192.0.2.10, 203.0.113.1, 127.0.0.1", "filter: {filter}");
        assert_eq!(external.get("x-envoy-external-address").unwrap(), "203.0.113.1", "the trusted client");
        assert!(external.get("x-envoy-retry-on").is_none(), "filter: {filter}");
        assert!(external.get("x-envoy-internal").is_none(), "filter: {filter}");
        let internal = &seen[1].0;
        assert_eq!(internal.get("x-envoy-internal").unwrap(), "true", "filter: {filter}");
        assert_eq!(internal.get("x-envoy-retry-on").unwrap(), "5xx", "filter: {filter}");
        assert!(internal.get("x-envoy-external-address").is_none(), "filter: {filter}");
    }
}

#[test]
fn server_header_transformation_decides_whose_server_header_the_client_sees() {
    let cases = [
        ("", Some("ferry"), Some("ferry")),
        ("          server_header_transformation: APPEND_IF_ABSENT\n", Some("upstream"), Some("ferry")),
        ("          server_header_transformation: PASS_THROUGH\n", Some("upstream"), None),
    ];
    for (manager, proxied, local) in cases {
        for filter in PATHS {
            let (address, _) = upstream();
            let ferry = Ferry::start(
                &config_with(address, Options { filter, manager, ..Options::default() }),
                &["--concurrency", "1"],
            );
            let response = request(ferry.address("main"), "GET", "/", &[], b"");
            assert_eq!(response.header("server"), proxied, "{manager} filter: {filter}");
            let response = request(ferry.address("main"), "GET", "/local", &[], b"");
            assert_eq!(response.header("server"), local, "{manager} filter: {filter}");
        }
    }
}
