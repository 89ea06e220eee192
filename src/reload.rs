//! Configuration reload: read and validate the file again, build the next snapshot off the
//! request path, swap it in. A file with errors changes nothing; the running snapshot keeps
//! serving and the located errors are logged.
//!
//! Triggered by SIGHUP today; the admin API and file watching join later.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, ConfigError};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};

pub struct Reloader {
    path: PathBuf,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    /// Reloads run one at a time so generations stay in order.
    running: tokio::sync::Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    /// Listener changes need new sockets, which only a restart or binary upgrade can open.
    pub listen_changed: bool,
}

// === impl Reloader ===

impl Reloader {
    pub fn new(path: PathBuf, snapshots: Arc<SnapshotCell>, metrics: Arc<Metrics>) -> Self {
        Self {
            path,
            snapshots,
            metrics,
            running: tokio::sync::Mutex::new(()),
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
        result
    }

    async fn build_and_publish(&self) -> Result<Reloaded, ConfigError> {
        let path = self.path.clone();
        // Reading and building can take a while for large configs: keep it off the runtime.
        let snapshots = Arc::clone(&self.snapshots);
        let built = tokio::task::spawn_blocking(move || {
            let config = config::load(&path)?;
            let current = snapshots.load();
            let listen_changed = config.listen != current.config.listen;
            let next = Snapshot::build(config, current.generation + 1, Some(&current));
            Ok::<_, ConfigError>((next, listen_changed))
        })
        .await;
        let (next, listen_changed) = match built {
            Ok(result) => result?,
            Err(join_error) => {
                return Err(ConfigError::Read {
                    path: self.path.clone(),
                    source: std::io::Error::other(join_error),
                })
            }
        };
        let generation = next.generation;
        self.snapshots.publish(next);
        Ok(Reloaded {
            generation,
            listen_changed,
        })
    }
}

#[async_trait]
impl BackgroundService for Reloader {
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
            match self.reload().await {
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
                }
            }
        }
    }
}
