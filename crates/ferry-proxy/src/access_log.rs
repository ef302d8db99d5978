//! Access logs of the HTTP connection manager: one line per request for
//! each configured logger, made when the response has ended (sent, or cut
//! off because the client left), and written by a background thread, so
//! a worker never waits on a file or a terminal.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use ferry_config::{AccessLogFilter, AccessLogSink, FormatPiece, HeaderOperand, LogFormat, Operator};

use crate::Civil;

/// One logger: its format, and the channel to its writer thread.
pub(crate) struct AccessLogger {
    format: LogFormat,
    omit_empty_values: bool,
    /// Which requests it logs (all when `None`).
    filter: Option<AccessLogFilter>,
    lines: mpsc::Sender<Message>,
}

enum Message {
    Line(String),
    /// Answered once every line before it is written out.
    Flush(mpsc::SyncSender<()>),
}

impl AccessLogger {
    /// Opens the logger's file (appending) or stream and starts its writer.
    ///
    /// # Errors
    /// The file cannot be opened, or the thread not started.
    pub(crate) fn open(config: &ferry_config::AccessLog) -> std::io::Result<Arc<AccessLogger>> {
        let out: Box<dyn Write + Send> = match &config.sink {
            AccessLogSink::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
            AccessLogSink::Stdout => Box::new(std::io::stdout()),
            AccessLogSink::Stderr => Box::new(std::io::stderr()),
            AccessLogSink::Wasm(_) => {
                return Err(std::io::Error::other("a Wasm access logger is a plugin, not a stream"));
            }
        };
        let (lines, receiver) = mpsc::channel();
        std::thread::Builder::new().name("access_log".into()).spawn(move || write_lines(&receiver, out))?;
        Ok(Arc::new(AccessLogger {
            format: config.format.clone(),
            omit_empty_values: config.omit_empty_values,
            filter: config.filter.clone(),
            lines,
        }))
    }

    /// Waits (at most a second) until every line logged so far is written.
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.lines.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// The writer thread: writes lines as they come, flushing whenever the
/// channel is empty, until every sender is gone.
fn write_lines(receiver: &mpsc::Receiver<Message>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    let mut waiting = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Message::Flush(done) => waiting.push(done),
            }
            next = receiver.try_recv().ok();
        }
        let _ = out.flush();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// What only the path a request took knows, carried out of the connection
/// manager in the response's extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamNotes {
    /// The upstream that answered.
    pub upstream_host: Option<SocketAddr>,
    /// The cluster the route chose.
    pub cluster: Option<String>,
    /// Envoy's response flag for how the proxy answered, e.g. `UF`.
    pub flag: Option<&'static str>,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`), e.g.
    /// `via_upstream`, `route_not_found`.
    pub details: Option<std::borrow::Cow<'static, str>>,
    /// The request headers as they went on (after the proxy's additions,
    /// such as `x-request-id`), when they differ from the client's.
    pub request_headers: Option<http::HeaderMap>,
    /// Filter state plugins set (`%FILTER_STATE(...)%`): `set_envoy_filter_state`
    /// keys, and `wasm.<path>` for `proxy_set_property` values.
    pub filter_state: Vec<(String, bytes::Bytes)>,
    /// The stream's dynamic metadata (`%DYNAMIC_METADATA(...)%`), if any.
    pub dynamic_metadata: Option<ferry_host::Metadata>,
}

impl StreamNotes {
    /// Takes a stream's filter state for the log.
    pub(crate) fn note_filter_state(&mut self, info: &ferry_host::StreamInfo) {
        let set = info.filter_state.iter().map(|(k, v)| (k.clone(), bytes::Bytes::from(v.clone())));
        let properties =
            info.properties.iter().map(|(path, v)| (format!("wasm.{}", String::from_utf8_lossy(path)), v.clone()));
        self.filter_state = set.chain(properties).collect();
        let metadata = &info.metadata;
        let empty = metadata.filter_metadata.is_empty() && metadata.typed_filter_metadata.is_empty();
        self.dynamic_metadata = (!empty).then(|| metadata.clone());
    }
}

/// One request (or TCP connection) being logged: what was known when it
/// began, then its response.
pub(crate) struct Entry {
    loggers: Arc<[Arc<AccessLogger>]>,
    start: SystemTime,
    started: Instant,
    /// The HTTP request; none for a TCP connection.
    request: Option<RequestHead>,
    downstream_remote: SocketAddr,
    downstream_local: Option<SocketAddr>,
    /// Request body bytes (for TCP: bytes from the client), counted as they are read.
    pub(crate) received: Arc<AtomicU64>,
    status: u16,
    response_headers: http::HeaderMap,
    notes: StreamNotes,
}

/// What `%REQ(...)%` and `%PROTOCOL%` read.
struct RequestHead {
    method: http::Method,
    path: String,
    authority: String,
    protocol: &'static str,
    headers: http::HeaderMap,
}

impl Entry {
    /// Starts logging a request that arrived on a connection from `remote`
    /// to `local`. With `generate_request_id`, a request without an
    /// `x-request-id` is logged with one, as Envoy's connection manager
    /// gives every request one (a request that goes upstream is logged with
    /// the one it went with).
    pub(crate) fn begin(
        loggers: Arc<[Arc<AccessLogger>]>,
        parts: &http::request::Parts,
        (remote, local): (SocketAddr, Option<SocketAddr>),
        generate_request_id: bool,
    ) -> Entry {
        let mut request_headers = parts.headers.clone();
        if generate_request_id {
            crate::headers::add_request_id(&mut request_headers);
        }
        let authority = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_owned();
        let request = RequestHead {
            method: parts.method.clone(),
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            authority,
            protocol: crate::headers::protocol_name(parts.version),
            headers: request_headers,
        };
        Entry::new(loggers, Some(request), (remote, local))
    }

    /// Starts logging a TCP connection from `remote` to `local`.
    pub(crate) fn begin_connection(
        loggers: Arc<[Arc<AccessLogger>]>,
        (remote, local): (SocketAddr, Option<SocketAddr>),
    ) -> Entry {
        Entry::new(loggers, None, (remote, local))
    }

    fn new(
        loggers: Arc<[Arc<AccessLogger>]>,
        request: Option<RequestHead>,
        (remote, local): (SocketAddr, Option<SocketAddr>),
    ) -> Entry {
        Entry {
            loggers,
            start: SystemTime::now(),
            started: Instant::now(),
            request,
            downstream_remote: remote,
            downstream_local: local,
            received: Arc::default(),
            status: 0,
            response_headers: http::HeaderMap::new(),
            notes: StreamNotes::default(),
        }
    }

    /// Records the response (its head; the body is counted as it is sent).
    pub(crate) fn response(&mut self, status: u16, headers: &http::HeaderMap, notes: StreamNotes) {
        self.status = status;
        self.response_headers = headers.clone();
        if let (Some(sent), Some(request)) = (&notes.request_headers, &mut self.request) {
            request.headers = sent.clone();
        }
        self.notes = notes;
    }

    /// Records what only the end of a TCP connection knows.
    pub(crate) fn connection_ended(&mut self, notes: StreamNotes, received: u64) {
        self.notes = notes;
        self.received.store(received, Ordering::Relaxed);
    }

    /// Logs the request: `sent` body bytes, `completed` if the whole
    /// response went out (else the client left: Envoy's `DC`; not for TCP,
    /// where either side may end a connection).
    pub(crate) fn finish(mut self, sent: u64, completed: bool) {
        if !completed && self.notes.flag.is_none() && self.request.is_some() {
            self.notes.flag = Some("DC");
        }
        let finished = Finished { entry: &self, sent, duration: self.started.elapsed() };
        for logger in self.loggers.iter() {
            if logger.filter.as_ref().is_some_and(|filter| !finished.passes(filter)) {
                continue;
            }
            let line = finished.render(&logger.format, logger.omit_empty_values);
            let _ = logger.lines.send(Message::Line(line));
        }
    }
}

/// An entry at its end, ready to render.
struct Finished<'a> {
    entry: &'a Entry,
    sent: u64,
    duration: Duration,
}

/// A value an operator gives: numbers stay numbers in JSON.
enum Field {
    Text(String),
    Number(u64),
    Missing,
}

impl Finished<'_> {
    /// Whether an access-log filter lets this request be logged.
    fn passes(&self, filter: &AccessLogFilter) -> bool {
        let e = self.entry;
        match filter {
            AccessLogFilter::StatusCode(comparison) => comparison.accepts(u64::from(e.status)),
            AccessLogFilter::Duration(comparison) => comparison.accepts(self.duration.as_millis() as u64),
            AccessLogFilter::NotHealthCheck => true,
            AccessLogFilter::And(filters) => filters.iter().all(|f| self.passes(f)),
            AccessLogFilter::Or(filters) => filters.iter().any(|f| self.passes(f)),
            AccessLogFilter::Header(matcher) => matcher.matches(e.request_header(&matcher.name).as_deref()),
            AccessLogFilter::ResponseFlag(flags) => match e.notes.flag {
                Some(flag) => flags.is_empty() || flags.iter().any(|f| f == flag),
                None => false,
            },
        }
    }

    fn render(&self, format: &LogFormat, omit_empty: bool) -> String {
        match format {
            LogFormat::Text(pieces) => self.text(pieces, omit_empty),
            LogFormat::Json(fields) => {
                let mut object = serde_json::Map::new();
                for (key, pieces) in fields {
                    let value = match pieces.as_slice() {
                        [FormatPiece::Operator(operator)] => match self.field(operator) {
                            Field::Text(text) => serde_json::Value::String(text),
                            Field::Number(n) => serde_json::Value::from(n),
                            Field::Missing if omit_empty => continue,
                            Field::Missing => serde_json::Value::Null,
                        },
                        pieces => serde_json::Value::String(self.text(pieces, omit_empty)),
                    };
                    object.insert(key.clone(), value);
                }
                let mut line = serde_json::Value::Object(object).to_string();
                line.push('\n');
                line
            }
        }
    }

    fn text(&self, pieces: &[FormatPiece], omit_empty: bool) -> String {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                FormatPiece::Text(text) => out.push_str(text),
                FormatPiece::Operator(operator) => match self.field(operator) {
                    Field::Text(text) => out.push_str(&text),
                    Field::Number(n) => out.push_str(&n.to_string()),
                    Field::Missing if omit_empty => {}
                    Field::Missing => out.push('-'),
                },
            }
        }
        out
    }

    fn field(&self, operator: &Operator) -> Field {
        let e = self.entry;
        let text = |value: Option<String>| value.filter(|v| !v.is_empty()).map_or(Field::Missing, Field::Text);
        match operator {
            Operator::StartTime => Field::Text(Civil::from_system_time(e.start).iso8601_millis()),
            Operator::StartTimeFormatted(format) => {
                Field::Text(chrono::DateTime::<chrono::Utc>::from(e.start).format(format).to_string())
            }
            Operator::DynamicMetadata { namespace, path, max_length } => {
                let value = e.notes.dynamic_metadata.as_ref().and_then(|m| dynamic_metadata(m, namespace, path));
                text(value.map(|v| match max_length {
                    Some(max) => v.chars().take(*max).collect(),
                    None => v,
                }))
            }
            Operator::FilterState { key, plain, max_length } => {
                let value = e.notes.filter_state.iter().rev().find(|(k, _)| k == key).map(|(_, v)| {
                    let text = String::from_utf8_lossy(v);
                    if *plain { text.into_owned() } else { serde_json::Value::from(text.as_ref()).to_string() }
                });
                text(value.map(|v| match max_length {
                    Some(max) => v.chars().take(*max).collect(),
                    None => v,
                }))
            }
            Operator::Request(operand) => text(header(operand, |name| e.request_header(name))),
            Operator::Response(operand) => text(header(operand, |name| match name {
                ":status" => (e.status != 0).then(|| e.status.to_string()),
                _ => e.response_headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned),
            })),
            Operator::Protocol => text(e.request.as_ref().map(|r| r.protocol.to_owned())),
            Operator::ResponseCode => Field::Number(u64::from(e.status)),
            Operator::ResponseFlags => text(e.notes.flag.map(str::to_owned)),
            Operator::ResponseCodeDetails => text(e.notes.details.as_deref().map(str::to_owned)),
            Operator::BytesReceived => Field::Number(e.received.load(Ordering::Relaxed)),
            Operator::BytesSent => Field::Number(self.sent),
            Operator::Duration => Field::Number(self.duration.as_millis() as u64),
            Operator::UpstreamHost => text(e.notes.upstream_host.map(|a| a.to_string())),
            Operator::UpstreamCluster => text(e.notes.cluster.clone()),
            Operator::DownstreamRemoteAddress => Field::Text(e.downstream_remote.to_string()),
            Operator::DownstreamRemoteAddressWithoutPort => Field::Text(e.downstream_remote.ip().to_string()),
            Operator::DownstreamLocalAddress => text(e.downstream_local.map(|a| a.to_string())),
            Operator::DownstreamLocalAddressWithoutPort => text(e.downstream_local.map(|a| a.ip().to_string())),
        }
    }
}

impl Entry {
    /// A request header by lower-case name, pseudo-headers included;
    /// repeated headers joined with `,`.
    fn request_header(&self, name: &str) -> Option<String> {
        let request = self.request.as_ref()?;
        match name {
            ":method" => Some(request.method.as_str().to_owned()),
            ":path" => Some(request.path.clone()),
            ":authority" | "host" => Some(request.authority.clone()),
            ":scheme" => Some("http".to_owned()),
            _ => {
                let values: Vec<&str> = request.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
                (!values.is_empty()).then(|| values.join(","))
            }
        }
    }
}

/// `%DYNAMIC_METADATA(NS:KEY...)%`: a string as it is, anything else (a
/// number, a bool, a Struct, a list) as JSON, as Envoy prints them.
fn dynamic_metadata(metadata: &ferry_host::Metadata, namespace: &str, path: &[String]) -> Option<String> {
    use prost_types::value::Kind;
    let mut value =
        prost_types::Value { kind: Some(Kind::StructValue(metadata.filter_metadata.get(namespace)?.clone())) };
    for key in path {
        value = match value.kind? {
            Kind::StructValue(s) => s.fields.get(key)?.clone(),
            _ => return None,
        };
    }
    fn json(value: &prost_types::Value) -> serde_json::Value {
        match &value.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            // Protobuf's JSON writes whole numbers without a fraction.
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => serde_json::json!(*n as i64),
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
            Some(Kind::StructValue(s)) => s.fields.iter().map(|(k, v)| (k.clone(), json(v))).collect(),
            Some(Kind::ListValue(l)) => l.values.iter().map(json).collect(),
        }
    }
    Some(match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => json(&value).to_string(),
    })
}

/// `%REQ(X?Y):Z%`: X, else Y, cut to Z characters.
fn header(operand: &HeaderOperand, get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let value = get(&operand.name).or_else(|| operand.alternative.as_deref().and_then(&get))?;
    Some(match operand.max_length {
        Some(max) => value.chars().take(max).collect(),
        None => value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_metadata_reads_a_namespace_or_a_value_in_it() {
        use prost_types::value::Kind;
        let value = |kind| prost_types::Value { kind: Some(kind) };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("tenant".to_owned(), value(Kind::StringValue("blue".into())));
        fields.insert("weight".to_owned(), value(Kind::NumberValue(3.0)));
        let mut metadata = ferry_host::Metadata::default();
        metadata.filter_metadata.insert("envoy.lb".into(), prost_types::Struct { fields });
        let read = |ns: &str, path: &[&str]| {
            dynamic_metadata(&metadata, ns, &path.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(read("envoy.lb", &["tenant"]).as_deref(), Some("blue"));
        assert_eq!(read("envoy.lb", &["weight"]).as_deref(), Some("3"));
        assert_eq!(read("envoy.lb", &[]).as_deref(), Some(r#"{"tenant":"blue","weight":3}"#));
        assert_eq!(read("envoy.lb", &["nope"]), None);
        assert_eq!(read("other", &[]), None);
    }
}
