//! The HTTP calls and gRPC calls and streams a thread's plugins have open:
//! each runs in a task of its own, keyed by the instance that made it and
//! its token, and reports back to the thread's event loop as an event.
//! A call is stopped when its stream ends or its instance is discarded.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use ferry_host::{Cancelled, GrpcCommand, GrpcOpen, HttpCallRequest, InstanceId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{Event, EventSender};
use crate::upstream::Upstreams;
use crate::upstream::grpc::{ChannelBody, framed};

/// An open gRPC call or stream: how to feed or stop it.
struct GrpcHandle {
    /// `None` once the plugin half-closed its side.
    sender: Option<mpsc::UnboundedSender<Bytes>>,
    task: AbortHandle,
}

pub(crate) struct PendingCalls {
    upstreams: Rc<Upstreams>,
    events: EventSender,
    http: HashMap<(InstanceId, u32), AbortHandle>,
    grpc: HashMap<(InstanceId, u32), GrpcHandle>,
}

impl PendingCalls {
    pub(crate) fn new(upstreams: Rc<Upstreams>, events: EventSender) -> Self {
        PendingCalls { upstreams, events, http: HashMap::new(), grpc: HashMap::new() }
    }

    /// Sends a plugin's HTTP call; its response comes back as
    /// [`Event::HttpCallDone`].
    pub(crate) fn start_http(&mut self, call: HttpCallRequest) {
        let key = (call.instance, call.token);
        let upstreams = self.upstreams.clone();
        let events = self.events.clone();
        let task = tokio::task::spawn_local(async move {
            let result = upstreams.call(&call).await.map_err(|error| {
                tracing::debug!(target: "upstream", "HTTP call to {}: {error}", call.upstream);
                error.to_string()
            });
            let (instance, context_id, token) = (call.instance, call.context_id, call.token);
            let _ = events.send(Event::HttpCallDone { instance, context_id, token, result });
        });
        self.http.insert(key, task.abort_handle());
    }

    /// An HTTP call's response arrived: whether the call was still pending
    /// (not cancelled meanwhile).
    pub(crate) fn http_done(&mut self, instance: InstanceId, token: u32) -> bool {
        self.http.remove(&(instance, token)).is_some()
    }

    /// Carries out a plugin's gRPC command.
    pub(crate) fn grpc(&mut self, command: GrpcCommand) {
        let key = command.key();
        match command {
            GrpcCommand::Open(open) => self.open_grpc(open),
            GrpcCommand::Send { message, end_stream, .. } => {
                let Some(handle) = self.grpc.get_mut(&key) else { return };
                if let Some(sender) = &handle.sender {
                    let _ = sender.send(framed(&message));
                }
                if end_stream {
                    handle.sender = None;
                }
            }
            // The end of the request: the answer and the close still arrive.
            GrpcCommand::Close { .. } => {
                if let Some(handle) = self.grpc.get_mut(&key) {
                    handle.sender = None;
                }
            }
            GrpcCommand::Cancel { .. } => self.stop_grpc(key),
        }
    }

    fn open_grpc(&mut self, open: GrpcOpen) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let sender = match &open.message {
            // A unary call: its one message, then the end of the request.
            Some(message) => {
                let _ = sender.send(framed(message));
                None
            }
            None => Some(sender),
        };
        let key = (open.instance, open.token);
        let upstreams = self.upstreams.clone();
        let events = self.events.clone();
        let task = tokio::task::spawn_local(async move {
            let context_id = open.context_id;
            let report = |event| {
                let _ = events.send(Event::Grpc { key, context_id, event });
            };
            crate::upstream::grpc::run(&upstreams, &open, ChannelBody::new(receiver), report).await;
            let _ = events.send(Event::GrpcEnded(key));
        });
        self.grpc.insert(key, GrpcHandle { sender, task: task.abort_handle() });
    }

    /// A gRPC task ended on its own.
    pub(crate) fn grpc_ended(&mut self, key: (InstanceId, u32)) {
        self.grpc.remove(&key);
    }

    fn stop_grpc(&mut self, key: (InstanceId, u32)) {
        if let Some(handle) = self.grpc.remove(&key) {
            handle.task.abort();
        }
    }

    /// Stops a call nobody waits for any more.
    pub(crate) fn cancel(&mut self, cancelled: Cancelled) {
        match cancelled {
            Cancelled::HttpCall { instance, token } => {
                if let Some(task) = self.http.remove(&(instance, token)) {
                    tracing::debug!(target: "upstream", "HTTP call {token} of {instance:?} cancelled");
                    task.abort();
                }
            }
            Cancelled::Grpc { instance, token } => self.stop_grpc((instance, token)),
        }
    }

    /// Calls and streams open now.
    pub(crate) fn open(&self) -> usize {
        self.http.len() + self.grpc.len()
    }
}
