//! The status page at `/` on the admin listener, loaded by headless Chromium (Debian
//! `chromium`, driven by `tests/browser/status-page.sh`) against a running Headland with a
//! down server, a drained server and two regions, one of them down. The screenshots stay in
//! `target/status-page/` for a person to look at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{echo_upstream, get, refused_addr, request, Headland, TOKEN};

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// Polls `/status` until `ready` holds for it (bounded; the health checks run every 100 ms).
async fn wait_for_status(headland: &Headland, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get(headland.admin, "admin", "/status").await.json();
        if ready(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never got there: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_a_down_server_a_drained_one_and_the_regions() {
    let web = echo_upstream("web").await;
    let (api_a, api_b) = (echo_upstream("api-a").await, echo_upstream("api-b").await);
    let down = refused_addr();
    let body = format!(
        r#"
[upstreams.web]
servers = ["{web}", "{down}"]
health = {{ check = "tcp", interval = "100ms", timeout = "1s", fall = 1, rise = 1 }}

[upstreams.api]
servers = ["{api_a}", "{api_b}"]

[[routes]]
host = "example.com"
upstream = "web"

[[routes]]
host = "api.example.com"
upstream = "api"
rate_limit = "api"

[rate_limits.api]
rate = "10/s"
burst = 20

[[certificates]]
names = ["example.com", "*.example.com"]
cert_file = "{cert}"
key_file = "{key}"

[geoip]
database = "{geoip}"

[regions.eu]
addresses = ["203.0.113.10"]
location = {{ lat = 50.1, lon = 8.7 }}

[regions.na]
addresses = ["198.51.100.10"]
location = {{ lat = 39.0, lon = -77.5 }}
health = "http://{down}/health"
health_interval = "100ms"
fall = 1

[dns.zones."example.com"]
file = "{zone}"

[dns.zones."example.com".geo.www]
regions = ["eu", "na"]
"#,
        cert = repo("certs/dev/example.com.pem"),
        key = repo("certs/dev/example.com.key"),
        zone = repo("config/zones/tests/example.com.zone"),
        geoip = repo("geoip/test-city.mmdb"),
    );
    let headland = Headland::start_with(&body, "", "region = \"eu\"");
    let drain = format!(
        "POST /upstreams/api/{api_a}/drain HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(request(headland.admin, &drain).await.status, 200);
    let down_label = down.to_string();
    wait_for_status(&headland, |status| {
        let down_server = status["upstreams"][1]["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["server"] == down_label.as_str()))
            .is_some_and(|s| s["health"] == "down");
        let na_down = status["regions"][1]["up"] == false;
        down_server && na_down
    })
    .await;

    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/status-page")
        .join(std::process::id().to_string());
    let page = format!("http://{}/", headland.admin);
    let run = Command::new(repo("tests/browser/status-page.sh"))
        .args([page.as_str(), out.to_str().unwrap()])
        .status()
        .expect("run tests/browser/status-page.sh");
    if run.code() == Some(77) {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing, and CI must run this test (.ci/install-deps installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed; the status page was not checked");
        return;
    }
    assert!(run.success(), "the browser run failed: {run}");

    let dom = std::fs::read_to_string(out.join("status-page.html")).unwrap();
    let element = |selector: &str| -> String {
        // The row's opening tag and its text up to the row's end.
        let start = dom
            .find(selector)
            .unwrap_or_else(|| panic!("no {selector} in the rendered page:\n{dom}"));
        let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
        dom[start..end].to_owned()
    };
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never rendered /status"
    );
    let down_row = element(&format!("data-server=\"web/{down}\""));
    assert!(
        down_row.contains("data-health=\"down\"") && down_row.contains(">down<"),
        "{down_row}"
    );
    let up_row = element(&format!("data-server=\"web/{web}\""));
    assert!(up_row.contains("data-health=\"up\""), "{up_row}");
    let drained_row = element(&format!("data-server=\"api/{api_a}\""));
    assert!(
        drained_row.contains("data-drained=\"true\"") && drained_row.contains(">drained<"),
        "{drained_row}"
    );
    let other_row = element(&format!("data-server=\"api/{api_b}\""));
    assert!(other_row.contains("data-drained=\"false\""), "{other_row}");
    let eu = element("data-region=\"eu\"");
    assert!(
        eu.contains("data-up=\"true\"") && eu.contains("this node"),
        "{eu}"
    );
    let na = element("data-region=\"na\"");
    assert!(
        na.contains("data-up=\"false\"") && na.contains(">down<"),
        "{na}"
    );
    let certificate = element("data-cert=\"example.com\"");
    assert!(certificate.contains("file"), "{certificate}");
    assert!(dom.contains("www.example.com"), "the geo name is listed");
    assert!(dom.contains("api.example.com"), "the routes are listed");

    let screenshots: Vec<PathBuf> = ["status-page.png", "status-page-phone.png"]
        .iter()
        .map(|name| out.join(name))
        .collect();
    for screenshot in &screenshots {
        let bytes = std::fs::read(screenshot).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            screenshot.display()
        );
        eprintln!("screenshot: {}", screenshot.display());
    }
}
