//! What an attacker or a careless client can do to routing and health, against the real
//! binary: paths that try to slip past a route's rules, HTTP/2 with `strip_prefix`, clients
//! that make the app answer 500 or give up mid-request, a static fallback during an outage,
//! and requests answered before routing still being counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::recorder::{Recorder, RecorderOptions};
use support::{echo_upstream, free_port, get, request, Headland};

/// `/internal/` and `/` on one host, plus a `strip_prefix` route under `/swarm/`.
fn routing_config(
    internal: SocketAddr,
    public: SocketAddr,
    swarm: SocketAddr,
    http: &str,
) -> String {
    format!(
        r#"
[http]
{http}

[upstreams.internal]
servers = ["{internal}"]
[upstreams.public]
servers = ["{public}"]
[upstreams.swarm]
servers = ["{swarm}"]

[[routes]]
host = "app.test"
path = "/internal/"
upstream = "internal"

[[routes]]
host = "app.test"
upstream = "public"

[[routes]]
host = "app.test"
path = "/swarm/"
strip_prefix = true
upstream = "swarm"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_normalised_before_routing_as_nginx_does() {
    let internal = Recorder::start(RecorderOptions::default()).await;
    let public = Recorder::start(RecorderOptions::default()).await;
    let swarm = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&routing_config(internal.addr, public.addr, swarm.addr, ""));
    for path in [
        "/x/../internal/secret",
        "/%69nternal/secret",
        "//internal/secret",
        "/internal/./secret",
    ] {
        assert_eq!(
            get(proxy.http, "app.test", path).await.status,
            200,
            "{path}"
        );
    }
    let targets: Vec<String> = internal.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        vec!["/internal/secret"; 4],
        "the internal route got all four, normalised"
    );
    assert_eq!(public.count(), 0);

    // Climbing above the root is refused; nothing reaches any upstream.
    for path in [
        "/swarm/../../etc/passwd",
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
    ] {
        assert_eq!(
            get(proxy.http, "app.test", path).await.status,
            400,
            "{path}"
        );
    }
    // strip_prefix works on the normalised path; the query is kept.
    for (path, expected) in [
        ("/swarm//etc?x=1", "/etc?x=1"),
        ("/swarm/a/../b", "/b"),
        ("/swarm/", "/"),
    ] {
        assert_eq!(
            get(proxy.http, "app.test", path).await.status,
            200,
            "{path}"
        );
        assert_eq!(swarm.seen().last().unwrap().target, expected, "{path}");
    }
    assert_eq!(swarm.count(), 3);
    assert_eq!(internal.count(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_slashes_are_kept_when_merging_is_off() {
    let internal = Recorder::start(RecorderOptions::default()).await;
    let public = Recorder::start(RecorderOptions::default()).await;
    let swarm = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&routing_config(
        internal.addr,
        public.addr,
        swarm.addr,
        "merge_slashes = false",
    ));
    assert_eq!(get(proxy.http, "app.test", "/swarm//etc").await.status, 200);
    assert_eq!(swarm.seen()[0].target, "//etc");
}

/// Sends one HTTP/2 GET over `io` (h2c or TLS) and returns the status.
async fn h2_get<T>(io: T, authority: &str, path: &str) -> u16
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("https://{authority}{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    response.await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_with_strip_prefix_keeps_the_host_over_h2c_and_https() {
    let swarm = Recorder::start(RecorderOptions::default()).await;
    let dir = support::scratch_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["app.test".to_owned()]).unwrap();
    std::fs::write(dir.join("app.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("app.key"), cert.signing_key.serialize_pem()).unwrap();
    let https: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy = Headland::start_with_listen(
        &format!(
            r#"
[[certificates]]
names = ["app.test"]
cert_file = "{dir}/app.pem"
key_file = "{dir}/app.key"

[upstreams.swarm]
servers = ["{swarm}"]

[[routes]]
host = "app.test"
path = "/swarm/"
strip_prefix = true
upstream = "swarm"
"#,
            dir = dir.display(),
            swarm = swarm.addr
        ),
        &format!("h2c = true\nhttps = [\"{https}\"]"),
    );

    let tcp = TcpStream::connect(proxy.http).await.unwrap();
    assert_eq!(h2_get(tcp, "app.test", "/swarm/chat?room=1").await, 200);
    // A body over HTTP/2 is buffered and then forwarded whole.
    let tcp = TcpStream::connect(proxy.http).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let post = http::Request::post("http://app.test/swarm/upload")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(post, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"hello over h2"), true)
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let roots = [cert.cert.der().clone()];
    let (tls, alpn, _) = support::tls_client::handshake(https, "app.test", &roots, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2_get(tls, "app.test", "/swarm/chat?room=2").await, 200);

    let mut seen = swarm.seen();
    assert_eq!(seen.len(), 3);
    let upload = seen.remove(1);
    assert_eq!(upload.target, "/upload");
    assert_eq!(upload.body, b"hello over h2");
    for (request, room) in seen.iter().zip(["1", "2"]) {
        assert_eq!(request.target, format!("/chat?room={room}"));
        assert_eq!(request.header("host"), Some("app.test"));
        assert_eq!(request.header("x-forwarded-host"), Some("app.test"));
    }
}

fn pool_of_three(servers: &[SocketAddr; 3], passive: &str) -> String {
    format!(
        r#"
[upstreams.app]
servers = ["{}", "{}", "{}"]
passive = {{ failures = 2, eject = "30s"{passive} }}

[[routes]]
host = "app.test"
upstream = "app"
"#,
        servers[0], servers[1], servers[2]
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_of_500_that_a_client_asks_for_eject_no_server() {
    let servers = [
        echo_upstream("a").await,
        echo_upstream("b").await,
        echo_upstream("c").await,
    ];
    let proxy = Headland::start(&pool_of_three(&servers, ""));
    for _ in 0..15 {
        let response = get(proxy.http, "app.test", "/broken?status=500").await;
        assert_eq!(response.status, 500);
    }
    let metrics = proxy.metrics().await;
    for server in &servers {
        let labels = [("upstream", "app"), ("server", &*server.to_string())];
        assert_eq!(
            metrics.count("headland_upstream_ejections_total", &labels),
            0.0
        );
        assert_eq!(metrics.value("headland_upstream_up", &labels), Some(1.0));
    }

    // An operator who wants 5xx to count can say so.
    let proxy = Headland::start(&pool_of_three(&servers, ", on_5xx = true"));
    for _ in 0..15 {
        get(proxy.http, "app.test", "/broken?status=500").await;
    }
    let metrics = proxy.metrics().await;
    let ejected: f64 = servers
        .iter()
        .map(|s| {
            let labels = [("upstream", "app"), ("server", &*s.to_string())];
            metrics.count("headland_upstream_ejections_total", &labels)
        })
        .sum();
    assert!(ejected >= 1.0, "on_5xx = true ejects");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_the_client_gives_up_on_reaches_the_upstream_once() {
    let slow = Recorder::start(RecorderOptions {
        delay: Duration::from_secs(3),
        ..RecorderOptions::default()
    })
    .await;
    let others = [
        Recorder::start(RecorderOptions::default()).await,
        Recorder::start(RecorderOptions::default()).await,
    ];
    // Round robin starts at the first server; the slow one is first.
    let proxy = Headland::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", \"{}\", \"{}\"]\nretries = 2\n\n[[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n",
        slow.addr, others[0].addr, others[1].addr
    ));
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET /report HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    slow.wait_for(1).await;
    drop(stream);
    // The access-log line is written when Headland has finished with the request.
    let lines = proxy.wait_access_log(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let total = slow.count() + others[0].count() + others[1].count();
    assert_eq!(total, 1, "the abandoned GET was not sent to another server");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_fallback_answers_503_with_retry_after_and_is_counted() {
    let dir = support::scratch_dir();
    std::fs::write(dir.join("index.html"), "<h1>Back soon</h1>").unwrap();
    let dead = support::refused_addr();
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{dead}"]
health = {{ path = "/health", interval = "1s", start = "down" }}

[[routes]]
host = "app.test"
upstream = "app"
fallback = {{ static_dir = "{dir}" }}
"#,
        dir = dir.display()
    ));
    let page = get(proxy.http, "app.test", "/api/orders").await;
    assert_eq!(page.status, 503);
    assert_eq!(page.header("retry-after"), Some("1"));
    assert_eq!(page.text(), "<h1>Back soon</h1>");
    // Only GET and HEAD get the page; a POST is told the service is unavailable.
    let post = "POST /api/orders HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let post = request(proxy.http, post).await;
    assert_eq!(post.status, 503);
    assert_ne!(post.text(), "<h1>Back soon</h1>");
    let metrics = proxy.metrics().await;
    let labels = [("upstream", "app"), ("code", "503")];
    assert_eq!(metrics.count("headland_http_requests_total", &labels), 2.0);
    let labels = [("code", "200")];
    assert_eq!(metrics.count("headland_http_requests_total", &labels), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_answered_before_routing_are_counted() {
    let app = echo_upstream("app").await;
    let proxy = Headland::start(&format!(
        "[upstreams.app]\nservers = [\"{app}\"]\n\n[[routes]]\nhost = \"app.test\"\nupstream = \"app\"\n"
    ));
    assert_eq!(get(proxy.http, "nowhere.test", "/").await.status, 404);
    let bad_host = "GET / HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n";
    assert_eq!(request(proxy.http, bad_host).await.status, 400);
    let metrics = proxy.metrics().await;
    let count = |code: &str| {
        metrics.count(
            "headland_http_requests_total",
            &[("route", ""), ("code", code)],
        )
    };
    assert_eq!(count("404"), 1.0);
    assert_eq!(count("400"), 1.0);
}
