//! The admin endpoint, on the main thread: `/ready` and `/stats`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use ferry_host::Host;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves admin requests until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, host: Arc<Host>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let host = host.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| respond(request, host.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn respond(request: Request<Incoming>, host: Arc<Host>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        // The server only listens once every worker has started.
        "/ready" => (StatusCode::OK, "LIVE\n".to_owned()),
        "/stats" => (StatusCode::OK, stats(&host)),
        "/" => (
            StatusCode::OK,
            "ferry admin\n  /ready: LIVE once the server accepts traffic\n  /stats: counters, one `name: value` per line\n"
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
fn stats(host: &Host) -> String {
    let queues = host.shared_queues().totals();
    let mut out = format!(
        "ferry.shared_queue.enqueued: {}\nferry.shared_queue.dequeued: {}\nferry.shared_queue.waiting: {}\n",
        queues.enqueued, queues.dequeued, queues.waiting
    );
    // Plugin-defined metrics, under Envoy's custom-stat namespace.
    for (name, metric) in host.metrics().snapshot() {
        out.push_str(&format!("wasmcustom.{name}: {}\n", metric.render()));
    }
    out
}
