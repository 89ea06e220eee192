//! An upstream that records what reaches it: every request's target, headers and body
//! (Content-Length or chunked), a
//! watched count of requests (so a test can wait for "the upstream has it" without sleeping),
//! an optional delay before it answers, and an optional cap on connections it serves at once
//! (an app with 64 workers: further connections wait, accepted but unanswered).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: watch::Receiver<usize>,
}

#[derive(Clone, Copy, Default)]
pub struct RecorderOptions {
    /// Wait this long after reading a request before answering it.
    pub delay: Duration,
    /// Serve at most this many connections at once.
    pub max_connections: Option<usize>,
}

impl Recorder {
    pub async fn start(options: RecorderOptions) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let permits = Arc::new(Semaphore::new(
            options.max_connections.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (log, count_tx, permits) = (
                    Arc::clone(&log),
                    Arc::clone(&count_tx),
                    Arc::clone(&permits),
                );
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    serve(stream, options.delay, &log, &count_tx).await;
                });
            }
        });
        Recorder { addr, seen, count }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits (bounded) until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(30), count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("the upstream never saw {n} requests"))
            .unwrap();
    }
}

async fn serve(
    mut stream: TcpStream,
    delay: Duration,
    log: &Mutex<Vec<Seen>>,
    count: &watch::Sender<usize>,
) {
    let mut buf = Vec::new();
    loop {
        let Some((seen, used)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..used);
        log.lock().unwrap().push(seen);
        count.send_modify(|c| *c += 1);
        tokio::time::sleep(delay).await;
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: recorder\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Reads one request (Content-Length bodies only) from `stream`; `buf` keeps leftovers.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Seen, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = request.parse(buf) {
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let chunked = headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
            });
            let method = request.method.unwrap_or("").to_owned();
            let target = request.path.unwrap_or("").to_owned();
            let (body, used) = if chunked {
                read_chunked(stream, buf, head_len).await?
            } else {
                while buf.len() < head_len + length {
                    read_more(stream, buf).await?;
                }
                (buf[head_len..head_len + length].to_vec(), head_len + length)
            };
            let seen = Seen {
                method,
                target,
                headers,
                body,
            };
            return Some((seen, used));
        }
        read_more(stream, buf).await?;
    }
}

/// A chunked body (RFC 9112 §7.1, no trailers) starting at `start`: the body and the end.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = start;
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        let data_start = line_end + 2;
        while buf.len() < data_start + size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend_from_slice(&buf[data_start..data_start + size]);
        at = data_start + size + 2;
        if size == 0 {
            return Some((body, at));
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
