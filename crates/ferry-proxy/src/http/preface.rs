//! The HTTP/2 client connection preface on a connection where TLS's ALPN
//! already chose `h2` (RFC 9113 §3.2): the protocol is settled, so bytes
//! that are not the preface are a connection error of type
//! PROTOCOL_ERROR, answered with GOAWAY, never read as HTTP/1.1.
//!
//! hyper's HTTP/2 server (the h2 crate) closes such a connection without a
//! word; Envoy (nghttp2) sends GOAWAY. The check reads the 24 bytes first
//! and hands them back to hyper through [`Replayed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// What every HTTP/2 client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection did not start as HTTP/2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrefaceError {
    /// The client sent something else; it began with these bytes.
    #[error("invalid HTTP/2 connection preface after ALPN h2: it began with {0:?}")]
    Invalid(String),
    /// The connection closed or failed before the preface was complete.
    #[error("the connection ended before its HTTP/2 preface: {0}")]
    Io(#[from] io::Error),
}

/// Reads the client preface from `io`. If it is right, returns `io` with
/// the preface to be read again; if not, answers with an empty SETTINGS
/// frame (the server preface) and GOAWAY(PROTOCOL_ERROR), and closes.
pub(crate) async fn expect_preface<IO>(mut io: IO) -> Result<Replayed<IO>, PrefaceError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut buffer = [0u8; 24];
    while seen.len() < PREFACE.len() {
        // Up to the preface's length and no further: what follows is hyper's.
        let n = io.read(&mut buffer[..PREFACE.len() - seen.len()]).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        seen.extend_from_slice(&buffer[..n]);
        if !PREFACE.starts_with(&seen) {
            let _ = io.write_all(&protocol_error_goaway(b"invalid connection preface")).await;
            let _ = io.shutdown().await;
            return Err(PrefaceError::Invalid(String::from_utf8_lossy(&seen).into_owned()));
        }
    }
    Ok(Replayed { replay: Bytes::from(seen), io })
}

/// An empty SETTINGS frame, then GOAWAY with last stream 0, PROTOCOL_ERROR
/// and `debug` as its debug data (RFC 9113 §6.5, §6.8).
fn protocol_error_goaway(debug: &[u8]) -> Vec<u8> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const PROTOCOL_ERROR: u32 = 0x1;
    let frame_header = |length: usize, kind: u8| {
        let length = (length as u32).to_be_bytes();
        [length[1], length[2], length[3], kind, 0, 0, 0, 0, 0]
    };
    let mut out = frame_header(0, SETTINGS).to_vec();
    out.extend_from_slice(&frame_header(8 + debug.len(), GOAWAY));
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&PROTOCOL_ERROR.to_be_bytes());
    out.extend_from_slice(debug);
    out
}

/// A connection whose first bytes were read already: they are read again
/// before the rest.
pub(crate) struct Replayed<IO> {
    replay: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replayed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.replay.has_remaining() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replayed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_right_preface_is_read_again_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        drop(client);
        let mut replayed = expect_preface(server).await.unwrap();
        let mut all = Vec::new();
        replayed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, [&PREFACE[..], b"frames"].concat());
    }

    #[tokio::test]
    async fn anything_else_gets_settings_and_goaway_protocol_error() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let error = expect_preface(server).await.err().unwrap();
        assert!(error.to_string().contains("it began with \"GET / HTTP/1.1"), "{error}");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        // SETTINGS: length 0, type 4; GOAWAY: type 7, last stream 0, error 1.
        assert_eq!(&answer[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(answer[12], 7);
        assert_eq!(&answer[18..26], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&answer[26..], b"invalid connection preface");
    }
}
