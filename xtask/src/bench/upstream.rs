//! The benchmark's upstream: a minimal HTTP/1.1 server answering every
//! request with `200 upstream body\n` (`/1mib`: a 1 MiB body), on one thread.

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
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let big = big.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let body = if request.uri().path() == "/1mib" {
                        big.clone()
                    } else {
                        Bytes::from_static(b"upstream body\n")
                    };
                    async move {
                        let mut response = http::Response::new(Full::new(body));
                        response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/plain"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
