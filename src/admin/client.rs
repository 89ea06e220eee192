//! The client side of the admin API, for `headland reload` and `headland certs`: one
//! blocking HTTP/1.1 request to the running instance.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A reload of a big configuration takes a while; anything longer means trouble.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /reload` with the bearer token; returns the status and body of the answer.
pub fn post_reload(addr: SocketAddr, token: &[u8]) -> io::Result<(u16, String)> {
    send(addr, "POST", "/reload", Some(token))
}

/// One request without a body; returns the status and body of the answer.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&[u8]>,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n"
    )
    .into_bytes();
    if let Some(token) = token {
        request.extend_from_slice(b"Authorization: Bearer ");
        request.extend_from_slice(token);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(&response) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an HTTP response",
            ))
        }
    };
    let status = parsed.code.unwrap_or(0);
    let body = String::from_utf8_lossy(response.get(head_len..).unwrap_or_default()).into_owned();
    Ok((status, body))
}
