//! Three nodes (127.0.0.21–23) sharing one real etcd, and pebble as the CA: a name all three
//! serve gets one certificate, ordered once by whichever node holds the etcd lock, validated
//! through a node that does not hold it, and served by every node; a renewal forced on
//! another node reaches all three.
//!
//! pebble's validation is routed by the test: each HTTP-01 connection (or DNS-01 query) goes
//! to a node other than the lock holder, read from etcd when the validation arrives. The test
//! holds the lock itself while the nodes start, so that all three are up when one of them
//! orders; releasing it wakes the waiting nodes at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use support::etcd::{self, Etcd};
use support::pebble::{self, Pebble};
use support::tls_client::{handshake, https_get};
use support::{echo_upstream, free_port, http1, Headland, TOKEN};

const PREFIX: &str = "/headland/";

/// Every node must serve the certificate within this time (the issue's bound).
const ISSUE_LIMIT: Duration = Duration::from_secs(60);

const NODES: [(&str, Ipv4Addr); 3] = [
    ("node-a", Ipv4Addr::new(127, 0, 0, 21)),
    ("node-b", Ipv4Addr::new(127, 0, 0, 22)),
    ("node-c", Ipv4Addr::new(127, 0, 0, 23)),
];

/// Where pebble's validations went: (lock holder then, node validated).
type Visits = Arc<Mutex<Vec<(String, String)>>>;

/// Sends each validation to a node other than the one holding `lock` in etcd.
#[derive(Clone)]
struct Router {
    etcd: String,
    lock: String,
    targets: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    visits: Visits,
}

impl Router {
    fn new(etcd: &Etcd, certificate: &str) -> Router {
        Router {
            etcd: etcd.endpoint.clone(),
            lock: format!("{PREFIX}acme/lock/{certificate}"),
            targets: Arc::default(),
            visits: Arc::default(),
        }
    }

    /// The node to validate through now: the first that does not hold the lock.
    async fn pick(&self) -> Option<SocketAddr> {
        let mut client = etcd_client::Client::connect([&self.etcd], None)
            .await
            .ok()?;
        let held = client.get(self.lock.as_str(), None).await.ok()?;
        let holder = held
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .unwrap_or_default();
        let targets = self.targets.lock().unwrap().clone();
        let (name, addr) = targets.into_iter().find(|(name, _)| *name != holder)?;
        self.visits.lock().unwrap().push((holder, name));
        Some(addr)
    }

    /// Takes the order lock as a node would, until `release`.
    async fn hold_lock(&self) {
        let mut client = etcd_client::Client::connect([&self.etcd], None)
            .await
            .unwrap();
        let created = etcd_client::Txn::new()
            .when([etcd_client::Compare::create_revision(
                self.lock.as_str(),
                etcd_client::CompareOp::Equal,
                0,
            )])
            .and_then([etcd_client::TxnOp::put(self.lock.as_str(), "test", None)]);
        assert!(client.txn(created).await.unwrap().succeeded());
    }

    async fn release_lock(&self) {
        let mut client = etcd_client::Client::connect([&self.etcd], None)
            .await
            .unwrap();
        client.delete(self.lock.as_str(), None).await.unwrap();
    }

    fn visits(&self) -> Vec<(String, String)> {
        self.visits.lock().unwrap().clone()
    }

    /// HTTP-01: a TCP port pebble connects to.
    async fn serve_tcp(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = self.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let router = router.clone();
                tokio::spawn(async move {
                    let Some(target) = router.pick().await else {
                        return;
                    };
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        port
    }

    /// DNS-01: a UDP resolver address for pebble, relaying each query to a node.
    async fn serve_udp(&self) -> SocketAddr {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let router = self.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                let query = buffer[..len].to_vec();
                let (router, socket) = (router.clone(), Arc::clone(&socket));
                tokio::spawn(async move {
                    let Some(target) = router.pick().await else {
                        return;
                    };
                    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    relay.send_to(&query, target).await.unwrap();
                    let mut answer = vec![0u8; 4096];
                    let wait = relay.recv_from(&mut answer);
                    if let Ok(Ok((len, _))) =
                        tokio::time::timeout(Duration::from_secs(5), wait).await
                    {
                        let _ = socket.send_to(&answer[..len], from).await;
                    }
                });
            }
        });
        addr
    }
}

struct Nodes {
    nodes: Vec<Headland>,
    root: CertificateDer<'static>,
    name: &'static str,
}

impl Nodes {
    /// `GET /certs` of a node: the status of the certificate for `name`.
    async fn status(node: &Headland, name: &str) -> Option<Value> {
        let response = http1::get(node.admin, "admin", "/certs").await;
        assert_eq!(response.status, 200);
        let all = response.json().as_array().cloned().unwrap();
        all.into_iter().find(|c| c["names"][0] == name)
    }

    /// The leaf each node presents for the name over HTTPS (trusting only pebble's root),
    /// with the status of a request through it.
    async fn served(&self, node: &Headland) -> Result<(CertificateDer<'static>, u16), String> {
        let (leaf, response) = https_fetch(node.https.unwrap(), self.name, &self.root, "/").await?;
        Ok((leaf, response.status))
    }

    /// Waits until every node serves one and the same certificate other than `before`.
    async fn wait_all_serve(
        &self,
        before: Option<&CertificateDer<'static>>,
    ) -> CertificateDer<'static> {
        let deadline = Instant::now() + ISSUE_LIMIT;
        loop {
            let mut served = Vec::new();
            for node in &self.nodes {
                if let Ok((leaf, 200)) = self.served(node).await {
                    served.push(leaf);
                }
            }
            let all_new = served.len() == self.nodes.len()
                && served
                    .iter()
                    .all(|leaf| Some(leaf) != before && *leaf == served[0]);
            if all_new {
                return served.swap_remove(0);
            }
            let mut states = Vec::new();
            for node in &self.nodes {
                states.push(Self::status(node, self.name).await);
            }
            assert!(
                Instant::now() < deadline,
                "not every node serves a new certificate within {ISSUE_LIMIT:?}: {states:?}"
            );
            // Polling the nodes, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Orders counted by all nodes together, by result.
    async fn orders(&self, result: &str) -> f64 {
        let mut total = 0.0;
        for node in &self.nodes {
            let metrics = node.metrics().await;
            total += metrics.count("headland_acme_orders_total", &[("result", result)]);
        }
        total
    }
}

fn seal_key_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("cluster.key");
    std::fs::write(
        &path,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    path
}

fn available() -> bool {
    pebble::available() && etcd::available()
}

async fn start_nodes(
    body: &str,
    listen_extra: impl Fn(usize) -> String,
    root: CertificateDer<'static>,
    name: &'static str,
) -> Nodes {
    let mut nodes = Vec::new();
    for (i, (node, ip)) in NODES.iter().enumerate() {
        let headland = Headland::start_node(
            node,
            IpAddr::V4(*ip),
            body,
            (&listen_extra(i), ""),
            Some(support::node_listener(IpAddr::V4(*ip))),
        );
        nodes.push(headland);
    }
    Nodes { nodes, root, name }
}

fn cluster_section(etcd: &Etcd, key: &Path) -> String {
    format!(
        "[cluster]\nendpoints = [\"{}\"]\nseal_key_file = \"{}\"\nlease_ttl = \"3s\"\n",
        etcd.endpoint,
        key.display()
    )
}

async fn renew(node: &Headland, name: &str) -> u16 {
    let raw = format!(
        "POST /certs/renew?name={name} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    http1::request(node.admin, &raw).await.status
}

/// After the first certificate: one order in all, every validation through a node that did
/// not hold the lock; then a renewal forced on such a node reaches all three.
async fn check_one_order_then_renewal(nodes: &Nodes, router: &Router, pebble: &Pebble) {
    let first = nodes.wait_all_serve(None).await;
    assert_eq!(pebble.orders_placed(), 1, "the CA saw one order");
    assert_eq!(
        nodes.orders("issued").await,
        1.0,
        "one order for the three nodes"
    );
    assert_eq!(nodes.orders("failed").await, 0.0);
    let visits = router.visits();
    assert!(!visits.is_empty(), "pebble validated through the router");
    assert!(
        visits
            .iter()
            .all(|(holder, node)| !holder.is_empty() && holder != node),
        "every validation reached a node other than the lock holder: {visits:?}"
    );

    // A renewal forced on a node that did not order the first certificate.
    let holder = visits[0].0.clone();
    let other = NODES.iter().position(|(name, _)| *name != holder).unwrap();
    assert_eq!(renew(&nodes.nodes[other], nodes.name).await, 202);
    let renewed = nodes.wait_all_serve(Some(&first)).await;
    assert_ne!(renewed, first);
    assert_eq!(
        nodes.orders("issued").await,
        2.0,
        "the renewal is one more order"
    );
    assert_eq!(pebble.orders_placed(), 2, "the CA saw one more order");
}

/// What every node runs: ACME from pebble, one route for `name`, the cluster; `acme_extra`
/// goes into `[acme]`, `extra` after it.
fn node_config(
    pebble: &Pebble,
    etcd: &Etcd,
    app: SocketAddr,
    dir: &Path,
    name: &str,
    (acme_extra, extra): (&str, &str),
) -> String {
    format!(
        "[acme]\ndirectory = \"{directory}\"\nca_root = \"{ca_root}\"\n{acme_extra}\n\n{extra}\n\n[upstreams.app]\nservers = [\"{app}\"]\n\n[[routes]]\nhost = \"{name}\"\nupstream = \"app\"\n\n{cluster}",
        directory = pebble.directory,
        ca_root = pebble.api_root.display(),
        cluster = cluster_section(etcd, &seal_key_file(dir)),
    )
}

/// Starts the three nodes while the test holds the lock, points the router at `targets`
/// (by node), then lets the nodes race for the lock.
async fn start_and_release(
    router: &Router,
    body: &str,
    listen_extra: impl Fn(usize) -> String,
    root: CertificateDer<'static>,
    name: &'static str,
    targets: impl Fn(&Headland, usize) -> SocketAddr,
) -> Nodes {
    router.hold_lock().await;
    let nodes = start_nodes(body, listen_extra, root, name).await;
    for (i, (node, (node_name, _))) in nodes.nodes.iter().zip(NODES).enumerate() {
        let target = targets(node, i);
        router
            .targets
            .lock()
            .unwrap()
            .insert(node_name.to_owned(), target);
    }
    router.release_lock().await;
    nodes
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_one_certificate_over_http01() {
    if !available() {
        return;
    }
    const NAME: &str = "shared.cluster.test";
    let etcd = Etcd::start().await;
    let router = Router::new(&etcd, NAME);
    let pebble = Pebble::start(router.serve_tcp().await, 0, None);
    let root = pebble.issuing_root().await;
    let app = echo_upstream("app").await;
    let dir = support::scratch_dir();
    let body = node_config(&pebble, &etcd, app, &dir, NAME, ("", ""));
    let nodes = start_and_release(
        &router,
        &body,
        |_| String::new(),
        root,
        NAME,
        |node, _| node.http,
    )
    .await;
    check_one_order_then_renewal(&nodes, &router, &pebble).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_one_certificate_over_dns01() {
    if !available() {
        return;
    }
    const NAME: &str = "cluster.test";
    let etcd = Etcd::start().await;
    let router = Router::new(&etcd, NAME);
    let pebble = Pebble::start_with_resolver(free_port(), 0, None, Some(router.serve_udp().await));
    let root = pebble.issuing_root().await;
    let app = echo_upstream("app").await;
    let dir = support::scratch_dir();
    let zone = dir.join("cluster.test.zone");
    std::fs::write(
        &zone,
        "$TTL 60\n@ IN SOA ns1.cluster.test. hostmaster.cluster.test. 1 7200 900 1209600 60\n@ IN NS ns1\nns1 IN A 127.0.0.21\n@ IN A 127.0.0.21\n",
    )
    .unwrap();
    let zones = format!("[dns.zones.\"{NAME}\"]\nfile = \"{}\"", zone.display());
    let body = node_config(
        &pebble,
        &etcd,
        app,
        &dir,
        NAME,
        ("challenge = \"dns-01\"", &zones),
    );
    let dns: Vec<SocketAddr> = NODES
        .iter()
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let listen = |i: usize| format!("dns = [\"{}\"]", dns[i]);
    let nodes = start_and_release(&router, &body, listen, root, NAME, |_, i| dns[i]).await;
    check_one_order_then_renewal(&nodes, &router, &pebble).await;
    let _ = std::fs::remove_dir_all(&dir);
}

const APAC: &str = "192.0.2.10";
const EU: &str = "203.0.113.10";

/// Three regions, one node each, and geo name `api.example.com`; no region has a health URL,
/// so only the cluster's shared view can take a region out of the answers.
fn geo_config(etcd: &Etcd, dir: &Path) -> String {
    let repo = |path: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    format!(
        r#"
[geoip]
database = "{db}"

[regions.apac]
addresses = ["{APAC}"]
location = {{ lat = 3.14, lon = 101.69 }}

[regions.na]
addresses = ["198.51.100.10"]
location = {{ lat = 39.0, lon = -77.5 }}

[regions.eu]
addresses = ["{EU}"]
location = {{ lat = 50.1, lon = 8.7 }}

[dns.zones."example.com"]
file = "{zone}"

[dns.zones."example.com".geo.api]
regions = ["apac", "na", "eu"]
ttl = 30

{cluster}
"#,
        db = repo("geoip/test-city.mmdb").display(),
        zone = repo("config/zones/tests/example.com.zone").display(),
        cluster = cluster_section(etcd, &seal_key_file(dir)),
    )
}

async fn wait_geo_answer(dns: SocketAddr, subnet: &str, expected: &str, limit: Duration) {
    support::dns_client::wait_for_answer(dns, "api.example.com.", subnet, &[expected], limit).await;
}

/// Killing a node (SIGKILL: no goodbye to etcd) takes its region out of every other node's
/// answers once its lease lapses; the bound is the issue's 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_nodes_region_leaves_every_nodes_dns_answers() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start().await;
    let dir = support::scratch_dir();
    let body = geo_config(&etcd, &dir);
    let regions = ["apac", "na", "eu"];
    let dns: Vec<SocketAddr> = NODES
        .iter()
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let mut nodes: Vec<Headland> = NODES
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| {
            let listen = format!("dns = [\"{}\"]", dns[i]);
            let node = format!("region = \"{}\"", regions[i]);
            Headland::start_node(name, IpAddr::V4(*ip), &body, (&listen, &node), None)
        })
        .collect();
    // An apac client (10.1.0.0/16 in the test database) is sent to apac by every node.
    for server in &dns {
        wait_geo_answer(*server, "10.1.0.0/16", APAC, Duration::from_secs(10)).await;
    }

    drop(nodes.remove(0));
    let killed = Instant::now();
    for server in &dns[1..] {
        wait_geo_answer(*server, "10.1.0.0/16", EU, Duration::from_secs(10)).await;
    }
    // The gauge an alert watches says the same as the answers.
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = node.metrics().await;
            if metrics.count("headland_region_up", &[("region", "apac")]) == 0.0 {
                assert_eq!(
                    metrics.count("headland_region_up", &[("region", "eu")]),
                    1.0
                );
                break;
            }
            assert!(Instant::now() < deadline, "{}", metrics.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "apac left the answers of both other nodes {:?} after its node was killed (lease 3 s)",
        killed.elapsed()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// etcd stopped for a minute: every node keeps serving and answering DNS (its own probes
/// decide meanwhile); a change made during the outage (the apac node's app fails) reaches
/// the other nodes once etcd is back.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_keep_serving_through_an_etcd_outage_and_catch_up_after() {
    if !etcd::available() {
        return;
    }
    let mut etcd = Etcd::start().await;
    let dir = support::scratch_dir();
    let regions = ["apac", "na", "eu"];
    let dns: Vec<SocketAddr> = NODES
        .iter()
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let mut apps = Vec::new();
    let mut nodes = Vec::new();
    for (i, (name, ip)) in NODES.iter().enumerate() {
        let app = support::servers::SwitchableUpstream::start().await;
        let body = format!(
            "{}\n[upstreams.api]\nservers = [\"{}\"]\nhealth = {{ path = \"/health\", interval = \"100ms\", rise = 1, fall = 1 }}\n\n[[routes]]\nhost = \"api.example.com\"\nupstream = \"api\"\n",
            geo_config(&etcd, &dir),
            app.addr
        );
        let listen = format!("dns = [\"{}\"]", dns[i]);
        let node = format!("region = \"{}\"", regions[i]);
        nodes.push(Headland::start_node(
            name,
            IpAddr::V4(*ip),
            &body,
            (&listen, &node),
            None,
        ));
        apps.push(app);
    }
    for server in &dns {
        wait_geo_answer(*server, "10.1.0.0/16", APAC, Duration::from_secs(10)).await;
    }

    etcd.stop();
    let outage = Instant::now();
    // The apac node's app fails while nobody can tell the others through etcd.
    apps[0].set_status(503);
    let mut rounds = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        for (node, server) in nodes.iter().zip(&dns).skip(1) {
            let response = http1::get(node.http, "api.example.com", "/").await;
            assert_eq!(
                response.status, 200,
                "{} serves during the outage",
                node.http
            );
            // The last word they had: apac serves. Never nothing.
            wait_geo_answer(*server, "10.1.0.0/16", APAC, Duration::from_secs(5)).await;
        }
        rounds += 1;
        // Pacing the checks over the outage, not synchronising on anything.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(rounds > 10);

    etcd.resume().await;
    for server in &dns[1..] {
        wait_geo_answer(*server, "10.1.0.0/16", EU, Duration::from_secs(20)).await;
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTPS request for `app.test` to `edge`, trusting `root`: status and serving app.
async fn https_app(edge: SocketAddr, root: &CertificateDer<'static>) -> (u16, String) {
    https_app_path(edge, root, "/").await
}

async fn https_app_path(
    edge: SocketAddr,
    root: &CertificateDer<'static>,
    path: &str,
) -> (u16, String) {
    let (_, response) = https_fetch(edge, "app.test", root, path)
        .await
        .unwrap_or_else(|e| panic!("{edge}: {e}"));
    (response.status, response.served_by())
}

/// `GET path` for `name` over HTTPS, trusting only `root`: the leaf presented and the answer.
async fn https_fetch(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
    path: &str,
) -> Result<(CertificateDer<'static>, support::Response), String> {
    let (mut stream, _, leaf) = handshake(addr, name, std::slice::from_ref(root), &[b"http/1.1"])
        .await
        .map_err(|e| e.to_string())?;
    Ok((leaf, https_get(&mut stream, name, path).await))
}

/// `fallback = { regions = true }`: the apac node's app dies and a client still holding the
/// apac answer is served by the nearest region's edge over HTTPS (redirect_http on: no 308
/// ping-pong); with eu down too, na serves; a request already forwarded once is never
/// forwarded again.
#[tokio::test(flavor = "multi_thread")]
async fn a_region_whose_app_died_is_served_by_the_nearest_edge_over_https() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start().await;
    let dir = support::scratch_dir();
    let generated = rcgen::generate_simple_self_signed(vec!["app.test".to_owned()]).unwrap();
    let root = generated.cert.der().clone();
    std::fs::write(dir.join("app.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("app.key"), generated.signing_key.serialize_pem()).unwrap();
    let https: Vec<std::net::TcpListener> = NODES
        .iter()
        .map(|(_, ip)| support::node_listener(IpAddr::V4(*ip)))
        .collect();
    let edges: Vec<SocketAddr> = https.iter().map(|l| l.local_addr().unwrap()).collect();
    let regions = ["apac", "na", "eu"];
    let locations = ["3.14, lon = 101.69", "39.0, lon = -77.5", "50.1, lon = 8.7"];
    let mut region_sections = String::new();
    for ((region, location), edge) in regions.iter().zip(locations).zip(&edges) {
        region_sections += &format!(
            "[regions.{region}]\naddresses = [\"{ip}\"]\nlocation = {{ lat = {location} }}\nedge = \"{edge}\"\n\n",
            ip = edge.ip()
        );
    }
    let mut apps: Vec<support::servers::KillableUpstream> = regions
        .iter()
        .map(|region| support::servers::KillableUpstream::start(&format!("app-{region}")))
        .collect();
    let mut nodes = Vec::new();
    for (i, ((name, ip), listener)) in NODES.iter().zip(https).enumerate() {
        let body = format!(
            r#"
[tls]
redirect_http = true
edge_ca_file = "{pem}"

[[certificates]]
names = ["app.test"]
cert_file = "{pem}"
key_file = "{key}"

{region_sections}
[upstreams.app]
servers = ["{app}"]
health = {{ path = "/", interval = "100ms", rise = 1, fall = 1 }}

[[routes]]
host = "app.test"
upstream = "app"
fallback = {{ regions = true }}

{cluster}
"#,
            pem = dir.join("app.pem").display(),
            key = dir.join("app.key").display(),
            app = apps[i].addr,
            cluster = cluster_section(&etcd, &seal_key_file(&dir)),
        );
        let node = format!("region = \"{}\"", regions[i]);
        nodes.push(Headland::start_node(
            name,
            IpAddr::V4(*ip),
            &body,
            ("", &node),
            Some(listener),
        ));
    }
    let apac = edges[0];
    assert_eq!(https_app(apac, &root).await, (200, "app-apac".to_owned()));

    // apac's app dies: every request still answers, from the nearest region (eu).
    apps[0].kill();
    for _ in 0..30 {
        let (status, served_by) = https_app(apac, &root).await;
        assert_eq!(status, 200);
        assert_eq!(served_by, "app-eu");
    }
    let metrics = nodes[0].metrics().await;
    let fallbacks = metrics.count(
        "headland_region_fallback_total",
        &[("route", "app.test/"), ("region", "eu")],
    );
    assert_eq!(fallbacks, 30.0, "{}", metrics.text);

    // A request that another edge forwarded is never forwarded again: apac answers it
    // itself, and no other edge sees it.
    let raw =
        "GET /hop HTTP/1.1\r\nHost: app.test\r\nHeadland-Hop: node-b\r\nConnection: close\r\n\r\n";
    let (mut stream, _, _) = handshake(
        apac,
        "app.test",
        std::slice::from_ref(&root),
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let response = support::tls_client::https_request(&mut stream, raw).await;
    assert_eq!(response.status, 503, "pool down and not forwarded");
    // eu logs in order: once the request after it is in eu's log, the hop one would be too.
    assert_eq!(https_app_path(apac, &root, "/after-hop").await.1, "app-eu");
    let logged = |node: &Headland, path: &str| {
        node.access_log()
            .iter()
            .filter(|line| line["path"].as_str() == Some(path))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged(&nodes[2], "/after-hop") == 0 {
        assert!(Instant::now() < deadline, "eu never logged /after-hop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(logged(&nodes[2], "/hop"), 0, "the hop request reached eu");

    // eu's app dies too: once the cluster knows eu is not ready, na serves.
    apps[2].kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, served_by) = https_app(apac, &root).await;
        if status == 200 && served_by == "app-na" {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} from {served_by}");
        // Polling until the shared view says eu is down, bounded.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..20 {
        let path = format!("/counted/{i}");
        assert_eq!(
            https_app_path(apac, &root, &path).await,
            (200, "app-na".to_owned())
        );
    }
    // Each request visited apac and na once: na logged each of them once, eu none.
    let counted = |node: &Headland| {
        node.access_log()
            .iter()
            .filter(|line| {
                line["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/counted/"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while (counted(&nodes[0]) < 20 || counted(&nodes[1]) < 20) && Instant::now() < deadline {
        // The access log is written asynchronously; bounded wait for its lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted(&nodes[0]), 20);
    assert_eq!(counted(&nodes[1]), 20);
    assert_eq!(counted(&nodes[2]), 0);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `headland cluster push` stores a routing configuration every node runs with its own
/// node-local sections; `headland cluster status` shows them in step; a push that would not
/// load is refused with located errors, and one that fails on the nodes changes nothing there.
#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_routing_configuration_reaches_every_node() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start().await;
    let dir = support::scratch_dir();
    let (old_app, new_app) = (echo_upstream("old").await, echo_upstream("new").await);
    let local = format!(
        "[upstreams.old]\nservers = [\"{old_app}\"]\n\n[[routes]]\nhost = \"old.test\"\nupstream = \"old\"\n\n{}",
        cluster_section(&etcd, &seal_key_file(&dir))
    );
    let nodes: Vec<Headland> = NODES
        .iter()
        .map(|(name, ip)| Headland::start_node(name, IpAddr::V4(*ip), &local, ("", ""), None))
        .collect();
    assert_eq!(
        http1::get(nodes[1].http, "old.test", "/").await.served_by(),
        "old"
    );

    let headland = |args: &[&str]| {
        let output = std::process::Command::new(support::binary())
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let config = nodes[0].config_path();
    let config = config.to_str().unwrap();
    let shared = dir.join("routing.toml");
    let shared_path = shared.to_str().unwrap();

    // Refused before anything is stored: a node-local section, an unknown upstream.
    std::fs::write(&shared, "[listen]\nhttp = []\n").unwrap();
    let (ok, text) = headland(&["cluster", "push", "--config", config, shared_path]);
    assert!(!ok);
    assert!(
        text.contains(&format!("{shared_path}:1:1: [listen] is node-local")),
        "{text}"
    );
    std::fs::write(
        &shared,
        "[[routes]]\nhost = \"new.test\"\nupstream = \"nwe\"\n",
    )
    .unwrap();
    let (ok, text) = headland(&["cluster", "push", "--config", config, shared_path]);
    assert!(!ok);
    assert!(
        text.contains(&format!("{shared_path}:3:12: unknown upstream \"nwe\"")),
        "{text}"
    );

    std::fs::write(
        &shared,
        format!("[upstreams.new]\nservers = [\"{new_app}\"]\n\n[[routes]]\nhost = \"new.test\"\nupstream = \"new\"\n"),
    )
    .unwrap();
    let (ok, text) = headland(&["cluster", "push", "--config", config, shared_path]);
    assert!(ok, "{text}");
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http1::get(node.http, "new.test", "/").await.served_by() != "new" {
            assert!(
                Instant::now() < deadline,
                "{} never ran the pushed configuration",
                node.http
            );
            // Polling the node, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The local file's routes are not run beside a shared configuration.
        assert_eq!(http1::get(node.http, "old.test", "/").await.status, 404);
    }
    // Every node reports the same shared configuration.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, table) = headland(&["cluster", "status", "--config", config]);
        assert!(ok, "{table}");
        let hashes: Vec<&str> = table
            .lines()
            .skip(1)
            .filter_map(|line| line.split('\t').nth(4))
            .collect();
        if hashes.len() == 3 && hashes.iter().all(|h| *h != "-" && *h == hashes[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "{table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Written by something other than `headland cluster push`, a text that does not load:
    // every node keeps serving the last good one and reports why.
    let mut client = etcd.client().await.unwrap();
    client
        .put(
            format!("{PREFIX}config/routing"),
            "[[routes]]\nhost = 1\n",
            None,
        )
        .await
        .unwrap();
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = http1::get(node.admin, "admin", "/config").await.json();
            if status["last_error"]["errors"]
                .as_str()
                .is_some_and(|e| e.contains("etcd:config/routing:2:8"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            http1::get(node.http, "new.test", "/").await.served_by(),
            "new"
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The production setup of `deploy/README.md`: etcd on https:// that wants a client
/// certificate from its own CA. A node with `ca_file`, `cert_file` and `key_file` joins; the
/// same node without a client certificate is refused by etcd and keeps serving alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_an_etcd_that_wants_tls_client_certificates() {
    if !etcd::available() {
        return;
    }
    let dir = support::scratch_dir();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, file: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    };
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        "server",
    );
    let (client_cert, client_key) = leaf(vec!["headland".to_owned()], "client");
    let etcd = Etcd::start_tls(etcd::TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert,
        server_key,
        client_cert: client_cert.clone(),
        client_key: client_key.clone(),
    })
    .await;
    let cluster = |with_client_cert: bool| {
        let identity = if with_client_cert {
            format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                client_cert.display(),
                client_key.display()
            )
        } else {
            String::new()
        };
        format!(
            "[cluster]\nendpoints = [\"{}\"]\nca_file = \"{}\"\n{identity}lease_ttl = \"3s\"\ntimeout = \"2s\"\n",
            etcd.endpoint,
            dir.join("ca.pem").display()
        )
    };
    let node = Headland::start_node(
        "node-a",
        IpAddr::V4(NODES[0].1),
        &cluster(true),
        ("", ""),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = http1::get(node.admin, "admin", "/cluster").await.json();
        if view["nodes"][0]["node"] == "node-a" && view["following"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "never joined: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stranger = Headland::start_node(
        "node-b",
        IpAddr::V4(NODES[1].1),
        &cluster(false),
        ("", ""),
        None,
    );
    let view = http1::get(stranger.admin, "admin", "/cluster").await;
    assert_eq!(view.status, 503, "{}", view.text());
    let metrics = stranger.metrics().await;
    assert_eq!(metrics.count("headland_cluster_following", &[]), 0.0);
    assert_eq!(
        node.metrics()
            .await
            .count("headland_cluster_following", &[]),
        1.0
    );
    assert_eq!(
        http1::get(stranger.admin, "admin", "/healthz").await.status,
        200
    );
    drop((node, stranger));
    let _ = std::fs::remove_dir_all(&dir);
}
