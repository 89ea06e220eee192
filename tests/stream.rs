//! `[[streams]]` against the real binary: TCP carried by port, TLS passed through by SNI,
//! a refusing server skipped, reloads, and a binary upgrade with a stream open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::tcp_servers::{closes_first, echo, tls_echo};
use support::{free_port, refused_addr, tls_client, Headland};

/// A loopback address on a port reserved for this test (handed to Headland at start).
fn stream_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Sends `payload`, closes the sending half, and reads until the other side closes.
async fn round_trip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.split();
    let send = async {
        write.write_all(payload).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut answer = Vec::new();
    let receive = read.read_to_end(&mut answer);
    let ((), received) = tokio::join!(send, receive);
    received.unwrap();
    answer
}

/// Polls `/metrics` until `name{labels}` reaches `want` (bounded); returns the last value.
async fn wait_metric(headland: &Headland, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = headland.metrics().await.count(name, labels);
        if value >= want || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_carries_tcp_both_ways_with_both_halves_of_a_close() {
    let echo = echo().await;
    let (first, mut heard) = closes_first(b"banner").await;
    let (echo_listen, first_listen) = (stream_addr(), stream_addr());
    let headland = Headland::start(&format!(
        "[upstreams.echo]\nservers = [\"{echo}\"]\n\n[upstreams.first]\nservers = [\"{first}\"]\n\n\
         [[streams]]\nname = \"echo\"\nlisten = \"{echo_listen}\"\nupstream = \"echo\"\n\n\
         [[streams]]\nname = \"first\"\nlisten = \"{first_listen}\"\nupstream = \"first\"\n"
    ));

    // Several connections at once, one larger than any socket buffer.
    let payloads: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        (0..=255u8).cycle().take(512 * 1024).collect(),
        b"third".to_vec(),
    ];
    let answers =
        futures_util::future::join_all(payloads.iter().map(|p| round_trip(echo_listen, p))).await;
    for (payload, answer) in payloads.iter().zip(&answers) {
        assert!(
            answer == payload,
            "echoed {} of {} bytes",
            answer.len(),
            payload.len()
        );
    }

    // The upstream closes first: the client reads its end, and can still send afterwards.
    let mut client = TcpStream::connect(first_listen).await.unwrap();
    let mut banner = Vec::new();
    client.read_to_end(&mut banner).await.unwrap();
    assert_eq!(banner, b"banner");
    client.write_all(b"after the server's FIN").await.unwrap();
    client.shutdown().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), heard.recv()).await;
    assert_eq!(received.unwrap().unwrap(), b"after the server's FIN");

    let total: usize = payloads.iter().map(Vec::len).sum();
    let connections = "headland_stream_connections_total";
    let closed = [("stream", "echo"), ("result", "closed")];
    assert_eq!(wait_metric(&headland, connections, &closed, 3.0).await, 3.0);
    let metrics = headland.metrics().await;
    let bytes = "headland_stream_bytes_total";
    for direction in ["received", "sent"] {
        let labels = [("stream", "echo"), ("direction", direction)];
        assert_eq!(metrics.count(bytes, &labels), total as f64, "{direction}");
    }
    let active = [("stream", "echo")];
    assert_eq!(
        metrics.count("headland_stream_connections_active", &active),
        0.0
    );

    let lines = headland.wait_access_log(4);
    let logged: Vec<_> = lines.iter().filter(|l| l["stream"] == "echo").collect();
    assert_eq!(logged.len(), 3, "{lines:?}");
    let largest = logged
        .iter()
        .find(|l| l["bytes_received"] == 512 * 1024)
        .expect("the large connection is logged");
    assert_eq!(largest["bytes_sent"], 512 * 1024);
    assert_eq!(largest["result"], "closed");
    assert_eq!(largest["upstream"], "echo");
    assert_eq!(largest["server"], echo.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_stream_and_an_unknown_name_is_closed() {
    let (a, a_cert) = tls_echo("a.test").await;
    let (b, b_cert) = tls_echo("b.test").await;
    let listen = stream_addr();
    let headland = Headland::start(&format!(
        "[upstreams.a]\nservers = [\"{a}\"]\n\n[upstreams.b]\nservers = [\"{b}\"]\n\n\
         [[streams]]\nlisten = \"{listen}\"\nsni = \"a.test\"\nupstream = \"a\"\n\n\
         [[streams]]\nlisten = \"{listen}\"\nsni = \"b.test\"\nupstream = \"b\"\n"
    ));

    for (name, cert) in [("a.test", &a_cert), ("b.test", &b_cert)] {
        // The backend's own certificate: Headland never terminates the TLS.
        let (mut tls, _, presented) =
            tls_client::handshake(listen, name, std::slice::from_ref(cert), &[])
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&presented, cert);
        tls.write_all(b"ping").await.unwrap();
        let mut answer = vec![0u8; name.len() + 1 + 4];
        tls.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, format!("{name}\nping").as_bytes());
    }

    // No stream for this name: closed without an answer.
    let unknown = tls_client::handshake(listen, "c.test", std::slice::from_ref(&a_cert), &[]).await;
    assert!(unknown.is_err(), "c.test must not get through");
    // Not TLS at all on an address routed by SNI.
    let answer = round_trip(listen, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(answer.is_empty(), "{answer:?}");

    let connections = "headland_stream_connections_total";
    let no_stream = [("stream", ""), ("result", "no_stream")];
    assert_eq!(
        wait_metric(&headland, connections, &no_stream, 1.0).await,
        1.0
    );
    let bad_hello = [("stream", ""), ("result", "bad_client_hello")];
    assert_eq!(
        wait_metric(&headland, connections, &bad_hello, 1.0).await,
        1.0
    );
    let lines = headland.wait_access_log(4);
    assert!(
        lines
            .iter()
            .any(|l| l["sni"] == "c.test" && l["result"] == "no_stream"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_refuses_is_skipped() {
    let refused = refused_addr();
    let echo = echo().await;
    let listen = stream_addr();
    let headland = Headland::start(&format!(
        "[upstreams.pool]\nservers = [\"{refused}\", \"{echo}\"]\n\n\
         [[streams]]\nlisten = \"{listen}\"\nupstream = \"pool\"\n"
    ));
    // Round robin starts every other connection at the refusing server.
    for i in 0..4 {
        let payload = format!("connection {i}");
        assert_eq!(
            round_trip(listen, payload.as_bytes()).await,
            payload.as_bytes()
        );
    }
    let metrics = headland.metrics().await;
    let refused_label = refused.to_string();
    let labels = [("upstream", "pool"), ("server", refused_label.as_str())];
    let errors = metrics.count("headland_upstream_connect_errors_total", &labels);
    assert!(errors >= 1.0, "the refusing server was tried: {errors}");
    let name = listen.to_string();
    let closed = [("stream", name.as_str()), ("result", "closed")];
    assert_eq!(
        wait_metric(&headland, "headland_stream_connections_total", &closed, 4.0).await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_the_upstream_for_new_connections() {
    let (one, _) = closes_first(b"one").await;
    let (two, _) = closes_first(b"two").await;
    let listen = stream_addr();
    let body = |upstream: &str| {
        format!(
            "[upstreams.one]\nservers = [\"{one}\"]\n\n[upstreams.two]\nservers = [\"{two}\"]\n\n\
             [[streams]]\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n"
        )
    };
    let banner = || async {
        let mut stream = TcpStream::connect(listen).await.unwrap();
        let mut banner = Vec::new();
        stream.read_to_end(&mut banner).await.unwrap();
        banner
    };
    let headland = Headland::start(&body("one"));
    assert_eq!(banner().await, b"one");
    headland.write_config(&body("two"));
    let (status, answer) = headland.reload().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["listen_changed"], false);
    assert_eq!(banner().await, b"two");

    // A new stream address needs a new socket: the reload says so.
    let other = stream_addr();
    headland.write_config(&format!(
        "{}\n[[streams]]\nlisten = \"{other}\"\nupstream = \"one\"\n",
        body("two")
    ));
    let (status, answer) = headland.reload().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["listen_changed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_outlives_a_binary_upgrade() {
    let echo = echo().await;
    let listen = stream_addr();
    let mut old = Headland::start(&format!(
        "[upstreams.echo]\nservers = [\"{echo}\"]\n\n[[streams]]\nlisten = \"{listen}\"\nupstream = \"echo\"\n"
    ));
    let mut open = TcpStream::connect(listen).await.unwrap();
    let mut buf = [0u8; 6];
    open.write_all(b"before").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"before");

    let _new = old.spawn_upgrade();
    old.wait_upgrade_socket().await;
    old.signal("QUIT");
    // The listener moved to the new process; the open connection stays with the old one.
    assert_eq!(round_trip(listen, b"new").await, b"new");
    open.write_all(b"after!").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(
        old.wait_exit(Duration::from_secs(30)),
        "the old process exits once its last stream closed"
    );
    assert_eq!(round_trip(listen, b"still").await, b"still");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_connection_is_closed_after_the_idle_timeout() {
    let echo = echo().await;
    let listen = stream_addr();
    let headland = Headland::start(&format!(
        "[upstreams.echo]\nservers = [\"{echo}\"]\n\n[[streams]]\nname = \"quiet\"\nlisten = \"{listen}\"\nupstream = \"echo\"\nidle_timeout = \"1s\"\n"
    ));
    let mut client = TcpStream::connect(listen).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut answer = [0u8; 2];
    client.read_exact(&mut answer).await.unwrap();
    // Then silence: Headland closes the connection (the bound only matters if it never does).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut rest)).await;
    assert!(closed.is_ok_and(|read| read.is_ok()), "closed by Headland");
    let labels = [("stream", "quiet"), ("result", "idle_timeout")];
    let count = wait_metric(&headland, "headland_stream_connections_total", &labels, 1.0).await;
    assert_eq!(count, 1.0);
}
