//! The three other kinds of upstream server, against the real binary: a Unix socket (answers,
//! and its health check takes it down when its server goes away), HTTPS with a private CA
//! (right CA answers, wrong CA is refused, `verify = false` answers), and a host name
//! resolved through a DNS server whose answer changes (followed within the TTL, last good
//! addresses kept when resolution fails).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::dns_server::TestDns;
use support::{get, scratch_dir, Headland};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

const UP: &str = "headland_upstream_up";
const CHECKS: &str = "headland_upstream_health_checks_total";
const RESOLUTIONS: &str = "headland_upstream_resolutions_total";

/// Answers every request on `stream` with 200, `x-served-by: name` and `name` as the body,
/// until the client closes.
async fn answer_http(mut stream: impl AsyncRead + AsyncWrite + Unpin, name: String) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-served-by: {name}\r\n\r\n{name}",
                name.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Polls `/metrics` until `done` holds, bounded.
async fn scrape_until(proxy: &Headland, what: &str, done: impl Fn(&support::Metrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = proxy.metrics().await;
        if done(&metrics) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            metrics.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests `host` until a response is served by `name`, bounded; returns how many it took.
async fn until_served_by(proxy: &Headland, host: &str, name: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 1.. {
        let response = get(proxy.http, host, "/").await;
        if response.status == 200 && response.served_by() == name {
            return attempt;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never served by {name}; last: {} {}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unix_socket_upstream_answers_and_is_taken_down_when_its_server_goes_away() {
    let dir = scratch_dir();
    let socket = dir.join("app.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_http(stream, "socket-app".to_owned()));
        }
    });
    let label = format!("unix:{}", socket.display());
    let proxy = Headland::start(&format!(
        r#"
[upstreams.app]
servers = ["{label}"]
health = {{ path = "/health", interval = "50ms", timeout = "500ms", rise = 1, fall = 2 }}
keepalive_timeout = "0s"

[[routes]]
host = "app.test"
upstream = "app"
"#
    ));
    let response = get(proxy.http, "app.test", "/").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.served_by(), "socket-app");
    let labels = [("upstream", "app"), ("server", label.as_str())];
    scrape_until(&proxy, "checks over the socket", |m| {
        m.count(CHECKS, &[labels[0], labels[1], ("result", "ok")]) >= 1.0
            && m.count(UP, &labels) == 1.0
    })
    .await;

    // The app goes away: its socket file stays, nothing listens on it any more.
    server.abort();
    let _ = server.await;
    scrape_until(&proxy, "the socket's server marked down", |m| {
        m.count(UP, &labels) == 0.0
    })
    .await;
    let response = get(proxy.http, "app.test", "/").await;
    assert!(
        response.status >= 500,
        "a pool whose only server is down cannot answer 200"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A CA, a server certificate it signed for `app.internal` and 127.0.0.1, and another CA
/// that signed nothing here, written as PEM files into `dir`.
fn private_ca(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        rcgen::Issuer::new(params, key)
    };
    let issuer = ca("ca");
    ca("other-ca");
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["app.internal".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

/// An HTTPS server on 127.0.0.1:0 with `cert`, answering as `name`.
async fn tls_server(cert: Vec<u8>, key: Vec<u8>, name: &str) -> SocketAddr {
    use tokio_rustls::rustls::{self, pki_types};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki_types::CertificateDer::from(cert)],
            pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    answer_http(stream, name).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_is_verified_against_its_private_ca() {
    let dir = scratch_dir();
    let (cert, key) = private_ca(&dir);
    let app = tls_server(cert, key, "tls-app").await;
    let ca = dir.join("ca.pem");
    let other = dir.join("other-ca.pem");
    let pool = |name: &str, tls: &str, extra: &str| {
        format!(
            "[upstreams.{name}]\nservers = [\"{app}\"]\ntls = {tls}\n{extra}\n\n[[routes]]\nhost = \"{name}.test\"\nupstream = \"{name}\"\n\n"
        )
    };
    let body = [
        pool(
            "good",
            &format!(
                "{{ sni = \"app.internal\", ca_file = \"{}\" }}",
                ca.display()
            ),
            "health = { path = \"/health\", interval = \"50ms\", timeout = \"1s\" }",
        ),
        // No sni: the server's IP address is verified against the certificate.
        pool(
            "by-ip",
            &format!("{{ ca_file = \"{}\" }}", ca.display()),
            "",
        ),
        pool(
            "wrong",
            &format!(
                "{{ sni = \"app.internal\", ca_file = \"{}\" }}",
                other.display()
            ),
            "health = { path = \"/health\", interval = \"50ms\", timeout = \"1s\", fall = 100 }",
        ),
        pool("unverified", "{ verify = false }", ""),
    ]
    .concat();
    let proxy = Headland::start(&body);

    for host in ["good.test", "by-ip.test", "unverified.test"] {
        let response = get(proxy.http, host, "/").await;
        assert_eq!(response.status, 200, "{host}: {}", response.text());
        assert_eq!(response.served_by(), "tls-app", "{host}");
    }
    let response = get(proxy.http, "wrong.test", "/").await;
    assert_eq!(
        response.status, 502,
        "a certificate from another CA is refused"
    );

    // Health checks speak TLS too, with the pool's CA: they pass for one, fail for the other.
    let server = app.to_string();
    scrape_until(&proxy, "TLS health checks", |m| {
        let checks = |pool: &str, result: &str| {
            m.count(
                CHECKS,
                &[("upstream", pool), ("server", &server), ("result", result)],
            )
        };
        checks("good", "ok") >= 2.0
            && checks("wrong", "fail") >= 2.0
            && checks("wrong", "ok") == 0.0
    })
    .await;
}

/// Two echo servers on the same port of two loopback addresses (a host name's two possible
/// answers), with their port.
async fn twin_servers(first: Ipv4Addr, second: Ipv4Addr) -> u16 {
    for _ in 0..20 {
        let one = TcpListener::bind((first, 0)).await.unwrap();
        let port = one.local_addr().unwrap().port();
        // The same port on the other address may be taken; then try another.
        let Ok(two) = TcpListener::bind((second, port)).await else {
            continue;
        };
        tokio::spawn(headland::demo::echo::serve(one, "first".to_owned()));
        tokio::spawn(headland::demo::echo::serve(two, "second".to_owned()));
        return port;
    }
    panic!("no port free on both {first} and {second}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_name_upstream_follows_its_dns_answer_and_keeps_it_when_resolution_fails() {
    let (first, second) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let port = twin_servers(first, second).await;
    let dns = TestDns::start("app.headland.test", &[first], 1).await;
    let name = format!("app.headland.test:{port}");
    let body = format!(
        r#"
[resolver]
nameservers = ["{dns}"]
min_ttl = "1s"
max_ttl = "5s"

[upstreams.app]
servers = ["{name}"]
health = {{ check = "tcp", interval = "50ms", timeout = "500ms" }}
keepalive_timeout = "0s"

[[routes]]
host = "app.test"
upstream = "app"
"#,
        dns = dns.addr
    );
    let proxy = Headland::start(&body);
    until_served_by(&proxy, "app.test", "first").await;

    // The name moves: within the TTL (1 s, plus a resolution) requests follow it.
    dns.set(&[second]);
    until_served_by(&proxy, "app.test", "second").await;
    for _ in 0..20 {
        let response = get(proxy.http, "app.test", "/").await;
        assert_eq!(
            response.served_by(),
            "second",
            "the old address gets no more requests"
        );
    }
    let old = format!("{first}:{port}");
    let new = format!("{second}:{port}");
    scrape_until(&proxy, "the pool's servers follow the name", |m| {
        m.value(UP, &[("upstream", "app"), ("server", &old)])
            .is_none()
            && m.count(UP, &[("upstream", "app"), ("server", &new)]) == 1.0
    })
    .await;

    // The name server fails: the last good address stays in use, the failure is counted.
    dns.fail();
    scrape_until(&proxy, "a failed resolution", |m| {
        m.count(RESOLUTIONS, &[("server", &name), ("result", "fail")]) >= 1.0
    })
    .await;
    let response = get(proxy.http, "app.test", "/").await;
    assert_eq!(response.served_by(), "second");

    // A reload, even one that restarts resolution with new settings, keeps the resolved
    // addresses: no gap before the next good answer.
    proxy.write_config(&body.replace("max_ttl = \"5s\"", "max_ttl = \"6s\""));
    let (status, _) = proxy.reload().await;
    assert_eq!(status, 200);
    let response = get(proxy.http, "app.test", "/").await;
    assert_eq!(
        response.served_by(),
        "second",
        "resolved servers survive a reload"
    );
}
