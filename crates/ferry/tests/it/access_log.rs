//! Access logs, against the real binary: the HTTP connection manager's in
//! Envoy's default format to a file, JSON and custom text formats on
//! stderr, on the fast path (no filter) and through a Wasm filter; and
//! `tcp_proxy`'s, one line per connection.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Ferry, cluster, echo_server, request, temp_file};

/// A listener with routes `/ok` (direct 200 `fine`), `/up` (to an echo
/// upstream) and `/down` (to a closed port), `access_log` items `logs`,
/// and, with `filter`, a Wasm filter before the router.
fn config(logs: &str, filter: bool) -> String {
    config_with_filters(logs, &if filter { common::noop_filter() } else { String::new() })
}

/// As [`config`], with `filter` (HTTP filters' YAML) before the router.
fn config_with_filters(logs: &str, filter: &str) -> String {
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
          access_log:
{logs}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/ok" }}
                direct_response: {{ status: 200, body: {{ inline_string: "fine" }} }}
              - match: {{ prefix: "/up" }}
                route: {{ cluster: up }}
              - match: {{ prefix: "/down" }}
                route: {{ cluster: down }}
          http_filters:
{filter}          - name: envoy.filters.http.router
  clusters:
{}{}"#,
        cluster("up", echo_server()),
        cluster("down", SocketAddr::from(([127, 0, 0, 1], common::free_port()))),
    )
}

/// A file logger with a text format and an access-log filter.
fn filtered_file_log(path: &std::path::Path, format: &str, filter: &str) -> String {
    format!(
        "          - name: envoy.access_loggers.file\n            filter: {filter}\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {:?}\n              log_format: {{ text_format: {format:?} }}\n",
        path.display().to_string()
    )
}

#[test]
fn filters_choose_which_requests_are_logged() {
    let path = temp_file("filtered.log", "");
    let filter = "{ or_filter: { filters: [ { status_code_filter: { comparison: { op: GE, value: { default_value: 400, runtime_key: unused } } } }, { header_filter: { header: { name: X-Debug, present_match: true } } } ] } }";
    let logs = filtered_file_log(&path, "%RESPONSE_CODE% %REQ(:PATH)% %REQ(X-DEBUG)%\n", filter);
    let ferry = Ferry::start(&config(&logs, false), &["--concurrency", "1"]);
    let main = ferry.address("main");
    assert_eq!(request(main, "GET", "/ok", &[], b"").status, 200);
    assert_eq!(request(main, "GET", "/nowhere", &[], b"").status, 404);
    assert_eq!(request(main, "GET", "/ok/debug", &[("x-debug", "yes")], b"").status, 200);
    assert_eq!(request(main, "GET", "/down", &[], b"").status, 503);
    assert!(ferry.stop().success());
    let log = std::fs::read_to_string(&path).unwrap();
    assert_eq!(log, "404 /nowhere -\n200 /ok/debug yes\n503 /down -\n");
}

#[test]
fn a_response_flag_filter_logs_only_failed_upstreams() {
    let path = temp_file("flags.log", "");
    let logs = filtered_file_log(&path, "%RESPONSE_FLAGS% %REQ(:PATH)%\n", "{ response_flag_filter: { flags: [UF] } }");
    let ferry = Ferry::start(&config(&logs, false), &["--concurrency", "1"]);
    let main = ferry.address("main");
    assert_eq!(request(main, "GET", "/nowhere", &[], b"").status, 404);
    assert_eq!(request(main, "GET", "/down", &[], b"").status, 503);
    assert_eq!(request(main, "GET", "/up", &[], b"").status, 200);
    assert!(ferry.stop().success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "UF /down\n", "NR (no route) is not UF");
}

#[test]
fn start_time_formats_and_filter_state_set_by_a_plugin() {
    let path = temp_file("state.log", "");
    let format = "%START_TIME(%Y-%m-%d %H:%M:%S.%3f %s)% [%FILTER_STATE(wasm.rw)%] [%FILTER_STATE(wasm.rw:PLAIN)%] [%FILTER_STATE(wasm.none)%]\n";
    let logs = filtered_file_log(
        &path,
        format,
        "{ status_code_filter: { comparison: { value: { default_value: 200, runtime_key: k } } } }",
    );
    let plugin =
        common::wasm_filter("attributes", "attributes", &common::file_code(&common::plugin("attributes_plugin.wasm")));
    let ferry = Ferry::start(&config_with_filters(&logs, &plugin), &["--concurrency", "1"]);
    // The plugin sets the property `rw` and answers 200 itself.
    let response = request(ferry.address("main"), "GET", "/ok", &[("x-set", "rw=blue")], b"");
    assert_eq!(response.status, 200);
    assert!(ferry.stop().success());
    let log = std::fs::read_to_string(&path).unwrap();
    let line =
        regex::Regex::new(r#"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (\d+) \["blue"\] \[blue\] \[-\]\n$"#).unwrap();
    let seconds: u64 = line.captures(&log).unwrap_or_else(|| panic!("{log:?}"))[1].parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now - seconds < 60, "%s is the Unix time: {seconds} vs {now}");
}

fn file_log(path: &std::path::Path) -> String {
    format!(
        "          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {:?}\n",
        path.display().to_string()
    )
}

#[test]
fn envoys_default_format_to_a_file_on_both_paths() {
    for filter in [false, true] {
        let path = temp_file("access.log", "");
        let ferry = Ferry::start(&config(&file_log(&path), filter), &["--concurrency", "1"]);
        let main = ferry.address("main");
        let agent = ("user-agent", "curl/8.5.0");
        assert_eq!(request(main, "GET", "/ok", &[agent], b"").status, 200);
        assert_eq!(request(main, "POST", "/up?x=1", &[agent, ("x-request-id", "req-7")], b"hello").status, 200);
        assert_eq!(request(main, "GET", "/nowhere", &[agent], b"").status, 404);
        assert_eq!(request(main, "GET", "/down", &[agent], b"").status, 503);
        // SIGTERM: what the logger holds is written before exit.
        assert!(ferry.stop().success());
        let log = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "filter {filter}:\n{log}");
        let timestamp = r#"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "#;
        let host = format!("localhost:{}", main.port());
        let expected = [
            format!(r#""GET /ok HTTP/1.1" 200 - 0 4 \d+ - "-" "curl/8.5.0" "[0-9a-f-]{{36}}" "{host}" "-"$"#),
            format!(
                r#""POST /up\?x=1 HTTP/1.1" 200 - 5 11 \d+ \d+ "-" "curl/8.5.0" "req-7" "{host}" "127\.0\.0\.1:\d+"$"#
            ),
            format!(r#""GET /nowhere HTTP/1.1" 404 NR 0 0 \d+ - "-" "curl/8.5.0" "[0-9a-f-]{{36}}" "{host}" "-"$"#),
            format!(r#""GET /down HTTP/1.1" 503 UF 0 \d+ \d+ - "-" "curl/8.5.0" "[0-9a-f-]{{36}}" "{host}" "-"$"#),
        ];
        for (line, pattern) in lines.iter().zip(expected) {
            let pattern = regex::Regex::new(&format!("{timestamp}{pattern}")).unwrap();
            assert!(pattern.is_match(line), "filter {filter}: {line}\n  !~ {pattern}");
        }
    }
}

#[test]
fn json_and_custom_text_formats_on_stderr() {
    let logs = r#"          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  path: "%REQ(:PATH)%"
                  agent: "%REQ(USER-AGENT):4%"
                  received: "%BYTES_RECEIVED%"
                  upstream: "%UPSTREAM_CLUSTER%"
                  missing: "%REQ(X-NOTHING)%"
                  line: "%REQ(:METHOD)% %RESPONSE_CODE%"
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                text_format_source: { inline_string: "custom %REQ(:METHOD)% [%REQ(X-NOTHING)%] %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n" }
                omit_empty_values: true
"#;
    for filter in [false, true] {
        let ferry = Ferry::start(&config(logs, filter), &["--concurrency", "1"]);
        request(ferry.address("main"), "POST", "/up", &[("user-agent", "curl/8.5.0")], b"hello");
        let line = ferry.wait_for("\"code\":", Duration::from_secs(10));
        let json: serde_json::Value = serde_json::from_str(&line[line.find('{').unwrap()..]).expect(&line);
        assert_eq!(json["code"], 200, "numbers stay numbers: {line}");
        assert_eq!(json["path"], "/up");
        assert_eq!(json["agent"], "curl");
        assert_eq!(json["received"], 5);
        assert_eq!(json["upstream"], "up");
        assert_eq!(json["missing"], serde_json::Value::Null);
        assert_eq!(json["line"], "POST 200");
        ferry.wait_for("custom POST [] 127.0.0.1", Duration::from_secs(10));
    }
}

#[test]
fn a_bad_access_log_names_its_field() {
    let bad = r#"          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: { text_format: "%RESPONSE_CODE% %NO_SUCH_THING%\n" }
"#;
    let path = temp_file("envoy.yaml", &config(bad, false));
    let (status, _, stderr) = common::run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("access_log[0].typed_config.log_format.text_format"), "{stderr}");
    assert!(stderr.contains("%NO_SUCH_THING% is not supported"), "{stderr}");
}

/// A `tcp_proxy` listener to `cluster` with a stderr access log.
fn tcp_proxy_listener(name: &str, cluster: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: {cluster}
          access_log:
            name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                text_format: "tcp {name} %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %RESPONSE_FLAGS% %REQ(:METHOD)% %RESPONSE_CODE%\n"
"#
    )
}

#[test]
fn tcp_proxy_connections_are_logged() {
    use std::io::{Read as _, Write as _};
    let echo = common::tcp_echo_server();
    let config = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        tcp_proxy_listener("relay", "echo"),
        tcp_proxy_listener("broken", "down"),
        cluster("echo", echo),
        cluster("down", SocketAddr::from(([127, 0, 0, 1], common::free_port()))),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let mut client = std::net::TcpStream::connect(ferry.address("relay")).unwrap();
    client.write_all(b"hello").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"hello");
    let line = ferry.wait_for("tcp relay ", Duration::from_secs(10));
    let pattern = regex::Regex::new(r"tcp relay 5 5 echo 127\.0\.0\.1:\d+ - - 0$").unwrap();
    assert!(pattern.is_match(&line), "{line}");

    let mut failed = std::net::TcpStream::connect(ferry.address("broken")).unwrap();
    let mut nothing = Vec::new();
    let _ = failed.read_to_end(&mut nothing);
    let line = ferry.wait_for("tcp broken ", Duration::from_secs(10));
    assert!(line.ends_with("tcp broken 0 0 down - UF - 0"), "{line}");
}

/// A Wasm access logger: in `proxy_on_log` on its root context it logs the
/// request's `:path`, then the response's `:status`.
fn wasm_logger() -> String {
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) ":path")
  (data (i32.const 120) ":status")
  (func (export "proxy_abi_version_0_2_1"))
  {}
  (func (export "proxy_on_log") (param $id i32)
    (drop (call $get (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 200) (i32.const 204)))
    (drop (call $log (i32.const 2) (i32.load (i32.const 200)) (i32.load (i32.const 204))))
    (drop (call $get (i32.const 2) (i32.const 120) (i32.const 7) (i32.const 200) (i32.const 204)))
    (drop (call $log (i32.const 2) (i32.load (i32.const 200)) (i32.load (i32.const 204))))))"#,
        common::wat_bump_allocator(4096)
    )
}

#[test]
fn the_wasm_access_logger_reads_the_stream_in_its_root_context() {
    let logs = format!(
        r#"          - name: envoy.access_loggers.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog
              config:
                name: wasm_logger
                root_id: logger
                vm_config: {{ vm_id: logger, code: {{ local: {{ inline_string: {:?} }} }} }}
"#,
        wasm_logger()
    );
    for filter in [false, true] {
        let ferry = Ferry::start(&config(&logs, filter), &["--concurrency", "1"]);
        assert_eq!(request(ferry.address("main"), "GET", "/ok/first", &[], b"").status, 200);
        assert_eq!(request(ferry.address("main"), "GET", "/nowhere", &[], b"").status, 404);
        ferry.wait_for_count("wasm log logger", 4, Duration::from_secs(10));
        let lines = ferry.lines();
        let logged: Vec<&String> = lines.iter().filter(|l| l.contains("wasm log logger")).collect();
        let messages: Vec<&str> = logged.iter().map(|l| l.rsplit(": ").next().unwrap()).collect();
        assert_eq!(messages, ["/ok/first", "200", "/nowhere", "404"], "filter {filter}: {logged:?}");
    }
}

#[test]
fn response_code_details_say_why_the_response_is_what_it_is() {
    for filter in [false, true] {
        let path = temp_file("details.log", "");
        let format = "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n";
        let log = format!(
            "          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {:?}\n              log_format: {{ text_format: {format:?} }}\n",
            path.display().to_string()
        );
        let ferry = Ferry::start(&config(&log, filter), &["--concurrency", "1"]);
        let main = ferry.address("main");
        for path in ["/ok", "/up", "/nowhere", "/down"] {
            request(main, "GET", path, &[], b"");
        }
        assert!(ferry.stop().success());
        let log = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "200 direct_response",
                "200 via_upstream",
                "404 route_not_found",
                "503 upstream_reset_before_response_started{remote_connection_failure}",
            ],
            "filter {filter}"
        );
    }
}
