//! Containment at the host: failure policies, restarts with backoff, the
//! held-failed state, callback and start deadlines, the memory limit,
//! host calls from inside the allocator, and events for a replaced
//! instance — each against a hand-written module (WAT).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_host::{
    Backoff, Cancelled, FailurePolicy, HeaderMap, Health, HoldPolicy, Host, HostOptions, HttpStream, Limits,
    ModuleSpec, Plugin, PluginHandle, QueueReady, StreamCallback, ThreadMailbox, Verdict, WasmThread,
};

/// Records posted notifications instead of delivering them.
#[derive(Default)]
struct Mailbox(Mutex<Vec<QueueReady>>);

impl ThreadMailbox for Mailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        self.0.lock().unwrap().push(notice);
    }
}

impl Mailbox {
    fn take(&self) -> Vec<QueueReady> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// Memory, a bump allocator and the ABI marker.
const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func $alloc (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
"#;

fn reload(base_ms: u64) -> FailurePolicy {
    FailurePolicy::FailReload(Backoff { base: Duration::from_millis(base_ms), max: Duration::from_secs(10) })
}

struct Setup {
    host: Arc<Host>,
    thread: WasmThread,
    mailbox: Arc<Mailbox>,
    handle: PluginHandle,
}

fn setup_with(host: Arc<Host>, imports: &str, body: &str, policy: FailurePolicy, limits: Limits) -> Setup {
    let wat = format!("(module {imports} {PRELUDE} {body})");
    let spec = ModuleSpec {
        vm_id: "vm".into(),
        vm_configuration: Bytes::new(),
        code: Bytes::from(wat),
        origin: "test".into(),
        environment: Vec::new(),
        allowed_capabilities: Vec::new(),
    };
    let module = host.load_module(spec).unwrap();
    let plugin = Plugin::new("plugin", "", Bytes::new(), module, policy, limits);
    let mailbox = Arc::new(Mailbox::default());
    let mut thread = WasmThread::new(host.clone(), mailbox.clone());
    let handle = thread.add_plugin(plugin);
    thread.start().unwrap_or_else(|e| panic!("{e}"));
    Setup { host, thread, mailbox, handle }
}

fn setup(imports: &str, body: &str, policy: FailurePolicy) -> Setup {
    setup_with(Host::new(HostOptions::default()).unwrap(), imports, body, policy, Limits::default())
}

fn request() -> HttpStream {
    let mut headers = HeaderMap::new();
    headers.add(b":path", b"/");
    HttpStream { request_headers: headers, ..HttpStream::default() }
}

impl Setup {
    fn plugin(&self) -> &Arc<Plugin> {
        self.thread.plugin(self.handle)
    }

    fn request_headers(&mut self) -> Result<Verdict, ferry_host::PluginFailure> {
        let context = self.thread.create_http_stream(self.handle)?;
        self.thread.stream_callback(&context, StreamCallback::RequestHeaders, &ferry_host::share(request()), true)
    }

    fn stat(&self, name: &str) -> u64 {
        self.plugin().stats.snapshot().into_iter().find(|(n, _)| *n == name).unwrap().1
    }
}

const CALL_IMPORT: &str = r#"
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// `$call_c`: an HTTP call to cluster "c" with :method, :path and :authority.
const CALLS: &str = r#"
  (data (i32.const 16) "c")
  (data (i32.const 32) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00x\00")
  (func $call_c
    (drop (call $call (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 61) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 8))))
"#;

/// On request headers: trap.
const TRAPS: &str = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)"#;

#[test]
fn fail_reload_replaces_a_failed_instance_after_its_backoff() {
    let mut s = setup("", TRAPS, reload(200));
    assert!(s.request_headers().is_err());
    let restarts = s.thread.take_effects().restarts;
    assert_eq!(restarts.len(), 1, "one restart scheduled");
    // Within the backoff streams fail, and that is counted.
    let failure = s.request_headers().unwrap_err();
    assert!(failure.reason.contains("a new instance starts in"), "{failure}");
    assert!(!failure.fail_open);
    assert_eq!(s.stat("vm_reload_backoff"), 1);
    assert!(matches!(s.thread.health(s.handle), Health::Restarting { .. }));
    std::thread::sleep(restarts[0].saturating_duration_since(Instant::now()));
    s.thread.restart_due(Instant::now());
    assert_eq!(s.thread.health(s.handle), Health::Running);
    assert_eq!(s.thread.instance(s.handle).generation, 1);
    assert_eq!(s.stat("vm_reload_success"), 1);
    assert_eq!(s.stat("failures"), 1);
}

#[test]
fn an_instance_that_ran_longer_than_the_backoff_is_replaced_at_once() {
    let mut s = setup("", TRAPS, reload(50));
    std::thread::sleep(Duration::from_millis(100));
    assert!(s.request_headers().is_err());
    // The next stream starts the new instance itself.
    let context = s.thread.create_http_stream(s.handle).unwrap();
    assert_eq!(context.instance().generation, 1);
}

#[test]
fn fail_closed_keeps_failing_until_the_configuration_changes() {
    let mut s = setup("", TRAPS, FailurePolicy::FailClosed);
    assert!(s.request_headers().is_err());
    assert!(s.thread.take_effects().restarts.is_empty(), "no restart");
    s.thread.restart_due(Instant::now() + Duration::from_secs(3600));
    let failure = s.request_headers().unwrap_err();
    assert!(!failure.fail_open);
    assert_eq!(s.thread.health(s.handle), Health::Failed);
}

#[test]
fn fail_open_failures_let_the_stream_go_on() {
    let mut s = setup("", TRAPS, FailurePolicy::FailOpen);
    assert!(s.request_headers().unwrap_err().fail_open, "the stream that failed goes on");
    assert!(s.request_headers().unwrap_err().fail_open, "and so do later ones");
    assert_eq!(s.thread.health(s.handle), Health::Failed);
}

#[test]
fn a_plugin_that_keeps_failing_is_held_failed() {
    let options =
        HostOptions { hold: HoldPolicy { failures: 3, window: Duration::from_secs(60) }, ..Default::default() };
    let host = Host::new(options).unwrap();
    let mut s = setup_with(host, "", TRAPS, reload(0), Limits::default());
    for _ in 0..3 {
        assert!(s.request_headers().is_err());
        s.thread.restart_due(Instant::now());
    }
    assert_eq!(s.thread.health(s.handle), Health::HeldFailed);
    assert_eq!(s.stat("held_failed"), 1);
    assert_eq!(s.stat("vm_reload_success"), 2);
    let failure = s.request_headers().unwrap_err();
    assert!(failure.reason.contains("held failed"), "{failure}");
}

#[test]
fn a_callback_past_its_deadline_is_interrupted_and_fails_only_itself() {
    let limits = Limits { callback_deadline: Some(Duration::from_millis(50)), ..Limits::default() };
    let body = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop br 0) i32.const 0)"#;
    let mut s = setup_with(Host::new(HostOptions::default()).unwrap(), "", body, reload(0), limits);
    let started = Instant::now();
    let failure = s.request_headers().unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "interrupted after {took:?}");
    assert!(took >= Duration::from_millis(50), "not before its deadline: {took:?}");
    assert!(failure.reason.contains("proxy_on_request_headers") && failure.reason.contains("deadline"), "{failure}");
    assert_eq!(s.stat("deadline_exceeded"), 1);
}

#[test]
fn start_code_past_the_start_deadline_fails_start_naming_the_plugin() {
    let limits = Limits { start_deadline: Some(Duration::from_millis(100)), ..Limits::default() };
    let wat = format!(r#"(module {PRELUDE} (func (export "_initialize") (loop br 0)))"#);
    let host = Host::new(HostOptions::default()).unwrap();
    let module = host.load_module(ferry_host::module_spec("looper", wat, "test")).unwrap();
    let mut thread = WasmThread::new(host, Arc::new(Mailbox::default()));
    thread.add_plugin(Plugin::new("looper", "", Bytes::new(), module, reload(0), limits));
    let error = thread.start().unwrap_err().to_string();
    assert!(error.contains("looper") && error.contains("_initialize") && error.contains("deadline"), "{error}");
}

#[test]
fn memory_cannot_grow_past_the_limit() {
    let limits = Limits { memory_bytes: 4 << 20, ..Limits::default() };
    // 1 page now; 100 more (6.4 MiB) fails with -1, 10 more succeed.
    let body = r#"
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (i32.and
          (i32.eq (memory.grow (i32.const 100)) (i32.const -1))
          (i32.eq (memory.grow (i32.const 10)) (i32.const 1))))"#;
    setup_with(Host::new(HostOptions::default()).unwrap(), "", body, reload(0), limits);
}

#[test]
fn host_calls_from_inside_the_allocator_are_refused_except_logging() {
    // The allocator tries to change the request headers while the host is
    // handing them over, and logs; the statuses it got come back as a
    // local response's status: 200 + replace's + 100 × log's.
    let wat = r#"(module
      (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
      (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "x-evil")
      (global $heap (mut i32) (i32.const 4096))
      (global $replaced (mut i32) (i32.const -1))
      (global $logged (mut i32) (i32.const -1))
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
        (global.set $replaced (call $replace (i32.const 0) (i32.const 16) (i32.const 6) (i32.const 16) (i32.const 6)))
        (global.set $logged (call $log (i32.const 2) (i32.const 16) (i32.const 6)))
        global.get $heap local.set $p
        global.get $heap local.get $n i32.add global.set $heap
        local.get $p)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $get_pairs (i32.const 0) (i32.const 32) (i32.const 36)))
        (drop (call $respond
          (i32.add (i32.const 200) (i32.add (global.get $replaced) (i32.mul (global.get $logged) (i32.const 100))))
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
        (i32.const 1)))"#;
    let host = Host::new(HostOptions::default()).unwrap();
    let module = host.load_module(ferry_host::module_spec("vm", wat, "test")).unwrap();
    let mut thread = WasmThread::new(host, Arc::new(Mailbox::default()));
    let handle = thread.add_plugin(Plugin::new("p", "", Bytes::new(), module, reload(0), Limits::default()));
    thread.start().unwrap();
    let context = thread.create_http_stream(handle).unwrap();
    let stream = ferry_host::share(request());
    let verdict = thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap();
    let Verdict::LocalResponse(response) = verdict else { panic!("{verdict:?}") };
    // replace: InternalFailure (10); log: Ok (0).
    assert_eq!(response.status, 210);
    assert!(stream.borrow_mut().request_headers.get(b"x-evil").is_none(), "the map did not change");
}

#[test]
fn a_late_http_call_response_for_a_replaced_instance_is_dropped_and_counted() {
    // `proxy_on_tick` calls; a response traps (it must never be delivered here).
    let body = format!(
        r#"{CALLS} (func (export "proxy_on_tick") (param i32) (call $call_c))
        (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) unreachable) {TRAPS}"#
    );
    let mut s = setup(CALL_IMPORT, &body, reload(0));
    let old = s.thread.instance(s.handle);
    s.thread.on_tick(old, 1);
    let calls = s.thread.take_effects().http_calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].instance, old);
    // The instance fails and is replaced before the response comes.
    assert!(s.request_headers().is_err());
    s.thread.restart_due(Instant::now());
    assert_eq!(s.thread.take_effects().cancelled, [Cancelled::HttpCall { instance: old, token: calls[0].token }]);
    assert_eq!(s.thread.health(s.handle), Health::Running);
    s.thread.on_http_call_response(old, 1, calls[0].token, None, "late");
    assert_eq!(s.thread.health(s.handle), Health::Running, "the new instance never heard of it");
    assert_eq!(s.stat("stale_events"), 1);
    let _ = &s.host;
}

#[test]
fn a_stream_that_ends_cancels_the_calls_it_made() {
    let body = format!(
        r#"{CALLS} (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $call_c) (i32.const 1))
        (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) unreachable)"#
    );
    let mut s = setup(CALL_IMPORT, &body, reload(0));
    let context = s.thread.create_http_stream(s.handle).unwrap();
    let stream = ferry_host::share(request());
    assert_eq!(
        s.thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap(),
        Verdict::Pause(1)
    );
    let call = s.thread.take_effects().http_calls.remove(0);
    let instance = context.instance();
    s.thread.finish_http_stream(context, &stream);
    assert_eq!(s.thread.take_effects().cancelled, [Cancelled::HttpCall { instance, token: call.token }]);
    // A response that still arrives is not delivered.
    s.thread.on_http_call_response(instance, 1, call.token, None, "late");
    assert_eq!(s.thread.health(s.handle), Health::Running);
}

#[test]
fn a_restarted_receiver_registers_again_and_gets_every_item_that_waited() {
    let imports = r#"
      (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
      (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
      (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
    "#;
    // Registers "q"; its first queue notification ever traps (remembered
    // in shared data, which outlives the instance); later ones dequeue.
    let body = r#"
      (data (i32.const 16) "q")
      (data (i32.const 32) "trapped")
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $register (i32.const 16) (i32.const 1) (i32.const 64)))
        (i32.const 1))
      (func (export "proxy_on_queue_ready") (param i32 i32)
        (if (i32.eq (call $get (i32.const 32) (i32.const 7) (i32.const 80) (i32.const 84) (i32.const 88)) (i32.const 1))
          (then
            (drop (call $set (i32.const 32) (i32.const 7) (i32.const 16) (i32.const 1) (i32.const 0)))
            unreachable))
        (drop (call $dequeue (local.get 1) (i32.const 80) (i32.const 84))))"#;
    let mut s = setup(imports, body, reload(0));
    let queues = s.host.shared_queues();
    let token = queues.resolve("vm", "q").unwrap();
    for item in [b"a", b"b", b"c"] {
        queues.enqueue(token, item).unwrap();
    }
    let notices = s.mailbox.take();
    assert_eq!(notices.len(), 3);
    // The first notification traps the receiver; the other two are for
    // the discarded instance: dropped, counted.
    for notice in notices {
        s.thread.on_queue_ready(notice);
    }
    assert_eq!(s.stat("stale_events"), 2);
    assert_eq!(queues.len(token), Some(3), "nothing lost");
    s.thread.restart_due(Instant::now());
    // The new instance registered again and is told about each waiting item.
    let reposted = s.mailbox.take();
    assert_eq!(reposted.len(), 3);
    for notice in reposted {
        assert_eq!(notice.instance, s.thread.instance(s.handle));
        s.thread.on_queue_ready(notice);
    }
    assert_eq!(queues.len(token), Some(0), "all three dequeued once");
    assert_eq!(queues.totals().dequeued, 3);
}

#[test]
fn an_allocator_calling_the_host_cannot_change_what_any_function_is_handing_over() {
    // The allocator tries, each time it runs, to change everything a
    // memory-returning function reads (the request headers, the request
    // body, shared data, the queue, a property); every try is refused
    // (InternalFailure, counted in $refused). Then each memory-returning
    // function runs once and must succeed with what was there before.
    let wat = r#"(module
      (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
      (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_get_shared_data" (func $get_data (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
      (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
      (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
      (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_shared_data" (func $set_data (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
      (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
      (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (data (i32.const 16) ":path")
      (data (i32.const 32) "key")
      (data (i32.const 48) "q")
      (data (i32.const 64) "plugin_name")
      (data (i32.const 80) "compress")
      (data (i32.const 96) "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
      (global $heap (mut i32) (i32.const 65536))
      (global $refused (mut i32) (i32.const 0))
      (global $queue (mut i32) (i32.const 0))
      (func (export "proxy_abi_version_0_2_1"))
      (func $count (param $status i32)
        (if (i32.eq (local.get $status) (i32.const 10))
          (then (global.set $refused (i32.add (global.get $refused) (i32.const 1))))))
      (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
        (call $count (call $set_pairs (i32.const 0) (i32.const 0) (i32.const 0)))
        (call $count (call $replace (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 96) (i32.const 64)))
        (call $count (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 96) (i32.const 64)))
        (call $count (call $set_data (i32.const 32) (i32.const 3) (i32.const 96) (i32.const 64) (i32.const 0)))
        (call $count (call $enqueue (global.get $queue) (i32.const 96) (i32.const 64)))
        (call $count (call $set_property (i32.const 64) (i32.const 11) (i32.const 96) (i32.const 64)))
        (local.set $p (global.get $heap))
        (global.set $heap (i32.add (global.get $heap) (local.get $n)))
        (local.get $p))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $register (i32.const 48) (i32.const 1) (i32.const 8)))
        (global.set $queue (i32.load (i32.const 8)))
        (drop (call $set_data (i32.const 32) (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 0)))
        (drop (call $enqueue (global.get $queue) (i32.const 16) (i32.const 5)))
        (i32.const 1))
      (global $failed (mut i32) (i32.const 0))
      ;; Each must be Ok (0); a non-zero status is added to $failed.
      (func $expect_ok (param $status i32) (global.set $failed (i32.add (global.get $failed) (local.get $status))))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $expect_ok (call $get_pairs (i32.const 0) (i32.const 200) (i32.const 204)))
        (call $expect_ok (call $get_value (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 208) (i32.const 212)))
        (i32.const 0))
      (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (local $failed i32)
        (local.set $failed (global.get $failed))
        (local.set $failed (i32.add (local.get $failed) (call $get_buffer (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 216) (i32.const 220))))
        (local.set $failed (i32.add (local.get $failed) (call $get_data (i32.const 32) (i32.const 3) (i32.const 224) (i32.const 228) (i32.const 232))))
        (local.set $failed (i32.add (local.get $failed) (call $dequeue (global.get $queue) (i32.const 236) (i32.const 240))))
        (local.set $failed (i32.add (local.get $failed) (call $get_property (i32.const 64) (i32.const 11) (i32.const 244) (i32.const 248))))
        (local.set $failed (i32.add (local.get $failed) (call $get_status (i32.const 252) (i32.const 256) (i32.const 260))))
        (local.set $failed (i32.add (local.get $failed) (call $foreign (i32.const 80) (i32.const 8) (i32.const 96) (i32.const 64) (i32.const 264) (i32.const 268))))
        ;; Answer 200 + failures; the refusals go in the body's length.
        (drop (call $respond (i32.add (i32.const 200) (local.get $failed)) (i32.const 0) (i32.const 0)
          (i32.const 96) (global.get $refused) (i32.const 0) (i32.const 0) (i32.const -1)))
        (i32.const 0)))"#;
    let host = Host::new(HostOptions::default()).unwrap();
    let module = host.load_module(ferry_host::module_spec("vm", wat, "test")).unwrap();
    let mut thread = WasmThread::new(host.clone(), Arc::new(Mailbox::default()));
    let handle = thread.add_plugin(Plugin::new("p", "", Bytes::new(), module, reload(0), Limits::default()));
    thread.start().unwrap();
    let context = thread.create_http_stream(handle).unwrap();
    let stream = ferry_host::share(request());
    assert_eq!(
        thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, false).unwrap(),
        Verdict::Continue
    );
    stream.borrow_mut().request_body = b"body".to_vec();
    let verdict = thread.stream_callback(&context, StreamCallback::RequestBody, &stream, true).unwrap();
    let Verdict::LocalResponse(response) = verdict else { panic!("{verdict:?}") };
    assert_eq!(response.status, 200, "every memory-returning function succeeded");
    // Eight functions allocated (the status message is empty: no allocation),
    // six refusals each.
    assert_eq!(response.body.len(), 7 * 6, "every host call from inside the allocator was refused");
    assert_eq!(
        stream.borrow_mut().request_headers.get(b":path").map(|v| &v[..]),
        Some(&b"/"[..]),
        "the headers did not change"
    );
    assert_eq!(stream.borrow_mut().request_body, b"body", "the body did not change");
    assert_eq!(host.shared_data().get("vm", b"key").unwrap().0, ":path", "shared data did not change");
    assert_eq!(host.shared_queues().totals().enqueued, 1, "nothing was enqueued from the allocator");
}

#[test]
fn what_a_failing_callback_asked_for_dies_with_it() {
    // The callback makes an HTTP call, then traps: the call is never sent.
    let body = format!(
        r#"{CALLS} (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $call_c) unreachable)"#
    );
    let mut s = setup(CALL_IMPORT, &body, reload(0));
    assert!(s.request_headers().is_err());
    let effects = s.thread.take_effects();
    assert!(effects.http_calls.is_empty(), "a call from the failed callback would be sent: {effects:?}");
}

#[test]
fn a_thread_shutting_down_takes_no_new_streams_and_starts_no_instance() {
    let body = r#"(func (export "proxy_on_done") (param i32) (result i32) (i32.const 0))"#;
    let mut s = setup("", &format!("{body} {TRAPS}"), reload(0));
    // The root context defers its end; meanwhile a new stream is refused
    // without failing the plugin.
    assert_eq!(s.thread.begin_shutdown(), 1);
    let refused = s.thread.create_http_stream(s.handle).unwrap_err();
    assert!(refused.reason.contains("shutting down"), "{refused}");
    assert_eq!(s.thread.health(s.handle), Health::Running);
    assert_eq!(s.stat("failures"), 0);
    assert_eq!(s.thread.begin_shutdown(), 1, "a second call changes nothing");
    assert!(s.thread.take_effects().restarts.is_empty());
}

#[test]
fn a_failed_restart_is_reported_with_the_asking_plugins_policy() {
    // Two plugins share a VM: `auth` (FAIL_RELOAD) and `extra` (FAIL_OPEN).
    // auth's first request traps; on the restart, extra's
    // proxy_on_configure refuses (it remembers, in shared data, that it
    // started before). auth's request must not fail open.
    let wat = format!(
        r#"(module
      (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
      {PRELUDE}
      (data (i32.const 16) "started")
      (func (export "proxy_on_configure") (param i32 i32) (result i32)
        ;; The plugin configuration is 1 byte: "a" or "e".
        (drop (call $buffer (i32.const 7) (i32.const 0) (i32.const 1) (i32.const 32) (i32.const 36)))
        (if (i32.eq (i32.load8_u (i32.load (i32.const 32))) (i32.const 101))
          (then
            (if (i32.eqz (call $get (i32.const 16) (i32.const 7) (i32.const 40) (i32.const 44) (i32.const 48)))
              (then (return (i32.const 0))))
            (drop (call $set (i32.const 16) (i32.const 7) (i32.const 16) (i32.const 1) (i32.const 0)))))
        (i32.const 1))
      {TRAPS})"#
    );
    let host = Host::new(HostOptions::default()).unwrap();
    let module = host.load_module(ferry_host::module_spec("vm", wat, "test")).unwrap();
    let mut thread = WasmThread::new(host, Arc::new(Mailbox::default()));
    let auth = thread.add_plugin(Plugin::new("auth", "", "a", module.clone(), reload(0), Limits::default()));
    thread.add_plugin(Plugin::new("extra", "", "e", module, FailurePolicy::FailOpen, Limits::default()));
    thread.start().unwrap();
    let context = thread.create_http_stream(auth).unwrap();
    assert!(
        thread.stream_callback(&context, StreamCallback::RequestHeaders, &ferry_host::share(request()), true).is_err()
    );
    let failure = thread.create_http_stream(auth).unwrap_err();
    assert!(failure.reason.contains("proxy_on_configure"), "the restart failed: {failure}");
    assert_eq!(failure.plugin, "auth");
    assert!(!failure.fail_open, "auth fails closed, whatever extra's policy");
}
