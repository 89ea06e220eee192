//! Reads a TLS ClientHello off a client connection without answering it, for SNI routing:
//! the bytes read are kept so that they can be replayed to the upstream, which then does the
//! handshake itself (TLS passthrough, nginx's `ssl_preread`).
//!
//! Parsing is rustls's `Acceptor`: it reassembles a ClientHello split over several records
//! or reads, and checks every length, so no hand-written parser sees client bytes.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};

/// nginx `preread_timeout`'s default: a client that has not sent its ClientHello by then
/// is not a TLS client worth a slot.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// A ClientHello is a few hundred bytes, about 2 KiB with post-quantum key shares; anything
/// much larger is not a client we want to buffer for.
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// What the client sent first.
#[derive(Debug, PartialEq, Eq)]
pub struct Peeked {
    /// Every byte read, to be written to the upstream before anything else.
    pub bytes: Vec<u8>,
    /// The ClientHello's server name, lowercase; `None` when the client sent none.
    pub server_name: Option<String>,
}

/// Why no server name could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    #[error("the client closed before a complete ClientHello")]
    Closed,
    #[error("no complete ClientHello within {HELLO_TIMEOUT:?}")]
    TimedOut,
    #[error("the ClientHello is larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("not a TLS ClientHello: {0}")]
    NotTls(rustls::Error),
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads from `client` until a whole ClientHello has arrived, bounded by `HELLO_TIMEOUT`.
pub async fn read(client: &mut (impl AsyncRead + Unpin)) -> Result<Peeked, HelloError> {
    tokio::time::timeout(HELLO_TIMEOUT, read_unbounded(client))
        .await
        .unwrap_or(Err(HelloError::TimedOut))
}

async fn read_unbounded(client: &mut (impl AsyncRead + Unpin)) -> Result<Peeked, HelloError> {
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await?;
        let Some(new) = chunk.get(..n).filter(|new| !new.is_empty()) else {
            return Err(HelloError::Closed);
        };
        bytes.extend_from_slice(new);
        if bytes.len() > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        let mut unread = new;
        // `read_tls` takes what fits in its buffer; feed it all before asking.
        while !unread.is_empty() {
            if acceptor.read_tls(&mut unread)? == 0 {
                break;
            }
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let server_name = accepted
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                return Ok(Peeked { bytes, server_name });
            }
            Err((error, _alert)) => return Err(HelloError::NotTls(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls_pki_types::ServerName;

    use super::*;

    /// The first flight a real rustls client sends for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        out
    }

    async fn peek(bytes: &[u8], chunk: usize) -> Result<Peeked, HelloError> {
        let (mut writer, mut reader) = tokio::io::duplex(64);
        let owned = bytes.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in owned.chunks(chunk) {
                if writer.write_all(part).await.is_err() {
                    return;
                }
            }
        });
        read(&mut reader).await
    }

    #[tokio::test]
    async fn reads_the_server_name_and_keeps_every_byte() {
        let hello = client_hello("DB.example.com");
        for chunk in [1, 7, 4096] {
            let peeked = peek(&hello, chunk).await.unwrap();
            assert_eq!(peeked.server_name.as_deref(), Some("db.example.com"));
            assert_eq!(peeked.bytes, hello, "chunks of {chunk}");
        }
    }

    #[tokio::test]
    async fn an_ip_address_is_no_server_name() {
        let peeked = peek(&client_hello("192.0.2.1"), 4096).await.unwrap();
        assert_eq!(peeked.server_name, None);
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_client_hello() {
        let http = peek(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 4096).await;
        assert!(matches!(http, Err(HelloError::NotTls(_))), "{http:?}");
        let mut cut = client_hello("a.test");
        cut.truncate(cut.len() / 2);
        assert!(matches!(peek(&cut, 4096).await, Err(HelloError::Closed)));
        // A record header announcing a huge handshake message that never ends.
        let mut huge = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
        huge.resize(80 * 1024, 0);
        assert!(peek(&huge, 4096).await.is_err());
    }
}
