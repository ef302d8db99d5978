//! Bad input and failing plugins, against the real binary: clear errors for
//! bad configuration and modules, and a trapping plugin fails only its own
//! request.

use crate::common;

use std::time::Duration;

use common::{
    Ferry, direct_route, example_config, file_code, get, listener, plugin, run_to_end, temp_file, wasm_filter,
};

/// A listener on a free port with one Wasm filter, `test_filter`, running `code`.
fn filter_config(code: &str) -> String {
    let filter = wasm_filter("test_filter", "test", code);
    format!("static_resources:\n  listeners:\n{}", listener("main", 0, &direct_route("/", "ok\n"), &filter))
}

fn inline_code(wat: &str) -> String {
    format!("{{ local: {{ inline_string: {wat:?} }} }}")
}

/// Start-up with `config` fails; returns the error output.
fn start_fails(config: &str) -> String {
    let path = temp_file("bad.yaml", config);
    let (status, _, stderr) = run_to_end(&["-c", path.to_str().unwrap(), "--concurrency", "1"]);
    assert_eq!(status.code(), Some(1), "ferry should exit with 1; stderr:\n{stderr}");
    stderr
}

#[test]
fn a_trapping_plugin_fails_its_own_request_and_a_new_instance_serves_the_next_one() {
    // FAIL_RELOAD, with a backoff short enough for the next request.
    let config = filter_config(&file_code(&plugin("trap_plugin.wasm"))).replace(
        "                name: test_filter\n",
        "                name: test_filter\n                failure_policy: FAIL_RELOAD\n                reload_config: { backoff: { base_interval: 0.05s } }\n",
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let address = ferry.address("main");
    let ok = get(address, "/", &[]);
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"));
    assert_eq!(ok.header("x-trap-plugin"), Some("1"));

    let failed = get(address, "/trap", &[]);
    assert_eq!(failed.status, 503, "fail closed");
    assert!(failed.body.is_empty());
    let error = ferry.wait_for("Function: proxy_on_request_headers failed", Duration::from_secs(5));
    assert!(error.contains("[error]") && error.contains("plugin 'test_filter'"), "{error}");
    assert!(error.contains("unreachable"), "the trap is named: {error}");

    // After the backoff, the next request runs on a fresh instance of the plugin.
    ferry.wait_for_count("a new VM instance started", 1, Duration::from_secs(5));
    let next = get(address, "/", &[]);
    assert_eq!(next.status, 200);
    assert_eq!(next.header("x-trap-plugin"), Some("1"), "a new VM instance counts from 1 again");
    ferry.wait_for_count("trap plugin started", 2, Duration::from_secs(5));

    let failed = get(address, "/trap-response", &[]);
    assert_eq!(failed.status, 503);
    ferry.wait_for("Function: proxy_on_response_headers failed", Duration::from_secs(5));
    // A second failure within a minute: the backoff doubles.
    ferry.wait_for_count("a new VM instance started", 2, Duration::from_secs(5));
    assert_eq!(get(address, "/", &[]).status, 200);
    assert_eq!(ferry.stop().code(), Some(0));
}

#[test]
fn fail_open_skips_a_trapping_plugin() {
    let config = filter_config(&file_code(&plugin("trap_plugin.wasm"))).replace(
        "                name: test_filter\n",
        "                name: test_filter\n                fail_open: true\n",
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let response = get(ferry.address("main"), "/trap", &[]);
    assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));
}

#[test]
fn a_bad_field_is_named_by_its_path() {
    let config =
        example_config().replace("port_value: 0\n      filter_chains", "port_value: eighteen\n      filter_chains");
    let stderr = start_fails(&config);
    assert!(stderr.contains("static_resources.listeners[0].address.socket_address.port_value"), "{stderr}");
    let unknown = example_config()
        .replace("stat_prefix: ingress_http", "stat_prefix: ingress_http\n                use_magic: true");
    let stderr = start_fails(&unknown);
    assert!(stderr.contains("typed_config.use_magic") || stderr.contains("unknown field `use_magic`"), "{stderr}");
}

#[test]
fn a_missing_module_names_the_file_and_the_field() {
    let config = filter_config("{ local: { filename: ./no/such/plugin.wasm } }");
    let stderr = start_fails(&config);
    assert!(stderr.contains("./no/such/plugin.wasm"), "{stderr}");
    assert!(stderr.contains("vm_config.code.local.filename"), "{stderr}");
}

#[test]
fn bad_modules_name_the_plugin_and_the_reason() {
    let cases = [
        ("not wasm at all", "not a valid Wasm module"),
        (
            r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_3_0")) (func (export "malloc") (param i32) (result i32) i32.const 8))"#,
            "unsupported Proxy-Wasm ABI version",
        ),
        (
            r#"(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) i32.const 8))"#,
            "missing Proxy-Wasm ABI version",
        ),
        (
            r#"(module (import "env" "proxy_teleport" (func (param i32) (result i32))) (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")) (func (export "malloc") (param i32) (result i32) i32.const 8))"#,
            "proxy_teleport",
        ),
        (r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#, "no allocator"),
    ];
    for (code, reason) in cases {
        let stderr = start_fails(&filter_config(&inline_code(code)));
        assert!(stderr.contains("plugin 'test_filter'"), "names the plugin: {stderr}");
        assert!(stderr.contains(reason), "expected {reason:?} in: {stderr}");
    }
}

#[test]
fn a_plugin_refusing_to_start_stops_start_up() {
    let wat = r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")) (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 8) (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 0))"#;
    let stderr = start_fails(&filter_config(&inline_code(wat)));
    assert!(stderr.contains("plugin 'test_filter' (vm_id 'test') failed to start"), "{stderr}");
    assert!(stderr.contains("proxy_on_vm_start"), "{stderr}");
}

#[test]
fn validate_mode_checks_config_and_modules_without_serving() {
    let path = temp_file("envoy.yaml", &example_config());
    let (status, stdout, stderr) = run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), format!("configuration '{}' OK", path.display()));
    let bad = temp_file("bad.yaml", &filter_config("{ local: { filename: ./missing.wasm } }"));
    let (status, _, _) = run_to_end(&["-c", bad.to_str().unwrap(), "--mode", "validate"]);
    assert_eq!(status.code(), Some(1));
}

#[test]
fn an_unknown_route_is_404_and_the_server_keeps_serving() {
    let config = example_config().replace("prefix: \"/\"", "path: \"/only\"");
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let address = ferry.address("main");
    assert_eq!(get(address, "/elsewhere", &[]).status, 404);
    assert_eq!(get(address, "/only", &[]).status, 200);
    let admin = ferry.admin.expect("admin address");
    let ready = get(std::net::SocketAddr::from(([127, 0, 0, 1], admin.port())), "/ready", &[]);
    assert_eq!((ready.status, ready.text().as_str()), (200, "LIVE\n"));
}
