//! What `/stats` and `/stats/prometheus` report: every stat collected once
//! into one list, then written in Envoy's text, JSON or Prometheus form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ferry_host::{HistogramValue, MetricValue, sanitize_stat_name};
use serde_json::{Value, json};

use super::Admin;

/// Envoy's namespace for plugin-defined metrics: shown in `/stats`, and
/// stripped (with no `envoy_` prefix) in Prometheus output, as Envoy does.
const CUSTOM_NAMESPACE: &str = "wasmcustom.";

/// The quantiles Envoy reports for histograms in `/stats`.
const QUANTILES: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// One stat: its full name, the name with its tags taken out, and the tags.
pub(super) struct Stat {
    pub name: String,
    pub tag_extracted_name: String,
    pub tags: Vec<(String, String)>,
    pub value: MetricValue,
}

impl Stat {
    fn plain(name: String, value: MetricValue) -> Stat {
        Stat { tag_extracted_name: name.clone(), name, tags: Vec::new(), value }
    }

    /// Whether it ever changed: Envoy's `usedonly`.
    fn used(&self) -> bool {
        match &self.value {
            MetricValue::Counter(value) => *value > 0,
            MetricValue::Gauge(value) => *value != 0,
            MetricValue::Histogram(h) => h.count > 0,
        }
    }
}

/// Every stat of the process, sorted by name.
pub(super) fn collect(admin: &Admin) -> Vec<Stat> {
    let mut stats = Vec::new();
    let gauge = |name: &str, value: i64| Stat::plain(name.to_owned(), MetricValue::Gauge(value));
    let draining = admin.health_check_failed.get();
    stats.push(gauge("server.live", i64::from(!draining)));
    // Envoy's encoding: 0 live, 1 draining.
    stats.push(gauge("server.state", i64::from(draining)));
    stats.push(gauge("server.uptime", admin.started.elapsed().as_secs() as i64));
    stats.push(gauge("server.concurrency", admin.concurrency as i64));
    let memory = super::memory::Memory::read();
    stats.push(gauge("server.memory_allocated", memory.allocated as i64));
    stats.push(gauge("server.memory_heap_size", memory.heap_size as i64));
    stats.push(gauge("server.memory_physical_size", memory.physical as i64));
    let active =
        |l: &crate::envoy_stats::ListenerStats| l.downstream_cx_active.load(std::sync::atomic::Ordering::Relaxed);
    stats.push(gauge("server.total_connections", admin.listener_stats.iter().map(|(_, l)| active(l)).sum()));
    // Per listener, named by its address as Envoy names it (`127.0.0.1_10000`).
    for (address, listener) in &admin.listener_stats {
        stats.extend(listener_stats(*address, listener));
    }

    let queues = admin.host.shared_queues();
    let totals = queues.totals();
    for (name, value) in [
        ("enqueued", totals.enqueued),
        ("dequeued", totals.dequeued),
        ("dropped", totals.dropped),
        ("refused", totals.refused),
    ] {
        stats.push(Stat::plain(format!("ferry.shared_queue.{name}"), MetricValue::Counter(value)));
    }
    stats.push(gauge("ferry.shared_queue.waiting", totals.waiting as i64));
    // Each queue by vm_id and name, both chosen by plugins.
    for queue in queues.stats() {
        let (vm_id, name) = (sanitize_stat_name(&queue.vm_id), sanitize_stat_name(&queue.name));
        let c = queue.counts;
        for (stat, value) in [
            ("depth", MetricValue::Gauge(queue.depth as i64)),
            ("bytes", MetricValue::Gauge(queue.bytes as i64)),
            ("enqueued", MetricValue::Counter(c.enqueued)),
            ("dequeued", MetricValue::Counter(c.dequeued)),
            ("dropped", MetricValue::Counter(c.dropped)),
            ("refused", MetricValue::Counter(c.refused)),
        ] {
            stats.push(Stat {
                name: format!("ferry.shared_queue.{vm_id}.{name}.{stat}"),
                tag_extracted_name: format!("ferry.shared_queue.{stat}"),
                tags: vec![("vm_id".to_owned(), vm_id.clone()), ("queue".to_owned(), name.clone())],
                value,
            });
        }
    }
    if let Some(bridges) = &admin.bridges {
        stats.push(gauge("ferry.queue_bridge.broker_connected", i64::from(bridges.connected())));
        for queue in bridges.stats() {
            let (vm_id, name) = (sanitize_stat_name(&queue.vm_id), sanitize_stat_name(&queue.name));
            let c = queue.counts;
            for (stat, value) in [
                ("published", MetricValue::Counter(c.published)),
                ("acked", MetricValue::Counter(c.acked)),
                ("retried", MetricValue::Counter(c.retried)),
                ("waiting", MetricValue::Gauge(c.waiting as i64)),
                ("dropped", MetricValue::Counter(c.dropped)),
                ("refused", MetricValue::Counter(c.refused)),
                ("fetched", MetricValue::Counter(c.fetched)),
                ("delivered", MetricValue::Counter(c.delivered)),
                ("redelivered", MetricValue::Counter(c.redelivered)),
                ("duplicates", MetricValue::Counter(c.duplicates)),
                ("returned", MetricValue::Counter(c.returned)),
                ("held", MetricValue::Gauge(c.held as i64)),
            ] {
                stats.push(Stat {
                    name: format!("ferry.queue_bridge.{vm_id}.{name}.{stat}"),
                    tag_extracted_name: format!("ferry.queue_bridge.{stat}"),
                    tags: vec![("vm_id".to_owned(), vm_id.clone()), ("queue".to_owned(), name.clone())],
                    value,
                });
            }
        }
    }
    // Each plugin's failures and restarts, as Envoy's `wasm.<plugin>.*`
    // (plugins configured twice under one name are summed).
    let mut by_plugin: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for plugin in &admin.plugins {
        for (name, value) in plugin.stats.snapshot() {
            *by_plugin.entry((sanitize_stat_name(plugin.display_name()), name)).or_default() += value;
        }
    }
    for ((plugin, name), value) in by_plugin {
        stats.push(Stat {
            name: format!("wasm.{plugin}.{name}"),
            tag_extracted_name: format!("wasm.{name}"),
            tags: vec![("plugin".to_owned(), plugin)],
            value: MetricValue::Counter(value),
        });
    }
    // Envoy's own: per connection manager and per cluster, tagged as
    // Envoy's default tag extractors tag them.
    for (prefix, http) in &admin.http_stats {
        stats.extend(http_stats(prefix, http));
    }
    for (cluster, hosts) in admin.clusters.stats() {
        let membership = Membership {
            total: hosts.len(),
            healthy: hosts.healthy_count(),
            ejected: hosts.ejected_count(),
            breakers_open: hosts.breakers_open(),
        };
        stats.extend(cluster_stats(cluster, &hosts.stats, &membership));
    }
    // Plugin-defined metrics (names sanitised when defined).
    for (name, metric) in admin.host.metrics().snapshot() {
        stats.push(Stat::plain(format!("{CUSTOM_NAMESPACE}{name}"), metric.value()));
    }
    for stat in &mut stats {
        extract_tags(stat, &admin.stats_tags);
    }
    stats.sort_by(|a, b| a.name.cmp(&b.name));
    stats
}

/// The stats of one group (`each` of an `envoy_stats!` struct) under
/// `<scope>.<name>.`, tagged as Envoy's default tag extractors tag them.
fn group_stats(
    scope: &str,
    name: &str,
    tag: &(String, String),
    each: impl FnOnce(&mut dyn FnMut(crate::envoy_stats::StatName<'_>, MetricValue)),
) -> Vec<Stat> {
    use crate::envoy_stats::StatName;
    let mut stats = Vec::new();
    each(&mut |stat, value| {
        stats.push(match stat {
            StatName::Plain(stat) => Stat {
                name: format!("{scope}.{name}.{stat}"),
                tag_extracted_name: format!("{scope}.{stat}"),
                tags: vec![tag.clone()],
                value,
            },
            StatName::Class(stat, class) => Stat {
                name: format!("{scope}.{name}.{stat}_{class}xx"),
                tag_extracted_name: format!("{scope}.{stat}_xx"),
                tags: vec![("envoy_response_code_class".to_owned(), class.to_string()), tag.clone()],
                value,
            },
            StatName::Filter(prefix, stat) => {
                let prefix = sanitize_stat_name(prefix);
                Stat {
                    name: format!("{scope}.{name}.{prefix}.{stat}"),
                    tag_extracted_name: format!("{scope}.{prefix}.{stat}"),
                    tags: vec![tag.clone()],
                    value,
                }
            }
        })
    });
    stats
}

/// `listener.<address>.*` of one listener, named by its address as Envoy
/// names it (`127.0.0.1_10000`).
fn listener_stats(address: std::net::SocketAddr, listener: &crate::envoy_stats::ListenerStats) -> Vec<Stat> {
    let address = sanitize_stat_name(&format!("{}_{}", address.ip(), address.port()));
    let tag = ("envoy_listener_address".to_owned(), address.clone());
    group_stats("listener", &address, &tag, |f| listener.each(f))
}

/// `http.<stat_prefix>.*` of one connection manager, its filters' counters included.
fn http_stats(prefix: &str, http: &crate::envoy_stats::HttpStats) -> Vec<Stat> {
    let prefix = sanitize_stat_name(prefix);
    let tag = ("envoy_http_conn_manager_prefix".to_owned(), prefix.clone());
    group_stats("http", &prefix, &tag, |f| http.each(f))
}

/// What a cluster's endpoints are at the moment, for its gauges.
struct Membership {
    total: usize,
    healthy: usize,
    ejected: usize,
    /// `rq_open`, `cx_open`, `rq_pending_open`, `rq_retry_open`.
    breakers_open: [bool; 4],
}

/// `cluster.<name>.*` of one cluster: its counters, and gauges of its endpoints.
fn cluster_stats(cluster: &str, counters: &crate::envoy_stats::ClusterStats, hosts: &Membership) -> Vec<Stat> {
    let cluster = sanitize_stat_name(cluster);
    let tag = ("envoy_cluster_name".to_owned(), cluster.clone());
    let gauge = |n: usize| MetricValue::Gauge(n as i64);
    let open = |i: usize| MetricValue::Gauge(i64::from(hosts.breakers_open[i]));
    group_stats("cluster", &cluster, &tag, |f| {
        counters.each(f);
        use crate::envoy_stats::StatName::Plain;
        f(Plain("membership_total"), gauge(hosts.total));
        f(Plain("membership_healthy"), gauge(hosts.healthy));
        f(Plain("health_check.healthy"), gauge(hosts.healthy));
        f(Plain("outlier_detection.ejections_active"), gauge(hosts.ejected));
        f(Plain("circuit_breakers.default.rq_open"), open(0));
        f(Plain("circuit_breakers.default.cx_open"), open(1));
        f(Plain("circuit_breakers.default.rq_pending_open"), open(2));
        f(Plain("circuit_breakers.default.rq_retry_open"), open(3));
    })
}

/// A `stats_config.stats_tags` rule, ready to apply.
pub(crate) enum TagRule {
    /// The first capture group comes out of the name; the second (else the
    /// first) is the value.
    Regex { name: String, regex: regex::Regex },
    /// Every stat gets the tag.
    Fixed { name: String, value: String },
}

impl TagRule {
    /// From the configuration (whose regexes were checked to compile).
    pub(crate) fn new(tag: &ferry_config::StatsTag) -> TagRule {
        match &tag.value {
            ferry_config::TagValue::Regex(regex) => TagRule::Regex {
                name: tag.name.clone(),
                regex: regex::Regex::new(regex).expect("checked when the configuration was read"),
            },
            ferry_config::TagValue::Fixed(value) => TagRule::Fixed { name: tag.name.clone(), value: value.clone() },
        }
    }
}

/// Applies each rule in order to the stat's tag-extracted name (ferry's
/// own tags are already taken out), as Envoy's tag extraction does.
fn extract_tags(stat: &mut Stat, rules: &[TagRule]) {
    for rule in rules {
        match rule {
            TagRule::Fixed { name, value } => stat.tags.push((name.clone(), value.clone())),
            TagRule::Regex { name, regex } => {
                let Some(captures) = regex.captures(&stat.tag_extracted_name) else { continue };
                let (Some(remove), Some(value)) = (captures.get(1), captures.get(2).or_else(|| captures.get(1))) else {
                    continue;
                };
                let value = value.as_str().to_owned();
                let range = remove.range();
                stat.tag_extracted_name.replace_range(range, "");
                stat.tags.push((name.clone(), value));
            }
        }
    }
}

/// Which stats a request asked for: `filter=<regex>` on the name, `usedonly`.
pub(super) struct Selection {
    filter: Option<regex::Regex>,
    used_only: bool,
}

impl Selection {
    /// From the query's parameters.
    ///
    /// # Errors
    /// The message for a bad `filter` regex.
    pub fn new(params: &[(String, String)]) -> Result<Selection, String> {
        let filter = params
            .iter()
            .find(|(k, _)| k == "filter")
            .map(|(_, v)| regex::Regex::new(v).map_err(|e| format!("Invalid regex: {e}")))
            .transpose()?;
        Ok(Selection { filter, used_only: params.iter().any(|(k, _)| k == "usedonly") })
    }

    pub fn keeps(&self, stat: &Stat) -> bool {
        (!self.used_only || stat.used()) && self.filter.as_ref().is_none_or(|f| f.is_match(&stat.name))
    }
}

/// Envoy's text form: `name: value` for counters and gauges, then each
/// histogram's quantiles.
pub(super) fn text(stats: &[Stat]) -> String {
    let mut out = String::new();
    for stat in stats {
        match &stat.value {
            MetricValue::Counter(v) => writeln!(out, "{}: {v}", stat.name),
            MetricValue::Gauge(v) => writeln!(out, "{}: {v}", stat.name),
            MetricValue::Histogram(_) => Ok(()),
        }
        .expect("writing to a String");
    }
    for stat in stats {
        if let MetricValue::Histogram(h) = &stat.value {
            let values = match quantiles(h) {
                None => "No recorded values".to_owned(),
                Some(values) => {
                    QUANTILES.iter().zip(values).map(|(q, v)| format!("P{q}({v},{v})")).collect::<Vec<_>>().join(" ")
                }
            };
            writeln!(out, "{}: {values}", stat.name).expect("writing to a String");
        }
    }
    out
}

/// Envoy's `?format=json`: `{"stats": [{"name", "value"}, ..., {"histograms": ...}]}`.
pub(super) fn json(stats: &[Stat]) -> String {
    let mut items: Vec<Value> = stats
        .iter()
        .filter_map(|stat| match &stat.value {
            MetricValue::Counter(v) => Some(json!({ "name": stat.name, "value": v })),
            MetricValue::Gauge(v) => Some(json!({ "name": stat.name, "value": v })),
            MetricValue::Histogram(_) => None,
        })
        .collect();
    let computed: Vec<Value> = stats
        .iter()
        .filter_map(|stat| match &stat.value {
            MetricValue::Histogram(h) => {
                let values = quantiles(h).map_or_else(
                    || QUANTILES.iter().map(|_| json!({ "interval": null, "cumulative": null })).collect(),
                    |values| values.iter().map(|v| json!({ "interval": v, "cumulative": v })).collect::<Vec<_>>(),
                );
                Some(json!({ "name": stat.name, "values": values }))
            }
            _ => None,
        })
        .collect();
    if !computed.is_empty() {
        items.push(json!({ "histograms": { "supported_quantiles": QUANTILES, "computed_quantiles": computed } }));
    }
    let mut out = serde_json::to_string_pretty(&json!({ "stats": items })).expect("JSON values serialize");
    out.push('\n');
    out
}

/// The Prometheus text exposition format, named as Envoy names it:
/// `envoy_` and the tag-extracted name with `[^a-zA-Z0-9_]` as `_`, tags as
/// labels; plugin metrics without the namespace and without `envoy_`.
pub(super) fn prometheus(stats: &[Stat]) -> String {
    // One family per name, each with its type line once.
    let mut families: BTreeMap<String, Vec<&Stat>> = BTreeMap::new();
    for stat in stats {
        if let Some(name) = prometheus_name(&stat.tag_extracted_name) {
            families.entry(name).or_default().push(stat);
        }
    }
    let mut out = String::new();
    for (name, members) in families {
        let kind = match members[0].value {
            MetricValue::Counter(_) => "counter",
            MetricValue::Gauge(_) => "gauge",
            MetricValue::Histogram(_) => "histogram",
        };
        writeln!(out, "# TYPE {name} {kind}").expect("writing to a String");
        for stat in members {
            let labels = labels(&stat.tags);
            // `{}` when there are no labels is left out (equivalent in the format).
            let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            match &stat.value {
                MetricValue::Counter(v) => writeln!(out, "{name}{braced} {v}"),
                MetricValue::Gauge(v) => writeln!(out, "{name}{braced} {v}"),
                MetricValue::Histogram(h) => {
                    let sep = if labels.is_empty() { "" } else { "," };
                    for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
                        writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}").expect("String");
                    }
                    writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count).expect("String");
                    writeln!(out, "{name}_sum{braced} {}", h.sum).expect("String");
                    writeln!(out, "{name}_count{braced} {}", h.count)
                }
            }
            .expect("writing to a String");
        }
    }
    out
}

/// A stat's Prometheus name, or `None` for a plugin metric whose name is
/// empty or starts with a digit once sanitised (Envoy leaves those out).
fn prometheus_name(tag_extracted_name: &str) -> Option<String> {
    let sanitize = |name: &str| -> String {
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
    };
    match tag_extracted_name.strip_prefix(CUSTOM_NAMESPACE) {
        Some(custom) => {
            let name = sanitize(custom);
            (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
        }
        None => Some(format!("envoy_{}", sanitize(tag_extracted_name))),
    }
}

/// `name="value",...` with values escaped as the Prometheus text format asks.
fn labels(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(name, value)| {
            let value = value.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"");
            format!("{name}=\"{value}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// [`QUANTILES`] of a histogram, estimated from its buckets (linear within
/// a bucket, clamped to the smallest and largest value seen); `None` when
/// nothing was recorded.
fn quantiles(h: &HistogramValue) -> Option<Vec<f64>> {
    let (min, max) = h.range?;
    let (min, max) = (min as f64, max as f64);
    let values = QUANTILES.iter().map(|q| {
        let rank = q / 100.0 * h.count as f64;
        let mut below = 0u64;
        let mut lower = min;
        for (bound, &cumulative) in h.bounds.iter().zip(&h.cumulative) {
            if cumulative as f64 >= rank && cumulative > below {
                let upper = bound.min(max);
                let share = (rank - below as f64) / (cumulative - below) as f64;
                return (lower + share.clamp(0.0, 1.0) * (upper - lower)).clamp(min, max);
            }
            below = cumulative;
            lower = bound.max(min);
        }
        // Above the last bound.
        let share = (rank - below as f64) / (h.count - below).max(1) as f64;
        (lower + share.clamp(0.0, 1.0) * (max - lower)).clamp(min, max)
    });
    Some(values.map(|v| (v * 10.0).round() / 10.0).collect())
}

/// `/queue_bridge`: the broker's connection state and each bridged queue.
pub(crate) fn queue_bridge(admin: &Admin) -> String {
    let Some(bridges) = &admin.bridges else {
        return json!({ "configured": false }).to_string();
    };
    let queues: Vec<Value> = bridges
        .stats()
        .into_iter()
        .map(|q| {
            let c = q.counts;
            json!({
                "vm_id": q.vm_id, "name": q.name, "stream": q.stream, "subject": q.subject,
                "receiving": q.receiving,
                "published": c.published, "acked": c.acked, "retried": c.retried, "waiting": c.waiting,
                "dropped": c.dropped, "refused": c.refused, "fetched": c.fetched, "delivered": c.delivered,
                "redelivered": c.redelivered, "duplicates": c.duplicates, "returned": c.returned, "held": c.held,
            })
        })
        .collect();
    let state = if bridges.connected() { "CONNECTED" } else { "DISCONNECTED" };
    serde_json::to_string_pretty(
        &json!({ "configured": true, "broker": state, "ready": bridges.ready(), "queues": queues }),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_host::HISTOGRAM_BUCKETS;

    /// Every stat an `envoy_stats!` group declares is in docs/admin.md's
    /// table, on a row of its scope: the declaration is the one list.
    #[test]
    fn every_declared_stat_is_documented() {
        use crate::envoy_stats::{ClusterStats, HttpStats, ListenerStats, StatName};
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin.md")).unwrap();
        let mut missing = Vec::new();
        let mut check = |scope: &str, stat: StatName<'_>| {
            let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with(&format!("| `{scope}."))).collect();
            let stat = match stat {
                StatName::Plain(stat) => stat.to_owned(),
                StatName::Class(stat, class) => format!("{stat}_{class}xx"),
                StatName::Filter(..) => return,
            };
            let last = stat.rsplit('.').next().unwrap();
            let named = |row: &&str| {
                row.contains(&format!(".{stat}`"))
                    || row.contains(&format!("`{last}`"))
                    || row.contains(&format!(".{last}`"))
            };
            // Classes are written `stat_1xx` … `_5xx`.
            let class_row = |row: &&str| stat.ends_with("xx") && row.contains(&stat[..stat.len() - 4]);
            if !rows.iter().any(|row| named(row) || class_row(row)) {
                missing.push(format!("{scope}.<name>.{stat}"));
            }
        };
        ListenerStats::default().each(&mut |stat, _| check("listener", stat));
        HttpStats::default().each(&mut |stat, _| check("http", stat));
        ClusterStats::default().each(&mut |stat, _| check("cluster", stat));
        assert!(missing.is_empty(), "not in docs/admin.md's stats table: {missing:?}");
    }

    /// Envoy's stats of a listener, a connection manager (with a filter's
    /// counters) and a cluster, every one a distinct value, rendered as
    /// text, JSON and Prometheus: byte for byte what `testdata/stats/` holds
    /// (written by the code before the stats were declared once; rewrite
    /// with `FERRY_UPDATE_GOLDEN=1` only for a deliberate change).
    #[test]
    fn envoys_stats_render_byte_for_byte_as_before() {
        use crate::envoy_stats::{ClusterStats, FilterCounters, HttpStats, ListenerStats};
        use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
        let mut next = 0u64;
        let mut count = |counter: &AtomicU64| {
            next += 1;
            counter.store(next, Ordering::Relaxed);
        };
        let listener = ListenerStats::default();
        count(&listener.downstream_cx_total);
        count(&listener.downstream_global_cx_overflow);
        listener.downstream_cx_active.store(-7, Ordering::Relaxed);
        let filter = FilterCounters::new("compressor.text.gzip.response".into(), &["compressed", "not_compressed"]);
        filter.add(0, 40);
        filter.add(1, 41);
        let http = HttpStats { filters: vec![std::sync::Arc::new(filter)], ..HttpStats::default() };
        count(&http.downstream_cx_total);
        count(&http.downstream_rq_total);
        http.downstream_rq_by_class.iter().for_each(&mut count);
        http.downstream_cx_active.store(3, Ordering::Relaxed);
        let cluster = ClusterStats::default();
        let c = &cluster;
        for counter in [
            &c.upstream_rq_total,
            &c.upstream_rq_timeout,
            &c.upstream_cx_connect_fail,
            &c.upstream_rq_retry,
            &c.outlier.detected_consecutive_5xx,
            &c.outlier.enforced_total,
            &c.outlier.enforced_consecutive_5xx,
            &c.outlier.overflow,
            &c.health_check.attempt,
            &c.health_check.success,
            &c.health_check.failure,
            &c.health_check.network_failure,
            &c.breakers.rq_pending_overflow,
            &c.breakers.cx_overflow,
            &c.breakers.rq_retry_overflow,
        ] {
            count(counter);
        }
        c.upstream_rq_by_class.iter().for_each(&mut count);
        let active: &AtomicI64 = &c.upstream_rq_active;
        active.store(5, Ordering::Relaxed);
        let membership = Membership { total: 3, healthy: 2, ejected: 1, breakers_open: [true, false, true, false] };
        let mut stats = listener_stats("127.0.0.1:10000".parse().unwrap(), &listener);
        stats.extend(http_stats("ingress_http", &http));
        stats.extend(cluster_stats("service.a", &cluster, &membership));
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        // `/reset_counters` zeroes every counter and keeps every gauge.
        listener.reset_counters();
        http.reset_counters();
        cluster.reset_counters();
        let mut reset = listener_stats("127.0.0.1:10000".parse().unwrap(), &listener);
        reset.extend(http_stats("ingress_http", &http));
        reset.extend(cluster_stats("service.a", &cluster, &membership));
        reset.sort_by(|a, b| a.name.cmp(&b.name));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/stats");
        for (file, rendered) in [
            ("stats.txt", text(&stats)),
            ("stats.json", json(&stats)),
            ("stats.prom", prometheus(&stats)),
            ("after_reset.txt", text(&reset)),
        ] {
            let path = dir.join(file);
            if std::env::var_os("FERRY_UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &rendered).unwrap();
            }
            let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(rendered == golden, "{file} differs from {}:\n{rendered}", path.display());
        }
    }

    #[test]
    fn plugin_metrics_lose_their_namespace_in_prometheus_and_others_gain_envoy() {
        assert_eq!(prometheus_name("wasmcustom.my.requests").as_deref(), Some("my_requests"));
        assert_eq!(prometheus_name("wasmcustom.9lives"), None);
        assert_eq!(prometheus_name("ferry.shared_queue.depth").as_deref(), Some("envoy_ferry_shared_queue_depth"));
    }

    #[test]
    fn tags_come_out_of_names_as_envoy_takes_them() {
        let rules = [
            TagRule::Regex { name: "code".into(), regex: regex::Regex::new(r"(\.code\.(\d+))").unwrap() },
            TagRule::Regex { name: "whole".into(), regex: regex::Regex::new(r"(_v\d)").unwrap() },
            TagRule::Fixed { name: "region".into(), value: "eu".into() },
        ];
        let mut stat = Stat::plain("wasmcustom.app_v2.code.503.total".into(), MetricValue::Counter(1));
        extract_tags(&mut stat, &rules);
        assert_eq!(stat.tag_extracted_name, "wasmcustom.app.total");
        let tags: Vec<(&str, &str)> = stat.tags.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(tags, vec![("code", "503"), ("whole", "_v2"), ("region", "eu")]);
        assert_eq!(stat.name, "wasmcustom.app_v2.code.503.total", "the full name stays for /stats");
    }

    #[test]
    fn quantiles_stay_within_what_was_recorded() {
        // 10 values of 7 (bucket 5..10), 10 of 40 (bucket 25..50).
        let mut cumulative = vec![0, 0, 0, 10, 10, 20];
        cumulative.resize(HISTOGRAM_BUCKETS.len(), 20);
        let bounds = std::sync::Arc::from(&HISTOGRAM_BUCKETS[..]);
        let h = HistogramValue { count: 20, sum: 470, range: Some((7, 40)), bounds, cumulative };
        let q = quantiles(&h).unwrap();
        assert_eq!((q[0], q[9]), (7.0, 40.0));
        assert!((7.0..=10.0).contains(&q[2]), "median {}", q[2]);
        assert!((25.0..=40.0).contains(&q[4]), "p90 {}", q[4]);
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
        let empty = HistogramValue { count: 0, sum: 0, range: None, bounds: h.bounds.clone(), cumulative: vec![0; 19] };
        assert_eq!(quantiles(&empty), None);
    }
}
