//! Properties (`proxy_get_property` / `proxy_set_property`): Envoy's
//! attributes (see `crate::attributes`) and values plugins set themselves.

use super::{Caller, HostResult, check};
use crate::attributes::{self, Facts};
use crate::limits::MAX_VALUE_BYTES;
use crate::memory::{return_copy, slice, split};
use crate::state::HostState;
use crate::stream::{HttpStream, Phase};
use std::cell::{Ref, RefMut};

use bytes::Bytes;
use ferry_abi::Status;

pub(super) fn proxy_get_property(
    mut caller: Caller<'_>,
    path_ptr: i32,
    path_len: i32,
    ptr_out: i32,
    size_out: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let path = check!(slice(mem, path_ptr, path_len));
    let value = check!(property(state, path));
    Ok(return_copy(&mut caller, &value, ptr_out, size_out)?.code())
}

pub(super) fn proxy_set_property(
    mut caller: Caller<'_>,
    path_ptr: i32,
    path_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    let (mem, state) = split(&mut caller);
    let path = check!(slice(mem, path_ptr, path_len));
    let path = path.strip_suffix(b"\0").unwrap_or(path);
    let value = check!(slice(mem, value_ptr, value_len));
    let readonly = state.declared.get(path).is_some_and(|d| d.readonly);
    let status = if let Some(mut stream) = state.attribute_stream_mut() {
        set_value(&mut stream.info.properties, path, value, readonly)
    } else {
        set_value(&mut state.root_properties, path, value, readonly)
    };
    Ok(status.code())
}

/// Sets `path` to `value` among the values a stream (or root context) holds.
fn set_value(properties: &mut Vec<(Bytes, Bytes)>, path: &[u8], value: &[u8], readonly: bool) -> Status {
    // A read-only property (`declare_property`) is set once, as Envoy's.
    if readonly && properties.iter().any(|(p, _)| p == path) {
        return Status::BadArgument;
    }
    // All values set on one stream (or root context) together stay under
    // MAX_VALUE_BYTES: a plugin setting properties in a loop gets BadArgument.
    let held: usize = properties.iter().filter(|(p, _)| p != path).map(|(p, v)| p.len() + v.len()).sum();
    if held + path.len() + value.len() > MAX_VALUE_BYTES {
        return Status::BadArgument;
    }
    let (path, value) = (Bytes::copy_from_slice(path), Bytes::copy_from_slice(value));
    match properties.iter_mut().find(|(p, _)| *p == path) {
        Some(entry) => entry.1 = value,
        None => properties.push((path, value)),
    }
    Status::Ok
}

/// The encoded value of property `path` for the acting context.
fn property(state: &HostState, path: &[u8]) -> Result<Vec<u8>, Status> {
    state
        .with_facts(|facts| {
            // The most common read, a request header, goes straight to the map.
            if let [b"request" | b"response", b"headers", name] = attributes::segments(path)[..]
                && let Some(stream) = facts.stream
            {
                return attributes::header(stream, path.starts_with(b"request"), name).ok_or(Status::NotFound);
            }
            attributes::serialize(&attributes::resolve(facts, path)?)
        })
        .ok_or(Status::NotFound)?
}

impl HostState {
    /// What attributes are read against for the acting context: its
    /// stream (none in a root context's own callbacks), plugin and VM.
    /// `None` outside a known context.
    pub(crate) fn with_facts<R>(&self, f: impl FnOnce(&Facts<'_>) -> R) -> Option<R> {
        let (_, _, plugin) = self.acting_context()?;
        let stream = self.attribute_stream();
        let facts = Facts {
            stream: stream.as_deref(),
            plugin_name: &plugin.name,
            root_id: &plugin.root_id,
            vm_id: self.module.vm_id(),
            node: &self.shared.node,
            root_properties: &self.root_properties,
        };
        Some(f(&facts))
    }

    /// Whether the acting context has a stream whose attributes it reads
    /// and sets: not a root context in its own callbacks (there the lent
    /// stream is empty), unless it acts on a stream
    /// (`proxy_set_effective_context`) or logs one (`proxy_on_log`).
    fn acts_on_stream(&self) -> bool {
        let own = self.acting_context_id() == self.call.context_id;
        !(own && matches!(self.call.phase, Phase::Root | Phase::HttpCallResponse))
    }

    fn attribute_stream(&self) -> Option<Ref<'_, HttpStream>> {
        self.acts_on_stream().then(|| self.acting_stream().map(|(stream, _)| stream)).flatten()
    }

    pub(crate) fn attribute_stream_mut(&self) -> Option<RefMut<'_, HttpStream>> {
        if !self.acts_on_stream() {
            return None;
        }
        self.acting_stream_mut().map(|(stream, _)| stream)
    }
}
