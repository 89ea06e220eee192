//! A real ACME CA for tests: Debian's `pebble`, with `pebble-challtestsrv` as its DNS
//! resolver (every name → 127.0.0.1), on free loopback ports, with a TLS certificate made
//! here. Also a TCP forwarder that pebble's HTTP-01 validation goes through, so a test can
//! point it at Headland after Headland picked its port, or make validation fail.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};

use super::{free_port, scratch_dir, ChildGuard};

pub struct Pebble {
    _pebble: ChildGuard,
    _dns: Option<ChildGuard>,
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
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|tool| {
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
    /// instead of a pebble-challtestsrv that maps every name to 127.0.0.1.
    pub fn start_with_resolver(
        http_port: u16,
        nonce_reject: u32,
        validity: Option<Duration>,
        resolver: Option<SocketAddr>,
    ) -> Pebble {
        let dir = scratch_dir();
        let (api_root_der, api_root) = write_api_certificate(&dir);
        let (dns, dns_server) = match resolver {
            Some(resolver) => (resolver, None),
            None => {
                let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
                let management: SocketAddr = ([127, 0, 0, 1], free_port()).into();
                let server = Command::new("pebble-challtestsrv")
                    .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                    .args(["-dns01", &dns.to_string()])
                    .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                    .args(["-management", &management.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start pebble-challtestsrv");
                let server = ChildGuard(server);
                // Its management API comes up after the DNS listener: then both are ready.
                wait_listening(management);
                (dns, Some(server))
            }
        };
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let management: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut settings = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let guards = (ChildGuard(pebble), dns_server);
        wait_listening(listen);
        wait_listening(management);
        Pebble {
            _pebble: guards.0,
            _dns: guards.1,
            directory: format!("https://{listen}/dir"),
            api_root,
            api_root_der,
            management,
            dir,
        }
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

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "pebble did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
