//! Raw TCP and TLS upstreams for stream tests: an echo server, a server that closes its
//! half first, and TLS echo servers with their own self-signed certificates.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Echoes every byte back; once the client has closed its half, closes its own.
pub async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_until_eof(stream, Vec::new()));
        }
    });
    addr
}

/// Copies `stream` back to itself after `prefix`, until end of file; then closes.
async fn echo_until_eof<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, prefix: Vec<u8>) {
    if stream.write_all(&prefix).await.is_err() {
        return;
    }
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Sends `banner`, closes its sending half at once, then reads the client's bytes to the end
/// and reports them on the returned channel: the upstream closing first, as a server that
/// has said all it has to say.
pub async fn closes_first(banner: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                stream.write_all(banner).await.unwrap();
                stream.shutdown().await.unwrap();
                let mut received = Vec::new();
                let _ = stream.read_to_end(&mut received).await;
                let _ = tx.send(received);
            });
        }
    });
    (addr, rx)
}

/// A TLS echo server for `name` with a fresh self-signed certificate: every connection gets
/// `"<name>\n"` first, then its own bytes back. Returns the address and the certificate to
/// trust.
pub async fn tls_echo(name: &str) -> (SocketAddr, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let greeting = format!("{name}\n").into_bytes();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let greeting = greeting.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    echo_until_eof(tls, greeting).await;
                }
            });
        }
    });
    (addr, cert)
}
