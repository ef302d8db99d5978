//! Route matching: virtual host by `:authority`, then the first route whose
//! path matcher accepts `:path`.

use std::sync::Arc;

use ferry_config::{HeaderMutations, PathMatch, Route, RouteAction, RouteConfig, VirtualHost};
use ferry_host::RouteFacts;

/// The routes of one connection manager.
pub struct RouteTable {
    virtual_hosts: Vec<VirtualHost>,
    /// Each route's facts for plugins (`xds.route_name`, ...), by virtual
    /// host and route index.
    facts: Vec<Vec<Arc<RouteFacts>>>,
    /// The route configuration's own header additions and removals.
    headers: HeaderMutations,
    /// No route rewrites, retries, redirects, chooses its cluster per
    /// request or changes headers: a request can go on as hyper parsed it.
    plain: bool,
    /// Some route sets its own `idle_timeout`.
    idle_timeouts: bool,
    /// Some route enables an upgrade.
    upgrades: bool,
    /// Each virtual host's domains, lower-cased once.
    domains: Vec<Vec<String>>,
    /// The virtual host every request gets when `*` is the only domain there is.
    catch_all: Option<usize>,
}

/// A request's route: the route, its virtual host and its facts.
#[derive(Clone, Copy)]
pub struct Matched<'a> {
    /// The virtual host's and the route's index, to find it again ([`RouteTable::at`]).
    pub index: (usize, usize),
    /// The route.
    pub route: &'a Route,
    /// Its virtual host.
    pub host: &'a VirtualHost,
    /// Its facts for plugins.
    pub facts: &'a Arc<RouteFacts>,
}

/// What a request offers to be matched: `:authority`, `:path`, and its
/// headers by lower-case name (repeated values joined with `,`).
pub trait RequestView {
    /// `:authority`.
    fn authority(&self) -> &[u8];
    /// `:path`, with the query.
    fn path(&self) -> &[u8];
    /// A header's values, joined with `,`.
    fn header(&self, name: &str) -> Option<String>;
}

/// A request as hyper parsed it (the fast path).
impl RequestView for http::request::Parts {
    fn authority(&self) -> &[u8] {
        self.headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .or_else(|| self.uri.authority().map(|a| a.as_str().as_bytes()))
            .unwrap_or_default()
    }

    fn path(&self) -> &[u8] {
        self.uri.path_and_query().map_or(b"/", |p| p.as_str().as_bytes())
    }

    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// The plugins' header map, pseudo-headers included.
impl RequestView for ferry_host::HeaderMap {
    fn authority(&self) -> &[u8] {
        self.get(b":authority").map_or(&b""[..], |v| v)
    }

    fn path(&self) -> &[u8] {
        self.get(b":path").map_or(&b""[..], |v| v)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.joined(name.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}

impl RouteTable {
    /// Builds the table from `route_config`.
    pub fn new(config: &RouteConfig) -> Self {
        let virtual_hosts = config.virtual_hosts.clone();
        let facts = virtual_hosts
            .iter()
            .map(|host| host.routes.iter().map(|route| crate::xds::route(route, host)).collect())
            .collect();
        let plain_route = |route: &Route| {
            route.mutations.is_empty()
                && match &route.action {
                    RouteAction::DirectResponse { .. } => true,
                    RouteAction::Forward(forward) => forward.plain_cluster().is_some(),
                    RouteAction::Redirect(_) => false,
                }
        };
        let plain = config.headers.is_empty()
            && virtual_hosts.iter().all(|host| host.headers.is_empty() && host.routes.iter().all(plain_route));
        let upgrades = virtual_hosts
            .iter()
            .flat_map(|h| &h.routes)
            .any(|r| matches!(&r.action, RouteAction::Forward(forward) if forward.upgrades.iter().any(|u| u.enabled)));
        let idle_timeouts = virtual_hosts
            .iter()
            .flat_map(|h| &h.routes)
            .any(|r| matches!(&r.action, RouteAction::Forward(forward) if forward.idle_timeout.is_some()));
        let domains: Vec<Vec<String>> =
            virtual_hosts.iter().map(|vh| vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect()).collect();
        let only_wildcards = domains.iter().flatten().all(|d| d == "*");
        let catch_all = only_wildcards.then(|| domains.iter().position(|d| !d.is_empty())).flatten();
        RouteTable {
            virtual_hosts,
            facts,
            headers: config.headers.clone(),
            plain,
            idle_timeouts,
            upgrades,
            domains,
            catch_all,
        }
    }

    /// Whether some route enables an upgrade (which it may, whatever the
    /// connection manager says).
    pub fn enables_upgrades(&self) -> bool {
        self.upgrades
    }

    /// Whether some route sets its own stream idle timeout.
    pub fn has_idle_timeouts(&self) -> bool {
        self.idle_timeouts
    }

    /// Whether every route sends requests on as they came (see [`RouteTable::new`]).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// The route for a request, if a virtual host and a route match.
    pub fn route(&self, request: &impl RequestView) -> Option<Matched<'_>> {
        let host_index = self.virtual_host(request.authority())?;
        let index = self.virtual_hosts[host_index].routes.iter().position(|r| route_matches(r, request))?;
        Some(self.at(host_index, index))
    }

    /// The route at an index a [`Matched`] gave.
    pub fn at(&self, host_index: usize, index: usize) -> Matched<'_> {
        let host = &self.virtual_hosts[host_index];
        Matched { index: (host_index, index), route: &host.routes[index], host, facts: &self.facts[host_index][index] }
    }

    /// The header mutations for a route, in the order Envoy applies them:
    /// the route's, its virtual host's, the route configuration's.
    pub fn mutations<'a>(&'a self, matched: &Matched<'a>) -> [&'a HeaderMutations; 3] {
        [&matched.route.mutations, &matched.host.headers, &self.headers]
    }

    /// Envoy's order: exact domain, then the longest `*.suffix`, then the
    /// longest `prefix.*`, then `*`. Domains compare without case, with and
    /// without the port.
    fn virtual_host(&self, authority: &[u8]) -> Option<usize> {
        if let Some(vh) = self.catch_all {
            return Some(vh);
        }
        let host = authority;
        let without_port = std::str::from_utf8(host).map_or(host, |h| strip_port(h).as_bytes());
        let candidates =
            || self.domains.iter().enumerate().flat_map(|(i, ds)| ds.iter().map(move |d| (i, d.as_bytes())));
        if let Some((vh, _)) =
            candidates().find(|(_, d)| d.eq_ignore_ascii_case(host) || d.eq_ignore_ascii_case(without_port))
        {
            return Some(vh);
        }
        let best = |f: &dyn Fn(&[u8]) -> Option<usize>| {
            candidates().filter_map(|(vh, d)| f(d).map(|len| (len, vh))).max_by_key(|&(len, _)| len).map(|(_, vh)| vh)
        };
        let ends = |h: &[u8], s: &[u8]| h.len() >= s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s);
        let starts = |h: &[u8], p: &[u8]| h.len() >= p.len() && h[..p.len()].eq_ignore_ascii_case(p);
        let suffix = |d: &[u8]| {
            let s = d.strip_prefix(b"*")?;
            (!s.is_empty() && (ends(host, s) || ends(without_port, s))).then_some(s.len())
        };
        if let Some(vh) = best(&suffix) {
            return Some(vh);
        }
        let prefix = |d: &[u8]| {
            let p = d.strip_suffix(b"*")?;
            (!p.is_empty() && (starts(host, p) || starts(without_port, p))).then_some(p.len())
        };
        if let Some(vh) = best(&prefix) {
            return Some(vh);
        }
        self.domains.iter().position(|ds| ds.iter().any(|d| d == "*"))
    }
}

fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        // Not the colon of a bare IPv6 address.
        Some(i) if !host[i..].contains(']') && (host.starts_with('[') || host[..i].find(':').is_none()) => &host[..i],
        _ => host,
    }
}

/// The path, the headers and the query parameters all match.
fn route_matches(route: &Route, request: &impl RequestView) -> bool {
    path_matches(route, request.path())
        && route.headers.iter().all(|m| m.matches(request.header(&m.name).as_deref()))
        && (route.query_parameters.is_empty() || query_matches(route, request.path()))
}

fn path_matches(route: &Route, path: &[u8]) -> bool {
    let eq = |a: &[u8], b: &[u8]| if route.case_sensitive { a == b } else { a.eq_ignore_ascii_case(b) };
    let without_query = path.split(|&b| b == b'?').next().unwrap_or(path);
    match &route.matcher {
        PathMatch::Prefix(prefix) => path.len() >= prefix.len() && eq(&path[..prefix.len()], prefix.as_bytes()),
        PathMatch::Exact(exact) => eq(without_query, exact.as_bytes()),
        PathMatch::Regex(pattern) => std::str::from_utf8(without_query).is_ok_and(|p| pattern.0.is_match(p)),
        PathMatch::SeparatedPrefix(prefix) => {
            let n = prefix.len();
            without_query.len() >= n
                && eq(&without_query[..n], prefix.as_bytes())
                && matches!(without_query.get(n), None | Some(b'/'))
        }
    }
}

/// Every `query_parameters` matcher finds its parameter (the first of that name).
fn query_matches(route: &Route, path: &[u8]) -> bool {
    let query = path.splitn(2, |&b| b == b'?').nth(1).unwrap_or_default();
    let query = query.split(|&b| b == b'#').next().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    route.query_parameters.iter().all(|m| {
        pairs
            .iter()
            .find(|(name, _)| *name == m.name)
            .is_some_and(|(_, value)| m.value.as_ref().is_none_or(|test| test.accepts(value)))
    })
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
                        headers: Vec::new(),
                        query_parameters: Vec::new(),
                        action: RouteAction::DirectResponse { status, body: None },
                        mutations: Default::default(),
                    })
                    .collect(),
                metadata: Default::default(),
                headers: Default::default(),
            })
            .collect();
        RouteTable::new(&RouteConfig { name: String::new(), virtual_hosts, headers: Default::default() })
    }

    fn status(t: &RouteTable, host: &str, path: &str) -> Option<u16> {
        let mut request = ferry_host::HeaderMap::new();
        request.add(b":authority", host.as_bytes());
        request.add(b":path", path.as_bytes());
        match &t.route(&request)?.route.action {
            RouteAction::DirectResponse { status, .. } => Some(*status),
            _ => None,
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
