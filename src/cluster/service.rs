//! What a node does in the background while in a cluster:
//! - keeps its lease (and with it `nodes/<node>`);
//! - publishes `health/<node>` when its report changes, and follows every node's report
//!   into the shared region view DNS answers from (`health`);
//! - publishes `status/<node>` (configuration generation and hashes, certificates, last
//!   reload error) for `headland cluster status`;
//! - follows `config/routing` (`headland cluster push`) and reloads with it;
//! - follows `acme/`: challenge answers published by whichever node is ordering are copied
//!   into this node's HTTP-01 tokens and DNS-01 records, so the CA's validation may reach any
//!   node; a certificate stored, or an order lock released, by another node wakes the ACME
//!   task.
//!
//! etcd unreachable: the lease lapses and is granted again once etcd answers; each follower
//! starts again from a fresh read, so nothing that changed meanwhile is missed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::health::{NodeReport, SharedHealth};
use super::shared_config::{self, SharedConfig};
use super::{Cluster, ClusterError};
use crate::acme::shared::{self, ChallengeKey};
use crate::acme::Acme;
use crate::metrics::Metrics;
use crate::proxy::node_health;
use crate::reload::Reloader;
use crate::snapshot::SnapshotCell;
use crate::upstream::registry::HealthRegistry;

/// Longest pause between two attempts to reach etcd.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How often the node looks whether its health report changed (a write only when it did).
const REPORT_EVERY: Duration = Duration::from_millis(500);

const HEALTH: &str = "health/";
pub const STATUS: &str = "status/";

/// What `status/<node>` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub generation: u64,
    /// SHA-256 of the node's own file.
    pub file_sha256: Option<String>,
    /// SHA-256 of the shared routing configuration it runs, if any.
    pub shared_sha256: Option<String>,
    pub last_error: Option<String>,
    pub certificates: Vec<CertificateSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertificateSummary {
    pub name: String,
    pub state: String,
    pub not_after: Option<u64>,
}

pub struct ClusterService {
    cluster: Arc<Cluster>,
    acme: Arc<Acme>,
    snapshots: Arc<SnapshotCell>,
    registry: Arc<HealthRegistry>,
    shared_health: Arc<SharedHealth>,
    shared_config: Option<Arc<SharedConfig>>,
    reloader: Option<Arc<Reloader>>,
    metrics: Arc<Metrics>,
    /// What `nodes/<node>` holds: who this node is, for `headland cluster status`.
    registration: Vec<u8>,
}

/// What the service keeps doing while etcd answers, started again when it fails.
#[derive(Debug, Clone, Copy)]
enum Task {
    Lease,
    Health,
    Acme,
    Config,
}

/// Challenge answers copied from etcd, by path, so a deletion (which carries only the key)
/// removes the right value.
#[derive(Default)]
struct Mirror {
    answers: BTreeMap<String, (ChallengeKey, String)>,
}

// === impl ClusterService ===

impl ClusterService {
    pub fn new(
        cluster: Arc<Cluster>,
        acme: Arc<Acme>,
        snapshots: Arc<SnapshotCell>,
        (registry, metrics): (Arc<HealthRegistry>, Arc<Metrics>),
        (shared_health, shared_config, reloader): (
            Arc<SharedHealth>,
            Option<Arc<SharedConfig>>,
            Option<Arc<Reloader>>,
        ),
    ) -> Self {
        let region = snapshots.load().config.node.region.clone();
        let registration = serde_json::json!({
            "node": cluster.node(),
            "region": region,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string()
        .into_bytes();
        Self {
            cluster,
            acme,
            snapshots,
            registry,
            shared_health,
            shared_config,
            reloader,
            metrics,
            registration,
        }
    }

    /// Runs `task` again and again, pausing longer after each failure (up to `MAX_RETRY`).
    async fn forever(&self, task: Task) {
        let mut mirror = Mirror::default();
        let mut retry = Duration::from_millis(200);
        loop {
            let result = match task {
                Task::Lease => self.hold_lease().await,
                Task::Health => self.follow_health().await,
                Task::Acme => self.follow_acme(&mut mirror).await,
                Task::Config => self.follow_config().await,
            };
            if let Err(error) = result {
                tracing::warn!(%error, ?task, "cluster work interrupted until etcd answers");
            } else {
                retry = Duration::from_millis(200);
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Holds one lease, until etcd loses it (the node was cut off longer than the lease).
    async fn hold_lease(&self) -> Result<(), ClusterError> {
        let result = self.hold_lease_until_lost().await;
        self.cluster.set_lease(None);
        result
    }

    async fn hold_lease_until_lost(&self) -> Result<(), ClusterError> {
        let (id, mut keeper, mut answers) = self.cluster.grant_lease().await?;
        self.cluster.set_lease(Some(id));
        let path = format!("nodes/{}", self.cluster.node());
        self.cluster.put(&path, &self.registration, true).await?;
        tracing::info!(lease = id, "joined the cluster");
        let every = self.cluster.config().lease_ttl / 3;
        loop {
            self.cluster.bounded(keeper.keep_alive()).await?;
            match self.cluster.bounded(answers.message()).await? {
                Some(answer) if answer.ttl() > 0 => {}
                _ => return Ok(()),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// What this node says of itself: ready when its own region's health URL would answer
    /// 200 (the same query other nodes' probes use), and its probes of the regions.
    fn own_report(&self) -> NodeReport {
        let snapshot = self.snapshots.load();
        let region = snapshot.config.node.region.clone();
        let query = snapshot
            .config
            .dns
            .regions
            .iter()
            .find(|r| Some(&r.spec.name) == region.as_ref())
            .and_then(|r| r.health.as_ref())
            .and_then(|probe| probe.url.split_once('?').map(|(_, q)| q.to_owned()));
        let (status, _) = node_health::report(&snapshot, query.as_deref());
        NodeReport {
            region,
            ready: status == 200,
            probes: self.registry.regions.local_verdicts(),
        }
    }

    /// This node's status for `headland cluster status`.
    fn own_status(&self) -> NodeStatus {
        let snapshot = self.snapshots.load();
        let reload = self.reloader.as_ref().and_then(|r| r.status());
        NodeStatus {
            generation: snapshot.generation,
            file_sha256: reload.as_ref().map(|r| r.sha256.clone()),
            shared_sha256: reload.as_ref().and_then(|r| r.shared_sha256.clone()),
            last_error: reload.and_then(|r| r.last_error.map(|e| e.errors)),
            certificates: self
                .acme
                .status()
                .into_iter()
                .map(|c| CertificateSummary {
                    name: c.names.first().cloned().unwrap_or_default(),
                    state: c.state,
                    not_after: c.not_after,
                })
                .collect(),
        }
    }

    /// Writes `health/<node>` and `status/<node>` whenever they or the lease changed.
    async fn publish_reports(&self) {
        let health_path = format!("{HEALTH}{}", self.cluster.node());
        let status_path = format!("{STATUS}{}", self.cluster.node());
        // What was last written, under which lease: a new lease needs a new write.
        let mut health_published: Option<(i64, NodeReport)> = None;
        let mut status_published: Option<(i64, NodeStatus)> = None;
        loop {
            let lease = *self.cluster.lease.borrow();
            if let Some(lease) = lease {
                let health = Some((lease, self.own_report()));
                if health_published != health && self.publish(&health_path, &health).await {
                    health_published = health;
                }
                let status = Some((lease, self.own_status()));
                if status_published != status && self.publish(&status_path, &status).await {
                    status_published = status;
                }
            }
            tokio::time::sleep(REPORT_EVERY).await;
        }
    }

    /// Puts the JSON of `value` (its second part) at `path`, leased; whether it worked.
    async fn publish<T: serde::Serialize>(&self, path: &str, value: &Option<(i64, T)>) -> bool {
        let Some(json) = value.as_ref().and_then(|(_, v)| serde_json::to_vec(v).ok()) else {
            return false;
        };
        match self.cluster.put(path, &json, true).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, path, "not published yet");
                false
            }
        }
    }

    /// Follows `config/routing` and reloads with each new shared configuration; keeps the
    /// last good one in `state_dir`.
    async fn follow_config(&self) -> Result<(), ClusterError> {
        let Some(shared) = &self.shared_config else {
            return std::future::pending().await;
        };
        let mut follower = self.cluster.follow("config/").await?;
        loop {
            let batch = follower.next().await?;
            let mut text = shared.text().map(|t| t.as_str().to_owned());
            if batch.fresh {
                text = None;
            }
            for change in batch.changes {
                if change.path == shared_config::ROUTING {
                    text = change
                        .value
                        .map(|v| String::from_utf8_lossy(&v).into_owned());
                }
            }
            let current = shared.text().map(|t| t.as_str().to_owned());
            if text == current {
                continue;
            }
            shared.set(text.clone());
            let Some(reloader) = &self.reloader else {
                continue;
            };
            match reloader.reload().await {
                Ok(done) => {
                    tracing::info!(generation = done.generation, "shared configuration applied");
                    let state_dir = self.snapshots.load().config.node.state_dir.clone();
                    shared_config::remember(&state_dir, text.as_deref());
                }
                Err(_) => tracing::warn!("shared configuration rejected on this node; still serving the previous one (see GET /config)"),
            }
        }
    }

    /// Follows every node's `health/` report into the shared view.
    async fn follow_health(&self) -> Result<(), ClusterError> {
        let result = self.follow_health_reports().await;
        self.shared_health.set_stale();
        self.metrics.cluster_following.set(0);
        self.refresh_region_gauges();
        result
    }

    async fn follow_health_reports(&self) -> Result<(), ClusterError> {
        let mut reports: BTreeMap<String, NodeReport> = BTreeMap::new();
        let mut follower = self.cluster.follow(HEALTH).await?;
        loop {
            let batch = follower.next().await?;
            if batch.fresh {
                reports.clear();
            }
            for change in batch.changes {
                let Some(node) = change.path.strip_prefix(HEALTH) else {
                    continue;
                };
                let report = change
                    .value
                    .and_then(|json| serde_json::from_slice::<NodeReport>(&json).ok());
                match report {
                    Some(report) => reports.insert(node.to_owned(), report),
                    None => reports.remove(node),
                };
            }
            self.shared_health.replace(reports.clone());
            self.metrics.cluster_following.set(1);
            self.refresh_region_gauges();
        }
    }

    fn refresh_region_gauges(&self) {
        let snapshot = self.snapshots.load();
        self.registry
            .regions
            .refresh_gauges(&snapshot.config.dns.regions);
    }

    /// Follows `acme/`: challenge answers, certificates, lock releases.
    async fn follow_acme(&self, mirror: &mut Mirror) -> Result<(), ClusterError> {
        let mut follower = self.cluster.follow("acme/").await?;
        loop {
            let batch = follower.next().await?;
            if batch.fresh {
                mirror.clear(&self.acme);
                // A certificate may have changed while the watch was down.
                self.acme.wake();
            }
            let mut challenges_changed = batch.fresh;
            for change in batch.changes {
                let path = change.path.as_str();
                if path.starts_with(shared::CHALLENGES) {
                    challenges_changed = true;
                    match &change.value {
                        Some(value) => {
                            mirror.put(path, &String::from_utf8_lossy(value), &self.acme)
                        }
                        None => mirror.delete(path, &self.acme),
                    }
                } else if path.starts_with(shared::CERTIFICATES) {
                    self.acme.wake();
                } else if path.starts_with(shared::LOCKS) && change.value.is_none() {
                    self.acme.lock_released();
                }
            }
            if challenges_changed {
                self.acknowledge(batch.revision).await?;
            }
        }
    }

    /// Tells the ordering node that this node answers every challenge up to `revision`.
    async fn acknowledge(&self, revision: i64) -> Result<(), ClusterError> {
        let path = shared::seen_path(self.cluster.node());
        self.cluster
            .put(&path, revision.to_string().as_bytes(), true)
            .await
            .map(drop)
    }
}

#[async_trait]
impl BackgroundService for ClusterService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.registry
            .regions
            .set_shared(Arc::clone(&self.shared_health));
        self.metrics.register_cluster();
        tokio::select! {
            () = self.forever(Task::Lease) => {}
            () = self.publish_reports() => {}
            () = self.forever(Task::Health) => {}
            () = self.forever(Task::Acme) => {}
            () = self.forever(Task::Config) => {}
            _ = shutdown.changed() => {}
        }
    }
}

// === impl Mirror ===

impl Mirror {
    /// Before a fresh read: what etcd holds now replaces everything copied before.
    fn clear(&mut self, acme: &Acme) {
        for (key, value) in std::mem::take(&mut self.answers).into_values() {
            key.withdraw(&value, acme);
        }
    }

    fn put(&mut self, path: &str, value: &str, acme: &Acme) {
        let Some(key) = ChallengeKey::parse(path) else {
            return;
        };
        key.publish(value, acme);
        self.answers
            .insert(path.to_owned(), (key, value.to_owned()));
    }

    fn delete(&mut self, path: &str, acme: &Acme) {
        if let Some((key, value)) = self.answers.remove(path) {
            key.withdraw(&value, acme);
        }
    }
}
