//! `fallback = { regions = true }`: when a route's own pool cannot answer, the request goes to
//! the edge of the nearest other region that is up, over HTTPS with the request's host as SNI
//! and the certificate verified, so that a client holding an old DNS answer is still served.
//!
//! The forwarded request carries `Headland-Hop: <node>`. An edge never sends a request that
//! carries it to another region again: with two regions down a request visits at most two
//! edges and never loops. (A client sending the header itself only turns the fallback off
//! for its own request.)

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use crate::dns::policy::haversine_km;
use crate::snapshot::Snapshot;
use crate::upstream::regions::RegionHealth;
use crate::upstream::Pool;

pub const HOP_HEADER: &str = "headland-hop";

/// The edge a request goes to instead of the local pool.
#[derive(Debug, Clone)]
pub struct RegionEdge {
    pub region: String,
    pub addr: SocketAddr,
}

/// The nearest region other than this node's own that is up, measured from this node's
/// region's location.
pub fn nearest(snapshot: &Snapshot, health: &RegionHealth) -> Option<RegionEdge> {
    let regions = &snapshot.config.dns.regions;
    let own_name = snapshot.config.node.region.as_deref()?;
    let own = regions.iter().find(|r| r.spec.name == own_name)?;
    let from = (own.spec.lat, own.spec.lon);
    regions
        .iter()
        .filter(|r| r.spec.name != own_name && health.is_up(&r.spec.name))
        .min_by(|a, b| {
            let distance =
                |r: &crate::config::RegionConfig| haversine_km(from, (r.spec.lat, r.spec.lon));
            distance(a).total_cmp(&distance(b))
        })
        .map(|r| RegionEdge {
            region: r.spec.name.clone(),
            addr: r.edge,
        })
}

/// The HTTPS peer for `edge`: SNI and verification for `host`, the pool's timeouts, and the
/// configured edge CA (else the platform's roots).
pub fn peer(
    edge: &RegionEdge,
    host: &str,
    pool: &Pool,
    ca: Option<&Arc<[WrappedX509]>>,
) -> HttpPeer {
    let mut peer = HttpPeer::new(edge.addr, true, host.to_owned());
    peer.options.connection_timeout = Some(pool.timeouts.connect);
    peer.options.read_timeout = Some(pool.timeouts.read);
    peer.options.write_timeout = Some(pool.timeouts.write);
    peer.options.idle_timeout = Some(pool.timeouts.keepalive);
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.ca = ca.cloned();
    peer
}

/// The CA list in the form Pingora's connector takes. The DER was parsed when the
/// configuration was loaded.
pub fn trust(edge_ca: &[Vec<u8>]) -> Arc<[WrappedX509]> {
    edge_ca
        .iter()
        .map(|der| WrappedX509::new(der.clone(), pingora::utils::tls::parse_x509))
        .collect()
}
