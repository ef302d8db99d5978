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
mod balancing;
mod compression;
mod convert;
mod decode;
mod enums;
mod header_to_metadata;
pub mod input;
mod matchers;
mod metadata;
pub mod model;
mod plugin_config;
mod queue_bridge;
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
        // The YAML library names the path (or, for an unknown field, its
        // parent's) itself when it knows it: said once is enough.
        let message = e.into_inner().to_string();
        let message = match message.split_once(": ") {
            Some((named, rest)) if path.starts_with(named) => rest.to_owned(),
            _ => message,
        };
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
    from_yaml(&read_text(path)?)
}

/// Reads a configuration file's text (a regular file, within the size cap, UTF-8).
///
/// # Errors
/// The file cannot be read, or is not a regular UTF-8 file within the cap.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let refuse = |message: String| ConfigError { path: "(file)".into(), message };
    let bytes = input::read_file(path, input::MAX_CONFIG_BYTES).map_err(refuse)?;
    String::from_utf8(bytes).map_err(|e| refuse(format!("{} is not UTF-8: {e}", path.display())))
}

/// Envoy's `--config-yaml` over a `--config-path` file: the YAML's values
/// merged into the file's, as protobuf merges messages (fields set in the
/// YAML replace the file's, nested messages merge, lists are appended).
///
/// # Errors
/// Either text is not YAML, or is nested too deeply.
pub fn merge_yaml(base: &str, overlay: &str) -> Result<String, ConfigError> {
    let parse = |text: &str, what: &str| -> Result<serde_norway::Value, ConfigError> {
        let refuse = |message: String| ConfigError { path: format!("({what})"), message };
        input::check_nesting(text).map_err(refuse)?;
        serde_norway::from_str(text).map_err(|e| refuse(e.to_string()))
    };
    let mut merged = parse(base, "file")?;
    merge(&mut merged, parse(overlay, "--config-yaml")?);
    serde_norway::to_string(&merged).map_err(|e| ConfigError { path: "(--config-yaml)".into(), message: e.to_string() })
}

fn merge(base: &mut serde_norway::Value, overlay: serde_norway::Value) {
    use serde_norway::Value;
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Value::Sequence(base), Value::Sequence(overlay)) => base.extend(overlay),
        (base, overlay) => *base = overlay,
    }
}
