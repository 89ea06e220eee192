//! What upstream apps receive: Host preserved, X-Real-IP, X-Forwarded-*, X-Request-Id;
//! client IP from a CDN header only when the peer is a trusted proxy; bodies streamed both
//! ways; pipelined requests answered in order; WebSocket upgrades end to end; one JSON
//! access-log line per request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use futures_util::{SinkExt, StreamExt};
use headland::demo::echo::kib_pattern;
use support::{echo_upstream, get, request, request_bytes, Headland};
use tokio_tungstenite::tungstenite::Message;

async fn proxy_with_trusted(trusted: &str, header: &str) -> Headland {
    let app = echo_upstream("app").await;
    Headland::start(&format!(
        r#"
[client_ip]
trusted_proxies = [{trusted}]
header = "{header}"

[upstreams.app]
servers = ["{app}"]

[[routes]]
host = "app.example.com"
upstream = "app"

[[routes]]
host = "small.example.com"
upstream = "app"
max_body_size = "1KiB"

[[routes]]
host = "small.example.com"
path = "/ws/"
upstream = "app"
max_body_size = "1KiB"

[[routes]]
host = "app.example.com"
path = "/ws/"
strip_prefix = true
upstream = "app"
"#
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_receives_the_headers_apps_expect() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    let raw = "GET /a HTTP/1.1\r\nHost: App.Example.com:8443\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let response = request(proxy.http, raw).await;
    assert_eq!(response.status, 200);
    let echo = response.json();
    let headers = &echo["headers"];
    assert_eq!(
        headers["host"], "App.Example.com:8443",
        "Host passes unchanged"
    );
    assert_eq!(
        headers["x-real-ip"], "127.0.0.1",
        "spoofed XFF ignored for the client IP"
    );
    assert_eq!(
        headers["x-forwarded-for"], "6.6.6.6, 127.0.0.1",
        "our hop appended"
    );
    assert_eq!(
        headers["x-forwarded-proto"], "http",
        "untrusted peer cannot claim https"
    );
    assert_eq!(headers["x-forwarded-host"], "App.Example.com:8443");
    let id = headers["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "generated request id: {id}");
    assert_eq!(
        response.header("x-request-id"),
        Some(id),
        "same id returned to the client"
    );

    let raw = "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n";
    let echo = request(proxy.http, raw).await.json();
    assert_eq!(
        echo["headers"]["x-request-id"], "trace-42",
        "client request id kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_header_is_believed_only_from_trusted_proxies() {
    let raw = "GET / HTTP/1.1\r\nHost: app.example.com\r\nCF-Connecting-IP: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";

    let trusted = proxy_with_trusted("\"127.0.0.0/8\"", "CF-Connecting-IP").await;
    let echo = request(trusted.http, raw).await.json();
    assert_eq!(echo["headers"]["x-real-ip"], "203.0.113.7");
    assert_eq!(
        echo["headers"]["x-forwarded-proto"], "https",
        "CDN's scheme kept"
    );
    let log = trusted.wait_access_log(1);
    assert_eq!(log.last().unwrap()["client_ip"], "203.0.113.7");

    let untrusted = proxy_with_trusted("\"173.245.48.0/20\"", "CF-Connecting-IP").await;
    let echo = request(untrusted.http, raw).await.json();
    assert_eq!(echo["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_both_ways() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    // 8 MiB upload in 64 KiB chunks, chunked encoding.
    let mut raw = b"POST /upload HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let chunk = vec![b'u'; 64 * 1024];
    for _ in 0..128 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let echo = request_bytes(proxy.http, &raw).await.json();
    assert_eq!(echo["body_bytes"], 8 * 1024 * 1024);

    // Both framings, every KiB checked: a chunked answer in 1 KiB chunks, and a sized one
    // that the proxy reads in chunks large enough to be written on without being copied.
    for (query, kib) in [("stream_kib", 16384), ("body_kib", 16384)] {
        let response = get(
            proxy.http,
            "app.example.com",
            &format!("/big?{query}={kib}"),
        )
        .await;
        assert_eq!(response.status, 200, "{query}");
        assert_eq!(response.body.len(), kib * 1024, "{query}");
        let wrong = response
            .body
            .chunks(1024)
            .zip(0..)
            .position(|(got, i)| got != kib_pattern(i));
        assert_eq!(wrong, None, "{query}: the first KiB out of place");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_all_answered_in_order() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    // Four requests in one write: one Headland answers itself (no route), one with a body,
    // the last closing the connection.
    let raw = "GET /one HTTP/1.1\r\nHost: app.example.com\r\n\r\n\
               GET /nowhere HTTP/1.1\r\nHost: unknown.example.org\r\n\r\n\
               POST /two HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello\
               GET /three HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes);
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("answers within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle}: {text}"))
    };
    let order = [
        position("\"target\":\"/one\""),
        position("HTTP/1.1 404"),
        position("\"target\":\"/two\""),
        position("\"target\":\"/three\""),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains("\"body_bytes\":5"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    let body = "x".repeat(2048);
    let raw = format!("POST / HTTP/1.1\r\nHost: small.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    assert_eq!(request(proxy.http, &raw).await.status, 413);

    let raw = format!("POST / HTTP/1.1\r\nHost: small.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{body}\r\n0\r\n\r\n");
    assert_eq!(request(proxy.http, &raw).await.status, 413);

    let raw = "POST / HTTP/1.1\r\nHost: small.example.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(request(proxy.http, raw).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_the_proxy() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://app.example.com/ws/chat", tcp)
            .await
            .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    for i in 0..20 {
        let text = format!("hello {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(text));
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_writes_one_json_access_log_line() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    get(proxy.http, "app.example.com", "/ws/x?secret=1").await;
    get(proxy.http, "nowhere.test", "/").await;
    let lines = proxy.wait_access_log(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["host"], "app.example.com");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/ws/x", "client's path, without query");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "app.example.com/ws/");
    assert_eq!(ok["upstream"], "app");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert!(ok["bytes"].as_u64().unwrap() > 0);
    assert!(ok["duration_ms"].as_f64().is_some());
    assert!(ok["server"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(ok["request_id"].as_str().unwrap().len(), 32);
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    let missed = &lines[1];
    assert_eq!(missed["status"], 404);
    assert!(missed["route"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_traffic_is_not_limited_by_the_request_body_size() {
    let proxy = proxy_with_trusted("", "X-Forwarded-For").await;
    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("ws://small.example.com/ws/", tcp)
        .await
        .expect("websocket handshake through the proxy");
    // 64 KiB in total through a route whose request bodies are capped at 1 KiB.
    let message = Message::binary(vec![7u8; 512]);
    for _ in 0..128 {
        socket.send(message.clone()).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), message);
    }
}
