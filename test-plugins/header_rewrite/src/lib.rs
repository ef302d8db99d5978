//! For benchmark C: on each request, adds ten headers, replaces each of them,
//! then removes them again, and adds one response header: thirty-one header
//! host calls per request, and the request leaves as it came.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const NAMES: [&str; 10] = [
    "x-rewrite-0", "x-rewrite-1", "x-rewrite-2", "x-rewrite-3", "x-rewrite-4",
    "x-rewrite-5", "x-rewrite-6", "x-rewrite-7", "x-rewrite-8", "x-rewrite-9",
];

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite))
    }
}

struct Rewrite;

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for name in NAMES {
            self.add_http_request_header(name, "added");
        }
        for name in NAMES {
            self.set_http_request_header(name, Some("replaced"));
        }
        for name in NAMES {
            self.set_http_request_header(name, None);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_response_header("x-rewritten", "10");
        Action::Continue
    }
}
