//! `envoy.filters.http.header_to_metadata`: copies headers (or cookies) into the
//! stream's dynamic metadata (request rules on the request headers,
//! response rules on the response headers), as Envoy's filter does.

use std::sync::Arc;

use ferry_config::{HeaderToMetadata, MetadataKind, MetadataRule, MetadataSource, MetadataValue};
use ferry_host::{HeaderMap, SharedStream};
use prost_types::value::Kind;

use super::{FilterContext, FilterStatus, HttpFilter, Side};

/// The filter of one stream: its rules.
pub(crate) struct HeaderToMetadataFilter(pub(crate) Arc<HeaderToMetadata>);

impl HttpFilter for HeaderToMetadataFilter {
    fn request_headers(&mut self, cx: &FilterContext<'_>, _: bool) -> FilterStatus {
        if !self.0.request_rules.is_empty() {
            let stream = &mut *cx.stream.borrow_mut();
            apply(&self.0.request_rules, &mut stream.request_headers, &mut stream.info.metadata);
        }
        FilterStatus::Continue
    }

    fn response_headers(&mut self, cx: &FilterContext<'_>, _: bool) -> FilterStatus {
        if !self.0.response_rules.is_empty() {
            let stream = &mut *cx.stream.borrow_mut();
            apply(&self.0.response_rules, &mut stream.response_headers, &mut stream.info.metadata);
        }
        FilterStatus::Continue
    }

    fn body(&mut self, _: Side, _: &FilterContext<'_>, _: bool) -> FilterStatus {
        FilterStatus::Continue
    }

    fn trailers(&mut self, _: Side, _: &FilterContext<'_>) -> FilterStatus {
        FilterStatus::Continue
    }

    fn finish(self, _: &SharedStream) {}
}

/// Each rule on `headers`: the header's or cookie's value (or the rule's
/// own) into the metadata, and the header removed if the rule says so.
fn apply(rules: &[MetadataRule], headers: &mut HeaderMap, metadata: &mut ferry_host::Metadata) {
    for rule in rules {
        let found = match &rule.source {
            MetadataSource::Header(name) => {
                headers.get(name.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned())
            }
            MetadataSource::Cookie(name) => cookie(headers, name),
        };
        match found {
            Some(found) => {
                if let Some(target) = &rule.on_present {
                    set(metadata, target, &found);
                }
                if rule.remove
                    && let MetadataSource::Header(name) = &rule.source
                {
                    headers.remove(name.as_bytes());
                }
            }
            None => {
                if let Some(target) = &rule.on_missing {
                    set(metadata, target, "");
                }
            }
        }
    }
}

/// The value of cookie `name` in the `cookie` headers (the first one so
/// named, without surrounding quotes).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie")).find_map(|(_, value)| {
        String::from_utf8_lossy(value).split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"').to_owned())
        })
    })
}

/// Longest value set, as Envoy's filter: a longer one is not set.
const MAX_VALUE_BYTES: usize = 8 * 1024;

/// Sets one value: the rule's `value`, else the header's (rewritten if the
/// rule says so), decoded from base64 if asked, as a string, a number or a
/// serialized `google.protobuf.Value`. An empty or too long value, or one
/// that does not decode or parse, is not set (as Envoy).
fn set(metadata: &mut ferry_host::Metadata, target: &MetadataValue, header: &str) {
    use base64::Engine as _;
    let text = match (&target.value, &target.rewrite) {
        (Some(value), _) => value.clone(),
        (None, Some((pattern, substitution))) => pattern.0.replace_all(header, substitution.as_str()).into_owned(),
        (None, None) => header.to_owned(),
    };
    if text.is_empty() || text.len() >= MAX_VALUE_BYTES {
        return;
    }
    let bytes = if target.base64 {
        match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
            Ok(bytes) => bytes,
            Err(_) => return,
        }
    } else {
        text.into_bytes()
    };
    let value = match target.kind {
        MetadataKind::String => {
            prost_types::Value { kind: Some(Kind::StringValue(String::from_utf8_lossy(&bytes).into_owned())) }
        }
        MetadataKind::Number => match std::str::from_utf8(&bytes).ok().and_then(|t| t.trim().parse::<f64>().ok()) {
            Some(n) => prost_types::Value { kind: Some(Kind::NumberValue(n)) },
            None => return,
        },
        MetadataKind::ProtobufValue => match <prost_types::Value as prost::Message>::decode(&bytes[..]) {
            Ok(value) => value,
            Err(_) => return,
        },
    };
    metadata.filter_metadata.entry(target.namespace.clone()).or_default().fields.insert(target.key.clone(), value);
}
