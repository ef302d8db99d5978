//! An authorizer in the shape of the Rust SDK's `http_auth_random`: each
//! request pauses while the cluster `auth` is asked `GET /check<path>`.
//! A body of `allow` resumes the request (after setting `x-auth: allowed`
//! on it); anything else answers 403. Paths under `/broken` call the
//! cluster `broken`, which does not answer: the plugin then answers 502.
//! Paths under `/post` ask with `POST`, the body `ping` and a trailer
//! `x-check: 1`.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Auth { verdict: None }))
    }
}

struct Auth {
    /// The `x-auth` request header as read back after setting it.
    verdict: Option<String>,
}

impl HttpContext for Auth {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let cluster = if path.starts_with("/broken") { "broken" } else { "auth" };
        let check = format!("/check{path}");
        let post = path.starts_with("/post");
        let (method, body) = if post { ("POST", Some(&b"ping"[..])) } else { ("GET", None) };
        let trailers = if post { vec![("x-check", "1")] } else { vec![] };
        let headers = vec![(":method", method), (":path", check.as_str()), (":authority", "auth")];
        match self.dispatch_http_call(cluster, headers, body, trailers, Duration::from_secs(5)) {
            Ok(_) => Action::Pause,
            Err(status) => {
                self.send_http_response(500, vec![], Some(format!("dispatch failed: {status:?}\n").as_bytes()));
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(verdict) = &self.verdict {
            self.set_http_response_header("x-auth", Some(verdict));
        }
        Action::Continue
    }
}

impl Context for Auth {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        if num_headers == 0 {
            self.send_http_response(502, vec![("x-auth", "call-failed")], Some(b"call failed\n"));
            return;
        }
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        if status == "200" && body == b"allow" {
            self.set_http_request_header("x-auth", Some("allowed"));
            self.verdict = self.get_http_request_header("x-auth");
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![("x-auth", "denied")], Some(b"denied\n"));
        }
    }
}
