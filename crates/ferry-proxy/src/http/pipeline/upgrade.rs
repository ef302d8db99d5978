//! Upgrades (WebSocket, or any `upgrade_type` configured), as Envoy's
//! connection manager runs them.
//!
//! An HTTP/1.1 request that asks for an upgrade (`connection: upgrade` and
//! an `upgrade` header other than `h2c`) goes through the filter chain like
//! any other, its `connection` and `upgrade` headers visible to filters,
//! and upstream with them; the connection manager's `upgrade_configs`, or
//! the route's, must allow its type (else 403 `upgrade_failed`). If the
//! upstream answers 101, that response goes through the response filters
//! to the client, and from then on the bytes each side sends are the body
//! of its direction: they run through the filters' body callbacks, as in
//! Envoy, until either side closes. The stream's idle timeout applies, and
//! a drain ends it. CONNECT is not supported.

use bytes::Bytes;
use ferry_config::Upgrade as UpgradeConfig;
use http_body::Frame;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::{CHANNEL_FRAMES, Pipeline, Source};
use crate::http::body::{BoxError, Piece};
use crate::upstream::BodyPiece;

/// An upgrade a request asks for.
pub(crate) struct Upgrade {
    /// The protocol, as the `upgrade` header names it (lower-cased).
    pub(super) kind: String,
    /// The client's connection, once ferry answered 101.
    downstream: Option<OnUpgrade>,
    /// The upstream's connection, once it answered 101.
    pub(super) upstream: Option<OnUpgrade>,
}

/// The upgrade `parts` asks for, if any (the client's connection is taken
/// from its extensions, for after the 101).
pub(super) fn requested(parts: &mut http::request::Parts) -> Option<Upgrade> {
    let upgrade = parts.headers.get(http::header::UPGRADE)?;
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let kind = upgrade.to_str().ok()?.trim().to_ascii_lowercase();
    let connection = parts.headers.get_all(http::header::CONNECTION);
    let asks = connection
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    // A client's offer of HTTP/2 is not an upgrade of this stream.
    if !asks || kind.is_empty() || kind == "h2c" {
        return None;
    }
    let downstream = parts.extensions.remove::<OnUpgrade>();
    Some(Upgrade { kind, downstream, upstream: None })
}

/// Whether an upgrade to `kind` is allowed, as Envoy decides: the route's
/// own entry for it, either way, else the connection manager's (which
/// allows nothing it does not name).
pub(super) fn allowed(kind: &str, manager: &[UpgradeConfig], route: &[UpgradeConfig]) -> bool {
    let entry = |configs: &[UpgradeConfig]| {
        configs.iter().find(|u| u.upgrade_type.eq_ignore_ascii_case(kind)).map(|u| u.enabled)
    };
    entry(route).or_else(|| entry(manager)).unwrap_or(false)
}

/// The client's or the upstream's side of an upgraded connection, read as
/// a body: each read is a data frame; the end of the connection ends it.
pub(crate) struct ReadBody {
    io: ReadHalf<TokioIo<Upgraded>>,
    buffer: Vec<u8>,
    ended: bool,
}

/// Most one read of an upgraded connection takes.
const READ_BYTES: usize = 16 * 1024;

impl ReadBody {
    fn new(io: ReadHalf<TokioIo<Upgraded>>) -> Self {
        ReadBody { io, buffer: vec![0; READ_BYTES], ended: false }
    }
}

impl http_body::Body for ReadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return std::task::Poll::Ready(None);
        }
        let mut read = tokio::io::ReadBuf::new(&mut this.buffer);
        match std::pin::Pin::new(&mut this.io).poll_read(cx, &mut read) {
            std::task::Poll::Ready(Ok(())) if read.filled().is_empty() => {
                this.ended = true;
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(Ok(())) => {
                std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read.filled())))))
            }
            std::task::Poll::Ready(Err(error)) => std::task::Poll::Ready(Some(Err(error.into()))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// A writer for one side of an upgraded connection, fed with what passes
/// the other direction's filters; the channel's end closes its writing.
fn upstream_writer(mut io: WriteHalf<TokioIo<Upgraded>>) -> mpsc::Sender<BodyPiece> {
    let (tx, mut rx) = mpsc::channel::<BodyPiece>(CHANNEL_FRAMES);
    tokio::task::spawn_local(async move {
        while let Some(BodyPiece { frame, last }) = rx.recv().await {
            if let Ok(data) = frame.into_data()
                && io.write_all(&data).await.is_err()
            {
                return;
            }
            if last {
                let _ = io.shutdown().await;
                return;
            }
        }
        // Closed before its end: the stream was cut, the connection drops.
    });
    tx
}

/// [`upstream_writer`] for the client's side, which the response feeds.
fn downstream_writer(mut io: WriteHalf<TokioIo<Upgraded>>) -> mpsc::Sender<Piece> {
    let (tx, mut rx) = mpsc::channel::<Piece>(CHANNEL_FRAMES);
    tokio::task::spawn_local(async move {
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Frame(frame) => {
                    if let Ok(data) = frame.into_data()
                        && io.write_all(&data).await.is_err()
                    {
                        return;
                    }
                }
                Piece::End(finisher) => {
                    let _ = io.shutdown().await;
                    finisher.finish();
                    return;
                }
            }
        }
        // Closed before its end: the stream was cut, the connection drops.
    });
    tx
}

impl Pipeline {
    /// The client has its 101: both connections become the stream's two
    /// directions, through the filters, until either side closes.
    pub(super) async fn relay(mut self: Box<Self>, upgrade: Upgrade) {
        let (Some(downstream), Some(upstream)) = (upgrade.downstream, upgrade.upstream) else { return };
        let (Ok(downstream), Ok(upstream)) = tokio::join!(downstream, upstream) else {
            tracing::debug!(target: "http", "an upgraded connection closed before it could be used");
            return;
        };
        let (down_read, down_write) = tokio::io::split(TokioIo::new(downstream));
        let (up_read, up_write) = tokio::io::split(TokioIo::new(upstream));
        self.request_source = Some(Source::Upgraded(ReadBody::new(down_read)));
        self.response_source = Some(Source::Upgraded(ReadBody::new(up_read)));
        // Nothing of the HTTP request goes onto the upgraded connection.
        self.upstream_pending.clear();
        self.upstream_end_queued = false;
        self.upstream_tx = Some(upstream_writer(up_write));
        self.response_tx = Some(downstream_writer(down_write));
        self.head_sent = true;
        self.request_done = false;
        self.response_done = false;
        self.upgraded = true;
        self.touch();
        self.run(false).await;
        // A cut stream's writers close without their end: the connections drop.
        if let Some(tx) = self.response_tx.take()
            && !self.cut
            && let Err(mpsc::error::SendError(Piece::End(finisher))) = tx.send(Piece::End(self.finisher())).await
        {
            finisher.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(entries: &[(&str, bool)]) -> Vec<UpgradeConfig> {
        entries
            .iter()
            .map(|(kind, enabled)| UpgradeConfig { upgrade_type: kind.to_string(), enabled: *enabled })
            .collect()
    }

    #[test]
    fn the_connection_manager_allows_only_what_it_names() {
        assert!(allowed("websocket", &configs(&[("websocket", true)]), &[]));
        assert!(allowed("websocket", &configs(&[("WebSocket", true)]), &[]));
        assert!(!allowed("websocket", &configs(&[("websocket", false)]), &[]));
        assert!(!allowed("spdy/3", &configs(&[("websocket", true)]), &[]));
    }

    #[test]
    fn a_route_entry_decides_either_way() {
        assert!(!allowed("websocket", &configs(&[("websocket", true)]), &configs(&[("websocket", false)])));
        assert!(allowed("websocket", &configs(&[("websocket", false)]), &configs(&[("websocket", true)])));
        assert!(allowed("websocket", &[], &configs(&[("websocket", true)])));
        // An entry for another type leaves the connection manager's answer.
        assert!(allowed("websocket", &configs(&[("websocket", true)]), &configs(&[("spdy/3", false)])));
    }
}
