//! Upstream pools: the servers behind one config name, and how a request picks one.

mod balance;
pub mod health;
mod probe;
pub mod regions;
pub mod registry;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Balance, HealthCheck, PassiveHealth, UpstreamConfig, UpstreamTimeouts};

pub use balance::Tried;
use health::{Health, PassiveState, ServerHealth};

/// One server of one pool. Shared (by `Arc`) between snapshots while its pool keeps it, so
/// counters survive reloads.
#[derive(Debug)]
pub struct UpstreamServer {
    pub addr: SocketAddr,
    /// `addr` as text, made once for logs.
    pub label: String,
    /// Requests currently using this server (for `least_conn`).
    in_flight: AtomicUsize,
    pub health: ServerHealth,
    pub passive: PassiveState,
}

/// The servers of one `[upstreams.NAME]` and its policy.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub servers: Vec<Arc<UpstreamServer>>,
    pub balance: Balance,
    pub timeouts: UpstreamTimeouts,
    pub health_check: Option<HealthCheck>,
    pub passive: PassiveHealth,
    pub retries: u32,
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
    pub fn new(addr: SocketAddr, initial: Health) -> Self {
        Self {
            addr,
            label: addr.to_string(),
            in_flight: AtomicUsize::new(0),
            health: ServerHealth::new(initial),
            passive: PassiveState::default(),
        }
    }

    /// Whether requests may go here: not known down, not ejected.
    pub fn is_usable(&self) -> bool {
        self.health.get().is_usable() && !self.passive.is_ejected()
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
        let initial = match &config.health {
            Some(check) if check.start_down => Health::Down,
            _ => Health::Unknown,
        };
        let servers = config
            .servers
            .iter()
            .map(|addr| {
                previous
                    .and_then(|p| p.servers.iter().find(|s| s.addr == *addr))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(UpstreamServer::new(*addr, initial)))
            })
            .collect();
        Self {
            name: config.name.clone(),
            servers,
            balance: config.balance.clone(),
            timeouts: config.timeouts,
            health_check: config.health.clone(),
            passive: config.passive,
            retries: config.retries,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks a server not yet tried for this request, by the pool's policy, with its index.
    /// `hash_key` is used by `consistent_hash` only.
    pub fn select(&self, hash_key: u64, tried: &Tried) -> Option<(usize, &Arc<UpstreamServer>)> {
        // Servers known to be down are skipped as if this request had tried them already.
        let mut excluded;
        let tried = if self.servers.iter().all(|s| s.is_usable()) {
            tried
        } else {
            excluded = tried.clone();
            for (index, server) in self.servers.iter().enumerate() {
                if !server.is_usable() {
                    excluded.insert(index);
                }
            }
            &excluded
        };
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

    /// Whether any server may take requests: false only when every server is known down.
    pub fn is_available(&self) -> bool {
        self.servers.iter().any(|s| s.is_usable())
    }

    /// Whether this node may be named to other regions and to DNS as able to serve the pool:
    /// a usable server and, when the pool has active checks, one that has passed them. A
    /// restarted node is not ready before its first `rise` checks, although it already
    /// tries its servers for requests that reach it.
    pub fn is_ready(&self) -> bool {
        match self.health_check {
            Some(_) => self
                .servers
                .iter()
                .any(|s| s.is_usable() && s.health.get() == Health::Up),
            None => self.is_available(),
        }
    }

    /// Records what a real request saw from `server`. Returns true if it got ejected: never
    /// the pool's last usable server, so passive health alone cannot take a pool down.
    pub fn record_outcome(&self, server: &UpstreamServer, ok: bool) -> bool {
        if ok {
            server.passive.record_success();
            return false;
        }
        let others_usable = self
            .servers
            .iter()
            .any(|s| s.addr != server.addr && s.is_usable());
        server
            .passive
            .record_failure(self.passive.failures, self.passive.eject, others_usable)
    }

    /// Whether `server` is a usable server this request has not tried.
    pub fn has_untried_usable(&self, tried: &Tried) -> bool {
        self.servers
            .iter()
            .enumerate()
            .any(|(index, server)| !tried.contains(index) && server.is_usable())
    }
}
