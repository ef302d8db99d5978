//! The sender: an HTTP filter on the worker threads that puts every request
//! header on the receiver's queue as `{"key": "<name>","value": "<value>"}`.

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// The queue is named by the receiver's vm_id, not its plugin name.
const RECEIVER_VM_ID: &str = "receiver";
const QUEUE_NAME: &str = "http_headers";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(SenderRoot) });
}}

struct SenderRoot;

impl Context for SenderRoot {}

impl RootContext for SenderRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    /// Resolves the queue for each stream: the receiver may have restarted
    /// since the last one, and resolving is cheap.
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let queue_id = self.resolve_shared_queue(RECEIVER_VM_ID, QUEUE_NAME);
        if queue_id.is_none() {
            error!("error resolving queue id: queue ({RECEIVER_VM_ID}, {QUEUE_NAME}) is not registered");
        }
        Some(Box::new(Sender { queue_id }))
    }
}

struct Sender {
    queue_id: Option<u32>,
}

impl Context for Sender {}

impl HttpContext for Sender {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(queue_id) = self.queue_id else { return Action::Continue };
        for (name, value) in self.get_http_request_headers_bytes() {
            let message = format!(
                "{{\"key\": \"{}\",\"value\": \"{}\"}}",
                name,
                String::from_utf8_lossy(&value)
            );
            match self.enqueue_shared_queue(queue_id, Some(message.as_bytes())) {
                Ok(()) => info!("enqueued data: {message}"),
                Err(status) => error!("error queueing: {status:?}"),
            }
        }
        Action::Continue
    }
}
