//! A Wasm plugin's `PluginConfig` and `VmConfig` (HTTP and network filters,
//! services and access loggers share them), with Envoy's failure-policy
//! rules.

use std::path::PathBuf;
use std::time::Duration;

use serde_norway::Value;

use crate::ConfigError;
use crate::decode::{base64_bytes, duration, err, join, unpack_any};
use crate::model::*;
use crate::raw;

const STRING_VALUE: &str = "google.protobuf.StringValue";

const BYTES_VALUE: &str = "google.protobuf.BytesValue";

const STRUCT: &str = "google.protobuf.Struct";

/// A failure policy by its name in Envoy's enum (at `path`), with the
/// `reload_config` at `reload_path` for FAIL_RELOAD.
pub(crate) fn failure_policy_named(
    name: &str,
    reload_config: Option<raw::ReloadConfig>,
    path: &str,
    reload_path: &str,
) -> Result<FailurePolicy, ConfigError> {
    match name {
        "FAIL_CLOSED" => Ok(FailurePolicy::FailClosed),
        "FAIL_OPEN" => Ok(FailurePolicy::FailOpen),
        "FAIL_RELOAD" => {
            let backoff = reload_config.and_then(|r| r.backoff);
            let at = |field| format!("{reload_path}.backoff.{field}");
            let base_interval = match &backoff {
                Some(b) => duration(&b.base_interval, &at("base_interval"))?,
                None => Duration::from_secs(1),
            };
            if base_interval < Duration::from_millis(1) {
                return Err(err(at("base_interval"), "must be at least 1ms"));
            }
            let max_interval = match backoff.and_then(|b| b.max_interval) {
                Some(max) => duration(&max, &at("max_interval"))?,
                None => base_interval * 10,
            };
            if max_interval < base_interval {
                return Err(err(at("max_interval"), "must not be less than base_interval"));
            }
            Ok(FailurePolicy::FailReload { base_interval, max_interval })
        }
        other => Err(err(path, format!("unknown policy {other} (expected FAIL_CLOSED, FAIL_OPEN or FAIL_RELOAD)"))),
    }
}

pub(crate) fn plugin_config(raw: raw::PluginConfig, path: &str) -> Result<PluginConfig, ConfigError> {
    let policy_path = join(path, "failure_policy");
    let failure_policy = match (raw.failure_policy.as_deref(), raw.fail_open) {
        (None | Some("UNSPECIFIED"), false) => {
            if raw.reload_config.is_some() {
                return Err(err(join(path, "reload_config"), "applies only with failure_policy: FAIL_RELOAD"));
            }
            None
        }
        (None | Some("UNSPECIFIED"), true) => Some(FailurePolicy::FailOpen),
        // As Envoy: the deprecated flag and the enum exclude each other.
        (Some(_), true) => {
            return Err(err(policy_path, "only one of fail_open or failure_policy can be set"));
        }
        (Some(name), false) => {
            if raw.reload_config.is_some() && name != "FAIL_RELOAD" {
                return Err(err(join(path, "reload_config"), "applies only with failure_policy: FAIL_RELOAD"));
            }
            Some(failure_policy_named(name, raw.reload_config, &policy_path, &join(path, "reload_config"))?)
        }
    };
    let configuration = raw
        .configuration
        .map(|c| configuration_bytes(c, &join(path, "configuration")))
        .transpose()?
        .unwrap_or_default();
    Ok(PluginConfig {
        name: raw.name,
        root_id: raw.root_id,
        vm: vm_config(raw.vm_config, &join(path, "vm_config"))?,
        configuration,
        failure_policy,
        allow_on_headers_stop_iteration: raw.allow_on_headers_stop_iteration.unwrap_or(false),
        config_path: path.to_owned(),
    })
}

fn vm_config(raw: raw::VmConfig, path: &str) -> Result<VmConfig, ConfigError> {
    if raw.runtime == "envoy.wasm.runtime.null" {
        return Err(err(
            join(path, "runtime"),
            "the null runtime runs plugins compiled into Envoy; ferry runs Wasm modules (any other runtime name is accepted)",
        ));
    }
    let code_path = join(path, "code");
    let code = match (raw.code.local, raw.code.remote) {
        (Some(local), None) => match (local.filename, local.inline_bytes, local.inline_string) {
            (Some(f), None, None) => Code::File(PathBuf::from(f)),
            (None, Some(b), None) => Code::Inline(base64_bytes(&b, &join(&code_path, "local.inline_bytes"))?),
            (None, None, Some(s)) => Code::Inline(s.into_bytes()),
            _ => {
                return Err(err(
                    join(&code_path, "local"),
                    "exactly one of filename, inline_bytes or inline_string is required",
                ));
            }
        },
        (None, Some(_)) => {
            return Err(err(
                join(&code_path, "remote"),
                "remote code is not supported; download the module and use local.filename",
            ));
        }
        _ => return Err(err(code_path, "exactly one of local or remote is required")),
    };
    let configuration = raw
        .configuration
        .map(|c| configuration_bytes(c, &join(path, "configuration")))
        .transpose()?
        .unwrap_or_default();
    let env = raw.environment_variables.unwrap_or_default();
    Ok(VmConfig {
        vm_id: raw.vm_id,
        runtime: raw.runtime,
        code,
        configuration,
        environment: env.key_values.0,
        host_env_keys: env.host_env_keys,
        allowed_capabilities: raw
            .capability_restriction_config
            .map(|c| c.allowed_capabilities.into_keys().collect())
            .unwrap_or_default(),
    })
}

/// The bytes a plugin reads for a `configuration` `Any`: the value of a
/// `StringValue` or `BytesValue`, or a `Struct` as compact JSON.
fn configuration_bytes(value: Value, path: &str) -> Result<Vec<u8>, ConfigError> {
    let any = unpack_any(value, path)?;
    let value_path = join(&any.path, "value");
    let Value::Mapping(mut fields) = any.fields else {
        return Err(err(&any.path, "expected a mapping"));
    };
    let value = fields.remove("value");
    if let Some((key, _)) = fields.into_iter().next() {
        return Err(err(&any.path, format!("unknown field {key:?} (expected value)")));
    }
    match (any.type_name.as_str(), value) {
        (STRING_VALUE, Some(Value::String(s))) => Ok(s.into_bytes()),
        (STRING_VALUE | BYTES_VALUE, None) => Ok(Vec::new()),
        (STRING_VALUE, Some(_)) => Err(err(value_path, "expected a string")),
        (BYTES_VALUE, Some(Value::String(b))) => base64_bytes(&b, &value_path),
        (BYTES_VALUE, Some(_)) => Err(err(value_path, "expected base64 text")),
        (STRUCT, value) => {
            let value = value.unwrap_or(Value::Mapping(Default::default()));
            if !value.is_mapping() {
                return Err(err(value_path, "a Struct must be a mapping"));
            }
            serde_json::to_vec(&value).map_err(|e| err(value_path, format!("cannot convert to JSON: {e}")))
        }
        (other, _) => Err(err(
            join(&any.path, "@type"),
            format!("configuration of type {other} is not supported; use {STRING_VALUE}, {BYTES_VALUE} or {STRUCT}"),
        )),
    }
}
