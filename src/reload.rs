//! Configuration reload: read and validate the file again, build the next snapshot off the
//! request path, swap it in. A file with errors changes nothing; the running snapshot keeps
//! serving and the located errors are logged, counted and kept for `GET /config`.
//!
//! Triggers: SIGHUP, `POST /reload` on the admin API (and so `headland reload`), and, with
//! `[node] watch_config`, a change of the file itself.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use crate::access_log::timestamp;
use crate::cluster::shared_config::{self, SharedConfig};
use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::drain::Drains;

pub struct Reloader {
    path: PathBuf,
    /// In a cluster, the shared routing configuration the node runs with its local file.
    shared: Option<Arc<SharedConfig>>,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    /// Servers an operator drained: a server the new configuration adds back stays drained.
    drains: Arc<Drains>,
    /// Reloads run one at a time so generations stay in order.
    running: tokio::sync::Mutex<()>,
    status: Mutex<ReloadStatus>,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    pub generation: u64,
    /// Listener changes need new sockets, which only a restart or binary upgrade can open.
    pub listen_changed: bool,
}

/// What `GET /config` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub file: String,
    /// SHA-256 of the file text in use, hex.
    pub sha256: String,
    pub loaded_at: String,
    pub last_error: Option<ReloadError>,
    /// In a cluster, SHA-256 of the shared routing configuration in use (the same on every
    /// node that runs it), hex. Default: none (the local file alone).
    pub shared_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadError {
    pub at: String,
    pub errors: String,
}

/// Reloads on SIGHUP.
pub struct ReloadOnSignal(pub Arc<Reloader>);

/// Reloads when a file changes: polled (no platform watcher needed), noticing in-place
/// writes and atomic renames alike, and debounced so a half-written file is not read.
pub struct ReloadOnChange {
    reloader: Arc<Reloader>,
    watched: Watched,
    /// The file as it was when the watcher was made, i.e. while the server was being built
    /// from it. Taken at start-up of the service instead, a change made between building
    /// and that start (services start in no particular order, seconds apart on a loaded
    /// machine) would count as the starting point and never be loaded.
    initial: Option<Fingerprint>,
}

/// What identifies a file's current content on disk, cheaply: modified time, length, inode.
type Fingerprint = (SystemTime, u64, u64);

/// Which file a [`ReloadOnChange`] watches.
#[derive(Debug, Clone, Copy)]
enum Watched {
    /// The configuration file (`watch_config = true`).
    ConfigFile,
    /// The current `[geoip] database`, which tools such as geoipupdate replace in place.
    GeoipDatabase,
}

const WATCH_EVERY: Duration = Duration::from_millis(500);

// === impl Reloader ===

impl Reloader {
    /// `text` is the file text the running snapshot was built from.
    pub fn new(
        path: PathBuf,
        text: &str,
        (snapshots, metrics, drains): (Arc<SnapshotCell>, Arc<Metrics>, Arc<Drains>),
        shared: Option<Arc<SharedConfig>>,
    ) -> Self {
        let status = ReloadStatus {
            generation: snapshots.load().generation,
            file: path.display().to_string(),
            sha256: sha256_hex(text.as_bytes()),
            loaded_at: timestamp(SystemTime::now()),
            last_error: None,
            shared_sha256: shared
                .as_ref()
                .and_then(|s| s.text())
                .map(|t| sha256_hex(t.as_bytes())),
        };
        Self {
            path,
            shared,
            snapshots,
            metrics,
            drains,
            running: tokio::sync::Mutex::new(()),
            status: Mutex::new(status),
        }
    }

    pub async fn reload(&self) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self.running.lock().await;
        let result = self.build_and_publish().await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(done) => {
                tracing::info!(generation = done.generation, "configuration reloaded");
                if done.listen_changed {
                    tracing::warn!("listen addresses changed: they apply after a restart or a binary upgrade (--upgrade)");
                }
            }
            Err(error) => {
                tracing::error!(
                    "configuration reload rejected, still serving the previous one:\n{error}"
                );
                if let Ok(mut status) = self.status.lock() {
                    status.last_error = Some(ReloadError {
                        at: timestamp(SystemTime::now()),
                        errors: error.to_string(),
                    });
                }
            }
        }
        result
    }

    pub fn status(&self) -> Option<ReloadStatus> {
        self.status.lock().ok().map(|s| s.clone())
    }

    async fn build_and_publish(&self) -> Result<Reloaded, ConfigError> {
        let path = self.path.clone();
        let snapshots = Arc::clone(&self.snapshots);
        let shared = self.shared.as_ref().and_then(|s| s.text());
        let shared_sha256 = shared.as_ref().map(|t| sha256_hex(t.as_bytes()));
        // Reading and building can take a while for large configs: keep it off the runtime.
        let built = tokio::task::spawn_blocking(move || {
            let (config, text) = shared_config::load(&path, shared.as_deref().map(String::as_str))?;
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let current = snapshots.load();
            let listen_changed = config.listen != current.config.listen
                || crate::stream::listen_addresses(&config)
                    != crate::stream::listen_addresses(&current.config);
            let next = Snapshot::build(config, current.generation + 1, Some(&current));
            Ok::<_, ConfigError>((next, listen_changed, text))
        })
        .await;
        let (next, listen_changed, text) = match built {
            Ok(result) => result?,
            Err(join_error) => {
                return Err(ConfigError::Read {
                    path: self.path.clone(),
                    source: std::io::Error::other(join_error),
                })
            }
        };
        let generation = next.generation;
        self.drains.apply(&next.pools);
        self.snapshots.publish(next);
        if let Ok(mut status) = self.status.lock() {
            status.generation = generation;
            status.sha256 = sha256_hex(text.as_bytes());
            status.shared_sha256 = shared_sha256;
            status.loaded_at = timestamp(SystemTime::now());
        }
        Ok(Reloaded {
            generation,
            listen_changed,
        })
    }
}

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len(), metadata.ino()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// === impl ReloadOnSignal ===

#[async_trait]
impl BackgroundService for ReloadOnSignal {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; reload by signal is off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {}
                _ = shutdown.changed() => return,
            }
            // Outcome is logged and counted by `reload`.
            let _ = self.0.reload().await;
        }
    }
}

// === impl ReloadOnChange ===

impl ReloadOnChange {
    pub fn config_file(reloader: Arc<Reloader>) -> Self {
        Self::new(reloader, Watched::ConfigFile)
    }

    pub fn geoip_database(reloader: Arc<Reloader>) -> Self {
        Self::new(reloader, Watched::GeoipDatabase)
    }

    fn new(reloader: Arc<Reloader>, watched: Watched) -> Self {
        let mut watcher = Self {
            reloader,
            watched,
            initial: None,
        };
        watcher.initial = watcher.fingerprint();
        watcher
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        match self.watched {
            Watched::ConfigFile => fingerprint(&self.reloader.path),
            Watched::GeoipDatabase => {
                let snapshot = self.reloader.snapshots.load();
                fingerprint(snapshot.config.dns.geoip.as_deref()?)
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadOnChange {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = self.initial;
        let mut ticks = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = self.fingerprint();
            if now == seen || now.is_none() {
                // Unchanged, or missing mid-rename: look again next tick.
                continue;
            }
            // Debounce: wait until two looks in a row agree, so editors that write in
            // several steps are read once, complete.
            tokio::time::sleep(WATCH_EVERY).await;
            let settled = self.fingerprint();
            if settled != now {
                continue;
            }
            if let Watched::GeoipDatabase = self.watched {
                tracing::info!("the GeoIP database changed; reloading");
            }
            let _ = self.reloader.reload().await;
            // The reload may have pointed at another database: start from what is there now.
            seen = self.fingerprint();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    /// A file replaced after the server was built from it but before the watcher service
    /// started (services start in no set order) is still loaded: the watcher compares with
    /// the file as it was when the server was built, not when the service happened to start.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_change_before_the_watcher_starts_is_loaded() {
        let dir = std::env::temp_dir().join(format!("headland-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("headland.toml");
        let text = "[upstreams.a]\nservers = [\"127.0.0.1:9\"]\n";
        std::fs::write(&path, text).unwrap();
        let config = config::parse(text, "headland.toml", &dir).unwrap();
        let snapshots = Arc::new(SnapshotCell::new(Snapshot::build(config, 1, None)));
        let metrics = Arc::new(Metrics::new().unwrap());
        let reloader = Reloader::new(
            path.clone(),
            text,
            (
                Arc::clone(&snapshots),
                metrics,
                Arc::new(Drains::in_memory()),
            ),
            None,
        );
        let watcher = ReloadOnChange::config_file(Arc::new(reloader));

        // Replaced as deploy tools do, by renaming a new file over it, before the start.
        let staged = dir.join("headland.toml.new");
        std::fs::write(
            &staged,
            format!("{text}[upstreams.b]\nservers = [\"127.0.0.1:9\"]\n"),
        )
        .unwrap();
        std::fs::rename(&staged, &path).unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let service = tokio::spawn(async move { watcher.start(shutdown).await });

        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while snapshots.load().generation < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the change was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        service.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
