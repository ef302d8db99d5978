//! What the server is and what it is connected to: `/server_info`,
//! `/listeners` and `/clusters`, in Envoy's text and JSON forms.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Admin;

/// Envoy's `ServerInfo` message as JSON.
pub(super) fn server_info(admin: &Admin) -> String {
    // Envoy writes durations in JSON as seconds with an `s`.
    let uptime = format!("{}s", admin.started.elapsed().as_secs());
    let info = json!({
        "version": concat!("ferry/", env!("CARGO_PKG_VERSION")),
        "state": if admin.health_check_failed.get() { "DRAINING" } else { "LIVE" },
        "hot_restart_version": "disabled",
        "command_line_options": { "concurrency": admin.concurrency },
        "node": {
            "id": admin.node.id,
            "cluster": admin.node.cluster,
            "locality": {
                "region": admin.node.locality.0,
                "zone": admin.node.locality.1,
                "sub_zone": admin.node.locality.2,
            },
        },
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
    });
    pretty(&info)
}

/// `/config_dump`: Envoy's `ConfigDump` shape (a list of typed dumps) with
/// the configuration as written: the bootstrap, then its static clusters
/// and listeners (a single object given where a list belongs is shown as
/// the list of one it was read as).
pub(super) fn config_dump(admin: &Admin) -> String {
    let source = &admin.config_source;
    let last_updated = crate::Civil::from_system_time(admin.started_at).iso8601_millis();
    let statics = |kind: &str, key: &str| -> Vec<Value> {
        let items = match &source["static_resources"][kind] {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            one => vec![one.clone()],
        };
        items.into_iter().map(|item| json!({ key: item, "last_updated": last_updated })).collect()
    };
    let dump = json!({ "configs": [
        {
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": source,
            "last_updated": last_updated,
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": statics("clusters", "cluster"),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "static_listeners": statics("listeners", "listener"),
        },
    ]});
    pretty(&dump)
}

/// `/listeners`: `name::address` per line, or `?format=json` with
/// `listener_statuses`.
pub(super) fn listeners(admin: &Admin, as_json: bool) -> String {
    if as_json {
        let statuses: Vec<Value> = admin
            .listeners
            .iter()
            .map(|(name, address)| json!({ "name": name, "local_address": socket_address(address) }))
            .collect();
        return pretty(&json!({ "listener_statuses": statuses }));
    }
    admin.listeners.iter().fold(String::new(), |mut out, (name, address)| {
        writeln!(out, "{name}::{address}").expect("writing to a String");
        out
    })
}

/// `/clusters`: each cluster and its hosts, in Envoy's `cluster::host::field::value`
/// lines, or `?format=json` with `cluster_statuses`. ferry does no active
/// health checking, so every host is healthy.
pub(super) fn clusters(admin: &Admin, as_json: bool) -> String {
    if as_json {
        let statuses: Vec<Value> = admin
            .clusters
            .all()
            .iter()
            .map(|cluster| {
                let hosts: Vec<Value> = cluster
                    .endpoints
                    .iter()
                    .map(|endpoint| {
                        json!({
                            "address": { "socket_address": { "address": endpoint.address, "port_value": endpoint.port } },
                            "health_status": { "eds_health_status": "HEALTHY" },
                            "weight": 1,
                        })
                    })
                    .collect();
                json!({ "name": cluster.name, "observability_name": cluster.name, "host_statuses": hosts })
            })
            .collect();
        return pretty(&json!({ "cluster_statuses": statuses }));
    }
    let mut out = String::new();
    for cluster in admin.clusters.all() {
        let name = &cluster.name;
        writeln!(out, "{name}::observability_name::{name}").expect("writing to a String");
        for endpoint in &cluster.endpoints {
            for (field, value) in [("health_flags", "healthy"), ("weight", "1"), ("priority", "0")] {
                writeln!(out, "{name}::{endpoint}::{field}::{value}").expect("writing to a String");
            }
        }
    }
    out
}

fn socket_address(address: &std::net::SocketAddr) -> Value {
    json!({ "socket_address": { "address": address.ip().to_string(), "port_value": address.port() } })
}

fn pretty(value: &Value) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("JSON values serialize");
    out.push('\n');
    out
}
