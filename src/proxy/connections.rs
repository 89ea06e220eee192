//! Caps on client connections, in total and per client address, in front of the proxy:
//! 15,000 idle connections from one address took 390 MB before this existed.
//!
//! A connection over a cap is closed at once, before a byte of it is read (nginx's
//! `limit_conn` answers 503 instead; closing costs less and a browser retries). Trusted
//! proxies (`[client_ip] trusted_proxies`, a CDN) are exempt from the per-address cap: every
//! visitor behind them shares their few addresses. Caps come from the current snapshot, so
//! a reload changes them for new connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;

/// Wraps the proxy application and admits connections under the caps.
pub struct ConnectionGate<A> {
    inner: Arc<A>,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    counts: Arc<OpenConnections>,
}

/// Open client connections: the total (watched, so shutdown can wait for the last one to
/// close), and per client address (entries leave with their last connection, so the map
/// never holds more addresses than there are connections).
pub struct OpenConnections {
    total: watch::Sender<usize>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it gives its place back.
struct Admitted {
    counts: Arc<OpenConnections>,
    ip: Option<IpAddr>,
    metrics: Arc<Metrics>,
}

// === impl ConnectionGate ===

impl<A> ConnectionGate<A> {
    pub fn new(
        inner: A,
        counts: Arc<OpenConnections>,
        snapshots: Arc<SnapshotCell>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            snapshots,
            metrics,
            counts,
        }
    }

    fn admit(&self, peer: Option<IpAddr>) -> Option<Admitted> {
        let snapshot = self.snapshots.load();
        let limits = &snapshot.config.http;
        let reject = |limit: &str| {
            self.metrics
                .limit_rejections
                .with_label_values(&[limit])
                .inc();
            None
        };
        let mut total = 0;
        self.counts.total.send_modify(|open| {
            *open += 1;
            total = *open;
        });
        // From here on, `Admitted`'s drop undoes the count whichever way this returns.
        let mut admitted = Admitted {
            counts: Arc::clone(&self.counts),
            ip: None,
            metrics: Arc::clone(&self.metrics),
        };
        self.metrics.connections.inc();
        if total > limits.max_connections {
            return reject("connections");
        }
        let Some(ip) = peer.filter(|ip| !snapshot.client_ip.is_trusted(*ip)) else {
            return Some(admitted);
        };
        let Ok(mut per_ip) = self.counts.per_ip.lock() else {
            return Some(admitted);
        };
        let count = per_ip.entry(ip).or_insert(0);
        *count += 1;
        admitted.ip = Some(ip);
        if *count > limits.max_connections_per_ip {
            drop(per_ip);
            return reject("connections_per_ip");
        }
        Some(admitted)
    }
}

#[async_trait]
impl<A> ServerApp for ConnectionGate<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Held until the connection ends: HTTP/1.x keep-alive and HTTP/2 both run their whole
        // connection inside `process_new`.
        let _admitted = self.admit(peer)?;
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

// === impl OpenConnections ===

impl OpenConnections {
    pub fn new() -> Self {
        Self {
            total: watch::Sender::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Returns once no client connection is open.
    pub async fn wait_until_none(&self) {
        let mut total = self.total.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = total.wait_for(|open| *open == 0).await;
    }
}

impl Default for OpenConnections {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Admitted ===

impl Drop for Admitted {
    fn drop(&mut self) {
        self.counts
            .total
            .send_modify(|open| *open = open.saturating_sub(1));
        self.metrics.connections.dec();
        let Some(ip) = self.ip else {
            return;
        };
        if let Ok(mut per_ip) = self.counts.per_ip.lock() {
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}
