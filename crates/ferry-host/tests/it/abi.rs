//! The ABI against hand-written modules (WAT): each module checks the
//! statuses host functions return and refuses to start when one is wrong,
//! so a failure names the check.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_host::{
    FailurePolicy, HeaderMap, Host, HostOptions, HttpStream, Limits, ModuleSpec, Plugin, QueueReady, StreamCallback,
    ThreadMailbox, Verdict, WasmThread,
};

/// Records posted notifications instead of delivering them.
#[derive(Default)]
struct Mailbox(Mutex<Vec<QueueReady>>);

impl ThreadMailbox for Mailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        self.0.lock().unwrap().push(notice);
    }
}

/// Imports, memory, allocator and marker shared by every test module.
const PRELUDE: &str = r#"
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $grpc_cancel (param i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $grpc_close (param i32) (result i32)))
  (import "env" "envoy_resolve_dns" (func $resolve_dns (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $log_level (param i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $map_size (param i32 i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_clear_route_cache" (func $clear_route_cache (result i32)))
  (import "env" "proxy_continue_request" (func $continue_request (result i32)))
  (import "env" "proxy_continue_response" (func $continue_response (result i32)))
  (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close_stream (param i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_configuration" (func $get_configuration (param i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get (param i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 16: "hello", 32: "plugin_vm_id", 48: "key", 64: "queue", 80: "receiver", 96: ":path", 112: "x-added", 128: "yes"
  (data (i32.const 16) "hello")
  (data (i32.const 32) "plugin_vm_id")
  (data (i32.const 48) "key")
  (data (i32.const 64) "queue")
  (data (i32.const 80) "receiver")
  (data (i32.const 96) ":path")
  (data (i32.const 112) "x-added")
  (data (i32.const 128) "yes")
  ;; 160: "compress", 176: "uncompress", 192: "clear_route_cache"
  (data (i32.const 160) "compress")
  (data (i32.const 176) "uncompress")
  (data (i32.const 192) "clear_route_cache")
  (global $heap (mut i32) (i32.const 8192))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  ;; 1 if every check passed.
  (func $expect (param $got i32) (param $want i32) (result i32) (i32.eq (local.get $got) (local.get $want)))
"#;

fn module_in(host: &Arc<Host>, vm_id: &str, body: &str) -> Arc<Plugin> {
    let wat = format!("(module {PRELUDE} {body})");
    let spec = ModuleSpec {
        vm_id: vm_id.into(),
        vm_configuration: Bytes::from_static(b"vm-config"),
        code: Bytes::from(wat),
        origin: "test".into(),
        environment: Vec::new(),
        allowed_capabilities: Vec::new(),
    };
    let module = host.load_module(spec).unwrap();
    Plugin::new("test", "", Bytes::from_static(b"plugin-config"), module, FailurePolicy::FailClosed, Limits::default())
}

/// Starts `plugin` on a thread of its own host, with a recording mailbox.
fn start(host: &Arc<Host>, plugin: Arc<Plugin>) -> (WasmThread, Arc<Mailbox>, ferry_host::PluginHandle) {
    let mailbox = Arc::new(Mailbox::default());
    let mut thread = WasmThread::new(host.clone(), mailbox.clone());
    let handle = thread.add_plugin(plugin);
    thread.start().unwrap_or_else(|e| panic!("{e}"));
    (thread, mailbox, handle)
}

/// A module whose `proxy_on_vm_start` returns the conjunction of `checks`.
fn checks(checks: &[&str]) -> String {
    let all = checks.iter().fold("(i32.const 1)".to_owned(), |acc, c| format!("(i32.and {acc} {c})"));
    format!(r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) {all})"#)
}

fn assert_starts(name: &str, body: &str) {
    let host = Host::new(HostOptions::default()).unwrap();
    let plugin = module_in(&host, "vm", body);
    let mailbox = Arc::new(Mailbox::default());
    let mut thread = WasmThread::new(host, mailbox);
    thread.add_plugin(plugin);
    if let Err(e) = thread.start() {
        panic!("{name}: a check failed: {e}");
    }
}

#[test]
fn bad_pointers_and_lengths_are_invalid_memory_access_not_crashes() {
    assert_starts(
        "proxy_log",
        &checks(&[
            "(call $expect (call $log (i32.const 2) (i32.const 16) (i32.const 5)) (i32.const 0))",
            "(call $expect (call $log (i32.const 2) (i32.const 65534) (i32.const 5)) (i32.const 6))",
            "(call $expect (call $log (i32.const 2) (i32.const 16) (i32.const -1)) (i32.const 6))",
            "(call $expect (call $log (i32.const 2) (i32.const -16) (i32.const 32)) (i32.const 6))",
            "(call $expect (call $log (i32.const 9) (i32.const 16) (i32.const 5)) (i32.const 2))",
            // Out-params outside memory.
            "(call $expect (call $get_buffer (i32.const 6) (i32.const 0) (i32.const 100) (i32.const 70000) (i32.const 0)) (i32.const 6))",
            "(call $expect (call $get_property (i32.const 32) (i32.const 12) (i32.const 0) (i32.const 65535)) (i32.const 6))",
        ]),
    );
}

#[test]
fn configuration_buffers_and_properties() {
    assert_starts(
        "buffers",
        &checks(&[
            // VM configuration: 9 bytes, readable in on_vm_start.
            "(call $expect (call $buffer_status (i32.const 6) (i32.const 200) (i32.const 204)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 200)) (i32.const 9))",
            // Copied out through the allocator: size written, bytes match.
            "(call $expect (call $get_buffer (i32.const 6) (i32.const 3) (i32.const 100) (i32.const 208) (i32.const 212)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 212)) (i32.const 6))",
            "(call $expect (i32.load8_u (i32.load (i32.const 208))) (i32.const 99))", // 'c' of "config"
            // Plugin configuration is readable while starting; unknown buffer 9 is a bad argument.
            "(call $expect (call $buffer_status (i32.const 7) (i32.const 200) (i32.const 204)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 200)) (i32.const 13))",
            "(call $expect (call $buffer_status (i32.const 9) (i32.const 200) (i32.const 204)) (i32.const 2))",
            // Start past the end is a bad argument; no request body here.
            "(call $expect (call $get_buffer (i32.const 6) (i32.const 10) (i32.const 1) (i32.const 208) (i32.const 212)) (i32.const 2))",
            "(call $expect (call $get_buffer (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 208) (i32.const 212)) (i32.const 1))",
            // plugin_vm_id is "vm"; an unknown property is not found.
            "(call $expect (call $get_property (i32.const 32) (i32.const 12) (i32.const 208) (i32.const 212)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 212)) (i32.const 2))",
            "(call $expect (call $get_property (i32.const 16) (i32.const 5) (i32.const 208) (i32.const 212)) (i32.const 1))",
        ]),
    );
}

#[test]
fn unimplemented_functions_link_and_return_unimplemented() {
    assert_starts(
        "envoy_resolve_dns",
        &checks(&["(call $expect (call $resolve_dns (i32.const 16) (i32.const 5) (i32.const 200)) (i32.const 12))"]),
    );
}

#[test]
fn an_http_call_without_method_path_and_authority_is_a_bad_argument() {
    assert_starts(
        "proxy_http_call",
        &checks(&[
            "(call $expect (call $http_call (i32.const 80) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 200)) (i32.const 2))",
        ]),
    );
}

#[test]
fn metrics() {
    let checks = checks(&[
        // Counter "key" at 400, gauge "queue" at 404, histogram "hello" at 408.
        "(call $expect (call $define (i32.const 0) (i32.const 48) (i32.const 3) (i32.const 400)) (i32.const 0))",
        "(call $expect (call $define (i32.const 1) (i32.const 64) (i32.const 5) (i32.const 404)) (i32.const 0))",
        "(call $expect (call $define (i32.const 2) (i32.const 16) (i32.const 5) (i32.const 408)) (i32.const 0))",
        "(call $expect (call $define (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 412)) (i32.const 2))",
        "(call $expect (call $increment (i32.load (i32.const 400)) (i64.const 5)) (i32.const 0))",
        "(call $expect (call $increment (i32.load (i32.const 400)) (i64.const -1)) (i32.const 2))",
        "(call $expect (call $increment (i32.load (i32.const 404)) (i64.const -3)) (i32.const 0))",
        "(call $expect (call $record (i32.load (i32.const 408)) (i64.const 42)) (i32.const 0))",
        "(call $expect (call $get (i32.load (i32.const 400)) (i32.const 416)) (i32.const 0))",
        "(i64.eq (i64.load (i32.const 416)) (i64.const 5))",
        "(call $expect (call $get (i32.load (i32.const 408)) (i32.const 416)) (i32.const 2))",
        "(call $expect (call $get (i32.const 1000) (i32.const 416)) (i32.const 1))",
        "(call $expect (call $increment (i32.const 1000) (i64.const 1)) (i32.const 1))",
    ]);
    let host = Host::new(HostOptions::default()).unwrap();
    let (_thread, _, _) = start(&host, module_in(&host, "vm", &checks));
    let rendered: Vec<(String, String)> = host.metrics().snapshot().into_iter().map(|(n, m)| (n, m.render())).collect();
    assert_eq!(
        rendered,
        [
            ("hello".into(), "count=1 sum=42 min=42 max=42".into()),
            ("key".into(), "5".into()),
            ("queue".into(), "-3".into())
        ]
    );
}

/// Status paths of the functions no other test reaches, from a root
/// context in `proxy_on_vm_start`.
#[test]
fn remaining_host_functions_statuses() {
    assert_starts(
        "remaining",
        &checks(&[
            // The wasm logger is at info (2) by default.
            "(call $expect (call $log_level (i32.const 700)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 700)) (i32.const 2))",
            "(call $expect (call $now (i32.const 704)) (i32.const 0))",
            "(i64.gt_u (i64.load (i32.const 704)) (i64.const 1700000000000000000))",
            "(call $expect (call $now (i32.const 65533)) (i32.const 6))",
            "(call $expect (call $tick (i32.const 100)) (i32.const 0))",
            "(call $expect (call $tick (i32.const 0)) (i32.const 0))",
            // No stream here: map sizes are a bad argument, local responses too.
            "(call $expect (call $map_size (i32.const 0) (i32.const 712)) (i32.const 2))",
            "(call $expect (call $map_size (i32.const 9) (i32.const 712)) (i32.const 2))",
            "(call $expect (call $local_response (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)) (i32.const 2))",
            // No context waits for proxy_done.
            "(call $expect (call $done) (i32.const 1))",
            // From a root context, continuing or closing changes nothing (as Envoy).
            "(call $expect (call $clear_route_cache) (i32.const 0))",
            "(call $expect (call $continue_request) (i32.const 0))",
            "(call $expect (call $continue_response) (i32.const 0))",
            "(call $expect (call $continue_stream (i32.const 0)) (i32.const 0))",
            "(call $expect (call $close_stream (i32.const 1)) (i32.const 0))",
            "(call $expect (call $continue_stream (i32.const 2)) (i32.const 0))",
            "(call $expect (call $continue_stream (i32.const 3)) (i32.const 0))",
            "(call $expect (call $close_stream (i32.const 2)) (i32.const 0))",
            "(call $expect (call $continue_stream (i32.const 9)) (i32.const 2))",
            // No call failed: status 0, empty message.
            "(call $expect (call $get_status (i32.const 716) (i32.const 720) (i32.const 724)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 716)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 724)) (i32.const 0))",
            // ABI 0.1.0's configuration getter: the plugin configuration while starting.
            "(call $expect (call $get_configuration (i32.const 728) (i32.const 732)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 732)) (i32.const 13))",
            // Context 1 is this root context; 99 does not exist.
            "(call $expect (call $set_effective (i32.const 1)) (i32.const 0))",
            "(call $expect (call $set_effective (i32.const 99)) (i32.const 2))",
        ]),
    );
}

#[test]
fn bodies_are_not_found_outside_their_callbacks_and_config_is_read_only() {
    assert_starts(
        "proxy_set_buffer_bytes",
        &checks(&[
            "(call $expect (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5)) (i32.const 1))",
            "(call $expect (call $set_buffer (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5)) (i32.const 2))",
            "(call $expect (call $set_buffer (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5)) (i32.const 2))",
        ]),
    );
}

#[test]
fn properties_set_by_a_plugin_read_back() {
    assert_starts(
        "proxy_set_property",
        &checks(&[
            "(call $expect (call $get_property (i32.const 64) (i32.const 5) (i32.const 200) (i32.const 204)) (i32.const 1))",
            "(call $expect (call $set_property (i32.const 64) (i32.const 5) (i32.const 16) (i32.const 5)) (i32.const 0))",
            "(call $expect (call $get_property (i32.const 64) (i32.const 5) (i32.const 200) (i32.const 204)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 204)) (i32.const 5))",
            "(call $expect (i32.load8_u (i32.load (i32.const 200))) (i32.const 104))", // 'h'
        ]),
    );
}

/// In `proxy_on_request_headers`: copies the `request.path` and
/// `source.port` properties into request headers.
const PROPERTY_FILTER: &str = r#"
  (data (i32.const 600) "request\00path")
  (data (i32.const 620) "x-path")
  (data (i32.const 640) "source\00port")
  (data (i32.const 660) "x-port-bytes")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get_property (i32.const 600) (i32.const 12) (i32.const 208) (i32.const 212)))
    (drop (call $add_header (i32.const 0) (i32.const 620) (i32.const 6) (i32.load (i32.const 208)) (i32.load (i32.const 212))))
    (drop (call $get_property (i32.const 640) (i32.const 11) (i32.const 208) (i32.const 212)))
    (drop (call $add_header (i32.const 0) (i32.const 660) (i32.const 12) (i32.load (i32.const 208)) (i32.load (i32.const 212))))
    (i32.const 0))
"#;

#[test]
fn stream_properties_come_from_the_stream() {
    let host = Host::new(HostOptions::default()).unwrap();
    let (mut thread, _, handle) = start(&host, module_in(&host, "vm", PROPERTY_FILTER));
    let stream = ferry_host::share(request("/a?b"));
    stream.borrow_mut().info.source = Some("10.0.0.1:4242".parse().unwrap());
    let context = thread.create_http_stream(handle).unwrap();
    thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap();
    assert_eq!(&stream.borrow_mut().request_headers.get(b"x-path").unwrap()[..], b"/a?b");
    assert_eq!(&stream.borrow_mut().request_headers.get(b"x-port-bytes").unwrap()[..], &4242i64.to_le_bytes());
}

#[test]
fn shared_data_with_cas() {
    assert_starts(
        "shared data",
        &checks(&[
            "(call $expect (call $get_data (i32.const 48) (i32.const 3) (i32.const 200) (i32.const 204) (i32.const 208)) (i32.const 1))",
            "(call $expect (call $set_data (i32.const 48) (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 0)) (i32.const 0))",
            "(call $expect (call $get_data (i32.const 48) (i32.const 3) (i32.const 200) (i32.const 204) (i32.const 208)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 204)) (i32.const 5))",
            // Writing with the current CAS works once; the old CAS then mismatches.
            "(call $expect (call $set_data (i32.const 48) (i32.const 3) (i32.const 16) (i32.const 2) (i32.load (i32.const 208))) (i32.const 0))",
            "(call $expect (call $set_data (i32.const 48) (i32.const 3) (i32.const 16) (i32.const 2) (i32.load (i32.const 208))) (i32.const 8))",
        ]),
    );
}

#[test]
fn shared_queue_statuses() {
    assert_starts(
        "shared queues",
        &checks(&[
            // Unknown queue: NotFound for resolve, enqueue and dequeue.
            "(call $expect (call $resolve (i32.const 80) (i32.const 8) (i32.const 64) (i32.const 5) (i32.const 200)) (i32.const 1))",
            "(call $expect (call $enqueue (i32.const 77) (i32.const 16) (i32.const 5)) (i32.const 1))",
            "(call $expect (call $dequeue (i32.const 77) (i32.const 200) (i32.const 204)) (i32.const 1))",
            // Register, then resolve with an empty vm_id (own) and with our vm_id.
            "(call $expect (call $register (i32.const 64) (i32.const 5) (i32.const 300)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 300)) (i32.const 1))",
            "(call $expect (call $resolve (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 304)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 304)) (i32.const 1))",
            // Registering again gives the same id.
            "(call $expect (call $register (i32.const 64) (i32.const 5) (i32.const 308)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 308)) (i32.const 1))",
            // FIFO, then Empty.
            "(call $expect (call $enqueue (i32.const 1) (i32.const 16) (i32.const 5)) (i32.const 0))",
            "(call $expect (call $dequeue (i32.const 1) (i32.const 200) (i32.const 204)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 204)) (i32.const 5))",
            "(call $expect (call $dequeue (i32.const 1) (i32.const 200) (i32.const 204)) (i32.const 7))",
        ]),
    );
}

#[test]
fn header_maps_outside_a_stream_and_unknown_map_types() {
    assert_starts(
        "headers",
        &checks(&[
            "(call $expect (call $get_header (i32.const 0) (i32.const 96) (i32.const 5) (i32.const 200) (i32.const 204)) (i32.const 2))",
            "(call $expect (call $get_pairs (i32.const 0) (i32.const 200) (i32.const 204)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 204)) (i32.const 0))",
            "(call $expect (call $get_pairs (i32.const 8) (i32.const 200) (i32.const 204)) (i32.const 2))",
        ]),
    );
}

#[test]
fn wasi_policy() {
    assert_starts(
        "wasi",
        &checks(&[
            // iovec at 400: "hello"
            "(i32.store (i32.const 400) (i32.const 16)) (i32.store (i32.const 404) (i32.const 5)) (i32.const 1)",
            "(call $expect (call $fd_write (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 408)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 408)) (i32.const 5))",
            "(call $expect (call $fd_write (i32.const 5) (i32.const 400) (i32.const 1) (i32.const 408)) (i32.const 8))",
            "(call $expect (call $random_get (i32.const 500) (i32.const 16)) (i32.const 0))",
            "(call $expect (call $random_get (i32.const 500) (i32.const 70000)) (i32.const 28))",
            "(call $expect (call $clock (i32.const 0) (i64.const 1) (i32.const 600)) (i32.const 0))",
            "(i64.gt_u (i64.load (i32.const 600)) (i64.const 1700000000000000000))",
            "(call $expect (call $clock (i32.const 9) (i64.const 1) (i32.const 600)) (i32.const 58))",
        ]),
    );
}

/// A filter module: in `proxy_on_request_headers` it reads all pairs,
/// writes them back, and adds `x-added: yes`; a request for `/queue`
/// enqueues one item on a queue registered at start.
const FILTER: &str = r#"
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $expect (call $register (i32.const 64) (i32.const 5) (i32.const 300)) (i32.const 0)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get_pairs (i32.const 0) (i32.const 200) (i32.const 204)))
    (drop (call $set_pairs (i32.const 0) (i32.load (i32.const 200)) (i32.load (i32.const 204))))
    ;; A malformed pairs buffer is rejected and changes nothing.
    (if (i32.ne (call $set_pairs (i32.const 0) (i32.const 16) (i32.const 5)) (i32.const 2)) (then unreachable))
    (drop (call $add_header (i32.const 0) (i32.const 112) (i32.const 7) (i32.const 128) (i32.const 3)))
    (drop (call $get_header (i32.const 0) (i32.const 96) (i32.const 5) (i32.const 208) (i32.const 212)))
    (if (i32.eq (i32.load (i32.const 212)) (i32.const 6))
      (then (drop (call $enqueue (i32.load (i32.const 300)) (i32.const 16) (i32.const 5)))))
    (i32.const 0))
  (global $ready (mut i32) (i32.const 0))
  (func (export "proxy_on_queue_ready") (param i32 i32)
    (drop (call $dequeue (local.get 1) (i32.const 200) (i32.const 204))))
"#;

fn request(path: &str) -> HttpStream {
    let mut headers = HeaderMap::new();
    for (name, value) in [(":authority", "host"), (":path", path), (":method", "GET"), ("accept", "*/*")] {
        headers.append_lowercase(name.to_owned(), value.to_owned());
    }
    HttpStream { request_headers: headers, ..HttpStream::default() }
}

#[test]
fn header_pairs_round_trip_through_the_guest() {
    let host = Host::new(HostOptions::default()).unwrap();
    let (mut thread, _, handle) = start(&host, module_in(&host, "vm", FILTER));
    let stream = ferry_host::share(request("/"));
    let before = stream.borrow_mut().request_headers.clone();
    let context = thread.create_http_stream(handle).unwrap();
    assert_eq!(
        thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap(),
        Verdict::Continue
    );
    let mut expected = before;
    expected.add(b"x-added", b"yes");
    assert_eq!(stream.borrow_mut().request_headers, expected);
    thread.finish_http_stream(context, &stream);
}

#[test]
fn enqueue_posts_one_notification_and_never_runs_the_consumer_inline() {
    let host = Host::new(HostOptions::default()).unwrap();
    let (mut thread, mailbox, handle) = start(&host, module_in(&host, "vm", FILTER));
    let queue = host.shared_queues().resolve("vm", "queue").unwrap();
    for _ in 0..3 {
        let context = thread.create_http_stream(handle).unwrap();
        let stream = ferry_host::share(request("/queue"));
        thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap();
        thread.finish_http_stream(context, &stream);
    }
    let posted: Vec<QueueReady> = std::mem::take(&mut mailbox.0.lock().unwrap());
    assert_eq!(posted.len(), 3, "one notification per item");
    assert_eq!(host.shared_queues().len(queue), Some(3), "nothing was dequeued inside enqueue");
    for notice in posted {
        assert_eq!((notice.context_id, notice.queue_id), (1, queue), "the root context that registered");
        thread.on_queue_ready(notice);
    }
    assert_eq!(host.shared_queues().len(queue), Some(0), "each notification took one item");
}

#[test]
fn a_trap_fails_the_callback_and_the_next_stream_gets_a_fresh_instance() {
    let body = r#"
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))"#;
    let host = Host::new(HostOptions::default()).unwrap();
    let plugin = module_in(&host, "vm", body);
    // FAIL_RELOAD without a backoff: the next stream starts a new instance.
    let reload = FailurePolicy::FailReload(ferry_host::Backoff {
        base: std::time::Duration::ZERO,
        max: std::time::Duration::ZERO,
    });
    let plugin =
        Plugin::new("test", "", plugin.configuration.clone(), plugin.module.clone(), reload, Limits::default());
    let (mut thread, _, handle) = start(&host, plugin);
    let first = thread.create_http_stream(handle).unwrap();
    let failure = thread
        .stream_callback(&first, StreamCallback::RequestHeaders, &ferry_host::share(request("/")), true)
        .unwrap_err();
    assert!(failure.reason.contains("proxy_on_request_headers") && failure.reason.contains("unreachable"), "{failure}");
    // The old context is gone with its instance.
    assert!(
        thread
            .stream_callback(&first, StreamCallback::ResponseHeaders, &ferry_host::share(request("/")), true)
            .is_err()
    );
    // A new stream gets a new instance, whose context ids start over.
    let second = thread.create_http_stream(handle).unwrap();
    assert_eq!(second.id(), 2, "root context 1, then this stream");
    assert_eq!(
        thread
            .stream_callback(&second, StreamCallback::ResponseHeaders, &ferry_host::share(request("/")), true)
            .unwrap(),
        Verdict::Continue
    );
}

#[test]
fn plugins_with_one_vm_config_share_a_module_and_the_last_module_takes_its_queues() {
    let host = Host::new(HostOptions::default()).unwrap();
    let a = module_in(&host, "vm", FILTER);
    let b = module_in(&host, "vm", FILTER);
    assert!(Arc::ptr_eq(&a.module, &b.module), "same vm_id, configuration and code: one module");
    {
        let (_thread, _, _) = start(&host, a.clone());
        assert!(host.shared_queues().resolve("vm", "queue").is_some());
    }
    drop((a, b));
    assert_eq!(host.shared_queues().resolve("vm", "queue"), None, "the vm_id's queues went with its last module");
}

/// Every import of the Rust SDK (proxy-wasm 0.2.x), the Go SDK, ABI 0.1.0,
/// and WASI preview 1 as standard Go and TinyGo modules use it, with the
/// signature those modules declare (`i` = i32, `I` = i64; results are i32
/// unless noted).
const IMPORTS: &[(&str, &str, &str)] = &[
    ("env", "proxy_log", "iii"),
    ("env", "proxy_get_log_level", "i"),
    ("env", "proxy_get_current_time_nanoseconds", "i"),
    ("env", "proxy_set_tick_period_milliseconds", "i"),
    ("env", "proxy_get_buffer_bytes", "iiiii"),
    ("env", "proxy_set_buffer_bytes", "iiiii"),
    ("env", "proxy_get_buffer_status", "iii"),
    ("env", "proxy_get_header_map_pairs", "iii"),
    ("env", "proxy_set_header_map_pairs", "iii"),
    ("env", "proxy_get_header_map_value", "iiiii"),
    ("env", "proxy_remove_header_map_value", "iii"),
    ("env", "proxy_replace_header_map_value", "iiiii"),
    ("env", "proxy_add_header_map_value", "iiiii"),
    ("env", "proxy_get_header_map_size", "ii"),
    ("env", "proxy_get_property", "iiii"),
    ("env", "proxy_set_property", "iiii"),
    ("env", "proxy_get_shared_data", "iiiii"),
    ("env", "proxy_set_shared_data", "iiiii"),
    ("env", "proxy_register_shared_queue", "iii"),
    ("env", "proxy_resolve_shared_queue", "iiiii"),
    ("env", "proxy_dequeue_shared_queue", "iii"),
    ("env", "proxy_enqueue_shared_queue", "iii"),
    ("env", "proxy_continue_stream", "i"),
    ("env", "proxy_close_stream", "i"),
    ("env", "proxy_send_local_response", "iiiiiiii"),
    ("env", "proxy_http_call", "iiiiiiiiii"),
    ("env", "proxy_grpc_call", "iiiiiiiiiiii"),
    ("env", "proxy_grpc_stream", "iiiiiiiii"),
    ("env", "proxy_grpc_send", "iiii"),
    ("env", "proxy_grpc_cancel", "i"),
    ("env", "proxy_grpc_close", "i"),
    ("env", "proxy_get_status", "iii"),
    ("env", "proxy_set_effective_context", "i"),
    ("env", "proxy_call_foreign_function", "iiiiii"),
    ("env", "proxy_done", ""),
    ("env", "proxy_define_metric", "iiii"),
    ("env", "proxy_get_metric", "ii"),
    ("env", "proxy_record_metric", "iI"),
    ("env", "proxy_increment_metric", "iI"),
    ("env", "proxy_get_configuration", "ii"),
    ("env", "proxy_continue_request", ""),
    ("env", "proxy_continue_response", ""),
    ("env", "proxy_clear_route_cache", ""),
    ("wasi_snapshot_preview1", "args_get", "ii"),
    ("wasi_snapshot_preview1", "args_sizes_get", "ii"),
    ("wasi_snapshot_preview1", "environ_get", "ii"),
    ("wasi_snapshot_preview1", "environ_sizes_get", "ii"),
    ("wasi_snapshot_preview1", "clock_res_get", "ii"),
    ("wasi_snapshot_preview1", "clock_time_get", "iIi"),
    ("wasi_snapshot_preview1", "fd_advise", "iIIi"),
    ("wasi_snapshot_preview1", "fd_allocate", "iII"),
    ("wasi_snapshot_preview1", "fd_close", "i"),
    ("wasi_snapshot_preview1", "fd_datasync", "i"),
    ("wasi_snapshot_preview1", "fd_fdstat_get", "ii"),
    ("wasi_snapshot_preview1", "fd_fdstat_set_flags", "ii"),
    ("wasi_snapshot_preview1", "fd_fdstat_set_rights", "iII"),
    ("wasi_snapshot_preview1", "fd_filestat_get", "ii"),
    ("wasi_snapshot_preview1", "fd_filestat_set_size", "iI"),
    ("wasi_snapshot_preview1", "fd_filestat_set_times", "iIIi"),
    ("wasi_snapshot_preview1", "fd_pread", "iiiIi"),
    ("wasi_snapshot_preview1", "fd_prestat_get", "ii"),
    ("wasi_snapshot_preview1", "fd_prestat_dir_name", "iii"),
    ("wasi_snapshot_preview1", "fd_pwrite", "iiiIi"),
    ("wasi_snapshot_preview1", "fd_read", "iiii"),
    ("wasi_snapshot_preview1", "fd_readdir", "iiiIi"),
    ("wasi_snapshot_preview1", "fd_renumber", "ii"),
    ("wasi_snapshot_preview1", "fd_seek", "iIii"),
    ("wasi_snapshot_preview1", "fd_sync", "i"),
    ("wasi_snapshot_preview1", "fd_tell", "ii"),
    ("wasi_snapshot_preview1", "fd_write", "iiii"),
    ("wasi_snapshot_preview1", "path_create_directory", "iii"),
    ("wasi_snapshot_preview1", "path_filestat_get", "iiiii"),
    ("wasi_snapshot_preview1", "path_filestat_set_times", "iiiiIIi"),
    ("wasi_snapshot_preview1", "path_link", "iiiiiii"),
    ("wasi_snapshot_preview1", "path_open", "iiiiiIIii"),
    ("wasi_snapshot_preview1", "path_readlink", "iiiiii"),
    ("wasi_snapshot_preview1", "path_remove_directory", "iii"),
    ("wasi_snapshot_preview1", "path_rename", "iiiiii"),
    ("wasi_snapshot_preview1", "path_symlink", "iiiii"),
    ("wasi_snapshot_preview1", "path_unlink_file", "iii"),
    ("wasi_snapshot_preview1", "poll_oneoff", "iiii"),
    ("wasi_snapshot_preview1", "proc_raise", "i"),
    ("wasi_snapshot_preview1", "random_get", "ii"),
    ("wasi_snapshot_preview1", "sched_yield", ""),
    ("wasi_snapshot_preview1", "sock_accept", "iii"),
    ("wasi_snapshot_preview1", "sock_recv", "iiiiii"),
    ("wasi_snapshot_preview1", "sock_send", "iiiii"),
    ("wasi_snapshot_preview1", "sock_shutdown", "ii"),
    ("wasi_unstable", "fd_write", "iiii"),
    ("wasi_unstable", "proc_exit", "i -> nothing"),
    ("wasi_snapshot_preview1", "proc_exit", "i -> nothing"),
];

#[test]
fn every_sdk_and_wasi_import_links() {
    let imports: String = IMPORTS
        .iter()
        .enumerate()
        .map(|(i, (module, name, signature))| {
            let (params, result) = match signature.split_once(" -> nothing") {
                Some((params, _)) => (params, ""),
                None => (*signature, "(result i32)"),
            };
            let params: Vec<&str> = params.chars().map(|c| if c == 'I' { "i64" } else { "i32" }).collect();
            format!("(import \"{module}\" \"{name}\" (func $f{i} (param {}) {result}))\n", params.join(" "))
        })
        .collect();
    let wat = format!(
        r#"(module {imports}
            (memory (export "memory") 1)
            (func (export "proxy_abi_version_0_2_1"))
            (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))"#
    );
    let host = Host::new(HostOptions::default()).unwrap();
    let spec = ModuleSpec {
        vm_id: "all".into(),
        vm_configuration: Bytes::new(),
        code: Bytes::from(wat),
        origin: "every import".into(),
        environment: Vec::new(),
        allowed_capabilities: Vec::new(),
    };
    let module = host.load_module(spec).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::new("all", "", Bytes::new(), module, FailurePolicy::FailClosed, Limits::default());
    start(&host, plugin);
}

#[test]
fn foreign_functions_compress_uncompress_and_unknown_names() {
    assert_starts(
        "proxy_call_foreign_function",
        &checks(&[
            // compress("hello") → zlib data at *900, size *904.
            "(call $expect (call $foreign (i32.const 160) (i32.const 8) (i32.const 16) (i32.const 5) (i32.const 900) (i32.const 904)) (i32.const 0))",
            "(call $expect (i32.load8_u (i32.load (i32.const 900))) (i32.const 0x78))",
            // uncompress(that) → "hello" at *908, size *912.
            "(call $expect (call $foreign (i32.const 176) (i32.const 10) (i32.load (i32.const 900)) (i32.load (i32.const 904)) (i32.const 908) (i32.const 912)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 912)) (i32.const 5))",
            "(call $expect (i32.load (i32.load (i32.const 908))) (i32.load (i32.const 16)))",
            "(call $expect (i32.load8_u (i32.add (i32.load (i32.const 908)) (i32.const 4))) (i32.const 0x6f))",
            // Not zlib data: SerializationFailure.
            "(call $expect (call $foreign (i32.const 176) (i32.const 10) (i32.const 16) (i32.const 5) (i32.const 908) (i32.const 912)) (i32.const 3))",
            // No result: address 0, size 0.
            "(call $expect (call $foreign (i32.const 192) (i32.const 17) (i32.const 0) (i32.const 0) (i32.const 916) (i32.const 920)) (i32.const 0))",
            "(call $expect (i32.load (i32.const 920)) (i32.const 0))",
            // An unknown name is NotFound; bad pointers InvalidMemoryAccess.
            "(call $expect (call $foreign (i32.const 64) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 916) (i32.const 920)) (i32.const 1))",
            "(call $expect (call $foreign (i32.const 160) (i32.const 8) (i32.const 65530) (i32.const 100) (i32.const 916) (i32.const 920)) (i32.const 6))",
            "(call $expect (call $foreign (i32.const 160) (i32.const 8) (i32.const 16) (i32.const 5) (i32.const 65534) (i32.const 920)) (i32.const 6))",
        ]),
    );
}

#[test]
fn grpc_statuses_for_unknown_clusters_tokens_and_kinds() {
    // Any cluster is known to a host without a cluster list: "receiver" (80, 8) is one.
    assert_starts(
        "proxy_grpc_*",
        &checks(&[
            // A unary call (token at 300) and a stream (token at 304).
            "(call $expect (call $grpc_call (i32.const 80) (i32.const 8) (i32.const 64) (i32.const 5) (i32.const 48) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 1000) (i32.const 300)) (i32.const 0))",
            "(call $expect (call $grpc_stream (i32.const 80) (i32.const 8) (i32.const 64) (i32.const 5) (i32.const 48) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 304)) (i32.const 0))",
            "(i32.ne (i32.load (i32.const 300)) (i32.load (i32.const 304)))",
            // Sending on a stream is fine; on a unary call a bad argument; on nothing NotFound.
            "(call $expect (call $grpc_send (i32.load (i32.const 304)) (i32.const 16) (i32.const 5) (i32.const 0)) (i32.const 0))",
            "(call $expect (call $grpc_send (i32.load (i32.const 300)) (i32.const 16) (i32.const 5) (i32.const 0)) (i32.const 2))",
            "(call $expect (call $grpc_send (i32.const 999) (i32.const 16) (i32.const 5) (i32.const 0)) (i32.const 1))",
            // Closing a stream keeps it (the peer still answers); closing a call ends it.
            "(call $expect (call $grpc_close (i32.load (i32.const 304))) (i32.const 0))",
            "(call $expect (call $grpc_send (i32.load (i32.const 304)) (i32.const 16) (i32.const 5) (i32.const 1)) (i32.const 0))",
            "(call $expect (call $grpc_close (i32.load (i32.const 300))) (i32.const 0))",
            "(call $expect (call $grpc_cancel (i32.load (i32.const 300))) (i32.const 1))",
            // Cancelling ends a stream; unknown tokens are NotFound.
            "(call $expect (call $grpc_cancel (i32.load (i32.const 304))) (i32.const 0))",
            "(call $expect (call $grpc_close (i32.load (i32.const 304))) (i32.const 1))",
            "(call $expect (call $grpc_cancel (i32.const 999)) (i32.const 1))",
            // A bad pointer is InvalidMemoryAccess.
            "(call $expect (call $grpc_call (i32.const 80) (i32.const 8) (i32.const 64) (i32.const 5) (i32.const 48) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 65534) (i32.const 5) (i32.const 1000) (i32.const 300)) (i32.const 6))",
        ]),
    );
}

#[test]
fn a_grpc_call_to_an_unknown_cluster_is_a_parse_failure() {
    let host = Host::new(HostOptions { upstreams: Some(vec!["known".into()]), ..HostOptions::default() }).unwrap();
    let plugin = module_in(
        &host,
        "vm",
        &checks(&[
            "(call $expect (call $grpc_call (i32.const 80) (i32.const 8) (i32.const 64) (i32.const 5) (i32.const 48) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 1000) (i32.const 300)) (i32.const 4))",
        ]),
    );
    start(&host, plugin);
}

/// Shutdown as Envoy does it: `proxy_on_done` on each root context; one
/// answering false stays until it calls `proxy_done` (here from a tick),
/// then gets `proxy_on_delete`. The module records what happened in shared
/// data: "key" = the proxy_done status seen in the tick, "queue" = deleted.
#[test]
fn proxy_done_finishes_a_root_context_that_deferred_its_shutdown() {
    let host = Host::new(HostOptions::default()).unwrap();
    let plugin = module_in(
        &host,
        "shutdown",
        r#"
        (global $shutting_down (mut i32) (i32.const 0))
        (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
        (func (export "proxy_on_done") (param i32) (result i32)
          (global.set $shutting_down (i32.const 1))
          (i32.const 0))
        (func (export "proxy_on_tick") (param i32)
          ;; Before shutdown nothing waits: NotFound (1). After: Ok (0).
          (i32.store8 (i32.const 600) (i32.add (i32.const 48) (call $done)))
          (drop (call $set_data (i32.const 48) (i32.const 3) (i32.const 600) (i32.const 1) (i32.const 0))))
        (func (export "proxy_on_delete") (param i32)
          (drop (call $set_data (i32.const 64) (i32.const 5) (i32.const 128) (i32.const 3) (i32.const 0))))
        "#,
    );
    let (mut thread, _, handle) = start(&host, plugin);
    let instance = thread.instance(handle);
    let recorded = |key: &[u8]| host.shared_data().get("shutdown", key).ok().map(|(v, _)| v);
    thread.on_tick(instance, 1);
    assert_eq!(recorded(b"key").as_deref(), Some(&b"1"[..]), "proxy_done before shutdown is NotFound");
    assert_eq!(thread.begin_shutdown(), 1, "the root context deferred its end");
    assert_eq!(thread.pending_shutdown(), 1);
    assert_eq!(recorded(b"queue"), None, "not deleted yet");
    thread.on_tick(instance, 1);
    assert_eq!(recorded(b"key").as_deref(), Some(&b"0"[..]), "proxy_done while pending is Ok");
    assert_eq!(thread.pending_shutdown(), 0);
    assert_eq!(recorded(b"queue").as_deref(), Some(&b"yes"[..]), "proxy_on_delete followed proxy_done");
}
