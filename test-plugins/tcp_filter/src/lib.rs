//! A network filter for ferry's TCP tests. Per connection it:
//! - logs `new connection from <source.address>`;
//! - holds client data until it ends with a newline (StopIteration), so the
//!   upstream sees whole lines only, then upper-cases it;
//! - on a line `close`, closes the connection with `proxy_close_stream`;
//! - on a line `trap`, panics (the plugin fails);
//! - logs upstream chunks with `upstream.address`, and the close callbacks
//!   with their peer types, `on_done` and `on_log`, so tests can check order.

use log::info;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Connection { context_id }))
    }
}

struct Connection {
    context_id: u32,
}

fn text(bytes: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
}

impl Context for Connection {
    fn on_done(&mut self) -> bool {
        info!("[{}] done", self.context_id);
        true
    }
}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        let source = text(self.get_property(vec!["source", "address"]));
        info!("[{}] new connection from {source}", self.context_id);
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        info!("[{}] downstream {} bytes, end_of_stream={end_of_stream}", self.context_id, data.len());
        if data.is_empty() {
            return Action::Continue;
        }
        if !data.ends_with(b"\n") && !end_of_stream {
            return Action::Pause;
        }
        match &data[..] {
            b"close\n" => {
                self.close_downstream();
                return Action::Pause;
            }
            b"trap\n" => panic!("asked to trap"),
            _ => {}
        }
        self.set_downstream_data(0, data_size, &data.to_ascii_uppercase());
        Action::Continue
    }

    fn on_downstream_close(&mut self, peer_type: PeerType) {
        info!("[{}] downstream close, peer {}", self.context_id, peer_type as u32);
    }

    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let upstream = text(self.get_property(vec!["upstream", "address"]));
        info!("[{}] upstream {data_size} bytes from {upstream}, end_of_stream={end_of_stream}", self.context_id);
        Action::Continue
    }

    fn on_upstream_close(&mut self, peer_type: PeerType) {
        info!("[{}] upstream close, peer {}", self.context_id, peer_type as u32);
    }

    fn on_log(&mut self) {
        info!("[{}] log", self.context_id);
    }
}
