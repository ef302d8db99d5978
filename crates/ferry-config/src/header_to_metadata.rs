//! `envoy.filters.http.header_to_metadata`: rules that copy request or
//! response headers into the stream's dynamic metadata, which plugins read
//! as `metadata.filter_metadata.<namespace>.<key>` and access logs as
//! `%DYNAMIC_METADATA(...)%`.

use serde::Deserialize;
use serde_norway::Value;

use crate::ConfigError;
use crate::decode::{decode, err, join};
use crate::model::{HeaderToMetadata, MetadataKind, MetadataRule, MetadataSource, MetadataValue};

/// The namespace when a rule names none: the filter's own name.
const DEFAULT_NAMESPACE: &str = "envoy.filters.http.header_to_metadata";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    request_rules: Vec<RawRule>,
    #[serde(default, deserialize_with = "crate::repeated::one_or_many")]
    response_rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    cookie: Option<String>,
    #[serde(default)]
    on_header_present: Option<RawKeyValuePair>,
    #[serde(default)]
    on_header_missing: Option<RawKeyValuePair>,
    #[serde(default)]
    remove: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyValuePair {
    #[serde(default)]
    metadata_namespace: Option<String>,
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    regex_value_rewrite: Option<crate::routes::RawRegexRewrite>,
    #[serde(default, deserialize_with = "crate::enums::metadata_value_type")]
    r#type: Option<String>,
    #[serde(default, deserialize_with = "crate::enums::metadata_value_encode")]
    encode: Option<String>,
}

/// Reads the filter's typed config.
pub(crate) fn config(fields: Value, path: &str) -> Result<HeaderToMetadata, ConfigError> {
    let raw: RawConfig = decode(fields, path)?;
    let rules = |rules: Vec<RawRule>, field: &str| {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule(r, &format!("{path}.{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let config = HeaderToMetadata {
        request_rules: rules(raw.request_rules, "request_rules")?,
        response_rules: rules(raw.response_rules, "response_rules")?,
    };
    if config.request_rules.is_empty() && config.response_rules.is_empty() {
        return Err(err(path, "at least one of request_rules or response_rules is required"));
    }
    Ok(config)
}

fn rule(raw: RawRule, path: &str) -> Result<MetadataRule, ConfigError> {
    let header = raw.header.filter(|h| !h.is_empty());
    let cookie = raw.cookie.filter(|c| !c.is_empty());
    let source = match (header, cookie) {
        (Some(header), None) => MetadataSource::Header(header.to_ascii_lowercase()),
        (None, Some(cookie)) if raw.remove => {
            return Err(err(join(path, "remove"), format!("cannot remove cookie {cookie:?}: remove is for headers")));
        }
        (None, Some(cookie)) => MetadataSource::Cookie(cookie),
        (Some(_), Some(_)) => return Err(err(path, "give header or cookie, not both")),
        (None, None) => return Err(err(join(path, "header"), "required (or cookie)")),
    };
    if raw.on_header_present.is_none() && raw.on_header_missing.is_none() {
        return Err(err(path, "give on_header_present or on_header_missing"));
    }
    let on_missing = raw.on_header_missing.map(|kv| value(kv, &join(path, "on_header_missing"))).transpose()?;
    if on_missing.as_ref().is_some_and(|v| v.value.is_none()) {
        return Err(err(join(path, "on_header_missing.value"), "required: there is no header to take it from"));
    }
    Ok(MetadataRule {
        source,
        on_present: raw.on_header_present.map(|kv| value(kv, &join(path, "on_header_present"))).transpose()?,
        on_missing,
        remove: raw.remove,
    })
}

fn value(raw: RawKeyValuePair, path: &str) -> Result<MetadataValue, ConfigError> {
    if raw.key.is_empty() {
        return Err(err(join(path, "key"), "required"));
    }
    let kind = match raw.r#type.as_deref() {
        None | Some("STRING") => MetadataKind::String,
        Some("NUMBER") => MetadataKind::Number,
        Some("PROTOBUF_VALUE") => MetadataKind::ProtobufValue,
        Some(other) => return Err(err(join(path, "type"), format!("unknown type {other}"))),
    };
    let base64 = match raw.encode.as_deref() {
        None | Some("NONE") => false,
        Some("BASE64") => true,
        Some(other) => return Err(err(join(path, "encode"), format!("unknown encoding {other}"))),
    };
    let rewrite =
        raw.regex_value_rewrite.map(|r| crate::routes::rewrite(r, &join(path, "regex_value_rewrite"))).transpose()?;
    Ok(MetadataValue {
        namespace: raw.metadata_namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        key: raw.key,
        value: raw.value,
        rewrite,
        kind,
        base64,
    })
}
