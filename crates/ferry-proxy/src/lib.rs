//! The proxy: listeners, worker threads, the HTTP connection manager, the
//! router and upstream clusters, the TCP proxy, with Proxy-Wasm plugins as
//! HTTP filters, network filters and services.
//!
//! [`Plan::build`] loads everything a configuration needs; [`run`] starts
//! the threads and serves until SIGINT or SIGTERM.

mod access_log;
mod admin;
mod civil;
mod connections;
mod counted;
mod envoy_stats;
mod event_loop;
mod filter;
mod filter_chains;
mod forwarding;
mod headers;
mod health;
mod http;
mod listener;
mod plan;
pub mod router;
mod server;
mod tcp_proxy;
mod tls;
mod upstream;
pub mod xds;

pub use admin::LogControl;
pub use civil::Civil;
pub use plan::{
    FilterSpec, HostRuntime, HttpPlan, ListenerPlan, ListenerService, Plan, PlanError, TcpPlan, WasmSettings,
    host_runtime,
};
pub use server::{RunError, RunOptions, check_start, run};
pub use upstream::Clusters;
