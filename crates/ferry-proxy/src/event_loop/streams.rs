//! Streams waiting for their plugins: paused HTTP streams (one signal
//! each) and TCP connections (every signal, for as long as they live).

use std::collections::HashMap;

use ferry_host::{InstanceId, StreamAction, StreamSignal};
use tokio::sync::{mpsc, oneshot};

/// Where a TCP connection receives its plugins' signals: (VM instance and
/// context id, action). Filters of one connection may live in different
/// VMs, whose context ids overlap.
pub(crate) type SignalSink = mpsc::UnboundedSender<((InstanceId, u32), StreamAction)>;

/// The streams of a thread that wait for signals from their plugins.
#[derive(Default)]
pub(crate) struct Streams {
    waiters: HashMap<(InstanceId, u32), oneshot::Sender<StreamAction>>,
    subscribers: HashMap<(InstanceId, u32), SignalSink>,
}

impl Streams {
    /// A paused stream waits for one signal.
    pub(crate) fn wait_for(&mut self, instance: InstanceId, context_id: u32) -> oneshot::Receiver<StreamAction> {
        let (tx, rx) = oneshot::channel();
        self.waiters.insert((instance, context_id), tx);
        rx
    }

    /// Forgets a waiter (its stream ended without a signal).
    pub(crate) fn forget(&mut self, instance: InstanceId, context_id: u32) {
        self.waiters.remove(&(instance, context_id));
    }

    /// A TCP connection gets every signal for its context until it unsubscribes.
    pub(crate) fn subscribe(&mut self, instance: InstanceId, context_id: u32, sink: SignalSink) {
        self.subscribers.insert((instance, context_id), sink);
    }

    pub(crate) fn unsubscribe(&mut self, instance: InstanceId, context_id: u32) {
        self.subscribers.remove(&(instance, context_id));
    }

    /// Delivers a signal; dropped if nothing waits (the client went away).
    pub(crate) fn signal(&mut self, signal: StreamSignal) {
        let key = (signal.instance, signal.context_id);
        if let Some(waiter) = self.waiters.remove(&key) {
            let _ = waiter.send(signal.action);
        } else if let Some(subscriber) = self.subscribers.get(&key) {
            let _ = subscriber.send((key, signal.action));
        }
    }

    /// Every stream still waiting on a discarded instance learns that it failed.
    pub(crate) fn retire(&mut self, instance: InstanceId) {
        let waiting: Vec<(InstanceId, u32)> = self.waiters.keys().filter(|(i, _)| *i == instance).copied().collect();
        for key in waiting {
            if let Some(waiter) = self.waiters.remove(&key) {
                let _ = waiter.send(StreamAction::Failed);
            }
        }
        for (key, subscriber) in self.subscribers.iter().filter(|((i, _), _)| *i == instance) {
            let _ = subscriber.send((*key, StreamAction::Failed));
        }
    }
}
