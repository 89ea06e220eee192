//! `[[streams]]`: TCP connections carried byte for byte to an upstream pool (nginx `stream`,
//! Traefik TCP routers), chosen by the address they arrive on and, for TLS passthrough, by
//! the server name of their ClientHello. The upstream does the TLS handshake itself.
//!
//! The listening sockets are fixed at start, like `[listen]`, and survive a binary upgrade
//! (Pingora hands them over). Everything else is read from the current snapshot per
//! connection: a reload changes streams, pools and timeouts for new connections, while open
//! connections finish on what they started with. On shutdown or upgrade, open connections
//! keep running until they close, at most `[node] shutdown_timeout`.

mod client_hello;
mod relay;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use prometheus::IntGauge;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access_log::{self, AccessLog};
use crate::config::{Config, StreamConfig};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::upstream::{Endpoint, InFlight, Pool, Tried};

pub use relay::End;

/// The Pingora application behind every stream listener.
pub struct StreamProxy {
    snapshots: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    open: Arc<OpenStreams>,
}

/// Stream connections open now, watched so that shutdown can wait for the last one.
#[derive(Debug)]
pub struct OpenStreams {
    total: watch::Sender<usize>,
}

/// How one connection ended: the `result` label and the access log's `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Closed,
    IdleTimeout,
    /// A reset or another I/O error while relaying.
    Error,
    /// Every server of the pool was down or refused the connection.
    NoServer,
    /// No stream for the address, or none for the ClientHello's server name.
    NoStream,
    /// Not TLS, cut short, too large or too slow, on an address routed by SNI.
    BadClientHello,
}

/// One access-log line per stream connection.
#[derive(Debug, Serialize)]
pub struct StreamRecord<'a> {
    pub time: String,
    pub client_ip: Option<IpAddr>,
    /// The address the client connected to (a wildcard listener's concrete address).
    pub listen: Option<SocketAddr>,
    pub stream: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub server: Option<&'a str>,
    pub result: &'static str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: f64,
}

/// What one connection did, filled in as it goes.
#[derive(Default)]
struct Connection {
    client_ip: Option<IpAddr>,
    local: Option<SocketAddr>,
    stream: Option<String>,
    sni: Option<String>,
    upstream: Option<String>,
    server: Option<String>,
    traffic: Arc<relay::Traffic>,
}

/// Counts one open connection until dropped.
struct OpenGuard(Arc<OpenStreams>);

/// Counts one connection in `headland_stream_connections_active` until dropped.
struct ActiveGuard(IntGauge);

/// Every distinct stream listen address of `config`, sorted: the sockets to open at start.
pub fn listen_addresses(config: &Config) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = config.streams.iter().map(|s| s.listen).collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The service listening on `addrs`; `None` when there are none.
pub fn service(addrs: &[SocketAddr], app: StreamProxy) -> Option<Service<StreamProxy>> {
    if addrs.is_empty() {
        return None;
    }
    let mut service = Service::new("headland streams".to_owned(), app);
    for addr in addrs {
        // The address as text is also the key under which an upgrade hands the socket over.
        // No read buffer of Pingora's in front: the relay reads into its own (8 KiB each
        // way), and Pingora's 64 KiB per connection would only add a copy of every byte.
        let listener =
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0));
        service.add_listener(listener);
    }
    Some(service)
}

// === impl StreamProxy ===

impl StreamProxy {
    pub fn new(
        snapshots: Arc<SnapshotCell>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
        open: Arc<OpenStreams>,
    ) -> Self {
        Self {
            snapshots,
            metrics,
            access_log,
            open,
        }
    }

    /// Picks the stream, connects to its pool and relays until the connection ends.
    async fn serve(
        &self,
        snapshot: &Snapshot,
        client: &mut Stream,
        conn: &mut Connection,
    ) -> Outcome {
        let (stream, peeked) = match pick(snapshot, client, conn).await {
            Ok(picked) => picked,
            Err(outcome) => return outcome,
        };
        conn.stream = Some(stream.name.clone());
        let Some(pool) = snapshot.pools.get(stream.upstream) else {
            return Outcome::NoServer;
        };
        conn.upstream = Some(pool.name.clone());
        let active = self
            .metrics
            .streams
            .active
            .with_label_values(&[&stream.name]);
        let _active = ActiveGuard::new(active);
        // Held to the end: `least_conn` counts this connection on its server meanwhile.
        let Some((mut upstream, in_flight)) = self.connect(pool, conn.client_ip).await else {
            return Outcome::NoServer;
        };
        conn.server = Some(in_flight.server().label.clone());
        self.carry(stream, client, &mut upstream, &peeked, conn)
            .await
    }

    /// Replays `peeked` to the upstream, then relays both ways.
    async fn carry(
        &self,
        stream: &StreamConfig,
        client: &mut Stream,
        upstream: &mut Box<dyn UpstreamIo>,
        peeked: &[u8],
        conn: &Connection,
    ) -> Outcome {
        if let Err(error) = upstream.write_all(peeked).await {
            tracing::debug!(%error, stream = %stream.name, "stream: cannot replay the ClientHello");
            return Outcome::Error;
        }
        let bytes = &self.metrics.streams.bytes;
        let meters = relay::Meters {
            traffic: Arc::clone(&conn.traffic),
            received: bytes.with_label_values(&[&stream.name, "received"]),
            sent: bytes.with_label_values(&[&stream.name, "sent"]),
        };
        // The ClientHello went upstream too: it counts as received from the client.
        meters.received.inc_by(peeked.len() as u64);
        conn.traffic
            .received
            .fetch_add(peeked.len() as u64, Ordering::Relaxed);
        match relay::relay(client, upstream, stream.idle_timeout, meters).await {
            End::Closed => Outcome::Closed,
            End::IdleTimeout => Outcome::IdleTimeout,
            End::Failed(error) => {
                tracing::debug!(%error, stream = %stream.name, "stream: connection failed");
                Outcome::Error
            }
        }
    }

    /// Connects to a usable server of `pool`, trying the next one after a failure, at most
    /// `retries` times more; feeds passive health with each attempt's result.
    async fn connect(
        &self,
        pool: &Pool,
        client_ip: Option<IpAddr>,
    ) -> Option<(Box<dyn UpstreamIo>, InFlight)> {
        // `consistent_hash` keeps a client on one server; streams have no header to hash.
        let mut hasher = DefaultHasher::new();
        client_ip.hash(&mut hasher);
        let hash_key = hasher.finish();
        let mut tried = Tried::default();
        for attempt in 0..=pool.retries {
            let (index, server) = pool.select(hash_key, &tried)?;
            tried.insert(index);
            if attempt > 0 {
                self.metrics.retries.with_label_values(&[&pool.name]).inc();
            }
            let in_flight = server.begin_request();
            let connect = connect_to(&server.endpoint);
            let error = match tokio::time::timeout(pool.timeouts.connect, connect).await {
                Ok(Ok(upstream)) => {
                    pool.record_outcome(&server, true);
                    return Some((upstream, in_flight));
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no connection within {:?}", pool.timeouts.connect),
            };
            tracing::debug!(upstream = %pool.name, server = %server.label, %error, "stream: connect failed");
            self.metrics
                .connect_errors
                .with_label_values(&[&pool.name, &server.label])
                .inc();
            if pool.record_outcome(&server, false) {
                self.metrics
                    .ejections
                    .with_label_values(&[&pool.name, &server.label])
                    .inc();
                tracing::warn!(upstream = %pool.name, server = %server.label, "server ejected after consecutive failures");
            }
        }
        None
    }

    fn finish(&self, conn: &Connection, outcome: Outcome, started: (SystemTime, Instant)) {
        let stream = conn.stream.as_deref().unwrap_or(crate::metrics::NONE);
        self.metrics
            .streams
            .connections
            .with_label_values(&[stream, outcome.as_str()])
            .inc();
        if !self.access_log.is_enabled() {
            return;
        }
        let traffic = &conn.traffic;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        self.access_log.write(&StreamRecord {
            time: access_log::timestamp(started.0),
            client_ip: conn.client_ip,
            listen: conn.local,
            stream: conn.stream.as_deref(),
            sni: conn.sni.as_deref(),
            upstream: conn.upstream.as_deref(),
            server: conn.server.as_deref(),
            result: outcome.as_str(),
            bytes_received: load(&traffic.received),
            bytes_sent: load(&traffic.sent),
            duration_ms: access_log::millis(started.1.elapsed()),
        });
    }
}

#[async_trait]
impl ServerApp for StreamProxy {
    async fn process_new(
        self: &Arc<Self>,
        mut client: Stream,
        // Not watched: a stream has no point at which to stop early (no request boundary),
        // so it runs until it closes or the grace period ends (`shutdown::ExitWhenDrained`).
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = OpenGuard::new(&self.open);
        let started = (SystemTime::now(), Instant::now());
        let digest = client.get_socket_digest();
        let inet = |addr: Option<&pingora::protocols::l4::socket::SocketAddr>| {
            addr.and_then(|a| a.as_inet()).copied()
        };
        let mut conn = Connection {
            client_ip: digest
                .as_ref()
                .and_then(|d| inet(d.peer_addr()))
                .map(|a| a.ip()),
            local: digest.as_ref().and_then(|d| inet(d.local_addr())),
            ..Connection::default()
        };
        let snapshot = self.snapshots.load();
        let outcome = self.serve(&snapshot, &mut client, &mut conn).await;
        self.finish(&conn, outcome, started);
        None
    }
}

/// The stream `conn` is for, among those listening where it arrived: the only one, or the
/// one its ClientHello names. Returns the bytes read to find out, which the upstream must
/// get first.
async fn pick<'s>(
    snapshot: &'s Snapshot,
    client: &mut Stream,
    conn: &mut Connection,
) -> Result<(&'s StreamConfig, Vec<u8>), Outcome> {
    let here: Vec<&StreamConfig> = snapshot
        .config
        .streams
        .iter()
        .filter(|s| conn.local.is_some_and(|local| arrives_on(s.listen, local)))
        .collect();
    if !here.iter().any(|s| s.sni.is_some()) {
        // Validation allows one stream without sni per address.
        return here
            .first()
            .map(|s| (*s, Vec::new()))
            .ok_or(Outcome::NoStream);
    }
    let peeked = client_hello::read(client).await.map_err(|error| {
        tracing::debug!(%error, client = ?conn.client_ip, "stream: no ClientHello");
        Outcome::BadClientHello
    })?;
    conn.sni.clone_from(&peeked.server_name);
    let wanted = peeked.server_name.as_deref();
    here.into_iter()
        .find(|s| s.sni.as_deref() == wanted)
        .map(|s| (s, peeked.bytes))
        .ok_or(Outcome::NoStream)
}

/// Whether a connection accepted on `local` belongs to a stream listening on `listen`: the
/// same port, and the same address unless `listen` is a wildcard.
fn arrives_on(listen: SocketAddr, local: SocketAddr) -> bool {
    listen.port() == local.port() && (listen.ip().is_unspecified() || listen.ip() == local.ip())
}

// === impl Outcome ===

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Error => "error",
            Outcome::NoServer => "no_server",
            Outcome::NoStream => "no_stream",
            Outcome::BadClientHello => "bad_client_hello",
        }
    }
}

// === impl OpenStreams ===

impl OpenStreams {
    pub fn new() -> Self {
        Self {
            total: watch::Sender::new(0),
        }
    }

    /// Returns once no stream connection is open.
    pub async fn wait_until_none(&self) {
        let mut total = self.total.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = total.wait_for(|open| *open == 0).await;
    }
}

impl Default for OpenStreams {
    fn default() -> Self {
        Self::new()
    }
}

// === impl OpenGuard ===

impl OpenGuard {
    fn new(open: &Arc<OpenStreams>) -> Self {
        open.total.send_modify(|n| *n += 1);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.total.send_modify(|n| *n = n.saturating_sub(1));
    }
}

// === impl ActiveGuard ===

impl ActiveGuard {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An upstream connection of a stream: TCP or a Unix socket.
pub trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpstreamIo for T {}

async fn connect_to(endpoint: &Endpoint) -> std::io::Result<Box<dyn UpstreamIo>> {
    match endpoint {
        Endpoint::Inet(addr) => {
            let upstream = TcpStream::connect(addr).await?;
            // Interactive protocols (SSH keystrokes) must not wait for Nagle.
            let _ = upstream.set_nodelay(true);
            Ok(Box::new(upstream))
        }
        Endpoint::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_takes_every_local_address_of_its_port() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(arrives_on(addr("0.0.0.0:22"), addr("127.0.0.1:22")));
        assert!(arrives_on(addr("[::]:22"), addr("[::ffff:127.0.0.1]:22")));
        assert!(arrives_on(addr("127.0.0.1:22"), addr("127.0.0.1:22")));
        assert!(!arrives_on(addr("127.0.0.2:22"), addr("127.0.0.1:22")));
        assert!(!arrives_on(addr("0.0.0.0:23"), addr("127.0.0.1:22")));
    }
}
