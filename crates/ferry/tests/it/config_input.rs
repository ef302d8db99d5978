//! Configuration as Envoy reads it, and hostile configuration refused
//! quickly with a clear error, against the real binary.

use crate::common;

use common::{Ferry, direct_route, get, listener, run_to_end, temp_file};

/// Runs `--mode validate` on `config`; returns the exit code and error output.
fn validate(config: &str) -> (Option<i32>, String) {
    let path = temp_file("envoy.yaml", config);
    let (status, _, stderr) = run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    (status.code(), stderr)
}

#[test]
fn single_values_are_lists_of_one_and_enums_may_be_numbers() {
    // Every repeated field here is written as one object or one string,
    // and the enums as numbers.
    let config = r#"
static_resources:
  listeners:
    name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
      filters:
        name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: 1
          server_header_transformation: 2
          route_config:
            virtual_hosts:
              name: all
              domains: "*"
              routes:
                match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "one of one\n" } }
          http_filters:
            name: envoy.filters.http.router
"#;
    let ferry = Ferry::start(config, &["--concurrency", "1"]);
    let response = get(ferry.address("main"), "/", &[]);
    assert_eq!((response.status, response.text().as_str()), (200, "one of one\n"));
    // Enum values by number: 2 is PASS_THROUGH, so no `server` header.
    assert_eq!(response.header("server"), None);
}

#[test]
fn deeply_nested_yaml_is_refused_with_its_line() {
    // 100,000 nested flow sequences kept the YAML parser busy for 23 s.
    let depth = 100_000;
    let config = format!("node:\n  metadata: {{ deep: {}{} }}\n", "[".repeat(depth), "]".repeat(depth));
    let (code, stderr) = validate(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("(file): nested deeper than 256 levels at line 2"), "{stderr}");
}

#[test]
fn a_fifo_given_as_the_module_is_refused_not_waited_for() {
    let fifo = std::env::temp_dir().join(format!("ferry-fifo-{}.wasm", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let filter = common::wasm_filter("fifo_filter", "fifo", &common::file_code(&fifo));
    let config =
        format!("static_resources:\n  listeners:\n{}", listener("main", 0, &direct_route("/", "ok\n"), &filter));
    let (code, stderr) = validate(&config);
    std::fs::remove_file(&fifo).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("vm_config.code.local.filename"), "{stderr}");
    assert!(stderr.contains("is not a regular file"), "{stderr}");
}

/// A listener answering `/` from a body file, with `extra` route-configuration fields.
fn body_file_config(file: &std::path::Path, extra: &str) -> String {
    let route = format!(
        "              - match: {{ prefix: \"/\" }}\n                direct_response: {{ status: 200, body: {{ filename: {:?} }} }}\n",
        file.display().to_string()
    );
    let listener = listener("main", 0, &route, "");
    let listener = listener.replace("          route_config:\n", &format!("          route_config:\n{extra}"));
    format!("static_resources:\n  listeners:\n{listener}")
}

#[test]
fn direct_response_bodies_are_capped_as_in_envoy() {
    let (code, stderr) = validate(&body_file_config(std::path::Path::new("/dev/zero"), ""));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("direct_response.body.filename: /dev/zero is not a regular file"), "{stderr}");

    // Envoy's default cap is 4096 bytes.
    let body = "x".repeat(5000);
    let file = temp_file("body.txt", &body);
    let (code, stderr) = validate(&body_file_config(&file, ""));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("over the limit of 4096"), "{stderr}");
    let inline = format!("static_resources:\n  listeners:\n{}", listener("main", 0, &direct_route("/", &body), ""));
    let (code, stderr) = validate(&inline);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("5000 bytes, over max_direct_response_body_size_bytes (4096)"), "{stderr}");

    // Raised by the route configuration, the file is served.
    let config = body_file_config(&file, "            max_direct_response_body_size_bytes: 8192\n");
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let response = get(ferry.address("main"), "/", &[]);
    assert_eq!((response.status, response.body.len()), (200, 5000));
}

#[test]
fn two_listeners_of_one_name_are_refused() {
    let one = listener("twin", 0, &direct_route("/", "ok\n"), "");
    let config = format!("static_resources:\n  listeners:\n{one}{one}");
    let (code, stderr) = validate(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("static_resources.listeners[1].name: duplicate listener name \"twin\""), "{stderr}");
}

#[test]
fn config_yaml_alone_or_merged_over_the_file_and_node_flags_win() {
    // Alone: the YAML is the configuration.
    let yaml = format!("static_resources:\n  listeners:\n{}", listener("only", 0, &direct_route("/", "yaml\n"), ""));
    let (status, stdout, stderr) = run_to_end(&["--config-yaml", &yaml, "--mode", "validate"]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("'--config-yaml' OK") || stderr.contains("'--config-yaml' OK"), "{stdout}{stderr}");
    // Over a file: lists append (a second listener), fields replace (node.id), and
    // the command line's node settings win over both.
    let file = format!(
        "node: {{ id: from-file, cluster: file-cluster }}\nadmin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:\n{}",
        listener("first", 0, &direct_route("/", "first\n"), "")
    );
    let overlay = format!(
        "node: {{ id: from-yaml }}\nstatic_resources:\n  listeners:\n{}",
        listener("second", 0, &direct_route("/", "second\n"), "")
    );
    let ferry = Ferry::start(
        &file,
        &["--concurrency", "1", "--config-yaml", &overlay, "--service-cluster", "cli-cluster", "--service-zone", "z1"],
    );
    assert_eq!(get(ferry.address("first"), "/", &[]).text(), "first\n");
    assert_eq!(get(ferry.address("second"), "/", &[]).text(), "second\n");
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin").port()));
    let info: serde_json::Value = serde_json::from_slice(&get(admin, "/server_info", &[]).body).unwrap();
    assert_eq!(info["node"]["id"], "from-yaml", "{info}");
    assert_eq!(info["node"]["cluster"], "cli-cluster", "{info}");
}
