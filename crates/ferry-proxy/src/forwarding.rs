//! Who the client is, as Envoy's connection manager decides it from the
//! peer and `x-forwarded-for`: the trusted client address (what plugins
//! read as `source.address` and access logs as the downstream address),
//! whether the request is internal, and the headers that follow from it.
//!
//! - `use_remote_address: true`: the peer is appended to `x-forwarded-for`;
//!   the trusted client is the peer, or with `xff_num_trusted_hops: N` the
//!   N-th address from the right of the header as it came.
//! - `use_remote_address: false` (the default): the header is left as it
//!   is; the trusted client is its (N+1)-th address from the right.
//!
//! Either way, too few addresses fall back to the peer. A request is
//! internal when it carries exactly one forwarded address (the peer's,
//! with `use_remote_address`), and that address is loopback, RFC 1918 or
//! RFC 4193: it gets `x-envoy-internal: true`. Any other request loses the
//! `x-envoy-*` headers only internal clients may set, and with
//! `use_remote_address` gets `x-envoy-external-address`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

/// The connection manager's settings for it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Forwarding {
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
}

/// Headers that steer Envoy's router, which only internal clients may send.
const INTERNAL_ONLY: [&str; 16] = [
    "x-envoy-internal",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-ip-tags",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-is-timeout-retry",
    "x-envoy-force-trace",
    "x-envoy-external-address",
];

/// Parsed once, not on every request.
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Headers only an edge proxy removes (`use_remote_address`).
const EDGE_ONLY: [&str; 3] =
    ["x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node"];

impl Forwarding {
    /// Changes a request's headers as Envoy's connection manager does;
    /// returns the trusted client address (port 0 when it came from
    /// `x-forwarded-for`, as in Envoy).
    pub(crate) fn apply(&self, headers: &mut http::HeaderMap, peer: SocketAddr) -> SocketAddr {
        let forwarded: Vec<String> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        let from_right = |n: usize| -> Option<SocketAddr> {
            let index = forwarded.len().checked_sub(n)?;
            forwarded.get(index)?.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
        };
        let hops = self.xff_num_trusted_hops as usize;
        let (trusted, single) = if self.use_remote_address {
            let trusted = if hops == 0 { Some(peer) } else { from_right(hops) };
            let appended = match forwarded.is_empty() {
                true => peer.ip().to_string(),
                false => format!("{}, {}", forwarded.join(", "), peer.ip()),
            };
            if let Ok(value) = HeaderValue::from_str(&appended) {
                headers.insert(X_FORWARDED_FOR, value);
            }
            (trusted.unwrap_or(peer), forwarded.is_empty())
        } else {
            (from_right(hops + 1).unwrap_or(peer), forwarded.len() == 1)
        };
        if single && is_internal(trusted.ip()) {
            headers.insert("x-envoy-internal", HeaderValue::from_static("true"));
            return trusted;
        }
        // Most requests carry no `x-envoy-*` header: one look at the names
        // spares every request the removals.
        let any_envoy_header = headers.keys().any(|name| name.as_str().starts_with("x-envoy-"));
        if any_envoy_header {
            let edge = if self.use_remote_address { &EDGE_ONLY[..] } else { &[] };
            for name in INTERNAL_ONLY.iter().chain(edge) {
                headers.remove(*name);
            }
        }
        if self.use_remote_address
            && let Ok(value) = HeaderValue::from_str(&trusted.ip().to_string())
        {
            headers.insert("x-envoy-external-address", value);
        }
        trusted
    }
}

/// Loopback, RFC 1918 and RFC 4193 (unique local) addresses.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(v4.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(
        forwarding: Forwarding,
        xff: Option<&str>,
        peer: &str,
        extra: &[(&str, &str)],
    ) -> (http::HeaderMap, SocketAddr) {
        let mut headers = http::HeaderMap::new();
        if let Some(xff) = xff {
            headers.insert("x-forwarded-for", xff.parse().unwrap());
        }
        for (name, value) in extra {
            headers.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let trusted = forwarding.apply(&mut headers, peer.parse().unwrap());
        (headers, trusted)
    }

    const EDGE: Forwarding = Forwarding { use_remote_address: true, xff_num_trusted_hops: 0 };

    #[test]
    fn an_edge_proxy_appends_the_peer_and_trusts_it() {
        let (headers, trusted) = apply(EDGE, Some("192.0.2.10"), "203.0.113.128:5000", &[("x-envoy-retry-on", "5xx")]);
        assert_eq!(headers["x-forwarded-for"], "192.0.2.10, 203.0.113.128");
        assert_eq!(trusted, "203.0.113.128:5000".parse().unwrap());
        assert_eq!(headers["x-envoy-external-address"], "203.0.113.128");
        assert!(headers.get("x-envoy-retry-on").is_none(), "an external client cannot steer retries");
    }

    #[test]
    fn trusted_hops_count_from_the_right() {
        let hops = Forwarding { use_remote_address: true, xff_num_trusted_hops: 1 };
        let (_, trusted) = apply(hops, Some("192.0.2.10, 203.0.113.1"), "203.0.113.128:5000", &[]);
        assert_eq!(trusted.ip().to_string(), "203.0.113.1");
        let behind = Forwarding { use_remote_address: false, xff_num_trusted_hops: 1 };
        let (headers, trusted) = apply(behind, Some("192.0.2.10, 203.0.113.1"), "10.0.0.1:80", &[]);
        assert_eq!(trusted.ip().to_string(), "192.0.2.10");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.10, 203.0.113.1", "left as it came");
        let (_, trusted) = apply(behind, Some("192.0.2.10"), "10.0.0.1:80", &[]);
        assert_eq!(trusted, "10.0.0.1:80".parse().unwrap(), "too few addresses: the peer");
    }

    #[test]
    fn a_single_internal_address_makes_an_internal_request() {
        let (headers, _) = apply(EDGE, None, "127.0.0.1:4000", &[("x-envoy-retry-on", "5xx")]);
        assert_eq!(headers["x-envoy-internal"], "true");
        assert_eq!(headers["x-envoy-retry-on"], "5xx", "an internal client may steer the router");
        assert!(headers.get("x-envoy-external-address").is_none());
        let (headers, _) = apply(Forwarding::default(), Some("10.1.2.3"), "127.0.0.1:4000", &[]);
        assert_eq!(headers["x-envoy-internal"], "true");
        let (headers, _) =
            apply(Forwarding::default(), Some("8.8.8.8"), "127.0.0.1:4000", &[("x-envoy-internal", "true")]);
        assert!(headers.get("x-envoy-internal").is_none(), "a client cannot claim to be internal");
        assert!(headers.get("x-envoy-external-address").is_none(), "only an edge proxy says who is external");
    }
}
