//! A deliberately plain HTTP/1.1 client: one request per connection, raw bytes out, so tests
//! can send malformed requests as well as normal ones.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo upstream's JSON report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Which echo upstream answered.
    pub fn served_by(&self) -> String {
        self.header("x-served-by").unwrap_or("").to_owned()
    }
}

/// `GET path` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends raw request bytes and reads the response until the server closes.
pub async fn request(addr: SocketAddr, raw: &str) -> Response {
    request_bytes(addr, raw.as_bytes()).await
}

pub async fn request_bytes(addr: SocketAddr, raw: &[u8]) -> Response {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    exchange(stream, raw).await
}

/// Sends `raw` from a chosen loopback source address (127.0.0.2, ...), as another client.
pub async fn request_from(source: std::net::IpAddr, addr: SocketAddr, raw: &str) -> Response {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.expect("connect to proxy");
    exchange(stream, raw.as_bytes()).await
}

async fn exchange(mut stream: TcpStream, raw: &[u8]) -> Response {
    stream.write_all(raw).await.unwrap();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes));
    read.await.expect("response within 30s").unwrap();
    parse(&bytes)
        .unwrap_or_else(|| panic!("unparsable response: {:?}", String::from_utf8_lossy(&bytes)))
}

/// Blocking GET for readiness polling; `None` on any failure.
pub fn get_blocking(addr: SocketAddr, host: &str, path: &str) -> Option<Response> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(raw.as_bytes()).ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes).ok()? else {
        return None;
    };
    let mut map: HashMap<String, String> = HashMap::new();
    for h in response.headers.iter() {
        let value = String::from_utf8_lossy(h.value).into_owned();
        map.entry(h.name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let raw_body = &bytes[head_len..];
    let chunked = map
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Some(Response {
        status: response.code?,
        headers: map,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}
