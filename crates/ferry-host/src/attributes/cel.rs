//! Envoy's `expr_create`, `expr_evaluate` and `expr_delete` foreign
//! functions: CEL expressions (on the `cel` crate) over the same
//! attributes `proxy_get_property` reads.
//!
//! An expression belongs to the root context that created it and is known
//! by a token (a `u32`, little-endian on the wire). Evaluation sees the
//! attributes of the acting context; its result is encoded as a property's.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_abi::Status;
use rustc_hash::FxHashMap;

use super::vocabulary::{self, Facts, Group};
use super::{Value, serialize};
use crate::limits::MAX_EXPRESSIONS;

/// The longest expression accepted, and the deepest nesting of brackets
/// and unary operators: CEL's parser recurses on both.
const MAX_SOURCE_BYTES: usize = 4096;
const MAX_NESTING: usize = 32;

/// The compiled expressions of one VM instance, by (root context, token).
#[derive(Default)]
pub struct Expressions {
    programs: FxHashMap<(u32, u32), Arc<cel::Program>>,
    next_token: u32,
}

impl Expressions {
    /// Compiles `source` for root context `root`; its token.
    /// `BadArgument` for what does not compile (as Envoy), or when the
    /// instance holds [`MAX_EXPRESSIONS`] already.
    pub(crate) fn create(&mut self, root: u32, source: &[u8]) -> Result<u32, Status> {
        let source = std::str::from_utf8(source).map_err(|_| Status::BadArgument)?;
        if source.len() > MAX_SOURCE_BYTES || nesting(source) > MAX_NESTING || self.programs.len() >= MAX_EXPRESSIONS {
            return Err(Status::BadArgument);
        }
        let program = cel::Program::compile(source).map_err(|_| Status::BadArgument)?;
        while self.programs.contains_key(&(root, self.next_token)) {
            self.next_token = self.next_token.wrapping_add(1);
        }
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.programs.insert((root, token), Arc::new(program));
        Ok(token)
    }

    /// The expression `token` of `root`, if it exists.
    pub(crate) fn get(&self, root: u32, token: u32) -> Option<Arc<cel::Program>> {
        self.programs.get(&(root, token)).cloned()
    }

    /// Forgets an expression (an unknown token is no error, as Envoy's).
    pub(crate) fn delete(&mut self, root: u32, token: u32) {
        self.programs.remove(&(root, token));
    }

    /// Forgets every expression of a root context that ended.
    pub(crate) fn forget_root(&mut self, root: u32) {
        self.programs.retain(|(r, _), _| *r != root);
    }
}

/// Evaluates `program` against `facts`; the result encoded as a property.
/// `InternalFailure` when evaluation fails (an unknown attribute, a type
/// error), as Envoy.
pub(crate) fn evaluate(program: &cel::Program, facts: &Facts<'_>) -> Result<Vec<u8>, Status> {
    let mut context = cel::Context::default();
    for name in program.references().variables() {
        if let Some(value) = vocabulary::top(facts, name.as_bytes()) {
            context.add_variable_from_value(name, to_cel(facts, value));
        }
    }
    let result = program.execute(&context).map_err(|_| Status::InternalFailure)?;
    serialize(&from_cel(result)?)
}

/// The deepest run of opening brackets and unary operators, counted
/// without regard to string literals (an over-estimate, never under).
fn nesting(source: &str) -> usize {
    let (mut depth, mut deepest, mut unary_run) = (0usize, 0usize, 0usize);
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        unary_run = if matches!(c, '!' | '-') {
            unary_run + 1
        } else if c.is_whitespace() {
            unary_run
        } else {
            0
        };
        deepest = deepest.max(depth).max(unary_run);
    }
    deepest
}

fn to_cel(facts: &Facts<'_>, value: Value) -> cel::Value {
    use cel::Value as C;
    match value {
        Value::String(s) => C::String(Arc::new(String::from_utf8_lossy(&s).into_owned())),
        Value::Bytes(b) => C::Bytes(Arc::new(b)),
        Value::Int(n) => C::Int(n),
        Value::Uint(n) => C::UInt(n),
        Value::Double(n) => C::Float(n),
        Value::Bool(b) => C::Bool(b),
        Value::Duration(ns) => C::Duration(chrono::Duration::nanoseconds(ns)),
        Value::Timestamp(ns) => C::Timestamp(chrono::DateTime::from_timestamp_nanos(ns).fixed_offset()),
        Value::Map(entries) => map(facts, entries),
        Value::List(items) => C::List(Arc::new(items.into_iter().map(|v| to_cel(facts, v)).collect())),
        Value::Message(message) => {
            map(facts, message.fields.into_iter().map(|(name, value)| (Value::string(name), value)).collect())
        }
        Value::Group(group) => group_value(facts, group),
        Value::Null => C::Null,
    }
}

fn group_value(facts: &Facts<'_>, group: Group) -> cel::Value {
    to_cel(facts, vocabulary::group_map(facts, group))
}

fn map(facts: &Facts<'_>, entries: Vec<(Value, Value)>) -> cel::Value {
    let map: HashMap<cel::objects::Key, cel::Value> = entries
        .into_iter()
        .filter_map(|(key, value)| {
            let key = match key {
                Value::String(s) | Value::Bytes(s) => {
                    cel::objects::Key::String(Arc::new(String::from_utf8_lossy(&s).into_owned()))
                }
                Value::Int(n) => cel::objects::Key::Int(n),
                Value::Uint(n) => cel::objects::Key::Uint(n),
                Value::Bool(b) => cel::objects::Key::Bool(b),
                _ => return None,
            };
            Some((key, to_cel(facts, value)))
        })
        .collect();
    cel::Value::Map(map.into())
}

fn from_cel(value: cel::Value) -> Result<Value, Status> {
    use cel::Value as C;
    Ok(match value {
        C::String(s) => Value::string(s.as_bytes()),
        C::Bytes(b) => Value::Bytes(b.to_vec()),
        C::Int(n) => Value::Int(n),
        C::UInt(n) => Value::Uint(n),
        C::Float(n) => Value::Double(n),
        C::Bool(b) => Value::Bool(b),
        C::Duration(d) => Value::Duration(d.num_nanoseconds().ok_or(Status::SerializationFailure)?),
        C::Timestamp(t) => Value::Timestamp(t.timestamp_nanos_opt().ok_or(Status::SerializationFailure)?),
        C::List(items) => Value::List(items.iter().cloned().map(from_cel).collect::<Result<_, _>>()?),
        C::Map(map) => {
            let mut entries = Vec::with_capacity(map.map.len());
            for (key, value) in map.map.iter() {
                let key = match key {
                    cel::objects::Key::String(s) => Value::string(s.as_bytes()),
                    cel::objects::Key::Int(n) => Value::Int(*n),
                    cel::objects::Key::Uint(n) => Value::Uint(*n),
                    cel::objects::Key::Bool(b) => Value::Bool(*b),
                };
                entries.push((key, from_cel(value.clone())?));
            }
            Value::Map(entries)
        }
        C::Null => Value::Null,
        _ => return Err(Status::SerializationFailure),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Node;
    use crate::stream::HttpStream;

    fn facts<'a>(stream: &'a HttpStream, node: &'a Node) -> Facts<'a> {
        Facts { stream: Some(stream), plugin_name: "p", root_id: "r", vm_id: "v", node, root_properties: &[] }
    }

    fn eval(source: &str, stream: &HttpStream) -> Result<Vec<u8>, Status> {
        let mut expressions = Expressions::default();
        let token = expressions.create(1, source.as_bytes())?;
        let node = Node { id: "node-1".into(), ..Node::default() };
        evaluate(&expressions.get(1, token).unwrap(), &facts(stream, &node))
    }

    #[test]
    fn expressions_read_request_attributes() {
        let mut stream = HttpStream::default();
        stream.request_headers.add(b":path", b"/api/v1?x=1");
        stream.request_headers.add(b":method", b"GET");
        stream.request_headers.add(b"x-team", b"blue");
        let yes = eval("request.url_path.startsWith('/api') && request.headers['x-team'] == 'blue'", &stream);
        assert_eq!(yes.unwrap(), [1]);
        assert_eq!(eval("request.method + ' ' + request.query", &stream).unwrap(), b"GET x=1");
        assert_eq!(eval("xds.node.id", &stream).unwrap(), b"node-1");
        assert_eq!(eval("size(request.headers)", &stream).unwrap(), 3i64.to_le_bytes());
    }

    #[test]
    fn what_does_not_compile_or_evaluate_is_refused_as_envoy_does() {
        let stream = HttpStream::default();
        assert_eq!(eval("request.path ==", &stream), Err(Status::BadArgument));
        assert_eq!(eval("no_such_attribute + 1", &stream), Err(Status::InternalFailure));
        assert_eq!(eval("1 / 0", &stream), Err(Status::InternalFailure));
    }

    #[test]
    fn deep_nesting_and_long_sources_are_refused_before_the_parser_sees_them() {
        let stream = HttpStream::default();
        for source in ["(".repeat(5000) + "1" + &")".repeat(5000), "!".repeat(4000) + "true", "1+".repeat(3000) + "1"] {
            assert_eq!(eval(&source, &stream), Err(Status::BadArgument), "{}", &source[..20]);
        }
        let nested = "(".repeat(MAX_NESTING) + "1" + &")".repeat(MAX_NESTING);
        assert_eq!(eval(&nested, &stream).unwrap(), 1i64.to_le_bytes());
    }

    #[test]
    fn tokens_are_per_root_and_a_deleted_one_is_gone() {
        let mut expressions = Expressions::default();
        let a = expressions.create(1, b"1").unwrap();
        let b = expressions.create(1, b"2").unwrap();
        assert_ne!(a, b);
        assert!(expressions.get(2, a).is_none(), "another root's token");
        expressions.delete(1, a);
        assert!(expressions.get(1, a).is_none());
        expressions.delete(1, a);
        expressions.forget_root(1);
        assert!(expressions.get(1, b).is_none());
    }
}
