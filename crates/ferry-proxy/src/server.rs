//! The threads: the main thread (singleton services, admin, signals) and N
//! workers (listeners, filters), started in Envoy's order: services first,
//! then workers, which accept traffic only once all of them have started.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use ferry_host::StartError;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use crate::event_loop::{ThreadLoop, ThreadMessage, run_outbox};
use crate::health::HealthBoard;
use crate::listener::{self, WorkerListener};
use crate::plan::Plan;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Number of worker threads (`--concurrency`).
    pub concurrency: usize,
    /// The loggers' levels, for the admin endpoint's `/logging`.
    pub log_control: Option<Arc<dyn crate::admin::LogControl>>,
    /// Longest the process drains on SIGTERM or SIGINT (`--drain-time-s`).
    pub drain_time: std::time::Duration,
    /// Where to write the admin endpoint's address once bound
    /// (`--admin-address-path`), for scripts that find it there.
    pub admin_address_path: Option<std::path::PathBuf>,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not bind.
    #[error("listener '{name}': cannot listen on {address}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A plugin failed to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The runtime or a thread could not be created.
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
    /// The queue bridge could not start.
    #[error(transparent)]
    Bridge(#[from] ferry_bridge::BridgeError),
    /// `--admin-address-path` could not be written.
    #[error("--admin-address-path {}: {source}", path.display())]
    AdminAddressPath {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

struct Worker {
    inbox: mpsc::UnboundedSender<ThreadMessage>,
    thread: JoinHandle<()>,
    /// Whether its plugins started (awaited: the main thread's loop goes on meanwhile).
    ready: tokio::sync::oneshot::Receiver<Result<(), StartError>>,
    /// Tells it to serve (`true`) or to stop before it served (`false`).
    go: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// Runs until SIGINT or SIGTERM.
///
/// # Errors
/// A listener cannot bind, or a plugin fails to start.
pub fn run(plan: Plan, options: RunOptions) -> Result<(), RunError> {
    // Bridged queues resolve before any plugin runs; the bridge has its own
    // runtime, made here, outside the main thread's.
    let bridges = match &plan.queue_bridge {
        Some((config, buffers)) => Some(Arc::new(ferry_bridge::QueueBridges::start(config, buffers, &plan.host)?)),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    LocalSet::new().block_on(&runtime, main_thread(Arc::new(plan), options, bridges))
}

async fn main_thread(
    plan: Arc<Plan>,
    options: RunOptions,
    bridges: Option<Arc<ferry_bridge::QueueBridges>>,
) -> Result<(), RunError> {
    let start_time = std::time::Instant::now();
    let start_wall_time = std::time::SystemTime::now();
    let mut sockets = Vec::new();
    let mut bound = Vec::new();
    for listener in &plan.listeners {
        let bind_error = |source| RunError::Bind { name: listener.name.clone(), address: listener.address, source };
        let socket = bind_only(listener.address).map_err(bind_error)?;
        tracing::info!(target: "main", "'{}' bound to {}; it listens once every plugin started", listener.name, socket.local_addr()?);
        bound.push((listener.name.clone(), socket.local_addr()?));
        sockets.push(socket);
    }
    if let Some(max) = plan.connection_cap.max() {
        tracing::info!(target: "main", "downstream connections capped at {max}");
    }
    let admin = match plan.admin {
        Some(address) => {
            let socket =
                bind_only(address).map_err(|source| RunError::Bind { name: "admin".into(), address, source })?;
            let bound = socket.local_addr()?;
            tracing::info!(target: "main", "admin address: {bound}");
            if let Some(path) = &options.admin_address_path {
                std::fs::write(path, bound.to_string())
                    .map_err(|source| RunError::AdminAddressPath { path: path.clone(), source })?;
            }
            Some(socket)
        }
        None => None,
    };

    tokio::task::spawn_local(run_outbox());
    // Active health checks and outlier reviews, for every worker at once.
    crate::upstream::health::start(&plan.clusters);
    let health = HealthBoard::default();
    // Singleton services start on this thread before any worker exists, so
    // the queues they register are there when filters resolve them.
    let (main_inbox_tx, main_inbox) = mpsc::unbounded_channel();
    let main_thread = ThreadLoop::start(
        plan.host.clone(),
        main_inbox_tx.clone(),
        &plan.main_plugins,
        &plan.clusters,
        health.clone(),
    )?;

    let (drain_listeners, drain) = tokio::sync::watch::channel(false);
    let mut workers = Vec::with_capacity(options.concurrency);
    for index in 0..options.concurrency {
        let listeners = sockets
            .iter()
            .zip(&plan.listeners)
            .map(|(socket, l)| {
                let (socket, chains, drain) = (socket.try_clone()?, l.chains.clone(), drain.clone());
                let cap = plan.connection_cap.clone();
                Ok(WorkerListener { socket, chains, drain, stats: l.stats.clone(), cap })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        workers.push(spawn_worker(index, plan.clone(), listeners, health.clone())?);
    }
    let mut started = Ok(());
    for worker in &mut workers {
        started = (&mut worker.ready).await.unwrap_or_else(|_| Err(worker_died()));
        if started.is_err() {
            break;
        }
    }
    if let Err(error) = started {
        stop(workers).await;
        return Err(error.into());
    }
    // Only now do the sockets listen: a client that connected while plugins
    // started was refused at once rather than left waiting in the backlog.
    for (socket, (name, address)) in sockets.iter().zip(&bound) {
        listen(socket)?;
        tracing::info!(target: "main", "listener '{name}' listening on {address}");
    }
    drop(sockets);
    let admin = match admin {
        Some(socket) => {
            listen(&socket)?;
            Some(tokio::net::TcpListener::from_std(socket)?)
        }
        None => None,
    };
    tracing::info!(target: "main", "all dependencies initialized. starting workers ({})", options.concurrency);
    for worker in &mut workers {
        if let Some(go) = worker.go.take() {
            let _ = go.send(true);
        }
    }

    let quit = Rc::new(tokio::sync::Notify::new());
    if let Some(listener) = admin {
        let admin = crate::admin::Admin {
            host: plan.host.clone(),
            health,
            plugins: plan.main_plugins.iter().chain(&plan.worker_plugins).cloned().collect(),
            listener_stats: bound
                .iter()
                .zip(&plan.listeners)
                .map(|((_, address), l)| (*address, l.stats.clone()))
                .collect(),
            listeners: bound,
            clusters: plan.clusters.clone(),
            node: plan.node.clone(),
            config_source: plan.config_source.clone(),
            stats_tags: plan.stats_tags.iter().map(crate::admin::stats::TagRule::new).collect(),
            http_stats: plan
                .listeners
                .iter()
                .flat_map(|l| l.services())
                .filter_map(|service| match service {
                    crate::ListenerService::Http(http) => Some((http.stat_prefix.clone(), http.stats.clone())),
                    crate::ListenerService::Tcp(_) => None,
                })
                .collect(),
            concurrency: options.concurrency,
            started: start_time,
            started_at: start_wall_time,
            health_check_failed: Cell::new(false),
            quit: quit.clone(),
            drain_listeners,
            log_control: options.log_control.clone(),
            bridges: bridges.clone(),
        };
        tokio::task::spawn_local(crate::admin::serve(listener, admin));
    }
    let (cap, drain_time, host) = (plan.connection_cap.clone(), options.drain_time, plan.host.clone());
    let signal = tokio::task::spawn_local(async move {
        let name = tokio::select! {
            name = shutdown_signal() => name,
            () = quit.notified() => "POST /quitquitquit",
        };
        tracing::info!(target: "main", "caught {name}, shutting down");
        drain_connections(&workers, &cap, drain_time).await;
        // Past the drain time nothing may keep a worker: not even a plugin
        // looping with its deadline switched off.
        host.interrupt_plugins();
        stop(workers).await;
        // Services last: workers' filters may still have fed their queues.
        let _ = main_inbox_tx.send(ThreadMessage::Shutdown);
    });
    main_thread.run(main_inbox).await;
    signal.abort();
    // The workers are gone: every request they served is logged; write it out.
    for service in plan.listeners.iter().flat_map(|l| l.services()) {
        let logs = match service {
            crate::ListenerService::Http(http) => &http.access_logs,
            crate::ListenerService::Tcp(tcp) => &tcp.access_logs,
        };
        for log in logs.iter() {
            log.flush();
        }
    }
    // Bridged queues: fetched items no plugin took go back to the broker,
    // buffered ones are published (at most the drain timeout).
    if let Some(bridges) = &bridges {
        bridges.shutdown().await;
    }
    // Items plugins enqueued that no receiver took: said, never dropped silently.
    let waiting = plan.host.shared_queues().totals().waiting;
    if waiting > 0 {
        tracing::warn!(target: "main", "{waiting} shared queue item(s) were not dequeued before exit");
    }
    tracing::info!(target: "main", "exiting");
    Ok(())
}

/// Drains before the workers stop: no new connections, open HTTP
/// connections closed gracefully as their responses end, for at most
/// `drain_time`. What is still open then is cut, and counted in the log.
async fn drain_connections(
    workers: &[Worker],
    cap: &crate::connections::ConnectionCap,
    drain_time: std::time::Duration,
) {
    for worker in workers {
        let _ = worker.inbox.send(ThreadMessage::Drain);
    }
    let deadline = tokio::time::Instant::now() + drain_time;
    let (mut open, mut http) = cap.open();
    if http > 0 {
        tracing::info!(target: "main", "draining {http} HTTP connection(s), at most {}s", drain_time.as_secs());
    }
    while http > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        (open, http) = cap.open();
    }
    if http > 0 {
        tracing::warn!(target: "main", "drain time over: {http} HTTP connection(s) cut with their requests");
    }
    if open > http {
        tracing::info!(target: "main", "closing {} TCP connection(s)", open - http);
    }
}

/// Starts every plugin once, as the threads would (`_initialize`,
/// `proxy_on_vm_start`, `proxy_on_configure`, under their start deadline),
/// then drops them: what `--mode validate` checks beyond loading. Nothing
/// they ask for (timers, calls) is carried out.
///
/// # Errors
/// The first plugin that fails to start.
pub fn check_start(plan: &Plan) -> Result<(), StartError> {
    struct Discard;
    impl ferry_host::ThreadMailbox for Discard {
        fn post_queue_ready(&self, _: ferry_host::QueueReady) {}
    }
    for plugins in [&plan.main_plugins, &plan.worker_plugins] {
        let mut vms = ferry_host::WasmThread::new(plan.host.clone(), Arc::new(Discard));
        for plugin in plugins {
            vms.add_plugin(plugin.clone());
        }
        vms.start()?;
    }
    Ok(())
}

/// Binds `address` without listening yet: the address is taken (and its
/// port known, for port 0) while plugins start, but a client connecting
/// meanwhile is refused at once instead of waiting in the backlog, as
/// Envoy opens its listeners only after initialisation.
fn bind_only(address: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Lets a socket [`bind_only`] bound accept connections.
fn listen(socket: &std::net::TcpListener) -> std::io::Result<()> {
    /// Envoy's default `tcp_backlog_size`.
    const BACKLOG: i32 = 1024;
    socket2::SockRef::from(socket).listen(BACKLOG)
}

fn worker_died() -> StartError {
    StartError { plugin: String::new(), vm_id: String::new(), reason: "a worker thread died while starting".into() }
}

fn spawn_worker(
    index: usize,
    plan: Arc<Plan>,
    listeners: Vec<WorkerListener>,
    health: HealthBoard,
) -> std::io::Result<Worker> {
    let (inbox_tx, inbox) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel();
    let mailbox = inbox_tx.clone();
    let thread = std::thread::Builder::new().name(format!("worker_{index}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready_tx.send(Err(StartError {
                    plugin: String::new(),
                    vm_id: String::new(),
                    reason: e.to_string(),
                }));
                return;
            }
        };
        LocalSet::new().block_on(&runtime, async move {
            tokio::task::spawn_local(run_outbox());
            let thread =
                match ThreadLoop::start(plan.host.clone(), mailbox, &plan.worker_plugins, &plan.clusters, health) {
                    Ok(thread) => thread,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
            let _ = ready_tx.send(Ok(()));
            // Accept traffic only once every worker has started.
            if go_rx.await != Ok(true) {
                return;
            }
            listener::serve(thread, listeners, inbox).await;
        });
    })?;
    Ok(Worker { inbox: inbox_tx, thread, ready, go: Some(go) })
}

/// Tells every worker to stop and waits for it.
/// The joins run on tokio's blocking pool, so the main thread's loop
/// (admin, services, health checks) goes on while workers finish.
async fn stop(workers: Vec<Worker>) {
    let mut threads = Vec::with_capacity(workers.len());
    for mut worker in workers {
        if let Some(go) = worker.go.take() {
            let _ = go.send(false);
        }
        let _ = worker.inbox.send(ThreadMessage::Shutdown);
        threads.push(worker.thread);
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

async fn shutdown_signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
