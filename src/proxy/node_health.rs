//! `/.well-known/headland/health` on the public listeners: whether this node can serve its
//! routes. Other regions' Headland nodes probe it to decide what DNS hands out.
//!
//! 200 when every pool that a route forwards to is ready (`Pool::is_ready`: a usable server
//! that passed its active checks, so a node that just started is not named healthy before its
//! checks said so), 503 otherwise, with the pools not ready listed. `?upstream=NAME` asks about one pool only, so a region's health URL can
//! track exactly the service behind a geo name.

use crate::snapshot::Snapshot;

pub const PATH: &str = "/.well-known/headland/health";

/// Status and body for a probe with `query` (the URI's query string, if any).
pub fn report(snapshot: &Snapshot, query: Option<&str>) -> (u16, String) {
    let only = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("upstream="));
    if let Some(name) = only {
        return match snapshot.pool(name) {
            Some(pool) if pool.is_ready() => (200, format!("ok: {name}\n")),
            Some(_) => (503, format!("down: {name}\n")),
            None => (404, format!("unknown upstream: {name}\n")),
        };
    }
    let mut down: Vec<&str> = snapshot
        .routes
        .routes()
        .iter()
        .filter_map(|route| match &route.target {
            super::route_table::RouteTarget::Proxy(pool) if !pool.is_ready() => {
                Some(pool.name.as_str())
            }
            _ => None,
        })
        .collect();
    down.sort_unstable();
    down.dedup();
    if down.is_empty() {
        (200, "ok\n".to_owned())
    } else {
        (503, format!("down: {}\n", down.join(", ")))
    }
}
