//! DNS response rate limiting through the real binary, with real UDP and TCP queries from
//! loopback: a flood of one question is answered at the configured rate, every second
//! limited response comes back truncated and the rest get nothing (counted by action in
//! the metrics); TCP answers regardless; the limit can be turned off, and loopback is
//! exempt by default. Also: a malformed packet with QR set gets no reply on either
//! transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use support::dns_client::{addresses, ask};
use support::{free_port, Headland};

const WAIT: Duration = Duration::from_secs(5);
/// The flood: one question, many times.
const FLOOD: &str = "static.example.com.";
const FLOOD_ADDRESS: &str = "203.0.113.10";

struct Dns {
    proxy: Headland,
    addr: SocketAddr,
}

/// Headland serving the test zone, with `rate_limit` as the `[dns.rate_limit]` section.
fn start(rate_limit: &str) -> Dns {
    let zone = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/zones/tests/example.com.zone");
    let body = format!(
        "[dns.zones.\"example.com\"]\nfile = \"{}\"\n\n{rate_limit}\n",
        zone.display()
    );
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy = Headland::start_with(&body, &format!("dns = [\"{addr}\"]"), "");
    Dns { proxy, addr }
}

/// What came back for the flood queries.
#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    truncated: usize,
}

/// Sends `total` queries for `FLOOD` from one socket, in rounds of `round`, each round
/// followed by a query for `marker` from the same socket. The server reads a socket's
/// datagrams in order, so once the marker's reply is back every earlier query has been
/// answered or dropped: no sleeping, and no round overfills the socket buffers.
async fn flood(dns: &Dns, total: u16, round: u16, marker: &str) -> Tally {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 4096];
    for first in (0..total).step_by(usize::from(round)) {
        for id in first..(first + round).min(total) {
            let mut query = ask(FLOOD, RecordType::A);
            query.message.metadata.id = id;
            socket
                .send_to(&query.message.to_vec().unwrap(), dns.addr)
                .await
                .unwrap();
        }
        let mut marker_query = ask(marker, RecordType::A);
        let marker_id = 60_000 + first;
        marker_query.message.metadata.id = marker_id;
        socket
            .send_to(&marker_query.message.to_vec().unwrap(), dns.addr)
            .await
            .unwrap();
        loop {
            let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
                .await
                .expect("the marker is answered within 5 s")
                .unwrap();
            let reply = Message::from_vec(&buf[..len]).unwrap();
            if reply.metadata.id == marker_id {
                assert!(!reply.metadata.truncation, "the marker has its own account");
                break;
            }
            if reply.metadata.truncation {
                assert!(reply.answers.is_empty(), "a slip carries no records");
                tally.truncated += 1;
            } else {
                assert_eq!(addresses(&reply), vec![FLOOD_ADDRESS]);
                tally.answered += 1;
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_is_answered_at_the_rate_and_every_second_limited_response_is_truncated() {
    let rate = 5;
    let dns = start(&format!(
        "[dns.rate_limit]\nresponses_per_second = {rate}\nwindow = \"15s\"\nslip = 2\nexempt = []"
    ));
    let total = 200;
    let started = Instant::now();
    let tally = flood(&dns, total, 40, "mail.example.com.").await;
    // Credit comes back at `rate` a second, so the bound grows with the time the flood
    // took: this keeps the check true on a slow machine without asserting any timing.
    let allowed = rate + (rate as f64 * started.elapsed().as_secs_f64()) as usize;
    assert!(
        (rate..=allowed).contains(&tally.answered),
        "{tally:?}: between {rate} and {allowed} full answers"
    );
    let limited = usize::from(total) - tally.answered;
    assert!(
        tally.truncated.abs_diff(limited / 2) <= 1,
        "{tally:?}: about half of the {limited} limited responses slip"
    );

    // The queries without a reply were dropped by the limiter, not lost on the way.
    let metrics = dns.proxy.metrics().await;
    let count = |action| metrics.count("headland_dns_rate_limited_total", &[("action", action)]);
    assert_eq!(count("slip") as usize, tally.truncated);
    assert_eq!(
        count("drop") as usize,
        limited - tally.truncated,
        "every other limited query got no answer at all"
    );
    assert!(
        metrics.count(
            "headland_dns_queries_total",
            &[
                ("zone", "example.com"),
                ("qtype", "A"),
                ("rcode", "noerror")
            ]
        ) >= f64::from(total)
    );

    // TCP is never limited: the same question from the same address, answered in full.
    for _ in 0..(2 * rate) {
        let reply = ask(FLOOD, RecordType::A).tcp(dns.addr).await;
        assert!(!reply.metadata.truncation);
        assert_eq!(addresses(&reply), vec![FLOOD_ADDRESS]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_is_exempt_by_default_and_zero_turns_the_limit_off() {
    for rate_limit in [
        "",
        "[dns.rate_limit]\nresponses_per_second = 0\nexempt = []",
    ] {
        let dns = start(rate_limit);
        let tally = flood(&dns, 100, 25, "mail.example.com.").await;
        assert_eq!(
            (tally.answered, tally.truncated),
            (100, 0),
            "with {rate_limit:?}"
        );
        let metrics = dns.proxy.metrics().await;
        for action in ["slip", "drop"] {
            assert_eq!(
                metrics.value("headland_dns_rate_limited_total", &[("action", action)]),
                Some(0.0),
                "exported at zero"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_response_gets_no_reply_over_udp_or_tcp() {
    let dns = start("");
    // QR set, one question announced, the body cut short: it does not parse. Before the
    // fix it earned a FORMERR, which answers a response.
    let garbage = [0x12, 0x34, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w'];
    let mut query = ask(FLOOD, RecordType::A);
    query.message.metadata.id = 0x4242;
    let query = query.message.to_vec().unwrap();

    // UDP: the garbage, then a query from the same socket; the first reply is the query's.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&garbage, dns.addr).await.unwrap();
    socket.send_to(&query, dns.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(reply.metadata.id, 0x4242, "no FORMERR for the garbage");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);

    // TCP: the same two on one connection, answered in order.
    let mut stream = TcpStream::connect(dns.addr).await.unwrap();
    for message in [&garbage[..], &query[..]] {
        let length = u16::try_from(message.len()).unwrap().to_be_bytes();
        stream.write_all(&length).await.unwrap();
        stream.write_all(message).await.unwrap();
    }
    let len = timeout(WAIT, stream.read_u16()).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    let reply = Message::from_vec(&buf).unwrap();
    assert_eq!(reply.metadata.id, 0x4242, "no FORMERR for the garbage");

    let metrics = dns.proxy.metrics().await;
    assert_eq!(
        metrics.count("headland_dns_queries_total", &[("rcode", "formerr")]),
        0.0
    );
    assert_eq!(
        metrics.count("headland_dns_queries_total", &[("rcode", "dropped")]),
        2.0
    );
}
