//! `fastcgi` routes through the real binary to a real PHP-FPM, over TCP and a Unix socket:
//! query strings, form posts (plain, chunked, longer than the memory buffer), PATH_INFO, the
//! front controller, directory index scripts, static files under the root served and never
//! executed, CGI status and redirects, 404 for missing scripts, 502 with PHP-FPM down and
//! 504 when a script takes longer than the route's timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::php_fpm::{fixture_root, PhpFpm};
use support::{get, refused_addr, request, Headland};

fn start(fpm: &PhpFpm) -> Headland {
    let root = fixture_root();
    let root = root.display();
    let tcp = fpm.tcp;
    let socket = fpm.socket.display();
    let refused = refused_addr();
    Headland::start(&format!(
        r#"
[[routes]]
host = "cms.test"
fastcgi = {{ server = "{tcp}", root = "{root}", front_controller = "/index.php" }}

[[routes]]
host = "unix.test"
fastcgi = {{ server = "unix:{socket}", root = "{root}" }}

[[routes]]
host = "slow.test"
fastcgi = {{ server = "{tcp}", root = "{root}", timeout = "300ms" }}

[[routes]]
host = "down.test"
fastcgi = {{ server = "{refused}", root = "{root}" }}
"#
    ))
}

fn post(host: &str, path: &str, content_type: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn php_scripts_run_through_fastcgi() {
    let Some(fpm) = PhpFpm::start() else { return };
    let proxy = start(&fpm);

    let page = get(proxy.http, "cms.test", "/index.php?a=1&b=two").await;
    assert_eq!(page.status, 200, "{}\n{}", page.text(), fpm.log());
    assert_eq!(page.header("content-type"), Some("application/json"));
    assert_eq!(page.header("x-powered-by-test"), Some("php"));
    let report = page.json();
    assert_eq!(report["method"], "GET");
    assert_eq!(report["query"], "a=1&b=two");
    assert_eq!(report["get"]["b"], "two");
    assert_eq!(report["script_name"], "/index.php");
    assert_eq!(report["request_uri"], "/index.php?a=1&b=two");
    assert_eq!(report["remote_addr"], "127.0.0.1");
    assert_eq!(report["server_name"], "cms.test");
    assert_eq!(report["https"], "");
    let canonical_root = std::fs::canonicalize(fixture_root()).unwrap();
    assert_eq!(
        report["script_filename"],
        canonical_root.join("index.php").display().to_string()
    );

    let form = post(
        "cms.test",
        "/index.php",
        "application/x-www-form-urlencoded",
        "name=Ada&lang=php",
    );
    let report = request(proxy.http, &form).await.json();
    assert_eq!(report["method"], "POST");
    assert_eq!(report["post"]["name"], "Ada");
    assert_eq!(report["post"]["lang"], "php");

    let info = get(proxy.http, "cms.test", "/index.php/foo/bar")
        .await
        .json();
    assert_eq!(info["script_name"], "/index.php");
    assert_eq!(info["path_info"], "/foo/bar");

    // The front controller runs for paths that name no file, REQUEST_URI as the client sent it.
    let pretty = get(proxy.http, "cms.test", "/some/pretty/url?page=2").await;
    assert_eq!(pretty.status, 200);
    let pretty = pretty.json();
    assert_eq!(pretty["script_name"], "/index.php");
    assert_eq!(pretty["document_uri"], "/index.php");
    assert_eq!(pretty["request_uri"], "/some/pretty/url?page=2");
    assert_eq!(pretty["get"]["page"], "2");
    assert_eq!(pretty["path_info"], "");

    // A script that does not exist is a 404, front controller or not.
    assert_eq!(
        get(proxy.http, "cms.test", "/missing.php").await.status,
        404
    );
    assert_eq!(
        get(proxy.http, "unix.test", "/pretty/url").await.status,
        404
    );

    let teapot = get(proxy.http, "cms.test", "/teapot.php").await;
    assert_eq!(teapot.status, 418);
    assert_eq!(teapot.header("x-from"), Some("php"));
    assert_eq!(teapot.text(), "short and stout\n");
    let redirect = get(proxy.http, "cms.test", "/redirect.php").await;
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/login"));
}

#[tokio::test]
async fn files_under_the_root_are_served_never_executed() {
    let Some(fpm) = PhpFpm::start() else { return };
    let proxy = start(&fpm);

    let text = get(proxy.http, "cms.test", "/hello.txt").await;
    assert_eq!(text.status, 200);
    assert_eq!(text.text(), "plain text, not a script\n");
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // An "image" holding PHP code is sent as it is, and cannot be run through a fake path.
    let photo = get(proxy.http, "cms.test", "/uploads/photo.jpg").await;
    assert_eq!(photo.status, 200);
    assert_eq!(photo.text(), "<?php echo \"executed\";\n");
    let trick = get(proxy.http, "cms.test", "/uploads/photo.jpg/x.php").await;
    assert_eq!(trick.status, 404);
    assert!(!trick.text().contains("executed"));
    let escape = get(proxy.http, "cms.test", "/%2e%2e/Cargo.toml").await;
    assert!(matches!(escape.status, 400 | 404), "{}", escape.status);

    // Directories run their index script, over the Unix socket as over TCP.
    let root = get(proxy.http, "unix.test", "/").await;
    assert_eq!(root.status, 200, "{}", root.text());
    assert_eq!(root.json()["script_name"], "/index.php");
    let sub = get(proxy.http, "unix.test", "/sub").await;
    assert_eq!(sub.status, 301);
    assert_eq!(sub.header("location"), Some("/sub/"));
    let sub = get(proxy.http, "unix.test", "/sub/").await;
    assert_eq!(sub.text(), "sub index via /sub/index.php\n");
}

#[tokio::test]
async fn request_bodies_reach_php_whole() {
    let Some(fpm) = PhpFpm::start() else { return };
    let proxy = start(&fpm);

    // Longer than `body_buffer_memory` (16 KiB): the rest streams after the first part.
    let value = "x".repeat(300_000);
    let form = post(
        "unix.test",
        "/index.php",
        "application/x-www-form-urlencoded",
        &format!("big={value}"),
    );
    let report = request(proxy.http, &form).await.json();
    assert_eq!(report["post"]["big"].as_str().map(str::len), Some(300_000));

    // Chunked: read whole first, since PHP needs CONTENT_LENGTH.
    let chunked = "POST /index.php HTTP/1.1\r\nHost: unix.test\r\n\
                   Content-Type: application/x-www-form-urlencoded\r\n\
                   Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                   5\r\na=1&b\r\n4\r\n=two\r\n0\r\n\r\n";
    let report = request(proxy.http, chunked).await.json();
    assert_eq!(report["post"]["a"], "1");
    assert_eq!(report["post"]["b"], "two");
    assert_eq!(report["body_length"], 9);
}

#[tokio::test]
async fn unreachable_or_slow_php_fpm_is_a_gateway_error() {
    let Some(mut fpm) = PhpFpm::start() else {
        return;
    };
    let proxy = start(&fpm);

    assert_eq!(get(proxy.http, "down.test", "/index.php").await.status, 502);
    let slow = get(proxy.http, "slow.test", "/sleep.php").await;
    assert_eq!(slow.status, 504, "{}", slow.text());
    // A static file needs no PHP-FPM.
    assert_eq!(get(proxy.http, "down.test", "/hello.txt").await.status, 200);

    fpm.stop();
    assert_eq!(get(proxy.http, "cms.test", "/index.php").await.status, 502);
    assert_eq!(get(proxy.http, "unix.test", "/index.php").await.status, 502);

    let metrics = proxy.metrics().await;
    let down = [
        ("route", "down.test/"),
        ("upstream", "fastcgi"),
        ("code", "502"),
    ];
    assert_eq!(metrics.count("headland_http_requests_total", &down), 1.0);
    let slow = [
        ("route", "slow.test/"),
        ("upstream", "fastcgi"),
        ("code", "504"),
    ];
    assert_eq!(metrics.count("headland_http_requests_total", &slow), 1.0);
    let file = [
        ("route", "down.test/"),
        ("upstream", "fastcgi"),
        ("code", "200"),
    ];
    assert_eq!(metrics.count("headland_http_requests_total", &file), 1.0);
}

/// Over TLS PHP sees `HTTPS=on`; behind a trusted proxy, `REMOTE_ADDR` is the client that
/// proxy names, not the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn php_sees_https_and_the_resolved_client() {
    let Some(fpm) = PhpFpm::start() else { return };
    let dir = support::scratch_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["cms.test".to_owned()]).unwrap();
    std::fs::write(dir.join("cms.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("cms.key"), cert.signing_key.serialize_pem()).unwrap();
    let https: std::net::SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let body = format!(
        r#"
[client_ip]
trusted_proxies = ["127.0.0.1"]

[[certificates]]
names = ["cms.test"]
cert_file = "{dir}/cms.pem"
key_file = "{dir}/cms.key"

[[routes]]
host = "cms.test"
fastcgi = {{ server = "{tcp}", root = "{root}", front_controller = "/index.php" }}
"#,
        dir = dir.display(),
        tcp = fpm.tcp,
        root = fixture_root().display(),
    );
    let proxy = Headland::start_in(dir, &body, &format!("https = [\"{https}\"]"), "");
    let roots = [cert.cert.der().clone()];
    let (mut stream, _, _) =
        support::tls_client::handshake(https, "cms.test", &roots, &[b"http/1.1"])
            .await
            .unwrap();
    let raw = "GET /anything HTTP/1.1\r\nHost: cms.test\r\nX-Forwarded-For: 198.51.100.7\r\n\
               X-Test: yes\r\nConnection: close\r\n\r\n";
    let page = support::tls_client::https_request(&mut stream, raw).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let report = page.json();
    assert_eq!(report["https"], "on");
    assert_eq!(report["remote_addr"], "198.51.100.7");
    assert_eq!(report["http_x_test"], "yes");
    drop(proxy);
}
