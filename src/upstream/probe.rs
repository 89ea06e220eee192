//! One active health check of one server: a TCP connect, or an HTTP/1.1 request whose
//! status (and optionally body) must match.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HealthCheck, HttpProbe, Probe};

/// Enough for any status line and a health body; more is not read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect or I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("response is not HTTP")]
    NotHttp,
    #[error("status {0} is not expected")]
    Status(u16),
    #[error("body does not contain the expected text")]
    Body,
}

/// Runs `check` against `addr`, all of it within the check's timeout.
pub async fn probe(addr: SocketAddr, check: &HealthCheck) -> Result<(), ProbeFailure> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await?;
        match &check.probe {
            Probe::Tcp => Ok(()),
            Probe::Http(http) => probe_http(stream, addr, http).await,
        }
    };
    tokio::time::timeout(check.timeout, attempt)
        .await
        .map_err(|_| ProbeFailure::Timeout(check.timeout))?
}

async fn probe_http(
    mut stream: TcpStream,
    addr: SocketAddr,
    http: &HttpProbe,
) -> Result<(), ProbeFailure> {
    let host = http.host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: headland-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        http.method, http.path
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // Read until the server closes (we asked it to) or we have enough to judge.
    loop {
        let n = stream.read(&mut chunk).await?;
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
