//! The admin endpoint, on the main thread, answering as Envoy's does:
//! `/ready`, `/server_info`, `/config_dump`, `/listeners`, `/clusters`, `/stats` (text,
//! `?format=json`, `?format=prometheus`, `filter`, `usedonly`),
//! `/stats/prometheus`, `/healthcheck/fail` and `/healthcheck/ok`,
//! `/logging`, `/memory`, `/quitquitquit`; and `/plugins` (each plugin's VM on each thread, ferry's
//! own). Endpoints that change the server take POST only, as in Envoy.

mod memory;
pub(crate) mod stats;
mod topology;

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_host::{Host, Plugin};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::health::HealthBoard;
use crate::upstream::Clusters;

/// The process's loggers, as `/logging` lists and changes them. The binary
/// owns logging; the admin endpoint only speaks to it through this.
pub trait LogControl: Send + Sync + std::fmt::Debug {
    /// Each logger and its level (`trace` … `critical`, `off`), sorted by name.
    fn loggers(&self) -> Vec<(&'static str, &'static str)>;
    /// Sets `logger` (every logger when `None`) to `level`.
    ///
    /// # Errors
    /// A message naming an unknown logger or level.
    fn set_level(&self, logger: Option<&str>, level: &str) -> Result<(), String>;
}

/// What the admin endpoint reports on, and the server state it may change.
pub(crate) struct Admin {
    pub host: Arc<Host>,
    pub health: HealthBoard,
    pub plugins: Vec<Arc<Plugin>>,
    /// Each listener's name and bound address.
    pub listeners: Vec<(String, SocketAddr)>,
    pub clusters: Arc<Clusters>,
    pub node: ferry_config::Node,
    /// The configuration as written, for `/config_dump`.
    pub config_source: serde_json::Value,
    pub concurrency: usize,
    pub started: Instant,
    /// The same moment on the wall clock.
    pub started_at: std::time::SystemTime,
    /// Set by `POST /healthcheck/fail`: the server reports DRAINING.
    pub health_check_failed: Cell<bool>,
    /// Notified by `POST /quitquitquit`: the server shuts down as on SIGTERM.
    pub quit: Rc<Notify>,
    /// Set by `POST /drain_listeners`: every worker stops accepting.
    pub drain_listeners: tokio::sync::watch::Sender<bool>,
    /// Each listener's bound address and Envoy's `listener.<address>.*` counters.
    pub listener_stats: Vec<(SocketAddr, Arc<crate::envoy_stats::ListenerStats>)>,
    /// Each HTTP connection manager's `stat_prefix` and Envoy's counters for it.
    pub http_stats: Vec<(String, Arc<crate::envoy_stats::HttpStats>)>,
    /// `stats_config.stats_tags`, applied to every stat.
    pub stats_tags: Vec<stats::TagRule>,
    /// The loggers `/logging` lists and changes.
    pub log_control: Option<Arc<dyn LogControl>>,
    /// Bridged shared queues, if configured.
    pub bridges: Option<Arc<ferry_bridge::QueueBridges>>,
}

/// Serves admin requests until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, admin: Admin) {
    let admin = Rc::new(admin);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let admin = admin.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| respond(request, admin.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=UTF-8";

/// Endpoints that change the server: POST only.
const MUTATING: [&str; 6] =
    ["/drain_listeners", "/healthcheck/fail", "/healthcheck/ok", "/logging", "/quitquitquit", "/reset_counters"];

async fn respond(request: Request<Incoming>, admin: Rc<Admin>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let params: Vec<(String, String)> =
        request.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if MUTATING.contains(&path) && request.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "Method not allowed, POST required.\n".into()));
    }
    let ok = |content_type, body| Ok(reply(StatusCode::OK, content_type, body));
    match path {
        "/ready" if admin.health_check_failed.get() => {
            Ok(reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "DRAINING\n".into()))
        }
        "/ready" if admin.bridges.as_ref().is_some_and(|b| !b.ready()) => {
            Ok(reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "BROKER UNREACHABLE\n".into()))
        }
        // The server only listens once every worker has started.
        "/ready" => ok(TEXT, "LIVE\n".into()),
        "/queue_bridge" => ok(JSON, stats::queue_bridge(&admin)),
        "/server_info" => ok(JSON, topology::server_info(&admin)),
        "/config_dump" => ok(JSON, topology::config_dump(&admin)),
        "/listeners" => {
            let as_json = param("format") == Some("json");
            ok(if as_json { JSON } else { TEXT }, topology::listeners(&admin, as_json))
        }
        "/clusters" => {
            let as_json = param("format") == Some("json");
            ok(if as_json { JSON } else { TEXT }, topology::clusters(&admin, as_json))
        }
        "/stats" | "/stats/prometheus" => {
            let selection = match stats::Selection::new(&params) {
                Ok(selection) => selection,
                Err(message) => return Ok(reply(StatusCode::BAD_REQUEST, TEXT, format!("{message}\n"))),
            };
            let all = stats::collect(&admin);
            let chosen: Vec<_> = all.into_iter().filter(|s| selection.keeps(s)).collect();
            match (path, param("format")) {
                ("/stats/prometheus", _) | (_, Some("prometheus")) => ok(PROMETHEUS, stats::prometheus(&chosen)),
                (_, Some("json")) => ok(JSON, stats::json(&chosen)),
                (_, None | Some("text")) => ok(TEXT, stats::text(&chosen)),
                (_, Some(other)) => Ok(reply(StatusCode::BAD_REQUEST, TEXT, format!("unknown format {other:?}\n"))),
            }
        }
        "/healthcheck/fail" => {
            admin.health_check_failed.set(true);
            ok(TEXT, "OK\n".into())
        }
        "/healthcheck/ok" => {
            admin.health_check_failed.set(false);
            ok(TEXT, "OK\n".into())
        }
        "/logging" => match logging(&admin, &params) {
            Ok(list) => ok(TEXT, list),
            Err(message) => Ok(reply(StatusCode::NOT_FOUND, TEXT, format!("{message}\n{LOGGING_USAGE}"))),
        },
        "/drain_listeners" => {
            if let Some((unsupported, _)) = params.iter().find(|(k, _)| k == "graceful" || k == "inboundonly") {
                let message =
                    format!("?{unsupported} is not supported yet; POST /drain_listeners stops every listener now\n");
                return Ok(reply(StatusCode::BAD_REQUEST, TEXT, message));
            }
            admin.drain_listeners.send_replace(true);
            ok(TEXT, "OK\n".into())
        }
        "/reset_counters" => {
            reset_counters(&admin);
            ok(TEXT, "OK\n".into())
        }
        "/quitquitquit" => {
            admin.quit.notify_one();
            ok(TEXT, "OK\n".into())
        }
        "/memory" => ok(JSON, memory::Memory::read().json()),
        "/plugins" => ok(TEXT, admin.health.render()),
        "/" => ok(TEXT, HELP.into()),
        _ => Ok(reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into())),
    }
}

const HELP: &str = "ferry admin\n\
  /ready: LIVE once the server accepts traffic; 503 DRAINING after /healthcheck/fail,\n\
    503 BROKER UNREACHABLE while a queue bridge with ready_requires_broker cannot reach its broker\n\
  /queue_bridge: the broker's connection state and each bridged queue's counters (JSON)\n\
  /server_info: version, state, uptime, node, command-line options (JSON)\n\
  /config_dump: the configuration as written: bootstrap, static listeners and clusters (JSON)\n\
  /listeners: each listener's name and address (?format=json)\n\
  /clusters: each cluster and its hosts (?format=json)\n\
  /stats: every stat (?format=json|prometheus, ?filter=<regex>, ?usedonly)\n\
  /stats/prometheus: every stat in the Prometheus text format\n\
  /memory: the process's memory (JSON)\n\
  /plugins: each plugin's VM on each thread: running, restarting, failed or held_failed\n\
  POST /healthcheck/fail, /healthcheck/ok: report DRAINING, or LIVE again\n\
  POST /logging: list the loggers' levels; ?level=<level>, ?<logger>=<level>, ?paths=<logger>:<level>,...: change them\n\
  POST /drain_listeners: stop accepting on every listener (open connections go on)\n\
  POST /reset_counters: counters to zero (not gauges, histograms or the shared-queue accounting)\n\
  POST /quitquitquit: shut down as on SIGTERM\n";

const LOGGING_USAGE: &str = "usage: POST /logging?level=<level> (every logger), /logging?<logger>=<level> (one), \
  /logging?paths=<logger>:<level>,<logger>:<level> (several); levels: trace, debug, info, warning, error, critical, off\n";

/// `POST /logging`: applies the query's changes, all or none, then lists
/// every logger's level as Envoy does (`active loggers:` then `  name: level`).
fn logging(admin: &Admin, params: &[(String, String)]) -> Result<String, String> {
    let control = admin.log_control.as_ref().ok_or("this server's loggers cannot be changed")?;
    let mut changes: Vec<(Option<&str>, &str)> = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "level" => changes.push((None, value)),
            "paths" => {
                for item in value.split(',').filter(|item| !item.is_empty()) {
                    let (logger, level) = item.split_once(':').ok_or(format!("{item:?} is not <logger>:<level>"))?;
                    changes.push((Some(logger), level));
                }
            }
            logger => changes.push((Some(logger), value)),
        }
    }
    // Check every change before making any, so a bad one changes nothing.
    let loggers = control.loggers();
    for (logger, level) in &changes {
        if let Some(logger) = logger
            && !loggers.iter().any(|(name, _)| name == logger)
        {
            return Err(format!("unknown logger {logger:?}"));
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("unknown level {level:?}"));
        }
    }
    for (logger, level) in changes {
        control.set_level(logger, level)?;
    }
    let mut out = String::from("active loggers:\n");
    for (name, level) in control.loggers() {
        out.push_str(&format!("  {name}: {level}\n"));
    }
    Ok(out)
}

/// Envoy's counters, the plugins' counters and their `wasm.<plugin>.*`
/// counters back to zero; gauges, histograms and ferry's shared-queue
/// accounting stay.
fn reset_counters(admin: &Admin) {
    for (_, http) in &admin.http_stats {
        http.reset_counters();
    }
    for (_, listener) in &admin.listener_stats {
        listener.reset_counters();
    }
    for (_, cluster) in admin.clusters.stats() {
        cluster.stats.reset_counters();
    }
    for plugin in &admin.plugins {
        plugin.stats.reset_counters();
    }
    admin.host.metrics().reset_counters();
}

/// The level names `/logging` takes.
const LEVELS: [&str; 8] = ["trace", "debug", "info", "warning", "warn", "error", "critical", "off"];

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
