//! A real ACME CA for tests: Debian's `pebble` on reserved loopback ports, with a TLS
//! certificate made here, and a stub DNS resolver in this process that maps every name to
//! 127.0.0.1. Also a TCP forwarder that pebble's HTTP-01 validation goes through, so a test
//! can point it at Headland after Headland picked its port, or make validation fail.
//!
//! Pebble binds its own listeners, so they cannot be handed over; their ports come from
//! `free_port()`, which keeps them reserved for pebble alone (Go listens with SO_REUSEADDR,
//! see `ports`). A process outside this suite that binds such a number explicitly could
//! still win; pebble then exits, and the start is retried on new ports (bounded). Pebble is
//! ready when both ports complete a TLS handshake with the certificate made here for it:
//! a mere TCP connect could reach whoever won that race.
//!
//! The resolver used to be `pebble-challtestsrv` on a port from `free_port()`; it binds UDP
//! without SO_REUSEADDR, so no reservation could be held for it. A UDP socket bound here on
//! port 0 answers in its place, with nothing to race for.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

use super::{free_port, scratch_dir, ChildGuard};

/// Starts of pebble before giving up (a start fails only if pebble exits: it lost a port).
const START_ATTEMPTS: usize = 3;

/// How long pebble may take to answer TLS on both ports on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Pebble {
    _pebble: ChildGuard,
    _resolver: Option<StubResolver>,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM of the CA that signed pebble's own HTTPS certificate: Headland's `ca_root`.
    pub api_root: PathBuf,
    api_root_der: CertificateDer<'static>,
    management: SocketAddr,
    dir: PathBuf,
}

/// What pebble connects to for HTTP-01: forwards to `target`, or resets when failing.
#[derive(Clone)]
pub struct ValidationForwarder {
    pub port: u16,
    target: Arc<Mutex<Option<SocketAddr>>>,
    failing: Arc<AtomicBool>,
}

/// Whether pebble can run here. Under `CI=true` a missing pebble fails the test; elsewhere
/// the test is skipped with a loud message.
pub fn available() -> bool {
    let found = ["pebble"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!("pebble is required under CI: run .ci/install-deps (Debian package pebble)");
        }
        eprintln!("\n*** SKIPPED: pebble not installed (apt-get install pebble); ACME end-to-end tests did not run ***\n");
    }
    found
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port`. `nonce_reject` is the percentage of
    /// good nonces it rejects; `validity` the lifetime of the certificates it issues.
    pub fn start(http_port: u16, nonce_reject: u32, validity: Option<Duration>) -> Pebble {
        Self::start_with_resolver(http_port, nonce_reject, validity, None)
    }

    /// Like `start`, with `resolver` as pebble's DNS server (Headland's own, for DNS-01)
    /// instead of a stub that maps every name to 127.0.0.1.
    pub fn start_with_resolver(
        http_port: u16,
        nonce_reject: u32,
        validity: Option<Duration>,
        resolver: Option<SocketAddr>,
    ) -> Pebble {
        let dir = scratch_dir();
        let (api_root_der, api_root) = write_api_certificate(&dir);
        let (dns, stub) = match resolver {
            Some(resolver) => (resolver, None),
            None => {
                let stub = StubResolver::start();
                (stub.addr, Some(stub))
            }
        };
        for attempt in 1..=START_ATTEMPTS {
            let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let management: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut settings = serde_json::json!({
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("pebble.pem"),
                "privateKey": dir.join("pebble.key"),
                "httpPort": http_port,
                // Where pebble would connect for TLS-ALPN-01, which Headland never uses; a
                // reserved port nobody listens on.
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            });
            if let Some(validity) = validity {
                settings["certificateValidityPeriod"] = validity.as_secs().into();
            }
            let config = dir.join("pebble.json");
            std::fs::write(
                &config,
                serde_json::json!({ "pebble": settings }).to_string(),
            )
            .unwrap();
            let pebble = Command::new("pebble")
                .arg("-config")
                .arg(&config)
                .args(["-dnsserver", &dns.to_string()])
                .env("PEBBLE_VA_NOSLEEP", "1")
                // A reused authorization would skip validation, hiding a failing challenge.
                .env("PEBBLE_AUTHZREUSE", "0")
                .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
                // Its log, for what the CA itself saw (`orders_placed`).
                .stdout(std::fs::File::create(dir.join("pebble.log")).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .expect("start pebble");
            let mut pebble = ChildGuard(pebble);
            if wait_ready(&mut pebble, &[listen, management], &api_root_der) {
                return Pebble {
                    _pebble: pebble,
                    _resolver: stub,
                    directory: format!("https://{listen}/dir"),
                    api_root,
                    api_root_der,
                    management,
                    dir,
                };
            }
            eprintln!("pebble start {attempt} failed (it exited or never answered); new ports");
        }
        panic!("pebble did not start in {START_ATTEMPTS} attempts");
    }

    /// New orders the CA accepted so far, from its own log ("Added order … to the db").
    pub fn orders_placed(&self) -> usize {
        std::fs::read_to_string(self.dir.join("pebble.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("Added order "))
            .count()
    }

    /// The root pebble issues certificates under (it makes a new one every start).
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let (mut stream, _, _) = super::tls_client::handshake(
            self.management,
            "localhost",
            std::slice::from_ref(&self.api_root_der),
            &[b"http/1.1"],
        )
        .await
        .expect("pebble management API");
        let response = super::tls_client::https_get(&mut stream, "localhost", "/roots/0").await;
        assert_eq!(response.status, 200);
        rustls_pki_types::pem::PemObject::from_pem_slice(&response.body).expect("pebble root PEM")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ValidationForwarder {
    pub async fn start() -> ValidationForwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forwarder = ValidationForwarder {
            port: listener.local_addr().unwrap().port(),
            target: Arc::new(Mutex::new(None)),
            failing: Arc::new(AtomicBool::new(false)),
        };
        let shared = forwarder.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *shared.target.lock().unwrap();
                if shared.failing.load(Ordering::SeqCst) {
                    continue; // dropped: pebble sees the connection reset
                }
                let Some(target) = target else { continue };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        forwarder
    }

    pub fn forward_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// A CA and a `localhost` certificate under it for pebble's HTTPS API; returns the CA.
fn write_api_certificate(dir: &std::path::Path) -> (CertificateDer<'static>, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("pebble.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    let root = dir.join("api-root.pem");
    std::fs::write(&root, ca.pem()).unwrap();
    (ca.der().clone(), root)
}

/// Waits (bounded) until every address completes a TLS handshake with pebble's certificate;
/// false if pebble exited first (it lost a port) or the time ran out.
fn wait_ready(
    pebble: &mut ChildGuard,
    addrs: &[SocketAddr],
    root: &CertificateDer<'static>,
) -> bool {
    let deadline = Instant::now() + START_LIMIT;
    let mut pending = addrs.to_vec();
    while Instant::now() < deadline {
        if let Ok(Some(_)) = pebble.0.try_wait() {
            return false;
        }
        pending.retain(|addr| !answers_tls(*addr, root));
        if pending.is_empty() {
            return true;
        }
        // Polling a condition, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether `addr` completes a TLS handshake as `localhost` under `root`: pebble, not some
/// other server on the port.
fn answers_tls(addr: SocketAddr, root: &CertificateDer<'static>) -> bool {
    let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(5));
    if tcp.set_read_timeout(timeout).is_err() || tcp.set_write_timeout(timeout).is_err() {
        return false;
    }
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let Ok(mut tls) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    while tls.is_handshaking() {
        if tls.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

/// pebble's DNS resolver in place of `pebble-challtestsrv -defaultIPv4 127.0.0.1
/// -defaultIPv6 ""`: A queries get 127.0.0.1, every other type an empty NOERROR answer. UDP
/// only: Go's resolver, which pebble uses, asks over TCP only after a truncated answer, and
/// these are a few dozen bytes. Stops when dropped.
struct StubResolver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StubResolver {
    fn start() -> StubResolver {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Wakes the loop now and then to notice `stop`.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = Message::from_vec(&buf[..len]).ok().and_then(stub_answer) {
                    let _ = socket.send_to(&answer, peer);
                }
            }
        });
        StubResolver {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StubResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The stub's answer to `query`, encoded.
fn stub_answer(query: Message) -> Option<Vec<u8>> {
    let mut answer = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    // Go's resolver takes an empty answer without AA or RA for a lame referral.
    answer.metadata.authoritative = true;
    answer.metadata.recursion_available = true;
    for question in &query.queries {
        answer.add_query(question.clone());
        if question.query_type() == RecordType::A {
            let localhost = RData::A(A::new(127, 0, 0, 1));
            answer.add_answer(Record::from_rdata(question.name().clone(), 0, localhost));
        }
    }
    answer.to_vec().ok()
}
