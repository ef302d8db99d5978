//! Wasm services and Go plugins against the real binary.

mod common;

use std::time::Duration;

use common::{Ferry, get, go_plugin, plugin};

/// Three singleton services sharing one receiver vm_config, as in the
/// current upstream shared_queue example, plus the sender as HTTP filter.
fn three_services_config() -> String {
    let receiver = plugin("queue_receiver_plugin.wasm");
    let sender = plugin("shared_queue_sender.wasm");
    let service = |queue: &str| {
        format!(
            r#"
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: "{queue}"
      vm_config:
        vm_id: "receiver"
        runtime: "envoy.wasm.runtime.v8"
        code:
          local:
            filename: "{}"
"#,
            receiver.display()
        )
    };
    format!(
        r#"
bootstrap_extensions:
{}{}{}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: local_service
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "example body\n" }} }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config:
                  vm_id: "sender"
                  code: {{ local: {{ filename: "{}" }} }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        service("http_request_headers"),
        service("http_response_headers"),
        service("http_headers"),
        sender.display()
    )
}

#[test]
fn services_sharing_a_vm_config_get_root_contexts_1_2_3_in_one_vm() {
    let ferry = Ferry::start(&three_services_config(), &["--concurrency", "2"]);
    // Context ids are per VM instance: 1, 2, 3 means one VM with three root contexts.
    for (id, queue) in [(1, "http_request_headers"), (2, "http_response_headers"), (3, "http_headers")] {
        ferry.wait_for(
            &format!("wasm log receiver: queue \"{queue}\" registered as queueID={id} by contextID={id}"),
            Duration::from_secs(5),
        );
    }
    assert_eq!(get(ferry.address("http"), "/", &[]).status, 200);
    ferry.wait_for(
        r#"wasm log receiver: (contextID=3) dequeued data from http_headers(queueID=3): {"key": ":method","value": "GET"}"#,
        Duration::from_secs(10),
    );
    assert_eq!(ferry.stop().code(), Some(0));
}

#[test]
fn a_go_wasip1_plugin_loads_starts_and_logs() {
    let config = format!(
        r#"
static_resources:
  listeners:
  - name: main
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
                direct_response: {{ status: 200, body: {{ inline_string: "ok\n" }} }}
          http_filters:
          - name: go
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              value:
                config:
                  name: go
                  configuration:
                    "@type": type.googleapis.com/google.protobuf.Struct
                    value: {{ greeting: hi }}
                  vm_config:
                    vm_id: go
                    environment_variables:
                      key_values: {{ GREETING: hello }}
                    code: {{ local: {{ filename: "{}" }} }}
          - name: envoy.filters.http.router
"#,
        go_plugin().display()
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    ferry.wait_for(r#"wasm log go: go plugin vm started, GREETING="hello""#, Duration::from_secs(5));
    ferry.wait_for(r#"wasm log go: go plugin configured: {"greeting":"hi"}"#, Duration::from_secs(5));
    let response = get(ferry.address("main"), "/hello/go", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-go-plugin"), Some("/hello/go"), "the plugin set a response header");
    ferry.wait_for("wasm log go go: go plugin saw path /hello/go", Duration::from_secs(5));
    assert_eq!(ferry.stop().code(), Some(0));
}
