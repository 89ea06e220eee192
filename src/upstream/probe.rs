//! One active health check of one server: a connect, or an HTTP/1.1 request whose status
//! (and optionally body) must match.
//!
//! Checks connect through Pingora's own connector with the peer requests use, so a check
//! reaches a Unix socket or speaks TLS (same name, same CA, same verification) exactly as
//! requests do: a server whose certificate requests would refuse fails its checks too.

use std::time::Duration;

use pingora::connectors::TransportConnector;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{HealthCheck, HttpProbe, Probe};

/// Enough for any status line and a health body; more is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Connect(Box<pingora::Error>),
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("response is not HTTP")]
    NotHttp,
    #[error("status {0} is not expected")]
    Status(u16),
    #[error("body does not contain the expected text")]
    Body,
}

/// Connects for every check of every server; it keeps no connection.
pub struct Prober {
    connector: TransportConnector,
}

// === impl Prober ===

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        Self {
            connector: TransportConnector::new(None),
        }
    }

    /// Runs `check` against `peer`, all of it within the check's timeout. `host` is the Host
    /// an HTTP check sends unless the check names one. A TCP check of a TLS peer includes
    /// the handshake.
    pub async fn probe(
        &self,
        peer: &HttpPeer,
        host: &str,
        check: &HealthCheck,
    ) -> Result<(), ProbeFailure> {
        let attempt = async {
            let stream = self
                .connector
                .new_stream(peer)
                .await
                .map_err(ProbeFailure::Connect)?;
            match &check.probe {
                Probe::Tcp => Ok(()),
                Probe::Http(http) => probe_http(stream, host, http).await,
            }
        };
        tokio::time::timeout(check.timeout, attempt)
            .await
            .map_err(|_| ProbeFailure::Timeout(check.timeout))?
    }
}

async fn probe_http(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    http: &HttpProbe,
) -> Result<(), ProbeFailure> {
    let host = http.host.as_deref().unwrap_or(host);
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: headland-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        http.method, http.path
    );
    stream.write_all(request.as_bytes()).await?;
    // Pingora's streams may buffer writes.
    stream.flush().await?;
    let mut response = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // Read until the server closes (we asked it to) or we have enough to judge.
    loop {
        // A TLS server may close without close_notify once it has answered.
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(_) if !response.is_empty() => 0,
            Err(error) => return Err(error.into()),
        };
        if n == 0 || response.len() >= MAX_RESPONSE_BYTES {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if http.body_contains.is_none() && status_of(&response).is_some() {
            break;
        }
    }
    let (status, head_len) = status_of(&response).ok_or(ProbeFailure::NotHttp)?;
    if !http.expect.contains(status) {
        return Err(ProbeFailure::Status(status));
    }
    if let Some(needle) = &http.body_contains {
        let body = response.get(head_len..).unwrap_or_default();
        if !body
            .windows(needle.len().max(1))
            .any(|w| w == needle.as_bytes())
        {
            return Err(ProbeFailure::Body);
        }
    }
    Ok(())
}

/// The status and head length of a complete response head.
fn status_of(bytes: &[u8]) -> Option<(u16, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => response.code.map(|code| (code, len)),
        _ => None,
    }
}
