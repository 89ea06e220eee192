//! A real etcd for cluster tests: Debian's `etcd-server` on reserved loopback ports with a
//! fresh data directory, killed (and its directory removed) on drop. Like pebble, etcd binds
//! its own listeners, so its ports come from `free_port()`, which Go's `net.Listen` can take
//! over (SO_REUSEADDR, see `ports`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, scratch_dir, ChildGuard};

/// How long etcd may take to answer on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Etcd {
    process: Option<ChildGuard>,
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    tls: Option<TlsFiles>,
}

/// PEM files for an etcd that speaks only TLS and wants client certificates.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Whether etcd can run here. Under `CI=true` a missing etcd fails the test; elsewhere the
/// test is skipped with a loud message.
pub fn available() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v etcd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!("etcd is required under CI: run .ci/install-deps (Debian package etcd-server)");
        }
        eprintln!("\n*** SKIPPED: etcd not installed (apt-get install etcd-server); cluster tests did not run ***\n");
    }
    found
}

impl Etcd {
    pub async fn start() -> Etcd {
        Self::start_with(None).await
    }

    /// An etcd on https:// that accepts only clients with a certificate from `tls.ca`.
    pub async fn start_tls(tls: TlsFiles) -> Etcd {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<TlsFiles>) -> Etcd {
        let mut etcd = Etcd {
            process: None,
            endpoint: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
            dir: scratch_dir(),
            tls,
        };
        let scheme = if etcd.tls.is_some() { "https" } else { "http" };
        etcd.endpoint = format!("{scheme}://127.0.0.1:{}", etcd.client_port);
        etcd.resume().await;
        etcd
    }

    /// Stops etcd (SIGKILL), keeping its data, as a crashed or unreachable cluster.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts etcd again on the same ports and data.
    pub async fn resume(&mut self) {
        let client = self.endpoint.clone();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.process = Some(ChildGuard(child));
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            if self.client().await.is_some() {
                return;
            }
            // Polling readiness, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not answer on {client} within {START_LIMIT:?}");
    }

    /// A client, once etcd answers a read.
    pub async fn client(&self) -> Option<etcd_client::Client> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            let pem = |path: &PathBuf| std::fs::read(path).unwrap();
            let settings = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(pem(&tls.ca)))
                .identity(etcd_client::Identity::from_pem(
                    pem(&tls.client_cert),
                    pem(&tls.client_key),
                ));
            options = options.with_tls(settings);
        }
        let mut client = etcd_client::Client::connect([&self.endpoint], Some(options))
            .await
            .ok()?;
        client.get("probe", None).await.ok()?;
        Some(client)
    }

    /// The value at `key`, as text.
    pub async fn get(&self, key: &str) -> Option<String> {
        let mut client = self.client().await?;
        let response = client.get(key, None).await.ok()?;
        response
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.process = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
