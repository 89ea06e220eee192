//! A rustls client for tests: handshakes that trust exactly the given roots, and a plain
//! HTTP/1.1 GET over the TLS stream.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS connection that trusts exactly `roots`; returns the stream, the negotiated ALPN and
/// the certificate the server presented, or the handshake error.
pub async fn handshake(
    addr: SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<
    (
        TlsStream<tokio::net::TcpStream>,
        Option<Vec<u8>>,
        CertificateDer<'static>,
    ),
    std::io::Error,
> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let presented = session.peer_certificates().unwrap()[0].clone().into_owned();
    Ok((stream, alpn, presented))
}

/// `GET path` with `Connection: close`; the whole response.
pub async fn https_get(
    stream: &mut TlsStream<tokio::net::TcpStream>,
    host: &str,
    path: &str,
) -> super::Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    https_request(stream, &raw).await
}

/// Sends `raw` (a whole request with `Connection: close`); the whole response.
pub async fn https_request(
    stream: &mut TlsStream<tokio::net::TcpStream>,
    raw: &str,
) -> super::Response {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    // rustls reports a missing close_notify as an error after the data; the data is what counts.
    let _ = stream.read_to_end(&mut bytes).await;
    super::http1::parse(&bytes).expect("HTTP response over TLS")
}
