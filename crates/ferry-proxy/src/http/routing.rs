//! What a matched route does to a request, on the plugins' header maps:
//! which cluster it goes to, how its path and host are rewritten, where a
//! redirect points, and the headers routes, virtual hosts and the route
//! configuration add and remove.

use std::borrow::Cow;

use ferry_config::{AppendAction, ClusterTarget, HeaderMutations, PathMatch, Pattern, Redirect, Route};
use ferry_host::HeaderMap;

/// The cluster a request goes to: named, chosen by weight, or named by a
/// request header (`None` when the header is absent).
pub(crate) fn choose_cluster<'a>(target: &'a ClusterTarget, headers: &HeaderMap) -> Option<Cow<'a, str>> {
    match target {
        ClusterTarget::Named(name) => Some(Cow::Borrowed(name)),
        ClusterTarget::Weighted(clusters) => {
            let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
            let mut pick = fastrand::u64(0..total);
            clusters.iter().find_map(|(name, weight)| match pick.checked_sub(u64::from(*weight)) {
                Some(rest) => {
                    pick = rest;
                    None
                }
                None => Some(Cow::Borrowed(name.as_str())),
            })
        }
        ClusterTarget::Header(name) => {
            headers.get(name.as_bytes()).map(|value| Cow::Owned(String::from_utf8_lossy(value).into_owned()))
        }
    }
}

/// The path with `prefix_rewrite` (the matched prefix, or the exact path,
/// replaced) or `regex_rewrite` (on the path, the query kept) applied.
pub(crate) fn rewrite_path(
    route: &Route,
    path: &str,
    prefix_rewrite: Option<&str>,
    regex_rewrite: Option<&(Pattern, String)>,
) -> Option<String> {
    if let Some(replacement) = prefix_rewrite {
        let matched = match &route.matcher {
            PathMatch::Prefix(prefix) | PathMatch::SeparatedPrefix(prefix) => prefix.len(),
            PathMatch::Exact(exact) => exact.len(),
            // Envoy allows prefix_rewrite only with prefix or path matches.
            PathMatch::Regex(_) => return None,
        };
        return Some(format!("{replacement}{}", path.get(matched..).unwrap_or_default()));
    }
    let (pattern, substitution) = regex_rewrite?;
    let (only_path, query) = match path.find('?') {
        Some(at) => (&path[..at], &path[at..]),
        None => (path, ""),
    };
    Some(format!("{}{query}", pattern.0.replace_all(only_path, substitution.as_str())))
}

/// The `location` of a redirect for a request to `authority` + `path`.
pub(crate) fn redirect_location(redirect: &Redirect, route: &Route, authority: &str, path: &str) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or("http");
    let host = redirect.host.as_deref().unwrap_or_else(|| strip_port(authority));
    let port = match redirect.port {
        Some(port) => format!(":{port}"),
        // The request's own port goes with its host, unless the scheme changed.
        None if redirect.host.is_none() && redirect.scheme.is_none() => {
            authority.strip_prefix(strip_port(authority)).unwrap_or_default().to_owned()
        }
        None => String::new(),
    };
    // The request's query goes with the new path, unless stripped or the
    // path_redirect brings its own.
    let query = match path.find('?') {
        Some(at) if !redirect.strip_query => &path[at..],
        _ => "",
    };
    let path = match &redirect.path {
        Some(new) if new.contains('?') => new.clone(),
        Some(new) => format!("{new}{query}"),
        None => {
            let rewritten =
                rewrite_path(route, path, redirect.prefix_rewrite.as_deref(), redirect.regex_rewrite.as_ref())
                    .unwrap_or_else(|| path.to_owned());
            match rewritten.find('?') {
                Some(at) if redirect.strip_query => rewritten[..at].to_owned(),
                _ => rewritten,
            }
        }
    };
    format!("{scheme}://{host}{port}{path}")
}

/// `host:port` → `host` (an IPv6 literal keeps its brackets).
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(at) if !authority[at..].contains(']') => &authority[..at],
        _ => authority,
    }
}

/// Applies the request header additions and removals of a route, then its
/// virtual host, then the route configuration (so the least specific
/// wins an overwrite, as Envoy's default).
pub(crate) fn mutate_request(headers: &mut HeaderMap, mutations: [&HeaderMutations; 3]) {
    for m in mutations {
        mutate(headers, &m.request_add, &m.request_remove);
    }
}

/// The same for the response headers.
pub(crate) fn mutate_response(headers: &mut HeaderMap, mutations: [&HeaderMutations; 3]) {
    for m in mutations {
        mutate(headers, &m.response_add, &m.response_remove);
    }
}

fn mutate(headers: &mut HeaderMap, add: &[ferry_config::HeaderToAdd], remove: &[String]) {
    for name in remove {
        headers.remove(name.as_bytes());
    }
    for header in add {
        if header.value.is_empty() && !header.keep_empty_value {
            continue;
        }
        let (name, value) = (header.name.as_bytes(), header.value.as_bytes());
        let present = headers.contains(name);
        match header.action {
            AppendAction::AppendIfExistsOrAdd => headers.add(name, value),
            AppendAction::AddIfAbsent if !present => headers.add(name, value),
            AppendAction::OverwriteIfExistsOrAdd => headers.replace(name, value),
            AppendAction::OverwriteIfExists if present => headers.replace(name, value),
            AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::{Forward, HeaderToAdd, RouteAction};

    fn route(matcher: PathMatch) -> Route {
        Route {
            name: String::new(),
            metadata: Default::default(),
            matcher,
            case_sensitive: true,
            headers: Vec::new(),
            query_parameters: Vec::new(),
            action: RouteAction::Forward(Box::new(Forward::to("c", None))),
            mutations: Default::default(),
        }
    }

    #[test]
    fn prefix_rewrites_replace_what_matched() {
        let exact = route(PathMatch::Exact("/a".into()));
        assert_eq!(rewrite_path(&exact, "/a?x=1", Some("/b"), None).as_deref(), Some("/b?x=1"));
        let prefix = route(PathMatch::Prefix("/api/".into()));
        assert_eq!(rewrite_path(&prefix, "/api/v1", Some("/"), None).as_deref(), Some("/v1"));
        assert_eq!(rewrite_path(&prefix, "/api/v1", None, None), None);
    }

    #[test]
    fn append_actions_as_envoy_defines_them() {
        let add = |name: &str, value: &str, action| HeaderToAdd {
            name: name.into(),
            value: value.into(),
            action,
            keep_empty_value: false,
        };
        let mutations = HeaderMutations {
            request_add: vec![
                add("a", "2", AppendAction::AppendIfExistsOrAdd),
                add("b", "2", AppendAction::AddIfAbsent),
                add("c", "2", AppendAction::OverwriteIfExists),
                add("d", "2", AppendAction::OverwriteIfExistsOrAdd),
                add("e", "", AppendAction::AppendIfExistsOrAdd),
            ],
            request_remove: vec!["gone".into()],
            ..HeaderMutations::default()
        };
        let mut headers = HeaderMap::new();
        for name in ["a", "b", "gone"] {
            headers.add(name.as_bytes(), b"1");
        }
        let none = HeaderMutations::default();
        mutate_request(&mut headers, [&mutations, &none, &none]);
        let all: Vec<(&[u8], &[u8])> = headers.iter().collect();
        assert_eq!(all, vec![(&b"a"[..], &b"1"[..]), (b"b", b"1"), (b"a", b"2"), (b"d", b"2")]);
    }
}
