//! Compilation modes against the real binary: a large Go plugin serves on
//! baseline code while the optimising compiler works, then moves to its
//! code without failing a stream; baseline code keeps the callback
//! deadline; the mode is set on the command line or in the configuration.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Ferry, cluster, direct_route, file_code, get, go_plugin, listener, plugin, run_to_end, temp_file};
use http_body_util::Full;
use tokio::sync::Notify;

/// The Go test plugin (2.5 MB of Wasm) as an HTTP filter: it echoes each
/// request's `:path`, kept in the instance's memory per context, as the
/// response header `x-go-plugin`.
fn go_filter() -> String {
    format!(
        r#"          - name: go
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: go
                vm_config:
                  vm_id: go
                  code: {}
"#,
        file_code(&go_plugin("go_hello.wasm"))
    )
}

fn config(bootstrap: &str, listeners: &str, clusters: &str) -> String {
    format!(
        "{bootstrap}admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:\n{listeners}{clusters}"
    )
}

fn admin(ferry: &Ferry, path: &str) -> String {
    let address = ferry.admin.expect("an admin address");
    get(SocketAddr::from(([127, 0, 0, 1], address.port())), path, &[]).text()
}

/// A hyper upstream answering 200; `/slow` waits until `release` is notified.
fn upstream(release: Arc<Notify>) -> SocketAddr {
    common::hyper_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let release = release.clone();
        async move {
            if request.uri().path() == "/slow" {
                release.notified().await;
            }
            http::Response::new(Full::new(Bytes::from_static(b"upstream")))
        }
    })
}

fn proxied_listener(filters: &str) -> String {
    listener("main", 0, "              - match: { prefix: \"/\" }\n                route: { cluster: up }\n", filters)
}

#[test]
fn a_large_plugin_serves_on_baseline_code_then_moves_to_optimised_code_without_failing_a_stream() {
    let release = Arc::new(Notify::new());
    let up = upstream(release.clone());
    let config = config("", &proxied_listener(&go_filter()), &format!("  clusters:\n{}", cluster("up", up)));
    // No module cache: the optimising compiler has the whole module to
    // compile, far longer than tiered compilation waits for it.
    let ferry = Ferry::start(&config, &["--concurrency", "1", "--no-wasm-cache"]);
    ferry.wait_for("starting on baseline code", Duration::from_secs(1));
    assert!(
        admin(&ferry, "/plugins")
            .contains("go thread=worker_0 vm_id=go policy=FAIL_RELOAD state=running code=baseline")
    );

    // A stream whose response comes after the move: its request headers
    // run on baseline code.
    let address = ferry.address("main");
    let slow = std::thread::spawn(move || get(address, "/slow", &[]));
    ferry.wait_for("wasm log go go: go plugin saw path /slow", Duration::from_secs(10));

    ferry.wait_for("optimised code ready", Duration::from_secs(120));
    let after = get(address, "/after", &[]);
    assert_eq!((after.status, after.header("x-go-plugin")), (200, Some("/after")));
    ferry.wait_for("moved to optimised code; the baseline instance finishes its streams", Duration::from_secs(5));
    assert!(
        admin(&ferry, "/plugins")
            .contains("go thread=worker_0 vm_id=go policy=FAIL_RELOAD state=running code=optimized")
    );

    // The slow stream ends in the instance that saw its request.
    release.notify_one();
    let slow = slow.join().unwrap();
    assert_eq!((slow.status, slow.header("x-go-plugin")), (200, Some("/slow")), "its context's state was kept");
    assert_eq!(ferry.stop().code(), Some(0));
}

#[test]
fn baseline_code_is_interrupted_at_the_callback_deadline() {
    let filter = format!(
        r#"          - name: hostile
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: hostile
                vm_config:
                  vm_id: hostile
                  code: {}
"#,
        file_code(&plugin("hostile_plugin.wasm"))
    );
    let ferry = Ferry::start(
        &config("", &listener("main", 0, &direct_route("/", "ok\n"), &filter), ""),
        &["--concurrency", "1", "--wasm-compilation", "baseline", "--wasm-callback-deadline-ms", "200"],
    );
    assert!(admin(&ferry, "/plugins").contains("code=baseline"));
    let started = Instant::now();
    assert_eq!(get(ferry.address("main"), "/loop", &[]).status, 503);
    // 200 ms of CPU: well within 2 s of wall clock even on a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(2), "failed after {:?}", started.elapsed());
    ferry.wait_for("deadline of 200ms of CPU time", Duration::from_secs(5));
    // FAIL_RELOAD: a new instance (on baseline code again) after the 1 s backoff.
    ferry.wait_for("a new VM instance started", Duration::from_secs(5));
    assert_eq!(get(ferry.address("main"), "/", &[]).status, 200, "served by a new instance");
    assert!(admin(&ferry, "/plugins").contains("state=running code=baseline"));
}

#[test]
fn the_configuration_sets_the_compilation_and_the_command_line_overrides_it() {
    let runtime = r#"bootstrap_extensions:
- name: ferry.wasm_runtime
  typed_config:
    "@type": type.googleapis.com/ferry.config.v1.WasmRuntime
    compilation: BASELINE
"#;
    let config = config(runtime, &listener("main", 0, &direct_route("/", "ok\n"), &go_filter()), "");
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    assert!(admin(&ferry, "/plugins").contains("code=baseline"));
    let response = get(ferry.address("main"), "/x", &[]);
    assert_eq!((response.status, response.header("x-go-plugin")), (200, Some("/x")));
    drop(ferry);

    let ferry = Ferry::start(&config, &["--concurrency", "1", "--wasm-compilation", "optimizing"]);
    assert!(admin(&ferry, "/plugins").contains("code=optimized"));
    assert!(!ferry.lines().iter().any(|l| l.contains("baseline code")), "no tiering");
}

#[test]
fn an_unknown_compilation_names_its_field() {
    let config = r#"bootstrap_extensions:
- name: ferry.wasm_runtime
  typed_config:
    "@type": type.googleapis.com/ferry.config.v1.WasmRuntime
    compilation: FAST
static_resources: {}
"#;
    let path = temp_file("envoy.yaml", config);
    let (status, _, stderr) = run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    assert!(!status.success());
    assert!(
        stderr.contains("bootstrap_extensions[0].typed_config.compilation")
            && stderr.contains("unknown compilation FAST (expected TIERED, OPTIMIZING or BASELINE)"),
        "{stderr}"
    );
}
