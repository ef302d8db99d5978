//! A plugin that fails on request: `GET /trap` traps in
//! `proxy_on_request_headers`, `GET /trap-response` in
//! `proxy_on_response_headers`. Every response it lets through gets
//! `x-trap-plugin: <number of streams this VM instance has seen>`, so a test
//! can tell a fresh instance from an old one.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;

thread_local! {
    static STREAMS_SEEN: Cell<u64> = const { Cell::new(0) };
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        info!("trap plugin started");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        let seen = STREAMS_SEEN.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        Some(Box::new(Stream { seen, trap_on_response: false }))
    }
}

struct Stream {
    seen: u64,
    trap_on_response: bool,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match self.get_http_request_header(":path").as_deref() {
            Some("/trap") => panic!("trap requested by the client"),
            Some("/trap-response") => self.trap_on_response = true,
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.trap_on_response {
            panic!("trap requested by the client, in the response");
        }
        self.set_http_response_header("x-trap-plugin", Some(&self.seen.to_string()));
        Action::Continue
    }
}
