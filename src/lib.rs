//! Headland: an edge reverse proxy and GeoDNS-aware load balancer on Pingora.
//!
//! `main.rs` is a thin CLI over this library; integration tests drive the real binary.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod client_ip;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dns;
pub mod host;
pub mod metrics;
pub mod path;
pub mod pid_file;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod webhook;
