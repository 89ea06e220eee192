//! Test support: the real `headland` binary on loopback listeners bound by the test and handed
//! over (so no other process can hold its ports), real echo upstreams on port 0, and a plain
//! HTTP/1.1 client that can also send what browsers never would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod dns_client;
pub mod dns_server;
pub mod etcd;
pub mod handover;
pub mod http1;
pub mod pebble;
pub mod php_fpm;
pub mod ports;
pub mod recorder;
pub mod servers;
pub mod tcp_servers;
pub mod tls_client;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

#[allow(unused_imports)]
pub use http1::{get, request, request_bytes, request_from, Response};
#[allow(unused_imports)]
pub use ports::{free_port, refused_addr};

/// A running `headland run` process, killed on drop.
pub struct Headland {
    child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener `start_node` made, if any.
    pub https: Option<SocketAddr>,
    pub dir: PathBuf,
    /// The generated `[node]` and `[listen]` sections, kept for rewrites.
    preamble: String,
    stdout: Arc<Mutex<Vec<String>>>,
}

/// The admin token every test instance is started with.
pub const TOKEN: &str = "test-admin-token";

/// Starts of the process before a test gives up: a start fails only if the process dies
/// (e.g. its wait on the upgrade socket timed out on a starved machine).
const START_ATTEMPTS: usize = 3;

/// How long one start may take, hand-over and readiness together, on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(30);

/// `RUST_LOG` for the child: `HEADLAND_TEST_LOG`, else warnings. Pingora logs every
/// one-second wait on the upgrade socket as an error, which is how a hand-over always goes
/// here (see `handover`); that module alone is silenced. A failed bootstrap is still logged
/// by `pingora_core::server::bootstrap_services`.
fn child_log_filter() -> String {
    std::env::var("HEADLAND_TEST_LOG")
        .unwrap_or_else(|_| "warn,pingora_core::server::transfer_fd=off".into())
}

/// Whether process `pid` has a handler for SIGHUP: bit 0 (signal 1) of the `SigCgt` mask
/// in /proc/PID/status (proc(5)).
fn catches_sighup(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 == 1)
}

/// The `[listen]` addresses of a configuration text that a test may have reserved.
struct ListenAddresses {
    https: Vec<SocketAddr>,
    dns: Vec<SocketAddr>,
    /// `[[streams]] listen`, each address once (several streams may share one).
    streams: Vec<SocketAddr>,
}

fn listen_addresses(config: &str) -> ListenAddresses {
    let table: toml::Table = config.parse().expect("test configuration is TOML");
    let list = |key: &str| -> Vec<SocketAddr> {
        table
            .get("listen")
            .and_then(|listen| listen.get(key))
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect()
    };
    let mut streams: Vec<SocketAddr> = table
        .get("streams")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|stream| stream.get("listen")?.as_str()?.parse().ok())
        .collect();
    streams.sort();
    streams.dedup();
    ListenAddresses {
        https: list("https"),
        dns: list("dns"),
        streams,
    }
}

/// A listener on `ip`, port 0, ready to hand to a node (see `Headland::start_node`).
pub fn node_listener(ip: std::net::IpAddr) -> StdListener {
    let listener = StdListener::bind((ip, 0)).expect("bind a node listener");
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A directory for one test, removed when the test's `Headland` drops.
pub fn scratch_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "headland-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_headland")
}

impl Headland {
    /// Starts Headland with `body` (upstreams, routes, other sections) plus generated
    /// `[node]` and `[listen]` sections, on loopback listeners handed over by the test.
    pub fn start(body: &str) -> Headland {
        Self::start_with_listen(body, "")
    }

    /// Like `start`, with extra keys for the `[listen]` section (e.g. `h2c = true`).
    pub fn start_with_listen(body: &str, listen_extra: &str) -> Headland {
        Self::start_with(body, listen_extra, "")
    }

    /// Full control: extra `[listen]` and `[node]` keys. The admin API always gets the token
    /// `TOKEN` (from a file in the test's directory).
    pub fn start_with(body: &str, listen_extra: &str, node_extra: &str) -> Headland {
        Self::start_in(scratch_dir(), body, listen_extra, node_extra)
    }

    /// Like `start_with`, with `dir` as the working and state directory (a second run over
    /// the same state).
    ///
    /// Headland's HTTP and admin listeners, and any `[listen]` or `[[streams]] listen`
    /// address on a port from [`free_port`] (e.g. `https`), are bound here and handed to `headland run --upgrade`
    /// over its upgrade socket (see `handover`), so the ports are never free for another
    /// process to take. Before, the ports came from `free_port()` as bare numbers that Headland
    /// bound later: when another test's upstream got one first, Pingora kept retrying the bind
    /// in the background while the readiness check connected to that upstream, and the test
    /// talked to the wrong server ("every key on one server").
    pub fn start_in(dir: PathBuf, body: &str, listen_extra: &str, node_extra: &str) -> Headland {
        let http_listener = ports::loopback_listener();
        Self::start_listening(
            dir,
            "test",
            http_listener,
            None,
            body,
            listen_extra,
            node_extra,
        )
    }

    /// One node of a cluster: named `name`, its HTTP listener on `ip` (a loopback address
    /// such as 127.0.0.21), with extra `[listen]` and `[node]` keys, and `https` (from
    /// [`node_listener`]) as its HTTPS listener.
    pub fn start_node(
        name: &str,
        ip: std::net::IpAddr,
        body: &str,
        (listen_extra, node_extra): (&str, &str),
        https: Option<StdListener>,
    ) -> Headland {
        let http = node_listener(ip);
        Self::start_listening(
            scratch_dir(),
            name,
            http,
            https,
            body,
            listen_extra,
            node_extra,
        )
    }

    fn start_listening(
        dir: PathBuf,
        name: &str,
        http_listener: StdListener,
        https_listener: Option<StdListener>,
        body: &str,
        listen_extra: &str,
        node_extra: &str,
    ) -> Headland {
        std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
        // Held until Headland is ready, so a retry can hand the same sockets over again.
        let admin_listener = ports::loopback_listener();
        let http = http_listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let https = https_listener.as_ref().map(|l| l.local_addr().unwrap());
        let https_line = https.map_or(String::new(), |addr| format!("https = [\"{addr}\"]\n"));
        let preamble = format!(
            "[node]\nname = \"{name}\"\nstate_dir = \"{state}\"\nthreads = 2\n{node_extra}\n\n[listen]\nhttp = [\"{http}\"]\n{https_line}admin = \"{admin}\"\nadmin_token_file = \"admin.token\"\n{listen_extra}\n",
            state = dir.display()
        );
        let config_path = dir.join("headland.toml");
        let config = format!("{preamble}\n{body}\n");
        std::fs::write(&config_path, &config).unwrap();

        let listen = listen_addresses(&config);
        let mut listeners = vec![(http, http_listener), (admin, admin_listener)];
        listeners.extend(https_listener.map(|l| (l.local_addr().unwrap(), l)));
        listeners.extend(
            listen
                .https
                .iter()
                .chain(&listen.streams)
                .filter_map(|addr| Some((*addr, ports::reserved_listener(*addr)?))),
        );
        // DNS sockets Headland binds itself (SO_REUSEPORT): reserved ports keep their UDP
        // twin until then (see `ports`), and drop it once Headland is up.
        let reserved_dns: Vec<u16> = listen
            .dns
            .iter()
            .filter(|addr| ports::hold_udp(**addr))
            .map(SocketAddr::port)
            .collect();

        for attempt in 1..=START_ATTEMPTS {
            let mut child = Command::new(binary())
                .args(["run", "--upgrade", "--config"])
                .arg(&config_path)
                .env("RUST_LOG", child_log_filter())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start headland");
            let stdout = Arc::new(Mutex::new(Vec::new()));
            let lines = Arc::clone(&stdout);
            let pipe = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
            let deadline = Instant::now() + START_LIMIT;
            let handed: Vec<(SocketAddr, &StdListener)> =
                listeners.iter().map(|(addr, l)| (*addr, l)).collect();
            let handover =
                handover::hand_over(&dir.join("upgrade.sock"), &handed, &mut child, deadline);
            let mut headland = Headland {
                child,
                http,
                admin,
                https,
                dir: dir.clone(),
                preamble: preamble.clone(),
                stdout,
            };
            match handover {
                Ok(()) if headland.wait_ready(deadline) => {
                    for &port in &reserved_dns {
                        ports::release_udp(port);
                    }
                    return headland;
                }
                Ok(()) => eprintln!("headland start {attempt}: not ready (see stderr above)"),
                Err(error) => eprintln!("headland start {attempt}: hand-over failed: {error:?}"),
            }
            // Not dropped: that would remove `dir`, which the next attempt needs.
            headland.stop_keeping_state();
        }
        panic!("headland did not start in {START_ATTEMPTS} attempts (see stderr above)");
    }

    /// Waits for the admin health endpoint and for SIGHUP to be caught; false if the process
    /// died or `deadline` passed. The admin and HTTP listeners were handed over, so no other
    /// process can be answering on them; the HTTP listener queues connections until the
    /// proxy service accepts.
    ///
    /// SIGHUP: its default action ends the process, and Headland catches it only once its
    /// reload service has started, which on a loaded machine can come after the admin API.
    /// Tests (and `headland reload` without a token) send it right after the start.
    fn wait_ready(&mut self, deadline: Instant) -> bool {
        let mut admin_up = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            admin_up = admin_up
                || http1::get_blocking(self.admin, "admin", "/healthz")
                    .is_some_and(|r| r.status == 200);
            if admin_up && catches_sighup(self.child.id()) {
                return true;
            }
            // Polling a condition, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Replaces the configuration file's body, keeping the generated node and listen sections.
    pub fn write_config(&self, body: &str) {
        let path = self.dir.join("headland.toml");
        // Write then rename, as editors and deploy tools do, so a reader never sees half a file.
        let temp = self.dir.join("headland.toml.tmp");
        std::fs::write(&temp, format!("{}\n{body}\n", self.preamble)).unwrap();
        std::fs::rename(temp, path).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("headland.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST /reload` with the admin token: status and JSON body.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let raw = format!(
            "POST /reload HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let response = http1::request(self.admin, &raw).await;
        (response.status, response.json())
    }

    /// Starts a second process on the same configuration with `--upgrade`, ready to take the
    /// listening sockets over when this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> ChildGuard {
        let child = Command::new(binary())
            .args(["run", "--upgrade", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start upgraded headland");
        ChildGuard(child)
    }

    /// Waits (bounded) until a process from `spawn_upgrade` has opened the upgrade socket,
    /// ready to take the listeners over when this one gets SIGQUIT.
    pub async fn wait_upgrade_socket(&self) {
        let socket = self.dir.join("upgrade.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "new process never opened {}",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for the process to exit; true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends a signal (e.g. "HUP") to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Scrapes `/metrics` from the admin listener.
    pub async fn metrics(&self) -> Metrics {
        let response = http1::get(self.admin, "admin", "/metrics").await;
        assert_eq!(response.status, 200);
        Metrics::parse(response.text())
    }

    /// Access-log lines written so far, parsed as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until at least `n` access-log lines are written (the writer is asynchronous).
    /// Bounded generously: the bound only matters when the lines never come, and a loaded
    /// machine can take seconds.
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Headland {
    /// Stops the process and keeps its directory (config, state) for another run.
    pub fn stop_keeping_state(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Headland {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A real echo upstream (the one `headland demo` uses) on 127.0.0.1:0.
pub async fn echo_upstream(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(headland::demo::echo::serve(listener, name.to_owned()));
    addr
}

/// One `/metrics` scrape, parsed by a Prometheus text-format parser.
pub struct Metrics {
    pub text: String,
    pub scrape: prometheus_parse::Scrape,
}

impl Metrics {
    pub fn parse(text: String) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
        Self { text, scrape }
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .find_map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(*v),
                _ => None,
            })
    }

    /// Like `value`, with a missing sample read as 0.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
