//! Routing through the real binary: exact, wildcard and catch-all hosts, longest path
//! prefix, strip_prefix, redirects, HTTP/2 `:authority`, and what unroutable or malformed
//! requests get.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{echo_upstream, get, request, Headland};

async fn routed_proxy() -> Headland {
    let main = echo_upstream("main").await;
    let wild = echo_upstream("wild").await;
    let swarm = echo_upstream("swarm").await;
    let api = echo_upstream("api").await;
    let any = echo_upstream("any").await;
    Headland::start_with_listen(
        &format!(
            r#"
[upstreams.main]
servers = ["{main}"]
[upstreams.wild]
servers = ["{wild}"]
[upstreams.swarm]
servers = ["{swarm}"]
[upstreams.api]
servers = ["{api}"]
[upstreams.any]
servers = ["{any}"]

[[routes]]
host = "example.com"
upstream = "main"

[[routes]]
host = "example.com"
path = "/swarm/"
strip_prefix = true
upstream = "swarm"

[[routes]]
host = "example.com"
path = "/swarm/raw/"
upstream = "api"

[[routes]]
host = "*.example.com"
upstream = "wild"

[[routes]]
host = "api.example.com"
path = "/v1/"
upstream = "api"

[[routes]]
host = "*.shop.test"
upstream = "any"

[[routes]]
host = "www.example.com"
redirect = {{ to = "https://example.com", code = 308 }}
"#
        ),
        "h2c = true",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_and_paths_pick_the_right_upstream() {
    let proxy = routed_proxy().await;
    let cases = [
        ("example.com", "/", "main"),
        ("EXAMPLE.com:8080", "/index.html", "main"),
        ("example.com", "/swarm/chat", "swarm"),
        ("example.com", "/swarm/raw/x", "api"),
        ("example.com", "/swarmy", "main"),
        ("cdn.example.com", "/", "wild"),
        ("a.b.example.com", "/", "wild"),
        ("api.example.com", "/v1/users", "api"),
        // The exact host has no route for this path, so the wildcard answers.
        ("api.example.com", "/health", "wild"),
        ("x.shop.test", "/", "any"),
    ];
    for (host, path, expected) in cases {
        let response = get(proxy.http, host, path).await;
        assert_eq!(response.status, 200, "{host}{path}: {}", response.text());
        assert_eq!(response.served_by(), expected, "{host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_prefix_removes_the_route_path_and_keeps_the_query() {
    let proxy = routed_proxy().await;
    let echo = get(proxy.http, "example.com", "/swarm/rooms/7?token=abc")
        .await
        .json();
    assert_eq!(echo["target"], "/rooms/7?token=abc");
    let echo = get(proxy.http, "example.com", "/swarm/").await.json();
    assert_eq!(echo["target"], "/");
    // Without strip_prefix the path goes through untouched.
    let echo = get(proxy.http, "example.com", "/swarm/raw/x?y=1")
        .await
        .json();
    assert_eq!(echo["target"], "/swarm/raw/x?y=1");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_gets_404_and_malformed_host_gets_400() {
    let proxy = routed_proxy().await;
    let response = get(proxy.http, "unknown.org", "/").await;
    assert_eq!(response.status, 404);
    assert!(response.text().contains("no route"), "{}", response.text());
    // A wildcard never matches its own apex.
    assert_eq!(get(proxy.http, "shop.test", "/").await.status, 404);

    let too_long = "a.".repeat(140) + "com";
    for bad in [
        "exa mple.com",
        "example.com:port",
        "ex\u{1}ample.com",
        "a..b",
        too_long.as_str(),
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n");
        let response = request(proxy.http, &raw).await;
        assert_eq!(
            response.status, 400,
            "Host {bad:?} gave {}",
            response.status
        );
    }
    let response = request(proxy.http, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 400, "missing Host");
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_route_answers_without_an_upstream() {
    let proxy = routed_proxy().await;
    let response = get(proxy.http, "www.example.com", "/pricing?plan=pro").await;
    assert_eq!(response.status, 308);
    assert_eq!(
        response.header("location"),
        Some("https://example.com/pricing?plan=pro")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_authority_is_routed_like_host() {
    let proxy = routed_proxy().await;
    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    for (authority, expected) in [("cdn.example.com", "wild"), ("API.example.com:443", "api")] {
        let request = http::Request::get(format!("http://{authority}/v1/x"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let served_by = response.headers()["x-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(served_by, expected, "{authority}");
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let echo: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        // The HTTP/1.1 upstream gets a Host header made from :authority.
        assert_eq!(echo["headers"]["host"], authority);
        client = client.ready().await.unwrap();
    }
}
