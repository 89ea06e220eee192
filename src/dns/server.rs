//! The DNS listeners: our own loop on each UDP socket (`udp.rs`) and on the TCP listeners
//! (`tcp.rs`), each of which says why it is not hickory-server's; both call
//! `handler::respond`.
//!
//! `respond` applies the steps hickory-server applies before its `RequestHandler`: drop
//! packets shorter than a header and packets with QR set (checked on the raw bytes, before
//! any parsing), answer FORMERR (header only, no question, no OPT) to packets that do not
//! parse (this includes ECS options with an unknown family, a too-long source prefix or too
//! few address octets, duplicate OPT records, and OPT outside the additional section). The
//! UDP loop also refuses sources on port 0, and rate-limits its responses (`rrl`; TCP
//! cannot be spoofed, so it never is).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::dns::error::DnsError;
use crate::dns::handler::QueryOutcome;
use crate::dns::rrl::{ResponseRateLimiter, Verdict};
use crate::dns::tcp::serve_tcp;
use crate::dns::udp::spawn_udp;
use crate::dns::view::DnsView;

/// What the DNS server needs from the rest of the process.
pub trait DnsState: Send + Sync + 'static {
    /// The current view; a reload swaps in a new one.
    fn view(&self) -> Arc<DnsView>;
    /// Whether `region` may be given out for the geo name `name` (no trailing dot).
    fn region_up(&self, name: &str, region: &str) -> bool;
    /// Called once per answered or dropped query (metrics, logs).
    fn record(&self, outcome: &QueryOutcome);
    /// The rate limiter for UDP responses, `None` when rate limiting is off. Asked once per
    /// batch of datagrams, so a reload that changes it applies from the next batch.
    fn rate_limiter(&self) -> Option<Arc<ResponseRateLimiter>>;
    /// Called once per UDP response the rate limiter truncated (`Verdict::Slip`) or
    /// withheld (`Verdict::Drop`); the query was also `record`ed.
    fn record_limited(&self, verdict: Verdict);
}

/// Serves DNS on every socket until `shutdown` turns true (or its sender is dropped), then
/// stops accepting and returns once in-flight work is done.
pub async fn serve(
    state: Arc<dyn DnsState>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DnsError> {
    if udp.is_empty() && tcp.is_empty() {
        return Err(DnsError::Server {
            message: "no DNS sockets to serve".into(),
        });
    }
    let stop_udp = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    let mut started = Ok(());
    for socket in udp {
        match spawn_udp(Arc::clone(&state), socket, Arc::clone(&stop_udp)) {
            Ok(thread) => udp_threads.push(thread),
            Err(error) => {
                started = Err(DnsError::Server {
                    message: format!("cannot start a UDP thread: {error}"),
                });
                break;
            }
        }
    }
    if started.is_ok() {
        if tcp.is_empty() {
            // `serve_tcp` returns at once with no listener; UDP alone runs until told.
            let _ = shutdown.wait_for(|stop| *stop).await;
        } else {
            serve_tcp(state, tcp, shutdown).await;
        }
    }
    // Stop the UDP threads on every way out; each notices within its receive timeout.
    stop_udp.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in udp_threads {
            let _ = thread.join();
        }
    })
    .await;
    started
}
