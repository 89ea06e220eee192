//! A route's rules against the real binary: address lists, basic auth with a file made by
//! Apache's `htpasswd`, forward-auth to a small SSO-like service (allowed, refused, down,
//! slow), header rules and CORS, compression decoded by curl, exact routes and the redirect
//! to a prefix route's slash. Refusals must never reach the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::recorder::{Recorder, RecorderOptions};
use support::{echo_upstream, get, refused_addr, request, request_from, scratch_dir, Headland};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

#[tokio::test(flavor = "multi_thread")]
async fn address_lists_refuse_with_403_before_the_upstream() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{}"]

[[routes]]
host = "office.test"
upstream = "app"
allow = ["10.8.0.0/24"]

[[routes]]
host = "admin.test"
upstream = "app"
allow = ["127.0.0.0/8"]
deny = ["127.0.0.2"]
"#,
        app.addr
    ));
    let refused = get(proxy.http, "office.test", "/").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let allowed = get(proxy.http, "admin.test", "/").await;
    assert_eq!(allowed.status, 200);
    let raw = "GET / HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n";
    let denied = request_from("127.0.0.2".parse().unwrap(), proxy.http, raw).await;
    assert_eq!(denied.status, 403);
    assert_eq!(app.count(), 1, "only the allowed request reached the app");
    let metrics = proxy.metrics().await;
    let denied = |route| {
        metrics.count(
            "headland_access_denied_total",
            &[("route", route), ("rule", "address")],
        )
    };
    assert_eq!(denied("office.test/"), 1.0);
    assert_eq!(denied("admin.test/"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_takes_logins_from_an_htpasswd_file() {
    let dir = scratch_dir();
    let file = dir.join("admin.htpasswd");
    let made = Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&file)
        .args(["alice", "s3cret"])
        .output();
    match made {
        Ok(out) => assert!(out.status.success(), "{out:?}"),
        Err(error) if !in_ci() => {
            eprintln!("\n*** SKIPPED: htpasswd not installed ({error}; apt-get install apache2-utils) ***\n");
            return;
        }
        Err(error) => panic!("htpasswd is required under CI (.ci/install-deps): {error}"),
    }
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start_in(
        dir,
        &format!(
            r#"
[upstreams.app]
servers = ["{}"]

[[routes]]
host = "admin.test"
upstream = "app"
basic_auth = {{ htpasswd = "admin.htpasswd", realm = "Grafana" }}
"#,
            app.addr
        ),
        "",
        "",
    );
    let ask = |authorization: &str| {
        let header = if authorization.is_empty() {
            String::new()
        } else {
            format!("Authorization: {authorization}\r\n")
        };
        let raw =
            format!("GET / HTTP/1.1\r\nHost: admin.test\r\n{header}Connection: close\r\n\r\n");
        let addr = proxy.http;
        async move { request(addr, &raw).await }
    };
    let anonymous = ask("").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"Grafana\", charset=\"UTF-8\"")
    );
    // alice:wrong, bob:s3cret
    assert_eq!(ask("Basic YWxpY2U6d3Jvbmc=").await.status, 401);
    assert_eq!(ask("Basic Ym9iOnMzY3JldA==").await.status, 401);
    assert_eq!(app.count(), 0, "no refused login reached the app");
    // alice:s3cret, twice (the second from the remembered login)
    assert_eq!(ask("Basic YWxpY2U6czNjcmV0").await.status, 200);
    assert_eq!(ask("Basic YWxpY2U6czNjcmV0").await.status, 200);
    assert_eq!(app.count(), 2);
    let metrics = proxy.metrics().await;
    let refused = metrics.count(
        "headland_access_denied_total",
        &[("route", "admin.test/"), ("rule", "basic_auth")],
    );
    assert_eq!(refused, 3.0);
}

/// What an oauth2-proxy `/oauth2/auth` endpoint does: 202 with the user for a good session
/// cookie, else 401 (as oauth2-proxy) or a 302 to the login page (as Authelia), by path.
/// Records the requests it judged.
struct AuthService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl AuthService {
    async fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut len = 0;
                    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => len += n,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..len]).to_string();
                    log.lock().unwrap().push(head.clone());
                    let lower = head.to_ascii_lowercase();
                    let answer = if lower.contains("cookie: session=good") {
                        "HTTP/1.1 202 Accepted\r\nX-Auth-Request-User: alice\r\nX-Auth-Request-Email: alice@example.com\r\nContent-Length: 0\r\n\r\n".to_owned()
                    } else if head.starts_with("GET /redirect") {
                        "HTTP/1.1 302 Found\r\nLocation: https://sso.test/login?rd=x\r\nSet-Cookie: csrf=1; Path=/\r\nContent-Length: 0\r\n\r\n".to_owned()
                    } else {
                        let body = "please log in";
                        format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        AuthService { addr, seen }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_lets_through_refuses_and_fails_closed() {
    let auth = AuthService::start().await;
    // A service that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{app}"]

[[routes]]
host = "grafana.test"
upstream = "app"
forward_auth = {{ url = "http://{auth}/oauth2/auth", copy_headers = ["X-Auth-Request-User"] }}

[[routes]]
host = "wiki.test"
upstream = "app"
forward_auth = {{ url = "http://{auth}/redirect" }}

[[routes]]
host = "down.test"
upstream = "app"
forward_auth = {{ url = "http://{down}/auth" }}

[[routes]]
host = "slow.test"
upstream = "app"
forward_auth = {{ url = "http://{silent_addr}/auth", timeout = "300ms" }}
"#,
        app = app.addr,
        auth = auth.addr,
        down = refused_addr(),
    ));
    let ask = |host: &str, extra: &str| {
        // The service must judge the path routing sees, not `/public/../d/abc`.
        let raw = format!(
            "GET /public/../d/abc?orgId=1 HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        );
        let addr = proxy.http;
        async move { request(addr, &raw).await }
    };

    // A good session: through, with the user the auth service named and not the one the
    // client claimed.
    let allowed = ask(
        "grafana.test",
        "Cookie: session=good\r\nX-Auth-Request-User: mallory\r\nX-Auth-Request_User: eve\r\nX-Original-URL: /public\r\nX-Real-IP: 10.0.0.1\r\n",
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-auth-request-user"), Some("alice"));
    assert_eq!(seen[0].header_count("x-auth-request-user"), 1);
    assert_eq!(
        seen[0].header("x-auth-request_user"),
        None,
        "underscore spelling removed"
    );
    assert_eq!(
        seen[0].header("x-auth-request-email"),
        None,
        "not in copy_headers"
    );
    let judged = auth.seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(judged.starts_with("get /oauth2/auth "), "{judged}");
    assert!(
        judged.contains("x-forwarded-uri: /d/abc?orgid=1"),
        "{judged}"
    );
    assert!(
        judged.contains("x-forwarded-host: grafana.test"),
        "{judged}"
    );
    assert!(judged.contains("x-forwarded-method: get"), "{judged}");
    // What only Headland may tell the service is not taken from the client.
    assert!(!judged.contains("x-original-url"), "{judged}");
    assert!(!judged.contains("x-real-ip"), "{judged}");

    // No session: the service's 401 and its body go back to the client.
    let refused = ask("grafana.test", "").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.text(), "please log in");
    // A 302 to the login page, with its cookie.
    let redirected = ask("wiki.test", "").await;
    assert_eq!(redirected.status, 302);
    assert_eq!(
        redirected.header("location"),
        Some("https://sso.test/login?rd=x")
    );
    assert_eq!(redirected.header("set-cookie"), Some("csrf=1; Path=/"));

    // The auth service down or silent: refused, never let through.
    let down = ask("down.test", "Cookie: session=good\r\n").await;
    assert_eq!(down.status, 502, "{}", down.text());
    let slow = ask("slow.test", "Cookie: session=good\r\n").await;
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert_eq!(app.count(), 1, "only the allowed request reached the app");

    let metrics = proxy.metrics().await;
    let errors = |route, reason| {
        metrics.count(
            "headland_forward_auth_errors_total",
            &[("route", route), ("reason", reason)],
        )
    };
    assert_eq!(errors("down.test/", "unreachable"), 1.0);
    assert_eq!(errors("slow.test/", "timeout"), 1.0);
    let denied = metrics.count(
        "headland_access_denied_total",
        &[("route", "grafana.test/"), ("rule", "forward_auth")],
    );
    assert_eq!(denied, 1.0);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn header_rules_and_cors() {
    let app = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{}"]

[[routes]]
host = "api.test"
upstream = "app"
request_headers = {{ "X-Env" = "prod", "Cookie" = "" }}
response_headers = {{ "X-Frame-Options" = "DENY", "X-Served-By" = "" }}
cors = {{ origins = ["https://app.example.com"], methods = ["GET", "POST"], headers = ["Content-Type"], credentials = true, max_age = "1h" }}
"#,
        app.addr
    ));
    let response = request(
        proxy.http,
        "GET / HTTP/1.1\r\nHost: api.test\r\nOrigin: https://app.example.com\r\nCookie: a=1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-frame-options"), Some("DENY"));
    assert_eq!(response.header("x-served-by"), None);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    let seen = &app.seen()[0];
    assert_eq!(seen.header("x-env"), Some("prod"));
    assert_eq!(seen.header("cookie"), None);

    // Another origin: no CORS fields.
    let other = request(
        proxy.http,
        "GET / HTTP/1.1\r\nHost: api.test\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    // The preflight is answered by Headland; the app never sees it.
    let preflight = request(
        proxy.http,
        "OPTIONS /items HTTP/1.1\r\nHost: api.test\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("3600"));
    assert_eq!(app.count(), 2);
}

/// curl asks for one encoding at a time and decodes the body itself.
fn curl(addr: SocketAddr, encoding: &str) -> Option<(String, Vec<u8>)> {
    let dir = scratch_dir();
    let headers = dir.join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--compressed", "-H"])
        .arg(format!("Accept-Encoding: {encoding}"))
        .args(["-H", "Host: site.test", "-D"])
        .arg(&headers)
        .arg(format!("http://{addr}/page?x=1"))
        .output();
    let out = match out {
        Ok(out) => out,
        Err(error) if !in_ci() => {
            eprintln!("\n*** SKIPPED: curl not installed ({error}) ***\n");
            return None;
        }
        Err(error) => panic!("curl is required under CI: {error}"),
    };
    assert!(out.status.success(), "curl: {out:?}");
    Some((std::fs::read_to_string(headers).unwrap(), out.stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_responses_are_decoded_by_curl() {
    let app = echo_upstream("app").await;
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{app}"]

[[routes]]
host = "site.test"
upstream = "app"
compress = true

[[routes]]
host = "plain.test"
upstream = "app"
"#
    ));
    let plain = get(proxy.http, "site.test", "/page?x=1").await;
    assert_eq!(plain.header("content-encoding"), None, "not asked for");
    let expected: serde_json::Value = plain.json();
    for encoding in ["gzip", "br", "zstd"] {
        let Some((headers, body)) = curl(proxy.http, encoding) else {
            return;
        };
        let headers = headers.to_ascii_lowercase();
        assert!(
            headers.contains(&format!("content-encoding: {encoding}")),
            "{encoding}: {headers}"
        );
        assert!(headers.contains("vary: accept-encoding"), "{headers}");
        let decoded: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(decoded["path"], expected["path"], "{encoding}");
    }
    // A route without `compress` passes the body as it is.
    let raw =
        "GET / HTTP/1.1\r\nHost: plain.test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n";
    assert_eq!(
        request(proxy.http, raw).await.header("content-encoding"),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_routes_and_the_redirect_to_the_slash() {
    let root = Recorder::start(RecorderOptions::default()).await;
    let health = Recorder::start(RecorderOptions::default()).await;
    let swarm = Recorder::start(RecorderOptions::default()).await;
    let proxy = Headland::start(&format!(
        r#"
[upstreams.root]
servers = ["{}"]
[upstreams.health]
servers = ["{}"]
[upstreams.swarm]
servers = ["{}"]

[[routes]]
host = "example.test"
upstream = "root"

[[routes]]
host = "example.test"
path = "/healthz"
exact = true
upstream = "health"

[[routes]]
host = "example.test"
path = "/swarm/"
upstream = "swarm"
"#,
        root.addr, health.addr, swarm.addr
    ));
    assert_eq!(
        get(proxy.http, "example.test", "/healthz").await.status,
        200
    );
    assert_eq!(health.count(), 1);
    // Below an exact path is the prefix routes' business.
    get(proxy.http, "example.test", "/healthz/deep").await;
    assert_eq!(health.count(), 1);
    assert_eq!(root.count(), 1);

    let bare = get(proxy.http, "example.test", "/swarm?tab=2").await;
    assert_eq!(bare.status, 301);
    assert_eq!(bare.header("location"), Some("/swarm/?tab=2"));
    assert_eq!(swarm.count(), 0);
    assert_eq!(get(proxy.http, "example.test", "/swarm/").await.status, 200);
    assert_eq!(swarm.count(), 1);
}
