//! `envoy.filters.http.header_to_metadata`: copies headers into the
//! stream's dynamic metadata (request rules on the request headers,
//! response rules on the response headers), as Envoy's filter does.

use std::sync::Arc;

use ferry_config::{HeaderToMetadata, MetadataKind, MetadataRule, MetadataValue};
use ferry_host::{HeaderMap, HttpStream};
use prost_types::value::Kind;

use super::{FilterStatus, HttpFilter, Side};

/// The filter of one stream: its rules.
pub(crate) struct HeaderToMetadataFilter(pub(crate) Arc<HeaderToMetadata>);

impl HttpFilter for HeaderToMetadataFilter {
    async fn request_headers(&mut self, stream: &mut HttpStream, _: bool) -> FilterStatus {
        apply(&self.0.request_rules, &mut stream.request_headers, &mut stream.info.metadata);
        FilterStatus::Continue
    }

    async fn response_headers(&mut self, stream: &mut HttpStream, _: bool) -> FilterStatus {
        apply(&self.0.response_rules, &mut stream.response_headers, &mut stream.info.metadata);
        FilterStatus::Continue
    }

    async fn body(&mut self, _: Side, _: &mut HttpStream, _: bool) -> FilterStatus {
        FilterStatus::Continue
    }

    async fn trailers(&mut self, _: Side, _: &mut HttpStream) -> FilterStatus {
        FilterStatus::Continue
    }

    fn reclaim(&mut self, _: &mut HttpStream) {}

    fn finish(self, _: &mut HttpStream) {}
}

/// Each rule on `headers`: the header's value (or the rule's own) into
/// the metadata, and the header removed if the rule says so.
fn apply(rules: &[MetadataRule], headers: &mut HeaderMap, metadata: &mut ferry_host::Metadata) {
    for rule in rules {
        let name = rule.header.as_bytes();
        match headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned()) {
            Some(found) => {
                if let Some(target) = &rule.on_present {
                    set(metadata, target, &found);
                }
                if rule.remove {
                    headers.remove(name);
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

/// Sets one value: the rule's `value`, else the header's (rewritten if the
/// rule says so), as a string or a number. An empty value, or a number that
/// does not parse, is not set (as Envoy).
fn set(metadata: &mut ferry_host::Metadata, target: &MetadataValue, header: &str) {
    let text = match (&target.value, &target.rewrite) {
        (Some(value), _) => value.clone(),
        (None, Some((pattern, substitution))) => pattern.0.replace_all(header, substitution.as_str()).into_owned(),
        (None, None) => header.to_owned(),
    };
    if text.is_empty() {
        return;
    }
    let kind = match target.kind {
        MetadataKind::String => Kind::StringValue(text),
        MetadataKind::Number => match text.trim().parse::<f64>() {
            Ok(n) => Kind::NumberValue(n),
            Err(_) => return,
        },
    };
    metadata
        .filter_metadata
        .entry(target.namespace.clone())
        .or_default()
        .fields
        .insert(target.key.clone(), prost_types::Value { kind: Some(kind) });
}
