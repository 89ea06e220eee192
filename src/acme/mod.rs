//! Certificates obtained and renewed over ACME (RFC 8555), and the status of every
//! certificate the node serves.
//!
//! In a cluster (`shared`), the nodes take turns through an etcd lock per certificate: one
//! orders, every node answers its challenges, and every node loads what it stored.
//!
//! One background task owns all ACME work: on start and after every reload it loads what
//! `state_dir` already holds (a restart never re-orders a valid certificate), orders what is
//! missing, and sleeps until the next renewal, renewal-information check or retry. The
//! certificates it holds are published in an `ArcSwap` that the SNI resolver reads, so a new
//! certificate serves from the next handshake on.

mod account;
mod certificate;
pub mod challenge;
mod failures;
mod order;
pub mod report;
mod schedule;
pub mod shared;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use instant_acme::Account;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError};
use crate::config::{AcmeConfig, Config};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;
use crate::tls::CertIndex;
use crate::webhook::{Event, EventKind, Webhooks};
pub use certificate::CertificateFacts;
use challenge::{Dns01Records, Http01Tokens};
use failures::Failures;
use store::{CertStore, StoredCertificate};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    #[error("ACME {step}: {source}")]
    Acme {
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("validation failed: {0}")]
    Rejected(String),
    #[error("cannot make the certificate key: {0}")]
    Key(String),
    #[error("cannot write {path}: {error}")]
    Store {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("stored certificate {path} is unusable: {reason}")]
    BadStoredCertificate { path: PathBuf, reason: String },
    #[error("stored ACME account is unreadable: {0}")]
    BadAccount(#[source] serde_json::Error),
    #[error("cluster: {0}")]
    Cluster(#[source] ClusterError),
    #[error("[cluster] has no seal_key_file: keys cannot be shared")]
    NoSealKey,
    #[error("certificate in etcd at {key} is unusable: {reason}")]
    BadSharedCertificate { key: String, reason: String },
}

/// What the proxy, the SNI resolver and the admin API share with the ACME task.
#[derive(Default)]
pub struct Acme {
    pub tokens: Http01Tokens,
    pub dns01: Dns01Records,
    certificates: ArcSwap<CertIndex>,
    status: Mutex<Vec<CertStatus>>,
    /// Certificates an operator asked to renew now (by first name).
    renew_requests: Mutex<BTreeSet<String>>,
    wake: tokio::sync::Notify,
    /// Set when an order lock was released in the cluster: nodes waiting for it look again.
    lock_released: AtomicBool,
}

/// One certificate as `headland certs` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertStatus {
    pub names: Vec<String>,
    /// `acme` or `file`.
    pub source: String,
    /// `valid`, `pending` (being obtained), `failing` (an old one still serves), `missing`
    /// (none yet and the last attempt failed), or `expired`.
    pub state: String,
    pub issuer: Option<String>,
    /// Unix seconds.
    pub not_after: Option<u64>,
    pub next_renewal: Option<u64>,
    pub last_error: Option<String>,
    pub failures: u32,
}

/// The background task.
pub struct AcmeService {
    acme: Arc<Acme>,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    webhooks: Arc<Webhooks>,
    /// Names with an expiry gauge, so that a name no longer served loses its series.
    expiry_names: Mutex<BTreeSet<String>>,
    /// The cluster the node orders through, if any.
    cluster: Option<Arc<Cluster>>,
}

/// One managed certificate's state in the task.
struct Entry {
    names: Vec<String>,
    current: Option<StoredCertificate>,
    failures: Failures,
    /// From renewal information when the CA has it, else a third of the lifetime left.
    renew_at: Option<SystemTime>,
    next_ari_check: SystemTime,
    pending: bool,
    /// In a cluster, another node holds the order lock: look again then (its certificate
    /// wakes the task sooner).
    lock_retry_at: Option<SystemTime>,
}

/// How long a node waits before trying again a lock another node holds.
const LOCK_RETRY: Duration = Duration::from_secs(30);

// === impl AcmeError ===

impl AcmeError {
    fn acme(step: &'static str, source: instant_acme::Error) -> Self {
        Self::Acme { step, source }
    }
}

// === impl Acme ===

impl Acme {
    /// The ACME certificates being served, by name.
    pub fn certificates(&self) -> Arc<CertIndex> {
        self.certificates.load_full()
    }

    pub fn status(&self) -> Vec<CertStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Asks for the ACME certificate with first name `name` to be renewed now. A back-off
    /// after failures still applies: forcing must not hammer the CA.
    pub fn request_renewal(&self, name: &str) -> Result<(), String> {
        let known = self
            .status()
            .iter()
            .any(|c| c.source == "acme" && c.names.first().is_some_and(|n| n == name));
        if !known {
            return Err(format!("no ACME certificate named \"{name}\""));
        }
        if let Ok(mut requests) = self.renew_requests.lock() {
            requests.insert(name.to_owned());
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Makes the task look at its certificates now (a certificate changed in the cluster).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// An order lock was released (its order ended, or its node's lease did): certificates
    /// waiting for a lock are looked at again now rather than at their next retry.
    pub fn lock_released(&self) {
        self.lock_released.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn take_renewal_requests(&self) -> BTreeSet<String> {
        self.renew_requests
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

// === impl AcmeService ===

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.snapshots.subscribe();
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut account: Option<(String, Account)> = None;
        let mut store_cleaned = false;
        loop {
            let snapshot = self.snapshots.load();
            let store = CertStore::new(&snapshot.config.node.state_dir);
            if !store_cleaned {
                store.remove_stale_temporaries();
                store_cleaned = true;
            }
            let wake = match &snapshot.config.acme {
                Some(acme) => {
                    sync_entries(&mut entries, acme, &store);
                    if self.acme.lock_released.swap(false, Ordering::SeqCst) {
                        for entry in entries.values_mut() {
                            entry.lock_retry_at = None;
                        }
                    }
                    for primary in self.acme.take_renewal_requests() {
                        if let Some(entry) = entries.get_mut(&primary) {
                            entry.renew_at = Some(SystemTime::now());
                        }
                    }
                    // Serve what state_dir holds before any round trip to the CA.
                    self.publish(&entries, &snapshot.config);
                    self.work_due(&mut entries, acme, &store, &mut account)
                        .await;
                    next_wake(&entries)
                }
                None => {
                    entries.clear();
                    None
                }
            };
            self.publish(&entries, &snapshot.config);
            let sleep = wake
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or(schedule::ARI_CHECK_INTERVAL)
                .min(schedule::ARI_CHECK_INTERVAL);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                changed = changes.changed() => if changed.is_err() { return },
                () = self.acme.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl AcmeService {
    pub fn new(
        acme: Arc<Acme>,
        snapshots: Arc<SnapshotCell>,
        metrics: Arc<Metrics>,
        webhooks: Arc<Webhooks>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            acme,
            snapshots,
            metrics,
            webhooks,
            expiry_names: Mutex::default(),
            cluster,
        }
    }

    async fn work_due(
        &self,
        entries: &mut BTreeMap<String, Entry>,
        acme: &AcmeConfig,
        store: &CertStore,
        account: &mut Option<(String, Account)>,
    ) {
        let primaries: Vec<String> = entries.keys().cloned().collect();
        for primary in primaries {
            let Some(entry) = entries.get_mut(&primary) else {
                continue;
            };
            if let Some(cluster) = &self.cluster {
                self.adopt_shared(cluster, &primary, entry, store).await;
            }
            let now = SystemTime::now();
            if entry.next_action() > now {
                continue;
            }
            let cluster = self.cluster.as_deref();
            let account = match account::ensure_account(account, acme, store, cluster).await {
                Ok(account) => account,
                // etcd away is not the CA refusing: no back-off, no failure event; the
                // node simply orders nothing until etcd answers.
                Err(AcmeError::Cluster(error)) => {
                    tracing::warn!(%error, certificate = %primary, "cannot reach the cluster's ACME account; not ordering while etcd is away");
                    entry.lock_retry_at = Some(now + LOCK_RETRY);
                    continue;
                }
                Err(error) => {
                    self.failed(&primary, entry, store, &error);
                    continue;
                }
            };
            if entry.current.is_some() && !entry.renewal_due(now) {
                check_renewal_info(entry, &account, now).await;
                if !entry.renewal_due(now) {
                    continue;
                }
            }
            if let Some(cluster) = cluster {
                if !self.lock_for_order(cluster, &primary, entry, store).await {
                    continue;
                }
            }
            entry.pending = true;
            self.publish(entries, &self.snapshots.load().config);
            let Some(entry) = entries.get_mut(&primary) else {
                continue;
            };
            self.renew(&primary, entry, &account, store, acme.challenge)
                .await;
            if let Some(cluster) = cluster {
                shared::store_failures(cluster, &primary, &entry.failures).await;
                shared::unlock(cluster, &primary).await;
            }
        }
    }

    /// Loads the certificate another node stored in etcd, when it is newer than ours.
    async fn adopt_shared(
        &self,
        cluster: &Cluster,
        primary: &str,
        entry: &mut Entry,
        store: &CertStore,
    ) {
        let current = entry.current.as_ref();
        match shared::newer_certificate(cluster, primary, &entry.names, current, store).await {
            Ok(Some(stored)) => {
                tracing::info!(certificate = primary, serial = %stored.facts.serial, "certificate loaded from the cluster");
                entry.renew_at = Some(schedule::renew_at_third_left(&stored.facts));
                entry.current = Some(stored);
                entry.failures = Failures::default();
                entry.lock_retry_at = None;
                let _ = std::fs::remove_file(store.failures_path(primary));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, certificate = primary, "cannot load the certificate from the cluster; serving what state_dir holds")
            }
        }
    }

    /// Takes the cluster's order lock for `primary`; false (and a time to look again) when
    /// another node holds it, etcd is away, or the other nodes' back-off still runs.
    async fn lock_for_order(
        &self,
        cluster: &Cluster,
        primary: &str,
        entry: &mut Entry,
        store: &CertStore,
    ) -> bool {
        let now = SystemTime::now();
        match shared::try_lock(cluster, primary).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    certificate = primary,
                    "another node is ordering this certificate"
                );
                entry.lock_retry_at = Some(now + LOCK_RETRY);
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, certificate = primary, "cannot take the order lock; not ordering while etcd is away");
                entry.lock_retry_at = Some(now + LOCK_RETRY);
                return false;
            }
        }
        entry.lock_retry_at = None;
        // The node that held the lock before may have just finished or failed.
        self.adopt_shared(cluster, primary, entry, store).await;
        if let Ok(Some(failures)) = shared::load_failures(cluster, primary).await {
            if failures.not_before > entry.failures.not_before {
                entry.failures = failures;
            }
        }
        if entry.next_action() > SystemTime::now() {
            shared::unlock(cluster, primary).await;
            return false;
        }
        true
    }

    /// Orders a certificate for `entry` and puts it in place, or records the failure.
    async fn renew(
        &self,
        primary: &str,
        entry: &mut Entry,
        account: &Account,
        store: &CertStore,
        challenge: crate::config::AcmeChallenge,
    ) {
        let replaces = entry.current.as_ref().and_then(|c| c.facts.ari_id.clone());
        tracing::info!(certificate = primary, names = ?entry.names, "ordering a certificate");
        let mut shared_challenges = self.cluster.as_deref().map(shared::SharedChallenges::new);
        let publish = order::Publish {
            kind: challenge,
            acme: &self.acme,
        };
        let issued = order::obtain(
            account,
            &entry.names,
            replaces,
            publish,
            shared_challenges.as_mut(),
        )
        .await;
        if let Some(challenges) = shared_challenges {
            challenges.clear().await;
        }
        let result = match (issued, self.cluster.as_deref()) {
            (Ok(issued), Some(cluster)) => {
                // Stored for the other nodes first: a certificate only this node has would
                // be ordered again by the next node to take the lock.
                match shared::store_certificate(cluster, primary, &issued).await {
                    Ok(()) => Ok(issued),
                    Err(error) => {
                        tracing::error!(%error, certificate = primary, "issued certificate not stored in etcd; other nodes will not serve it");
                        Ok(issued)
                    }
                }
            }
            (issued, _) => issued,
        }
        .and_then(|issued| store.save_certificate(primary, &issued.key_pem, &issued.chain_pem));
        entry.pending = false;
        match result {
            Ok(stored) => {
                tracing::info!(certificate = primary, serial = %stored.facts.serial, "certificate issued");
                self.metrics
                    .acme_orders
                    .with_label_values(&["issued"])
                    .inc();
                entry.renew_at = Some(schedule::renew_at_third_left(&stored.facts));
                entry.next_ari_check = SystemTime::now();
                entry.current = Some(stored);
                entry.failures = Failures::default();
                let _ = std::fs::remove_file(store.failures_path(primary));
                self.webhooks
                    .notify(Event::certificate(EventKind::CertRenewed, primary, None));
            }
            Err(error) => self.failed(primary, entry, store, &error),
        }
    }

    fn failed(&self, primary: &str, entry: &mut Entry, store: &CertStore, error: &AcmeError) {
        entry.pending = false;
        entry.failures.count += 1;
        let wait = schedule::backoff(entry.failures.count, retry_after(error));
        let now = SystemTime::now();
        entry.failures.not_before = unix(now.checked_add(wait).unwrap_or(now));
        entry.failures.last_error = Some(error.to_string());
        tracing::warn!(certificate = primary, %error, failures = entry.failures.count, retry_in_seconds = wait.as_secs(), "certificate order failed");
        self.metrics
            .acme_orders
            .with_label_values(&["failed"])
            .inc();
        if let Ok(json) = serde_json::to_vec(&entry.failures) {
            if let Err(error) = store::write_atomically(&store.failures_path(primary), &json) {
                tracing::warn!(%error, "cannot record the failure; a restart will retry sooner");
            }
        }
        self.webhooks.notify(Event::certificate(
            EventKind::CertFailed,
            primary,
            Some(error.to_string()),
        ));
    }

    /// Makes the current certificates visible to the resolver, the status and the metrics.
    fn publish(&self, entries: &BTreeMap<String, Entry>, config: &Config) {
        let served = entries.values().filter_map(|entry| {
            entry
                .current
                .as_ref()
                .map(|c| (entry.names.as_slice(), Arc::clone(&c.key)))
        });
        self.acme
            .certificates
            .store(Arc::new(CertIndex::from_keys(served)));
        let mut status: Vec<CertStatus> = config
            .tls
            .certificates
            .iter()
            .map(CertStatus::of_file)
            .collect();
        status.extend(entries.values().map(Entry::status));
        self.set_expiry_metrics(&status);
        if let Ok(mut current) = self.acme.status.lock() {
            *current = status;
        }
    }

    fn set_expiry_metrics(&self, status: &[CertStatus]) {
        let gauge = &self.metrics.certificate_expiry;
        let mut shown = BTreeSet::new();
        for certificate in status {
            let Some(not_after) = certificate.not_after else {
                continue;
            };
            for name in &certificate.names {
                gauge
                    .with_label_values(&[name.as_str()])
                    .set(i64::try_from(not_after).unwrap_or(i64::MAX));
                shown.insert(name.clone());
            }
        }
        if let Ok(mut previous) = self.expiry_names.lock() {
            for gone in previous.difference(&shown) {
                let _ = gauge.remove_label_values(&[gone.as_str()]);
            }
            *previous = shown;
        }
    }
}

/// Adds entries for new certificates (loading what `state_dir` holds) and drops removed ones.
fn sync_entries(entries: &mut BTreeMap<String, Entry>, acme: &AcmeConfig, store: &CertStore) {
    let wanted: BTreeMap<&str, &Vec<String>> = acme
        .certificates
        .iter()
        .filter_map(|names| names.first().map(|primary| (primary.as_str(), names)))
        .collect();
    entries.retain(|primary, entry| {
        wanted
            .get(primary.as_str())
            .is_some_and(|n| **n == entry.names)
    });
    for (primary, names) in wanted {
        if !entries.contains_key(primary) {
            entries.insert(primary.to_owned(), Entry::load(primary, names, store));
        }
    }
}

fn next_wake(entries: &BTreeMap<String, Entry>) -> Option<SystemTime> {
    entries.values().map(Entry::next_action).min()
}

/// Asks the CA when to renew (RFC 9773), at most every twelve hours; a CA without renewal
/// information leaves the third-of-lifetime time in place.
async fn check_renewal_info(entry: &mut Entry, account: &Account, now: SystemTime) {
    if entry.next_ari_check > now {
        return;
    }
    entry.next_ari_check = now + schedule::ARI_CHECK_INTERVAL;
    let Some(id) = entry.current.as_ref().and_then(|c| c.facts.ari_id.clone()) else {
        return;
    };
    match account.renewal_info(&id).await {
        Ok((info, retry_after)) => {
            let window = &info.suggested_window;
            let (start, end): (SystemTime, SystemTime) = (window.start.into(), window.end.into());
            // A window that ends after the certificate does would let it lapse: keep the
            // third-of-lifetime time rather than follow it.
            let lapses = entry
                .current
                .as_ref()
                .is_some_and(|c| end > c.facts.not_after);
            if lapses {
                tracing::warn!("the CA's renewal window ends after the certificate expires; renewing at a third of the lifetime");
            } else {
                entry.renew_at = Some(schedule::renew_in_window(start, end, now));
            }
            // The CA's Retry-After says when to ask again; never more often than hourly.
            let again = retry_after.clamp(Duration::from_secs(3600), schedule::ARI_CHECK_INTERVAL);
            entry.next_ari_check = now + again;
        }
        Err(instant_acme::Error::Unsupported(_)) => {}
        Err(error) => {
            tracing::info!(%error, "renewal information unavailable; renewing at a third of the lifetime")
        }
    }
}

/// The CA's own wait, where instant-acme passes it on; rate limits get at least an hour
/// because Let's Encrypt counts them per hour or per week.
fn retry_after(error: &AcmeError) -> Option<Duration> {
    let AcmeError::Acme { source, .. } = error else {
        return None;
    };
    match source {
        instant_acme::Error::Timeout(Some(at)) => {
            Some(at.saturating_duration_since(std::time::Instant::now()))
        }
        instant_acme::Error::Api(problem)
            if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited") =>
        {
            Some(Duration::from_secs(3600))
        }
        _ => None,
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// === impl Entry ===

impl Entry {
    fn load(primary: &str, names: &[String], store: &CertStore) -> Self {
        let current = match store.load_certificate(primary) {
            Ok(Some(stored)) if stored.facts.covers(names) => Some(stored),
            Ok(Some(_)) => {
                tracing::info!(
                    certificate = primary,
                    "stored certificate lacks a configured name; ordering a new one"
                );
                None
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "ignoring the stored certificate");
                None
            }
        };
        let failures = Failures::load(primary, store, SystemTime::now());
        Self {
            names: names.to_vec(),
            renew_at: current
                .as_ref()
                .map(|c| schedule::renew_at_third_left(&c.facts)),
            current,
            failures,
            next_ari_check: SystemTime::now(),
            pending: false,
            lock_retry_at: None,
        }
    }

    fn renewal_due(&self, now: SystemTime) -> bool {
        self.renew_at.is_none_or(|at| at <= now)
    }

    /// When the task must next look at this certificate.
    fn next_action(&self) -> SystemTime {
        // `Failures::load` refused times out of range; should one appear, no back-off.
        let after_backoff = self.failures.not_before_time().unwrap_or(UNIX_EPOCH);
        let wanted = match (&self.current, self.renew_at) {
            (Some(_), Some(renew_at)) => renew_at.min(self.next_ari_check),
            _ => UNIX_EPOCH,
        };
        wanted
            .max(after_backoff)
            .max(self.lock_retry_at.unwrap_or(UNIX_EPOCH))
    }

    /// When a new certificate will be ordered, as far as is known now: the renewal time
    /// (a third of the lifetime left, or the CA's window), delayed by back-off or another
    /// node's lock. Unlike `next_action`, not the next renewal-information check, which
    /// orders nothing unless the CA moved the window.
    fn next_renewal(&self) -> SystemTime {
        let wanted = match (&self.current, self.renew_at) {
            (Some(_), Some(renew_at)) => renew_at,
            _ => UNIX_EPOCH,
        };
        wanted
            .max(self.failures.not_before_time().unwrap_or(UNIX_EPOCH))
            .max(self.lock_retry_at.unwrap_or(UNIX_EPOCH))
    }

    fn status(&self) -> CertStatus {
        let now = SystemTime::now();
        let facts = self.current.as_ref().map(|c| &c.facts);
        let state = match (facts, self.pending, self.failures.count) {
            (_, true, _) => "pending",
            (Some(f), _, _) if f.not_after <= now => "expired",
            (Some(_), _, 0) => "valid",
            (Some(_), _, _) => "failing",
            (None, _, 0) => "pending",
            (None, _, _) => "missing",
        };
        CertStatus {
            names: self.names.clone(),
            source: "acme".to_owned(),
            state: state.to_owned(),
            issuer: facts.map(|f| f.issuer.clone()),
            not_after: facts.map(|f| unix(f.not_after)),
            next_renewal: Some(unix(self.next_renewal().max(now))),
            last_error: self.failures.last_error.clone(),
            failures: self.failures.count,
        }
    }
}

// === impl CertStatus ===

impl CertStatus {
    fn of_file(certificate: &crate::config::StaticCertificate) -> Self {
        let facts = certificate
            .key
            .cert
            .first()
            .and_then(|leaf| CertificateFacts::read(leaf).ok());
        let expired = facts
            .as_ref()
            .is_some_and(|f| f.not_after <= SystemTime::now());
        CertStatus {
            names: certificate.names.clone(),
            source: "file".to_owned(),
            state: if expired { "expired" } else { "valid" }.to_owned(),
            issuer: facts.as_ref().map(|f| f.issuer.clone()),
            not_after: facts.as_ref().map(|f| unix(f.not_after)),
            next_renewal: None,
            last_error: None,
            failures: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_back_off_in_memory_does_not_panic() {
        let entry = Entry {
            names: vec![],
            current: None,
            failures: Failures {
                count: 1,
                not_before: u64::MAX,
                last_error: None,
            },
            renew_at: None,
            next_ari_check: SystemTime::now(),
            pending: false,
            lock_retry_at: None,
        };
        assert_eq!(entry.next_action(), UNIX_EPOCH);
        let _ = entry.status();
    }

    /// `headland certs` once showed the next renewal-information check (issue time + 1 s)
    /// as the next renewal of a certificate valid for years.
    #[test]
    fn the_next_renewal_is_the_renewal_time_not_the_next_information_check() {
        let dir = crate::testing::temp_dir("next-renewal");
        let store = CertStore::new(&dir);
        let certificate = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        store
            .save_certificate(
                "a.test",
                &certificate.signing_key.serialize_pem(),
                &certificate.cert.pem(),
            )
            .unwrap();
        let entry = Entry::load("a.test", &["a.test".to_owned()], &store);
        let now = SystemTime::now();
        assert!(
            entry.next_action() <= now,
            "renewal information is asked for at once"
        );
        let facts = &entry.current.as_ref().unwrap().facts;
        let status = entry.status();
        assert_eq!(
            status.next_renewal,
            Some(unix(schedule::renew_at_third_left(facts))),
            "a third of the lifetime before expiry"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
