//! A gRPC server for tests (HTTP/2 without TLS), service `test.Echo`:
//! - `Unary`: answers `echo: <message>`;
//! - `Slow`: the same after 2 s;
//! - `Deadline`: answers `echo: <the request's grpc-timeout>`;
//! - `Fail`: a trailers-only answer, status 5 (NOT_FOUND), `nothing here`;
//! - `Stream`: answers each message with `echo: <message>` as it comes, and
//!   when the client ends its side, trailers with status 0 and `x-count`.
//!
//! Every answer carries the request's `x-tag` back as initial metadata.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// A response body fed from a channel.
struct ChannelBody(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn framed(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

fn status_trailers(status: u32, extra: &[(&str, String)]) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.to_string().parse().unwrap());
    for (name, value) in extra {
        trailers.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    trailers
}

/// What a server knows of its `Slow` calls: how many it received and can
/// still answer (its answer goes out, or is dropped with a cancelled
/// stream, 2 s after the call came).
#[derive(Default)]
pub struct SlowCalls {
    pending: AtomicUsize,
}

impl SlowCalls {
    /// Waits until no `Slow` call the server received can still be
    /// answered; panics after `timeout`.
    pub fn wait_until_answered(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.pending.load(Ordering::SeqCst);
            if pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{pending} Slow call(s) still unanswered after {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `Slow` call the server may still answer: counted until dropped.
struct SlowPending(Arc<SlowCalls>);

impl SlowPending {
    fn new(calls: &Arc<SlowCalls>) -> Self {
        calls.pending.fetch_add(1, Ordering::SeqCst);
        SlowPending(calls.clone())
    }
}

impl Drop for SlowPending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(request: Request<Incoming>, slow: Arc<SlowCalls>) -> Result<Response<ChannelBody>, Infallible> {
    let tag = request.headers().get("x-tag").cloned();
    let deadline = request.headers().get("grpc-timeout").map(|t| t.to_str().unwrap_or("?").to_owned());
    let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
    let (frames, receiver) = mpsc::unbounded_channel();
    let mut response = Response::new(ChannelBody(receiver));
    response.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
    if let Some(tag) = tag {
        response.headers_mut().insert("x-tag", tag);
    }
    let mut body = request.into_body();
    match method.as_str() {
        "Fail" => {
            response.headers_mut().insert("grpc-status", "5".parse().unwrap());
            response.headers_mut().insert("grpc-message", "nothing here".parse().unwrap());
            drop(frames);
        }
        "Unary" | "Slow" | "Deadline" => {
            // From the call's arrival until its answer is sent, or the call dropped.
            let pending = (method == "Slow").then(|| SlowPending::new(&slow));
            let whole = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let message = match method.as_str() {
                "Deadline" => deadline.unwrap_or_else(|| "none".into()).into_bytes(),
                _ => whole.get(5..).unwrap_or_default().to_vec(),
            };
            tokio::spawn(async move {
                if method == "Slow" {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let _ = frames.send(Frame::data(framed(&[b"echo: ".as_slice(), &message].concat())));
                let _ = frames.send(Frame::trailers(status_trailers(0, &[])));
                drop(pending);
            });
        }
        _ => {
            tokio::spawn(async move {
                let mut pending = BytesMut::new();
                let mut count = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else { continue };
                    pending.extend_from_slice(&data);
                    while pending.len() >= 5 {
                        let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
                        if pending.len() < 5 + len {
                            break;
                        }
                        pending.advance(5);
                        let message = pending.split_to(len);
                        count += 1;
                        let _ = frames.send(Frame::data(framed(&[b"echo: ".as_slice(), &message].concat())));
                    }
                }
                let _ = frames.send(Frame::trailers(status_trailers(0, &[("x-count", count.to_string())])));
            });
        }
    }
    Ok(response)
}

/// Starts the server on a thread of its own; returns its address.
pub fn grpc_server() -> SocketAddr {
    grpc_server_with_slow_calls().0
}

/// [`grpc_server`], with what it knows of its `Slow` calls.
pub fn grpc_server_with_slow_calls() -> (SocketAddr, Arc<SlowCalls>) {
    let slow = Arc::new(SlowCalls::default());
    let calls = slow.clone();
    let address = super::serve_on_thread(move |stream| {
        let calls = calls.clone();
        async move {
            let service = hyper::service::service_fn(move |request| serve(request, calls.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    (address, slow)
}
