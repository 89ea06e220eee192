//! What a node does in the background while in a cluster: keep its lease (and with it
//! `nodes/<node>`), and follow `acme/` in etcd: challenge answers published by whichever node
//! is ordering are copied into this node's HTTP-01 tokens and DNS-01 records, so the CA's
//! validation may reach any node; a certificate stored by another node wakes the ACME task,
//! which loads it.
//!
//! etcd unreachable: the lease lapses and is granted again once etcd answers; the watch is
//! started again from a fresh read, so nothing that changed meanwhile is missed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::EventType;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Cluster, ClusterError, Stored};
use crate::acme::shared::{self, ChallengeKey};
use crate::acme::Acme;

/// Longest pause between two attempts to reach etcd.
const MAX_RETRY: Duration = Duration::from_secs(5);

pub struct ClusterService {
    cluster: Arc<Cluster>,
    acme: Arc<Acme>,
    /// What `nodes/<node>` holds: who this node is, for `headland cluster status`.
    registration: Vec<u8>,
}

/// Challenge answers copied from etcd, by key, so a deletion (which carries only the key)
/// removes the right value.
#[derive(Default)]
struct Mirror {
    answers: BTreeMap<String, (ChallengeKey, String)>,
}

// === impl ClusterService ===

impl ClusterService {
    pub fn new(cluster: Arc<Cluster>, acme: Arc<Acme>, region: Option<&str>) -> Self {
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
            registration,
        }
    }

    /// Holds a lease for as long as the process lives, granting a new one whenever etcd
    /// lost the old (the node was cut off longer than the lease).
    async fn keep_lease(&self) {
        let mut retry = Duration::from_millis(200);
        loop {
            match self.hold_one_lease().await {
                Ok(()) => retry = Duration::from_millis(200),
                Err(error) => {
                    tracing::warn!(%error, "cluster lease lost; the node's keys lapse until etcd answers");
                }
            }
            self.cluster.set_lease(None);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    async fn hold_one_lease(&self) -> Result<(), ClusterError> {
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

    /// Follows `acme/` for as long as the process lives.
    async fn follow_acme(&self) {
        let mut mirror = Mirror::default();
        let mut retry = Duration::from_millis(200);
        loop {
            if let Err(error) = self.follow_acme_once(&mut mirror).await {
                tracing::warn!(%error, "cluster watch interrupted; challenge answers and certificates from other nodes wait for etcd");
            } else {
                retry = Duration::from_millis(200);
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    async fn follow_acme_once(&self, mirror: &mut Mirror) -> Result<(), ClusterError> {
        let (current, revision) = self.cluster.list(shared::CHALLENGES).await?;
        mirror.replace(&self.cluster, &self.acme, &current);
        self.acknowledge(revision).await?;
        // A certificate may have changed while the watch was down.
        self.acme.wake();
        let mut watch = self.cluster.watch("acme/", revision + 1).await?;
        while let Some(response) = watch.message().await? {
            if response.canceled() {
                return Err(ClusterError::Etcd(etcd_client::Error::WatchError(
                    response.cancel_reason().to_owned(),
                )));
            }
            let mut challenges_changed = false;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let Some(path) = self.cluster.path(&key) else {
                    continue;
                };
                if path.starts_with(shared::CHALLENGES) {
                    challenges_changed = true;
                    match event.event_type() {
                        EventType::Put => {
                            mirror.put(path, &String::from_utf8_lossy(kv.value()), &self.acme)
                        }
                        EventType::Delete => mirror.delete(path, &self.acme),
                    }
                } else if path.starts_with(shared::CERTIFICATES) {
                    self.acme.wake();
                } else if path.starts_with(shared::LOCKS) && event.event_type() == EventType::Delete
                {
                    self.acme.lock_released();
                }
            }
            if challenges_changed {
                let revision = response.header().map_or(0, |h| h.revision());
                self.acknowledge(revision).await?;
            }
        }
        Ok(())
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
        tokio::select! {
            () = self.keep_lease() => {}
            () = self.follow_acme() => {}
            _ = shutdown.changed() => {}
        }
    }
}

// === impl Mirror ===

impl Mirror {
    /// After a fresh read: serve exactly what etcd holds.
    fn replace(&mut self, cluster: &Cluster, acme: &Acme, current: &[Stored]) {
        let paths: Vec<String> = self.answers.keys().cloned().collect();
        for path in paths {
            self.delete(&path, acme);
        }
        for stored in current {
            if let Some(path) = cluster.path(&stored.key) {
                self.put(path, &String::from_utf8_lossy(&stored.value), acme);
            }
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
