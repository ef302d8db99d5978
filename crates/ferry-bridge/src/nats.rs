//! The NATS JetStream backend: one connection per process (`async-nats`,
//! which reconnects by itself), one stream per bridged queue with
//! work-queue retention (an item is gone once a receiver acknowledged it),
//! and one durable pull consumer shared by every receiver of the fleet.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, context::PublishErrorKind};
use async_nats::{ConnectOptions, connection::State};
use bytes::Bytes;
use ferry_config::{BridgeStorage, BridgedQueue, NatsBroker};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::backend::{BackendError, Incoming, Outgoing, QueueBackend};

/// Connects to the broker, on the bridge's runtime. Returns at once: the
/// client keeps trying in the background while the broker is down.
pub(crate) async fn connect(broker: &NatsBroker) -> Result<async_nats::Client, BackendError> {
    let mut options = ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(broker.connect_timeout)
        // Never give up on the broker: items wait in the bridge's buffer.
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!(target: "bridge", "connected to the NATS broker"),
                async_nats::Event::Disconnected => {
                    tracing::warn!(target: "bridge", "lost the NATS broker; reconnecting (items wait in the buffer)")
                }
                // Said on every failed reconnection attempt: the disconnect
                // above already told the operator.
                async_nats::Event::ClientError(e) => tracing::debug!(target: "bridge", "NATS: {e}"),
                other => tracing::warn!(target: "bridge", "NATS: {other}"),
            }
        });
    if let Some(name) = &broker.name {
        options = options.name(name);
    }
    if let (Some(user), Some(password)) = (&broker.user, &broker.password) {
        options = options.user_and_password(user.clone(), password.clone());
    } else if let Some(user) = &broker.user {
        options = options.user_and_password(user.clone(), String::new());
    }
    if let Some(token) = &broker.token {
        options = options.token(token.clone());
    }
    if let Some(file) = &broker.credentials_file {
        options = options
            .credentials_file(file)
            .await
            .map_err(|e| BackendError(format!("credentials_file {}: {e}", file.display())))?;
    }
    if let Some(tls) = &broker.tls {
        options = options.require_tls(tls.required);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    options.connect(broker.servers.clone()).await.map_err(|e| BackendError(format!("NATS connect: {e}")))
}

/// The header that says how many items a packed message holds.
const ITEMS_HEADER: &str = "Ferry-Items";

/// One bridged queue in JetStream.
pub(crate) struct JetStreamQueue {
    client: async_nats::Client,
    context: jetstream::Context,
    config: BridgedQueue,
    consumer: OnceCell<PullConsumer>,
}

impl JetStreamQueue {
    pub(crate) fn new(client: async_nats::Client, config: BridgedQueue) -> Self {
        let mut context = jetstream::new(client.clone());
        context.set_timeout(config.publish_timeout);
        JetStreamQueue { client, context, config, consumer: OnceCell::new() }
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, BackendError> {
        let storage = match self.config.storage {
            BridgeStorage::File => jetstream::stream::StorageType::File,
            BridgeStorage::Memory => jetstream::stream::StorageType::Memory,
        };
        let config = jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![self.config.subject.clone()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage,
            duplicate_window: self.config.duplicate_window,
            ..Default::default()
        };
        self.context
            .get_or_create_stream(config)
            .await
            .map_err(|e| BackendError(format!("stream {}: {e}", self.config.stream)))
    }
}

fn error(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("{what}: {e}"))
}

impl QueueBackend for JetStreamQueue {
    type Receipt = jetstream::Message;

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn max_message(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => 1 << 20,
            n => n,
        }
    }

    async fn prepare_publishing(&self) -> Result<(), BackendError> {
        self.stream().await.map(drop)
    }

    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), BackendError>> {
        // Everything goes out first; then the confirmations are awaited,
        // so one batch costs one round trip, not one per item.
        let mut pending = Vec::with_capacity(batch.len());
        for item in batch {
            let mut message =
                jetstream::message::PublishMessage::build().payload(item.payload.clone()).message_id(&item.id);
            if item.items > 1 {
                message = message.header(ITEMS_HEADER, item.items.to_string().as_str());
            }
            pending.push(self.context.send_publish(self.config.subject.clone(), message).await);
        }
        let mut results = Vec::with_capacity(batch.len());
        for sent in pending {
            let result = match sent {
                Ok(confirmation) => confirmation.await.map(drop).map_err(|e| match e.kind() {
                    PublishErrorKind::TimedOut => BackendError("no confirmation from the broker in time".into()),
                    _ => error("publish", e),
                }),
                Err(e) => Err(error("publish", e)),
            };
            results.push(result);
        }
        results
    }

    async fn prepare_receiving(&self) -> Result<(), BackendError> {
        self.consumer
            .get_or_try_init(|| async {
                let stream = self.stream().await?;
                let config = jetstream::consumer::pull::Config {
                    durable_name: Some(self.config.durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    filter_subject: self.config.subject.clone(),
                    max_deliver: -1,
                    ..Default::default()
                };
                stream
                    .get_or_create_consumer(&self.config.durable, config)
                    .await
                    .map_err(|e| error(&format!("consumer {}", self.config.durable), e))
            })
            .await
            .map(drop)
    }

    async fn fetch(
        &self,
        max: usize,
        wait: Duration,
        deliver: &mut (dyn FnMut(Incoming<Self::Receipt>) + Send),
    ) -> Result<(), BackendError> {
        let Some(consumer) = self.consumer.get() else {
            return Err(BackendError("the consumer is not ready".into()));
        };
        let mut batch =
            consumer.batch().max_messages(max).expires(wait).messages().await.map_err(|e| error("fetch", e))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| error("fetch", e))?;
            let redelivered = message.info().is_ok_and(|info| info.delivered > 1);
            let payload: Bytes = message.payload.clone();
            let headers = message.headers.as_ref();
            let id = headers.and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID)).map(|v| v.to_string());
            let items = headers.and_then(|h| h.get(ITEMS_HEADER)).and_then(|n| n.as_str().parse().ok()).unwrap_or(1);
            deliver(Incoming { payload, items, id, redelivered, receipt: message });
        }
        Ok(())
    }

    async fn ack(&self, receipts: Vec<Self::Receipt>) -> Result<(), BackendError> {
        for message in &receipts {
            message.ack().await.map_err(|e| error("ack", e))?;
        }
        // Written to the socket: a receiver killed now has still acknowledged them.
        self.client.flush().await.map_err(|e| error("ack", e))
    }

    async fn nack(&self, receipts: Vec<Self::Receipt>) -> Result<(), BackendError> {
        for message in &receipts {
            message.ack_with(AckKind::Nak(None)).await.map_err(|e| error("nack", e))?;
        }
        self.client.flush().await.map_err(|e| error("nack", e))
    }
}
