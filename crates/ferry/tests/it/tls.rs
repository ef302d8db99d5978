//! TLS against the real binary, with a test CA made by rcgen: HTTPS from
//! clients (HTTP/1.1, and HTTP/2 by ALPN) through rustls, mutual TLS with
//! the client certificate's subject read by a plugin, and an HTTPS
//! upstream with SNI, checked against its CA (and refused when the CA is
//! another), speaking HTTP/2 by ALPN (`auto_config`); filter chains chosen
//! by SNI and transport protocol, TLS passed through by SNI, TLS in front
//! of `tcp_proxy` and `tcp_proxy` to a TLS cluster.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{Ferry, file_code, plugin, temp_file, wasm_filter};
use http_body_util::{BodyExt as _, Full};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority for a test, and certificates it signs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { pem, issuer: Issuer::new(params, key) }
    }

    /// A certificate for DNS `names` (and a URI SAN), subject `CN=<cn>,O=Example`.
    fn sign(&self, cn: &str, names: &[&str], uri: Option<&str>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "Example");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(uri) = uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        Leaf { cert: params.signed_by(&key, &self.issuer).unwrap().pem(), key: key.serialize_pem() }
    }
}

fn file(name: &str, text: &str) -> String {
    temp_file(name, text).display().to_string()
}

/// A TLS listener (`tls` is the typed config's body) with the attributes
/// plugin, and a cluster `backend` with `cluster_tls` (a whole
/// `transport_socket` and protocol options, or nothing).
fn config(tls: &str, backend: SocketAddr, cluster_tls: &str) -> String {
    let filter = wasm_filter("attributes", "attributes", &file_code(&plugin("attributes_plugin.wasm")));
    let chain = format!(
        "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{tls}"
    );
    let routes = r#"              - match: { prefix: "/backend" }
                route: { cluster: backend }
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: secure } }"#;
    let clusters = format!(
        "  - name: backend\n    connect_timeout: 1s\n{cluster_tls}    load_assignment:\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        backend.port()
    );
    common::ManagerConfig { chain: &chain, routes, filters: &filter, clusters: &clusters, ..Default::default() }.yaml()
}

fn server_tls(leaf: &Leaf, extra: &str) -> String {
    format!(
        "          common_tls_context:\n            alpn_protocols: [h2, http/1.1]\n            tls_certificates:\n            - certificate_chain: {{ filename: {:?} }}\n              private_key: {{ filename: {:?} }}\n{extra}",
        file("server.pem", &leaf.cert),
        file("server.key", &leaf.key)
    )
}

/// A rustls client trusting `ca`, with ALPN `alpn` and, if given, a client certificate.
fn client_config(ca: &Ca, alpn: &[&str], identity: Option<&Leaf>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// One request over TLS to `address` (SNI `localhost`): status, version,
/// body and the response headers; `Err` if the handshake or the request fails.
fn https_get(
    address: SocketAddr,
    config: rustls::ClientConfig,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::Version, String, http::HeaderMap), String> {
    https_get_as(address, config, "localhost", path, headers)
}

/// As [`https_get`], asking for server name `sni`.
fn https_get_as(
    address: SocketAddr,
    config: rustls::ClientConfig,
    sni: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::Version, String, http::HeaderMap), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sni = sni.to_owned();
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
        let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = hyper_util::rt::TokioIo::new(tls);
        let mut request = http::Request::get(format!("https://localhost:{}{path}", address.port()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await.map_err(|e| e.to_string())?
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await.map_err(|e| e.to_string())?
        };
        let (status, version, headers) = (response.status().as_u16(), response.version(), response.headers().clone());
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned(), headers))
    })
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn https_clients_get_http1_or_http2_by_alpn() {
    let ca = Ca::new("test CA");
    let server = ca.sign("localhost", &["localhost"], None);
    let ferry = Ferry::start(&config(&server_tls(&server, ""), common::echo_server(), ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let (status, version, body, _) = https_get(main, client_config(&ca, &["http/1.1"], None), "/", &[]).unwrap();
    assert_eq!((status, version, body.as_str()), (200, http::Version::HTTP_11, "secure"));
    let (status, version, body, _) = https_get(main, client_config(&ca, &["h2", "http/1.1"], None), "/", &[]).unwrap();
    assert_eq!((status, version, body.as_str()), (200, http::Version::HTTP_2, "secure"));
    // Plugins see a TLS connection without a client certificate.
    let read = |property: &str| https_get(main, client_config(&ca, &["h2"], None), "/", &[("x-property", property)]);
    assert_eq!(read("connection.tls_version").unwrap().2, hex("TLSv1.3"));
    assert_eq!(read("connection.mtls").unwrap().2, "00");
    assert_eq!(read("connection.requested_server_name").unwrap().2, hex("localhost"));
    assert_eq!(read("connection.subject_local_certificate").unwrap().2, hex("CN=localhost,O=Example"));
    assert_eq!(read("connection.dns_san_local_certificate").unwrap().2, hex("localhost"));
    assert_eq!(read("request.scheme").unwrap().2, hex("https"));
    // A client that does not trust the server's CA does not get through.
    let stranger = Ca::new("other CA");
    assert!(https_get(main, client_config(&stranger, &["h2"], None), "/", &[]).is_err());
}

#[test]
fn mutual_tls_requires_a_client_certificate_and_shows_it_to_plugins() {
    let ca = Ca::new("test CA");
    let server = ca.sign("localhost", &["localhost"], None);
    let client = ca.sign("client", &[], Some("spiffe://example.org/client"));
    let extra = format!(
        "            validation_context:\n              trusted_ca: {{ filename: {:?} }}\n          require_client_certificate: true\n",
        file("ca.pem", &ca.pem)
    );
    let ferry = Ferry::start(&config(&server_tls(&server, &extra), common::echo_server(), ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let without = https_get(main, client_config(&ca, &["http/1.1"], None), "/", &[]);
    assert!(without.is_err(), "no client certificate: {without:?}");
    let read = |property: &str| {
        https_get(main, client_config(&ca, &["http/1.1"], Some(&client)), "/", &[("x-property", property)]).unwrap().2
    };
    assert_eq!(read("connection.mtls"), "01");
    assert_eq!(read("connection.subject_peer_certificate"), hex("CN=client,O=Example"));
    assert_eq!(read("connection.uri_san_peer_certificate"), hex("spiffe://example.org/client"));
    assert_eq!(read("connection.sha256_peer_certificate_digest").len(), 128, "64 hex characters, hex-encoded again");
    // A certificate from another CA is refused.
    let other = Ca::new("other CA").sign("client", &[], None);
    assert!(https_get(main, client_config(&ca, &["http/1.1"], Some(&other)), "/", &[]).is_err());
}

/// An HTTPS upstream (HTTP/1.1 and HTTP/2 by ALPN) that answers with the
/// SNI and the protocol it saw.
fn https_upstream(leaf: &Leaf) -> SocketAddr {
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    common::serve_on_thread(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let text = format!("sni={sni} version={:?}", request.version());
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(text)))) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        }
    })
}

#[test]
fn an_https_upstream_is_checked_against_its_ca_and_spoken_to_by_alpn() {
    let ca = Ca::new("test CA");
    let server = ca.sign("localhost", &["localhost"], None);
    let backend = https_upstream(&ca.sign("backend.internal", &["backend.internal"], None));
    let cluster_tls = |trusted: &str| {
        format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.internal
        common_tls_context:
          validation_context: {{ trusted_ca: {{ filename: {trusted:?} }} }}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        auto_config: {{}}
"#
        )
    };
    let trusted = file("backend-ca.pem", &ca.pem);
    let ferry =
        Ferry::start(&config(&server_tls(&server, ""), backend, &cluster_tls(&trusted)), &["--concurrency", "1"]);
    let (status, _, body, _) =
        https_get(ferry.address("main"), client_config(&ca, &["http/1.1"], None), "/backend", &[]).unwrap();
    assert_eq!((status, body.as_str()), (200, "sni=backend.internal version=HTTP/2.0"), "{:#?}", ferry.lines());
    // Plugins read the upstream connection's TLS once the response comes.
    let client = || client_config(&ca, &["http/1.1"], None);
    let upstream = |property: &str| {
        let (_, _, _, headers) =
            https_get(ferry.address("main"), client(), "/backend", &[("x-response-property", property)]).unwrap();
        let value = headers.get("x-property-value").map(|v| v.to_str().unwrap().to_owned());
        (headers.get("x-property-status").unwrap().to_str().unwrap().to_owned(), value.unwrap_or_default())
    };
    assert_eq!(upstream("upstream.tls_version"), ("0".into(), hex("TLSv1.3")));
    assert_eq!(upstream("upstream.subject_peer_certificate"), ("0".into(), hex("CN=backend.internal,O=Example")));
    assert_eq!(upstream("upstream.dns_san_peer_certificate"), ("0".into(), hex("backend.internal")));
    assert_eq!(upstream("upstream.request_attempt_count").0, "0");
    assert_eq!(upstream("upstream.subject_local_certificate").0, "1", "no client certificate: NotFound");
    drop(ferry);
    // The upstream's certificate from a CA the cluster does not trust: no connection.
    let stranger = file("stranger-ca.pem", &Ca::new("other CA").pem);
    let ferry =
        Ferry::start(&config(&server_tls(&server, ""), backend, &cluster_tls(&stranger)), &["--concurrency", "1"]);
    let (status, _, _, _) =
        https_get(ferry.address("main"), client_config(&ca, &["http/1.1"], None), "/backend", &[]).unwrap();
    assert_eq!(status, 503);
}

#[test]
fn a_key_that_does_not_parse_names_the_listener() {
    let ca = Ca::new("test CA");
    let mut server = ca.sign("localhost", &["localhost"], None);
    server.key = "not a key".into();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ferry"));
    let config = config(&server_tls(&server, ""), common::echo_server(), "");
    let (status, stderr) = common::run_to_end_binary(binary, &config, &["--mode", "validate"]);
    assert!(!status.success(), "refused: {stderr}");
    assert!(stderr.contains("listener \"main\": TLS: private_key"), "{stderr}");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let ca = Ca::new("test CA");
    let mut server = ca.sign("localhost", &["localhost"], None);
    server.key = ca.sign("other", &["other"], None).key;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ferry"));
    let config = config(&server_tls(&server, ""), common::echo_server(), "");
    let (status, stderr) = common::run_to_end_binary(binary, &config, &["--mode", "validate"]);
    assert!(!status.success(), "refused: {stderr}");
    assert!(stderr.contains("listener \"main\": TLS:") && stderr.contains("key"), "{stderr}");
}

/// Envoy's own examples serve X.509 version 1 certificates (no
/// extensions), which BoringSSL takes; webpki cannot read them, but a
/// server only sends its certificate: ferry serves it, and curl (told not
/// to verify) completes the handshake.
#[test]
fn an_x509_v1_certificate_is_served() {
    let testdata = common::repo_root().join("crates/ferry/tests/testdata");
    let leaf = Leaf {
        cert: std::fs::read_to_string(testdata.join("x509v1_localhost.pem")).unwrap(),
        key: std::fs::read_to_string(testdata.join("x509v1_localhost.key")).unwrap(),
    };
    let ferry = Ferry::start(&config(&server_tls(&leaf, ""), common::echo_server(), ""), &["--concurrency", "1"]);
    let url = format!("https://localhost:{}/", ferry.address("main").port());
    let output = std::process::Command::new("curl")
        .args(["-sk", "--http1.1", "-w", " %{http_code} %{ssl_verify_result}", &url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("secure 200"), "{text} {}", String::from_utf8_lossy(&output.stderr));
}

/// A filter chain's fields (column 6): its `name`, `matcher` (a flow
/// mapping, or nothing), the TLS of `leaf` if given, and `filters`
/// (column 6 too).
fn chain_fields(name: &str, matcher: &str, leaf: Option<&Leaf>, filters: &str) -> String {
    let mut out = format!("      name: {name}\n");
    if !matcher.is_empty() {
        out.push_str(&format!("      filter_chain_match: {matcher}\n"));
    }
    if let Some(leaf) = leaf {
        out.push_str(&format!(
            "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {:?} }}\n              private_key: {{ filename: {:?} }}\n",
            file("chain.pem", &leaf.cert),
            file("chain.key", &leaf.key)
        ));
    }
    out + filters
}

/// The filters of a chain whose connection manager answers `answer` on every path.
fn answering(answer: &str) -> String {
    format!(
        r#"      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {answer}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: {answer} }} }}
          http_filters:
          - name: envoy.filters.http.router
"#
    )
}

/// The filters of a chain that proxies TCP to `cluster`.
fn proxying(cluster: &str) -> String {
    format!(
        "      filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: tcp\n          cluster: {cluster}\n"
    )
}

/// A filter chain item (column 4) from its fields.
fn item(fields: &str) -> String {
    format!("    - {}", &fields[6..])
}

/// A filter chain item answering `answer` over HTTP.
fn http_chain(matcher: &str, leaf: Option<&Leaf>, answer: &str) -> String {
    item(&chain_fields(answer, matcher, leaf, &answering(answer)))
}

/// A filter chain item proxying TCP to `cluster`.
fn tcp_chain(matcher: &str, leaf: Option<&Leaf>, cluster: &str) -> String {
    item(&chain_fields("tcp", matcher, leaf, &proxying(cluster)))
}

/// A listener `main` with the TLS inspector and `chains` (items at column 4).
fn chains_config(chains: &str, clusters: &str) -> String {
    format!(
        "static_resources:\n  listeners:\n  - name: main\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}\n    filter_chains:\n{chains}  clusters:\n{clusters}"
    )
}

#[test]
fn filter_chains_are_chosen_by_server_name() {
    let ca = Ca::new("test CA");
    let (shop, api) = (ca.sign("shop", &["shop.test"], None), ca.sign("api", &["api.test", "x.api.test"], None));
    let chains = http_chain(r#"{ server_names: [shop.test] }"#, Some(&shop), "shop")
        + &http_chain(r#"{ server_names: ["*.api.test", api.test] }"#, Some(&api), "api");
    let ferry = Ferry::start(&chains_config(&chains, ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let get = |sni: &str| https_get_as(main, client_config(&ca, &["http/1.1"], None), sni, "/", &[]).map(|r| r.2);
    assert_eq!(get("shop.test").as_deref(), Ok("shop"));
    assert_eq!(get("api.test").as_deref(), Ok("api"));
    assert_eq!(get("x.api.test").as_deref(), Ok("api"), "by the wildcard");
    assert!(get("other.test").is_err(), "no chain takes it, and there is no default chain");
}

#[test]
fn tls_and_plain_text_share_a_port_by_transport_protocol() {
    let ca = Ca::new("test CA");
    let server = ca.sign("localhost", &["localhost"], None);
    let chains = http_chain("{ transport_protocol: tls }", Some(&server), "secure")
        + &http_chain("{ transport_protocol: raw_buffer }", None, "plain");
    let ferry = Ferry::start(&chains_config(&chains, ""), &["--concurrency", "1"]);
    let main = ferry.address("main");
    let secure = https_get(main, client_config(&ca, &["http/1.1"], None), "/", &[]).unwrap();
    assert_eq!(secure.2, "secure");
    assert_eq!(common::get(main, "/", &[]).text(), "plain");
}

#[test]
fn a_default_chain_takes_what_no_other_matches() {
    let ca = Ca::new("test CA");
    let (named, fallback) = (ca.sign("named", &["named.test"], None), ca.sign("any", &["any.test"], None));
    let chains = http_chain(r#"{ server_names: [named.test] }"#, Some(&named), "named");
    let default = chain_fields("fallback", "", Some(&fallback), &answering("fallback"));
    let config = chains_config(&chains, "")
        .replace("  clusters:\n", &format!("    default_filter_chain:\n{default}  clusters:\n"));
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    let main = ferry.address("main");
    let get = |sni: &str| https_get_as(main, client_config(&ca, &["http/1.1"], None), sni, "/", &[]).map(|r| r.2);
    assert_eq!(get("named.test").as_deref(), Ok("named"));
    // The fallback's certificate names any.test: the client asks for that.
    assert_eq!(get("any.test").as_deref(), Ok("fallback"));
}

/// A TLS server for `leaf` that echoes what it reads, and says which
/// server name the client asked for first (`sni=<name>;`).
fn tls_echo_server(leaf: &Leaf) -> SocketAddr {
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    common::serve_on_thread(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
            let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
            let _ = tls.write_all(format!("sni={sni};").as_bytes()).await;
            let mut buffer = [0u8; 1024];
            while let Ok(n) = tls.read(&mut buffer).await {
                if n == 0 || tls.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            let _ = tls.shutdown().await;
        }
    })
}

/// Writes `message` over TLS to `address` asking for `sni`, ends its side,
/// and returns all it reads back.
fn tls_exchange(
    address: SocketAddr,
    config: rustls::ClientConfig,
    sni: &str,
    message: &[u8],
) -> Result<String, String> {
    tls_exchange_bytes(address, config, sni, message).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// As [`tls_exchange`], the answer as bytes.
fn tls_exchange_bytes(
    address: SocketAddr,
    config: rustls::ClientConfig,
    sni: &str,
    message: &[u8],
) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (sni, message) = (sni.to_owned(), message.to_vec());
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
        let mut tls =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(&message).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        let mut received = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut received)).await;
        Ok(received)
    })
}

/// The HTTP/2 frames in `bytes` as (type, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let payload = bytes[9..].get(..length).unwrap_or(&bytes[9..]).to_vec();
        frames.push((bytes[3], payload));
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    frames
}

/// RFC 9113 §3.2: once ALPN chose `h2` the connection is HTTP/2; a client
/// that then speaks HTTP/1.1 gets GOAWAY(PROTOCOL_ERROR), not a 400, and
/// the log says why.
#[test]
fn after_alpn_h2_an_invalid_preface_gets_goaway_protocol_error() {
    let ca = Ca::new("test CA");
    let server = ca.sign("localhost", &["localhost"], None);
    let ferry = Ferry::start(
        &config(&server_tls(&server, ""), common::echo_server(), ""),
        &["--concurrency", "1", "--component-log-level", "connection:debug"],
    );
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let answer = tls_exchange_bytes(ferry.address("main"), client_config(&ca, &["h2"], None), "localhost", request);
    let answer = answer.unwrap();
    assert!(!answer.starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&answer));
    let goaway = frames(&answer).into_iter().find(|(kind, _)| *kind == 7).expect("a GOAWAY frame");
    assert_eq!(goaway.1[4..8], [0, 0, 0, 1], "PROTOCOL_ERROR");
    let line = ferry.wait_for("invalid HTTP/2 connection preface", std::time::Duration::from_secs(5));
    assert!(line.contains("GET / HTTP/1.1"), "{line}");
}

/// After ALPN chose `http/1.1`, an HTTP/2 client is not served as HTTP/2.
#[test]
fn after_alpn_http1_an_http2_client_is_not_served_http2() {
    let ca = Ca::new("test CA");
    let server = ca.sign("localhost", &["localhost"], None);
    let ferry = Ferry::start(&config(&server_tls(&server, ""), common::echo_server(), ""), &["--concurrency", "1"]);
    let address = ferry.address("main");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answered = runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &["http/1.1"], None)));
        let tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let io = hyper_util::rt::TokioIo::new(tls);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(connection);
        let request =
            http::Request::get(format!("https://localhost:{}/", address.port())).body(Full::new(Bytes::new())).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(request)).await
    });
    match answered {
        Ok(Ok(response)) => panic!("served as HTTP/2: {response:?}"),
        Ok(Err(_)) => {}
        Err(_) => panic!("no answer at all within 10 s: the connection hangs"),
    }
}

#[test]
fn tls_is_passed_through_unterminated_by_server_name() {
    let ca = Ca::new("test CA");
    let backend = ca.sign("backend", &["pass.test"], None);
    let upstream = tls_echo_server(&backend);
    let clusters = common::cluster("backend", upstream);
    let config = chains_config(&tcp_chain(r#"{ server_names: [pass.test] }"#, None, "backend"), &clusters);
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    // The client's handshake reaches the backend, whose certificate it checks.
    let echoed = tls_exchange(ferry.address("main"), client_config(&ca, &[], None), "pass.test", b"ping").unwrap();
    assert_eq!(echoed, "sni=pass.test;ping");
}

#[test]
fn tcp_proxy_behind_tls_and_to_a_tls_cluster() {
    let ca = Ca::new("test CA");
    let (front, backend) = (ca.sign("front", &["localhost"], None), ca.sign("backend", &["backend.internal"], None));
    let upstream = tls_echo_server(&backend);
    let cluster_tls = format!(
        "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: backend.internal\n        common_tls_context:\n          validation_context: {{ trusted_ca: {{ filename: {:?} }} }}\n",
        file("backend-ca.pem", &ca.pem)
    );
    let clusters = common::cluster("backend", upstream)
        .replace("    connect_timeout: 1s\n", &format!("    connect_timeout: 1s\n{cluster_tls}"));
    let config = chains_config(&tcp_chain("", Some(&front), "backend"), &clusters);
    let ferry = Ferry::start(&config, &["--concurrency", "1"]);
    // TLS to ferry, TLS again from ferry to the backend (with its own SNI).
    let echoed = tls_exchange(ferry.address("main"), client_config(&ca, &[], None), "localhost", b"ping").unwrap();
    assert_eq!(echoed, "sni=backend.internal;ping");
}
