//! Every end-to-end test of the `ferry` binary, in one test binary (one
//! link of wasmtime, hyper and rustls instead of one per file): each
//! module is one area, named as before (`cargo test -p ferry --test it --
//! containment::`). The conformance kit's runner stays a binary of its
//! own (`tests/conformance.rs`, data-driven, one test per case).

#[path = "../common/mod.rs"]
mod common;

mod access_log;
mod admin;
mod bodies;
mod cli;
mod clusters;
mod compilation;
mod compression;
mod config_input;
mod containment;
mod failures;
mod fleet;
mod foreign_functions;
mod grpc;
mod http2;
mod http_calls;
mod limits;
mod proxy;
mod routing;
mod sdk_surface;
mod services;
mod shared_queue;
mod shared_queue_multi;
mod streaming;
mod tcp;
mod tls;
mod trailers;
