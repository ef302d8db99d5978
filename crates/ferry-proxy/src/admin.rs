//! The admin endpoint, on the main thread: `/ready`, `/stats` and
//! `/plugins` (the state of each plugin's VM on each thread, ferry's own).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use std::collections::BTreeMap;
use std::rc::Rc;

use ferry_host::{Host, Plugin};

use crate::health::HealthBoard;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves admin requests until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, host: Arc<Host>, health: HealthBoard, plugins: Vec<Arc<Plugin>>) {
    let admin = Rc::new(Admin { host, health, plugins });
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let admin = admin.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| respond(request, admin.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// What the admin endpoint reports on.
struct Admin {
    host: Arc<Host>,
    health: HealthBoard,
    plugins: Vec<Arc<Plugin>>,
}

async fn respond(request: Request<Incoming>, admin: Rc<Admin>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        // The server only listens once every worker has started.
        "/ready" => (StatusCode::OK, "LIVE\n".to_owned()),
        "/stats" => (StatusCode::OK, stats(&admin)),
        "/plugins" => (StatusCode::OK, admin.health.render()),
        "/" => (
            StatusCode::OK,
            "ferry admin\n  /ready: LIVE once the server accepts traffic\n  /stats: counters, one `name: value` per line\n  \
             /plugins: each plugin's VM on each thread: running, restarting, failed or held_failed\n"
                .to_owned(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// Counters in Envoy's `/stats` text form.
fn stats(admin: &Admin) -> String {
    let host = &admin.host;
    let queues = host.shared_queues();
    let totals = queues.totals();
    let mut out = format!(
        "ferry.shared_queue.enqueued: {}\nferry.shared_queue.dequeued: {}\nferry.shared_queue.waiting: {}\n\
         ferry.shared_queue.dropped: {}\nferry.shared_queue.refused: {}\n",
        totals.enqueued, totals.dequeued, totals.waiting, totals.dropped, totals.refused
    );
    // Each queue by vm_id and name.
    for queue in queues.stats() {
        let prefix = format!("ferry.shared_queue.{}.{}", queue.vm_id, queue.name);
        let c = queue.counts;
        out.push_str(&format!(
            "{prefix}.depth: {}\n{prefix}.bytes: {}\n{prefix}.enqueued: {}\n{prefix}.dequeued: {}\n{prefix}.dropped: {}\n{prefix}.refused: {}\n",
            queue.depth, queue.bytes, c.enqueued, c.dequeued, c.dropped, c.refused
        ));
    }
    // Each plugin's failures and restarts, as Envoy's `wasm.<plugin>.*`
    // (plugins configured twice under one name are summed).
    let mut by_plugin: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for plugin in &admin.plugins {
        for (name, value) in plugin.stats.snapshot() {
            *by_plugin.entry((plugin.display_name(), name)).or_default() += value;
        }
    }
    for ((plugin, name), value) in by_plugin {
        out.push_str(&format!("wasm.{plugin}.{name}: {value}\n"));
    }
    // Plugin-defined metrics, under Envoy's custom-stat namespace.
    for (name, metric) in host.metrics().snapshot() {
        out.push_str(&format!("wasmcustom.{name}: {}\n", metric.render()));
    }
    out
}
