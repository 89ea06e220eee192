//! Graceful shutdown: after SIGTERM, or after an upgrade has handed the listening sockets to
//! the new process, in-flight requests finish and then the process exits.
//!
//! Pingora's own sequence is: tell every service to stop (listeners stop accepting, idle
//! keep-alive connections close, HTTP/1.1 answers carry `Connection: close`, HTTP/2 sends
//! GOAWAY), sleep the whole grace period, then drop whatever still runs. A grace period long
//! enough for slow APIs would then make every stop take that long, and a short one (Headland
//! had 1 s) cut slower requests off with an empty reply. So the grace period is
//! `[node] shutdown_timeout`, and this service ends the process as soon as the last client
//! connection has closed, which is at once when nothing is in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::access_log::AccessLog;
use crate::proxy::connections::OpenConnections;
use crate::stream::OpenStreams;

/// How long the access log may take to write its last lines before the process exits.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(2);

pub struct ExitWhenDrained {
    pub connections: Arc<OpenConnections>,
    /// `[[streams]]` connections, which an upgrade must not cut either.
    pub streams: Arc<OpenStreams>,
    pub access_log: Arc<AccessLog>,
    /// See `StartOptions::remove_on_exit`.
    pub remove_on_exit: Option<PathBuf>,
}

#[async_trait]
impl BackgroundService for ExitWhenDrained {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|stopping| *stopping).await.is_err() {
            return;
        }
        tracing::info!("shutting down: waiting for in-flight requests to finish");
        tokio::join!(
            self.connections.wait_until_none(),
            self.streams.wait_until_none()
        );
        let access_log = Arc::clone(&self.access_log);
        // The log writer is a plain thread; waiting for it must not block this runtime.
        let _ = tokio::task::spawn_blocking(move || access_log.flush(LOG_FLUSH_LIMIT)).await;
        tracing::info!("every connection closed; exiting");
        exit(self.remove_on_exit.as_deref());
    }
}

/// Ends the process with success, removing `remove` first.
pub fn exit(remove: Option<&Path>) -> ! {
    if let Some(dir) = remove {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove the working directory");
        }
    }
    std::process::exit(0)
}
