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

/// What unit tests share.
#[cfg(test)]
mod testing {
    /// A new, empty directory under the system's temporary directory; the test removes it.
    pub fn temp_dir(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "headland-{label}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        dir
    }
}
