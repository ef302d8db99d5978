//! The sender of the multi-queue example: one module, two roles chosen by
//! the plugin configuration. With `http` its root context makes HTTP
//! contexts that enqueue every request header and every response header as
//! JSON; with `tcp` it makes network (stream) contexts that enqueue a hex
//! FNV-1a 128-bit hash of each chunk coming back from the upstream.

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// Queues are named by the receiver's vm_id, not its plugin name.
const RECEIVER_VM_ID: &str = "receiver";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(SenderRoot { context_id, role: String::new() })
    });
}}

struct SenderRoot {
    context_id: u32,
    /// `http` or `tcp`, from the plugin configuration.
    role: String,
}

impl Context for SenderRoot {}

impl RootContext for SenderRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.role = String::from_utf8_lossy(&config).into_owned();
        info!("contextID={} is configured for {}", self.context_id, self.role);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.role.as_str() {
            "http" => Some(ContextType::HttpContext),
            "tcp" => Some(ContextType::StreamContext),
            _ => None,
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpSender {
            context_id,
            request_queue: self.resolve("http_request_headers"),
            response_queue: self.resolve("http_response_headers"),
        }))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(TcpSender { context_id, queue: self.resolve("tcp_data_hashes") }))
    }
}

impl SenderRoot {
    /// Resolves a queue of the receiver each time: the receiver may have
    /// restarted since the last stream, and resolving is cheap.
    fn resolve(&self, queue: &str) -> Option<u32> {
        let id = self.resolve_shared_queue(RECEIVER_VM_ID, queue);
        if id.is_none() {
            error!("error resolving queue id: ({RECEIVER_VM_ID}, {queue}) is not registered");
        }
        id
    }
}

/// Enqueues `message` and logs the outcome.
fn enqueue(context: &dyn Context, queue_id: u32, message: &str, log_prefix: &str) {
    match context.enqueue_shared_queue(queue_id, Some(message.as_bytes())) {
        Ok(()) => info!("{log_prefix}enqueued data: {message}"),
        Err(status) => error!("error queueing: {status:?}"),
    }
}

fn header_json(name: &str, value: &[u8]) -> String {
    format!("{{\"key\": \"{}\",\"value\": \"{}\"}}", name, String::from_utf8_lossy(value))
}

struct HttpSender {
    context_id: u32,
    request_queue: Option<u32>,
    response_queue: Option<u32>,
}

impl Context for HttpSender {}

impl HttpContext for HttpSender {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(queue_id) = self.request_queue {
            for (name, value) in self.get_http_request_headers_bytes() {
                enqueue(self, queue_id, &header_json(&name, &value), "");
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(queue_id) = self.response_queue {
            let prefix = format!("(contextID={}) ", self.context_id);
            for (name, value) in self.get_http_response_headers_bytes() {
                enqueue(self, queue_id, &header_json(&name, &value), &prefix);
            }
        }
        Action::Continue
    }
}

struct TcpSender {
    context_id: u32,
    queue: Option<u32>,
}

impl Context for TcpSender {}

impl StreamContext for TcpSender {
    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let Some(queue_id) = self.queue else { return Action::Continue };
        if data_size == 0 {
            return Action::Continue;
        }
        let Some(data) = self.get_upstream_data(0, data_size) else { return Action::Continue };
        let hash = format!("{:032x}", fnv1a_128(&data));
        enqueue(self, queue_id, &hash, &format!("(contextID={}) ", self.context_id));
        Action::Continue
    }
}

/// FNV-1a, 128 bits (the hash the original example uses).
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET_BASIS: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    data.iter().fold(OFFSET_BASIS, |hash, &byte| (hash ^ u128::from(byte)).wrapping_mul(PRIME))
}
