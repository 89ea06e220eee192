//! Per-client-IP rate limits through the real binary: the 429 and its headers, clients
//! limited independently, a spoofed header from an untrusted peer ignored, a trusted CDN's
//! header honoured. (The 10/s-with-burst-20 arithmetic is tested on governor's fake clock
//! in `src/ratelimit.rs`; here the refill is slow enough not to matter.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::IpAddr;

use support::{echo_upstream, request, request_from, Headland};

async fn limited_proxy(trusted: &str, header: &str) -> Headland {
    let app = echo_upstream("app").await;
    Headland::start(&format!(
        r#"
[client_ip]
trusted_proxies = [{trusted}]
header = "{header}"

[rate_limits.api]
rate = "1/min"
burst = 5
allow = ["127.0.0.9"]

[upstreams.app]
servers = ["{app}"]

[[routes]]
host = "api.test"
upstream = "app"
rate_limit = "api"

[[routes]]
host = "free.test"
upstream = "app"
"#
    ))
}

fn raw(host: &str, extra: &str) -> String {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_burst_passes_then_429_with_retry_after_and_ratelimit_headers() {
    let proxy = limited_proxy("", "X-Forwarded-For").await;
    for remaining in (0..5).rev() {
        let response = request(proxy.http, &raw("api.test", "")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("ratelimit-limit"), Some("5"));
        assert_eq!(
            response.header("ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let response = request(proxy.http, &raw("api.test", "")).await;
    assert_eq!(response.status, 429);
    assert!(
        response.text().starts_with("429 Too Many Requests"),
        "{}",
        response.text()
    );
    assert_eq!(response.header("ratelimit-limit"), Some("5"));
    assert_eq!(response.header("ratelimit-remaining"), Some("0"));
    // One request is earned back per minute: come back in at most 60 s, full in at most 300 s.
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (50..=60).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let reset: u64 = response.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!((240..=300).contains(&reset), "RateLimit-Reset {reset}");
    // Other routes are not limited.
    for _ in 0..10 {
        assert_eq!(request(proxy.http, &raw("free.test", "")).await.status, 200);
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.value(
            "headland_ratelimit_rejected_total",
            &[("route", "api.test/")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_client_ips_are_limited_independently_and_the_allow_list_is_not_limited() {
    let proxy = limited_proxy("", "X-Forwarded-For").await;
    for source in ["127.0.0.2", "127.0.0.3"] {
        let source: IpAddr = source.parse().unwrap();
        let statuses: Vec<u16> = futures_util::future::join_all((0..7).map(|_| async {
            request_from(source, proxy.http, &raw("api.test", ""))
                .await
                .status
        }))
        .await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            5,
            "{source}: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            2,
            "{source}: {statuses:?}"
        );
    }
    let office: IpAddr = "127.0.0.9".parse().unwrap();
    for _ in 0..10 {
        assert_eq!(
            request_from(office, proxy.http, &raw("api.test", ""))
                .await
                .status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_header_from_an_untrusted_peer_does_not_change_the_key() {
    let proxy = limited_proxy("\"10.0.0.0/8\"", "X-Forwarded-For").await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let spoof = format!("X-Forwarded-For: 198.51.100.{i}\r\n");
        statuses.push(request(proxy.http, &raw("api.test", &spoof)).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_cdn_header_gives_each_real_client_its_own_limit() {
    let proxy = limited_proxy("\"127.0.0.0/8\"", "CF-Connecting-IP").await;
    for client in ["203.0.113.10", "203.0.113.11", "2001:db8:7::1"] {
        let header = format!("CF-Connecting-IP: {client}\r\n");
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(request(proxy.http, &raw("api.test", &header)).await.status);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "{client}");
    }
    // Another address in the same IPv6 /64 is the same client.
    let header = "CF-Connecting-IP: 2001:db8:7::ffff\r\n";
    assert_eq!(
        request(proxy.http, &raw("api.test", header)).await.status,
        429
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_counters_of_an_unchanged_limit() {
    let proxy = limited_proxy("", "X-Forwarded-For").await;
    for _ in 0..5 {
        assert_eq!(request(proxy.http, &raw("api.test", "")).await.status, 200);
    }
    let text = std::fs::read_to_string(proxy.config_path()).unwrap();
    std::fs::write(
        proxy.config_path(),
        text + "\n[[routes]]\nhost = \"new.test\"\nupstream = \"app\"\n",
    )
    .unwrap();
    let (status, _) = proxy.reload().await;
    assert_eq!(status, 200);
    assert_eq!(
        request(proxy.http, &raw("api.test", "")).await.status,
        429,
        "the client's spent burst survived the reload"
    );
}
