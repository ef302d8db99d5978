//! `transport_socket` with `envoy.transport_sockets.tls`: Envoy's
//! `DownstreamTlsContext` (a listener's filter chain) and
//! `UpstreamTlsContext` (a cluster), read into [`TlsContext`]. Certificates
//! and keys are read here (PEM), so a missing file stops the start with
//! the field's path.

use serde::Deserialize;

use crate::ConfigError;
use crate::decode::{decode, err, join, unpack_any};
use crate::model::{CertificateKey, TlsContext, TlsVersion};
use crate::raw::{self, RawTransportSocket};

const DOWNSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// Most bytes of a certificate, key or CA file.
const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// The cipher suites (OpenSSL names, as Envoy takes them) rustls offers
/// for TLS 1.2; TLS 1.3's are not configurable, as in Envoy.
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownstreamTlsContext {
    #[serde(default)]
    common_tls_context: Option<RawCommonTlsContext>,
    #[serde(default)]
    require_client_certificate: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTlsContext {
    #[serde(default)]
    common_tls_context: Option<RawCommonTlsContext>,
    #[serde(default)]
    sni: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCommonTlsContext {
    #[serde(default)]
    tls_params: Option<RawTlsParams>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    tls_certificates: Vec<RawTlsCertificate>,
    #[serde(default)]
    validation_context: Option<RawValidationContext>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    alpn_protocols: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsParams {
    #[serde(default, deserialize_with = "crate::enums::tls_version")]
    tls_minimum_protocol_version: Option<String>,
    #[serde(default, deserialize_with = "crate::enums::tls_version")]
    tls_maximum_protocol_version: Option<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    cipher_suites: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsCertificate {
    certificate_chain: raw::DataSource,
    private_key: raw::DataSource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidationContext {
    #[serde(default)]
    trusted_ca: Option<raw::DataSource>,
}

/// A `transport_socket`: `Some` TLS context, or `None` for plain TCP
/// (`raw_buffer`). `downstream` says which context type is expected.
pub(crate) fn transport_socket(
    raw: RawTransportSocket,
    path: &str,
    downstream: bool,
) -> Result<Option<TlsContext>, ConfigError> {
    let typed = raw.typed_config.ok_or_else(|| err(join(path, "typed_config"), "required"))?;
    let any = unpack_any(typed, &join(path, "typed_config"))?;
    let expected = if downstream { DOWNSTREAM } else { UPSTREAM };
    let _ = raw.name;
    match any.type_name.as_str() {
        RAW_BUFFER => Ok(None),
        name if name == expected && downstream => {
            let context: RawDownstreamTlsContext = decode(any.fields, &any.path)?;
            let mut tls = common(context.common_tls_context.unwrap_or_default(), &any.path)?;
            if tls.certificates.is_empty() {
                return Err(err(
                    join(&any.path, "common_tls_context.tls_certificates"),
                    "a server needs a certificate",
                ));
            }
            tls.require_client_certificate = context.require_client_certificate.unwrap_or(false);
            if tls.require_client_certificate && tls.trusted_ca.is_none() {
                return Err(err(
                    join(&any.path, "require_client_certificate"),
                    "needs common_tls_context.validation_context.trusted_ca to check client certificates",
                ));
            }
            Ok(Some(tls))
        }
        name if name == expected => {
            let context: RawUpstreamTlsContext = decode(any.fields, &any.path)?;
            let mut tls = common(context.common_tls_context.unwrap_or_default(), &any.path)?;
            tls.sni = context.sni;
            Ok(Some(tls))
        }
        other => Err(err(
            join(&any.path, "@type"),
            format!("transport socket {other} is not supported here; use {expected}"),
        )),
    }
}

fn common(raw: RawCommonTlsContext, path: &str) -> Result<TlsContext, ConfigError> {
    let at = join(path, "common_tls_context");
    let mut certificates = Vec::new();
    for (i, cert) in raw.tls_certificates.into_iter().enumerate() {
        let cert_path = format!("{at}.tls_certificates[{i}]");
        certificates.push(CertificateKey {
            chain_pem: pem(cert.certificate_chain, &join(&cert_path, "certificate_chain"))?,
            key_pem: pem(cert.private_key, &join(&cert_path, "private_key"))?,
        });
    }
    let trusted_ca = raw
        .validation_context
        .and_then(|v| v.trusted_ca)
        .map(|ca| pem(ca, &join(&at, "validation_context.trusted_ca")))
        .transpose()?;
    let (mut min_version, mut max_version, mut cipher_suites) = (TlsVersion::Tls12, TlsVersion::Tls13, Vec::new());
    if let Some(params) = raw.tls_params {
        let params_path = join(&at, "tls_params");
        let version = |name: Option<String>, field: &str, default: TlsVersion| match name.as_deref() {
            None | Some("TLS_AUTO") => Ok(default),
            // rustls speaks TLS 1.2 and 1.3 only: an older minimum is 1.2.
            Some("TLSv1_0" | "TLSv1_1" | "TLSv1_2") if field.contains("minimum") => Ok(TlsVersion::Tls12),
            Some("TLSv1_2") => Ok(TlsVersion::Tls12),
            Some("TLSv1_3") => Ok(TlsVersion::Tls13),
            Some(other) => Err(err(join(&params_path, field), format!("{other}: ferry speaks TLSv1_2 and TLSv1_3"))),
        };
        min_version = version(params.tls_minimum_protocol_version, "tls_minimum_protocol_version", min_version)?;
        max_version = version(params.tls_maximum_protocol_version, "tls_maximum_protocol_version", max_version)?;
        if min_version > max_version {
            return Err(err(params_path, "the minimum version is above the maximum"));
        }
        for (i, suite) in params.cipher_suites.iter().enumerate() {
            // Envoy's `[A|B]` groups are an ordering hint: each name in them counts.
            for name in suite.trim_matches(['[', ']']).split('|') {
                if !CIPHER_SUITES.contains(&name) {
                    return Err(err(
                        format!("{params_path}.cipher_suites[{i}]"),
                        format!("{name} is not available (rustls offers {})", CIPHER_SUITES.join(", ")),
                    ));
                }
                cipher_suites.push(name.to_owned());
            }
        }
    }
    Ok(TlsContext {
        certificates,
        trusted_ca,
        alpn: raw.alpn_protocols,
        min_version,
        max_version,
        cipher_suites,
        require_client_certificate: false,
        sni: None,
    })
}

fn pem(source: raw::DataSource, path: &str) -> Result<Vec<u8>, ConfigError> {
    crate::decode::data_source(source, path, MAX_PEM_FILE_BYTES, None)
}
