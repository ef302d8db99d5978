//! `route_config`: virtual hosts, routes, how they match and what they do
//! (Envoy's `envoy.config.route.v3` messages), read into the model.

use serde::Deserialize;
use serde_norway::Value;

use crate::decode::{body_source, duration, err, join};
use crate::matchers::{RawHeaderMatcher, header_matcher, string_matcher, whole_match};
use crate::model::{
    AppendAction, Cluster, ClusterTarget, Forward, HeaderMutations, HeaderToAdd, PathMatch, Pattern,
    QueryParameterMatcher, Redirect, RetryPolicy, Route, RouteAction, RouteConfig, Upgrade, VirtualHost,
};
use crate::raw::{RawRegex, RawStringMatcher};
use crate::{ConfigError, raw};

/// Envoy's default cap on a direct response's body.
const DEFAULT_MAX_DIRECT_RESPONSE_BODY: u32 = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteConfiguration {
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    virtual_hosts: Vec<RawVirtualHost>,
    /// Envoy's cap on direct-response bodies (a `UInt32Value`; 4096 when unset).
    #[serde(default)]
    max_direct_response_body_size_bytes: Option<u32>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_headers_to_remove: Vec<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_headers_to_remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualHost {
    #[serde(default)]
    name: String,
    #[serde(deserialize_with = "crate::repeated::one_or_many")]
    domains: Vec<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    routes: Vec<RawRoute>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_headers_to_remove: Vec<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_headers_to_remove: Vec<String>,
}

/// `request_headers_to_add` and the rest, on routes, virtual hosts and
/// route configurations (each has the four fields; serde cannot flatten
/// them into a struct that denies unknown fields).
struct RawHeaderMutations {
    request_headers_to_add: Vec<RawHeaderValueOption>,
    request_headers_to_remove: Vec<String>,
    response_headers_to_add: Vec<RawHeaderValueOption>,
    response_headers_to_remove: Vec<String>,
}

/// Takes the four fields out of a route, virtual host or route configuration.
macro_rules! header_mutations {
    ($raw:expr) => {
        RawHeaderMutations {
            request_headers_to_add: $raw.request_headers_to_add,
            request_headers_to_remove: $raw.request_headers_to_remove,
            response_headers_to_add: $raw.response_headers_to_add,
            response_headers_to_remove: $raw.response_headers_to_remove,
        }
    };
}

/// `HeaderValueOption`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderValueOption {
    header: RawHeaderValue,
    #[serde(default)]
    append: Option<bool>,
    #[serde(default, deserialize_with = "crate::enums::append_action")]
    append_action: Option<String>,
    #[serde(default)]
    keep_empty_value: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderValue {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    name: String,
    #[serde(rename = "match")]
    matcher: RawRouteMatch,
    #[serde(default)]
    direct_response: Option<RawDirectResponse>,
    #[serde(default)]
    route: Option<RawRouteAction>,
    #[serde(default)]
    redirect: Option<RawRedirect>,
    #[serde(default)]
    metadata: Option<Value>,
    /// Tracing's operation name: ferry does not trace.
    #[serde(default)]
    #[allow(dead_code)]
    decorator: Option<serde::de::IgnoredAny>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_headers_to_remove: Vec<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_headers_to_remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteMatch {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    safe_regex: Option<RawRegex>,
    #[serde(default)]
    path_separated_prefix: Option<String>,
    #[serde(default)]
    case_sensitive: Option<bool>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    headers: Vec<RawHeaderMatcher>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    query_parameters: Vec<RawQueryParameterMatcher>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueryParameterMatcher {
    name: String,
    #[serde(default)]
    string_match: Option<RawStringMatcher>,
    #[serde(default)]
    present_match: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectResponse {
    status: u16,
    #[serde(default)]
    body: Option<raw::DataSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteAction {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    weighted_clusters: Option<RawWeightedClusters>,
    #[serde(default)]
    cluster_header: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    prefix_rewrite: Option<String>,
    #[serde(default)]
    regex_rewrite: Option<RawRegexRewrite>,
    #[serde(default)]
    host_rewrite_literal: Option<String>,
    #[serde(default)]
    auto_host_rewrite: Option<bool>,
    #[serde(default)]
    retry_policy: Option<RawRetryPolicy>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    upgrade_configs: Vec<RawRouteUpgrade>,
}

/// `RouteAction.UpgradeConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteUpgrade {
    upgrade_type: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    connect_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeightedClusters {
    #[serde(deserialize_with = "crate::repeated::one_or_many")]
    clusters: Vec<RawClusterWeight>,
    #[serde(default)]
    total_weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterWeight {
    name: String,
    #[serde(default)]
    weight: Option<u32>,
}

/// `RegexMatchAndSubstitute`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegexRewrite {
    pattern: RawRegex,
    substitution: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryPolicy {
    #[serde(default)]
    retry_on: Option<String>,
    #[serde(default)]
    num_retries: Option<u32>,
    #[serde(default)]
    per_try_timeout: Option<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    retriable_status_codes: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    #[serde(default)]
    https_redirect: Option<bool>,
    #[serde(default)]
    scheme_redirect: Option<String>,
    #[serde(default)]
    host_redirect: Option<String>,
    #[serde(default)]
    port_redirect: Option<u16>,
    #[serde(default)]
    path_redirect: Option<String>,
    #[serde(default)]
    prefix_rewrite: Option<String>,
    #[serde(default)]
    regex_rewrite: Option<RawRegexRewrite>,
    #[serde(default, deserialize_with = "crate::enums::redirect_response_code")]
    response_code: Option<String>,
    #[serde(default)]
    strip_query: bool,
}

/// The `retry_on` conditions ferry acts on.
const RETRY_ON: &[&str] =
    &["5xx", "gateway-error", "connect-failure", "reset", "retriable-4xx", "retriable-status-codes", "refused-stream"];

/// `route_config`.
pub(crate) fn route_config(raw: Value, path: &str, clusters: &[Cluster]) -> Result<RouteConfig, ConfigError> {
    let raw: RawRouteConfiguration = crate::decode::decode(raw, path)?;
    let max_body = raw.max_direct_response_body_size_bytes.unwrap_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY);
    let mut virtual_hosts = Vec::new();
    for (i, vh) in raw.virtual_hosts.into_iter().enumerate() {
        let vh_path = format!("{path}.virtual_hosts[{i}]");
        if vh.domains.is_empty() {
            return Err(err(join(&vh_path, "domains"), "at least one domain is required"));
        }
        let routes = vh
            .routes
            .into_iter()
            .enumerate()
            .map(|(j, r)| route(r, &format!("{vh_path}.routes[{j}]"), clusters, max_body))
            .collect::<Result<_, _>>()?;
        let metadata = crate::metadata::metadata(vh.metadata, &join(&vh_path, "metadata"))?;
        let headers = mutations(header_mutations!(vh), &vh_path)?;
        virtual_hosts.push(VirtualHost { name: vh.name, domains: vh.domains, routes, metadata, headers });
    }
    let headers = mutations(header_mutations!(raw), path)?;
    Ok(RouteConfig { name: raw.name, virtual_hosts, headers })
}

fn route(raw: RawRoute, path: &str, clusters: &[Cluster], max_body: u32) -> Result<Route, ConfigError> {
    let metadata = crate::metadata::metadata(raw.metadata, &join(path, "metadata"))?;
    let m = raw.matcher;
    let at_match = join(path, "match");
    let matchers = [
        m.prefix.map(PathMatch::Prefix),
        m.path.map(PathMatch::Exact),
        m.safe_regex
            .as_ref()
            .map(|re| whole_match(re, &join(&at_match, "safe_regex")).map(PathMatch::Regex))
            .transpose()?,
        m.path_separated_prefix.map(PathMatch::SeparatedPrefix),
    ];
    let mut given = matchers.into_iter().flatten();
    let (Some(matcher), None) = (given.next(), given.next()) else {
        return Err(err(at_match, "exactly one of prefix, path, safe_regex or path_separated_prefix is required"));
    };
    if let PathMatch::SeparatedPrefix(prefix) = &matcher
        && (!prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains(['?', '#']))
    {
        return Err(err(
            join(&at_match, "path_separated_prefix"),
            "must start with / and not end with /, without ? or #",
        ));
    }
    let headers = m
        .headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h, &format!("{at_match}.headers[{i}]")))
        .collect::<Result<_, _>>()?;
    let query_parameters = m
        .query_parameters
        .into_iter()
        .enumerate()
        .map(|(i, q)| query_parameter(q, &format!("{at_match}.query_parameters[{i}]")))
        .collect::<Result<_, _>>()?;
    let action = match (raw.direct_response, raw.route, raw.redirect) {
        (Some(d), None, None) => {
            if !(100..=599).contains(&d.status) {
                return Err(err(join(path, "direct_response.status"), "must be between 100 and 599"));
            }
            RouteAction::DirectResponse {
                status: d.status,
                body: d.body.map(|b| body_source(b, &join(path, "direct_response.body"), max_body)).transpose()?,
            }
        }
        (None, Some(r), None) => RouteAction::Forward(Box::new(forward(r, &join(path, "route"), clusters)?)),
        (None, None, Some(r)) => RouteAction::Redirect(redirect(r, &join(path, "redirect"))?),
        _ => return Err(err(path, "exactly one of route, redirect or direct_response is required")),
    };
    Ok(Route {
        name: raw.name,
        metadata,
        matcher,
        case_sensitive: m.case_sensitive.unwrap_or(true),
        headers,
        query_parameters,
        action,
        mutations: mutations(header_mutations!(raw), path)?,
    })
}

fn query_parameter(raw: RawQueryParameterMatcher, path: &str) -> Result<QueryParameterMatcher, ConfigError> {
    let value = match (raw.string_match, raw.present_match) {
        (Some(m), None) => Some(string_matcher(m, &join(path, "string_match"))?),
        (None, Some(true)) => None,
        _ => return Err(err(path, "give string_match, or present_match: true")),
    };
    Ok(QueryParameterMatcher { name: raw.name, value })
}

fn forward(raw: RawRouteAction, path: &str, clusters: &[Cluster]) -> Result<Forward, ConfigError> {
    let known = |name: &str, at: String| {
        if clusters.iter().any(|c| c.name == name) { Ok(()) } else { Err(err(at, format!("unknown cluster {name:?}"))) }
    };
    let target = match (raw.cluster, raw.weighted_clusters, raw.cluster_header) {
        (Some(name), None, None) => {
            known(&name, join(path, "cluster"))?;
            ClusterTarget::Named(name)
        }
        (None, Some(weighted), None) => {
            let at = join(path, "weighted_clusters");
            let mut targets = Vec::new();
            for (i, c) in weighted.clusters.into_iter().enumerate() {
                known(&c.name, format!("{at}.clusters[{i}].name"))?;
                targets.push((c.name, c.weight.unwrap_or(0)));
            }
            let total: u64 = targets.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                return Err(err(join(&at, "clusters"), "the weights must add up to more than 0"));
            }
            if let Some(expected) = weighted.total_weight
                && u64::from(expected) != total
            {
                return Err(err(join(&at, "total_weight"), format!("{expected}, but the weights add up to {total}")));
            }
            ClusterTarget::Weighted(targets)
        }
        (None, None, Some(header)) => ClusterTarget::Header(header.to_ascii_lowercase()),
        _ => return Err(err(path, "exactly one of cluster, weighted_clusters or cluster_header is required")),
    };
    let timeout = raw.timeout.map(|t| duration(&t, &join(path, "timeout"))).transpose()?;
    let idle_timeout = raw
        .idle_timeout
        .map(|t| duration(&t, &join(path, "idle_timeout")).map(|d| (!d.is_zero()).then_some(d)))
        .transpose()?;
    let regex_rewrite = raw.regex_rewrite.map(|r| rewrite(r, &join(path, "regex_rewrite"))).transpose()?;
    let retry = raw.retry_policy.map(|r| retry_policy(r, &join(path, "retry_policy"))).transpose()?;
    let mut upgrades = Vec::new();
    for (i, u) in raw.upgrade_configs.into_iter().enumerate() {
        let at = format!("{path}.upgrade_configs[{i}]");
        if u.connect_config.is_some() {
            return Err(err(join(&at, "connect_config"), "CONNECT is not supported"));
        }
        upgrades
            .push(Upgrade { upgrade_type: u.upgrade_type.to_ascii_lowercase(), enabled: u.enabled.unwrap_or(true) });
    }
    Ok(Forward {
        target,
        timeout,
        idle_timeout,
        prefix_rewrite: raw.prefix_rewrite,
        regex_rewrite,
        host_rewrite: raw.host_rewrite_literal,
        auto_host_rewrite: raw.auto_host_rewrite.unwrap_or(false),
        retry,
        upgrades,
    })
}

/// A `RegexMatchAndSubstitute`: Envoy's `\N` groups become the regex crate's `${N}`.
pub(crate) fn rewrite(raw: RawRegexRewrite, path: &str) -> Result<(Pattern, String), ConfigError> {
    let pattern = regex::Regex::new(&raw.pattern.regex)
        .map_err(|e| err(join(path, "pattern.regex"), format!("not a valid regular expression: {e}")))?;
    let substitution = raw.substitution.replace('$', "$$");
    let substitution = regex::Regex::new(r"\\(\d)").expect("valid").replace_all(&substitution, "$${$1}").into_owned();
    Ok((Pattern(pattern), substitution))
}

fn retry_policy(raw: RawRetryPolicy, path: &str) -> Result<RetryPolicy, ConfigError> {
    let retry_on: Vec<String> =
        raw.retry_on.unwrap_or_default().split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    if let Some(unknown) = retry_on.iter().find(|c| !RETRY_ON.contains(&c.as_str())) {
        return Err(err(
            join(path, "retry_on"),
            format!("{unknown:?} is not supported; ferry retries on {RETRY_ON:?}"),
        ));
    }
    Ok(RetryPolicy {
        retry_on,
        num_retries: raw.num_retries.unwrap_or(1),
        per_try_timeout: raw.per_try_timeout.map(|t| duration(&t, &join(path, "per_try_timeout"))).transpose()?,
        retriable_status_codes: raw.retriable_status_codes,
    })
}

fn redirect(raw: RawRedirect, path: &str) -> Result<Redirect, ConfigError> {
    let status = match raw.response_code.as_deref() {
        None | Some("MOVED_PERMANENTLY") => 301,
        Some("FOUND") => 302,
        Some("SEE_OTHER") => 303,
        Some("TEMPORARY_REDIRECT") => 307,
        Some("PERMANENT_REDIRECT") => 308,
        Some(other) => return Err(err(join(path, "response_code"), format!("{other} is not a redirect code"))),
    };
    let scheme = match (raw.https_redirect, raw.scheme_redirect) {
        (Some(true), None) => Some("https".to_owned()),
        (None | Some(false), scheme) => scheme.map(|s| s.to_ascii_lowercase()),
        (Some(true), Some(_)) => return Err(err(path, "give https_redirect or scheme_redirect, not both")),
    };
    let rewrites = [raw.path_redirect.is_some(), raw.prefix_rewrite.is_some(), raw.regex_rewrite.is_some()];
    if rewrites.iter().filter(|given| **given).count() > 1 {
        return Err(err(path, "give at most one of path_redirect, prefix_rewrite or regex_rewrite"));
    }
    Ok(Redirect {
        scheme,
        host: raw.host_redirect,
        port: raw.port_redirect,
        path: raw.path_redirect,
        prefix_rewrite: raw.prefix_rewrite,
        regex_rewrite: raw.regex_rewrite.map(|r| rewrite(r, &join(path, "regex_rewrite"))).transpose()?,
        status,
        strip_query: raw.strip_query,
    })
}

fn mutations(raw: RawHeaderMutations, path: &str) -> Result<HeaderMutations, ConfigError> {
    let add = |items: Vec<RawHeaderValueOption>, field: &str| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| header_to_add(item, &format!("{path}.{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let remove = |names: Vec<String>, field: &str| -> Result<Vec<String>, ConfigError> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
                    Err(err(format!("{path}.{field}[{i}]"), format!("{name:?} cannot be removed")))
                } else {
                    Ok(name.to_ascii_lowercase())
                }
            })
            .collect()
    };
    Ok(HeaderMutations {
        request_add: add(raw.request_headers_to_add, "request_headers_to_add")?,
        request_remove: remove(raw.request_headers_to_remove, "request_headers_to_remove")?,
        response_add: add(raw.response_headers_to_add, "response_headers_to_add")?,
        response_remove: remove(raw.response_headers_to_remove, "response_headers_to_remove")?,
    })
}

fn header_to_add(raw: RawHeaderValueOption, path: &str) -> Result<HeaderToAdd, ConfigError> {
    let action = match (raw.append_action.as_deref(), raw.append) {
        (Some(_), Some(_)) => return Err(err(path, "give append_action or append, not both")),
        (None | Some("APPEND_IF_EXISTS_OR_ADD"), None) | (None, Some(true)) => AppendAction::AppendIfExistsOrAdd,
        (Some("ADD_IF_ABSENT"), None) => AppendAction::AddIfAbsent,
        (Some("OVERWRITE_IF_EXISTS_OR_ADD"), None) | (None, Some(false)) => AppendAction::OverwriteIfExistsOrAdd,
        (Some("OVERWRITE_IF_EXISTS"), None) => AppendAction::OverwriteIfExists,
        (Some(other), None) => {
            return Err(err(join(path, "append_action"), format!("{other} is not an append action")));
        }
    };
    // Values may be command operators in Envoy (`%DOWNSTREAM_REMOTE_ADDRESS%`);
    // ferry adds values as written, so it refuses what would read as one.
    let value = raw.header.value;
    if value.replace("%%", "").contains('%') {
        return Err(err(
            join(path, "header.value"),
            "command operators in header values are not supported yet (write %% for a literal %)",
        ));
    }
    let name = raw.header.key.to_ascii_lowercase();
    if name.is_empty() || name.starts_with(':') || name == "host" {
        return Err(err(join(path, "header.key"), format!("{:?} cannot be added", raw.header.key)));
    }
    Ok(HeaderToAdd { name, value: value.replace("%%", "%"), action, keep_empty_value: raw.keep_empty_value })
}
