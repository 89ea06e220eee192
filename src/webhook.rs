//! Webhooks: state changes (an upstream going down or up, a region, a certificate) POSTed as
//! JSON to the configured URLs, signed with HMAC-SHA256 in `X-Headland-Signature`.
//!
//! Events go through a bounded queue to one background worker, so a slow or dead receiver
//! never blocks proxying: when the queue is full the event is dropped and counted. Each
//! delivery is retried with exponential back-off, so a retried event can arrive after a
//! later one: every event carries its node's `sequence`, increasing in the order the events
//! happened (also across restarts), and receivers order by it.
//!
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};

const QUEUE_EVENTS: usize = 1024;
/// Deliveries in progress at once; beyond this the worker waits and the queue absorbs.
const CONCURRENT_DELIVERIES: usize = 16;
/// Attempts per (event, webhook): the first plus retries after 1 s, 2 s, 4 s, 8 s, 16 s.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const SIGNATURE_HEADER: &str = "x-headland-signature";
/// Sequence numbers reserved per write of `state_dir/webhook-sequence`.
const SEQUENCE_BLOCK: u64 = 1000;
const SEQUENCE_FILE: &str = "webhook-sequence";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    UpstreamDown,
    UpstreamUp,
    CertRenewed,
    CertFailed,
    RegionDown,
    RegionUp,
    /// Sent by `POST /webhooks/test` to every webhook, whatever its `events`.
    Test,
}

/// One state change, as sent in the webhook body.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: &'static str,
    /// This node's count of events, in the order they happened: receivers order by it.
    pub sequence: u64,
    pub time: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The certificate's first name, for `cert.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// For `region.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The sending side, shared by everything that produces events.
pub struct Webhooks {
    queue: Option<mpsc::Sender<Event>>,
    sequence: Sequence,
    metrics: Arc<Metrics>,
    connector: Arc<Connector>,
}

/// The worker: a Pingora background service that delivers queued events.
pub struct WebhookWorker {
    queue: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    connector: Arc<Connector>,
    /// Highest sequence number delivered, for `headland_webhook_delivered_sequence`.
    delivered: Arc<AtomicU64>,
}

/// What `POST /webhooks/test` reports per webhook.
#[derive(Debug, Clone, Serialize)]
pub struct TestDelivery {
    pub url: String,
    pub delivered: bool,
    pub error: Option<String>,
}

/// Hands out event numbers that keep increasing across restarts. The file holds the first
/// number not yet handed out by any run; it is written a block ahead, so a restart skips
/// the rest of a block (numbers may jump, never repeat) and a write happens once per
/// `SEQUENCE_BLOCK` events rather than per event.
struct Sequence {
    file: Option<PathBuf>,
    /// The next number and the end of the block the file already covers.
    state: Mutex<(u64, u64)>,
}

// === impl EventKind ===

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UpstreamDown => "upstream.down",
            EventKind::UpstreamUp => "upstream.up",
            EventKind::CertRenewed => "cert.renewed",
            EventKind::CertFailed => "cert.failed",
            EventKind::RegionDown => "region.down",
            EventKind::RegionUp => "region.up",
            EventKind::Test => "webhook.test",
        }
    }
}

// === impl Event ===

impl Event {
    pub fn upstream(kind: EventKind, upstream: &str, server: &str, detail: Option<String>) -> Self {
        Self {
            upstream: Some(upstream.to_owned()),
            server: Some(server.to_owned()),
            ..Self::now(kind, detail)
        }
    }

    pub fn certificate(kind: EventKind, name: &str, detail: Option<String>) -> Self {
        Self {
            certificate: Some(name.to_owned()),
            ..Self::now(kind, detail)
        }
    }

    pub fn region(kind: EventKind, region: &str, detail: Option<String>) -> Self {
        Self {
            region: Some(region.to_owned()),
            ..Self::now(kind, detail)
        }
    }

    /// `kind` happening now, about nothing in particular yet.
    fn now(kind: EventKind, detail: Option<String>) -> Self {
        Self {
            event: kind.as_str(),
            sequence: 0,
            time: crate::access_log::timestamp(SystemTime::now()),
            node: String::new(),
            upstream: None,
            server: None,
            certificate: None,
            region: None,
            detail,
        }
    }
}

// === impl Webhooks ===

impl Webhooks {
    /// A sender and the worker that drains it; sequence numbers continue from `state_dir`.
    pub fn new(snapshots: Arc<SnapshotCell>, metrics: Arc<Metrics>) -> (Self, WebhookWorker) {
        let (sender, receiver) = mpsc::channel(QUEUE_EVENTS);
        let connector = Arc::new(Connector::new(None));
        let sequence = Sequence::load(&snapshots.load().config.node.state_dir);
        let worker = WebhookWorker {
            queue: tokio::sync::Mutex::new(receiver),
            snapshots,
            metrics: Arc::clone(&metrics),
            connector: Arc::clone(&connector),
            delivered: Arc::default(),
        };
        let webhooks = Self {
            queue: Some(sender),
            sequence,
            metrics,
            connector,
        };
        (webhooks, worker)
    }

    /// Events go nowhere (tests, tools).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self {
            queue: None,
            sequence: Sequence {
                file: None,
                state: Mutex::new((1, u64::MAX)),
            },
            metrics,
            connector: Arc::new(Connector::new(None)),
        }
    }

    /// Numbers `event` and queues it without waiting; a full queue drops it (and counts the
    /// drop).
    pub fn notify(&self, mut event: Event) {
        let Some(queue) = &self.queue else { return };
        event.sequence = self.next_sequence();
        if queue.try_send(event).is_err() {
            self.metrics
                .webhook_deliveries
                .with_label_values(&["dropped"])
                .inc();
        }
    }

    /// Sends one `webhook.test` event to every webhook of `snapshot` now, once (no retries),
    /// and reports each outcome.
    pub async fn test(&self, snapshot: &Snapshot) -> (u64, Vec<TestDelivery>) {
        let mut event = Event::now(
            EventKind::Test,
            Some("sent by POST /webhooks/test".to_owned()),
        );
        event.sequence = self.next_sequence();
        event.node.clone_from(&snapshot.config.node.name);
        let body = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
        let sends = snapshot.config.webhooks.iter().map(|hook| {
            let body = body.clone();
            async move {
                let result = deliver(&self.connector, hook, body).await;
                TestDelivery {
                    url: hook.url.clone(),
                    delivered: result.is_ok(),
                    error: result.err(),
                }
            }
        });
        (event.sequence, futures_util::future::join_all(sends).await)
    }

    fn next_sequence(&self) -> u64 {
        let number = self.sequence.next();
        self.metrics
            .webhook_sequence
            .set(i64::try_from(number).unwrap_or(i64::MAX));
        number
    }
}

// === impl Sequence ===

impl Sequence {
    fn load(state_dir: &Path) -> Self {
        let file = state_dir.join(SEQUENCE_FILE);
        let next = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .max(1);
        Self {
            file: Some(file),
            // The file covers nothing yet: the first number reserves a block.
            state: Mutex::new((next, next)),
        }
    }

    fn next(&self) -> u64 {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        let (next, reserved) = *state;
        let mut reserved = reserved;
        if next >= reserved {
            reserved = next.saturating_add(SEQUENCE_BLOCK);
            if let Some(file) = &self.file {
                let text = format!("{reserved}\n");
                if let Err(error) = crate::acme::store::write_atomically(file, text.as_bytes()) {
                    // Events still go out, numbered; only a restart could repeat numbers.
                    tracing::warn!(%error, "cannot keep the webhook sequence number");
                }
            }
        }
        *state = (next.saturating_add(1), reserved);
        next
    }
}

// === impl WebhookWorker ===

#[async_trait]
impl BackgroundService for WebhookWorker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut queue = self.queue.lock().await;
        let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
        loop {
            let mut event = tokio::select! {
                event = queue.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = shutdown.changed() => return,
            };
            let snapshot = self.snapshots.load();
            event.node.clone_from(&snapshot.config.node.name);
            let body = match serde_json::to_vec(&event) {
                Ok(body) => Bytes::from(body),
                Err(_) => continue,
            };
            let hooks = snapshot
                .config
                .webhooks
                .iter()
                .filter(|h| h.events.iter().any(|e| e == event.event));
            for hook in hooks {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (hook, body) = (hook.clone(), body.clone());
                let (connector, metrics) = (Arc::clone(&self.connector), Arc::clone(&self.metrics));
                let (delivered, sequence) = (Arc::clone(&self.delivered), event.sequence);
                tokio::spawn(async move {
                    let result = deliver_with_retries(&connector, &hook, body).await;
                    metrics
                        .webhook_deliveries
                        .with_label_values(&[if result { "delivered" } else { "failed" }])
                        .inc();
                    if result {
                        let highest = delivered
                            .fetch_max(sequence, Ordering::Relaxed)
                            .max(sequence);
                        metrics
                            .webhook_delivered_sequence
                            .set(i64::try_from(highest).unwrap_or(i64::MAX));
                    }
                    drop(slot);
                });
            }
        }
    }
}

async fn deliver_with_retries(connector: &Connector, hook: &WebhookConfig, body: Bytes) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match deliver(connector, hook, body.clone()).await {
            Ok(()) => return true,
            Err(reason) => {
                tracing::warn!(url = %hook.url, attempt, %reason, "webhook delivery failed");
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    false
}

/// One POST; success is any 2xx answer.
async fn deliver(connector: &Connector, hook: &WebhookConfig, body: Bytes) -> Result<(), String> {
    let addr = tokio::net::lookup_host((hook.host.as_str(), hook.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", hook.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", hook.host))?;
    let mut peer = HttpPeer::new(addr, hook.https, hook.host.clone());
    peer.options.connection_timeout = Some(REQUEST_TIMEOUT);
    peer.options.read_timeout = Some(REQUEST_TIMEOUT);
    peer.options.write_timeout = Some(REQUEST_TIMEOUT);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    let mut request =
        RequestHeader::build("POST", hook.path.as_bytes(), Some(6)).map_err(|e| e.to_string())?;
    let host = if hook.port == if hook.https { 443 } else { 80 } {
        hook.host.clone()
    } else {
        format!("{}:{}", hook.host, hook.port)
    };
    let headers = [
        ("host", host),
        ("content-type", "application/json".to_owned()),
        ("content-length", body.len().to_string()),
        (
            "user-agent",
            format!("headland/{}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    for (name, value) in headers {
        request
            .insert_header(name, value)
            .map_err(|e| e.to_string())?;
    }
    if let Some(secret) = &hook.secret {
        request
            .insert_header(SIGNATURE_HEADER, signature(secret, &body))
            .map_err(|e| e.to_string())?;
    }
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(|e| e.to_string())?;
    session
        .write_request_body(body, true)
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let status = session.response_header().map_or(0, |r| r.status.as_u16());
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("receiver answered {status}"))
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the form GitHub-style receivers check.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_keep_increasing_across_restarts() {
        let dir = crate::testing::temp_dir("sequence");
        let first = Sequence::load(&dir);
        let numbers: Vec<u64> = (0..3).map(|_| first.next()).collect();
        assert_eq!(numbers, [1, 2, 3]);
        // A restart continues above every number handed out, within one block.
        let second = Sequence::load(&dir);
        let after = second.next();
        assert!(after > 3 && after <= 1 + SEQUENCE_BLOCK, "{after}");
        assert_eq!(second.next(), after + 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
