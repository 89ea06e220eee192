//! The UDP side of the DNS server: one thread per socket that takes waiting datagrams a
//! batch at a time (recvmmsg), answers each with `handler::respond`, and sends the answers
//! in one call (sendmmsg), with a one-second packet cache in front of `respond`.
//!
//! Why not hickory-server's UDP path: it spawns a task and allocates per datagram, which
//! doubled our CPU per query against gdnsd (`benches/compare/dns.sh`); and at these rates
//! the kernel's per-call cost is most of what is left, hence the batches. The TCP loop calls
//! the same `respond`, so both transports answer alike.
//!
//! The cache maps (client address, query bytes after the ID) to the response sent, for one
//! second, like PowerDNS's packet cache: resolvers repeat the same questions, and an answer
//! is then one hash lookup and a copy. Everything an answer depends on is in the key: the
//! question and its letter case, EDNS and its payload size, the ECS option, and the client
//! address (geo answers without ECS). A reload empties it at once (a new `DnsView`); a
//! region's health change shows after at most one more second.
//!
//! Response rate limiting (`rrl`) comes after the cache, so answers from the cache count
//! like any other: each response to send costs one more hash and a short lock. The entry
//! keeps the response's rate-limit key, and the truncated form sent when a client
//! "slips", made the first time it is needed.

use std::collections::hash_map::{self, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use super::handler::{respond, truncated, QueryOutcome, Response, Transport};
use super::rrl::{ResponseKey, ResponseRateLimiter, Verdict};
use super::server::DnsState;
use super::view::DnsView;

/// Datagrams received (and answered) per system call.
const BATCH: usize = 32;
/// A query over UDP larger than this is not a query we answer (clients send far less); it
/// is read truncated and fails to parse.
const MAX_QUERY: usize = 2048;
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Entries before the cache is emptied and refilled: bounds memory (about 1 KiB each).
const CACHE_ENTRIES: usize = 16_384;

/// How often a blocked receive wakes up to check for shutdown.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

/// Answers queries on `socket` on a thread of its own until `stop` is set. The thread
/// blocks in recvmmsg (no reactor, no wake-ups: at these rates the reactor's own system
/// calls were a tenth of the CPU per query), like gdnsd's I/O threads.
pub fn spawn_udp(
    state: Arc<dyn DnsState>,
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(SHUTDOWN_CHECK))?;
    std::thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || serve_udp(state.as_ref(), &socket, &stop))
}

fn serve_udp(state: &dyn DnsState, socket: &UdpSocket, stop: &AtomicBool) {
    let mut batch = Batch::new();
    let mut cache = PacketCache::new(state.view());
    while !stop.load(Ordering::Relaxed) {
        match batch.receive(socket) {
            Ok(_) => {}
            // The read timeout: look at `stop` again.
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; the socket is fine.
                tracing::debug!(%error, "DNS UDP receive error");
                continue;
            }
        };
        batch.answer(&mut cache, state);
        batch.send(socket);
    }
}

/// Buffers for one batch of datagrams, reused for the life of the socket.
struct Batch {
    queries: Vec<Vec<u8>>,
    /// (index in `queries`, length, client) of each received query.
    received: Vec<(usize, usize, SocketAddr)>,
    /// (response, client) to send.
    replies: Vec<(Vec<u8>, SocketAddr)>,
}

// === impl Batch ===

impl Batch {
    fn new() -> Self {
        Self {
            queries: vec![vec![0u8; MAX_QUERY]; BATCH],
            received: Vec::with_capacity(BATCH),
            replies: Vec::with_capacity(BATCH),
        }
    }

    /// Waits for at least one datagram and takes up to `BATCH` of those waiting; how many.
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        self.received.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .queries
            .iter_mut()
            .map(|buffer| [IoSliceMut::new(buffer)])
            .collect();
        // nix's headers hold raw pointers (not Send), so they live for one call only.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(std::io::Error::from)?;
        for (index, message) in results.enumerate() {
            if let Some(client) = message.address.as_ref().and_then(socket_addr) {
                self.received.push((index, message.bytes, client));
            }
        }
        if self.received.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(self.received.len())
    }

    fn answer(&mut self, cache: &mut PacketCache, state: &dyn DnsState) {
        self.replies.clear();
        // One view and one limiter for the batch: a reload lands between batches.
        let view = state.view();
        let limiter = state.rate_limiter();
        for &(index, len, client) in &self.received {
            // hickory-server refuses port 0 too: nothing can be sent back to it.
            if client.port() == 0 {
                continue;
            }
            let Some(query) = self.queries.get(index).and_then(|q| q.get(..len)) else {
                continue;
            };
            let reply = cache.answer(state, &view, limiter.as_deref(), query, client.ip());
            if let Some(reply) = reply {
                self.replies.push((reply.to_vec(), client));
            }
        }
    }

    fn send(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.replies.len() {
            let pending = self.replies.get(sent..).unwrap_or_default();
            let slices: Vec<[IoSlice<'_>; 1]> = pending
                .iter()
                .map(|(reply, _)| [IoSlice::new(reply)])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = pending
                .iter()
                .map(|(_, client)| Some(SockaddrStorage::from(*client)))
                .collect();
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                slices.iter(),
                &addrs,
                [],
                MsgFlags::empty(),
            )
            .map(|results| results.count());
            match result {
                Ok(0) => break,
                Ok(count) => sent += count,
                Err(error) => {
                    // One bad destination fails the batch from there: skip it, send the rest.
                    tracing::debug!(%error, "DNS UDP send failed");
                    sent += 1;
                }
            }
        }
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

struct PacketCache {
    entries: HashMap<u64, Entry>,
    hasher: RandomState,
    /// The view the entries were answered from.
    view: Arc<DnsView>,
    /// The response being sent, with the client's ID.
    out: Vec<u8>,
}

struct Entry {
    client: IpAddr,
    /// The query without its ID.
    query: Vec<u8>,
    response: Vec<u8>,
    outcome: QueryOutcome,
    rate_key: ResponseKey,
    /// `response` truncated, for rate-limited clients; made when first needed.
    slip: Option<Vec<u8>>,
    expires: Instant,
}

// === impl PacketCache ===

impl PacketCache {
    fn new(view: Arc<DnsView>) -> Self {
        Self {
            entries: HashMap::new(),
            hasher: RandomState::new(),
            view,
            out: Vec::with_capacity(1232),
        }
    }

    /// The response to send for `query` from `client`, or `None` to send nothing.
    fn answer(
        &mut self,
        state: &dyn DnsState,
        view: &Arc<DnsView>,
        limiter: Option<&ResponseRateLimiter>,
        query: &[u8],
        client: IpAddr,
    ) -> Option<&[u8]> {
        if !Arc::ptr_eq(view, &self.view) {
            self.entries.clear();
            self.view = Arc::clone(view);
        }
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.clear();
        }
        let now = Instant::now();
        let (id, rest) = (query.get(..2)?, query.get(2..)?);
        let key = self.key(client, rest);
        let entry = match self.entries.entry(key) {
            hash_map::Entry::Occupied(hit)
                if hit.get().expires > now
                    && hit.get().client == client
                    && hit.get().query == rest =>
            {
                let entry = hit.into_mut();
                state.record(&entry.outcome);
                entry
            }
            slot => {
                let health = |name: &str, region: &str| state.region_up(name, region);
                let Response {
                    bytes,
                    outcome,
                    rate_key,
                } = respond(view, &health, query, client, Transport::Udp);
                state.record(&outcome);
                let entry = Entry {
                    client,
                    query: rest.to_vec(),
                    response: bytes?,
                    outcome,
                    rate_key,
                    slip: None,
                    expires: now + CACHE_TTL,
                };
                match slot {
                    hash_map::Entry::Occupied(mut stale) => {
                        stale.insert(entry);
                        stale.into_mut()
                    }
                    hash_map::Entry::Vacant(free) => free.insert(entry),
                }
            }
        };
        let verdict = limiter.map_or(Verdict::Send, |l| l.check(client, entry.rate_key, now));
        let body = match verdict {
            Verdict::Send => &entry.response,
            Verdict::Slip => {
                state.record_limited(verdict);
                if entry.slip.is_none() {
                    entry.slip = truncated(&entry.response);
                }
                entry.slip.as_ref()?
            }
            Verdict::Drop => {
                state.record_limited(verdict);
                return None;
            }
        };
        self.out.clear();
        self.out.extend_from_slice(id);
        self.out.extend_from_slice(body.get(2..)?);
        Some(&self.out)
    }

    fn key(&self, client: IpAddr, query: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        match client {
            IpAddr::V4(ip) => hasher.write(&ip.octets()),
            IpAddr::V6(ip) => hasher.write(&ip.octets()),
        }
        hasher.write(query);
        hasher.finish()
    }
}
