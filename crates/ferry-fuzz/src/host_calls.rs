//! Host functions driven by a fuzzed guest.
//!
//! One module, compiled once, interprets its plugin configuration as a
//! program: a function byte (an index into the host's table of functions,
//! modulo its length), then each argument (4 bytes, or 8 for an `i64`,
//! little-endian), again and again. Arguments below 2^31 are taken modulo
//! the module's memory (128 KiB), so most point into it; others stay wild.
//! The program runs in `proxy_on_request_headers`, `proxy_on_response_headers`
//! and `proxy_on_log` of one stream, so each host function meets each phase.
//! The host must never panic, whatever the calls; a trap or a deadline is
//! the plugin's failure, not a bug.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ferry_host::{
    FailurePolicy, HeaderMap, Host, HostOptions, HttpStream, Limits, Param, Plugin, PluginModule, QueueReady,
    StreamCallback, ThreadMailbox, WasmThread, module_spec,
};

/// Notifications go nowhere: each input starts afresh.
struct Discard;

impl ThreadMailbox for Discard {
    fn post_queue_ready(&self, _: QueueReady) {}
}

struct Target {
    host: Arc<Host>,
    module: Arc<PluginModule>,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let host = Host::new(HostOptions::default()).expect("a host");
        let module = host.load_module(module_spec("fuzz", interpreter(), "the fuzz interpreter")).expect("it loads");
        Target { host, module }
    })
}

/// Runs one program.
pub fn host_calls(data: &[u8]) {
    let target = target();
    // Short deadlines and a small memory: a loop or a bomb fails fast.
    let limits = Limits {
        callback_deadline: Some(Duration::from_millis(50)),
        start_deadline: Some(Duration::from_millis(200)),
        memory_bytes: 4 << 20,
    };
    let plugin =
        Plugin::new("fuzz", "", Bytes::copy_from_slice(data), target.module.clone(), FailurePolicy::FailClosed, limits);
    let mut thread = WasmThread::new(target.host.clone(), Arc::new(Discard));
    let handle = thread.add_plugin(plugin);
    if thread.start().is_err() {
        return;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in [(":authority", "fuzz"), (":path", "/"), (":method", "GET"), ("x-fuzz", "1")] {
        headers.add(name.as_bytes(), value.as_bytes());
    }
    let stream = ferry_host::share(HttpStream { request_headers: headers, ..HttpStream::default() });
    let Ok(context) = thread.create_http_stream(handle) else { return };
    if thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).is_ok() {
        stream.borrow_mut().response_headers.add(b":status", b"200");
        let _ = thread.stream_callback(&context, StreamCallback::ResponseHeaders, &stream, true);
    }
    thread.finish_http_stream(context, &stream);
    let _ = thread.take_effects();
}

/// The interpreter module, generated from the host's table of functions.
fn interpreter() -> String {
    let functions = ferry_host::HOST_FUNCTIONS;
    let mut imports = String::new();
    for (i, f) in functions.iter().enumerate() {
        let params: Vec<&str> = f.params.iter().map(|p| if *p == Param::I64 { "i64" } else { "i32" }).collect();
        imports.push_str(&format!(
            "  (import \"env\" \"{}\" (func $f{i} (param {}) (result i32)))\n",
            f.name,
            params.join(" ")
        ));
    }
    // Nested blocks, innermost first: br_table jumps to the end of block
    // `$c<op>`, after which op's code runs and loops back.
    let labels: Vec<String> = (0..functions.len()).map(|i| format!("$c{i}")).collect();
    let mut dispatch = String::new();
    for label in labels.iter().rev() {
        dispatch.push_str(&format!("(block {label} "));
    }
    dispatch.push_str(&format!("(br_table {} (local.get $op))", labels.join(" ")));
    for (i, f) in functions.iter().enumerate() {
        let need: i32 = f.params.iter().map(|p| if *p == Param::I64 { 8 } else { 4 }).sum();
        let mut args = String::new();
        let mut offset = 0;
        for p in f.params {
            match p {
                Param::I32 => {
                    args.push_str(&format!(" (call $arg (i32.load offset={offset} (local.get $pc)))"));
                    offset += 4;
                }
                Param::I64 => {
                    args.push_str(&format!(" (i64.load offset={offset} (local.get $pc))"));
                    offset += 8;
                }
            }
        }
        dispatch.push_str(&format!(
            ")\n      (br_if $done (i32.gt_u (i32.add (local.get $pc) (i32.const {need})) (local.get $end)))\n      \
             (drop (call $f{i}{args}))\n      (local.set $pc (i32.add (local.get $pc) (i32.const {need})))\n      (br $next)\n      "
        ));
    }
    format!(
        r#"(module
{imports}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $program (mut i32) (i32.const 0))
  (global $length (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  ;; A bump allocator in the upper page that starts over when it is full.
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $n)) (i32.const 131072))
      (then (global.set $heap (i32.const 65536))))
    (if (i32.gt_u (local.get $n) (i32.const 65536)) (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  ;; An argument: below 2^31, somewhere in memory; else as it is.
  (func $arg (param $v i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $v) (i32.const 0))
      (then (local.get $v))
      (else (i32.rem_u (local.get $v) (i32.const 131072)))))
  ;; The program is the plugin configuration, copied once into memory.
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (if (i32.eqz (call $f{get_buffer} (i32.const 7) (i32.const 0) (i32.const 16384) (i32.const 0) (i32.const 4)))
      (then
        (global.set $program (i32.load (i32.const 0)))
        (global.set $length (i32.load (i32.const 4)))))
    (i32.const 1))
  (func $run (local $pc i32) (local $end i32) (local $op i32)
    (local.set $pc (global.get $program))
    (local.set $end (i32.add (global.get $program) (global.get $length)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $pc) (local.get $end)))
        (local.set $op (i32.rem_u (i32.load8_u (local.get $pc)) (i32.const {count})))
        (local.set $pc (i32.add (local.get $pc) (i32.const 1)))
      {dispatch})))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $run) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $run) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $run)))
"#,
        get_buffer = functions.iter().position(|f| f.name == "proxy_get_buffer_bytes").expect("in the table"),
        count = functions.len(),
    )
}
