//! ferry's `ferry.config.v1.QueueBridge` bootstrap extension: shared queues
//! that live in a broker (NATS JetStream), shared by a fleet of ferry
//! processes. Each item of `queues` names a queue by (`vm_id`, `name`), as
//! plugins do, and says where it lives in the broker.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::ConfigError;
use crate::decode::{decode, duration, err, join};
use crate::model::{BridgeStorage, BridgedQueue, NatsBroker, NatsTls, QueueBounds, QueueBridge, QueueOverflow};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    nats: Option<RawNats>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    queues: Vec<RawQueue>,
    #[serde(default)]
    ready_requires_broker: bool,
    drain_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNats {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    servers: Vec<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    credentials_file: Option<String>,
    tls: Option<RawTls>,
    connect_timeout: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    vm_id: String,
    name: String,
    stream: String,
    subject: Option<String>,
    storage: Option<String>,
    duplicate_window: Option<String>,
    durable: Option<String>,
    fetch_ahead: Option<u32>,
    ack_wait: Option<String>,
    publish_batch: Option<u32>,
    publish_timeout: Option<String>,
    buffer: Option<RawBuffer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuffer {
    max_items: Option<u64>,
    max_bytes: Option<u64>,
    overflow: Option<String>,
}

/// The NATS server ferry connects to when `servers` is not given.
const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// Reads the extension's fields (`path` is where they are).
pub(crate) fn queue_bridge(fields: Value, path: &str) -> Result<QueueBridge, ConfigError> {
    let raw: RawBridge = decode(fields, path)?;
    let Some(nats) = raw.nats else {
        return Err(err(join(path, "nats"), "missing: the broker (NATS JetStream is the one ferry bridges to)"));
    };
    let broker = nats_broker(nats, &join(path, "nats"))?;
    if raw.queues.is_empty() {
        return Err(err(join(path, "queues"), "missing: name at least one queue to bridge"));
    }
    let mut queues: Vec<BridgedQueue> = Vec::new();
    for (i, q) in raw.queues.into_iter().enumerate() {
        let at = format!("{path}.queues[{i}]");
        let queue = bridged_queue(q, &at)?;
        if queues.iter().any(|other| other.vm_id == queue.vm_id && other.name == queue.name) {
            return Err(err(at, format!("queue ({:?}, {:?}) is bridged twice", queue.vm_id, queue.name)));
        }
        if let Some(other) = queues.iter().find(|other| other.stream == queue.stream) {
            return Err(err(
                join(&at, "stream"),
                format!(
                    "{:?} already holds queue ({:?}, {:?}); give each queue its own stream",
                    queue.stream, other.vm_id, other.name
                ),
            ));
        }
        if let Some(other) = queues.iter().find(|other| other.subject == queue.subject) {
            return Err(err(
                join(&at, "subject"),
                format!("{:?} is already the subject of queue ({:?}, {:?})", queue.subject, other.vm_id, other.name),
            ));
        }
        queues.push(queue);
    }
    let drain_timeout =
        raw.drain_timeout.map(|d| duration(&d, &join(path, "drain_timeout"))).transpose()?.unwrap_or(DRAIN_TIMEOUT);
    Ok(QueueBridge { nats: broker, queues, ready_requires_broker: raw.ready_requires_broker, drain_timeout })
}

/// How long a stopping ferry tries to publish what it still holds, by default.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn nats_broker(raw: RawNats, path: &str) -> Result<NatsBroker, ConfigError> {
    let servers = if raw.servers.is_empty() { vec![DEFAULT_SERVER.to_owned()] } else { raw.servers };
    for (i, server) in servers.iter().enumerate() {
        let scheme_ok = ["nats://", "tls://"].iter().any(|s| server.starts_with(s)) || !server.contains("://");
        if !scheme_ok || server.is_empty() {
            return Err(err(
                format!("{path}.servers[{i}]"),
                format!("{server:?} is not a NATS address (host:port, nats://host:port or tls://host:port)"),
            ));
        }
    }
    if raw.password.is_some() && raw.user.is_none() {
        return Err(err(join(path, "user"), "missing: a password needs a user"));
    }
    let ways = [raw.user.is_some(), raw.token.is_some(), raw.credentials_file.is_some()];
    if ways.iter().filter(|&&w| w).count() > 1 {
        return Err(err(path, "give one of user/password, token or credentials_file"));
    }
    let credentials_file = raw.credentials_file.map(PathBuf::from);
    if let Some(file) = &credentials_file
        && !file.is_file()
    {
        return Err(err(join(path, "credentials_file"), format!("{} is not a readable file", file.display())));
    }
    let tls = raw
        .tls
        .map(|t| {
            let at = join(path, "tls");
            let file = |value: Option<String>, field: &str| -> Result<Option<PathBuf>, ConfigError> {
                let Some(value) = value else { return Ok(None) };
                let file = PathBuf::from(value);
                if !file.is_file() {
                    return Err(err(join(&at, field), format!("{} is not a readable file", file.display())));
                }
                Ok(Some(file))
            };
            let (cert_file, key_file) = (file(t.cert_file, "cert_file")?, file(t.key_file, "key_file")?);
            if cert_file.is_some() != key_file.is_some() {
                return Err(err(&at, "cert_file and key_file go together"));
            }
            Ok(NatsTls { ca_file: file(t.ca_file, "ca_file")?, cert_file, key_file, required: t.required })
        })
        .transpose()?;
    let connect_timeout = raw
        .connect_timeout
        .map(|d| duration(&d, &join(path, "connect_timeout")))
        .transpose()?
        .unwrap_or(Duration::from_secs(2));
    Ok(NatsBroker {
        servers,
        user: raw.user,
        password: raw.password,
        token: raw.token,
        credentials_file,
        tls,
        connect_timeout,
        name: raw.name,
    })
}

fn bridged_queue(raw: RawQueue, path: &str) -> Result<BridgedQueue, ConfigError> {
    if raw.vm_id.is_empty() {
        return Err(err(join(path, "vm_id"), "must not be empty: it is the vm_id of the VM that registers the queue"));
    }
    let stream_ok = !raw.stream.is_empty()
        && raw.stream.chars().all(|c| !c.is_whitespace() && !matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if !stream_ok {
        return Err(err(
            join(path, "stream"),
            format!("{:?} is not a JetStream stream name (no spaces, '.', '*', '>', '/' or '\\')", raw.stream),
        ));
    }
    let subject = raw
        .subject
        .unwrap_or_else(|| format!("ferry.queue.{}.{}", subject_token(&raw.vm_id), subject_token(&raw.name)));
    let subject_ok = !subject.is_empty()
        && subject.split('.').all(|t| !t.is_empty() && t.chars().all(|c| !c.is_whitespace() && c != '*' && c != '>'));
    if !subject_ok {
        return Err(err(join(path, "subject"), format!("{subject:?} is not a NATS subject without wildcards")));
    }
    let storage = match raw.storage.as_deref() {
        None | Some("FILE") => BridgeStorage::File,
        Some("MEMORY") => BridgeStorage::Memory,
        Some(other) => {
            return Err(err(join(path, "storage"), format!("unknown storage {other} (expected FILE or MEMORY)")));
        }
    };
    let seconds = |value: Option<String>, field: &str, default: u64| -> Result<Duration, ConfigError> {
        let value =
            value.map(|d| duration(&d, &join(path, field))).transpose()?.unwrap_or(Duration::from_secs(default));
        if value.is_zero() {
            return Err(err(join(path, field), "must be more than 0s"));
        }
        Ok(value)
    };
    let duplicate_window = seconds(raw.duplicate_window, "duplicate_window", 120)?;
    let ack_wait = seconds(raw.ack_wait, "ack_wait", 30)?;
    let publish_timeout = seconds(raw.publish_timeout, "publish_timeout", 5)?;
    let positive = |value: Option<u32>, field: &str, default: u32| -> Result<usize, ConfigError> {
        match value {
            Some(0) => Err(err(join(path, field), "must be at least 1")),
            Some(n) => Ok(n as usize),
            None => Ok(default as usize),
        }
    };
    let fetch_ahead = positive(raw.fetch_ahead, "fetch_ahead", 256)?;
    let publish_batch = positive(raw.publish_batch, "publish_batch", 256)?;
    let durable = raw.durable.unwrap_or_else(|| format!("{}_receivers", raw.stream));
    if durable.is_empty() || durable.chars().any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>')) {
        return Err(err(join(path, "durable"), format!("{durable:?} is not a consumer name")));
    }
    let buffer = match raw.buffer {
        Some(b) => {
            let at = join(path, "buffer");
            let overflow = match b.overflow.as_deref() {
                None => None,
                Some("REFUSE") => Some(QueueOverflow::Refuse),
                Some("DROP_OLDEST") => Some(QueueOverflow::DropOldest),
                Some(other) => {
                    return Err(err(
                        join(&at, "overflow"),
                        format!("unknown overflow {other} (expected REFUSE or DROP_OLDEST)"),
                    ));
                }
            };
            QueueBounds { max_items: b.max_items, max_bytes: b.max_bytes, overflow }
        }
        None => QueueBounds::default(),
    };
    Ok(BridgedQueue {
        vm_id: raw.vm_id,
        name: raw.name,
        stream: raw.stream,
        subject,
        storage,
        duplicate_window,
        durable,
        fetch_ahead,
        ack_wait,
        publish_batch,
        publish_timeout,
        buffer,
    })
}

/// A vm_id or queue name made fit for one token of a NATS subject.
fn subject_token(name: &str) -> String {
    let token: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if token.is_empty() { "_".to_owned() } else { token }
}
