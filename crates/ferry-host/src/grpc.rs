//! gRPC calls and streams a plugin opens (`proxy_grpc_*`): what the host
//! asks of the embedder, and what the embedder reports back.
//!
//! As with HTTP calls, the host only records what the plugin asked; the
//! embedder talks HTTP/2 to the cluster and reports each event with
//! [`crate::WasmThread::on_grpc_event`], delivered to the root context of the
//! context that opened the call (as in Envoy).

use std::time::Duration;

use bytes::Bytes;

use crate::headers::HeaderMap;
use crate::mailbox::InstanceId;

/// What a plugin asked for.
#[derive(Clone, Debug)]
pub enum GrpcCommand {
    /// `proxy_grpc_call` (with a message) or `proxy_grpc_stream` (without).
    Open(GrpcOpen),
    /// `proxy_grpc_send` on a stream.
    Send {
        /// The VM instance of the stream.
        instance: InstanceId,
        /// The stream.
        token: u32,
        /// One message, without the gRPC length prefix.
        message: Bytes,
        /// Half-close the stream after it.
        end_stream: bool,
    },
    /// `proxy_grpc_cancel`, or `proxy_grpc_close` on a unary call: reset it;
    /// the plugin hears nothing more of it.
    Cancel {
        /// The VM instance of the call.
        instance: InstanceId,
        /// The call or stream.
        token: u32,
    },
    /// `proxy_grpc_close` on a stream: half-close it; the peer's answer and
    /// close still arrive.
    Close {
        /// The VM instance of the stream.
        instance: InstanceId,
        /// The stream.
        token: u32,
    },
}

/// A gRPC call or stream to open.
#[derive(Clone, Debug)]
pub struct GrpcOpen {
    /// The VM instance that opened it: its events go back there, or
    /// nowhere if it was replaced meanwhile.
    pub instance: InstanceId,
    /// The root context that gets its callbacks.
    pub context_id: u32,
    /// Its token, as the plugin knows it.
    pub token: u32,
    /// The cluster to send it to.
    pub cluster: String,
    /// `package.Service`.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata, sent as request headers.
    pub initial_metadata: HeaderMap,
    /// A unary call's request message; `None` for a stream.
    pub message: Option<Bytes>,
    /// `None`: no timeout.
    pub timeout: Option<Duration>,
}

/// Something that happened on a gRPC call or stream.
#[derive(Clone, Debug)]
pub enum GrpcEvent {
    /// The response headers (streams only, as in Envoy).
    InitialMetadata(HeaderMap),
    /// One message, without its length prefix.
    Message(Bytes),
    /// The trailers (streams only).
    TrailingMetadata(HeaderMap),
    /// The end: a gRPC status code (0 = OK) and message.
    Close {
        /// `grpc-status`.
        status: u32,
        /// `grpc-message`.
        message: String,
    },
}

/// Status codes the embedder reports for calls that never got a gRPC status.
pub mod status {
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// A message larger than the host hands a plugin.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// Internal error (a malformed response).
    pub const INTERNAL: u32 = 13;
    /// The cluster could not be reached.
    pub const UNAVAILABLE: u32 = 14;
    /// No status came back.
    pub const UNKNOWN: u32 = 2;
}

impl GrpcCommand {
    /// The call or stream it is about.
    pub fn key(&self) -> (InstanceId, u32) {
        match self {
            GrpcCommand::Open(open) => (open.instance, open.token),
            GrpcCommand::Send { instance, token, .. }
            | GrpcCommand::Cancel { instance, token }
            | GrpcCommand::Close { instance, token } => (*instance, *token),
        }
    }
}
