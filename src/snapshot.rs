//! One configuration generation, fully built: routes, pools, client-IP policy. Requests load
//! the current snapshot once and finish on it; a reload builds a new one off the request path
//! and swaps it in atomically (DESIGN.md decision 1).

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::utils::tls::WrappedX509;
use tokio::sync::watch;

use crate::client_ip::ClientIpPolicy;
use crate::config::Config;
use crate::proxy::region_fallback;
use crate::proxy::route_table::RouteTable;
use crate::ratelimit::Limiter;
use crate::tls::CertIndex;
use crate::upstream::Pool;

#[derive(Debug)]
pub struct Snapshot {
    /// Starts at 1 and grows by one per successful reload.
    pub generation: u64,
    pub config: Config,
    pub routes: RouteTable,
    /// In config order: `pools[i]` belongs to `config.upstreams[i]`.
    pub pools: Vec<Arc<Pool>>,
    /// In config order, like `config.rate_limits`.
    pub limiters: Vec<Arc<Limiter>>,
    pub client_ip: ClientIpPolicy,
    pub certs: CertIndex,
    /// `[tls] edge_ca_file`, ready for the region fallback's connections.
    pub edge_ca: Option<Arc<[WrappedX509]>>,
}

/// The one place the current snapshot lives, shared by every service. Background tasks that
/// derive state from the snapshot (health checks) subscribe to hear about new generations.
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds generation `generation` from `config`, carrying per-server state over from
    /// `previous` for every pool server that is still configured.
    pub fn build(config: Config, generation: u64, previous: Option<&Snapshot>) -> Self {
        let pools: Vec<Arc<Pool>> = config
            .upstreams
            .iter()
            .map(|upstream| {
                let old = previous.and_then(|p| p.pool(&upstream.name));
                Arc::new(Pool::new(upstream, old.map(Arc::as_ref)))
            })
            .collect();
        // A limit whose settings did not change keeps its counters across the reload.
        let limiters: Vec<Arc<Limiter>> = config
            .rate_limits
            .iter()
            .map(|limit| {
                previous
                    .and_then(|p| p.limiters.iter().find(|l| l.config == *limit))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Limiter::new(limit.clone())))
            })
            .collect();
        let routes = RouteTable::new(&config.routes, &pools, &limiters);
        let client_ip = ClientIpPolicy::new(&config.client_ip);
        let certs = CertIndex::new(&config.tls);
        let edge_ca = config.tls.edge_ca.as_deref().map(region_fallback::trust);
        Self {
            generation,
            config,
            routes,
            pools,
            limiters,
            client_ip,
            certs,
            edge_ca,
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }
}

// === impl SnapshotCell ===

impl SnapshotCell {
    pub fn new(first: Snapshot) -> Self {
        let (generation, _) = watch::channel(first.generation);
        Self {
            current: ArcSwap::from_pointee(first),
            generation,
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `next` current and tells subscribers.
    pub fn publish(&self, next: Snapshot) {
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.generation.send_replace(generation);
    }

    /// Changes whenever a new snapshot is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
