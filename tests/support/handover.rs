//! The test as the "old process" of Pingora's graceful upgrade: listeners bound here are
//! handed to a `headland run --upgrade` process, so Headland serves on sockets that were never
//! unbound and that no other process could have taken.
//!
//! Wire format and timing, from pingora-core 0.9.1 (`src/server/transfer_fd/mod.rs`,
//! `src/server/bootstrap_services.rs`):
//!
//! - During `Server::bootstrap()` the new process unlinks `upgrade_sock`, binds and listens
//!   on it, and calls a non-blocking `accept()`: at once, then after each of up to six
//!   one-second sleeps; with no connection by then it logs "Bootstrap failed" and exits 1.
//!   The first `accept()` follows `listen()` within microseconds, so in practice the
//!   connection is taken on the second try: a start costs about a second.
//! - It reads one message (`recvmsg`, 2048 bytes of payload, up to 32 descriptors): the
//!   payload is the listeners' keys joined by single spaces, the SCM_RIGHTS descriptors are
//!   in the same order. The key is the address string the service was configured with; for
//!   Headland, `SocketAddr::to_string()` of the `[listen]` entry (`src/server.rs`) or of a
//!   `[[streams]] listen` address, once per address however many streams share it
//!   (`src/stream/mod.rs`).
//! - It closes the connection after reading, which is how the sender knows it arrived.
//! - Services then take a listener from that table instead of binding (`from_raw_fd`, then
//!   tokio): the descriptors must already be non-blocking. Descriptors whose key no service
//!   claims are closed.

use std::io::{IoSlice, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Pingora's receive buffer for the keys, and its room for descriptors.
const MAX_PAYLOAD: usize = 2048;
const MAX_FDS: usize = 32;

/// How often to try the upgrade socket while the new process is getting there.
const POLL: Duration = Duration::from_millis(10);

/// Why a hand-over did not happen.
#[derive(Debug)]
pub enum HandoverError {
    /// The process exited (it may have been told to, or given up waiting).
    Exited(std::process::ExitStatus),
    /// Not taken by `deadline`.
    TimedOut(&'static str),
    Io(std::io::Error),
}

/// Sends `listeners` to `child`, a `headland run --upgrade` process waiting on `socket`, and
/// returns once it has read them. Bounded by `deadline`; fails early if `child` exits.
pub fn hand_over(
    socket: &Path,
    listeners: &[(SocketAddr, &TcpListener)],
    child: &mut Child,
    deadline: Instant,
) -> Result<(), HandoverError> {
    let keys: Vec<String> = listeners.iter().map(|(addr, _)| addr.to_string()).collect();
    let payload = keys.join(" ");
    let fds: Vec<_> = listeners.iter().map(|(_, l)| l.as_raw_fd()).collect();
    assert!(payload.len() <= MAX_PAYLOAD && fds.len() <= MAX_FDS);

    let stream = connect(socket, child, deadline)?;
    sendmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &[IoSlice::new(payload.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| HandoverError::Io(e.into()))?;

    // The receiver closes its end once `recvmsg` returned: end of file here.
    let remaining = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
        .map_err(HandoverError::Io)?;
    let mut byte = [0u8; 1];
    match (&stream).read(&mut byte) {
        Ok(0) => Ok(()),
        Ok(_) => Err(HandoverError::Io(std::io::Error::other(
            "unexpected bytes on the upgrade socket",
        ))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(HandoverError::TimedOut("the listeners were not read"))
        }
        Err(e) => match child.try_wait() {
            Ok(Some(status)) => Err(HandoverError::Exited(status)),
            _ => Err(HandoverError::Io(e)),
        },
    }
}

/// Connects to the upgrade socket as soon as the new process listens on it. Before that the
/// path is missing (ENOENT), a leftover from an earlier run (ECONNREFUSED), bound but not
/// listening yet (ECONNREFUSED) or not yet made world-writable (EACCES): all mean "not yet".
fn connect(
    socket: &Path,
    child: &mut Child,
    deadline: Instant,
) -> Result<UnixStream, HandoverError> {
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::PermissionDenied
                ) => {}
            Err(e) => return Err(HandoverError::Io(e)),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HandoverError::Exited(status));
        }
        if Instant::now() >= deadline {
            return Err(HandoverError::TimedOut("the upgrade socket never accepted"));
        }
        // Polling a condition, bounded by the deadline: there is no event for "listening".
        std::thread::sleep(POLL);
    }
}
