//! Hostile and slow clients against the real binary: every client-side limit answers with
//! the status nginx or the RFC gives and the upstream sees nothing of the request; slow
//! request bodies do not reach a capped upstream; SIGTERM and an upgrade let in-flight
//! requests finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::recorder::{Recorder, RecorderOptions};
use support::{request, Headland};

fn app_config(upstream: SocketAddr, http: &str, pool_extra: &str) -> String {
    format!(
        "[http]\n{http}\n\n[upstreams.app]\nservers = [\"{upstream}\"]\n{pool_extra}\n\n[[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n"
    )
}

/// Reads until the server closes; bounded so a limit that never fires fails the test.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("the server closed the connection")
        .unwrap_or_default();
    bytes
}

/// Sends a request the server may answer before it has read all of it: the write may fail
/// once the answer is out, which is why it runs beside the read.
async fn send_oversized(addr: SocketAddr, raw: &[u8]) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let raw = raw.to_vec();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&raw).await;
        writer
    });
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut bytes));
    let _ = read.await.expect("the server answered and closed");
    drop(write.await);
    status_of(&bytes)
}

fn status_of(bytes: &[u8]) -> u16 {
    support::http1::parse(bytes).map_or(0, |r| r.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_sent_too_slowly_gets_408_and_reaches_no_upstream() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&app_config(app.addr, "header_timeout = \"1s\"", ""));
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    // A slowloris client: the request line and one field, then nothing.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert_eq!(
        status_of(&answer),
        408,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(app.count(), 0);
    let metrics = proxy.metrics().await;
    let rejected = [("limit", "header_timeout")];
    assert_eq!(
        metrics.count("headland_http_limit_rejections_total", &rejected),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&app_config(app.addr, "keepalive_timeout = \"1s\"", ""));
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // The answer, then the close: without a keep-alive timeout the read never ends.
    let bytes = read_until_closed(&mut stream).await;
    assert_eq!(status_of(&bytes), 200);
    assert_eq!(app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_targets_and_headers_get_414_and_431() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&app_config(app.addr, "", ""));
    let long = |n: usize| "a".repeat(n);
    let cases: Vec<(String, u16, &str)> = vec![
        // Over the 8 KiB default, and over what `http::Uri` can hold at all.
        (
            format!("GET /{} HTTP/1.1\r\nHost: app.test\r\n\r\n", long(9000)),
            414,
            "9 KB URI",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: app.test\r\n\r\n", long(70_000)),
            414,
            "70 KB URI",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
                long(100_000)
            ),
            431,
            "100 KB header",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: app.test\r\n{}\r\n",
                (0..10)
                    .map(|i| format!("X-F{i}: {}\r\n", long(4000)))
                    .collect::<String>()
            ),
            431,
            "40 KB of headers together",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: app.test\r\n{}\r\n",
                (0..101)
                    .map(|i| format!("X-F{i}: 1\r\n"))
                    .collect::<String>()
            ),
            431,
            "101 header fields",
        ),
    ];
    for (raw, status, what) in &cases {
        assert_eq!(
            send_oversized(proxy.http, raw.as_bytes()).await,
            *status,
            "{what}"
        );
    }
    assert_eq!(app.count(), 0, "the upstream saw none of them");
    // Under the limits, the same shapes pass.
    let fine = format!(
        "GET /{} HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        long(8000),
        long(7000)
    );
    assert_eq!(request(proxy.http, &fine).await.status, 200);
    let metrics = proxy.metrics().await;
    let count =
        |limit: &str| metrics.count("headland_http_limit_rejections_total", &[("limit", limit)]);
    assert_eq!(count("uri_length"), 2.0);
    assert_eq!(count("header_size"), 2.0);
    assert_eq!(count("header_count"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_sent_too_slowly_gets_408_and_reaches_no_upstream() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&app_config(app.addr, "body_timeout = \"1s\"", ""));
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert_eq!(
        status_of(&answer),
        408,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(app.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_content_length_is_forwarded_as_one_value() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&app_config(app.addr, "", ""));
    let raw = "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(request(proxy.http, raw).await.status, 200);
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_count("content-length"), 1);
    assert_eq!(seen[0].header("content-length"), Some("5"));
    assert_eq!(seen[0].body, b"hello");
    // Two different lengths cannot be repaired.
    let raw = "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\nhello";
    assert_eq!(request(proxy.http, raw).await.status, 400);
    assert_eq!(app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_per_address_cap_are_closed() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&app_config(app.addr, "max_connections_per_ip = 3", ""));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.http).await.unwrap();
        // A full exchange proves the connection was admitted before the next one opens.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&buf[..n]), 200);
        held.push(stream);
    }
    let mut fourth = TcpStream::connect(proxy.http).await.unwrap();
    let _ = fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert!(
        read_until_closed(&mut fourth).await.is_empty(),
        "closed unanswered"
    );
    // Another client address is not affected.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let raw = "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    assert_eq!(
        support::request_from(other, proxy.http, raw).await.status,
        200
    );
    let metrics = proxy.metrics().await;
    let per_ip = [("limit", "connections_per_ip")];
    assert_eq!(
        metrics.count("headland_http_limit_rejections_total", &per_ip),
        1.0
    );
    assert_eq!(app.count(), 4);
}

/// A client that asks for a large response and then reads nothing (the end of a slow-read
/// attack) is disconnected after `send_timeout`, and the upstream connection is closed too,
/// so the app's worker is free again.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_disconnected_and_frees_the_upstream() {
    // More than the loopback socket buffers on both hops can hold, so writes must block.
    const BODY: usize = 64 << 20;
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let (released_tx, released) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = app.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head).await.unwrap();
        let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
        stream.write_all(header.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < BODY {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = released_tx.send(sent);
    });
    let proxy = Headland::start(&app_config(app_addr, "send_timeout = \"1s\"", ""));
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing until the app has seen its connection end.
    let sent = tokio::time::timeout(Duration::from_secs(30), released)
        .await
        .expect("the upstream connection was closed")
        .unwrap();
    assert!(sent < BODY, "the app wrote its whole body ({sent} bytes)");
    let received = read_until_closed(&mut client).await;
    assert!(
        received.len() < BODY,
        "the client was cut off ({} bytes)",
        received.len()
    );
    proxy.wait_access_log(1);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.count(
            "headland_http_limit_rejections_total",
            &[("limit", "send_timeout")]
        ),
        1.0
    );
}

/// The scenario: 1,000 clients trickling request bodies, an app that serves 64
/// connections at once, and ordinary clients from another address.
#[tokio::test(flavor = "multi_thread")]
async fn slow_bodies_leave_a_capped_upstream_serving_everyone_else() {
    let app = Recorder::start(RecorderOptions {
        max_connections: Some(64),
        ..RecorderOptions::default()
    })
    .await;
    // The per-address cap would turn the slow clients away by itself; this test is about
    // what reaches the upstream, so it is raised. A short read timeout makes a starved
    // upstream show as failed requests quickly.
    let proxy = Headland::start(&app_config(
        app.addr,
        "max_connections_per_ip = 5000",
        "read_timeout = \"3s\"",
    ));
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(proxy.http).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4096\r\n\r\nab")
            .await
            .unwrap();
        slow.push(stream);
    }
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let http = proxy.http;
    let mut served = 0;
    let total = 200;
    for batch in 0..total / 20 {
        let requests: Vec<_> = (0..20)
            .map(|i| {
                let raw = format!("GET /normal/{batch}/{i} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
                tokio::spawn(async move { support::request_from(other, http, &raw).await })
            })
            .collect();
        for request in requests {
            if request.await.is_ok_and(|r| r.status == 200) {
                served += 1;
            }
        }
    }
    assert!(
        served * 100 >= total * 99,
        "{served} of {total} normal requests served"
    );
    assert!(
        app.seen().iter().all(|s| s.method == "GET"),
        "no slow body reached the app"
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_at_sigterm_completes() {
    let app = Recorder::start(RecorderOptions {
        delay: Duration::from_secs(5),
        ..RecorderOptions::default()
    })
    .await;
    let mut proxy = Headland::start(&app_config(app.addr, "", ""));
    let http = proxy.http;
    let in_flight = tokio::spawn(async move {
        request(
            http,
            "GET /slow HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    app.wait_for(1).await;
    proxy.signal("TERM");
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "ok");
    // With nothing left in flight the process ends at once, not after the drain time.
    assert!(
        proxy.wait_exit(Duration::from_secs(20)),
        "headland exited after the drain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_at_an_upgrade_completes_on_the_old_process() {
    let app = Recorder::start(RecorderOptions {
        delay: Duration::from_secs(3),
        ..RecorderOptions::default()
    })
    .await;
    let mut old = Headland::start(&app_config(app.addr, "", ""));
    let http = old.http;
    let in_flight = tokio::spawn(async move {
        request(
            http,
            "GET /slow HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    app.wait_for(1).await;
    let _new = old.spawn_upgrade();
    let socket = old.dir.join("upgrade.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new process never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    old.signal("QUIT");
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200);
    assert!(
        old.wait_exit(Duration::from_secs(30)),
        "the old process exited"
    );
    // The new process serves.
    let raw = "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    assert_eq!(request(http, raw).await.status, 200);
}
