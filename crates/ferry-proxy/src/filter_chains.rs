//! Which filter chain takes a connection, as Envoy's listener chooses it
//! with the TLS inspector: the client's first bytes are looked at (never
//! taken, so a chain that passes TLS through unterminated gets them all)
//! for a TLS ClientHello and its server name (SNI); then `server_names`
//! (an exact name, else the longest `*.suffix`, else chains that name
//! none), then `transport_protocol` (`tls` or `raw_buffer`, else chains
//! that name none), else the `default_filter_chain`.

use std::time::{Duration, Instant};

use ferry_config::ChainMatch;
use tokio::net::TcpStream;

use crate::plan::ChainPlan;

/// Longest the inspector waits for a whole ClientHello (Envoy's
/// `listener_filters_timeout` default).
const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Most bytes looked at for a ClientHello.
const INSPECT_BYTES: usize = 16 * 1024;

/// What the inspector saw of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Inspected {
    /// It starts with a TLS handshake.
    pub(crate) tls: bool,
    /// The server name it asks for, lower case.
    pub(crate) sni: Option<String>,
}

/// Whether choosing among `chains` needs the connection's first bytes.
pub(crate) fn needs_inspection(chains: &[ChainPlan]) -> bool {
    chains.iter().any(|c| !c.matcher.is_empty())
}

/// Looks at the first bytes of `stream` without taking them: a ClientHello
/// and its SNI, or not TLS. A client that sends nothing within the
/// timeout, or closes, is not TLS.
pub(crate) async fn inspect(stream: &TcpStream) -> Inspected {
    let deadline = Instant::now() + INSPECT_TIMEOUT;
    let mut buffer = vec![0u8; INSPECT_BYTES];
    loop {
        let peeked = tokio::time::timeout_at(deadline.into(), stream.peek(&mut buffer)).await;
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Inspected::default(),
        };
        // A TLS record of type handshake.
        if buffer[0] != 0x16 {
            return Inspected::default();
        }
        match client_hello(&buffer[..n]) {
            Hello::Complete(sni) => return Inspected { tls: true, sni },
            Hello::Broken => return Inspected { tls: true, sni: None },
            Hello::Partial if n == buffer.len() || Instant::now() >= deadline => {
                return Inspected { tls: true, sni: None };
            }
            // The rest of the ClientHello is on its way.
            Hello::Partial => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

enum Hello {
    Complete(Option<String>),
    Partial,
    Broken,
}

/// Reads a ClientHello from `bytes` with rustls's own parser.
fn client_hello(bytes: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Hello::Broken,
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Hello::Complete(accepted.client_hello().server_name().map(str::to_ascii_lowercase)),
        Ok(None) => Hello::Partial,
        Err(_) => Hello::Broken,
    }
}

/// The chain for a connection the inspector saw as `seen`, if one takes it.
pub(crate) fn choose<'a>(chains: &'a [ChainPlan], seen: &Inspected) -> Option<&'a ChainPlan> {
    let matchers: Vec<&ChainMatch> = chains.iter().filter(|c| !c.is_default).map(|c| &c.matcher).collect();
    let chosen = choose_index(&matchers, seen);
    match chosen {
        Some(i) => chains.iter().filter(|c| !c.is_default).nth(i),
        None => chains.iter().find(|c| c.is_default),
    }
}

/// Envoy's order, for the fields ferry matches: server names, then
/// transport protocol. `None` when no chain takes the connection.
fn choose_index(matchers: &[&ChainMatch], seen: &Inspected) -> Option<usize> {
    let all: Vec<usize> = (0..matchers.len()).collect();
    let by_name = match &seen.sni {
        Some(sni) => {
            let exact: Vec<usize> = all.iter().copied().filter(|&i| matchers[i].server_names.contains(sni)).collect();
            if exact.is_empty() {
                // The longest wildcard suffix that covers the name.
                let longest = |i: usize| {
                    matchers[i]
                        .server_names
                        .iter()
                        .filter_map(|n| n.strip_prefix('*'))
                        .filter(|suffix| sni.ends_with(suffix) && sni.len() > suffix.len())
                        .map(str::len)
                        .max()
                };
                let best = all.iter().filter_map(|&i| longest(i)).max();
                match best {
                    Some(best) => all.iter().copied().filter(|&i| longest(i) == Some(best)).collect(),
                    None => all.iter().copied().filter(|&i| matchers[i].server_names.is_empty()).collect(),
                }
            } else {
                exact
            }
        }
        None => all.iter().copied().filter(|&i| matchers[i].server_names.is_empty()).collect(),
    };
    let protocol = if seen.tls { "tls" } else { "raw_buffer" };
    let named: Vec<usize> =
        by_name.iter().copied().filter(|&i| matchers[i].transport_protocol.as_deref() == Some(protocol)).collect();
    if let Some(&first) = named.first() {
        return Some(first);
    }
    by_name.into_iter().find(|&i| matchers[i].transport_protocol.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(names: &[&str], protocol: Option<&str>) -> ChainMatch {
        ChainMatch {
            server_names: names.iter().map(|n| (*n).to_owned()).collect(),
            transport_protocol: protocol.map(str::to_owned),
        }
    }

    fn seen(tls: bool, sni: Option<&str>) -> Inspected {
        Inspected { tls, sni: sni.map(str::to_owned) }
    }

    #[test]
    fn an_exact_name_beats_a_wildcard_and_the_longest_wildcard_wins() {
        let (exact, wide, narrow, none) = (
            matcher(&["api.example.com"], None),
            matcher(&["*.example.com"], None),
            matcher(&["*.eu.example.com"], None),
            matcher(&[], None),
        );
        let chains = [&exact, &wide, &narrow, &none];
        assert_eq!(choose_index(&chains, &seen(true, Some("api.example.com"))), Some(0));
        assert_eq!(choose_index(&chains, &seen(true, Some("www.example.com"))), Some(1));
        assert_eq!(choose_index(&chains, &seen(true, Some("a.eu.example.com"))), Some(2));
        assert_eq!(choose_index(&chains, &seen(true, Some("other.org"))), Some(3));
        assert_eq!(choose_index(&chains, &seen(false, None)), Some(3));
        assert_eq!(choose_index(&chains, &seen(true, Some("example.com"))), Some(3), "*.x does not cover x");
    }

    #[test]
    fn the_transport_protocol_splits_tls_from_plain() {
        let (tls, plain) = (matcher(&[], Some("tls")), matcher(&[], Some("raw_buffer")));
        let chains = [&tls, &plain];
        assert_eq!(choose_index(&chains, &seen(true, None)), Some(0));
        assert_eq!(choose_index(&chains, &seen(false, None)), Some(1));
        let only_tls = [&tls];
        assert_eq!(choose_index(&only_tls, &seen(false, None)), None, "no chain takes plain text");
    }

    #[test]
    fn a_client_hello_is_read_for_its_server_name() {
        // A ClientHello as rustls's client writes it.
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("Shop.Example.com").unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        assert!(matches!(client_hello(&hello), Hello::Complete(Some(ref sni)) if sni == "shop.example.com"));
        assert!(matches!(client_hello(&hello[..20]), Hello::Partial));
    }
}
