//! Route matching: virtual host by `:authority`, then the first route whose
//! path matcher accepts `:path`.

use std::sync::Arc;

use ferry_config::{PathMatch, Route, RouteAction, RouteConfig, VirtualHost};
use ferry_host::RouteFacts;

/// The routes of one connection manager.
pub struct RouteTable {
    virtual_hosts: Vec<VirtualHost>,
    /// Each route's facts for plugins (`xds.route_name`, ...), by virtual
    /// host and route index.
    facts: Vec<Vec<Arc<RouteFacts>>>,
}

impl RouteTable {
    /// Builds the table from `route_config`.
    pub fn new(config: &RouteConfig) -> Self {
        let virtual_hosts = config.virtual_hosts.clone();
        let facts = virtual_hosts
            .iter()
            .map(|host| host.routes.iter().map(|route| crate::xds::route(route, host)).collect())
            .collect();
        RouteTable { virtual_hosts, facts }
    }

    /// The action for a request, with the route's facts, if a virtual host
    /// and a route match.
    pub fn route(&self, authority: &[u8], path: &[u8]) -> Option<(&RouteAction, &Arc<RouteFacts>)> {
        let host = self.virtual_host(authority)?;
        let index = host.routes.iter().position(|r| path_matches(r, path))?;
        let host_index = self.virtual_hosts.iter().position(|h| std::ptr::eq(h, host))?;
        Some((&host.routes[index].action, &self.facts[host_index][index]))
    }

    /// Envoy's order: exact domain, then the longest `*.suffix`, then the
    /// longest `prefix.*`, then `*`. Domains compare without case, with and
    /// without the port.
    fn virtual_host(&self, authority: &[u8]) -> Option<&VirtualHost> {
        let host = String::from_utf8_lossy(authority).to_ascii_lowercase();
        let without_port = strip_port(&host);
        let candidates =
            || self.virtual_hosts.iter().flat_map(|vh| vh.domains.iter().map(move |d| (vh, d.to_ascii_lowercase())));
        if let Some((vh, _)) = candidates().find(|(_, d)| *d == host || d == without_port) {
            return Some(vh);
        }
        let best = |f: &dyn Fn(&str) -> Option<usize>| {
            candidates().filter_map(|(vh, d)| f(&d).map(|len| (len, vh))).max_by_key(|&(len, _)| len).map(|(_, vh)| vh)
        };
        let suffix = |d: &str| {
            let s = d.strip_prefix('*')?;
            (!s.is_empty() && (host.ends_with(s) || without_port.ends_with(s))).then_some(s.len())
        };
        if let Some(vh) = best(&suffix) {
            return Some(vh);
        }
        let prefix = |d: &str| {
            let p = d.strip_suffix('*')?;
            (!p.is_empty() && (host.starts_with(p) || without_port.starts_with(p))).then_some(p.len())
        };
        if let Some(vh) = best(&prefix) {
            return Some(vh);
        }
        self.virtual_hosts.iter().find(|vh| vh.domains.iter().any(|d| d == "*"))
    }
}

fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        // Not the colon of a bare IPv6 address.
        Some(i) if !host[i..].contains(']') && (host.starts_with('[') || host[..i].find(':').is_none()) => &host[..i],
        _ => host,
    }
}

fn path_matches(route: &Route, path: &[u8]) -> bool {
    let eq = |a: &[u8], b: &[u8]| if route.case_sensitive { a == b } else { a.eq_ignore_ascii_case(b) };
    match &route.matcher {
        PathMatch::Prefix(prefix) => path.len() >= prefix.len() && eq(&path[..prefix.len()], prefix.as_bytes()),
        PathMatch::Exact(exact) => {
            let without_query = path.split(|&b| b == b'?').next().unwrap_or(path);
            eq(without_query, exact.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route: path, whether it is a prefix, and the status it answers.
    type TestRoute<'a> = (&'a str, bool, u16);

    fn table(yaml_hosts: &[(&str, &[&str], &[TestRoute<'_>])]) -> RouteTable {
        let virtual_hosts = yaml_hosts
            .iter()
            .map(|(name, domains, routes)| VirtualHost {
                name: (*name).into(),
                domains: domains.iter().map(|d| (*d).into()).collect(),
                routes: routes
                    .iter()
                    .map(|&(m, prefix, status)| Route {
                        name: String::new(),
                        metadata: Default::default(),
                        matcher: if prefix { PathMatch::Prefix(m.into()) } else { PathMatch::Exact(m.into()) },
                        case_sensitive: true,
                        action: RouteAction::DirectResponse { status, body: None },
                    })
                    .collect(),
                metadata: Default::default(),
            })
            .collect();
        RouteTable::new(&RouteConfig { name: String::new(), virtual_hosts })
    }

    fn status(t: &RouteTable, host: &str, path: &str) -> Option<u16> {
        match t.route(host.as_bytes(), path.as_bytes())?.0 {
            RouteAction::DirectResponse { status, .. } => Some(*status),
            RouteAction::Cluster { .. } => None,
        }
    }

    #[test]
    fn first_matching_route_wins_and_exact_paths_ignore_the_query() {
        let t = table(&[("all", &["*"], &[("/exact", false, 201), ("/", true, 200)])]);
        assert_eq!(status(&t, "localhost:18000", "/exact?x=1"), Some(201));
        assert_eq!(status(&t, "localhost:18000", "/exactly"), Some(200));
        let none = table(&[("all", &["*"], &[("/api", true, 200)])]);
        assert_eq!(status(&none, "a", "/other"), None);
    }

    #[test]
    fn domains_exact_then_suffix_then_prefix_then_star() {
        let t = table(&[
            ("star", &["*"], &[("/", true, 1)]),
            ("prefix", &["api.*"], &[("/", true, 2)]),
            ("suffix", &["*.example.com"], &[("/", true, 3)]),
            ("exact", &["www.example.com"], &[("/", true, 4)]),
        ]);
        assert_eq!(status(&t, "www.example.com:8080", "/"), Some(4));
        assert_eq!(status(&t, "img.example.com", "/"), Some(3));
        assert_eq!(status(&t, "api.internal", "/"), Some(2));
        assert_eq!(status(&t, "other", "/"), Some(1));
    }
}
