//! The admin endpoint as operators and their tools use Envoy's, against the
//! real binary: server info, listeners, clusters, stats in text, JSON and
//! Prometheus form (parsed by a Prometheus text-format parser), health
//! check failing and `/quitquitquit`.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Ferry, Response, direct_route, listener, request};
use prometheus_parse::{Scrape, Value};

/// A plugin that defines metrics when its VM starts: a counter incremented
/// by 3, a histogram of 7 and 40, and a counter whose name tries to forge a
/// `/stats` line with a newline.
const METRICS_PLUGIN: &str = r#"(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "requests.total")
  (data (i32.const 200) "latency_ms")
  (data (i32.const 300) "evil\nwasmcustom.forged: 999")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 14) (i32.const 16)))
    (drop (call $increment (i32.load (i32.const 16)) (i64.const 3)))
    (drop (call $define (i32.const 2) (i32.const 200) (i32.const 10) (i32.const 20)))
    (drop (call $record (i32.load (i32.const 20)) (i64.const 7)))
    (drop (call $record (i32.load (i32.const 20)) (i64.const 40)))
    (drop (call $define (i32.const 0) (i32.const 300) (i32.const 27) (i32.const 24)))
    (drop (call $increment (i32.load (i32.const 24)) (i64.const 1)))
    i32.const 1))"#;

fn start() -> (Ferry, SocketAddr) {
    start_with("")
}

/// [`start`] with `top` (bootstrap fields) at the top of the configuration.
fn start_with(top: &str) -> (Ferry, SocketAddr) {
    let code = format!("{{ local: {{ inline_string: {METRICS_PLUGIN:?} }} }}");
    let filter = common::wasm_filter("metrics", "metrics", &code);
    let config = format!(
        "{top}node: {{ id: node-7, cluster: edge }}\nadmin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n\
         static_resources:\n  listeners:\n{}  clusters:\n{}",
        listener("main", 0, &direct_route("/", "ok\n"), &filter),
        common::cluster("backend", SocketAddr::from(([127, 0, 0, 1], 9))),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin address").port()));
    (ferry, admin)
}

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    request(admin, "GET", path, &[], b"")
}

fn json(response: &Response) -> serde_json::Value {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_slice(&response.body).expect("JSON")
}

#[test]
fn server_info_listeners_and_clusters() {
    let (ferry, admin) = start();
    let info = json(&admin_get(admin, "/server_info"));
    assert_eq!(info["state"], "LIVE");
    assert!(info["version"].as_str().unwrap().starts_with("ferry/"), "{info}");
    assert_eq!(info["node"]["id"], "node-7");
    assert_eq!(info["node"]["cluster"], "edge");
    assert_eq!(info["command_line_options"]["concurrency"], 1);
    assert!(info["uptime_current_epoch"].as_str().unwrap().ends_with('s'), "{info}");

    let port = ferry.address("main").port();
    let listeners = admin_get(admin, "/listeners").text();
    assert_eq!(listeners, format!("main::127.0.0.1:{port}\n"));
    let listeners = json(&admin_get(admin, "/listeners?format=json"));
    let status = &listeners["listener_statuses"][0];
    assert_eq!(status["name"], "main");
    assert_eq!(status["local_address"]["socket_address"]["port_value"], port);

    let dump = json(&admin_get(admin, "/config_dump"));
    let configs = dump["configs"].as_array().unwrap();
    let of_type = |name: &str| {
        configs.iter().find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{name}")).expect(name)
    };
    assert_eq!(of_type("BootstrapConfigDump")["bootstrap"]["node"]["id"], "node-7");
    assert_eq!(of_type("ListenersConfigDump")["static_listeners"][0]["listener"]["name"], "main");
    assert_eq!(of_type("ClustersConfigDump")["static_clusters"][0]["cluster"]["name"], "backend");

    let clusters = admin_get(admin, "/clusters").text();
    assert!(clusters.lines().any(|l| l == "backend::127.0.0.1:9::health_flags::healthy"), "{clusters}");
    let clusters = json(&admin_get(admin, "/clusters?format=json"));
    let backend = &clusters["cluster_statuses"][0];
    assert_eq!(backend["name"], "backend");
    assert_eq!(backend["host_statuses"][0]["address"]["socket_address"]["port_value"], 9);
    assert_eq!(backend["host_statuses"][0]["health_status"]["eds_health_status"], "HEALTHY");
}

#[test]
fn stats_as_text_json_and_filtered() {
    let (_ferry, admin) = start();
    let text = admin_get(admin, "/stats").text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"wasmcustom.requests.total: 3"), "{text}");
    assert!(lines.contains(&"server.live: 1"), "{text}");
    // The newline in the plugin's metric name cannot start a line of its own.
    assert!(!lines.iter().any(|l| l.starts_with("wasmcustom.forged")), "{text}");
    assert!(lines.contains(&"wasmcustom.evil_wasmcustom.forged__999: 1"), "{text}");
    let histogram = lines.iter().find(|l| l.starts_with("wasmcustom.latency_ms: ")).expect(&text);
    assert!(histogram.contains("P0(7,7)") && histogram.contains("P100(40,40)"), "{histogram}");

    let stats = json(&admin_get(admin, "/stats?format=json"));
    let items = stats["stats"].as_array().unwrap();
    let counter = items.iter().find(|s| s["name"] == "wasmcustom.requests.total").expect("the counter");
    assert_eq!(counter["value"], 3);
    let histograms = &items.iter().find(|s| s.get("histograms").is_some()).expect("histograms")["histograms"];
    assert_eq!(histograms["computed_quantiles"][0]["name"], "wasmcustom.latency_ms");
    assert_eq!(histograms["supported_quantiles"].as_array().unwrap().len(), 10);

    let filtered = admin_get(admin, "/stats?filter=requests%5C.total").text();
    assert_eq!(filtered, "wasmcustom.requests.total: 3\n");
    let used = admin_get(admin, "/stats?usedonly").text();
    assert!(used.contains("wasmcustom.requests.total: 3"), "{used}");
    assert!(!used.contains("ferry.shared_queue.dropped: 0"), "{used}");
    assert!(text.contains("ferry.shared_queue.dropped: 0"), "{text}");
    assert_eq!(admin_get(admin, "/stats?filter=(").status, 400);

    // Counters go back to zero; histograms stay.
    assert_eq!(request(admin, "POST", "/reset_counters", &[], b"").status, 200);
    let text = admin_get(admin, "/stats").text();
    assert!(text.lines().any(|l| l == "wasmcustom.requests.total: 0"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("wasmcustom.latency_ms: P0(7,7)")), "{text}");
}

#[test]
fn prometheus_scrape_parses_with_envoys_names() {
    let (_ferry, admin) = start();
    let response = admin_get(admin, "/stats/prometheus");
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition");
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    let sample = |name: &str| {
        scrape.samples.iter().find(|s| s.metric == name).unwrap_or_else(|| panic!("{name} not in {names:?}\n{text}"))
    };
    // Plugin metrics lose the `wasmcustom.` namespace and get no `envoy_` prefix.
    assert_eq!(sample("requests_total").value, Value::Counter(3.0));
    assert_eq!(sample("evil_wasmcustom_forged__999").value, Value::Counter(1.0));
    let Value::Histogram(buckets) = &sample("latency_ms").value else { panic!("a histogram:\n{text}") };
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
    assert_eq!((at(5.0), at(10.0), at(50.0), at(f64::INFINITY)), (Some(0.0), Some(1.0), Some(2.0), Some(2.0)));
    assert_eq!(sample("latency_ms_sum").value, Value::Untyped(47.0));
    assert_eq!(sample("latency_ms_count").value, Value::Untyped(2.0));
    // ferry's own stats are Envoy-named, with tags as labels.
    assert_eq!(sample("envoy_server_live").value, Value::Gauge(1.0));
    assert_eq!(sample("envoy_ferry_shared_queue_enqueued").value, Value::Counter(0.0));
    // The same through /stats?format=prometheus (but for the gauges that
    // move on their own: memory and uptime).
    let steady = |text: &str| -> String {
        text.lines().filter(|l| !l.contains("server_memory_") && !l.contains("server_uptime")).collect()
    };
    assert_eq!(steady(&admin_get(admin, "/stats?format=prometheus").text()), steady(&text));
}

#[test]
fn histogram_bucket_settings_give_a_plugin_histogram_its_buckets() {
    // Written as one object, not a list, as a production gateway's template does.
    let (_ferry, admin) = start_with(
        "stats_config:\n  histogram_bucket_settings:\n    match: { prefix: wasmcustom.latency }\n    buckets: [100, 8, 30]\n",
    );
    let text = admin_get(admin, "/stats/prometheus").text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition");
    let latency = scrape.samples.iter().find(|s| s.metric == "latency_ms").expect(&text);
    let Value::Histogram(buckets) = &latency.value else { panic!("a histogram:\n{text}") };
    let bounds: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
    // 7 and 40 recorded: the bounds given (in order), then +Inf.
    assert_eq!(bounds, [(8.0, 1.0), (30.0, 1.0), (100.0, 2.0), (f64::INFINITY, 2.0)]);
}

#[test]
fn health_check_failing_and_quitquitquit_take_post_only() {
    let (mut ferry, admin) = start();
    for path in ["/healthcheck/fail", "/healthcheck/ok", "/quitquitquit"] {
        assert_eq!(admin_get(admin, path).status, 405, "{path}");
    }
    assert_eq!(request(admin, "POST", "/healthcheck/fail", &[], b"").status, 200);
    let ready = admin_get(admin, "/ready");
    assert_eq!((ready.status, ready.text().as_str()), (503, "DRAINING\n"));
    assert_eq!(json(&admin_get(admin, "/server_info"))["state"], "DRAINING");
    assert!(admin_get(admin, "/stats").text().lines().any(|l| l == "server.state: 1"));
    // Traffic is still served while draining.
    assert_eq!(common::get(ferry.address("main"), "/", &[]).status, 200);
    assert_eq!(request(admin, "POST", "/healthcheck/ok", &[], b"").status, 200);
    assert_eq!(admin_get(admin, "/ready").text(), "LIVE\n");

    assert_eq!(request(admin, "POST", "/quitquitquit", &[], b"").text(), "OK\n");
    ferry.wait_for("caught POST /quitquitquit, shutting down", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = ferry.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "ferry still running 20 s after /quitquitquit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// A filter that logs `debug-line` at debug level on each request, then
/// `request-seen` at warning level (lines come out in order: once a
/// request's `request-seen` is in, so is its `debug-line` if it logged one).
const DEBUG_LOGGER: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "debug-line")
  (data (i32.const 120) "request-seen")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 1) (i32.const 100) (i32.const 10)))
    (drop (call $log (i32.const 3) (i32.const 120) (i32.const 12)))
    i32.const 0))"#;

#[test]
fn logging_lists_and_changes_levels_at_run_time() {
    let code = format!("{{ local: {{ inline_string: {DEBUG_LOGGER:?} }} }}");
    let filter = common::wasm_filter("chatty", "chatty", &code);
    let config = format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n\
         static_resources:\n  listeners:\n{}",
        listener("main", 0, &direct_route("/", "ok\n"), &filter),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1", "--log-level", "info"]);
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin address").port()));
    let post = |path: &str| request(admin, "POST", path, &[], b"");
    let debug_lines = || ferry.lines().iter().filter(|l| l.contains("debug-line")).count();

    assert_eq!(admin_get(admin, "/logging").status, 405);
    let list = post("/logging").text();
    assert!(list.starts_with("active loggers:\n"), "{list}");
    assert!(list.lines().any(|l| l == "  wasm: info"), "{list}");

    common::get(ferry.address("main"), "/", &[]);
    ferry.wait_for_count("request-seen", 1, Duration::from_secs(10));
    assert_eq!(debug_lines(), 0, "debug is below info");
    let list = post("/logging?wasm=debug").text();
    assert!(list.lines().any(|l| l == "  wasm: debug"), "{list}");
    assert!(list.lines().any(|l| l == "  http: info"), "only wasm changed: {list}");
    common::get(ferry.address("main"), "/", &[]);
    ferry.wait_for("debug-line", Duration::from_secs(10));

    // A bad change changes nothing.
    let refused = post("/logging?paths=wasm:error,nosuch:debug");
    assert_eq!(refused.status, 404);
    assert!(refused.text().contains("unknown logger \"nosuch\""), "{}", refused.text());
    assert!(post("/logging").text().lines().any(|l| l == "  wasm: debug"));

    let list = post("/logging?level=warning").text();
    assert!(list.lines().skip(1).all(|l| l.ends_with(": warning")), "{list}");
    let before = debug_lines();
    common::get(ferry.address("main"), "/", &[]);
    common::get(ferry.address("main"), "/", &[]);
    // The fourth request's warning line comes after anything it logged at debug.
    ferry.wait_for_count("request-seen", 4, Duration::from_secs(10));
    assert_eq!(debug_lines(), before, "no debug lines at warning");
}

/// A plugin that counts requests by code in its metric names, Envoy's way
/// of carrying tags in a name: `app_requests.code.200` (2) and
/// `app_requests.code.503` (1).
const TAGGED_METRICS: &str = r#"(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "app_requests.code.200")
  (data (i32.const 200) "app_requests.code.503")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 100) (i32.const 21) (i32.const 16)))
    (drop (call $increment (i32.load (i32.const 16)) (i64.const 2)))
    (drop (call $define (i32.const 0) (i32.const 200) (i32.const 21) (i32.const 20)))
    (drop (call $increment (i32.load (i32.const 20)) (i64.const 1)))
    i32.const 1))"#;

#[test]
fn stats_tags_turn_parts_of_plugin_metric_names_into_prometheus_labels() {
    let code = format!("{{ local: {{ inline_string: {TAGGED_METRICS:?} }} }}");
    let filter = common::wasm_filter("tagged", "tagged", &code);
    let config = format!(
        "stats_config:\n  stats_tags:\n  - tag_name: code\n    regex: '(\\.code\\.(\\d+))'\n  - tag_name: region\n    fixed_value: eu\n\
         admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n\
         static_resources:\n  listeners:\n{}",
        listener("main", 0, &direct_route("/", "ok\n"), &filter),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin address").port()));
    // /stats keeps the full names.
    let text = admin_get(admin, "/stats").text();
    assert!(text.lines().any(|l| l == "wasmcustom.app_requests.code.503: 1"), "{text}");
    let text = admin_get(admin, "/stats/prometheus").text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition");
    let by_code: Vec<(String, Value)> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "app_requests")
        .map(|s| {
            assert_eq!(s.labels.get("region"), Some("eu"), "{text}");
            (s.labels.get("code").unwrap_or_default().to_owned(), s.value.clone())
        })
        .collect();
    assert_eq!(by_code.len(), 2, "{text}");
    assert!(by_code.contains(&("200".to_owned(), Value::Counter(2.0))), "{text}");
    assert!(by_code.contains(&("503".to_owned(), Value::Counter(1.0))), "{text}");
    assert_eq!(text.matches("# TYPE app_requests counter").count(), 1, "one family: {text}");
}

#[test]
fn a_stats_tag_regex_that_does_not_compile_names_its_field() {
    let config = "stats_config:\n  stats_tags:\n  - tag_name: code\n    regex: '(unclosed'\n";
    let path = common::temp_file("envoy.yaml", config);
    let (status, _, stderr) = common::run_to_end(&["-c", path.to_str().unwrap(), "--mode", "validate"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stats_config.stats_tags[0].regex"), "{stderr}");
}

#[test]
fn envoys_own_request_and_cluster_stats_with_envoys_tags() {
    let routes = format!(
        "              - match: {{ prefix: \"/down\" }}\n                route: {{ cluster: backend }}\n{}",
        direct_route("/", "ok\n")
    );
    let config = format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n\
         static_resources:\n  listeners:\n{}  clusters:\n{}",
        listener("main", 0, &routes, ""),
        common::cluster("backend", SocketAddr::from(([127, 0, 0, 1], common::free_port()))),
    );
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let admin = SocketAddr::from(([127, 0, 0, 1], ferry.admin.expect("admin address").port()));
    let main = ferry.address("main");
    assert_eq!(common::get(main, "/", &[]).status, 200);
    assert_eq!(common::get(main, "/", &[]).status, 200);
    assert_eq!(common::get(main, "/down", &[]).status, 503);

    let text = admin_get(admin, "/stats").text();
    for line in [
        "http.main.downstream_rq_total: 3",
        "http.main.downstream_rq_2xx: 2",
        "http.main.downstream_rq_5xx: 1",
        "http.main.downstream_cx_total: 3",
        "cluster.backend.upstream_rq_total: 1",
        "cluster.backend.upstream_cx_connect_fail: 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    let text = admin_get(admin, "/stats/prometheus").text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition");
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{metric} {labels:?} in\n{text}"))
    };
    let prefix = ("envoy_http_conn_manager_prefix", "main");
    assert_eq!(
        value("envoy_http_downstream_rq_xx", &[("envoy_response_code_class", "2"), prefix]),
        Value::Counter(2.0)
    );
    assert_eq!(value("envoy_http_downstream_rq_total", &[prefix]), Value::Counter(3.0));
    let cluster = ("envoy_cluster_name", "backend");
    assert_eq!(value("envoy_cluster_upstream_cx_connect_fail", &[cluster]), Value::Counter(1.0));

    assert_eq!(admin_get(admin, "/reset_counters").status, 405);
    assert_eq!(request(admin, "POST", "/reset_counters", &[], b"").text(), "OK\n");
    let text = admin_get(admin, "/stats").text();
    for line in [
        "http.main.downstream_rq_total: 0",
        "http.main.downstream_rq_2xx: 0",
        "cluster.backend.upstream_cx_connect_fail: 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

#[test]
fn drain_listeners_stops_new_connections_and_keeps_open_ones() {
    use std::io::{Read as _, Write as _};
    let (ferry, admin) = start();
    let main = ferry.address("main");
    // One request on a connection kept open, answered "ok\n".
    let ask = |stream: &mut std::net::TcpStream| {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"ok\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    let mut open = std::net::TcpStream::connect(main).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ask(&mut open);

    assert_eq!(admin_get(admin, "/drain_listeners").status, 405);
    assert_eq!(request(admin, "POST", "/drain_listeners?graceful", &[], b"").status, 400);
    assert_eq!(request(admin, "POST", "/drain_listeners", &[], b"").text(), "OK\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(main).is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts 10 s after the drain");
        std::thread::sleep(Duration::from_millis(50));
    }
    ask(&mut open);
    assert_eq!(admin_get(admin, "/ready").status, 200, "the admin endpoint still answers");
}

#[test]
fn memory_reports_the_process_in_envoys_fields() {
    let (ferry, admin) = start();
    let memory = json(&admin_get(admin, "/memory"));
    let bytes = |field: &str| -> u64 {
        memory[field].as_str().unwrap_or_else(|| panic!("{field} is a string: {memory}")).parse().unwrap()
    };
    // A wasmtime process with a compiled plugin holds megabytes, and not terabytes.
    let physical = bytes("total_physical_bytes");
    assert!((1 << 20..1 << 40).contains(&physical), "{memory}");
    assert!(bytes("allocated") <= physical, "anonymous resident memory is part of the resident set: {memory}");
    assert!(bytes("heap_size") > 0, "{memory}");
    for field in ["pageheap_unmapped", "pageheap_free", "total_thread_cache"] {
        assert_eq!(memory[field], "0", "ferry's allocator has no {field}");
    }
    let stats = admin_get(admin, "/stats?filter=^server%5C.memory").text();
    assert!(stats.contains("server.memory_physical_size: "), "{stats}");
    drop(ferry);
}

#[test]
fn listener_stats_count_connections_by_address() {
    let (ferry, admin) = start();
    let main = ferry.address("main");
    // Two requests on one connection each, then one held open.
    assert_eq!(request(main, "GET", "/", &[], b"").status, 200);
    assert_eq!(request(main, "GET", "/", &[], b"").status, 200);
    let held = std::net::TcpStream::connect(main).unwrap();
    let name = format!("listener.127.0.0.1_{}", main.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    let stat = |text: &str, stat: &str| -> Option<i64> {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name}.{stat}: "))).and_then(|v| v.parse().ok())
    };
    loop {
        let text = admin_get(admin, "/stats").text();
        let (total, active) = (stat(&text, "downstream_cx_total"), stat(&text, "downstream_cx_active"));
        let connections = text.lines().find_map(|l| l.strip_prefix("server.total_connections: ")).map(str::to_owned);
        if total == Some(3) && active == Some(1) && connections.as_deref() == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "total {total:?}, active {active:?}, server {connections:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let scrape = admin_get(admin, "/stats/prometheus").text();
    let line = format!("envoy_listener_downstream_cx_total{{envoy_listener_address=\"127.0.0.1_{}\"}} 3", main.port());
    assert!(scrape.contains(&line), "{scrape}");
    drop(held);
}
