//! hyper-rustls's connector, wrapped so each response says what its
//! connection's TLS handshake established (the `upstream.*` TLS
//! attributes): hyper's client copies `Connected::extra` into the
//! extensions of every response on the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_host::{CertificateFacts, TlsFacts};
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;

/// What the upstream TLS handshake established, in a response's extensions.
#[derive(Clone)]
pub(crate) struct UpstreamTls(pub(crate) Arc<TlsFacts>);

/// The connector of a cluster's clients.
#[derive(Clone)]
pub(crate) struct Reporting {
    inner: HttpsConnector<HttpConnector>,
    /// The cluster's client certificate (`upstream.*_local_certificate`).
    local: Option<CertificateFacts>,
}

impl Reporting {
    pub(crate) fn new(inner: HttpsConnector<HttpConnector>, local: Option<CertificateFacts>) -> Self {
        Reporting { inner, local }
    }
}

type Inner = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

impl tower_service::Service<Uri> for Reporting {
    type Response = Reported;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reported, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let local = self.local.clone();
        Box::pin(async move {
            let stream = connecting.await?;
            let facts = match &stream {
                MaybeHttpsStream::Https(tls) => {
                    Some(Arc::new(crate::tls::client_facts(tls.inner().get_ref().1, local.as_ref())))
                }
                MaybeHttpsStream::Http(_) => None,
            };
            Ok(Reported { stream, facts })
        })
    }
}

/// A connection with what its handshake established.
pub(crate) struct Reported {
    stream: Inner,
    facts: Option<Arc<TlsFacts>>,
}

impl Connection for Reported {
    fn connected(&self) -> Connected {
        let connected = self.stream.connected();
        match &self.facts {
            Some(facts) => connected.extra(UpstreamTls(facts.clone())),
            None => connected,
        }
    }
}

impl hyper::rt::Read for Reported {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Reported {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}
