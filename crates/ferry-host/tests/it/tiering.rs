//! Compilation modes: baseline code (Winch) keeps every limit optimised
//! code has, and tiered compilation moves a VM from baseline to optimised
//! code without failing or losing a stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_host::{
    Compilation, FailurePolicy, HeaderMap, Host, HostOptions, HttpStream, InstanceId, Limits, Plugin, PluginHandle,
    QueueReady, StreamCallback, ThreadMailbox, Tier, Verdict, WasmThread,
};

struct NoMailbox;

impl ThreadMailbox for NoMailbox {
    fn post_queue_ready(&self, _: QueueReady) {}
}

/// The test module, compiled: [`PLUGIN`] plus [`padding`].
fn module() -> Vec<u8> {
    wat::parse_str(PLUGIN.replace("(; padding ;)", &padding())).unwrap()
}

/// Functions nobody calls, which make the optimising compiler take
/// (measured) about five times as long as the baseline compiler, and ten
/// times with the one thread it gets in tiered mode on two cores: the
/// first stream opens long before the optimised code is ready.
fn padding() -> String {
    let mut wat = String::new();
    for f in 0..400 {
        wat.push_str(&format!(
            "(func $pad{f} (param $a i32) (param $b i32) (result i32) (local $x i32) (local $y i32) (local $z i32)\n"
        ));
        for k in 0..40 {
            wat.push_str(&format!(
                "(local.set $x (i32.add (i32.mul (local.get $a) (i32.const {k})) (local.get $y)))
                 (local.set $y (i32.xor (i32.shl (local.get $x) (i32.const 3)) (local.get $b)))
                 (if (i32.gt_u (local.get $y) (local.get $z))
                   (then (local.set $z (i32.sub (local.get $y) (local.get $x))))
                   (else (local.set $z (i32.add (local.get $z) (i32.const 7)))))
                 (i32.store (i32.and (local.get $z) (i32.const 1020)) (local.get $x))\n"
            ));
        }
        wat.push_str("(local.get $z))\n");
    }
    wat
}

/// Memory, a bump allocator, the ABI marker; request headers go on, and
/// response headers trap when their `:path` (the test puts one there) is `/trap` (its
/// first byte after the slash is `t`).
const PLUGIN: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) ":path")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $get (i32.const 2) (i32.const 16) (i32.const 5) (i32.const 32) (i32.const 36)))
    (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 32)) (i32.const 1))) (i32.const 116))
      (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (loop br 0) (i32.const 0))
  (; padding ;)
)"#;

fn host(compilation: Compilation) -> Arc<Host> {
    Host::new(HostOptions { compilation, tier_up_wait: Duration::ZERO, ..HostOptions::default() }).unwrap()
}

fn thread(host: &Arc<Host>, limits: Limits) -> (WasmThread, PluginHandle) {
    let module = host.load_module(ferry_host::module_spec("vm", module(), "test")).unwrap();
    let mut thread = WasmThread::new(host.clone(), Arc::new(NoMailbox));
    let handle = thread.add_plugin(Plugin::new("plugin", "", Bytes::new(), module, FailurePolicy::FailClosed, limits));
    thread.start().unwrap();
    (thread, handle)
}

fn stream(path: &str) -> HttpStream {
    let mut headers = HeaderMap::new();
    headers.add(b":path", path.as_bytes());
    HttpStream { request_headers: headers.clone(), response_headers: headers, ..HttpStream::default() }
}

fn tier(thread: &WasmThread) -> Option<Tier> {
    thread.plugins().next().unwrap().2
}

/// Waits (at most a minute: debug builds compile slowly) for the module's
/// optimised code.
fn wait_optimized(thread: &WasmThread, handle: PluginHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !thread.plugin(handle).module.is_optimized() {
        assert!(Instant::now() < deadline, "no optimised code after a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn baseline_code_is_interrupted_at_its_callback_deadline() {
    let limits = Limits { callback_deadline: Some(Duration::from_millis(50)), ..Limits::default() };
    let (mut thread, handle) = thread(&host(Compilation::Baseline), limits);
    assert_eq!(tier(&thread), Some(Tier::Baseline));
    let context = thread.create_http_stream(handle).unwrap();
    let started = Instant::now();
    let failure = thread
        .stream_callback(&context, StreamCallback::RequestBody, &ferry_host::share(stream("/")), true)
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "interrupted after {:?}", started.elapsed());
    assert!(failure.reason.contains("deadline"), "{failure}");
}

#[test]
fn a_tiered_vm_moves_to_optimised_code_and_its_old_instance_finishes_its_streams() {
    let (mut thread, handle) = thread(&host(Compilation::Tiered), Limits::default());
    assert_eq!(tier(&thread), Some(Tier::Baseline), "no wait: the VM starts on baseline code");

    // A stream opened on baseline code...
    let first = thread.create_http_stream(handle).unwrap();
    assert_eq!(tier(&thread), Some(Tier::Baseline), "optimised code ready before the first stream: pad more");
    let first_stream = ferry_host::share(stream("/"));
    assert_eq!(
        thread.stream_callback(&first, StreamCallback::RequestHeaders, &first_stream, true).unwrap(),
        Verdict::Continue
    );
    wait_optimized(&thread, handle);
    thread.take_effects();

    // ...the next one starts a new instance on the optimised code...
    let second = thread.create_http_stream(handle).unwrap();
    assert_eq!(tier(&thread), Some(Tier::Optimized));
    assert_ne!(second.instance(), first.instance());
    let effects = thread.take_effects();
    assert!(effects.code_changed, "the change is reported");
    assert!(effects.retired.is_empty(), "the old instance still has a stream: {:?}", effects.retired);

    // ...while the first goes on in the old one, which ends with it.
    assert_eq!(
        thread.stream_callback(&first, StreamCallback::ResponseHeaders, &first_stream, true).unwrap(),
        Verdict::Continue
    );
    thread.finish_http_stream(first, &first_stream);
    assert_eq!(thread.take_effects().retired, vec![first_instance(&second)]);

    let second_stream = ferry_host::share(stream("/"));
    thread.stream_callback(&second, StreamCallback::RequestHeaders, &second_stream, true).unwrap();
    thread.finish_http_stream(second, &second_stream);
    assert!(thread.take_effects().retired.is_empty(), "the live instance stays");
}

/// The instance before the one `context` lives in.
fn first_instance(context: &ferry_host::StreamContext) -> InstanceId {
    InstanceId { generation: context.instance().generation - 1, ..context.instance() }
}

#[test]
fn a_failure_in_a_retiring_instance_fails_only_its_own_stream() {
    let (mut thread, handle) = thread(&host(Compilation::Tiered), Limits::default());
    let old = thread.create_http_stream(handle).unwrap();
    assert_eq!(tier(&thread), Some(Tier::Baseline), "optimised code ready before the first stream: pad more");
    let old_stream = ferry_host::share(stream("/trap"));
    thread.stream_callback(&old, StreamCallback::RequestHeaders, &old_stream, true).unwrap();
    wait_optimized(&thread, handle);
    let live = thread.create_http_stream(handle).unwrap();
    thread.take_effects();

    let failure = thread.stream_callback(&old, StreamCallback::ResponseHeaders, &old_stream, true).unwrap_err();
    assert!(failure.reason.contains("unreachable"), "{failure}");
    assert_eq!(thread.take_effects().retired, vec![old.instance()], "the old instance is gone");

    // The live instance is untouched: its stream goes on, new ones open.
    let live_stream = ferry_host::share(stream("/"));
    thread.stream_callback(&live, StreamCallback::ResponseHeaders, &live_stream, true).unwrap();
    assert_eq!(thread.health(handle).name(), "running");
    assert_eq!(tier(&thread), Some(Tier::Optimized));
    thread.create_http_stream(handle).unwrap();
}
