//! The receiver: a singleton Wasm service on the main thread that owns the
//! shared queue `http_headers` and logs each item put into it.

use log::{error, info};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

/// The queue the sender resolves as (`receiver`, `http_headers`).
const QUEUE_NAME: &str = "http_headers";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Receiver) });
}}

struct Receiver;

impl Context for Receiver {}

impl RootContext for Receiver {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let queue_id = self.register_shared_queue(QUEUE_NAME);
        info!("queue \"{QUEUE_NAME}\" registered as id={queue_id}");
        true
    }

    /// Called once per enqueued item; takes one item. Another consumer may
    /// have taken it first, so an empty queue is not an error.
    fn on_queue_ready(&mut self, queue_id: u32) {
        match self.dequeue_shared_queue(queue_id) {
            Ok(Some(data)) => info!("dequeued data: {}", String::from_utf8_lossy(&data)),
            Ok(None) => {}
            Err(status) => error!("error retrieving data from queue {queue_id}: {status:?}"),
        }
    }
}
