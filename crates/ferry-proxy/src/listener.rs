//! A worker's listeners: accept loops that hand each connection to the
//! HTTP connection manager (hyper, HTTP/1.1 and HTTP/2) or to the TCP proxy.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_config::Codec;
use ferry_host::StreamInfo;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::event_loop::{ThreadLoop, ThreadMessage};
use crate::http::conn_manager::{self, ConnContext};
use crate::plan::{HttpPlan, ListenerService};
use crate::tcp_proxy;

/// A worker's listening sockets, cloned from the main thread's.
pub(crate) struct WorkerListener {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) service: ListenerService,
    /// Becomes true on the admin endpoint's `POST /drain_listeners`: stop
    /// accepting and close the socket (connections already open go on).
    pub(crate) drain: tokio::sync::watch::Receiver<bool>,
    /// `listener.<address>.*`, shared by every worker.
    pub(crate) stats: std::sync::Arc<crate::envoy_stats::ListenerStats>,
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
        let WorkerListener { socket, service, drain, stats } = listener;
        match TcpListener::from_std(socket) {
            Ok(socket) => {
                let task = accept_loop(socket, service, drain, stats, thread.clone());
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
    service: ListenerService,
    mut drain: tokio::sync::watch::Receiver<bool>,
    stats: std::sync::Arc<crate::envoy_stats::ListenerStats>,
    thread: Rc<ThreadLoop>,
) {
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
                tracing::warn!(target: "main", "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = stats.accepted();
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let http = match &service {
            ListenerService::Http(http) => http.clone(),
            ListenerService::Tcp(tcp) => {
                let info = StreamInfo {
                    source: Some(peer),
                    destination: stream.local_addr().ok(),
                    connection_id: id,
                    start: Some(std::time::SystemTime::now()),
                    xds: ferry_host::XdsInfo { listener: Some(tcp.listener.clone()), ..Default::default() },
                    ..StreamInfo::default()
                };
                let serve = tcp_proxy::serve(stream, info, tcp.clone(), thread.clone());
                tokio::task::spawn_local(async move {
                    serve.await;
                    drop(open);
                });
                continue;
            }
        };
        let conn = Rc::new(ConnContext {
            thread: thread.clone(),
            http: http.clone(),
            source: peer,
            destination: stream.local_addr().ok(),
            id,
        });
        http.stats.connection_opened();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| conn_manager::handle(request, conn.clone()));
            if let Err(e) = http_server(&http).serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(target: "http", "connection closed with an error: {e}");
            }
            http.stats.connection_closed();
            drop(open);
        });
    }
}

/// hyper's server for a connection manager's `codec_type`: HTTP/1.1, and
/// HTTP/2 with prior knowledge (h2c), told apart by the client's first
/// bytes (`AUTO`), or one of them; with its `http2_protocol_options`.
fn http_server(plan: &HttpPlan) -> auto::Builder<LocalExecutor> {
    let mut builder = auto::Builder::new(LocalExecutor);
    builder = match plan.codec {
        Codec::Auto => builder,
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
    };
    let options = plan.http2;
    let mut http2 = builder.http2();
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

/// Runs HTTP/2 streams as tasks of this thread's runtime: a request's
/// handling holds the thread's `Rc`s, so it never moves to another thread.
#[derive(Clone, Copy)]
pub(crate) struct LocalExecutor;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExecutor {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}
