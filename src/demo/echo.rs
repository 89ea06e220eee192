//! A small HTTP/1.1 upstream that answers with what it received, as JSON. It stands in for
//! the PM2 app, Docker service and Kong gateway of `headland demo`, and integration tests use
//! it as their real upstream.
//!
//! Query parameters shape the answer: `delay_ms=N` waits first, `status=N` sets the status,
//! `stream_kib=N` sends N KiB in 1 KiB chunks, `body_kib=N` sends N KiB with a Content-Length;
//! in both, KiB number i is the letter a + i mod 26 repeated, so a client can check that every
//! KiB arrived, in order. `Upgrade: websocket` becomes an echo socket.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// What the echo server reports about a request.
#[derive(Debug, Serialize)]
pub struct Echo {
    pub server: String,
    /// The connecting side's address: the same port twice means a reused connection.
    pub peer: String,
    pub method: String,
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body_bytes: u64,
}

struct Head {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    head_len: usize,
}

/// Accepts connections forever, answering each as upstream `name`.
pub async fn serve(listener: TcpListener, name: String) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve_connection(stream, &name, peer).await;
        });
    }
}

async fn serve_connection(mut stream: TcpStream, name: &str, peer: SocketAddr) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        buf.advance(head.head_len);
        let header = |n: &str| head.headers.get(n).map(String::as_str);
        if header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return echo_websocket(stream, buf, header("sec-websocket-key").unwrap_or("")).await;
        }
        let body_bytes = read_body(&mut stream, &mut buf, &head).await?;
        let query = Query::parse(&head.target);
        if query.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(query.delay_ms)).await;
        }
        let close = header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if let Some(kib) = query.stream_kib {
            write_kib(&mut stream, name, query.status, kib, Framing::Chunked).await?;
        } else if let Some(kib) = query.body_kib {
            write_kib(&mut stream, name, query.status, kib, Framing::ContentLength).await?;
        } else {
            let echo = Echo {
                server: name.to_owned(),
                peer: peer.to_string(),
                method: head.method,
                target: head.target,
                headers: head.headers,
                body_bytes,
            };
            let body = serde_json::to_vec(&echo).map_err(io::Error::other)?;
            let head = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-served-by: {name}\r\n\r\n",
                query.status,
                body.len()
            );
            // One write: a separate small head would meet Nagle and delayed ACKs (40 ms).
            let mut response = head.into_bytes();
            response.extend_from_slice(&body);
            stream.write_all(&response).await?;
        }
        if close {
            return Ok(());
        }
    }
}

struct Query {
    delay_ms: u64,
    status: u16,
    stream_kib: Option<u64>,
    body_kib: Option<u64>,
}

impl Query {
    fn parse(target: &str) -> Self {
        let mut query = Query {
            delay_ms: 0,
            status: 200,
            stream_kib: None,
            body_kib: None,
        };
        let pairs = target.split_once('?').map_or("", |(_, q)| q).split('&');
        for (key, value) in pairs.filter_map(|p| p.split_once('=')) {
            match key {
                "delay_ms" => query.delay_ms = value.parse().unwrap_or(0),
                "status" => query.status = value.parse().unwrap_or(200),
                "stream_kib" => query.stream_kib = value.parse().ok(),
                "body_kib" => query.body_kib = value.parse().ok(),
                _ => {}
            }
        }
        query
    }
}

/// Reads until a complete request head is buffered. `None` on a clean close.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> io::Result<Option<Head>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let headers = request
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                return Ok(Some(Head {
                    method: request.method.unwrap_or("").to_owned(),
                    target: request.path.unwrap_or("").to_owned(),
                    headers,
                    head_len,
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad request head",
                ))
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Reads and discards the request body, returning its length.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    head: &Head,
) -> io::Result<u64> {
    let chunked = head
        .headers
        .get("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        return read_chunked(stream, buf).await;
    }
    let length: u64 = head
        .headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    skip(stream, buf, length).await?;
    Ok(length)
}

async fn read_chunked<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(total);
        }
        skip(stream, buf, size).await?;
        read_line(stream, buf).await?;
        total += size;
    }
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> io::Result<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD_BYTES || stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
    }
}

async fn skip<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    mut length: u64,
) -> io::Result<()> {
    while length > 0 {
        if buf.is_empty() && stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        let take = length.min(buf.len() as u64) as usize;
        buf.advance(take);
        length -= take as u64;
    }
    Ok(())
}

/// How a `write_kib` answer marks the end of its body.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Chunked,
    ContentLength,
}

/// KiB number `i` of a `stream_kib` or `body_kib` answer.
pub fn kib_pattern(i: u64) -> [u8; 1024] {
    [b'a' + (i % 26) as u8; 1024]
}

async fn write_kib<S: AsyncWrite + Unpin>(
    stream: &mut S,
    name: &str,
    status: u16,
    kib: u64,
    framing: Framing,
) -> io::Result<()> {
    let length = match framing {
        Framing::Chunked => "transfer-encoding: chunked".to_owned(),
        Framing::ContentLength => format!("content-length: {}", kib.saturating_mul(1024)),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/octet-stream\r\n{length}\r\nx-served-by: {name}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    for i in 0..kib {
        if framing == Framing::Chunked {
            stream.write_all(b"400\r\n").await?;
        }
        stream.write_all(&kib_pattern(i)).await?;
        if framing == Framing::Chunked {
            stream.write_all(b"\r\n").await?;
        }
    }
    if framing == Framing::Chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

async fn echo_websocket(mut stream: TcpStream, buf: BytesMut, key: &str) -> io::Result<()> {
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    let mut socket =
        WebSocketStream::from_partially_read(stream, buf.to_vec(), Role::Server, None).await;
    while let Some(Ok(message)) = socket.next().await {
        if message.is_close() {
            break;
        }
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
    Ok(())
}
