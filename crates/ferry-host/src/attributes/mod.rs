//! Envoy's attributes: what `proxy_get_property` reads and what CEL
//! expressions see, with Envoy's names, types and encodings.
//!
//! A path is resolved in two steps: its first segment (and, for a group
//! such as `request`, its second) names an attribute ([`vocabulary`]); any
//! further segments go into the value (a map's key, a list's index, a
//! message's field). The value found is then serialized as Envoy does
//! ([`serialize`]): strings and bytes as they are, numbers as 8 bytes
//! little-endian, booleans as one byte, durations and times as
//! nanoseconds, maps and lists in the pairs encoding, messages as protobuf.

mod cel;
mod proto;
mod vocabulary;

use ferry_abi::{Status, pairs};

pub(crate) use self::cel::{Expressions, evaluate};
pub use proto::{Locality, Node};
pub(crate) use vocabulary::{Facts, header, resolve};

/// The value of an attribute, typed as Envoy's attribute reference types it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    String(Vec<u8>),
    Bytes(Vec<u8>),
    Int(i64),
    Uint(u64),
    Double(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    /// Nanoseconds since the Unix epoch.
    Timestamp(i64),
    Map(Vec<(Value, Value)>),
    List(Vec<Value>),
    Message(Message),
    /// A group of attributes (`request`, `xds`, ...): readable one field at
    /// a time, not whole (Envoy: `SerializationFailure`).
    Group(vocabulary::Group),
    Null,
}

/// A protobuf message: its encoding, and its fields by protobuf name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Message {
    pub encoded: Vec<u8>,
    pub fields: Vec<(&'static str, Value)>,
}

impl Value {
    pub(crate) fn string(text: impl AsRef<[u8]>) -> Value {
        Value::String(text.as_ref().to_vec())
    }

    /// The value under `segment`: a map's key, a list's index, a message's
    /// field. `NotFound` for anything else.
    pub(crate) fn descend(self, segment: &[u8]) -> Result<Value, Status> {
        match self {
            Value::Map(entries) => entries
                .into_iter()
                .find(|(key, _)| matches!(key, Value::String(k) | Value::Bytes(k) if k == segment))
                .map(|(_, value)| value)
                .ok_or(Status::NotFound),
            Value::List(items) => {
                let index: usize =
                    std::str::from_utf8(segment).ok().and_then(|s| s.parse().ok()).ok_or(Status::NotFound)?;
                items.into_iter().nth(index).ok_or(Status::NotFound)
            }
            Value::Message(message) => message
                .fields
                .into_iter()
                .find(|(name, _)| name.as_bytes() == segment)
                .map(|(_, value)| value)
                .ok_or(Status::NotFound),
            _ => Err(Status::NotFound),
        }
    }
}

/// Envoy's encoding of a value for `proxy_get_property` and `expr_evaluate`.
/// Null and whole groups cannot be encoded: `SerializationFailure`.
pub(crate) fn serialize(value: &Value) -> Result<Vec<u8>, Status> {
    Ok(match value {
        Value::String(bytes) | Value::Bytes(bytes) => bytes.clone(),
        Value::Int(n) | Value::Duration(n) | Value::Timestamp(n) => n.to_le_bytes().to_vec(),
        Value::Uint(n) => n.to_le_bytes().to_vec(),
        Value::Double(n) => n.to_le_bytes().to_vec(),
        Value::Bool(b) => vec![u8::from(*b)],
        Value::Map(entries) => {
            let encoded =
                entries.iter().map(|(k, v)| Ok((serialize(k)?, serialize(v)?))).collect::<Result<Vec<_>, Status>>()?;
            encode_pairs(encoded.iter().map(|(k, v)| (&k[..], &v[..])))
        }
        Value::List(items) => {
            let encoded = items.iter().map(serialize).collect::<Result<Vec<_>, Status>>()?;
            encode_pairs(encoded.iter().map(|item| (&item[..], &[][..])))
        }
        Value::Message(message) => message.encoded.clone(),
        Value::Group(_) | Value::Null => return Err(Status::SerializationFailure),
    })
}

/// The pairs encoding; an empty map is a count of zero, as Envoy writes it.
fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let encoded = pairs::encode(pairs);
    if encoded.is_empty() { vec![0; 4] } else { encoded }
}

/// The segments of a property path: SDKs join them with NUL (and may end
/// the path with one).
pub(crate) fn segments(path: &[u8]) -> Vec<&[u8]> {
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    path.split(|&b| b == 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_encode_as_envoys() {
        assert_eq!(serialize(&Value::Int(-2)).unwrap(), (-2i64).to_le_bytes());
        assert_eq!(serialize(&Value::Uint(7)).unwrap(), 7u64.to_le_bytes());
        assert_eq!(serialize(&Value::Double(1.5)).unwrap(), 1.5f64.to_le_bytes());
        assert_eq!(serialize(&Value::Bool(true)).unwrap(), [1]);
        assert_eq!(serialize(&Value::string("a")).unwrap(), b"a");
        assert_eq!(serialize(&Value::Null), Err(Status::SerializationFailure));
    }

    #[test]
    fn lists_are_pairs_with_empty_values_and_empty_maps_a_zero_count() {
        let list = Value::List(vec![Value::string("ab")]);
        assert_eq!(serialize(&list).unwrap(), b"\x01\0\0\0\x02\0\0\0\0\0\0\0ab\0\0");
        assert_eq!(serialize(&Value::Map(Vec::new())).unwrap(), [0, 0, 0, 0]);
    }

    #[test]
    fn paths_go_into_maps_lists_and_messages() {
        let inner = Value::Map(vec![(Value::string("k"), Value::List(vec![Value::Int(1), Value::Int(2)]))]);
        let message = Value::Message(Message { encoded: Vec::new(), fields: vec![("f", inner)] });
        let found = message.descend(b"f").unwrap().descend(b"k").unwrap().descend(b"1").unwrap();
        assert_eq!(found, Value::Int(2));
        assert_eq!(Value::Int(1).descend(b"x"), Err(Status::NotFound));
        assert_eq!(Value::List(vec![]).descend(b"0"), Err(Status::NotFound));
    }

    #[test]
    fn a_trailing_nul_adds_no_segment() {
        assert_eq!(segments(b"request\0path\0"), vec![&b"request"[..], b"path"]);
        assert_eq!(segments(b"plugin_name"), vec![&b"plugin_name"[..]]);
    }
}
