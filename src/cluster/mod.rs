//! The nodes of all regions share one etcd (`[cluster]`, DESIGN.md decision 9). This module
//! is the node's handle on it: one client, the node's lease, and the few operations the rest
//! of Headland needs, each bounded by `[cluster] timeout` so that an unreachable etcd only
//! ever means "carry on with what you have".
//!
//! Keys live under `[cluster] prefix`: `nodes/<node>` (leased: the node is alive),
//! `health/<node>` (leased, see `health`), `acme/...` (see `crate::acme::shared`).

pub mod health;
pub mod seal;
pub mod service;
pub mod shared_config;
pub mod status;

use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::watch;

use crate::config::ClusterConfig;
pub use seal::SealKey;
pub use service::ClusterService;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no lease yet (etcd unreachable since the start)")]
    NoLease,
    #[error("{0}")]
    Seal(#[from] seal::SealError),
}

/// One batch of changes under a followed prefix (`Follower::next`).
#[derive(Debug)]
pub struct Changes {
    /// A fresh read: `changes` is everything there is, and what is not in it is gone.
    pub fresh: bool,
    pub changes: Vec<Change>,
    /// The etcd revision these changes bring the follower to.
    pub revision: i64,
}

/// One key's new value (`None`: deleted), by its path under the prefix.
#[derive(Debug)]
pub struct Change {
    pub path: String,
    pub value: Option<Vec<u8>>,
}

/// A value read from etcd with the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The node's connection to the cluster.
pub struct Cluster {
    config: ClusterConfig,
    node: String,
    seal: Option<SealKey>,
    client: Mutex<Option<Client>>,
    /// The node's current lease; `None` while etcd is unreachable.
    lease: watch::Sender<Option<i64>>,
}

// === impl Cluster ===

impl Cluster {
    pub fn new(config: ClusterConfig, node: &str) -> Result<Self, ClusterError> {
        let seal = match &config.seal_key {
            Some(key) => Some(SealKey::new(&key.0)?),
            None => None,
        };
        Ok(Self {
            config,
            node: node.to_owned(),
            seal,
            client: Mutex::new(None),
            lease: watch::Sender::new(None),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The full etcd key for `path` under the prefix.
    pub fn key(&self, path: &str) -> String {
        format!("{}{path}", self.config.prefix)
    }

    /// The path of `key` below the prefix, if it is ours.
    pub fn path<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.config.prefix)
    }

    pub fn seal_key(&self) -> Option<&SealKey> {
        self.seal.as_ref()
    }

    /// The lease the node's keys live under; waits (bounded) for the first one.
    pub async fn lease(&self) -> Result<i64, ClusterError> {
        let mut lease = self.lease.subscribe();
        let current = *lease.borrow_and_update();
        if let Some(id) = current {
            return Ok(id);
        }
        let waited = tokio::time::timeout(self.config.timeout, lease.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|lease| lease.ok().and_then(|id| *id));
        waited.ok_or(ClusterError::NoLease)
    }

    fn set_lease(&self, lease: Option<i64>) {
        self.lease.send_replace(lease);
    }

    /// The client, connected on first use. tonic reconnects by itself afterwards.
    async fn client(&self) -> Result<Client, ClusterError> {
        if let Some(client) = self.client.lock().ok().and_then(|c| c.clone()) {
            return Ok(client);
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.config.timeout)
            .with_timeout(self.config.timeout)
            .with_keep_alive(Duration::from_secs(10), self.config.timeout);
        if let Some((user, password)) = &self.config.auth {
            // etcd's auth tokens expire (simple tokens after 5 minutes idle): log in again
            // rather than fail every request after that.
            options = options
                .with_user(user, String::from_utf8_lossy(&password.0))
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.config.tls {
            let mut settings = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                settings = settings.identity(Identity::from_pem(cert, &key.0));
            }
            options = options.with_tls(settings);
        }
        let client = self
            .bounded(Client::connect(&self.config.endpoints, Some(options)))
            .await?;
        if let Ok(mut slot) = self.client.lock() {
            *slot = Some(client.clone());
        }
        Ok(client)
    }

    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.config.timeout, request).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClusterError::Timeout(self.config.timeout)),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Option<Stored>, ClusterError> {
        let mut client = self.client().await?;
        let response = self.bounded(client.get(self.key(path), None)).await?;
        Ok(response.kvs().first().map(stored))
    }

    /// Every value under `path` (a prefix), and the revision the read saw.
    pub async fn list(&self, path: &str) -> Result<(Vec<Stored>, i64), ClusterError> {
        let mut client = self.client().await?;
        let options = GetOptions::new().with_prefix();
        let response = self
            .bounded(client.get(self.key(path), Some(options)))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((response.kvs().iter().map(stored).collect(), revision))
    }

    /// Writes `value`; `leased` ties it to the node's lease (gone when the node is).
    /// Returns the revision of the write.
    pub async fn put(&self, path: &str, value: &[u8], leased: bool) -> Result<i64, ClusterError> {
        let options = if leased {
            Some(PutOptions::new().with_lease(self.lease().await?))
        } else {
            None
        };
        let mut client = self.client().await?;
        let response = self
            .bounded(client.put(self.key(path), value, options))
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// Writes `value` only where nothing is: true if this write created the key.
    pub async fn create(
        &self,
        path: &str,
        value: &[u8],
        leased: bool,
    ) -> Result<bool, ClusterError> {
        let key = self.key(path);
        let options = if leased {
            Some(PutOptions::new().with_lease(self.lease().await?))
        } else {
            None
        };
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, options)]);
        let mut client = self.client().await?;
        Ok(self.bounded(client.txn(txn)).await?.succeeded())
    }

    /// Deletes `path` only if it still holds `value` (a lock this node took).
    pub async fn delete_if(&self, path: &str, value: &[u8]) -> Result<bool, ClusterError> {
        let key = self.key(path);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key, None)]);
        let mut client = self.client().await?;
        Ok(self.bounded(client.txn(txn)).await?.succeeded())
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClusterError> {
        let mut client = self.client().await?;
        self.bounded(client.delete(self.key(path), None)).await?;
        Ok(())
    }

    pub async fn delete_prefix(&self, path: &str) -> Result<(), ClusterError> {
        let mut client = self.client().await?;
        let options = DeleteOptions::new().with_prefix();
        self.bounded(client.delete(self.key(path), Some(options)))
            .await?;
        Ok(())
    }

    /// Changes under `path` (a prefix) from `revision` on.
    pub async fn watch(&self, path: &str, revision: i64) -> Result<WatchStream, ClusterError> {
        let mut client = self.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        self.bounded(client.watch(self.key(path), Some(options)))
            .await
    }

    /// Reads everything under `path` (a prefix), then follows its changes: the first batch
    /// of the returned follower is that read, the next ones come as etcd reports changes.
    pub async fn follow(&self, path: &str) -> Result<Follower<'_>, ClusterError> {
        let (current, revision) = self.list(path).await?;
        let changes = current
            .into_iter()
            .filter_map(|stored| {
                Some(Change {
                    path: self.path(&stored.key)?.to_owned(),
                    value: Some(stored.value),
                })
            })
            .collect();
        let watch = self.watch(path, revision + 1).await?;
        Ok(Follower {
            cluster: self,
            first: Some(Changes {
                fresh: true,
                changes,
                revision,
            }),
            watch,
        })
    }

    /// A new lease of `[cluster] lease_ttl` and its keep-alive channel.
    async fn grant_lease(
        &self,
    ) -> Result<
        (
            i64,
            etcd_client::LeaseKeeper,
            etcd_client::LeaseKeepAliveStream,
        ),
        ClusterError,
    > {
        let mut client = self.client().await?;
        let ttl = i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let granted = self.bounded(client.lease_grant(ttl, None)).await?;
        let (keeper, stream) = self.bounded(client.lease_keep_alive(granted.id())).await?;
        Ok((granted.id(), keeper, stream))
    }
}

/// Changes under one prefix, from a fresh read on (`Cluster::follow`).
pub struct Follower<'a> {
    cluster: &'a Cluster,
    first: Option<Changes>,
    watch: WatchStream,
}

// === impl Follower ===

impl Follower<'_> {
    /// The next batch; an error when etcd fails (the caller follows again from a fresh read).
    pub async fn next(&mut self) -> Result<Changes, ClusterError> {
        if let Some(first) = self.first.take() {
            return Ok(first);
        }
        let response = self.watch.message().await?.ok_or_else(|| {
            ClusterError::Etcd(etcd_client::Error::WatchError("watch ended".to_owned()))
        })?;
        if response.canceled() {
            let reason = response.cancel_reason().to_owned();
            return Err(ClusterError::Etcd(etcd_client::Error::WatchError(reason)));
        }
        let changes = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let key = String::from_utf8_lossy(kv.key());
                let path = self.cluster.path(&key)?.to_owned();
                let value = match event.event_type() {
                    EventType::Put => Some(kv.value().to_vec()),
                    EventType::Delete => None,
                };
                Some(Change { path, value })
            })
            .collect();
        Ok(Changes {
            fresh: false,
            changes,
            revision: response.header().map_or(0, |h| h.revision()),
        })
    }
}

fn stored(kv: &etcd_client::KeyValue) -> Stored {
    Stored {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}
