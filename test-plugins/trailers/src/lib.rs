//! A filter for ferry's trailer tests. It logs the body callbacks'
//! `end_of_stream` (false when trailers follow), then in the trailer
//! callbacks logs every trailer, adds one of its own and removes
//! `x-secret`. A request trailer `x-stop: yes` makes it pause in
//! `on_http_request_trailers`; the root context resumes it on its next tick
//! (every 5 ms).
//!
//! A request header `x-add-trailers: yes` makes it add trailers to a
//! message that has none, in the body's last callback (`end_of_stream`
//! true): `x-request-end: added` to the request (announced in its
//! `trailer` header for HTTP/1.1), `x-response-end: added` to the response.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

thread_local! {
    /// Streams paused in their request trailers, resumed on the next tick.
    static PAUSED: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Trailers { context_id, add: false }))
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.set_tick_period(Duration::from_millis(5));
        true
    }

    fn on_tick(&mut self) {
        for id in PAUSED.with(|p| std::mem::take(&mut *p.borrow_mut())) {
            proxy_wasm::hostcalls::set_effective_context(id).unwrap();
            proxy_wasm::hostcalls::resume_http_request().unwrap();
            info!("resumed {id} from a tick");
        }
    }
}

struct Trailers {
    context_id: u32,
    /// Add trailers at the end of each body (`x-add-trailers: yes`).
    add: bool,
}

impl Context for Trailers {}

/// Adds `name` to a message's `trailer` header, if it announces trailers:
/// over HTTP/1.1 only announced trailer fields are sent.
fn announce(existing: Option<String>, name: &str) -> Option<String> {
    existing.map(|names| format!("{names}, {name}"))
}

impl HttpContext for Trailers {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.add = self.get_http_request_header("x-add-trailers").as_deref() == Some("yes");
        if self.add {
            self.set_http_request_header("trailer", Some("x-request-end"));
        }
        if let Some(names) = announce(self.get_http_request_header("trailer"), "x-plugin-trailer") {
            self.set_http_request_header("trailer", Some(&names));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(names) = announce(self.get_http_response_header("trailer"), "x-response-trailer") {
            self.set_http_response_header("trailer", Some(&names));
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!("request body {body_size} bytes, end_of_stream={end_of_stream}");
        if self.add && end_of_stream {
            self.add_http_request_trailer("x-request-end", "added");
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        let trailers = self.get_http_request_trailers();
        info!("request trailers ({num_trailers}): {trailers:?}");
        self.add_http_request_trailer("x-plugin-trailer", "seen");
        self.set_http_request_trailer("x-secret", None);
        if self.get_http_request_trailer("x-stop").as_deref() == Some("yes") {
            info!("pausing {} in request trailers", self.context_id);
            PAUSED.with(|p| p.borrow_mut().push(self.context_id));
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!("response body {body_size} bytes, end_of_stream={end_of_stream}");
        if self.add && end_of_stream {
            self.add_http_response_trailer("x-response-end", "added");
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        let trailers = self.get_http_response_trailers();
        info!("response trailers ({num_trailers}): {trailers:?}");
        self.add_http_response_trailer("x-response-trailer", "added");
        Action::Continue
    }
}
