//! A body that counts the bytes read from it: the request body as it
//! streams (upstream, or through filters), for the access log's
//! `%BYTES_RECEIVED%`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// `Incoming`, counting its data bytes into a shared counter when there
/// is one (only requests being logged have one).
pub(crate) struct CountedBody {
    inner: Incoming,
    count: Option<Arc<AtomicU64>>,
}

impl CountedBody {
    /// Counts what is read of `inner` into `count`, if given.
    pub(crate) fn new(inner: Incoming, count: Option<Arc<AtomicU64>>) -> Self {
        CountedBody { inner, count }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(count), Poll::Ready(Some(Ok(frame)))) = (&this.count, &poll)
            && let Some(data) = frame.data_ref()
        {
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
