//! Proxy-Wasm ABI types shared by the host and by anything that speaks the ABI.
//!
//! This crate knows nothing about wasmtime, sockets or threads: it holds the
//! numbers of the ABI (status codes and enumerations, as in the spec's "Types"
//! section), the ABI version markers a module exports, and the "pairs"
//! encoding used for header maps. Keeping them here lets test tools and other
//! embedders use the same definitions as the host.

pub mod enums;
pub mod pairs;
pub mod version;

pub use enums::{BufferType, HeadersAction, LogLevel, MapType, MetricType, PeerType, Status, StreamType};
pub use version::AbiVersion;
