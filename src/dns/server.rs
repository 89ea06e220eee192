//! The DNS listeners: hickory-server's `Server` on our TCP listeners, with a
//! `RequestHandler` that answers from the current `DnsView`, and our own loop on each UDP
//! socket (`udp.rs`, which says why) calling `handler::respond`.
//!
//! hickory-server itself, before our handler runs: drops packets shorter than a header,
//! answers FORMERR (header only, no question, no OPT) to packets that do not parse (this
//! includes ECS options with an unknown family, a too-long source prefix or too few address
//! octets, duplicate OPT records, and OPT outside the additional section), drops packets
//! with QR set, and refuses sources on port 0. `handler::respond` mirrors those steps.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::dns::error::DnsError;
use crate::dns::handler::{self, QueryOutcome, Transport};
use crate::dns::udp::spawn_udp;
use crate::dns::view::DnsView;

/// A TCP connection with no complete query for this long is closed. RFC 7766 section 6.2.3
/// asks servers to time idle connections out in seconds, not minutes, to bound the slots a
/// client can hold.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection before the writer applies back-pressure.
const TCP_RESPONSE_BUFFER: usize = 32;

/// What the DNS server needs from the rest of the process.
pub trait DnsState: Send + Sync + 'static {
    /// The current view; a reload swaps in a new one.
    fn view(&self) -> Arc<DnsView>;
    /// Whether `region` may be given out for the geo name `name` (no trailing dot).
    fn region_up(&self, name: &str, region: &str) -> bool;
    /// Called once per answered or dropped query (metrics, logs).
    fn record(&self, outcome: &QueryOutcome);
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
    let result = match started {
        Ok(()) if tcp.is_empty() => {
            // hickory's server returns at once with no listener; UDP alone runs until told.
            let _ = shutdown.wait_for(|stop| *stop).await;
            Ok(())
        }
        Ok(()) => serve_tcp(state, tcp, shutdown).await,
        Err(error) => Err(error),
    };
    // Stop the UDP threads on every way out; each notices within its receive timeout.
    stop_udp.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in udp_threads {
            let _ = thread.join();
        }
    })
    .await;
    result
}

async fn serve_tcp(
    state: Arc<dyn DnsState>,
    tcp: Vec<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DnsError> {
    let mut server = Server::new(Handler { state });
    for listener in tcp {
        server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    let token = server.shutdown_token().clone();
    let watcher = tokio::spawn(async move {
        // `wait_for` errs when the sender is gone: nobody can ask us to stop any more, so
        // stop now rather than run unmanaged.
        let _ = shutdown.wait_for(|stop| *stop).await;
        token.cancel();
    });
    let result = server.block_until_done().await;
    watcher.abort();
    result.map_err(|error| DnsError::Server {
        message: error.to_string(),
    })
}

/// Our `RequestHandler`: the shared core of `handler`, then hickory's response path.
struct Handler {
    state: Arc<dyn DnsState>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let view = self.state.view();
        let health = |name: &str, region: &str| self.state.region_up(name, region);
        let reply = handler::answer(
            &view,
            &health,
            request,
            request.as_slice(),
            request.src().ip(),
        );
        let limit = handler::payload_limit(request.edns.as_ref(), transport);
        // `finish` decides truncation exactly as `respond` does; hickory then re-encodes a
        // reply that already fits, so its own partial truncation never triggers.
        let (reply, _) = handler::finish(reply, &request.queries, limit);
        self.state.record(&reply.outcome);
        let response = MessageResponseBuilder::new(&request.queries, reply.edns.as_ref()).build(
            reply.metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, src = %request.src(), "failed to send DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
