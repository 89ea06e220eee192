//! ACME through the cluster: one account per CA, and per certificate one node ordering at a
//! time, whose challenge answers every node serves and whose certificate every node loads.
//!
//! Keys under the cluster prefix:
//! - `acme/account/<CA digest>`: the account credentials, sealed.
//! - `acme/lock/<certificate>`: the node ordering it, under that node's lease, so the lock
//!   dies with the node.
//! - `acme/challenge/http01/<token>` → key authorization; `acme/challenge/dns01/<name>/<value>`
//!   → TXT value: under the ordering node's lease, deleted when its order ends.
//! - `acme/seen/<node>`: the etcd revision up to which a node serves challenge answers; the
//!   ordering node tells the CA to validate once every live node has caught up.
//! - `acme/cert/<certificate>`: `{"chain_pem", "key"}`, the key sealed (`cluster::seal`).
//! - `acme/failures/<certificate>`: the back-off after failed orders, so that another node
//!   does not spend the CA's failed-validation limit again at once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::failures::Failures;
use super::order::Issued;
use super::store::{CertStore, StoredCertificate};
use super::{Acme, AcmeError};
use crate::cluster::{Cluster, ClusterError};

pub const CHALLENGES: &str = "acme/challenge/";
pub const CERTIFICATES: &str = "acme/cert/";
pub const LOCKS: &str = "acme/lock/";
const FAILURES: &str = "acme/failures/";
const ACCOUNTS: &str = "acme/account/";
const SEEN: &str = "acme/seen/";
const NODES: &str = "nodes/";

/// How long the ordering node waits for the other nodes to serve a challenge answer before
/// it lets the CA validate anyway (a node that lags that much is probably going away).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(10);

/// A challenge answer's place, parsed from its etcd path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeKey {
    Http01 { token: String },
    Dns01 { name: String },
}

/// A certificate as etcd holds it.
#[derive(Serialize, Deserialize)]
struct SharedCertificate {
    chain_pem: String,
    /// The private key PEM, sealed.
    key: String,
}

/// The answers one order published, removed from etcd when the order ends.
pub struct SharedChallenges<'a> {
    cluster: &'a Cluster,
    published: Vec<String>,
}

pub fn seen_path(node: &str) -> String {
    format!("{SEEN}{node}")
}

fn certificate_path(primary: &str) -> String {
    format!("{CERTIFICATES}{primary}")
}

// === impl ChallengeKey ===

impl ChallengeKey {
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix(CHALLENGES)?;
        if let Some(token) = rest.strip_prefix("http01/") {
            return Some(Self::Http01 {
                token: token.to_owned(),
            });
        }
        let (name, _value) = rest.strip_prefix("dns01/")?.split_once('/')?;
        Some(Self::Dns01 {
            name: name.to_owned(),
        })
    }

    fn path(&self, value: &str) -> String {
        match self {
            Self::Http01 { token } => format!("{CHALLENGES}http01/{token}"),
            Self::Dns01 { name } => format!("{CHALLENGES}dns01/{name}/{value}"),
        }
    }

    /// Serves `value` from this node.
    pub fn publish(&self, value: &str, acme: &Acme) {
        match self {
            Self::Http01 { token } => acme.tokens.insert(token, value),
            Self::Dns01 { name } => acme.dns01.insert(name, value),
        }
    }

    pub fn withdraw(&self, value: &str, acme: &Acme) {
        match self {
            Self::Http01 { token } => acme.tokens.remove(token),
            Self::Dns01 { name } => acme.dns01.remove(name, value),
        }
    }
}

// === impl SharedChallenges ===

impl<'a> SharedChallenges<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        Self {
            cluster,
            published: Vec::new(),
        }
    }

    /// Puts an answer in etcd and waits until every live node serves it.
    pub async fn publish(&mut self, key: &ChallengeKey, value: &str) -> Result<(), ClusterError> {
        let path = key.path(value);
        let revision = self.cluster.put(&path, value.as_bytes(), true).await?;
        self.published.push(path);
        self.wait_for_nodes(revision).await
    }

    async fn wait_for_nodes(&self, revision: i64) -> Result<(), ClusterError> {
        let deadline = Instant::now() + PROPAGATION_LIMIT;
        loop {
            let (nodes, _) = self.cluster.list(NODES).await?;
            let (seen, _) = self.cluster.list(SEEN).await?;
            let caught_up: BTreeSet<&str> = seen
                .iter()
                .filter(|s| {
                    std::str::from_utf8(&s.value)
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                        .is_some_and(|r| r >= revision)
                })
                .filter_map(|s| self.cluster.path(&s.key)?.strip_prefix(SEEN))
                .collect();
            let lagging: Vec<&str> = nodes
                .iter()
                .filter_map(|n| self.cluster.path(&n.key)?.strip_prefix(NODES))
                .filter(|node| !caught_up.contains(node))
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    ?lagging,
                    "nodes do not serve the challenge answer yet; asking the CA to validate anyway"
                );
                return Ok(());
            }
            // Polling etcd, bounded by the deadline: nodes acknowledge within one watch round.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes this order's answers (best effort: they also lapse with the node's lease).
    pub async fn clear(self) {
        for path in &self.published {
            if let Err(error) = self.cluster.delete(path).await {
                tracing::info!(%error, "challenge answer left in etcd until the node's lease ends");
            }
        }
    }
}

// === the certificate lock ===

/// Takes the lock for ordering `primary`: true if this node now holds it (or already did).
pub async fn try_lock(cluster: &Cluster, primary: &str) -> Result<bool, ClusterError> {
    let path = format!("{LOCKS}{primary}");
    if cluster
        .create(&path, cluster.node().as_bytes(), true)
        .await?
    {
        return Ok(true);
    }
    // Held by this node since before a crash of the task? Same lease: still ours.
    Ok(cluster
        .get(&path)
        .await?
        .is_some_and(|held| held.value == cluster.node().as_bytes()))
}

pub async fn unlock(cluster: &Cluster, primary: &str) {
    let path = format!("{LOCKS}{primary}");
    if let Err(error) = cluster.delete_if(&path, cluster.node().as_bytes()).await {
        tracing::info!(%error, certificate = primary, "order lock left until the node's lease ends");
    }
}

// === certificates ===

/// The certificate etcd holds for `primary`, when it is newer than `current`; written to
/// `state_dir` too, so that the node serves it after a restart with etcd down.
pub async fn newer_certificate(
    cluster: &Cluster,
    primary: &str,
    names: &[String],
    current: Option<&StoredCertificate>,
    store: &CertStore,
) -> Result<Option<StoredCertificate>, AcmeError> {
    let path = certificate_path(primary);
    let Some(stored) = cluster.get(&path).await.map_err(AcmeError::Cluster)? else {
        return Ok(None);
    };
    let shared: SharedCertificate =
        serde_json::from_slice(&stored.value).map_err(|e| bad(&path, e.to_string()))?;
    let seal = cluster.seal_key().ok_or(AcmeError::NoSealKey)?;
    let key = seal
        .open(&cluster.key(&path), &shared.key)
        .map_err(|e| bad(&path, e.to_string()))?;
    let key_pem = String::from_utf8(key).map_err(|e| bad(&path, e.to_string()))?;
    let bundle = super::store::bundle(&key_pem, &shared.chain_pem);
    let candidate =
        super::store::parse_bundle(bundle.as_bytes()).map_err(|reason| bad(&path, reason))?;
    if !candidate.facts.covers(names) {
        return Ok(None);
    }
    let newer = current.is_none_or(|current| {
        candidate.facts.serial != current.facts.serial
            && candidate.facts.not_after >= current.facts.not_after
    });
    if !newer {
        return Ok(None);
    }
    store.write_certificate(primary, &bundle)?;
    Ok(Some(candidate))
}

fn bad(path: &str, reason: String) -> AcmeError {
    AcmeError::BadSharedCertificate {
        key: path.to_owned(),
        reason,
    }
}

/// Stores a freshly issued certificate for every node.
pub async fn store_certificate(
    cluster: &Cluster,
    primary: &str,
    issued: &Issued,
) -> Result<(), AcmeError> {
    let path = certificate_path(primary);
    let seal = cluster.seal_key().ok_or(AcmeError::NoSealKey)?;
    let key = seal
        .seal(&cluster.key(&path), issued.key_pem.as_bytes())
        .map_err(|e| AcmeError::Cluster(e.into()))?;
    let shared = SharedCertificate {
        chain_pem: issued.chain_pem.clone(),
        key,
    };
    let json = serde_json::to_vec(&shared).map_err(|e| bad(&path, e.to_string()))?;
    cluster
        .put(&path, &json, false)
        .await
        .map_err(AcmeError::Cluster)?;
    Ok(())
}

// === failures ===

pub(super) async fn load_failures(
    cluster: &Cluster,
    primary: &str,
) -> Result<Option<Failures>, ClusterError> {
    let stored = cluster.get(&format!("{FAILURES}{primary}")).await?;
    Ok(stored.and_then(|s| Failures::from_json(&s.value, SystemTime::now())))
}

pub(super) async fn store_failures(cluster: &Cluster, primary: &str, failures: &Failures) {
    let path = format!("{FAILURES}{primary}");
    let result = match failures.count {
        0 => cluster.delete(&path).await,
        _ => match serde_json::to_vec(failures) {
            Ok(json) => cluster.put(&path, &json, false).await.map(drop),
            Err(_) => Ok(()),
        },
    };
    if let Err(error) = result {
        tracing::warn!(%error, certificate = primary, "cannot share the back-off; other nodes may retry sooner");
    }
}

// === the account ===

/// The account credentials for `directory` kept in etcd (sealed), if any.
pub async fn load_account(
    cluster: &Cluster,
    directory: &str,
) -> Result<Option<Vec<u8>>, AcmeError> {
    let path = account_path(directory);
    let Some(stored) = cluster.get(&path).await.map_err(AcmeError::Cluster)? else {
        return Ok(None);
    };
    let seal = cluster.seal_key().ok_or(AcmeError::NoSealKey)?;
    let sealed = String::from_utf8_lossy(&stored.value);
    seal.open(&cluster.key(&path), &sealed)
        .map(Some)
        .map_err(|e| bad(&path, e.to_string()))
}

/// Stores new account credentials unless another node stored some first: then theirs are
/// returned, and this node uses them (its own new account stays unused).
pub async fn share_account(
    cluster: &Cluster,
    directory: &str,
    credentials: &[u8],
) -> Result<Option<Vec<u8>>, AcmeError> {
    let path = account_path(directory);
    let seal = cluster.seal_key().ok_or(AcmeError::NoSealKey)?;
    let sealed = seal
        .seal(&cluster.key(&path), credentials)
        .map_err(|e| AcmeError::Cluster(e.into()))?;
    let created = cluster
        .create(&path, sealed.as_bytes(), false)
        .await
        .map_err(AcmeError::Cluster)?;
    if created {
        return Ok(None);
    }
    load_account(cluster, directory).await
}

fn account_path(directory: &str) -> String {
    format!("{ACCOUNTS}{}", super::store::directory_digest(directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_paths_parse_back() {
        let http = ChallengeKey::Http01 {
            token: "tok-EN_1".into(),
        };
        assert_eq!(ChallengeKey::parse(&http.path("ka")), Some(http));
        let dns = ChallengeKey::Dns01 {
            name: "_acme-challenge.example.com".into(),
        };
        assert_eq!(ChallengeKey::parse(&dns.path("v4lue-_")), Some(dns));
        assert_eq!(ChallengeKey::parse("acme/challenge/dns01/no-value"), None);
        assert_eq!(ChallengeKey::parse("acme/cert/x"), None);
    }
}
