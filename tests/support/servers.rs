//! Upstreams and receivers with behaviour a test controls: health that can be switched,
//! servers that can be killed, servers that reset every request, and a webhook receiver.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request head (and a Content-Length body); `None` on close.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = request.parse(&buf) {
            let line = format!(
                "{} {}",
                request.method.unwrap_or(""),
                request.path.unwrap_or("")
            );
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = buf[len..].to_vec();
            while body.len() < length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Some((line, headers, body));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// Answers every request with the status currently set (200 at first): a health endpoint
/// an operator's app would expose, switched from healthy to failing and back.
pub struct SwitchableUpstream {
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
}

impl SwitchableUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let shared = Arc::clone(&status);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let status = Arc::clone(&shared);
                tokio::spawn(async move {
                    while read_request(&mut stream).await.is_some() {
                        let code = status.load(Ordering::SeqCst);
                        if respond(&mut stream, code, "switchable").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, status }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// The real echo upstream on its own runtime, so that killing it closes every socket it
/// has, listening and established, as a crashed process would. A placeholder socket keeps
/// the port bound without listening: after the kill, connections are refused, and no other
/// test's server can start on the port and bring the "dead" server back (see `ports`).
pub struct KillableUpstream {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    _placeholder: socket2::Socket,
}

impl KillableUpstream {
    pub fn start(name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (std_listener, placeholder) = super::ports::listener_with_placeholder();
        let addr = std_listener.local_addr().unwrap();
        let name = name.to_owned();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            headland::demo::echo::serve(listener, name).await;
        });
        Self {
            addr,
            runtime: Some(runtime),
            _placeholder: placeholder,
        }
    }

    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads each request in full, counts it, then closes the connection without answering:
/// an app that crashes mid-request.
pub struct ResettingUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
}

impl ResettingUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if read_request(&mut stream).await.is_some() {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    // Dropping the stream closes it with no response.
                });
            }
        });
        Self { addr, requests }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers every request with a keep-alive `200 ok` and reports each connection the proxy
/// closes. `hang_up` half-closes the open connections, as an app whose keep-alive timeout is
/// shorter than the proxy's does.
pub struct WatchedUpstream {
    pub addr: SocketAddr,
    closed_by_proxy: tokio::sync::mpsc::UnboundedReceiver<()>,
    hang_up: tokio::sync::watch::Sender<bool>,
}

impl WatchedUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, closed_by_proxy) = tokio::sync::mpsc::unbounded_channel();
        let (hang_up, hang_up_notice) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed = closed.clone();
                // Only the connections open when the test hangs up are closed.
                let mut hang_up_notice = hang_up_notice.clone();
                hang_up_notice.mark_unchanged();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            request = read_request(&mut stream) => {
                                if request.is_none() {
                                    break;
                                }
                                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                                stream.write_all(answer).await.unwrap();
                            }
                            _ = hang_up_notice.changed() => {
                                stream.shutdown().await.unwrap();
                                while read_request(&mut stream).await.is_some() {}
                                break;
                            }
                        }
                    }
                    // read_request saw the proxy's end of the connection.
                    let _ = closed.send(());
                });
            }
        });
        Self {
            addr,
            closed_by_proxy,
            hang_up,
        }
    }

    pub fn hang_up(&self) {
        self.hang_up.send_replace(true);
    }

    /// Waits until the proxy has closed one connection; false after `limit`.
    pub async fn proxy_closed_one(&mut self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, self.closed_by_proxy.recv())
            .await
            .is_ok_and(|closed| closed.is_some())
    }
}

/// One request a webhook receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status_sent: u16,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver that answers with `statuses` in turn (then 200) and records every
/// delivery attempt.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl WebhookReceiver {
    pub async fn start(statuses: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let log = Arc::clone(&deliveries);
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (log, statuses) = (Arc::clone(&log), Arc::clone(&statuses));
                tokio::spawn(async move {
                    while let Some((_, headers, body)) = read_request(&mut stream).await {
                        let status = statuses.lock().unwrap().next().unwrap_or(200);
                        log.lock().unwrap().push(Delivery {
                            headers,
                            body,
                            status_sent: status,
                        });
                        if respond(&mut stream, status, "").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, deliveries }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// A TCP relay in front of `target` that counts the connections it accepted. The proxy
/// opens a connection to a server only after picking it, so a count going up shows that a
/// request is on its way to this server, with no sleep to guess when.
pub struct CountingRelay {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl CountingRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An upstream that holds every request until the test releases one: a request "in flight"
/// for as long as the test wants. Answers `x-served-by: NAME`.
pub struct HeldUpstream {
    pub addr: SocketAddr,
    arrived: tokio::sync::watch::Receiver<usize>,
    release: Arc<tokio::sync::Semaphore>,
}

impl HeldUpstream {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrivals, arrived) = tokio::sync::watch::channel(0usize);
        let arrivals = Arc::new(arrivals);
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (name, gate) = (name.to_owned(), Arc::clone(&release));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (name, gate, arrivals) =
                    (name.clone(), Arc::clone(&gate), Arc::clone(&arrivals));
                tokio::spawn(async move {
                    while read_request(&mut stream).await.is_some() {
                        arrivals.send_modify(|n| *n += 1);
                        gate.acquire().await.unwrap().forget();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nx-served-by: {name}\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            arrived,
            release,
        }
    }

    /// Waits until `n` requests have arrived in all.
    pub async fn wait_arrivals(&self, n: usize) {
        let mut arrived = self.arrived.clone();
        arrived.wait_for(|count| *count >= n).await.unwrap();
    }

    pub fn arrivals(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Lets one held request be answered.
    pub fn release_one(&self) {
        self.release.add_permits(1);
    }
}
