//! Pools against real loopback servers: balancing policies, failover to the next server,
//! 502 and 504 answers, and the static placeholder when a whole pool is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;

use support::servers::{CountingRelay, WatchedUpstream};
use support::{echo_upstream, get, refused_addr, request, scratch_dir, Headland};

fn pool_config(name: &str, servers: &[std::net::SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[upstreams.{name}]\nservers = [{}]\n{extra}\n\n[[routes]]\nhost = \"{name}.test\"\nupstream = \"{name}\"\n",
        list.join(", ")
    )
}

async fn count_servers(proxy: &Headland, host: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let response = get(proxy.http, host, "/").await;
        assert_eq!(response.status, 200);
        *counts.entry(response.served_by()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly_over_three_servers() {
    let servers = [
        echo_upstream("a").await,
        echo_upstream("b").await,
        echo_upstream("c").await,
    ];
    let proxy = Headland::start(&pool_config("rr", &servers, "balance = \"round_robin\""));
    let counts = count_servers(&proxy, "rr.test", 300).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 100), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn least_conn_prefers_the_idle_server() {
    // Relays show when the proxy has connected to a server, so the test knows the slow
    // request is in flight instead of sleeping and hoping it is.
    let relays = [
        CountingRelay::start(echo_upstream("a").await).await,
        CountingRelay::start(echo_upstream("b").await).await,
    ];
    let servers = [relays[0].addr, relays[1].addr];
    let proxy = Headland::start(&pool_config("lc", &servers, "balance = \"least_conn\""));
    let http = proxy.http;
    // Occupy one server with a slow request, then send quick ones while it is in flight.
    // The proxy counts a server busy when it picks it, before connecting: once a relay has
    // a connection, that server is busy. The slow request outlasts any quick ones (it is
    // dropped at the end, not awaited), so the order of the two is not left to timing.
    let slow = tokio::spawn(async move { get(http, "lc.test", "/?delay_ms=60000").await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while relays.iter().all(|r| r.accepted() == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never reached a server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let busy = if relays[0].accepted() > 0 { "a" } else { "b" };
    let quick = count_servers(&proxy, "lc.test", 10).await;
    slow.abort();
    assert_eq!(
        quick.len(),
        1,
        "all quick requests on one server: {quick:?}"
    );
    assert!(
        !quick.contains_key(busy),
        "the busy server {busy} got none: {quick:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_keeps_a_key_on_one_server() {
    let servers = [
        echo_upstream("a").await,
        echo_upstream("b").await,
        echo_upstream("c").await,
    ];
    let proxy = Headland::start(&pool_config(
        "ch",
        &servers,
        "balance = \"consistent_hash\"\nhash_header = \"X-User\"",
    ));
    let mut seen = HashMap::new();
    for user in 0..30 {
        for _ in 0..3 {
            let raw = format!("GET / HTTP/1.1\r\nHost: ch.test\r\nX-User: user-{user}\r\nConnection: close\r\n\r\n");
            let server = request(proxy.http, &raw).await.served_by();
            let first = seen.entry(user).or_insert_with(|| server.clone());
            assert_eq!(*first, server, "user-{user} moved");
        }
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert_eq!(distinct.len(), 3, "keys spread over the pool: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_gives_502_and_failover_hides_a_dead_server() {
    let alive = echo_upstream("alive").await;
    let dead = refused_addr();
    let proxy = Headland::start(&format!(
        "{}\n{}",
        pool_config("down", &[refused_addr()], ""),
        pool_config("mixed", &[dead, alive], "")
    ));
    let response = get(proxy.http, "down.test", "/").await;
    assert_eq!(response.status, 502);
    assert!(
        response.text().starts_with("502 Bad Gateway"),
        "{}",
        response.text()
    );

    // Every request succeeds although half of the pool's picks refuse the connection.
    let counts = count_servers(&proxy, "mixed.test", 20).await;
    assert_eq!(counts.get("alive"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_upstream_gives_504() {
    let slow = echo_upstream("slow").await;
    let proxy = Headland::start(&pool_config("slow", &[slow], "read_timeout = \"300ms\""));
    let response = get(proxy.http, "slow.test", "/?delay_ms=3000").await;
    assert_eq!(response.status, 504);
    assert!(
        response.text().starts_with("504 Gateway Timeout"),
        "{}",
        response.text()
    );
    // A quick answer on the same pool still works.
    assert_eq!(get(proxy.http, "slow.test", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn static_fallback_answers_when_the_whole_pool_is_down() {
    let placeholder = scratch_dir();
    std::fs::write(placeholder.join("index.html"), "<h1>back soon</h1>").unwrap();
    std::fs::create_dir_all(placeholder.join("css")).unwrap();
    std::fs::write(placeholder.join("css/site.css"), "h1{}").unwrap();
    let proxy = Headland::start(&format!(
        "{}fallback = {{ static_dir = \"{}\" }}\n",
        pool_config("admin", &[refused_addr(), refused_addr()], ""),
        placeholder.display()
    ));
    let page = get(proxy.http, "admin.test", "/dashboard/settings").await;
    // A maintenance page says the service is unavailable; its stylesheet is an ordinary file.
    assert_eq!(page.status, 503);
    assert_eq!(page.header("retry-after"), Some("5"));
    assert_eq!(page.text(), "<h1>back soon</h1>");
    assert_eq!(page.header("x-headland-fallback"), Some("static"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let css = get(proxy.http, "admin.test", "/css/site.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.text(), "h1{}");
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    // No way out of the directory: a path above the root is refused before routing, and
    // an encoded separator is not one.
    let escape = get(proxy.http, "admin.test", "/../../etc/passwd").await;
    assert_eq!(escape.status, 400);
    let escape = get(proxy.http, "admin.test", "/x%2F..%2F..%2Fetc/passwd").await;
    assert_eq!(escape.text(), "<h1>back soon</h1>");
    std::fs::remove_dir_all(placeholder).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused_across_client_connections() {
    let app = echo_upstream("app").await;
    let proxy = Headland::start(&pool_config("reuse", &[app], ""));
    let mut peers = std::collections::HashSet::new();
    for _ in 0..20 {
        // A new client connection each time; the proxy's upstream side should stay open.
        let raw = "GET / HTTP/1.1\r\nHost: reuse.test\r\nConnection: close\r\n\r\n";
        let response = request(proxy.http, raw).await;
        assert_eq!(response.status, 200);
        peers.insert(response.json()["peer"].as_str().unwrap().to_owned());
    }
    // Two worker threads may each hold a connection; 20 fresh ones would mean no reuse.
    assert!(
        peers.len() <= 2,
        "{} upstream connections for 20 requests",
        peers.len()
    );
}

// Pooled upstream connections have no watcher task each; a sweeper closes the idle ones.
// Without it both connections below would stay open for as long as the proxy runs.
#[tokio::test(flavor = "multi_thread")]
async fn idle_upstream_connections_are_closed_after_keepalive_timeout() {
    let mut app = WatchedUpstream::start().await;
    let proxy = Headland::start(&pool_config(
        "idle",
        &[app.addr],
        "keepalive_timeout = \"1s\"",
    ));
    assert_eq!(get(proxy.http, "idle.test", "/").await.status, 200);
    assert!(
        app.proxy_closed_one(std::time::Duration::from_secs(20))
            .await,
        "the pooled connection was still open 20 s after a 1 s keepalive_timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_closed_by_the_app_are_released_and_not_reused() {
    let mut app = WatchedUpstream::start().await;
    // The default keepalive_timeout (60 s) outlasts the wait below: only noticing the app's
    // close can release the connection in time.
    let proxy = Headland::start(&pool_config("hangup", &[app.addr], ""));
    assert_eq!(get(proxy.http, "hangup.test", "/").await.status, 200);
    // The answer has reached the client, so the connection is in the proxy's pool by now.
    app.hang_up();
    assert!(
        app.proxy_closed_one(std::time::Duration::from_secs(20))
            .await,
        "the proxy still held the connection the app had closed"
    );
    // The next request goes over a new connection, not the closed one.
    assert_eq!(get(proxy.http, "hangup.test", "/").await.status, 200);
}
