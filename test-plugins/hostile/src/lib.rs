//! A plugin that misbehaves on request, to test that the host contains it.
//!
//! As an HTTP filter, by request path:
//! - `/loop`, `/loop-response`: `loop {}` in the request (response) headers;
//! - `/bomb`: allocates (and touches) memory until allocation fails;
//! - `/trap`: panics;
//! - `/call`: an HTTP call without a timeout to cluster `slow`, and waits
//!   for its answer;
//! - anything else: goes on, with `x-hostile: ok` on the response.
//!
//! The plugin configuration picks what its root context does:
//! - `sender`: the filter only enqueues each request's path (without its
//!   `/`) to the queue (`receiver`, `items`);
//! - `receiver`: registers the queue `items` and logs each item it
//!   dequeues; the item `trap` makes it panic;
//! - `loop_on_tick`: ticks every 10 ms, and the first tick loops;
//! - `loop_on_start`: `proxy_on_vm_start` loops.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: String::new() }) });
}}

struct Root {
    mode: String,
}

impl Context for Root {}

/// Spins until the host interrupts it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        if self.get_vm_configuration().as_deref() == Some(b"loop_on_start") {
            spin();
        }
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        self.mode = self.get_plugin_configuration().map(|c| String::from_utf8_lossy(&c).into_owned()).unwrap_or_default();
        match self.mode.as_str() {
            "receiver" => {
                let id = self.register_shared_queue("items");
                info!("hostile receiver registered queue items as {id}");
            }
            "loop_on_tick" => self.set_tick_period(Duration::from_millis(10)),
            "loop_on_start" => spin(),
            _ => {}
        }
        true
    }

    fn on_tick(&mut self) {
        info!("hostile tick");
        spin();
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            let item = String::from_utf8_lossy(&item).into_owned();
            info!("hostile receiver dequeued {item}");
            if item == "trap" {
                panic!("the receiver was asked to trap");
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        // Resolved per stream: the receiver may have registered after us.
        let queue = if self.mode == "sender" { self.resolve_shared_queue("receiver", "items") } else { None };
        Some(Box::new(Stream { queue, loop_on_response: false }))
    }
}

struct Stream {
    queue: Option<u32>,
    loop_on_response: bool,
}

impl Context for Stream {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        self.resume_http_request();
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if let Some(queue) = self.queue {
            // A sender only enqueues.
            let item = path.trim_start_matches('/');
            if let Err(status) = self.enqueue_shared_queue(queue, Some(item.as_bytes())) {
                info!("hostile sender could not enqueue: {status:?}");
            }
            return Action::Continue;
        }
        match path.as_str() {
            "/loop" => spin(),
            "/loop-response" => self.loop_on_response = true,
            "/bomb" => {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page, so the memory is really used.
                    held.push(vec![1u8; 1 << 20]);
                }
            }
            "/trap" => panic!("trap requested by the client"),
            "/call" => {
                let headers = vec![(":method", "GET"), (":path", "/"), (":authority", "slow")];
                if self.dispatch_http_call("slow", headers, None, vec![], Duration::ZERO).is_ok() {
                    return Action::Pause;
                }
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.loop_on_response {
            spin();
        }
        self.set_http_response_header("x-hostile", Some("ok"));
        Action::Continue
    }
}
