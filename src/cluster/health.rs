//! Region health shared through etcd, so that every name server answers alike.
//!
//! Each node publishes `health/<node>` under its lease: its region, whether it can serve it
//! (what its own region's health URL would answer), and its probes of the regions. A region
//! is up for DNS while a live node of it says it is ready and no majority of the other
//! nodes' probes fail to reach it; a node whose lease expired (it died, or lost etcd) counts
//! for nothing, so its region leaves the answers within one lease.
//!
//! While the node does not follow etcd (unreachable, watch broken), or for a region no
//! cluster node has served since the start, the node's own probes decide, as without a
//! cluster: never fail closed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};

/// What one node says in `health/<node>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub region: Option<String>,
    /// Whether this node can serve its region now.
    pub ready: bool,
    /// Its own probes of regions with a health URL: region → up.
    pub probes: BTreeMap<String, bool>,
}

/// The reports of the live nodes, as the watch last saw them.
#[derive(Default)]
pub struct SharedHealth {
    /// By node name; `None` while this node does not follow etcd.
    reports: ArcSwapOption<BTreeMap<String, NodeReport>>,
    /// Regions some cluster node has served since this process started.
    known_regions: Mutex<BTreeSet<String>>,
}

// === impl SharedHealth ===

impl SharedHealth {
    /// The cluster's verdict on `region`, or `None` when it has none to give.
    pub fn region_up(&self, region: &str) -> Option<bool> {
        let reports = self.reports.load_full()?;
        if !self.known_regions.lock().ok()?.contains(region) {
            return None;
        }
        let serving = reports
            .values()
            .any(|r| r.region.as_deref() == Some(region) && r.ready);
        if !serving {
            return Some(false);
        }
        let (failed, asked) = reports
            .values()
            .filter(|r| r.region.as_deref() != Some(region))
            .filter_map(|r| r.probes.get(region))
            .fold((0, 0), |(failed, asked), up| {
                (failed + usize::from(!up), asked + 1)
            });
        // The other regions see what clients see: a majority of them unable to reach it
        // (a partition the node itself cannot notice) takes it out.
        Some(failed * 2 <= asked)
    }

    /// The live nodes' reports, after a fresh read or a change.
    pub fn replace(&self, reports: BTreeMap<String, NodeReport>) {
        if let Ok(mut known) = self.known_regions.lock() {
            known.extend(reports.values().filter_map(|r| r.region.clone()));
        }
        self.reports.store(Some(Arc::new(reports)));
    }

    /// The watch stopped: the node's own probes decide until it follows etcd again.
    pub fn set_stale(&self) {
        self.reports.store(None);
    }

    /// The reports as last seen (for `GET /cluster`); `None` while stale.
    pub fn reports(&self) -> Option<Arc<BTreeMap<String, NodeReport>>> {
        self.reports.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(region: &str, ready: bool, probes: &[(&str, bool)]) -> NodeReport {
        NodeReport {
            region: Some(region.to_owned()),
            ready,
            probes: probes
                .iter()
                .map(|(r, up)| ((*r).to_owned(), *up))
                .collect(),
        }
    }

    #[test]
    fn a_region_is_up_while_a_live_node_serves_it_and_most_others_reach_it() {
        let shared = SharedHealth::default();
        assert_eq!(shared.region_up("eu"), None, "stale: own probes decide");
        let mut reports = BTreeMap::from([
            ("eu-1".to_owned(), report("eu", true, &[])),
            ("na-1".to_owned(), report("na", true, &[("eu", true)])),
            ("apac-1".to_owned(), report("apac", false, &[("eu", false)])),
        ]);
        shared.replace(reports.clone());
        assert_eq!(
            shared.region_up("eu"),
            Some(true),
            "one of two probes failing"
        );
        assert_eq!(
            shared.region_up("apac"),
            Some(false),
            "its node is not ready"
        );
        assert_eq!(
            shared.region_up("sa"),
            None,
            "no cluster node ever served it"
        );

        reports.insert("na-1".to_owned(), report("na", true, &[("eu", false)]));
        shared.replace(reports.clone());
        assert_eq!(
            shared.region_up("eu"),
            Some(false),
            "both others fail to reach it"
        );

        // Its node's lease expired: the key is gone, the region is down, and stays known.
        reports.remove("apac-1");
        shared.replace(reports);
        assert_eq!(shared.region_up("apac"), Some(false));
        shared.set_stale();
        assert_eq!(shared.region_up("apac"), None);
    }
}
