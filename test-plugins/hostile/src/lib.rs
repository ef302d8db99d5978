//! A plugin that misbehaves on request, to test that the host contains it.
//!
//! **By request path**, as an HTTP filter with an empty configuration:
//! - `/loop`, `/loop-response`: `loop {}` in the request (response) headers;
//! - `/work/N`: works (spins) for N ms of wall-clock time in the request
//!   headers, then goes on;
//! - `/bomb`: allocates (and touches) memory until allocation fails;
//! - `/trap`: panics;
//! - `/call`: an HTTP call without a timeout to cluster `slow`, and waits
//!   for its answer;
//! - `/late-call`: an HTTP call with a 300 ms timeout to cluster `slow`,
//!   without waiting for it (its failure comes back later);
//! - anything else: goes on, with `x-hostile: ok` on the response.
//!
//! **By plugin configuration** `WHERE:WHAT` (and the VM configuration, for
//! `vm_start`): `WHAT` (`trap`, `loop` or `bomb`) happens in the callback
//! `WHERE`, one of `vm_start`, `configure`, `context_create`,
//! `request_headers`, `request_body`, `request_trailers`,
//! `response_headers`, `response_body`, `response_trailers`, `log`, `done`,
//! `tick` (ticks every 10 ms), `queue_ready` (each request enqueues to the
//! plugin's own queue), `http_call_response` (each request calls cluster
//! `echo` and waits), `grpc_response` (each request makes a unary gRPC call
//! to cluster `grpc`, `test.Echo/Unary`, and waits), `new_connection`,
//! `downstream_data`, `upstream_data`, `downstream_close`,
//! `upstream_close` (the last five make it a network filter). `WHAT` may
//! also be `requeue` for `queue_ready`: the item goes back into the queue,
//! or `work`: it works (spins) for 3 s and goes on.
//!
//! **Other configurations:**
//! - `sender`: the filter only enqueues each request's path (without its
//!   `/`) to the queue (`receiver`, `items`);
//! - `receiver`: registers the queue `items` and logs each item it
//!   dequeues; the item `trap` makes it panic;
//! - `hoard`: registers the queue `items` and never dequeues;
//! - `late_call`: every 50 ms, unless one is pending, calls cluster `slow`
//!   with a 200 ms timeout from the root context, and logs its end;
//! - `hold_then_trap`: as a network filter, holds each new connection
//!   (pauses in `proxy_on_new_connection`), and its root's first tick,
//!   200 ms later, traps;
//! - `loop_on_tick`: ticks every 10 ms, and each tick loops;
//! - `loop_on_start`: `proxy_on_configure` loops.

use std::cell::RefCell;
use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: String::new(), calling: false }) });
}}

thread_local! {
    /// Where and how to misbehave (`WHERE:WHAT`).
    static MISBEHAVE: RefCell<(String, String)> = RefCell::default();
}

/// Callbacks that make the plugin a network filter.
const NETWORK: [&str; 5] = ["new_connection", "downstream_data", "upstream_data", "downstream_close", "upstream_close"];

/// Misbehaves if this is the configured callback.
fn at(here: &str) {
    let what = MISBEHAVE.with(|m| {
        let m = m.borrow();
        (m.0 == here).then(|| m.1.clone())
    });
    match what.as_deref() {
        Some("trap") => panic!("hostile: trap in {here}"),
        Some("loop") => spin(),
        Some("bomb") => bomb(),
        Some("work") => work(Duration::from_secs(3)),
        _ => {}
    }
}

fn misbehaves_in(here: &str) -> bool {
    MISBEHAVE.with(|m| m.borrow().0 == here)
}

fn configure(spec: &str) {
    if let Some((place, what)) = spec.split_once(':') {
        MISBEHAVE.with(|m| *m.borrow_mut() = (place.to_owned(), what.to_owned()));
    }
}

/// Spins until the host interrupts it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Does honest work: spins for `length` of wall-clock time, having logged
/// that it began.
fn work(length: Duration) {
    let started = proxy_wasm::hostcalls::get_current_time().unwrap();
    info!("hostile: working for {length:?}");
    let mut n = 0u64;
    while proxy_wasm::hostcalls::get_current_time().unwrap().duration_since(started).unwrap_or_default() < length {
        for _ in 0..10_000 {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

/// Allocates (and touches) memory until allocation fails.
fn bomb() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1 << 20]);
    }
}

struct Root {
    mode: String,
    /// `late_call`: a call is pending.
    calling: bool,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, _: usize, _: usize) {
        info!("hostile late call {token} ended with {headers} headers");
        self.calling = false;
    }

    fn on_done(&mut self) -> bool {
        true
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        if let Some(config) = self.get_vm_configuration() {
            configure(&String::from_utf8_lossy(&config));
        }
        at("vm_start");
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        self.mode = self.get_plugin_configuration().map(|c| String::from_utf8_lossy(&c).into_owned()).unwrap_or_default();
        configure(&self.mode);
        match self.mode.as_str() {
            "receiver" | "hoard" => {
                let id = self.register_shared_queue("items");
                info!("hostile receiver registered queue items as {id}");
            }
            "loop_on_tick" => self.set_tick_period(Duration::from_millis(10)),
            "late_call" => self.set_tick_period(Duration::from_millis(50)),
            "hold_then_trap" => self.set_tick_period(Duration::from_millis(200)),
            "loop_on_start" => spin(),
            _ => {}
        }
        if misbehaves_in("tick") {
            self.set_tick_period(Duration::from_millis(10));
        }
        if misbehaves_in("queue_ready") {
            self.register_shared_queue("hostile");
        }
        at("configure");
        true
    }

    fn on_tick(&mut self) {
        info!("hostile tick");
        if self.mode == "loop_on_tick" {
            spin();
        }
        if self.mode == "hold_then_trap" {
            panic!("hostile: the VM fails while it holds connections");
        }
        if self.mode == "late_call" && !self.calling {
            let headers = vec![(":method", "GET"), (":path", "/"), (":authority", "slow")];
            self.calling = self.dispatch_http_call("slow", headers, None, vec![], Duration::from_millis(200)).is_ok();
        }
        at("tick");
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if self.mode == "hoard" {
            return;
        }
        if let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            let text = String::from_utf8_lossy(&item).into_owned();
            info!("hostile receiver dequeued {text}");
            if self.mode == "receiver" && text == "trap" {
                panic!("the receiver was asked to trap");
            }
            if self.mode == "queue_ready:requeue" {
                // Back into the queue: another notification, never this call again.
                let _ = self.enqueue_shared_queue(queue_id, Some(&item));
                return;
            }
        }
        at("queue_ready");
    }

    fn get_type(&self) -> Option<ContextType> {
        let network = self.mode == "hold_then_trap" || MISBEHAVE.with(|m| NETWORK.contains(&m.borrow().0.as_str()));
        Some(if network { ContextType::StreamContext } else { ContextType::HttpContext })
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        at("context_create");
        // Resolved per stream: the receiver may have registered after us.
        let queue = match self.mode.as_str() {
            "sender" => self.resolve_shared_queue("receiver", "items"),
            _ if misbehaves_in("queue_ready") => self.resolve_shared_queue("", "hostile"),
            _ => None,
        };
        Some(Box::new(Stream { sender: self.mode == "sender", queue, loop_on_response: false }))
    }

    fn create_stream_context(&self, _: u32) -> Option<Box<dyn StreamContext>> {
        at("context_create");
        Some(Box::new(Connection { hold: self.mode == "hold_then_trap" }))
    }
}

struct Stream {
    sender: bool,
    queue: Option<u32>,
    loop_on_response: bool,
}

impl Context for Stream {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        at("http_call_response");
        self.resume_http_request();
    }

    fn on_grpc_call_response(&mut self, _: u32, _: u32, _: usize) {
        at("grpc_response");
        self.resume_http_request();
    }

    fn on_done(&mut self) -> bool {
        at("done");
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if let Some(queue) = self.queue {
            let item = path.trim_start_matches('/');
            if let Err(status) = self.enqueue_shared_queue(queue, Some(item.as_bytes())) {
                info!("hostile could not enqueue: {status:?}");
            }
        }
        if self.sender {
            return Action::Continue;
        }
        at("request_headers");
        if misbehaves_in("http_call_response") {
            let headers = vec![(":method", "GET"), (":path", "/"), (":authority", "echo")];
            if self.dispatch_http_call("echo", headers, None, vec![], Duration::from_secs(5)).is_ok() {
                return Action::Pause;
            }
        }
        if misbehaves_in("grpc_response") {
            let call = self.dispatch_grpc_call("grpc", "test.Echo", "Unary", vec![], Some(b"hi"), Duration::from_secs(5));
            if call.is_ok() {
                return Action::Pause;
            }
        }
        if let Some(ms) = path.strip_prefix("/work/").and_then(|ms| ms.parse().ok()) {
            work(Duration::from_millis(ms));
        }
        match path.as_str() {
            "/loop" => {
                info!("hostile: looping in the request headers");
                spin()
            }
            "/loop-response" => self.loop_on_response = true,
            "/bomb" => bomb(),
            "/trap" => panic!("trap requested by the client"),
            "/call" | "/late-call" => {
                let headers = vec![(":method", "GET"), (":path", "/"), (":authority", "slow")];
                let (timeout, wait) = match path.as_str() {
                    "/call" => (Duration::ZERO, true),
                    _ => (Duration::from_millis(300), false),
                };
                if self.dispatch_http_call("slow", headers, None, vec![], timeout).is_ok() && wait {
                    return Action::Pause;
                }
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _: usize, _: bool) -> Action {
        at("request_body");
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        at("request_trailers");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.loop_on_response {
            spin();
        }
        at("response_headers");
        self.set_http_response_header("x-hostile", Some("ok"));
        Action::Continue
    }

    fn on_http_response_body(&mut self, _: usize, _: bool) -> Action {
        at("response_body");
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        at("response_trailers");
        Action::Continue
    }

    fn on_log(&mut self) {
        at("log");
    }
}

/// A network filter's context.
struct Connection {
    /// Pause in `proxy_on_new_connection` (and never resume).
    hold: bool,
}

impl Context for Connection {
    fn on_done(&mut self) -> bool {
        at("done");
        true
    }
}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        at("new_connection");
        if self.hold { Action::Pause } else { Action::Continue }
    }

    fn on_downstream_data(&mut self, _: usize, _: bool) -> Action {
        at("downstream_data");
        Action::Continue
    }

    fn on_downstream_close(&mut self, _: PeerType) {
        at("downstream_close");
    }

    fn on_upstream_data(&mut self, _: usize, _: bool) -> Action {
        at("upstream_data");
        Action::Continue
    }

    fn on_upstream_close(&mut self, _: PeerType) {
        at("upstream_close");
    }

    fn on_log(&mut self) {
        at("log");
    }
}
