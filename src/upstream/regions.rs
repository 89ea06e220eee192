//! Region health for DNS: one probe task per region with a health URL, kept in step with the
//! configuration like the upstream checks (DESIGN.md decision 7). A region whose checks
//! fail `fall` times in a row is not given out in DNS answers until it passes `rise` times.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use pingora::upstreams::peer::HttpPeer;
use tokio::task::JoinHandle;

use super::health::{Health, ServerHealth, Transition};
use super::probe::Prober;
use crate::cluster::health::SharedHealth;
use crate::config::{RegionConfig, RegionProbe};
use crate::metrics::Metrics;
use crate::webhook::{Event, EventKind, Webhooks};

pub struct RegionHealth {
    tasks: Mutex<HashMap<String, RegionTask>>,
    /// Every configured region, so that a removed one loses its `headland_region_up`.
    configured: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
    webhooks: Arc<Webhooks>,
    /// In a cluster, the view every node shares; it decides where it has a verdict.
    shared: Arc<OnceLock<Arc<SharedHealth>>>,
    prober: Arc<Prober>,
}

struct RegionTask {
    probe: RegionProbe,
    health: Arc<ServerHealth>,
    handle: JoinHandle<()>,
}

// === impl RegionHealth ===

impl RegionHealth {
    pub fn new(metrics: Arc<Metrics>, webhooks: Arc<Webhooks>, prober: Arc<Prober>) -> Self {
        Self {
            tasks: Mutex::new(HashMap::new()),
            configured: Mutex::new(HashSet::new()),
            metrics,
            webhooks,
            shared: Arc::default(),
            prober,
        }
    }

    /// Joins the cluster's shared view (once, at the cluster service's start).
    pub fn set_shared(&self, shared: Arc<SharedHealth>) {
        let _ = self.shared.set(shared);
    }

    /// Whether `region` may be given out: by the cluster's shared view where it has a
    /// verdict, else by this node's own probe (no health URL, no verdict yet, or healthy).
    pub fn is_up(&self, region: &str) -> bool {
        if let Some(up) = self.shared.get().and_then(|s| s.region_up(region)) {
            return up;
        }
        self.tasks
            .lock()
            .ok()
            .and_then(|tasks| tasks.get(region).map(|t| t.health.get().is_usable()))
            .unwrap_or(true)
    }

    /// Sets `headland_region_up` from `is_up` for every configured region: in a cluster the
    /// shared view decides what DNS gives out, so the gauge follows it when it changes.
    pub fn refresh_gauges(&self, regions: &[RegionConfig]) {
        for region in regions {
            let name = region.spec.name.as_str();
            self.metrics
                .region_up
                .with_label_values(&[name])
                .set(i64::from(self.is_up(name)));
        }
    }

    /// This node's own probe verdicts, by region (regions without one yet left out).
    pub fn local_verdicts(&self) -> BTreeMap<String, bool> {
        let Ok(tasks) = self.tasks.lock() else {
            return BTreeMap::new();
        };
        tasks
            .iter()
            .filter_map(|(name, task)| match task.health.get() {
                Health::Unknown => None,
                health => Some((name.clone(), health.is_usable())),
            })
            .collect()
    }

    /// Makes the probe tasks match `regions`; a region whose probe is unchanged keeps its
    /// state. Must run inside a tokio runtime.
    pub fn apply(&self, regions: &[RegionConfig]) {
        let names: HashSet<String> = regions.iter().map(|r| r.spec.name.clone()).collect();
        if let Ok(mut configured) = self.configured.lock() {
            for gone in configured.difference(&names) {
                let _ = self.metrics.region_up.remove_label_values(&[gone.as_str()]);
            }
            *configured = names;
        }
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        tasks.retain(|name, task| {
            let keep = regions
                .iter()
                .any(|r| r.spec.name == *name && r.health.as_ref() == Some(&task.probe));
            if !keep {
                task.handle.abort();
                let _ = self.metrics.region_up.remove_label_values(&[name.as_str()]);
            }
            keep
        });
        for region in regions {
            let name = &region.spec.name;
            match &region.health {
                Some(probe) if !tasks.contains_key(name) => {
                    let health = Arc::new(ServerHealth::default());
                    let handle = tokio::spawn(run_probes(
                        name.clone(),
                        probe.clone(),
                        Arc::clone(&health),
                        (Arc::clone(&self.metrics), Arc::clone(&self.webhooks)),
                        Arc::clone(&self.shared),
                        Arc::clone(&self.prober),
                    ));
                    let task = RegionTask {
                        probe: probe.clone(),
                        health,
                        handle,
                    };
                    tasks.insert(name.clone(), task);
                    self.metrics
                        .region_up
                        .with_label_values(&[name.as_str()])
                        .set(1);
                }
                Some(_) => {}
                None => self
                    .metrics
                    .region_up
                    .with_label_values(&[name.as_str()])
                    .set(1),
            }
        }
    }

    pub fn stop_all(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for (_, task) in tasks.drain() {
                task.handle.abort();
            }
        }
    }
}

async fn run_probes(
    region: String,
    target: RegionProbe,
    health: Arc<ServerHealth>,
    (metrics, webhooks): (Arc<Metrics>, Arc<Webhooks>),
    shared: Arc<OnceLock<Arc<SharedHealth>>>,
    prober: Arc<Prober>,
) {
    let check = &target.check;
    let peer = HttpPeer::new(target.addr, false, String::new());
    let host = target.addr.to_string();
    let gauge = metrics.region_up.with_label_values(&[region.as_str()]);
    loop {
        let result = prober.probe(&peer, &host, check).await;
        if let Err(reason) = &result {
            tracing::debug!(%region, url = %target.url, %reason, "region health check failed");
        }
        if let Some(transition) = health.record(result.is_ok(), check.rise, check.fall) {
            let (kind, detail) = match transition {
                Transition::WentDown => {
                    (EventKind::RegionDown, result.err().map(|e| e.to_string()))
                }
                Transition::WentUp => (EventKind::RegionUp, None),
            };
            tracing::warn!(%region, event = kind.as_str(), "region health changed");
            webhooks.notify(Event::region(kind, &region, detail));
        }
        // What DNS does: the cluster's view where it has one, else this probe.
        let up = shared.get().and_then(|s| s.region_up(&region));
        gauge.set(i64::from(up.unwrap_or(health.get().is_usable())));
        tokio::time::sleep(super::registry::jittered(check.interval, 0.9, 1.1)).await;
    }
}
