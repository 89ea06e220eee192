//! Upstream pools: the servers behind one config name, and how a request picks one.

mod balance;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Balance, UpstreamConfig, UpstreamTimeouts};

pub use balance::Tried;

/// One server of one pool. Shared (by `Arc`) between snapshots while its pool keeps it, so
/// counters survive reloads.
#[derive(Debug)]
pub struct UpstreamServer {
    pub addr: SocketAddr,
    /// `addr` as text, made once for logs.
    pub label: String,
    /// Requests currently using this server (for `least_conn`).
    in_flight: AtomicUsize,
}

/// The servers of one `[upstreams.NAME]` and its policy.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub servers: Vec<Arc<UpstreamServer>>,
    pub balance: Balance,
    pub timeouts: UpstreamTimeouts,
    /// Rotates the starting point for round robin and tie-breaking.
    cursor: AtomicUsize,
}

/// Holds one in-flight slot on a server; dropping it releases the slot.
#[derive(Debug)]
pub struct InFlight {
    server: Arc<UpstreamServer>,
}

// === impl UpstreamServer ===

impl UpstreamServer {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            label: addr.to_string(),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks one more request on this server until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            server: Arc::clone(self),
        }
    }
}

// === impl InFlight ===

impl InFlight {
    pub fn server(&self) -> &Arc<UpstreamServer> {
        &self.server
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Pool ===

impl Pool {
    /// Builds a pool, reusing server state from `previous` for addresses it already had.
    pub fn new(config: &UpstreamConfig, previous: Option<&Pool>) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|addr| {
                previous
                    .and_then(|p| p.servers.iter().find(|s| s.addr == *addr))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(UpstreamServer::new(*addr)))
            })
            .collect();
        Self {
            name: config.name.clone(),
            servers,
            balance: config.balance.clone(),
            timeouts: config.timeouts,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks a server not yet tried for this request, by the pool's policy, with its index.
    /// `hash_key` is used by `consistent_hash` only.
    pub fn select(&self, hash_key: u64, tried: &Tried) -> Option<(usize, &Arc<UpstreamServer>)> {
        let start = || self.cursor.fetch_add(1, Ordering::Relaxed);
        let index = match self.balance {
            Balance::RoundRobin => balance::first_untried(self.servers.len(), start(), tried),
            Balance::Random => {
                balance::first_untried(self.servers.len(), rand::random::<u32>() as usize, tried)
            }
            Balance::LeastConn => balance::least_loaded(&self.servers, start(), tried),
            Balance::ConsistentHash { .. } => {
                balance::highest_random_weight(&self.servers, hash_key, tried)
            }
        }?;
        self.servers.get(index).map(|server| (index, server))
    }
}
