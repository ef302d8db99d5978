//! The Rust SDK's own API surface, end to end: the sdk_surface test plugin
//! (with the other test plugins) uses every public method of `Context`,
//! `RootContext`, `HttpContext` and `StreamContext`, and reports a check
//! per method it can verify in place.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{
    Ferry, cluster, file_code, get, plugin, repo_root, request_with_trailers, tcp_echo_server, trailer_echo_server,
};

fn config() -> String {
    let code = file_code(&plugin("sdk_surface_plugin.wasm"));
    let echo = trailer_echo_server();
    let tcp_echo = tcp_echo_server();
    let plugin = |role: &str| {
        format!(
            r#"name: sdk_surface
                  configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: {role} }}
                  vm_config:
                    vm_id: sdk
                    configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: vm-config }}
                    code: {code}"#
        )
    };
    format!(
        r#"static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: echo }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                  {http}
          - name: envoy.filters.http.router
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
                  {tcp}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          cluster: tcp_echo
  clusters:
{echo}{tcp_echo}"#,
        http = plugin("http"),
        tcp = plugin("tcp"),
        echo = cluster("echo", echo),
        tcp_echo = cluster("tcp_echo", tcp_echo),
    )
}

/// Sends `request` raw and reads until the connection closes.
fn raw(address: std::net::SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    received
}

#[test]
fn the_sdk_surface_plugin_passes_every_check() {
    let ferry = Ferry::start(&config(), &["--concurrency", "1"]);
    let http = ferry.address("http");

    let response = request_with_trailers(
        http,
        "POST",
        "/surface",
        &[("x-in", "1"), ("x-remove", "1")],
        b"hello",
        &[("x-t1", "1"), ("x-drop", "x")],
    );
    assert_eq!((response.status, response.text().as_str()), (200, "hello"));
    for (name, value) in [("x-r1", "1"), ("x-r2", "2"), ("x-r4", "4")] {
        assert_eq!(response.header(name), Some(value), "{name}: {:?}", response.headers);
    }
    assert_eq!(response.header("x-r3"), None);
    for (name, value) in
        [("x-t1", "one"), ("x-t3", "3"), ("x-rt1", "1"), ("x-rt2", "2"), ("x-rt3", "3"), ("x-rt4", "4")]
    {
        assert_eq!(response.header(&format!("trailer:{name}")), Some(value), "{name}: {:?}", response.headers);
    }
    assert_eq!(response.header("trailer:x-t2"), None);
    assert_eq!(response.header("trailer:x-drop"), None);

    // A gRPC local reply: HTTP 200, trailers-only.
    let response = get(http, "/grpc-response", &[("content-type", "application/grpc")]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("grpc-status"), Some("5"));
    assert_eq!(response.header("grpc-message"), Some("nope"));
    assert_eq!(response.header("x-meta"), Some("1"));
    assert_eq!(response.header("content-type"), Some("application/grpc"));

    // Resets: the connection closes without an answer.
    for path in ["/reset-request", "/reset-response"] {
        let received = raw(http, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
        assert!(received.is_empty(), "{path}: {}", String::from_utf8_lossy(&received));
    }

    // TCP: held downstream data resumed, upstream data rewritten, held and resumed.
    let mut client = TcpStream::connect(ferry.address("tcp")).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.write_all(b"hold\n").unwrap();
    let mut echoed = [0u8; 9];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"[up]hold\n");
    drop(client);
    assert!(raw(ferry.address("tcp"), "closeup\n").is_empty(), "close_upstream closes the connection");

    ferry.wait_for("sdk ok close_upstream", Duration::from_secs(10));
    ferry.wait_for("sdk ok resume_upstream", Duration::from_secs(10));
    // Shutdown: the HTTP role defers its end (on_done false) and calls done() from a tick.
    let (status, lines) = ferry.stop_with_log();
    assert_eq!(status.code(), Some(0));
    let failures: Vec<&String> = lines.iter().filter(|l| l.contains("sdk FAIL")).collect();
    assert!(failures.is_empty(), "failed checks:\n{failures:#?}");
    let checked: BTreeSet<&str> = lines.iter().filter_map(|l| l.split("sdk ok ").nth(1)).collect();
    let expected: BTreeSet<&str> = EXPECTED_CHECKS.iter().copied().collect();
    let missing: Vec<&&str> = expected.difference(&checked).collect();
    assert!(missing.is_empty(), "checks that never ran: {missing:?}");
    let on_done = lines.iter().position(|l| l.contains("root on_done (http)")).expect("on_done at shutdown");
    let done = lines.iter().position(|l| l.contains("sdk ok done")).expect("done() from a tick");
    assert!(on_done < done);
}

/// Every check the plugin makes; each must log `sdk ok <name>`.
const EXPECTED_CHECKS: &[&str] = &[
    "get_vm_configuration",
    "get_current_time",
    "set_shared_data",
    "get_shared_data",
    "remove_shared_data",
    "set_property",
    "get_property",
    "call_foreign_function",
    "done",
    "get_http_call_response_headers",
    "get_http_call_response_headers_bytes",
    "get_http_call_response_header_bytes",
    "get_http_call_response_body",
    "get_http_call_response_trailers",
    "get_http_call_response_trailers_bytes",
    "get_http_call_response_trailer",
    "get_http_call_response_trailer_bytes",
    "resume_http_request",
    "resume_http_response",
    "get_http_request_headers",
    "get_http_request_header_bytes",
    "set_http_request_header_bytes",
    "add_http_request_header_bytes",
    "remove_http_request_header",
    "set_http_request_headers",
    "set_http_request_headers_bytes",
    "get_http_request_body",
    "get_http_request_trailer_bytes",
    "get_http_request_trailers_bytes",
    "set_http_request_trailer_bytes",
    "add_http_request_trailer_bytes",
    "remove_http_request_trailer",
    "set_http_request_trailers",
    "set_http_request_trailers_bytes",
    "get_http_response_headers",
    "get_http_response_header",
    "get_http_response_header_bytes",
    "set_http_response_header_bytes",
    "add_http_response_header_bytes",
    "remove_http_response_header",
    "set_http_response_headers",
    "set_http_response_headers_bytes",
    "get_http_response_body",
    "get_http_response_trailer",
    "get_http_response_trailer_bytes",
    "get_http_response_trailers_bytes",
    "set_http_response_trailer",
    "set_http_response_trailer_bytes",
    "add_http_response_trailer_bytes",
    "remove_http_response_trailer",
    "set_http_response_trailers",
    "set_http_response_trailers_bytes",
    "resume_downstream",
    "resume_upstream",
    "close_upstream",
    "set_upstream_data",
];

/// SDK methods no host feature calls, with the reason (docs/abi-support.md).
const NEVER_CALLED: &[&str] = &[
    // Envoy calls it only from its tests; no feature of ferry's either.
    "on_foreign_function",
];

/// The public trait methods of the `proxy-wasm` crate the test plugins are
/// built with, read from its source.
fn sdk_methods() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--offline", "--format-version", "1", "--manifest-path"])
        .arg(repo_root().join("test-plugins/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    let metadata = String::from_utf8_lossy(&output.stdout);
    let manifest = metadata
        .split("\"manifest_path\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|p| p.contains("/proxy-wasm-") && p.ends_with("Cargo.toml"))
        .expect("the proxy-wasm package in cargo metadata");
    let traits = PathBuf::from(manifest).parent().unwrap().join("src/traits.rs");
    let source = std::fs::read_to_string(&traits).unwrap();
    let mut methods = BTreeSet::new();
    let mut in_trait = false;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("pub trait ") {
            in_trait = ["Context", "RootContext", "HttpContext", "StreamContext"]
                .iter()
                .any(|t| rest.starts_with(&format!("{t}:")) || rest.starts_with(&format!("{t} ")));
        } else if in_trait && let Some(rest) = line.strip_prefix("    fn ") {
            methods.insert(rest.split(['(', '<']).next().unwrap().to_owned());
        }
    }
    methods
}

/// Each SDK method is used (called or implemented) by a test plugin or an
/// example whose end-to-end test passes, or is listed as never called.
#[test]
fn every_sdk_method_is_used_by_a_tested_plugin() {
    let methods = sdk_methods();
    assert!(methods.len() > 100, "found only {} methods", methods.len());
    let mut sources = String::new();
    for dir in ["test-plugins", "examples"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let lib = entry.unwrap().path().join("src/lib.rs");
            if let Ok(text) = std::fs::read_to_string(&lib) {
                sources.push_str(&text);
            }
            // examples/<example>/<plugin>/src/lib.rs
        }
    }
    for example in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let example = example.unwrap().path();
        if example.is_dir() {
            for plugin in std::fs::read_dir(&example).unwrap() {
                if let Ok(text) = std::fs::read_to_string(plugin.unwrap().path().join("src/lib.rs")) {
                    sources.push_str(&text);
                }
            }
        }
    }
    let unused: Vec<&String> = methods
        .iter()
        .filter(|m| !NEVER_CALLED.contains(&m.as_str()))
        .filter(|m| !sources.contains(&format!(".{m}(")) && !sources.contains(&format!("fn {m}(")))
        .collect();
    assert!(unused.is_empty(), "SDK methods no test plugin uses: {unused:?}");
}
