//! The protobuf messages attributes carry whole (Envoy's `Node` and
//! `Metadata`), and how their fields read when a path goes into them.
//!
//! A path that ends on one of these gets its protobuf encoding, as Envoy's;
//! a path that goes on reads its fields by their protobuf names, with
//! `google.protobuf.Struct` read as a map and `Value` as what it holds.

use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{Any, Struct};

use super::{Message, Value};
use crate::facts::Metadata;

/// `envoy.config.core.v3.Node`, the fields a configuration gives.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    /// `id`.
    #[prost(string, tag = "1")]
    pub id: String,
    /// `cluster`.
    #[prost(string, tag = "2")]
    pub cluster: String,
    /// `metadata`.
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<Struct>,
    /// `locality`.
    #[prost(message, optional, tag = "4")]
    pub locality: Option<Locality>,
    /// `user_agent_name`.
    #[prost(string, tag = "6")]
    pub user_agent_name: String,
    /// `user_agent_version` (one arm of a oneof in Envoy's message: the same
    /// bytes on the wire when set).
    #[prost(string, tag = "7")]
    pub user_agent_version: String,
}

/// `envoy.config.core.v3.Locality`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Locality {
    /// `region`.
    #[prost(string, tag = "1")]
    pub region: String,
    /// `zone`.
    #[prost(string, tag = "2")]
    pub zone: String,
    /// `sub_zone`.
    #[prost(string, tag = "3")]
    pub sub_zone: String,
}

const STRUCT_TYPE: &str = "type.googleapis.com/google.protobuf.Struct";

impl Metadata {
    /// As an attribute value.
    pub(crate) fn value(&self) -> Value {
        let filter = self.filter_metadata.iter().map(|(k, v)| (Value::string(k), struct_value(v))).collect();
        let typed = self.typed_filter_metadata.iter().map(|(k, v)| (Value::string(k), any_value(v))).collect();
        Value::Message(Message {
            encoded: self.encode_to_vec(),
            fields: vec![("filter_metadata", Value::Map(filter)), ("typed_filter_metadata", Value::Map(typed))],
        })
    }
}

impl Node {
    /// As an attribute value.
    pub(crate) fn value(&self) -> Value {
        let metadata = self.metadata.as_ref().map_or(Value::Map(Vec::new()), struct_value);
        let locality = self.locality.clone().unwrap_or_default();
        Value::Message(Message {
            encoded: self.encode_to_vec(),
            fields: vec![
                ("id", Value::string(&self.id)),
                ("cluster", Value::string(&self.cluster)),
                ("metadata", metadata),
                ("locality", locality.value()),
                ("user_agent_name", Value::string(&self.user_agent_name)),
                ("user_agent_version", Value::string(&self.user_agent_version)),
            ],
        })
    }
}

impl Locality {
    fn value(&self) -> Value {
        Value::Message(Message {
            encoded: self.encode_to_vec(),
            fields: vec![
                ("region", Value::string(&self.region)),
                ("zone", Value::string(&self.zone)),
                ("sub_zone", Value::string(&self.sub_zone)),
            ],
        })
    }
}

/// A `Struct` reads as a map of its values.
pub(crate) fn struct_value(s: &Struct) -> Value {
    Value::Map(s.fields.iter().map(|(k, v)| (Value::string(k), proto_value(v))).collect())
}

/// A `google.protobuf.Value` reads as what it holds: numbers are doubles.
fn proto_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Value::Double(*n),
        Some(Kind::StringValue(s)) => Value::string(s),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_value(s),
        Some(Kind::ListValue(l)) => Value::List(l.values.iter().map(proto_value).collect()),
    }
}

/// An `Any` reads as the message it packs, for the types ferry knows
/// (`Struct`); as its bytes otherwise.
fn any_value(any: &Any) -> Value {
    match Struct::decode(&*any.value) {
        Ok(s) if any.type_url == STRUCT_TYPE => struct_value(&s),
        _ => Value::Bytes(any.encode_to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn metadata_encodes_as_envoys_message() {
        let mut fields = BTreeMap::new();
        fields.insert("k".to_owned(), prost_types::Value { kind: Some(Kind::StringValue("v".into())) });
        let mut metadata = Metadata::default();
        metadata.filter_metadata.insert("f".into(), Struct { fields });
        // filter_metadata (1): entry { key (1) "f", value (2) Struct { fields (1): entry { "k", Value { string_value (3) "v" } } } }
        let expected = b"\x0a\x0f\x0a\x01f\x12\x0a\x0a\x08\x0a\x01k\x12\x03\x1a\x01v";
        assert_eq!(metadata.encode_to_vec(), expected);
    }
}
