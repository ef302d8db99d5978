//! How a cluster spreads requests over its endpoints and keeps bad ones
//! out: `lb_policy` (with `least_request_lb_config` and
//! `common_lb_config.healthy_panic_threshold`), active `health_checks` and
//! `outlier_detection` on consecutive 5xx.

use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use crate::ConfigError;
use crate::decode::{decode, duration, err, join};
use crate::model::{CircuitBreakers, HealthCheck, HealthCheckKind, LbPolicy, OutlierDetection};
use crate::raw::Ignored;

// Fields typed `Ignored` exist only to be accepted (listed in
// docs/configuration.md); they are never read.

/// Envoy's default `healthy_panic_threshold`: below 50 % healthy hosts,
/// every host takes traffic again.
const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawLeastRequest {
    choice_count: Option<u32>,
    #[serde(default)]
    active_request_bias: Ignored,
    #[serde(default)]
    slow_start_config: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawCommonLb {
    healthy_panic_threshold: Option<RawPercent>,
    #[serde(default)]
    update_merge_window: Ignored,
    #[serde(default)]
    ignore_new_hosts_until_first_hc: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPercent {
    #[serde(default)]
    value: f64,
}

/// The policy `lb_policy` names, with `least_request_lb_config`.
pub(crate) fn policy(name: Option<&str>, least_request: Option<Value>, path: &str) -> Result<LbPolicy, ConfigError> {
    let policy = match name.map(str::to_ascii_uppercase).as_deref() {
        None | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("RANDOM") => LbPolicy::Random,
        Some("LEAST_REQUEST") => {
            let config: Option<RawLeastRequest> =
                least_request.map(|v| decode(v, &join(path, "least_request_lb_config"))).transpose()?;
            let choice_count = config.and_then(|c| c.choice_count).unwrap_or(2);
            if choice_count < 2 {
                return Err(err(join(path, "least_request_lb_config.choice_count"), "must be at least 2"));
            }
            LbPolicy::LeastRequest { choice_count }
        }
        Some(other) => {
            return Err(err(
                join(path, "lb_policy"),
                format!("{other} is not supported; use ROUND_ROBIN, LEAST_REQUEST or RANDOM"),
            ));
        }
    };
    Ok(policy)
}

/// `common_lb_config.healthy_panic_threshold`, a percentage.
pub(crate) fn panic_threshold(common: Option<Value>, path: &str) -> Result<f64, ConfigError> {
    let Some(common) = common else { return Ok(DEFAULT_PANIC_THRESHOLD) };
    let path = join(path, "common_lb_config");
    let common: RawCommonLb = decode(common, &path)?;
    match common.healthy_panic_threshold {
        None => Ok(DEFAULT_PANIC_THRESHOLD),
        Some(p) if (0.0..=100.0).contains(&p.value) => Ok(p.value),
        Some(_) => Err(err(join(&path, "healthy_panic_threshold.value"), "must be between 0 and 100")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawHealthCheck {
    timeout: Option<String>,
    interval: Option<String>,
    unhealthy_threshold: Option<u32>,
    healthy_threshold: Option<u32>,
    http_health_check: Option<RawHttpHealthCheck>,
    tcp_health_check: Option<RawTcpHealthCheck>,
    // Timing refinements: the checks run every `interval` here.
    #[serde(default)]
    interval_jitter: Ignored,
    #[serde(default)]
    interval_jitter_percent: Ignored,
    #[serde(default)]
    initial_jitter: Ignored,
    #[serde(default)]
    no_traffic_interval: Ignored,
    #[serde(default)]
    no_traffic_healthy_interval: Ignored,
    #[serde(default)]
    unhealthy_interval: Ignored,
    #[serde(default)]
    unhealthy_edge_interval: Ignored,
    #[serde(default)]
    healthy_edge_interval: Ignored,
    #[serde(default)]
    reuse_connection: Ignored,
    #[serde(default)]
    always_log_health_check_failures: Ignored,
    #[serde(default)]
    always_log_health_check_success: Ignored,
    #[serde(default)]
    event_log_path: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawHttpHealthCheck {
    path: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    expected_statuses: Vec<RawRange>,
    #[serde(default)]
    codec_client_type: Ignored,
    #[serde(default)]
    request_headers_to_remove: Ignored,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcpHealthCheck {
    #[serde(default)]
    send: Option<Value>,
    #[serde(default)]
    receive: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: i64,
    end: i64,
}

/// The cluster's `health_checks` (at most one).
pub(crate) fn health_checks(raw: Vec<Value>, path: &str) -> Result<Option<HealthCheck>, ConfigError> {
    if raw.len() > 1 {
        return Err(err(join(path, "health_checks[1]"), "one health check per cluster is supported"));
    }
    let Some(raw) = raw.into_iter().next() else { return Ok(None) };
    let path = join(path, "health_checks[0]");
    let check: RawHealthCheck = decode(raw, &path)?;
    let required = |value: Option<String>, field: &str| -> Result<Duration, ConfigError> {
        let text = value.ok_or_else(|| err(join(&path, field), "required"))?;
        let at = join(&path, field);
        let d = duration(&text, &at)?;
        if d.is_zero() { Err(err(at, "must be more than 0s")) } else { Ok(d) }
    };
    let timeout = required(check.timeout, "timeout")?;
    let interval = required(check.interval, "interval")?;
    let unhealthy_threshold =
        check.unhealthy_threshold.ok_or_else(|| err(join(&path, "unhealthy_threshold"), "required"))?.max(1);
    let healthy_threshold =
        check.healthy_threshold.ok_or_else(|| err(join(&path, "healthy_threshold"), "required"))?.max(1);
    let kind = match (check.http_health_check, check.tcp_health_check) {
        (Some(http), None) => {
            let at = join(&path, "http_health_check");
            if !http.path.starts_with('/') {
                return Err(err(join(&at, "path"), "must start with /"));
            }
            let mut expected = Vec::new();
            for (i, range) in http.expected_statuses.into_iter().enumerate() {
                if !(100..=600).contains(&range.start) || !(range.start..=600).contains(&range.end) {
                    return Err(err(
                        join(&at, &format!("expected_statuses[{i}]")),
                        "start and end must be HTTP statuses, start before end",
                    ));
                }
                expected.push((range.start as u16, range.end as u16));
            }
            if expected.is_empty() {
                // Envoy's default: 200 only.
                expected.push((200, 201));
            }
            HealthCheckKind::Http { path: http.path, host: http.host.filter(|h| !h.is_empty()), expected }
        }
        (None, Some(tcp)) => {
            if tcp.send.is_some() || tcp.receive.is_some() {
                return Err(err(
                    join(&path, "tcp_health_check"),
                    "send and receive are not supported yet: a TCP check connects",
                ));
            }
            HealthCheckKind::Tcp
        }
        (None, None) => {
            return Err(err(
                &path,
                "give http_health_check or tcp_health_check (others, e.g. grpc_health_check, are not supported)",
            ));
        }
        (Some(_), Some(_)) => return Err(err(&path, "give one of http_health_check and tcp_health_check")),
    };
    Ok(Some(HealthCheck { timeout, interval, unhealthy_threshold, healthy_threshold, kind }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawOutlierDetection {
    consecutive_5xx: Option<u32>,
    interval: Option<String>,
    base_ejection_time: Option<String>,
    max_ejection_time: Option<String>,
    max_ejection_percent: Option<u32>,
    enforcing_consecutive_5xx: Option<u32>,
    // Detection by success rate, failure percentage, gateway and local
    // failures: not run here (see docs/configuration.md).
    #[serde(default)]
    consecutive_gateway_failure: Ignored,
    #[serde(default)]
    enforcing_consecutive_gateway_failure: Ignored,
    #[serde(default)]
    success_rate_minimum_hosts: Ignored,
    #[serde(default)]
    success_rate_request_volume: Ignored,
    #[serde(default)]
    success_rate_stdev_factor: Ignored,
    #[serde(default)]
    enforcing_success_rate: Ignored,
    #[serde(default)]
    failure_percentage_threshold: Ignored,
    #[serde(default)]
    enforcing_failure_percentage: Ignored,
    #[serde(default)]
    enforcing_failure_percentage_local_origin: Ignored,
    #[serde(default)]
    failure_percentage_minimum_hosts: Ignored,
    #[serde(default)]
    failure_percentage_request_volume: Ignored,
    #[serde(default)]
    split_external_local_origin_errors: Ignored,
    #[serde(default)]
    consecutive_local_origin_failure: Ignored,
    #[serde(default)]
    enforcing_consecutive_local_origin_failure: Ignored,
    #[serde(default)]
    enforcing_local_origin_success_rate: Ignored,
    #[serde(default)]
    max_ejection_time_jitter: Ignored,
    #[serde(default)]
    successful_active_health_check_uneject_host: Ignored,
}

/// `outlier_detection`, with Envoy's defaults.
pub(crate) fn outlier_detection(raw: Option<Value>, path: &str) -> Result<Option<OutlierDetection>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let path = join(path, "outlier_detection");
    let raw: RawOutlierDetection = decode(raw, &path)?;
    let time = |value: Option<String>, field: &str, default: u64| -> Result<Duration, ConfigError> {
        value.map_or(Ok(Duration::from_secs(default)), |text| duration(&text, &join(&path, field)))
    };
    let percent = |value: Option<u32>, field: &str, default: u32| match value {
        Some(v) if v > 100 => Err(err(join(&path, field), "a percentage: at most 100")),
        v => Ok(v.unwrap_or(default)),
    };
    Ok(Some(OutlierDetection {
        consecutive_5xx: raw.consecutive_5xx.unwrap_or(5).max(1),
        interval: time(raw.interval, "interval", 10)?,
        base_ejection_time: time(raw.base_ejection_time, "base_ejection_time", 30)?,
        max_ejection_time: time(raw.max_ejection_time, "max_ejection_time", 300)?,
        max_ejection_percent: percent(raw.max_ejection_percent, "max_ejection_percent", 10)?,
        enforcing_consecutive_5xx: percent(raw.enforcing_consecutive_5xx, "enforcing_consecutive_5xx", 100)?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCircuitBreakers {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    thresholds: Vec<RawThresholds>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    per_host_thresholds: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawThresholds {
    #[serde(default, deserialize_with = "crate::enums::routing_priority")]
    priority: Option<String>,
    max_connections: Option<u32>,
    max_pending_requests: Option<u32>,
    max_requests: Option<u32>,
    max_retries: Option<u32>,
    #[serde(default)]
    retry_budget: Option<Value>,
    #[serde(default)]
    track_remaining: Ignored,
    #[serde(default)]
    max_connection_pools: Ignored,
}

/// `circuit_breakers`: the `DEFAULT` priority's thresholds, with Envoy's
/// defaults (1024 connections, pending and requests; 3 retries). `HIGH`
/// thresholds are read and unused: ferry's routes have no priority.
pub(crate) fn circuit_breakers(raw: Option<Value>, path: &str) -> Result<CircuitBreakers, ConfigError> {
    let Some(raw) = raw else { return Ok(CircuitBreakers::default()) };
    let path = join(path, "circuit_breakers");
    let raw: RawCircuitBreakers = decode(raw, &path)?;
    if !raw.per_host_thresholds.is_empty() {
        return Err(err(join(&path, "per_host_thresholds"), "not supported yet"));
    }
    let mut breakers = CircuitBreakers::default();
    for (i, thresholds) in raw.thresholds.into_iter().enumerate() {
        if thresholds.retry_budget.is_some() {
            return Err(err(
                join(&path, &format!("thresholds[{i}].retry_budget")),
                "not supported yet; use max_retries",
            ));
        }
        if thresholds.priority.as_deref().is_some_and(|p| p != "DEFAULT") {
            continue;
        }
        let default = CircuitBreakers::default();
        breakers = CircuitBreakers {
            max_connections: thresholds.max_connections.unwrap_or(default.max_connections),
            max_pending_requests: thresholds.max_pending_requests.unwrap_or(default.max_pending_requests),
            max_requests: thresholds.max_requests.unwrap_or(default.max_requests),
            max_retries: thresholds.max_retries.unwrap_or(default.max_retries),
        };
    }
    Ok(breakers)
}
