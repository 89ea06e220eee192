//! The admin API an operator runs a server with: `/status`, draining a server by hand, test
//! webhooks, and the token every change needs; against the real binary, real upstreams and
//! a real webhook receiver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::servers::{HeldUpstream, WebhookReceiver};
use support::{echo_upstream, get, request, scratch_dir, Headland, Response, TOKEN};

/// `POST path` on the admin API with `token` (none: no `Authorization`).
async fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    request(admin, &raw).await
}

async fn status(headland: &Headland) -> Value {
    let response = get(headland.admin, "admin", "/status").await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// The `/status` entry of `server` in `pool`.
fn server_status(status: &Value, pool: &str, server: &str) -> Value {
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .and_then(|p| {
            p["servers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["server"] == server)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no {pool}/{server} in {status}"))
}

fn pool_config(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"
[upstreams.app]
servers = ["{a}", "{b}"]

[[routes]]
host = "app.test"
upstream = "app"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_needs_the_token() {
    let b = echo_upstream("b").await;
    let a = echo_upstream("a").await;
    let headland = Headland::start(&pool_config(a, b));
    let drain = format!("/upstreams/app/{a}/drain");
    for path in [
        drain.as_str(),
        "/webhooks/test",
        "/reload",
        "/certs/renew?name=x",
    ] {
        for token in [None, Some("wrong-token"), Some("")] {
            let response = post(headland.admin, path, token).await;
            assert_eq!(
                response.status,
                401,
                "{path} with {token:?}: {}",
                response.text()
            );
            assert!(response.header("www-authenticate").is_some());
        }
    }
    // Nothing was drained by the refused calls.
    let status = status(&headland).await;
    assert_eq!(
        server_status(&status, "app", &a.to_string())["drained"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_server_takes_no_new_requests_while_its_request_in_flight_finishes() {
    let held = HeldUpstream::start("a").await;
    let b = echo_upstream("b").await;
    let headland = Headland::start(&pool_config(held.addr, b));
    let admin = headland.admin;

    // Round robin: within two requests one reaches "a" and is held there.
    let proxy = headland.http;
    let in_flight = tokio::spawn(async move { get(proxy, "app.test", "/slow").await });
    let second = tokio::spawn(async move { get(proxy, "app.test", "/").await });
    held.wait_arrivals(1).await;

    let response = post(
        admin,
        &format!("/upstreams/app/{}/drain", held.addr),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["drained"], true);
    assert_eq!(body["in_flight"], 1, "{body}");
    let entry = server_status(&status(&headland).await, "app", &held.addr.to_string());
    assert_eq!(
        (entry["drained"].clone(), entry["in_flight"].clone()),
        (true.into(), 1.into())
    );

    for _ in 0..20 {
        let response = get(proxy, "app.test", "/").await;
        assert_eq!(
            (response.status, response.served_by()),
            (200, "b".to_owned())
        );
    }
    assert_eq!(
        held.arrivals(),
        1,
        "no new request reached the drained server"
    );

    held.release_one();
    let finished = in_flight.await.unwrap();
    let other = second.await.unwrap();
    let mut served: Vec<String> = vec![finished.served_by(), other.served_by()];
    served.sort();
    assert_eq!(
        served,
        ["a", "b"],
        "the held request finished on the drained server"
    );

    // Undrained, it takes requests again.
    let response = post(
        admin,
        &format!("/upstreams/app/{}/undrain", held.addr),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let requests: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(proxy, "app.test", "/").await }))
        .collect();
    held.wait_arrivals(2).await;
    held.release_one();
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_outlasts_a_reload_and_a_restart_until_undone() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let config = pool_config(a, b);
    let headland = Headland::start(&config);
    let unknown = post(
        headland.admin,
        "/upstreams/app/127.0.0.1:1/drain",
        Some(TOKEN),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let response = post(
        headland.admin,
        &format!("/upstreams/app/{a}/drain"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());

    let served = |headland: &Headland| {
        let proxy = headland.http;
        async move {
            let mut served = Vec::new();
            for _ in 0..6 {
                served.push(get(proxy, "app.test", "/").await.served_by());
            }
            served
        }
    };
    headland.write_config(&config);
    let (code, body) = headland.reload().await;
    assert_eq!(code, 200, "{body}");
    assert!(
        served(&headland).await.iter().all(|s| s == "b"),
        "drained after a reload"
    );
    assert_eq!(
        server_status(&status(&headland).await, "app", &a.to_string())["drained"],
        true
    );

    let dir = headland.stop_keeping_state();
    let restarted = Headland::start_in(dir, &config, "", "");
    assert!(
        served(&restarted).await.iter().all(|s| s == "b"),
        "drained after a restart"
    );
    let metrics = restarted.metrics().await;
    assert_eq!(
        metrics.value(
            "headland_upstream_drained",
            &[("upstream", "app"), ("server", &a.to_string())]
        ),
        Some(1.0)
    );

    let response = post(
        restarted.admin,
        &format!("/upstreams/app/{a}/undrain"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let after = served(&restarted).await;
    assert!(
        after.iter().any(|s| s == "a") && after.iter().any(|s| s == "b"),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_webhook_reaches_a_receiver_that_checks_its_signature_in_sequence() {
    let receiver = WebhookReceiver::start(vec![]).await;
    let dir = scratch_dir();
    std::fs::write(dir.join("webhook.secret"), "s3cret\n").unwrap();
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let body = format!(
        "{}\n[[webhooks]]\nurl = \"http://{}/hooks/headland\"\nsecret_file = \"webhook.secret\"\nevents = [\"upstream.down\"]\n",
        pool_config(a, b),
        receiver.addr
    );
    let headland = Headland::start_in(dir, &body, "", "");

    let mut sequences = Vec::new();
    for _ in 0..2 {
        let response = post(headland.admin, "/webhooks/test", Some(TOKEN)).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let report = response.json();
        assert_eq!(report["results"][0]["delivered"], true, "{report}");
        sequences.push(report["sequence"].as_u64().unwrap());
    }
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 2);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    for (delivery, sequence) in deliveries.iter().zip(&sequences) {
        let signature = delivery.header("x-headland-signature").expect("signed");
        let hex = signature.strip_prefix("sha256=").unwrap();
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        ring::hmac::verify(&key, &delivery.body, &tag).expect("the signature verifies");
        let event: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(event["event"], "webhook.test");
        assert_eq!(event["node"], "test");
        assert_eq!(event["sequence"].as_u64(), Some(*sequence));
    }
    assert!(sequences[1] > sequences[0], "{sequences:?}");

    // Numbers keep increasing after a restart.
    let dir = headland.stop_keeping_state();
    let restarted = Headland::start_in(dir, &body, "", "");
    let response = post(restarted.admin, "/webhooks/test", Some(TOKEN)).await;
    let after = response.json()["sequence"].as_u64().unwrap();
    assert!(after > sequences[1], "{after} after {sequences:?}");
    let metrics = restarted.metrics().await;
    assert_eq!(
        metrics.value("headland_webhook_sequence", &[]),
        Some(after as f64)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn headland_status_prints_each_server_with_its_drain() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let headland = Headland::start(&pool_config(a, b));
    let response = post(
        headland.admin,
        &format!("/upstreams/app/{a}/drain"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let output = std::process::Command::new(support::binary())
        .args(["status", "--config"])
        .arg(headland.config_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("node test (region none)"), "{stdout}");
    let row = |server: SocketAddr| {
        stdout
            .lines()
            .find(|l| l.starts_with("app") && l.contains(&server.to_string()))
            .unwrap_or_else(|| panic!("no row for {server} in\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row(a), format!("app {a} unknown drained 0 -"));
    assert_eq!(row(b), format!("app {b} unknown - 0 -"));
}
