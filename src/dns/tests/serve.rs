//! The real server on loopback: UDP and TCP listeners on port 0, real packets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::timeout;

use super::{addresses, ecs_of, q, view, Health, Q};
use crate::dns::{serve, DnsState, DnsView, QueryOutcome, ResponseRateLimiter, RrlSpec, Verdict};

const WAIT: Duration = Duration::from_secs(5);

struct TestState {
    view: Arc<DnsView>,
    health: Health,
    outcomes: Mutex<Vec<QueryOutcome>>,
    /// Off unless a test sets a spec.
    limiter: Option<Arc<ResponseRateLimiter>>,
    limited: Mutex<Vec<Verdict>>,
}

impl DnsState for TestState {
    fn view(&self) -> Arc<DnsView> {
        self.view.clone()
    }
    fn region_up(&self, _name: &str, region: &str) -> bool {
        self.health.up(region)
    }
    fn record(&self, outcome: &QueryOutcome) {
        self.outcomes.lock().unwrap().push(outcome.clone());
    }
    fn rate_limiter(&self) -> Option<Arc<ResponseRateLimiter>> {
        self.limiter.clone()
    }
    fn record_limited(&self, verdict: Verdict) {
        self.limited.lock().unwrap().push(verdict);
    }
}

struct Running {
    state: Arc<TestState>,
    udp: SocketAddr,
    tcp: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), crate::dns::DnsError>>,
}

async fn start() -> Running {
    start_limited(None).await
}

/// The server with response rate limiting by `spec` (off with `None`).
async fn start_limited(spec: Option<RrlSpec>) -> Running {
    let state = Arc::new(TestState {
        view: Arc::new(view()),
        health: Health::default(),
        outcomes: Mutex::new(Vec::new()),
        limiter: spec.and_then(ResponseRateLimiter::new).map(Arc::new),
        limited: Mutex::new(Vec::new()),
    });
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let shared: Arc<dyn DnsState> = state.clone();
    let task = tokio::spawn(serve(shared, vec![udp], vec![tcp], stopped));
    Running {
        state,
        udp: udp_addr,
        tcp: tcp_addr,
        stop,
        task,
    }
}

async fn udp_ask(server: SocketAddr, query: &Q) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query.bytes(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(len <= 1232, "UDP response of {len} bytes");
    Message::from_vec(&buf[..len]).unwrap()
}

async fn tcp_ask(server: SocketAddr, query: &Q) -> Message {
    let mut stream = timeout(WAIT, TcpStream::connect(server))
        .await
        .unwrap()
        .unwrap();
    let bytes = query.bytes();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = timeout(WAIT, stream.read_u16()).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_geo_static_negative_and_large_answers() {
    let server = start().await;
    let api = || q("aPi.Example.COM.", RecordType::A);

    for (net, first) in [
        ("192.0.2.0/24", "10.1.0.1"),
        ("198.51.100.0/24", "10.2.0.1"),
        ("203.0.113.0/24", "10.3.0.1"),
    ] {
        let m = udp_ask(server.udp, &api().ecs(net)).await;
        assert!(m.metadata.authoritative, "{net}");
        assert_eq!(
            m.queries[0].name().to_string(),
            "aPi.Example.COM.",
            "0x20 case echoed"
        );
        assert_eq!(addresses(&m)[0], first, "{net}");
        assert_eq!(ecs_of(&m).map(|e| (e.0, e.1)), Some((24, 24)), "{net}");
    }
    let m = tcp_ask(
        server.tcp,
        &q("api.example.com.", RecordType::AAAA).ecs("2001:db8:3::/48"),
    )
    .await;
    assert_eq!(addresses(&m), vec!["fd00:3::1"]);
    assert_eq!(ecs_of(&m).map(|e| e.1), Some(48));

    // UDP answers are cached for a second, so health changes are checked over TCP.
    server.state.health.set_up("eu", false);
    let m = tcp_ask(server.tcp, &api().ecs("203.0.113.0/24")).await;
    assert!(
        !addresses(&m).iter().any(|a| a.starts_with("10.3.")),
        "down region disappears"
    );
    server.state.health.set_up("apac", false);
    server.state.health.set_up("na", false);
    let m = tcp_ask(server.tcp, &api().ecs("203.0.113.0/24")).await;
    assert_eq!(
        addresses(&m).len(),
        6,
        "all down: fail open answers every region"
    );
    for region in ["apac", "na", "eu"] {
        server.state.health.set_up(region, true);
    }

    let m = udp_ask(server.udp, &q("missing.example.com.", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        m.authorities
            .iter()
            .map(|r| (r.record_type(), r.ttl))
            .collect::<Vec<_>>(),
        vec![(RecordType::SOA, 120)]
    );
    let m = udp_ask(server.udp, &q("mail.example.com.", RecordType::AAAA)).await;
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(m.authorities[0].ttl, 120);
    assert!(m.metadata.authoritative);

    let m = udp_ask(server.udp, &q("www.example.net.", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    let big = q("big.example.com.", RecordType::TXT).edns(4096);
    let m = udp_ask(server.udp, &big).await;
    assert!(m.metadata.truncation, "TC over UDP");
    assert!(m.answers.is_empty());
    let m = tcp_ask(server.tcp, &big).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 8, "full answer over TCP");

    let outcomes = server.state.outcomes.lock().unwrap().clone();
    assert!(outcomes
        .iter()
        .any(|o| o.geo == Some(("api.example.com".into(), "eu".into()))));
    assert!(outcomes
        .iter()
        .any(|o| o.rcode == "refused" && o.zone.is_none()));

    server.stop.send(true).unwrap();
    let result = timeout(WAIT, server.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_packets_get_formerr() {
    let server = start().await;
    // Bad ECS family: hickory-proto fails the parse; the UDP loop answers FORMERR (header
    // only), as hickory-server does on TCP before our handler runs.
    let mut bytes = q("api.example.com.", RecordType::A)
        .ecs("192.0.2.0/24")
        .bytes();
    let family_at = bytes.len() - 7;
    bytes[family_at..family_at + 2].copy_from_slice(&[0, 9]);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&bytes, server.udp).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.queries.is_empty() && m.edns.is_none());
    let outcomes = server.state.outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].rcode, "formerr");

    drop(server.stop);
    let result = timeout(WAIT, server.task).await.unwrap().unwrap();
    assert!(
        result.is_ok(),
        "dropping the shutdown sender stops the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_response_gets_no_answer_on_either_transport() {
    let server = start().await;
    // QR set, header claims one question, body cut short: does not parse.
    let garbage = [0x12, 0x34, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w'];
    let good = q("static.example.com.", RecordType::A);

    // UDP: the garbage first, then a query from the same socket. One server thread reads
    // the socket in order, so the first datagram back answers the query, and nothing came
    // for the garbage.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&garbage, server.udp).await.unwrap();
    socket.send_to(&good.bytes(), server.udp).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(m.metadata.id, 0x4242, "the query's answer, not a FORMERR");
    assert_eq!(addresses(&m), vec!["203.0.113.10"]);

    // TCP: the same on one connection; queries on a connection are answered in order.
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    for message in [&garbage[..], &good.bytes()] {
        stream
            .write_all(&(message.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(message).await.unwrap();
    }
    let len = timeout(WAIT, stream.read_u16()).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, 0x4242, "the query's answer, not a FORMERR");

    let outcomes = server.state.outcomes.lock().unwrap().clone();
    assert_eq!(
        outcomes.iter().filter(|o| o.rcode == "dropped").count(),
        2,
        "{outcomes:?}"
    );
    assert!(!outcomes.iter().any(|o| o.rcode == "formerr"));
    server.stop.send(true).unwrap();
    let result = timeout(WAIT, server.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_packet_cache_are_rate_limited_too() {
    let rate = 3;
    let server = start_limited(Some(RrlSpec {
        responses_per_second: rate,
        slip: 1, // every limited response truncated: each query gets a reply to count
        exempt: Vec::new(),
        ..RrlSpec::default()
    }))
    .await;
    // Queries that differ only in ID: one cache entry, answered from it after the first.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut query = q("static.example.com.", RecordType::A);
    let started = std::time::Instant::now();
    for id in 0..20u16 {
        query.message.metadata.id = id;
        socket.send_to(&query.bytes(), server.udp).await.unwrap();
    }
    let (mut full, mut truncated) = (0, 0);
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 2048];
    for _ in 0..20 {
        let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..len]).unwrap();
        ids.push(m.metadata.id);
        if m.metadata.truncation {
            assert!(m.answers.is_empty());
            truncated += 1;
        } else {
            assert_eq!(addresses(&m), vec!["203.0.113.10"]);
            full += 1;
        }
    }
    // Credit returns at `rate` a second: the bound allows for however long this took.
    let allowed = rate as usize + (f64::from(rate) * started.elapsed().as_secs_f64()) as usize;
    assert!(
        (rate as usize..=allowed).contains(&full),
        "{full} full answers"
    );
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..20).collect::<Vec<_>>(),
        "each reply carries its query's ID"
    );
    let limited = server.state.limited.lock().unwrap().clone();
    assert_eq!(limited, vec![Verdict::Slip; truncated]);
    assert_eq!(
        server.state.outcomes.lock().unwrap().len(),
        20,
        "all counted"
    );
    server.stop.send(true).unwrap();
    let result = timeout(WAIT, server.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}
