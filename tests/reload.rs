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

/// Runs `headland reload --config FILE` against the instance's configuration file.
fn headland_reload(proxy: &Headland) -> std::process::Output {
    std::process::Command::new(support::binary())
        .args(["reload", "--config"])
        .arg(proxy.config_path())
        .output()
        .unwrap()
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
    // Wait until the reload was rejected (not a fixed sleep that may end before the signal
    // is handled), then check that nothing moved.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .metrics()
        .await
        .count("headland_config_reloads_total", &[("result", "error")])
        < 1.0
    {
        assert!(Instant::now() < deadline, "the invalid file was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let response = get(proxy.http, "app.test", "/").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.served_by(), "b");
    }
    assert!(
        proxy.is_running(),
        "an invalid reload must not stop the process"
    );

    proxy.write_config(&routes_to("a", a, b));
    proxy.signal("HUP");
    wait_served_by(&proxy, "a").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_reloads_under_load_drop_no_request() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let proxy = Headland::start(&routes_to("a", a, b));
    let http = proxy.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            let answered = std::sync::Arc::clone(&answered);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let response = get(http, "app.test", "/").await;
                    if response.status == 200 {
                        ok += 1;
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        failed.push(response.status);
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let mut expected = "a";
    for round in 0..50 {
        if round % 2 == 0 {
            expected = if expected == "a" { "b" } else { "a" };
            proxy.write_config(&routes_to(expected, a, b));
            let (status, body) = proxy.reload().await;
            assert_eq!(status, 200, "round {round}: {body}");
            assert_eq!(body["listen_changed"], false);
        } else {
            proxy.write_config(&routes_to("kongg", a, b));
            let (status, body) = proxy.reload().await;
            assert_eq!(status, 422, "round {round}: {body}");
            let errors = body["errors"].as_str().unwrap();
            assert!(
                errors.contains("headland.toml:") && errors.contains("unknown upstream \"kongg\""),
                "located error expected: {errors}"
            );
        }
        // Visible right after the reload returns: no waiting, no polling.
        let response = get(http, "app.test", "/").await;
        assert_eq!(response.served_by(), expected, "round {round}");
        // The clients' requests interleave with the reloads however slow the machine: each
        // round waits for three more answers (bounded), rather than hoping enough came.
        let target = answered.load(std::sync::atomic::Ordering::SeqCst) + 3;
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered.load(std::sync::atomic::Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: the clients stalled"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "the loop ran ({total} requests)");

    let config = get(proxy.admin, "admin", "/config").await.json();
    assert_eq!(
        config["generation"], 26,
        "25 accepted reloads after the first load"
    );
    assert!(config["last_error"]["errors"]
        .as_str()
        .unwrap()
        .contains("kongg"));
    assert_eq!(config["sha256"].as_str().unwrap().len(), 64);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.count("headland_config_reloads_total", &[("result", "ok")]),
        25.0
    );
    assert_eq!(
        metrics.count("headland_config_reloads_total", &[("result", "error")]),
        25.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_requires_the_admin_token() {
    let a = echo_upstream("a").await;
    let proxy = Headland::start(&routes_to("a", a, a));
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        let raw = format!("POST /reload HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!(support::request(proxy.admin, &raw).await.status, 401);
    }
    let raw = "GET /reload HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    assert_eq!(support::request(proxy.admin, raw).await.status, 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn headland_reload_command_reports_the_outcome() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let proxy = Headland::start(&routes_to("a", a, b));
    proxy.write_config(&routes_to("b", a, b));
    let output = headland_reload(&proxy);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"generation\":2"));
    assert_eq!(get(proxy.http, "app.test", "/").await.served_by(), "b");

    proxy.write_config(&routes_to("kongg", a, b));
    let output = headland_reload(&proxy);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown upstream \"kongg\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_file_reloads_itself_even_when_replaced_by_rename() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let proxy = Headland::start_with(&routes_to("a", a, b), "", "watch_config = true");
    assert_eq!(get(proxy.http, "app.test", "/").await.served_by(), "a");
    // write_config writes a temporary file and renames it over the old one.
    proxy.write_config(&routes_to("b", a, b));
    wait_served_by(&proxy, "b").await;
    proxy.write_config(&routes_to("a", a, b));
    wait_served_by(&proxy, "a").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn headland_reload_without_a_token_signals_the_pid_file() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let proxy = Headland::start(&routes_to("a", a, b));
    // The same file without the admin token: the command must fall back to SIGHUP.
    let text = std::fs::read_to_string(proxy.config_path()).unwrap();
    let without_token = text.replace("admin_token_file = \"admin.token\"\n", "");
    assert_ne!(text, without_token);
    std::fs::write(
        proxy.config_path(),
        without_token.replace("upstream = \"a\"", "upstream = \"b\""),
    )
    .unwrap();
    let output = headland_reload(&proxy);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("sent SIGHUP to process {}", proxy.pid())),
        "{stdout}"
    );
    wait_served_by(&proxy, "b").await;
}
