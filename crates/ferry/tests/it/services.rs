//! Wasm services and Go plugins against the real binary.

use crate::common;

use std::time::Duration;

use common::{Ferry, direct_route, file_code, get, go_plugin, listener, plugin, wasm_filter};

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
    let filter = wasm_filter("envoy.filters.http.wasm", "sender", &file_code(&sender));
    format!(
        "bootstrap_extensions:\n{}{}{}static_resources:\n  listeners:\n{}",
        service("http_request_headers"),
        service("http_response_headers"),
        service("http_headers"),
        listener("http", 0, &direct_route("/", "example body\n"), &filter)
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
    let go_filter = format!(
        r#"          - name: go
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
                    code: {}
"#,
        file_code(&go_plugin("go_hello.wasm"))
    );
    let config =
        format!("static_resources:\n  listeners:\n{}", listener("main", 0, &direct_route("/", "ok\n"), &go_filter));
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    ferry.wait_for(r#"wasm log go: go plugin vm started, GREETING="hello""#, Duration::from_secs(5));
    ferry.wait_for(r#"wasm log go: go plugin configured: {"greeting":"hi"}"#, Duration::from_secs(5));
    let response = get(ferry.address("main"), "/hello/go", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-go-plugin"), Some("/hello/go"), "the plugin set a response header");
    ferry.wait_for("wasm log go go: go plugin saw path /hello/go", Duration::from_secs(5));
    assert_eq!(ferry.stop().code(), Some(0));
}
