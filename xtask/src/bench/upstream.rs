//! The benchmark's upstream: a minimal HTTP/1.1 server answering every
//! request with `200 upstream body\n`, on one thread.

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Serves on 127.0.0.1:`port` until killed.
pub(crate) fn serve(port: Option<&str>) -> anyhow::Result<()> {
    let port: u16 = port.context("usage: cargo xtask bench-upstream <port>")?.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response = http::Response::new(Full::new(Bytes::from_static(b"upstream body\n")));
                    response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/plain"));
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
