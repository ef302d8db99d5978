//! Configuration parsing: the shapes plugins ship with, and every error path.

use std::time::Duration;

use ferry_config::{
    BridgeStorage, Code, FailurePolicy, HoldFailed, HttpFilter, ListenerKind, PathMatch, QueueOverflow, RouteAction,
    from_yaml,
};

const SEED: &str = include_str!("../../../examples/shared_queue/envoy.yaml");
const MULTI: &str = include_str!("../../../examples/shared_queue_multi/envoy.yaml");
const FLEET_RECEIVER: &str = include_str!("../../../examples/shared_queue_fleet/receiver.yaml");
const FLEET_SENDER: &str = include_str!("../../../examples/shared_queue_fleet/sender_a.yaml");

#[test]
fn the_seed_config_parses() {
    let config = from_yaml(SEED).unwrap();
    assert_eq!(config.wasm_services.len(), 1);
    let service = &config.wasm_services[0];
    assert!(service.singleton);
    assert_eq!(service.plugin.vm.vm_id, "receiver");
    assert_eq!(service.plugin.vm.code, Code::File("./target/wasm32-wasip1/release/shared_queue_receiver.wasm".into()));
    assert_eq!(config.admin.as_ref().unwrap().port, 8001);
    let listener = &config.listeners[0];
    assert_eq!((listener.name.as_str(), listener.address.port), ("main", 18000));
    let ListenerKind::Http(hcm) = listener.kind() else { panic!("an HTTP listener") };
    let [HttpFilter::Wasm(sender)] = hcm.http_filters.as_slice() else { panic!("one wasm filter before the router") };
    assert_eq!(sender.vm.vm_id, "sender");
    assert_eq!(sender.failure_policy, None);
    let route = &hcm.route_config.virtual_hosts[0].routes[0];
    assert_eq!(route.matcher, PathMatch::Prefix("/".into()));
    assert_eq!(route.action, RouteAction::DirectResponse { status: 200, body: Some(b"example body\n".to_vec()) });
}

/// A bootstrap with the three services of the current upstream example.
fn upstream_services(configuration: &str) -> String {
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
        {configuration}
        code:
          local:
            filename: "./examples/shared_queue/receiver/main.wasm"
"#
        )
    };
    format!(
        "bootstrap_extensions:\n{}{}{}",
        service("http_request_headers"),
        service("http_response_headers"),
        service("tcp_data_hashes")
    )
}

#[test]
fn three_services_share_one_vm_config_with_their_own_configuration() {
    let config = from_yaml(&upstream_services("")).unwrap();
    let plugins: Vec<_> = config.wasm_services.iter().map(|s| &s.plugin).collect();
    assert_eq!(plugins.len(), 3);
    assert!(plugins.iter().all(|p| p.vm == plugins[0].vm), "identical vm_config, hence one VM");
    let queues: Vec<_> = plugins.iter().map(|p| String::from_utf8(p.configuration.clone()).unwrap()).collect();
    assert_eq!(queues, ["http_request_headers", "http_response_headers", "tcp_data_hashes"]);
    assert_eq!(plugins[2].config_path, "bootstrap_extensions[2].typed_config.config");
}

#[test]
fn configuration_kinds_become_the_bytes_plugins_read() {
    let with = |configuration: &str| {
        let yaml = upstream_services(&format!("configuration: {configuration}"));
        from_yaml(&yaml).map(|c| c.wasm_services[0].plugin.vm.configuration.clone())
    };
    assert_eq!(
        with(r#"{"@type": "type.googleapis.com/google.protobuf.StringValue", value: "raw text"}"#).unwrap(),
        b"raw text"
    );
    assert_eq!(
        with(r#"{"@type": "type.googleapis.com/google.protobuf.BytesValue", value: "AAEC"}"#).unwrap(),
        [0, 1, 2]
    );
    assert_eq!(
        with(r#"{"@type": "type.googleapis.com/google.protobuf.Struct", value: {b: 1, a: [true, "x"]}}"#).unwrap(),
        br#"{"b":1,"a":[true,"x"]}"#
    );
    let err = with(r#"{"@type": "type.googleapis.com/my.Custom", value: "x"}"#).unwrap_err();
    assert_eq!(err.path, "bootstrap_extensions[0].typed_config.config.vm_config.configuration.@type");
    let err = with(r#"{"@type": "type.googleapis.com/google.protobuf.BytesValue", value: "!!"}"#).unwrap_err();
    assert_eq!(err.path, "bootstrap_extensions[0].typed_config.config.vm_config.configuration.value");
}

#[test]
fn typed_struct_wrappers_and_inline_code_are_accepted() {
    let yaml = r#"
bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/udpa.type.v1.TypedStruct
    type_url: type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    value:
      singleton: true
      config:
        name: svc
        root_id: root
        vm_config:
          code: { local: { inline_bytes: "AGFzbQEAAAA=" } }
"#;
    let config = from_yaml(yaml).unwrap();
    let plugin = &config.wasm_services[0].plugin;
    assert_eq!((plugin.name.as_str(), plugin.root_id.as_str()), ("svc", "root"));
    assert_eq!(plugin.vm.code, Code::Inline(b"\0asm\x01\0\0\0".to_vec()));
}

/// Each bad input and the path its error names.
#[test]
fn errors_name_the_field_path() {
    let listener = SEED.split("static_resources:").nth(1).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (SEED.replace("port_value: 18000", "port_value: 70000"), "static_resources.listeners[0].address.socket_address.port_value"),
        (SEED.replace("stat_prefix: ingress_http", "stat_prefix: x\n                tracing: {}"), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing"),
        (SEED.replace("prefix: \"/\"", "regex: \".*\""), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].match.regex"),
        (SEED.replace("status: 200", "status: 42"), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].direct_response.status"),
        (SEED.replace("- name: envoy.filters.http.router", ""), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]"),
        (SEED.replace("envoy.extensions.filters.http.wasm.v3.Wasm", "envoy.extensions.filters.http.lua.v3.Lua"), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.@type"),
        (SEED.replace("envoy.extensions.wasm.v3.WasmService", "envoy.extensions.other.v3.Thing"), "bootstrap_extensions[0].typed_config.@type"),
        (SEED.replace("runtime: \"envoy.wasm.runtime.v8\"\n        code", "runtime: \"envoy.wasm.runtime.null\"\n        code"), "bootstrap_extensions[0].typed_config.config.vm_config.runtime"),
        (SEED.replace("local:\n            filename", "remote:\n            filename"), "bootstrap_extensions[0].typed_config.config.vm_config.code.remote"),
        (SEED.replace("direct_response:\n                            status: 200", "route: { cluster: nowhere }\n                          direct_response:\n                            status: 200"), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0]"),
        (format!("static_resources:{}", listener.replace("codec_type: auto", "codec_type: HTTP3")), "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.codec_type"),
        ("dynamic_resources: {}\n".to_owned(), "dynamic_resources"),
        (SEED.replace("        - filters:", "        - filter_chain_match: { destination_port: 80 }\n          filters:"), "static_resources.listeners[0].filter_chains[0].filter_chain_match.destination_port"),
        (SEED.replace("        - filters:", "        - filter_chain_match: { server_names: [\"a.*\"] }\n          filters:"), "static_resources.listeners[0].filter_chains[0].filter_chain_match.server_names[0]"),
        (SEED.replace("      filter_chains:", "      listener_filters: [ { name: envoy.filters.listener.http_inspector } ]\n      filter_chains:"), "static_resources.listeners[0].listener_filters[0]"),
        ("{ static_resources: \"unterminated\n".to_owned(), "(file)"),
    ];
    for (yaml, path) in cases {
        let err = from_yaml(&yaml).expect_err(path);
        assert_eq!(err.path, path, "wrong path for error: {err}");
        assert!(!err.message.is_empty());
    }
}

#[test]
fn clusters_and_routes_to_them() {
    let yaml = SEED
        .replace(
            "direct_response:\n                            status: 200\n                            body:\n                              inline_string: \"example body\\n\"",
            "route: { cluster: backend, timeout: 0.25s }",
        )
        .replace(
            "\nadmin:",
            "  clusters:\n  - name: backend\n    connect_timeout: 1.5s\n    type: STATIC\n    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } }\nadmin:",
        );
    let config = from_yaml(&yaml).unwrap();
    assert_eq!(config.clusters[0].connect_timeout, std::time::Duration::from_millis(1500));
    assert_eq!(config.clusters[0].endpoints[0].to_string(), "127.0.0.1:9000");
    let ListenerKind::Http(hcm) = config.listeners[0].kind() else { panic!("an HTTP listener") };
    assert_eq!(
        hcm.route_config.virtual_hosts[0].routes[0].action,
        RouteAction::Forward(Box::new(ferry_config::Forward::to(
            "backend",
            Some(std::time::Duration::from_millis(250))
        )))
    );
    let bad = yaml.replace("address: 127.0.0.1, port_value: 9000", "address: backend.local, port_value: 9000");
    assert_eq!(
        from_yaml(&bad).unwrap_err().path,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
    );
}

#[test]
fn the_multi_queue_example_parses_with_a_tcp_listener() {
    let config = from_yaml(MULTI).unwrap();
    let queues: Vec<&[u8]> = config.wasm_services.iter().map(|s| s.plugin.configuration.as_slice()).collect();
    assert_eq!(queues, [&b"http_request_headers"[..], b"http_response_headers", b"tcp_data_hashes"]);
    assert!(config.wasm_services.iter().all(|s| s.singleton && s.plugin.vm.vm_id == "receiver"));
    let ListenerKind::Http(hcm) = config.listeners[0].kind() else { panic!("listener 0 is HTTP") };
    let [HttpFilter::Wasm(http_sender)] = hcm.http_filters.as_slice() else { panic!("one HTTP wasm filter") };
    assert_eq!(http_sender.configuration, b"http");
    let tcp = &config.listeners[1];
    assert_eq!((tcp.name.as_str(), tcp.address.port), ("tcp", 18001));
    let ListenerKind::Tcp(proxy) = tcp.kind() else { panic!("listener 1 is tcp_proxy") };
    assert_eq!(proxy.cluster, "admin");
    assert_eq!(proxy.idle_timeout, Some(std::time::Duration::from_secs(3600)));
    let [tcp_sender] = proxy.filters.as_slice() else { panic!("one network wasm filter") };
    assert_eq!((tcp_sender.vm.vm_id.as_str(), tcp_sender.configuration.as_slice()), ("sender", &b"tcp"[..]));
    assert_eq!(tcp_sender.config_path, "static_resources.listeners[1].filter_chains[0].filters[0].typed_config.config");
}

#[test]
fn tcp_listener_errors_name_the_field_path() {
    let chain = "static_resources.listeners[1].filter_chains[0].filters";
    let cases: Vec<(String, String)> = vec![
        (MULTI.replace("cluster: admin", "cluster: nowhere"), format!("{chain}[1].typed_config.cluster")),
        (
            MULTI.replace("cluster: admin", "cluster: admin\n                idle_timeout: soon"),
            format!("{chain}[1].typed_config.idle_timeout"),
        ),
        (
            MULTI.replace("stat_prefix: ingress\n", "stat_prefix: ingress\n                hash_policy: []\n"),
            format!("{chain}[1].typed_config.hash_policy"),
        ),
        (
            MULTI.replace("cluster: admin", "weighted_clusters: {}"),
            format!("{chain}[1].typed_config.weighted_clusters"),
        ),
        (
            MULTI.replace("- name: envoy.tcp_proxy", "- name: envoy.tcp_proxy_gone").replace(
                "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
            ),
            format!("{chain}[1].typed_config.@type"),
        ),
    ];
    for (yaml, path) in cases {
        let err = from_yaml(&yaml).expect_err(&path);
        assert_eq!(err.path, path, "wrong path for error: {err}");
    }
    // A network Wasm filter alone has nothing to pass data to.
    let start = MULTI.find("            - name: envoy.tcp_proxy").unwrap();
    let end = MULTI.find("  clusters:").unwrap();
    let alone = format!("{}{}", &MULTI[..start], &MULTI[end..]);
    let err = from_yaml(&alone).unwrap_err();
    assert_eq!(err.path, format!("{chain}[0]"));
    assert!(err.message.contains("tcp_proxy"), "{err}");
}

#[test]
fn clusters_choose_http2_through_protocol_options() {
    let cluster = |options: &str| {
        format!(
            "static_resources:\n  clusters:\n  - name: grpc\n{options}    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9000 }} }} }}\n"
        )
    };
    let typed = |config: &str| {
        format!(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        {config}\n"
        )
    };
    let http2 = |yaml: &str| from_yaml(yaml).map(|c| c.clusters[0].http2);
    assert_eq!(http2(&cluster("")), Ok(false));
    assert_eq!(http2(&cluster("    http2_protocol_options: {}\n")), Ok(true));
    assert_eq!(http2(&cluster(&typed("explicit_http_config: { http2_protocol_options: {} }"))), Ok(true));
    assert_eq!(http2(&cluster(&typed("explicit_http_config: { http_protocol_options: {} }"))), Ok(false));
    let at = "static_resources.clusters[0].typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let auto = from_yaml(&cluster(&typed("auto_config: {}"))).unwrap_err();
    assert_eq!(auto.path, format!("{at}.auto_config"));
    assert!(auto.message.contains("needs TLS"), "{auto}");
    assert_eq!(
        from_yaml(&cluster(&typed("explicit_http_config: { http3_protocol_options: {} }"))).unwrap_err().path,
        format!("{at}.explicit_http_config.http3_protocol_options")
    );
}

/// The seed's receiver service with `extra` lines added to its plugin config.
fn receiver_with(extra: &str) -> String {
    let anchor = "    config:\n      vm_config:\n        vm_id: \"receiver\"";
    assert!(SEED.contains(anchor));
    SEED.replace(anchor, &format!("    config:\n{extra}\n      vm_config:\n        vm_id: \"receiver\""))
}

#[test]
fn failure_policies_mean_what_envoy_names_them() {
    let policy = |extra: &str| from_yaml(&receiver_with(extra)).unwrap().wasm_services[0].plugin.failure_policy;
    assert_eq!(policy(""), None);
    assert_eq!(policy("      failure_policy: UNSPECIFIED"), None);
    assert_eq!(policy("      failure_policy: FAIL_CLOSED"), Some(FailurePolicy::FailClosed));
    assert_eq!(policy("      failure_policy: FAIL_OPEN"), Some(FailurePolicy::FailOpen));
    assert_eq!(policy("      fail_open: true"), Some(FailurePolicy::FailOpen));
    let second = Duration::from_secs(1);
    assert_eq!(
        policy("      failure_policy: FAIL_RELOAD"),
        Some(FailurePolicy::FailReload { base_interval: second, max_interval: 10 * second })
    );
    assert_eq!(
        policy(
            "      failure_policy: FAIL_RELOAD\n      reload_config: { backoff: { base_interval: 0.2s, max_interval: 5s } }"
        ),
        Some(FailurePolicy::FailReload { base_interval: second / 5, max_interval: 5 * second })
    );
}

#[test]
fn failure_policy_errors_name_the_field_path() {
    let at = "bootstrap_extensions[0].typed_config.config";
    let cases = [
        ("      failure_policy: FAIL_SOMETIMES", format!("{at}.failure_policy")),
        ("      failure_policy: FAIL_OPEN\n      fail_open: true", format!("{at}.failure_policy")),
        (
            "      failure_policy: FAIL_CLOSED\n      reload_config: { backoff: { base_interval: 1s } }",
            format!("{at}.reload_config"),
        ),
        (
            "      failure_policy: FAIL_RELOAD\n      reload_config: { backoff: { base_interval: soon } }",
            format!("{at}.reload_config.backoff.base_interval"),
        ),
        (
            "      failure_policy: FAIL_RELOAD\n      reload_config: { backoff: { base_interval: 2s, max_interval: 1s } }",
            format!("{at}.reload_config.backoff.max_interval"),
        ),
    ];
    for (extra, path) in cases {
        let error = from_yaml(&receiver_with(extra)).expect_err(&path);
        assert_eq!(error.path, path, "{error}");
    }
}

const RUNTIME: &str = r#"
- name: ferry.wasm_runtime
  typed_config:
    "@type": type.googleapis.com/ferry.config.v1.WasmRuntime
    callback_deadline: 0.05s
    start_deadline: 0s
    memory_limit_bytes: 67108864
    default_failure_policy: FAIL_CLOSED
    hold_failed: { failures: 3, window: 30s }
    plugins:
    - { name: receiver, callback_deadline: 1s }
    shared_queue_defaults: { max_bytes: 1048576 }
    shared_queues:
    - { vm_id: receiver, name: http_headers, max_items: 100, overflow: DROP_OLDEST }
    - { vm_id: other }
"#;

#[test]
fn the_wasm_runtime_extension_sets_limits_policies_and_queue_bounds() {
    let yaml = SEED.replace("bootstrap_extensions:\n", &format!("bootstrap_extensions:{RUNTIME}"));
    let config = from_yaml(&yaml).unwrap();
    assert_eq!(config.wasm_services.len(), 1, "the runtime is not a service");
    let runtime = &config.wasm_runtime;
    assert_eq!(runtime.limits.callback_deadline, Some(Duration::from_millis(50)));
    assert_eq!(runtime.limits.start_deadline, Some(Duration::ZERO));
    assert_eq!(runtime.limits.memory_limit_bytes, Some(64 << 20));
    assert_eq!(runtime.default_failure_policy, Some(FailurePolicy::FailClosed));
    assert_eq!(runtime.hold_failed, Some(HoldFailed { failures: 3, window: Duration::from_secs(30) }));
    assert_eq!(runtime.plugins[0].name, "receiver");
    assert_eq!(runtime.plugins[0].limits.callback_deadline, Some(Duration::from_secs(1)));
    assert_eq!(runtime.queue_defaults.unwrap().max_bytes, Some(1 << 20));
    assert_eq!(runtime.shared_queues[0].name.as_deref(), Some("http_headers"));
    assert_eq!(runtime.shared_queues[0].bounds.overflow, Some(QueueOverflow::DropOldest));
    assert_eq!(runtime.shared_queues[1].name, None);
}

#[test]
fn wasm_runtime_errors_name_the_field_path() {
    let at = "bootstrap_extensions[0].typed_config";
    let with = |from: &str, to: &str| {
        SEED.replace("bootstrap_extensions:\n", &format!("bootstrap_extensions:{}", RUNTIME.replace(from, to)))
    };
    let cases = [
        (with("callback_deadline: 0.05s", "callback_deadline: fast"), format!("{at}.callback_deadline")),
        (with("memory_limit_bytes: 67108864", "memory_limit_bytes: 100"), format!("{at}.memory_limit_bytes")),
        (
            with("default_failure_policy: FAIL_CLOSED", "default_failure_policy: NEVER"),
            format!("{at}.default_failure_policy"),
        ),
        (with("failures: 3", "failures: 0"), format!("{at}.hold_failed.failures")),
        (
            with("{ name: receiver, callback_deadline: 1s }", "{ name: receiver, callback_deadline: 1 }"),
            format!("{at}.plugins[0].callback_deadline"),
        ),
        (with("overflow: DROP_OLDEST", "overflow: DROP_NEWEST"), format!("{at}.shared_queues[0].overflow")),
        (with("start_deadline: 0s", "start_deadlines: 0s"), format!("{at}.start_deadlines")),
    ];
    for (yaml, path) in cases {
        let error = from_yaml(&yaml).expect_err(&path);
        assert_eq!(error.path, path, "{error}");
    }
    let twice = SEED.replace("bootstrap_extensions:\n", &format!("bootstrap_extensions:{RUNTIME}{RUNTIME}"));
    assert_eq!(from_yaml(&twice).unwrap_err().path, "bootstrap_extensions[1]");
}

#[test]
fn two_filter_chains_matching_the_same_connections_are_refused() {
    // The seed's one chain, its lines (the item and what is indented under it), twice.
    let lines: Vec<&str> = SEED.lines().collect();
    let start = lines.iter().position(|l| *l == "        - filters:").unwrap();
    let end = start + 1 + lines[start + 1..].iter().take_while(|l| l.starts_with("          ")).count();
    let chain = lines[start..end].join("\n");
    let twice = SEED.replacen(&chain, &format!("{chain}\n{chain}"), 1);
    let err = from_yaml(&twice).expect_err("two chains with the same (empty) match");
    assert_eq!(err.path, "static_resources.listeners[0].filter_chains[1].filter_chain_match", "{err}");
}

#[test]
fn the_fleet_examples_bridge_one_queue_with_the_defaults() {
    for (yaml, services) in [(FLEET_RECEIVER, 1), (FLEET_SENDER, 0)] {
        let config = from_yaml(yaml).unwrap();
        assert_eq!(config.wasm_services.len(), services);
        let bridge = config.queue_bridge.expect("bridged");
        assert_eq!(bridge.nats.servers, ["nats://127.0.0.1:4222"]);
        assert!(!bridge.ready_requires_broker);
        assert_eq!(bridge.drain_timeout, Duration::from_secs(5));
        let queue = &bridge.queues[0];
        assert_eq!((queue.vm_id.as_str(), queue.name.as_str()), ("receiver", "http_headers"));
        assert_eq!(queue.stream, "FERRY_HTTP_HEADERS");
        assert_eq!(queue.subject, "ferry.queue.receiver.http_headers");
        assert_eq!(queue.durable, "receivers");
        assert_eq!(queue.storage, BridgeStorage::File);
        assert_eq!((queue.fetch_ahead, queue.publish_batch), (256, 256));
        assert_eq!((queue.ack_wait, queue.duplicate_window), (Duration::from_secs(30), Duration::from_secs(120)));
    }
}

#[test]
fn the_queue_bridge_reads_every_field() {
    let yaml = FLEET_RECEIVER.replace(
        "      durable: receivers",
        "      durable: fleet\n      subject: audit.headers\n      storage: MEMORY\n      duplicate_window: 10s\n      \
         fetch_ahead: 16\n      ack_wait: 5s\n      publish_batch: 8\n      publish_timeout: 1s\n      \
         buffer: { max_items: 100, max_bytes: 4096, overflow: DROP_OLDEST }",
    )
    .replace(
        "      servers: [\"nats://127.0.0.1:4222\"]",
        "      servers: [nats-1:4222, \"tls://nats-2:4222\"]\n      user: ferry\n      password: secret\n      \
         connect_timeout: 0.5s\n      name: edge-1\n    ready_requires_broker: true\n    drain_timeout: 30s",
    );
    let bridge = from_yaml(&yaml).unwrap().queue_bridge.unwrap();
    assert_eq!(bridge.nats.servers, ["nats-1:4222", "tls://nats-2:4222"]);
    assert_eq!((bridge.nats.user.as_deref(), bridge.nats.password.as_deref()), (Some("ferry"), Some("secret")));
    assert_eq!(bridge.nats.connect_timeout, Duration::from_millis(500));
    assert_eq!(bridge.nats.name.as_deref(), Some("edge-1"));
    assert!(bridge.ready_requires_broker);
    assert_eq!(bridge.drain_timeout, Duration::from_secs(30));
    let queue = &bridge.queues[0];
    assert_eq!((queue.durable.as_str(), queue.subject.as_str()), ("fleet", "audit.headers"));
    assert_eq!(queue.storage, BridgeStorage::Memory);
    assert_eq!((queue.fetch_ahead, queue.publish_batch), (16, 8));
    assert_eq!(queue.publish_timeout, Duration::from_secs(1));
    assert_eq!(queue.buffer.max_items, Some(100));
    assert_eq!(queue.buffer.overflow, Some(QueueOverflow::DropOldest));
}

#[test]
fn queue_bridge_errors_name_the_field_path() {
    let at = "bootstrap_extensions[1].typed_config";
    let with = |from: &str, to: &str| FLEET_RECEIVER.replace(from, to);
    let cases = [
        (with("stream: FERRY_HTTP_HEADERS", "stream: FERRY.HEADERS"), format!("{at}.queues[0].stream")),
        (with("durable: receivers", "durable: a.b"), format!("{at}.queues[0].durable")),
        (with("durable: receivers", "durable: r\n      subject: a.*"), format!("{at}.queues[0].subject")),
        (with("durable: receivers", "durable: r\n      storage: DISK"), format!("{at}.queues[0].storage")),
        (with("durable: receivers", "durable: r\n      fetch_ahead: 0"), format!("{at}.queues[0].fetch_ahead")),
        (with("durable: receivers", "durable: r\n      ack_wait: 0s"), format!("{at}.queues[0].ack_wait")),
        (
            with("durable: receivers", "durable: r\n      buffer: { overflow: DROP_NEWEST }"),
            format!("{at}.queues[0].buffer.overflow"),
        ),
        (with("durable: receivers", "durable: r\n      fetch: 1"), format!("{at}.queues[0]")),
        (with("\"nats://127.0.0.1:4222\"", "\"http://127.0.0.1:4222\""), format!("{at}.nats.servers[0]")),
        (with("    nats:\n", "    nats:\n      password: x\n"), format!("{at}.nats.user")),
        (
            with("    nats:\n", "    nats:\n      credentials_file: /no/such.creds\n"),
            format!("{at}.nats.credentials_file"),
        ),
        (with("    nats:\n      servers: [\"nats://127.0.0.1:4222\"]\n", ""), format!("{at}.nats")),
    ];
    for (yaml, path) in cases {
        let error = from_yaml(&yaml).expect_err(&path);
        assert!(error.path.starts_with(&path), "{path}: {error}");
    }
    // One queue bridged twice.
    let queue =
        "    - vm_id: receiver\n      name: http_headers\n      stream: FERRY_HTTP_HEADERS\n      durable: receivers\n";
    let twice = FLEET_RECEIVER.replace(queue, &format!("{queue}{}", queue.replace("FERRY_HTTP_HEADERS", "OTHER")));
    assert_eq!(from_yaml(&twice).unwrap_err().path, format!("{at}.queues[1]"));
    // Two queues in one stream.
    let shared =
        FLEET_RECEIVER.replace(queue, &format!("{queue}{}", queue.replace("name: http_headers", "name: other")));
    assert_eq!(from_yaml(&shared).unwrap_err().path, format!("{at}.queues[1].stream"));
}
