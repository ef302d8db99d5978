//! `envoy.config.core.v3.Metadata`: data for filters and plugins, attached
//! to listeners, filter chains, virtual hosts, routes, clusters and
//! endpoints, and read by plugins as `xds.*_metadata` attributes.

use serde::Deserialize;
use serde_norway::Value;

use crate::ConfigError;
use crate::decode::{decode, err, unpack_any};
use crate::model::Metadata;

/// The message as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(default)]
    filter_metadata: serde_norway::Mapping,
    #[serde(default)]
    typed_filter_metadata: serde_norway::Mapping,
}

const STRUCT: &str = "google.protobuf.Struct";

/// Reads a `metadata` field (absent: empty).
pub(crate) fn metadata(value: Option<Value>, path: &str) -> Result<Metadata, ConfigError> {
    let Some(value) = value else { return Ok(Metadata::default()) };
    let raw: RawMetadata = decode(value, path)?;
    let mut metadata = Metadata::default();
    for (key, value) in raw.filter_metadata {
        let (key, at) = namespace(key, path, "filter_metadata")?;
        metadata.filter_metadata.insert(key, structure(value, &at)?);
    }
    for (key, value) in raw.typed_filter_metadata {
        let (key, at) = namespace(key, path, "typed_filter_metadata")?;
        let any = unpack_any(value, &at)?;
        if any.type_name != STRUCT {
            return Err(err(
                format!("{at}.@type"),
                format!("typed metadata of type {} is not supported; ferry reads {STRUCT}", any.type_name),
            ));
        }
        metadata.typed_filter_metadata.insert(key, structure(any.fields, &any.path)?);
    }
    Ok(metadata)
}

fn namespace(key: Value, path: &str, field: &str) -> Result<(String, String), ConfigError> {
    match key {
        Value::String(key) => {
            let at = format!("{path}.{field}.{key}");
            Ok((key, at))
        }
        _ => Err(err(format!("{path}.{field}"), "keys must be strings")),
    }
}

/// A `google.protobuf.Struct`: a mapping with string keys, as JSON.
pub(crate) fn structure(value: Value, path: &str) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    if !value.is_mapping() && !value.is_null() {
        return Err(err(path, "a Struct must be a mapping"));
    }
    match serde_json::to_value(&value) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Ok(serde_json::Map::new()),
        Err(e) => Err(err(path, format!("not a Struct: {e}"))),
    }
}
