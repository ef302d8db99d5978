//! Reading the pieces every configuration message is made of: field paths
//! for errors, `Any` and `TypedStruct` unpacking, durations and data
//! sources. A leaf of the crate: the readers of each message use it, it
//! uses none of them.

use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::ConfigError;
use crate::raw;

const TYPED_STRUCTS: [&str; 2] = ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

pub(crate) fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

/// Deserializes `value` as `T`, reporting errors under `path`.
pub(crate) fn decode<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = crate::field_path(e.path());
        let at = if inner.is_empty() { path.to_owned() } else { join(path, &inner) };
        err(at, e.into_inner().to_string())
    })
}

/// A decoded `Any`: the message type (without its URL prefix), its fields,
/// and the path of those fields.
pub(crate) struct Any {
    pub(crate) type_name: String,
    pub(crate) fields: Value,
    pub(crate) path: String,
}

/// Reads an `Any`: `@type` plus the message's fields, or a `TypedStruct`
/// wrapping `type_url` and `value`.
pub(crate) fn unpack_any(value: Value, path: &str) -> Result<Any, ConfigError> {
    let Value::Mapping(mut map) = value else {
        return Err(err(path, "expected a typed config with an \"@type\" field"));
    };
    let type_url = match map.remove("@type") {
        Some(Value::String(url)) => url,
        _ => return Err(err(join(path, "@type"), "missing or not a string")),
    };
    let type_name = type_name(&type_url);
    if TYPED_STRUCTS.contains(&type_name) {
        let type_url = match map.remove("type_url") {
            Some(Value::String(url)) => url,
            _ => return Err(err(join(path, "type_url"), "missing or not a string")),
        };
        let fields = map.remove("value").unwrap_or(Value::Mapping(Default::default()));
        if let Some((key, _)) = map.into_iter().next() {
            return Err(err(path, format!("unknown field {key:?} in TypedStruct (expected type_url, value)")));
        }
        return Ok(Any { type_name: type_name_of(&type_url), fields, path: join(path, "value") });
    }
    Ok(Any { type_name: type_name.to_owned(), fields: Value::Mapping(map), path: path.to_owned() })
}

/// `type.googleapis.com/a.b.C` → `a.b.C`.
fn type_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

fn type_name_of(url: &str) -> String {
    type_name(url).to_owned()
}

/// The largest format string read from a file (`text_format_source`).
const MAX_FORMAT_FILE_BYTES: u64 = 1 << 20;

/// A format string read from a file (`text_format_source`).
pub(crate) fn format_source(raw: raw::DataSource, path: &str) -> Result<Vec<u8>, ConfigError> {
    data_source(raw, path, MAX_FORMAT_FILE_BYTES, None)
}

/// Bytes of an inline or file `DataSource`; a file is read only if it is a
/// regular file of at most `cap` bytes (an error about it names
/// `cap_field`, the setting that raises the cap, if there is one).
pub(crate) fn data_source(
    raw: raw::DataSource,
    path: &str,
    cap: u64,
    cap_field: Option<&str>,
) -> Result<Vec<u8>, ConfigError> {
    match (raw.inline_string, raw.inline_bytes, raw.filename) {
        (Some(s), None, None) => Ok(s.into_bytes()),
        (None, Some(b), None) => base64_bytes(&b, &join(path, "inline_bytes")),
        (None, None, Some(f)) => crate::input::read_file(std::path::Path::new(&f), cap).map_err(|reason| {
            let reason = match cap_field {
                Some(field) => format!("{reason} ({field})"),
                None => reason,
            };
            err(join(path, "filename"), reason)
        }),
        _ => Err(err(path, "exactly one of inline_string, inline_bytes or filename is required")),
    }
}

/// Bytes of an inline or file `DataSource` used as a direct-response body,
/// at most `max` bytes (the route configuration's
/// `max_direct_response_body_size_bytes`, as Envoy checks it).
pub(crate) fn body_source(raw: raw::DataSource, path: &str, max: u32) -> Result<Vec<u8>, ConfigError> {
    let bytes = data_source(raw, path, max.into(), Some("max_direct_response_body_size_bytes"))?;
    if bytes.len() > max as usize {
        return Err(err(path, format!("{} bytes, over max_direct_response_body_size_bytes ({max})", bytes.len())));
    }
    Ok(bytes)
}

pub(crate) fn base64_bytes(text: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| err(path, format!("not valid base64: {e}")))
}

/// A protobuf JSON duration: seconds with an `s` suffix, e.g. `0.25s`.
pub(crate) fn duration(text: &str, path: &str) -> Result<Duration, ConfigError> {
    text.strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            err(path, format!("{text:?} is not a duration (expected seconds with an s suffix, e.g. \"0.25s\")"))
        })
}
