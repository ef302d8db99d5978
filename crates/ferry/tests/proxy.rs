//! Proxying without filters (the connection manager's fast path, which
//! builds no header maps): what the upstream and the client see is what
//! the general path gives them.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Ferry, cluster, request};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What the upstream saw of each request: its headers and body.
type Seen = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

/// A hyper upstream that records each request and answers 200 `hello`,
/// with a `connection: keep-alive` header (hop-by-hop, not forwarded).
fn upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let record = seen.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            record.lock().unwrap().push((parts.headers, body));
                            let mut response = http::Response::new(Full::new(Bytes::from_static(b"hello")));
                            response.headers_mut().insert("x-upstream", http::HeaderValue::from_static("yes"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (address, seen)
}

fn config(upstream: SocketAddr) -> String {
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
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: envoy.filters.http.router
  clusters:
{}{}"#,
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
