//! TLS with rustls (on ring): the server configuration of a listener that
//! terminates TLS, the client configuration of a cluster that originates
//! it, and what a handshake tells plugins (the `connection.*` TLS
//! attributes, as Envoy reports them).

use std::sync::Arc;

use ferry_config::{TlsContext, TlsVersion};
use ferry_host::{CertificateFacts, TlsFacts};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// What is wrong with a TLS context.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM certificate or key that does not parse.
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verification: {0}")]
    Verifier(String),
}

/// A listener's TLS: the server configuration, and its own certificate's
/// facts (the `*_local_certificate` attributes).
pub(crate) struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) local: Option<CertificateFacts>,
}

/// The server configuration for a `DownstreamTlsContext`.
pub(crate) fn server(tls: &TlsContext) -> Result<ServerTls, TlsError> {
    let provider = provider(&tls.cipher_suites);
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions(tls))?;
    let builder = match &tls.trusted_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone());
            let verifier = if tls.require_client_certificate { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let first = tls.certificates.first().ok_or(TlsError::Pem { what: "tls_certificates", reason: "none".into() })?;
    let (chain, key) = (chain(&first.chain_pem)?, key(&first.key_pem)?);
    let local = chain.first().map(|der| certificate_facts(der));
    let signing_key = provider.key_provider.load_private_key(key)?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    // A key that does not belong to the certificate is refused. A
    // certificate webpki cannot read for the check (an X.509 v1
    // certificate, which Envoy's examples use and BoringSSL serves) is
    // served as it is: it is the client's to judge.
    if let Err(error @ rustls::Error::InconsistentKeys(_)) = certified.keys_match() {
        return Err(error.into());
    }
    let mut config = builder.with_cert_resolver(Arc::new(OneCertificate(Arc::new(certified))));
    // The server's preference decides, as in Envoy.
    config.ignore_client_order = true;
    // Stateless session tickets, as Envoy's BoringSSL issues them by
    // default: a returning client resumes without a full handshake.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(ServerTls { config: Arc::new(config), local })
}

/// A listener's one certificate, whatever the client asks for.
#[derive(Debug)]
struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client configuration for an `UpstreamTlsContext`. Without a
/// `trusted_ca` the server's certificate is not checked, as in Envoy
/// (which verifies only what `validation_context` asks for).
pub(crate) fn client(tls: &TlsContext) -> Result<ClientConfig, TlsError> {
    let provider = provider(&tls.cipher_suites);
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions(tls))?;
    let builder = match &tls.trusted_ca {
        Some(ca) => builder.with_root_certificates(roots(ca)?),
        None => builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))),
    };
    Ok(match tls.certificates.first() {
        Some(cert) => builder.with_client_auth_cert(chain(&cert.chain_pem)?, key(&cert.key_pem)?)?,
        None => builder.with_no_client_auth(),
    })
}

/// What a finished handshake says, for the `connection.*` attributes.
pub(crate) fn handshake_facts(connection: &rustls::ServerConnection, local: Option<&CertificateFacts>) -> TlsFacts {
    TlsFacts {
        version: version_name(connection.protocol_version()).to_owned(),
        server_name: connection.server_name().unwrap_or_default().to_owned(),
        peer: connection.peer_certificates().and_then(|chain| chain.first()).map(certificate_facts),
        local: local.cloned(),
    }
}

/// What an upstream TLS handshake established: the server's certificate
/// as the peer, the cluster's client certificate (if any) as local.
pub(crate) fn client_facts(connection: &rustls::ClientConnection, local: Option<&CertificateFacts>) -> TlsFacts {
    TlsFacts {
        version: version_name(connection.protocol_version()).to_owned(),
        server_name: String::new(),
        peer: connection.peer_certificates().and_then(|chain| chain.first()).map(certificate_facts),
        local: local.cloned(),
    }
}

/// A negotiated version as Envoy names it (`connection.tls_version`).
fn version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    }
}

/// The facts of the first certificate of a TLS context (its own certificate).
pub(crate) fn own_certificate(tls: &ferry_config::TlsContext) -> Option<CertificateFacts> {
    let first = tls.certificates.first()?;
    chain(&first.chain_pem).ok()?.first().map(certificate_facts)
}

/// Subject (RFC 2253, as Envoy prints it), SANs and SHA-256 digest of a certificate.
pub(crate) fn certificate_facts(der: &CertificateDer<'_>) -> CertificateFacts {
    use sha2::Digest as _;
    let sha256 = sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return CertificateFacts { sha256, ..CertificateFacts::default() };
    };
    // RFC 2253: the most specific attribute first, joined with commas.
    let mut parts: Vec<String> = Vec::new();
    for rdn in cert.subject().iter() {
        for attribute in rdn.iter() {
            let name = x509_parser::objects::oid2abbrev(attribute.attr_type(), x509_parser::objects::oid_registry())
                .map_or_else(|_| attribute.attr_type().to_id_string(), str::to_owned);
            let value = attribute.as_str().map_or_else(|_| String::new(), str::to_owned);
            parts.push(format!("{name}={}", escape_rfc2253(&value)));
        }
    }
    parts.reverse();
    let (mut uri_sans, mut dns_sans) = (Vec::new(), Vec::new());
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                x509_parser::extensions::GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    CertificateFacts { subject: parts.join(","), uri_sans, dns_sans, sha256 }
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// ring's provider with the TLS 1.2 suites narrowed to `cipher_suites`
/// (OpenSSL names; TLS 1.3's are always there, as in Envoy).
fn provider(cipher_suites: &[String]) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        let wanted: Vec<CipherSuite> = cipher_suites.iter().filter_map(|name| suite(name)).collect();
        provider.cipher_suites.retain(|s| s.version() == &rustls::version::TLS13 || wanted.contains(&s.suite()));
    }
    // Envoy's (BoringSSL's) preference: AES-128-GCM first, in TLS 1.3 and
    // 1.2; its SHA-256 has hardware support where SHA-384's often has none.
    provider.cipher_suites.sort_by_key(|s| SUITE_PREFERENCE.iter().position(|p| *p == s.suite()).unwrap_or(usize::MAX));
    Arc::new(provider)
}

/// The order a server prefers cipher suites in, as Envoy's default.
const SUITE_PREFERENCE: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
];

fn suite(openssl_name: &str) -> Option<CipherSuite> {
    Some(match openssl_name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

fn versions(tls: &TlsContext) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(version, _)| (tls.min_version..=tls.max_version).contains(version))
        .map(|(_, supported)| supported)
        .collect()
}

fn chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: "certificate_chain", reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { what: "certificate_chain", reason: "no certificate in it".into() });
    }
    Ok(chain)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem { what: "private_key", reason: e.to_string() })
}

fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in chain(pem).map_err(|_| TlsError::Pem { what: "trusted_ca", reason: "no certificate in it".into() })? {
        roots.add(cert).map_err(|e| TlsError::Pem { what: "trusted_ca", reason: e.to_string() })?;
    }
    Ok(roots)
}

/// Accepts any server certificate (but still checks the handshake's
/// signatures): an `UpstreamTlsContext` without `validation_context`.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
