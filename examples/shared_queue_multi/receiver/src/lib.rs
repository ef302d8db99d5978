//! The receiver of the multi-queue example: a singleton Wasm service whose
//! VM carries one root context per service in envoy.yaml. Each root context
//! registers the queue its plugin configuration names, then logs every item
//! it takes from that queue.

use log::{error, info};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Receiver { context_id, queue: None })
    });
}}

struct Receiver {
    context_id: u32,
    /// Name and id of the queue this root context owns, once registered.
    queue: Option<(String, u32)>,
}

impl Context for Receiver {}

impl RootContext for Receiver {
    /// The configuration is the queue name; without one there is nothing to do.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(config) = self.get_plugin_configuration() else {
            error!("(contextID={}) no plugin configuration: expected a queue name", self.context_id);
            return false;
        };
        let name = String::from_utf8_lossy(&config).into_owned();
        let queue_id = self.register_shared_queue(&name);
        info!("queue \"{name}\" registered as queueID={queue_id} by contextID={}", self.context_id);
        self.queue = Some((name, queue_id));
        true
    }

    /// One notification per item: take one. Empty means someone else took it.
    fn on_queue_ready(&mut self, queue_id: u32) {
        let name = self.queue.as_ref().map_or("?", |(name, _)| name.as_str());
        match self.dequeue_shared_queue(queue_id) {
            Ok(Some(data)) => info!(
                "(contextID={}) dequeued data from {name}(queueID={queue_id}): {}",
                self.context_id,
                String::from_utf8_lossy(&data)
            ),
            Ok(None) => {}
            Err(status) => error!("error retrieving data from queue {queue_id}: {status:?}"),
        }
    }
}
