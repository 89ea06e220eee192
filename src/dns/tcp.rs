//! The TCP side of the DNS server: accepts connections and answers each length-prefixed
//! query with `handler::respond`, the function the UDP loop uses, so both transports apply
//! the same rules in the same order.
//!
//! Why not hickory-server's TCP listener: it parses a query before it looks at the QR bit,
//! so a malformed packet with QR set (a response) got FORMERR back; `respond` drops every
//! response unparsed. Queries on one connection are answered in order, one at a time, as
//! hickory-server did (RFC 7766 section 6.2.1.1 allows it; our answers need no upstream).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::dns::handler::{respond, Transport};
use crate::dns::server::DnsState;

/// A TCP connection with no complete query for this long is closed. RFC 7766 section 6.2.3
/// asks servers to time idle connections out in seconds, not minutes, to bound the slots a
/// client can hold. The same bound applies to writing one response to a client that does
/// not read.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept: when the process is out of file descriptors, accept fails
/// at once and would otherwise be retried in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves every listener until `shutdown` turns true (or its sender is dropped); then stops
/// accepting and returns once each open connection has finished the query in hand.
pub async fn serve_tcp(
    state: Arc<dyn DnsState>,
    listeners: Vec<TcpListener>,
    shutdown: watch::Receiver<bool>,
) {
    let mut accepting = JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept(Arc::clone(&state), listener, shutdown.clone()));
    }
    while accepting.join_next().await.is_some() {}
}

async fn accept(
    state: Arc<dyn DnsState>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // `wait_for` errs when the sender is gone: nobody can ask us to stop any more,
            // so stop now rather than run unmanaged.
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(
                    Arc::clone(&state),
                    stream,
                    peer,
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                tracing::debug!(%error, "DNS TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
        // Forget finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Answers queries on one connection until the client closes it, sends nothing for
/// `TCP_IDLE_TIMEOUT`, sends a broken frame, or the server stops.
async fn serve_connection(
    state: Arc<dyn DnsState>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    // Each response is written in one call; do not hold it back waiting for more.
    let _ = stream.set_nodelay(true);
    loop {
        let query = tokio::select! {
            read = timeout(TCP_IDLE_TIMEOUT, read_frame(&mut stream)) => match read {
                Ok(Ok(Some(query))) => query,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "DNS TCP read failed");
                    return;
                }
                Err(_) => return, // idle
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let view = state.view();
        let health = |name: &str, region: &str| state.region_up(name, region);
        // Never rate limited: a TCP client completed a handshake, so its address is real.
        let response = respond(&view, &health, &query, peer.ip(), Transport::Tcp);
        state.record(&response.outcome);
        let Some(response) = response.bytes else {
            continue;
        };
        let Some(frame) = frame(&response) else {
            continue;
        };
        match timeout(TCP_IDLE_TIMEOUT, stream.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "DNS TCP write failed");
                return;
            }
            Err(_) => return, // the client does not read
        }
    }
}

/// One message in the two-byte length framing of RFC 1035 section 4.2.2; `None` when the
/// client closed the connection between messages.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 2];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

/// `response` with its length prefix, or `None` if it is too long for one (cannot happen:
/// `respond` caps TCP responses at 65535 bytes).
fn frame(response: &[u8]) -> Option<Vec<u8>> {
    let length = u16::try_from(response.len()).ok()?;
    let mut frame = Vec::with_capacity(response.len() + 2);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(response);
    Some(frame)
}
