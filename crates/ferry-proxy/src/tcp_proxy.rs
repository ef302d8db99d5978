//! `tcp_proxy` with network Wasm filters in front of it: one task per
//! downstream connection relays bytes to one upstream connection, and shows
//! each chunk to the filters first.
//!
//! Envoy's semantics, in short:
//! - `proxy_on_new_connection` runs for each filter when the connection is
//!   accepted, before the upstream connection is made.
//! - Data from the client goes through the filters in order
//!   (`proxy_on_downstream_data`), data from the upstream in reverse order
//!   (`proxy_on_upstream_data`). A filter may change the bytes.
//! - A filter that stops iteration holds the data: the next chunk is added to
//!   what is held and the chain runs again from the first filter; for the
//!   held direction `proxy_continue_stream(DOWNSTREAM)` or `(UPSTREAM)`
//!   resumes from the next filter (Envoy supports only the first).
//! - Each side's end is passed on as a half close, with the side's last data
//!   when it waits behind it (`end_of_stream` true on that data, as Envoy
//!   reads). When the upstream ends its side, each filter gets
//!   `proxy_on_upstream_connection_close` (peer unknown, as Envoy reports
//!   it from the end of upstream data); when the connection closes,
//!   `proxy_on_downstream_connection_close`: remote if the client's end
//!   was the last of the two, local if the proxy's was (passing the
//!   upstream's end on), or the proxy closed it; then `proxy_on_done`,
//!   `proxy_on_log`, `proxy_on_delete`.
//! - A plugin that fails closes the connection (fail closed) or is skipped
//!   from then on (fail open).

use std::rc::Rc;
use std::sync::Arc;

use ferry_abi::PeerType;
use ferry_host::{
    HttpStream, PluginHandle, SharedStream, StreamAction, StreamCallback, StreamContext, StreamInfo, Verdict,
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::access_log::{Entry, StreamNotes};
use crate::event_loop::{SignalSink, ThreadLoop};
use crate::plan::TcpPlan;
use crate::upstream::Stream;

/// The filter state key that names the cluster of a connection.
const CLUSTER_KEY: &str = "envoy.tcp_proxy.cluster";

/// Bytes read from either side at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A filter as its plugin's signals name it: VM instance and context id.
type FilterKey = (ferry_host::InstanceId, u32);

/// Sleeps for the idle timeout, or forever without one.
async fn idle(timeout: Option<std::time::Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Why the relay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Both sides finished (the client's end closes the connection), or
    /// the client went away.
    Remote,
    /// The proxy closed: a plugin asked, a plugin failed closed, the
    /// upstream failed, or the idle timeout.
    Local,
}

/// A network filter's context on this connection.
struct Filter {
    context: StreamContext,
    handle: PluginHandle,
    /// Skipped from now on: it failed and its policy is fail open.
    skipped: bool,
}

/// One proxied connection: its filters and the data they see.
struct Connection {
    thread: Rc<ThreadLoop>,
    /// Lent to each callback; only `downstream_data`, `upstream_data` and `info` are used.
    data: SharedStream,
    filters: Vec<Filter>,
    /// Bytes held by a filter that stopped iteration, per [`Direction`].
    held: [Vec<u8>; 2],
    /// Index of the filter holding them, if one does, per [`Direction`].
    paused_at: [Option<usize>; 2],
    signals: SignalSink,
    /// The access-log entry, when the listener has access logs.
    log: Option<Entry>,
    /// Bytes read from the client and written to it (the access log's
    /// `%BYTES_RECEIVED%`, `%BYTES_SENT%`).
    received: u64,
    sent: u64,
    /// The upstream, its cluster and a response flag, for the access log.
    notes: StreamNotes,
}

/// Which way bytes go.
#[derive(Clone, Copy)]
enum Direction {
    /// From the client to the upstream.
    Downstream = 0,
    /// From the upstream to the client.
    Upstream = 1,
}

/// Indexes of [`Direction`]s into per-direction arrays.
const DOWNSTREAM: usize = Direction::Downstream as usize;
const UPSTREAM: usize = Direction::Upstream as usize;

impl Direction {
    /// The buffer plugins see for this direction.
    fn buffer(self, data: &mut HttpStream) -> &mut Vec<u8> {
        match self {
            Direction::Downstream => &mut data.downstream_data,
            Direction::Upstream => &mut data.upstream_data,
        }
    }
}

/// What running a filter chain decided.
enum Flow {
    /// Every filter let the data through.
    Forward(Vec<u8>),
    /// A filter holds it.
    Held,
    /// Close the connection.
    Close,
}

/// Serves one downstream connection (plain, or TLS the listener
/// terminated) until both sides are done.
pub(crate) async fn serve(downstream: impl Stream, info: StreamInfo, plan: Arc<TcpPlan>, thread: Rc<ThreadLoop>) {
    let (signals, mut signal_rx) = mpsc::unbounded_channel();
    let log = match (plan.access_logs.is_empty(), info.source) {
        (false, Some(source)) => Some(Entry::begin_connection(plan.access_logs.clone(), (source, info.destination))),
        _ => None,
    };
    let mut conn = Connection {
        thread,
        data: ferry_host::share(HttpStream { info, ..HttpStream::default() }),
        filters: Vec::new(),
        held: [Vec::new(), Vec::new()],
        paused_at: [None, None],
        signals,
        log,
        received: 0,
        sent: 0,
        notes: StreamNotes { cluster: Some(plan.cluster.clone()), ..StreamNotes::default() },
    };
    let ending = match conn.open(&plan).await {
        Ok(()) => conn.relay(downstream, &plan, &mut signal_rx).await,
        Err(ending) => ending,
    };
    conn.finish(ending);
}

/// The bytes a read gave and whether the sender's side ended with them: a
/// peer's end that already waits behind its data (data and FIN in one
/// segment, or both arrived) is delivered with the data, as Envoy reads
/// until the socket is drained and calls the filters once with both.
async fn with_waiting_end(
    read: std::io::Result<usize>,
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    buffer: &mut [u8],
) -> std::io::Result<(usize, bool)> {
    let n = read?;
    if n == 0 {
        return Ok((0, true));
    }
    if n == buffer.len() {
        return Ok((n, false));
    }
    // Polled once, without waiting: only what is there already counts.
    let more = std::future::poll_fn(|cx| {
        let mut rest = tokio::io::ReadBuf::new(&mut buffer[n..]);
        match std::pin::Pin::new(&mut *reader).poll_read(cx, &mut rest) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Some(rest.filled().len())),
            // An error shows again at the next read.
            std::task::Poll::Ready(Err(_)) | std::task::Poll::Pending => std::task::Poll::Ready(None),
        }
    })
    .await;
    Ok(match more {
        Some(0) => (n, true),
        Some(more) => (n + more, false),
        None => (n, false),
    })
}

/// Writes what passed the filters to the other side, and passes the end of
/// the sender's side on (a half close, as tcp_proxy) once nothing is held;
/// the bytes written, or `Err` with how the connection ends.
async fn pass_on(
    flow: Flow,
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    sender_ended: bool,
    on_write_error: Ending,
) -> Result<u64, Ending> {
    match flow {
        Flow::Forward(bytes) => {
            if writer.write_all(&bytes).await.is_err() {
                return Err(on_write_error);
            }
            if sender_ended {
                let _ = writer.shutdown().await;
            }
            Ok(bytes.len() as u64)
        }
        Flow::Held => Ok(0),
        Flow::Close => Err(Ending::Local),
    }
}

impl Connection {
    /// Creates each filter's context (`proxy_on_new_connection`); a filter
    /// that stops iteration holds the connection until it resumes it.
    async fn open(&mut self, plan: &TcpPlan) -> Result<(), Ending> {
        let thread = self.thread.clone();
        for &index in &plan.filters {
            let handle = thread.handle(index);
            let created = thread.wasm(|vms| vms.create_tcp_stream(handle, &self.data));
            let (context, verdict) = match created {
                Ok(created) => created,
                Err(failure) if failure.fail_open => continue,
                Err(_) => return Err(Ending::Local),
            };
            thread.subscribe(context.instance(), context.id(), self.signals.clone());
            self.filters.push(Filter { context, handle, skipped: false });
            match verdict {
                Verdict::Continue => {}
                Verdict::Close | Verdict::LocalResponse(_) => return Err(Ending::Local),
                Verdict::Pause(_) => {
                    // Wait for this filter to resume the connection (or close it).
                    self.paused_at[DOWNSTREAM] = Some(self.filters.len() - 1);
                }
            }
        }
        Ok(())
    }

    /// Connects upstream and relays until the connection ends.
    async fn relay(
        &mut self,
        downstream: impl Stream,
        plan: &TcpPlan,
        signal_rx: &mut mpsc::UnboundedReceiver<(FilterKey, StreamAction)>,
    ) -> Ending {
        // A filter paused in proxy_on_new_connection holds the connection
        // before the upstream exists: until it resumes or closes it, its VM
        // fails, the client goes away, or the idle timeout.
        let mut client_sent_data = false;
        // Read through a buffer, so data can be looked at without taking it.
        let mut downstream = tokio::io::BufReader::new(downstream);
        while let Some(paused) = self.paused_at[DOWNSTREAM] {
            tokio::select! {
                signal = signal_rx.recv() => match signal {
                    Some((key, StreamAction::Resume)) if key == self.key(paused) => {
                        self.paused_at[DOWNSTREAM] = None;
                    }
                    Some((key, StreamAction::Failed)) => {
                        if let Some(i) = self.position(key)
                            && !self.fail(i)
                        {
                            return Ending::Local;
                        }
                    }
                    Some((
                        _,
                        StreamAction::Resume
                        | StreamAction::ResumeUpstream
                        | StreamAction::ResumeResponse
                        | StreamAction::LocalResponse(_),
                    )) => {}
                    Some((_, StreamAction::Close)) | None => return Ending::Local,
                },
                // Data waits in the socket until the relay reads it; only the
                // end of the client's side matters here.
                peeked = downstream.fill_buf(), if !client_sent_data => match peeked {
                    Ok([]) | Err(_) => return Ending::Remote,
                    Ok(_) => client_sent_data = true,
                },
                () = idle(plan.idle_timeout) => {
                    tracing::debug!(target: "connection", "tcp_proxy: idle timeout while a filter held the connection");
                    return Ending::Local;
                }
            }
        }
        // A filter may have chosen the cluster (`set_envoy_filter_state`
        // with `envoy.tcp_proxy.cluster`), as in Envoy.
        let cluster = self.data.borrow().info.filter_state(CLUSTER_KEY).unwrap_or(&plan.cluster).to_owned();
        self.notes.cluster = Some(cluster.clone());
        let upstreams = self.thread.upstreams();
        if !upstreams.has_cluster(&cluster) {
            tracing::debug!(target: "connection", "tcp_proxy: no cluster {cluster:?}");
            self.notes.flag = Some("NC");
            return Ending::Local;
        }
        self.data.borrow_mut().info.xds.cluster = upstreams.cluster_facts(&cluster);
        let upstream = match upstreams.connect_tcp(&cluster).await {
            Ok((upstream, facts, host)) => {
                self.data.borrow_mut().info.xds.upstream_host_metadata = Some(host.metadata);
                self.data.borrow_mut().info.upstream = Some(facts.peer);
                self.data.borrow_mut().info.upstream_local = facts.local;
                self.data.borrow_mut().info.upstream_tls = facts.tls;
                upstream
            }
            Err(error) => {
                tracing::debug!(target: "connection", "tcp_proxy to cluster {cluster}: {error}");
                self.notes.flag = Some("UF");
                return Ending::Local;
            }
        };
        self.notes.upstream_host = self.data.borrow_mut().info.upstream;
        let (mut down_read, mut down_write) = tokio::io::split(downstream);
        let (mut up_read, mut up_write) = tokio::io::split(upstream);
        let mut down_buf = vec![0u8; READ_CHUNK];
        let mut up_buf = vec![0u8; READ_CHUNK];
        let (mut down_open, mut up_open) = (true, true);
        let mut last_end = Ending::Remote;
        loop {
            if !down_open && !up_open {
                // As Envoy's connection: whoever ended the last open side
                // closed it, the client (remote) or the proxy passing the
                // upstream's end on (local).
                return last_end;
            }
            // While a filter holds data, a side is read only up to the
            // buffer limit: past it the peer waits (TCP's own backpressure).
            let limit = plan.buffer_limit;
            let (down_room, up_room) = (self.held[DOWNSTREAM].len() < limit, self.held[UPSTREAM].len() < limit);
            tokio::select! {
                read = down_read.read(&mut down_buf), if down_open && down_room => {
                    let (n, end_of_stream) = match with_waiting_end(read, &mut down_read, &mut down_buf).await {
                        Ok(read) => read,
                        Err(_) => return Ending::Remote,
                    };
                    let chunk = &down_buf[..n];
                    self.received += chunk.len() as u64;
                    down_open = !end_of_stream;
                    if end_of_stream {
                        last_end = Ending::Remote;
                    }
                    self.held[DOWNSTREAM].extend_from_slice(chunk);
                    let flow = self.downstream_chain(0, end_of_stream);
                    if let Err(ending) = pass_on(flow, &mut up_write, end_of_stream, Ending::Local).await {
                        return ending;
                    }
                }
                read = up_read.read(&mut up_buf), if up_open && up_room => {
                    let (n, end_of_stream) = match with_waiting_end(read, &mut up_read, &mut up_buf).await {
                        Ok(read) => read,
                        Err(_) => return Ending::Local,
                    };
                    let chunk = &up_buf[..n];
                    up_open = !end_of_stream;
                    if end_of_stream {
                        last_end = Ending::Local;
                    }
                    self.held[UPSTREAM].extend_from_slice(chunk);
                    let flow = self.upstream_chain(self.filters.len(), end_of_stream);
                    if end_of_stream {
                        self.upstream_closed();
                    }
                    match pass_on(flow, &mut down_write, end_of_stream, Ending::Remote).await {
                        Ok(written) => self.sent += written,
                        Err(ending) => return ending,
                    }
                }
                signal = signal_rx.recv() => match signal {
                    Some((key, StreamAction::Resume)) => {
                        let Some(at) = self.paused_at[DOWNSTREAM].filter(|&i| self.key(i) == key) else {
                            continue;
                        };
                        let flow = self.downstream_chain(at + 1, !down_open);
                        if let Err(ending) = pass_on(flow, &mut up_write, !down_open, Ending::Local).await {
                            return ending;
                        }
                    }
                    Some((key, StreamAction::ResumeUpstream)) => {
                        let Some(at) = self.paused_at[UPSTREAM].filter(|&i| self.key(i) == key) else {
                            continue;
                        };
                        let flow = self.upstream_chain(at, !up_open);
                        match pass_on(flow, &mut down_write, !up_open, Ending::Remote).await {
                            Ok(written) => self.sent += written,
                            Err(ending) => return ending,
                        }
                    }
                    Some((_, StreamAction::Close)) => return Ending::Local,
                    Some((key, StreamAction::Failed)) => {
                        if let Some(i) = self.position(key)
                            && !self.fail(i)
                        {
                            return Ending::Local;
                        }
                    }
                    Some((_, StreamAction::LocalResponse(_) | StreamAction::ResumeResponse)) | None => {}
                },
                () = idle(plan.idle_timeout) => {
                    tracing::debug!(target: "connection", "tcp_proxy: idle timeout");
                    return Ending::Local;
                }
            }
        }
    }

    /// How signals name filter `i`.
    fn key(&self, i: usize) -> FilterKey {
        (self.filters[i].context.instance(), self.filters[i].context.id())
    }

    /// The filter a signal is for.
    fn position(&self, key: FilterKey) -> Option<usize> {
        (0..self.filters.len()).find(|&i| self.key(i) == key)
    }

    /// Runs the client's held bytes through the filters from `from` on.
    fn downstream_chain(&mut self, from: usize, end_of_stream: bool) -> Flow {
        let order: Vec<usize> = (from..self.filters.len()).collect();
        self.chain(Direction::Downstream, order, end_of_stream)
    }

    /// Runs the upstream's held bytes through the filters before `before`,
    /// last filter first.
    fn upstream_chain(&mut self, before: usize, end_of_stream: bool) -> Flow {
        let order: Vec<usize> = (0..before).rev().collect();
        self.chain(Direction::Upstream, order, end_of_stream)
    }

    /// Runs one direction's held bytes through the filters in `order`.
    fn chain(&mut self, direction: Direction, order: Vec<usize>, end_of_stream: bool) -> Flow {
        let d = direction as usize;
        self.paused_at[d] = None;
        let thread = self.thread.clone();
        let callback = match direction {
            Direction::Downstream => StreamCallback::DownstreamData,
            Direction::Upstream => StreamCallback::UpstreamData,
        };
        for i in order {
            if self.filters[i].skipped {
                continue;
            }
            *direction.buffer(&mut self.data.borrow_mut()) = std::mem::take(&mut self.held[d]);
            let context = &self.filters[i].context;
            let data = &self.data;
            let verdict = thread.wasm(|vms| vms.stream_callback(context, callback, data, end_of_stream));
            self.held[d] = std::mem::take(direction.buffer(&mut self.data.borrow_mut()));
            match verdict {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Pause(_)) => {
                    self.paused_at[d] = Some(i);
                    return Flow::Held;
                }
                Ok(Verdict::Close | Verdict::LocalResponse(_)) => return Flow::Close,
                Err(_) if self.fail(i) => {}
                Err(_) => return Flow::Close,
            }
        }
        Flow::Forward(std::mem::take(&mut self.held[d]))
    }

    /// `proxy_on_upstream_connection_close` with an unknown peer, as Envoy
    /// reports the upstream's end of stream.
    fn upstream_closed(&mut self) {
        self.close_callbacks(true, PeerType::Unknown);
    }

    fn close_callbacks(&mut self, upstream: bool, peer: PeerType) {
        let thread = self.thread.clone();
        for i in 0..self.filters.len() {
            if self.filters[i].skipped {
                continue;
            }
            let result =
                thread.wasm(|vms| vms.on_connection_close(&self.filters[i].context, &self.data, upstream, peer));
            if result.is_err() {
                self.filters[i].skipped = true;
            }
        }
    }

    /// Applies filter `i`'s failure policy: `true` to go on without it.
    fn fail(&mut self, i: usize) -> bool {
        self.filters[i].skipped = true;
        for paused in &mut self.paused_at {
            if *paused == Some(i) {
                *paused = None;
            }
        }
        self.fails_open(self.filters[i].handle)
    }

    fn fails_open(&self, handle: PluginHandle) -> bool {
        self.thread.wasm(|vms| vms.plugin(handle).failure_policy.fails_open())
    }

    /// The connection is closed: `proxy_on_downstream_connection_close`,
    /// then each context ends.
    fn finish(mut self, ending: Ending) {
        let peer = if ending == Ending::Remote { PeerType::Remote } else { PeerType::Local };
        self.close_callbacks(false, peer);
        let thread = self.thread.clone();
        for filter in std::mem::take(&mut self.filters) {
            thread.unsubscribe(filter.context.instance(), filter.context.id());
            if !filter.skipped {
                thread.wasm(|vms| vms.finish_tcp_stream(filter.context, &self.data));
            }
        }
        if let Some(mut entry) = self.log.take() {
            self.notes.note_filter_state(&self.data.borrow().info);
            entry.connection_ended(std::mem::take(&mut self.notes), self.received);
            entry.finish(self.sent, true);
        }
    }
}
