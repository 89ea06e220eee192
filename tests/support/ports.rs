//! Loopback ports that no other process can take while a test needs them.
//!
//! A bare port number cannot be handed out safely: between `bind(127.0.0.1:0)`, closing that
//! socket and the real owner binding the number, any process may get the same port from its
//! own `bind(…:0)`, such as another test's echo upstream. That was the flake in
//! `consistent_hash_keeps_a_key_on_one_server`: Pingora found its port taken, kept retrying in
//! the background, and the test talked to someone else's echo server, which answered every
//! key itself. So here a port stays bound by this test process for as long as it is needed:
//!
//! - [`free_port`] keeps a TCP socket bound to the port, with SO_REUSEADDR and never
//!   listening. Linux then gives that port to nobody's `bind(…:0)` and refuses every bind of
//!   it without SO_REUSEADDR, while a listener with SO_REUSEADDR, the intended owner, can
//!   still bind and listen there: Pingora (`bind_tcp`), Go's `net.Listen` (pebble), tokio and
//!   std listeners all set it. Connections to the port are refused until the owner listens.
//!   A UDP socket with SO_REUSEADDR and SO_REUSEPORT holds the same number in the UDP space
//!   for Headland's DNS listener, which sets both and so joins it (same user); it must be
//!   released once the DNS sockets are bound ([`release_udp`]), as a member of the group it
//!   would receive a share of the queries and answer none.
//! - `Headland::start` turns a reserved port named in its `[listen]` section into a listening
//!   socket (the reservation itself starts listening, so the port is never unbound) and hands
//!   it to Headland over Pingora's upgrade socket.
//! - [`refused_addr`] keeps a socket bound without SO_REUSEADDR that never listens: connects
//!   get a reset (ECONNREFUSED) and no process can bind the port, with or without options.
//!
//! The sockets live until the test process exits (a few per test); all are close-on-exec, so
//! the `headland` and `pebble` children spawned meanwhile by other tests inherit none.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

use socket2::{Domain, Protocol, Socket, Type};

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How many fresh ports to try before giving up on one free in both TCP and UDP.
const PORT_TRIES: usize = 64;

/// Backlog of a reservation turned into a listener (Pingora sets its own again on takeover).
const BACKLOG: i32 = 1024;

struct Reservation {
    /// Bound with SO_REUSEADDR; listening once handed to a Headland.
    tcp: Socket,
    listening: bool,
    /// The same number in the UDP space, until its owner has bound it.
    udp: Option<Socket>,
}

static RESERVED: Mutex<BTreeMap<u16, Reservation>> = Mutex::new(BTreeMap::new());
static REFUSING: Mutex<Vec<Socket>> = Mutex::new(Vec::new());

/// A loopback port reserved for this test process, in TCP and UDP (see the module comment):
/// give it to Headland's `[listen]` section (`Headland::start` hands it over), to `headland
/// demo`, or to pebble. Nothing else can take it; `bind(…:0)` never returns it. A TCP
/// listener of the test's own can bind it too (std and tokio set SO_REUSEADDR); for a UDP
/// socket of its own, a test binds 127.0.0.1:0 instead.
pub fn free_port() -> u16 {
    // Candidates whose UDP twin was busy stay bound until the end, so that the next
    // `bind(…:0)` cannot offer the same number again.
    let mut busy_udp = Vec::new();
    for _ in 0..PORT_TRIES {
        let tcp = tcp_socket(true);
        tcp.bind(&SocketAddr::from((LOOPBACK, 0)).into())
            .expect("bind a loopback TCP port");
        let port = local_port(&tcp);
        match udp_twin(port) {
            Ok(udp) => {
                let reservation = Reservation {
                    tcp,
                    listening: false,
                    udp: Some(udp),
                };
                RESERVED.lock().unwrap().insert(port, reservation);
                return port;
            }
            Err(_) => busy_udp.push(tcp),
        }
    }
    panic!("no loopback port free in both TCP and UDP after {PORT_TRIES} tries");
}

/// An address where connections are refused, for as long as the test process runs: a socket
/// bound there that never listens, without SO_REUSEADDR, so no other process can bind it and
/// bring a "dead" server back to life.
pub fn refused_addr() -> SocketAddr {
    let socket = tcp_socket(false);
    socket
        .bind(&SocketAddr::from((LOOPBACK, 0)).into())
        .expect("bind a loopback TCP port");
    let addr = SocketAddr::from((LOOPBACK, local_port(&socket)));
    REFUSING.lock().unwrap().push(socket);
    addr
}

/// A fresh loopback listener (non-blocking, as Pingora's runtime needs an inherited one),
/// bound and listening in one step: the port is never free in between.
pub fn loopback_listener() -> TcpListener {
    let listener = TcpListener::bind((LOOPBACK, 0)).expect("bind a loopback listener");
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A listener on a fresh loopback port plus a placeholder: a socket bound to the same port
/// with SO_REUSEADDR that never listens. Once the listener closes (a killed upstream), the
/// port refuses connections and stays out of everyone's `bind(…:0)` while the placeholder
/// lives.
pub fn listener_with_placeholder() -> (TcpListener, Socket) {
    let placeholder = tcp_socket(true);
    placeholder
        .bind(&SocketAddr::from((LOOPBACK, 0)).into())
        .expect("bind a loopback TCP port");
    let addr = SocketAddr::from((LOOPBACK, local_port(&placeholder)));
    let listener = tcp_socket(true);
    listener.bind(&addr.into()).unwrap();
    listener.listen(BACKLOG).unwrap();
    listener.set_nonblocking(true).unwrap();
    (listener.into(), placeholder)
}

/// The listening socket for `addr` if [`free_port`] reserved it: the reservation itself,
/// listening from the first call on, and kept open afterwards, so that a restart on the same
/// address (tests/acme.rs) gets the same socket again. Its UDP twin is released: an HTTP
/// listener has no use for it.
pub(super) fn reserved_listener(addr: SocketAddr) -> Option<TcpListener> {
    if addr.ip() != LOOPBACK {
        return None;
    }
    let mut reserved = RESERVED.lock().unwrap();
    let reservation = reserved.get_mut(&addr.port())?;
    if !reservation.listening {
        reservation.tcp.listen(BACKLOG).unwrap();
        reservation.tcp.set_nonblocking(true).unwrap();
        reservation.listening = true;
    }
    reservation.udp = None;
    Some(reservation.tcp.try_clone().unwrap().into())
}

/// Makes sure the UDP twin of a reserved DNS port is held while a new owner binds it (a
/// second start on the same port needs it again). False if `addr` was not reserved here.
pub(super) fn hold_udp(addr: SocketAddr) -> bool {
    if addr.ip() != LOOPBACK {
        return false;
    }
    let mut reserved = RESERVED.lock().unwrap();
    let Some(reservation) = reserved.get_mut(&addr.port()) else {
        return false;
    };
    if reservation.udp.is_none() {
        // Joins the running owner's SO_REUSEPORT group if there is one (a binary upgrade);
        // fails only if a process outside this suite bound the UDP port meanwhile.
        let udp = udp_twin(addr.port())
            .unwrap_or_else(|e| panic!("UDP port {} was taken meanwhile: {e}", addr.port()));
        reservation.udp = Some(udp);
    }
    true
}

/// Releases the UDP twin of reserved `port` once its owner (Headland's DNS listener) has
/// bound its own sockets: a member of the same SO_REUSEPORT group would receive a share of
/// the queries. `Headland::start` does this itself; call it after `headland demo` is up.
pub fn release_udp(port: u16) {
    if let Some(reservation) = RESERVED.lock().unwrap().get_mut(&port) {
        reservation.udp = None;
    }
}

/// A TCP socket, close-on-exec (socket2 sets it on creation), with or without SO_REUSEADDR.
fn tcp_socket(reuse_address: bool) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_reuse_address(reuse_address).unwrap();
    socket
}

/// Binds UDP `port` with the options Headland's DNS sockets use, so that they can join it.
fn udp_twin(port: u16) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((LOOPBACK, port)).into())?;
    Ok(socket)
}

fn local_port(socket: &Socket) -> u16 {
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a bound socket has an address")
}
