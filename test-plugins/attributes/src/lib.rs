//! Reads what the host says, exactly: each request names what to read in a
//! header, and the plugin answers 200 with the raw status in `x-status` and
//! the bytes (hex) in the body, so conformance cases can compare both with
//! Envoy's encodings.
//!
//! - `x-property: a.b.c` — `proxy_get_property` of the path `a\0b\0c`
//!   (segments split on `,` instead when there is one, for names with dots:
//!   `metadata,filter_metadata,envoy.lb,key`);
//! - `x-expr: <CEL>` — `expr_create`, `expr_evaluate`, `expr_delete`
//!   (statuses of create and evaluate, comma-separated);
//! - `x-set: name=value` — `proxy_set_property` twice with that value
//!   (both statuses), then the value read back;
//! - `x-foreign: name` (with `x-args: <hex>`) — `proxy_call_foreign_function`
//!   with those arguments: its status and result;
//! - `x-response-property: a.b.c` — the request goes on; in
//!   `proxy_on_response_headers` the property is read and the response
//!   carries `x-property-status` and `x-property-value` (hex).
//!
//! The root context declares `ro` read-only and `rw` writable with
//! `declare_property` when configured.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

#[allow(clashing_extern_declarations)]
extern "C" {
    fn proxy_get_property(path: *const u8, path_len: usize, out: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_set_property(path: *const u8, path_len: usize, value: *const u8, value_len: usize) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_len: usize,
        args: *const u8,
        args_len: usize,
        out: *mut *mut u8,
        out_len: *mut usize,
    ) -> u32;
}

/// A raw status and the bytes returned.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> (u32, Vec<u8>) {
    let (mut ptr, mut len) = (std::ptr::null_mut::<u8>(), 0usize);
    let status = call(&mut ptr, &mut len);
    let bytes = if ptr.is_null() || len == 0 { Vec::new() } else { unsafe { Vec::from_raw_parts(ptr, len, len) } };
    (status, bytes)
}

fn get_property(path: &[u8]) -> (u32, Vec<u8>) {
    returned(|out, len| unsafe { proxy_get_property(path.as_ptr(), path.len(), out, len) })
}

fn foreign(name: &str, args: &[u8]) -> (u32, Vec<u8>) {
    returned(|out, len| unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), out, len)
    })
}

/// `DeclarePropertyArguments { name: 1, readonly: 2 }` in protobuf.
fn declare(name: &str, readonly: bool) -> u32 {
    let mut args = vec![0x0a, name.len() as u8];
    args.extend_from_slice(name.as_bytes());
    args.extend_from_slice(&[0x10, u8::from(readonly)]);
    foreign("declare_property", &args).0
}

/// A property path from a header: segments split on `,` if there is one, else on `.`.
fn segments(path: &str) -> Vec<u8> {
    let separator = if path.contains(',') { ',' } else { '.' };
    path.replace(separator, "\0").into_bytes()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2).filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let statuses = [declare("ro", true), declare("rw", false), declare("ro", false)];
        log::info!("declare_property statuses {statuses:?}");
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Reader { response_property: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Reader {
    /// The path to read when the response comes.
    response_property: Option<String>,
}

impl Context for Reader {}

impl HttpContext for Reader {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let (status, body) = if let Some(path) = self.get_http_request_header("x-property") {
            let (status, bytes) = get_property(&segments(&path));
            (status.to_string(), hex(&bytes))
        } else if let Some(source) = self.get_http_request_header("x-expr") {
            let (created, token) = foreign("expr_create", source.as_bytes());
            if created != 0 {
                (created.to_string(), String::new())
            } else {
                let (evaluated, bytes) = foreign("expr_evaluate", &token);
                let deleted = foreign("expr_delete", &token).0;
                (format!("{created},{evaluated},{deleted}"), hex(&bytes))
            }
        } else if let Some(name) = self.get_http_request_header("x-foreign") {
            let args = unhex(&self.get_http_request_header("x-args").unwrap_or_default());
            let (status, bytes) = foreign(&name, &args);
            (status.to_string(), hex(&bytes))
        } else if let Some(assignment) = self.get_http_request_header("x-set") {
            let (name, value) = assignment.split_once('=').unwrap_or((&assignment, ""));
            let set = || unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
            let (first, second) = (set(), set());
            let (read, bytes) = get_property(name.as_bytes());
            (format!("{first},{second},{read}"), hex(&bytes))
        } else {
            self.response_property = self.get_http_request_header("x-response-property");
            return Action::Continue;
        };
        self.send_http_response(200, vec![("x-status", &status)], Some(body.as_bytes()));
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(path) = self.response_property.take() {
            let (status, bytes) = get_property(&segments(&path));
            self.set_http_response_header("x-property-status", Some(&status.to_string()));
            self.set_http_response_header("x-property-value", Some(&hex(&bytes)));
        }
        Action::Continue
    }
}
