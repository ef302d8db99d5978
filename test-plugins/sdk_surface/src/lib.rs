//! The Rust SDK's API surface, for ferry's tests: every method of
//! `Context`, `RootContext`, `HttpContext` and `StreamContext` that the
//! other test plugins do not already use, each checked where it makes sense,
//! with one log line per check: `sdk ok <method>` or `sdk FAIL <method>: …`.
//!
//! The plugin configuration picks the role of the root context: `http` (an
//! HTTP filter; paths `/surface`, `/reset-request`, `/reset-response`,
//! `/grpc-response`) or `tcp` (a network filter; client lines `hold`,
//! `closeup`). HTTP calls go to cluster `echo`. With `refuse` the root
//! context refuses its configuration (`on_configure` false). At shutdown the `http` root
//! context defers its end and finishes it with `done()` from a tick.

use std::time::{Duration, UNIX_EPOCH};

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { role: String::new(), shutting_down: false })
    });
}}

/// Logs the outcome of one check.
fn check(method: &str, passed: bool, detail: impl std::fmt::Debug) {
    if passed {
        info!("sdk ok {method}");
    } else {
        error!("sdk FAIL {method}: {detail:?}");
    }
}

fn has(pairs: &[(String, String)], name: &str, value: &str) -> bool {
    pairs.iter().any(|(n, v)| n == name && v == value)
}

fn has_bytes(pairs: &[(String, Vec<u8>)], name: &str, value: &[u8]) -> bool {
    pairs.iter().any(|(n, v)| n == name && v == value)
}

/// An HTTP call to the `echo` cluster (an HTTP echo upstream).
fn call_echo(context: &dyn Context, path: &str) -> Result<u32, Status> {
    context.dispatch_http_call(
        "echo",
        vec![(":method", "POST"), (":path", path), (":authority", "echo")],
        Some(b"call body"),
        vec![("x-call-trailer", "t")],
        Duration::from_secs(5),
    )
}

struct Root {
    role: String,
    shutting_down: bool,
}

impl Context for Root {
    /// At shutdown the HTTP role defers its end: a tick calls `done()`.
    fn on_done(&mut self) -> bool {
        info!("root on_done ({})", self.role);
        if self.role != "http" {
            return true;
        }
        self.shutting_down = true;
        self.set_tick_period(Duration::from_millis(10));
        false
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        let config = self.get_vm_configuration().unwrap_or_default();
        check("get_vm_configuration", config == b"vm-config" && config.len() == vm_configuration_size, &config);
        let now = self.get_current_time();
        check("get_current_time", now > UNIX_EPOCH + Duration::from_secs(50 * 365 * 86400), now);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.role = String::from_utf8(self.get_plugin_configuration().unwrap_or_default()).unwrap_or_default();
        if self.role == "refuse" {
            error!("sdk surface refuses its configuration");
            return false;
        }
        let key = format!("sdk-{}", self.role);
        let set = self.set_shared_data(&key, Some(b"v1"), None);
        let (value, cas) = self.get_shared_data(&key);
        check("set_shared_data", set.is_ok(), set);
        check("get_shared_data", value.as_deref() == Some(b"v1") && cas.is_some(), (&value, cas));
        let stale = self.set_shared_data(&key, Some(b"v2"), cas.map(|c| c.wrapping_add(1000)));
        let removed = self.remove_shared_data(&key, cas);
        check("remove_shared_data", stale == Err(Status::CasMismatch) && removed.is_ok(), (stale, removed));
        self.set_property(vec!["sdk", "root"], Some(b"r"));
        let property = self.get_property(vec!["sdk", "root"]);
        check("set_property", property.as_deref() == Some(b"r"), property);
        let text = b"surface surface surface surface".to_vec();
        let packed = self.call_foreign_function("compress", Some(&text));
        let unpacked = packed.as_ref().ok().and_then(|p| self.call_foreign_function("uncompress", p.as_deref()).ok());
        check("call_foreign_function", unpacked == Some(Some(text)), &packed);
        true
    }

    fn on_tick(&mut self) {
        if self.shutting_down {
            self.shutting_down = false;
            self.set_tick_period(Duration::ZERO);
            self.done();
            info!("sdk ok done");
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.role.as_str() {
            "tcp" => Some(ContextType::StreamContext),
            _ => Some(ContextType::HttpContext),
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http { waiting: Waiting::Nothing, path: String::new() }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Tcp { waiting: Waiting::Nothing, upstream_held: false }))
    }
}

/// Which paused phase an HTTP call's answer resumes.
#[derive(PartialEq)]
enum Waiting {
    Nothing,
    Request,
    Response,
    Downstream,
    Upstream,
}

struct Http {
    waiting: Waiting,
    path: String,
}

impl Context for Http {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let headers = self.get_http_call_response_headers();
        check("get_http_call_response_headers", has(&headers, ":status", "200"), &headers);
        let headers = self.get_http_call_response_headers_bytes();
        check("get_http_call_response_headers_bytes", has_bytes(&headers, ":status", b"200"), &headers);
        let status = self.get_http_call_response_header_bytes(":status");
        check("get_http_call_response_header_bytes", status.as_deref() == Some(b"200"), status);
        let body = self.get_http_call_response_body(0, body_size);
        check("get_http_call_response_body", body.as_deref() == Some(b"call body"), body);
        let trailers = self.get_http_call_response_trailers();
        check("get_http_call_response_trailers", has(&trailers, "x-call-trailer", "t"), &trailers);
        let trailers = self.get_http_call_response_trailers_bytes();
        check("get_http_call_response_trailers_bytes", has_bytes(&trailers, "x-call-trailer", b"t"), &trailers);
        let trailer = self.get_http_call_response_trailer("x-call-trailer");
        check("get_http_call_response_trailer", trailer.as_deref() == Some("t"), trailer);
        let trailer = self.get_http_call_response_trailer_bytes("x-call-trailer");
        check("get_http_call_response_trailer_bytes", trailer.as_deref() == Some(b"t"), trailer);
        match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::Request => {
                self.resume_http_request();
                info!("sdk ok resume_http_request");
            }
            Waiting::Response => {
                self.resume_http_response();
                info!("sdk ok resume_http_response");
            }
            _ => error!("sdk FAIL: an HTTP call answer nobody waited for"),
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        match self.path.as_str() {
            "/reset-request" => {
                self.reset_http_request();
                return Action::Pause;
            }
            "/grpc-response" => {
                self.send_grpc_response(GrpcStatusCode::NotFound, Some("nope"), vec![("x-meta", b"1")]);
                return Action::Pause;
            }
            "/surface" => {}
            _ => return Action::Continue,
        }
        // Over HTTP/1.1 only announced trailer fields are sent: the ones this filter adds are announced.
        self.set_http_request_header("trailer", Some("x-t1, x-t2, x-t3, x-drop"));
        let headers = self.get_http_request_headers();
        check("get_http_request_headers", has(&headers, ":path", "/surface"), &headers);
        let value = self.get_http_request_header_bytes("x-in");
        check("get_http_request_header_bytes", value.as_deref() == Some(b"1"), value);
        self.set_http_request_header_bytes("x-in", Some(b"2"));
        self.add_http_request_header_bytes("x-added", b"a");
        self.remove_http_request_header("x-remove");
        let headers = self.get_http_request_headers_bytes();
        check("set_http_request_header_bytes", has_bytes(&headers, "x-in", b"2"), &headers);
        check("add_http_request_header_bytes", has_bytes(&headers, "x-added", b"a"), &headers);
        check("remove_http_request_header", !headers.iter().any(|(n, _)| n == "x-remove"), &headers);
        let mut all = self.get_http_request_headers();
        all.push(("x-set-all".into(), "1".into()));
        self.set_http_request_headers(all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect());
        check("set_http_request_headers", self.get_http_request_header("x-set-all").as_deref() == Some("1"), ());
        let mut all = self.get_http_request_headers_bytes();
        all.push(("x-set-all-bytes".into(), b"1".to_vec()));
        self.set_http_request_headers_bytes(all.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect());
        let value = self.get_http_request_header("x-set-all-bytes");
        check("set_http_request_headers_bytes", value.as_deref() == Some("1"), value);
        self.set_property(vec!["sdk", "stream"], Some(b"s"));
        let property = self.get_property(vec!["sdk", "stream"]);
        check("get_property", property.as_deref() == Some(b"s"), property);
        match call_echo(self, "/request") {
            Ok(_) => self.waiting = Waiting::Request,
            Err(status) => error!("sdk FAIL dispatch_http_call: {status:?}"),
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let body = self.get_http_request_body(0, body_size);
        check("get_http_request_body", body.as_deref() == Some(b"hello") && !end_of_stream, (body, end_of_stream));
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let value = self.get_http_request_trailer_bytes("x-t1");
        check("get_http_request_trailer_bytes", value.as_deref() == Some(b"1"), value);
        let trailers = self.get_http_request_trailers_bytes();
        check("get_http_request_trailers_bytes", has_bytes(&trailers, "x-drop", b"x"), &trailers);
        self.set_http_request_trailer_bytes("x-t1", Some(b"one"));
        self.add_http_request_trailer_bytes("x-t2", b"2");
        self.remove_http_request_trailer("x-drop");
        let trailers = self.get_http_request_trailers();
        check("set_http_request_trailer_bytes", has(&trailers, "x-t1", "one"), &trailers);
        check("add_http_request_trailer_bytes", has(&trailers, "x-t2", "2"), &trailers);
        check("remove_http_request_trailer", !trailers.iter().any(|(n, _)| n == "x-drop"), &trailers);
        let mut all = trailers;
        all.push(("x-t3".into(), "3".into()));
        self.set_http_request_trailers(all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect());
        let value = self.get_http_request_trailer("x-t3");
        check("set_http_request_trailers", value.as_deref() == Some("3"), value);
        let all = self.get_http_request_trailers_bytes();
        self.set_http_request_trailers_bytes(all.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect());
        let value = self.get_http_request_trailer("x-t3");
        check("set_http_request_trailers_bytes", value.as_deref() == Some("3"), value);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.path == "/reset-response" {
            self.reset_http_response();
            return Action::Pause;
        }
        if self.path != "/surface" {
            return Action::Continue;
        }
        let headers = self.get_http_response_headers();
        check("get_http_response_headers", has(&headers, ":status", "200"), &headers);
        let status = self.get_http_response_header(":status");
        check("get_http_response_header", status.as_deref() == Some("200"), status);
        let status = self.get_http_response_header_bytes(":status");
        check("get_http_response_header_bytes", status.as_deref() == Some(b"200"), status);
        self.set_http_response_header_bytes("x-r1", Some(b"1"));
        self.add_http_response_header_bytes("x-r2", b"2");
        self.add_http_response_header("x-r3", "3");
        self.remove_http_response_header("x-r3");
        let headers = self.get_http_response_headers_bytes();
        check("set_http_response_header_bytes", has_bytes(&headers, "x-r1", b"1"), &headers);
        check("add_http_response_header_bytes", has_bytes(&headers, "x-r2", b"2"), &headers);
        check("remove_http_response_header", !headers.iter().any(|(n, _)| n == "x-r3"), &headers);
        let mut all = self.get_http_response_headers();
        all.push(("x-r4".into(), "4".into()));
        self.set_http_response_headers(all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect());
        let value = self.get_http_response_header("x-r4");
        check("set_http_response_headers", value.as_deref() == Some("4"), value);
        let all = self.get_http_response_headers_bytes();
        self.set_http_response_headers_bytes(all.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect());
        let value = self.get_http_response_header("x-r4");
        check("set_http_response_headers_bytes", value.as_deref() == Some("4"), value);
        self.set_http_response_header("trailer", Some("x-t1, x-t2, x-t3, x-rt1, x-rt2, x-rt3"));
        match call_echo(self, "/response") {
            Ok(_) => self.waiting = Waiting::Response,
            Err(status) => error!("sdk FAIL dispatch_http_call: {status:?}"),
        }
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if self.path == "/surface" {
            let body = self.get_http_response_body(0, body_size);
            check("get_http_response_body", body.as_deref() == Some(b"hello"), body);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // The upstream sent back the request trailers as this filter left them.
        let value = self.get_http_response_trailer("x-t1");
        check("get_http_response_trailer", value.as_deref() == Some("one"), value);
        let value = self.get_http_response_trailer_bytes("x-t2");
        check("get_http_response_trailer_bytes", value.as_deref() == Some(b"2"), value);
        let trailers = self.get_http_response_trailers_bytes();
        check("get_http_response_trailers_bytes", has_bytes(&trailers, "x-t3", b"3"), &trailers);
        self.set_http_response_trailer("x-rt1", Some("1"));
        self.set_http_response_trailer_bytes("x-rt2", Some(b"2"));
        self.add_http_response_trailer_bytes("x-rt3", b"3");
        self.remove_http_response_trailer("x-t2");
        let trailers = self.get_http_response_trailers();
        check("set_http_response_trailer", has(&trailers, "x-rt1", "1"), &trailers);
        check("set_http_response_trailer_bytes", has(&trailers, "x-rt2", "2"), &trailers);
        check("add_http_response_trailer_bytes", has(&trailers, "x-rt3", "3"), &trailers);
        check("remove_http_response_trailer", !trailers.iter().any(|(n, _)| n == "x-t2"), &trailers);
        let mut all = trailers;
        all.push(("x-rt4".into(), "4".into()));
        self.set_http_response_trailers(all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect());
        let value = self.get_http_response_trailer("x-rt4");
        check("set_http_response_trailers", value.as_deref() == Some("4"), value);
        let all = self.get_http_response_trailers_bytes();
        self.set_http_response_trailers_bytes(all.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect());
        let value = self.get_http_response_trailer("x-rt4");
        check("set_http_response_trailers_bytes", value.as_deref() == Some("4"), value);
        Action::Continue
    }
}

struct Tcp {
    waiting: Waiting,
    upstream_held: bool,
}

impl Context for Tcp {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, _body_size: usize, _num_trailers: usize) {
        match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::Downstream => {
                self.resume_downstream();
                info!("sdk ok resume_downstream");
            }
            Waiting::Upstream => {
                self.resume_upstream();
                info!("sdk ok resume_upstream");
            }
            _ => error!("sdk FAIL: an HTTP call answer nobody waited for"),
        }
    }
}

impl StreamContext for Tcp {
    /// `hold`: held until an HTTP call answers, then resumed. `closeup`:
    /// closes the connection from the upstream side.
    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        match &data[..] {
            b"hold\n" => match call_echo(self, "/hold") {
                Ok(_) => {
                    self.waiting = Waiting::Downstream;
                    Action::Pause
                }
                Err(status) => {
                    error!("sdk FAIL dispatch_http_call: {status:?}");
                    Action::Continue
                }
            },
            b"closeup\n" => {
                self.close_upstream();
                info!("sdk ok close_upstream");
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    /// The first upstream chunk is marked with `[up]` and held until an HTTP
    /// call answers.
    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if self.upstream_held || data_size == 0 {
            return Action::Continue;
        }
        let data = self.get_upstream_data(0, data_size).unwrap_or_default();
        self.set_upstream_data(0, data_size, &[b"[up]".as_slice(), &data].concat());
        let data = self.get_upstream_data(0, data_size + 4).unwrap_or_default();
        check("set_upstream_data", data.starts_with(b"[up]"), String::from_utf8_lossy(&data));
        self.upstream_held = true;
        match call_echo(self, "/upstream") {
            Ok(_) => {
                self.waiting = Waiting::Upstream;
                Action::Pause
            }
            Err(status) => {
                error!("sdk FAIL dispatch_http_call: {status:?}");
                Action::Continue
            }
        }
    }
}
