//! Micro-benchmarks of the host: the Wasm boundary, header-map operations, a stream's
//! lifecycle, shared queues, instantiation and compilation.
//!
//! `cargo bench -p ferry-host` (after `cargo xtask build-plugins`, for the
//! benchmarks that load the example plugins). Numbers and targets are in
//! docs/benchmarks.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry_host::{
    Compilation, FailurePolicy, HeaderMap, Host, HostOptions, HttpStream, Limits, ModuleSpec, Plugin, PluginHandle,
    QueueReady, StreamCallback, ThreadMailbox, WasmThread,
};

/// A mailbox that hands notices to a channel (or drops them).
struct ChannelMailbox(Option<mpsc::Sender<QueueReady>>);

impl ThreadMailbox for ChannelMailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(notice);
        }
    }
}

/// A module with no-op callbacks and a few loops over host calls.
const WAT: &str = r#"(module
  (import "env" "proxy_get_log_level" (func $log_level (param i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "queue")
  (data (i32.const 32) "0123456789abcdef0123456789abcdef")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  ;; A bump allocator that restarts at every callback: benchmarks only.
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $register (i32.const 16) (i32.const 5) (i32.const 64)))
    (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
  ;; Tick: 1000 calls of the cheapest host function.
  (func (export "proxy_on_tick") (param i32) (local $i i32)
    (global.set $heap (i32.const 4096))
    (loop $l
      (drop (call $log_level (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000)))))
  ;; Request headers: read all pairs once.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 4096))
    (drop (call $pairs (i32.const 0) (i32.const 128) (i32.const 132)))
    (i32.const 0))
  ;; Response headers: enqueue then dequeue one 32-byte item, same thread.
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 4096))
    (drop (call $enqueue (i32.load (i32.const 64)) (i32.const 32) (i32.const 32)))
    (drop (call $dequeue (i32.load (i32.const 64)) (i32.const 128) (i32.const 132)))
    (i32.const 0))
  ;; Queue ready: take one item.
  (func (export "proxy_on_queue_ready") (param i32 i32)
    (global.set $heap (i32.const 4096))
    (drop (call $dequeue (local.get 1) (i32.const 128) (i32.const 132))))
)"#;

fn plugin(host: &Arc<Host>, vm_id: &str, code: Bytes) -> Arc<Plugin> {
    let spec = ModuleSpec {
        vm_id: vm_id.into(),
        vm_configuration: Bytes::new(),
        code,
        origin: vm_id.into(),
        environment: Vec::new(),
        allowed_capabilities: Vec::new(),
    };
    Plugin::new(vm_id, "", Bytes::new(), host.load_module(spec).unwrap(), FailurePolicy::FailClosed, Limits::default())
}

fn started(host: &Arc<Host>, plugin: Arc<Plugin>, mailbox: ChannelMailbox) -> (WasmThread, PluginHandle) {
    let mut thread = WasmThread::new(host.clone(), Arc::new(mailbox));
    let handle = thread.add_plugin(plugin);
    thread.start().unwrap();
    (thread, handle)
}

fn stream_with(headers: usize) -> HttpStream {
    let mut map = HeaderMap::new();
    for (n, v) in [(":authority", "localhost:18000"), (":path", "/"), (":method", "GET"), (":scheme", "http")] {
        map.append_lowercase(n.to_owned(), v.to_owned());
    }
    for i in 4..headers {
        map.append_lowercase(format!("x-header-{i}"), "a typical header value".to_owned());
    }
    HttpStream { request_headers: map, ..HttpStream::default() }
}

fn example_plugin(file: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip1/release").join(file);
    Bytes::from(
        std::fs::read(&path).unwrap_or_else(|_| panic!("{} is missing: run cargo xtask build-plugins", path.display())),
    )
}

fn go_plugin() -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/go-plugins/go_hello.wasm");
    Bytes::from(
        std::fs::read(&path).unwrap_or_else(|_| panic!("{} is missing: run cargo xtask build-plugins", path.display())),
    )
}

fn boundary(c: &mut Criterion) {
    let host = Host::new(HostOptions::default()).unwrap();
    let (mut thread, handle) = started(&host, plugin(&host, "bench", Bytes::from(WAT)), ChannelMailbox(None));
    let instance = thread.instance(handle);
    let mut group = c.benchmark_group("boundary");
    // One tick = one host→Wasm callback plus 1000 Wasm→host calls.
    group.throughput(Throughput::Elements(1000));
    group.bench_function("wasm_to_host_call_x1000", |b| b.iter(|| thread.on_tick(instance, 1)));
    group.finish();
}

fn streams(c: &mut Criterion) {
    let host = Host::new(HostOptions::default()).unwrap();
    let (mut thread, handle) = started(&host, plugin(&host, "bench", Bytes::from(WAT)), ChannelMailbox(None));
    let mut group = c.benchmark_group("stream");
    for headers in [8, 64] {
        let stream = ferry_host::share(stream_with(headers));
        let context = thread.create_http_stream(handle).unwrap();
        group.bench_function(format!("on_request_headers_reading_{headers}_pairs"), |b| {
            b.iter(|| thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap())
        });
        thread.finish_http_stream(context, &stream);
    }
    let stream = ferry_host::share(stream_with(8));
    group.bench_function("lifecycle_create_headers_log_done_delete", |b| {
        b.iter(|| {
            let context = thread.create_http_stream(handle).unwrap();
            black_box(thread.stream_callback(&context, StreamCallback::RequestHeaders, &stream, true).unwrap());
            thread.finish_http_stream(context, &stream);
        })
    });
    let context = thread.create_http_stream(handle).unwrap();
    group.bench_function("queue_enqueue_then_dequeue_same_thread", |b| {
        b.iter(|| thread.stream_callback(&context, StreamCallback::ResponseHeaders, &stream, true).unwrap())
    });
    group.finish();
}

/// The header-map operations a header-rewriting filter makes per request
/// (the conformance bench's C case): replace, add, remove and the size a
/// plugin asks for, on a browser-sized request.
fn header_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_map");
    let request = stream_with(12).request_headers;
    group.bench_function("replace_existing_of_12", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |map| map.replace(black_box(b"X-Header-7"), b"a new value"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("remove_of_12", |b| {
        b.iter_batched_ref(|| request.clone(), |map| map.remove(black_box(b"x-header-7")), BatchSize::SmallInput)
    });
    group.bench_function("add_to_12", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |map| map.add(black_box(b"x-added"), b"a new value"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("byte_size_of_12", |b| b.iter(|| black_box(&request).byte_size()));
    group.finish();
}

/// Items enqueued on one thread (through the host's API, as a filter's
/// `proxy_enqueue_shared_queue` does) and delivered to a VM on another
/// thread, one `proxy_on_queue_ready` each, which dequeues it.
fn cross_thread(c: &mut Criterion) {
    let host = Host::new(HostOptions::default()).unwrap();
    let receiver = plugin(&host, "receiver", Bytes::from(WAT));
    let (tx, rx) = mpsc::channel::<QueueReady>();
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let consumer_host = host.clone();
    std::thread::spawn(move || {
        let (mut thread, _) = started(&consumer_host, receiver, ChannelMailbox(Some(tx)));
        ready_tx.send(()).unwrap();
        let mut delivered = 0u64;
        while let Ok(notice) = rx.recv() {
            thread.on_queue_ready(notice);
            delivered += 1;
            if delivered.is_multiple_of(10_000) {
                let _ = done_tx.send(delivered);
            }
        }
    });
    ready_rx.recv().unwrap();
    let queues = host.shared_queues();
    let token = queues.resolve("receiver", "queue").unwrap();
    let item = Bytes::from_static(b"{\"key\": \":authority\",\"value\": \"localhost:18000\"}");
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(10_000));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("cross_thread_delivery_x10000", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                for _ in 0..10_000 {
                    queues.enqueue(token, &item).unwrap();
                }
                done_rx.recv().unwrap();
            }
            start.elapsed()
        })
    });
    group.finish();
    assert_eq!(queues.len(token), Some(0), "every item was dequeued");
}

fn loading(c: &mut Criterion) {
    let sender = example_plugin("shared_queue_sender.wasm");
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("instantiate_and_start_sdk_plugin", |b| {
        let host = Host::new(HostOptions::default()).unwrap();
        let p = plugin(&host, "sender", sender.clone());
        b.iter(|| started(&host, p.clone(), ChannelMailbox(None)))
    });
    group.bench_function("instantiate_and_start_minimal_module", |b| {
        let host = Host::new(HostOptions::default()).unwrap();
        let p = plugin(&host, "bench", Bytes::from(WAT));
        b.iter(|| started(&host, p.clone(), ChannelMailbox(None)))
    });
    group.bench_function("compile_sdk_plugin_no_cache", |b| {
        b.iter_batched(
            || Host::new(HostOptions::default()).unwrap(),
            |host| plugin(&host, "sender", sender.clone()),
            BatchSize::PerIteration,
        )
    });
    // The same with the baseline compiler (Winch), and the Go test plugin
    // (2.5 MB) with each: what tiered compilation trades.
    let baseline = || Host::new(HostOptions { compilation: Compilation::Baseline, ..HostOptions::default() }).unwrap();
    group.bench_function("compile_sdk_plugin_baseline_no_cache", |b| {
        b.iter_batched(baseline, |host| plugin(&host, "sender", sender.clone()), BatchSize::PerIteration)
    });
    let go = go_plugin();
    group.bench_function("compile_go_plugin_no_cache", |b| {
        b.iter_batched(
            || Host::new(HostOptions::default()).unwrap(),
            |host| plugin(&host, "go", go.clone()),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("compile_go_plugin_baseline_no_cache", |b| {
        b.iter_batched(baseline, |host| plugin(&host, "go", go.clone()), BatchSize::PerIteration)
    });
    let cache = std::env::temp_dir().join(format!("ferry-bench-cache-{}", std::process::id()));
    let cached = || Host::new(HostOptions { module_cache: Some(cache.clone()), ..HostOptions::default() }).unwrap();
    plugin(&cached(), "sender", sender.clone()); // fill the cache
    group.bench_function("compile_sdk_plugin_cache_warm", |b| {
        b.iter_batched(cached, |host| plugin(&host, "sender", sender.clone()), BatchSize::PerIteration)
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&cache);
}

criterion_group!(benches, boundary, streams, header_maps, cross_thread, loading);
criterion_main!(benches);
