//! Upstream pools: the servers behind one config name, and how a request picks one.
//!
//! A pool's servers are its configured addresses and Unix sockets plus, for each host name it
//! lists, every address the name last resolved to (`resolve` keeps those current). The list
//! is swapped whole when a name's addresses change; a server that stays keeps its state.

mod balance;
pub mod drain;
pub mod health;
mod probe;
pub mod regions;
pub mod registry;
mod resolve;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use pingora::{Error, ErrorType};

use crate::config::{
    Balance, HealthCheck, HostPort, PassiveHealth, ServerAddress, UpstreamConfig, UpstreamTimeouts,
    UpstreamTls,
};

pub use balance::Tried;
use health::{Health, PassiveState, ServerHealth};

/// Where one server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

/// One server of one pool. Shared (by `Arc`) between snapshots while its pool keeps it, so
/// counters survive reloads.
#[derive(Debug)]
pub struct UpstreamServer {
    pub endpoint: Endpoint,
    /// The host name this address was resolved from: the name TLS verifies and the health
    /// check's Host. `None` for addresses and sockets written as such.
    pub host: Option<String>,
    /// `endpoint` as text (`unix:/path` for sockets), made once for logs and metrics.
    pub label: String,
    /// Requests currently using this server (for `least_conn`).
    in_flight: AtomicUsize,
    /// Taken out by an operator (`drain::Drains`): no new requests, whatever its health.
    drained: AtomicBool,
    pub health: ServerHealth,
    pub passive: PassiveState,
}

/// A pool's servers, swapped whole when a host name's addresses change. Requests load the
/// list once and pick from that.
#[derive(Debug)]
pub struct ServerList(ArcSwap<Vec<Arc<UpstreamServer>>>);

/// The servers of one `[upstreams.NAME]` and its policy.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub servers: ServerList,
    /// `servers` as configured, in order.
    sources: Vec<ServerAddress>,
    /// The last good addresses of each host name among `sources`.
    resolved: Mutex<BTreeMap<HostPort, Vec<SocketAddr>>>,
    /// What a server new to the pool starts as.
    initial: Health,
    pub balance: Balance,
    pub timeouts: UpstreamTimeouts,
    pub health_check: Option<HealthCheck>,
    pub passive: PassiveHealth,
    pub retries: u32,
    pub tls: Option<PoolTls>,
    /// Rotates the starting point for round robin and tie-breaking.
    cursor: AtomicUsize,
}

/// `tls = { ... }` ready for Pingora's connector.
#[derive(Debug)]
pub struct PoolTls {
    pub config: UpstreamTls,
    ca: Option<Arc<[WrappedX509]>>,
    /// Keeps connections verified under other settings (another CA after a reload) apart:
    /// Pingora's connection reuse does not tell CAs apart by itself.
    group_key: u64,
}

/// Holds one in-flight slot on a server; dropping it releases the slot.
#[derive(Debug)]
pub struct InFlight {
    server: Arc<UpstreamServer>,
}

// === impl Endpoint ===

impl Hash for Endpoint {
    /// The address or path alone, so that `consistent_hash` places keys as it did before
    /// servers could be sockets.
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Endpoint::Inet(addr) => addr.hash(state),
            Endpoint::Unix(path) => path.hash(state),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet(addr) => addr.fmt(f),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

// === impl UpstreamServer ===

impl UpstreamServer {
    pub fn new(endpoint: Endpoint, host: Option<String>, initial: Health) -> Self {
        Self {
            label: endpoint.to_string(),
            endpoint,
            host,
            in_flight: AtomicUsize::new(0),
            drained: AtomicBool::new(false),
            health: ServerHealth::new(initial),
            passive: PassiveState::default(),
        }
    }

    /// Whether requests may go here: healthy and not drained.
    pub fn is_usable(&self) -> bool {
        self.is_healthy() && !self.is_drained()
    }

    /// Not known down, not ejected: what `headland_upstream_up` reports, drained or not.
    pub fn is_healthy(&self) -> bool {
        self.health.get().is_usable() && !self.passive.is_ejected()
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Requests already on the server finish; `select` stops choosing it.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    /// Whether `id` names this server: its address (or `unix:` path) as listed in status,
    /// or the `NAME:PORT` it was resolved from, which names every address of that name.
    pub fn is_named(&self, id: &str) -> bool {
        self.label == id || (self.host.is_some() && self.authority() == id)
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

    /// The Host a health check sends by default: the name and port it was resolved from,
    /// the address, or `localhost` for a socket.
    pub fn authority(&self) -> String {
        match (&self.endpoint, &self.host) {
            (Endpoint::Inet(addr), Some(host)) => format!("{host}:{}", addr.port()),
            (Endpoint::Inet(addr), None) => addr.to_string(),
            (Endpoint::Unix(_), _) => "localhost".to_owned(),
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

// === impl ServerList ===

impl ServerList {
    pub fn load(&self) -> Arc<Vec<Arc<UpstreamServer>>> {
        self.0.load_full()
    }
}

impl IntoIterator for &ServerList {
    type Item = Arc<UpstreamServer>;
    type IntoIter = std::vec::IntoIter<Arc<UpstreamServer>>;

    /// The servers at the time of the call.
    fn into_iter(self) -> Self::IntoIter {
        self.load().as_ref().clone().into_iter()
    }
}

// === impl PoolTls ===

impl PoolTls {
    fn new(config: &UpstreamTls) -> Self {
        let mut hasher = DefaultHasher::new();
        (&config.ca, &config.sni, config.verify).hash(&mut hasher);
        let ca = config.ca.as_ref().map(|ders| {
            ders.iter()
                .map(|der| WrappedX509::new(der.clone(), pingora::utils::tls::parse_x509))
                .collect()
        });
        Self {
            config: config.clone(),
            ca,
            group_key: hasher.finish(),
        }
    }

    /// The name sent as SNI and verified: `sni`, else the server's host name, else its IP
    /// address (rustls sends no SNI for an address and verifies it against the IP SANs).
    /// Empty for a socket without `sni`, which only `verify = false` allows.
    fn server_name(&self, server: &UpstreamServer) -> String {
        match (&self.config.sni, &server.host, &server.endpoint) {
            (Some(sni), _, _) => sni.clone(),
            (None, Some(host), _) => host.clone(),
            (None, None, Endpoint::Inet(addr)) => addr.ip().to_string(),
            (None, None, Endpoint::Unix(_)) => String::new(),
        }
    }
}

// === impl Pool ===

impl Pool {
    /// Builds a pool, reusing from `previous` the state of servers it already had and the
    /// addresses its host names last resolved to.
    pub fn new(config: &UpstreamConfig, previous: Option<&Pool>) -> Self {
        let initial = match &config.health {
            Some(check) if check.start_down => Health::Down,
            _ => Health::Unknown,
        };
        let resolved: BTreeMap<HostPort, Vec<SocketAddr>> = previous
            .and_then(|p| p.resolved.lock().ok().map(|r| r.clone()))
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| config.servers.contains(&ServerAddress::Name(name.clone())))
            .collect();
        let old = previous.map(|p| p.servers.load()).unwrap_or_default();
        let servers = assemble(&config.servers, &resolved, &old, initial);
        let tls = config.tls.as_ref().map(PoolTls::new);
        if tls.as_ref().is_some_and(|tls| !tls.config.verify) {
            tracing::warn!(upstream = %config.name, "tls verify = false: any certificate is accepted, so anyone on the path can read and change this pool's traffic");
        }
        Self {
            name: config.name.clone(),
            servers: ServerList(ArcSwap::from_pointee(servers)),
            sources: config.servers.clone(),
            resolved: Mutex::new(resolved),
            initial,
            balance: config.balance.clone(),
            timeouts: config.timeouts,
            health_check: config.health.clone(),
            passive: config.passive,
            retries: config.retries,
            tls,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Whether `name` is among the configured servers.
    pub fn lists(&self, name: &HostPort) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, ServerAddress::Name(n) if n == name))
    }

    /// Makes `addresses` the servers of host name `name`; returns whether the pool's servers
    /// changed. Servers that stay keep their state.
    pub fn set_resolved(&self, name: &HostPort, addresses: &[SocketAddr]) -> bool {
        let Ok(mut resolved) = self.resolved.lock() else {
            return false;
        };
        if !self.lists(name) || resolved.get(name).map(Vec::as_slice) == Some(addresses) {
            return false;
        }
        resolved.insert(name.clone(), addresses.to_vec());
        let servers = assemble(&self.sources, &resolved, &self.servers.load(), self.initial);
        self.servers.0.store(Arc::new(servers));
        true
    }

    /// The peer Pingora connects to for `server`: TCP or the socket, TLS per `tls`, the
    /// pool's timeouts.
    pub fn peer(&self, server: &UpstreamServer) -> pingora::Result<HttpPeer> {
        let tls = self.tls.as_ref();
        let sni = tls.map_or_else(String::new, |tls| tls.server_name(server));
        let mut peer = match &server.endpoint {
            Endpoint::Inet(addr) => HttpPeer::new(*addr, tls.is_some(), sni),
            Endpoint::Unix(path) => {
                let Some(path) = path.to_str() else {
                    return Error::e_explain(ErrorType::SocketError, "socket path is not UTF-8");
                };
                HttpPeer::new_uds(path, tls.is_some(), sni)?
            }
        };
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.read);
        peer.options.write_timeout = Some(self.timeouts.write);
        peer.options.idle_timeout = Some(self.timeouts.keepalive);
        if let Some(tls) = tls {
            peer.options.verify_cert = tls.config.verify;
            peer.options.verify_hostname = tls.config.verify;
            peer.options.ca = tls.ca.clone();
            peer.group_key = tls.group_key;
        }
        Ok(peer)
    }

    /// Picks a server not yet tried for this request, by the pool's policy, with its index.
    /// `hash_key` is used by `consistent_hash` only.
    ///
    /// Indexes refer to the server list of the moment: when a host name's addresses change
    /// during a request, its retry may see another list (and at worst try a server again).
    pub fn select(&self, hash_key: u64, tried: &Tried) -> Option<(usize, Arc<UpstreamServer>)> {
        let servers = self.servers.load();
        // Servers known to be down are skipped as if this request had tried them already.
        let mut excluded;
        let tried = if servers.iter().all(|s| s.is_usable()) {
            tried
        } else {
            excluded = tried.clone();
            for (index, server) in servers.iter().enumerate() {
                if !server.is_usable() {
                    excluded.insert(index);
                }
            }
            &excluded
        };
        let start = || self.cursor.fetch_add(1, Ordering::Relaxed);
        let index = match self.balance {
            Balance::RoundRobin => balance::first_untried(servers.len(), start(), tried),
            Balance::Random => {
                balance::first_untried(servers.len(), rand::random::<u32>() as usize, tried)
            }
            Balance::LeastConn => balance::least_loaded(&servers, start(), tried),
            Balance::ConsistentHash { .. } => {
                balance::highest_random_weight(&servers, hash_key, tried)
            }
        }?;
        servers.get(index).map(|server| (index, Arc::clone(server)))
    }

    /// Whether any server may take requests: false only when every server is known down.
    pub fn is_available(&self) -> bool {
        self.servers.load().iter().any(|s| s.is_usable())
    }

    /// Whether this node may be named to other regions and to DNS as able to serve the pool:
    /// a usable server and, when the pool has active checks, one that has passed them. A
    /// restarted node is not ready before its first `rise` checks, although it already
    /// tries its servers for requests that reach it.
    pub fn is_ready(&self) -> bool {
        match self.health_check {
            Some(_) => self
                .servers
                .load()
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
            .load()
            .iter()
            .any(|s| !std::ptr::eq(s.as_ref(), server) && s.is_usable());
        server
            .passive
            .record_failure(self.passive.failures, self.passive.eject, others_usable)
    }

    /// Whether `server` is a usable server this request has not tried.
    pub fn has_untried_usable(&self, tried: &Tried) -> bool {
        self.servers
            .load()
            .iter()
            .enumerate()
            .any(|(index, server)| !tried.contains(index) && server.is_usable())
    }
}

/// The servers of `sources` in order, each endpoint once: a host name stands for its
/// resolved addresses (none before its first answer). Servers already in `old` are reused.
fn assemble(
    sources: &[ServerAddress],
    resolved: &BTreeMap<HostPort, Vec<SocketAddr>>,
    old: &[Arc<UpstreamServer>],
    initial: Health,
) -> Vec<Arc<UpstreamServer>> {
    let mut servers: Vec<Arc<UpstreamServer>> = Vec::with_capacity(sources.len());
    let mut add = |endpoint: Endpoint, host: Option<&str>| {
        if servers.iter().any(|s| s.endpoint == endpoint) {
            return;
        }
        let server = old
            .iter()
            .find(|s| s.endpoint == endpoint)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(UpstreamServer::new(
                    endpoint,
                    host.map(str::to_owned),
                    initial,
                ))
            });
        servers.push(server);
    };
    for source in sources {
        match source {
            ServerAddress::Ip(addr) => add(Endpoint::Inet(*addr), None),
            ServerAddress::Unix(path) => add(Endpoint::Unix(path.clone()), None),
            ServerAddress::Name(name) => {
                for addr in resolved.get(name).into_iter().flatten() {
                    add(Endpoint::Inet(*addr), Some(&name.host));
                }
            }
        }
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use pingora::upstreams::peer::Peer;
    use std::path::Path;
    use std::time::Duration;

    fn pool(text: &str, previous: Option<&Pool>) -> Pool {
        let config = config::parse(text, "test.toml", Path::new("/")).unwrap();
        Pool::new(&config.upstreams[0], previous)
    }

    fn labels(pool: &Pool) -> Vec<String> {
        pool.servers
            .load()
            .iter()
            .map(|s| s.label.clone())
            .collect()
    }

    const NAMED: &str = r#"
[upstreams.app]
servers = ["10.0.0.1:80", "app.internal:80", "unix:/run/app.sock"]
"#;

    #[test]
    fn a_name_stands_for_its_addresses_and_servers_that_stay_keep_their_state() {
        let first = pool(NAMED, None);
        let name = HostPort {
            host: "app.internal".to_owned(),
            port: 80,
        };
        assert_eq!(labels(&first), ["10.0.0.1:80", "unix:/run/app.sock"]);
        let at = |last: u8| SocketAddr::from(([10, 0, 1, last], 80));
        assert!(first.set_resolved(&name, &[at(1), at(2)]));
        assert!(!first.set_resolved(&name, &[at(1), at(2)]), "same answer");
        assert_eq!(
            labels(&first),
            [
                "10.0.0.1:80",
                "10.0.1.1:80",
                "10.0.1.2:80",
                "unix:/run/app.sock"
            ]
        );
        let stays = Arc::clone(&first.servers.load()[2]);
        stays
            .passive
            .record_failure(1, Duration::from_secs(60), true);
        assert!(first.set_resolved(&name, &[at(2), at(3)]));
        assert!(Arc::ptr_eq(&first.servers.load()[1], &stays));
        assert!(stays.passive.is_ejected(), "state kept across answers");
        assert_eq!(
            labels(&first),
            [
                "10.0.0.1:80",
                "10.0.1.2:80",
                "10.0.1.3:80",
                "unix:/run/app.sock"
            ]
        );

        // A reload keeps the answer and the servers.
        let second = pool(NAMED, Some(&first));
        assert_eq!(labels(&second), labels(&first));
        assert!(Arc::ptr_eq(&second.servers.load()[1], &stays));
        // An address the name shares with a listed one is one server.
        assert!(second.set_resolved(&name, &[SocketAddr::from(([10, 0, 0, 1], 80))]));
        assert_eq!(labels(&second), ["10.0.0.1:80", "unix:/run/app.sock"]);
    }

    #[test]
    fn the_name_tls_verifies_is_sni_else_the_host_name_else_the_address() {
        let with = |tls: &str| pool(&format!("{NAMED}tls = {tls}\n"), None);
        let name = HostPort {
            host: "app.internal".to_owned(),
            port: 80,
        };
        let resolved = SocketAddr::from(([10, 0, 1, 1], 80));
        let plain = pool(NAMED, None);
        plain.set_resolved(&name, &[resolved]);
        let servers = plain.servers.load();
        let peer = plain.peer(&servers[0]).unwrap();
        assert!(!peer.tls() && peer.sni().is_empty());

        let named = with("{ sni = \"api.internal\", verify = false }");
        named.set_resolved(&name, &[resolved]);
        for server in named.servers.load().iter() {
            let peer = named.peer(server).unwrap();
            assert!(peer.tls() && !peer.verify_cert());
            assert_eq!(peer.sni(), "api.internal");
        }

        let defaults = with("{ verify = false }");
        defaults.set_resolved(&name, &[resolved]);
        let servers = defaults.servers.load();
        let snis: Vec<String> = servers
            .iter()
            .map(|s| defaults.peer(s).unwrap().sni().to_owned())
            .collect();
        assert_eq!(snis, ["10.0.0.1", "app.internal", ""]);
    }
}
