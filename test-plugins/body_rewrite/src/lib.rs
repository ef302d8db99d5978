//! Rewrites bodies, in the shape of the Rust SDK's `http_body` example:
//! waits for the whole body (returning Pause until end of stream), then
//! upper-cases the request body — or answers 403 if it says `forbidden` —
//! and appends ` [checked]` to the response body (removing the response's
//! `content-length`, which no longer holds). Logs each body callback
//! (`request body <size> end_of_stream=<bool>`), so tests can see how the
//! host delivers a body in chunks.
//!
//! With the plugin configuration `observe` it changes nothing and buffers
//! nothing: it logs each header, body and trailer callback (`framing: ...`)
//! and continues, so the log shows the calls exactly as the host makes them.
//!
//! With `count` it reads every chunk of both bodies and lets it through,
//! logging each body's size at its end; with `hold` it holds the response
//! headers and buffers the whole response body before letting it through.
//!
//! With `grpc` it reads gRPC messages (length-prefixed) and changes them:
//! each request message gets `!` appended, each response message `seen `
//! prepended, re-framed with their new lengths (at the end of the body, or
//! at the trailers that end it).

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Vec::new() }) });
}}

struct Root {
    mode: Vec<u8>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.mode = self.get_plugin_configuration().unwrap_or_default();
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        match &self.mode[..] {
            b"observe" => Some(Box::new(Observe)),
            b"grpc" => Some(Box::new(GrpcRewrite)),
            b"count" => Some(Box::new(Count::default())),
            b"hold" => Some(Box::new(Hold)),
            _ => Some(Box::new(Rewrite)),
        }
    }
}

/// Logs each callback and lets everything through as it came.
struct Observe;

impl Context for Observe {}

impl HttpContext for Observe {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        info!("framing: request headers end_of_stream={end_of_stream}");
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!("framing: request body {body_size} end_of_stream={end_of_stream}");
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        info!("framing: request trailers");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        info!("framing: response headers end_of_stream={end_of_stream}");
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!("framing: response body {body_size} end_of_stream={end_of_stream}");
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        info!("framing: response trailers");
        Action::Continue
    }

    fn on_log(&mut self) {
        // What the stream's end shows of its response (none, when the client left first).
        let status = self.get_http_response_header(":status");
        let code = self.get_property(vec!["response", "code"]).map(|c| c.len());
        info!("framing: stream done");
        info!("at the stream's end: response status {status:?}, response.code bytes {code:?}");
    }
}

struct Rewrite;

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        // The body grows: its length is no longer the upstream's (as the
        // SDK's `http_body` example does).
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!("request body {body_size} end_of_stream={end_of_stream}");
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        if body.windows(9).any(|w| w == b"forbidden") {
            self.send_http_response(403, vec![("x-body", "refused")], Some(b"forbidden body\n"));
            return Action::Pause;
        }
        self.set_http_request_body(0, body_size, &body.to_ascii_uppercase());
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        info!("response body {body_size} end_of_stream={end_of_stream}");
        if !end_of_stream {
            return Action::Pause;
        }
        self.set_http_response_body(body_size, 0, b" [checked]");
        Action::Continue
    }
}

/// Reads every body chunk into the plugin and lets it through, counting the
/// bytes; logs each body's total at its end (`counted request <n> bytes`).
#[derive(Default)]
struct Count {
    request: usize,
    response: usize,
}

impl Context for Count {}

impl HttpContext for Count {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request += self.get_http_request_body(0, body_size).map_or(0, |b| b.len());
        if end_of_stream {
            info!("counted request {} bytes", self.request);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response += self.get_http_response_body(0, body_size).map_or(0, |b| b.len());
        if end_of_stream {
            info!("counted response {} bytes", self.response);
        }
        Action::Continue
    }
}

/// Holds the response headers and buffers the whole response body
/// (Pause until its end), then lets it all through: with
/// `allow_on_headers_stop_iteration`, the headers wait for the body.
struct Hold;

impl Context for Hold {}

impl HttpContext for Hold {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        info!("holding a response body of {body_size} bytes");
        Action::Continue
    }
}

/// Changes gRPC messages: `!` after each request message, `seen ` before
/// each response message.
struct GrpcRewrite;

impl Context for GrpcRewrite {}

/// The messages of a gRPC body, each changed by `change`, framed again.
fn reframe(body: &[u8], change: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(message) = rest.get(5..5 + len) else { break };
        let changed = change(message);
        out.push(rest[0]);
        out.extend_from_slice(&(changed.len() as u32).to_be_bytes());
        out.extend_from_slice(&changed);
        rest = &rest[5 + len..];
    }
    out.extend_from_slice(rest);
    out
}

impl GrpcRewrite {
    fn change_request(&self) {
        let body = self.get_http_request_body(0, usize::MAX).unwrap_or_default();
        info!("grpc request body {} bytes", body.len());
        self.set_http_request_body(0, body.len(), &reframe(&body, |m| [m, b"!"].concat()));
    }

    fn change_response(&self) {
        let body = self.get_http_response_body(0, usize::MAX).unwrap_or_default();
        info!("grpc response body {} bytes", body.len());
        self.set_http_response_body(0, body.len(), &reframe(&body, |m| [b"seen ", m].concat()));
    }
}

impl HttpContext for GrpcRewrite {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_request_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_request_body(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        self.change_request();
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.change_request();
        Action::Continue
    }

    fn on_http_response_body(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        self.change_response();
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.change_response();
        Action::Continue
    }
}
