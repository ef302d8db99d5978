//! The proxy: listeners, worker threads, the HTTP connection manager, the
//! router and upstream clusters, the TCP proxy, with Proxy-Wasm plugins as
//! HTTP filters, network filters and services.
//!
//! [`Plan::build`] loads everything a configuration needs; [`run`] starts
//! the threads and serves until SIGINT or SIGTERM.

mod admin;
mod grpc;
pub mod http;
mod plan;
mod server;
mod tcp_proxy;
mod thread_wasm;
mod upstream;
mod worker;

pub use plan::{HttpPlan, ListenerPlan, ListenerService, Plan, PlanError, TcpPlan};
pub use server::{RunError, RunOptions, run};
pub use upstream::Clusters;
