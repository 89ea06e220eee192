//! The command line as a user meets it: `check` on good and bad files, and `demo` serving
//! its routes with no setup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::dns_client::{addresses, ask};
use support::{binary, free_port, get, scratch_dir};

#[test]
fn check_reports_all_located_errors_and_exits_nonzero() {
    let dir = scratch_dir();
    let path = dir.join("prod.toml");
    std::fs::write(
        &path,
        "[upstreams.kong]\nservers = [\"127.0.0.1:8000\"]\nconnect_timeout = \"3 seconds\"\n\n[[routes]]\nhost = \"api.example.com\"\nupstream = \"kongg\"\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let file = path.display();
    assert!(
        stderr.contains(&format!(
            "{file}:3:19: upstream \"kong\": connect_timeout \"3 seconds\" is not a duration"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:7:12: unknown upstream \"kongg\" (did you mean \"kong\"?)"
        )),
        "{stderr}"
    );

    std::fs::write(&path, "[upstreams.kong]\nservers = [\"127.0.0.1:8000\"]\n").unwrap();
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("ok (0 routes, 1 upstreams)"));

    let missing = Command::new(binary())
        .args(["check", "--config", "/nonexistent/h.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8(missing.stderr)
        .unwrap()
        .contains("cannot read configuration"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_with_no_setup_and_prints_what_to_try() {
    // Reserved ports (see support::ports): `headland demo` binds them itself beside the
    // reservations, and no other process can take them meanwhile.
    let http: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let https: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dns: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut child = Command::new(binary())
        .args([
            "demo",
            "--http",
            &http.to_string(),
            "--https",
            &https.to_string(),
            "--admin",
            &admin.to_string(),
            "--dns",
            &dns.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        assert!(
            stdout.read_line(&mut banner).unwrap() > 0,
            "demo exited: {banner}"
        );
    }
    assert!(
        banner.contains(&format!(
            "--resolve app.example.com:{}:127.0.0.1",
            http.port()
        )),
        "{banner}"
    );

    // Until the demo listens, the reservation refuses connections. (Polling, bounded.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(http).is_err() {
        assert!(Instant::now() < deadline, "demo proxy never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The DNS sockets are bound before the proxy listens (src/server.rs); the UDP
    // reservation would take a share of the queries from now on.
    support::ports::release_udp(dns.port());
    for (host, path, served_by) in [
        ("app.example.com", "/", "pm2-core"),
        ("api.example.com", "/v1/users", "kong"),
        ("admin.example.com", "/", "docker-admin"),
        ("example.com", "/swarm/rooms", "docker-admin"),
    ] {
        let response = get(http, host, path).await;
        assert_eq!(response.status, 200, "{host}{path}");
        assert_eq!(response.served_by(), served_by, "{host}{path}");
    }
    let placeholder = get(http, "status.example.com", "/").await;
    assert_eq!(placeholder.header("x-headland-fallback"), Some("static"));
    assert_eq!(get(http, "www.example.com", "/pricing").await.status, 301);
    assert_eq!(get(http, "unknown.test", "/").await.status, 404);
    assert!(
        std::net::TcpStream::connect(https).is_ok(),
        "the demo serves HTTPS too"
    );
    // ... and GeoDNS, as the printed dig lines say.
    assert!(
        banner.contains(&format!(
            "dig @127.0.0.1 -p {} api.example.com +subnet=10.1.0.0/16",
            dns.port()
        )),
        "{banner}"
    );
    for (subnet, region) in [
        ("10.1.0.0/16", "192.0.2.10"),
        ("10.2.0.0/16", "198.51.100.10"),
        ("10.3.0.0/16", "203.0.113.10"),
    ] {
        let answer = ask("api.example.com.", RecordType::A)
            .ecs(subnet)
            .udp(dns)
            .await;
        assert_eq!(addresses(&answer), vec![region], "{subnet}");
    }
    // Ctrl-C: the demo's files, its private key included, go with it.
    let files = std::env::temp_dir().join(format!("headland-demo-{}", child.id()));
    assert!(files.join("demo-key.pem").exists());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!files.exists(), "{} left behind", files.display());
}

#[test]
fn check_warns_about_a_host_no_certificate_covers_and_still_accepts_the_file() {
    let dir = scratch_dir();
    let config = dir.join("headland.toml");
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/dev/example.com");
    std::fs::write(
        &config,
        format!("[listen]\nhttps = [\"127.0.0.1:8443\"]\n\n[[certificates]]\nnames = [\"example.com\", \"*.example.com\"]\ncert_file = \"{certs}.pem\"\nkey_file = \"{certs}.key\"\n\n[upstreams.app]\nservers = [\"127.0.0.1:5000\"]\n\n[[routes]]\nhost = \"app.example.com\"\nupstream = \"app\"\n\n[[routes]]\nhost = \"shop.test\"\nupstream = \"app\"\n"),
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "{}:17:8: warning: no certificate covers route host \"shop.test\": HTTPS clients get the default certificate; add a [[certificates]] entry with its name, or an [acme] section\n",
            config.display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}
