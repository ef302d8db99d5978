//! Streams waiting for their plugins: HTTP streams with a filter stopped
//! and TCP connections get every signal of their plugins' contexts, for as
//! long as they subscribe.

use std::collections::HashMap;

use ferry_host::{InstanceId, StreamAction, StreamSignal};
use tokio::sync::mpsc;

/// Where a stream (an HTTP stream or a TCP connection) receives its
/// plugins' signals: (VM instance and context id, action). Filters of one
/// stream may live in different VMs, whose context ids overlap.
pub(crate) type SignalSink = mpsc::UnboundedSender<((InstanceId, u32), StreamAction)>;

/// Where a stream reads the signals sent to its [`SignalSink`].
pub(crate) type SignalSource = mpsc::UnboundedReceiver<((InstanceId, u32), StreamAction)>;

/// The streams of a thread that wait for signals from their plugins.
#[derive(Default)]
pub(crate) struct Streams {
    subscribers: HashMap<(InstanceId, u32), SignalSink>,
}

impl Streams {
    /// A stream gets every signal for its context until it unsubscribes.
    pub(crate) fn subscribe(&mut self, instance: InstanceId, context_id: u32, sink: SignalSink) {
        self.subscribers.insert((instance, context_id), sink);
    }

    pub(crate) fn unsubscribe(&mut self, instance: InstanceId, context_id: u32) {
        self.subscribers.remove(&(instance, context_id));
    }

    /// Delivers a signal; dropped if nothing waits (the client went away).
    pub(crate) fn signal(&mut self, signal: StreamSignal) {
        let key = (signal.instance, signal.context_id);
        if let Some(subscriber) = self.subscribers.get(&key) {
            let _ = subscriber.send((key, signal.action));
        }
    }

    /// Every stream still waiting on a discarded instance learns that it failed.
    pub(crate) fn retire(&mut self, instance: InstanceId) {
        for (key, subscriber) in self.subscribers.iter().filter(|((i, _), _)| *i == instance) {
            let _ = subscriber.send((*key, StreamAction::Failed));
        }
    }
}
