//! SIGHUP reload: a valid file changes routing without a restart; an invalid one changes
//! nothing and the running configuration keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::{echo_upstream, get, Headland};

fn routes_to(upstream: &str, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    format!(
        "[upstreams.a]\nservers = [\"{a}\"]\n[upstreams.b]\nservers = [\"{b}\"]\n\n[[routes]]\nhost = \"app.test\"\nupstream = \"{upstream}\"\n"
    )
}

/// Polls until `app.test` is served by `expected`; a bounded loop, not a timing assertion.
async fn wait_served_by(proxy: &Headland, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = get(proxy.http, "app.test", "/").await;
        assert_eq!(response.status, 200);
        if response.served_by() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still served by {}",
            response.served_by()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_valid_file_and_keeps_serving_through_an_invalid_one() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let mut proxy = Headland::start(&routes_to("a", a, b));
    assert_eq!(get(proxy.http, "app.test", "/").await.served_by(), "a");

    proxy.write_config(&routes_to("b", a, b));
    proxy.signal("HUP");
    wait_served_by(&proxy, "b").await;

    proxy.write_config(&routes_to("kongg", a, b));
    proxy.signal("HUP");
    // Give the rejected reload every chance to (wrongly) take effect, then check nothing moved.
    for _ in 0..20 {
        let response = get(proxy.http, "app.test", "/").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.served_by(), "b");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        proxy.is_running(),
        "an invalid reload must not stop the process"
    );

    proxy.write_config(&routes_to("a", a, b));
    proxy.signal("HUP");
    wait_served_by(&proxy, "a").await;
}
