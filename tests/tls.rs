//! HTTPS through the real binary with a real rustls client: the certificate chosen by SNI
//! (exact, one-level wildcard, none), HTTP/2 by ALPN, forwarded scheme and HSTS, HTTP
//! redirected to HTTPS, and a certificate replaced by a reload without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;

use support::tls_client::https_get;
use support::{echo_upstream, free_port, get, Headland};

struct TestCert {
    der: CertificateDer<'static>,
}

/// A self-signed certificate for `names`, written as `<stem>.pem` / `<stem>.key` in `dir`.
fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), generated.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        generated.signing_key.serialize_pem(),
    )
    .unwrap();
    TestCert {
        der: generated.cert.der().clone(),
    }
}

/// [`support::tls_client::handshake`] trusting these test certificates.
async fn handshake(
    addr: SocketAddr,
    sni: &str,
    roots: &[&TestCert],
    alpn: &[&[u8]],
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Option<Vec<u8>>,
        CertificateDer<'static>,
    ),
    std::io::Error,
> {
    let roots: Vec<CertificateDer<'static>> = roots.iter().map(|r| r.der.clone()).collect();
    support::tls_client::handshake(addr, sni, &roots, alpn).await
}

struct Setup {
    proxy: Headland,
    https: SocketAddr,
    app_cert: TestCert,
    other_cert: TestCert,
}

async fn setup() -> Setup {
    let app = echo_upstream("app").await;
    let dir = support::scratch_dir();
    let app_cert = write_cert(&dir, "app", &["app.test", "*.wild.test"]);
    let other_cert = write_cert(&dir, "other", &["other.test"]);
    let https: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy = Headland::start_with_listen(
        &format!(
            r#"
[tls]
redirect_http = true
hsts = "max-age=600"

[[certificates]]
names = ["app.test", "*.wild.test"]
cert_file = "{dir}/app.pem"
key_file = "{dir}/app.key"

[[certificates]]
names = ["other.test"]
cert_file = "{dir}/other.pem"
key_file = "{dir}/other.key"

[upstreams.app]
servers = ["{app}"]

[[routes]]
host = "*"
upstream = "app"
"#,
            dir = dir.display()
        ),
        &format!("https = [\"{https}\"]"),
    );
    Setup {
        proxy,
        https,
        app_cert,
        other_cert,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_and_the_request_is_proxied_with_https_headers() {
    let setup = setup().await;
    let roots = [&setup.app_cert, &setup.other_cert];
    for (sni, expected) in [
        ("app.test", &setup.app_cert),
        ("x.wild.test", &setup.app_cert),
        ("other.test", &setup.other_cert),
    ] {
        let (mut stream, _, presented) = handshake(setup.https, sni, &roots, &[b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(presented, expected.der, "certificate for {sni}");
        let response = https_get(&mut stream, sni, "/path").await;
        assert_eq!(response.status, 200, "{sni}");
        assert_eq!(
            response.header("strict-transport-security"),
            Some("max-age=600")
        );
        let echo = response.json();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    }
    for sni in ["a.b.wild.test", "unknown.test"] {
        assert!(
            handshake(setup.https, sni, &roots, &[]).await.is_err(),
            "{sni} must get no certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_offers_http2_first() {
    let setup = setup().await;
    let (_, alpn, _) = handshake(
        setup.https,
        "app.test",
        &[&setup.app_cert],
        &[b"h2", b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (_, alpn, _) = handshake(setup.https, "app.test", &[&setup.app_cert], &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_redirected_to_https_except_acme_challenges() {
    let setup = setup().await;
    let response = get(setup.proxy.http, "app.test", "/pricing?plan=pro").await;
    assert_eq!(response.status, 308);
    let expected = format!("https://app.test:{}/pricing?plan=pro", setup.https.port());
    assert_eq!(response.header("location"), Some(expected.as_str()));
    assert!(
        response.header("strict-transport-security").is_none(),
        "no HSTS over plain HTTP (RFC 6797 §7.2)"
    );
    let challenge = get(
        setup.proxy.http,
        "app.test",
        "/.well-known/acme-challenge/token",
    )
    .await;
    assert_ne!(challenge.status, 308);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_replaces_a_certificate_without_a_restart() {
    let setup = setup().await;
    let dir = setup.proxy.config_path().parent().unwrap().to_path_buf();
    // The certificate files live in another scratch dir; find it through the config text.
    let text = std::fs::read_to_string(setup.proxy.config_path()).unwrap();
    let cert_dir = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("cert_file = \"")
                .and_then(|r| r.strip_suffix("/app.pem\""))
        })
        .unwrap()
        .to_owned();
    let renewed = write_cert(Path::new(&cert_dir), "app", &["app.test", "*.wild.test"]);
    let (status, body) = setup.proxy.reload().await;
    assert_eq!(status, 200, "{body}");
    let (_, _, presented) = handshake(setup.https, "app.test", &[&renewed], &[])
        .await
        .unwrap();
    assert_eq!(presented, renewed.der);
    assert!(dir.exists());
}
