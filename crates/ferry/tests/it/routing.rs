//! Envoy's routing against the real binary: matching by regex, separated
//! prefix, headers and query parameters; rewrites of path and host;
//! redirects; headers added and removed at three levels; weighted and
//! header-chosen clusters; retries on a failing upstream.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{Ferry, cluster, request};
use http_body_util::{BodyExt as _, Full};

/// An upstream that answers 200 with what it saw: its name, the path, the
/// host and the router's headers.
fn reporting_upstream(name: &'static str) -> SocketAddr {
    common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| async move {
        let header = |h: &str| -> String {
            let values: Vec<&str> = request.headers().get_all(h).iter().filter_map(|v| v.to_str().ok()).collect();
            if values.is_empty() { "-".into() } else { values.join(",") }
        };
        let report = format!(
            "{name} {} host={} original={} added={} removed={}",
            request.uri().path_and_query().map_or("", |p| p.as_str()),
            header("host"),
            header("x-envoy-original-path"),
            header("x-added"),
            header("x-remove-me"),
        );
        let mut response = http::Response::new(Full::new(Bytes::from(report)));
        response.headers_mut().insert("x-upstream-secret", http::HeaderValue::from_static("s3cr3t"));
        response
    })
}

/// An upstream that reads each request's body, then answers 503 to its
/// first `failures` requests and 200 to the rest, with the try's number
/// (and, when there was a body, the bytes it got).
fn flaky_upstream(failures: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let address = common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let count = count.clone();
        async move {
            let body = request.into_body().collect().await.map(|b| b.to_bytes().len());
            let n = count.fetch_add(1, Ordering::SeqCst);
            let report = match body {
                Ok(0) => format!("try {}", n + 1),
                Ok(bytes) => format!("try {}: {bytes} bytes", n + 1),
                Err(_) => format!("try {}: broken body", n + 1),
            };
            let mut response = http::Response::new(Full::new(Bytes::from(report)));
            if n < failures {
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
    })
    .to_owned();
    (address, seen)
}

/// A listener with `routes` (and the route configuration's own `extra`
/// fields), the clusters `clusters`, and an admin endpoint.
fn config(routes: &str, extra: &str, clusters: &str) -> String {
    common::ManagerConfig { top: common::ADMIN, route_config: extra, routes, clusters, ..Default::default() }.yaml()
}

fn direct(status: u16, body: &str) -> String {
    format!("direct_response: {{ status: {status}, body: {{ inline_string: {body:?} }} }}")
}

#[test]
fn routes_match_by_regex_separated_prefix_headers_and_query() {
    let routes = format!(
        r#"              - match: {{ safe_regex: {{ regex: "/users/[0-9]+" }} }}
                {}
              - match: {{ path_separated_prefix: "/api" }}
                {}
              - match: {{ prefix: "/", headers: [ {{ name: x-canary, string_match: {{ exact: "yes" }} }}, {{ name: x-debug, present_match: false }} ] }}
                {}
              - match: {{ prefix: "/", query_parameters: [ {{ name: version, string_match: {{ prefix: "2" }} }} ] }}
                {}
              - match: {{ prefix: "/" }}
                {}"#,
        direct(200, "user"),
        direct(200, "api"),
        direct(200, "canary"),
        direct(200, "v2"),
        direct(200, "default"),
    );
    let ferry = Ferry::start(&config(&routes, "", ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let body = |path: &str, headers: &[(&str, &str)]| request(main, "GET", path, headers, b"").text();
    assert_eq!(body("/users/42", &[]), "user");
    assert_eq!(body("/users/42?x=1", &[]), "user", "the query is not part of a regex match");
    assert_eq!(body("/users/42/posts", &[]), "default", "a regex matches the whole path");
    assert_eq!(body("/api", &[]), "api");
    assert_eq!(body("/api/v1", &[]), "api");
    assert_eq!(body("/apiary", &[]), "default", "a separated prefix ends at a /");
    assert_eq!(body("/x", &[("x-canary", "yes")]), "canary");
    assert_eq!(body("/x", &[("x-canary", "yes"), ("x-debug", "1")]), "default", "present_match: false");
    assert_eq!(body("/x?version=2.1", &[]), "v2");
    assert_eq!(body("/x?version=1", &[]), "default");
}

#[test]
fn rewrites_change_the_path_and_host_upstream_and_keep_the_original() {
    let routes = r#"              - match: { prefix: "/old/" }
                route: { cluster: backend, prefix_rewrite: "/new/" }
              - match: { prefix: "/re/" }
                route: { cluster: backend, regex_rewrite: { pattern: { regex: "^/re/([a-z]+)/([0-9]+)$" }, substitution: "/\\2/\\1" } }
              - match: { prefix: "/host" }
                route: { cluster: backend, host_rewrite_literal: "internal.example" }
              - match: { prefix: "/auto-named" }
                route: { cluster: named, auto_host_rewrite: true }
              - match: { prefix: "/auto" }
                route: { cluster: backend, auto_host_rewrite: true }"#;
    let backend = reporting_upstream("backend");
    // The same upstream as an endpoint with a host name.
    let named = format!(
        "  - name: named\n    connect_timeout: 1s\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ hostname: backend.internal, address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        backend.port()
    );
    let clusters = cluster("backend", backend) + &named;
    let ferry = Ferry::start(&config(routes, "", &clusters), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let body = |path: &str| request(main, "GET", path, &[], b"").text();
    let host = format!("localhost:{}", main.port());
    assert_eq!(
        body("/old/thing?q=1"),
        format!("backend /new/thing?q=1 host={host} original=/old/thing?q=1 added=- removed=-")
    );
    assert_eq!(body("/re/abc/42?x"), format!("backend /42/abc?x host={host} original=/re/abc/42?x added=- removed=-"));
    assert_eq!(body("/host"), "backend /host host=internal.example original=- added=- removed=-");
    // auto_host_rewrite: the endpoint's host name; a static address has none (as in Envoy).
    assert_eq!(body("/auto-named"), "backend /auto-named host=backend.internal original=- added=- removed=-");
    assert_eq!(body("/auto"), format!("backend /auto host={host} original=- added=- removed=-"));
}

#[test]
fn redirects_answer_with_a_location() {
    let routes = r#"              - match: { prefix: "/secure" }
                redirect: { https_redirect: true }
              - match: { prefix: "/moved" }
                redirect: { host_redirect: new.example, path_redirect: "/landing", response_code: FOUND }
              - match: { prefix: "/docs/" }
                redirect: { prefix_rewrite: "/manual/", strip_query: true, response_code: PERMANENT_REDIRECT }"#;
    let ferry = Ferry::start(&config(routes, "", ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let host = [("host", "shop.example:8080")];
    let secure = request(main, "GET", "/secure/cart?id=1", &host, b"");
    assert_eq!((secure.status, secure.header("location")), (301, Some("https://shop.example/secure/cart?id=1")));
    let moved = request(main, "GET", "/moved/x?keep=1", &host, b"");
    assert_eq!((moved.status, moved.header("location")), (302, Some("http://new.example/landing?keep=1")));
    let docs = request(main, "GET", "/docs/intro?utm=x", &host, b"");
    assert_eq!((docs.status, docs.header("location")), (308, Some("http://shop.example:8080/manual/intro")));
}

#[test]
fn headers_are_added_and_removed_at_route_virtual_host_and_configuration() {
    let routes = r#"              - match: { prefix: "/up" }
                route: { cluster: backend }
                request_headers_to_add: [ { header: { key: x-added, value: route } } ]
                request_headers_to_remove: [ x-remove-me ]
                response_headers_to_add: [ { header: { key: x-route, value: "1" } } ]
              - match: { prefix: "/local" }
                direct_response: { status: 200, body: { inline_string: "local" } }
                response_headers_to_add: [ { header: { key: x-route, value: "2" } } ]"#;
    let extra = r#"            request_headers_to_add:
            - header: { key: x-added, value: config }
              append_action: APPEND_IF_EXISTS_OR_ADD
            response_headers_to_add:
            - header: { key: x-config, value: "yes" }
            - header: { key: x-route, value: overwritten }
              append_action: OVERWRITE_IF_EXISTS
            response_headers_to_remove: [ x-upstream-secret ]
"#;
    let backend = reporting_upstream("backend");
    let ferry = Ferry::start(&config(routes, extra, &cluster("backend", backend)), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let up = request(main, "GET", "/up", &[("x-remove-me", "1")], b"");
    assert!(up.text().ends_with("added=route,config removed=-"), "{}", up.text());
    assert_eq!(up.header("x-config"), Some("yes"));
    assert_eq!(up.header("x-route"), Some("overwritten"), "the configuration's overwrite comes last");
    assert_eq!(up.header("x-upstream-secret"), None);
    let local = request(main, "GET", "/local", &[], b"");
    assert_eq!((local.text().as_str(), local.header("x-config")), ("local", Some("yes")));
}

#[test]
fn weighted_and_header_chosen_clusters() {
    let routes = r#"              - match: { prefix: "/split" }
                route: { weighted_clusters: { clusters: [ { name: a, weight: 1 }, { name: b, weight: 1 } ] } }
              - match: { prefix: "/never-b" }
                route: { weighted_clusters: { clusters: [ { name: a, weight: 5 }, { name: b, weight: 0 } ] } }
              - match: { prefix: "/choose" }
                route: { cluster_header: x-cluster }"#;
    let clusters = cluster("a", reporting_upstream("a")) + &cluster("b", reporting_upstream("b"));
    let ferry = Ferry::start(&config(routes, "", &clusters), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let target = |path: &str, headers: &[(&str, &str)]| {
        let response = request(main, "GET", path, headers, b"");
        (response.status, response.text().split(' ').next().unwrap_or_default().to_owned())
    };
    let split: Vec<String> = (0..60).map(|_| target("/split", &[]).1).collect();
    assert!(split.contains(&"a".to_owned()) && split.contains(&"b".to_owned()), "{split:?}");
    assert!((0..20).all(|_| target("/never-b", &[]).1 == "a"));
    assert_eq!(target("/choose", &[("x-cluster", "b")]), (200, "b".to_owned()));
    assert_eq!(target("/choose", &[("x-cluster", "nope")]).0, 503, "no such cluster");
    assert_eq!(target("/choose", &[]).0, 503, "no header");
}

#[test]
fn retries_on_a_failing_upstream_and_on_connect_failures() {
    let (flaky, tries) = flaky_upstream(2);
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let routes = r#"              - match: { prefix: "/flaky" }
                route: { cluster: flaky, retry_policy: { retry_on: "5xx", num_retries: 3 } }
              - match: { prefix: "/once" }
                route: { cluster: flaky, retry_policy: { retry_on: "gateway-error", num_retries: 1 } }
              - match: { prefix: "/half-dead" }
                route: { cluster: half_dead, retry_policy: { retry_on: connect-failure } }"#;
    let half_dead = format!(
        "  - name: half_dead\n    connect_timeout: 1s\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        dead.port(),
        flaky.port()
    );
    let clusters = cluster("flaky", flaky) + &half_dead;
    let ferry = Ferry::start(&config(routes, "", &clusters), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let response = request(main, "POST", "/flaky", &[], b"payload");
    assert_eq!((response.status, response.text().as_str()), (200, "try 3: 7 bytes"), "two 503s, then an answer");
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    // Every request to the half-dead cluster is answered: the dead
    // endpoint's connection failure is tried again on the live one.
    for _ in 0..4 {
        assert_eq!(request(main, "GET", "/half-dead", &[], b"").status, 200);
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin").port()));
    let stats = request(admin, "GET", "/stats?filter=upstream_rq_retry", &[], b"").text();
    assert!(stats.contains("cluster.flaky.upstream_rq_retry: 2"), "{stats}");
    // Round robin: each request's first try takes the dead endpoint, its retry the live one.
    assert!(stats.contains("cluster.half_dead.upstream_rq_retry: 4"), "{stats}");
}

/// A route that retries, behind a filter that sees every body piece, with a
/// 64 KiB buffer limit; its upstream fails twice.
fn retrying_through_a_filter() -> (Ferry, Arc<AtomicUsize>) {
    let (flaky, tries) = flaky_upstream(2);
    let filter = common::wasm_filter_with(
        "count",
        "count",
        "count",
        &common::file_code(&common::plugin("body_rewrite_plugin.wasm")),
    );
    let config = common::ManagerConfig {
        top: common::ADMIN,
        routes: r#"              - match: { prefix: "/" }
                route: { cluster: flaky, retry_policy: { retry_on: "5xx", num_retries: 3 } }"#,
        filters: &filter,
        clusters: &cluster("flaky", flaky),
        ..Default::default()
    }
    .yaml()
    .replacen("    filter_chains:\n", "    per_connection_buffer_limit_bytes: 65536\n    filter_chains:\n", 1);
    (Ferry::start(&config, &["--concurrency", "1"]), tries)
}

#[test]
fn a_retried_request_body_streams_and_is_sent_again_whole() {
    let (ferry, tries) = retrying_through_a_filter();
    let body = vec![b'x'; 40_000];
    let response = request(ferry.address("main"), "POST", "/", &[], &body);
    assert_eq!((response.status, response.text().as_str()), (200, "try 3: 40000 bytes"));
    assert_eq!(tries.load(Ordering::SeqCst), 3);
}

#[test]
fn a_request_body_past_the_buffer_limit_is_not_retried() {
    let (ferry, tries) = retrying_through_a_filter();
    // Bigger than the limit: it streams upstream, but cannot be sent again.
    let body = vec![b'x'; 200_000];
    let response = request(ferry.address("main"), "POST", "/", &[], &body);
    assert_eq!((response.status, response.text().as_str()), (503, "try 1: 200000 bytes"));
    assert_eq!(tries.load(Ordering::SeqCst), 1);
}

#[test]
fn scheme_header_transformation_sets_the_scheme_plugins_see() {
    let filter =
        common::wasm_filter("attributes", "attributes", &common::file_code(&common::plugin("attributes_plugin.wasm")));
    let config = common::ManagerConfig {
        manager: "          scheme_header_transformation: { scheme_to_overwrite: https }\n",
        routes: r#"              - match: { prefix: "/" }
                direct_response: { status: 200 }"#,
        filters: &filter,
        ..Default::default()
    }
    .yaml();
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let main = ferry.address("main");
    let read = |property: &str| request(main, "GET", "/", &[("x-property", property)], b"").text();
    assert_eq!(read("request.scheme"), "6874747073", "hex of https");
    assert_eq!(read("request.headers.x-forwarded-proto"), "68747470", "the connection's own: http");
}
