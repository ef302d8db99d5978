//! A receiver in the shape of the current upstream shared_queue example:
//! each root context registers the queue named by its plugin configuration,
//! so several services sharing one VM get one root context and one queue each.

use log::{error, info};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Receiver { context_id, queue_name: String::new() })
    });
}}

struct Receiver {
    context_id: u32,
    queue_name: String,
}

impl Context for Receiver {}

impl RootContext for Receiver {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(config) = self.get_plugin_configuration() else {
            error!("no plugin configuration: expected a queue name");
            return false;
        };
        self.queue_name = String::from_utf8_lossy(&config).into_owned();
        let queue_id = self.register_shared_queue(&self.queue_name);
        info!("queue \"{}\" registered as queueID={} by contextID={}", self.queue_name, queue_id, self.context_id);
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        match self.dequeue_shared_queue(queue_id) {
            Ok(Some(data)) => info!(
                "(contextID={}) dequeued data from {}(queueID={}): {}",
                self.context_id,
                self.queue_name,
                queue_id,
                String::from_utf8_lossy(&data)
            ),
            Ok(None) => {}
            Err(status) => error!("error retrieving data from queue {queue_id}: {status:?}"),
        }
    }
}
