//! A worker's listeners: accept loops that choose each connection's filter
//! chain (by its first bytes, when the chains match on them), terminate
//! the chain's TLS, and hand the connection to the HTTP connection manager
//! (hyper, HTTP/1.1 and HTTP/2) or to the TCP proxy.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_config::Codec;
use ferry_config::HttpLimits;
use ferry_host::StreamInfo;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;

use crate::connections::{Activity, ConnectionCap};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::event_loop::{ThreadLoop, ThreadMessage};
use crate::filter_chains;
use crate::http::conn_manager::{self, ConnContext};
use crate::plan::{ChainPlan, HttpPlan, ListenerService};
use crate::tcp_proxy;

/// A worker's listening sockets, cloned from the main thread's.
pub(crate) struct WorkerListener {
    pub(crate) socket: std::net::TcpListener,
    /// Its filter chains.
    pub(crate) chains: std::sync::Arc<[ChainPlan]>,
    /// Becomes true on the admin endpoint's `POST /drain_listeners`: stop
    /// accepting and close the socket (connections already open go on).
    pub(crate) drain: tokio::sync::watch::Receiver<bool>,
    /// `listener.<address>.*`, shared by every worker.
    pub(crate) stats: std::sync::Arc<crate::envoy_stats::ListenerStats>,
    /// The process-wide cap on downstream connections.
    pub(crate) cap: std::sync::Arc<ConnectionCap>,
}

/// Accepts on every listener while the worker's event loop runs, until it
/// is told to shut down.
pub(crate) async fn serve(
    thread: Rc<ThreadLoop>,
    listeners: Vec<WorkerListener>,
    inbox: mpsc::UnboundedReceiver<ThreadMessage>,
) {
    let mut accept_tasks = Vec::new();
    for listener in listeners {
        let WorkerListener { socket, chains, drain, stats, cap } = listener;
        match TcpListener::from_std(socket) {
            Ok(socket) => {
                let task = accept_loop(socket, chains, drain, (stats, cap), thread.clone());
                accept_tasks.push(tokio::task::spawn_local(task));
            }
            Err(e) => tracing::error!(target: "main", "worker cannot listen: {e}"),
        }
    }
    thread.run(inbox).await;
    for task in accept_tasks {
        task.abort();
    }
}

/// Connection ids, unique in the process (the `connection.id` property).
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

async fn accept_loop(
    listener: TcpListener,
    chains: std::sync::Arc<[ChainPlan]>,
    mut drain: tokio::sync::watch::Receiver<bool>,
    (stats, cap): (std::sync::Arc<crate::envoy_stats::ListenerStats>, std::sync::Arc<ConnectionCap>),
    thread: Rc<ThreadLoop>,
) {
    let (mut accept_errors, mut refusals) = (RateLimitedWarning::default(), RateLimitedWarning::default());
    let inspect = filter_chains::needs_inspection(&chains);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Shutting down: no new connections.
            () = thread.stopping() => return,
            // Drained: the socket closes with this loop.
            _ = drain.wait_for(|drained| *drained) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                accept_errors.warn(format_args!("accept failed: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once; those open go on.
        let Some(counted) = cap.admit() else {
            stats.downstream_global_cx_overflow.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            let max = cap.max().unwrap_or(u64::MAX);
            refusals.warn(format_args!(
                "refused a connection from {peer}: the cap of {max} open connections is reached \
                 (overload_manager's global_downstream_max_connections)"
            ));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = (stats.accepted(), counted);
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let accepted = Accepted { stream, peer, id, at: std::time::Instant::now() };
        let (thread, cap, chains) = (thread.clone(), cap.clone(), chains.clone());
        tokio::task::spawn_local(async move {
            let chain = if inspect {
                let seen = filter_chains::inspect(&accepted.stream).await;
                let chain = filter_chains::choose(&chains, &seen);
                if chain.is_none() {
                    tracing::debug!(target: "connection", "no filter chain takes a connection from {peer} ({seen:?})");
                }
                chain
            } else {
                chains.first()
            };
            if let Some(chain) = chain {
                serve_chain(accepted, chain, thread, &cap).await;
            }
            drop(open);
        });
    }
}

/// An accepted connection, before its chain runs.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    /// Unique in the process (the `connection.id` property).
    id: u64,
    /// When it was accepted.
    at: std::time::Instant,
}

/// Runs `chain` on a connection: its TLS handshake if it terminates TLS,
/// then its HTTP connection manager or TCP proxy.
async fn serve_chain(accepted: Accepted, chain: &ChainPlan, thread: Rc<ThreadLoop>, cap: &ConnectionCap) {
    let Accepted { stream, peer, id, at } = accepted;
    let destination = stream.local_addr().ok();
    let (stream, tls) = match &chain.tls {
        None => (Either::Plain(stream), None),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            // An HTTP client's handshake counts towards its first request's deadline.
            let limit = match &chain.service {
                ListenerService::Http(http) => http.limits.first_request_timeout.map(|t| t.min(TLS_HANDSHAKE_TIMEOUT)),
                ListenerService::Tcp(_) => None,
            };
            match tokio::time::timeout(limit.unwrap_or(TLS_HANDSHAKE_TIMEOUT), acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let facts = crate::tls::handshake_facts(stream.get_ref().1, tls.local.as_ref());
                    (Either::Tls(Box::new(stream)), Some(std::sync::Arc::new(facts)))
                }
                Ok(Err(e)) => {
                    tracing::debug!(target: "connection", "TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(target: "connection", "TLS handshake with {peer} timed out");
                    return;
                }
            }
        }
    };
    match &chain.service {
        ListenerService::Tcp(tcp) => {
            let info = StreamInfo {
                source: Some(peer),
                destination,
                connection_id: id,
                start: Some(std::time::SystemTime::now()),
                xds: ferry_host::XdsInfo { listener: Some(tcp.listener.clone()), ..Default::default() },
                tls,
                ..StreamInfo::default()
            };
            match stream {
                Either::Plain(stream) => tcp_proxy::serve(stream, info, tcp.clone(), thread).await,
                Either::Tls(stream) => tcp_proxy::serve(stream, info, tcp.clone(), thread).await,
            }
        }
        ListenerService::Http(http) => {
            let conn = Rc::new(ConnContext {
                thread,
                http: http.clone(),
                source: peer,
                destination,
                id,
                activity: crate::connections::Activity::since(at),
                tls,
            });
            let codec = http.codec;
            match stream {
                Either::Plain(stream) => serve_http(stream, conn, cap, codec).await,
                // Over TLS the protocol is the one ALPN chose, strictly (RFC 9113 §3.2).
                Either::Tls(stream) => match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => {
                        let deadline = http.limits.first_request_timeout.map(|t| at + t);
                        let preface = crate::http::preface::expect_preface(stream);
                        let read = match deadline {
                            Some(deadline) => tokio::time::timeout_at(deadline.into(), preface).await,
                            None => Ok(preface.await),
                        };
                        match read {
                            Ok(Ok(stream)) => serve_http(stream, conn, cap, Codec::Http2).await,
                            Ok(Err(e)) => {
                                tracing::debug!(target: "connection", "closed the connection from {peer}: {e}")
                            }
                            Err(_) => {
                                tracing::debug!(target: "connection", "closed the connection from {peer}: no HTTP/2 preface in time")
                            }
                        }
                    }
                    Some(b"http/1.1") => serve_http(stream, conn, cap, Codec::Http1).await,
                    _ => serve_http(stream, conn, cap, codec).await,
                },
            }
        }
    }
}

/// A downstream connection as its chain terminated it.
enum Either {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Longest a client may take to finish its TLS handshake (Envoy's
/// listener filters time out at 15 s too).
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves HTTP on a connection (plain or TLS) until it ends or is due to close.
/// `codec` is the connection manager's, or the one ALPN chose.
async fn serve_http<IO>(io: IO, conn: Rc<ConnContext>, cap: &ConnectionCap, codec: Codec)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _counted = cap.serving_http();
    let http = conn.http.clone();
    let conn_source = conn.source;
    let thread = conn.thread.clone();
    http.stats.connection_opened();
    let activity = conn.clone();
    let service = service_fn(move |request| conn_manager::handle(request, conn.clone()));
    let (io, limits, activity) = (TokioIo::new(io), &http.limits, &activity.activity);
    let server = http_server(&http, codec);
    // hyper-util's connection with upgrades reads the protocol from the
    // first bytes whatever the codec: only AUTO takes it.
    let upgrades = !http.upgrades.is_empty() || http.routes.enables_upgrades();
    let result = match (codec, upgrades) {
        (Codec::Auto, true) => {
            close_when_due(server.serve_connection_with_upgrades(io, service), activity, limits, &thread).await
        }
        (Codec::Http1, true) => {
            let connection = http1_server(&http).serve_connection(io, service).with_upgrades();
            close_when_due(connection, activity, limits, &thread).await
        }
        _ => close_when_due(server.serve_connection(io, service), activity, limits, &thread).await,
    };
    if let Err(e) = result {
        tracing::debug!(target: "http", "connection from {} closed with an error: {}", conn_source, causes(&*e));
    }
    http.stats.connection_closed();
}

/// hyper's HTTP/1.1 server alone, with the options [`http_server`] gives
/// its HTTP/1.1 side (for an HTTP1 codec that allows upgrades).
fn http1_server(plan: &HttpPlan) -> hyper::server::conn::http1::Builder {
    let limits = plan.limits;
    let header_bytes = limits.max_request_headers_kb as usize * 1024;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.request_headers_timeout);
    http1.max_buf_size(header_bytes.max(8192)).max_headers(limits.max_headers_count as usize);
    http1
}

/// hyper's server for a connection manager's `codec_type`: HTTP/1.1, and
/// HTTP/2 with prior knowledge (h2c), told apart by the client's first
/// bytes (`AUTO`), or one of them; with its `http2_protocol_options`.
fn http_server(plan: &HttpPlan, codec: Codec) -> auto::Builder<LocalExecutor> {
    let mut builder = auto::Builder::new(LocalExecutor);
    builder = match codec {
        Codec::Auto => builder,
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
    };
    let limits = plan.limits;
    let header_bytes = limits.max_request_headers_kb as usize * 1024;
    let mut http1 = builder.http1();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.request_headers_timeout);
    // hyper's read buffer holds a request's head: its size caps the headers (431 past it).
    http1.max_buf_size(header_bytes.max(8192)).max_headers(limits.max_headers_count as usize);
    let options = plan.http2;
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new()).max_header_list_size(header_bytes as u32);
    if let Some(streams) = options.max_concurrent_streams {
        http2.max_concurrent_streams(streams);
    }
    if let Some(size) = options.initial_stream_window_size {
        http2.initial_stream_window_size(size);
    }
    if let Some(size) = options.initial_connection_window_size {
        http2.initial_connection_window_size(size);
    }
    builder
}

/// Serves a connection until it ends, or until it has been idle for the
/// `idle_timeout`, open for the `max_connection_duration` or the process
/// drains: then it is
/// shut down gracefully (HTTP/1.1 finishes the response in flight and
/// closes; HTTP/2 sends GOAWAY and lets its streams finish).
async fn close_when_due<C, E>(
    connection: C,
    activity: &Activity,
    limits: &HttpLimits,
    thread: &ThreadLoop,
) -> Result<(), BoxError>
where
    C: std::future::Future<Output = Result<(), E>> + GracefulShutdown,
    E: Into<BoxError>,
{
    let mut connection = std::pin::pin!(connection);
    let idle = async {
        match limits.idle_timeout {
            Some(timeout) => activity.idle_for(timeout).await,
            None => std::future::pending().await,
        }
    };
    let too_old = async {
        match limits.max_connection_duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    let silent = async {
        match limits.first_request_timeout {
            Some(timeout) => activity.no_request_within(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = connection.as_mut() => return result.map_err(Into::into),
        () = silent => {
            // Nothing to finish: the connection is dropped, which closes it.
            tracing::debug!(target: "connection", "closed: no complete request headers within {:?} of accept",
                limits.first_request_timeout.unwrap_or_default());
            return Ok(());
        }
        () = idle => {}
        () = too_old => {}
        () = thread.stopping() => {}
    }
    connection.as_mut().shut_down();
    connection.await.map_err(Into::into)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error with each of its sources, once each: hyper's own message
/// ("http2 error") says little without the h2 error beneath it.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// hyper-util's connections, shut down gracefully.
trait GracefulShutdown {
    fn shut_down(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulShutdown for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> GracefulShutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> GracefulShutdown for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// A warning printed at most once a second, with how many were held back:
/// a flood of failed accepts or refused connections must not flood the log.
#[derive(Default)]
struct RateLimitedWarning {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl RateLimitedWarning {
    fn warn(&mut self, message: std::fmt::Arguments<'_>) {
        if self.last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1)) {
            self.held_back += 1;
            return;
        }
        match std::mem::take(&mut self.held_back) {
            0 => tracing::warn!(target: "main", "{message}"),
            n => tracing::warn!(target: "main", "{message} ({n} more held back since the last)"),
        }
        self.last = Some(std::time::Instant::now());
    }
}

/// Runs HTTP/2 streams as tasks of this thread's runtime: a request's
/// handling holds the thread's `Rc`s, so it never moves to another thread.
#[derive(Clone, Copy)]
pub(crate) struct LocalExecutor;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExecutor {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}
