//! `/metrics` after known traffic: exact counter values and labels, and output that a
//! Prometheus text-format parser (and promtool, where installed) accepts in full.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{echo_upstream, get, refused_addr, Headland};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_known_traffic_exactly() {
    let app = echo_upstream("app").await;
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{app}"]
[upstreams.dead]
servers = ["{dead}"]
passive = {{ failures = 0 }}

[[routes]]
name = "app"
host = "app.test"
upstream = "app"

[[routes]]
name = "broken"
host = "broken.test"
upstream = "dead"
"#,
        dead = refused_addr()
    ));
    for _ in 0..3 {
        assert_eq!(get(proxy.http, "app.test", "/").await.status, 200);
    }
    assert_eq!(
        get(proxy.http, "app.test", "/?status=404").await.status,
        404
    );
    assert_eq!(get(proxy.http, "broken.test", "/").await.status, 502);
    assert_eq!(get(proxy.http, "unrouted.test", "/").await.status, 404);

    let m = proxy.metrics().await;
    let requests = "headland_http_requests_total";
    assert_eq!(
        m.value(
            requests,
            &[("route", "app"), ("upstream", "app"), ("code", "200")]
        ),
        Some(3.0)
    );
    assert_eq!(
        m.value(
            requests,
            &[("route", "app"), ("upstream", "app"), ("code", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            requests,
            &[("route", "broken"), ("upstream", "dead"), ("code", "502")]
        ),
        Some(1.0)
    );
    let routed: f64 = m
        .scrape
        .samples
        .iter()
        .filter(|s| s.metric == requests)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(
        routed, 6.0,
        "every request is counted, the unrouted one too"
    );
    assert_eq!(
        m.value(
            requests,
            &[("route", ""), ("upstream", ""), ("code", "404")]
        ),
        Some(1.0),
        "the unrouted request, under an empty route label"
    );
    assert_eq!(
        m.value(
            "headland_http_request_duration_seconds_count",
            &[("route", "app"), ("upstream", "app")]
        ),
        Some(4.0)
    );
    let dead = m
        .scrape
        .samples
        .iter()
        .find(|s| s.metric == "headland_upstream_connect_errors_total")
        .expect("connect error counted");
    assert_eq!(dead.labels.get("upstream"), Some("dead"));
    assert_eq!(dead.value, prometheus_parse::Value::Counter(1.0));
    assert_eq!(
        m.value("headland_upstream_up", &[("upstream", "app")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("headland_http_requests_in_flight", &[("route", "app")]),
        Some(0.0)
    );
    assert_eq!(m.value("headland_config_generation", &[]), Some(1.0));
    assert_eq!(
        m.value("headland_config_reloads_total", &[("result", "error")]),
        Some(0.0)
    );
    assert_eq!(
        m.value(
            "headland_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Labels are config names, never client addresses or raw paths.
    assert!(
        !m.text.contains("127.0.0.1\""),
        "no client IP label:\n{}",
        m.text
            .lines()
            .filter(|l| l.contains("127.0.0.1\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!m.text.contains("status=404"), "no raw path label");

    promtool_accepts(&m.text);
}

/// `promtool check metrics` is the reference linter for the text format. CI installs it;
/// elsewhere its absence is reported loudly and the check skipped.
fn promtool_accepts(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("WARNING: promtool not installed (apt-get install prometheus); SKIPPING the promtool lint of /metrics");
            return;
        }
        Err(error) => panic!("promtool is required under CI: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "promtool rejected /metrics:\n{report}"
    );
}
