//! Envoy v3 YAML, the subset ferry runs, parsed into a typed model.
//!
//! [`from_yaml`] reads a bootstrap file the way Envoy does: typed configs by
//! `@type` (or wrapped in a `TypedStruct`), plugin code from a file relative
//! to the working directory or inline, configuration as `StringValue`,
//! `BytesValue` or `Struct`. A field that ferry does not know, or does not
//! support, is an error naming its path, e.g.
//! `static_resources.listeners[0].address.socket_address.port_value: invalid type: ...`.
//! Fields that change nothing here (stat prefixes, runtime names) are accepted.

pub mod access_log;
mod convert;
mod enums;
pub mod input;
mod matchers;
mod metadata;
pub mod model;
// Fields typed `Ignored` exist only to be accepted; they are never read.
#[allow(dead_code)]
mod raw;
mod repeated;
mod routes;
pub mod tls;

use std::path::Path;

pub use model::*;

/// A configuration error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The field path, e.g. `static_resources.listeners[0].name`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a configuration from YAML (or JSON) text.
///
/// # Errors
/// Invalid YAML, an unknown or unsupported field, or an inconsistent value.
pub fn from_yaml(text: &str) -> Result<Bootstrap, ConfigError> {
    let refuse = |message: String| ConfigError { path: "(file)".into(), message };
    if text.len() as u64 > input::MAX_CONFIG_BYTES {
        return Err(refuse(format!("{} bytes, over the limit of {}", text.len(), input::MAX_CONFIG_BYTES)));
    }
    input::check_nesting(text).map_err(refuse)?;
    let deserializer = serde_norway::Deserializer::from_str(text);
    let raw: raw::Bootstrap = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = field_path(e.path());
        let path = if path.is_empty() { "(file)".to_owned() } else { path };
        // The YAML library names the path itself when it knows it.
        let message = e.into_inner().to_string();
        let message = message.strip_prefix(&format!("{path}: ")).map_or(message.clone(), str::to_owned);
        ConfigError { path, message }
    })?;
    let mut bootstrap = convert::bootstrap(raw)?;
    // Valid YAML that JSON cannot hold (non-string keys) is shown as null.
    bootstrap.source = serde_norway::from_str(text).unwrap_or(serde_json::Value::Null);
    Ok(bootstrap)
}

/// A serde path as ferry's messages write it: `a.b[0].c`, with an empty
/// key written `""` (so the path still says where the field is).
pub(crate) fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if key.is_empty() { "\"\"" } else { key });
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// Reads and parses a configuration file.
///
/// # Errors
/// As [`from_yaml`], or the file cannot be read.
pub fn from_file(path: &Path) -> Result<Bootstrap, ConfigError> {
    let refuse = |message: String| ConfigError { path: "(file)".into(), message };
    let bytes = input::read_file(path, input::MAX_CONFIG_BYTES).map_err(refuse)?;
    let text = String::from_utf8(bytes).map_err(|e| refuse(format!("{} is not UTF-8: {e}", path.display())))?;
    from_yaml(&text)
}
