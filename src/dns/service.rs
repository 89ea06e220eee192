//! The DNS server as a Headland service: sockets bound at start-up (so an address this
//! user cannot bind fails the start; note that SO_REUSEPORT lets a second Headland of the
//! same user share the port rather than fail), answers from the current snapshot's `DnsView` (a reload
//! swaps zones, regions and the GeoIP database between two queries), region health from the
//! `HealthRegistry`, and metrics per query.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use hickory_proto::rr::Name;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounter;
use socket2::{Domain, Protocol, Socket, Type};

use super::{serve, DnsState, DnsView, QueryOutcome, ResponseRateLimiter, Verdict};
use crate::acme::challenge::Dns01Records;
use crate::metrics::Metrics;
use crate::proxy::route_table::RouteTarget;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::registry::HealthRegistry;

/// Sockets for every `[listen] dns` address: `udp_per_address` UDP sockets sharing the
/// port (SO_REUSEPORT lets the kernel spread queries over them, one receive loop each), and
/// one TCP listener. SO_REUSEPORT also lets a binary upgrade's new process bind beside the
/// old one, so no query is refused during the hand-over.
pub struct DnsSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

pub struct DnsService {
    sockets: std::sync::Mutex<Option<DnsSockets>>,
    state: Arc<HeadlandDns>,
}

/// What the protocol handler asks of the rest of Headland.
pub struct HeadlandDns {
    snapshots: Arc<SnapshotCell>,
    registry: Arc<HealthRegistry>,
    metrics: Arc<Metrics>,
    /// ACME DNS-01 answers being validated right now.
    dns01: Dns01Records,
    /// The current view with those answers added, rebuilt when either changes. Read
    /// without a lock; two threads that both see it stale both rebuild it, harmlessly.
    with_challenges: ArcSwapOption<ChallengeView>,
    /// The response rate limiter for the current `[dns.rate_limit]`; kept across reloads
    /// that leave that section alone, so a reload does not hand every flood fresh credit.
    /// Rebuilt like `with_challenges` when the section changes.
    rate_limiter: ArcSwapOption<ResponseRateLimiter>,
    /// `headland_dns_rate_limited_total{action="slip"}` and `{action="drop"}`.
    slipped: IntCounter,
    dropped: IntCounter,
}

struct ChallengeView {
    base: Arc<DnsView>,
    generation: u64,
    view: Arc<DnsView>,
}

/// TTL of DNS-01 answers: resolvers must not keep a token past its validation.
const CHALLENGE_TTL: u32 = 0;

// === impl DnsSockets ===

impl DnsSockets {
    pub fn bind(addrs: &[SocketAddr], udp_per_address: usize) -> std::io::Result<Self> {
        let mut sockets = DnsSockets {
            udp: Vec::new(),
            tcp: Vec::new(),
        };
        for addr in addrs {
            // Port 0 picks a free port once; every socket of this address then shares it.
            let first = shared_socket(*addr, Type::DGRAM, Protocol::UDP)?;
            let addr = first
                .local_addr()?
                .as_socket()
                .ok_or_else(|| std::io::Error::other("UDP socket without an address"))?;
            sockets.udp.push(first.into());
            for _ in 1..udp_per_address.max(1) {
                let socket = shared_socket(addr, Type::DGRAM, Protocol::UDP)?;
                sockets.udp.push(socket.into());
            }
            let socket = shared_socket(addr, Type::STREAM, Protocol::TCP)?;
            socket.listen(1024)?;
            sockets.tcp.push(socket.into());
        }
        Ok(sockets)
    }
}

fn shared_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

// === impl DnsService ===

impl DnsService {
    pub fn new(
        sockets: DnsSockets,
        snapshots: Arc<SnapshotCell>,
        registry: Arc<HealthRegistry>,
        metrics: Arc<Metrics>,
        dns01: Dns01Records,
    ) -> Self {
        let limited = |action: &str| metrics.dns_rate_limited.with_label_values(&[action]);
        let (slipped, dropped) = (limited("slip"), limited("drop"));
        Self {
            sockets: std::sync::Mutex::new(Some(sockets)),
            state: Arc::new(HeadlandDns {
                snapshots,
                registry,
                metrics,
                dns01,
                with_challenges: ArcSwapOption::empty(),
                rate_limiter: ArcSwapOption::empty(),
                slipped,
                dropped,
            }),
        }
    }
}

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let Some(sockets) = self.sockets.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let udp = sockets.udp;
        let tcp = sockets
            .tcp
            .into_iter()
            .filter_map(|socket| match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => Some(listener),
                Err(error) => {
                    tracing::error!(%error, "DNS TCP listener unusable; TCP answers off");
                    None
                }
            })
            .collect();
        let state: Arc<dyn DnsState> = Arc::clone(&self.state) as Arc<dyn DnsState>;
        if let Err(error) = serve(state, udp, tcp, shutdown).await {
            tracing::error!(%error, "DNS server stopped");
        }
    }
}

// === impl HeadlandDns ===

impl DnsState for HeadlandDns {
    fn view(&self) -> Arc<DnsView> {
        let base = Arc::clone(&self.snapshots.load().config.dns.view);
        let generation = self.dns01.generation();
        if generation == 0 {
            return base; // no DNS-01 challenge since start: the common case, no lock
        }
        if let Some(current) = self.with_challenges.load().as_ref() {
            if current.generation == generation && Arc::ptr_eq(&current.base, &base) {
                return Arc::clone(&current.view);
            }
        }
        let records: Vec<(Name, Vec<String>)> = self
            .dns01
            .all()
            .into_iter()
            .filter_map(|(name, values)| {
                let name = Name::from_ascii(format!("{name}.")).ok()?.to_lowercase();
                Some((name, values))
            })
            .collect();
        let view = if records.is_empty() {
            Arc::clone(&base)
        } else {
            Arc::new(base.with_txt(&records, CHALLENGE_TTL))
        };
        self.with_challenges.store(Some(Arc::new(ChallengeView {
            base,
            generation,
            view: Arc::clone(&view),
        })));
        view
    }

    fn region_up(&self, name: &str, region: &str) -> bool {
        region_serves(&self.registry, &self.snapshots.load(), name, region)
    }

    fn record(&self, outcome: &QueryOutcome) {
        let zone = outcome.zone.as_deref().unwrap_or("");
        self.metrics
            .dns_queries
            .with_label_values(&[zone, outcome.qtype.as_str(), outcome.rcode.as_str()])
            .inc();
        if let Some((name, region)) = &outcome.geo {
            self.metrics
                .dns_geo_answers
                .with_label_values(&[name.as_str(), region.as_str()])
                .inc();
        }
    }

    fn rate_limiter(&self) -> Option<Arc<ResponseRateLimiter>> {
        let snapshot = self.snapshots.load();
        let spec = &snapshot.config.dns.rate_limit;
        let current = self.rate_limiter.load_full();
        if current
            .as_ref()
            .is_some_and(|limiter| limiter.spec() == spec)
        {
            return current;
        }
        if current.is_none() && spec.responses_per_second == 0 {
            return None; // off, and already known to be
        }
        let limiter = ResponseRateLimiter::new(spec.clone()).map(Arc::new);
        self.rate_limiter.store(limiter.clone());
        limiter
    }

    fn record_limited(&self, verdict: Verdict) {
        match verdict {
            Verdict::Slip => self.slipped.inc(),
            Verdict::Drop => self.dropped.inc(),
            Verdict::Send => {}
        }
    }
}

/// Whether DNS may give out `region` for the geo name `name`: the region is up and, when it
/// is this node's own, the pool behind `name` here can serve.
pub fn region_serves(
    registry: &HealthRegistry,
    snapshot: &Snapshot,
    name: &str,
    region: &str,
) -> bool {
    if !registry.regions.is_up(region) {
        return false;
    }
    let local = snapshot.config.node.region.as_deref() == Some(region);
    !(local && local_pool_down(snapshot, name))
}

/// This node's own region is no good for `name` when the pool its route for `name` forwards
/// to is not ready (no usable server, or, just after a start, none that passed its checks
/// yet): the DNS answer would send clients to a node that can only fail.
fn local_pool_down(snapshot: &Snapshot, name: &str) -> bool {
    let Some(route) = snapshot
        .routes
        .lookup(name, "/")
        .and_then(|index| snapshot.routes.get(index))
    else {
        return false;
    };
    match &route.target {
        RouteTarget::Proxy(pool) => !pool.is_ready(),
        RouteTarget::Redirect(_) | RouteTarget::Static(_) | RouteTarget::FastCgi(_) => false,
    }
}
