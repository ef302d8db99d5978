//! An HTTP filter for ferry's gRPC tests. By request path:
//! - `/unary/<method>`: a unary call of `test.Echo/<method>` to cluster
//!   `grpc` with the request's `x-message` header as the message and 500 ms
//!   timeout; answers 200 with `x-grpc-status`, and the response message or
//!   the status message as body.
//! - `/stream`: a stream to `test.Echo/Stream`: sends `one`, `two`, then
//!   closes its side; answers with what came back (initial metadata, each
//!   message, trailing metadata, status).
//! - `/cancel`: a unary call to `test.Echo/Slow`, cancelled at once;
//!   answers `cancelled`. `/cancel-stream`: the same with a stream.
//! - `/unknown-cluster`: a call to a cluster that does not exist: answers
//!   with the error.
//! - `/bad-method`: a unary call whose method name makes an invalid path.
//! - `/closed-by-peer/close` and `/closed-by-peer/cancel`: a stream to
//!   `test.Echo/Fail`, which the server closes at once; in
//!   `on_grpc_stream_close` the plugin closes (or cancels) the token, then
//!   closes it again, and answers with both results.
//!
//! Initial metadata `x-tag: <path>` goes with each call.

use std::time::Duration;

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Caller { report: Vec::new(), after_close: None }))
    }
}

struct Caller {
    /// What a stream delivered, in order.
    report: Vec<String>,
    /// What to do with a stream's token once the peer closed it.
    after_close: Option<String>,
}

fn text(bytes: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
}

impl Caller {
    fn answer(&self, status: u32, body: &str) {
        let status = status.to_string();
        self.send_http_response(200, vec![("x-grpc-status", status.as_str())], Some(body.as_bytes()));
    }
}

impl Context for Caller {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        info!("grpc call {token_id} answered: status {status_code}, {response_size} bytes");
        if status_code == 0 {
            let body = text(self.get_grpc_call_response_body(0, response_size));
            self.answer(0, &body);
        } else {
            let (status, message) = self.get_grpc_status();
            self.answer(status, &message.unwrap_or_default());
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, _token_id: u32, num_elements: u32) {
        let tag = text(self.get_grpc_stream_initial_metadata_value("x-tag").map(|b| b.to_vec()));
        let all = self.get_grpc_stream_initial_metadata();
        let content_type = all.iter().find(|(n, _)| n == "content-type").map(|(_, v)| String::from_utf8_lossy(v));
        self.report.push(format!("initial({num_elements}) x-tag={tag} content-type={}", content_type.unwrap_or_default()));
    }

    fn on_grpc_stream_message(&mut self, _token_id: u32, message_size: usize) {
        let message = text(self.get_grpc_stream_message(0, message_size));
        self.report.push(format!("message {message}"));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token_id: u32, num_elements: u32) {
        let count = text(self.get_grpc_stream_trailing_metadata_value("x-count").map(|b| b.to_vec()));
        let all = self.get_grpc_stream_trailing_metadata();
        let status = all.iter().find(|(n, _)| n == "grpc-status").map(|(_, v)| String::from_utf8_lossy(v));
        self.report.push(format!("trailing({num_elements}) x-count={count} grpc-status={}", status.unwrap_or_default()));
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        info!("grpc stream {token_id} closed: status {status_code}");
        self.report.push(format!("close {status_code}"));
        if let Some(then) = self.after_close.take() {
            let first = match then.as_str() {
                "cancel" => proxy_wasm::hostcalls::cancel_grpc_stream(token_id),
                _ => proxy_wasm::hostcalls::close_grpc_stream(token_id),
            };
            let again = proxy_wasm::hostcalls::close_grpc_stream(token_id);
            self.report.push(format!("{then}: {first:?}, again: {again:?}"));
        }
        let body = self.report.join("; ");
        self.answer(status_code, &body);
    }
}

impl HttpContext for Caller {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let tag = path.as_bytes();
        let metadata = vec![("x-tag", tag)];
        if let Some(method) = path.strip_prefix("/unary/") {
            let message = self.get_http_request_header("x-message").unwrap_or_default();
            let sent = self.dispatch_grpc_call(
                "grpc",
                "test.Echo",
                method,
                metadata,
                Some(message.as_bytes()),
                Duration::from_millis(500),
            );
            return match sent {
                Ok(token) => {
                    info!("grpc call {token} to {method}");
                    Action::Pause
                }
                Err(status) => {
                    self.answer(99, &format!("dispatch failed: {status:?}"));
                    Action::Pause
                }
            };
        }
        match path.as_str() {
            "/stream" => match self.open_grpc_stream("grpc", "test.Echo", "Stream", metadata) {
                Ok(token) => {
                    self.send_grpc_stream_message(token, Some(b"one"), false);
                    self.send_grpc_stream_message(token, Some(b"two"), false);
                    self.close_grpc_stream(token);
                    Action::Pause
                }
                Err(status) => {
                    self.answer(99, &format!("open failed: {status:?}"));
                    Action::Pause
                }
            },
            "/cancel" => {
                let token = self
                    .dispatch_grpc_call("grpc", "test.Echo", "Slow", metadata, Some(b"x"), Duration::from_secs(5))
                    .unwrap();
                self.cancel_grpc_call(token);
                info!("grpc call {token} cancelled");
                self.answer(0, "cancelled");
                Action::Pause
            }
            "/cancel-stream" => {
                let token = self.open_grpc_stream("grpc", "test.Echo", "Stream", metadata).unwrap();
                self.send_grpc_stream_message(token, Some(b"lost"), false);
                self.cancel_grpc_stream(token);
                info!("grpc stream {token} cancelled");
                self.answer(0, "cancelled stream");
                Action::Pause
            }
            "/bad-method" => {
                let sent =
                    self.dispatch_grpc_call("grpc", "test.Echo", "bad method\n", metadata, Some(b"x"), Duration::ZERO);
                if let Err(status) = sent {
                    self.answer(99, &format!("dispatch failed: {status:?}"));
                }
                Action::Pause
            }
            "/closed-by-peer/close" | "/closed-by-peer/cancel" => {
                self.after_close = path.rsplit('/').next().map(str::to_owned);
                if let Err(status) = self.open_grpc_stream("grpc", "test.Echo", "Fail", metadata) {
                    self.answer(99, &format!("open failed: {status:?}"));
                }
                Action::Pause
            }
            "/unknown-cluster" => {
                let result =
                    self.dispatch_grpc_call("nowhere", "test.Echo", "Unary", metadata, Some(b"x"), Duration::ZERO);
                self.answer(99, &format!("{result:?}"));
                Action::Pause
            }
            _ => Action::Continue,
        }
    }
}
